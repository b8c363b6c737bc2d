/* kred_reduction_run_comm over ranks that are threads of this process, joined by a
 * kred_comm made of barriers and shared slots: the ring, its merges, the auxiliary
 * reductions of gradients, the row sums of parameter gradients and the agreement on
 * errors, checked against one run on the whole data. (The MPI library, lib/mpi, runs
 * the same function under mpirun in tests/test_mpi.c.) */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_RANKS 4

/* ---- the threads' kred_comm */

struct world {
	int size;
	pthread_barrier_t bar;
	int64_t i64[MAX_RANKS];
	int i32[MAX_RANKS];
	double *f64[MAX_RANKS];
	const void *send[MAX_RANKS];
	size_t send_bytes[MAX_RANKS];
	int fail_shift; /* a test hook: shift_start fails on rank fail_shift - 1 */
};

struct member {
	struct world *w;
	int rank;
	void *recv;
	size_t recv_bytes;
	int progress_calls;
};

static int t_allgather(void *data, int64_t mine, int64_t *all)
{
	struct member *m = data;

	m->w->i64[m->rank] = mine;
	pthread_barrier_wait(&m->w->bar);
	memcpy(all, m->w->i64, sizeof(int64_t) * (size_t)m->w->size);
	pthread_barrier_wait(&m->w->bar);
	return 0;
}

static int t_allreduce_max(void *data, int mine, int *out)
{
	struct member *m = data;

	m->w->i32[m->rank] = mine;
	pthread_barrier_wait(&m->w->bar);
	*out = mine;
	for (int q = 0; q < m->w->size; q++)
		if (m->w->i32[q] > *out)
			*out = m->w->i32[q];
	pthread_barrier_wait(&m->w->bar);
	return 0;
}

static int t_allreduce_sum(void *data, double *buf, int64_t n)
{
	struct member *m = data;
	double *mine = malloc(sizeof(double) * (size_t)(n ? n : 1));

	memcpy(mine, buf, sizeof(double) * (size_t)n);
	m->w->f64[m->rank] = mine;
	pthread_barrier_wait(&m->w->bar);
	for (int64_t k = 0; k < n; k++) {
		buf[k] = 0;
		for (int q = 0; q < m->w->size; q++)
			buf[k] += m->w->f64[q][k];
	}
	pthread_barrier_wait(&m->w->bar);
	free(mine);
	return 0;
}

/* The exchange happens in shift_wait: the sender's buffer is not touched before then,
 * which is the contract of shift_start. */
static int t_shift_start(void *data, const void *send, size_t send_bytes, void *recv,
			 size_t recv_bytes, void **req)
{
	struct member *m = data;

	if (m->w->fail_shift == m->rank + 1)
		return 1;
	m->w->send[m->rank] = send;
	m->w->send_bytes[m->rank] = send_bytes;
	m->recv = recv;
	m->recv_bytes = recv_bytes;
	*req = m;
	return 0;
}

static int t_shift_wait(void *data, void *req)
{
	struct member *m = data;
	int left = (m->rank + m->w->size - 1) % m->w->size;
	int bad;

	pthread_barrier_wait(&m->w->bar);
	bad = m->w->send_bytes[left] != m->recv_bytes || req != m;
	if (!bad && m->recv_bytes)
		memcpy(m->recv, m->w->send[left], m->recv_bytes);
	pthread_barrier_wait(&m->w->bar);
	return bad;
}

/* Nothing to move on here (the copy happens in shift_wait): counts the calls, which
 * say that the block in hand was computed in pieces. */
static int t_progress(void *data, void *req)
{
	struct member *m = data;

	m->progress_calls++;
	return req != m;
}

/* ---- the cases */

struct job {
	struct world *w;
	int rank;
	const char *backend;
	const char *formula, *weight, *reduction, *grad;
	const char *const *aliases;
	int n_aliases;
	kred_axis axis;
	kred_dtype dtype;
	int64_t nx_local, ny_local, x0, y0; /* this rank's slices and their first rows */
	void **whole;			    /* the whole inputs */
	int null_arg;			    /* pass NULL for argument 0 */
	int use_progress;		    /* give the comm a progress callback */
	int progress_calls;
	void *out;
	int64_t out_rows;
	kred_status status;
	char msg[512];
	kred_comm_stats stats;
};

static kred_reduction *make(kred_context *ctx, const struct job *j)
{
	kred_spec s = { 0 };
	kred_reduction *r = NULL, *g = NULL;

	s.formula = j->formula;
	s.weight = j->weight;
	s.reduction = j->reduction;
	s.aliases = j->aliases;
	s.n_aliases = (size_t)j->n_aliases;
	s.axis = j->axis;
	s.dtype = j->dtype;
	if (kred_reduction_create(ctx, &s, &r) != KRED_OK)
		return NULL;
	if (!j->grad)
		return r;
	kred_reduction_grad(r, j->grad, &g);
	kred_reduction_destroy(r);
	return g;
}

static void *rank_main(void *arg)
{
	struct job *j = arg;
	struct member m = { j->w, j->rank, NULL, 0, 0 };
	kred_comm c = { sizeof(c), &m, j->rank, j->w->size, t_allgather, t_allreduce_max,
			t_allreduce_sum, t_shift_start, t_shift_wait,
			j->use_progress ? t_progress : NULL };
	kred_context_options o = { 0 };
	kred_context *ctx = NULL;
	kred_reduction *r;
	const void *args[16];
	size_t size = j->dtype == KRED_FLOAT64 ? 8 : 4;

	o.struct_size = sizeof(o);
	o.backend = j->backend;
	kred_context_create(&o, &ctx);
	r = make(ctx, j);
	if (!r) {
		j->status = KRED_EINVAL;
		snprintf(j->msg, sizeof(j->msg), "make: %s", kred_errmsg(ctx));
		kred_context_destroy(ctx);
		return NULL;
	}
	for (int p = 0; p < kred_reduction_n_args(r); p++) {
		int cat, dim;

		kred_reduction_arg(r, p, &cat, &dim, NULL);
		args[p] = (const char *)j->whole[p] +
			  (size_t)(cat == 0 ? j->x0 : cat == 1 ? j->y0 : 0) * (size_t)dim * size;
	}
	if (j->null_arg)
		args[0] = NULL;
	j->status = kred_reduction_run_comm(r, &c, j->nx_local, j->ny_local, args, j->out,
					    &j->stats);
	snprintf(j->msg, sizeof(j->msg), "%s", kred_errmsg(ctx));
	j->progress_calls = m.progress_calls;
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
	return NULL;
}

static uint64_t rng;

static double uniform(double lo, double hi)
{
	rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
	return lo + (hi - lo) * (double)(rng >> 11) * 0x1.0p-53;
}

struct problem {
	const char *formula, *weight, *reduction, *grad;
	kred_axis axis;
	kred_dtype dtype;
	double rtol; /* see the tolerances below */
};

/*
 * Tolerances. Each rank computes its blocks on its own backend (host or reference)
 * and merges in double; the whole run is one reference run. float64: sums of <= 60
 * terms, reordered, 1e-12 of (|want| + mean |want|) covers their n 2^-53. float32:
 * the host's terms are within a few ulps of the reference's double ones, and its block
 * sums add n 2^-24 = 4e-6 of the sum of |terms|: 1e-5. Selections are compared
 * exactly: the merge picks the same terms as one run would, and random data puts no two
 * candidates within float32's rounding of each other.
 */
static const char *const al[] = { "X=Vi(3)", "Y=Vj(3)", "B=Vj(2)", "G=Pm(1)" };

static void run_world(const struct problem *pb, const char *const *backends, int P,
		      const int64_t *nx, const int64_t *ny, int null_rank, int use_progress)
{
	struct world w = { 0 };
	struct job jobs[MAX_RANKS];
	pthread_t th[MAX_RANKS];
	int64_t NX = 0, NY = 0;
	size_t size = pb->dtype == KRED_FLOAT64 ? 8 : 4;
	kred_context_options o = { 0 };
	kred_context *ctx = NULL;
	kred_reduction *r;
	struct job ref = { 0 };
	void *whole[16] = { 0 }, *want;
	int n, od, cat_out = 0, dim_out = 0;
	int64_t want_rows;
	double scale = 0;

	for (int q = 0; q < P; q++)
		NX += nx[q], NY += ny[q];
	o.struct_size = sizeof(o);
	o.backend = "reference";
	ck_assert_int_eq(kred_context_create(&o, &ctx), KRED_OK);
	ref.formula = pb->formula;
	ref.weight = pb->weight;
	ref.reduction = pb->reduction;
	ref.grad = pb->grad;
	ref.aliases = al;
	ref.n_aliases = 4;
	ref.axis = pb->axis;
	ref.dtype = pb->dtype;
	r = make(ctx, &ref);
	ck_assert_msg(r != NULL, "%s", kred_errmsg(ctx));
	n = kred_reduction_n_args(r);
	od = kred_reduction_out_dim(r);
	rng = 99;
	for (int p = 0; p < n; p++) {
		int cat, dim;
		const char *name;
		int64_t count;

		kred_reduction_arg(r, p, &cat, &dim, &name);
		count = (int64_t)dim * (cat == 0 ? NX : cat == 1 ? NY : 1);
		whole[p] = malloc((size_t)(count ? count : 1) * size);
		for (int64_t k = 0; k < count; k++) {
			double v = uniform(-1, 1);

			if (pb->dtype == KRED_FLOAT64)
				((double *)whole[p])[k] = v;
			else
				((float *)whole[p])[k] = (float)v;
		}
		if (pb->grad && !strcmp(name, pb->grad))
			cat_out = cat, dim_out = dim;
	}
	want_rows = pb->grad ? (cat_out == 2 ? 1 : cat_out == 0 ? NX : NY)
			     : pb->axis == KRED_REDUCE_J ? NX : NY;
	(void)dim_out;
	want = malloc((size_t)(want_rows * od) * size + 8);
	ck_assert_int_eq(kred_reduction_run(r, NX, NY, (const void *const *)whole, want), KRED_OK);
	for (int64_t k = 0, m = 0; k < want_rows * od; k++) {
		double v = pb->dtype == KRED_FLOAT64 ? ((double *)want)[k] : ((float *)want)[k];

		if (isfinite(v))
			scale += (fabs(v) - scale) / (double)++m;
	}

	w.size = P;
	pthread_barrier_init(&w.bar, NULL, (unsigned)P);
	for (int q = 0, x0 = 0, y0 = 0; q < P; q++) {
		struct job *j = &jobs[q];
		int out_cat = pb->grad ? cat_out : pb->axis == KRED_REDUCE_J ? 0 : 1;

		*j = ref;
		j->w = &w;
		j->rank = q;
		j->backend = backends[q];
		j->nx_local = nx[q];
		j->ny_local = ny[q];
		j->x0 = x0;
		j->y0 = y0;
		j->whole = whole;
		j->null_arg = q == null_rank;
		j->use_progress = use_progress;
		j->out_rows = out_cat == 2 ? 1 : out_cat == 0 ? nx[q] : ny[q];
		j->out = malloc((size_t)(j->out_rows * od) * size + 8);
		x0 += (int)nx[q];
		y0 += (int)ny[q];
		pthread_create(&th[q], NULL, rank_main, j);
	}
	for (int q = 0; q < P; q++)
		pthread_join(th[q], NULL);
	pthread_barrier_destroy(&w.bar);

	for (int q = 0; q < P; q++) {
		struct job *j = &jobs[q];
		int64_t first;

		if (null_rank >= 0) {
			/* every rank fails, the one at fault with its own reason */
			ck_assert_int_ne(j->status, KRED_OK);
			ck_assert_ptr_nonnull(strstr(j->msg, q == null_rank ? "is NULL"
									 : "another rank failed"));
			continue;
		}
		ck_assert_msg(j->status == KRED_OK, "rank %d (%s): %s", q, j->backend, j->msg);
		first = j->out_rows == 1 && want_rows == 1 ? 0
			: (pb->grad ? cat_out == 0 : pb->axis == KRED_REDUCE_J) ? j->x0 : j->y0;
		for (int64_t k = 0; k < j->out_rows * od; k++) {
			double g = pb->dtype == KRED_FLOAT64 ? ((double *)j->out)[k]
							     : ((float *)j->out)[k];
			double v = pb->dtype == KRED_FLOAT64 ? ((double *)want)[first * od + k]
							     : ((float *)want)[first * od + k];

			if (g == v || (isnan(g) && isnan(v)))
				continue;
			ck_assert_msg(fabs(g - v) <= pb->rtol * (fabs(v) + scale),
				      "%s %s%s%s: rank %d (%s), value %lld: %.17g, whole %.17g",
				      pb->reduction, pb->formula, pb->grad ? ", gradient in " : "",
				      pb->grad ? pb->grad : "", q, j->backend, (long long)k, g, v);
		}
	}
	if (use_progress && P > 1 && null_rank < 0) {
		int calls = 0;

		for (int q = 0; q < P; q++)
			calls += jobs[q].progress_calls;
		ck_assert_int_gt(calls, 0);
	}
	for (int q = 0; q < P; q++)
		free(jobs[q].out);
	for (int p = 0; p < n; p++)
		free(whole[p]);
	free(want);
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
}

#define T32 1e-5
#define T64 1e-12

static const struct problem problems[] = {
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", NULL, KRED_REDUCE_J, KRED_FLOAT32, T32 },
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", NULL, KRED_REDUCE_J, KRED_FLOAT64, T64 },
	{ "-G*SqDist(X,Y)", NULL, "LogSumExp", NULL, KRED_REDUCE_J, KRED_FLOAT32, T32 },
	{ "-G*SqDist(X,Y)", NULL, "LogSumExp", NULL, KRED_REDUCE_I, KRED_FLOAT64, T64 },
	{ "SqDist(X,Y)", NULL, "ArgKMin(3)", NULL, KRED_REDUCE_J, KRED_FLOAT32, 0 },
	{ "SqDist(X,Y)", NULL, "ArgKMin(3)", NULL, KRED_REDUCE_I, KRED_FLOAT64, 0 },
	{ "X-Y", NULL, "Min_ArgMin", NULL, KRED_REDUCE_J, KRED_FLOAT64, 0 },
	{ "-G*SqDist(X,Y)", "B", "SumSoftMaxWeight", NULL, KRED_REDUCE_J, KRED_FLOAT64, T64 },
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", "X", KRED_REDUCE_J, KRED_FLOAT64, T64 },
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", "Y", KRED_REDUCE_J, KRED_FLOAT64, T64 },
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", "G", KRED_REDUCE_J, KRED_FLOAT64, T64 },
	{ "-G*SqDist(X,Y)", "B", "SumSoftMaxWeight", "X", KRED_REDUCE_J, KRED_FLOAT64, T64 },
	{ "-G*SqDist(X,Y)", NULL, "LogSumExp", "G", KRED_REDUCE_J, KRED_FLOAT64, T64 },
};

#define N_PROBLEMS ((int)(sizeof(problems) / sizeof(problems[0])))

static const char *const mixed[] = { "host", "reference", "host", "reference" };

/* Slices: uneven, and empty on one side or both. */
static const int64_t slices[][2][MAX_RANKS] = {
	{ { 20, 7, 13, 1 }, { 9, 30, 2, 17 } },
	{ { 0, 25, 16, 0 }, { 31, 0, 0, 12 } },
	{ { 41, 0, 0, 0 }, { 0, 0, 43, 0 } },
};

START_TEST(test_problems)
{
	const struct problem *pb = &problems[_i / 3];

	/* with and without a progress callback: blocks computed whole, or in pieces */
	run_world(pb, mixed, 4, slices[_i % 3][0], slices[_i % 3][1], -1, 0);
	run_world(pb, mixed, 4, slices[_i % 3][0], slices[_i % 3][1], -1, 1);
}
END_TEST

START_TEST(test_one_rank)
{
	const int64_t nx[] = { 37 }, ny[] = { 29 };

	for (int k = 0; k < N_PROBLEMS; k++)
		run_world(&problems[k], mixed, 1, nx, ny, -1, 1);
}
END_TEST

START_TEST(test_two_ranks)
{
	const int64_t nx[] = { 30, 11 }, ny[] = { 5, 40 };

	for (int k = 0; k < N_PROBLEMS; k++)
		run_world(&problems[k], mixed + 1, 2, nx, ny, -1, 1);
}
END_TEST

/* A rank that passes a NULL argument: it says so, the others say another rank failed,
 * and nobody waits forever (Check's timeout would catch it). */
START_TEST(test_null_arg)
{
	run_world(&problems[_i == 0 ? 0 : 11], mixed, 3, slices[0][0], slices[0][1], _i, _i == 2);
}
END_TEST

START_TEST(test_bad_comm)
{
	kred_context *ctx = NULL;
	kred_reduction *r;
	kred_spec s = { 0 };
	kred_comm c = { 0 };
	float x[3] = { 0 }, out[1];
	const void *args[] = { x, x, x, x };

	ck_assert_int_eq(kred_context_create(NULL, &ctx), KRED_OK);
	s.formula = "SqDist(X,Y)";
	s.reduction = "Sum";
	s.aliases = al;
	s.n_aliases = 2;
	ck_assert_int_eq(kred_reduction_create(ctx, &s, &r), KRED_OK);
	ck_assert_int_eq(kred_reduction_run_comm(r, NULL, 1, 1, args, out, NULL), KRED_EINVAL);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "comm is NULL"));
	c.size = 2;
	c.rank = 2;
	ck_assert_int_eq(kred_reduction_run_comm(r, &c, 1, 1, args, out, NULL), KRED_EINVAL);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "callbacks"));
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("comm");
	TCase *tc = tcase_create("ring");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 300);
	tcase_add_loop_test(tc, test_problems, 0, 3 * N_PROBLEMS);
	tcase_add_test(tc, test_one_rank);
	tcase_add_test(tc, test_two_ranks);
	tcase_add_loop_test(tc, test_null_arg, 0, 3);
	tcase_add_test(tc, test_bad_comm);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
