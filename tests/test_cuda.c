/* The CUDA backend's suite: every case of the conformance and derivative suites compiled by
 * NVRTC for several architectures and assembled by ptxas (no GPU needed), the compile-only
 * context, the loaders' failure paths, the command, and on a GPU the run tests. */
#include <check.h>
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache.h"
#include "device.h"
#include "cuda/compile.h"
#include "internal.h"
#include "kernels/kred_kernels.h"

#include "conformance_cases.h"
#include "diff_cases.h"

/*
 * What runs where.
 *   Always: the compile-only context, names and errors, the template check, the command.
 *   With NVRTC: the compile matrix, one test per architecture of $KRED_TEST_CUDA_ARCHS
 *   (default "70 80 90"): each case's source compiled to PTX and the PTX assembled by
 *   ptxas ($KRED_PTXAS, else /usr/local/cuda/bin/ptxas, else ptxas on PATH). An
 *   architecture this NVRTC no longer knows (CUDA 13 dropped sm_70) is replaced by the
 *   oldest it knows, and the output says so.
 *   With a GPU: the run tests. Without one they are not registered, and one line says
 *   how many were skipped and why: they do not count as passed.
 * A missing NVRTC or ptxas is a skip that the output names ("skipped: ... no NVRTC"):
 * Debian has no CUDA toolkit, so a newcomer's `bash setup.sh test` passes without it;
 * .ci/run reads those lines and fails a CI machine that lacks it. A missing GPU is not
 * an error anywhere (CI has none). $KRED_TEST_JOBS sets how many processes share the
 * compile matrix (default: one per CPU, at most 16).
 */

#define MAX_ARCHS 8

static int archs[MAX_ARCHS], n_archs;
static const struct kred__nvrtc_api *nv;
static char nv_why[512];
static char ptxas[512], ptxas_why[600];
static int have_gpu;
static char gpu_why[512];
static int jobs;
/* $KRED_TEST_CUDA_STRIDE=N: every Nth source only, on every architecture (1: all of them
 * everywhere). Unset: every source on the oldest and the newest architecture of the list,
 * every 4th on those between (the sources are the same text; what an architecture
 * changes, its limits and instructions, the two ends bound), which keeps the matrix, the
 * longest suite of the run with its compiles on every CPU, to about two thirds. */
static int stride = 0;

static int arch_stride(int i)
{
	if (stride > 0)
		return stride;
	return n_archs > 2 && i > 0 && i < n_archs - 1 ? 4 : 1;
}

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static kred_context *open_ctx(const char *name, kred_scheme scheme, const char *cache_dir)
{
	kred_context_options o = { 0 };
	kred_context *ctx = NULL;
	kred_status s;

	o.struct_size = sizeof(o);
	o.backend = name;
	o.scheme = scheme;
	o.cache_dir = cache_dir;
	s = kred_context_create(&o, &ctx);
	ck_assert_msg(s == KRED_OK, "backend %s: %s", name, kred_errmsg(ctx));
	return ctx;
}

/* A reduction from text: aliases separated by sep (';' as in the conformance table, ' '
 * as in the derivative suite's). */
static kred_reduction *make(kred_context *ctx, const char *formula, const char *weight,
			    const char *reduction, const char *aliases, char sep, kred_axis axis,
			    kred_dtype dtype, kred_sum_scheme scheme)
{
	const char *al[16];
	char buf[512];
	kred_spec s = { 0 };
	kred_reduction *r = NULL;
	kred_status st;
	size_t n = 0;

	if (sep == ';') {
		n = split_aliases(aliases, buf, sizeof(buf), al, 16);
	} else {
		snprintf(buf, sizeof(buf), "%s", aliases);
		for (char *tok = strtok(buf, " "); tok && n < 16; tok = strtok(NULL, " "))
			al[n++] = tok;
	}
	s.formula = formula;
	s.weight = weight;
	s.reduction = reduction;
	s.aliases = al;
	s.n_aliases = n;
	s.axis = axis;
	s.dtype = dtype;
	s.sum_scheme = scheme;
	st = kred_reduction_create(ctx, &s, &r);
	ck_assert_msg(st == KRED_OK, "%s [%s] on %s: %s: %s", formula, reduction,
		      kred_context_backend(ctx), kred_status_name(st), kred_errmsg(ctx));
	return r;
}

static kred_reduction *make_row(kred_context *ctx, const struct row *row)
{
	return make(ctx, row->formula, row->weight, row->reduction, row->aliases, ';', row->axis,
		    row->dtype, row->scheme);
}

/* ---- the cases: every reduction the conformance and derivative suites make */

struct kcase {
	kred_reduction *r;
	int owned; /* 0 for an auxiliary reduction, which its owner frees */
	char key[33];
	char name[200];
};

struct cases {
	struct kcase *v;
	int n, cap;
	int total; /* cases before duplicate sources were dropped */
	int conformance, ops; /* of which conformance rows, derivative op rows */
};

/* Adds r (taking it) unless a case with the same source is there already. */
static void add_case(struct cases *cs, kred_reduction *r, int owned, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void add_case(struct cases *cs, kred_reduction *r, int owned, const char *fmt, ...)
{
	const char *src = kred_reduction_source(r);
	struct kred__hash h;
	struct kcase *c;
	va_list ap;
	char key[33];

	ck_assert_msg(src != NULL, "source: %s", kred_errmsg(r->ctx));
	cs->total++;
	kred__hash_init(&h);
	kred__hash_str(&h, src);
	kred__hash_hex(&h, key);
	for (int k = 0; k < cs->n; k++) {
		if (!strcmp(cs->v[k].key, key)) {
			if (owned)
				kred_reduction_destroy(r);
			return;
		}
	}
	if (cs->n == cs->cap) {
		cs->cap = cs->cap ? 2 * cs->cap : 256;
		cs->v = realloc(cs->v, (size_t)cs->cap * sizeof(*cs->v));
		ck_assert_ptr_nonnull(cs->v);
	}
	c = &cs->v[cs->n++];
	c->r = r;
	c->owned = owned;
	memcpy(c->key, key, sizeof(key));
	va_start(ap, fmt);
	vsnprintf(c->name, sizeof(c->name), fmt, ap);
	va_end(ap);
}

/* A gradient, and the auxiliary reduction it runs first, if any. */
static void add_grad(struct cases *cs, kred_reduction *r, const char *var, const char *what)
{
	kred_reduction *g = NULL;
	kred_status st = kred_reduction_grad(r, var, &g);

	ck_assert_msg(st == KRED_OK, "%s: grad %s: %s", what, var, kred_errmsg(r->ctx));
	if (g->pre)
		add_case(cs, g->pre, 0, "%s, d/d%s (its auxiliary reduction)", what, var);
	add_case(cs, g, 1, "%s, d/d%s", what, var);
}

/* The op rows of the derivative suite as it makes them: Grad(F, V, E__) summed. */
static void add_op_rows(struct cases *cs, kred_context *ctx)
{
	for (int k = 0; k < N(op_rows); k++) {
		const struct op_row *row = &op_rows[k];
		char aliases[512], wrt[128], formula[1024];
		kred_reduction *rf;
		int d;

		rf = make(ctx, row->formula, NULL, "Sum", row->aliases, ' ', KRED_REDUCE_J,
			  KRED_FLOAT64, KRED_SUM_DEFAULT);
		d = kred_reduction_out_dim(rf);
		add_case(cs, rf, 1, "derivative op row %d: %s", k, row->formula);
		snprintf(aliases, sizeof(aliases), "%s E__=Vi(%d)", row->aliases, d);
		snprintf(wrt, sizeof(wrt), "%s", row->wrt);
		/* Simplified and not, as the suite checks both. */
		for (int simplify = 1; simplify >= 0; simplify--) {
			char *save = NULL;

			snprintf(wrt, sizeof(wrt), "%s", row->wrt);
			for (char *w = strtok_r(wrt, " ", &save); w;
			     w = strtok_r(NULL, " ", &save)) {
				kred_reduction *g;

				snprintf(formula, sizeof(formula), "Grad(%s,%s,E__)", row->formula,
					 w);
				kred__diff_simplify = simplify;
				g = make(ctx, formula, NULL, "Sum", aliases, ' ', KRED_REDUCE_J,
					 KRED_FLOAT64, KRED_SUM_DEFAULT);
				kred__diff_simplify = 1;
				add_case(cs, g, 1, "derivative op row %d: %s%s", k, formula,
					 simplify ? "" : " (unsimplified)");
			}
		}
	}
}

static void collect(struct cases *cs, kred_context *ctx)
{
	static const char *const vars[] = { "X", "Y", "P", "#1" };

	memset(cs, 0, sizeof(*cs));
	for (int k = 0; k < N_ROWS; k++)
		add_case(cs, make_row(ctx, &rows[k]), 1, "conformance row %d: %s [%s]", k,
			 rows[k].formula, rows[k].reduction);
	for (int k = 0; k < 2 * N_SPECIALS; k++) {
		const struct special *sp = &specials[k / 2];

		add_case(cs, make(ctx, sp->formula, sp->weight, sp->reduction, XY1, ';', J,
				  k % 2 ? F64 : F32, sp->scheme),
			 1, "conformance special %d: %s [%s] %s", k / 2, sp->formula, sp->reduction,
			 k % 2 ? "float64" : "float32");
	}
	cs->conformance = cs->total;
	add_op_rows(cs, ctx);
	cs->ops = cs->total - cs->conformance;
	for (int k = 0; k < N(red_rows); k++) {
		const struct red_row *row = &red_rows[k];
		kred_reduction *r;
		char what[160];

		r = make(ctx, row->formula, row->weight, row->reduction, red_aliases, ' ',
			 row->axis, KRED_FLOAT64, KRED_SUM_DEFAULT);
		snprintf(what, sizeof(what), "derivative reduction row %d: %s axis %c", k,
			 row->reduction, row->axis == KRED_REDUCE_J ? 'j' : 'i');
		for (int v = 0; v < N(vars); v++)
			add_grad(cs, r, vars[v], what);
		add_case(cs, r, 1, "%s", what);
	}
	/* Derivatives of derivatives (the suite's second-derivative tests). */
	{
		kred_reduction *r, *g = NULL;

		r = make(ctx, "Exp(-P*SqDist(X,Y))*B", NULL, "Sum",
			 "P=Pm(1) X=Vi(3) Y=Vj(3) B=Vj(2)", ' ', KRED_REDUCE_J, KRED_FLOAT64,
			 KRED_SUM_DEFAULT);
		ck_assert_int_eq(kred_reduction_grad(r, "X", &g), KRED_OK);
		add_grad(cs, g, "Y", "Gaussian, d/dX");
		add_grad(cs, g, "P", "Gaussian, d/dX");
		add_case(cs, g, 1, "Gaussian, d/dX");
		add_case(cs, r, 1, "Gaussian");
	}
}

static void cases_free(struct cases *cs)
{
	/* Owners last: an auxiliary reduction is freed with its owner. */
	for (int k = 0; k < cs->n; k++)
		if (cs->v[k].owned)
			kred_reduction_destroy(cs->v[k].r);
	free(cs->v);
}

/* ---- the compile matrix */

static void rm_rf(const char *path)
{
	char cmd[700];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	ck_assert_int_eq(system(cmd), 0);
}

static const char *tmp_base(void)
{
	const char *t = getenv("TMPDIR");

	return t && *t ? t : "/tmp";
}

/* One worker: cases k, k + jobs, ... compiled for arch and assembled. Writes one "F name:
 * why" line per failure, a "T seconds name" line per case, and a last "C compiled
 * assembled nvrtc-seconds ptxas-seconds" line to its result file. */
static void compile_worker(const struct cases *cs, int k, int arch, int step, const char *dir)
{
	char path[700], want[32];
	int compiled = 0, assembled = 0;
	double t_nvrtc = 0, t_ptxas = 0;
	FILE *res;

	snprintf(path, sizeof(path), "%s/result.%d", dir, k);
	res = fopen(path, "w");
	if (!res)
		_exit(3);
	snprintf(want, sizeof(want), ".target sm_%d", arch);
	for (int c = k * step; c < cs->n; c += jobs * step) {
		const struct kcase *kc = &cs->v[c];
		char *ptx = NULL, *out = NULL, file[700], archopt[32];
		double t0 = kred__now(), t1;
		kred_status st = kred_reduction_ptx(kc->r, NULL, &ptx);
		FILE *f;
		int rc;

		t1 = kred__now();
		t_nvrtc += t1 - t0;
		if (st) {
			fprintf(res, "F %s: NVRTC: %s: %s\n%s\n", kc->name, kred_status_name(st),
				kred_errmsg(kc->r->ctx), kred_error_log(kc->r->ctx));
			continue;
		}
		if (!strstr(ptx, want)) {
			fprintf(res, "F %s: the PTX has no '%s'\n", kc->name, want);
			kred_free(ptx);
			continue;
		}
		compiled++;
		if (!ptxas[0]) {
			kred_free(ptx);
			continue;
		}
		snprintf(file, sizeof(file), "%s/case%d.ptx", dir, c);
		f = fopen(file, "w");
		if (!f || fputs(ptx, f) == EOF || fclose(f) != 0) {
			fprintf(res, "F %s: cannot write %s\n", kc->name, file);
			kred_free(ptx);
			continue;
		}
		kred_free(ptx);
		snprintf(archopt, sizeof(archopt), "-arch=sm_%d", arch);
		{
			char *argv[] = { ptxas, archopt, file, "-o", "/dev/null", NULL };

			rc = kred__spawn(argv, &out);
		}
		t_ptxas += kred__now() - t1;
		fprintf(res, "T %.3f %.3f %s\n", t1 - t0, kred__now() - t1, kc->name);
		if (rc != 0)
			fprintf(res, "F %s: ptxas %s %s failed (%d):\n%s\n", kc->name, archopt,
				file, rc, out ? out : "");
		else
			assembled++;
		free(out);
		if (rc == 0)
			unlink(file); /* a failing one stays, for a look */
	}
	fprintf(res, "C %d %d %.3f %.3f\n", compiled, assembled, t_nvrtc, t_ptxas);
	fclose(res);
	_exit(0);
}

START_TEST(test_compile_arch)
{
	int want = archs[_i], arch = want, step = arch_stride(_i);
	int compiled = 0, assembled = 0, failures = 0;
	double t_nvrtc = 0, t_ptxas = 0;
	char name[32], dir[600], archs_text[64];
	struct cases cs;
	kred_context *ctx;
	pid_t pid[16];
	double t0 = kred__now();

	kred__nvrtc_archs(nv, archs_text, sizeof(archs_text));
	if (!kred__nvrtc_knows(nv, want)) {
		arch = nv->archs[0];
		for (int k = 0; k < n_archs; k++) {
			if (archs[k] == arch) {
				printf("sm_%d: skipped: NVRTC %d.%d compiles for %s, and sm_%d, "
				       "the oldest, is in the list already\n", want, nv->major,
				       nv->minor, archs_text, arch);
				return;
			}
		}
		printf("sm_%d: NVRTC %d.%d compiles for %s, not sm_%d: compiling for sm_%d, the "
		       "oldest it knows, instead\n", want, nv->major, nv->minor, archs_text, want,
		       arch);
	}
	snprintf(name, sizeof(name), "cuda:sm_%d", arch);
	ctx = open_ctx(name, KRED_SCHEME_AUTO, NULL);
	collect(&cs, ctx);
	snprintf(dir, sizeof(dir), "%s/kred-test-cuda-XXXXXX", tmp_base());
	ck_assert_ptr_nonnull(mkdtemp(dir));
	fflush(NULL);
	for (int k = 0; k < jobs; k++) {
		pid[k] = fork();
		ck_assert_int_ge(pid[k], 0);
		if (pid[k] == 0)
			compile_worker(&cs, k, arch, step, dir);
	}
	for (int k = 0; k < jobs; k++) {
		char path[700], line[4096];
		int status, c = 0, a = 0;
		double tn = 0, tp = 0;
		FILE *res;

		ck_assert_int_eq(waitpid(pid[k], &status, 0), pid[k]);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			      "compile worker %d died (status %d)", k, status);
		snprintf(path, sizeof(path), "%s/result.%d", dir, k);
		res = fopen(path, "r");
		ck_assert_ptr_nonnull(res);
		while (fgets(line, sizeof(line), res)) {
			if (sscanf(line, "C %d %d %lf %lf", &c, &a, &tn, &tp) == 4) {
				compiled += c;
				assembled += a;
				t_nvrtc += tn;
				t_ptxas += tp;
			} else if (line[0] == 'T') {
				if (getenv("KRED_TEST_CUDA_TIMES"))
					fputs(line, stdout);
			} else if (line[0] == 'F' && line[1] == ' ') {
				failures++;
				printf("sm_%d: FAILED: %s", arch, line + 2);
			} else if (failures <= 5) {
				fputs(line, stdout); /* the log of the failure above */
			}
		}
		fclose(res);
	}
	printf("compiled: sm_%d: %d of %d distinct sources by NVRTC %d.%d (%.1f s); assembled: "
	       "%d%s (%.1f s); %.1f s with %d jobs; the sources of %d cases: %d conformance, %d "
	       "derivative op rows, %d reductions and their gradients\n", arch, compiled, cs.n,
	       nv->major, nv->minor, t_nvrtc, assembled, ptxas[0] ? " by ptxas" : " (skipped: no "
	       "ptxas)", t_ptxas, kred__now() - t0, jobs, cs.total, cs.conformance, cs.ops,
	       cs.total - cs.conformance - cs.ops);
	fflush(stdout);
	if (!failures)
		rm_rf(dir);
	cases_free(&cs);
	kred_context_destroy(ctx);
	ck_assert_msg(failures == 0, "sm_%d: %d of %d sources failed (see the output; PTX kept "
		      "in %s)", arch, failures, cs.n, dir);
	if (step > 1) {
		printf("sm_%d: every %dth source only (%s)\n", arch, step, stride > 0 ?
		       "KRED_TEST_CUDA_STRIDE" : "an architecture between the oldest and the newest "
		       "of the list; KRED_TEST_CUDA_STRIDE=1 compiles all");
		return;
	}
	ck_assert_int_eq(compiled, cs.n);
	if (ptxas[0])
		ck_assert_int_eq(assembled, cs.n);
}
END_TEST

/* ---- without a GPU: contexts, sources, errors */

#define ID_START "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"

/* The template has no branch of its own on the dialect: the CUDA and OpenCL sources of a
 * reduction differ only in the dialect's prelude and name, and every conditional of
 * kernels/tiled.cl tests one of the KR_ macros the emitter and the backends define. */
START_TEST(test_template_shared)
{
	kred_context *ctx = open_ctx("cuda:sm_80", KRED_SCHEME_AUTO, NULL);
	const char *t = kred__kernel_tiled_cl;

	for (int k = 0; k < N_ROWS; k += 7) {
		kred_reduction *r = make_row(ctx, &rows[k]);
		const struct kred__tiled_shape sh = { 128, 1, 128, 1, 24576 };
		struct kred__layout l = { 0 };
		struct kred__error err;
		char *src[2];
		const struct kred_dialect *d[2] = { &kred__dialect_cuda, &kred__dialect_opencl };

		kred__error_clear(&err);
		ck_assert_int_eq(kred__layout_make(r, &l, &err), KRED_OK);
		for (int j = 0; j < 2; j++) {
			char *at, *nl;
			size_t n;

			ck_assert_int_eq(kred__tiled_source(d[j], r, &l, &sh, &src[j], &err),
					 KRED_OK);
			/* Drop the first line (it names the dialect) and the prelude. */
			nl = strchr(src[j], '\n');
			ck_assert_ptr_nonnull(nl);
			memmove(src[j], nl + 1, strlen(nl + 1) + 1);
			at = strstr(src[j], d[j]->prelude);
			ck_assert_ptr_nonnull(at);
			n = strlen(d[j]->prelude);
			memmove(at, at + n, strlen(at + n) + 1);
		}
		ck_assert_msg(!strcmp(src[0], src[1]), "row %d: the CUDA and OpenCL sources differ "
			      "beyond their preludes", k);
		kred__free(src[0]);
		kred__free(src[1]);
		kred__layout_free(&l);
		kred_reduction_destroy(r);
	}
	kred_context_destroy(ctx);
	for (const char *line = t, *next; *line; line = next) {
		size_t len = strcspn(line, "\n");
		const char *w = line + strspn(line, " \t");

		next = line + len + (line[len] == '\n');
		if (strncmp(w, "#if", 3) != 0 && strncmp(w, "#elif", 5) != 0)
			continue;
		/* Every identifier after the directive is a KR_ macro or defined. */
		w += strcspn(w, " \t\n");
		for (;;) {
			size_t n;

			w += strcspn(w, ID_START "\n");
			if (!*w || *w == '\n')
				break;
			n = strspn(w, ID_START "0123456789");
			ck_assert_msg(!strncmp(w, "KR_", 3) || (n == 7 && !memcmp(w, "defined", 7)),
				      "kernels/tiled.cl tests %.*s, which is not one of kred's KR_ "
				      "macros: %.*s", (int)n, w, (int)len, line);
			w += n;
		}
	}
}
END_TEST

START_TEST(test_compile_only)
{
	kred_context *ctx = open_ctx("cuda:sm_80", KRED_SCHEME_AUTO, NULL);
	kred_reduction *r = make_row(ctx, &rows[4]);
	const char *src = kred_reduction_source(r);
	float x[3] = { 0 }, y[3] = { 0 }, b[1] = { 0 }, g[1] = { 0 }, out[1];
	const void *args[] = { x, y, b, g };
	const uint64_t dargs[4] = { 1, 2, 3, 4 };
	int dev = 7;
	void *cuctx = &dev;

	ck_assert_str_eq(kred_context_backend(ctx), "cuda:compile-only:sm_80");
	ck_assert_ptr_nonnull(src);
	ck_assert_ptr_nonnull(strstr(src, "CUDA C dialect"));
	ck_assert_ptr_nonnull(strstr(src, "extern \"C\" __global__"));
	ck_assert_ptr_null(strstr(src, "__kernel"));
	ck_assert_int_eq(kred_reduction_run(r, 1, 1, args, out), KRED_EBACKEND);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "only compiles"));
	ck_assert_int_eq(kred_reduction_run_cuda(r, 1, 1, dargs, 5), KRED_EBACKEND);
	ck_assert_int_eq(kred_reduction_run_cuda_stream(r, 1, 1, dargs, 5, &dev), KRED_EBACKEND);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "only compiles"));
	ck_assert_int_eq(kred_context_cuda_handles(ctx, &dev, &cuctx), KRED_EBACKEND);
	ck_assert_int_eq(dev, -1);
	ck_assert_ptr_null(cuctx);
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);

	/* "cuda" without a GPU is compile-only too, and says why. */
	if (!have_gpu) {
		ctx = open_ctx("cuda", KRED_SCHEME_AUTO, NULL);
		ck_assert_msg(!strncmp(kred_context_backend(ctx), "cuda:compile-only (no GPU: ",
				       27), "%s", kred_context_backend(ctx));
		r = make_row(ctx, &rows[4]);
		ck_assert_int_eq(kred_reduction_run(r, 1, 1, args, out), KRED_EBACKEND);
		kred_reduction_destroy(r);
		kred_context_destroy(ctx);
	}
}
END_TEST

START_TEST(test_names)
{
	static const char *const bad[] = { "cuda:x", "cuda:sm_", "cuda:sm_9x", "cuda:-1",
					   "cuda:compute_" };
	kred_context_options o = { 0 };

	o.struct_size = sizeof(o);
	for (int k = 0; k < N(bad); k++) {
		kred_context *ctx = NULL;

		o.backend = bad[k];
		ck_assert_msg(kred_context_create(&o, &ctx) == KRED_EBACKEND, "%s", bad[k]);
		ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "no CUDA device"));
		kred_context_destroy(ctx);
	}
	/* A GPU that is not there. */
	{
		kred_context *ctx = NULL;

		o.backend = "cuda:63";
		ck_assert_int_eq(kred_context_create(&o, &ctx), KRED_EBACKEND);
		ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "no CUDA device 63"));
		kred_context_destroy(ctx);
	}
	/* auto takes CUDA exactly when there is a GPU. */
	{
		kred_context *ctx = NULL;
		char *report = NULL;

		o.backend = "auto";
		ck_assert_int_eq(kred_context_create(&o, &ctx), KRED_OK);
		ck_assert_int_eq(!strncmp(kred_context_backend(ctx), "cuda:", 5), have_gpu);
		kred_context_destroy(ctx);
		ck_assert_int_eq(kred_devices_report(&report), KRED_OK);
		ck_assert_ptr_nonnull(strstr(report, have_gpu ? "cuda: available" :
						      "cuda: not available ("));
		kred_free(report);
	}
}
END_TEST

/* The CUDA entry points on another backend's reductions, and bad arguments. */
START_TEST(test_not_cuda)
{
	kred_context *ctx = open_ctx("reference", KRED_SCHEME_AUTO, NULL);
	kred_reduction *r = make_row(ctx, &rows[4]);
	const uint64_t dargs[4] = { 1, 2, 3, 4 };
	char *ptx = (char *)1;

	ck_assert_int_eq(kred_reduction_ptx(r, "sm_80", &ptx), KRED_EBACKEND);
	ck_assert_ptr_null(ptx);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "cuda context"));
	ck_assert_int_eq(kred_reduction_run_cuda(r, 1, 1, dargs, 5), KRED_EBACKEND);
	ck_assert_int_eq(kred_context_cuda_handles(ctx, NULL, NULL), KRED_EBACKEND);
	ck_assert_int_eq(kred_reduction_ptx(NULL, "sm_80", &ptx), KRED_EINVAL);
	ck_assert_int_eq(kred_reduction_ptx(r, "sm_80", NULL), KRED_EINVAL);
	ck_assert_int_eq(kred_reduction_run_cuda(NULL, 1, 1, dargs, 5), KRED_EINVAL);
	ck_assert_int_eq(kred_context_cuda_handles(NULL, NULL, NULL), KRED_EINVAL);
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
}
END_TEST

/* kred_reduction_ptx's errors: architectures, and a build that fails with its log. */
START_TEST(test_ptx_errors)
{
	kred_context *ctx = open_ctx("cuda:sm_80", KRED_SCHEME_AUTO, NULL);
	kred_reduction *r = make_row(ctx, &rows[4]);
	char *ptx = NULL;

	ck_assert_int_eq(kred_reduction_ptx(r, "sm_8o", &ptx), KRED_EINVAL);
	ck_assert_int_eq(kred_reduction_ptx(r, "sm_10", &ptx), KRED_EUNSUPPORTED);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "not for sm_10"));
	ck_assert_ptr_null(ptx);
	/* Every spelling of one architecture gives the same PTX. */
	{
		char *a = NULL, *b = NULL, *c = NULL, *d = NULL;

		ck_assert_int_eq(kred_reduction_ptx(r, "sm_80", &a), KRED_OK);
		ck_assert_int_eq(kred_reduction_ptx(r, "compute_80", &b), KRED_OK);
		ck_assert_int_eq(kred_reduction_ptx(r, "80", &c), KRED_OK);
		ck_assert_int_eq(kred_reduction_ptx(r, NULL, &d), KRED_OK);
		ck_assert_str_eq(a, b);
		ck_assert_str_eq(a, c);
		ck_assert_str_eq(a, d);
		ck_assert_ptr_nonnull(strstr(a, ".target sm_80"));
		ck_assert_ptr_nonnull(strstr(a, ".entry kr_reduce("));
		ck_assert_ptr_nonnull(strstr(a, ".entry kr_merge_parts("));
		kred_free(a);
		kred_free(b);
		kred_free(c);
		kred_free(d);
	}
	/* A failing build: KRED_EBUILD, with NVRTC's log. */
	setenv("KRED_CUDA_OPTIONS", "--pre-include=/nonexistent/kred-test-cuda.h", 1);
	ck_assert_int_eq(kred_reduction_ptx(r, "sm_80", &ptx), KRED_EBUILD);
	ck_assert_ptr_nonnull(strstr(kred_error_log(ctx), "kred-test-cuda.h"));
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "build log"));
	unsetenv("KRED_CUDA_OPTIONS");
	ck_assert_int_eq(kred_reduction_ptx(r, "sm_80", &ptx), KRED_OK);
	kred_free(ptx);
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
}
END_TEST

/* Fast math is NVRTC's --use_fast_math: float32 arithmetic flushes subnormals (the .ftz
 * forms of PTX) and expf becomes __expf (no fused multiply-adds of the accurate
 * reduction), where the default has neither. */
START_TEST(test_fast_math_ptx)
{
	static const char *al[4] = { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" };
	kred_context *ctx = open_ctx("cuda:sm_80", KRED_SCHEME_AUTO, NULL);
	kred_reduction_options on = { sizeof(on), KRED_FAST_MATH_ON };
	kred_spec s = { 0 };
	kred_reduction *rd = NULL, *rf = NULL;
	char *pd = NULL, *pf = NULL;

	s.formula = "Exp(-G*SqDist(X,Y))*B";
	s.reduction = "Sum";
	s.aliases = al;
	s.n_aliases = 4;
	s.dtype = KRED_FLOAT32;
	ck_assert_int_eq(kred_reduction_create(ctx, &s, &rd), KRED_OK);
	ck_assert_int_eq(kred_reduction_create_ex(ctx, &s, &on, &rf), KRED_OK);
	ck_assert_int_eq(kred_reduction_fast_math(rf), 1);
	ck_assert_int_eq(kred_reduction_ptx(rd, "sm_80", &pd), KRED_OK);
	ck_assert_int_eq(kred_reduction_ptx(rf, "sm_80", &pf), KRED_OK);
	ck_assert_ptr_null(strstr(pd, "fma.rn.ftz.f32"));
	ck_assert_ptr_nonnull(strstr(pd, "fma.rn.f32"));
	ck_assert_ptr_nonnull(strstr(pf, "fma.rn.ftz.f32"));
	ck_assert_ptr_null(strstr(pf, "fma.rn.f32"));
	kred_free(pd);
	kred_free(pf);
	kred_reduction_destroy(rd);
	kred_reduction_destroy(rf);
	kred_context_destroy(ctx);
}
END_TEST

/* The targets a GPU gets, and the disk cache of compiled modules, through the internal
 * calls a GPU context makes (NVRTC's cubin included): no GPU needed. */
START_TEST(test_cache)
{
	kred_context *ctx = open_ctx("cuda:sm_80", KRED_SCHEME_AUTO, NULL);
	kred_reduction *r = make_row(ctx, &rows[4]);
	const char *src = kred_reduction_source(r);
	struct kred__cache cache = { 0 };
	struct kred__cu_target t;
	struct kred__error err;
	char dir[400], cmd[1000], file[800], *image = NULL;
	size_t len = 0;
	int hit = 0, newest = nv->archs[nv->n_archs - 1];
	FILE *p;

	kred__error_clear(&err);
	/* a GPU NVRTC knows: its cubin; a newer one: PTX; an older one: refused */
	ck_assert_int_eq(kred__cu_device_target(nv, newest, &t, &err), KRED_OK);
	ck_assert(t.cubin && t.arch == newest);
	ck_assert_int_eq(kred__cu_device_target(nv, newest + 1, &t, &err), KRED_OK);
	ck_assert(!t.cubin && t.arch == newest);
	ck_assert_int_eq(kred__cu_device_target(nv, nv->archs[0] - 1, &t, &err), KRED_EBACKEND);
	ck_assert_ptr_nonnull(strstr(err.msg, "KRED_NVRTC_LIBRARY"));

	snprintf(dir, sizeof(dir), "%s/kred-test-cuda-cache-XXXXXX", tmp_base());
	ck_assert_ptr_nonnull(mkdtemp(dir));
	cache.wanted = dir;
	t.arch = 80;
	t.cubin = 1;
	kred__error_clear(&err);
	ck_assert_int_eq(kred__cu_compile(nv, ctx, &cache, 1, 13000, src, &t, &image, &len, &hit,
					  &err), KRED_OK);
	/* an ELF image, published and sealed */
	ck_assert(!hit && len > 4 && !memcmp(image, "\177ELF", 4));
	kred__free(image);
	snprintf(cmd, sizeof(cmd), "ls '%s'/*.cubin", dir);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(fgets(file, sizeof(file), p));
	pclose(p);
	file[strcspn(file, "\n")] = 0;
	ck_assert_int_gt(kred__cache_check(file, 0), 0);
	/* found again; not with another driver version */
	ck_assert_int_eq(kred__cu_compile(nv, ctx, &cache, 1, 13000, src, &t, &image, &len, &hit,
					  &err), KRED_OK);
	ck_assert(hit && len > 4 && !memcmp(image, "\177ELF", 4));
	kred__free(image);
	ck_assert_int_eq(kred__cu_compile(nv, ctx, &cache, 1, 13010, src, &t, &image, &len, &hit,
					  &err), KRED_OK);
	ck_assert(!hit);
	kred__free(image);
	/* damaged: compiled again, and whole again */
	ck_assert_int_eq(truncate(file, 100), 0);
	ck_assert_int_eq(kred__cu_compile(nv, ctx, &cache, 1, 13000, src, &t, &image, &len, &hit,
					  &err), KRED_OK);
	ck_assert(!hit);
	kred__free(image);
	ck_assert_int_gt(kred__cache_check(file, 0), 0);
	/* PTX, for a GPU newer than NVRTC, is cached too, NUL-terminated */
	t.cubin = 0;
	ck_assert_int_eq(kred__cu_compile(nv, ctx, &cache, 1, 13000, src, &t, &image, &len, &hit,
					  &err), KRED_OK);
	kred__free(image);
	ck_assert_int_eq(kred__cu_compile(nv, ctx, &cache, 1, 13000, src, &t, &image, &len, &hit,
					  &err), KRED_OK);
	ck_assert(hit && image[len] == 0 && strstr(image, ".target sm_80"));
	kred__free(image);
	kred__cache_close(&cache);
	rm_rf(dir);
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
}
END_TEST

/* Every allocation of create, source and ptx made to fail in turn on a compile-only
 * context: each attempt fails cleanly or succeeds, and the last succeeds. */
START_TEST(test_alloc_sweep)
{
	const char *al[3] = { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)" };
	kred_spec s = { 0 };

	s.reduction = "LogSumExp";
	s.formula = "-SqDist(X,Y)*B";
	s.aliases = al;
	s.n_aliases = 3;
	for (long n = 1;; n++) {
		kred_context *ctx = open_ctx("cuda:sm_80", KRED_SCHEME_AUTO, NULL);
		kred_reduction *r = NULL;
		char *ptx = NULL;
		kred_status st;

		kred__test_alloc_fail(n, 0);
		st = kred_reduction_create(ctx, &s, &r);
		if (!st && !kred_reduction_source(r))
			st = kred__ctx_error(ctx)->status;
		if (!st && nv)
			st = kred_reduction_ptx(r, NULL, &ptx);
		kred__test_alloc_fail(0, 0);
		ck_assert_msg(st == KRED_OK || st == KRED_ENOMEM, "allocation %ld: %s: %s", n,
			      kred_status_name(st), kred_errmsg(ctx));
		kred_free(ptx);
		kred_reduction_destroy(r);
		kred_context_destroy(ctx);
		if (st == KRED_OK)
			break;
		ck_assert_int_lt(n, 100000);
	}
}
END_TEST

/* ---- the command */

static int run_cmd(const char *env, const char *args, char **out)
{
	const char *exe = getenv("KRED_EXE");
	char cmd[2048];
	char *argv[] = { "sh", "-c", cmd, NULL };

	ck_assert_msg(exe && *exe, "KRED_EXE is not set (tests/meson.build sets it)");
	snprintf(cmd, sizeof(cmd), "%s '%s' %s", env, exe, args);
	return kred__spawn(argv, out);
}

#define GAUSS_ARGS "'Exp(-G*SqDist(X,Y))*B' -a 'X=Vi(3)' -a 'Y=Vj(3)' -a 'B=Vj(1)' " \
		   "-a 'G=Pm(1)' -r Sum"

START_TEST(test_command)
{
	char *out = NULL, path[600];
	int rc;

	/* The source needs neither a GPU nor NVRTC. */
	rc = run_cmd("KRED_NVRTC_LIBRARY=none KRED_CUDA_LIBRARY=none", "source -b cuda " GAUSS_ARGS,
		     &out);
	ck_assert_msg(rc == 0, "%s", out);
	ck_assert_ptr_nonnull(strstr(out, "CUDA C dialect"));
	ck_assert_ptr_nonnull(strstr(out, "KR_KERNEL void kr_reduce("));
	free(out);
	/* devices says why, and auto goes elsewhere. */
	rc = run_cmd("KRED_NVRTC_LIBRARY=none KRED_CUDA_LIBRARY=none", "devices", &out);
	ck_assert_msg(rc == 0, "%s", out);
	ck_assert_msg(strstr(out, "cuda: not available (no CUDA driver (KRED_CUDA_LIBRARY=none: "
			     "disabled); no NVRTC (KRED_NVRTC_LIBRARY=none: disabled))\n") != NULL,
		      "%s", out);
	ck_assert_ptr_null(strstr(out, "auto: cuda"));
	free(out);
	/* compile without NVRTC */
	rc = run_cmd("KRED_NVRTC_LIBRARY=/nonexistent", "compile -b cuda --arch sm_80 " GAUSS_ARGS,
		     &out);
	ck_assert_int_eq(rc, 1);
	ck_assert_ptr_nonnull(strstr(out, "kred: error: cuda: NVRTC is not available: no NVRTC "
				     "(KRED_NVRTC_LIBRARY=/nonexistent"));
	free(out);
	/* usage */
	rc = run_cmd("", "run --arch sm_80 X -a 'X=Vi(1)' -r Sum -o x.npy", &out);
	ck_assert_int_eq(rc, 2);
	free(out);
	rc = run_cmd("", "compile -i X=x.npy X -a 'X=Vi(1)' -r Sum", &out);
	ck_assert_int_eq(rc, 2);
	free(out);
	if (!nv)
		return;
	/* compile, to stdout and to a file */
	rc = run_cmd("", "compile --arch sm_90 " GAUSS_ARGS, &out);
	ck_assert_msg(rc == 0, "%s", out);
	ck_assert_ptr_nonnull(strstr(out, ".target sm_90"));
	free(out);
	snprintf(path, sizeof(path), "%s/kred-test-cuda-%d.ptx", tmp_base(), (int)getpid());
	{
		char args[1024];
		struct stat sb;

		snprintf(args, sizeof(args), "compile -b cuda:sm_80 --dtype float32 -o '%s' %s",
			 path, GAUSS_ARGS);
		rc = run_cmd("", args, &out);
		ck_assert_msg(rc == 0, "%s", out);
		ck_assert_str_eq(out, "");
		free(out);
		ck_assert_int_eq(stat(path, &sb), 0);
		ck_assert_int_gt(sb.st_size, 1000);
		unlink(path);
	}
	/* the driver's stub: every entry point resolves, and cuInit says it is a stub */
	if (access("/usr/local/cuda/lib64/stubs/libcuda.so", R_OK) == 0) {
		rc = run_cmd("KRED_CUDA_LIBRARY=/usr/local/cuda/lib64/stubs/libcuda.so", "devices",
			     &out);
		ck_assert_msg(rc == 0, "%s", out);
		ck_assert_msg(strstr(out, "cuda: not available (cuInit: CUDA_ERROR_STUB_LIBRARY") !=
			      NULL, "%s", out);
		free(out);
	}
}
END_TEST

/* ---- on a GPU */

static const struct kred__cu_api *cu;

/* GPU memory holding bytes from host (0 for none), in ctx's primary context. */
static CUdeviceptr to_device(kred_context *ctx, const void *host, size_t bytes)
{
	void *c = NULL;
	CUcontext old;
	CUdeviceptr p = 0;
	char why[320];

	if (!cu)
		cu = kred__cu_load(why, sizeof(why));
	ck_assert_ptr_nonnull(cu);
	ck_assert_int_eq(kred_context_cuda_handles(ctx, NULL, &c), KRED_OK);
	ck_assert_int_eq(cu->CtxPushCurrent((CUcontext)c), CUDA_SUCCESS);
	ck_assert_int_eq(cu->MemAlloc(&p, bytes ? bytes : 1), CUDA_SUCCESS);
	if (host && bytes)
		ck_assert_int_eq(cu->MemcpyHtoD(p, host, bytes), CUDA_SUCCESS);
	cu->CtxPopCurrent(&old);
	return p;
}

static void from_device(kred_context *ctx, void *host, CUdeviceptr p, size_t bytes, int free_it)
{
	void *c = NULL;
	CUcontext old;

	ck_assert_int_eq(kred_context_cuda_handles(ctx, NULL, &c), KRED_OK);
	ck_assert_int_eq(cu->CtxPushCurrent((CUcontext)c), CUDA_SUCCESS);
	if (bytes)
		ck_assert_int_eq(cu->MemcpyDtoH(host, p, bytes), CUDA_SUCCESS);
	if (free_it)
		cu->MemFree(p);
	cu->CtxPopCurrent(&old);
}

/* Runs r (on host arrays, or on GPU memory with device set) and ref at (nx, ny) on the same
 * inputs; 0 when they agree within the row's tolerance, else 1 with msg. */
static int run_pair(kred_reduction *r, kred_reduction *ref, const struct input *in,
		    kred_dtype dt, double rtol, double atol, int64_t nx,
		    int64_t ny, uint64_t seed, int device, char *msg, size_t len)
{
	int n = kred_reduction_n_args(r), od = kred_reduction_out_dim(r);
	/* The rows of r's own output: a gradient reduces over the axis of its variable
	 * (nx rows for a Vi one, whatever the forward reduction's axis), and a parameter's
	 * gradient is one row. The forward axis sized this buffer once, and host-array runs
	 * of an axis-i reduction's Vi gradient wrote past it. */
	int64_t rows_out = r->pm_sum ? 1 : r->axis == KRED_REDUCE_J ? nx : ny;
	size_t size = dt == KRED_FLOAT64 ? 8 : 4, count = (size_t)rows_out * (size_t)od;
	void *args[16] = { 0 }, *got, *want;
	uint64_t dargs[16] = { 0 }, dout = 0;
	kred_status s;
	int bad;

	ck_assert_int_le(n, 16);
	for (int p = 0; p < n; p++) {
		int cat, dim;
		size_t c;

		ck_assert_int_eq(kred_reduction_arg(r, p, &cat, &dim, NULL), KRED_OK);
		c = (size_t)dim * (size_t)(cat == 0 ? nx : cat == 1 ? ny : 1);
		args[p] = make_input(in, c, dt, seed * 31 + (uint64_t)p);
		if (device)
			dargs[p] = to_device(r->ctx, args[p], c * size);
	}
	got = malloc(count * size + 1);
	want = malloc(count * size + 1);
	ck_assert(got && want);
	memset(got, 0xff, count * size);
	s = kred_reduction_run(ref, nx, ny, (const void *const *)args, want);
	ck_assert_msg(s == KRED_OK, "reference: %s", kred_status_name(s));
	if (device) {
		dout = to_device(r->ctx, got, count * size);
		s = kred_reduction_run_cuda(r, nx, ny, dargs, dout);
		ck_assert_msg(s == KRED_OK, "cuda, device memory: %s: %s", kred_status_name(s),
			      kred_errmsg(r->ctx));
		from_device(r->ctx, got, dout, count * size, 1);
		for (int p = 0; p < n; p++)
			from_device(r->ctx, NULL, dargs[p], 0, 1);
	} else {
		s = kred_reduction_run(r, nx, ny, (const void *const *)args, got);
		ck_assert_msg(s == KRED_OK, "cuda: %s: %s", kred_status_name(s),
			      kred_errmsg(r->ctx));
	}
	bad = compare(got, want, count, od, dt, rtol, atol, msg, len);
	for (int p = 0; p < n; p++)
		free(args[p]);
	free(got);
	free(want);
	return bad;
}

/* Conformance row _i / 3 on host arrays in the 1D and 2D schemes, and on device memory in
 * the auto scheme. */
START_TEST(test_run_row)
{
	const struct row *row = &rows[_i / 3];
	int mode = _i % 3;
	kred_context *ctx = open_ctx("cuda", mode == 0 ? KRED_SCHEME_1D : mode == 1 ? KRED_SCHEME_2D
									: KRED_SCHEME_AUTO, NULL);
	kred_context *rctx = open_ctx("reference", KRED_SCHEME_AUTO, NULL);
	kred_reduction *r = make_row(ctx, row), *ref = make_row(rctx, row);
	char msg[512];

	for (int k = 0; k < 6 && row->sizes[k][0] >= 0; k++) {
		int64_t nx = row->sizes[k][0], ny = row->sizes[k][1];

		if (run_pair(r, ref, &row->in, row->dtype, row->rtol, row->atol, nx, ny,
			     (uint64_t)_i * 7 + (uint64_t)k, mode == 2, msg, sizeof(msg)))
			ck_abort_msg("%s [%s], axis %s, %s, %s, nx = %lld, ny = %lld: %s",
				     row->formula, row->reduction,
				     row->axis == KRED_REDUCE_J ? "j" : "i",
				     row->dtype == KRED_FLOAT64 ? "float64" : "float32",
				     mode == 2 ? "device memory, auto" : mode ? "2D" : "1D",
				     (long long)nx, (long long)ny, msg);
	}
	kred_reduction_destroy(r);
	kred_reduction_destroy(ref);
	kred_context_destroy(ctx);
	kred_context_destroy(rctx);
}
END_TEST

START_TEST(test_run_special)
{
	const struct special *sp = &specials[_i / 2];
	kred_dtype dt = _i % 2 ? KRED_FLOAT64 : KRED_FLOAT32;
	kred_context *ctx = open_ctx("cuda", KRED_SCHEME_AUTO, NULL);
	kred_context *rctx = open_ctx("reference", KRED_SCHEME_AUTO, NULL);
	kred_reduction *r = make(ctx, sp->formula, sp->weight, sp->reduction, XY1, ';', J, dt,
				 sp->scheme);
	kred_reduction *ref = make(rctx, sp->formula, sp->weight, sp->reduction, XY1, ';', J, dt,
				   sp->scheme);
	int od = kred_reduction_out_dim(r);
	double xd[3], yd[5], gd[64], wd[64];
	float xf[3], yf[5], gf[64], wf[64];
	const void *args[2];
	char msg[512];

	ck_assert_int_le(3 * od, 64);
	for (int k = 0; k < 3; k++)
		xf[k] = (float)(xd[k] = sp->x[k]);
	for (int k = 0; k < 5; k++)
		yf[k] = (float)(yd[k] = sp->y[k]);
	args[0] = dt == KRED_FLOAT64 ? (const void *)xd : (const void *)xf;
	args[1] = dt == KRED_FLOAT64 ? (const void *)yd : (const void *)yf;
	ck_assert_int_eq(kred_reduction_run(ref, 3, sp->ny, args,
					    dt == KRED_FLOAT64 ? (void *)wd : (void *)wf), KRED_OK);
	ck_assert_int_eq(kred_reduction_run(r, 3, sp->ny, args,
					    dt == KRED_FLOAT64 ? (void *)gd : (void *)gf), KRED_OK);
	if (compare(dt == KRED_FLOAT64 ? (void *)gd : (void *)gf,
		    dt == KRED_FLOAT64 ? (void *)wd : (void *)wf, (size_t)(3 * od), od, dt, 1e-6,
		    1e-6, msg, sizeof(msg)))
		ck_abort_msg("%s, %s, %s: %s", sp->formula, sp->reduction,
			     dt == KRED_FLOAT64 ? "float64" : "float32", msg);
	kred_reduction_destroy(r);
	kred_reduction_destroy(ref);
	kred_context_destroy(ctx);
	kred_context_destroy(rctx);
}
END_TEST

/* The gradients of red_rows[_i / 2] with respect to X, Y and P (a parameter: the row sum
 * on the GPU), on host arrays and (odd _i) on device memory, against the reference. */
START_TEST(test_run_grad)
{
	static const char *const vars[] = { "X", "Y", "P" };
	const struct red_row *row = &red_rows[_i / 2];
	kred_context *ctx = open_ctx("cuda", KRED_SCHEME_AUTO, NULL);
	kred_context *rctx = open_ctx("reference", KRED_SCHEME_AUTO, NULL);
	kred_reduction *r = make(ctx, row->formula, row->weight, row->reduction, red_aliases, ' ',
				 row->axis, KRED_FLOAT64, KRED_SUM_DEFAULT);
	kred_reduction *ref = make(rctx, row->formula, row->weight, row->reduction, red_aliases,
				   ' ', row->axis, KRED_FLOAT64, KRED_SUM_DEFAULT);
	const struct input in = IN_UNIT;
	char msg[512];

	for (int v = 0; v < N(vars); v++) {
		kred_reduction *g = NULL, *gref = NULL;

		ck_assert_int_eq(kred_reduction_grad(r, vars[v], &g), KRED_OK);
		ck_assert_int_eq(kred_reduction_grad(ref, vars[v], &gref), KRED_OK);
		/* The cotangent and forward output are inputs like the others here. */
		if (run_pair(g, gref, &in, KRED_FLOAT64, 1e-9, 1e-12, 37, 300,
			     (uint64_t)_i, _i % 2, msg, sizeof(msg)))
			ck_abort_msg("%s axis %c, d/d%s%s: %s", row->reduction,
				     row->axis == KRED_REDUCE_J ? 'j' : 'i', vars[v],
				     _i % 2 ? ", device memory" : "", msg);
		kred_reduction_destroy(g);
		kred_reduction_destroy(gref);
	}
	kred_reduction_destroy(r);
	kred_reduction_destroy(ref);
	kred_context_destroy(ctx);
	kred_context_destroy(rctx);
}
END_TEST

/* kred_reduction_run_cuda_stream on a non-blocking stream (which the legacy default
 * stream does not wait for), with every buffer from cuMemAllocAsync on that stream and
 * filled by copies queued there: kred's work must come after the copies and be done when
 * the call returns. Against the reference on the same inputs; then a second run on the
 * same stream into the same output, with the inputs changed by a copy queued just
 * before it. The stream calls are the driver's own (dlsym), not kred's loader, which
 * needs none of them. */
START_TEST(test_run_stream)
{
	typedef int (*stream_create_fn)(CUstream *, unsigned);
	typedef int (*stream_fn)(CUstream);
	typedef int (*alloc_async_fn)(CUdeviceptr *, size_t, CUstream);
	typedef int (*free_async_fn)(CUdeviceptr, CUstream);
	enum { NX = 1000, NY = 3000 };
	void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	kred_context *ctx = open_ctx("cuda", KRED_SCHEME_AUTO, NULL);
	kred_context *rctx = open_ctx("reference", KRED_SCHEME_AUTO, NULL);
	kred_reduction *r = make_row(ctx, &rows[4]), *ref = make_row(rctx, &rows[4]);
	static float x[NX * 3], y[NY * 3], b[NY], out[NX], want[NX];
	float g = 0.5f;
	const void *args[4] = { x, y, b, &g };
	const size_t bytes[4] = { sizeof(x), sizeof(y), sizeof(b), sizeof(g) };
	uint64_t d[4], dout;
	CUdeviceptr p;
	CUstream s = NULL;
	CUcontext c = NULL, old;
	stream_create_fn create;
	stream_fn sync, destroy;
	alloc_async_fn alloc;
	free_async_fn release;
	char msg[512];

	ck_assert_msg(lib, "%s", dlerror());
	*(void **)&create = dlsym(lib, "cuStreamCreate");
	*(void **)&sync = dlsym(lib, "cuStreamSynchronize");
	*(void **)&destroy = dlsym(lib, "cuStreamDestroy_v2");
	*(void **)&alloc = dlsym(lib, "cuMemAllocAsync");
	*(void **)&release = dlsym(lib, "cuMemFreeAsync");
	ck_assert(create && sync && destroy && alloc && release);
	if (!cu) {
		char why[320];

		cu = kred__cu_load(why, sizeof(why));
		ck_assert_ptr_nonnull(cu);
	}
	lcg_state = 5;
	for (int k = 0; k < NX * 3; k++)
		x[k] = (float)uniform();
	for (int k = 0; k < NY * 3; k++)
		y[k] = (float)uniform();
	for (int k = 0; k < NY; k++)
		b[k] = (float)uniform();
	ck_assert_int_eq(kred_context_cuda_handles(ctx, NULL, (void **)&c), KRED_OK);
	ck_assert_int_eq(cu->CtxPushCurrent(c), CUDA_SUCCESS);
	ck_assert_int_eq(create(&s, 1 /* CU_STREAM_NON_BLOCKING */), CUDA_SUCCESS);
	for (int k = 0; k < 4; k++) {
		ck_assert_int_eq(alloc(&p, bytes[k], s), CUDA_SUCCESS);
		ck_assert_int_eq(cu->MemcpyHtoDAsync(p, args[k], bytes[k], s), CUDA_SUCCESS);
		d[k] = p;
	}
	ck_assert_int_eq(alloc(&p, sizeof(out), s), CUDA_SUCCESS);
	dout = p;
	cu->CtxPopCurrent(&old);
	for (int pass = 0; pass < 2; pass++) {
		ck_assert_msg(kred_reduction_run_cuda_stream(r, NX, NY, d, dout, s) == KRED_OK, "%s",
			      kred_errmsg(ctx));
		ck_assert_int_eq(kred_reduction_run(ref, NX, NY, args, want), KRED_OK);
		/* Done on return: read it on the legacy default stream, which does not wait
		 * for s. */
		ck_assert_int_eq(cu->CtxPushCurrent(c), CUDA_SUCCESS);
		ck_assert_int_eq(cu->MemcpyDtoH(out, (CUdeviceptr)dout, sizeof(out)), CUDA_SUCCESS);
		if (pass == 0) {
			for (int k = 0; k < NY; k++)
				b[k] = -b[k] * 0.5f;
			ck_assert_int_eq(cu->MemcpyHtoDAsync((CUdeviceptr)d[2], b, sizeof(b), s),
					 CUDA_SUCCESS);
		}
		cu->CtxPopCurrent(&old);
		if (compare(out, want, NX, 1, KRED_FLOAT32, 1e-5, 1e-6, msg, sizeof(msg)))
			ck_abort_msg("pass %d on a non-blocking stream: %s", pass, msg);
	}
	ck_assert_int_eq(cu->CtxPushCurrent(c), CUDA_SUCCESS);
	for (int k = 0; k < 4; k++)
		release((CUdeviceptr)d[k], s);
	release((CUdeviceptr)dout, s);
	ck_assert_int_eq(sync(s), CUDA_SUCCESS);
	destroy(s);
	cu->CtxPopCurrent(&old);
	kred_reduction_destroy(r);
	kred_reduction_destroy(ref);
	kred_context_destroy(ctx);
	kred_context_destroy(rctx);
	dlclose(lib);
}
END_TEST

/* Device memory that is too small, or not device memory, is refused. */
START_TEST(test_run_pointers)
{
	kred_context *ctx = open_ctx("cuda", KRED_SCHEME_AUTO, NULL);
	kred_reduction *r = make_row(ctx, &rows[4]); /* X Vi(3), Y Vj(3), B Vj(1), G Pm(1) */
	float host[64] = { 0 };
	uint64_t d[4], out;

	d[0] = to_device(ctx, host, 10 * 3 * 4);
	d[1] = to_device(ctx, host, 10 * 3 * 4);
	d[2] = to_device(ctx, host, 10 * 4);
	d[3] = to_device(ctx, host, 4);
	out = to_device(ctx, NULL, 10 * 4);
	ck_assert_int_eq(kred_reduction_run_cuda(r, 10, 10, d, out), KRED_OK);
	ck_assert_int_eq(kred_reduction_run_cuda(r, 11, 10, d, out), KRED_EINVAL);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "argument 0"));
	ck_assert_int_eq(kred_reduction_run_cuda(r, 10, 10, d, (uint64_t)(uintptr_t)host),
			 KRED_EINVAL);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "not device memory"));
	ck_assert_int_eq(kred_reduction_run_cuda(r, 10, 10, NULL, out), KRED_EINVAL);
	/* an offset into an allocation is fine while it fits */
	{
		const uint64_t off[4] = { d[0] + 60, d[1], d[2], d[3] };

		ck_assert_int_eq(kred_reduction_run_cuda(r, 5, 10, off, out), KRED_OK);
	}
	for (int k = 0; k < 4; k++)
		from_device(ctx, NULL, d[k], 0, 1);
	from_device(ctx, NULL, out, 0, 1);
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
}
END_TEST

/* The disk cache: a second context loads the module, a damaged one is rebuilt. */
START_TEST(test_run_cache)
{
	char dir[400], cmd[1000], file[800];
	kred_context *ctx;
	kred_reduction *r;
	FILE *p;

	snprintf(dir, sizeof(dir), "%s/kred-test-cuda-cache-XXXXXX", tmp_base());
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ctx = open_ctx("cuda", KRED_SCHEME_AUTO, dir);
	r = make_row(ctx, &rows[4]);
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
	snprintf(cmd, sizeof(cmd), "ls '%s'/*.cubin '%s'/*.ptx 2>/dev/null | head -n 1", dir, dir);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(fgets(file, sizeof(file), p));
	pclose(p);
	file[strcspn(file, "\n")] = 0;
	ck_assert_int_gt(kred__cache_check(file, 0), 0);
	ck_assert_int_eq(truncate(file, 100), 0);
	ctx = open_ctx("cuda", KRED_SCHEME_AUTO, dir);
	r = make_row(ctx, &rows[4]);
	{
		float x[30] = { 0 }, y[30] = { 0 }, b[10] = { 0 }, g[1] = { 1 }, out[10];
		const void *args[] = { x, y, b, g };

		ck_assert_int_eq(kred_reduction_run(r, 10, 10, args, out), KRED_OK);
	}
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
	ck_assert_int_gt(kred__cache_check(file, 0), 0);
	rm_rf(dir);
}
END_TEST

/* ---- setup */

/* Whether "cuda" opens a GPU, asked in a child: a process that initialises CUDA cannot
 * use it in the children Check forks for each test. */
static void probe_gpu(void)
{
	int fd[2];
	pid_t pid;
	ssize_t n;

	gpu_why[0] = 0;
	if (pipe(fd) != 0)
		return;
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		kred_context_options o = { 0 };
		kred_context *ctx = NULL;
		char line[600];

		close(fd[0]);
		o.struct_size = sizeof(o);
		o.backend = "cuda";
		if (kred_context_create(&o, &ctx) != KRED_OK)
			snprintf(line, sizeof(line), "0%s", kred_errmsg(ctx));
		else if (!strncmp(kred_context_backend(ctx), "cuda:compile-only", 17))
			snprintf(line, sizeof(line), "0%s", kred_context_backend(ctx) + 27);
		else
			snprintf(line, sizeof(line), "1%s", kred_context_backend(ctx));
		if (write(fd[1], line, strlen(line)) < 0)
			_exit(1);
		_exit(0);
	}
	close(fd[1]);
	n = pid > 0 ? read(fd[0], gpu_why, sizeof(gpu_why) - 1) : -1;
	close(fd[0]);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	if (n <= 0) {
		snprintf(gpu_why, sizeof(gpu_why), "0the probe failed");
		n = (ssize_t)strlen(gpu_why);
	}
	gpu_why[n] = 0;
	have_gpu = gpu_why[0] == '1';
	memmove(gpu_why, gpu_why + 1, strlen(gpu_why));
	/* "(no GPU: why)" of the context's name, without its parentheses */
	n = (ssize_t)strlen(gpu_why);
	if (!have_gpu && n > 0 && gpu_why[n - 1] == ')')
		gpu_why[n - 1] = 0;
}

static void find_ptxas(void)
{
	const char *env = getenv("KRED_PTXAS");
	char *out = NULL;

	if (env && *env) {
		snprintf(ptxas, sizeof(ptxas), "%s", env);
	} else if (access("/usr/local/cuda/bin/ptxas", X_OK) == 0) {
		snprintf(ptxas, sizeof(ptxas), "/usr/local/cuda/bin/ptxas");
	} else {
		snprintf(ptxas, sizeof(ptxas), "ptxas");
	}
	{
		char *argv[] = { ptxas, "--version", NULL };

		if (kred__spawn(argv, &out) != 0) {
			snprintf(ptxas_why, sizeof(ptxas_why), "%s --version: %s", ptxas,
				 out ? out : "cannot run");
			ptxas[0] = 0;
		}
		free(out);
	}
}

static void parse_archs(void)
{
	const char *env = getenv("KRED_TEST_CUDA_ARCHS");
	char buf[256], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", env && *env ? env : "70 80 90");
	for (char *w = strtok_r(buf, " ,", &save); w && n_archs < MAX_ARCHS;
	     w = strtok_r(NULL, " ,", &save)) {
		int a = atoi(strncmp(w, "sm_", 3) ? w : w + 3);

		if (a >= 10)
			archs[n_archs++] = a;
	}
}

/* --no-toolkit: as on a machine without the CUDA toolkit (NVRTC cannot be opened). */
int main(int argc, char **argv)
{
	const char *env = getenv("KRED_TEST_JOBS");
	int n_run, failed, ran;
	Suite *s;
	TCase *tc;
	SRunner *sr;

	if (argc > 1 && !strcmp(argv[1], "--no-toolkit")) {
		setenv("KRED_NVRTC_LIBRARY", "/nonexistent", 1);
	}
	jobs = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (env && atoi(env) > 0)
		jobs = atoi(env);
	jobs = jobs < 1 ? 1 : jobs > 16 ? 16 : jobs;
	env = getenv("KRED_TEST_CUDA_STRIDE");
	if (env && atoi(env) > 0)
		stride = atoi(env);
	parse_archs();
	nv = kred__nvrtc_load(nv_why, sizeof(nv_why));
	find_ptxas();
	probe_gpu();

	s = suite_create("cuda");
	tc = tcase_create("compile-only");
	tcase_add_test(tc, test_template_shared);
	tcase_add_test(tc, test_compile_only);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_not_cuda);
	tcase_add_test(tc, test_alloc_sweep);
	tcase_add_test(tc, test_command);
	if (nv) {
		tcase_add_test(tc, test_ptx_errors);
		tcase_add_test(tc, test_fast_math_ptx);
		tcase_add_test(tc, test_cache);
	}
	suite_add_tcase(s, tc);
	if (nv) {
		tc = tcase_create("nvrtc");
		tcase_set_timeout(tc, 1800);
		tcase_add_loop_test(tc, test_compile_arch, 0, n_archs);
		suite_add_tcase(s, tc);
	}
	n_run = 3 * N_ROWS + 2 * N_SPECIALS + 2 * N(red_rows) + 3;
	if (have_gpu) {
		tc = tcase_create("gpu");
		tcase_set_timeout(tc, 1800);
		tcase_add_loop_test(tc, test_run_row, 0, 3 * N_ROWS);
		tcase_add_loop_test(tc, test_run_special, 0, 2 * N_SPECIALS);
		tcase_add_loop_test(tc, test_run_grad, 0, 2 * N(red_rows));
		tcase_add_test(tc, test_run_pointers);
		tcase_add_test(tc, test_run_stream);
		tcase_add_test(tc, test_run_cache);
		suite_add_tcase(s, tc);
	}
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	ran = srunner_ntests_run(sr);
	srunner_free(sr);

	if (!nv)
		printf("skipped: %d CUDA compile tests (no NVRTC: %s)\n", 2 + n_archs, nv_why);
	else if (!ptxas[0])
		printf("skipped: assembling the PTX (no ptxas: %s)\n", ptxas_why);
	if (have_gpu)
		printf("ran: %d CUDA run tests on %s\n", n_run, gpu_why);
	else
		printf("skipped: %d CUDA run tests (no CUDA device: %s)\n", n_run, gpu_why);
	if (failed)
		return 1;
	return ran ? 0 : 77;
}
