/* The benchmarks behind `kred bench`: standard cases run on the host backend side by side
 * with plain OpenMP loops written here, printing medians, pairs per second and ratios. */
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
#include "internal.h" /* node counts of the gradient formula */
#include "kred.h"
#include "bench_util.h"

/*
 * The hand-written loops are what a careful user writes for one formula: one OpenMP
 * parallel loop over the output rows, libm's exp, compiled with the flags this command
 * is built with (meson's debugoptimized: -O2, with -fopenmp). Both sides run in the same
 * process on the same data, and each case checks that they agree.
 */

struct opts {
	int64_t nx, ny, lat_n;
	int reps;
	const char *cases;
	const char *backend;
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

/* ---- the hand-written loops */

/* out_i = sum_j exp(-g |x_i - y_j|^2) b_j, D = 3, E = 1, float32 */
static void hand_gauss_f32(int64_t nx, int64_t ny, const float *x, const float *y,
			   const float *b, float g, float *out)
{
#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < nx; i++) {
		float x0 = x[3 * i], x1 = x[3 * i + 1], x2 = x[3 * i + 2], s = 0;

		for (int64_t j = 0; j < ny; j++) {
			float d0 = x0 - y[3 * j], d1 = x1 - y[3 * j + 1], d2 = x2 - y[3 * j + 2];

			s += expf(-g * (d0 * d0 + d1 * d1 + d2 * d2)) * b[j];
		}
		out[i] = s;
	}
}

/* the same with D = 10, E = 3, float64 */
static void hand_gauss_f64(int64_t nx, int64_t ny, const double *x, const double *y,
			   const double *b, double g, double *out)
{
#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < nx; i++) {
		double s0 = 0, s1 = 0, s2 = 0;

		for (int64_t j = 0; j < ny; j++) {
			double d2 = 0, k;

			for (int c = 0; c < 10; c++) {
				double d = x[10 * i + c] - y[10 * j + c];

				d2 += d * d;
			}
			k = exp(-g * d2);
			s0 += k * b[3 * j];
			s1 += k * b[3 * j + 1];
			s2 += k * b[3 * j + 2];
		}
		out[3 * i] = s0;
		out[3 * i + 1] = s1;
		out[3 * i + 2] = s2;
	}
}

/* out_i = log sum_j exp(-g |x_i - y_j|^2), D = 3, float32: a max pass, then the shifted
 * sum, as one writes it to avoid overflow */
static void hand_lse_f32(int64_t nx, int64_t ny, const float *x, const float *y, float g,
			 float *out)
{
#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < nx; i++) {
		float x0 = x[3 * i], x1 = x[3 * i + 1], x2 = x[3 * i + 2], m = -INFINITY, s = 0;

		for (int64_t j = 0; j < ny; j++) {
			float d0 = x0 - y[3 * j], d1 = x1 - y[3 * j + 1], d2 = x2 - y[3 * j + 2];
			float f = -g * (d0 * d0 + d1 * d1 + d2 * d2);

			m = f > m ? f : m;
		}
		for (int64_t j = 0; j < ny; j++) {
			float d0 = x0 - y[3 * j], d1 = x1 - y[3 * j + 1], d2 = x2 - y[3 * j + 2];

			s += expf(-g * (d0 * d0 + d1 * d1 + d2 * d2) - m);
		}
		out[i] = m + logf(s);
	}
}

/* the indices of the 10 nearest y_j, D = 3, float32: insertion into a sorted list */
static void hand_argkmin_f32(int64_t nx, int64_t ny, const float *x, const float *y, float *out)
{
#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < nx; i++) {
		float x0 = x[3 * i], x1 = x[3 * i + 1], x2 = x[3 * i + 2], best[10];
		int64_t idx[10];

		for (int k = 0; k < 10; k++) {
			best[k] = INFINITY;
			idx[k] = -1;
		}
		for (int64_t j = 0; j < ny; j++) {
			float d0 = x0 - y[3 * j], d1 = x1 - y[3 * j + 1], d2 = x2 - y[3 * j + 2];
			float d = d0 * d0 + d1 * d1 + d2 * d2;
			int k = 9;

			if (!(d < best[9]))
				continue;
			while (k > 0 && best[k - 1] > d) {
				best[k] = best[k - 1];
				idx[k] = idx[k - 1];
				k--;
			}
			best[k] = d;
			idx[k] = j;
		}
		for (int k = 0; k < 10; k++)
			out[10 * i + k] = (float)idx[k];
	}
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
			    const char *const *al, size_t n_al, kred_dtype dt)
{
	kred_spec s = { 0 };
	kred_reduction *r = NULL;

	s.formula = formula;
	s.reduction = red;
	s.aliases = al;
	s.n_aliases = n_al;
	s.dtype = dt;
	if (kred_reduction_create(ctx, &s, &r) != KRED_OK) {
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

enum which { GAUSS32, GAUSS64, LSE32, ARGKMIN32 };

struct bench_case {
	const char *name, *label, *formula, *reduction;
	const char *aliases[4];
	int f64, dx, dy, e, kind;
	int64_t n; /* nx = ny by default: the others cost the hand loop far more per pair */
};

static const struct bench_case bench_cases[] = {
	{ "gauss", "Exp(-G*SqDist(X,Y))*B  D=3  E=1  float32", "Exp(-G*SqDist(X,Y))*B", "Sum",
	  { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" }, 0, 3, 3, 1, GAUSS32, 100000 },
	{ "gauss64", "Exp(-G*SqDist(X,Y))*B  D=10 E=3  float64", "Exp(-G*SqDist(X,Y))*B", "Sum",
	  { "X=Vi(10)", "Y=Vj(10)", "B=Vj(3)", "G=Pm(1)" }, 1, 10, 10, 3, GAUSS64, 30000 },
	{ "lse", "LogSumExp(-G*SqDist(X,Y))  D=3  float32", "-G*SqDist(X,Y)", "LogSumExp",
	  { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" }, 0, 3, 3, 1, LSE32, 30000 },
	{ "argkmin", "ArgKMin(10) of SqDist(X,Y)  D=3  float32", "SqDist(X,Y)", "ArgKMin(10)",
	  { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" }, 0, 3, 3, 1, ARGKMIN32, 30000 },
};

static int wanted(const struct opts *o, const char *name)
{
	const char *c = o->cases;
	size_t n = strlen(name);

	if (!c || !strcmp(c, "all"))
		return 1;
	while (*c) {
		size_t len = strcspn(c, ",");

		if (len == n && !strncmp(c, name, n))
			return 1;
		c += len + (c[len] == ',');
	}
	return 0;
}

static void hand_run(const struct bench_case *bc, int64_t nx, int64_t ny, void *x, void *y,
		     void *b, void *g, void *out)
{
	switch (bc->kind) {
	case GAUSS32:
		hand_gauss_f32(nx, ny, x, y, b, *(float *)g, out);
		break;
	case GAUSS64:
		hand_gauss_f64(nx, ny, x, y, b, *(double *)g, out);
		break;
	case LSE32:
		hand_lse_f32(nx, ny, x, y, *(float *)g, out);
		break;
	default:
		hand_argkmin_f32(nx, ny, x, y, out);
		break;
	}
}

static int run_case(const struct opts *o, kred_context *ctx, const struct bench_case *bc)
{
	int64_t nx = o->nx ? o->nx : bc->n, ny = o->ny ? o->ny : bc->n;
	int f64 = bc->f64, od;
	kred_reduction *r;
	void *x = fill(nx * bc->dx, f64, 0, 1), *y = fill(ny * bc->dy, f64, 0, 1);
	void *b = fill(ny * bc->e, f64, -0.2, 1), *g = fill(1, f64, 2, 2);
	void *k_out = NULL, *h_out = NULL;
	const void *args[4];
	double tk[64], th[64], mk, mh, diff;
	int rc = 1;

	r = make(ctx, bc->formula, bc->reduction, bc->aliases, 4,
		 f64 ? KRED_FLOAT64 : KRED_FLOAT32);
	if (!r || !x || !y || !b || !g)
		goto done;
	od = kred_reduction_out_dim(r);
	k_out = malloc((size_t)(nx * od) * (f64 ? 8 : 4) + 8);
	h_out = malloc((size_t)(nx * od) * (f64 ? 8 : 4) + 8);
	if (!k_out || !h_out)
		goto done;
	args[0] = x;
	args[1] = y;
	args[2] = b;
	args[3] = g;
	for (int rep = 0; rep < o->reps; rep++) {
		double t0 = now();

		if (kred_reduction_run(r, nx, ny, args, k_out) != KRED_OK) {
			fprintf(stderr, "kred: error: %s\n", kred_errmsg(ctx));
			goto done;
		}
		tk[rep] = now() - t0;
		t0 = now();
		hand_run(bc, nx, ny, x, y, b, g, h_out);
		th[rep] = now() - t0;
	}
	mk = median(tk, o->reps);
	mh = median(th, o->reps);
	diff = bc->kind == ARGKMIN32 ? index_diff(k_out, h_out, nx, 10)
				     : rel_diff(k_out, h_out, nx * od, f64);
	printf("%-42s %7lld %8.3f %8.3f   %8.3f %8.3f   %6.2fx   %s %.1e\n", bc->label,
	       (long long)nx, mk,
	       (double)nx * (double)ny / mk * 1e-9, mh, (double)nx * (double)ny / mh * 1e-9,
	       mh / mk, bc->kind == ARGKMIN32 ? "rows differing" : "max rel diff", diff);
	fflush(stdout);
	rc = 0;
done:
	kred_reduction_destroy(r);
	free(x);
	free(y);
	free(b);
	free(g);
	free(k_out);
	free(h_out);
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
	r = ctx ? make(ctx, formula, "Sum", al, 4, KRED_FLOAT32) : NULL;
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
		r = ctx ? make(ctx, formula, "Sum", al, 4, KRED_FLOAT32) : NULL;
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

	fwd = make(ctx, "Exp(-G*SqDist(X,Y))*B", "Sum", al, 4, KRED_FLOAT32);
	if (!fwd || !x || !y || !b || !e || !out)
		goto done;
	kred__diff_simplify = 0;
	if (kred_reduction_grad(fwd, "X", &raw) != KRED_OK)
		goto fail;
	kred__diff_simplify = 1;
	if (kred_reduction_grad(fwd, "X", &grad) != KRED_OK)
		goto fail;
	fnodes = kred__node_count(fwd->g, fwd->f);
	before = kred__node_count(raw->g, raw->f);
	after = kred__node_count(grad->g, grad->f);
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
	kred__diff_simplify = 1;
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
	fputs("usage: kred bench [--n N | --nx N --ny N] [--reps R] [--quick]\n"
	      "                  [--cases gauss,gauss64,lse,argkmin,grad,latency,opencl,\n"
	      "                           vulkan,cuda]\n"
	      "                  [-b BACKEND]\n"
	      "Runs the standard cases on a kred backend (default host) and on plain OpenMP\n"
	      "loops compiled with this command's flags, and prints seconds and billions of\n"
	      "pairs per second (medians of R runs) and their ratio. Defaults: N = 100000\n"
	      "for gauss, 30000 for the others (their hand loops are slower), R = 3;\n"
	      "--quick is N = 10000 for all. The latency case compiles a new formula at\n"
	      "nx = ny = 100. The opencl case runs gauss (N = 100000) on kred opencl in its\n"
	      "1D, 2D and auto schemes, on a plain one-work-item-per-row OpenCL kernel and\n"
	      "on kred host (-b opencl:N picks the device). The vulkan case runs gauss\n"
	      "(N = 30000) on kred vulkan, kred opencl and kred host; the cuda case\n"
	      "(N = 1000000) on kred cuda (1D, 2D, auto, and on device memory), a plain\n"
	      "one-thread-per-row CUDA kernel and kred host, or says why there is no GPU.\n", f);
}

int kred_bench_main(int argc, char **argv)
{
	struct opts o = { 0, 0, 100, 3, "all", "host" };
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
	for (size_t k = 0; k < sizeof(bench_cases) / sizeof(bench_cases[0]); k++) {
		if (!wanted(&o, bench_cases[k].name))
			continue;
		if (!table++) {
			printf("kred bench: %s, %d OpenMP threads, median of %d runs, "
			       "nx = ny = n\n", kred_context_backend(ctx), threads, o.reps);
			printf("%-42s %7s %17s   %17s   %7s\n", "", "", "kred", "hand loop", "");
			printf("%-42s %7s %8s %8s   %8s %8s   %7s\n", "case", "n", "s", "Gpair/s",
			       "s", "Gpair/s", "ratio");
		}
		rc |= run_case(&o, ctx, &bench_cases[k]);
	}
	if (table)
		printf("\n");
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
