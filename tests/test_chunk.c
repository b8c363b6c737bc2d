/* Runs larger than the device memory cap: chunked into blocks whose partial states merge
 * with the reduction's own merge must give the result of one whole run on the same
 * backend, for every kind of reduction and for gradients. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "probe.h"

/* The backend under test: argv[1], default "host". */
static const char *backend = "host";

static kred_context *open_ctx(int64_t cap)
{
	kred_context_options o = { 0 };
	kred_context *ctx = NULL;

	o.struct_size = sizeof(o);
	o.backend = backend;
	o.device_memory = cap;
	ck_assert_msg(kred_context_create(&o, &ctx) == KRED_OK, "%s: %s", backend,
		      kred_errmsg(ctx));
	return ctx;
}

static kred_reduction *make(kred_context *ctx, const char *formula, const char *weight,
			    const char *reduction, const char *const *al, int nal, kred_axis axis,
			    kred_dtype dt)
{
	kred_spec s = { 0 };
	kred_reduction *r = NULL;

	s.formula = formula;
	s.weight = weight;
	s.reduction = reduction;
	s.aliases = al;
	s.n_aliases = (size_t)nal;
	s.axis = axis;
	s.dtype = dt;
	ck_assert_msg(kred_reduction_create(ctx, &s, &r) == KRED_OK, "%s: %s", formula,
		      kred_errmsg(ctx));
	return r;
}

static uint64_t rng;

static double uniform(double lo, double hi)
{
	rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
	return lo + (hi - lo) * (double)(rng >> 11) * 0x1.0p-53;
}

/* Inputs of r at (nx, ny), uniform in [lo, hi]. */
static void **inputs(const kred_reduction *r, int64_t nx, int64_t ny, double lo, double hi,
		     kred_dtype dt, uint64_t seed)
{
	int n = kred_reduction_n_args(r);
	void **a = calloc((size_t)n + 1, sizeof(*a));

	rng = seed;
	for (int p = 0; p < n; p++) {
		int cat, dim;
		int64_t count;

		kred_reduction_arg(r, p, &cat, &dim, NULL);
		count = (int64_t)dim * (cat == 0 ? nx : cat == 1 ? ny : 1);
		a[p] = malloc((size_t)(count ? count : 1) * 8);
		for (int64_t k = 0; k < count; k++) {
			if (dt == KRED_FLOAT64)
				((double *)a[p])[k] = uniform(lo, hi);
			else
				((float *)a[p])[k] = (float)uniform(lo, hi);
		}
	}
	return a;
}

static void free_inputs(void **a, int n)
{
	for (int p = 0; p < n; p++)
		free(a[p]);
	free(a);
}

/* Runs r (made on a capped context) and the same reduction on an uncapped one, and
 * compares: |got - want| <= rtol * (|want| + mean |want|) (NaN and infinities equal).
 * Returns the number of chunked runs. */
static int64_t compare_capped(int64_t cap, const char *formula, const char *weight,
			      const char *reduction, const char *const *al, int nal,
			      kred_axis axis, kred_dtype dt, int64_t nx, int64_t ny, double rtol,
			      const char *grad_var, const char *env_cap)
{
	kred_context *cc = open_ctx(cap), *wc = open_ctx(0);
	kred_reduction *rc = make(cc, formula, weight, reduction, al, nal, axis, dt);
	kred_reduction *rw = make(wc, formula, weight, reduction, al, nal, axis, dt);
	struct kred__run_stats st;
	int64_t rows, count;
	size_t size = dt == KRED_FLOAT64 ? 8 : 4;
	void **a, *got, *want;
	double scale = 0;

	if (grad_var) {
		kred_reduction *g;

		ck_assert_int_eq(kred_reduction_grad(rc, grad_var, &g), KRED_OK);
		kred_reduction_destroy(rc);
		rc = g;
		ck_assert_int_eq(kred_reduction_grad(rw, grad_var, &g), KRED_OK);
		kred_reduction_destroy(rw);
		rw = g;
	}
	a = inputs(rc, nx, ny, -1, 1, dt, 17);
	{
		/* a gradient's rows: the shape of the variable's input (one vector for a Pm) */
		int cat = 0, dim = 0;

		if (grad_var) {
			for (int p = 0; p < kred_reduction_n_args(rc); p++) {
				const char *name;

				kred_reduction_arg(rc, p, &cat, &dim, &name);
				if (!strcmp(name, grad_var))
					break;
			}
			rows = cat == 2 ? 1 : cat == 0 ? nx : ny;
		} else {
			rows = axis == KRED_REDUCE_J ? nx : ny;
		}
	}
	count = rows * kred_reduction_out_dim(rc);
	got = malloc((size_t)count * size + 8);
	want = malloc((size_t)count * size + 8);
	kred__run_stats_take();
	ck_assert_msg(kred_reduction_run(rw, nx, ny, (const void *const *)a, want) == KRED_OK,
		      "%s", kred_errmsg(wc));
	st = kred__run_stats_take();
	ck_assert_int_eq(st.chunked, 0);
	if (env_cap)
		setenv("KRED_DEVICE_MEMORY", env_cap, 1);
	ck_assert_msg(kred_reduction_run(rc, nx, ny, (const void *const *)a, got) == KRED_OK,
		      "%s", kred_errmsg(cc));
	unsetenv("KRED_DEVICE_MEMORY");
	st = kred__run_stats_take();
	/* (LogSumExpWeight of a negative sum is NaN: those stay out of the scale) */
	for (int64_t k = 0, n = 0; k < count; k++) {
		double w = dt == KRED_FLOAT64 ? ((double *)want)[k] : ((float *)want)[k];

		if (isfinite(w))
			scale += (fabs(w) - scale) / (double)++n;
	}
	for (int64_t k = 0; k < count; k++) {
		double g = dt == KRED_FLOAT64 ? ((double *)got)[k] : ((float *)got)[k];
		double w = dt == KRED_FLOAT64 ? ((double *)want)[k] : ((float *)want)[k];

		if ((isnan(g) && isnan(w)) || g == w)
			continue;
		ck_assert_msg(fabs(g - w) <= rtol * (fabs(w) + scale),
			      "%s %s%s (%s, %s, cap %lld): value %lld: chunked %.17g, whole %.17g",
			      reduction, formula, grad_var ? " (gradient)" : "",
			      axis == KRED_REDUCE_J ? "j" : "i",
			      dt == KRED_FLOAT64 ? "float64" : "float32", (long long)cap,
			      (long long)k, g, w);
	}
	free_inputs(a, kred_reduction_n_args(rc));
	free(got);
	free(want);
	kred_reduction_destroy(rc);
	kred_reduction_destroy(rw);
	kred_context_destroy(cc);
	kred_context_destroy(wc);
	return st.chunked;
}

/*
 * Tolerances. The chunked run computes each block on the same backend as the whole run
 * and merges in double; only the order of additions differs. float32 sums: each block
 * sum carries at most n 2^-24 of the sum of |terms| (n = 3000 terms: 1.8e-4 at worst,
 * ~sqrt(n) 2^-24 = 3e-6 typically) on either side; the values compared are sums of
 * positive terms or dominated by them, and the mean |want| enters the scale: 1e-4.
 * LogSumExp: one log of such a sum, absolute error the sum's relative one: 1e-5 of
 * (|want| + mean). float64: the same with 2^-53: 1e-12. Selections: exact.
 */
#define TOL32 1e-4
#define TOL64 1e-12

static const char *const xyb[] = { "X=Vi(3)", "Y=Vj(3)", "B=Vj(2)", "G=Pm(1)" };

/* A cap that holds a few hundred rows and columns of these formulas: both axes chunk. */
#define SMALL_CAP (48 * 1024)

START_TEST(test_kinds)
{
	static const struct {
		const char *formula, *weight, *reduction;
		double tol32, tol64;
	} cases[] = {
		{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", TOL32, TOL64 },
		{ "-G*SqDist(X,Y)", NULL, "LogSumExp", TOL32, TOL64 },
		{ "-G*SqDist(X,Y)", NULL, "Max_SumShiftExp", TOL32, TOL64 },
		{ "-G*SqDist(X,Y)", "B", "LogSumExpWeight", TOL32, TOL64 },
		{ "-G*SqDist(X,Y)", "B", "SumSoftMaxWeight", TOL32, TOL64 },
		{ "-G*SqDist(X,Y)", "B", "Max_SumShiftExpWeight", TOL32, TOL64 },
		{ "X-Y", NULL, "Min", 0, 0 },
		{ "X-Y", NULL, "Max", 0, 0 },
		{ "X-Y", NULL, "ArgMin", 0, 0 },
		{ "X*Y", NULL, "ArgMax", 0, 0 },
		{ "X-Y", NULL, "Min_ArgMin", 0, 0 },
		{ "X*Y", NULL, "Max_ArgMax", 0, 0 },
		{ "SqDist(X,Y)", NULL, "KMin(4)", 0, 0 },
		{ "SqDist(X,Y)", NULL, "ArgKMin(3)", 0, 0 },
		{ "X-Y", NULL, "KMin_ArgKMin(2)", 0, 0 },
	};
	int c = _i / 4;
	kred_axis axis = _i % 2 ? KRED_REDUCE_I : KRED_REDUCE_J;
	kred_dtype dt = (_i / 2) % 2 ? KRED_FLOAT64 : KRED_FLOAT32;

	ck_assert_int_gt(compare_capped(SMALL_CAP, cases[c].formula, cases[c].weight,
					cases[c].reduction, xyb, 4, axis, dt, 1500, 2500,
					dt == KRED_FLOAT64 ? cases[c].tol64 : cases[c].tol32,
					NULL, NULL),
			 0);
}
END_TEST

/* Gradients: one that needs a forward pass (pre), one summed over rows (a Pm). */
START_TEST(test_gradients)
{
	ck_assert_int_gt(compare_capped(SMALL_CAP, "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", xyb, 4,
					KRED_REDUCE_J, KRED_FLOAT64, 1200, 1700, TOL64, "X", NULL),
			 0);
	ck_assert_int_gt(compare_capped(SMALL_CAP, "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", xyb, 4,
					KRED_REDUCE_J, KRED_FLOAT64, 1200, 1700, TOL64, "G", NULL),
			 0);
	ck_assert_int_gt(compare_capped(SMALL_CAP, "-G*SqDist(X,Y)", "B", "SumSoftMaxWeight",
					xyb, 4, KRED_REDUCE_J, KRED_FLOAT64, 1200, 1700, TOL64,
					"Y", NULL),
			 0);
}
END_TEST

/* Uneven sizes: one row, one column, empty sides, blocks that do not divide. */
START_TEST(test_edges)
{
	static const int64_t sizes[][2] = { { 1, 4000 }, { 4000, 1 }, { 0, 3000 }, { 3000, 0 },
					    { 2999, 3001 } };

	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		compare_capped(SMALL_CAP, "SqDist(X,Y)", NULL, "ArgKMin(3)", xyb, 4,
			       KRED_REDUCE_J, KRED_FLOAT32, sizes[k][0], sizes[k][1], 0, NULL, NULL);
		compare_capped(SMALL_CAP, "-G*SqDist(X,Y)", NULL, "LogSumExp", xyb, 4,
			       KRED_REDUCE_J, KRED_FLOAT32, sizes[k][0], sizes[k][1], TOL32, NULL, NULL);
	}
}
END_TEST

/* Blocks with nothing to select: only NaN terms (skipped: index -1 in that block's
 * state, which must lose to any real index), only +inf terms (a row of all +inf has its
 * minimum at index 0, not at the second block's first index), and a mix. The whole run
 * follows FORMULAS.md (the conformance suite checks it against the reference); the
 * chunked one must agree exactly. */
START_TEST(test_special_blocks)
{
	static const char *const reds[] = { "ArgMin", "Min_ArgMin", "KMin_ArgKMin(3)", "Max_ArgMax",
					    "LogSumExp", "Max_SumShiftExp", "Min" };
	static const char *const al[] = { "X=Vi(1)", "Y=Vj(1)" };
	const int64_t nx = 50, ny = 10000;
	kred_context *cc = open_ctx(SMALL_CAP), *wc = open_ctx(0);

	for (int pattern = 0; pattern < 3; pattern++) {
		for (size_t k = 0; k < sizeof(reds) / sizeof(reds[0]); k++) {
			kred_reduction *rc = make(cc, "X-Y", NULL, reds[k], al, 2, KRED_REDUCE_J,
						  KRED_FLOAT64);
			kred_reduction *rw = make(wc, "X-Y", NULL, reds[k], al, 2, KRED_REDUCE_J,
						  KRED_FLOAT64);
			int od = kred_reduction_out_dim(rc);
			double *x = malloc(sizeof(double) * (size_t)nx);
			double *y = malloc(sizeof(double) * (size_t)ny);
			double *got = malloc(sizeof(double) * (size_t)(nx * od));
			double *want = malloc(sizeof(double) * (size_t)(nx * od));
			const void *args[2] = { x, y };
			struct kred__run_stats st;

			rng = 5;
			for (int64_t i = 0; i < nx; i++)
				x[i] = uniform(-1, 1);
			for (int64_t j = 0; j < ny; j++) {
				/* 0: NaN then finite; 1: all -inf (X - Y = +inf); 2: NaN, -inf,
				 * finite */
				y[j] = pattern == 1 ? -INFINITY
				       : j < 5000 ? NAN
				       : pattern == 2 && j < 8000 ? -INFINITY : uniform(-1, 1);
			}
			ck_assert_int_eq(kred_reduction_run(rw, nx, ny, args, want), KRED_OK);
			kred__run_stats_take();
			ck_assert_int_eq(kred_reduction_run(rc, nx, ny, args, got), KRED_OK);
			st = kred__run_stats_take();
			ck_assert_int_gt(st.chunked, 0);
			for (int64_t k2 = 0; k2 < nx * od; k2++)
				ck_assert_msg(got[k2] == want[k2] || (isnan(got[k2]) && isnan(want[k2])),
					      "%s, pattern %d, value %lld: chunked %g, whole %g",
					      reds[k], pattern, (long long)k2, got[k2], want[k2]);
			free(x);
			free(y);
			free(got);
			free(want);
			kred_reduction_destroy(rc);
			kred_reduction_destroy(rw);
		}
	}
	kred_context_destroy(cc);
	kred_context_destroy(wc);
}
END_TEST

/* A cap below one row and one column: a clear error, nothing run. */
START_TEST(test_cap_too_small)
{
	kred_context *ctx = open_ctx(100);
	kred_reduction *r = make(ctx, "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", xyb, 4,
				 KRED_REDUCE_J, KRED_FLOAT32);
	float x[30] = { 0 }, y[30] = { 0 }, b[20] = { 0 }, g = 1, out[20];
	const void *args[] = { x, y, b, &g };

	ck_assert_int_eq(kred_reduction_run(r, 10, 10, args, out), KRED_EDEVICE);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "cap of 100 bytes"));
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
}
END_TEST

/* The case: 1 MiB of device memory for a 50 MiB problem (2,000,000 rows of
 * dimension 6 in float32 = 48 MB of X, 2,500 columns), set through
 * KRED_DEVICE_MEMORY as a user would; few columns keep it to 5e9 pairs. */
START_TEST(test_fifty_mib)
{
	static const char *const al[] = { "X=Vi(6)", "Y=Vj(6)", "B=Vj(1)" };
	static const char *const reds[] = { "Sum", "LogSumExp", "ArgKMin(3)" };
	const char *formula[] = { "Exp(-SqDist(X,Y))*B", "-SqDist(X,Y)", "SqDist(X,Y)" };
	int64_t nx = 2000000, ny = 2500;

	for (int k = 0; k < 3; k++)
		ck_assert_int_gt(compare_capped(0, formula[k], NULL, reds[k], al, 3, KRED_REDUCE_J,
						KRED_FLOAT32, nx, ny, k == 2 ? 0 : TOL32, NULL,
						"1M"),
				 0);
}
END_TEST

int main(int argc, char **argv)
{
	Suite *s;
	TCase *tc;

	if (argc > 1 && argv[1][0])
		backend = argv[1];
	{
		int rc = probe_or_skip(backend);

		if (rc)
			return rc < 0 ? 0 : rc;
	}
	s = suite_create("chunk");
	tc = tcase_create("chunk");
	tcase_set_timeout(tc, 600);
	tcase_add_loop_test(tc, test_kinds, 0, 15 * 4);
	tcase_add_test(tc, test_gradients);
	tcase_add_test(tc, test_edges);
	tcase_add_test(tc, test_special_blocks);
	tcase_add_test(tc, test_cap_too_small);
	if (argc > 2 && !strcmp(argv[2], "--large"))
		tcase_add_test(tc, test_fifty_mib);
	suite_add_tcase(s, tc);
	return run_suites(NULL, s) ? 1 : 0;
}
