/* Runs spread over several processes through a kred_comm (kred.h): the blocks of the
 * reduced axis travel around a ring of ranks, and each rank folds the block it holds into
 * the partial states of its own output rows (partial.c) while the next block is in
 * flight.
 *
 * With P ranks, step s (0 <= s < P) holds the block that rank (rank - s) mod P owns, at
 * that rank's offset in the whole axis (so indices are global); the exchange of step s
 * sends it on to the right and receives the next from the left. Errors: a rank that
 * fails keeps taking part in the exchanges (the others would wait for it otherwise),
 * and the ranks agree on the outcome at the end of each phase with allreduce_max. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Pieces of a block when the comm can move an exchange on between them: enough that
 * the exchange progresses through the computation, few enough that each piece stays a
 * large launch. */
#define PROGRESS_PIECES 8

struct ring {
	const kred_comm *c;
	kred_comm_stats *st;
	int64_t *counts, *offsets; /* of the reduced axis, per rank */
};

/* The ranks agree on failure: returns 1 when some rank (this one or another) failed,
 * setting err when it was another one or the exchange itself. */
static int agree(const struct ring *g, int failed, struct kred__error *err)
{
	int any = 1;

	if (g->c->allreduce_max_i32(g->c->data, failed, &any)) {
		kred__fail(err, KRED_EDEVICE, -1, "kred_comm: allreduce_max failed");
		return 1;
	}
	if (any && !failed)
		kred__fail(err, KRED_EDEVICE, -1, "another rank failed");
	return any != 0;
}

static int64_t elem(const kred_reduction *r)
{
	return r->dtype == KRED_FLOAT64 ? 8 : 4;
}

/* Bytes per reduced row of the arguments that travel (those indexed along the reduced
 * axis). */
static int64_t travel_bytes(const kred_reduction *r)
{
	int cat = r->axis == KRED_REDUCE_J ? KRED__CAT_J : KRED__CAT_I;
	int64_t b = 0;

	for (int p = 0; p < r->n_args; p++)
		if (r->args[p].cat == cat)
			b += r->args[p].dim * elem(r);
	return b;
}

/* Points the travelling arguments of sub into a packed block of n reduced rows (each
 * argument's rows one after the other), the others at args. */
static void unpack(const kred_reduction *r, const void *const *args, char *block, int64_t n,
		   const void **sub)
{
	int cat = r->axis == KRED_REDUCE_J ? KRED__CAT_J : KRED__CAT_I;

	for (int p = 0; p < r->n_args; p++) {
		if (r->args[p].cat != cat) {
			sub[p] = args[p];
			continue;
		}
		sub[p] = block;
		block += n * r->args[p].dim * elem(r);
	}
}

static void pack(const kred_reduction *r, const void *const *args, char *block, int64_t n)
{
	int cat = r->axis == KRED_REDUCE_J ? KRED__CAT_J : KRED__CAT_I;

	for (int p = 0; p < r->n_args; p++) {
		int64_t b = n * r->args[p].dim * elem(r);

		if (r->args[p].cat != cat || b == 0)
			continue;
		memcpy(block, args[p], (size_t)b);
		block += b;
	}
}

/* The travelling arguments of sub from reduced row a on, into out (the others as they
 * are). */
static void shift_args(const kred_reduction *r, const void **sub, int64_t a, const void **out)
{
	int cat = r->axis == KRED_REDUCE_J ? KRED__CAT_J : KRED__CAT_I;

	for (int p = 0; p < r->n_args; p++)
		out[p] = r->args[p].cat == cat && sub[p]
				 ? (const char *)sub[p] + a * r->args[p].dim * elem(r)
				 : sub[p];
}

/* r over the ring: this rank's rows of the output (no row sum), into out. */
static kred_status ring_run(kred_reduction *r, const struct ring *g, int64_t nxl, int64_t nyl,
			    const void *const *args, void *out, struct kred__error *err)
{
	const kred_comm *c = g->c;
	int P = c->size, me = c->rank, failed = 0;
	int64_t rows = r->axis == KRED_REDUCE_J ? nxl : nyl, tb = travel_bytes(r), most = 0;
	int64_t w;
	char *buf[2] = { NULL, NULL };
	const void **sub = NULL, **piece = NULL;
	int (*progress)(void *, void *) =
		c->struct_size == 0 || c->struct_size >= offsetof(kred_comm, progress) +
								sizeof(c->progress)
			? c->progress : NULL;
	double *acc = NULL, *blk = NULL;
	kred_status s = KRED_OK;

	for (int q = 0; q < P; q++)
		if (g->counts[q] > most)
			most = g->counts[q];
	/* the companion is compiled here, before any exchange, so that a failure is agreed
	 * on while every rank is still in step */
	s = kred__state_prepare(r, err);
	if (!s) {
		w = kred__state_width(r);
		buf[0] = kred__malloc((size_t)(most * tb) + 1);
		buf[1] = kred__malloc((size_t)(most * tb) + 1);
		sub = kred__malloc(sizeof(*sub) * (size_t)(r->n_args + 1));
		piece = kred__malloc(sizeof(*piece) * (size_t)(r->n_args + 1));
		acc = kred__malloc((size_t)(rows * w) * sizeof(double) + 1);
		blk = kred__malloc((size_t)(rows * w) * sizeof(double) + 1);
		if (!buf[0] || !buf[1] || !sub || !piece || !acc || !blk)
			s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	}
	if (agree(g, s != KRED_OK, err)) {
		if (!s)
			s = err->status;
		goto done;
	}
	kred__state_init(r, rows, acc);
	pack(r, args, buf[0], g->counts[me]);
	for (int step = 0; step < P; step++) {
		int src = ((me - step) % P + P) % P, prev = ((src - 1) % P + P) % P;
		void *req = NULL;
		int shifting = step < P - 1;
		double t0 = now();

		if (shifting) {
			if (c->shift_start(c->data, buf[step % 2], (size_t)(g->counts[src] * tb),
					   buf[(step + 1) % 2], (size_t)(g->counts[prev] * tb), &req)) {
				/* nothing in flight: the other ranks will fail on their waits */
				s = kred__fail(err, KRED_EDEVICE, -1, "kred_comm: shift_start failed");
				goto done;
			}
			if (g->st)
				g->st->bytes_sent += g->counts[src] * tb;
		}
		if (!failed && rows > 0 && g->counts[src] > 0) {
			int64_t n = g->counts[src];
			/* with a progress callback, the block in pieces, the exchange moved on
			 * between them */
			int pieces = shifting && progress ? PROGRESS_PIECES : 1;

			unpack(r, args, buf[step % 2], n, sub);
			for (int k = 0; k < pieces && !failed; k++) {
				int64_t a = n * k / pieces, b = n * (k + 1) / pieces;

				if (b == a)
					continue;
				shift_args(r, sub, a, piece);
				s = r->axis == KRED_REDUCE_J
					    ? kred__state_block(r, nxl, b - a, g->offsets[src] + a,
								piece, blk, err)
					    : kred__state_block(r, b - a, nyl, g->offsets[src] + a,
								piece, blk, err);
				if (s)
					failed = 1;
				else
					kred__state_merge(r, rows, acc, blk);
				if (pieces > 1 && progress(c->data, req)) {
					s = kred__fail(err, KRED_EDEVICE, -1,
						       "kred_comm: progress failed");
					failed = 1;
				}
			}
		}
		if (g->st)
			g->st->compute_s += now() - t0;
		if (shifting) {
			double t1 = now();

			if (c->shift_wait(c->data, req)) {
				s = kred__fail(err, KRED_EDEVICE, -1, "kred_comm: shift_wait failed");
				goto done;
			}
			if (g->st)
				g->st->wait_s += now() - t1;
		}
	}
	if (agree(g, failed, err)) {
		if (!s)
			s = err->status;
		goto done;
	}
	kred__state_finish(r, rows, acc, out);
done:
	kred__free(buf[0]);
	kred__free(buf[1]);
	kred__free(sub);
	kred__free(piece);
	kred__free(acc);
	kred__free(blk);
	return s;
}

/* r with its auxiliary reduction and its row sum, as run_inner does in one process. */
static kred_status comm_run(kred_reduction *r, const struct ring *g, int64_t nxl, int64_t nyl,
			    const void *const *args, void *out, struct kred__error *err)
{
	const void **args2 = NULL;
	void *pre_out = NULL, *rows_out = NULL;
	int64_t size = elem(r);
	double *acc = NULL;
	kred_status s = KRED_OK;

	if (r->pre) {
		int64_t rows = r->pre->axis == KRED_REDUCE_J ? nxl : nyl;

		pre_out = kred__malloc((size_t)(rows * r->pre->out_dim * size) + 1);
		args2 = kred__malloc(sizeof(*args2) * (size_t)r->n_args);
		if (!pre_out || !args2)
			s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		if (agree(g, s != KRED_OK, err)) {
			if (!s)
				s = err->status;
			goto done;
		}
		s = comm_run(r->pre, g, nxl, nyl, args, pre_out, err);
		if (s)
			goto done;
		memcpy(args2, args, sizeof(*args2) * (size_t)(r->n_args - 1));
		args2[r->n_args - 1] = pre_out;
		args = args2;
	}
	if (!r->pm_sum) {
		s = ring_run(r, g, nxl, nyl, args, out, err);
		goto done;
	}
	{
		/* A parameter's gradient: this rank's rows, summed, then summed over ranks. */
		int64_t rows = r->axis == KRED_REDUCE_J ? nxl : nyl, d = r->out_dim;

		rows_out = kred__malloc((size_t)(rows * d * size) + 1);
		acc = kred__calloc((size_t)d, sizeof(double));
		if (!rows_out || !acc)
			s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		if (agree(g, s != KRED_OK, err)) {
			if (!s)
				s = err->status;
			goto done;
		}
		s = ring_run(r, g, nxl, nyl, args, rows_out, err);
		if (s)
			goto done;
		for (int64_t i = 0; i < rows; i++)
			for (int64_t k = 0; k < d; k++)
				acc[k] += size == 8 ? ((double *)rows_out)[i * d + k]
						    : ((float *)rows_out)[i * d + k];
		if (g->c->allreduce_sum_f64(g->c->data, acc, d)) {
			s = kred__fail(err, KRED_EDEVICE, -1, "kred_comm: allreduce_sum failed");
			goto done;
		}
		for (int64_t k = 0; k < d; k++) {
			if (size == 8)
				((double *)out)[k] = acc[k];
			else
				((float *)out)[k] = (float)acc[k];
		}
	}
done:
	kred__free(acc);
	kred__free(rows_out);
	kred__free(pre_out);
	kred__free(args2);
	return s;
}

kred_status kred_reduction_run_comm(kred_reduction *r, const kred_comm *comm, int64_t nx_local,
				    int64_t ny_local, const void *const *args, void *out,
				    kred_comm_stats *stats)
{
	struct kred__error err;
	struct ring g = { comm, stats, NULL, NULL };
	int64_t total = 0, reduced_local;
	kred_status s;
	double t0 = now();

	if (!r)
		return KRED_EINVAL;
	kred__ctx_clear_error(r->ctx);
	kred__error_clear(&err);
	if (stats)
		memset(stats, 0, sizeof(*stats));
	if (!comm || comm->size < 1 || comm->rank < 0 || comm->rank >= comm->size ||
	    !comm->allgather_i64 || !comm->allreduce_max_i32 || !comm->allreduce_sum_f64 ||
	    !comm->shift_start || !comm->shift_wait)
		return kred__ctx_fail(r->ctx, KRED_EINVAL,
				      "kred_reduction_run_comm: %s", !comm ? "comm is NULL"
				      : "the comm's rank, size or callbacks are not set");
	g.counts = kred__calloc((size_t)comm->size, sizeof(int64_t));
	g.offsets = kred__calloc((size_t)comm->size, sizeof(int64_t));
	if (!g.counts || !g.offsets) {
		/* (the other ranks may wait in the allgather: there is no way to tell them) */
		s = kred__ctx_fail(r->ctx, KRED_ENOMEM, "out of memory");
		goto done;
	}
	reduced_local = r->axis == KRED_REDUCE_J ? ny_local : nx_local;
	/* every rank reaches the allgather: a local failure is agreed on after it */
	if (comm->allgather_i64(comm->data, reduced_local, g.counts)) {
		s = kred__ctx_fail(r->ctx, KRED_EDEVICE, "kred_comm: allgather failed");
		goto done;
	}
	s = KRED_OK;
	for (int q = 0; q < comm->size; q++) {
		g.offsets[q] = total;
		total += g.counts[q] > 0 ? g.counts[q] : 0;
	}
	if (!s) {
		s = kred__run_check(r, nx_local, ny_local, args, out, total);
		if (s)
			err = *kred__ctx_error(r->ctx);
	}
	if (agree(&g, s != KRED_OK, &err)) {
		if (!s)
			s = err.status;
		kred__ctx_set_error(r->ctx, &err, NULL);
		goto done;
	}
	s = comm_run(r, &g, nx_local, ny_local, args, out, &err);
	if (s)
		kred__ctx_set_error(r->ctx, &err, NULL);
done:
	if (stats)
		stats->total_s = now() - t0;
	kred__free(g.counts);
	kred__free(g.offsets);
	return s;
}
