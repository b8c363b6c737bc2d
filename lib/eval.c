/* The reference evaluator: every reduction computed pair by pair in double precision,
 * written to be obviously correct rather than fast. It is the oracle of every backend. */
#include <math.h>
#include <string.h>

#include "internal.h"

/*
 * How it works. The nodes under F and G are collected once per run (ids are a
 * topological order, so a pass from the highest id down marks every argument of a
 * marked node) and evaluated, for each pair (i, j), in increasing id order into one
 * scratch vector where each node owns a slice. No recursion, no code shared with the
 * emitter.
 *
 * Conventions the emitted kernels must match, pinned here:
 * - XLogX(0) = 0, SinXDivX(0) = 1, Rsqrt(0) = 0, Step(0) = 1, Sign(0) = 0.
 * - Normalize(0) = 0: it is Rsqrt(SqNorm2(f)) * f, as in KeOps.
 * - Round and OneHot round halves away from zero (C round()), as KeOps does.
 * - NaN inputs behave as the comparison forms a kernel writes: Sign(NaN) = 0
 *   ((x > 0) - (x < 0)), Step(NaN) = 1 (x < 0 ? 0 : 1), IfElse(NaN, g, h) = h,
 *   comparisons with NaN are 0 except NotEqual; the other ops propagate NaN.
 * - Min, Max, ArgMin, ArgMax, Min_ArgMin, Max_ArgMax and KMin skip NaN terms (a
 *   compare-and-select never picks them); a row of only NaN gives the neutral value
 *   (+inf or -inf, index -1). The first non-NaN term is always taken, so a row of +inf
 *   gives Min = +inf at index 0, not index -1.
 * - The LogSumExp family propagates NaN: one NaN value of F makes the row NaN.
 *   A row whose F is -inf everywhere (or an empty row) gives LogSumExp = -inf,
 *   Max_SumShiftExp = (-inf, 0); SumSoftMaxWeight then gives NaN, the honest 0 / 0.
 *   LogSumExp with a +inf term gives +inf; the weighted forms and Max_SumShiftExp give
 *   NaN there (exp(inf - inf)), as a kernel does.
 * - Sum ignores the summation scheme: a plain running sum in double is already far more
 *   accurate than any float32 backend, and as accurate as a float64 one.
 */

/* One run's state. */
struct eval {
	const struct kred_reduction *r;
	const struct kred__node **order; /* the nodes under F and G, by increasing id */
	int n_order;
	size_t *off;		/* by node id: where the node's value starts in val */
	double *val;		/* the node values of the current pair */
	const double **data;	/* by argument position: the argument as doubles */
	double **owned;		/* by argument position: a converted copy, or NULL */
	int64_t i, j;		/* the current pair */
	const double *f, *w;	/* F's and G's values in val */
	/* KMin's state: K sorted values and their indices per component of F. */
	double *kval;
	int64_t *kidx;
	int *kcount;
};

/* ---- operations */

/* The value of an element-wise op at one point; x[a] is argument a's value. */
typedef double (*scalar_fn)(const struct kred__node *n, const double *x);
/* A vector op: writes the n->dim values of n into o; a[k] is argument k's value. */
typedef void (*vector_fn)(const struct eval *e, const struct kred__node *n, double *o,
			  const double *const *a);

struct eval_op {
	scalar_fn scalar; /* element-wise ops, with broadcasting of dimension-1 arguments */
	vector_fn vector; /* the others */
};

static double ev_minus(const struct kred__node *n, const double *x) { return -x[0]; }
static double ev_inv(const struct kred__node *n, const double *x) { return 1.0 / x[0]; }
static double ev_exp(const struct kred__node *n, const double *x) { return exp(x[0]); }
static double ev_log(const struct kred__node *n, const double *x) { return log(x[0]); }
static double ev_sin(const struct kred__node *n, const double *x) { return sin(x[0]); }
static double ev_asin(const struct kred__node *n, const double *x) { return asin(x[0]); }
static double ev_cos(const struct kred__node *n, const double *x) { return cos(x[0]); }
static double ev_acos(const struct kred__node *n, const double *x) { return acos(x[0]); }
static double ev_atan(const struct kred__node *n, const double *x) { return atan(x[0]); }
static double ev_sqrt(const struct kred__node *n, const double *x) { return sqrt(x[0]); }
static double ev_square(const struct kred__node *n, const double *x) { return x[0] * x[0]; }
static double ev_abs(const struct kred__node *n, const double *x) { return fabs(x[0]); }
static double ev_floor(const struct kred__node *n, const double *x) { return floor(x[0]); }
static double ev_add(const struct kred__node *n, const double *x) { return x[0] + x[1]; }
static double ev_sub(const struct kred__node *n, const double *x) { return x[0] - x[1]; }
static double ev_mult(const struct kred__node *n, const double *x) { return x[0] * x[1]; }
static double ev_div(const struct kred__node *n, const double *x) { return x[0] / x[1]; }
static double ev_eq(const struct kred__node *n, const double *x) { return x[0] == x[1]; }
static double ev_ne(const struct kred__node *n, const double *x) { return x[0] != x[1]; }
static double ev_lt(const struct kred__node *n, const double *x) { return x[0] < x[1]; }
static double ev_gt(const struct kred__node *n, const double *x) { return x[0] > x[1]; }
static double ev_le(const struct kred__node *n, const double *x) { return x[0] <= x[1]; }
static double ev_ge(const struct kred__node *n, const double *x) { return x[0] >= x[1]; }

static double ev_atan2(const struct kred__node *n, const double *x)
{
	return atan2(x[0], x[1]);
}

static double ev_xlogx(const struct kred__node *n, const double *x)
{
	return x[0] == 0 ? 0 : x[0] * log(x[0]);
}

static double ev_sinxdivx(const struct kred__node *n, const double *x)
{
	return x[0] == 0 ? 1 : sin(x[0]) / x[0];
}

static double ev_rsqrt(const struct kred__node *n, const double *x)
{
	return x[0] == 0 ? 0 : 1 / sqrt(x[0]);
}

/* pow() is exact for small integer exponents and defined for negative bases. */
static double ev_pow(const struct kred__node *n, const double *x)
{
	return pow(x[0], n->ints[0]);
}

/* Literally exp(g log f), as FORMULAS.md defines it: NaN for f < 0. */
static double ev_powf(const struct kred__node *n, const double *x)
{
	return exp(x[1] * log(x[0]));
}

static double ev_sign(const struct kred__node *n, const double *x)
{
	return (x[0] > 0) - (x[0] < 0);
}

static double ev_step(const struct kred__node *n, const double *x)
{
	return x[0] < 0 ? 0 : 1;
}

static double ev_relu(const struct kred__node *n, const double *x)
{
	return x[0] < 0 ? 0 : x[0];
}

static double ev_clamp(const struct kred__node *n, const double *x)
{
	return x[0] < x[1] ? x[1] : x[0] > x[2] ? x[2] : x[0];
}

static double ev_clampint(const struct kred__node *n, const double *x)
{
	double lo = n->ints[0], hi = n->ints[1];

	return x[0] < lo ? lo : x[0] > hi ? hi : x[0];
}

static double ev_ifelse(const struct kred__node *n, const double *x)
{
	return x[0] >= 0 ? x[1] : x[2];
}

static double ev_mod(const struct kred__node *n, const double *x)
{
	return x[0] - x[1] * floor((x[0] - x[2]) / x[1]);
}

static double ev_round(const struct kred__node *n, const double *x)
{
	double scale = pow(10, n->ints[0]);

	return round(x[0] * scale) / scale;
}

static void ev_var(const struct eval *e, const struct kred__node *n, double *o,
		   const double *const *a)
{
	int pos = n->ints[0], dim = n->ints[1], cat = n->ints[2];
	int64_t row = cat == KRED__CAT_I ? e->i : cat == KRED__CAT_J ? e->j : 0;

	memcpy(o, e->data[pos] + row * dim, (size_t)dim * sizeof(*o));
}

static void ev_cst(const struct eval *e, const struct kred__node *n, double *o,
		   const double *const *a)
{
	o[0] = n->value;
}

/* The index of a dimension-1 argument is always 0: that is the broadcasting. */
static double at(const struct kred__node *arg, const double *v, int k)
{
	return v[arg->dim == 1 ? 0 : k];
}

static void ev_scal(const struct eval *e, const struct kred__node *n, double *o,
		    const double *const *a)
{
	for (int k = 0; k < n->dim; k++)
		o[k] = a[0][0] * a[1][k];
}

static void ev_scalprod(const struct eval *e, const struct kred__node *n, double *o,
			const double *const *a)
{
	double s = 0;

	for (int k = 0; k < n->arg[0]->dim; k++)
		s += a[0][k] * a[1][k];
	o[0] = s;
}

static void ev_sum(const struct eval *e, const struct kred__node *n, double *o,
		   const double *const *a)
{
	double s = 0;

	for (int k = 0; k < n->arg[0]->dim; k++)
		s += a[0][k];
	o[0] = s;
}

/* Index of the first maximum (sign 1) or minimum (sign -1) of v: ties keep the first. */
static int arg_extremum(const double *v, int d, double sign)
{
	int best = 0;

	for (int k = 1; k < d; k++)
		if (sign * v[k] > sign * v[best])
			best = k;
	return best;
}

static void ev_max(const struct eval *e, const struct kred__node *n, double *o,
		   const double *const *a)
{
	o[0] = a[0][arg_extremum(a[0], n->arg[0]->dim, 1)];
}

static void ev_min(const struct eval *e, const struct kred__node *n, double *o,
		   const double *const *a)
{
	o[0] = a[0][arg_extremum(a[0], n->arg[0]->dim, -1)];
}

static void ev_argmax(const struct eval *e, const struct kred__node *n, double *o,
		      const double *const *a)
{
	o[0] = arg_extremum(a[0], n->arg[0]->dim, 1);
}

static void ev_argmin(const struct eval *e, const struct kred__node *n, double *o,
		      const double *const *a)
{
	o[0] = arg_extremum(a[0], n->arg[0]->dim, -1);
}

static double sqnorm(const double *v, int d)
{
	double s = 0;

	for (int k = 0; k < d; k++)
		s += v[k] * v[k];
	return s;
}

static void ev_sqnorm2(const struct eval *e, const struct kred__node *n, double *o,
		       const double *const *a)
{
	o[0] = sqnorm(a[0], n->arg[0]->dim);
}

static void ev_norm2(const struct eval *e, const struct kred__node *n, double *o,
		     const double *const *a)
{
	o[0] = sqrt(sqnorm(a[0], n->arg[0]->dim));
}

static void ev_normalize(const struct eval *e, const struct kred__node *n, double *o,
			 const double *const *a)
{
	double s = sqnorm(a[0], n->dim);
	double r = s == 0 ? 0 : 1 / sqrt(s);

	for (int k = 0; k < n->dim; k++)
		o[k] = r * a[0][k];
}

static void ev_sqdist(const struct eval *e, const struct kred__node *n, double *o,
		      const double *const *a)
{
	const struct kred__node *f = n->arg[0], *g = n->arg[1];
	int d = f->dim > g->dim ? f->dim : g->dim;
	double s = 0;

	for (int k = 0; k < d; k++) {
		double t = at(f, a[0], k) - at(g, a[1], k);

		s += t * t;
	}
	o[0] = s;
}

/* <v, S v> where v = f - g (g may be NULL: v = f), broadcast to dimension d, and S is
 * a scalar (ds = 1), a diagonal (ds = d) or a full d x d matrix, row-major. */
static double weighted_sqnorm(const double *s, int ds, const struct kred__node *f,
			      const double *fv, const struct kred__node *g, const double *gv,
			      int d)
{
	double acc = 0;

	for (int a = 0; a < d; a++) {
		double va = at(f, fv, a) - (g ? at(g, gv, a) : 0);

		/* a full matrix has d * d > d values (d > 1); d * d itself overflows an int
		 * past 46,340 */
		if (ds == 1 || ds == d) {
			acc += s[ds == 1 ? 0 : a] * va * va;
			continue;
		}
		for (int b = 0; b < d; b++) {
			double vb = at(f, fv, b) - (g ? at(g, gv, b) : 0);

			acc += va * s[a * d + b] * vb;
		}
	}
	return acc;
}

static void ev_wsqnorm(const struct eval *e, const struct kred__node *n, double *o,
		       const double *const *a)
{
	const struct kred__node *f = n->arg[1];

	o[0] = weighted_sqnorm(a[0], n->arg[0]->dim, f, a[1], NULL, NULL, f->dim);
}

static void ev_wsqdist(const struct eval *e, const struct kred__node *n, double *o,
		       const double *const *a)
{
	const struct kred__node *f = n->arg[1], *g = n->arg[2];
	int d = f->dim > g->dim ? f->dim : g->dim;

	o[0] = weighted_sqnorm(a[0], n->arg[0]->dim, f, a[1], g, a[2], d);
}

static void ev_zero(const struct eval *e, const struct kred__node *n, double *o,
		    const double *const *a)
{
	for (int k = 0; k < n->dim; k++)
		o[k] = 0;
}

static void ev_elem(const struct eval *e, const struct kred__node *n, double *o,
		    const double *const *a)
{
	o[0] = a[0][n->ints[0]];
}

/* ElemT(f, D, M): ints = {D, M}. */
static void ev_elemt(const struct eval *e, const struct kred__node *n, double *o,
		     const double *const *a)
{
	ev_zero(e, n, o, a);
	o[n->ints[1]] = a[0][0];
}

/* Extract(f, M, D): ints = {M, D}. */
static void ev_extract(const struct eval *e, const struct kred__node *n, double *o,
		       const double *const *a)
{
	for (int k = 0; k < n->dim; k++)
		o[k] = a[0][n->ints[0] + k];
}

/* ExtractT(f, M, D): ints = {M, D}. */
static void ev_extractt(const struct eval *e, const struct kred__node *n, double *o,
			const double *const *a)
{
	ev_zero(e, n, o, a);
	for (int k = 0; k < n->arg[0]->dim; k++)
		o[n->ints[0] + k] = a[0][k];
}

static void ev_concat(const struct eval *e, const struct kred__node *n, double *o,
		      const double *const *a)
{
	int df = n->arg[0]->dim;

	memcpy(o, a[0], (size_t)df * sizeof(*o));
	memcpy(o + df, a[1], (size_t)n->arg[1]->dim * sizeof(*o));
}

static void ev_onehot(const struct eval *e, const struct kred__node *n, double *o,
		      const double *const *a)
{
	double k = round(a[0][0]);

	ev_zero(e, n, o, a);
	if (k >= 0 && k < n->dim)
		o[(int)k] = 1;
}

/* f is a (d(f)/d(g)) x d(g) matrix, row-major. */
static void ev_matvec(const struct eval *e, const struct kred__node *n, double *o,
		      const double *const *a)
{
	int cols = n->arg[1]->dim;

	for (int r = 0; r < n->dim; r++) {
		double s = 0;

		for (int c = 0; c < cols; c++)
			s += a[0][r * cols + c] * a[1][c];
		o[r] = s;
	}
}

/* g is a d(f) x (d(g)/d(f)) matrix, row-major; the result is f^T g. */
static void ev_vecmat(const struct eval *e, const struct kred__node *n, double *o,
		      const double *const *a)
{
	int rows = n->arg[0]->dim, cols = n->dim;

	for (int c = 0; c < cols; c++) {
		double s = 0;

		for (int r = 0; r < rows; r++)
			s += a[0][r] * a[1][r * cols + c];
		o[c] = s;
	}
}

static void ev_tensorprod(const struct eval *e, const struct kred__node *n, double *o,
			  const double *const *a)
{
	int df = n->arg[0]->dim, dg = n->arg[1]->dim;

	for (int x = 0; x < df; x++)
		for (int y = 0; y < dg; y++)
			o[x * dg + y] = a[0][x] * a[1][y];
}

/* An integer list argument: its length and values, inside node->ints. */
struct list {
	int n;
	const int *v;
};

/* Splits n->ints into count lists stored as (length, values...); -1 if malformed. */
static int read_lists(const struct kred__node *n, struct list *l, int count)
{
	int at_ = 0;

	for (int k = 0; k < count; k++) {
		if (at_ >= n->nint || n->ints[at_] < 0 || at_ + 1 + n->ints[at_] > n->nint)
			return -1;
		l[k].n = n->ints[at_];
		l[k].v = n->ints + at_ + 1;
		at_ += 1 + l[k].n;
	}
	return at_ == n->nint ? 0 : -1;
}

static long list_prod(struct list l)
{
	long p = 1;

	for (int k = 0; k < l.n; k++)
		p *= l.v[k];
	return p;
}

/* The multi-index of flat position p in a row-major array of shape s. */
static void unravel(long p, struct list s, int *idx)
{
	for (int k = s.n - 1; k >= 0; k--) {
		idx[k] = (int)(p % s.v[k]);
		p /= s.v[k];
	}
}

/* Kron(f, g, DIMF, DIMG), as np.kron: axis t of the result has size DIMF[t] * DIMG[t]
 * and index a[t] * DIMG[t] + b[t]. */
static void ev_kron(const struct eval *e, const struct kred__node *n, double *o,
		    const double *const *a)
{
	struct list l[2];
	int ia[KRED__MAX_INTS], ib[KRED__MAX_INTS];

	read_lists(n, l, 2);
	for (long p = 0; p < n->arg[0]->dim; p++) {
		unravel(p, l[0], ia);
		for (long q = 0; q < n->arg[1]->dim; q++) {
			long out = 0;

			unravel(q, l[1], ib);
			for (int t = 0; t < l[0].n; t++)
				out = out * l[0].v[t] * l[1].v[t] + ia[t] * l[1].v[t] + ib[t];
			o[out] = a[0][p] * a[1][q];
		}
	}
}

/* Whether axis ax is one of the list's values. */
static int in_list(struct list l, int ax)
{
	for (int k = 0; k < l.n; k++)
		if (l.v[k] == ax)
			return 1;
	return 0;
}

/* TensorDot(f, g, DIMF, DIMG, CONTF, CONTG), as np.tensordot(f, g, (CONTF, CONTG)):
 * every pair of entries of f and g that agree on the contracted axes adds its product to
 * the result entry named by f's free axes then g's free axes, row-major. */
static void ev_tensordot(const struct eval *e, const struct kred__node *n, double *o,
			 const double *const *a)
{
	struct list l[4];
	int ia[KRED__MAX_INTS], ib[KRED__MAX_INTS];

	read_lists(n, l, 4);
	ev_zero(e, n, o, a);
	for (long p = 0; p < n->arg[0]->dim; p++) {
		unravel(p, l[0], ia);
		for (long q = 0; q < n->arg[1]->dim; q++) {
			long out = 0;
			int agree = 1;

			unravel(q, l[1], ib);
			for (int k = 0; k < l[2].n; k++)
				agree &= ia[l[2].v[k]] == ib[l[3].v[k]];
			if (!agree)
				continue;
			for (int t = 0; t < l[0].n; t++)
				if (!in_list(l[2], t))
					out = out * l[0].v[t] + ia[t];
			for (int t = 0; t < l[1].n; t++)
				if (!in_list(l[3], t))
					out = out * l[1].v[t] + ib[t];
			o[out] += a[0][p] * a[1][q];
		}
	}
}

#define EW(fn) { .scalar = fn }
#define VEC(fn) { .vector = fn }

/* ORDER KRED__OPS. The derivative ops have no entry: diff.c rewrites them away. */
static const struct eval_op eval_ops[] = {
	[KRED__OP_VAR] = VEC(ev_var),
	[KRED__OP_CST] = VEC(ev_cst),
	[KRED__OP_MINUS] = EW(ev_minus),
	[KRED__OP_INV] = EW(ev_inv),
	[KRED__OP_EXP] = EW(ev_exp),
	[KRED__OP_LOG] = EW(ev_log),
	[KRED__OP_XLOGX] = EW(ev_xlogx),
	[KRED__OP_SIN] = EW(ev_sin),
	[KRED__OP_SINXDIVX] = EW(ev_sinxdivx),
	[KRED__OP_ASIN] = EW(ev_asin),
	[KRED__OP_COS] = EW(ev_cos),
	[KRED__OP_ACOS] = EW(ev_acos),
	[KRED__OP_ATAN] = EW(ev_atan),
	[KRED__OP_ATAN2] = EW(ev_atan2),
	[KRED__OP_SQRT] = EW(ev_sqrt),
	[KRED__OP_RSQRT] = EW(ev_rsqrt),
	[KRED__OP_SQUARE] = EW(ev_square),
	[KRED__OP_POW] = EW(ev_pow),
	[KRED__OP_POWF] = EW(ev_powf),
	[KRED__OP_ABS] = EW(ev_abs),
	[KRED__OP_SIGN] = EW(ev_sign),
	[KRED__OP_STEP] = EW(ev_step),
	[KRED__OP_RELU] = EW(ev_relu),
	[KRED__OP_CLAMP] = EW(ev_clamp),
	[KRED__OP_CLAMPINT] = EW(ev_clampint),
	[KRED__OP_IFELSE] = EW(ev_ifelse),
	[KRED__OP_MOD] = EW(ev_mod),
	[KRED__OP_ROUND] = EW(ev_round),
	[KRED__OP_FLOOR] = EW(ev_floor),
	[KRED__OP_ADD] = EW(ev_add),
	[KRED__OP_SUBTRACT] = EW(ev_sub),
	[KRED__OP_MULT] = EW(ev_mult),
	[KRED__OP_DIVIDE] = EW(ev_div),
	[KRED__OP_SCAL] = VEC(ev_scal),
	[KRED__OP_SCALPROD] = VEC(ev_scalprod),
	[KRED__OP_EQUAL] = EW(ev_eq),
	[KRED__OP_NOTEQUAL] = EW(ev_ne),
	[KRED__OP_LESS] = EW(ev_lt),
	[KRED__OP_GREATER] = EW(ev_gt),
	[KRED__OP_LESSEQUAL] = EW(ev_le),
	[KRED__OP_GREATEREQUAL] = EW(ev_ge),
	[KRED__OP_SUM] = VEC(ev_sum),
	[KRED__OP_MAX] = VEC(ev_max),
	[KRED__OP_MIN] = VEC(ev_min),
	[KRED__OP_ARGMAX] = VEC(ev_argmax),
	[KRED__OP_ARGMIN] = VEC(ev_argmin),
	[KRED__OP_SQNORM2] = VEC(ev_sqnorm2),
	[KRED__OP_NORM2] = VEC(ev_norm2),
	[KRED__OP_NORMALIZE] = VEC(ev_normalize),
	[KRED__OP_SQDIST] = VEC(ev_sqdist),
	[KRED__OP_WEIGHTEDSQNORM] = VEC(ev_wsqnorm),
	[KRED__OP_WEIGHTEDSQDIST] = VEC(ev_wsqdist),
	[KRED__OP_ZERO] = VEC(ev_zero),
	[KRED__OP_ELEM] = VEC(ev_elem),
	[KRED__OP_ELEMT] = VEC(ev_elemt),
	[KRED__OP_EXTRACT] = VEC(ev_extract),
	[KRED__OP_EXTRACTT] = VEC(ev_extractt),
	[KRED__OP_CONCAT] = VEC(ev_concat),
	[KRED__OP_ONEHOT] = VEC(ev_onehot),
	[KRED__OP_MATVECMULT] = VEC(ev_matvec),
	[KRED__OP_VECMATMULT] = VEC(ev_vecmat),
	[KRED__OP_TENSORPROD] = VEC(ev_tensorprod),
	[KRED__OP_KRON] = VEC(ev_kron),
	[KRED__OP_TENSORDOT] = VEC(ev_tensordot),
	[KRED__OP_GRAD] = { 0 },
	[KRED__OP_DIFF] = { 0 },
	[KRED__OP_GRADFROMPOS] = { 0 },
	[KRED__OP_GRADMATRIX] = { 0 },
	[KRED__OP_DIVERGENCE] = { 0 },
	[KRED__OP_LAPLACIAN] = { 0 },
};
_Static_assert(sizeof(eval_ops) / sizeof(eval_ops[0]) == KRED__OP_COUNT,
	       "eval_ops must have one row per op of KRED__OPS");

/* ---- checking a node before it is evaluated.
 * The evaluator reads and writes by the dimensions it sees, so it re-checks every node's
 * shape on its own terms instead of trusting ops.c: a bug there becomes an error here,
 * never an out-of-bounds access in the oracle. */

static int eq_or_one(int d, int want)
{
	return d == want || d == 1;
}

/* Whether the lists are a valid Kron (2 lists) or TensorDot (4 lists) shape for n. */
static int tensor_ok(const struct kred__node *n, int count)
{
	struct list l[4];
	long out = 1;

	if (read_lists(n, l, count))
		return 0;
	for (int k = 0; k < 2; k++)
		for (int t = 0; t < l[k].n; t++)
			if (l[k].v[t] <= 0)
				return 0;
	if (list_prod(l[0]) != n->arg[0]->dim || list_prod(l[1]) != n->arg[1]->dim)
		return 0;
	if (count == 2) {
		if (l[0].n != l[1].n)
			return 0;
		for (int t = 0; t < l[0].n; t++)
			out *= (long)l[0].v[t] * l[1].v[t];
		return out == n->dim;
	}
	if (l[2].n != l[3].n)
		return 0;
	for (int k = 0; k < l[2].n; k++) {
		int fa = l[2].v[k], ga = l[3].v[k];

		if (fa < 0 || fa >= l[0].n || ga < 0 || ga >= l[1].n ||
		    l[0].v[fa] != l[1].v[ga])
			return 0;
		for (int m = 0; m < k; m++)
			if (l[2].v[m] == fa || l[3].v[m] == ga)
				return 0;
	}
	for (int t = 0; t < l[0].n; t++)
		if (!in_list(l[2], t))
			out *= l[0].v[t];
	for (int t = 0; t < l[1].n; t++)
		if (!in_list(l[3], t))
			out *= l[1].v[t];
	return out == n->dim;
}

static int node_ok(const struct eval *e, const struct kred__node *n)
{
	const struct kred_reduction *r = e->r;
	int d = n->dim, da = n->nargs > 0 ? n->arg[0]->dim : 0;
	int db = n->nargs > 1 ? n->arg[1]->dim : 0;
	int dc = n->nargs > 2 ? n->arg[2]->dim : 0;

	if (d < 1 || d > KRED__MAX_DIM)
		return 0;
	if (eval_ops[n->op].scalar) {
		int widest = 1;

		for (int k = 0; k < n->nargs; k++) {
			if (!eq_or_one(n->arg[k]->dim, d))
				return 0;
			if (n->arg[k]->dim > widest)
				widest = n->arg[k]->dim;
		}
		return n->nargs >= 1 && widest == d;
	}
	switch (n->op) {
	case KRED__OP_VAR:
		return n->nint == 3 && n->ints[0] >= 0 && n->ints[0] < r->n_args &&
		       n->ints[1] == d && r->args[n->ints[0]].dim == d &&
		       r->args[n->ints[0]].cat == n->ints[2] && e->data[n->ints[0]];
	case KRED__OP_CST:
		return d == 1;
	case KRED__OP_SCAL:
		return da == 1 && db == d;
	case KRED__OP_SCALPROD:
		return da == db && d == 1;
	case KRED__OP_SUM:
	case KRED__OP_MAX:
	case KRED__OP_MIN:
	case KRED__OP_ARGMAX:
	case KRED__OP_ARGMIN:
	case KRED__OP_SQNORM2:
	case KRED__OP_NORM2:
		return d == 1;
	case KRED__OP_NORMALIZE:
		return da == d;
	case KRED__OP_SQDIST:
		return d == 1 && (eq_or_one(da, db) || eq_or_one(db, da));
	case KRED__OP_WEIGHTEDSQNORM:
		return d == 1 && (da == 1 || da == db || da == db * db);
	case KRED__OP_WEIGHTEDSQDIST: {
		int w = db > dc ? db : dc;

		return d == 1 && eq_or_one(db, w) && eq_or_one(dc, w) &&
		       (da == 1 || da == w || da == w * w);
	}
	case KRED__OP_ZERO:
		return n->nint >= 1 && n->ints[0] == d;
	case KRED__OP_ELEM:
		return d == 1 && n->ints[0] >= 0 && n->ints[0] < da;
	case KRED__OP_ELEMT:
		return da == 1 && n->ints[0] == d && n->ints[1] >= 0 && n->ints[1] < d;
	case KRED__OP_EXTRACT:
		return n->ints[1] == d && n->ints[0] >= 0 && n->ints[0] + d <= da;
	case KRED__OP_EXTRACTT:
		return n->ints[1] == d && n->ints[0] >= 0 && n->ints[0] + da <= d;
	case KRED__OP_CONCAT:
		return d == da + db;
	case KRED__OP_ONEHOT:
		return da == 1 && n->ints[0] == d;
	case KRED__OP_MATVECMULT:
		return da == d * db;
	case KRED__OP_VECMATMULT:
		return db == da * d;
	case KRED__OP_TENSORPROD:
		return d == da * db;
	case KRED__OP_KRON:
		return tensor_ok(n, 2);
	case KRED__OP_TENSORDOT:
		return tensor_ok(n, 4);
	default:
		return 0;
	}
}

/* ---- setting up and tearing down a run */

static void eval_free(struct eval *e)
{
	if (e->owned)
		for (int p = 0; p < e->r->n_args; p++)
			kred__free(e->owned[p]);
	kred__free(e->owned);
	kred__free(e->data);
	kred__free(e->order);
	kred__free(e->off);
	kred__free(e->val);
	kred__free(e->kval);
	kred__free(e->kidx);
	kred__free(e->kcount);
}

/* Rows of the argument at position p. */
static int64_t arg_rows(const struct kred_reduction *r, int p, int64_t nx, int64_t ny)
{
	int cat = r->args[p].cat;

	return cat == KRED__CAT_I ? nx : cat == KRED__CAT_J ? ny : 1;
}

/* Points data[p] at each argument, converting float32 ones to double copies. */
static kred_status load_args(struct eval *e, int64_t nx, int64_t ny, const void *const *args,
			     struct kred__error *err)
{
	const struct kred_reduction *r = e->r;
	int n = r->n_args > 0 ? r->n_args : 1;

	e->data = kred__calloc((size_t)n, sizeof(*e->data));
	e->owned = kred__calloc((size_t)n, sizeof(*e->owned));
	if (!e->data || !e->owned)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory in the reference evaluator");
	for (int p = 0; p < r->n_args; p++) {
		size_t count = (size_t)arg_rows(r, p, nx, ny) * (size_t)r->args[p].dim;
		const float *src = args ? args[p] : NULL;

		/* An argument with no rows may be NULL: it is never read. One that has rows
		 * and is NULL stays NULL, and plan() refuses a variable that reads it. */
		if (!src) {
			static const double none[1];

			e->data[p] = count ? NULL : none;
			continue;
		}
		if (r->dtype == KRED_FLOAT64) {
			e->data[p] = args[p];
			continue;
		}
		e->owned[p] = kred__malloc((count ? count : 1) * sizeof(double));
		if (!e->owned[p])
			return kred__fail(err, KRED_ENOMEM, -1,
					  "out of memory in the reference evaluator");
		for (size_t k = 0; k < count; k++)
			e->owned[p][k] = src[k];
		e->data[p] = e->owned[p];
	}
	return KRED_OK;
}

/* Collects the nodes under F and G in increasing id order, checks each, and lays out
 * their values in val. */
static kred_status plan(struct eval *e, struct kred__error *err)
{
	const struct kred_reduction *r = e->r;
	const struct kred__graph *g = r->g;
	const struct kred__node *roots[2] = { r->f, r->w };
	char *mark = kred__calloc((size_t)g->n_nodes + 1, 1);
	size_t total = 0;

	e->order = kred__calloc((size_t)g->n_nodes + 1, sizeof(*e->order));
	e->off = kred__calloc((size_t)g->n_nodes + 1, sizeof(*e->off));
	if (!mark || !e->order || !e->off) {
		kred__free(mark);
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory in the reference evaluator");
	}
	for (int k = 0; k < 2; k++)
		if (roots[k])
			mark[roots[k]->id] = 1;
	/* Arguments have smaller ids than their node: one pass downwards marks them all. */
	for (int id = g->n_nodes - 1; id >= 0; id--) {
		const struct kred__node *n = g->nodes[id];

		if (!mark[id])
			continue;
		for (int k = 0; k < n->nargs; k++)
			mark[n->arg[k]->id] = 1;
	}
	for (int id = 0; id < g->n_nodes; id++) {
		const struct kred__node *n = g->nodes[id];

		if (!mark[id])
			continue;
		if ((unsigned)n->op >= KRED__OP_COUNT ||
		    (!eval_ops[n->op].scalar && !eval_ops[n->op].vector)) {
			kred__free(mark);
			return kred__fail(err, KRED_EUNSUPPORTED, -1,
					  "the reference evaluator met %s, which diff.c should "
					  "have rewritten away",
					  (unsigned)n->op < KRED__OP_COUNT ?
						  kred__ops[n->op].name : "an unknown op");
		}
		if (!node_ok(e, n)) {
			kred__free(mark);
			return kred__fail(err, KRED_EINVAL, -1,
					  "the reference evaluator found %s node %d with "
					  "inconsistent dimensions or arguments",
					  kred__ops[n->op].name, id);
		}
		e->order[e->n_order++] = n;
		e->off[id] = total;
		total += (size_t)n->dim;
	}
	kred__free(mark);
	e->val = kred__malloc((total ? total : 1) * sizeof(double));
	if (!e->val)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory in the reference evaluator");
	e->f = e->val + e->off[r->f->id];
	e->w = r->w ? e->val + e->off[r->w->id] : NULL;
	return KRED_OK;
}

/* ---- one pair */

/* Evaluates F and G at the pair (row, t): row indexes the output, t the reduced axis. */
static void eval_pair(struct eval *e, int64_t row, int64_t t)
{
	const double *a[KRED__MAX_ARGS];
	double x[KRED__MAX_ARGS];

	if (e->r->axis == KRED_REDUCE_J) {
		e->i = row;
		e->j = t;
	} else {
		e->i = t;
		e->j = row;
	}
	for (int k = 0; k < e->n_order; k++) {
		const struct kred__node *n = e->order[k];
		const struct eval_op *op = &eval_ops[n->op];
		double *o = e->val + e->off[n->id];

		for (int m = 0; m < n->nargs; m++)
			a[m] = e->val + e->off[n->arg[m]->id];
		if (op->vector) {
			op->vector(e, n, o, a);
			continue;
		}
		for (int c = 0; c < n->dim; c++) {
			for (int m = 0; m < n->nargs; m++)
				x[m] = at(n->arg[m], a[m], c);
			o[c] = op->scalar(n, x);
		}
	}
}

/* ---- reductions. Each computes one output row into res (out_dim values), reducing
 * over t = 0..n-1. */

typedef void (*red_fn)(struct eval *e, int64_t row, int64_t n, double *res);

static void red_sum(struct eval *e, int64_t row, int64_t n, double *res)
{
	int d = e->r->f->dim;

	for (int c = 0; c < d; c++)
		res[c] = 0;
	for (int64_t t = 0; t < n; t++) {
		eval_pair(e, row, t);
		for (int c = 0; c < d; c++)
			res[c] += e->f[c];
	}
}

/* The first pass of the LogSumExp family: max of F over the row, -inf when empty, NaN
 * when some value of F is NaN. */
static double row_max(struct eval *e, int64_t row, int64_t n)
{
	double m = -INFINITY;

	for (int64_t t = 0; t < n; t++) {
		eval_pair(e, row, t);
		if (isnan(e->f[0]))
			return NAN;
		if (e->f[0] > m)
			m = e->f[0];
	}
	return m;
}

/* The second pass: s = sum exp(f - m) and ws[c] = sum exp(f - m) g[c] (ws may be NULL).
 * m must be finite. */
static void shifted_sums(struct eval *e, int64_t row, int64_t n, double m, double *s,
			 double *ws)
{
	int wd = e->r->w ? e->r->w->dim : 0;

	*s = 0;
	for (int c = 0; ws && c < wd; c++)
		ws[c] = 0;
	for (int64_t t = 0; t < n; t++) {
		double x;

		eval_pair(e, row, t);
		x = exp(e->f[0] - m);
		*s += x;
		for (int c = 0; ws && c < wd; c++)
			ws[c] += x * e->w[c];
	}
}

static void fill(double *res, int count, double v)
{
	for (int c = 0; c < count; c++)
		res[c] = v;
}

static void red_lse(struct eval *e, int64_t row, int64_t n, double *res)
{
	double m = row_max(e, row, n), s;

	/* -inf (all terms -inf, or none), +inf and NaN are already the answer; shifting by
	 * them would make NaN out of exp(inf - inf). */
	if (!isfinite(m)) {
		res[0] = m;
		return;
	}
	shifted_sums(e, row, n, m, &s, NULL);
	res[0] = m + log(s);
}

static void red_lse_weight(struct eval *e, int64_t row, int64_t n, double *res)
{
	int wd = e->r->w->dim;
	double m = row_max(e, row, n), s;

	if (m == -INFINITY || isnan(m)) {
		fill(res, wd, m);
		return;
	}
	if (m == INFINITY) {
		fill(res, wd, NAN);
		return;
	}
	shifted_sums(e, row, n, m, &s, res);
	for (int c = 0; c < wd; c++)
		res[c] = m + log(res[c]);
}

static void red_softmax_weight(struct eval *e, int64_t row, int64_t n, double *res)
{
	int wd = e->r->w->dim;
	double m = row_max(e, row, n), s;

	/* Empty, all -inf: 0 / 0. NaN: NaN. +inf: exp(inf - inf). NaN is honest for all. */
	if (!isfinite(m)) {
		fill(res, wd, NAN);
		return;
	}
	shifted_sums(e, row, n, m, &s, res);
	for (int c = 0; c < wd; c++)
		res[c] /= s;
}

static void red_max_sumshiftexp(struct eval *e, int64_t row, int64_t n, double *res)
{
	double m = row_max(e, row, n);

	res[0] = m;
	if (m == -INFINITY)
		res[1] = 0;
	else if (!isfinite(m))
		res[1] = NAN;
	else
		shifted_sums(e, row, n, m, &res[1], NULL);
}

static void red_max_sumshiftexp_weight(struct eval *e, int64_t row, int64_t n, double *res)
{
	int wd = e->r->w->dim;
	double m = row_max(e, row, n), s;

	res[0] = m;
	if (m == -INFINITY)
		fill(res + 1, wd, 0);
	else if (!isfinite(m))
		fill(res + 1, wd, NAN);
	else
		shifted_sums(e, row, n, m, &s, res + 1);
}

/* Element-wise min (sign -1) or max (sign 1) of F over the row and its first index:
 * best[c] and idx[c]. NaN terms are skipped; an empty row gives (-sign * inf, -1). */
static void extremum(struct eval *e, int64_t row, int64_t n, double sign, double *best,
		     double *idx)
{
	int d = e->r->f->dim;

	fill(best, d, -sign * INFINITY);
	fill(idx, d, -1);
	for (int64_t t = 0; t < n; t++) {
		eval_pair(e, row, t);
		for (int c = 0; c < d; c++) {
			double x = e->f[c];

			if (isnan(x))
				continue;
			if (idx[c] < 0 || sign * x > sign * best[c]) {
				best[c] = x;
				idx[c] = (double)t;
			}
		}
	}
}

/* Min and Max keep extremum()'s indices in the scratch kval, ArgMin and ArgMax its
 * values. */
static void red_min(struct eval *e, int64_t row, int64_t n, double *res)
{
	extremum(e, row, n, -1, res, e->kval);
}

static void red_max(struct eval *e, int64_t row, int64_t n, double *res)
{
	extremum(e, row, n, 1, res, e->kval);
}

static void red_argmin(struct eval *e, int64_t row, int64_t n, double *res)
{
	extremum(e, row, n, -1, e->kval, res);
}

static void red_argmax(struct eval *e, int64_t row, int64_t n, double *res)
{
	extremum(e, row, n, 1, e->kval, res);
}

static void red_min_argmin(struct eval *e, int64_t row, int64_t n, double *res)
{
	extremum(e, row, n, -1, res, res + e->r->f->dim);
}

static void red_max_argmax(struct eval *e, int64_t row, int64_t n, double *res)
{
	extremum(e, row, n, 1, res, res + e->r->f->dim);
}

/* The K smallest values of each component of F over the row, sorted ascending, in
 * e->kval / e->kidx laid out rank-major ([k * D + c]). Ties keep the lower index first
 * (an equal value never moves ahead of one already kept); NaN terms are skipped;
 * missing ranks are (+inf, -1). */
static void kmin(struct eval *e, int64_t row, int64_t n)
{
	int d = e->r->f->dim, K = e->r->k;

	for (int c = 0; c < d; c++)
		e->kcount[c] = 0;
	for (int s = 0; s < K * d; s++) {
		e->kval[s] = INFINITY;
		e->kidx[s] = -1;
	}
	for (int64_t t = 0; t < n; t++) {
		eval_pair(e, row, t);
		for (int c = 0; c < d; c++) {
			double x = e->f[c];
			int pos;

			if (isnan(x))
				continue;
			if (e->kcount[c] == K && !(x < e->kval[(K - 1) * d + c]))
				continue;
			pos = e->kcount[c] < K ? e->kcount[c]++ : K - 1;
			/* Insertion sort step: move larger entries one rank down. */
			while (pos > 0 && e->kval[(pos - 1) * d + c] > x) {
				e->kval[pos * d + c] = e->kval[(pos - 1) * d + c];
				e->kidx[pos * d + c] = e->kidx[(pos - 1) * d + c];
				pos--;
			}
			e->kval[pos * d + c] = x;
			e->kidx[pos * d + c] = t;
		}
	}
}

static void red_kmin(struct eval *e, int64_t row, int64_t n, double *res)
{
	int kd = e->r->k * e->r->f->dim;

	kmin(e, row, n);
	for (int s = 0; s < kd; s++)
		res[s] = e->kval[s];
}

static void red_argkmin(struct eval *e, int64_t row, int64_t n, double *res)
{
	int kd = e->r->k * e->r->f->dim;

	kmin(e, row, n);
	for (int s = 0; s < kd; s++)
		res[s] = (double)e->kidx[s];
}

static void red_kmin_argkmin(struct eval *e, int64_t row, int64_t n, double *res)
{
	int kd = e->r->k * e->r->f->dim;

	kmin(e, row, n);
	for (int s = 0; s < kd; s++) {
		res[s] = e->kval[s];
		res[kd + s] = (double)e->kidx[s];
	}
}

/* ORDER KRED__REDUCTIONS */
static const red_fn eval_reds[] = {
	[KRED__RED_SUM] = red_sum,
	[KRED__RED_LSE] = red_lse,
	[KRED__RED_LSE_WEIGHT] = red_lse_weight,
	[KRED__RED_SOFTMAX_WEIGHT] = red_softmax_weight,
	[KRED__RED_MAX_SUMSHIFTEXP] = red_max_sumshiftexp,
	[KRED__RED_MAX_SUMSHIFTEXP_WEIGHT] = red_max_sumshiftexp_weight,
	[KRED__RED_MIN] = red_min,
	[KRED__RED_MAX] = red_max,
	[KRED__RED_ARGMIN] = red_argmin,
	[KRED__RED_ARGMAX] = red_argmax,
	[KRED__RED_MIN_ARGMIN] = red_min_argmin,
	[KRED__RED_MAX_ARGMAX] = red_max_argmax,
	[KRED__RED_KMIN] = red_kmin,
	[KRED__RED_ARGKMIN] = red_argkmin,
	[KRED__RED_KMIN_ARGKMIN] = red_kmin_argkmin,
};
_Static_assert(sizeof(eval_reds) / sizeof(eval_reds[0]) == KRED__RED_COUNT,
	       "eval_reds must have one row per reduction of KRED__REDUCTIONS");

/* The output layout each reduction above writes, computed here rather than taken from
 * reduce.c so that a disagreement is caught; -1 when F or G has the wrong shape. */
static long layout_dim(const struct kred_reduction *r)
{
	int d = r->f->dim, wd = r->w ? r->w->dim : 0;
	unsigned flags = kred__reds[r->red].flags;

	if ((flags & KRED__RED_SCALAR) && d != 1)
		return -1;
	if (!(flags & KRED__RED_WEIGHT) != !r->w)
		return -1;
	if ((flags & KRED__RED_K) && (r->k < 1 || r->k > KRED__MAX_DIM))
		return -1;
	switch (r->red) {
	case KRED__RED_SUM:
	case KRED__RED_MIN:
	case KRED__RED_MAX:
	case KRED__RED_ARGMIN:
	case KRED__RED_ARGMAX:
		return d;
	case KRED__RED_LSE:
		return 1;
	case KRED__RED_LSE_WEIGHT:
	case KRED__RED_SOFTMAX_WEIGHT:
		return wd;
	case KRED__RED_MAX_SUMSHIFTEXP:
		return 2;
	case KRED__RED_MAX_SUMSHIFTEXP_WEIGHT:
		return 1 + wd;
	case KRED__RED_MIN_ARGMIN:
	case KRED__RED_MAX_ARGMAX:
		return 2 * d;
	case KRED__RED_KMIN:
	case KRED__RED_ARGKMIN:
		return (long)r->k * d;
	case KRED__RED_KMIN_ARGKMIN:
		return 2L * r->k * d;
	default:
		return -1;
	}
}

kred_status kred__eval_run(const struct kred_reduction *r, int64_t nx, int64_t ny,
			   const void *const *args, void *out, struct kred__error *err)
{
	struct eval e = { .r = r };
	int64_t rows = r->axis == KRED_REDUCE_J ? nx : ny;
	int64_t n = r->axis == KRED_REDUCE_J ? ny : nx;
	int d = r->f->dim;
	long od;
	size_t kd;
	kred_status st;
	double *res = NULL;

	if ((unsigned)r->red >= KRED__RED_COUNT)
		return kred__fail(err, KRED_EINVAL, -1, "unknown reduction %d", (int)r->red);
	od = layout_dim(r);
	if (od < 1 || od != r->out_dim)
		return kred__fail(err, KRED_EINVAL, -1,
				  "the reference evaluator disagrees on the output of %s: "
				  "%ld values per row, not %d",
				  kred__reds[r->red].name, od, r->out_dim);
	if (nx < 0 || ny < 0)
		return kred__fail(err, KRED_EINVAL, -1, "negative size");
	/* Above 2^24 a float32 no longer holds every integer: an index would be wrong. */
	if (r->dtype == KRED_FLOAT32 && (kred__reds[r->red].flags & KRED__RED_INDEX) &&
	    n - 1 > (INT64_C(1) << 24))
		return kred__fail(err, KRED_ERANGE, -1,
				  "an index reduction over %lld terms is not exact in float32",
				  (long long)n);
	st = load_args(&e, nx, ny, args, err);
	if (st == KRED_OK)
		st = plan(&e, err);
	if (st != KRED_OK)
		goto done;
	/* KMin's lists, also the unused half of Min / ArgMin and the like. */
	kd = (size_t)((kred__reds[r->red].flags & KRED__RED_K) ? r->k : 1) * (size_t)d;
	e.kval = kred__malloc(kd * sizeof(*e.kval));
	e.kidx = kred__malloc(kd * sizeof(*e.kidx));
	e.kcount = kred__malloc((size_t)d * sizeof(*e.kcount));
	res = kred__malloc((size_t)od * sizeof(*res));
	if (!e.kval || !e.kidx || !e.kcount || !res) {
		st = kred__fail(err, KRED_ENOMEM, -1, "out of memory in the reference evaluator");
		goto done;
	}
	for (int64_t row = 0; row < rows; row++) {
		eval_reds[r->red](&e, row, n, res);
		if (r->dtype == KRED_FLOAT64) {
			memcpy((double *)out + row * od, res, (size_t)od * sizeof(*res));
		} else {
			for (int c = 0; c < od; c++)
				((float *)out)[row * od + c] = (float)res[c];
		}
	}
done:
	kred__free(res);
	eval_free(&e);
	return st;
}
