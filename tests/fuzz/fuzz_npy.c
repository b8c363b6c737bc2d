/* Fuzz harness of the .npy reader (tools/npy.c): the input is a file's bytes. It is read
 * from memory (a stream whose size is unknown: memory grows with the data) and from a
 * file (whose size is checked against the header first): both must agree. An array that
 * reads is written back, and what is written must read back the same. */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "npy.h"

static char path[4096];

static void remove_file(void)
{
	remove(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");
	int fd;

	(void)argc, (void)argv;
	fz_log_init();
	snprintf(path, sizeof(path), "%s/kred-fuzz-npy-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	fd = mkstemp(path);
	FZ_CHECK(fd >= 0, "mkstemp %s", path);
	close(fd);
	atexit(remove_file);
	return 0;
}

/* The stream of size bytes at data; /dev/null for none (fmemopen refuses size 0). */
static FILE *open_bytes(const uint8_t *data, size_t size)
{
	return size ? fmemopen((void *)data, size, "rb") : fopen("/dev/null", "rb");
}

static size_t value_size(const struct npy_array *a)
{
	return a->dtype == KRED_FLOAT64 ? sizeof(double) : sizeof(float);
}

static void check_array(const struct npy_array *a)
{
	size_t count = 1;

	FZ_CHECK(a->dtype == KRED_FLOAT32 || a->dtype == KRED_FLOAT64, "dtype %d", (int)a->dtype);
	FZ_CHECK(a->ndim >= 0 && a->ndim <= NPY_MAX_DIMS, "ndim %d", a->ndim);
	for (int k = 0; k < a->ndim; k++) {
		FZ_CHECK(a->shape[k] >= 0, "shape[%d] = %lld", k, (long long)a->shape[k]);
		count *= (size_t)a->shape[k];
	}
	FZ_CHECK(count == a->count, "count %zu for a shape of %zu", a->count, count);
	FZ_CHECK(a->data, "no data");
}

static bool same(const struct npy_array *a, const struct npy_array *b)
{
	if (a->dtype != b->dtype || a->ndim != b->ndim || a->count != b->count)
		return false;
	for (int k = 0; k < a->ndim; k++)
		if (a->shape[k] != b->shape[k])
			return false;
	return memcmp(a->data, b->data, a->count * value_size(a)) == 0;
}

/* Written to memory and read back: the same array. */
static void round_trip(const struct npy_array *a)
{
	char *buf = NULL, err[512] = "";
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct npy_array b;
	int rc;

	if (!f)
		return;
	rc = npy_write_stream(f, "memory", a->dtype, a->ndim, a->shape, a->data, err, sizeof(err));
	FZ_CHECK(rc == 0, "write: %s", err);
	fclose(f);
	/* numpy's layout: the header, padded with spaces and a newline, ends on a multiple
	 * of 64 bytes */
	FZ_CHECK(len >= 64 && len >= a->count * value_size(a) &&
			 (len - a->count * value_size(a)) % 64 == 0 &&
			 buf[len - a->count * value_size(a) - 1] == '\n',
		 "a written file of %zu bytes for %zu values", len, a->count);
	f = open_bytes((const uint8_t *)buf, len);
	FZ_CHECK(f, "fmemopen");
	rc = npy_read_stream(f, "memory", &b, err, sizeof(err));
	fclose(f);
	FZ_CHECK(rc == 0, "what was written does not read back: %s", err);
	FZ_CHECK(same(a, &b), "what was written reads back otherwise");
	npy_free(&b);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct npy_array a, b;
	char err[512] = "", err2[512] = "";
	FILE *f = open_bytes(data, size);
	int rc, rc2;

	if (!f)
		return 0;
	rc = npy_read_stream(f, "memory", &a, err, sizeof(err));
	fclose(f);
	if (rc == 0) {
		check_array(&a);
		round_trip(&a);
	} else {
		FZ_CHECK(rc == -1 && *err, "an error without a message");
		FZ_CHECK(!a.data && a.count == 0, "an error, and data");
	}

	/* the same bytes as a file */
	f = fopen(path, "wb");
	if (!f)
		goto out;
	if (fwrite(data, 1, size, f) != size) {
		fclose(f);
		goto out;
	}
	fclose(f);
	rc2 = npy_read(path, &b, err2, sizeof(err2));
	FZ_CHECK(rc2 == rc, "from memory: %s; from a file: %s", rc ? err : "read",
		 rc2 ? err2 : "read");
	if (rc2 == 0) {
		FZ_CHECK(same(&a, &b), "a file and a stream read otherwise");
		npy_free(&b);
	}
out:
	npy_free(&a);
	return 0;
}
