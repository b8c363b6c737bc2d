/* The OpenCL backend's own suite: both schemes and both tile variants against the
 * reference (ties of ArgMin / KMin across 2D ranges included), cl_mem runs, build errors,
 * the binary cache, and the command without libOpenCL. Skips (77) without a device, fails in CI. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cl/loader.h"
#include "probe.h"
#include "internal.h"
#include "run_exe.h"
#include "test_config.h"

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* A small deterministic generator. Values on a coarse grid (multiples of 1/4 in [-1, 1])
 * make exact ties of SqDist frequent: the index reductions must keep the lower index in
 * the 2D scheme as the reference does in one pass. */
static uint64_t rng;

static double draw(int coarse)
{
	rng = rng * 6364136223846793005ull + 1442695040888963407ull;
	if (coarse)
		return (double)((int)(rng >> 33) % 9 - 4) / 4.0;
	return (double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

struct row {
	const char *formula, *weight, *reduction;
	kred_axis axis;
	int coarse; /* data on the grid: ties */
};

static const char *const aliases[] = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)",
				       "U = Vi(1)" };

static const struct row rows[] = {
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", KRED_REDUCE_J, 0 },
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", KRED_REDUCE_I, 0 },
	{ "-G*SqDist(X,Y) + U", NULL, "LogSumExp", KRED_REDUCE_J, 0 },
	{ "-SqDist(X,Y)", "B", "LogSumExpWeight", KRED_REDUCE_J, 0 },
	{ "-SqDist(X,Y)", "B", "SumSoftMaxWeight", KRED_REDUCE_J, 0 },
	{ "Scalprod(X,Y)", NULL, "Max_SumShiftExp", KRED_REDUCE_J, 0 },
	{ "SqDist(X,Y)", NULL, "ArgMin", KRED_REDUCE_J, 1 },
	{ "SqDist(X,Y)", NULL, "ArgMin", KRED_REDUCE_I, 1 },
	{ "SqDist(X,Y)", NULL, "Min_ArgMin", KRED_REDUCE_J, 1 },
	{ "SqDist(X,Y)", NULL, "Max_ArgMax", KRED_REDUCE_J, 1 },
	{ "SqDist(X,Y)", NULL, "KMin(3)", KRED_REDUCE_J, 1 },
	{ "SqDist(X,Y)", NULL, "ArgKMin(4)", KRED_REDUCE_J, 1 },
	{ "SqDist(X,Y)", NULL, "KMin_ArgKMin(2)", KRED_REDUCE_J, 1 },
	{ "X - Y", NULL, "Min", KRED_REDUCE_J, 1 },
	{ "B * G", NULL, "Max", KRED_REDUCE_J, 0 },
	{ "X * U", NULL, "Sum", KRED_REDUCE_J, 0 }, /* no column variable */
};

/* (nx, ny): partial groups, one row, no columns, no rows, a few columns. */
static const int64_t sizes[][2] = { { 37, 1000 }, { 1, 3 }, { 300, 0 }, { 0, 5 },
				    { 1000, 17 }, { 130, 4099 } };

/* variants x schemes x dtypes */
static const char *const tiles[] = { "global", "local" };
static const kred_scheme schemes[] = { KRED_SCHEME_1D, KRED_SCHEME_2D, KRED_SCHEME_AUTO };
static const char *const scheme_names[] = { "auto", "1d", "2d" };

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

static kred_reduction *make(kred_context *c, const struct row *rw, kred_dtype dt)
{
	kred_spec s = { 0 };
	kred_reduction *r = NULL;
	kred_status st;

	s.formula = rw->formula;
	s.weight = rw->weight;
	s.reduction = rw->reduction;
	s.aliases = aliases;
	s.n_aliases = N(aliases);
	s.axis = rw->axis;
	s.dtype = dt;
	st = kred_reduction_create(c, &s, &r);
	ck_assert_msg(st == KRED_OK, "%s %s on %s: %s", rw->reduction, rw->formula,
		      kred_context_backend(c), kred_errmsg(c));
	return r;
}

/* Arguments of the alias table for nx, ny, in dtype dt (each malloc'ed). */
static void make_args(int64_t nx, int64_t ny, kred_dtype dt, int coarse, void *args[5])
{
	const int64_t n[5] = { nx * 3, ny * 3, ny * 2, 1, nx };
	size_t size = dt == KRED_FLOAT64 ? 8 : 4;

	for (int a = 0; a < 5; a++) {
		args[a] = malloc((size_t)(n[a] > 0 ? n[a] : 1) * size);
		for (int64_t k = 0; k < n[a]; k++) {
			double v = a == 3 ? 0.7 : draw(coarse);

			if (dt == KRED_FLOAT64)
				((double *)args[a])[k] = v;
			else
				((float *)args[a])[k] = (float)v;
		}
	}
}

static double value(const void *p, kred_dtype dt, int64_t k)
{
	return dt == KRED_FLOAT64 ? ((const double *)p)[k] : ((const float *)p)[k];
}

/* Index outputs exactly; values within a float32 or float64 tolerance. */
static void compare(const struct row *rw, const char *what, kred_dtype dt, const void *got,
		    const void *want, int64_t count)
{
	/* Outputs of indices only; a mixed output (Min_ArgMin) has indices below 2^12 here,
	 * where the tolerance is less than 1. */
	const int index = !strncmp(rw->reduction, "Arg", 3);
	const double tol = dt == KRED_FLOAT64 ? 1e-10 : 2e-4;

	for (int64_t k = 0; k < count; k++) {
		double g = value(got, dt, k), w = value(want, dt, k);
		int ok = isnan(w) ? isnan(g) : isinf(w) ? g == w
							 : fabs(g - w) <= tol * fmax(1, fabs(w));

		ck_assert_msg(ok, "%s %s (%s): value %lld: got %.9g, want %.9g", rw->reduction,
			      rw->formula, what, (long long)k, g, w);
		if (index)
			ck_assert_msg(g == w, "%s (%s): index %lld: got %g, want %g", rw->reduction,
				      what, (long long)k, g, w);
	}
}

/* _i runs over rows x variants x schemes x dtypes. */
START_TEST(test_against_reference)
{
	const int nv = N(tiles), ns = N(schemes), nd = 2;
	const struct row *rw = &rows[_i / (nv * ns * nd)];
	const int v = _i / (ns * nd) % nv, sc = _i / nd % ns;
	const kred_dtype dt = _i % 2 ? KRED_FLOAT64 : KRED_FLOAT32;
	kred_context *c, *ref;
	kred_reduction *r, *rr;
	char what[128];

	setenv("KRED_OPENCL_TILES", tiles[v], 1);
	c = open_ctx("opencl", schemes[sc]);
	ref = open_ctx("reference", KRED_SCHEME_AUTO);
	r = make(c, rw, dt);
	rr = make(ref, rw, dt);
	for (int z = 0; z < N(sizes); z++) {
		int64_t nx = sizes[z][0], ny = sizes[z][1];
		int64_t nout = (rw->axis == KRED_REDUCE_J ? nx : ny) * kred_reduction_out_dim(r);
		void *args[5], *got, *want;
		kred_status st;

		rng = 1234 + (uint64_t)z;
		make_args(nx, ny, dt, rw->coarse, args);
		got = calloc((size_t)nout + 1, 8);
		want = calloc((size_t)nout + 1, 8);
		st = kred_reduction_run(r, nx, ny, (const void *const *)args, got);
		ck_assert_msg(st == KRED_OK, "run: %s", kred_errmsg(c));
		st = kred_reduction_run(rr, nx, ny, (const void *const *)args, want);
		ck_assert_msg(st == KRED_OK, "reference: %s", kred_errmsg(ref));
		snprintf(what, sizeof(what), "%s, %s, %s, nx %lld, ny %lld", tiles[v],
			 scheme_names[schemes[sc]], dt == KRED_FLOAT64 ? "float64" : "float32",
			 (long long)nx, (long long)ny);
		compare(rw, what, dt, got, want, nout);
		for (int a = 0; a < 5; a++)
			free(args[a]);
		free(got);
		free(want);
	}
	kred_reduction_destroy(r);
	kred_reduction_destroy(rr);
	kred_context_destroy(c);
	kred_context_destroy(ref);
	unsetenv("KRED_OPENCL_TILES");
}
END_TEST

/* ---- cl_mem runs */

static const struct kred__cl_api *api(void)
{
	char why[256];
	const struct kred__cl_api *cl = kred__cl_load(NULL, why, sizeof(why));

	ck_assert_msg(cl != NULL, "%s", why);
	return cl;
}

static cl_mem upload(const struct kred__cl_api *cl, void *ctx, const void *p, size_t bytes)
{
	cl_int e = CL_SUCCESS;
	/* OpenCL has no empty buffer: 8 bytes of nothing for an empty array. */
	cl_mem m = cl->CreateBuffer(ctx, CL_MEM_READ_WRITE | (bytes ? CL_MEM_COPY_HOST_PTR : 0),
				    bytes ? bytes : 8, bytes ? (void *)p : NULL, &e);

	ck_assert_msg(m != NULL, "clCreateBuffer: %s", kred__cl_errname(e));
	return m;
}

/* The reduction r (made on the opencl context c) on cl_mem buffers against the same on
 * host arrays. */
static void check_device_run(kred_context *c, kred_reduction *r, int64_t nx, int64_t ny,
			     const char *what)
{
	const struct kred__cl_api *cl = api();
	int n = kred_reduction_n_args(r), od = kred_reduction_out_dim(r);
	int64_t orows = r->pm_sum ? 1 : r->axis == KRED_REDUCE_J ? nx : ny;
	size_t size = r->dtype == KRED_FLOAT64 ? 8 : 4, obytes = (size_t)(orows * od) * size;
	void *args[16], *mems[16], *cl_ctx = NULL, *queue = NULL, *got, *want;
	cl_mem out;
	struct row rw = { "", NULL, "Sum", KRED_REDUCE_J, 0 };
	kred_status st;

	ck_assert_int_le(n, 16);
	ck_assert_int_eq(kred_context_opencl_handles(c, &cl_ctx, &queue), KRED_OK);
	ck_assert_ptr_nonnull(cl_ctx);
	ck_assert_ptr_nonnull(queue);
	for (int k = 0; k < n; k++) {
		int cat, dim;
		int64_t rws;

		kred_reduction_arg(r, k, &cat, &dim, NULL);
		rws = cat == 0 ? nx : cat == 1 ? ny : 1;
		args[k] = malloc((size_t)(rws * dim + 1) * size);
		for (int64_t q = 0; q < rws * dim; q++) {
			if (size == 8)
				((double *)args[k])[q] = draw(0);
			else
				((float *)args[k])[q] = (float)draw(0);
		}
		mems[k] = upload(cl, cl_ctx, args[k], (size_t)(rws * dim) * size);
	}
	got = calloc(obytes + 8, 1);
	want = calloc(obytes + 8, 1);
	out = upload(cl, cl_ctx, got, obytes);
	st = kred_reduction_run(r, nx, ny, (const void *const *)args, want);
	ck_assert_msg(st == KRED_OK, "%s: host run: %s", what, kred_errmsg(c));
	st = kred_reduction_run_opencl(r, nx, ny, (const void *const *)mems, out);
	ck_assert_msg(st == KRED_OK, "%s: cl_mem run: %s", what, kred_errmsg(c));
	ck_assert_int_eq(cl->EnqueueReadBuffer(queue, out, CL_TRUE, 0, obytes, got, 0, NULL, NULL),
			 CL_SUCCESS);
	compare(&rw, what, r->dtype, got, want, orows * od);
	for (int k = 0; k < n; k++) {
		cl->ReleaseMemObject(mems[k]);
		free(args[k]);
	}
	cl->ReleaseMemObject(out);
	free(got);
	free(want);
}

START_TEST(test_device_buffers)
{
	static const struct {
		const char *formula, *weight, *reduction, *grad;
		kred_axis axis;
	} cases[] = {
		/* Two column variables: packed on the device by kr_pack. */
		{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", NULL, KRED_REDUCE_J },
		{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", NULL, KRED_REDUCE_I },
		{ "SqDist(X,Y)", NULL, "KMin_ArgKMin(3)", NULL, KRED_REDUCE_J },
		/* A Pm gradient: the rows summed on the device. */
		{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", "G", KRED_REDUCE_J },
		/* An auxiliary reduction run first (the log-normaliser). */
		{ "-G*SqDist(X,Y)", "B", "SumSoftMaxWeight", "X", KRED_REDUCE_J },
		{ "-G*SqDist(X,Y)", NULL, "LogSumExp", "Y", KRED_REDUCE_J },
	};
	const kred_dtype dt = _i % 2 ? KRED_FLOAT64 : KRED_FLOAT32;
	kred_context *c = open_ctx("opencl", _i / 2 ? KRED_SCHEME_2D : KRED_SCHEME_1D);

	for (int k = 0; k < N(cases); k++) {
		kred_spec s = { 0 };
		kred_reduction *r = NULL, *g = NULL;
		char what[160];

		s.formula = cases[k].formula;
		s.weight = cases[k].weight;
		s.reduction = cases[k].reduction;
		s.aliases = aliases;
		s.n_aliases = 4;
		s.axis = cases[k].axis;
		s.dtype = dt;
		ck_assert_msg(kred_reduction_create(c, &s, &r) == KRED_OK, "%s", kred_errmsg(c));
		if (cases[k].grad) {
			ck_assert_msg(kred_reduction_grad(r, cases[k].grad, &g) == KRED_OK, "%s",
				      kred_errmsg(c));
		}
		snprintf(what, sizeof(what), "%s %s%s%s, %s, %s", cases[k].reduction,
			 cases[k].formula, cases[k].grad ? ", grad " : "",
			 cases[k].grad ? cases[k].grad : "", _i / 2 ? "2d" : "1d",
			 dt == KRED_FLOAT64 ? "float64" : "float32");
		rng = 99;
		check_device_run(c, g ? g : r, 77, 301, what);
		check_device_run(c, g ? g : r, 5, 0, what);
		/* past 4,096 rows a Pm gradient's rows are summed in parts of 128, then the
		 * parts: 9,000 rows, 71 parts, the last one short */
		check_device_run(c, g ? g : r, 9000, 7, what);
		kred_reduction_destroy(g);
		kred_reduction_destroy(r);
	}
	kred_context_destroy(c);
}
END_TEST

START_TEST(test_device_buffer_errors)
{
	static const char *const al[] = { "X = Vi(3)", "Y = Vj(3)" };
	const struct kred__cl_api *cl = api();
	const struct kred__cl_device *devs;
	kred_context *c = open_ctx("opencl", KRED_SCHEME_AUTO), *ref;
	kred_spec s = { 0 };
	kred_reduction *r = NULL, *rr = NULL;
	float x[30] = { 0 }, y[30] = { 0 };
	void *cl_ctx = NULL, *mems[2];
	cl_context other;
	cl_mem small, foreign, out;
	cl_int e;

	s.formula = "SqDist(X,Y)";
	s.reduction = "Sum";
	s.aliases = al;
	s.n_aliases = 2;
	ck_assert_int_eq(kred_reduction_create(c, &s, &r), KRED_OK);
	ck_assert_int_eq(kred_context_opencl_handles(c, &cl_ctx, NULL), KRED_OK);
	mems[0] = upload(cl, cl_ctx, x, sizeof(x));
	mems[1] = upload(cl, cl_ctx, y, sizeof(y));
	out = upload(cl, cl_ctx, x, sizeof(x));
	small = upload(cl, cl_ctx, x, 8);
	kred__cl_devices(&devs);
	other = cl->CreateContext(NULL, 1, &devs[0].id, NULL, NULL, &e);
	ck_assert_ptr_nonnull(other);
	foreign = upload(cl, other, y, sizeof(y));

	ck_assert_int_eq(kred_reduction_run_opencl(r, 10, 10, (const void *const *)mems, out),
			 KRED_OK);
	/* 10 rows of 3 floats do not fit in 8 bytes. */
	ck_assert_int_eq(kred_reduction_run_opencl(r, 10, 10, (const void *const *)mems, small),
			 KRED_EINVAL);
	ck_assert_msg(strstr(kred_errmsg(c), "bytes"), "%s", kred_errmsg(c));
	mems[1] = foreign;
	ck_assert_int_eq(kred_reduction_run_opencl(r, 10, 10, (const void *const *)mems, out),
			 KRED_EINVAL);
	ck_assert_msg(strstr(kred_errmsg(c), "another cl_context"), "%s", kred_errmsg(c));
	mems[1] = NULL;
	ck_assert_int_eq(kred_reduction_run_opencl(r, 10, 10, (const void *const *)mems, out),
			 KRED_EINVAL);
	/* ny = 0: the column argument may be NULL. */
	ck_assert_int_eq(kred_reduction_run_opencl(r, 10, 0, (const void *const *)mems, out),
			 KRED_OK);
	ck_assert_int_eq(kred_reduction_run_opencl(r, -1, 0, (const void *const *)mems, out),
			 KRED_EINVAL);
	ck_assert_int_eq(kred_reduction_run_opencl(NULL, 1, 1, NULL, NULL), KRED_EINVAL);

	/* Another backend's reduction or context. */
	ref = open_ctx("reference", KRED_SCHEME_AUTO);
	ck_assert_int_eq(kred_reduction_create(ref, &s, &rr), KRED_OK);
	ck_assert_int_eq(kred_reduction_run_opencl(rr, 1, 1, (const void *const *)mems, out),
			 KRED_EBACKEND);
	ck_assert_int_eq(kred_context_opencl_handles(ref, &cl_ctx, NULL), KRED_EBACKEND);
	ck_assert_ptr_null(cl_ctx);

	kred_reduction_destroy(rr);
	kred_context_destroy(ref);
	cl->ReleaseMemObject(mems[0]);
	cl->ReleaseMemObject(small);
	cl->ReleaseMemObject(foreign);
	cl->ReleaseMemObject(out);
	cl->ReleaseContext(other);
	kred_reduction_destroy(r);
	kred_context_destroy(c);
}
END_TEST

/* ---- builds and caches */

START_TEST(test_build_error_log)
{
	static const char *const al[] = { "X = Vi(3)", "Y = Vj(3)" };
	kred_context *c;
	kred_spec s = { 0 };
	kred_reduction *r = NULL;

	/* A define that breaks the generated functions' parameter lists. */
	setenv("KRED_OPENCL_OPTIONS", "-Dsst=+", 1);
	c = open_ctx("opencl", KRED_SCHEME_AUTO);
	s.formula = "Exp(-SqDist(X,Y))";
	s.reduction = "Sum";
	s.aliases = al;
	s.n_aliases = 2;
	ck_assert_int_eq(kred_reduction_create(c, &s, &r), KRED_EBUILD);
	ck_assert_ptr_null(r);
	ck_assert_msg(strstr(kred_error_log(c), "error"), "log: %s", kred_error_log(c));
	ck_assert_msg(strstr(kred_errmsg(c), "see the build log"), "%s", kred_errmsg(c));
	unsetenv("KRED_OPENCL_OPTIONS");
	kred_context_destroy(c);
}
END_TEST

START_TEST(test_no_fp64)
{
	static const char *const al[] = { "X = Vi(3)", "Y = Vj(3)" };
	kred_context *c;
	kred_spec s = { 0 };
	kred_reduction *r = NULL;

	/* A device without cl_khr_fp64, as the backend is told to see this one. */
	setenv("KRED_OPENCL_NO_FP64", "1", 1);
	c = open_ctx("opencl", KRED_SCHEME_AUTO);
	s.formula = "SqDist(X,Y)";
	s.reduction = "Sum";
	s.aliases = al;
	s.n_aliases = 2;
	s.dtype = KRED_FLOAT64;
	ck_assert_int_eq(kred_reduction_create(c, &s, &r), KRED_EUNSUPPORTED);
	ck_assert_ptr_null(r);
	ck_assert_msg(strstr(kred_errmsg(c), "fp64") && strstr(kred_errmsg(c), "float32"), "%s",
		      kred_errmsg(c));
	s.dtype = KRED_FLOAT32;
	ck_assert_int_eq(kred_reduction_create(c, &s, &r), KRED_OK);
	kred_reduction_destroy(r);
	unsetenv("KRED_OPENCL_NO_FP64");
	kred_context_destroy(c);
}
END_TEST

static int count_files(const char *dir, const char *suffix)
{
	char cmd[1200];
	FILE *p;
	int n = 0;

	snprintf(cmd, sizeof(cmd), "ls '%s' 2>/dev/null | grep -c '%s$'", dir, suffix);
	p = popen(cmd, "r");
	if (p) {
		if (fscanf(p, "%d", &n) != 1)
			n = 0;
		pclose(p);
	}
	return n;
}

START_TEST(test_binary_cache)
{
	static const char *const al[] = { "X = Vi(2)", "Y = Vj(2)" };
	char dir[] = "/tmp/kred-cl-cache-XXXXXX";
	float x[4] = { 0, 1, 2, 3 }, y[4] = { 1, 1, 0, 0 }, o1[2], o2[2];
	const void *args[] = { x, y };

	ck_assert_ptr_nonnull(mkdtemp(dir));
	setenv("KRED_OPENCL_BINARY_CACHE", "1", 1);
	for (int pass = 0; pass < 2; pass++) {
		kred_context_options o = { 0 };
		kred_context *c = NULL;
		kred_spec s = { 0 };
		kred_reduction *r = NULL;

		o.struct_size = sizeof(o);
		o.backend = "opencl";
		o.cache_dir = dir;
		ck_assert_int_eq(kred_context_create(&o, &c), KRED_OK);
		s.formula = "Exp(-SqDist(X,Y)) * 3";
		s.reduction = "Sum";
		s.aliases = al;
		s.n_aliases = 2;
		ck_assert_msg(kred_reduction_create(c, &s, &r) == KRED_OK, "%s", kred_errmsg(c));
		ck_assert_int_eq(kred_reduction_run(r, 2, 2, args, pass ? o2 : o1), KRED_OK);
		/* One binary after the first build, the same one after the second. */
		ck_assert_int_eq(count_files(dir, ".clbin"), 1);
		kred_reduction_destroy(r);
		kred_context_destroy(c);
	}
	ck_assert(o1[0] == o2[0] && o1[1] == o2[1]);
	/* A damaged binary is rebuilt, and replaced. */
	{
		char cmd[1200];

		snprintf(cmd, sizeof(cmd), "for f in '%s'/*.clbin; do head -c 100 \"$f\" > "
			 "\"$f.x\" && mv \"$f.x\" \"$f\"; done", dir);
		ck_assert_int_eq(system(cmd), 0);
	}
	{
		kred_context_options o = { 0 };
		kred_context *c = NULL;
		kred_spec s = { 0 };
		kred_reduction *r = NULL;

		o.struct_size = sizeof(o);
		o.backend = "opencl";
		o.cache_dir = dir;
		ck_assert_int_eq(kred_context_create(&o, &c), KRED_OK);
		s.formula = "Exp(-SqDist(X,Y)) * 3";
		s.reduction = "Sum";
		s.aliases = al;
		s.n_aliases = 2;
		ck_assert_msg(kred_reduction_create(c, &s, &r) == KRED_OK, "%s", kred_errmsg(c));
		ck_assert_int_eq(kred_reduction_run(r, 2, 2, args, o2), KRED_OK);
		ck_assert(o1[0] == o2[0] && o1[1] == o2[1]);
		kred_reduction_destroy(r);
		kred_context_destroy(c);
		ck_assert_int_eq(count_files(dir, ".clbin"), 1);
	}
	{
		char cmd[1200];

		/* and the cached binary is whole again */
		snprintf(cmd, sizeof(cmd), "test $(find '%s' -name '*.clbin' -size +1k | wc -l) = 1",
			 dir);
		ck_assert_int_eq(system(cmd), 0);
	}
	unsetenv("KRED_OPENCL_BINARY_CACHE");
	{
		char cmd[1100];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		ck_assert_int_eq(system(cmd), 0);
	}
}
END_TEST

START_TEST(test_device_names)
{
	kred_context_options o = { 0 };
	kred_context *c = NULL;

	o.struct_size = sizeof(o);
	o.backend = "opencl:0";
	ck_assert_int_eq(kred_context_create(&o, &c), KRED_OK);
	ck_assert_msg(!strncmp(kred_context_backend(c), "opencl:", 7), "%s",
		      kred_context_backend(c));
	kred_context_destroy(c);
	c = NULL;
	o.backend = "opencl:99";
	ck_assert_int_eq(kred_context_create(&o, &c), KRED_EBACKEND);
	ck_assert_msg(strstr(kred_errmsg(c), "no OpenCL device '99'"), "%s", kred_errmsg(c));
	kred_context_destroy(c);
	c = NULL;
	o.backend = "opencl:x";
	ck_assert_int_eq(kred_context_create(&o, &c), KRED_EBACKEND);
	kred_context_destroy(c);
}
END_TEST

/* ---- the command, with and without libOpenCL */


START_TEST(test_cli_devices)
{
	char out[8192];

	ck_assert_int_eq(run_exe("", "devices", out, sizeof(out)), 0);
	ck_assert_msg(strstr(out, "opencl: available") && strstr(out, "opencl:0 ") &&
			      strstr(out, "compute units") && strstr(out, "fp64"),
		      "%s", out);
}
END_TEST

START_TEST(test_cli_without_opencl)
{
	char out[8192];

	ck_assert_int_eq(run_exe("KRED_OPENCL_LIBRARY=/nonexistent/libOpenCL.so.1", "devices",
				 out, sizeof(out)), 0);
	ck_assert_msg(strstr(out, "opencl: not available (no OpenCL library"), "%s", out);
	ck_assert_msg(strstr(out, "auto: host") || strstr(out, "auto: reference"), "%s", out);
	/* -b opencl says why; -b auto still runs. */
	ck_assert_int_eq(run_exe("KRED_OPENCL_LIBRARY=/nonexistent/libOpenCL.so.1",
				 "source 'Sum(X)' -a 'X=Vi(2)' -r Sum -b opencl", out, sizeof(out)),
			 1);
	ck_assert_msg(strstr(out, "OpenCL is not available"), "%s", out);
	ck_assert_int_eq(run_exe("KRED_OPENCL_LIBRARY=none KRED_BACKEND=",
				 "source 'Sum(X)' -a 'X=Vi(2)' -r Sum -b auto", out, sizeof(out)),
			 0);
}
END_TEST

START_TEST(test_cli_scheme)
{
	char out[65536];

	/* The source of a reduction is the same whatever the scheme (one program has both
	 * kernels); the option must parse and run. */
	ck_assert_int_eq(run_exe("", "source 'SqDist(X,Y)' -a 'X=Vi(2)' -a 'Y=Vj(2)' -r ArgMin "
				 "-b opencl --scheme 2d", out, sizeof(out)), 0);
	ck_assert_msg(strstr(out, "kr_merge_parts"), "%s", out);
	ck_assert_int_eq(run_exe("", "source 'Sum(X)' -a 'X=Vi(2)' -r Sum --scheme 3d", out,
				 sizeof(out)), 2);
}
END_TEST

/* Whether OpenCL has a device, asked in a child process; why says why not. */
static int probe(char *why, size_t len)
{
	int fd[2], status = 0;
	ssize_t n;
	pid_t pid;

	if (pipe(fd) != 0)
		return 0;
	pid = fork();
	if (pid == 0) {
		char w[256] = "";
		int ok = kred__cl_load(NULL, w, sizeof(w)) != NULL;

		if (write(fd[1], w, strlen(w)) < 0)
			_exit(2);
		_exit(ok ? 0 : 1);
	}
	close(fd[1]);
	n = pid > 0 ? read(fd[0], why, len - 1) : -1;
	why[n > 0 ? n : 0] = 0;
	close(fd[0]);
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return 0;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(void)
{
	Suite *s = suite_create("opencl");
	Suite *apart = suite_create("opencl, builds and command");
	TCase *tc;
	char why[256];

	/* No device is a skip (77), except in a strict_tests build (setup.sh test), where
	 * the machine has one (POCL). The probe runs in a child: Check forks a process per
	 * test, and an OpenCL platform initialised before a fork (POCL's worker threads)
	 * does not survive into the child. */
	if (!probe(why, sizeof(why))) {
		if (KRED_TEST_STRICT) {
			printf("error: no OpenCL device (a strict_tests build needs one): %s\n",
			       why);
			return 1;
		}
		printf("skipped: no OpenCL device: %s\n", why);
		return 77;
	}

	tc = tcase_create("reference");
	tcase_add_loop_test(tc, test_against_reference, 0,
			    N(rows) * N(tiles) * N(schemes) * 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("device buffers");
	tcase_add_loop_test(tc, test_device_buffers, 0, 4);
	tcase_add_test(tc, test_device_buffer_errors);
	suite_add_tcase(s, tc);

	tc = tcase_create("builds");
	tcase_add_test(tc, test_build_error_log);
	tcase_add_test(tc, test_binary_cache);
	tcase_add_test(tc, test_no_fp64);
	tcase_add_test(tc, test_device_names);
	suite_add_tcase(apart, tc);

	tc = tcase_create("command");
	tcase_add_test(tc, test_cli_devices);
	tcase_add_test(tc, test_cli_without_opencl);
	tcase_add_test(tc, test_cli_scheme);
	suite_add_tcase(apart, tc);

	/* The builds change the environment and the command forks: each test apart. The
	 * comparisons and the device buffers: in this one process (tests/probe.h). */
	return run_suites(apart, s) ? 1 : 0;
}
