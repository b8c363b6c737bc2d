/* Batches: B independent problems in one call, run as one block-sparse reduction of the
 * problems stacked along the rows (ranges.c), so that a backend with a ranged kernel
 * (host, OpenCL, CUDA) runs them in one launch. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

_Static_assert(KRED__CAT_I == 0 && KRED__CAT_J == 1, "batch.c indexes by category");

/* The first output column that holds indices (counted along the reduced axis), or -1:
 * from the reduction table's flags. */
static int index_column(const kred_reduction *r)
{
	unsigned f = kred__reds[r->red].flags;

	if (!(f & KRED__RED_INDEX))
		return -1;
	return f & KRED__RED_VALUES ? r->out_dim / 2 : 0;
}

/*
 * One triple of the stacked problem: blocks of the rows of category rc (nr rows per
 * problem), intervals of category cc (nc per problem). A stacked side has a block (or an
 * interval) per problem; a shared one a single block (or the same interval for all).
 * out: 2 nb + nb + 2 n_red values.
 */
static void triple(int64_t B, int64_t nr, int64_t nc, int st_r, int st_c, int32_t *out,
		   int64_t *nb)
{
	int32_t *rng = out, *slc, *red;

	*nb = st_r ? B : 1;
	slc = rng + 2 * *nb;
	red = slc + *nb;
	for (int64_t b = 0; b < B; b++) {
		red[2 * b] = (int32_t)(st_c ? b * nc : 0);
		red[2 * b + 1] = (int32_t)(st_c ? (b + 1) * nc : nc);
		if (st_r) {
			rng[2 * b] = (int32_t)(b * nr);
			rng[2 * b + 1] = (int32_t)((b + 1) * nr);
			slc[b] = (int32_t)(b + 1);
		}
	}
	if (!st_r) {
		rng[0] = 0;
		rng[1] = (int32_t)nr;
		slc[0] = (int32_t)B;
	}
}

/* The reduction r remade with the positions where cat[k] >= 0 given that category, kept
 * in r for the next call with the same positions. */
static kred_status row_param_reduction(kred_reduction *r, const int *cat, int n_user,
				       kred_reduction **out)
{
	struct kred__error err;
	struct kred__graph *g;
	const struct kred__node *f, *w = NULL;
	unsigned char *rows;
	int same = r->batch_red != NULL;
	kred_status s;

	for (int k = 0; k < n_user && same; k++)
		same = r->batch_rows[k] == (cat[k] >= 0);
	*out = r->batch_red;
	if (same)
		return KRED_OK;
	kred__error_clear(&err);
	rows = kred__malloc((size_t)n_user + 1);
	g = kred__graph_new();
	if (!rows || !g) {
		kred__free(rows);
		kred__graph_free(g);
		return kred__ctx_fail(r->ctx, KRED_ENOMEM, "out of memory");
	}
	for (int k = 0; k < n_user; k++)
		rows[k] = cat[k] >= 0;
	s = kred__graph_copy_vars_recat(g, r->g, cat, n_user, &err);
	f = s ? NULL : kred__node_import_recat(g, r->f, cat, n_user, &err);
	if (f && r->w)
		w = kred__node_import_recat(g, r->w, cat, n_user, &err);
	if (!f || (r->w && !w)) {
		kred__graph_free(g);
		kred__free(rows);
		return kred__ctx_set_error(r->ctx, &err, NULL);
	}
	kred_reduction_destroy(r->batch_red);
	kred__free(r->batch_rows);
	r->batch_red = NULL;
	r->batch_rows = NULL;
	/* takes g, and records its own errors on the context */
	s = kred__reduction_finish(r->ctx, g, f, w, r->red, r->k, r->axis, r->dtype,
				   r->sum_scheme, r->fast_math, 0, NULL, &r->batch_red);
	if (s) {
		kred__free(rows);
		return s;
	}
	r->batch_rows = rows;
	*out = r->batch_red;
	return KRED_OK;
}

/*
 * A batch with parameters of a value per problem: those become variables of the output's
 * rows (the reduction remade from its formula with their category changed, once for
 * these positions), each problem's value repeated over its rows, and the batch runs with
 * them stacked.
 */
static kred_status run_row_params(kred_reduction *r, const kred_batch *batch, int64_t nx,
				  int64_t ny, const void *const *args, void *out)
{
	int n_user = kred_reduction_n_args(r);
	int out_cat = r->axis == KRED_REDUCE_J ? KRED__CAT_I : KRED__CAT_J;
	int64_t B = batch->n_batch, rows = out_cat == KRED__CAT_I ? nx : ny;
	size_t size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	kred_reduction *rr = NULL;
	kred_batch b2 = { sizeof(b2), B, NULL };
	int *cat = NULL;
	int64_t *ab = NULL;
	const void **use = NULL;
	void **own = NULL;
	kred_status s;

	if (r->pre)
		return kred__ctx_fail(r->ctx, KRED_EUNSUPPORTED,
				      "batch: parameters with a value per problem in a reduction "
				      "that runs an auxiliary one first (a gradient of "
				      "SumSoftMaxWeight): run it problem by problem");
	cat = kred__malloc(sizeof(*cat) * (size_t)(n_user + 1));
	ab = kred__malloc(sizeof(*ab) * (size_t)(n_user + 1));
	use = kred__calloc((size_t)n_user + 1, sizeof(*use));
	own = kred__calloc((size_t)n_user + 1, sizeof(*own));
	if (!cat || !ab || !use || !own) {
		s = kred__ctx_fail(r->ctx, KRED_ENOMEM, "out of memory");
		goto done;
	}
	for (int k = 0; k < n_user; k++) {
		int64_t bk = batch->arg_batch ? batch->arg_batch[k] : B;
		size_t one = (size_t)r->args[k].dim * size;

		cat[k] = bk > 1 && r->args[k].cat == KRED__CAT_P ? out_cat : -1;
		ab[k] = bk;
		use[k] = args ? args[k] : NULL;
		if (cat[k] < 0 || !use[k])
			continue;
		/* problem p's value, rows times */
		own[k] = kred__malloc(one * (size_t)(B * rows) + 1);
		if (!own[k]) {
			s = kred__ctx_fail(r->ctx, KRED_ENOMEM, "out of memory");
			goto done;
		}
		for (int64_t p = 0; p < B; p++)
			for (int64_t i = 0; i < rows; i++)
				memcpy((char *)own[k] + (size_t)(p * rows + i) * one,
				       (const char *)use[k] + (size_t)p * one, one);
		use[k] = own[k];
	}
	s = row_param_reduction(r, cat, n_user, &rr);
	if (s)
		goto done;
	b2.arg_batch = ab;
	s = kred_reduction_run_batch(rr, &b2, nx, ny, use, out);
done:
	for (int k = 0; own && k < n_user; k++)
		kred__free(own[k]);
	kred__free(own);
	kred__free(use);
	kred__free(ab);
	kred__free(cat);
	return s;
}

kred_status kred_reduction_run_batch(kred_reduction *r, const kred_batch *batch, int64_t nx,
				     int64_t ny, const void *const *args, void *out)
{
	int64_t B, n[2] = { nx, ny }, nb_i = 0, nb_j = 0, size;
	int n_user, out_cat, oth, stacked[2] = { 0, 0 }, col, row_params = 0; /* stacked[cat]: i, j */
	const void **use = NULL;
	void **own = NULL;
	int32_t *tri = NULL;
	kred_ranges rg = { 0 };
	kred_status s;

	if (!r)
		return KRED_EINVAL;
	kred__ctx_clear_error(r->ctx);
	if (!batch)
		return kred_reduction_run(r, nx, ny, args, out);
	if (batch->struct_size && batch->struct_size < sizeof(kred_batch))
		return kred__ctx_fail(r->ctx, KRED_EINVAL, "batch: struct_size %zu is not "
				      "sizeof(kred_batch) (%zu)", batch->struct_size,
				      sizeof(kred_batch));
	B = batch->n_batch;
	if (B < 1)
		return kred__ctx_fail(r->ctx, KRED_EINVAL, "batch: %lld problems", (long long)B);
	n_user = kred_reduction_n_args(r);
	out_cat = r->axis == KRED_REDUCE_J ? KRED__CAT_I : KRED__CAT_J;
	oth = out_cat == KRED__CAT_I ? KRED__CAT_J : KRED__CAT_I;
	for (int k = 0; k < n_user; k++) {
		int64_t bk = batch->arg_batch ? batch->arg_batch[k] : B;

		if (bk != 1 && bk != B)
			return kred__ctx_fail(r->ctx, KRED_EINVAL,
					      "batch: argument %d holds %lld problems, not 1 (shared) "
					      "or %lld", k, (long long)bk, (long long)B);
		if (bk > 1 && r->args[k].cat == KRED__CAT_P)
			row_params = 1;
		if (bk > 1 && r->args[k].cat == oth)
			stacked[oth] = 1;
	}
	stacked[out_cat] = 1;
	if (B == 1)
		return kred_reduction_run(r, nx, ny, args, out);
	if (r->pm_sum)
		return kred__ctx_fail(r->ctx, KRED_EUNSUPPORTED,
				      "batch: the gradient with respect to a parameter sums over "
				      "every row: run it problem by problem");
	if (row_params)
		return run_row_params(r, batch, nx, ny, args, out);
	for (int c = 0; c < 2; c++)
		if (stacked[c] && n[c] > INT32_MAX / B)
			return kred__ctx_fail(r->ctx, KRED_EOVERFLOW,
					      "batch: %lld problems of %lld rows pass the int32 "
					      "rows of ranges", (long long)B, (long long)n[c]);
	col = index_column(r);
	if (col >= 0 && stacked[oth] && r->dtype == KRED_FLOAT32 && B * n[oth] > (1 << 24))
		return kred__ctx_fail(r->ctx, KRED_EINVAL,
				      "batch: indices over %lld stacked rows pass the integers "
				      "float32 holds exactly (2^24): use float64",
				      (long long)(B * n[oth]));
	size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	use = kred__calloc((size_t)n_user + 1, sizeof(*use));
	own = kred__calloc((size_t)n_user + 1, sizeof(*own));
	tri = kred__malloc(sizeof(*tri) * (size_t)(10 * B + 10)); /* 5 B a triple at most */
	if (!use || !own || !tri) {
		s = kred__ctx_fail(r->ctx, KRED_ENOMEM, "out of memory");
		goto done;
	}
	/* a shared argument of a stacked side is repeated for every problem */
	for (int k = 0; k < n_user; k++) {
		int cat = r->args[k].cat;
		int64_t bk = batch->arg_batch ? batch->arg_batch[k] : B;
		size_t one;

		use[k] = args ? args[k] : NULL;
		if (cat == KRED__CAT_P || bk == B || !stacked[cat] || !args || !args[k])
			continue;
		one = (size_t)n[cat] * (size_t)r->args[k].dim * (size_t)size;
		own[k] = kred__malloc(one * (size_t)B + 1);
		if (!own[k]) {
			s = kred__ctx_fail(r->ctx, KRED_ENOMEM, "out of memory");
			goto done;
		}
		for (int64_t b = 0; b < B; b++)
			memcpy((char *)own[k] + (size_t)b * one, args[k], one);
		use[k] = own[k];
	}
	triple(B, n[0], n[1], stacked[0], stacked[1], tri, &nb_i);
	rg.struct_size = sizeof(rg);
	rg.n_blocks_i = nb_i;
	rg.ranges_i = tri;
	rg.slices_i = tri + 2 * nb_i;
	rg.redranges_j = tri + 3 * nb_i;
	{
		int32_t *t = tri + 3 * nb_i + 2 * B;

		triple(B, n[1], n[0], stacked[1], stacked[0], t, &nb_j);
		rg.n_blocks_j = nb_j;
		rg.ranges_j = t;
		rg.slices_j = t + 2 * nb_j;
		rg.redranges_i = t + 3 * nb_j;
	}
	s = kred_reduction_run_ranges(r, stacked[0] ? B * nx : nx, stacked[1] ? B * ny : ny, use,
				      out, &rg);
	/* indices counted along the stacked axis, back to each problem's own */
	if (!s && col >= 0 && stacked[oth]) {
		int64_t rows = n[out_cat], shift = n[oth];

		for (int64_t b = 0; b < B; b++)
			for (int64_t i = 0; i < rows; i++)
				for (int c = col; c < r->out_dim; c++) {
					int64_t at = ((b * rows + i) * r->out_dim + c);

					if (size == 8 && ((double *)out)[at] >= 0)
						((double *)out)[at] -= (double)(b * shift);
					else if (size == 4 && ((float *)out)[at] >= 0)
						((float *)out)[at] -= (float)(b * shift);
				}
	}
done:
	for (int k = 0; own && k < n_user; k++)
		kred__free(own[k]);
	kred__free(own);
	kred__free(use);
	kred__free(tri);
	return s;
}
