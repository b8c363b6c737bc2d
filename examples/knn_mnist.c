/* k-nearest neighbours in 784 dimensions, MNIST's shape: ArgKMin(10) of squared distances
 * between 28 x 28 images, on a synthetic set of the same size when no MNIST is at hand
 * (ten random "digit" templates, each sample a template with pixels dropped and noise).
 * kred writes the 784-dimensional distance as a loop (lib/emit.c), so the kernel
 * compiles in a fraction of a second whatever the dimension.
 *
 *   knn_mnist [TRAIN [QUERIES]]     default 6,000 and 1,000; MNIST is 60,000 and 10,000 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <kred.h>

enum { D = 784, K = 10, CLASSES = 10 };

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static unsigned seed = 5;

static double uniform(void)
{
	seed = seed * 1664525u + 1013904223u;
	return ((seed >> 8) + 0.5) / (double)(1u << 24);
}

/* n samples: template c with each pixel dropped with probability 0.6, plus noise. */
static void digits(long n, const float *templates, float *p, int *label)
{
	for (long i = 0; i < n; i++) {
		int c = (int)(uniform() * CLASSES);

		label[i] = c;
		for (int k = 0; k < D; k++) {
			double v = uniform() < 0.6 ? 0 : templates[c * D + k];

			p[i * D + k] = (float)(v + 1.5 * (uniform() - 0.5));
		}
	}
}

static double sqdist(const float *a, const float *b)
{
	double s = 0;

	for (int k = 0; k < D; k++) {
		double d = (double)a[k] - b[k];

		s += d * d;
	}
	return s;
}

int main(int argc, char **argv)
{
	const char *aliases[] = { "X = Vi(784)", "Y = Vj(784)" };
	kred_spec spec = { .formula = "SqDist(X, Y)", .aliases = aliases, .n_aliases = 2,
			   .reduction = "ArgKMin(10)", .dtype = KRED_FLOAT32 };
	kred_context *ctx = NULL;
	kred_reduction *r = NULL;
	long ny = argc > 1 ? atol(argv[1]) : 6000, nx = argc > 2 ? atol(argv[2]) : 1000;
	long right = 0, checked = 0, same = 0;
	float *templates = malloc(sizeof(float) * CLASSES * D), *x = NULL, *y = NULL, *idx = NULL;
	int *xl = NULL, *yl = NULL, status = 1;
	double t0, t1, t2;

	if (ny < K || nx < 1) {
		fprintf(stderr, "usage: knn_mnist [TRAIN >= %d [QUERIES >= 1]]\n", K);
		return 2;
	}
	x = malloc(sizeof(float) * (size_t)(nx * D));
	y = malloc(sizeof(float) * (size_t)(ny * D));
	idx = malloc(sizeof(float) * (size_t)(nx * K));
	xl = malloc(sizeof(int) * (size_t)nx);
	yl = malloc(sizeof(int) * (size_t)ny);
	if (!templates || !x || !y || !idx || !xl || !yl)
		goto done;
	for (int k = 0; k < CLASSES * D; k++) /* about a fifth of the pixels are ink */
		templates[k] = uniform() < 0.2 ? (float)(0.5 + 0.5 * uniform()) : 0;
	digits(ny, templates, y, yl);
	digits(nx, templates, x, xl);

	t0 = now();
	if (kred_context_create(NULL, &ctx) || kred_reduction_create(ctx, &spec, &r)) {
		fprintf(stderr, "knn_mnist: %s\n", kred_errmsg(ctx));
		goto done;
	}
	printf("kred %s, backend %s: %ld queries, %ld training images of %d pixels, K = %d\n",
	       kred_version(), kred_context_backend(ctx), nx, ny, D, K);
	/* a first small run compiles the kernel (or finds it in the cache) */
	if (kred_reduction_run(r, 1, K, (const void *[]){ x, y }, idx)) {
		fprintf(stderr, "knn_mnist: %s\n", kred_errmsg(ctx));
		goto done;
	}
	t1 = now();
	if (kred_reduction_run(r, nx, ny, (const void *[]){ x, y }, idx)) {
		fprintf(stderr, "knn_mnist: %s\n", kred_errmsg(ctx));
		goto done;
	}
	t2 = now();

	for (long i = 0; i < nx; i++) {
		int votes[CLASSES] = { 0 }, best = 0;

		for (int k = 0; k < K; k++)
			votes[yl[(long)idx[i * K + k]]]++;
		for (int c = 1; c < CLASSES; c++)
			if (votes[c] > votes[best])
				best = c;
		right += best == xl[i];
	}
	/* a few queries by brute force, in double: the K-th nearest distance must agree to
	 * float32's rounding of a sum of 784 squares (~1e-4 relative leaves a margin) */
	for (long i = 0; i < nx; i += nx / 5 + 1, checked++) {
		double dist[K], kth, mine;
		int n = 0;

		for (long j = 0; j < ny; j++) {
			double d2 = sqdist(x + i * D, y + j * D);
			int at;

			if (n < K)
				at = n++;
			else if (d2 >= dist[K - 1])
				continue;
			else
				at = K - 1;
			while (at > 0 && dist[at - 1] > d2) { /* insertion into the sorted K */
				dist[at] = dist[at - 1];
				at--;
			}
			dist[at] = d2;
		}
		kth = dist[K - 1];
		mine = sqdist(x + i * D, y + (long)idx[i * K + K - 1] * D);
		same += fabs(mine - kth) <= 1e-4 * kth;
	}
	printf("compile %.3f s; search %.3f s (%.3g pairs/s); %d-NN vote right on %.1f%%; "
	       "brute force agrees on %ld of %ld queries\n", t1 - t0, t2 - t1,
	       (double)nx * (double)ny / (t2 - t1), K, 100.0 * right / nx, same, checked);
	status = same == checked ? 0 : 1;
done:
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
	free(templates);
	free(x);
	free(y);
	free(idx);
	free(xl);
	free(yl);
	return status;
}
