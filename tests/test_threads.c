/* Threads sharing one context (kred.h, "Threads"): eight threads each create, run and
 * destroy their own reductions on one context at once, against the same reductions run
 * one at a time; each thread's errors are its own. Run on the backend argv[1] names
 * (default host), and in the ThreadSanitizer build (setup.sh), where it must be clean. */
#include <check.h>
#include <dirent.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kred.h"
#include "probe.h"

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define N_THREADS 8
#define NX 300
#define NY 500
#define ROUNDS 6

static const char *backend = "host";

static const char *const aliases[] = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)" };

/* One reduction per thread, each of another kind; the gradient row is made with
 * kred_reduction_grad. Two threads share a formula, so that one module serves both. */
static const struct job {
	const char *formula, *weight, *reduction, *grad;
} jobs[N_THREADS] = {
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", NULL },
	{ "-G*SqDist(X,Y)", NULL, "LogSumExp", NULL },
	{ "SqDist(X,Y)", NULL, "ArgKMin(3)", NULL },
	{ "SqDist(X,Y)*G", NULL, "KMin(2)", NULL },
	{ "(X|Y)", NULL, "Max_SumShiftExp", NULL },
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", "X" },
	{ "-SqDist(X,Y)", "B", "SumSoftMaxWeight", NULL },
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", NULL },
};

static double x[NX * 3], y[NY * 3], b[NY * 2], g = 0.7, cot[NX * 3];

static kred_context *open_ctx(const char *name)
{
	kred_context_options o = { 0 };
	kred_context *c = NULL;

	o.struct_size = sizeof(o);
	o.backend = name;
	ck_assert_msg(kred_context_create(&o, &c) == KRED_OK, "%s: %s", name, kred_errmsg(c));
	return c;
}

/* The job's reduction on ctx (its gradient for a grad row); NULL and why in msg. */
static kred_reduction *make(kred_context *ctx, const struct job *j, char *msg, size_t len)
{
	kred_spec s = { 0 };
	kred_reduction *r = NULL, *d = NULL;

	s.formula = j->formula;
	s.weight = j->weight;
	s.aliases = aliases;
	s.n_aliases = N(aliases);
	s.reduction = j->reduction;
	s.dtype = KRED_FLOAT64;
	if (kred_reduction_create(ctx, &s, &r)) {
		snprintf(msg, len, "create %s: %s", j->formula, kred_errmsg(ctx));
		return NULL;
	}
	if (!j->grad)
		return r;
	if (kred_reduction_grad(r, j->grad, &d))
		snprintf(msg, len, "grad %s: %s", j->formula, kred_errmsg(ctx));
	kred_reduction_destroy(r);
	return d;
}

/* Runs r on the shared inputs (plus the cotangent for a gradient); 0 or -1 with msg. */
static int run(kred_reduction *r, kred_context *ctx, double *out, char *msg, size_t len)
{
	const void *args[] = { x, y, b, &g, cot };

	if (kred_reduction_run(r, NX, NY, args, out)) {
		snprintf(msg, len, "run: %s", kred_errmsg(ctx));
		return -1;
	}
	return 0;
}

static size_t out_len(const kred_reduction *r)
{
	return (size_t)NX * (size_t)kred_reduction_out_dim(r);
}

struct worker {
	pthread_t t;
	int k;
	kred_context *ctx;
	const double *want;
	char msg[600];
};

static void *work(void *arg)
{
	struct worker *w = arg;
	const struct job *j = &jobs[w->k];
	char formula[64];
	double *got = NULL;

	w->msg[0] = 0;
	for (int round = 0; round < ROUNDS && !w->msg[0]; round++) {
		kred_reduction *r = make(w->ctx, j, w->msg, sizeof(w->msg)), *bad = NULL;
		kred_spec s = { 0 };
		size_t n;

		if (!r)
			break;
		/* an error of this thread's own, while the others succeed */
		snprintf(formula, sizeof(formula), "Exp(X * %d.25", w->k + 100 * round);
		s.formula = formula;
		s.aliases = aliases;
		s.n_aliases = N(aliases);
		s.reduction = "Sum";
		if (kred_reduction_create(w->ctx, &s, &bad) != KRED_ESYNTAX ||
		    !strstr(kred_errmsg(w->ctx), formula) ||
		    kred_error_offset(w->ctx) != (long)strlen(formula)) {
			snprintf(w->msg, sizeof(w->msg), "thread %d: its own error reads '%s' "
				 "(offset %ld)", w->k, kred_errmsg(w->ctx),
				 kred_error_offset(w->ctx));
			kred_reduction_destroy(r);
			break;
		}
		n = out_len(r);
		got = realloc(got, n * sizeof(*got));
		if (!got || run(r, w->ctx, got, w->msg, sizeof(w->msg)) == 0) {
			if (kred_errmsg(w->ctx)[0])
				snprintf(w->msg, sizeof(w->msg), "thread %d: a run that worked "
					 "left the error '%s'", w->k, kred_errmsg(w->ctx));
			for (size_t i = 0; got && i < n && !w->msg[0]; i++)
				if (!(got[i] == w->want[i] ||
				      fabs(got[i] - w->want[i]) <= 1e-12 * (1 + fabs(w->want[i]))))
					snprintf(w->msg, sizeof(w->msg), "thread %d (%s %s), round "
						 "%d, value %zu: %.17g, alone %.17g", w->k,
						 j->reduction, j->formula, round, i, got[i],
						 w->want[i]);
		}
		kred_reduction_destroy(r);
	}
	free(got);
	return NULL;
}

/* Each job alone on its own context first; then all at once on one context. */
START_TEST(test_shared_context)
{
	static double *want[N_THREADS];
	struct worker w[N_THREADS];
	kred_context *ctx;
	uint64_t s = 7;

	for (int i = 0; i < N(x); i++, s = s * 6364136223846793005ull + 1442695040888963407ull)
		x[i] = (double)(s >> 11) / 9007199254740992.0 * 2 - 1;
	for (int i = 0; i < N(y); i++, s = s * 6364136223846793005ull + 1442695040888963407ull)
		y[i] = (double)(s >> 11) / 9007199254740992.0 * 2 - 1;
	for (int i = 0; i < N(b); i++, s = s * 6364136223846793005ull + 1442695040888963407ull)
		b[i] = (double)(s >> 11) / 9007199254740992.0 * 2 - 1;
	for (int i = 0; i < N(cot); i++)
		cot[i] = 1 + 0.25 * (i % 4);
	for (int k = 0; k < N_THREADS; k++) {
		kred_context *alone = open_ctx(backend);
		char msg[600] = "";
		kred_reduction *r = make(alone, &jobs[k], msg, sizeof(msg));

		ck_assert_msg(r, "%s", msg);
		want[k] = malloc(out_len(r) * sizeof(double));
		ck_assert_ptr_nonnull(want[k]);
		ck_assert_msg(run(r, alone, want[k], msg, sizeof(msg)) == 0, "%s", msg);
		kred_reduction_destroy(r);
		kred_context_destroy(alone);
	}
	ctx = open_ctx(backend);
	for (int k = 0; k < N_THREADS; k++) {
		w[k].k = k;
		w[k].ctx = ctx;
		w[k].want = want[k];
		ck_assert_int_eq(pthread_create(&w[k].t, NULL, work, &w[k]), 0);
	}
	for (int k = 0; k < N_THREADS; k++)
		ck_assert_int_eq(pthread_join(w[k].t, NULL), 0);
	for (int k = 0; k < N_THREADS; k++) {
		ck_assert_msg(!w[k].msg[0], "%s", w[k].msg);
		free(want[k]);
	}
	/* the main thread made no error on ctx: the threads' errors are theirs */
	ck_assert_str_eq(kred_errmsg(ctx), "");
	kred_context_destroy(ctx);
}
END_TEST

/* Threads of this process, from /proc/self/task. */
static int task_count(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* The host backend's runs use the context's thread count, whatever omp_set_num_threads
 * said in the process (importing PyTorch sets it to the physical cores, 1 on a machine of
 * two hyper-threads, which halved kred's speed there): with the process's count set to 1
 * first, a run on a context of 3 threads starts OpenMP's 2 workers. A negative count is
 * KRED_EINVAL. */
START_TEST(test_openmp_threads)
{
	void *gomp = dlopen("libgomp.so.1", RTLD_NOW | RTLD_GLOBAL);
	kred_context_options o = { 0 };
	kred_context *c = NULL;
	kred_reduction *r = NULL;
	kred_spec s = { 0 };
	static double out[NX * 2];
	const void *args[4] = { x, y, b, &g };
	void (*set_threads)(int);
	int before, after;

	ck_assert_msg(gomp, "libgomp.so.1: %s", dlerror());
	*(void **)&set_threads = dlsym(gomp, "omp_set_num_threads");
	ck_assert_ptr_nonnull(set_threads);
	set_threads(1);
	o.struct_size = sizeof(o);
	o.backend = "host";
	o.threads = -1;
	ck_assert_int_eq(kred_context_create(&o, &c), KRED_EINVAL);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(c), "threads -1"));
	kred_context_destroy(c);
	o.threads = 3;
	ck_assert_int_eq(kred_context_create(&o, &c), KRED_OK);
	s.formula = jobs[0].formula;
	s.reduction = jobs[0].reduction;
	s.aliases = aliases;
	s.n_aliases = 4;
	s.dtype = KRED_FLOAT64;
	ck_assert_msg(kred_reduction_create(c, &s, &r) == KRED_OK, "%s", kred_errmsg(c));
	before = task_count();
	ck_assert_int_eq(kred_reduction_run(r, NX, NY, args, out), KRED_OK); /* 150,000 pairs */
	after = task_count();
	ck_assert_msg(after - before >= 2, "%d threads before the run, %d after: the run did "
		      "not use the context's 3", before, after);
	kred_reduction_destroy(r);
	kred_context_destroy(c);
	dlclose(gomp);
}
END_TEST

int main(int argc, char **argv)
{
	Suite *s = suite_create("threads");
	TCase *tc = tcase_create("shared context");
	SRunner *sr;
	int failed;

	if (argc > 1 && argv[1][0])
		backend = argv[1];
	{
		int rc = probe_or_skip(backend);

		if (rc)
			return rc < 0 ? 0 : rc;
	}
	tcase_add_test(tc, test_shared_context);
	if (!strcmp(backend, "host"))
		tcase_add_test(tc, test_openmp_threads);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
