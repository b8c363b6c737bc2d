/*
 * A block-sparse Gaussian sum: a_i = sum_j exp(-|x_i - y_j|^2 / s^2) b_j over points near
 * a sphere, computed only for the pairs of voxel clusters that can matter (ranges), and
 * checked against the dense sum.
 *
 *   block_sparse [N] [--all]
 *
 * N points (1,000,000 by default) within 0.005 of the unit sphere, width s = 0.01, in
 * float64. The points are labelled by voxels of 0.02 (kred_grid_cluster), sorted by
 * label, and a pair of clusters is kept when their centroids are closer than 5 widths
 * plus 2 sqrt(3) voxels: every point lies within sqrt(3) voxels of its cluster's
 * centroid, so every pair of points closer than 5 widths is kept, and what is dropped
 * weighs exp(-25) ~ 1.4e-11 of a term at distance 0 each.
 *
 * The dense sum of all N rows takes N^2 pairs (1e12: a quarter of an hour on 2 cores),
 * so by default it is run for 10,000 rows spread over the cloud and its time scaled by
 * N / 10,000; --all runs it for every row. The largest relative difference is over the
 * rows checked. Exit status 1 when it is above 1e-6.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kred.h>

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static unsigned long long seed = 5;

static double uniform(void)
{
	seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
	return ((double)(seed >> 11) + 0.5) * 0x1.0p-53;
}

static double gauss(void)
{
	return sqrt(-2 * log(uniform())) * cos(2 * M_PI * uniform());
}

static int cmp_double(const void *a, const void *b)
{
	double u = *(const double *)a, v = *(const double *)b;

	return (u > v) - (u < v);
}

int main(int argc, char **argv)
{
	const double s = 0.01, voxel = 0.02, cutoff = 5 * s + 2 * sqrt(3.0) * voxel;
	const char *aliases[] = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)" };
	kred_spec spec = { .formula = "Exp(-G*SqDist(X,Y))*B", .aliases = aliases,
			   .n_aliases = 4, .reduction = "Sum", .dtype = KRED_FLOAT64 };
	long n = 1000000, m = 10000;
	int all = 0, status = 1;
	kred_context *ctx = NULL;
	kred_reduction *r = NULL;
	kred_ranges rg = { 0 };
	double *x = NULL, *b = NULL, *xs = NULL, *bs = NULL, *cen = NULL, *ranged = NULL;
	double *xc = NULL, *dense = NULL, g = 1 / (s * s), t[4], times[3], worst = 0, pairs = 0;
	int32_t *lab = NULL, *crg = NULL;
	int64_t *perm = NULL, nc = 0;

	for (int k = 1; k < argc; k++) {
		if (!strcmp(argv[k], "--all"))
			all = 1;
		else if (atol(argv[k]) > 0)
			n = atol(argv[k]);
		else {
			fprintf(stderr, "usage: block_sparse [N] [--all]\n");
			return 2;
		}
	}
	if (all || m > n)
		m = n;
	x = malloc(sizeof(double) * 3 * n);
	b = malloc(sizeof(double) * n);
	xs = malloc(sizeof(double) * 3 * n);
	bs = malloc(sizeof(double) * n);
	cen = malloc(sizeof(double) * 3 * n);
	ranged = malloc(sizeof(double) * n);
	xc = malloc(sizeof(double) * 3 * m);
	dense = malloc(sizeof(double) * m);
	lab = malloc(sizeof(int32_t) * n);
	crg = malloc(sizeof(int32_t) * 2 * n);
	perm = malloc(sizeof(int64_t) * n);
	if (!x || !b || !xs || !bs || !cen || !ranged || !xc || !dense || !lab || !crg || !perm) {
		fprintf(stderr, "block_sparse: out of memory\n");
		goto done;
	}
	/* uniform on the sphere, then moved along the normal by up to 0.005 */
	for (long i = 0; i < n; i++) {
		double p[3] = { gauss(), gauss(), gauss() };
		double len = sqrt(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]);
		double rad = 1 + 0.01 * (uniform() - 0.5);

		for (int c = 0; c < 3; c++)
			x[3 * i + c] = rad * p[c] / len;
		b[i] = 0.5 + uniform();
	}
	if (kred_context_create(NULL, &ctx) || kred_reduction_create(ctx, &spec, &r))
		goto fail;
	printf("kred %s, backend: %s\n", kred_version(), kred_context_backend(ctx));
	printf("%ld points within 0.005 of the unit sphere, Gaussian of width %g, float64\n", n,
	       s);

	/* the ranges: voxel labels, points sorted by label, clusters' ranges and centroids,
	 * pairs of clusters closer than the cut-off */
	t[0] = now();
	if (kred_grid_cluster(ctx, x, n, 3, voxel, lab, &nc) ||
	    kred_cluster_sort(ctx, lab, n, nc, perm, crg))
		goto fail;
	for (long k = 0; k < n; k++) {
		memcpy(xs + 3 * k, x + 3 * perm[k], 3 * sizeof(double));
		bs[k] = b[perm[k]];
	}
	for (int64_t c = 0; c < nc; c++)
		for (int32_t k = crg[2 * c]; k < crg[2 * c + 1]; k++)
			lab[k] = (int32_t)c;
	if (kred_cluster_centroids(ctx, xs, n, 3, lab, nc, NULL, cen, NULL) ||
	    kred_ranges_from_centroids(ctx, crg, cen, nc, crg, cen, nc, 3, cutoff, &rg))
		goto fail;
	t[1] = now();
	for (int64_t blk = 0; blk < rg.n_blocks_i; blk++)
		for (int32_t k = blk ? rg.slices_i[blk - 1] : 0; k < rg.slices_i[blk]; k++)
			pairs += (double)(rg.ranges_i[2 * blk + 1] - rg.ranges_i[2 * blk]) *
				 (rg.redranges_j[2 * k + 1] - rg.redranges_j[2 * k]);
	printf("ranges: %lld clusters of %.1f points (voxels of %g), cut-off %.4f: %.3g pairs, "
	       "%.3f%% of all, in %.3f s\n",
	       (long long)nc, (double)n / (double)nc, voxel, cutoff, pairs,
	       100 * pairs / ((double)n * (double)n), t[1] - t[0]);

	/* the ranged run, three times: the median */
	{
		const void *args[4] = { xs, xs, bs, &g };

		for (int k = 0; k < 3; k++) {
			t[2] = now();
			if (kred_reduction_run_ranges(r, n, n, args, ranged, &rg))
				goto fail;
			times[k] = now() - t[2];
		}
		qsort(times, 3, sizeof(double), cmp_double);
		printf("ranged run: %.3f s (median of 3), %.3g pairs/s\n", times[1],
		       pairs / times[1]);
	}
	/* the dense run on m rows spread over the cloud (every row with --all) */
	{
		const void *args[4] = { xc, xs, bs, &g };
		double td;

		for (long k = 0; k < m; k++)
			memcpy(xc + 3 * k, xs + 3 * (k * (n / m)), 3 * sizeof(double));
		t[2] = now();
		if (kred_reduction_run(r, m, n, args, dense))
			goto fail;
		t[3] = now();
		td = (t[3] - t[2]) * ((double)n / (double)m);
		for (long k = 0; k < m; k++) {
			double e = fabs(ranged[k * (n / m)] - dense[k]) / fabs(dense[k]);

			if (!(e <= worst))
				worst = e;
		}
		printf("dense run: %.3f s%s, %.3g pairs/s\n", td,
		       m < n ? " (scaled from its run on 10,000 rows)" : "",
		       (double)m * (double)n / (t[3] - t[2]));
		printf("ranged vs dense: %.1fx faster (%.1fx with the clustering); largest "
		       "relative difference over %ld rows: %.3g\n",
		       td / times[1], td / (times[1] + t[1] - t[0]), m, worst);
	}
	status = worst <= 1e-6 ? 0 : 1;
	if (status)
		fprintf(stderr, "block_sparse: the difference is above 1e-6\n");
	goto done;
fail:
	fprintf(stderr, "block_sparse: %s\n", kred_errmsg(ctx));
done:
	kred_ranges_free(&rg);
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
	free(x);
	free(b);
	free(xs);
	free(bs);
	free(cen);
	free(ranged);
	free(xc);
	free(dense);
	free(lab);
	free(crg);
	free(perm);
	return status;
}
