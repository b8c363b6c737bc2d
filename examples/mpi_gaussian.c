/* A Gaussian convolution over the ranks of an MPI job,
 *
 *	a_i = sum_j exp(-g |x_i - y_j|^2) b_j,
 *
 * with kred_mpi_run: every rank generates its own slice of the points (the same whole data
 * for any number of ranks), picks its backend, and gets its own rows of a. Rank 0 prints
 * the backend of every rank, a checksum of the whole of a (the same for any number of
 * ranks, up to rounding), a few values checked against a direct sum, and the time.
 *
 *	mpirun -np 4 ./mpi_gaussian [N [BACKEND]]
 *
 * N: points on each side (default 100000); BACKEND: that of every rank ("host",
 * "opencl:1", ...; default $KRED_BACKEND, else "auto"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kred_mpi.h>

enum { D = 3, E = 1 };

static const double gamma_ = 20.0; /* 1 / (2 sigma^2), sigma = 0.16 */

/* Coordinate k of point p of a cloud, from a hash of its global index: any rank can
 * generate any point, so the whole data does not depend on how it is split. */
static float coord(int cloud, long p, int k)
{
	unsigned long long h = (unsigned long long)p * 0x9e3779b97f4a7c15ULL +
			       (unsigned long long)(cloud * 8 + k) * 0xbf58476d1ce4e5b9ULL;

	h ^= h >> 31;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 29;
	return (float)(h >> 40) / (float)(1 << 24);
}

/* Rows [first, first + n) of a cloud: x (cloud 0), y (cloud 1), b (cloud 2). */
static float *slice(int cloud, long first, long n, int dim)
{
	float *p = malloc(sizeof(float) * (size_t)(n * dim + 1));

	for (long r = 0; p && r < n; r++)
		for (int k = 0; k < dim; k++)
			p[r * dim + k] = coord(cloud, first + r, k);
	return p;
}

/* a_i the slow way, in double, over every y_j of the whole data. */
static double direct(long i, long n)
{
	double s = 0;

	for (long j = 0; j < n; j++) {
		double d2 = 0;

		for (int k = 0; k < D; k++) {
			double d = (double)coord(0, i, k) - coord(1, j, k);

			d2 += d * d;
		}
		s += exp(-gamma_ * d2) * coord(2, j, 0);
	}
	return s;
}

int main(int argc, char **argv)
{
	const char *aliases[] = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)" };
	kred_spec spec = { .formula = "Exp(-G * SqDist(X, Y)) * B", .aliases = aliases,
			   .n_aliases = 4, .reduction = "Sum", .dtype = KRED_FLOAT32 };
	kred_context_options opt = { .struct_size = sizeof(opt) };
	kred_context *ctx = NULL;
	kred_reduction *r = NULL;
	float *x = NULL, *y = NULL, *b = NULL, *a = NULL, g = (float)gamma_;
	long n, first, mine;
	int rank, size, failed = 0;
	double t0, t1, sum = 0, checksum = 0, elapsed;
	kred_status st;
	char name[128];

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	n = argc > 1 ? atol(argv[1]) : 100000;
	opt.backend = argc > 2 ? argv[2] : NULL; /* NULL: $KRED_BACKEND, else "auto" */
	if (n < 1)
		n = 1;

	/* this rank's rows: an even split, the first n % size ranks one more */
	mine = n / size + (rank < n % size);
	first = rank * (n / size) + (rank < n % size ? rank : n % size);
	x = slice(0, first, mine, D);
	y = slice(1, first, mine, D);
	b = slice(2, first, mine, E);
	a = malloc(sizeof(float) * (size_t)(mine * E + 1));

	if (!x || !y || !b || !a)
		fprintf(stderr, "rank %d: out of memory\n", rank);
	else if (kred_context_create(&opt, &ctx) != KRED_OK ||
		 kred_reduction_create(ctx, &spec, &r) != KRED_OK)
		fprintf(stderr, "rank %d: %s\n", rank, kred_errmsg(ctx));
	snprintf(name, sizeof(name), "%s", ctx ? kred_context_backend(ctx) : "none");

	/* Every rank calls, even one without a reduction (r = NULL): then every rank returns
	 * an error rather than waiting for it. The first run compiles the kernels (or finds
	 * them in the cache); the second is timed. */
	{
		const void *args[] = { x, y, b, &g };

		st = kred_mpi_run(r, MPI_COMM_WORLD, mine, mine, args, a);
		MPI_Barrier(MPI_COMM_WORLD);
		t0 = MPI_Wtime();
		if (st == KRED_OK) /* the same on every rank */
			st = kred_mpi_run(r, MPI_COMM_WORLD, mine, mine, args, a);
		t1 = MPI_Wtime();
	}
	if (st != KRED_OK) {
		fprintf(stderr, "rank %d: kred_mpi_run: %s: %s\n", rank, kred_status_name(st),
			r ? kred_errmsg(ctx) : "no reduction on this rank");
		failed = 1;
	}
	for (long i = 0; !failed && i < mine * E; i++)
		sum += a[i];
	elapsed = t1 - t0;
	MPI_Reduce(&sum, &checksum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
	MPI_Allreduce(MPI_IN_PLACE, &elapsed, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
	MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);

	/* the backends, in rank order */
	for (int q = 0; q < size; q++) {
		if (q && rank == q)
			MPI_Send(name, sizeof(name), MPI_CHAR, 0, 0, MPI_COMM_WORLD);
		if (rank == 0) {
			if (q)
				MPI_Recv(name, sizeof(name), MPI_CHAR, q, 0, MPI_COMM_WORLD,
					 MPI_STATUS_IGNORE);
			printf("rank %d: %s\n", q, name);
		}
	}
	if (rank == 0 && !failed) {
		double err = 0;

		printf("%ld points on each side over %d ranks, %.3f s (the slowest rank), "
		       "%.3g pairs/s\n", n, size, elapsed, (double)n * (double)n / elapsed);
		printf("checksum sum_i a_i = %.6e\n", checksum);
		/* rank 0 holds the first rows of a; the whole y is known from the hash */
		for (long i = 0; i < mine && i < 3; i++) {
			double want = direct(i, n);

			err = fmax(err, fabs(a[i] - want) / want);
			printf("a[%ld] = %.6f (direct sum %.6f)\n", i, a[i], want);
		}
		printf("max relative error %.1e\n", err);
		failed = err > 1e-4;
	}
	MPI_Bcast(&failed, 1, MPI_INT, 0, MPI_COMM_WORLD);
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
	free(x);
	free(y);
	free(b);
	free(a);
	MPI_Finalize();
	return failed;
}
