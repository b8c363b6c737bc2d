/* Block-sparse runs: KeOps 2's ranges checked, transposed for reductions over i, and run
 * block by block as merges of partial states (partial.c), on any backend. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The names of one triple's arrays and of its axes, for messages. */
struct names {
	const char *rng, *slc, *red, *rows, *cols;
};

static const struct names names_j = { "ranges_i", "slices_i", "redranges_j", "nx", "ny" };
static const struct names names_i = { "ranges_j", "slices_j", "redranges_i", "ny", "nx" };

struct block {
	int32_t start, end;
	int64_t b;
};

static int by_start(const void *pa, const void *pb)
{
	const struct block *a = pa, *b = pb;

	return (a->start > b->start) - (a->start < b->start);
}

/* Checks one triple: nb blocks of [0, rows), intervals of [0, cols). */
static kred_status check(const struct kred__ranges *g, const struct names *n, int64_t rows,
			 int64_t cols, struct kred__error *err)
{
	int64_t n_red;
	struct block *bl;

	if (g->nb < 0)
		return kred__fail(err, KRED_EINVAL, -1, "ranges: %d blocks in %s", (int)g->nb,
				  n->rng);
	if (g->nb == 0)
		return KRED_OK;
	if (!g->rng || !g->slc)
		return kred__fail(err, KRED_EINVAL, -1, "ranges: %lld blocks but %s is NULL",
				  (long long)g->nb, !g->rng ? n->rng : n->slc);
	for (int64_t b = 0; b < g->nb; b++) {
		int32_t s = g->rng[2 * b], e = g->rng[2 * b + 1], prev = b ? g->slc[b - 1] : 0;

		if (s < 0 || e < s || e > rows)
			return kred__fail(err, KRED_EINVAL, -1,
					  "ranges: block %lld of %s is [%d, %d), not within [0, %s "
					  "= %lld)", (long long)b, n->rng, (int)s, (int)e, n->rows,
					  (long long)rows);
		if (g->slc[b] < prev)
			return kred__fail(err, KRED_EINVAL, -1,
					  "ranges: %s[%lld] = %d is below %s", n->slc, (long long)b,
					  (int)g->slc[b], b ? "the entry before it" : "0");
	}
	n_red = g->slc[g->nb - 1];
	if (n_red > 0 && !g->red)
		return kred__fail(err, KRED_EINVAL, -1, "ranges: %s ends at %lld but %s is NULL",
				  n->slc, (long long)n_red, n->red);
	for (int64_t k = 0; k < n_red; k++) {
		int32_t s = g->red[2 * k], e = g->red[2 * k + 1];

		if (s < 0 || e < s || e > cols)
			return kred__fail(err, KRED_EINVAL, -1,
					  "ranges: interval %lld of %s is [%d, %d), not within [0, "
					  "%s = %lld)", (long long)k, n->red, (int)s, (int)e, n->cols,
					  (long long)cols);
	}
	/* overlapping blocks: sorted by start, each must end before the next starts */
	bl = kred__malloc(sizeof(*bl) * (size_t)g->nb);
	if (!bl)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	for (int64_t b = 0; b < g->nb; b++) {
		bl[b].start = g->rng[2 * b];
		bl[b].end = g->rng[2 * b + 1];
		bl[b].b = b;
	}
	qsort(bl, (size_t)g->nb, sizeof(*bl), by_start);
	/* last: the block, among those before k, that ends last */
	for (int64_t k = 0, last = -1; k < g->nb; k++) {
		if (bl[k].end == bl[k].start)
			continue;
		if (last >= 0 && bl[k].start < bl[last].end) {
			kred_status s = kred__fail(
				err, KRED_EINVAL, -1,
				"ranges: blocks %lld [%d, %d) and %lld [%d, %d) of %s overlap",
				(long long)bl[last].b, (int)bl[last].start, (int)bl[last].end,
				(long long)bl[k].b, (int)bl[k].start, (int)bl[k].end, n->rng);

			kred__free(bl);
			return s;
		}
		if (last < 0 || bl[k].end > bl[last].end)
			last = k;
	}
	kred__free(bl);
	return KRED_OK;
}

static int cmp_i32(const void *pa, const void *pb)
{
	int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;

	return (a > b) - (a < b);
}

/* The index of v in the sorted, distinct p[0..n) (v is there). */
static int64_t find(const int32_t *p, int64_t n, int32_t v)
{
	int64_t lo = 0, hi = n - 1;

	while (lo < hi) {
		int64_t mid = lo + (hi - lo) / 2;

		if (p[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * The transposed triple of f: the interval ends cut the reduced axis into elementary
 * segments; each segment that some interval covers becomes a block, whose list holds
 * the row block of every interval covering it, as many times as it covers it. So a
 * pair is in the transposed triple exactly as often as in f.
 */
static kred_status transpose(const struct kred__ranges *f, struct kred__ranges *t, int32_t **own,
			     struct kred__error *err)
{
	int64_t n_red = f->nb ? f->slc[f->nb - 1] : 0, np = 0, nseg, nb = 0, total = 0;
	int32_t *pts = NULL, *out = NULL;
	int64_t *count = NULL;
	kred_status s = KRED_OK;

	memset(t, 0, sizeof(*t));
	*own = NULL;
	if (n_red == 0)
		return KRED_OK;
	pts = kred__malloc(sizeof(*pts) * (size_t)(2 * n_red));
	if (!pts)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	memcpy(pts, f->red, sizeof(*pts) * (size_t)(2 * n_red));
	qsort(pts, (size_t)(2 * n_red), sizeof(*pts), cmp_i32);
	for (int64_t k = 0; k < 2 * n_red; k++)
		if (!np || pts[k] != pts[np - 1])
			pts[np++] = pts[k];
	nseg = np - 1;
	count = kred__calloc((size_t)(nseg > 0 ? nseg : 1) + 1, sizeof(*count));
	if (!count) {
		s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto done;
	}
	for (int64_t b = 0; b < f->nb; b++) {
		if (f->rng[2 * b + 1] == f->rng[2 * b])
			continue;
		for (int64_t k = b ? f->slc[b - 1] : 0; k < f->slc[b]; k++) {
			int64_t k0 = find(pts, np, f->red[2 * k]), k1 = find(pts, np, f->red[2 * k + 1]);

			for (int64_t q = k0; q < k1; q++)
				count[q]++;
			total += k1 - k0;
		}
	}
	for (int64_t q = 0; q < nseg; q++)
		nb += count[q] > 0;
	if (total > INT32_MAX || nb == 0) {
		if (total > INT32_MAX)
			s = kred__fail(err, KRED_EOVERFLOW, -1,
				       "ranges: the transposed ranges would hold %lld intervals",
				       (long long)total);
		goto done;
	}
	/* one allocation: ranges (2 nb), slices (nb), intervals (2 total) */
	out = kred__malloc(sizeof(*out) * (size_t)(3 * nb + 2 * total));
	if (!out) {
		s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto done;
	}
	t->nb = nb;
	t->rng = out;
	t->slc = out + 2 * nb;
	t->red = out + 3 * nb;
	{
		int32_t *rng = out, *slc = out + 2 * nb, *red = out + 3 * nb;
		int64_t blk = 0, end = 0;

		/* count[q] becomes segment q's next free place in red, or -1 */
		for (int64_t q = 0; q < nseg; q++) {
			int64_t c = count[q];

			if (!c) {
				count[q] = -1;
				continue;
			}
			rng[2 * blk] = pts[q];
			rng[2 * blk + 1] = pts[q + 1];
			count[q] = end;
			end += c;
			slc[blk++] = (int32_t)end;
		}
		for (int64_t b = 0; b < f->nb; b++) {
			if (f->rng[2 * b + 1] == f->rng[2 * b])
				continue;
			for (int64_t k = b ? f->slc[b - 1] : 0; k < f->slc[b]; k++) {
				int64_t k0 = find(pts, np, f->red[2 * k]);
				int64_t k1 = find(pts, np, f->red[2 * k + 1]);

				for (int64_t q = k0; q < k1; q++) {
					red[2 * count[q]] = f->rng[2 * b];
					red[2 * count[q] + 1] = f->rng[2 * b + 1];
					count[q]++;
				}
			}
		}
	}
	*own = out;
	out = NULL;
done:
	kred__free(out);
	kred__free(count);
	kred__free(pts);
	return s;
}

struct span {
	int32_t start, end, k0, k1;
};

static int span_by_start(const void *pa, const void *pb)
{
	const struct span *a = pa, *b = pb;

	return (a->start > b->start) - (a->start < b->start);
}

/* Appends the tasks of rows [start, end) with intervals [k0, k1), per rows each. */
static void span_tasks(int32_t *t, int64_t *n, int64_t start, int64_t end, int32_t k0,
		       int32_t k1, int64_t per)
{
	for (int64_t r = start; r < end; r += per) {
		if (t) {
			t[4 * *n] = (int32_t)r;
			t[4 * *n + 1] = (int32_t)(end - r < per ? end : r + per);
			t[4 * *n + 2] = k0;
			t[4 * *n + 3] = k1;
		}
		(*n)++;
	}
}

kred_status kred__range_tasks(const struct kred__ranges *g, int64_t nr, int64_t per,
			      int32_t **tasks, int64_t *n_tasks, struct kred__error *err)
{
	struct span *sp;
	int64_t n = 0;
	int32_t *t = NULL;

	*tasks = NULL;
	*n_tasks = 0;
	if (nr > INT32_MAX)
		return kred__fail(err, KRED_EOVERFLOW, -1,
				  "ranges: %lld rows, past the int32 rows of ranges", (long long)nr);
	sp = kred__malloc(sizeof(*sp) * (size_t)(g->nb + 1));
	if (!sp)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	for (int64_t b = 0; b < g->nb; b++) {
		sp[b].start = g->rng[2 * b];
		sp[b].end = g->rng[2 * b + 1];
		sp[b].k0 = b ? g->slc[b - 1] : 0;
		sp[b].k1 = g->slc[b];
	}
	qsort(sp, (size_t)g->nb, sizeof(*sp), span_by_start);
	/* twice: count, then fill */
	for (int pass = 0; pass < 2; pass++) {
		int64_t pos = 0;

		n = 0;
		for (int64_t b = 0; b < g->nb; b++) {
			if (sp[b].end == sp[b].start)
				continue;
			span_tasks(t, &n, pos, sp[b].start, 0, 0, per);
			span_tasks(t, &n, sp[b].start, sp[b].end, sp[b].k0, sp[b].k1, per);
			pos = sp[b].end;
		}
		span_tasks(t, &n, pos, nr, 0, 0, per);
		if (pass == 0) {
			t = kred__malloc(sizeof(*t) * 4 * (size_t)n + 1);
			if (!t) {
				kred__free(sp);
				return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
			}
		}
	}
	kred__free(sp);
	*tasks = t;
	*n_tasks = n;
	return KRED_OK;
}

kred_status kred__ranged_prepare(const kred_ranges *ranges, int64_t nx, int64_t ny, int need_i,
				 struct kred__ranged *rg, struct kred__error *err)
{
	int given_i;
	kred_status s;

	memset(rg, 0, sizeof(*rg));
	if (ranges->struct_size && ranges->struct_size < sizeof(kred_ranges))
		return kred__fail(err, KRED_EINVAL, -1,
				  "ranges: struct_size %zu is not sizeof(kred_ranges) (%zu)",
				  ranges->struct_size, sizeof(kred_ranges));
	rg->over_j.nb = ranges->n_blocks_i;
	rg->over_j.rng = ranges->ranges_i;
	rg->over_j.slc = ranges->slices_i;
	rg->over_j.red = ranges->redranges_j;
	s = check(&rg->over_j, &names_j, nx, ny, err);
	if (s)
		return s;
	given_i = ranges->n_blocks_j != 0 || ranges->ranges_j || ranges->slices_j ||
		  ranges->redranges_i;
	if (given_i) {
		rg->over_i.nb = ranges->n_blocks_j;
		rg->over_i.rng = ranges->ranges_j;
		rg->over_i.slc = ranges->slices_j;
		rg->over_i.red = ranges->redranges_i;
		return check(&rg->over_i, &names_i, ny, nx, err);
	}
	if (!need_i)
		return KRED_OK;
	return transpose(&rg->over_j, &rg->over_i, &rg->own, err);
}

void kred__ranged_free(struct kred__ranged *rg)
{
	kred__free(rg->own);
	rg->own = NULL;
}

/* The backend's own ranged run: on the whole inputs at once, as direct runs go. */
static kred_status backend_ranged(kred_reduction *r, int64_t nx, int64_t ny,
				  const void *const *args, void *out, const struct kred__ranges *g,
				  struct kred__error *err)
{
	const struct kred_backend *b = r->ctx->backend;
	kred_status s;

	if (b->concurrent_run)
		return b->run_ranged(r->ctx->bstate, r->module, r, nx, ny, args, out, g, err);
	pthread_mutex_lock(&r->ctx->lock);
	s = b->run_ranged(r->ctx->bstate, r->module, r, nx, ny, args, out, g, err);
	pthread_mutex_unlock(&r->ctx->lock);
	return s;
}

kred_status kred__run_ranged(kred_reduction *r, int64_t nx, int64_t ny, const void *const *args,
			     void *out, const struct kred__ranges *g, struct kred__error *err)
{
	const struct kred_backend *be = r->ctx->backend;

	if (be->version >= 4 && be->run_ranged && kred__run_whole(r, nx, ny))
		return backend_ranged(r, nx, ny, args, out, g, err);
	return kred__run_ranged_blocks(r, nx, ny, args, out, g, err);
}

kred_status kred__run_ranged_blocks(kred_reduction *r, int64_t nx, int64_t ny,
				    const void *const *args, void *out,
				    const struct kred__ranges *g, struct kred__error *err)
{
	int64_t rows = r->axis == KRED_REDUCE_J ? nx : ny, size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	int64_t row_bytes = r->out_dim * size, cap = 0;
	const void **sub = NULL;
	double *acc = NULL, *blk = NULL;
	char *neutral = NULL;
	int w;
	kred_status s;

	s = kred__state_prepare(r, err);
	if (s)
		return s;
	w = kred__state_width(r);
	sub = kred__malloc(sizeof(*sub) * (size_t)(r->n_args + 1));
	neutral = kred__malloc((size_t)row_bytes + 1);
	if (!sub || !neutral) {
		s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto done;
	}
	/* rows in no block, or with no interval, hold the neutral value */
	acc = kred__malloc(sizeof(double) * (size_t)w);
	if (!acc) {
		s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto done;
	}
	kred__state_init(r, 1, acc);
	kred__state_finish(r, 1, acc, neutral);
	for (int64_t i = 0; i < rows; i++)
		memcpy((char *)out + i * row_bytes, neutral, (size_t)row_bytes);
	for (int64_t b = 0; b < g->nb; b++) {
		int64_t a = g->rng[2 * b], nr = g->rng[2 * b + 1] - a;
		int64_t first = b ? g->slc[b - 1] : 0, last = g->slc[b];

		if (nr == 0 || first == last)
			continue;
		if (nr > cap) {
			kred__free(acc);
			kred__free(blk);
			acc = kred__malloc(sizeof(double) * (size_t)(nr * w));
			blk = kred__malloc(sizeof(double) * (size_t)(nr * w));
			if (!acc || !blk) {
				s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
				goto done;
			}
			cap = nr;
		}
		kred__state_init(r, nr, acc);
		for (int64_t k = first; k < last; k++) {
			int64_t c = g->red[2 * k], nc = g->red[2 * k + 1] - c;

			if (nc == 0)
				continue;
			kred__offset_args(r, args, a, c, sub);
			s = r->axis == KRED_REDUCE_J
				    ? kred__state_block(r, nr, nc, c, sub, blk, err)
				    : kred__state_block(r, nc, nr, c, sub, blk, err);
			if (s)
				goto done;
			kred__state_merge(r, nr, acc, blk);
		}
		kred__state_finish(r, nr, acc, (char *)out + a * row_bytes);
	}
	s = KRED_OK;
done:
	kred__free(acc);
	kred__free(blk);
	kred__free(neutral);
	kred__free(sub);
	return s;
}
