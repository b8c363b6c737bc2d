/* Reductions: from a spec to a checked formula and its argument list, compiled on the
 * context's backend; running it with validated sizes and pointers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Parses the spec's strings into a fresh graph. On error, records it on ctx with the
 * offending string and its caret. */
static kred_status parse_spec(kred_context *ctx, const kred_spec *spec, struct kred__graph *g,
			      const struct kred__node **f, const struct kred__node **w,
			      enum kred__red *red, int *k)
{
	struct kred__error err;
	const char *src = NULL;
	kred_status s;

	kred__error_clear(&err);
	*w = NULL;
	for (size_t a = 0; a < spec->n_aliases; a++) {
		if (!spec->aliases[a]) {
			s = kred__fail(&err, KRED_EINVAL, -1, "alias %zu is NULL", a);
			goto fail;
		}
		s = kred__parse_alias(g, spec->aliases[a], (int)a, &err);
		if (s) {
			err.where = KRED__IN_ALIAS;
			err.alias_index = (int)a;
			src = spec->aliases[a];
			goto fail;
		}
	}
	s = kred__red_parse(spec->reduction, red, k, &err);
	if (s) {
		err.where = KRED__IN_REDUCTION;
		src = spec->reduction;
		goto fail;
	}
	src = spec->formula;
	err.where = KRED__IN_FORMULA;
	s = kred__parse_formula(g, spec->formula, f, &err);
	if (s)
		goto fail;
	s = kred__diff_expand(g, *f, f, &err);
	if (s)
		goto fail;
	if (kred__reds[*red].flags & KRED__RED_WEIGHT) {
		if (!spec->weight) {
			src = NULL;
			s = kred__fail(&err, KRED_EREDUCTION, -1, "%s needs a weight formula",
				       kred__reds[*red].name);
			goto fail;
		}
		src = spec->weight;
		err.where = KRED__IN_WEIGHT;
		s = kred__parse_formula(g, spec->weight, w, &err);
		if (s)
			goto fail;
		s = kred__diff_expand(g, *w, w, &err);
		if (s)
			goto fail;
	} else if (spec->weight) {
		src = NULL;
		s = kred__fail(&err, KRED_EREDUCTION, -1, "%s takes no weight formula",
			       kred__reds[*red].name);
		goto fail;
	}
	if ((kred__reds[*red].flags & KRED__RED_SCALAR) && (*f)->dim != 1) {
		src = NULL;
		s = kred__fail(&err, KRED_EDIM, -1,
			       "%s needs a formula of dimension 1, got dimension %d",
			       kred__reds[*red].name, (*f)->dim);
		goto fail;
	}
	return KRED_OK;
fail:
	return kred__ctx_set_error(ctx, &err, src);
}

kred_status kred_reduction_create(kred_context *ctx, const kred_spec *spec, kred_reduction **out)
{
	return kred_reduction_create_ex(ctx, spec, NULL, out);
}

kred_status kred_reduction_create_ex(kred_context *ctx, const kred_spec *spec,
				     const kred_reduction_options *opt, kred_reduction **out)
{
	kred_reduction_options o = { 0 };
	int fast;
	const struct kred__node *f = NULL, *w = NULL;
	struct kred__graph *g;
	enum kred__red red;
	int k;
	kred_status s;

	if (out)
		*out = NULL;
	if (!ctx)
		return KRED_EINVAL;
	kred__ctx_clear_error(ctx);
	if (!out || !spec)
		return kred__ctx_fail(ctx, KRED_EINVAL, "kred_reduction_create: NULL %s",
				      out ? "spec" : "out");
	if (!spec->formula || !spec->reduction || (spec->n_aliases && !spec->aliases))
		return kred__ctx_fail(ctx, KRED_EINVAL, "kred_reduction_create: the spec has no %s",
				      !spec->formula ? "formula"
				      : !spec->reduction ? "reduction" : "aliases");
	if ((unsigned)spec->axis > KRED_REDUCE_I || (unsigned)spec->dtype > KRED_FLOAT64 ||
	    (unsigned)spec->sum_scheme > KRED_SUM_KAHAN)
		return kred__ctx_fail(ctx, KRED_EINVAL, "invalid axis, dtype or sum scheme in the "
				      "spec (%d, %d, %d)", (int)spec->axis, (int)spec->dtype,
				      (int)spec->sum_scheme);
	if (opt) {
		size_t n = opt->struct_size && opt->struct_size < sizeof(o) ? opt->struct_size
									     : sizeof(o);

		memcpy(&o, opt, n);
	}
	if ((unsigned)o.fast_math > KRED_FAST_MATH_ON)
		return kred__ctx_fail(ctx, KRED_EINVAL, "invalid fast_math in the reduction's "
				      "options (%d)", (int)o.fast_math);
	fast = o.fast_math == KRED_FAST_MATH_DEFAULT ? ctx->opt.fast_math != 0
						     : o.fast_math == KRED_FAST_MATH_ON;
	if (!ctx->backend)
		return kred__ctx_fail(ctx, KRED_EBACKEND, "the context has no backend");
	g = kred__graph_new();
	if (!g)
		return kred__ctx_fail(ctx, KRED_ENOMEM, "out of memory");
	s = parse_spec(ctx, spec, g, &f, &w, &red, &k);
	if (s) {
		kred__graph_free(g);
		return s;
	}
	return kred__reduction_finish(ctx, g, f, w, red, k, spec->axis, spec->dtype,
				      spec->sum_scheme ? spec->sum_scheme : KRED_SUM_BLOCK, fast, 0,
				      NULL, out);
}

int kred_reduction_fast_math(const kred_reduction *r)
{
	return r ? r->fast_math : 0;
}

int kred_reduction_n_args(const kred_reduction *r)
{
	if (!r)
		return 0;
	return r->n_args - (r->pre ? 1 : 0);
}

kred_status kred_reduction_arg(const kred_reduction *r, int pos, int *category, int *dim,
			       const char **name)
{
	if (!r || pos < 0 || pos >= kred_reduction_n_args(r))
		return KRED_EINVAL;
	if (category)
		*category = r->args[pos].cat;
	if (dim)
		*dim = r->args[pos].dim;
	if (name)
		*name = r->args[pos].name;
	return KRED_OK;
}

int kred_reduction_out_dim(const kred_reduction *r)
{
	return r ? r->out_dim : 0;
}

const char *kred_reduction_formula(const kred_reduction *r)
{
	return r ? r->formula_text : NULL;
}

const char *kred_reduction_source(kred_reduction *r)
{
	struct kred__error err;

	if (!r)
		return NULL;
	kred__ctx_clear_error(r->ctx);
	if (r->source)
		return r->source;
	kred__error_clear(&err);
	if (r->ctx->backend->source) {
		kred_status s;

		pthread_mutex_lock(&r->ctx->lock);
		s = r->ctx->backend->source(r->ctx->bstate, r, &r->source, &err);
		pthread_mutex_unlock(&r->ctx->lock);
		if (s) {
			kred__ctx_set_error(r->ctx, &err, NULL);
			return NULL;
		}
	} else {
		r->source = kred__strdup(r->formula_text);
		if (!r->source)
			kred__ctx_fail(r->ctx, KRED_ENOMEM, "out of memory");
	}
	return r->source;
}

kred_status kred_reduction_grad(const kred_reduction *r, const char *var, kred_reduction **out)
{
	if (out)
		*out = NULL;
	if (!r)
		return KRED_EINVAL;
	kred__ctx_clear_error(r->ctx);
	if (!var || !out)
		return kred__ctx_fail(r->ctx, KRED_EINVAL, "kred_reduction_grad: NULL %s",
				      var ? "out" : "variable name");
	return kred__reduction_grad(r, var, out);
}

/* rows * dim * size in bytes, or -1 if it overflows. */
static int64_t bytes(int64_t rows, int64_t dim, int64_t size)
{
	if (rows < 0 || dim < 0)
		return -1;
	if (dim && rows > INT64_MAX / dim)
		return -1;
	if (rows * dim > INT64_MAX / size || (uint64_t)(rows * dim * size) > SIZE_MAX)
		return -1;
	return rows * dim * size;
}

static int64_t arg_rows(const kred_reduction *r, int pos, int64_t nx, int64_t ny)
{
	switch (r->args[pos].cat) {
	case KRED__CAT_I: return nx;
	case KRED__CAT_J: return ny;
	default: return 1;
	}
}

/* Runs the reduction proper (no pre, no row sum), restricted to rg's triple for its axis
 * when rg is not NULL. */
static kred_status run_plain(kred_reduction *r, int64_t nx, int64_t ny, const void *const *args,
			     void *out, const struct kred__ranged *rg, struct kred__error *err)
{
	if (rg)
		return kred__run_ranged(r, nx, ny, args, out,
					r->axis == KRED_REDUCE_J ? &rg->over_j : &rg->over_i, err);
	return kred__run_plain(r, nx, ny, args, out, err);
}

static kred_status run_inner(kred_reduction *r, int64_t nx, int64_t ny, const void *const *args,
			     void *out, const struct kred__ranged *rg, struct kred__error *err)
{
	const void **args2 = NULL;
	void *pre_out = NULL, *rows_out = NULL;
	size_t size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	kred_status s;

	if (r->pre) {
		int64_t rows = r->pre->axis == KRED_REDUCE_J ? nx : ny;

		pre_out = kred__malloc((size_t)bytes(rows, r->pre->out_dim, (int64_t)size));
		args2 = kred__malloc(sizeof(*args2) * (size_t)r->n_args);
		if (!pre_out || !args2) {
			s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
			goto done;
		}
		s = run_inner(r->pre, nx, ny, args, pre_out, rg, err);
		if (s)
			goto done;
		memcpy(args2, args, sizeof(*args2) * (size_t)(r->n_args - 1));
		args2[r->n_args - 1] = pre_out;
		args = args2;
	}
	if (r->pm_sum) {
		/* A parameter's gradient: the rows of an i-output reduction, summed here. */
		int64_t rows = r->axis == KRED_REDUCE_J ? nx : ny, d = r->out_dim;
		double *acc;

		rows_out = kred__malloc((size_t)bytes(rows, d, (int64_t)size));
		acc = kred__calloc((size_t)d, sizeof(double));
		if (!rows_out || !acc) {
			kred__free(acc);
			s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
			goto done;
		}
		s = run_plain(r, nx, ny, args, rows_out, rg, err);
		for (int64_t i = 0; !s && i < rows; i++)
			for (int64_t c = 0; c < d; c++)
				acc[c] += size == 8 ? ((double *)rows_out)[i * d + c]
						    : ((float *)rows_out)[i * d + c];
		for (int64_t c = 0; !s && c < d; c++) {
			if (size == 8)
				((double *)out)[c] = acc[c];
			else
				((float *)out)[c] = (float)acc[c];
		}
		kred__free(acc);
	} else {
		s = run_plain(r, nx, ny, args, out, rg, err);
	}
done:
	kred__free(rows_out);
	kred__free(pre_out);
	kred__free(args2);
	return s;
}

kred_status kred__run_check(kred_reduction *r, int64_t nx, int64_t ny, const void *const *args,
			    const void *out, int64_t reduced)
{
	int64_t size, rows;
	int n_user;

	if (nx < 0 || ny < 0)
		return kred__ctx_fail(r->ctx, KRED_EINVAL, "negative size (nx = %lld, ny = %lld)",
				      (long long)nx, (long long)ny);
	size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	n_user = kred_reduction_n_args(r);
	if (n_user && !args)
		return kred__ctx_fail(r->ctx, KRED_EINVAL, "args is NULL but the reduction takes "
				      "%d arguments", n_user);
	for (int k = 0; k < n_user; k++) {
		int64_t rk = arg_rows(r, k, nx, ny);

		if (bytes(rk, r->args[k].dim, size) < 0)
			return kred__ctx_fail(r->ctx, KRED_EOVERFLOW,
					      "argument %d (%s): %lld x %d values overflow", k,
					      r->args[k].name, (long long)rk, r->args[k].dim);
		if (!args[k] && rk > 0)
			return kred__ctx_fail(r->ctx, KRED_EINVAL, "argument %d%s%s%s is NULL", k,
					      *r->args[k].name ? " (" : "", r->args[k].name,
					      *r->args[k].name ? ")" : "");
	}
	rows = r->pm_sum ? 1 : r->axis == KRED_REDUCE_J ? nx : ny;
	if (bytes(rows, r->out_dim, size) < 0 ||
	    bytes(r->axis == KRED_REDUCE_J ? nx : ny, r->out_dim, size) < 0)
		return kred__ctx_fail(r->ctx, KRED_EOVERFLOW, "output of %lld x %d values overflows",
				      (long long)rows, r->out_dim);
	if (!out && rows * r->out_dim > 0)
		return kred__ctx_fail(r->ctx, KRED_EINVAL, "out is NULL");
	if ((kred__reds[r->red].flags & KRED__RED_INDEX) && r->dtype == KRED_FLOAT32 &&
	    reduced > (1 << 24))
		return kred__ctx_fail(r->ctx, KRED_ERANGE,
				      "%s over %lld terms in float32: indices above 2^24 are not "
				      "exact in float32; use float64",
				      kred__reds[r->red].name, (long long)reduced);
	return KRED_OK;
}

kred_status kred_reduction_run(kred_reduction *r, int64_t nx, int64_t ny, const void *const *args,
			       void *out)
{
	return kred_reduction_run_ranges(r, nx, ny, args, out, NULL);
}

kred_status kred_reduction_run_ranges(kred_reduction *r, int64_t nx, int64_t ny,
				      const void *const *args, void *out, const kred_ranges *ranges)
{
	struct kred__error err;
	struct kred__ranged rg;
	int need_i = 0;
	kred_status s;

	if (!r)
		return KRED_EINVAL;
	kred__ctx_clear_error(r->ctx);
	s = kred__run_check(r, nx, ny, args, out, r->axis == KRED_REDUCE_J ? ny : nx);
	if (s)
		return s;
	kred__error_clear(&err);
	if (!ranges) {
		s = run_inner(r, nx, ny, args, out, NULL, &err);
	} else {
		for (const kred_reduction *q = r; q; q = q->pre)
			need_i |= q->axis == KRED_REDUCE_I;
		s = kred__ranged_prepare(ranges, nx, ny, need_i, &rg, &err);
		if (!s)
			s = run_inner(r, nx, ny, args, out, &rg, &err);
		kred__ranged_free(&rg);
	}
	if (s)
		kred__ctx_set_error(r->ctx, &err, NULL);
	return s;
}

/* ---- for kred bench (lib/plain.h) */

int kred__reduction_nodes(const kred_reduction *r)
{
	return kred__node_count(r->g, r->f);
}

kred_status kred__reduction_grad_simplify(const kred_reduction *r, const char *var,
					  int simplify, kred_reduction **out)
{
	kred_status s;

	kred__diff_simplify = simplify;
	s = kred_reduction_grad(r, var, out);
	kred__diff_simplify = 1;
	return s;
}
