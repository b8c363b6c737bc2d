/* "name:all" (lib/multi.c): one context over every device of a backend. Run with
 * POCL_DEVICES="pthread pthread", which gives two OpenCL devices: results against the one
 * device of "opencl:0" (gradients with a pre-reduction and a parameter's row sum
 * included), the shares following measured speed, the memory and device count members,
 * what refuses a context of several devices, and the errors of "host:all" and of
 * "opencl:all" without OpenCL. Vulkan too, when lavapipe is there (one device). Skips (77)
 * without an OpenCL device, fails in CI. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "probe.h"
#include "run_exe.h"

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static uint64_t rng;

/* Values on a coarse grid (multiples of 1/4 in [-1, 1]) give exact ties of SqDist, and
 * squared distances exact in float32. */
static double draw(int coarse)
{
	rng = rng * 6364136223846793005ull + 1442695040888963407ull;
	if (coarse)
		return (double)((int)(rng >> 33) % 9 - 4) / 4.0;
	return (double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static const char *const aliases[] = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)",
				       "U = Vi(1)" };

struct row {
	const char *formula, *weight, *reduction;
	kred_axis axis;
	kred_dtype dtype;
	int coarse;
	const char *grad; /* run the gradient with respect to this variable instead */
};

static const struct row rows[] = {
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", KRED_REDUCE_J, KRED_FLOAT32, 0, NULL },
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", KRED_REDUCE_J, KRED_FLOAT64, 0, NULL },
	{ "-G*SqDist(X,Y) + U", NULL, "LogSumExp", KRED_REDUCE_J, KRED_FLOAT32, 0, NULL },
	{ "SqDist(X,Y)", NULL, "ArgKMin(3)", KRED_REDUCE_J, KRED_FLOAT32, 1, NULL },
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", KRED_REDUCE_I, KRED_FLOAT32, 0, NULL },
	{ "SqDist(X,Y)", NULL, "Min_ArgMin", KRED_REDUCE_I, KRED_FLOAT64, 1, NULL },
	/* a parameter's gradient: the rows the devices return are summed above them */
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", KRED_REDUCE_J, KRED_FLOAT64, 0, "G" },
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", KRED_REDUCE_I, KRED_FLOAT32, 0, "G" },
	/* SumSoftMaxWeight's gradients in a j variable are i-reductions that run a
	 * pre-reduction over j first (the log-normaliser of each row i): two splits, one of
	 * the i rows, then one of the j rows */
	{ "-SqDist(X,Y)", "B", "SumSoftMaxWeight", KRED_REDUCE_J, KRED_FLOAT32, 0, "Y" },
	{ "-G*SqDist(X,Y)", "B", "SumSoftMaxWeight", KRED_REDUCE_J, KRED_FLOAT64, 0, "B" },
	{ "-G*SqDist(X,Y)", "B", "SumSoftMaxWeight", KRED_REDUCE_J, KRED_FLOAT64, 0, "G" },
};

/* (nx, ny): uneven halves, one row (one device idle), no rows, no columns. */
static const int64_t sizes[][2] = { { 1001, 300 }, { 1, 37 }, { 0, 5 }, { 513, 0 },
				    { 77, 1 } };

static kred_context *open_ctx(const char *backend, kred_scheme scheme)
{
	kred_context_options o = { 0 };
	kred_context *c = NULL;
	kred_status st;

	o.struct_size = sizeof(o);
	o.backend = backend;
	o.scheme = scheme;
	st = kred_context_create(&o, &c);
	ck_assert_msg(st == KRED_OK, "%s: %s", backend, kred_errmsg(c));
	return c;
}

/* The row's reduction on c (its gradient when the row says so). */
static kred_reduction *make(kred_context *c, const struct row *rw)
{
	kred_spec s = { 0 };
	kred_reduction *r = NULL, *g = NULL;

	s.formula = rw->formula;
	s.weight = rw->weight;
	s.reduction = rw->reduction;
	s.aliases = aliases;
	s.n_aliases = N(aliases);
	s.axis = rw->axis;
	s.dtype = rw->dtype;
	ck_assert_msg(kred_reduction_create(c, &s, &r) == KRED_OK, "%s %s on %s: %s",
		      rw->reduction, rw->formula, kred_context_backend(c), kred_errmsg(c));
	if (!rw->grad)
		return r;
	ck_assert_msg(kred_reduction_grad(r, rw->grad, &g) == KRED_OK, "grad %s: %s", rw->grad,
		      kred_errmsg(c));
	kred_reduction_destroy(r);
	return g;
}

static size_t value_size(const kred_reduction *r)
{
	return r->dtype == KRED_FLOAT64 ? 8 : 4;
}

static int64_t out_rows(const kred_reduction *r, int64_t nx, int64_t ny)
{
	return r->pm_sum ? 1 : r->axis == KRED_REDUCE_J ? nx : ny;
}

/* Arguments for r's positions (malloc'ed, one more slot than needed). Parameters are 0.7,
 * so that G is a sensible scale. */
static void **make_args(const kred_reduction *r, int64_t nx, int64_t ny, int coarse)
{
	int n = kred_reduction_n_args(r);
	size_t size = value_size(r);
	void **a = calloc((size_t)n + 1, sizeof(*a));

	ck_assert_ptr_nonnull(a);
	for (int p = 0; p < n; p++) {
		int cat, dim;
		int64_t count;

		ck_assert_int_eq(kred_reduction_arg(r, p, &cat, &dim, NULL), KRED_OK);
		count = (cat == 0 ? nx : cat == 1 ? ny : 1) * dim;
		a[p] = malloc((size_t)(count > 0 ? count : 1) * size);
		ck_assert_ptr_nonnull(a[p]);
		for (int64_t k = 0; k < count; k++) {
			double v = cat == 2 ? 0.7 : draw(coarse);

			if (size == 8)
				((double *)a[p])[k] = v;
			else
				((float *)a[p])[k] = (float)v;
		}
	}
	return a;
}

static void free_args(void **a)
{
	for (int p = 0; a && a[p]; p++)
		free(a[p]);
	free(a);
}

/* Runs r into a fresh buffer (with a guard value past the end, checked). */
static void *run(kred_reduction *r, int64_t nx, int64_t ny, void **args)
{
	int64_t count = out_rows(r, nx, ny) * kred_reduction_out_dim(r);
	size_t size = value_size(r);
	unsigned char *out = malloc((size_t)(count + 1) * size);
	kred_status st;

	ck_assert_ptr_nonnull(out);
	memset(out, 0xA5, (size_t)(count + 1) * size);
	st = kred_reduction_run(r, nx, ny, (const void *const *)args, out);
	ck_assert_msg(st == KRED_OK, "run %lld x %lld on %s: %s", (long long)nx, (long long)ny,
		      kred_context_backend(r->ctx), kred_errmsg(r->ctx));
	for (size_t b = 0; b < size; b++)
		ck_assert_msg(out[(size_t)count * size + b] == 0xA5, "written past the output");
	return out;
}

static double value(const void *p, size_t size, int64_t k)
{
	return size == 8 ? ((const double *)p)[k] : ((const float *)p)[k];
}

/* got against want, value by value: within rel * max(1, |want|) (0: exactly). */
static void compare(const void *got, const void *want, size_t size, int64_t count, double rel,
		    const char *what)
{
	for (int64_t k = 0; k < count; k++) {
		double g = value(got, size, k), w = value(want, size, k);
		int ok = isnan(w) ? isnan(g) : rel == 0 || isinf(w) ? g == w
								     : fabs(g - w) <= rel * fmax(1, fabs(w));

		ck_assert_msg(ok, "%s: value %lld: got %.17g, want %.17g", what, (long long)k, g, w);
	}
}

/* ---- the devices */

START_TEST(test_devices)
{
	kred_context *all = open_ctx("opencl:all", KRED_SCHEME_AUTO);
	kred_context *one = open_ctx("opencl:0", KRED_SCHEME_AUTO);
	int n = kred__backend_opencl.device_count();
	double shares[8];
	char head[64];

	/* POCL_DEVICES="pthread pthread": two (more if another OpenCL platform is there) */
	ck_assert_int_ge(n, 2);
	ck_assert_int_eq(kred__multi_shares(all, shares, N(shares)), n);
	ck_assert_ptr_eq(kred__multi_inner(all, NULL), &kred__backend_opencl);
	for (int d = 0; d < n && d < N(shares); d++)
		ck_assert_double_eq_tol(shares[d], 1.0 / n, 1e-12);
	snprintf(head, sizeof(head), "opencl:all(%d): opencl:", n);
	ck_assert_msg(!strncmp(kred_context_backend(all), head, strlen(head)), "%s",
		      kred_context_backend(all));
	ck_assert_msg(strstr(kred_context_backend(all), " | opencl:"), "%s",
		      kred_context_backend(all));
	/* the smallest device's memory; the same devices here */
	ck_assert_int_gt(one->backend->memory(one->bstate), 0);
	ck_assert_int_le(all->backend->memory(all->bstate), one->backend->memory(one->bstate));
	ck_assert_int_eq(all->backend->is_gpu(all->bstate), one->backend->is_gpu(one->bstate));
	ck_assert_int_eq(kred__multi_shares(one, NULL, 0), 0);
	ck_assert_ptr_null(kred__multi_inner(one, NULL));
	kred_context_destroy(all);
	kred_context_destroy(one);
}
END_TEST

/* ---- results against one device */

/*
 * In the 1D scheme a row's result is computed by one work-item walking every column in
 * the same tiles, whichever device it is on and wherever its slice starts: splitting the
 * rows changes no row's arithmetic, so the results are the same to the bit (and a
 * parameter's gradient sums the same rows in the same order above the backend).
 */
START_TEST(test_same_as_one_device)
{
	const struct row *rw = &rows[_i];
	kred_context *all = open_ctx("opencl:all", KRED_SCHEME_1D);
	kred_context *one = open_ctx("opencl:0", KRED_SCHEME_1D);
	kred_reduction *ra = make(all, rw), *r1 = make(one, rw);

	if (rw->grad && !strcmp(rw->reduction, "SumSoftMaxWeight") && strcmp(rw->grad, "G")) {
		ck_assert_ptr_nonnull(ra->pre);
		ck_assert_int_ne(ra->pre->axis, ra->axis);
	}
	if (rw->grad && !strcmp(rw->grad, "G"))
		ck_assert_int_eq(ra->pm_sum, 1);
	/* device 0's source */
	ck_assert_str_eq(kred_reduction_source(ra), kred_reduction_source(r1));
	rng = 12345;
	for (int s = 0; s < N(sizes); s++) {
		int64_t nx = sizes[s][0], ny = sizes[s][1];
		void **args = make_args(ra, nx, ny, rw->coarse);
		void *got = run(ra, nx, ny, args), *want = run(r1, nx, ny, args);
		char what[160];

		snprintf(what, sizeof(what), "%s %s%s%s (%s), %lld x %lld", rw->reduction,
			 rw->formula, rw->grad ? ", grad " : "", rw->grad ? rw->grad : "",
			 rw->dtype == KRED_FLOAT64 ? "float64" : "float32", (long long)nx,
			 (long long)ny);
		compare(got, want, value_size(ra), out_rows(ra, nx, ny) * kred_reduction_out_dim(ra),
			0, what);
		free(got);
		free(want);
		free_args(args);
	}
	kred_reduction_destroy(ra);
	kred_reduction_destroy(r1);
	kred_context_destroy(all);
	kred_context_destroy(one);
}
END_TEST

/*
 * In the auto scheme 600 rows over 6,000 columns take the 2D scheme on one device (4
 * column ranges), and each half of them 2D with 8 ranges: a row's terms are added in
 * another order. The terms are positive (no cancellation), so the two sums differ by a few
 * roundings of the total: 1e-5 of it in float32 (whose epsilon is 6e-8; the block sums
 * add at most ~300 terms in a chain), 1e-13 in float64. Indices are exact: the 2D merge
 * keeps the lower index of a tie, as one pass does, and coarse squared distances are
 * exact.
 */
START_TEST(test_auto_scheme)
{
	static const struct row auto_rows[] = {
		{ "Exp(-G*SqDist(X,Y))", NULL, "Sum", KRED_REDUCE_J, KRED_FLOAT32, 0, NULL },
		{ "Exp(-G*SqDist(X,Y))", NULL, "Sum", KRED_REDUCE_J, KRED_FLOAT64, 0, NULL },
		{ "SqDist(X,Y)", NULL, "ArgKMin(3)", KRED_REDUCE_J, KRED_FLOAT32, 1, NULL },
	};
	const struct row *rw = &auto_rows[_i];
	kred_context *all = open_ctx("opencl:all", KRED_SCHEME_AUTO);
	kred_context *one = open_ctx("opencl:0", KRED_SCHEME_AUTO);
	kred_reduction *ra = make(all, rw), *r1 = make(one, rw);
	const int64_t nx = 600, ny = 6000;
	void **args;
	void *got, *want;
	double rel = rw->coarse ? 0 : rw->dtype == KRED_FLOAT64 ? 1e-13 : 1e-5;

	rng = 777;
	args = make_args(ra, nx, ny, rw->coarse);
	got = run(ra, nx, ny, args);
	want = run(r1, nx, ny, args);
	compare(got, want, value_size(ra), nx * kred_reduction_out_dim(ra), rel, rw->reduction);
	free(got);
	free(want);
	free_args(args);
	kred_reduction_destroy(ra);
	kred_reduction_destroy(r1);
	kred_context_destroy(all);
	kred_context_destroy(one);
}
END_TEST

/* ---- the shares follow the measured speeds */

START_TEST(test_shares_adapt)
{
	const struct row *rw = &rows[0];
	kred_context *all = open_ctx("opencl:all", KRED_SCHEME_1D);
	kred_context *one = open_ctx("opencl:0", KRED_SCHEME_1D);
	kred_reduction *ra = make(all, rw), *r1 = make(one, rw);
	/* Many rows and few columns: the times grow with the rows even for a small slice
	 * (POCL runs 512 rows per work-group here, and a group costs the same full or
	 * not). */
	const int64_t nx = 40000, ny = 200;
	double shares[8], slow, total;
	int n = kred__multi_shares(all, shares, N(shares));
	void **args;
	void *got, *want;

	ck_assert_int_ge(n, 2);
	ck_assert_int_le(n, N(shares));
	rng = 99;
	args = make_args(ra, nx, ny, 0);
	/* The last device seen 4 times slower than it is: the measured split would give it
	 * about a fifth of the rows that an equal one gets. */
	ck_assert_int_eq(kred__multi_test_time_scale(all, n - 1, 4.0), KRED_OK);
	for (int k = 0; k < 6; k++)
		free(run(ra, nx, ny, args));
	kred__multi_shares(all, shares, N(shares));
	total = 0;
	for (int d = 0; d < n; d++)
		total += shares[d];
	ck_assert_double_eq_tol(total, 1.0, 1e-9);
	slow = shares[n - 1];
	ck_assert_msg(slow < 0.8 / n, "the slow device still has a share of %.3f", slow);
	for (int d = 0; d < n - 1; d++)
		ck_assert_msg(shares[d] > slow, "device %d: share %.3f", d, shares[d]);
	/* still the same results with uneven slices */
	got = run(ra, nx, ny, args);
	want = run(r1, nx, ny, args);
	compare(got, want, 4, nx * kred_reduction_out_dim(ra), 0, "after the shares moved");
	free(got);
	free(want);
	/* and back when it is as fast again */
	ck_assert_int_eq(kred__multi_test_time_scale(all, n - 1, 1.0), KRED_OK);
	for (int k = 0; k < 6; k++)
		free(run(ra, nx, ny, args));
	kred__multi_shares(all, shares, N(shares));
	ck_assert_msg(shares[n - 1] > slow + 0.05, "the share of the last device stayed at "
		      "%.3f (was %.3f)", shares[n - 1], slow);
	ck_assert_int_eq(kred__multi_test_time_scale(all, n, 1.0), KRED_EINVAL);
	ck_assert_int_eq(kred__multi_test_time_scale(one, 0, 1.0), KRED_EBACKEND);
	free_args(args);
	kred_reduction_destroy(ra);
	kred_reduction_destroy(r1);
	kred_context_destroy(all);
	kred_context_destroy(one);
}
END_TEST

/* ---- what needs one device */

START_TEST(test_one_device_calls)
{
	kred_context *all = open_ctx("opencl:all", KRED_SCHEME_AUTO);
	kred_reduction *r = make(all, &rows[0]);
	void *cl_ctx = (void *)1, *queue = (void *)1, *mems[4] = { NULL, NULL, NULL, NULL };

	ck_assert_int_eq(kred_context_opencl_handles(all, &cl_ctx, &queue), KRED_EBACKEND);
	ck_assert_ptr_null(cl_ctx);
	ck_assert_ptr_null(queue);
	ck_assert_msg(strstr(kred_errmsg(all), "not with opencl:all"), "%s", kred_errmsg(all));
	ck_assert_int_eq(kred_reduction_run_opencl(r, 0, 0, (const void *const *)mems, NULL),
			 KRED_EBACKEND);
	ck_assert_msg(strstr(kred_errmsg(all), "not with opencl:all"), "%s", kred_errmsg(all));
	kred_reduction_destroy(r);
	kred_context_destroy(all);
}
END_TEST

/* ---- errors */

START_TEST(test_no_devices_to_share)
{
	static const char *const names[] = { "host:all", "reference:all" };
	kred_context_options o = { 0 };
	kred_context *c = NULL;

	o.struct_size = sizeof(o);
	for (int k = 0; k < N(names); k++) {
		o.backend = names[k];
		ck_assert_int_eq(kred_context_create(&o, &c), KRED_EBACKEND);
		ck_assert_msg(strstr(kred_errmsg(c), names[k]) && strstr(kred_errmsg(c), "no devices"),
			      "%s", kred_errmsg(c));
		kred_context_destroy(c);
		c = NULL;
	}
	o.backend = "nosuch:all";
	ck_assert_int_eq(kred_context_create(&o, &c), KRED_EBACKEND);
	ck_assert_msg(strstr(kred_errmsg(c), "unknown backend"), "%s", kred_errmsg(c));
	kred_context_destroy(c);
}
END_TEST

/* Every allocation of opening and of a run failing in turn: an error or a right result,
 * and nothing leaked (under valgrind or ASan). */
START_TEST(test_out_of_memory)
{
	kred_context_options o = { 0 };
	kred_context *one = open_ctx("opencl:0", KRED_SCHEME_1D), *c = NULL;
	kred_reduction *r, *r1 = make(one, &rows[0]);
	void **args;
	void *want;
	int ok = 0;

	o.struct_size = sizeof(o);
	o.backend = "opencl:all";
	o.scheme = KRED_SCHEME_1D;
	for (long n = 1; !ok; n++) {
		kred_status st;

		ck_assert_int_lt(n, 1000);
		kred__test_alloc_fail(n, 0);
		st = kred_context_create(&o, &c);
		kred__test_alloc_fail(0, 0);
		ck_assert_msg(st == KRED_OK || st == KRED_ENOMEM, "allocation %ld: %s", n,
			      kred_status_name(st));
		ok = st == KRED_OK;
		if (!ok)
			kred_context_destroy(c);
		c = ok ? c : NULL;
	}
	r = make(c, &rows[0]);
	rng = 5;
	args = make_args(r, 301, 40, 0);
	want = run(r1, 301, 40, args);
	ok = 0;
	for (long n = 1; !ok; n++) {
		float out[301 * 2];
		kred_status st;

		ck_assert_int_lt(n, 1000);
		kred__test_alloc_fail(n, 0);
		st = kred_reduction_run(r, 301, 40, (const void *const *)args, out);
		kred__test_alloc_fail(0, 0);
		ck_assert_msg(st == KRED_OK || st == KRED_ENOMEM, "allocation %ld: %s: %s", n,
			      kred_status_name(st), kred_errmsg(c));
		ok = st == KRED_OK;
		if (ok)
			compare(out, want, 4, 301 * 2, 0, "after allocation failures");
	}
	free(want);
	free_args(args);
	kred_reduction_destroy(r);
	kred_reduction_destroy(r1);
	kred_context_destroy(c);
	kred_context_destroy(one);
}
END_TEST

/* ---- Vulkan: lavapipe is one device, which "vulkan:all" must serve as well */

START_TEST(test_vulkan_all)
{
	static const struct row rw = { "Exp(-G*SqDist(X,Y))", NULL, "Sum", KRED_REDUCE_J,
				       KRED_FLOAT32, 0, NULL };
	kred_context_options o = { 0 };
	kred_context *all = NULL, *one;
	kred_reduction *ra, *r1;
	void **args;
	void *got, *want;
	char head[64];
	int n;

	o.struct_size = sizeof(o);
	o.backend = "vulkan:all";
	if (kred_context_create(&o, &all) != KRED_OK) {
		/* The Vulkan suites are the ones that insist on a device. */
		ck_assert_int_eq(kred__backend_vulkan.device_count(), 0);
		fprintf(stderr, "test_multi: no vulkan:all here (%s)\n", kred_errmsg(all));
		kred_context_destroy(all);
		return;
	}
	n = kred__backend_vulkan.device_count();
	snprintf(head, sizeof(head), "vulkan:all(%d): vulkan:", n);
	ck_assert_msg(n >= 1 && !strncmp(kred_context_backend(all), head, strlen(head)), "%s",
		      kred_context_backend(all));
	ck_assert_int_gt(all->backend->memory(all->bstate), 0);
	one = open_ctx("vulkan:0", KRED_SCHEME_AUTO);
	ra = make(all, &rw);
	r1 = make(one, &rw);
	rng = 3;
	args = make_args(ra, 1001, 257, 0);
	got = run(ra, 1001, 257, args);
	want = run(r1, 1001, 257, args);
	/* One device: its one slice is the whole run, to the bit. Several: other devices
	 * may round otherwise; positive terms, so a few roundings of float32. */
	compare(got, want, 4, 1001, n == 1 ? 0 : 1e-5, "vulkan:all");
	free(got);
	free(want);
	free_args(args);
	kred_reduction_destroy(ra);
	kred_reduction_destroy(r1);
	kred_context_destroy(all);
	kred_context_destroy(one);
}
END_TEST

/* ---- the command */


START_TEST(test_cli)
{
	static const char *const src = "source 'SqDist(X,Y)' -a 'X=Vi(2)' -a 'Y=Vj(2)' -r ArgMin";
	char out[65536], args[512];

	snprintf(args, sizeof(args), "%s -b opencl:all", src);
	ck_assert_int_eq(run_exe("", args, out, sizeof(out)), 0);
	ck_assert_msg(strstr(out, "kr_reduce"), "%s", out);
	ck_assert_int_eq(run_exe("KRED_OPENCL_LIBRARY=none", args, out, sizeof(out)), 1);
	ck_assert_msg(strstr(out, "opencl:all: OpenCL is not available"), "%s", out);
	snprintf(args, sizeof(args), "%s -b host:all", src);
	ck_assert_int_eq(run_exe("", args, out, sizeof(out)), 1);
	ck_assert_msg(strstr(out, "host:all"), "%s", out);
	ck_assert_int_eq(run_exe("", "devices", out, sizeof(out)), 0);
	ck_assert_msg(strstr(out, "opencl:all  the "), "%s", out);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("multi");
	TCase *tc;
	SRunner *sr;
	int failed;

	/* No device is a skip (77), except in CI. Asked in a child (probe.h). */
	failed = probe_or_skip("opencl:all");
	if (failed)
		return failed;

	tc = tcase_create("opencl");
	tcase_add_test(tc, test_devices);
	tcase_add_loop_test(tc, test_same_as_one_device, 0, N(rows));
	tcase_add_loop_test(tc, test_auto_scheme, 0, 3);
	tcase_add_test(tc, test_shares_adapt);
	tcase_add_test(tc, test_one_device_calls);
	tcase_add_test(tc, test_no_devices_to_share);
	tcase_add_test(tc, test_out_of_memory);
	suite_add_tcase(s, tc);

	tc = tcase_create("vulkan");
	tcase_add_test(tc, test_vulkan_all);
	suite_add_tcase(s, tc);

	tc = tcase_create("command");
	tcase_add_test(tc, test_cli);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
