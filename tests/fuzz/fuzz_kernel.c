/* Fuzz harness of the kernel-name parser (kred_kernel_parse, lib/kernel_product.c) and of
 * what follows it: the kernel product's spec, its reduction on the reference backend (its
 * canonical formula must parse back to itself) and a run through the inputs by name.
 *
 * An input is text, one item per line:
 *   line 1            the kernel ("gaussian(x,y) * linear(u,v)**2")
 *   "mode: lse"       the mode (default sum)
 *   "dims: 3 1"       the dimension of each pair (default 2 for every pair)
 *   "params: scalar diagonal full scalar_j diagonal_j full_j none"
 *                     the shape of each atom's parameter (default: none for linear,
 *                     scalar for the others)
 *   "e: 2"            columns of b and c
 *   "dtype: float32"
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"

#define NX 3
#define NY 2
#define MAX_ITEMS 32

static kred_context *ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	kred_context_options opt = { .struct_size = sizeof(opt), .backend = "reference" };

	(void)argc, (void)argv;
	fz_log_init();
	if (kred_context_create(&opt, &ctx) != KRED_OK) {
		fprintf(stderr, "fuzz_kernel: no reference context: %s\n", kred_errmsg(ctx));
		abort();
	}
	return 0;
}

struct input {
	char *text;
	const char *kernel, *mode, *dims, *params;
	int e;
	kred_dtype dtype;
};

static const char *after(const char *line, const char *key)
{
	size_t n = strlen(key);

	if (strncmp(line, key, n) != 0)
		return NULL;
	line += n;
	while (*line == ' ')
		line++;
	return line;
}

static bool split(const uint8_t *data, size_t size, struct input *in)
{
	char *line, *next;
	int k = 0;

	memset(in, 0, sizeof(*in));
	in->dtype = KRED_FLOAT64;
	in->text = fz_text(data, size);
	if (!in->text)
		return false;
	for (line = in->text; line; line = next, k++) {
		const char *v;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (k == 0)
			in->kernel = line;
		else if ((v = after(line, "mode:")))
			in->mode = v;
		else if ((v = after(line, "dims:")))
			in->dims = v;
		else if ((v = after(line, "params:")))
			in->params = v;
		else if ((v = after(line, "e:")))
			in->e = atoi(v);
		else if ((v = after(line, "dtype:")))
			in->dtype = strcmp(v, "float32") == 0 ? KRED_FLOAT32 : KRED_FLOAT64;
	}
	return true;
}

/* What kred_kernel_parse says of a kernel it accepts must hold together. */
static void check_kernel(const kred_kernel *k, const char *text)
{
	int n_atoms = kred_kernel_n_atoms(k), n_pairs = kred_kernel_n_pairs(k);
	const char *name;
	int pair;
	long offset;
	char x, y;

	FZ_CHECK(n_atoms >= 1 && n_pairs >= 1 && n_pairs <= 13 && n_pairs <= n_atoms,
		 "%d atoms, %d pairs", n_atoms, n_pairs);
	for (int a = 0; a < n_atoms; a++) {
		FZ_CHECK(kred_kernel_atom(k, a, &name, &pair, &offset) == KRED_OK, "atom %d", a);
		FZ_CHECK(name && pair >= 0 && pair < n_pairs && offset >= 0 &&
				 (size_t)offset < strlen(text) &&
				 strncmp(text + offset, name, strlen(name)) == 0,
			 "atom %d: %s, pair %d, offset %ld", a, name ? name : "(null)", pair, offset);
	}
	for (int p = 0; p < n_pairs; p++) {
		FZ_CHECK(kred_kernel_pair(k, p, &x, &y) == KRED_OK, "pair %d", p);
		FZ_CHECK(x >= 'a' && x <= 'z' && y >= 'a' && y <= 'z' && x != y, "pair %d: %c %c",
			 p, x, y);
		for (int q = 0; q < p; q++) {
			char qx, qy;

			kred_kernel_pair(k, q, &qx, &qy);
			FZ_CHECK(qx != x && qx != y && qy != x && qy != y,
				 "pairs %d and %d share a letter", q, p);
		}
	}
	FZ_CHECK(kred_kernel_atom(k, n_atoms, NULL, NULL, NULL) == KRED_EINVAL &&
			 kred_kernel_atom(k, -1, NULL, NULL, NULL) == KRED_EINVAL &&
			 kred_kernel_pair(k, n_pairs, NULL, NULL) == KRED_EINVAL,
		 "an atom or pair out of range");
}

static kred_kernel_param param_of(const char *word, size_t len)
{
	static const char *const names[] = { "none",	   "scalar",	 "diagonal", "full",
					     "scalar_j", "diagonal_j", "full_j" };

	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++)
		if (strlen(names[k]) == len && !strncmp(names[k], word, len))
			return (kred_kernel_param)k;
	return (kred_kernel_param)99; /* an invalid shape, which the spec must refuse */
}

/* The values of one input array: rows x cols, or nothing. */
static void *values(kred_dtype dtype, int64_t rows, int64_t cols, unsigned seed)
{
	size_t n = (size_t)rows * (size_t)cols;
	void *p;

	if (rows * cols > FZ_MAX_VALUES)
		return NULL;
	p = malloc(n * (dtype == KRED_FLOAT32 ? sizeof(float) : sizeof(double)) + 1);
	if (p)
		fz_fill(p, n, dtype, seed);
	return p;
}

/* Runs r with the inputs by name, as kred_kernel_product_run takes them. */
static void run_by_name(kred_reduction *r, const kred_kernel_product_spec *kp,
			const kred_kernel *k)
{
	void *gamma[MAX_ITEMS] = { 0 }, *x[13] = { 0 }, *y[13] = { 0 }, *in[7] = { 0 };
	unsigned need = kred_kernel_mode_inputs(kp->mode);
	int e = kp->e ? kp->e : 1, out_dim = kred_reduction_out_dim(r);
	kred_kernel_product_args args = { 0 };
	void *out = NULL;
	bool ok = true;
	kred_status st;

	for (size_t a = 0; a < kp->n_params; a++) {
		int pair = 0, d;
		int64_t rows, cols;

		kred_kernel_atom(k, (int)a, NULL, &pair, NULL);
		d = kp->dims[pair];
		rows = kp->params[a] >= KRED_KP_SCALAR_J ? NY : 1;
		cols = kp->params[a] % 3 == 1 ? 1 : kp->params[a] % 3 == 2 ? d : (int64_t)d * d;
		if (kp->params[a] == KRED_KP_NONE)
			continue;
		gamma[a] = values(kp->dtype, rows, cols, (unsigned)a);
		ok = ok && gamma[a];
	}
	for (size_t p = 0; p < kp->n_pairs; p++) {
		x[p] = values(kp->dtype, NX, kp->dims[p], 1);
		y[p] = values(kp->dtype, NY, kp->dims[p], 2);
		ok = ok && x[p] && y[p];
	}
	/* b, u, v, c, h, s, t */
	for (int i = 0; i < 7; i++) {
		static const int rows[7] = { NY, NX, NY, NX, NX, NX, NY };

		if (!(need & (1u << i)))
			continue;
		in[i] = values(kp->dtype, rows[i], i == 0 || i == 3 ? e : 1, (unsigned)i + 3);
		ok = ok && in[i];
	}
	if ((int64_t)out_dim * NX > FZ_MAX_VALUES)
		ok = false;
	if (ok)
		out = malloc((size_t)out_dim * NX * sizeof(double));
	if (out) {
		args.gamma = (const void *const *)gamma;
		args.x = (const void *const *)x;
		args.y = (const void *const *)y;
		args.b = in[0], args.u = in[1], args.v = in[2], args.c = in[3];
		args.h = in[4], args.s = in[5], args.t = in[6];
		st = kred_kernel_product_run(r, kp, NX, NY, &args, out);
		FZ_CHECK(st == KRED_OK || st == KRED_ENOMEM, "kernel product run: %s: %s",
			 kred_status_name(st), kred_errmsg(ctx));
	}
	free(out);
	for (int a = 0; a < MAX_ITEMS; a++)
		free(gamma[a]);
	for (int p = 0; p < 13; p++) {
		free(x[p]);
		free(y[p]);
	}
	for (int i = 0; i < 7; i++)
		free(in[i]);
}

static void product(const struct input *in, const kred_kernel *k)
{
	int n_atoms = kred_kernel_n_atoms(k), n_pairs = kred_kernel_n_pairs(k);
	int dims[13];
	kred_kernel_param params[MAX_ITEMS];
	size_t n_dims = 0, n_params = 0;
	kred_kernel_product_spec kp = { .kernel = in->kernel, .e = in->e, .dtype = in->dtype };
	kred_spec *spec = NULL;
	kred_reduction *r = NULL;
	kred_status st;

	if (n_atoms > MAX_ITEMS)
		return;
	if (in->mode && kred_kernel_mode_parse(in->mode, &kp.mode) != KRED_OK)
		return;
	if (in->dims) {
		for (const char *s = in->dims; *s && n_dims < 13;) {
			char *end;
			long v = strtol(s, &end, 10);

			if (end == s)
				break;
			dims[n_dims++] = v < -1000000 ? -1000000 : v > 1000000 ? 1000000 : (int)v;
			s = end;
		}
	} else {
		for (; n_dims < (size_t)n_pairs; n_dims++)
			dims[n_dims] = 2;
	}
	if (in->params) {
		for (const char *s = in->params; *s && n_params < MAX_ITEMS;) {
			size_t len;

			s += strspn(s, " ");
			len = strcspn(s, " ");
			if (!len)
				break;
			params[n_params++] = param_of(s, len);
			s += len;
		}
	} else {
		for (; n_params < (size_t)n_atoms; n_params++) {
			const char *name;

			kred_kernel_atom(k, (int)n_params, &name, NULL, NULL);
			params[n_params] = strcmp(name, "linear") ? KRED_KP_SCALAR : KRED_KP_NONE;
		}
	}
	kp.dims = dims;
	kp.n_pairs = n_dims;
	kp.params = params;
	kp.n_params = n_params;
	st = kred_kernel_product_spec_build(ctx, &kp, &spec);
	if (st != KRED_OK) {
		FZ_CHECK(!spec && *kred_errmsg(ctx), "spec: %s without a message",
			 kred_status_name(st));
		return;
	}
	st = kred_reduction_create(ctx, spec, &r);
	/* a spec the library built from a kernel it accepted is a valid reduction, unless
	 * it is too large */
	FZ_CHECK(st == KRED_OK || st == KRED_ENOMEM || st == KRED_EDEPTH,
		 "the kernel product's spec: %s: %s", kred_status_name(st), kred_errmsg(ctx));
	if (st == KRED_OK) {
		fz_round_trip(r, spec);
		fz_run(r, NX, NY);
		run_by_name(r, &kp, k);
	}
	kred_reduction_destroy(r);
	kred_free(spec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in;
	kred_kernel *k = NULL;
	kred_status st;

	if (!split(data, size, &in))
		return 0;
	st = kred_kernel_parse(ctx, in.kernel, &k);
	if (st != KRED_OK) {
		long off = kred_error_offset(ctx);

		FZ_CHECK(!k && *kred_errmsg(ctx), "%s without a message", kred_status_name(st));
		FZ_CHECK(off >= -1 && (off < 0 || (size_t)off <= strlen(in.kernel)),
			 "offset %ld in a kernel of %zu bytes", off, strlen(in.kernel));
	} else {
		check_kernel(k, in.kernel);
		product(&in, k);
		kred_kernel_destroy(k);
	}
	free(in.text);
	return 0;
}
