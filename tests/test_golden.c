/* The golden cases (tests/data/golden, computed with numpy apart from our code) run
 * through the public API on one backend ($KRED_TEST_BACKEND, default "reference"). */
#include <check.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kred.h"
#include "npy.h"
#include "probe.h"

/*
 * Tolerances, relative to the expected value with a floor at the array's scale
 * (|got - want| <= tol * (|want| + max |expected|)), so that a value near 0 that comes out
 * of a cancellation is judged against the size of the terms around it:
 * - float64: 1e-12. numpy and we compute the same sums of at most a few dozen terms in
 *   double, in other orders: a few ulps of the terms, far below 1e-12. A wrong layout or
 *   convention is off by O(1).
 * - float32: 1e-5. The inputs are rounded to float32 (2^-24 relative), which the
 *   formulas here amplify at most ~10x (exp of a squared distance of a few units, a
 *   product of three factors); a float32 backend adds ~n * 2^-24 over n <= 13 terms and
 *   a few more ulps per op: ~2e-6 at worst, so 1e-5 leaves a margin of 5 and still
 *   catches anything wrong by more than a rounding. The reference backend, which only
 *   rounds the inputs and the output, stays under 1e-7 on every case.
 *   Values that jump (Floor, Round, Mod, OneHot, indices, KMin's order) do not move in
 *   float32 on these data: the nearest input to a jump of Floor, Round or Mod is 4e-4
 *   away, OneHot's 0.1, and the closest two terms of a selection differ by 9e-6 (about
 *   70 float32 ulps), all far beyond float32 rounding.
 */
#define TOL64 1e-12
#define TOL32 1e-5

#define MAX_CASES 128
#define MAX_ALIASES 8
#define LINE_LEN 4096

struct golden {
	char *name, *formula, *weight, *reduction, *axis, *note;
	char *aliases[MAX_ALIASES];
	int n_aliases;
	char *line; /* owns the strings above */
};

static struct golden cases[MAX_CASES];
static int n_cases;
static char dir[1024];
static const char *backend;
static char load_error[2048]; /* why cases.txt could not be read, or "" */

/* Splits s at each occurrence of sep (in place) into at most max fields; returns the
 * number of fields. */
static int split(char *s, char sep, char **fields, int max)
{
	int n = 0;

	while (n < max) {
		char *end = strchr(s, sep);

		fields[n++] = s;
		if (!end)
			break;
		*end = '\0';
		s = end + 1;
	}
	return n;
}

/* Reads cases.txt into cases[]. */
static int load_cases(void)
{
	char path[1200], buf[LINE_LEN];
	FILE *fp;
	int lineno = 0;

	snprintf(path, sizeof(path), "%s/cases.txt", dir);
	fp = fopen(path, "r");
	if (!fp) {
		snprintf(load_error, sizeof(load_error), "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(buf, sizeof(buf), fp)) {
		struct golden *c = &cases[n_cases];
		char *f[8], *alias;
		int nf;

		lineno++;
		buf[strcspn(buf, "\r\n")] = '\0';
		if (buf[0] == '#' || buf[0] == '\0')
			continue;
		if (n_cases == MAX_CASES) {
			snprintf(load_error, sizeof(load_error), "%s: more than %d cases", path,
				 MAX_CASES);
			break;
		}
		c->line = strdup(buf);
		nf = split(c->line, '\t', f, 8);
		if (nf < 6) {
			snprintf(load_error, sizeof(load_error),
				 "%s:%d: %d fields, expected 7 (tab-separated)", path, lineno, nf);
			break;
		}
		c->name = f[0];
		c->formula = f[1];
		c->weight = f[2][0] ? f[2] : NULL;
		c->reduction = f[4];
		c->axis = f[5];
		c->note = nf > 6 ? f[6] : "";
		for (alias = strtok(f[3], " "); alias && c->n_aliases < MAX_ALIASES;
		     alias = strtok(NULL, " "))
			c->aliases[c->n_aliases++] = alias;
		n_cases++;
	}
	fclose(fp);
	return load_error[0] ? -1 : 0;
}

static void free_cases(void)
{
	for (int k = 0; k < n_cases; k++)
		free(cases[k].line);
}

static kred_context *ctx;

static void setup(void)
{
	kred_context_options o = { 0 };
	kred_status st;

	o.struct_size = sizeof(o);
	o.backend = backend;
	st = kred_context_create(&o, &ctx);
	ck_assert_msg(st == KRED_OK, "backend %s: %s: %s", backend, kred_status_name(st),
		      kred_errmsg(ctx));
}

static void teardown(void)
{
	kred_context_destroy(ctx);
	ctx = NULL;
}

/* The arrays of one case: one per argument position, and the expected output. */
struct arrays {
	struct npy_array arg[MAX_ALIASES];
	int n;
	struct npy_array expected;
};

/* NAME.npy of case c: in its folder, or for an argument that several cases share (the
 * high-dimensional cases, "hd784/gauss"), in the folder above it. */
static void load_array(const struct golden *c, const char *name, struct npy_array *a)
{
	char path[1200], err[512];
	const char *slash = strrchr(c->name, '/');

	snprintf(path, sizeof(path), "%s/%s/%s.npy", dir, c->name, name);
	if (slash && strcmp(name, "expected") && access(path, F_OK) != 0)
		snprintf(path, sizeof(path), "%s/%.*s/%s.npy", dir, (int)(slash - c->name),
			 c->name, name);
	ck_assert_msg(npy_read(path, a, err, sizeof(err)) == 0, "%s: %s", c->name, err);
	ck_assert_msg(a->dtype == KRED_FLOAT64, "%s: %s is not float64", c->name, path);
}

/* Runs case c in dtype on the arrays (float64) and compares with the expected ones. */
static void run_case(const struct golden *c, kred_dtype dtype, struct arrays *arr)
{
	kred_spec spec = { 0 };
	kred_reduction *r = NULL;
	const void *ptr[MAX_ALIASES];
	void *conv[MAX_ALIASES] = { 0 };
	const char *tname = dtype == KRED_FLOAT32 ? "float32" : "float64";
	double tol = dtype == KRED_FLOAT32 ? TOL32 : TOL64, scale = 0;
	int64_t nx = -1, ny = -1, rows;
	void *out;
	kred_status st;
	int od;

	spec.formula = c->formula;
	spec.weight = c->weight;
	spec.aliases = (const char *const *)c->aliases;
	spec.n_aliases = (size_t)c->n_aliases;
	spec.reduction = c->reduction;
	spec.axis = c->axis[0] == 'i' ? KRED_REDUCE_I : KRED_REDUCE_J;
	spec.dtype = dtype;
	st = kred_reduction_create(ctx, &spec, &r);
	ck_assert_msg(st == KRED_OK, "%s (%s): create: %s: %s", c->name, tname,
		      kred_status_name(st), kred_errmsg(ctx));

	/* Arguments by position: each position's name says which .npy holds it. The
	 * sizes come from the arrays: a Vi's rows are nx, a Vj's ny, and the expected
	 * output has the rows of the axis kept. */
	if (!arr->n) {
		arr->n = kred_reduction_n_args(r);
		ck_assert_int_le(arr->n, MAX_ALIASES);
		for (int p = 0; p < arr->n; p++) {
			int cat, dim;
			const char *name;

			ck_assert_int_eq(kred_reduction_arg(r, p, &cat, &dim, &name), KRED_OK);
			ck_assert_msg(name && name[0], "%s: position %d has no name", c->name, p);
			load_array(c, name, &arr->arg[p]);
		}
		load_array(c, "expected", &arr->expected);
	}
	rows = arr->expected.ndim ? arr->expected.shape[0] : 1;
	if (spec.axis == KRED_REDUCE_J)
		nx = rows;
	else
		ny = rows;
	for (int p = 0; p < arr->n; p++) {
		int cat, dim;
		const char *name;
		const struct npy_array *a = &arr->arg[p];
		int64_t arows = a->ndim == 2 ? a->shape[0] : 1;

		kred_reduction_arg(r, p, &cat, &dim, &name);
		ck_assert_msg(a->count == (size_t)(arows * dim),
			      "%s: %s.npy has %zu values, not a multiple of dimension %d",
			      c->name, name, a->count, dim);
		if (cat == 0 && nx < 0)
			nx = arows;
		if (cat == 1 && ny < 0)
			ny = arows;
		ck_assert_msg(cat == 2 || arows == (cat == 0 ? nx : ny),
			      "%s: %s.npy has %lld rows, other arguments say %lld", c->name, name,
			      (long long)arows, (long long)(cat == 0 ? nx : ny));
		ptr[p] = a->data;
		if (dtype == KRED_FLOAT32) {
			float *f = malloc((a->count + 1) * sizeof(float));

			ck_assert_ptr_nonnull(f);
			for (size_t k = 0; k < a->count; k++)
				f[k] = (float)((const double *)a->data)[k];
			conv[p] = f;
			ptr[p] = f;
		}
	}
	/* A case with no variable on one side still needs a size: take 1. */
	if (nx < 0)
		nx = 1;
	if (ny < 0)
		ny = 1;

	od = kred_reduction_out_dim(r);
	ck_assert_msg(arr->expected.count == (size_t)(rows * od),
		      "%s: expected.npy has %zu values, the reduction gives %lld x %d", c->name,
		      arr->expected.count, (long long)rows, od);
	out = malloc((size_t)(rows * od + 1) * (dtype == KRED_FLOAT32 ? 4 : 8));
	ck_assert_ptr_nonnull(out);
	st = kred_reduction_run(r, nx, ny, ptr, out);
	ck_assert_msg(st == KRED_OK, "%s (%s): run: %s: %s", c->name, tname,
		      kred_status_name(st), kred_errmsg(ctx));

	for (size_t k = 0; k < arr->expected.count; k++) {
		double v = fabs(((const double *)arr->expected.data)[k]);

		if (isfinite(v) && v > scale)
			scale = v;
	}
	for (size_t k = 0; k < arr->expected.count; k++) {
		double want = ((const double *)arr->expected.data)[k];
		double got = dtype == KRED_FLOAT32 ? ((const float *)out)[k] :
						     ((const double *)out)[k];
		int ok = isnan(want)   ? isnan(got) :
			 isinf(want)   ? got == want :
					 fabs(got - want) <= tol * (fabs(want) + scale);

		ck_assert_msg(ok, "%s (%s, %s): row %zu, value %zu is %.17g, expected %.17g (%s)",
			      c->name, tname, backend, k / (size_t)od, k % (size_t)od, got, want,
			      c->note);
	}
	free(out);
	for (int p = 0; p < arr->n; p++)
		free(conv[p]);
	kred_reduction_destroy(r);
}

START_TEST(test_golden)
{
	const struct golden *c = &cases[_i];
	struct arrays arr = { .n = 0 };

	run_case(c, KRED_FLOAT64, &arr);
	run_case(c, KRED_FLOAT32, &arr);
	for (int p = 0; p < arr.n; p++)
		npy_free(&arr.arg[p]);
	npy_free(&arr.expected);
}
END_TEST

/* cases.txt must exist and list cases: a missing data folder is a failure, not a skip. */
START_TEST(test_cases_file)
{
	ck_assert_msg(!load_error[0], "%s", load_error);
	ck_assert_msg(n_cases > 0, "no case in %s/cases.txt", dir);
}
END_TEST

int main(void)
{
	const char *data = getenv("KRED_TEST_DATA");
	Suite *s = suite_create("golden");
	TCase *tc;
	int failed;

	backend = getenv("KRED_TEST_BACKEND");
	if (!backend || !backend[0])
		backend = "reference";
	snprintf(dir, sizeof(dir), "%s/golden", data && data[0] ? data : "tests/data");
	load_cases();

	/* A backend that cannot run on this machine is a skip (77), except in CI, where
	 * the machine is expected to have it. */
	{
		int rc = probe_or_skip(backend);

		if (rc) {
			free_cases();
			return rc < 0 ? 0 : rc;
		}
	}

	tc = tcase_create("cases");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_cases_file);
	if (n_cases > 0)
		tcase_add_loop_test(tc, test_golden, 0, n_cases);
	suite_add_tcase(s, tc);

	failed = run_suites(NULL, s);
	free_cases();
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
