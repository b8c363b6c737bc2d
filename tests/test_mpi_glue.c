/* libkred_mpi's MPI side on its own, under mpirun: the callbacks of the kred_comm that
 * kred_mpi_comm_init makes, called directly, and kred_mpi_run's own agreement when a rank
 * has no reduction. lib/mpi/kred_mpi.c is compiled into this program with 1000-byte
 * messages (KRED_MPI_CHUNK), so that small buffers take the chunked paths that a real run
 * takes above 1 GiB. */
#include <stdint.h>

#include "kred_mpi.h"
#include "mpi_check.h"

/* The bytes sender s sends at step t: sizes around the 1000-byte chunk, empty ones, and
 * one of 100 chunks, in an order that differs from rank to rank. */
static size_t shift_size(int s, int t)
{
	static const size_t sizes[] = { 0, 1, 999, 1000, 1001, 4321, 100000 };

	return sizes[(size_t)(3 * s + t) % (sizeof(sizes) / sizeof(sizes[0]))];
}

static unsigned char shift_byte(int s, int t, size_t k)
{
	return (unsigned char)(s * 31 + t * 7 + (int)(k % 251));
}

/* Steps t0 .. t0+n-1 of the ring, all started before any is waited for, then waited for
 * in order or in reverse; every received byte checked. */
static void ring(const kred_comm *c, int t0, int n, int reverse)
{
	int left = (c->rank - 1 + c->size) % c->size;
	unsigned char *send[4], *recv[4];
	void *req[4];

	for (int t = 0; t < n; t++) {
		size_t ns = shift_size(c->rank, t0 + t), nr = shift_size(left, t0 + t);

		send[t] = malloc(ns + 1);
		recv[t] = malloc(nr + 1);
		for (size_t k = 0; k < ns; k++)
			send[t][k] = shift_byte(c->rank, t0 + t, k);
		memset(recv[t], 0xee, nr + 1);
		req[t] = NULL;
		MCHECK(c->shift_start(c->data, send[t], ns, recv[t], nr, &req[t]) == 0,
		       "shift_start, step %d", t0 + t);
	}
	for (int u = 0; u < n; u++) {
		int t = reverse ? n - 1 - u : u;
		size_t nr = shift_size(left, t0 + t), bad = 0;

		/* every other step moved on by progress first, which may complete it: the
		 * wait must then still succeed, with the data whole */
		for (int k = 0; k < 200 && t % 2 == 0; k++)
			MCHECK(c->progress(c->data, req[t]) == 0, "progress, step %d", t0 + t);
		MCHECK(req[t] && c->shift_wait(c->data, req[t]) == 0, "shift_wait, step %d", t0 + t);
		for (size_t k = 0; k < nr; k++)
			bad += recv[t][k] != shift_byte(left, t0 + t, k);
		MCHECK(bad == 0, "step %d: %zu of %zu bytes from rank %d wrong", t0 + t, bad, nr, left);
		MCHECK(recv[t][nr] == 0xee, "step %d: written past the %zu bytes", t0 + t, nr);
	}
	for (int t = 0; t < n; t++) {
		free(send[t]);
		free(recv[t]);
	}
}

static void test_init(void)
{
	kred_comm c;
	int flag = 0;

	mc_section_begin();
	MCHECK(kred_mpi_comm_init(&c, MPI_COMM_WORLD) == KRED_OK, "init");
	MCHECK(c.struct_size == sizeof(kred_comm) && c.data, "struct_size %zu", c.struct_size);
	MCHECK(c.rank == mc_rank && c.size == mc_size, "rank %d of %d", c.rank, c.size);
	MCHECK(c.allgather_i64 && c.allreduce_max_i32 && c.allreduce_sum_f64 && c.shift_start &&
	       c.shift_wait && c.progress, "a callback is missing");
	kred_mpi_comm_free(&c);
	MCHECK(c.data == NULL, "free clears the struct");
	kred_mpi_comm_free(&c); /* a second free is a no-op */
	kred_mpi_comm_free(NULL);
	MCHECK(kred_mpi_comm_init(&c, MPI_COMM_NULL) == KRED_EINVAL && !c.data, "MPI_COMM_NULL");
	MCHECK(kred_mpi_comm_init(NULL, MPI_COMM_WORLD) == KRED_EINVAL, "NULL kred_comm");
	/* the user's communicator is left as it was: still aborting on errors */
	{
		MPI_Errhandler eh;

		MPI_Comm_get_errhandler(MPI_COMM_WORLD, &eh);
		flag = eh == MPI_ERRORS_ARE_FATAL;
		MPI_Errhandler_free(&eh);
	}
	MCHECK(flag, "MPI_COMM_WORLD's error handler changed");
	mc_section_end("init and free");
}

static void test_collectives(const kred_comm *c)
{
	static const int64_t lengths[] = { 0, 1, 124, 125, 126, 333, 1000 };
	int64_t all[64];
	int mx = -1;

	mc_section_begin();
	/* values past 32 bits, and negative ones */
	MCHECK(c->size <= 64, "at most 64 ranks here");
	MCHECK(c->allgather_i64(c->data, (int64_t)(c->rank - 1) * 1000000000007LL, all) == 0,
	       "allgather_i64");
	for (int r = 0; r < c->size && r < 64; r++)
		MCHECK(all[r] == (int64_t)(r - 1) * 1000000000007LL, "all[%d] = %lld", r,
		       (long long)all[r]);
	MCHECK(c->allreduce_max_i32(c->data, -100 + 7 * ((c->rank + 1) % c->size), &mx) == 0,
	       "allreduce_max_i32");
	MCHECK(mx == -100 + 7 * (c->size - 1), "max %d", mx);
	MCHECK(c->allreduce_max_i32(c->data, -5 - c->rank, &mx) == 0 && mx == -5, "max %d", mx);
	/* 125 doubles to a chunk here: lengths around it and across several. The values
	 * are halves, so every order of addition gives the exact sum. */
	for (size_t l = 0; l < sizeof(lengths) / sizeof(lengths[0]); l++) {
		int64_t n = lengths[l];
		double *buf = malloc(sizeof(double) * (size_t)(n + 1));
		int64_t bad = 0;

		for (int64_t k = 0; k <= n; k++)
			buf[k] = c->rank + 0.5 * (double)k;
		MCHECK(c->allreduce_sum_f64(c->data, buf, n) == 0, "allreduce_sum_f64(%lld)",
		       (long long)n);
		for (int64_t k = 0; k < n; k++)
			bad += buf[k] != c->size * (c->size - 1) / 2.0 + c->size * 0.5 * (double)k;
		MCHECK(bad == 0, "n = %lld: %lld sums wrong", (long long)n, (long long)bad);
		MCHECK(buf[n] == c->rank + 0.5 * (double)n, "n = %lld: written past the end",
		       (long long)n);
		free(buf);
	}
	mc_section_end("collectives: allgather_i64, allreduce_max_i32, allreduce_sum_f64 in chunks");
}

static void test_shift(const kred_comm *c, const char *name)
{
	mc_section_begin();
	for (int t = 0; t < 7; t++)
		ring(c, t, 1, 0);
	ring(c, 0, 3, 0); /* three exchanges in flight, waited for in order */
	ring(c, 2, 4, 1); /* four, waited for last first */
	mc_section_end(name);
}

/* A message of the caller's, on its own communicator with kred's tag, sent before a
 * ring step and received after it: neither takes the other's. */
static void test_isolation(const kred_comm *c)
{
	int right = (mc_rank + 1) % mc_size, left = (mc_rank - 1 + mc_size) % mc_size;
	int64_t mine = 4242 + mc_rank, got = -1;
	MPI_Request rq[2];

	mc_section_begin();
	MPI_Isend(&mine, 1, MPI_INT64_T, right, 0x6b72, MPI_COMM_WORLD, &rq[0]);
	ring(c, 1, 2, 0);
	MPI_Irecv(&got, 1, MPI_INT64_T, left, 0x6b72, MPI_COMM_WORLD, &rq[1]);
	MPI_Waitall(2, rq, MPI_STATUSES_IGNORE);
	MCHECK(got == 4242 + left, "the caller's message: %lld", (long long)got);
	mc_section_end("kred's messages do not mix with the caller's");
}

/* Sizes that disagree between the two sides are errors, from shift_wait, not stale
 * bytes; and the communicator works afterwards. */
static void test_mismatch(const kred_comm *c)
{
	char send[16] = "0123456789", recv[32];
	void *req = NULL;

	mc_section_begin();
	MCHECK(c->shift_start(c->data, send, 10, recv, 20, &req) == 0, "start (short)");
	MCHECK(req && c->shift_wait(c->data, req) != 0, "10 bytes came where 20 were expected");
	req = NULL;
	MCHECK(c->shift_start(c->data, send, 10, recv, 5, &req) == 0, "start (long)");
	MCHECK(req && c->shift_wait(c->data, req) != 0, "10 bytes came where 5 were expected");
	ring(c, 3, 2, 0);
	mc_section_end("a size mismatch is an error, and the ring goes on");
}

/* kred_mpi_run with r = NULL on one rank (say, its context could not be made): every
 * rank returns, that one KRED_EINVAL, the others KRED_EDEVICE; kred_reduction_run_comm
 * is not reached. */
static void test_null_reduction(void)
{
	const char *aliases[] = { "X = Vi(1)", "Y = Vj(1)" };
	kred_spec spec = { .formula = "X * Y", .aliases = aliases, .n_aliases = 2,
			   .reduction = "Sum", .dtype = KRED_FLOAT64 };
	kred_context_options o = { .struct_size = sizeof(o), .backend = "reference" };
	kred_context *ctx = NULL;
	kred_reduction *r = NULL;
	double x = 1, y = 2, out = 0;
	const void *args[] = { &x, &y };
	int culprit = mc_size > 1 ? 1 : 0;
	kred_status st;

	mc_section_begin();
	MCHECK(kred_context_create(&o, &ctx) == KRED_OK, "%s", kred_errmsg(ctx));
	MCHECK(kred_reduction_create(ctx, &spec, &r) == KRED_OK, "%s", kred_errmsg(ctx));
	mc_step("kred_mpi_run with no reduction on one rank", 60);
	st = kred_mpi_run(mc_rank == culprit ? NULL : r, MPI_COMM_WORLD, 1, 1, args, &out);
	MCHECK(st == (mc_rank == culprit ? KRED_EINVAL : KRED_EDEVICE), "%s",
	       kred_status_name(st));
	st = kred_mpi_run(NULL, MPI_COMM_WORLD, 1, 1, args, &out);
	MCHECK(st == KRED_EINVAL, "no reduction anywhere: %s", kred_status_name(st));
	MCHECK(kred_mpi_run(r, MPI_COMM_NULL, 1, 1, args, &out) == KRED_EINVAL, "MPI_COMM_NULL");
	mc_step("after kred_mpi_run", 60);
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
	mc_section_end("kred_mpi_run: a rank without a reduction stops every rank");
}

int main(int argc, char **argv)
{
	kred_comm c, self;
	MPI_Comm one;

	mc_init(&argc, &argv);
	mc_step("the MPI glue", 60);
	test_init();
	if (kred_mpi_comm_init(&c, MPI_COMM_WORLD) != KRED_OK) {
		printf("rank %d: FAIL: kred_mpi_comm_init\n", mc_rank);
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	test_collectives(&c);
	test_shift(&c, "shift_start/shift_wait: the ring, in chunks, several in flight");
	test_isolation(&c);
	test_mismatch(&c);
	kred_mpi_comm_free(&c);
	/* a ring of one: every rank its own neighbour */
	MPI_Comm_split(MPI_COMM_WORLD, mc_rank, 0, &one);
	if (kred_mpi_comm_init(&self, one) != KRED_OK) {
		printf("rank %d: FAIL: kred_mpi_comm_init on a communicator of one\n", mc_rank);
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	test_shift(&self, "the ring on a communicator of one rank");
	kred_mpi_comm_free(&self);
	MPI_Comm_free(&one);
	test_null_reduction();
	return mc_finish("mpi-glue");
}
