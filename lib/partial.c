/* Partial states: a reduction over one block of the reduced axis, kept in a form that
 * merges with the other blocks' states, and chunked runs built on them (inputs larger
 * than a device's memory). The MPI ring (comm.c) folds its blocks with the same pieces.
 *
 * A state is what a "companion" reduction outputs, held in double: the companion keeps
 * what the user's reduction forgets and a merge needs.
 *
 *   reduction                      companion                       state per row
 *   Sum                            itself                          the sums
 *   LogSumExp, Max_SumShiftExp     Max_SumShiftExp                 (m, s)
 *   LogSumExpWeight, ..ExpWeight   Max_SumShiftExpWeight(f, g)     (m, s_1..s_E)
 *   SumSoftMaxWeight               Max_SumShiftExpWeight(f, 1|g)   (m, s_0, s_1..s_E)
 *   Min, Max                       itself                          the values
 *   ArgMin, ArgMax, Min_ArgMin..   Min_ArgMin, Max_ArgMax          D values, D indices
 *   KMin, ArgKMin, KMin_ArgKMin    KMin_ArgKMin                    K*D values, K*D indices
 *
 * Indices in a state count from the start of the whole reduced axis (the block's offset
 * is added), so that merges are exact and independent of the order of blocks: on equal
 * values the lower index wins, and index -1 (nothing selected: an empty block, or only
 * NaN terms) loses to any index, as FORMULAS.md asks of a single run. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "internal.h"

enum kind { K_SUM, K_SHIFT, K_MIN, K_MAX, K_ARGMIN, K_ARGMAX, K_KMIN };

static enum kind kind_of(enum kred__red red)
{
	switch (red) {
	case KRED__RED_SUM: return K_SUM;
	case KRED__RED_LSE:
	case KRED__RED_LSE_WEIGHT:
	case KRED__RED_SOFTMAX_WEIGHT:
	case KRED__RED_MAX_SUMSHIFTEXP:
	case KRED__RED_MAX_SUMSHIFTEXP_WEIGHT: return K_SHIFT;
	case KRED__RED_MIN: return K_MIN;
	case KRED__RED_MAX: return K_MAX;
	case KRED__RED_ARGMIN:
	case KRED__RED_MIN_ARGMIN: return K_ARGMIN;
	case KRED__RED_ARGMAX:
	case KRED__RED_MAX_ARGMAX: return K_ARGMAX;
	default: return K_KMIN;
	}
}

/* The companion's reduction; the user's own when it already keeps its state. */
static enum kred__red companion_red(enum kred__red red)
{
	switch (red) {
	case KRED__RED_LSE: return KRED__RED_MAX_SUMSHIFTEXP;
	case KRED__RED_LSE_WEIGHT:
	case KRED__RED_SOFTMAX_WEIGHT: return KRED__RED_MAX_SUMSHIFTEXP_WEIGHT;
	case KRED__RED_ARGMIN: return KRED__RED_MIN_ARGMIN;
	case KRED__RED_ARGMAX: return KRED__RED_MAX_ARGMAX;
	case KRED__RED_KMIN:
	case KRED__RED_ARGKMIN: return KRED__RED_KMIN_ARGKMIN;
	default: return red;
	}
}

/* The reduction that computes r's states (r itself, or its companion). */
static kred_reduction *state_red(kred_reduction *r)
{
	return r->state_red ? r->state_red : r;
}

kred_status kred__state_prepare(kred_reduction *r, struct kred__error *err)
{
	enum kred__red red = companion_red(r->red);
	struct kred__graph *g;
	const struct kred__node *f, *w = NULL;
	kred_status s;

	if (red == r->red && r->red != KRED__RED_SOFTMAX_WEIGHT)
		return KRED_OK;
	if (r->state_red)
		return KRED_OK;
	g = kred__graph_new();
	if (!g)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	s = kred__graph_copy_vars(g, r->g, err);
	if (s) {
		kred__graph_free(g);
		return s;
	}
	f = kred__node_import(g, r->f, err);
	if (r->w)
		w = kred__node_import(g, r->w, err);
	/* SumSoftMaxWeight divides by sum exp(f - m): a weight of 1 in front of g keeps it. */
	if (r->red == KRED__RED_SOFTMAX_WEIGHT)
		w = kred__op2(g, KRED__OP_CONCAT, kred__cst(g, 1.0, err), w, err);
	if (!f || (r->w && !w)) {
		kred__graph_free(g);
		return err->status ? err->status : kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	}
	/* kred__reduction_finish records its errors on the context: copy them back. */
	s = kred__reduction_finish(r->ctx, g, f, w, red, r->k, r->axis, r->dtype, r->sum_scheme,
				   r->fast_math, 0, NULL, &r->state_red);
	if (s)
		return kred__fail(err, s, -1, "the partial-state form of the reduction: %s",
				  kred_errmsg(r->ctx));
	return KRED_OK;
}

int kred__state_width(const kred_reduction *r)
{
	return r->state_red ? r->state_red->out_dim : r->out_dim;
}

/* Values and indices of a selection state: how many values (the indices follow). */
static int n_values(const kred_reduction *r)
{
	switch (kind_of(r->red)) {
	case K_ARGMIN:
	case K_ARGMAX:
	case K_KMIN: return kred__state_width(r) / 2;
	default: return kred__state_width(r);
	}
}

void kred__state_init(const kred_reduction *r, int64_t rows, double *st)
{
	int w = kred__state_width(r), nv = n_values(r);

	for (int64_t i = 0; i < rows; i++) {
		double *p = st + i * w;

		for (int c = 0; c < w; c++) {
			switch (kind_of(r->red)) {
			case K_SUM: p[c] = 0; break;
			case K_SHIFT: p[c] = c == 0 ? -INFINITY : 0; break;
			case K_MAX: p[c] = -INFINITY; break;
			case K_ARGMAX: p[c] = c < nv ? -INFINITY : -1; break;
			case K_MIN: p[c] = INFINITY; break;
			default: p[c] = c < nv ? INFINITY : -1; break;
			}
		}
	}
}

/* Whether (va, ia) comes before (vb, ib) in a selection: the better value, then the
 * lower index, an index of -1 (nothing) last. */
static int before(double va, double ia, double vb, double ib, int largest)
{
	if (ia < 0 || ib < 0)
		return ib < 0 && ia >= 0;
	if (va != vb)
		return largest ? va > vb : va < vb;
	return ia < ib;
}

/* (m, s...) states, as eval.c defines them: m = NaN when a term is NaN (then s is
 * NaN), m = +inf when a term is +inf (s NaN: exp(inf - inf)), m = -inf and s = 0 when
 * every term is -inf or there is none. */
static void merge_shift(double *a, const double *b, int w)
{
	double ma = a[0], mb = b[0], m, fa, fb;

	if (isnan(ma) || isnan(mb) || ma == INFINITY || mb == INFINITY) {
		a[0] = isnan(ma) || isnan(mb) ? NAN : INFINITY;
		for (int c = 1; c < w; c++)
			a[c] = NAN;
		return;
	}
	if (mb == -INFINITY)
		return;
	if (ma == -INFINITY) {
		memcpy(a, b, sizeof(*a) * (size_t)w);
		return;
	}
	m = ma > mb ? ma : mb;
	fa = ma == m ? 1 : exp(ma - m);
	fb = mb == m ? 1 : exp(mb - m);
	for (int c = 1; c < w; c++)
		a[c] = a[c] * fa + b[c] * fb;
	a[0] = m;
}

/* Merges two sorted lists of k (value, index) pairs, rank-major with stride d, into a. */
static void merge_kmin(double *a, const double *b, int k, int d, int c)
{
	double v[2048], ix[2048];
	int ia = 0, ib = 0, nv = k * d;

	for (int q = 0; q < k; q++) {
		const double *pa = a + ia * d + c, *pb = b + ib * d + c;

		if (ib >= k || (ia < k && !before(pb[0], pb[nv], pa[0], pa[nv], 0))) {
			v[q] = pa[0];
			ix[q] = pa[nv];
			ia++;
		} else {
			v[q] = pb[0];
			ix[q] = pb[nv];
			ib++;
		}
	}
	for (int q = 0; q < k; q++) {
		a[q * d + c] = v[q];
		a[nv + q * d + c] = ix[q];
	}
}

void kred__state_merge(const kred_reduction *r, int64_t rows, double *acc, const double *blk)
{
	int w = kred__state_width(r), nv = n_values(r);
	enum kind kd = kind_of(r->red);

	for (int64_t i = 0; i < rows; i++) {
		double *a = acc + i * w;
		const double *b = blk + i * w;

		switch (kd) {
		case K_SUM:
			for (int c = 0; c < w; c++)
				a[c] += b[c];
			break;
		case K_SHIFT:
			merge_shift(a, b, w);
			break;
		case K_MIN:
		case K_MAX:
			/* partial minima are never NaN: those terms were skipped */
			for (int c = 0; c < w; c++)
				if (kd == K_MIN ? b[c] < a[c] : b[c] > a[c])
					a[c] = b[c];
			break;
		case K_ARGMIN:
		case K_ARGMAX:
			for (int c = 0; c < nv; c++)
				if (before(b[c], b[nv + c], a[c], a[nv + c], kd == K_ARGMAX)) {
					a[c] = b[c];
					a[nv + c] = b[nv + c];
				}
			break;
		default:
			for (int c = 0; c < r->f->dim; c++)
				merge_kmin(a, b, r->k, r->f->dim, c);
			break;
		}
	}
}

void kred__state_finish(const kred_reduction *r, int64_t rows, const double *st, void *out)
{
	int w = kred__state_width(r), od = r->out_dim, nv = n_values(r);
	int dbl = r->dtype == KRED_FLOAT64;

	for (int64_t i = 0; i < rows; i++) {
		const double *p = st + i * w;

		for (int c = 0; c < od; c++) {
			double v;

			switch (r->red) {
			/* the special values of eval.c's red_lse and its kin */
			case KRED__RED_LSE:
				v = isfinite(p[0]) ? p[0] + log(p[1]) : p[0];
				break;
			case KRED__RED_LSE_WEIGHT:
				v = isfinite(p[0]) ? p[0] + log(p[1 + c])
				    : p[0] == INFINITY ? NAN : p[0];
				break;
			case KRED__RED_SOFTMAX_WEIGHT:
				v = isfinite(p[0]) ? p[2 + c] / p[1] : NAN;
				break;
			case KRED__RED_ARGMIN:
			case KRED__RED_ARGMAX:
			case KRED__RED_ARGKMIN:
				v = p[nv + c];
				break;
			default:
				v = p[c];
				break;
			}
			if (dbl)
				((double *)out)[i * od + c] = v;
			else
				((float *)out)[i * od + c] = (float)v;
		}
	}
}

/* ---- chunked runs */

int64_t kred__memory_cap(const kred_context *ctx)
{
	int64_t cap = ctx->opt.device_memory > 0 ? ctx->opt.device_memory : 0, dev = 0;
	int64_t e = kred__env_bytes("KRED_DEVICE_MEMORY");

	if (e > 0 && (cap == 0 || e < cap))
		cap = e;
	if (ctx->backend->version >= 2 && ctx->backend->memory)
		dev = ctx->backend->memory(ctx->bstate);
	if (dev > 0 && (cap == 0 || dev < cap))
		cap = dev;
	return cap;
}

/* Counters for the tests; atomic, since runs on different contexts may be concurrent. */
static _Atomic int64_t n_runs, n_chunked;

struct kred__run_stats kred__run_stats_take(void)
{
	struct kred__run_stats s;

	s.runs = atomic_exchange(&n_runs, 0);
	s.chunked = atomic_exchange(&n_chunked, 0);
	return s;
}

/* Bytes per row of each category (i, j, parameters), over the reduction's arguments. */
static void arg_bytes(const kred_reduction *r, int64_t per[3])
{
	int64_t size = r->dtype == KRED_FLOAT64 ? 8 : 4;

	per[0] = per[1] = per[2] = 0;
	for (int p = 0; p < r->n_args; p++)
		per[r->args[p].cat] += r->args[p].dim * size;
}

/* The arguments of the block of output rows [r0, r0 + nr) and reduced rows [c0, ...). */
void kred__offset_args(const kred_reduction *r, const void *const *args, int64_t r0, int64_t c0,
		       const void **sub)
{
	int64_t size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	int out_cat = r->axis == KRED_REDUCE_J ? KRED__CAT_I : KRED__CAT_J;

	for (int p = 0; p < r->n_args; p++) {
		int64_t first = r->args[p].cat == KRED__CAT_P ? 0
				: r->args[p].cat == out_cat ? r0 : c0;

		sub[p] = args[p] ? (const char *)args[p] + first * r->args[p].dim * size : NULL;
	}
}

static kred_status direct(kred_reduction *r, int64_t nx, int64_t ny, const void *const *args,
			  void *out, struct kred__error *err)
{
	const struct kred_backend *b = r->ctx->backend;
	kred_status s;

	atomic_fetch_add_explicit(&n_runs, 1, memory_order_relaxed);
	if (b->version >= 3 && b->concurrent_run)
		return b->run(r->ctx->bstate, r->module, r, nx, ny, args, out, err);
	pthread_mutex_lock(&r->ctx->lock);
	s = b->run(r->ctx->bstate, r->module, r, nx, ny, args, out, err);
	pthread_mutex_unlock(&r->ctx->lock);
	return s;
}

/* Runs r on (rows, cols) = output rows and reduced rows of the block at (r0, c0), with
 * the sizes in kred_reduction_run's order. */
static kred_status run_block(kred_reduction *r, int64_t rows, int64_t cols, int64_t r0, int64_t c0,
			     const void *const *args, void *out, struct kred__error *err)
{
	const void **sub = kred__malloc(sizeof(*sub) * (size_t)(r->n_args + 1));
	kred_status s;

	if (!sub)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	kred__offset_args(r, args, r0, c0, sub);
	s = r->axis == KRED_REDUCE_J ? direct(r, rows, cols, sub, out, err)
				     : direct(r, cols, rows, sub, out, err);
	kred__free(sub);
	return s;
}

/* Converts a companion's output (rows x width, of the dtype) to a state, indices shifted
 * by offset. */
static void to_state(const kred_reduction *r, int64_t rows, const void *o, int64_t offset,
		     double *st)
{
	int w = kred__state_width(r), nv = n_values(r);
	enum kind kd = kind_of(r->red);
	int has_index = kd == K_ARGMIN || kd == K_ARGMAX || kd == K_KMIN;

	for (int64_t i = 0; i < rows; i++) {
		for (int c = 0; c < w; c++) {
			double v = r->dtype == KRED_FLOAT64 ? ((const double *)o)[i * w + c]
							    : ((const float *)o)[i * w + c];

			if (has_index && c >= nv && v >= 0)
				v += (double)offset;
			st[i * w + c] = v;
		}
	}
}

/* How to cut a run into blocks that fit the cap: rows per block and columns per block. */
static kred_status plan(const kred_reduction *r, int64_t cap, int64_t rows, int64_t cols,
			int64_t *rb, int64_t *cb, struct kred__error *err)
{
	int64_t per[3], size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	int out_cat = r->axis == KRED_REDUCE_J ? 0 : 1;
	int64_t row_bytes, col_bytes, budget, fixed;

	arg_bytes(r, per);
	/* A row holds its inputs, its output (the state's width, which is at least the
	 * output's) and as much again for the backend's partial states. */
	row_bytes = per[out_cat] + 2 * (int64_t)kred__state_width(r) * size;
	col_bytes = per[1 - out_cat];
	fixed = per[2];
	/* Half the cap for kred's buffers: the backends keep working buffers besides. */
	budget = cap / 2 - fixed;
	if (budget < row_bytes + col_bytes)
		return kred__fail(err, KRED_EDEVICE, -1,
				  "a device memory cap of %lld bytes cannot hold one row and one "
				  "column of this reduction (%lld bytes, half the cap at most)",
				  (long long)cap, (long long)(2 * (row_bytes + col_bytes + fixed)));
	if (rows * row_bytes + cols * col_bytes <= budget) {
		*rb = rows;
		*cb = cols;
		return KRED_OK;
	}
	/* Columns take at most half the budget; the rows the rest. */
	*cb = cols;
	if (cols * col_bytes > budget / 2)
		*cb = col_bytes ? (budget / 2) / col_bytes : cols;
	if (*cb < 1)
		*cb = 1;
	*rb = (budget - *cb * col_bytes) / row_bytes;
	if (*rb < 1)
		*rb = 1;
	if (*rb > rows)
		*rb = rows;
	return KRED_OK;
}

int kred__run_whole(kred_reduction *r, int64_t nx, int64_t ny)
{
	int64_t cap = kred__memory_cap(r->ctx), rb = 0, cb = 0;
	int64_t rows = r->axis == KRED_REDUCE_J ? nx : ny, cols = r->axis == KRED_REDUCE_J ? ny : nx;
	struct kred__error err;

	if (cap <= 0)
		return 1;
	kred__error_clear(&err);
	return plan(r, cap, rows, cols, &rb, &cb, &err) == KRED_OK && rb >= rows && cb >= cols;
}

kred_status kred__run_plain(kred_reduction *r, int64_t nx, int64_t ny, const void *const *args,
			    void *out, struct kred__error *err)
{
	int64_t cap = kred__memory_cap(r->ctx), rows, cols, rb = 0, cb = 0;
	int64_t size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	kred_reduction *sr;
	double *acc = NULL, *blk = NULL;
	void *tmp = NULL;
	kred_status s;

	if (cap <= 0)
		return direct(r, nx, ny, args, out, err);
	rows = r->axis == KRED_REDUCE_J ? nx : ny;
	cols = r->axis == KRED_REDUCE_J ? ny : nx;
	s = plan(r, cap, rows, cols, &rb, &cb, err);
	if (s)
		return s;
	if (rb >= rows && cb >= cols)
		return direct(r, nx, ny, args, out, err);
	atomic_fetch_add_explicit(&n_chunked, 1, memory_order_relaxed);
	if (cb < cols) {
		s = kred__state_prepare(r, err);
		if (s)
			return s;
	}
	sr = state_red(r);
	if (cb < cols) {
		int w = kred__state_width(r);

		acc = kred__malloc((size_t)(rb * w) * sizeof(double));
		blk = kred__malloc((size_t)(rb * w) * sizeof(double));
		tmp = kred__malloc((size_t)(rb * w * size));
		if (!acc || !blk || !tmp) {
			s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
			goto done;
		}
	}
	kred__log("chunked run: %lld x %lld in blocks of %lld x %lld (cap %lld bytes)",
		  (long long)rows, (long long)cols, (long long)rb, (long long)cb, (long long)cap);
	for (int64_t r0 = 0; r0 < rows; r0 += rb) {
		int64_t nr = rows - r0 < rb ? rows - r0 : rb;
		char *o = (char *)out + r0 * r->out_dim * size;

		if (cb >= cols) {
			s = run_block(r, nr, cols, r0, 0, args, o, err);
			if (s)
				goto done;
			continue;
		}
		kred__state_init(r, nr, acc);
		for (int64_t c0 = 0; c0 < cols; c0 += cb) {
			int64_t nc = cols - c0 < cb ? cols - c0 : cb;

			s = run_block(sr, nr, nc, r0, c0, args, tmp, err);
			if (s)
				goto done;
			to_state(r, nr, tmp, c0, blk);
			kred__state_merge(r, nr, acc, blk);
		}
		kred__state_finish(r, nr, acc, o);
	}
	s = KRED_OK;
done:
	kred__free(acc);
	kred__free(blk);
	kred__free(tmp);
	return s;
}

kred_status kred__state_block(kred_reduction *r, int64_t nx, int64_t ny, int64_t offset,
			      const void *const *args, double *st, struct kred__error *err)
{
	int64_t rows = r->axis == KRED_REDUCE_J ? nx : ny;
	int64_t size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	void *tmp;
	kred_status s = kred__state_prepare(r, err);

	if (s)
		return s;
	tmp = kred__malloc((size_t)(rows * kred__state_width(r) * size) + 1);
	if (!tmp)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	s = kred__run_plain(state_red(r), nx, ny, args, tmp, err);
	if (!s)
		to_state(r, rows, tmp, offset, st);
	kred__free(tmp);
	return s;
}
