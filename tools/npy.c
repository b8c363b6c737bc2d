/* Reading and writing NumPy .npy files: format versions 1.0, 2.0 and 3.0, C order,
 * float32 and float64 in host byte order. Used by the kred command and by the tests. */
#include "npy.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The magic string, then a major and a minor version byte. */
static const char npy_magic[6] = { '\x93', 'N', 'U', 'M', 'P', 'Y' };

/* A header is a short Python dict; anything much longer than numpy ever writes is
 * a corrupt file, and refusing it early avoids a huge allocation. */
#define NPY_MAX_HEADER (1u << 20)

/* Total header size (magic, version, length field, dict) is padded to a multiple of
 * this, so that the data starts aligned. */
#define NPY_ALIGN 64

static void fail(char *err, size_t errlen, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void fail(char *err, size_t errlen, const char *path, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!err || errlen == 0)
		return;
	n = snprintf(err, errlen, "%s: ", path ? path : "(null)");
	if (n < 0 || (size_t)n >= errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

static bool host_is_little(void)
{
	const uint16_t one = 1;

	return *(const unsigned char *)&one == 1;
}

static size_t dtype_size(kred_dtype dtype)
{
	return dtype == KRED_FLOAT64 ? 8 : 4;
}

/* The header dict, e.g. {'descr': '<f8', 'fortran_order': False, 'shape': (9, 1), }.
 * A tiny recursive-descent reader of just the Python literals numpy writes there: a
 * string, True/False, a tuple of integers. Errors are sticky: the first one wins. */
struct hdr {
	const char *s, *end;
	const char *path;
	char *err;
	size_t errlen;
	bool failed;
};

static void hdr_fail(struct hdr *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void hdr_fail(struct hdr *h, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (h->failed)
		return;
	h->failed = true;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fail(h->err, h->errlen, h->path, "%s", msg);
}

static void skip_space(struct hdr *h)
{
	while (h->s < h->end && (*h->s == ' ' || *h->s == '\t' || *h->s == '\n' || *h->s == '\r'))
		h->s++;
}

static bool accept(struct hdr *h, char c)
{
	skip_space(h);
	if (h->s < h->end && *h->s == c) {
		h->s++;
		return true;
	}
	return false;
}

static void expect(struct hdr *h, char c, const char *what)
{
	if (!accept(h, c))
		hdr_fail(h, "bad .npy header: expected %s", what);
}

/* A quoted string, copied into buf (NUL-terminated). Returns false on error. */
static bool parse_string(struct hdr *h, char *buf, size_t buflen)
{
	char q;
	size_t n = 0;

	skip_space(h);
	if (h->s >= h->end || (*h->s != '\'' && *h->s != '"')) {
		hdr_fail(h, "bad .npy header: expected %s", "a quoted string");
		return false;
	}
	q = *h->s++;
	while (h->s < h->end && *h->s != q) {
		/* Keys and descr strings are short and never escaped; a backslash means
		 * something numpy did not write. */
		if (*h->s == '\\' || n + 1 >= buflen) {
			hdr_fail(h, "bad .npy header: %s", "unexpected string");
			return false;
		}
		buf[n++] = *h->s++;
	}
	if (h->s >= h->end) {
		hdr_fail(h, "bad .npy header: %s", "unterminated string");
		return false;
	}
	h->s++;
	buf[n] = '\0';
	return true;
}

static bool parse_word(struct hdr *h, const char *word)
{
	size_t n = strlen(word);

	skip_space(h);
	if ((size_t)(h->end - h->s) >= n && memcmp(h->s, word, n) == 0) {
		h->s += n;
		return true;
	}
	return false;
}

static void parse_shape(struct hdr *h, struct npy_array *a)
{
	a->ndim = 0;
	expect(h, '(', "'(' after 'shape'");
	while (!h->failed && !accept(h, ')')) {
		int64_t v = 0;
		bool digits = false;

		skip_space(h);
		while (h->s < h->end && *h->s >= '0' && *h->s <= '9') {
			int d = *h->s++ - '0';

			if (v > (INT64_MAX - d) / 10) {
				hdr_fail(h, "bad .npy header: %s", "shape entry too large");
				return;
			}
			v = v * 10 + d;
			digits = true;
		}
		if (!digits) {
			hdr_fail(h, "bad .npy header: %s", "shape must be a tuple of non-negative integers");
			return;
		}
		/* Python 2 numpy wrote longs as 3L. */
		if (h->s < h->end && *h->s == 'L')
			h->s++;
		if (a->ndim == NPY_MAX_DIMS) {
			hdr_fail(h, "bad .npy header: %s", "too many dimensions");
			return;
		}
		a->shape[a->ndim++] = v;
		if (!accept(h, ',')) {
			expect(h, ')', "',' or ')' in shape");
			break;
		}
	}
}

/* Parses the dict into a (dtype, ndim, shape). Returns 0 or -1 with err set. */
static int parse_header(struct hdr *h, struct npy_array *a)
{
	bool have_descr = false, have_order = false, have_shape = false;
	bool fortran = false;
	char key[32], descr[32];

	expect(h, '{', "'{'");
	while (!h->failed && !accept(h, '}')) {
		if (!parse_string(h, key, sizeof(key)))
			break;
		expect(h, ':', "':' after a key");
		if (h->failed)
			break;
		if (strcmp(key, "descr") == 0 && !have_descr) {
			have_descr = true;
			skip_space(h);
			if (h->s < h->end && *h->s == '[') {
				hdr_fail(h, "structured dtypes are not supported");
				break;
			}
			if (!parse_string(h, descr, sizeof(descr)))
				break;
		} else if (strcmp(key, "fortran_order") == 0 && !have_order) {
			have_order = true;
			if (parse_word(h, "True"))
				fortran = true;
			else if (!parse_word(h, "False"))
				hdr_fail(h, "bad .npy header: %s", "fortran_order must be True or False");
		} else if (strcmp(key, "shape") == 0 && !have_shape) {
			have_shape = true;
			parse_shape(h, a);
		} else {
			hdr_fail(h, "bad .npy header: unexpected or repeated key '%s'", key);
		}
		if (!h->failed && !accept(h, ',')) {
			expect(h, '}', "',' or '}'");
			break;
		}
	}
	if (h->failed)
		return -1;
	skip_space(h);
	if (h->s != h->end) {
		hdr_fail(h, "bad .npy header: %s", "text after the dict");
		return -1;
	}
	if (!have_descr || !have_order || !have_shape) {
		hdr_fail(h, "bad .npy header: missing key '%s'",
			 !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
		return -1;
	}
	if (fortran) {
		hdr_fail(h, "Fortran-order arrays are not supported (save it in C order, "
			 "e.g. with np.ascontiguousarray)");
		return -1;
	}

	/* descr is a byte order ('<', '>', '=', '|') then a type code. */
	{
		const char *t = descr;
		bool order_ok = true;

		if (*t == '<' || *t == '>' || *t == '=' || *t == '|') {
			if (*t == '<')
				order_ok = host_is_little();
			else if (*t == '>')
				order_ok = !host_is_little();
			t++;
		}
		if (strcmp(t, "f4") == 0)
			a->dtype = KRED_FLOAT32;
		else if (strcmp(t, "f8") == 0)
			a->dtype = KRED_FLOAT64;
		else {
			hdr_fail(h, "unsupported dtype '%s' (only float32 '<f4' and float64 '<f8')",
				 descr);
			return -1;
		}
		/* '|' means "byte order does not apply", which is only true of 1-byte types. */
		if (descr[0] == '|') {
			hdr_fail(h, "unsupported dtype '%s' (a float needs a byte order)", descr);
			return -1;
		}
		if (!order_ok) {
			hdr_fail(h, "unsupported dtype '%s' (%s-endian data; convert it with "
				 "a.astype('=f%c'))",
				 descr, descr[0] == '>' ? "big" : "little", t[1]);
			return -1;
		}
	}
	return 0;
}

/* count = prod(shape) and count * size, both checked for overflow. */
static int shape_count(int ndim, const int64_t *shape, size_t size, size_t *count,
		       size_t *bytes)
{
	size_t c = 1;

	for (int k = 0; k < ndim; k++) {
		if (shape[k] < 0)
			return -1;
		if ((uint64_t)shape[k] > SIZE_MAX)
			return -1;
		if (shape[k] != 0 && c > SIZE_MAX / (size_t)shape[k])
			return -1;
		c *= (size_t)shape[k];
	}
	if (c > SIZE_MAX / size)
		return -1;
	*count = c;
	*bytes = c * size;
	return 0;
}

/* Reads bytes of data from f into a fresh buffer (at least 1 byte, so that an empty
 * array still has a non-NULL pointer). known: whether f's size was checked to hold them;
 * when it was not (a pipe, a stream in memory), the buffer grows with what arrives, so
 * that a header that promises terabytes costs no more memory than the data there is.
 * Returns 0, or -1 with err set. */
static int read_data(FILE *f, const char *path, size_t bytes, bool known, void **out,
		     char *err, size_t errlen)
{
	size_t have = 0, cap = known || bytes < (1u << 20) ? bytes : 1u << 20;
	unsigned char *p = malloc(cap ? cap : 1), *q;

	*out = NULL;
	while (p) {
		have += fread(p + have, 1, cap - have, f);
		if (have < cap || have == bytes)
			break;
		cap = cap > bytes / 2 ? bytes : 2 * cap;
		q = realloc(p, cap);
		if (!q) {
			free(p);
			p = NULL;
			break;
		}
		p = q;
	}
	if (!p) {
		fail(err, errlen, path, "out of memory (%zu bytes)", bytes);
		return -1;
	}
	if (have != bytes) {
		fail(err, errlen, path, "truncated: fewer than the %zu bytes of data the header promises",
		     bytes);
		free(p);
		return -1;
	}
	*out = p;
	return 0;
}

int npy_read_stream(FILE *f, const char *path, struct npy_array *a, char *err, size_t errlen)
{
	unsigned char pre[12];
	size_t hlen, prelen, count, bytes;
	char *text = NULL;
	struct stat st;
	bool sized = false;
	struct hdr h;
	int c, fd;

	if (!a) {
		fail(err, errlen, path, "no array to read into");
		return -1;
	}
	memset(a, 0, sizeof(*a));
	if (!f) {
		fail(err, errlen, path, "no stream to read from");
		return -1;
	}
	/* A regular file's size says at once whether the data is all there. */
	fd = fileno(f);
	if (fd >= 0 && fstat(fd, &st) == 0) {
		if (S_ISDIR(st.st_mode)) {
			fail(err, errlen, path, "is a directory, not a .npy file");
			return -1;
		}
		sized = S_ISREG(st.st_mode) && ftell(f) == 0;
	}

	if (fread(pre, 1, 10, f) != 10 || memcmp(pre, npy_magic, sizeof(npy_magic)) != 0) {
		fail(err, errlen, path, "not a .npy file (no \\x93NUMPY magic)");
		goto out;
	}
	switch (pre[6]) {
	case 1:
		hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
		prelen = 10;
		break;
	case 2:
	case 3:
		/* Version 3 differs from 2 only in allowing UTF-8 in the header. */
		if (fread(pre + 10, 1, 2, f) != 2) {
			fail(err, errlen, path, "truncated .npy header");
			goto out;
		}
		hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 |
		       (size_t)pre[11] << 24;
		prelen = 12;
		break;
	default:
		fail(err, errlen, path, "unsupported .npy format version %d.%d", pre[6], pre[7]);
		goto out;
	}
	if (hlen > NPY_MAX_HEADER) {
		fail(err, errlen, path, "bad .npy header: %zu bytes long", hlen);
		goto out;
	}
	text = malloc(hlen + 1);
	if (!text) {
		fail(err, errlen, path, "out of memory");
		goto out;
	}
	if (fread(text, 1, hlen, f) != hlen) {
		fail(err, errlen, path, "truncated .npy header");
		goto out;
	}
	text[hlen] = '\0';
	if (hlen == 0 || text[hlen - 1] != '\n') {
		fail(err, errlen, path, "bad .npy header: not terminated by a newline");
		goto out;
	}

	h = (struct hdr){ .s = text, .end = text + hlen, .path = path, .err = err,
			  .errlen = errlen };
	if (parse_header(&h, a) != 0)
		goto out;

	if (shape_count(a->ndim, a->shape, dtype_size(a->dtype), &count, &bytes) != 0) {
		fail(err, errlen, path, "array too large (size overflows)");
		goto out;
	}
	/* Check the file holds the data before allocating: a corrupt shape must not
	 * make us allocate terabytes. */
	if (sized) {
		uint64_t have = (uint64_t)st.st_size - (prelen + hlen);

		if ((uint64_t)st.st_size < prelen + hlen || have < bytes) {
			fail(err, errlen, path,
			     "truncated: the header promises %zu bytes of data, the file holds %llu",
			     bytes, (unsigned long long)((uint64_t)st.st_size < prelen + hlen ? 0 : have));
			goto out;
		}
	}
	if (read_data(f, path, bytes, sized, &a->data, err, errlen) != 0)
		goto out;
	c = fgetc(f);
	if (c != EOF) {
		fail(err, errlen, path, "%s", "bytes after the array data (not a plain .npy file?)");
		goto out;
	}
	if (ferror(f)) {
		fail(err, errlen, path, "read error: %s", strerror(errno));
		goto out;
	}
	a->count = count;
	free(text);
	return 0;

out:
	free(text);
	npy_free(a);
	return -1;
}

int npy_read(const char *path, struct npy_array *a, char *err, size_t errlen)
{
	FILE *f;
	int rc;

	if (!a) {
		fail(err, errlen, path, "no array to read into");
		return -1;
	}
	memset(a, 0, sizeof(*a));
	if (!path) {
		fail(err, errlen, path, "no file name");
		return -1;
	}
	f = fopen(path, "rb");
	if (!f) {
		fail(err, errlen, path, "cannot open: %s", strerror(errno));
		return -1;
	}
	rc = npy_read_stream(f, path, a, err, errlen);
	fclose(f);
	return rc;
}

/* The checks of a write, and the header: pre[0..*prelen) then dict[0..*dlen), padded
 * with spaces to hlen - 1 and a newline. Returns 0, or -1 with err set. */
static int write_header(const char *path, kred_dtype dtype, int ndim, const int64_t *shape,
			const void *data, unsigned char pre[12], size_t *prelen, char *dict,
			size_t dictlen, size_t *dlen, size_t *hlen, size_t *bytes, char *err,
			size_t errlen)
{
	size_t count, total;
	int n;

	if (dtype != KRED_FLOAT32 && dtype != KRED_FLOAT64) {
		fail(err, errlen, path, "cannot write dtype %d", (int)dtype);
		return -1;
	}
	if (ndim < 0 || ndim > NPY_MAX_DIMS || (ndim > 0 && !shape)) {
		fail(err, errlen, path, "cannot write an array of %d dimensions", ndim);
		return -1;
	}
	if (shape_count(ndim, shape, dtype_size(dtype), &count, bytes) != 0) {
		fail(err, errlen, path, "bad shape (negative, or the size overflows)");
		return -1;
	}
	if (*bytes && !data) {
		fail(err, errlen, path, "no data to write");
		return -1;
	}

	n = snprintf(dict, dictlen, "{'descr': '%cf%d', 'fortran_order': False, 'shape': (",
		     host_is_little() ? '<' : '>', (int)dtype_size(dtype));
	for (int k = 0; k < ndim; k++)
		n += snprintf(dict + n, dictlen - (size_t)n, "%s%lld", k ? ", " : "",
			      (long long)shape[k]);
	/* A 1-tuple needs its trailing comma in Python. */
	n += snprintf(dict + n, dictlen - (size_t)n, "%s), }", ndim == 1 ? "," : "");
	*dlen = (size_t)n;

	/* Version 1.0 has a 16-bit header length; only a longer header needs 2.0. With
	 * at most NPY_MAX_DIMS dimensions it never does, but the rule costs nothing. */
	*prelen = 10;
	total = (*prelen + *dlen + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
	if (total - *prelen > 0xffff) {
		*prelen = 12;
		total = (*prelen + *dlen + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
	}
	*hlen = total - *prelen;
	memcpy(pre, npy_magic, sizeof(npy_magic));
	pre[6] = *prelen == 10 ? 1 : 2;
	pre[7] = 0;
	for (size_t k = 0; k < *prelen - 8; k++)
		pre[8 + k] = (unsigned char)(*hlen >> (8 * k));
	return 0;
}

static int write_body(FILE *f, const unsigned char *pre, size_t prelen, const char *dict,
		      size_t dlen, size_t hlen, const void *data, size_t bytes)
{
	if (fwrite(pre, 1, prelen, f) != prelen || fwrite(dict, 1, dlen, f) != dlen)
		return -1;
	for (size_t k = dlen; k + 1 < hlen; k++)
		if (fputc(' ', f) == EOF)
			return -1;
	if (fputc('\n', f) == EOF || (bytes && fwrite(data, 1, bytes, f) != bytes))
		return -1;
	return 0;
}

int npy_write_stream(FILE *f, const char *path, kred_dtype dtype, int ndim,
		     const int64_t *shape, const void *data, char *err, size_t errlen)
{
	char dict[64 + NPY_MAX_DIMS * 24];
	unsigned char pre[12];
	size_t bytes, dlen, prelen, hlen;

	if (!f) {
		fail(err, errlen, path, "no stream to write to");
		return -1;
	}
	if (write_header(path, dtype, ndim, shape, data, pre, &prelen, dict, sizeof(dict), &dlen,
			 &hlen, &bytes, err, errlen) != 0)
		return -1;
	if (write_body(f, pre, prelen, dict, dlen, hlen, data, bytes) != 0 || fflush(f) != 0) {
		fail(err, errlen, path, "write error: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int npy_write(const char *path, kred_dtype dtype, int ndim, const int64_t *shape,
	      const void *data, char *err, size_t errlen)
{
	char dict[64 + NPY_MAX_DIMS * 24];
	unsigned char pre[12];
	size_t bytes, dlen, prelen, hlen;
	FILE *f;

	if (!path) {
		fail(err, errlen, path, "no file name");
		return -1;
	}
	/* checked before the file is created, so that a bad call leaves no file */
	if (write_header(path, dtype, ndim, shape, data, pre, &prelen, dict, sizeof(dict), &dlen,
			 &hlen, &bytes, err, errlen) != 0)
		return -1;
	f = fopen(path, "wb");
	if (!f) {
		fail(err, errlen, path, "cannot create: %s", strerror(errno));
		return -1;
	}
	if (write_body(f, pre, prelen, dict, dlen, hlen, data, bytes) != 0)
		goto fail_io;
	if (fclose(f) != 0) {
		f = NULL;
		goto fail_io;
	}
	return 0;

fail_io:
	fail(err, errlen, path, "write error: %s", strerror(errno));
	if (f)
		fclose(f);
	/* A half-written file would later read as "truncated"; better no file. */
	remove(path);
	return -1;
}

void npy_free(struct npy_array *a)
{
	if (!a)
		return;
	free(a->data);
	a->data = NULL;
	a->count = 0;
}
