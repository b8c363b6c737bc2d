/* Making a reduction from a formula graph: its argument list, its text and its module on
 * the context's backend; and destroying one. Below everything that makes reductions
 * (reduction.c from a spec, diff.c for gradients, partial.c for the state reductions),
 * so that none of them calls back into another. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *const cat_names[] = { "Vi", "Vj", "Pm" };

/* Collects the argument positions from the declared variables and from every variable
 * node under f and w; checks that each position has one category and dimension and
 * that positions run from 0 without a gap. */
static kred_status collect_args(kred_reduction *r, struct kred__error *err)
{
	struct kred__graph *g = r->g;
	unsigned char *used = kred__calloc((size_t)g->n_nodes, 1);
	int n = 0;
	kred_status s = KRED_OK;

	if (!used)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	/* ids are topological: one downward sweep marks everything under f and w */
	used[r->f->id] = 1;
	if (r->w)
		used[r->w->id] = 1;
	for (int id = g->n_nodes - 1; id >= 0; id--)
		if (used[id])
			for (int k = 0; k < g->nodes[id]->nargs; k++)
				used[g->nodes[id]->arg[k]->id] = 1;
	for (int k = 0; k < g->n_vars; k++)
		if (g->vars[k].pos + 1 > n)
			n = g->vars[k].pos + 1;
	for (int id = 0; id < g->n_nodes; id++)
		if (used[id] && g->nodes[id]->op == KRED__OP_VAR && g->nodes[id]->ints[0] + 1 > n)
			n = g->nodes[id]->ints[0] + 1;
	r->args = kred__calloc((size_t)n, sizeof(*r->args));
	if (!r->args) {
		s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto done;
	}
	for (int k = 0; k < n; k++)
		r->args[k].cat = -1;
	r->n_args = n;
	for (int k = 0; k < g->n_vars; k++) {
		struct kred__arg *a = &r->args[g->vars[k].pos];

		/* two aliases of one position (they must agree, parse.c checks): the first
		 * names it, as the printer does */
		if (a->cat >= 0)
			continue;
		a->cat = g->vars[k].cat;
		a->dim = g->vars[k].dim;
		a->name = g->vars[k].name;
	}
	for (int id = 0; id < g->n_nodes; id++) {
		const struct kred__node *v = g->nodes[id];
		struct kred__arg *a;

		if (!used[id] || v->op != KRED__OP_VAR)
			continue;
		a = &r->args[v->ints[0]];
		if (a->cat < 0) {
			a->cat = v->ints[2];
			a->dim = v->ints[1];
			a->name = "";
		} else if (a->cat != v->ints[2] || a->dim != v->ints[1]) {
			s = kred__fail(err, KRED_EALIAS, -1,
				       "position %d is used as %s(%d,%d) and as %s(%d,%d)",
				       v->ints[0], cat_names[a->cat], v->ints[0], a->dim,
				       cat_names[v->ints[2]], v->ints[0], v->ints[1]);
			goto done;
		}
	}
	for (int k = 0; k < n; k++) {
		if (r->args[k].cat < 0) {
			s = kred__fail(err, KRED_EALIAS, -1,
				       "no variable at position %d (positions must run from 0 "
				       "to %d without a gap)", k, n - 1);
			goto done;
		}
	}
done:
	kred__free(used);
	return s;
}

kred_status kred__reduction_finish(kred_context *ctx, struct kred__graph *g,
				   const struct kred__node *f, const struct kred__node *w,
				   enum kred__red red, int k, kred_axis axis, kred_dtype dtype,
				   kred_sum_scheme sum, int fast_math, int pm_sum,
				   kred_reduction *pre,
				   kred_reduction **out)
{
	struct kred__error err;
	struct kred__buf text = { 0 };
	kred_reduction *r;
	kred_status s;

	*out = NULL;
	kred__error_clear(&err);
	r = kred__calloc(1, sizeof(*r));
	if (!r) {
		kred__graph_free(g);
		kred_reduction_destroy(pre);
		return kred__ctx_fail(ctx, KRED_ENOMEM, "out of memory");
	}
	r->ctx = ctx;
	r->g = g;
	r->f = f;
	r->w = w;
	r->red = red;
	r->k = k;
	r->axis = axis;
	r->dtype = dtype;
	r->sum_scheme = sum;
	r->fast_math = fast_math;
	r->pm_sum = pm_sum;
	r->pre = pre;
	r->out_dim = kred__red_out_dim(red, f->dim, w ? w->dim : 0, k);
	s = collect_args(r, &err);
	if (s)
		goto fail;
	{
		char *ft = kred__node_print(g, f), *wt = w ? kred__node_print(g, w) : NULL;

		if (ft && (!w || wt)) {
			kred__buf_puts(&text, ft);
			if (wt)
				kred__buf_printf(&text, " ; weight %s", wt);
		} else {
			text.oom = 1;
		}
		kred__free(ft);
		kred__free(wt);
	}
	r->formula_text = kred__buf_take(&text);
	if (!r->formula_text) {
		s = kred__fail(&err, KRED_ENOMEM, -1, "out of memory");
		goto fail;
	}
	pthread_mutex_lock(&ctx->lock);
	s = ctx->backend->compile(ctx->bstate, r, &r->module, &err);
	pthread_mutex_unlock(&ctx->lock);
	if (s)
		goto fail;
	*out = r;
	return KRED_OK;
fail:
	kred__ctx_set_error(ctx, &err, NULL);
	kred_reduction_destroy(r);
	return s;
}

void kred_reduction_destroy(kred_reduction *r)
{
	if (!r)
		return;
	if (r->module && r->ctx->backend->module_free) {
		pthread_mutex_lock(&r->ctx->lock);
		r->ctx->backend->module_free(r->ctx->bstate, r->module);
		pthread_mutex_unlock(&r->ctx->lock);
	}
	kred_reduction_destroy(r->pre);
	kred_reduction_destroy(r->state_red);
	kred_reduction_destroy(r->batch_red);
	kred__free(r->batch_rows);
	kred__graph_free(r->g);
	kred__free(r->args);
	kred__free(r->formula_text);
	kred__free(r->source);
	kred__free(r);
}
