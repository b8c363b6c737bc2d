/* The helpers that make ranges from point clouds (lib/cluster.c): voxel labels against
 * labels computed here, the sort and the clusters' ranges and centroids, the triples of a
 * mask written out by hand, the centroid cut-off against the mask of all pairs tested
 * here, the bad inputs; and a ranged Gaussian sum on clustered points against the dense
 * one, where the cut-off keeps every pair that matters. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kred.h"
#include "probe.h"

static kred_context *ctx;
static uint64_t rng;

static double uniform(void)
{
	rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
	return (double)(rng >> 11) * 0x1.0p-53;
}

static void setup(void)
{
	kred_context_options o = { 0 };

	o.struct_size = sizeof(o);
	o.backend = "host";
	ck_assert_msg(kred_context_create(&o, &ctx) == KRED_OK, "%s", kred_errmsg(ctx));
	rng = 7;
}

static void teardown(void)
{
	kred_context_destroy(ctx);
	ctx = NULL;
}

/* Labels: two points in a voxel share a label, and labels follow the voxels'
 * lexicographic order, counted from the smallest coordinates. */
START_TEST(test_grid_labels)
{
	/* voxel 1, from the lower corner (-0.5, 10): cells (0,0) (0,0) (1,0) (0,2) (1,0) */
	const double x[] = { -0.5, 10, 0.2, 10.9, 0.6, 10.1, 0.1, 12.5, 1.4, 10.5 };
	const int32_t want[] = { 0, 0, 2, 1, 2 };
	int32_t lab[5];
	int64_t nc = -1;

	ck_assert_int_eq(kred_grid_cluster(ctx, x, 5, 2, 1.0, lab, &nc), KRED_OK);
	ck_assert_int_eq(nc, 3);
	for (int k = 0; k < 5; k++)
		ck_assert_msg(lab[k] == want[k], "point %d: label %d, want %d", k, lab[k], want[k]);
	ck_assert_int_eq(kred_grid_cluster(ctx, x, 0, 2, 1.0, lab, &nc), KRED_OK);
	ck_assert_int_eq(nc, 0);
	/* 2^40 voxels a side: coordinates that do not pack into 63 bits (sorted otherwise) */
	{
		const double c[] = { 1, 1, 0, 1, 1, 0, 0, 0, 1, 1 };
		const int32_t w[] = { 3, 1, 2, 0, 3 };

		ck_assert_int_eq(kred_grid_cluster(ctx, c, 5, 2, 0x1p-40, lab, &nc), KRED_OK);
		ck_assert_int_eq(nc, 4);
		for (int k = 0; k < 5; k++)
			ck_assert_int_eq(lab[k], w[k]);
	}
}
END_TEST

/* Random points in 3-D: the same voxel iff the same label, and the labels numbered in
 * the voxels' order, checked against the voxel coordinates computed here. */
START_TEST(test_grid_random)
{
	enum { N = 5000 };
	static double x[N * 3];
	static int32_t lab[N];
	int64_t nc, q[N][3], seen = 0;
	double lo[3] = { INFINITY, INFINITY, INFINITY }, v = 0.13;

	for (int k = 0; k < N * 3; k++)
		x[k] = 3 * uniform() - 1;
	ck_assert_int_eq(kred_grid_cluster(ctx, x, N, 3, v, lab, &nc), KRED_OK);
	for (int k = 0; k < N; k++)
		for (int c = 0; c < 3; c++)
			lo[c] = fmin(lo[c], x[k * 3 + c]);
	for (int k = 0; k < N; k++)
		for (int c = 0; c < 3; c++)
			q[k][c] = (int64_t)floor((x[k * 3 + c] - lo[c]) / v);
	for (int a = 0; a < N; a += 7) {
		for (int b = 0; b < N; b++) {
			int cmp = memcmp(q[a], q[b], sizeof(q[a])) == 0 ? 0
				  : (q[a][0] != q[b][0]   ? q[a][0] < q[b][0]
				     : q[a][1] != q[b][1] ? q[a][1] < q[b][1]
							  : q[a][2] < q[b][2])
					  ? -1
					  : 1;
			int lc = (lab[a] > lab[b]) - (lab[a] < lab[b]);

			ck_assert_msg(cmp == lc, "points %d and %d: voxels compare %d, labels %d", a,
				      b, cmp, lc);
		}
	}
	for (int k = 0; k < N; k++) {
		ck_assert(lab[k] >= 0 && lab[k] < nc);
		seen |= lab[k] == nc - 1;
	}
	ck_assert(seen);
}
END_TEST

/* The sort is stable and the ranges cover each cluster's points; centroids are weighted
 * means, an empty cluster at 0. */
START_TEST(test_sort_centroids)
{
	const int32_t lab[] = { 2, 0, 2, 3, 0, 2 };
	const int64_t want_perm[] = { 1, 4, 0, 2, 5, 3 };
	const int32_t want_rng[] = { 0, 2, 2, 2, 2, 5, 5, 6 };
	const double x[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, w[] = { 1, 1, 3, 2, 1, 0 };
	int64_t perm[6];
	int32_t rg[8];
	double cen[8], cw[4];

	ck_assert_int_eq(kred_cluster_sort(ctx, lab, 6, 4, perm, rg), KRED_OK);
	for (int k = 0; k < 6; k++)
		ck_assert_int_eq(perm[k], want_perm[k]);
	for (int k = 0; k < 8; k++)
		ck_assert_int_eq(rg[k], want_rng[k]);
	ck_assert_int_eq(kred_cluster_centroids(ctx, x, 6, 2, lab, 4, w, cen, cw), KRED_OK);
	/* cluster 0: points 1 (3, 4) w 1 and 4 (9, 10) w 1; 2: points 0 (1, 2) w 1, 2 (5, 6)
	 * w 3, 5 (11, 12) w 0; 3: point 3 (7, 8) w 2 */
	ck_assert(cen[0] == 6 && cen[1] == 7 && cw[0] == 2);
	ck_assert(cen[2] == 0 && cen[3] == 0 && cw[1] == 0);
	ck_assert(cen[4] == 4 && cen[5] == 5 && cw[2] == 4);
	ck_assert(cen[6] == 7 && cen[7] == 8 && cw[3] == 2);
	ck_assert_int_eq(kred_cluster_centroids(ctx, x, 6, 2, lab, 4, NULL, cen, NULL), KRED_OK);
	ck_assert(cen[4] == 17.0 / 3 && cen[5] == 20.0 / 3);
}
END_TEST

/* A mask written out: clusters that follow each other join into one interval; the j
 * triple is the transposed mask. */
START_TEST(test_from_mask)
{
	const int32_t ri[] = { 0, 3, 3, 5, 5, 9 }, rj[] = { 0, 2, 2, 4, 4, 4, 4, 7 };
	/* i 0 meets j 0, 1, 3: [0, 2) [2, 4) [4, 7), one interval (j 2 is empty); i 1
	 * nothing; i 2 meets j 2 (empty) and 3 */
	const unsigned char keep[] = { 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1 };
	const int32_t want_slc_i[] = { 1, 1, 2 }, want_red_j[] = { 0, 7, 4, 7 };
	const int32_t want_slc_j[] = { 1, 2, 3, 5 };
	const int32_t want_red_i[] = { 0, 3, 0, 3, 5, 9, 0, 3, 5, 9 };
	kred_ranges r;

	ck_assert_int_eq(kred_ranges_from_mask(ctx, ri, 3, rj, 4, keep, &r), KRED_OK);
	ck_assert_int_eq(r.n_blocks_i, 3);
	ck_assert_int_eq(r.n_blocks_j, 4);
	for (int k = 0; k < 6; k++)
		ck_assert_int_eq(r.ranges_i[k], ri[k]);
	for (int k = 0; k < 8; k++)
		ck_assert_int_eq(r.ranges_j[k], rj[k]);
	for (int k = 0; k < 3; k++)
		ck_assert_int_eq(r.slices_i[k], want_slc_i[k]);
	for (int k = 0; k < 4; k++)
		ck_assert_int_eq(r.redranges_j[k], want_red_j[k]);
	for (int k = 0; k < 4; k++)
		ck_assert_int_eq(r.slices_j[k], want_slc_j[k]);
	/* j 3 meets i 0 [0, 3) and i 2 [5, 9), which do not follow each other; j 2, an
	 * empty block, keeps its list */
	for (int k = 0; k < 10; k++)
		ck_assert_int_eq(r.redranges_i[k], want_red_i[k]);
	kred_ranges_free(&r);
	ck_assert(r.ranges_i == NULL && r.n_blocks_i == 0);
}
END_TEST

/* The centroid cut-off, through the cells (d <= 3) and every pair (d = 5), gives the
 * triples of the mask of all pairs closer than the cut-off. Loop index: d = 1, 2, 3, 5. */
START_TEST(test_from_centroids)
{
	const int dims[] = { 1, 2, 3, 5 }, d = dims[_i];
	enum { NI = 300, NJ = 250 };
	static double ci[NI * 5], cj[NJ * 5];
	static unsigned char keep[NI * NJ];
	static int32_t ri[2 * NI], rj[2 * NJ];
	double cut = 0.35;
	kred_ranges a, b;
	int64_t kept = 0;

	for (int k = 0; k < NI; k++) {
		ri[2 * k] = 3 * k;
		ri[2 * k + 1] = 3 * k + (k % 4 ? 3 : 0); /* some empty */
	}
	for (int k = 0; k < NJ; k++) {
		rj[2 * k] = 2 * k;
		rj[2 * k + 1] = 2 * k + 2;
	}
	/* centroids on a coarse lattice too, so that distances equal to the cut-off and
	 * centroids on cell edges occur */
	for (int k = 0; k < NI * d; k++)
		ci[k] = k % 3 ? 2 * uniform() - 0.5 : 0.35 * (int)(4 * uniform());
	for (int k = 0; k < NJ * d; k++)
		cj[k] = k % 3 ? 2 * uniform() - 0.5 : 0.35 * (int)(4 * uniform());
	for (int p = 0; p < NI; p++)
		for (int q = 0; q < NJ; q++) {
			double d2 = 0;

			for (int e = 0; e < d; e++)
				d2 += (ci[p * d + e] - cj[q * d + e]) * (ci[p * d + e] - cj[q * d + e]);
			keep[p * NJ + q] = d2 < cut * cut;
			kept += keep[p * NJ + q];
		}
	ck_assert(kept > 0 && kept < NI * NJ);
	ck_assert_int_eq(kred_ranges_from_mask(ctx, ri, NI, rj, NJ, keep, &a), KRED_OK);
	ck_assert_int_eq(kred_ranges_from_centroids(ctx, ri, ci, NI, rj, cj, NJ, d, cut, &b),
			 KRED_OK);
	ck_assert_int_eq(a.n_blocks_i, b.n_blocks_i);
	ck_assert_int_eq(a.n_blocks_j, b.n_blocks_j);
	for (int k = 0; k < NI; k++)
		ck_assert_msg(a.slices_i[k] == b.slices_i[k], "d = %d, slices_i[%d]: %d vs %d", d,
			      k, a.slices_i[k], b.slices_i[k]);
	for (int k = 0; k < 2 * a.slices_i[NI - 1]; k++)
		ck_assert_int_eq(a.redranges_j[k], b.redranges_j[k]);
	for (int k = 0; k < NJ; k++)
		ck_assert_int_eq(a.slices_j[k], b.slices_j[k]);
	for (int k = 0; k < 2 * a.slices_j[NJ - 1]; k++)
		ck_assert_int_eq(a.redranges_i[k], b.redranges_i[k]);
	kred_ranges_free(&a);
	kred_ranges_free(&b);
}
END_TEST

START_TEST(test_bad)
{
	const double x[] = { 0, 1, NAN, 2 }, far[] = { 0, 0, 1e300, 1e300 };
	const int32_t lab[] = { 0, 3 }, rg[] = { 0, 1, 1, 2 }, bad_rg[] = { 0, 1, 2, 1 };
	int32_t l[2];
	int64_t nc, perm[2];
	int32_t out_rg[8];
	double cen[8];
	kred_ranges r;

	ck_assert_int_eq(kred_grid_cluster(ctx, x, 2, 2, 0.0, l, &nc), KRED_EINVAL);
	ck_assert(strstr(kred_errmsg(ctx), "voxel size is 0"));
	ck_assert_int_eq(kred_grid_cluster(ctx, x, 2, 2, NAN, l, &nc), KRED_EINVAL);
	ck_assert_int_eq(kred_grid_cluster(ctx, x, 2, 2, 1.0, l, &nc), KRED_EINVAL);
	ck_assert_msg(strstr(kred_errmsg(ctx), "point 1, coordinate 0 is nan"), "%s",
		      kred_errmsg(ctx));
	ck_assert_int_eq(kred_grid_cluster(ctx, far, 2, 2, 1e-300, l, &nc), KRED_EOVERFLOW);
	ck_assert_int_eq(kred_cluster_sort(ctx, lab, 2, 3, perm, out_rg), KRED_EINVAL);
	ck_assert_msg(strstr(kred_errmsg(ctx), "labels[1] = 3, not within [0, n_clusters = 3)"),
		      "%s", kred_errmsg(ctx));
	ck_assert_int_eq(kred_cluster_centroids(ctx, x, 2, 2, lab, 3, NULL, cen, NULL),
			 KRED_EINVAL);
	ck_assert_int_eq(kred_ranges_from_mask(ctx, bad_rg, 2, rg, 2, (const unsigned char *)"ab",
					       &r),
			 KRED_EINVAL);
	ck_assert_msg(strstr(kred_errmsg(ctx), "cluster 1 of ranges_i is [2, 1)"), "%s",
		      kred_errmsg(ctx));
	ck_assert_int_eq(kred_ranges_from_centroids(ctx, rg, far, 2, rg, far, 2, 2, -1, &r),
			 KRED_EINVAL);
	ck_assert(strstr(kred_errmsg(ctx), "cut-off is -1"));
	ck_assert_int_eq(kred_ranges_from_centroids(ctx, rg, x, 2, rg, far, 2, 2, 1, &r),
			 KRED_EINVAL);
	ck_assert(strstr(kred_errmsg(ctx), "centroid 1 of the i side is not finite"));
	/* far centroids (1e300) are fine: they meet nothing */
	ck_assert_int_eq(kred_ranges_from_centroids(ctx, rg, far, 2, rg, far + 2, 1, 2, 1, &r),
			 KRED_OK);
	ck_assert_int_eq(r.slices_i[0], 0);
	ck_assert_int_eq(r.slices_i[1], 1);
	kred_ranges_free(&r);
}
END_TEST

/*
 * The whole path: points near a circle in 3-D, labelled by voxels of 0.02, sorted,
 * clusters kept when their centroids are closer than 5 widths + 2 sqrt(3) voxels, so
 * that every pair closer than 5 widths is kept (a point is within sqrt(3) voxels of its
 * cluster's centroid). The Gaussian exp(-|x-y|^2 / s^2) of width s = 0.02 then drops
 * terms below exp(-25) ~ 1.4e-11 of the largest, so that the ranged sum (float64, on the
 * host's ranged kernel) is within 1e-9 relative of the dense one; the ranged run must
 * also skip most pairs to be worth it, which the count of kept pairs says.
 */
START_TEST(test_end_to_end)
{
	enum { N = 6000 };
	static double x[N * 3], xs[N * 3], b[N], bs[N], dense[N], ranged[N];
	static int32_t lab[N], rgc[2 * N];
	static int64_t perm[N];
	static double cen[N * 3];
	const char *al[] = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)" };
	double s = 0.02, g = 1 / (s * s), v = 0.02, worst = 0;
	int64_t nc, pairs = 0;
	kred_spec sp = { 0 };
	kred_reduction *r;
	kred_ranges rg;

	for (int k = 0; k < N; k++) {
		double t = 2 * M_PI * uniform();

		x[3 * k] = cos(t) + 0.01 * (uniform() - 0.5);
		x[3 * k + 1] = sin(t) + 0.01 * (uniform() - 0.5);
		x[3 * k + 2] = 0.01 * (uniform() - 0.5);
		b[k] = uniform() + 0.5;
	}
	ck_assert_int_eq(kred_grid_cluster(ctx, x, N, 3, v, lab, &nc), KRED_OK);
	ck_assert_int_eq(kred_cluster_sort(ctx, lab, N, nc, perm, rgc), KRED_OK);
	for (int k = 0; k < N; k++) {
		memcpy(xs + 3 * k, x + 3 * perm[k], 3 * sizeof(double));
		bs[k] = b[perm[k]];
		lab[k] = k; /* reused: the sorted labels, below */
	}
	for (int c = 0; c < nc; c++)
		for (int k = rgc[2 * c]; k < rgc[2 * c + 1]; k++)
			lab[k] = c;
	ck_assert_int_eq(kred_cluster_centroids(ctx, xs, N, 3, lab, nc, NULL, cen, NULL), KRED_OK);
	ck_assert_int_eq(kred_ranges_from_centroids(ctx, rgc, cen, nc, rgc, cen, nc, 3,
						    5 * s + 2 * sqrt(3) * v, &rg),
			 KRED_OK);
	for (int blk = 0; blk < rg.n_blocks_i; blk++)
		for (int k = blk ? rg.slices_i[blk - 1] : 0; k < rg.slices_i[blk]; k++)
			pairs += (int64_t)(rg.ranges_i[2 * blk + 1] - rg.ranges_i[2 * blk]) *
				 (rg.redranges_j[2 * k + 1] - rg.redranges_j[2 * k]);
	ck_assert_msg(pairs < (int64_t)N * N / 10, "%lld pairs of %lld kept", (long long)pairs,
		      (long long)N * N);
	sp.formula = "Exp(-G*SqDist(X,Y))*B";
	sp.aliases = al;
	sp.n_aliases = 4;
	sp.reduction = "Sum";
	sp.dtype = KRED_FLOAT64;
	ck_assert_int_eq(kred_reduction_create(ctx, &sp, &r), KRED_OK);
	{
		const void *args[4] = { xs, xs, bs, &g };

		ck_assert_int_eq(kred_reduction_run(r, N, N, args, dense), KRED_OK);
		ck_assert_int_eq(kred_reduction_run_ranges(r, N, N, args, ranged, &rg), KRED_OK);
	}
	for (int k = 0; k < N; k++)
		worst = fmax(worst, fabs(ranged[k] - dense[k]) / dense[k]);
	ck_assert_msg(worst <= 1e-9, "largest relative difference %g", worst);
	kred_reduction_destroy(r);
	kred_ranges_free(&rg);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cluster");
	TCase *tc = tcase_create("cluster");
	int rc = probe_or_skip("host");

	if (rc)
		return rc < 0 ? 0 : rc;
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_grid_labels);
	tcase_add_test(tc, test_grid_random);
	tcase_add_test(tc, test_sort_centroids);
	tcase_add_test(tc, test_from_mask);
	tcase_add_loop_test(tc, test_from_centroids, 0, 4);
	tcase_add_test(tc, test_bad);
	tcase_add_test(tc, test_end_to_end);
	suite_add_tcase(s, tc);
	return run_suites(NULL, s) ? 1 : 0;
}
