/* The Vulkan backend's own suite: 300,000 columns (past llvmpipe's loop bound), the block,
 * range and pass splits against the reference, parameters, the staging path, devices,
 * and kred without a Vulkan loader or glslc. Skips (77) without a device, fails in CI. */
#define _GNU_SOURCE /* dl_iterate_phdr */
#include <check.h>
#include <link.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache.h"
#include "internal.h"
#include "probe.h"

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static char tmp_root[512];

static uint64_t rng;

/* Uniform in [-1, 1), or on a grid of quarters (ties for the index reductions). */
static double draw(int coarse)
{
	rng = rng * 6364136223846793005ull + 1442695040888963407ull;
	if (coarse)
		return (double)((int)(rng >> 33) % 9 - 4) / 4.0;
	return (double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

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

/* Fills n values of the dtype. */
static void *values(size_t n, int dbl, int coarse)
{
	void *p = malloc((n ? n : 1) * (dbl ? 8 : 4));

	ck_assert_ptr_nonnull(p);
	for (size_t k = 0; k < n; k++) {
		double v = draw(coarse);

		if (dbl)
			((double *)p)[k] = v;
		else
			((float *)p)[k] = (float)v;
	}
	return p;
}

static double get(const void *p, size_t k, int dbl)
{
	return dbl ? ((const double *)p)[k] : ((const float *)p)[k];
}

/* |got - want| <= tol (|want| + scale) for every value, scale the mean |want|. */
static void compare(const void *got, const void *want, size_t n, int dbl, double tol,
		    const char *what)
{
	double scale = 0;

	for (size_t k = 0; k < n; k++)
		scale += fabs(get(want, k, dbl)) / (double)n;
	for (size_t k = 0; k < n; k++) {
		double g = get(got, k, dbl), w = get(want, k, dbl);

		if ((isnan(g) && isnan(w)) || g == w)
			continue;
		ck_assert_msg(fabs(g - w) <= tol * (fabs(w) + scale),
			      "%s: value %zu is %.17g, want %.17g", what, k, g, w);
	}
}

/* ---- the splits against the reference */

struct row {
	const char *formula, *weight, *reduction;
	kred_axis axis;
	int coarse;
};

static const char *const aliases[] = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)",
				       "U = Vi(1)" };

static const struct row rows[] = {
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", KRED_REDUCE_J, 0 },
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", KRED_REDUCE_I, 0 },
	{ "-G*SqDist(X,Y) + U", NULL, "LogSumExp", KRED_REDUCE_J, 0 },
	{ "-SqDist(X,Y)", "B", "SumSoftMaxWeight", KRED_REDUCE_J, 0 },
	{ "SqDist(X,Y)", NULL, "Min_ArgMin", KRED_REDUCE_J, 1 },
	{ "SqDist(X,Y)", NULL, "ArgMax", KRED_REDUCE_I, 1 },
	{ "SqDist(X,Y)", NULL, "KMin_ArgKMin(3)", KRED_REDUCE_J, 1 },
	{ "X * U", NULL, "Sum", KRED_REDUCE_J, 0 }, /* no column variable */
};

/* Blocks of 256 rows and 700 columns (a test hook), each scheme, both dtypes: every
 * loop of the run's plan turns more than once. */
START_TEST(test_splits)
{
	const struct row *w = &rows[_i / 6];
	int dbl = _i % 2;
	kred_scheme scheme = (kred_scheme)(_i / 2 % 3);
	const int64_t nx = 777, ny = 2501;
	kred_context *c = open_ctx("vulkan", scheme), *rc = open_ctx("reference", 0);
	kred_reduction *r = NULL, *rr = NULL;
	kred_spec s = { 0 };
	void *x, *y, *b, *g, *u, *got, *want;
	int od;

	rng = 7 + (uint64_t)_i;
	s.formula = w->formula;
	s.weight = w->weight;
	s.reduction = w->reduction;
	s.axis = w->axis;
	s.aliases = aliases;
	s.n_aliases = N(aliases);
	s.dtype = dbl ? KRED_FLOAT64 : KRED_FLOAT32;
	ck_assert_msg(kred_reduction_create(c, &s, &r) == KRED_OK, "%s", kred_errmsg(c));
	ck_assert_msg(kred_reduction_create(rc, &s, &rr) == KRED_OK, "%s", kred_errmsg(rc));
	od = kred_reduction_out_dim(r);
	x = values(nx * 3, dbl, w->coarse);
	y = values(ny * 3, dbl, w->coarse);
	b = values(ny * 2, dbl, 0);
	g = values(1, dbl, 0);
	u = values(nx, dbl, 0);
	{
		int64_t rows_out = w->axis == KRED_REDUCE_J ? nx : ny;
		const void *args[] = { x, y, b, g, u };

		got = values((size_t)(rows_out * od), dbl, 0);
		want = values((size_t)(rows_out * od), dbl, 0);
		setenv("KRED_VULKAN_TEST_BLOCKS", "256,700", 1);
		ck_assert_msg(kred_reduction_run(r, nx, ny, args, got) == KRED_OK, "%s",
			      kred_errmsg(c));
		unsetenv("KRED_VULKAN_TEST_BLOCKS");
		ck_assert_int_eq(kred_reduction_run(rr, nx, ny, args, want), KRED_OK);
		compare(got, want, (size_t)(rows_out * od), dbl, dbl ? 1e-10 : 1e-4, w->reduction);
		/* and without the hook */
		ck_assert_int_eq(kred_reduction_run(r, nx, ny, args, got), KRED_OK);
		compare(got, want, (size_t)(rows_out * od), dbl, dbl ? 1e-10 : 1e-4, w->reduction);
	}
	free(x), free(y), free(b), free(g), free(u), free(got), free(want);
	kred_reduction_destroy(r);
	kred_reduction_destroy(rr);
	kred_context_destroy(c);
	kred_context_destroy(rc);
}
END_TEST

/* ---- 300,000 columns: llvmpipe ends a naive loop at 65,535 iterations, 78% short of
 * this. The expected values are computed here in double. */

#define LONG_NY 300000
#define LONG_NX 37

START_TEST(test_long_sum)
{
	int dbl = _i % 2;
	kred_scheme scheme = (kred_scheme)(_i / 2);
	const char *al[] = { "X = Vi(1)", "Y = Vj(1)", "B = Vj(1)" };
	kred_context *c = open_ctx("vulkan", scheme);
	kred_reduction *r = NULL;
	kred_spec s = { 0 };
	double *want = malloc(2 * LONG_NX * sizeof(double)), *scale = want + LONG_NX;
	void *x = values(LONG_NX, dbl, 0), *y = values(LONG_NY, dbl, 0);
	void *b = values(LONG_NY, dbl, 0), *got = values(LONG_NX, dbl, 0);
	const void *args[] = { x, y, b };

	s.formula = "Exp(-Square(X-Y))*B";
	s.reduction = "Sum";
	s.aliases = al;
	s.n_aliases = 3;
	s.dtype = dbl ? KRED_FLOAT64 : KRED_FLOAT32;
	ck_assert_msg(kred_reduction_create(c, &s, &r) == KRED_OK, "%s", kred_errmsg(c));
	ck_assert_msg(kred_reduction_run(r, LONG_NX, LONG_NY, args, got) == KRED_OK, "%s",
		      kred_errmsg(c));
	for (int i = 0; i < LONG_NX; i++) {
		double xi = get(x, i, dbl), acc = 0, abs_acc = 0;

		for (int j = 0; j < LONG_NY; j++) {
			double d = xi - get(y, j, dbl), t = exp(-d * d) * get(b, j, dbl);

			acc += t;
			abs_acc += fabs(t);
		}
		want[i] = acc;
		scale[i] = abs_acc;
	}
	for (int i = 0; i < LONG_NX; i++) {
		double gi = get(got, i, dbl);

		/* The sum of |terms| bounds the rounding: in float32, 256-term tiles and then
		 * ~1200 tile sums, (256 + 1200) 2^-24 < 1e-4 at worst. */
		ck_assert_msg(fabs(gi - want[i]) <= (dbl ? 1e-12 : 1e-4) * scale[i],
			      "row %d: %.17g, want %.17g (scheme %d)", i, gi, want[i], (int)scheme);
	}
	free(want), free(x), free(y), free(b), free(got);
	kred_reduction_destroy(r);
	kred_context_destroy(c);
}
END_TEST

/* ArgMin and LogSumExp over 300,000 columns in one range, so in several passes: the
 * states go through the state buffer between dispatches. Y_j = ny - 1 - j is exact in
 * float32 and X_i = m + 1/2 is equally far from two columns: the lower index must win,
 * wherever the passes are cut. */
START_TEST(test_long_carry)
{
	int dbl = _i;
	const char *al[] = { "X = Vi(1)", "Y = Vj(1)" };
	kred_context *c = open_ctx("vulkan", KRED_SCHEME_1D);
	kred_reduction *am = NULL, *lse = NULL;
	kred_spec s = { 0 };
	void *x = values(LONG_NX, dbl, 0), *y = values(LONG_NY, dbl, 0);
	void *got = values(LONG_NX, dbl, 0);
	const void *args[] = { x, y };

	for (int j = 0; j < LONG_NY; j++) {
		if (dbl)
			((double *)y)[j] = LONG_NY - 1 - j;
		else
			((float *)y)[j] = (float)(LONG_NY - 1 - j);
	}
	for (int i = 0; i < LONG_NX; i++) {
		double v = (double)(i * 8101 % (LONG_NY - 1)) + 0.5;

		if (dbl)
			((double *)x)[i] = v;
		else
			((float *)x)[i] = (float)v;
	}
	s.aliases = al;
	s.n_aliases = 2;
	s.dtype = dbl ? KRED_FLOAT64 : KRED_FLOAT32;
	s.formula = "Abs(X-Y)";
	s.reduction = "ArgMin";
	ck_assert_msg(kred_reduction_create(c, &s, &am) == KRED_OK, "%s", kred_errmsg(c));
	ck_assert_msg(kred_reduction_run(am, LONG_NX, LONG_NY, args, got) == KRED_OK, "%s",
		      kred_errmsg(c));
	for (int i = 0; i < LONG_NX; i++) {
		/* x = m + 1/2 is y_j for j = ny - 1 - m and ny - 2 - m: the lower one. */
		double m = floor(get(x, i, dbl));

		ck_assert_msg(get(got, i, dbl) == LONG_NY - 2 - m, "row %d: index %.17g, want %.17g",
			      i, get(got, i, dbl), LONG_NY - 2 - m);
	}
	/* LogSumExp of -|x - y|: a sum of two geometric series around x. */
	s.formula = "-Abs(X-Y)";
	s.reduction = "LogSumExp";
	ck_assert_msg(kred_reduction_create(c, &s, &lse) == KRED_OK, "%s", kred_errmsg(c));
	ck_assert_msg(kred_reduction_run(lse, LONG_NX, LONG_NY, args, got) == KRED_OK, "%s",
		      kred_errmsg(c));
	for (int i = 0; i < LONG_NX; i++) {
		double xi = get(x, i, dbl), m = -0.5, acc = 0, want;

		for (int j = 0; j < LONG_NY; j++)
			acc += exp(-fabs(xi - (LONG_NY - 1 - j)) - m);
		want = m + log(acc);
		ck_assert_msg(fabs(get(got, i, dbl) - want) <= (dbl ? 1e-12 : 1e-5),
			      "row %d: %.17g, want %.17g", i, get(got, i, dbl), want);
	}
	free(x), free(y), free(got);
	kred_reduction_destroy(am);
	kred_reduction_destroy(lse);
	kred_context_destroy(c);
}
END_TEST

/* ---- parameters: a few in push constants, many in a buffer */

START_TEST(test_params)
{
	static const char *const al[] = { "X = Vi(4)", "Y = Vj(4)", "A = Pm(40)", "G = Pm(1)" };
	int dbl = _i;
	kred_context *c = open_ctx("vulkan", 0), *rc = open_ctx("reference", 0);
	kred_reduction *r[2], *rr[2];
	kred_spec s = { 0 };
	const char *formulas[2] = { "Exp(-G*SqDist(X,Y))", "Sum(Extract(A,3,4)*X*Y) + G" };
	void *x = values(50 * 4, dbl, 0), *y = values(60 * 4, dbl, 0);
	void *a = values(40, dbl, 0), *g = values(1, dbl, 0);
	void *got = values(50, dbl, 0), *want = values(50, dbl, 0);
	const void *args[] = { x, y, a, g };

	s.aliases = al;
	s.n_aliases = 4;
	s.reduction = "Sum";
	s.dtype = dbl ? KRED_FLOAT64 : KRED_FLOAT32;
	for (int k = 0; k < 2; k++) {
		s.formula = formulas[k];
		ck_assert_msg(kred_reduction_create(c, &s, &r[k]) == KRED_OK, "%s",
			      kred_errmsg(c));
		ck_assert_int_eq(kred_reduction_create(rc, &s, &rr[k]), KRED_OK);
		ck_assert_msg(kred_reduction_run(r[k], 50, 60, args, got) == KRED_OK, "%s",
			      kred_errmsg(c));
		ck_assert_int_eq(kred_reduction_run(rr[k], 50, 60, args, want), KRED_OK);
		compare(got, want, 50, dbl, dbl ? 1e-12 : 1e-5, formulas[k]);
		kred_reduction_destroy(r[k]);
		kred_reduction_destroy(rr[k]);
	}
	free(x), free(y), free(a), free(g), free(got), free(want);
	kred_context_destroy(c);
	kred_context_destroy(rc);
}
END_TEST

/* ---- the staging path of discrete GPUs (host buffers and copies), taken here on
 * request */

START_TEST(test_staging)
{
	static const char *const al[] = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)" };
	kred_context *c, *rc = open_ctx("reference", 0);
	kred_reduction *r = NULL, *rr = NULL;
	kred_spec s = { 0 };
	void *x = values(300 * 3, 1, 0), *y = values(2000 * 3, 1, 0), *b = values(2000 * 2, 1, 0);
	void *got = values(600, 1, 0), *want = values(600, 1, 0);
	const void *args[] = { x, y, b };

	setenv("KRED_VULKAN_STAGING", "1", 1);
	c = open_ctx("vulkan", KRED_SCHEME_2D);
	unsetenv("KRED_VULKAN_STAGING");
	s.aliases = al;
	s.n_aliases = 3;
	s.formula = "Exp(-SqDist(X,Y))*B";
	s.reduction = "Sum";
	s.dtype = KRED_FLOAT64;
	ck_assert_msg(kred_reduction_create(c, &s, &r) == KRED_OK, "%s", kred_errmsg(c));
	ck_assert_int_eq(kred_reduction_create(rc, &s, &rr), KRED_OK);
	ck_assert_msg(kred_reduction_run(r, 300, 2000, args, got) == KRED_OK, "%s", kred_errmsg(c));
	ck_assert_int_eq(kred_reduction_run(rr, 300, 2000, args, want), KRED_OK);
	compare(got, want, 600, 1, 1e-12, "staging");
	free(x), free(y), free(b), free(got), free(want);
	kred_reduction_destroy(r);
	kred_reduction_destroy(rr);
	kred_context_destroy(c);
	kred_context_destroy(rc);
}
END_TEST

/* ---- devices */

START_TEST(test_devices)
{
	kred_context_options o = { 0 };
	kred_context *c = open_ctx("vulkan:0", 0), *bad = NULL;
	char *report = NULL;

	ck_assert_ptr_nonnull(strstr(kred_context_backend(c), "vulkan:"));
	kred_context_destroy(c);
	o.struct_size = sizeof(o);
	o.backend = "vulkan:99";
	ck_assert_int_eq(kred_context_create(&o, &bad), KRED_EBACKEND);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(bad), "no Vulkan device '99'"));
	kred_context_destroy(bad);
	bad = NULL;
	o.backend = "vulkan:first";
	ck_assert_int_eq(kred_context_create(&o, &bad), KRED_EBACKEND);
	kred_context_destroy(bad);
	ck_assert_int_eq(kred_devices_report(&report), KRED_OK);
	ck_assert_msg(strstr(report, "vulkan: available") && strstr(report, "vulkan:0"), "%s",
		      report);
	kred_free(report);
}
END_TEST

static int count_object(struct dl_phdr_info *info, size_t size, void *data)
{
	char *names = data;
	size_t used = strlen(names);

	if (info->dlpi_name && info->dlpi_name[0])
		snprintf(names + used, 16384 - used, "%s\n", info->dlpi_name);
	return 0;
}

/* The driver that the instance loaded stays loaded once the last context is gone (the
 * Vulkan loader unloads it at vkDestroyInstance, and its threads and leak reports would
 * lose their code): every object loaded while the context was open is still there. */
START_TEST(test_driver_stays_loaded)
{
	static char open_names[16384], after[16384];
	kred_context *c = open_ctx("vulkan", 0);
	char *line, *save = NULL;
	int n = 0;

	open_names[0] = after[0] = 0;
	dl_iterate_phdr(count_object, open_names);
	kred_context_destroy(c);
	dl_iterate_phdr(count_object, after);
	for (line = strtok_r(open_names, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char want[1100];

		snprintf(want, sizeof(want), "%s\n", line);
		ck_assert_msg(strstr(after, want), "%s was unloaded with the last context", line);
		n++;
	}
	ck_assert_int_gt(n, 0);
}
END_TEST

/* llvmpipe is a CPU device: auto prefers the host backend to it. */
START_TEST(test_auto_skips_cpu_devices)
{
	kred_context *c = open_ctx("vulkan", 0), *a;
	int cpu = strstr(kred_context_backend(c), "llvmpipe") != NULL;

	kred_context_destroy(c);
	if (!cpu)
		return;
	a = open_ctx("auto", 0);
	ck_assert_msg(strncmp(kred_context_backend(a), "vulkan", 6) != 0, "auto chose %s",
		      kred_context_backend(a));
	kred_context_destroy(a);
}
END_TEST

/* ---- what is missing: the loader (in a fresh process: this one has it loaded), glslc */

static void run_cmd(const char *cmd, char *out, size_t len, int *status)
{
	FILE *p = popen(cmd, "r");
	size_t n;

	ck_assert_ptr_nonnull(p);
	n = fread(out, 1, len - 1, p);
	out[n] = 0;
	*status = pclose(p);
}

START_TEST(test_no_loader)
{
	const char *exe = getenv("KRED_EXE");
	char cmd[1200], out[8192];
	int status;

	ck_assert_msg(exe && *exe, "KRED_EXE is not set (tests/meson.build sets it)");
	snprintf(cmd, sizeof(cmd), "KRED_VULKAN_LIBRARY=/nonexistent/libvulkan.so.1 '%s' devices",
		 exe);
	run_cmd(cmd, out, sizeof(out), &status);
	ck_assert_msg(status == 0, "%s", out);
	ck_assert_msg(strstr(out, "vulkan: not available (no Vulkan loader"), "%s", out);
	ck_assert_msg(strstr(out, "\nauto: "), "%s", out);
	snprintf(cmd, sizeof(cmd), "KRED_VULKAN_LIBRARY=/nonexistent/libvulkan.so.1 '%s' source "
		 "'SqDist(X,Y)' -a 'X=Vi(3)' -a 'Y=Vj(3)' -r Sum -b vulkan 2>&1", exe);
	run_cmd(cmd, out, sizeof(out), &status);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1, "%s", out);
	ck_assert_msg(strstr(out, "no Vulkan loader"), "%s", out);
}
END_TEST

START_TEST(test_no_glslc)
{
	kred_context_options o = { 0 };
	kred_context *c = NULL;

	setenv("KRED_GLSLC", "/nonexistent/glslc", 1);
	o.struct_size = sizeof(o);
	o.backend = "vulkan";
	ck_assert_int_eq(kred_context_create(&o, &c), KRED_EBACKEND);
	ck_assert_msg(strstr(kred_errmsg(c), "no GLSL compiler") &&
		      strstr(kred_errmsg(c), "KRED_GLSLC"), "%s", kred_errmsg(c));
	kred_context_destroy(c);
	unsetenv("KRED_GLSLC");
}
END_TEST

static void setup_tmp(void)
{
	const char *t = getenv("TMPDIR");

	snprintf(tmp_root, sizeof(tmp_root), "%s/kred-vulkan-XXXXXX", t && *t ? t : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmp_root));
}

static void teardown_tmp(void)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_root);
	ck_assert_int_eq(system(cmd), 0);
}

/* A GLSL compiler that fails: KRED_EBUILD with its output in kred_error_log. */
START_TEST(test_build_failure)
{
	static const char *const al[] = { "X = Vi(3)", "Y = Vj(3)" };
	char script[600];
	kred_context_options o = { 0 };
	kred_context *c = NULL;
	kred_reduction *r = NULL;
	kred_spec s = { 0 };
	FILE *f;

	snprintf(script, sizeof(script), "%s/fakeglslc", tmp_root);
	f = fopen(script, "w");
	ck_assert_ptr_nonnull(f);
	fputs("#!/bin/sh\n"
	      "if [ \"$1\" = --version ]; then echo 'fakeglslc 1.0'; exit 0; fi\n"
	      "echo 'fakeglslc: error: no shader today' >&2\n"
	      "exit 1\n", f);
	fclose(f);
	ck_assert_int_eq(chmod(script, 0755), 0);
	setenv("KRED_GLSLC", script, 1);
	o.struct_size = sizeof(o);
	o.backend = "vulkan";
	o.cache_dir = tmp_root;
	ck_assert_msg(kred_context_create(&o, &c) == KRED_OK, "%s", kred_errmsg(c));
	s.formula = "SqDist(X,Y)";
	s.reduction = "Sum";
	s.aliases = al;
	s.n_aliases = 2;
	ck_assert_int_eq(kred_reduction_create(c, &s, &r), KRED_EBUILD);
	ck_assert_ptr_null(r);
	ck_assert_msg(strstr(kred_error_log(c), "no shader today"), "%s", kred_error_log(c));
	ck_assert_msg(strstr(kred_errmsg(c), "fakeglslc"), "%s", kred_errmsg(c));
	kred_context_destroy(c);
	unsetenv("KRED_GLSLC");
}
END_TEST

/* The SPIR-V lands in the cache directory, sealed, and a second context reads it. */
START_TEST(test_disk_cache)
{
	static const char *const al[] = { "X = Vi(2)", "Y = Vj(2)" };
	char formula[64], cmd[700], name[256] = "", path[800];
	kred_context_options o = { 0 };
	kred_spec s = { 0 };
	float x[4] = { 0, 1, 2, 3 }, y[6] = { 1, 1, 2, 2, 3, 3 }, out[2];
	const void *args[] = { x, y };
	FILE *p;

	/* a formula no earlier run has compiled */
	snprintf(formula, sizeof(formula), "SqDist(X,Y) * %d", (int)getpid());
	s.formula = formula;
	s.reduction = "Sum";
	s.aliases = al;
	s.n_aliases = 2;
	o.struct_size = sizeof(o);
	o.backend = "vulkan";
	o.cache_dir = tmp_root;
	for (int k = 0; k < 2; k++) {
		kred_context *c = NULL;
		kred_reduction *r = NULL;

		ck_assert_int_eq(kred_context_create(&o, &c), KRED_OK);
		ck_assert_msg(kred_reduction_create(c, &s, &r) == KRED_OK, "%s", kred_errmsg(c));
		ck_assert_int_eq(kred_reduction_run(r, 2, 3, args, out), KRED_OK);
		/* x_0 = (0, 1) from (1, 1), (2, 2), (3, 3): 1 + 5 + 13 */
		ck_assert(fabs(out[0] - (double)getpid() * 19) < 1e-3 * getpid() * 19);
		kred_reduction_destroy(r);
		kred_context_destroy(c);
		if (k == 0) {
			snprintf(cmd, sizeof(cmd), "ls '%s' | grep 'spv$' | grep -v tmp", tmp_root);
			p = popen(cmd, "r");
			ck_assert_ptr_nonnull(p);
			ck_assert_ptr_nonnull(fgets(name, sizeof(name), p));
			pclose(p);
			name[strcspn(name, "\n")] = 0;
			snprintf(path, sizeof(path), "%s/%s", tmp_root, name);
			ck_assert_int_gt(kred__cache_check(path, 0), 0);
		}
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("vulkan");
	TCase *tc;
	SRunner *sr;
	int failed;

	/* A machine without a Vulkan device skips (77), except in CI, where lavapipe must
	 * be there. */
	{
		int rc = probe_or_skip("vulkan");

		if (rc)
			return rc;
	}
	tc = tcase_create("splits");
	tcase_add_loop_test(tc, test_splits, 0, 6 * N(rows));
	tcase_add_loop_test(tc, test_long_sum, 0, 6);
	tcase_add_loop_test(tc, test_long_carry, 0, 2);
	tcase_add_loop_test(tc, test_params, 0, 2);
	tcase_add_test(tc, test_staging);
	suite_add_tcase(s, tc);
	tc = tcase_create("devices");
	tcase_add_test(tc, test_devices);
	tcase_add_test(tc, test_driver_stays_loaded);
	tcase_add_test(tc, test_auto_skips_cpu_devices);
	tcase_add_test(tc, test_no_loader);
	tcase_add_test(tc, test_no_glslc);
	suite_add_tcase(s, tc);
	tc = tcase_create("compiler");
	tcase_add_checked_fixture(tc, setup_tmp, teardown_tmp);
	tcase_add_test(tc, test_build_failure);
	tcase_add_test(tc, test_disk_cache);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
