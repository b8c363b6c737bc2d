/* kred over MPI ranks against one process, side by side in one job:
 *
 *	mpirun -np 2 ./build/bench/bench_mpi [--n N] [--backend B] [--reps R] [--cases LIST]
 *
 * For each case, the same whole problem (nx = ny = n) is run
 *   - in one process: kred_reduction_run in rank 0 while the other ranks sleep, and
 *   - over every rank: kred_mpi_run with n / P rows of i and of j on each rank,
 * on the same backend (default host), one after the other, the warm median of R runs
 * each; the ratio is the speed-up of the P ranks over the one process. Each rank has the
 * CPUs the one process has (printed: mpirun binds a rank to a core by default), so the
 * ideal speed-up is P. The gathered outputs are checked against the one process's.
 *
 * The exchange: a run of P ranks makes P - 1 ring exchanges, each started (shift_start)
 * before the rank computes on the block it holds and waited for (shift_wait) after.
 *   - compute, wait: kred_comm_stats of the run (the slowest rank's), seconds computing
 *     and waiting in shift_wait;
 *   - alone: the same exchanges with nothing computed in between (T_x), and exch: T_x as a
 *     share of the P ranks' run, what the exchange would cost if nothing hid it;
 *   - exposed: seconds spent inside shift_start + shift_wait during the run (timed
 *     around the calls), by the rank that spent the least there: a rank that finishes
 *     computing first also waits there for its slower neighbour, which is imbalance,
 *     not exchange, while the last to arrive finds its neighbours already in MPI and
 *     waits for the data alone;
 *   - hidden = 1 - exposed / alone, clamped to [0, 1]: the share of the exchange that
 *     overlapped with computation. Marked with * where the exchange is under 1% of the
 *     run: then the figure is mostly timer noise, on a cost that does not matter.
 * With every rank on one machine the messages go through shared memory and the exchange
 * is a small share of any run; across a network it weighs more. MPI moves a large
 * message mostly inside MPI calls (Open MPI has no progress thread by default): the
 * kred_comm's progress callback (MPI_Testall) is what moves it on while the block in hand
 * is computed, in pieces, between them.
 */
#define _GNU_SOURCE /* sched_getaffinity: the CPUs each rank has */
#include <math.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kred_mpi.h"
#include "bench_util.h"

struct bcase {
	const char *name, *label, *formula, *aliases[4];
	kred_dtype dtype;
	int d, e; /* dimension of the points, of b */
};

static const struct bcase bcases[] = {
	{ "gauss", "Gaussian sum, D=3, E=1, float32", "Exp(-G * SqDist(X, Y)) * B",
	  { "X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)" }, KRED_FLOAT32, 3, 1 },
	/* more bytes to move for each pair computed: a heavier exchange */
	{ "gauss64", "Gaussian sum, D=64, E=4, float64", "Exp(-G * SqDist(X, Y)) * B",
	  { "X = Vi(64)", "Y = Vj(64)", "B = Vj(4)", "G = Pm(1)" }, KRED_FLOAT64, 64, 4 },
	{ "lse", "LogSumExp, D=3, float32", "-G * SqDist(X, Y)",
	  { "X = Vi(3)", "Y = Vj(3)", "G = Pm(1)", NULL }, KRED_FLOAT32, 3, 0 },
};

static int rank, size;

/* The other ranks wait for rank 0's single-process runs without spinning on a core (an
 * MPI barrier polls), so that rank 0 has its CPUs to itself. */
static void quiet_barrier(void)
{
	MPI_Request rq;
	int done = 0;
	struct timespec ms = { 0, 1000000 };

	MPI_Ibarrier(MPI_COMM_WORLD, &rq);
	while (MPI_Test(&rq, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done)
		nanosleep(&ms, NULL);
}

/* The slowest rank's time. */
static double max_time(double t)
{
	MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
	return t;
}

/* Point p's values, from a hash of its global index: every rank makes its slice of the
 * same whole data. */
static double hashed(int cloud, int64_t p, int k)
{
	uint64_t h = (uint64_t)p * 0x9e3779b97f4a7c15ULL +
		     (uint64_t)(cloud * 1024 + k) * 0xbf58476d1ce4e5b9ULL;

	h ^= h >> 31;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 29;
	return (double)(h >> 11) * 0x1.0p-53;
}

static void *fill(int cloud, int64_t first, int64_t n, int dim, int f64)
{
	void *p = malloc((size_t)(n * dim + 1) * (f64 ? 8 : 4));

	for (int64_t r = 0; p && r < n; r++)
		for (int k = 0; k < dim; k++) {
			double v = hashed(cloud, first + r, k);

			if (f64)
				((double *)p)[r * dim + k] = v;
			else
				((float *)p)[r * dim + k] = (float)v;
		}
	return p;
}

/* A kred_comm around libkred_mpi's, timing the calls of the exchange. */
struct timed {
	kred_comm inner;
	double start_s, wait_s;
};

static int t_allgather(void *d, int64_t mine, int64_t *all)
{
	struct timed *t = d;

	return t->inner.allgather_i64(t->inner.data, mine, all);
}

static int t_max(void *d, int mine, int *out)
{
	struct timed *t = d;

	return t->inner.allreduce_max_i32(t->inner.data, mine, out);
}

static int t_sum(void *d, double *buf, int64_t n)
{
	struct timed *t = d;

	return t->inner.allreduce_sum_f64(t->inner.data, buf, n);
}

static int t_start(void *d, const void *send, size_t sb, void *recv, size_t rb, void **req)
{
	struct timed *t = d;
	double t0 = now();
	int rc = t->inner.shift_start(t->inner.data, send, sb, recv, rb, req);

	t->start_s += now() - t0;
	return rc;
}

static int t_wait(void *d, void *req)
{
	struct timed *t = d;
	double t0 = now();
	int rc = t->inner.shift_wait(t->inner.data, req);

	t->wait_s += now() - t0;
	return rc;
}

/* The exchange alone: P - 1 ring steps of `bytes` each, nothing in between. */
static double exchange_alone(const kred_comm *c, size_t bytes, int reps)
{
	char *a = malloc(bytes + 1), *b = malloc(bytes + 1);
	double *t = malloc(sizeof(double) * (size_t)reps), res;

	memset(a, 1, bytes + 1);
	for (int k = 0; k < reps; k++) {
		double t0;

		MPI_Barrier(MPI_COMM_WORLD);
		t0 = now();
		for (int s = 0; s < c->size - 1; s++) {
			void *req = NULL;

			if (c->shift_start(c->data, s % 2 ? b : a, bytes, s % 2 ? a : b, bytes, &req) ||
			    c->shift_wait(c->data, req))
				MPI_Abort(MPI_COMM_WORLD, 1);
		}
		t[k] = max_time(now() - t0);
	}
	res = median(t, reps);
	free(a);
	free(b);
	free(t);
	return res;
}

static int cpus(void)
{
	cpu_set_t set;

	return sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 0;
}

static int run_case(const struct bcase *bc, kred_context *ctx, int64_t n, int reps)
{
	int f64 = bc->dtype == KRED_FLOAT64, n_al = bc->e ? 4 : 3, failed = 0;
	size_t es = f64 ? 8 : 4;
	kred_spec spec = { .formula = bc->formula, .aliases = bc->aliases,
			   .n_aliases = (size_t)n_al, .reduction = bc->e ? "Sum" : "LogSumExp",
			   .dtype = bc->dtype };
	int64_t mine = n / size + (rank < n % size),
		first = rank * (n / size) + (rank < n % size ? rank : n % size);
	int out_dim = bc->e ? bc->e : 1;
	void *x = fill(0, first, mine, bc->d, f64), *y = fill(1, first, mine, bc->d, f64);
	void *b = bc->e ? fill(2, first, mine, bc->e, f64) : NULL;
	void *wx = NULL, *wy = NULL, *wb = NULL, *whole_out = NULL, *gathered = NULL;
	void *out = malloc(es * (size_t)(mine * out_dim + 1));
	/* g = 24 / D keeps exp(-g |x - y|^2) of random points in [0, 1]^D near exp(-4) */
	double g64 = 24.0 / bc->d, *t1 = calloc((size_t)reps, sizeof(double));
	double *tp = calloc((size_t)reps, sizeof(double)), *exposed = calloc((size_t)reps, sizeof(double));
	double *kwait = calloc((size_t)reps, sizeof(double)), *comp = calloc((size_t)reps, sizeof(double));
	float g32 = (float)(24.0 / bc->d);
	const void *g = f64 ? (const void *)&g64 : (const void *)&g32;
	const void *args[4], *wargs[4];
	kred_reduction *r = NULL;
	kred_comm_stats st;
	kred_status s;
	int64_t sent = 0;
	double diff = 0, tx = 0;

	if (kred_reduction_create(ctx, &spec, &r) != KRED_OK)
		fprintf(stderr, "rank %d: %s: %s\n", rank, bc->name, kred_errmsg(ctx));
	args[0] = x, args[1] = y, args[2] = bc->e ? b : g, args[3] = g;

	/* the one process's arguments: the whole data, in rank 0 */
	if (rank == 0) {
		wx = fill(0, 0, n, bc->d, f64);
		wy = fill(1, 0, n, bc->d, f64);
		wb = bc->e ? fill(2, 0, n, bc->e, f64) : NULL;
		whole_out = malloc(es * (size_t)(n * out_dim));
	}
	wargs[0] = wx, wargs[1] = wy, wargs[2] = bc->e ? wb : g, wargs[3] = g;

	/* Warm-ups (the kernels compile, or come from the cache), then the timed runs: the P
	 * ranks, then the one process in rank 0 while the others sleep, in turn, so that
	 * whatever else runs on the machine weighs on both alike. */
	s = kred_mpi_run(r, MPI_COMM_WORLD, mine, mine, args, out);
	if (rank == 0 && s == KRED_OK && kred_reduction_run(r, n, n, wargs, whole_out) != KRED_OK) {
		fprintf(stderr, "bench_mpi: %s: kred_reduction_run: %s\n", bc->name,
			kred_errmsg(ctx));
		failed = 1;
	}
	MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
	for (int k = 0; k < reps && s == KRED_OK && !failed; k++) {
		double t0;

		MPI_Barrier(MPI_COMM_WORLD);
		t0 = now();
		s = kred_mpi_run_stats(r, MPI_COMM_WORLD, mine, mine, args, out, &st);
		tp[k] = max_time(now() - t0);
		kwait[k] = max_time(st.wait_s);
		comp[k] = max_time(st.compute_s);
		sent = st.bytes_sent;
		if (rank == 0) {
			t0 = now();
			kred_reduction_run(r, n, n, wargs, whole_out);
			t1[k] = now() - t0;
		}
		quiet_barrier();
	}
	/* the same runs through the timed kred_comm, for the exposed share of the exchange */
	if (s == KRED_OK && !failed) {
		struct timed tm = { 0 };
		kred_comm c = { 0 };

		if (kred_mpi_comm_init(&tm.inner, MPI_COMM_WORLD) != KRED_OK)
			MPI_Abort(MPI_COMM_WORLD, 1);
		c = tm.inner;
		c.data = &tm;
		c.allgather_i64 = t_allgather;
		c.allreduce_max_i32 = t_max;
		c.allreduce_sum_f64 = t_sum;
		c.shift_start = t_start;
		c.shift_wait = t_wait;
		for (int k = 0; k < reps && s == KRED_OK; k++) {
			tm.start_s = tm.wait_s = 0;
			MPI_Barrier(MPI_COMM_WORLD);
			s = kred_reduction_run_comm(r, &c, mine, mine, args, out, NULL);
			exposed[k] = tm.start_s + tm.wait_s;
			MPI_Allreduce(MPI_IN_PLACE, &exposed[k], 1, MPI_DOUBLE, MPI_MIN,
				      MPI_COMM_WORLD);
		}
		MPI_Allreduce(MPI_IN_PLACE, &sent, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
		if (size > 1)
			tx = exchange_alone(&tm.inner, (size_t)(sent / (size - 1)), reps);
		kred_mpi_comm_free(&tm.inner);
	}
	if (s != KRED_OK) {
		if (rank == 0)
			fprintf(stderr, "bench_mpi: %s: kred_mpi_run: %s: %s\n", bc->name,
				kred_status_name(s), r ? kred_errmsg(ctx) : "no reduction");
		failed = 1;
	}
	if (failed)
		goto done;

	/* the P ranks' rows, gathered in rank 0, against the one process's */
	{
		int *counts = malloc(sizeof(int) * (size_t)size), *displs = malloc(sizeof(int) * (size_t)size);
		int mine_b = (int)(es * (size_t)(mine * out_dim));

		MPI_Gather(&mine_b, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
		if (rank == 0) {
			displs[0] = 0;
			for (int q = 1; q < size; q++)
				displs[q] = displs[q - 1] + counts[q - 1];
			gathered = malloc(es * (size_t)(n * out_dim));
		}
		MPI_Gatherv(out, mine_b, MPI_BYTE, gathered, counts, displs, MPI_BYTE, 0,
			    MPI_COMM_WORLD);
		free(counts);
		free(displs);
	}
	if (rank == 0 && !failed) {
		double T1 = median(t1, reps), TP = median(tp, reps), ex = median(exposed, reps);
		char hid[16];

		snprintf(hid, sizeof(hid), "%.0f%%%s",
			 tx > 0 ? 100 * fmax(0, fmin(1, 1 - ex / tx)) : 0.0, tx < 0.01 * TP ? "*" : "");

		for (int64_t k = 0; k < n * out_dim; k++) {
			double u = f64 ? ((double *)gathered)[k] : ((float *)gathered)[k];
			double v = f64 ? ((double *)whole_out)[k] : ((float *)whole_out)[k];

			/* relative for the sums; a LogSumExp near 0 is compared absolutely */
			diff = fmax(diff, fabs(u - v) / fmax(fabs(v), bc->e ? 1e-30 : 1.0));
		}
		printf("%-34s %6lld %7.3f %7.3f %6.2fx  %7.3f %8.2f  %8.3f %5.1f%% %8.3f %6s   %.1e\n",
		       bc->label, (long long)n, T1, TP, T1 / TP, median(comp, reps),
		       1e3 * median(kwait, reps), 1e3 * tx, 100 * tx / TP, 1e3 * ex, hid, diff);
		/* the outputs add the same terms in different orders: float32 sums agree to a
		 * few 1e-6 of their size here, float64 ones to 1e-12 */
		if (diff > (f64 ? 1e-9 : 1e-4)) {
			fprintf(stderr, "bench_mpi: %s: the %d ranks and the one process disagree "
				"(max relative difference %.1e)\n", bc->name, size, diff);
			failed = 1;
		}
	}
done:
	MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
	kred_reduction_destroy(r);
	free(x), free(y), free(b), free(out), free(wx), free(wy), free(wb);
	free(whole_out), free(gathered);
	free(t1), free(tp), free(exposed), free(kwait), free(comp);
	return failed;
}

int main(int argc, char **argv)
{
	kred_context_options o = { .struct_size = sizeof(o), .backend = "host" };
	kred_context *ctx = NULL;
	const char *cases = "gauss,gauss64,lse";
	int64_t n = 0;
	int reps = 5, failed = 0, ok, ncpu;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	for (int k = 1; k < argc; k++) {
		if (!strcmp(argv[k], "--n") && k + 1 < argc)
			n = atoll(argv[++k]);
		else if (!strcmp(argv[k], "--backend") && k + 1 < argc)
			o.backend = argv[++k];
		else if (!strcmp(argv[k], "--reps") && k + 1 < argc)
			reps = atoi(argv[++k]);
		else if (!strcmp(argv[k], "--cases") && k + 1 < argc)
			cases = argv[++k];
		else {
			if (rank == 0)
				fprintf(stderr, "usage: mpirun -np P %s [--n N] [--backend B] "
					"[--reps R] [--cases gauss,gauss64,lse]\n", argv[0]);
			MPI_Finalize();
			return 2;
		}
	}
	if (reps < 1 || reps > 64 || n < 0) {
		if (rank == 0)
			fprintf(stderr, "bench_mpi: reps in 1..64, n positive\n");
		MPI_Finalize();
		return 2;
	}
	ok = kred_context_create(&o, &ctx) == KRED_OK;
	if (!ok)
		fprintf(stderr, "rank %d: backend %s: %s\n", rank, o.backend, kred_errmsg(ctx));
	MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
	if (!ok) {
		kred_context_destroy(ctx);
		MPI_Finalize();
		return 1;
	}
	ncpu = cpus();
	MPI_Allreduce(MPI_IN_PLACE, &ncpu, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
	if (rank == 0) {
		printf("kred bench_mpi: %d ranks, backend %s, %d CPU(s) per rank (the one process "
		       "has rank 0's), warm median of %d runs\n", size, kred_context_backend(ctx),
		       ncpu, reps);
		printf("%-34s %6s %7s %7s %7s  %7s %8s  %8s %6s %8s %6s   %s\n", "case", "n",
		       "1 proc", "P ranks", "speedup", "compute", "wait ms", "alone ms", "exch",
		       "expo ms", "hidden", "max rel diff");
	}
	for (size_t k = 0; k < sizeof(bcases) / sizeof(bcases[0]); k++) {
		const struct bcase *bc = &bcases[k];
		const char *at = strstr(cases, bc->name);
		size_t len = strlen(bc->name);
		int64_t nk = n;

		if (!at || (at[len] && at[len] != ',') || (at != cases && at[-1] != ','))
			continue;
		if (!nk) /* about a second of the one process on one core, on host */
			nk = bc->d > 3 ? 6000 : 30000;
		failed |= run_case(bc, ctx, nk, reps);
	}
	if (rank == 0)
		printf("seconds (ms where marked), of the slowest rank. compute, wait: "
		       "kred_comm_stats; alone: the exchanges with nothing computed, exch: their "
		       "share of the P ranks' run; expo: time in shift_start + shift_wait during "
		       "the run, the least of any rank; hidden = 1 - expo / alone (*: exch below "
		       "1%%, mostly noise)\n");
	kred_context_destroy(ctx);
	MPI_Finalize();
	return failed;
}
