/* The benchmarks behind `kred bench`: standard cases run on a kred backend side by side
 * with baselines (bench/baselines.c, built here with the host backend's compiler and
 * flags, and with -ffast-math), printing medians, pairs per second and ratios. */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench.h"
#include "bench_cuda.h"
#include "bench_opencl.h"
#include "bench_vulkan.h"
#include "kred.h"
#include "bench_util.h"
#include "plain.h"

/*
 * The baselines are bench/baselines.c: each case as a careful user writes it in C with
 * OpenMP (structure-of-arrays inputs, `omp simd` reductions). The file is embedded in this
 * command and compiled at run time, on this machine, by the host backend's compiler with
 * the host backend's own flags, then again with -ffast-math added; kred and both builds
 * run alternately on the same data, and each case checks that they agree.
 */

struct opts {
	int64_t nx, ny, lat_n;
	int reps;
	const char *cases;
	const char *backend;
	const char *json;
};

static uint64_t lcg = 42;

static double uniform(void)
{
	lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
	return (double)(lcg >> 11) * 0x1.0p-53;
}

static void *fill(int64_t count, int f64, double lo, double hi)
{
	void *p = malloc((size_t)(count ? count : 1) * (f64 ? 8 : 4));

	if (!p)
		return NULL;
	for (int64_t k = 0; k < count; k++) {
		double v = lo + (hi - lo) * uniform();

		if (f64)
			((double *)p)[k] = v;
		else
			((float *)p)[k] = (float)v;
	}
	return p;
}

/* ---- the baselines, built here */


typedef void (*gauss_f32_fn)(int64_t, int64_t, const float *const *, const float *const *,
			     const float *, float, float *);
typedef void (*gauss_f64_fn)(int64_t, int64_t, const double *const *, const double *const *,
			     const double *, double, double *);
typedef void (*lse_f32_fn)(int64_t, int64_t, const float *const *, const float *const *, float,
			   float *);
typedef void (*argkmin_f32_fn)(int64_t, int64_t, const float *const *, const float *const *,
			       float *);
typedef void (*gauss_d64_fn)(int64_t, int64_t, const float *, const float *, const float *,
			     float, float *);
typedef void (*dn_gauss_fn)(int64_t, int64_t, int, const float *, const float *, const float *,
			    float, float *);
typedef void (*dn_argkmin_fn)(int64_t, int64_t, int, const float *, const float *, float *);
typedef void (*grad_f32_fn)(int64_t, int64_t, const float *const *, const float *const *,
			    const float *, float, const float *, float *);

struct baseline {
	void *so;
	gauss_f32_fn gauss_f32;
	gauss_f64_fn gauss_f64;
	lse_f32_fn lse_f32;
	argkmin_f32_fn argkmin_f32;
	gauss_d64_fn gauss_d64_f32;
	grad_f32_fn gauss_grad_f32;
	dn_gauss_fn gauss_dn_f32;
	dn_argkmin_fn argkmin_dn_f32;
};

/* Compiles bench/baselines.c into dir/NAME.so with the host backend's compiler and
 * flags, plus extra, and loads it. */
static int baseline_build(struct baseline *b, const char *dir, const char *name,
			  const char *extra)
{
	char src[600], so[600], log[600], cmd[2400];
	FILE *f;

	memset(b, 0, sizeof(*b));
	snprintf(src, sizeof(src), "%s/baselines.c", dir);
	snprintf(so, sizeof(so), "%s/%s.so", dir, name);
	snprintf(log, sizeof(log), "%s/%s.log", dir, name);
	f = fopen(src, "w");
	if (!f || fputs(kred__kernel_baselines_c, f) < 0 || fclose(f)) {
		fprintf(stderr, "kred: error: bench: cannot write %s\n", src);
		return 1;
	}
	snprintf(cmd, sizeof(cmd), "%s %s %s -o '%s' '%s' -lm > '%s' 2>&1", kred__host_cc(),
		 kred__host_cflags(), extra, so, src, log);
	if (system(cmd) != 0) {
		fprintf(stderr, "kred: error: bench: the baselines did not compile: %s\n", cmd);
		if ((f = fopen(log, "r"))) {
			int ch;

			while ((ch = fgetc(f)) != EOF)
				fputc(ch, stderr);
			fclose(f);
		}
		return 1;
	}
	b->so = dlopen(so, RTLD_NOW | RTLD_LOCAL);
	if (!b->so) {
		fprintf(stderr, "kred: error: bench: %s\n", dlerror());
		return 1;
	}
#define SYM(field)                                                                    \
	if (!(*(void **)&b->field = dlsym(b->so, "base_" #field))) {                  \
		fprintf(stderr, "kred: error: bench: %s has no base_%s\n", so, #field); \
		return 1;                                                             \
	}
	SYM(gauss_f32)
	SYM(gauss_f64)
	SYM(lse_f32)
	SYM(argkmin_f32)
	SYM(gauss_d64_f32)
	SYM(gauss_grad_f32)
	SYM(gauss_dn_f32)
	SYM(argkmin_dn_f32)
#undef SYM
	return 0;
}

/* ---- running kred */

static kred_context *open_ctx(const struct opts *o, const char *cache_dir)
{
	kred_context_options co = { 0 };
	kred_context *ctx = NULL;

	co.struct_size = sizeof(co);
	co.backend = o->backend;
	co.cache_dir = cache_dir;
	if (kred_context_create(&co, &ctx) != KRED_OK) {
		fprintf(stderr, "kred: error: backend %s: %s\n", o->backend, kred_errmsg(ctx));
		kred_context_destroy(ctx);
		return NULL;
	}
	return ctx;
}

static kred_reduction *make(kred_context *ctx, const char *formula, const char *red,
			    const char *const *al, size_t n_al, kred_dtype dt, int fast)
{
	kred_reduction_options ro = { sizeof(ro), fast ? KRED_FAST_MATH_ON : KRED_FAST_MATH_OFF };
	kred_spec s = { 0 };
	kred_reduction *r = NULL;

	s.formula = formula;
	s.reduction = red;
	s.aliases = al;
	s.n_aliases = n_al;
	s.dtype = dt;
	if (kred_reduction_create_ex(ctx, &s, &ro, &r) != KRED_OK) {
		fprintf(stderr, "kred: error: %s: %s\n%s", formula, kred_errmsg(ctx),
			kred_error_log(ctx));
		return NULL;
	}
	return r;
}

/* Largest |a - b| / (|b| + mean |b|) over n values. */
static double rel_diff(const void *a, const void *b, int64_t n, int f64)
{
	double worst = 0, scale = 0;

	for (int64_t k = 0; k < n; k++)
		scale += fabs(f64 ? ((const double *)b)[k] : ((const float *)b)[k]);
	scale = n ? scale / (double)n : 1;
	for (int64_t k = 0; k < n; k++) {
		double x = f64 ? ((const double *)a)[k] : ((const float *)a)[k];
		double y = f64 ? ((const double *)b)[k] : ((const float *)b)[k];
		double d = fabs(x - y) / (fabs(y) + scale);

		if (d > worst || d != d)
			worst = d;
	}
	return worst;
}

/* Index lists agree, up to swaps of equally distant terms (both sides sort by the same
 * float32 distances). Fraction of rows that differ. */
static double index_diff(const float *a, const float *b, int64_t rows, int k)
{
	int64_t bad = 0;

	for (int64_t i = 0; i < rows; i++)
		bad += memcmp(a + i * k, b + i * k, (size_t)k * sizeof(float)) != 0;
	return rows ? (double)bad / (double)rows : 0;
}

enum which { GAUSS32, GAUSS64, LSE32, ARGKMIN32, GAUSS_D64, GRAD32, GAUSS_DN, ARGKMIN_DN };

struct bench_case {
	const char *name, *label, *formula, *reduction;
	const char *aliases[4];
	int f64, d, kind;
	int64_t n;     /* nx = ny by default */
	double gamma;  /* G, when not 0 (else drawn in [2, 2]) */
	int high;      /* run only when named, or with --cases highdim */
	int fast;      /* kred with fast math (kred_reduction_options) */
};

static const struct bench_case bench_cases[] = {
	{ "gauss", "Gaussian sum  D=3   float32", "Exp(-G*SqDist(X,Y))*B", "Sum",
	  { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" }, 0, 3, GAUSS32, 50000, 0, 0, 0 },
	{ "gauss64", "Gaussian sum  D=3   float64", "Exp(-G*SqDist(X,Y))*B", "Sum",
	  { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" }, 1, 3, GAUSS64, 30000, 0, 0, 0 },
	/* The same with kred's fast math, against the same baselines: the -ffast-math one is
	 * the like-for-like comparison there. */
	{ "gauss-fast", "Gaussian, fast math  float32", "Exp(-G*SqDist(X,Y))*B", "Sum",
	  { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" }, 0, 3, GAUSS32, 50000, 0, 0, 1 },
	{ "gauss64-fast", "Gaussian, fast math  float64", "Exp(-G*SqDist(X,Y))*B", "Sum",
	  { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" }, 1, 3, GAUSS64, 30000, 0, 0, 1 },
	{ "lse", "LogSumExp     D=3   float32", "-G*SqDist(X,Y)", "LogSumExp",
	  { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" }, 0, 3, LSE32, 30000, 0, 0, 0 },
	{ "argkmin", "ArgKMin(10)   D=3   float32", "SqDist(X,Y)", "ArgKMin(10)",
	  { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" }, 0, 3, ARGKMIN32, 30000, 0, 0, 0 },
	{ "gauss-d64", "Gaussian sum  D=64  float32", "Exp(-G*SqDist(X,Y))*B", "Sum",
	  { "X=Vi(64)", "Y=Vj(64)", "B=Vj(1)", "G=Pm(1)" }, 0, 64, GAUSS_D64, 10000, 0, 0, 0 },
	{ "grad", "gradient in X D=3   float32", "Exp(-G*SqDist(X,Y))*B", "Sum",
	  { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" }, 0, 3, GRAD32, 30000, 0, 0, 0 },
	/* High dimensions: G keeps the Gaussian's values near exp(-1) for coordinates drawn
	 * in [0, 1], where |x - y|^2 is about D / 6. */
	{ "gauss-d784", "Gaussian sum  D=784 float32", "Exp(-G*SqDist(X,Y))*B", "Sum",
	  { "X=Vi(784)", "Y=Vj(784)", "B=Vj(1)", "G=Pm(1)" }, 0, 784, GAUSS_DN, 10000,
	  6.0 / 784, 1, 0 },
	{ "argkmin-d784", "ArgKMin(10)   D=784 float32", "SqDist(X,Y)", "ArgKMin(10)",
	  { "X=Vi(784)", "Y=Vj(784)", "B=Vj(1)", "G=Pm(1)" }, 0, 784, ARGKMIN_DN, 10000, 0,
	  1, 0 },
	{ "gauss-d4096", "Gaussian sum  D=4096 float32", "Exp(-G*SqDist(X,Y))*B", "Sum",
	  { "X=Vi(4096)", "Y=Vj(4096)", "B=Vj(1)", "G=Pm(1)" }, 0, 4096, GAUSS_DN, 10000,
	  6.0 / 4096, 1, 0 },
	{ "argkmin-d4096", "ArgKMin(10)   D=4096 float32", "SqDist(X,Y)", "ArgKMin(10)",
	  { "X=Vi(4096)", "Y=Vj(4096)", "B=Vj(1)", "G=Pm(1)" }, 0, 4096, ARGKMIN_DN, 10000, 0,
	  1, 0 },
};

static int wanted(const struct opts *o, const char *name)
{
	const char *c = o->cases;
	size_t n = strlen(name);

	if (!c || !strcmp(c, "all"))
		return 1;
	if (!strcmp(c, "highdim"))
		return !strncmp(name, "gauss-d", 7) || !strncmp(name, "argkmin-d", 9);
	while (*c) {
		size_t len = strcspn(c, ",");

		if (len == n && !strncmp(c, name, n))
			return 1;
		c += len + (c[len] == ',');
	}
	return 0;
}

/* A case of the table: the high-dimensional ones (minutes each on 2 cores) only when
 * named, or with --cases highdim. */
static int case_wanted(const struct opts *o, const struct bench_case *bc)
{
	if (bc->high && (!o->cases || !strcmp(o->cases, "all")))
		return 0;
	return wanted(o, bc->name);
}

/* The inputs of a case: row-major for kred (and the D = 64 baseline), and each
 * coordinate as an array of its own for the D = 3 baselines. */
struct data {
	void *x, *y, *b, *g, *e;
	void *xs[3], *ys[3];
};

static void soa(void *const dst[3], const void *src, int64_t n, int f64)
{
	for (int64_t k = 0; k < n; k++)
		for (int c = 0; c < 3; c++) {
			if (f64)
				((double *)dst[c])[k] = ((const double *)src)[3 * k + c];
			else
				((float *)dst[c])[k] = ((const float *)src)[3 * k + c];
		}
}

static void base_run(const struct bench_case *bc, const struct baseline *bl, int64_t nx,
		     int64_t ny, const struct data *d, void *out)
{
	const void *const *xs = (const void *const *)d->xs, *const *ys =
		(const void *const *)d->ys;

	switch (bc->kind) {
	case GAUSS32:
		bl->gauss_f32(nx, ny, (const float *const *)xs, (const float *const *)ys, d->b,
			      *(float *)d->g, out);
		break;
	case GAUSS64:
		bl->gauss_f64(nx, ny, (const double *const *)xs, (const double *const *)ys, d->b,
			      *(double *)d->g, out);
		break;
	case LSE32:
		bl->lse_f32(nx, ny, (const float *const *)xs, (const float *const *)ys,
			    *(float *)d->g, out);
		break;
	case ARGKMIN32:
		bl->argkmin_f32(nx, ny, (const float *const *)xs, (const float *const *)ys, out);
		break;
	case GAUSS_D64:
		bl->gauss_d64_f32(nx, ny, d->x, d->y, d->b, *(float *)d->g, out);
		break;
	case GAUSS_DN:
		bl->gauss_dn_f32(nx, ny, bc->d, d->x, d->y, d->b, *(float *)d->g, out);
		break;
	case ARGKMIN_DN:
		bl->argkmin_dn_f32(nx, ny, bc->d, d->x, d->y, out);
		break;
	default:
		bl->gauss_grad_f32(nx, ny, (const float *const *)xs, (const float *const *)ys,
				   d->b, *(float *)d->g, d->e, out);
		break;
	}
}

static void data_free(struct data *d)
{
	free(d->x);
	free(d->y);
	free(d->b);
	free(d->g);
	free(d->e);
	for (int c = 0; c < 3; c++) {
		free(d->xs[c]);
		free(d->ys[c]);
	}
}

/* kred, the baseline with kred's flags and the one with -ffast-math, alternated, reps
 * times each; prints a row of the table and, when json is open, an object. */
static int run_case(const struct opts *o, kred_context *ctx, const struct bench_case *bc,
		    const struct baseline bl[2], FILE *json, int *json_rows)
{
	int64_t nx = o->nx ? o->nx : bc->n, ny = o->ny ? o->ny : bc->n;
	int f64 = bc->f64, od, size = f64 ? 8 : 4;
	kred_reduction *fwd = NULL, *r = NULL;
	struct data d = { 0 };
	void *k_out = NULL, *h_out[2] = { NULL, NULL };
	const void *args[5];
	double tk[64], th[2][64], mk, mh[2], diff[2], pairs = (double)nx * (double)ny;
	int rc = 1;

	d.x = fill(nx * bc->d, f64, 0, 1);
	d.y = fill(ny * bc->d, f64, 0, 1);
	d.b = fill(ny, f64, -0.2, 1);
	d.g = fill(1, f64, bc->gamma ? bc->gamma : 2, bc->gamma ? bc->gamma : 2);
	d.e = fill(nx, f64, 0, 1);
	fwd = make(ctx, bc->formula, bc->reduction, bc->aliases, 4,
		   f64 ? KRED_FLOAT64 : KRED_FLOAT32, bc->fast);
	if (!fwd || !d.x || !d.y || !d.b || !d.g || !d.e)
		goto done;
	if (bc->kind == GRAD32) {
		if (kred_reduction_grad(fwd, "X", &r) != KRED_OK) {
			fprintf(stderr, "kred: error: gradient: %s\n", kred_errmsg(ctx));
			goto done;
		}
	} else {
		r = fwd;
		fwd = NULL;
	}
	if (bc->d == 3) {
		for (int c = 0; c < 3; c++) {
			d.xs[c] = malloc((size_t)nx * (size_t)size);
			d.ys[c] = malloc((size_t)ny * (size_t)size);
			if (!d.xs[c] || !d.ys[c])
				goto done;
		}
		soa(d.xs, d.x, nx, f64);
		soa(d.ys, d.y, ny, f64);
	}
	od = kred_reduction_out_dim(r);
	k_out = malloc((size_t)(nx * od) * (size_t)size + 8);
	h_out[0] = malloc((size_t)(nx * od) * (size_t)size + 8);
	h_out[1] = malloc((size_t)(nx * od) * (size_t)size + 8);
	if (!k_out || !h_out[0] || !h_out[1])
		goto done;
	args[0] = d.x;
	args[1] = d.y;
	args[2] = d.b;
	args[3] = d.g;
	args[4] = d.e;
	for (int rep = 0; rep < o->reps; rep++) {
		double t0 = now();

		if (kred_reduction_run(r, nx, ny, args, k_out) != KRED_OK) {
			fprintf(stderr, "kred: error: %s\n", kred_errmsg(ctx));
			goto done;
		}
		tk[rep] = now() - t0;
		for (int v = 0; v < 2; v++) {
			t0 = now();
			base_run(bc, &bl[v], nx, ny, &d, h_out[v]);
			th[v][rep] = now() - t0;
		}
	}
	mk = median(tk, o->reps);
	for (int v = 0; v < 2; v++) {
		mh[v] = median(th[v], o->reps);
		diff[v] = bc->kind == ARGKMIN32 || bc->kind == ARGKMIN_DN
				  ? index_diff(k_out, h_out[v], nx, 10)
						: rel_diff(k_out, h_out[v], nx * od, f64);
	}
	printf("%-28s %6lld %8.3f %7.3f   %8.3f %6.2fx   %8.3f %6.2fx   %.1e %.1e%s\n", bc->label,
	       (long long)nx, mk, pairs / mk * 1e-9, mh[0], mh[0] / mk, mh[1], mh[1] / mk,
	       diff[0], diff[1],
	       bc->kind == ARGKMIN32 || bc->kind == ARGKMIN_DN ? " (rows)" : "");
	fflush(stdout);
	if (json)
		fprintf(json, "%s\n    {\"case\": \"%s\", \"nx\": %lld, \"ny\": %lld, \"kred_s\": %.6g, "
			"\"kred_pairs_per_s\": %.6g, \"baseline_s\": %.6g, \"fast_math_s\": %.6g, "
			"\"vs_baseline\": %.4g, \"vs_fast_math\": %.4g, \"diff_baseline\": %.3g, "
			"\"diff_fast_math\": %.3g}", (*json_rows)++ ? "," : "", bc->name,
			(long long)nx, (long long)ny, mk, pairs / mk, mh[0], mh[1], mh[0] / mk,
			mh[1] / mk, diff[0], diff[1]);
	rc = 0;
done:
	kred_reduction_destroy(fwd);
	kred_reduction_destroy(r);
	data_free(&d);
	free(k_out);
	free(h_out[0]);
	free(h_out[1]);
	return rc;
}

/*
 * Latency of a call at nx = ny = lat_n: cold (a new context on an empty cache directory:
 * the compiler's identity, the source, the compile, the load, the run), warm create (a
 * new context, the module from the disk cache) and warm call (the same reduction again).
 * It runs first, so that the cold number includes what a fresh process pays.
 */
static int latency(const struct opts *o)
{
	const char *al[4] = { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" };
	const char *tmp = getenv("TMPDIR");
	char dir[512], cmd[600], formula[64];
	int64_t n = o->lat_n;
	float *x = fill(3 * n, 0, 0, 1), *y = fill(3 * n, 0, 0, 1), *b = fill(n, 0, 0, 1);
	float g = 2, *out = malloc((size_t)(n ? n : 1) * sizeof(float));
	const void *args[4] = { x, y, b, &g };
	double cold, warm_create[16], warm_call[64], t0;
	kred_context *ctx = NULL;
	kred_reduction *r = NULL;
	int rc = 1, reps = 15;

	snprintf(dir, sizeof(dir), "%s/kred-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!x || !y || !b || !out || !mkdtemp(dir)) {
		fprintf(stderr, "kred: error: cannot set up the latency case\n");
		goto done;
	}
	/* a formula of this process: no other cache can serve it */
	snprintf(formula, sizeof(formula), "Exp(-G*SqDist(X,Y)*%d)*B", 2 + (int)(getpid() % 997));
	t0 = now();
	ctx = open_ctx(o, dir);
	r = ctx ? make(ctx, formula, "Sum", al, 4, KRED_FLOAT32, 0) : NULL;
	if (!r || kred_reduction_run(r, n, n, args, out) != KRED_OK)
		goto done;
	cold = now() - t0;
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
	r = NULL;
	ctx = NULL;
	for (int k = 0; k < reps; k++) {
		t0 = now();
		ctx = open_ctx(o, dir);
		r = ctx ? make(ctx, formula, "Sum", al, 4, KRED_FLOAT32, 0) : NULL;
		if (!r || kred_reduction_run(r, n, n, args, out) != KRED_OK)
			goto done;
		warm_create[k] = now() - t0;
		if (k < reps - 1) {
			kred_reduction_destroy(r);
			kred_context_destroy(ctx);
			r = NULL;
			ctx = NULL;
		}
	}
	for (int k = 0; k < 63; k++) {
		t0 = now();
		if (kred_reduction_run(r, n, n, args, out) != KRED_OK)
			goto done;
		warm_call[k] = now() - t0;
	}
	printf("latency at nx = ny = %lld: cold first call %.3f s (empty cache: context, compile, "
	       "load, run)\n", (long long)n, cold);
	printf("  warm create + run %.3f ms (new context, module from the disk cache)\n",
	       1e3 * median(warm_create, reps));
	printf("  warm call %.3f ms (median of 63 runs of the same reduction)\n\n",
	       1e3 * median(warm_call, 63));
	fflush(stdout);
	rc = 0;
done:
	if (rc && ctx)
		fprintf(stderr, "kred: error: %s\n", kred_errmsg(ctx));
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (dir[0] && strstr(dir, "kred-bench-") && system(cmd) != 0)
		fprintf(stderr, "kred: warning: could not remove %s\n", dir);
	free(x);
	free(y);
	free(b);
	free(out);
	return rc;
}

/* The derivative engine's cost: the gradient of the Gaussian kernel sum with respect to X
 * against the forward pass, same data, same backend, alternating runs; and the node
 * counts of the gradient formula before and after simplification. */
static int grad_cost(const struct opts *o, kred_context *ctx)
{
	const char *al[4] = { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" };
	int64_t nx = o->nx ? o->nx : 100000, ny = o->ny ? o->ny : nx;
	float *x = fill(3 * nx, 0, 0, 1), *y = fill(3 * ny, 0, 0, 1), *b = fill(ny, 0, 0, 1);
	float *e = fill(nx, 0, 0, 1), g = 2;
	float *out = malloc(sizeof(float) * (size_t)(3 * nx));
	const void *args[5] = { x, y, b, &g, e };
	kred_reduction *fwd = NULL, *grad = NULL, *raw = NULL;
	double tf[64], tg[64], t0;
	int rc = 1, before, after, fnodes;

	fwd = make(ctx, "Exp(-G*SqDist(X,Y))*B", "Sum", al, 4, KRED_FLOAT32, 0);
	if (!fwd || !x || !y || !b || !e || !out)
		goto done;
	if (kred__reduction_grad_simplify(fwd, "X", 0, &raw) != KRED_OK ||
	    kred_reduction_grad(fwd, "X", &grad) != KRED_OK)
		goto fail;
	fnodes = kred__reduction_nodes(fwd);
	before = kred__reduction_nodes(raw);
	after = kred__reduction_nodes(grad);
	for (int k = 0; k < o->reps; k++) {
		t0 = now();
		if (kred_reduction_run(fwd, nx, ny, args, out))
			goto fail;
		tf[k] = now() - t0;
		t0 = now();
		if (kred_reduction_run(grad, nx, ny, args, out))
			goto fail;
		tg[k] = now() - t0;
	}
	printf("gradient of the Gaussian sum in X (D=3, E=1, float32, n = %lld): forward %.3f s, "
	       "gradient %.3f s, ratio %.2fx (target <= 2x)\n", (long long)nx,
	       median(tf, o->reps), median(tg, o->reps), median(tg, o->reps) / median(tf, o->reps));
	printf("  nodes: forward formula %d; gradient formula %d before simplification, %d after\n"
	       "  %s\n\n", fnodes, before, after, kred_reduction_formula(grad));
	rc = 0;
	goto done;
fail:
	fprintf(stderr, "kred: error: gradient bench: %s\n", kred_errmsg(ctx));
done:
	kred_reduction_destroy(fwd);
	kred_reduction_destroy(grad);
	kred_reduction_destroy(raw);
	free(x);
	free(y);
	free(b);
	free(e);
	free(out);
	return rc;
}

static void usage(FILE *f)
{
	fputs("usage: kred bench [--n N | --nx N --ny N] [--reps R] [--quick] [--json FILE]\n"
	      "                  [--cases gauss,gauss64,gauss-fast,gauss64-fast,lse,argkmin,\n"
	      "                           gauss-d64,grad,latency,opencl,vulkan,cuda | highdim]\n"
	      "                  [-b BACKEND]\n"
	      "Runs the standard cases on a kred backend (default host) and on baselines\n"
	      "written as a careful user writes them in C with OpenMP (bench/baselines.c),\n"
	      "compiled here with the host backend's compiler and flags, and again with\n"
	      "-ffast-math. Prints seconds and billions of pairs per second (medians of R\n"
	      "alternated runs) and each baseline's time over kred's (above 1: kred is\n"
	      "faster). Defaults: N = 50000 for gauss, 10000 for gauss-d64, 30000 for the\n"
	      "others, R = 3; --quick is N = 10000 for all. --json FILE writes the figures.\n"
	      "highdim (or naming them) runs gauss-d784, argkmin-d784, gauss-d4096 and\n"
	      "argkmin-d4096 (N = 10000; not in all): kred against the plain loop, a\n"
	      "vector loop over the D coordinates of each pair.\n"
	      "The latency case compiles a new formula at\n"
	      "nx = ny = 100. The opencl case runs gauss (N = 100000) on kred opencl in its\n"
	      "1D, 2D and auto schemes, on a plain one-work-item-per-row OpenCL kernel and\n"
	      "on kred host (-b opencl:N picks the device). The vulkan case runs gauss\n"
	      "(N = 30000) on kred vulkan, kred opencl and kred host; the cuda case\n"
	      "(N = 1000000) on kred cuda (1D, 2D, auto, and on device memory), a plain\n"
	      "one-thread-per-row CUDA kernel and kred host, or says why there is no GPU.\n", f);
}

/* The CPU's name, for the JSON file: /proc/cpuinfo's "model name". */
static void cpu_model(char *out, size_t len)
{
	char line[512];
	FILE *f = fopen("/proc/cpuinfo", "r");

	snprintf(out, len, "unknown");
	while (f && fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');

		if (!strncmp(line, "model name", 10) && colon) {
			colon += 1 + (colon[1] == ' ');
			colon[strcspn(colon, "\n")] = 0;
			snprintf(out, len, "%s", colon);
			break;
		}
	}
	if (f)
		fclose(f);
}

/* A JSON string's body: quotes and backslashes escaped, control characters dropped. */
static void json_str(FILE *f, const char *s)
{
	for (; *s; s++)
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s >= 0x20)
			fputc(*s, f);
}

/* The table of cases: kred against both baselines. */
static int run_table(const struct opts *o, kred_context *ctx, int threads)
{
	struct baseline bl[2] = { { 0 }, { 0 } };
	const char *tmp = getenv("TMPDIR");
	char dir[512], cmd[600], model[256];
	FILE *json = NULL;
	int rc = 1, rows = 0;

	snprintf(dir, sizeof(dir), "%s/kred-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		fprintf(stderr, "kred: error: bench: cannot make %s\n", dir);
		return 1;
	}
	if (baseline_build(&bl[0], dir, "baseline", "") ||
	    baseline_build(&bl[1], dir, "fast-math", "-ffast-math"))
		goto done;
	cpu_model(model, sizeof(model));
	if (o->json && !(json = fopen(o->json, "w"))) {
		fprintf(stderr, "kred: error: bench: cannot write %s\n", o->json);
		goto done;
	}
	if (json) {
		fprintf(json, "{\n  \"machine\": \"");
		json_str(json, model);
		fprintf(json, "\",\n  \"threads\": %d,\n  \"backend\": \"", threads);
		json_str(json, kred_context_backend(ctx));
		fprintf(json, "\",\n  \"compiler\": \"");
		json_str(json, kred__host_cc());
		fprintf(json, "\",\n  \"flags\": \"");
		json_str(json, kred__host_cflags());
		fprintf(json, "\",\n  \"reps\": %d,\n  \"cases\": [", o->reps);
	}
	printf("kred bench: %s on %s, %d OpenMP threads, medians of %d alternated runs\n",
	       kred_context_backend(ctx), model, threads, o->reps);
	printf("baseline: bench/baselines.c built by %s %s\n", kred__host_cc(), kred__host_cflags());
	printf("fast-math: the same with -ffast-math; x = baseline time / kred time\n");
	printf("%-28s %6s %8s %7s   %8s %7s   %8s %7s   %s\n", "case", "n", "kred s", "Gpair/s",
	       "base s", "x", "fast s", "x", "max diff (base, fast)");
	rc = 0;
	for (size_t k = 0; k < sizeof(bench_cases) / sizeof(bench_cases[0]); k++)
		if (case_wanted(o, &bench_cases[k]))
			rc |= run_case(o, ctx, &bench_cases[k], bl, json, &rows);
	printf("\n");
	if (json) {
		fprintf(json, "\n  ]\n}\n");
		if (fclose(json)) {
			fprintf(stderr, "kred: error: bench: cannot write %s\n", o->json);
			rc = 1;
		}
	}
done:
	for (int v = 0; v < 2; v++)
		if (bl[v].so)
			dlclose(bl[v].so);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (strstr(dir, "kred-bench-") && system(cmd) != 0)
		fprintf(stderr, "kred: warning: could not remove %s\n", dir);
	return rc;
}

int kred_bench_main(int argc, char **argv)
{
	struct opts o = { 0, 0, 100, 3, "all", "host", NULL };
	kred_context *ctx = NULL;
	int rc = 0, threads = 1, table = 0;

	for (int k = 1; k < argc; k++) {
		const char *a = argv[k], *v = k + 1 < argc ? argv[k + 1] : NULL;

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--quick")) {
			o.nx = o.ny = 10000;
			o.reps = 3;
		} else if (v && (!strcmp(a, "--n") || !strcmp(a, "-n"))) {
			o.nx = o.ny = atoll(v);
			k++;
			if (o.nx < 1)
				o.nx = o.ny = -1;
		} else if (v && !strcmp(a, "--nx")) {
			o.nx = atoll(v) < 1 ? -1 : atoll(v);
			k++;
		} else if (v && !strcmp(a, "--ny")) {
			o.ny = atoll(v) < 1 ? -1 : atoll(v);
			k++;
		} else if (v && !strcmp(a, "--reps")) {
			o.reps = atoi(v);
			k++;
		} else if (v && !strcmp(a, "--cases")) {
			o.cases = v;
			k++;
		} else if (v && !strcmp(a, "--json")) {
			o.json = v;
			k++;
		} else if (v && (!strcmp(a, "-b") || !strcmp(a, "--backend"))) {
			o.backend = v;
			k++;
		} else {
			fprintf(stderr, "kred: error: bench: unexpected '%s'\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (o.nx < 0 || o.ny < 0 || o.reps < 1 || o.reps > 64) {
		fprintf(stderr, "kred: error: bench: sizes must be positive and reps in 1..64\n");
		return 2;
	}
#ifdef _OPENMP
	threads = omp_get_max_threads();
#endif
	if (wanted(&o, "latency") && latency(&o))
		return 1;
	ctx = open_ctx(&o, NULL);
	if (!ctx)
		return 1;
	for (size_t k = 0; k < sizeof(bench_cases) / sizeof(bench_cases[0]); k++)
		table |= case_wanted(&o, &bench_cases[k]);
	if (table)
		rc |= run_table(&o, ctx, threads);
	if (wanted(&o, "grad"))
		rc |= grad_cost(&o, ctx);
	kred_context_destroy(ctx);
	/* kred opencl (1D, 2D, auto) against a plain OpenCL kernel and kred host; on the
	 * device -b names when it is an opencl one. */
	if (wanted(&o, "opencl"))
		rc |= kred_bench_opencl(o.nx ? o.nx : 100000, o.ny ? o.ny : o.nx ? o.nx : 100000,
					o.reps, strncmp(o.backend, "opencl", 6) ? NULL : o.backend);
	/* kred vulkan against kred opencl and kred host; smaller by default, since on
	 * lavapipe each backend runs on the CPU */
	if (wanted(&o, "vulkan"))
		rc |= kred_bench_vulkan(o.nx ? o.nx : 30000, o.ny ? o.ny : o.nx ? o.nx : 30000,
					o.reps, strncmp(o.backend, "vulkan", 6) ? NULL : o.backend);
	/* kred cuda against a plain CUDA kernel and kred host; says why when there is no
	 * GPU */
	if (wanted(&o, "cuda"))
		rc |= kred_bench_cuda(o.nx ? o.nx : 1000000, o.ny ? o.ny : o.nx ? o.nx : 1000000,
				      o.reps, strncmp(o.backend, "cuda", 4) ? NULL : o.backend);
	return rc;
}
