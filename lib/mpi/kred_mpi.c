/* libkred_mpi: the kred_comm of kred.h made of MPI calls, on a duplicate of the caller's
 * communicator, and kred_mpi_run on top of it. See kred_mpi.h. */
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "kred_mpi.h"

/* Bytes per message (and per allreduce, in doubles): MPI counts are ints, and a block of
 * the ring may hold more than 2 GiB. The tests build this file with a small value to run
 * the chunked paths. */
#ifndef KRED_MPI_CHUNK
#define KRED_MPI_CHUNK (1 << 30)
#endif

/* Every message of the ring carries this tag: the communicator is kred's own duplicate,
 * and MPI delivers the messages of one sender, tag and communicator in the order they
 * were sent, so the k-th chunk sent is the k-th received even with exchanges in flight
 * one after another. */
#define RING_TAG 0x6b72

struct kmpi {
	MPI_Comm comm;
	int left, right; /* the ranks this one receives from and sends to */
};

/* One exchange in flight: the receives first, then the sends; the statuses let
 * shift_wait check that every chunk came whole. */
struct shift {
	int n_recv, n;
	int done; /* progress saw every request complete: the statuses are filled */
	size_t recv_bytes;
	MPI_Status *status;
	MPI_Request req[];
};

static size_t n_chunks(size_t bytes)
{
	/* an empty block is still one (empty) message: both sides count alike */
	return bytes ? (bytes - 1) / KRED_MPI_CHUNK + 1 : 1;
}

static int chunk_len(size_t bytes, size_t k)
{
	size_t left = bytes - k * (size_t)KRED_MPI_CHUNK;

	return (int)(left < KRED_MPI_CHUNK ? left : KRED_MPI_CHUNK);
}

/* Chunk k of a buffer (a NULL buffer stays NULL: an empty block may come without one). */
static void *chunk_at(const void *p, size_t k)
{
	return k ? (char *)p + k * (size_t)KRED_MPI_CHUNK : (void *)p;
}

static int allgather_i64(void *data, int64_t mine, int64_t *all)
{
	struct kmpi *m = data;

	return MPI_Allgather(&mine, 1, MPI_INT64_T, all, 1, MPI_INT64_T, m->comm);
}

static int allreduce_max_i32(void *data, int mine, int *out)
{
	struct kmpi *m = data;

	return MPI_Allreduce(&mine, out, 1, MPI_INT, MPI_MAX, m->comm);
}

static int allreduce_sum_f64(void *data, double *buf, int64_t n)
{
	struct kmpi *m = data;
	const int64_t step = KRED_MPI_CHUNK / (int64_t)sizeof(double);

	if (n < 0)
		return -1;
	for (int64_t off = 0; off < n; off += step) {
		int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)(n - off < step ? n - off : step),
				       MPI_DOUBLE, MPI_SUM, m->comm);

		if (rc != MPI_SUCCESS)
			return rc;
	}
	return 0;
}

/* Takes back requests of an exchange that failed: each is cancelled, then waited for,
 * which MPI guarantees to return whatever the other ranks do. Then MPI no longer reads or
 * writes the caller's buffers, which kred frees on an error. */
static void cancel_all(MPI_Request *req, int n)
{
	for (int k = 0; k < n; k++) {
		if (req[k] == MPI_REQUEST_NULL)
			continue;
		MPI_Cancel(&req[k]);
		MPI_Wait(&req[k], MPI_STATUS_IGNORE);
	}
}

static int shift_start(void *data, const void *send, size_t send_bytes, void *recv,
		       size_t recv_bytes, void **req)
{
	struct kmpi *m = data;
	size_t nr = n_chunks(recv_bytes), ns = n_chunks(send_bytes);
	size_t at = offsetof(struct shift, req) + (nr + ns) * sizeof(MPI_Request);
	struct shift *s;
	int rc = MPI_SUCCESS, k;

	*req = NULL;
	if (nr > INT_MAX / 2 || ns > INT_MAX / 2)
		return -1;
	/* the statuses follow the requests, at their own alignment */
	at = (at + _Alignof(MPI_Status) - 1) / _Alignof(MPI_Status) * _Alignof(MPI_Status);
	s = malloc(at + (nr + ns) * sizeof(MPI_Status));
	if (!s)
		return -1;
	s->n_recv = (int)nr;
	s->n = (int)(nr + ns);
	s->done = 0;
	s->recv_bytes = recv_bytes;
	s->status = (MPI_Status *)((char *)s + at);
	/* The receives are posted before the sends, so that a block that arrives early
	 * lands in place rather than in MPI's buffers for unexpected messages. */
	for (k = 0; k < s->n && rc == MPI_SUCCESS; k++) {
		if (k < s->n_recv)
			rc = MPI_Irecv(chunk_at(recv, (size_t)k), chunk_len(recv_bytes, (size_t)k),
				       MPI_BYTE, m->left, RING_TAG, m->comm, &s->req[k]);
		else
			rc = MPI_Isend(chunk_at(send, (size_t)(k - s->n_recv)),
				       chunk_len(send_bytes, (size_t)(k - s->n_recv)), MPI_BYTE,
				       m->right, RING_TAG, m->comm, &s->req[k]);
	}
	if (rc != MPI_SUCCESS) {
		cancel_all(s->req, k - 1);
		free(s);
		return rc;
	}
	*req = s;
	return 0;
}

static int shift_wait(void *data, void *req)
{
	struct shift *s = req;
	int rc, count;

	(void)data;
	if (!s)
		return -1;
	rc = s->done ? MPI_SUCCESS : MPI_Waitall(s->n, s->req, s->status);
	/* after an error, requests that had not completed are still in flight */
	if (rc == MPI_ERR_IN_STATUS)
		for (int k = 0; k < s->n; k++)
			if (s->status[k].MPI_ERROR == MPI_ERR_PENDING)
				cancel_all(&s->req[k], 1);
	/* A block shorter than the receiver expected would leave the end of its buffer
	 * stale: the sizes of the two sides disagree, which is an error. */
	for (int k = 0; k < s->n_recv && rc == MPI_SUCCESS; k++) {
		rc = MPI_Get_count(&s->status[k], MPI_BYTE, &count);
		if (rc == MPI_SUCCESS && count != chunk_len(s->recv_bytes, (size_t)k))
			rc = -1;
	}
	free(s);
	return rc;
}

/* Moves the exchange on: Open MPI, like most MPIs, moves a large message only inside an
 * MPI call (its shared-memory and TCP transports copy it in pieces), so without this the
 * whole transfer would happen in shift_wait, after the computation it should overlap.
 * MPI_Testall completes nothing it should not; when it finds every request done it fills
 * the statuses and frees the requests, and shift_wait must not wait on them again. */
static int progress(void *data, void *req)
{
	struct shift *s = req;
	int flag = 0, rc;

	(void)data;
	if (!s)
		return -1;
	if (s->done)
		return 0;
	rc = MPI_Testall(s->n, s->req, &flag, s->status);
	if (rc == MPI_SUCCESS && flag)
		s->done = 1;
	return rc == MPI_SUCCESS ? 0 : rc;
}

/* Duplicates comm into m and fills c: collective over comm, allocates nothing. */
static kred_status comm_open(struct kmpi *m, kred_comm *c, MPI_Comm comm)
{
	int init = 0, fin = 0, rank, size;

	memset(c, 0, sizeof(*c));
	m->comm = MPI_COMM_NULL;
	if (comm == MPI_COMM_NULL || MPI_Initialized(&init) != MPI_SUCCESS || !init ||
	    MPI_Finalized(&fin) != MPI_SUCCESS || fin)
		return KRED_EINVAL;
	if (MPI_Comm_dup(comm, &m->comm) != MPI_SUCCESS)
		return KRED_EDEVICE;
	/* MPI's default on a communicator aborts the job on an error; kred rather returns
	 * it, and every rank learns of it through kred's own agreement. */
	if (MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN) != MPI_SUCCESS ||
	    MPI_Comm_rank(m->comm, &rank) != MPI_SUCCESS ||
	    MPI_Comm_size(m->comm, &size) != MPI_SUCCESS) {
		MPI_Comm_free(&m->comm);
		return KRED_EDEVICE;
	}
	m->left = (rank - 1 + size) % size;
	m->right = (rank + 1) % size;
	c->struct_size = sizeof(*c);
	c->data = m;
	c->rank = rank;
	c->size = size;
	c->allgather_i64 = allgather_i64;
	c->allreduce_max_i32 = allreduce_max_i32;
	c->allreduce_sum_f64 = allreduce_sum_f64;
	c->shift_start = shift_start;
	c->shift_wait = shift_wait;
	c->progress = progress;
	return KRED_OK;
}

kred_status kred_mpi_comm_init(kred_comm *c, MPI_Comm comm)
{
	struct kmpi *m;
	kred_status st;

	if (!c)
		return KRED_EINVAL;
	memset(c, 0, sizeof(*c));
	m = malloc(sizeof(*m));
	if (!m)
		return KRED_ENOMEM;
	st = comm_open(m, c, comm);
	if (st != KRED_OK)
		free(m);
	return st;
}

void kred_mpi_comm_free(kred_comm *c)
{
	struct kmpi *m = c ? c->data : NULL;

	if (!m)
		return;
	if (m->comm != MPI_COMM_NULL)
		MPI_Comm_free(&m->comm);
	free(m);
	memset(c, 0, sizeof(*c));
}

kred_status kred_mpi_run_stats(kred_reduction *r, MPI_Comm comm, int64_t nx_local,
			       int64_t ny_local, const void *const *args, void *out,
			       kred_comm_stats *stats)
{
	struct kmpi m;
	kred_comm c;
	kred_status st = comm_open(&m, &c, comm);
	int bad, any_bad = 1;

	if (st != KRED_OK)
		return st;
	/* A rank without a reduction cannot take part in kred's protocol: every rank
	 * learns it here and returns, where the others would wait for it forever. */
	bad = r == NULL;
	if (MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, m.comm) != MPI_SUCCESS)
		st = KRED_EDEVICE;
	else if (any_bad)
		st = bad ? KRED_EINVAL : KRED_EDEVICE;
	else
		st = kred_reduction_run_comm(r, &c, nx_local, ny_local, args, out, stats);
	MPI_Comm_free(&m.comm);
	return st;
}

kred_status kred_mpi_run(kred_reduction *r, MPI_Comm comm, int64_t nx_local, int64_t ny_local,
			 const void *const *args, void *out)
{
	return kred_mpi_run_stats(r, comm, nx_local, ny_local, args, out, NULL);
}
