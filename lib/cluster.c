/* Helpers that make ranges from point clouds, as KeOps's grid_cluster, sort_clusters,
 * cluster_ranges_centroids and from_matrix do: voxel labels, the permutation that sorts
 * points by label, the clusters' ranges and centroids, and the block-sparse triples of a
 * mask of cluster pairs, given or from centroid distances. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- kred_grid_cluster */

/* qsort's comparisons read the voxel coordinates through these (qsort has no context);
 * kred_grid_cluster sorts indices, and a lock would serialise it: a per-thread copy. */
static _Thread_local const int64_t *sort_cells;
static _Thread_local int sort_d;

static int by_cell(const void *pa, const void *pb)
{
	int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
	const int64_t *ca = sort_cells + a * sort_d, *cb = sort_cells + b * sort_d;

	for (int c = 0; c < sort_d; c++)
		if (ca[c] != cb[c])
			return ca[c] < cb[c] ? -1 : 1;
	return (a > b) - (a < b);
}

/*
 * The points' order by voxel when the voxel coordinates pack into 63 bits (a million
 * voxels a side in 3-D): a radix sort of (key, index), 11 bits a pass, stable. Returns 0
 * (and leaves order to qsort) when they do not, or when memory runs out.
 */
static int radix_order(const int64_t *cell, int64_t n, int d, int64_t *order)
{
	int bits[64], total = 0;
	uint64_t *key, *tmp, *ki, *ti;
	int64_t *count;

	if (d > 63)
		return 0;
	for (int c = 0; c < d; c++) {
		int64_t hi = 0;

		for (int64_t k = 0; k < n; k++)
			if (cell[k * d + c] > hi)
				hi = cell[k * d + c];
		bits[c] = 0;
		while (hi >> bits[c])
			bits[c]++;
		total += bits[c];
		if (total > 63)
			return 0;
	}
	key = kred__malloc(sizeof(*key) * 4 * (size_t)n);
	count = kred__malloc(sizeof(*count) * 2049);
	if (!key || !count) {
		kred__free(key);
		kred__free(count);
		return 0;
	}
	/* (key, index) pairs, ping-ponged between the two halves */
	ki = key;
	ti = key + 2 * n;
	for (int64_t k = 0; k < n; k++) {
		uint64_t v = 0;

		for (int c = 0; c < d; c++)
			v = v << bits[c] | (uint64_t)cell[k * d + c];
		ki[2 * k] = v;
		ki[2 * k + 1] = (uint64_t)k;
	}
	for (int shift = 0; shift < total; shift += 11) {
		memset(count, 0, sizeof(*count) * 2049);
		for (int64_t k = 0; k < n; k++)
			count[((ki[2 * k] >> shift) & 2047) + 1]++;
		for (int v = 0; v < 2048; v++)
			count[v + 1] += count[v];
		for (int64_t k = 0; k < n; k++) {
			int64_t at = count[(ki[2 * k] >> shift) & 2047]++;

			ti[2 * at] = ki[2 * k];
			ti[2 * at + 1] = ki[2 * k + 1];
		}
		tmp = ki;
		ki = ti;
		ti = tmp;
	}
	for (int64_t k = 0; k < n; k++)
		order[k] = (int64_t)ki[2 * k + 1];
	kred__free(key);
	kred__free(count);
	return 1;
}

kred_status kred_grid_cluster(kred_context *ctx, const double *x, int64_t n, int d, double voxel,
			      int32_t *labels, int64_t *n_clusters)
{
	int64_t *cell = NULL, *order = NULL, nc = 0;
	double *lo = NULL;
	kred_status s = KRED_OK;

	if (!ctx)
		return KRED_EINVAL;
	kred__ctx_clear_error(ctx);
	if (n_clusters)
		*n_clusters = 0;
	if (n < 0 || d < 1 || (n > 0 && (!x || !labels)) || !n_clusters)
		return kred__ctx_fail(ctx, KRED_EINVAL,
				      "kred_grid_cluster: n = %lld, d = %d, x, labels and "
				      "n_clusters must be given",
				      (long long)n, d);
	if (!(voxel > 0) || !isfinite(voxel))
		return kred__ctx_fail(ctx, KRED_EINVAL,
				      "kred_grid_cluster: the voxel size is %g, not a positive "
				      "number", voxel);
	if (n == 0)
		return KRED_OK;
	if (n > INT32_MAX)
		return kred__ctx_fail(ctx, KRED_EOVERFLOW,
				      "kred_grid_cluster: %lld points, more than int32 labels "
				      "can number", (long long)n);
	lo = kred__malloc(sizeof(*lo) * (size_t)d);
	cell = kred__malloc(sizeof(*cell) * (size_t)n * (size_t)d);
	order = kred__malloc(sizeof(*order) * (size_t)n);
	if (!lo || !cell || !order) {
		s = kred__ctx_fail(ctx, KRED_ENOMEM, "out of memory");
		goto done;
	}
	for (int c = 0; c < d; c++)
		lo[c] = INFINITY;
	for (int64_t k = 0; k < n; k++) {
		for (int c = 0; c < d; c++) {
			double v = x[k * d + c];

			if (!isfinite(v)) {
				s = kred__ctx_fail(ctx, KRED_EINVAL,
						   "kred_grid_cluster: point %lld, coordinate %d is "
						   "%g", (long long)k, c, v);
				goto done;
			}
			if (v < lo[c])
				lo[c] = v;
		}
	}
	for (int64_t k = 0; k < n; k++) {
		for (int c = 0; c < d; c++) {
			double q = floor((x[k * d + c] - lo[c]) / voxel);

			if (q > 0x1p62) {
				s = kred__ctx_fail(ctx, KRED_EOVERFLOW,
						   "kred_grid_cluster: the points span more than "
						   "2^62 voxels of %g in coordinate %d", voxel, c);
				goto done;
			}
			cell[k * d + c] = (int64_t)q;
		}
		order[k] = k;
	}
	if (!radix_order(cell, n, d, order)) {
		sort_cells = cell;
		sort_d = d;
		qsort(order, (size_t)n, sizeof(*order), by_cell);
	}
	for (int64_t k = 0; k < n; k++) {
		if (k > 0 && memcmp(cell + order[k] * d, cell + order[k - 1] * d,
				    sizeof(*cell) * (size_t)d) != 0)
			nc++;
		labels[order[k]] = (int32_t)nc;
	}
	*n_clusters = nc + 1;
done:
	sort_cells = NULL;
	kred__free(lo);
	kred__free(cell);
	kred__free(order);
	return s;
}

/* ---- kred_cluster_sort, kred_cluster_centroids */

/* What the label calls check first (after clearing ctx's error): the sizes, and labels
 * within [0, n_clusters). */
static kred_status check_labels(kred_context *ctx, const char *fn, const int32_t *labels,
				int64_t n, int64_t n_clusters)
{
	kred__ctx_clear_error(ctx);
	if (n < 0 || n_clusters < 0 || n_clusters > INT32_MAX || (n > 0 && !labels))
		return kred__ctx_fail(ctx, KRED_EINVAL,
				      "%s: n = %lld, n_clusters = %lld%s", fn, (long long)n,
				      (long long)n_clusters, n > 0 && !labels ? ", labels NULL" : "");
	for (int64_t k = 0; k < n; k++)
		if (labels[k] < 0 || labels[k] >= n_clusters)
			return kred__ctx_fail(ctx, KRED_EINVAL,
					      "%s: labels[%lld] = %d, not within [0, n_clusters "
					      "= %lld)", fn, (long long)k, (int)labels[k],
					      (long long)n_clusters);
	return KRED_OK;
}

kred_status kred_cluster_sort(kred_context *ctx, const int32_t *labels, int64_t n,
			      int64_t n_clusters, int64_t *perm, int32_t *ranges)
{
	int64_t *next;
	kred_status s;

	if (!ctx)
		return KRED_EINVAL;
	s = check_labels(ctx, "kred_cluster_sort", labels, n, n_clusters);
	if (s)
		return s;
	if (n > INT32_MAX)
		return kred__ctx_fail(ctx, KRED_EOVERFLOW,
				      "kred_cluster_sort: %lld points, past int32 ranges",
				      (long long)n);
	if ((n > 0 && !perm) || (n_clusters > 0 && !ranges))
		return kred__ctx_fail(ctx, KRED_EINVAL, "kred_cluster_sort: NULL %s",
				      n > 0 && !perm ? "perm" : "ranges");
	/* a counting sort: stable, so points keep their order within a cluster */
	next = kred__calloc((size_t)n_clusters + 1, sizeof(*next));
	if (!next)
		return kred__ctx_fail(ctx, KRED_ENOMEM, "out of memory");
	for (int64_t k = 0; k < n; k++)
		next[labels[k] + 1]++;
	for (int64_t c = 0; c < n_clusters; c++) {
		next[c + 1] += next[c];
		ranges[2 * c] = (int32_t)next[c];
		ranges[2 * c + 1] = (int32_t)next[c + 1];
	}
	for (int64_t k = 0; k < n; k++)
		perm[next[labels[k]]++] = k;
	kred__free(next);
	return KRED_OK;
}

kred_status kred_cluster_centroids(kred_context *ctx, const double *x, int64_t n, int d,
				   const int32_t *labels, int64_t n_clusters,
				   const double *weights, double *centroids, double *cluster_weights)
{
	double *w;
	kred_status s;

	if (!ctx)
		return KRED_EINVAL;
	s = check_labels(ctx, "kred_cluster_centroids", labels, n, n_clusters);
	if (s)
		return s;
	if (d < 1 || (n > 0 && !x) || (n_clusters > 0 && !centroids))
		return kred__ctx_fail(ctx, KRED_EINVAL,
				      "kred_cluster_centroids: d = %d, x and centroids must be "
				      "given", d);
	w = cluster_weights ? cluster_weights : kred__malloc(sizeof(*w) * (size_t)n_clusters + 1);
	if (!w)
		return kred__ctx_fail(ctx, KRED_ENOMEM, "out of memory");
	memset(w, 0, sizeof(*w) * (size_t)n_clusters);
	memset(centroids, 0, sizeof(*centroids) * (size_t)n_clusters * (size_t)d);
	for (int64_t k = 0; k < n; k++) {
		double wk = weights ? weights[k] : 1;

		w[labels[k]] += wk;
		for (int c = 0; c < d; c++)
			centroids[(int64_t)labels[k] * d + c] += wk * x[k * d + c];
	}
	/* an empty cluster (or one of weight 0) has its centroid at 0 */
	for (int64_t c = 0; c < n_clusters; c++)
		for (int e = 0; w[c] != 0 && e < d; e++)
			centroids[c * d + e] /= w[c];
	if (w != cluster_weights)
		kred__free(w);
	return KRED_OK;
}

/* ---- kred_ranges_from_mask, kred_ranges_from_centroids */

/* A growing list of kept cluster pairs (ci, cj). */
struct pairs {
	int64_t n, cap;
	int32_t *p; /* 2 n */
};

static int pairs_add(struct pairs *l, int32_t ci, int32_t cj)
{
	if (l->n == l->cap) {
		int64_t cap = l->cap ? 2 * l->cap : 1024;
		int32_t *p = kred__realloc(l->p, sizeof(*p) * 2 * (size_t)cap);

		if (!p)
			return -1;
		l->p = p;
		l->cap = cap;
	}
	l->p[2 * l->n] = ci;
	l->p[2 * l->n + 1] = cj;
	l->n++;
	return 0;
}

static int by_pair(const void *pa, const void *pb)
{
	const int32_t *a = pa, *b = pb;

	if (a[0] != b[0])
		return a[0] < b[0] ? -1 : 1;
	return (a[1] > b[1]) - (a[1] < b[1]);
}

static kred_status check_cluster_ranges(kred_context *ctx, const char *fn, const char *name,
					const int32_t *r, int64_t nc)
{
	if (nc < 0 || nc > INT32_MAX || (nc > 0 && !r))
		return kred__ctx_fail(ctx, KRED_EINVAL, "%s: %lld clusters in %s%s", fn,
				      (long long)nc, name, nc > 0 && !r ? ", which is NULL" : "");
	for (int64_t c = 0; c < nc; c++)
		if (r[2 * c] < 0 || r[2 * c + 1] < r[2 * c])
			return kred__ctx_fail(ctx, KRED_EINVAL, "%s: cluster %lld of %s is [%d, %d)",
					      fn, (long long)c, name, (int)r[2 * c],
					      (int)r[2 * c + 1]);
	return KRED_OK;
}

/* What both ranges_from_ calls check first: out (zeroed), and both sides' cluster ranges. */
static kred_status ranges_begin(kred_context *ctx, const char *fn, const int32_t *ranges_i,
				int64_t nc_i, const int32_t *ranges_j, int64_t nc_j,
				kred_ranges *out)
{
	kred_status s;

	kred__ctx_clear_error(ctx);
	if (!out)
		return kred__ctx_fail(ctx, KRED_EINVAL, "%s: NULL out", fn);
	memset(out, 0, sizeof(*out));
	s = check_cluster_ranges(ctx, fn, "ranges_i", ranges_i, nc_i);
	if (!s)
		s = check_cluster_ranges(ctx, fn, "ranges_j", ranges_j, nc_j);
	return s;
}

/*
 * One triple from sorted pairs p (n of them; p[2k] the block's cluster, p[2k + 1] the
 * other side's): blocks are the nb clusters of rb, each with the intervals rr of its
 * kept clusters, consecutive ones whose ranges follow each other joined into one.
 * Writes ranges (2 nb), slices (nb) and intervals (*n_red of them, 2 each) at out.
 */
static void triple(const int32_t *p, int64_t n, const int32_t *rb, int64_t nb, const int32_t *rr,
		   int32_t *ranges, int32_t *slices, int32_t *red, int64_t *n_red)
{
	int64_t k = 0, m = 0;

	for (int64_t b = 0; b < nb; b++) {
		ranges[2 * b] = rb[2 * b];
		ranges[2 * b + 1] = rb[2 * b + 1];
		for (int64_t first = m; k < n && p[2 * k] == b; k++) {
			int32_t s = rr[2 * p[2 * k + 1]], e = rr[2 * p[2 * k + 1] + 1];

			if (s == e)
				continue;
			if (m > first && red[2 * m - 1] == s) {
				red[2 * m - 1] = e;
			} else {
				red[2 * m] = s;
				red[2 * m + 1] = e;
				m++;
			}
		}
		slices[b] = (int32_t)m;
	}
	*n_red = m;
}

/* Both triples of the kept pairs l, sorted by (i cluster, j cluster), into one allocation
 * at out->ranges_i. */
static kred_status from_pairs(kred_context *ctx, const struct pairs *l, const int32_t *ranges_i,
			      int64_t nc_i, const int32_t *ranges_j, int64_t nc_j, kred_ranges *out)
{
	int32_t *buf, *swapped;
	int64_t n_red_j = 0, n_red_i = 0, *next;

	if (l->n > INT32_MAX)
		return kred__ctx_fail(ctx, KRED_EOVERFLOW,
				      "kred_ranges: %lld cluster pairs, past int32 slices",
				      (long long)l->n);
	/* ranges and slices of both sides, and up to n intervals each */
	buf = kred__malloc(sizeof(*buf) * (size_t)(3 * nc_i + 3 * nc_j + 4 * l->n) + 1);
	swapped = kred__malloc(sizeof(*swapped) * (size_t)(2 * l->n) + 1);
	next = kred__calloc((size_t)nc_j + 1, sizeof(*next));
	if (!buf || !swapped || !next) {
		kred__free(buf);
		kred__free(swapped);
		kred__free(next);
		return kred__ctx_fail(ctx, KRED_ENOMEM, "out of memory");
	}
	{
		int32_t *rng_i = buf, *slc_i = rng_i + 2 * nc_i, *red_j = slc_i + nc_i;

		triple(l->p, l->n, ranges_i, nc_i, ranges_j, rng_i, slc_i, red_j, &n_red_j);
		out->n_blocks_i = nc_i;
		out->ranges_i = rng_i;
		out->slices_i = slc_i;
		out->redranges_j = red_j;
	}
	/* the other side: the pairs swapped, sorted by j by counting (stable: i ascending
	 * within each j) */
	for (int64_t k = 0; k < l->n; k++)
		next[l->p[2 * k + 1] + 1]++;
	for (int64_t c = 0; c < nc_j; c++)
		next[c + 1] += next[c];
	for (int64_t k = 0; k < l->n; k++) {
		int64_t at = next[l->p[2 * k + 1]]++;

		swapped[2 * at] = l->p[2 * k + 1];
		swapped[2 * at + 1] = l->p[2 * k];
	}
	{
		int32_t *rng_j = (int32_t *)out->redranges_j + 2 * n_red_j, *slc_j = rng_j + 2 * nc_j;
		int32_t *red_i = slc_j + nc_j;

		triple(swapped, l->n, ranges_j, nc_j, ranges_i, rng_j, slc_j, red_i, &n_red_i);
		out->n_blocks_j = nc_j;
		out->ranges_j = rng_j;
		out->slices_j = slc_j;
		out->redranges_i = red_i;
	}
	out->struct_size = sizeof(*out);
	kred__free(swapped);
	kred__free(next);
	return KRED_OK;
}

kred_status kred_ranges_from_mask(kred_context *ctx, const int32_t *ranges_i, int64_t nc_i,
				  const int32_t *ranges_j, int64_t nc_j, const unsigned char *keep,
				  kred_ranges *out)
{
	struct pairs l = { 0 };
	kred_status s;

	if (!ctx)
		return KRED_EINVAL;
	s = ranges_begin(ctx, "kred_ranges_from_mask", ranges_i, nc_i, ranges_j, nc_j, out);
	if (s)
		return s;
	if (nc_i > 0 && nc_j > 0 && !keep)
		return kred__ctx_fail(ctx, KRED_EINVAL, "kred_ranges_from_mask: NULL keep");
	for (int64_t a = 0; a < nc_i; a++)
		for (int64_t c = 0; c < nc_j; c++)
			if (keep[a * nc_j + c] && pairs_add(&l, (int32_t)a, (int32_t)c)) {
				kred__free(l.p);
				return kred__ctx_fail(ctx, KRED_ENOMEM, "out of memory");
			}
	s = from_pairs(ctx, &l, ranges_i, nc_i, ranges_j, nc_j, out);
	kred__free(l.p);
	return s;
}

/* Cells of side cut for the j centroids, sorted, so that the clusters near a point are in
 * the 3^d cells around its own: for d <= 3 (beyond, every pair is tested). */
struct cells {
	int d;
	double lo[3], cut;
	int64_t *key; /* nc: (cell key << 31 | cluster), sorted */
	int64_t n;
};

static int cmp_i64(const void *pa, const void *pb)
{
	int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;

	return (a > b) - (a < b);
}

/* The cell key of coordinates q (each within [-1, 2^10]), 32 bits; -1 when out of range. */
static int64_t cell_key(const int64_t *q, int d)
{
	int64_t k = 0;

	for (int c = 0; c < d; c++) {
		if (q[c] < 0 || q[c] >= 1024)
			return -1;
		k = k * 1024 + q[c];
	}
	return k;
}

kred_status kred_ranges_from_centroids(kred_context *ctx, const int32_t *ranges_i,
				       const double *centroids_i, int64_t nc_i,
				       const int32_t *ranges_j, const double *centroids_j,
				       int64_t nc_j, int d, double cutoff, kred_ranges *out)
{
	struct pairs l = { 0 };
	struct cells g = { 0 };
	double cut2 = cutoff * cutoff, hi[3] = { 0, 0, 0 };
	kred_status s;
	int grid;

	if (!ctx)
		return KRED_EINVAL;
	s = ranges_begin(ctx, "kred_ranges_from_centroids", ranges_i, nc_i, ranges_j, nc_j, out);
	if (s)
		return s;
	if (d < 1 || (nc_i > 0 && !centroids_i) || (nc_j > 0 && !centroids_j))
		return kred__ctx_fail(ctx, KRED_EINVAL,
				      "kred_ranges_from_centroids: d = %d, and both sides' "
				      "centroids must be given", d);
	if (!(cutoff >= 0) || isinf(cutoff))
		return kred__ctx_fail(ctx, KRED_EINVAL,
				      "kred_ranges_from_centroids: the cut-off is %g, not a "
				      "finite number >= 0", cutoff);
	for (int64_t k = 0; k < nc_i * d; k++)
		if (!isfinite(centroids_i[k]))
			return kred__ctx_fail(ctx, KRED_EINVAL,
					      "kred_ranges_from_centroids: centroid %lld of the i "
					      "side is not finite", (long long)(k / d));
	for (int64_t k = 0; k < nc_j * d; k++)
		if (!isfinite(centroids_j[k]))
			return kred__ctx_fail(ctx, KRED_EINVAL,
					      "kred_ranges_from_centroids: centroid %lld of the j "
					      "side is not finite", (long long)(k / d));
	/* the grid, when the j centroids span at most 1000 cells of the cut-off a side */
	grid = d <= 3 && cutoff > 0 && nc_j > 0;
	for (int c = 0; grid && c < d; c++) {
		g.lo[c] = INFINITY;
		hi[c] = -INFINITY;
		for (int64_t k = 0; k < nc_j; k++) {
			g.lo[c] = fmin(g.lo[c], centroids_j[k * d + c]);
			hi[c] = fmax(hi[c], centroids_j[k * d + c]);
		}
		grid = (hi[c] - g.lo[c]) / cutoff < 1000;
	}
	if (grid) {
		g.d = d;
		g.cut = cutoff;
		g.n = nc_j;
		g.key = kred__malloc(sizeof(*g.key) * (size_t)nc_j);
		if (!g.key)
			return kred__ctx_fail(ctx, KRED_ENOMEM, "out of memory");
		for (int64_t k = 0; k < nc_j; k++) {
			int64_t q[3];

			for (int c = 0; c < d; c++)
				q[c] = (int64_t)floor((centroids_j[k * d + c] - g.lo[c]) / cutoff);
			g.key[k] = cell_key(q, d) << 31 | k;
		}
		qsort(g.key, (size_t)nc_j, sizeof(*g.key), cmp_i64);
	}
	for (int64_t a = 0; a < nc_i; a++) {
		const double *ca = centroids_i + a * d;
		int64_t q[3], nq = 1, first;

		if (!grid) {
			for (int64_t c = 0; c < nc_j; c++) {
				double d2 = 0;

				for (int e = 0; e < d; e++)
					d2 += (ca[e] - centroids_j[c * d + e]) *
					      (ca[e] - centroids_j[c * d + e]);
				if (d2 < cut2 && pairs_add(&l, (int32_t)a, (int32_t)c))
					goto oom;
			}
			continue;
		}
		/* cells past the grid's (clamped: the centroid may be far) hold nothing */
		first = l.n;
		for (int c = 0; c < d; c++) {
			q[c] = (int64_t)fmax(-2, fmin(2000, floor((ca[c] - g.lo[c]) / cutoff)));
			nq *= 3;
		}
		/* the 3^d cells around a's */
		for (int64_t m = 0; m < nq; m++) {
			int64_t qq[3], key, lo, hi2, mm = m;

			for (int c = 0; c < d; c++) {
				qq[c] = q[c] + mm % 3 - 1;
				mm /= 3;
			}
			key = cell_key(qq, d);
			if (key < 0)
				continue;
			/* the first entry of the cell, by bisection */
			lo = 0;
			hi2 = g.n;
			while (lo < hi2) {
				int64_t mid = lo + (hi2 - lo) / 2;

				if (g.key[mid] >> 31 < key)
					lo = mid + 1;
				else
					hi2 = mid;
			}
			for (; lo < g.n && g.key[lo] >> 31 == key; lo++) {
				int64_t c = g.key[lo] & INT32_MAX;
				double d2 = 0;

				for (int e = 0; e < d; e++)
					d2 += (ca[e] - centroids_j[c * d + e]) *
					      (ca[e] - centroids_j[c * d + e]);
				if (d2 < cut2 && pairs_add(&l, (int32_t)a, (int32_t)c))
					goto oom;
			}
		}
		/* a's pairs in the order of the j clusters */
		if (l.n - first > 1)
			qsort(l.p + 2 * first, (size_t)(l.n - first), 2 * sizeof(*l.p), by_pair);
	}
	kred__free(g.key);
	s = from_pairs(ctx, &l, ranges_i, nc_i, ranges_j, nc_j, out);
	kred__free(l.p);
	return s;
oom:
	kred__free(g.key);
	kred__free(l.p);
	return kred__ctx_fail(ctx, KRED_ENOMEM, "out of memory");
}

void kred_ranges_free(kred_ranges *r)
{
	if (!r)
		return;
	kred__free((void *)r->ranges_i);
	memset(r, 0, sizeof(*r));
}
