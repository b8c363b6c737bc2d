/* Symbolic derivatives: vector-Jacobian products over formula DAGs, the rewriting of
 * Grad, Diff, GradMatrix, Divergence and Laplacian nodes, and gradient reductions. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Tests and the bench set this to 0 to count the nodes of a gradient before
 * simplification; the library never changes it. */

int kred__diff_simplify = 1;

/* What every builder of this file needs: the arena, where errors go, and whether the
 * smart constructors simplify (else they only build the plain node). */
struct dx {
	struct kred__graph *g;
	struct kred__error *err;
	int simplify;
	int first_new; /* nodes from this id on were built here: free to reshape */
};

/* ---- predicates */

static int is_cst(const struct kred__node *n, double v)
{
	return n->op == KRED__OP_CST && n->value == v;
}

/* A zero of any sign and dimension: the sign of a zero cotangent never matters. */
static int is_zero(const struct kred__node *n)
{
	return n->op == KRED__OP_ZERO || is_cst(n, 0.0);
}

/* Add(Zero(d), s) is how a scalar s is broadcast to dimension d (bcast()); returns s. */
static const struct kred__node *bcast_scalar(const struct kred__node *n)
{
	if (n->op == KRED__OP_ADD && n->arg[0]->op == KRED__OP_ZERO && n->arg[1]->dim == 1)
		return n->arg[1];
	return NULL;
}

/* A constant folded at build time must be a value the evaluator would compute the same
 * way: never NaN, inf or -0 (whose sign could later flip a division). */
static int foldable(double r)
{
	return isfinite(r) && !(r == 0.0 && signbit(r));
}

static int is_new(const struct dx *c, const struct kred__node *n)
{
	return n->id >= c->first_new;
}

static int max_dim(const struct kred__node *a, const struct kred__node *b)
{
	return a->dim > b->dim ? a->dim : b->dim;
}

/* ---- plain builders (NULL arguments propagate NULL, the error stays in c->err) */

static const struct kred__node *cst(struct dx *c, double v)
{
	return kred__cst(c->g, v, c->err);
}

static const struct kred__node *op1(struct dx *c, enum kred__op op,
				    const struct kred__node *a)
{
	return kred__op1(c->g, op, a, c->err);
}

static const struct kred__node *op2(struct dx *c, enum kred__op op,
				    const struct kred__node *a, const struct kred__node *b)
{
	return kred__op2(c->g, op, a, b, c->err);
}

static const struct kred__node *op3(struct dx *c, enum kred__op op,
				    const struct kred__node *a, const struct kred__node *b,
				    const struct kred__node *d)
{
	return kred__op3(c->g, op, a, b, d, c->err);
}

static const struct kred__node *opi(struct dx *c, enum kred__op op,
				    const struct kred__node *a, int nint, const int *ints)
{
	if (!a)
		return NULL;
	return kred__opi(c->g, op, 1, &a, nint, ints, c->err);
}

static const struct kred__node *opi2(struct dx *c, enum kred__op op,
				     const struct kred__node *a, const struct kred__node *b,
				     int nint, const int *ints)
{
	const struct kred__node *args[2] = { a, b };

	if (!a || !b)
		return NULL;
	return kred__opi(c->g, op, 2, args, nint, ints, c->err);
}

/* 0 of dimension dim: the constant 0 for a scalar, else Zero(dim). */
static const struct kred__node *zero(struct dx *c, int dim)
{
	if (dim == 1)
		return cst(c, 0.0);
	return kred__opi(c->g, KRED__OP_ZERO, 0, NULL, 1, &dim, c->err);
}

/* ---- smart constructors: the same values as the plain nodes, fewer nodes. */

static const struct kred__node *add(struct dx *c, const struct kred__node *a,
				    const struct kred__node *b);
static const struct kred__node *sub(struct dx *c, const struct kred__node *a,
				    const struct kred__node *b);
static const struct kred__node *mul(struct dx *c, const struct kred__node *a,
				    const struct kred__node *b);
static const struct kred__node *elem(struct dx *c, const struct kred__node *a, int m);

/* The scalar s repeated dim times (dim > 1). There is no "ones" operation: Zero(dim) + s
 * broadcasts, and the element-wise constructors strip it again where a plain s would do. */
static const struct kred__node *bcast(struct dx *c, const struct kred__node *s, int dim)
{
	if (!s || s->dim == dim)
		return s;
	if (c->simplify && is_zero(s))
		return zero(c, dim);
	return op2(c, KRED__OP_ADD, zero(c, dim), s);
}

static const struct kred__node *neg(struct dx *c, const struct kred__node *a)
{
	if (!a)
		return NULL;
	if (c->simplify) {
		if (is_zero(a))
			return a;
		if (a->op == KRED__OP_MINUS)
			return a->arg[0];
		if (a->op == KRED__OP_CST && foldable(-a->value))
			return cst(c, -a->value);
		if (a->op == KRED__OP_MULT && a->arg[0]->op == KRED__OP_CST &&
		    foldable(-a->arg[0]->value))
			return mul(c, cst(c, -a->arg[0]->value), a->arg[1]);
	}
	return op1(c, KRED__OP_MINUS, a);
}

static const struct kred__node *elemt(struct dx *c, const struct kred__node *s, int dim, int m)
{
	int ints[2] = { dim, m };

	if (!s)
		return NULL;
	if (c->simplify) {
		if (is_zero(s))
			return zero(c, dim);
		if (dim == 1)
			return s;
	}
	return opi(c, KRED__OP_ELEMT, s, 2, ints);
}

/* Commutative operations are built with constants first, then by id, so that a*b and
 * b*a made by two rules are one node. */
static int swap_first(const struct kred__node *a, const struct kred__node *b)
{
	if (b->op == KRED__OP_CST)
		return a->op != KRED__OP_CST;
	if (a->op == KRED__OP_CST)
		return 0;
	return a->id > b->id;
}

static const struct kred__node *add(struct dx *c, const struct kred__node *a,
				    const struct kred__node *b)
{
	const struct kred__node *t;
	int d;

	if (!a || !b)
		return NULL;
	if (!c->simplify)
		return op2(c, KRED__OP_ADD, a, b);
	d = max_dim(a, b);
	if (is_zero(a))
		return bcast(c, b, d);
	if (is_zero(b))
		return bcast(c, a, d);
	if (a->op == KRED__OP_CST && b->op == KRED__OP_CST && foldable(a->value + b->value))
		return cst(c, a->value + b->value);
	if (a == b)
		return mul(c, cst(c, 2.0), a);
	if (b->op == KRED__OP_MINUS)
		return sub(c, a, b->arg[0]);
	if (a->op == KRED__OP_MINUS)
		return sub(c, b, a->arg[0]);
	if (a->op == KRED__OP_ELEMT && b->op == KRED__OP_ELEMT && a->dim == b->dim &&
	    a->ints[1] == b->ints[1])
		return elemt(c, add(c, a->arg[0], b->arg[0]), a->dim, a->ints[1]);
	if (swap_first(a, b)) {
		t = a;
		a = b;
		b = t;
	}
	return op2(c, KRED__OP_ADD, a, b);
}

static const struct kred__node *sub(struct dx *c, const struct kred__node *a,
				    const struct kred__node *b)
{
	int d;

	if (!a || !b)
		return NULL;
	if (!c->simplify)
		return op2(c, KRED__OP_SUBTRACT, a, b);
	d = max_dim(a, b);
	if (is_zero(b))
		return bcast(c, a, d);
	if (is_zero(a))
		return bcast(c, neg(c, b), d);
	if (a == b)
		return zero(c, d);
	if (a->op == KRED__OP_CST && b->op == KRED__OP_CST && foldable(a->value - b->value))
		return cst(c, a->value - b->value);
	if (b->op == KRED__OP_MINUS)
		return add(c, a, b->arg[0]);
	if (a->op == KRED__OP_ELEMT && b->op == KRED__OP_ELEMT && a->dim == b->dim &&
	    a->ints[1] == b->ints[1])
		return elemt(c, sub(c, a->arg[0], b->arg[0]), a->dim, a->ints[1]);
	return op2(c, KRED__OP_SUBTRACT, a, b);
}

static const struct kred__node *mul(struct dx *c, const struct kred__node *a,
				    const struct kred__node *b)
{
	const struct kred__node *t;
	int d;

	if (!a || !b)
		return NULL;
	if (!c->simplify)
		return op2(c, KRED__OP_MULT, a, b);
	d = max_dim(a, b);
	if (is_zero(a) || is_zero(b))
		return zero(c, d);
	if (swap_first(a, b)) {
		t = a;
		a = b;
		b = t;
	}
	if (a->op == KRED__OP_CST) {
		if (b->op == KRED__OP_CST)
			return foldable(a->value * b->value) ? cst(c, a->value * b->value)
							       : op2(c, KRED__OP_MULT, a, b);
		if (a->value == 1.0)
			return bcast(c, b, d);
		if (a->value == -1.0)
			return bcast(c, neg(c, b), d);
		if (b->op == KRED__OP_MINUS && foldable(-a->value))
			return mul(c, cst(c, -a->value), b->arg[0]);
		if (b->op == KRED__OP_MULT && b->arg[0]->op == KRED__OP_CST &&
		    foldable(a->value * b->arg[0]->value))
			return mul(c, cst(c, a->value * b->arg[0]->value), b->arg[1]);
	}
	if (a->op == KRED__OP_MINUS && b->op == KRED__OP_MINUS)
		return mul(c, a->arg[0], b->arg[0]);
	/* Constants and signs move up through the products built here, so that they meet
	 * and fold: 2 * (x * (-2 * y)) is -4 * (x * y). Nodes of the formula being
	 * differentiated keep their shape, so that the gradient goes on sharing them. */
	if (a->op != KRED__OP_CST) {
		if (b->op == KRED__OP_MULT && b->arg[0]->op == KRED__OP_CST && is_new(c, b))
			return mul(c, b->arg[0], mul(c, a, b->arg[1]));
		if (a->op == KRED__OP_MULT && a->arg[0]->op == KRED__OP_CST && is_new(c, a))
			return mul(c, a->arg[0], mul(c, a->arg[1], b));
		if (b->op == KRED__OP_MINUS && is_new(c, b))
			return neg(c, mul(c, a, b->arg[0]));
		if (a->op == KRED__OP_MINUS && is_new(c, a))
			return neg(c, mul(c, a->arg[0], b));
	}
	/* A one-hot ElemT times anything stays one-hot: Divergence and GradMatrix seed
	 * their passes with ElemT(1, D, k), and this keeps those passes sparse. */
	for (int k = 0; k < 2; k++) {
		const struct kred__node *p = k ? b : a, *q = k ? a : b;

		if (p->op != KRED__OP_ELEMT)
			continue;
		if (q->dim == p->dim)
			return elemt(c, mul(c, p->arg[0], elem(c, q, p->ints[1])), p->dim,
				     p->ints[1]);
		if (q->dim == 1)
			return elemt(c, mul(c, p->arg[0], q), p->dim, p->ints[1]);
	}
	if ((t = bcast_scalar(a)) && b->dim == a->dim)
		return mul(c, t, b);
	if ((t = bcast_scalar(b)) && a->dim == b->dim)
		return mul(c, a, t);
	return op2(c, KRED__OP_MULT, a, b);
}

static const struct kred__node *divide(struct dx *c, const struct kred__node *a,
				       const struct kred__node *b)
{
	int d;

	if (!a || !b)
		return NULL;
	if (!c->simplify)
		return op2(c, KRED__OP_DIVIDE, a, b);
	d = max_dim(a, b);
	if (is_zero(a))
		return zero(c, d);
	if (is_cst(b, 1.0))
		return bcast(c, a, d);
	if (a->op == KRED__OP_CST && b->op == KRED__OP_CST && foldable(a->value / b->value))
		return cst(c, a->value / b->value);
	return op2(c, KRED__OP_DIVIDE, a, b);
}

static const struct kred__node *scalprod(struct dx *c, const struct kred__node *a,
					 const struct kred__node *b);

static const struct kred__node *sum(struct dx *c, const struct kred__node *a)
{
	const struct kred__node *t;

	if (!a)
		return NULL;
	if (!c->simplify)
		return op1(c, KRED__OP_SUM, a);
	if (a->dim == 1)
		return a;
	if (is_zero(a))
		return zero(c, 1);
	if (a->op == KRED__OP_ELEMT)
		return a->arg[0];
	if ((t = bcast_scalar(a)))
		return mul(c, cst(c, a->dim), t);
	if (a->op == KRED__OP_MINUS)
		return neg(c, sum(c, a->arg[0]));
	if (a->op == KRED__OP_MULT) {
		if (a->arg[0]->dim == a->arg[1]->dim)
			return scalprod(c, a->arg[0], a->arg[1]);
		if (a->arg[0]->dim == 1)
			return mul(c, a->arg[0], sum(c, a->arg[1]));
		if (a->arg[1]->dim == 1)
			return mul(c, sum(c, a->arg[0]), a->arg[1]);
	}
	return op1(c, KRED__OP_SUM, a);
}

static const struct kred__node *scalprod(struct dx *c, const struct kred__node *a,
					 const struct kred__node *b)
{
	const struct kred__node *t;

	if (!a || !b)
		return NULL;
	if (!c->simplify)
		return op2(c, KRED__OP_SCALPROD, a, b);
	if (is_zero(a) || is_zero(b))
		return zero(c, 1);
	if (a->dim == 1 || b->dim == 1)
		return sum(c, mul(c, a, b));
	if (b->op == KRED__OP_ELEMT || bcast_scalar(b)) {
		t = a;
		a = b;
		b = t;
	}
	if (a->op == KRED__OP_ELEMT)
		return mul(c, a->arg[0], elem(c, b, a->ints[1]));
	if ((t = bcast_scalar(a)))
		return mul(c, t, sum(c, b));
	if (swap_first(a, b)) {
		t = a;
		a = b;
		b = t;
	}
	return op2(c, KRED__OP_SCALPROD, a, b);
}

/* Whether a holds so few non-zero values that pushing Elem inside it pays. */
static int sparse(const struct kred__node *a)
{
	return a->op == KRED__OP_ELEMT || a->op == KRED__OP_EXTRACTT || a->op == KRED__OP_ZERO ||
	       a->op == KRED__OP_CONCAT || bcast_scalar(a);
}

static const struct kred__node *elem(struct dx *c, const struct kred__node *a, int m)
{
	const struct kred__node *t;
	int off;

	if (!a)
		return NULL;
	if (!c->simplify)
		return opi(c, KRED__OP_ELEM, a, 1, &m);
	if (a->dim == 1)
		return a;
	if (is_zero(a))
		return zero(c, 1);
	if ((t = bcast_scalar(a)))
		return t;
	switch (a->op) {
	case KRED__OP_ELEMT:
		return a->ints[1] == m ? a->arg[0] : zero(c, 1);
	case KRED__OP_EXTRACTT:
		off = m - a->ints[0];
		if (off >= 0 && off < a->arg[0]->dim)
			return elem(c, a->arg[0], off);
		return zero(c, 1);
	case KRED__OP_EXTRACT:
		return elem(c, a->arg[0], a->ints[0] + m);
	case KRED__OP_CONCAT:
		if (m < a->arg[0]->dim)
			return elem(c, a->arg[0], m);
		return elem(c, a->arg[1], m - a->arg[0]->dim);
	case KRED__OP_MINUS:
		return neg(c, elem(c, a->arg[0], m));
	case KRED__OP_ADD:
	case KRED__OP_SUBTRACT:
	case KRED__OP_MULT:
		if (sparse(a->arg[0]) || sparse(a->arg[1]) ||
		    (a->op == KRED__OP_MULT && (a->arg[0]->dim == 1 || a->arg[1]->dim == 1))) {
			const struct kred__node *x = elem(c, a->arg[0], m);
			const struct kred__node *y = elem(c, a->arg[1], m);

			if (a->op == KRED__OP_ADD)
				return add(c, x, y);
			if (a->op == KRED__OP_SUBTRACT)
				return sub(c, x, y);
			return mul(c, x, y);
		}
		break;
	default:
		break;
	}
	return opi(c, KRED__OP_ELEM, a, 1, &m);
}

static const struct kred__node *extract(struct dx *c, const struct kred__node *a, int m,
					int dim)
{
	int ints[2] = { m, dim };

	if (!a)
		return NULL;
	if (c->simplify) {
		if (m == 0 && dim == a->dim)
			return a;
		if (dim == 1)
			return elem(c, a, m);
		if (is_zero(a))
			return zero(c, dim);
		if (a->op == KRED__OP_EXTRACTT) {
			if (m == a->ints[0] && dim == a->arg[0]->dim)
				return a->arg[0];
			if (m + dim <= a->ints[0] || m >= a->ints[0] + a->arg[0]->dim)
				return zero(c, dim);
		}
		if (a->op == KRED__OP_EXTRACT)
			return extract(c, a->arg[0], a->ints[0] + m, dim);
		if (a->op == KRED__OP_CONCAT) {
			int d0 = a->arg[0]->dim;

			if (m + dim <= d0)
				return extract(c, a->arg[0], m, dim);
			if (m >= d0)
				return extract(c, a->arg[1], m - d0, dim);
		}
	}
	return opi(c, KRED__OP_EXTRACT, a, 2, ints);
}

static const struct kred__node *extractt(struct dx *c, const struct kred__node *a, int m,
					 int dim)
{
	int ints[2] = { m, dim };

	if (!a)
		return NULL;
	if (c->simplify) {
		if (is_zero(a))
			return zero(c, dim);
		if (m == 0 && dim == a->dim)
			return a;
		if (a->dim == 1)
			return elemt(c, a, dim, m);
	}
	return opi(c, KRED__OP_EXTRACTT, a, 2, ints);
}

static const struct kred__node *concat(struct dx *c, const struct kred__node *a,
				       const struct kred__node *b)
{
	if (!a || !b)
		return NULL;
	if (c->simplify && is_zero(a) && is_zero(b))
		return zero(c, a->dim + b->dim);
	return op2(c, KRED__OP_CONCAT, a, b);
}

/* a ** k for an integer k, with the cheapest node for the usual k. */
static const struct kred__node *powi(struct dx *c, const struct kred__node *a, int k)
{
	if (k == 1)
		return a;
	if (k == 2)
		return op1(c, KRED__OP_SQUARE, a);
	if (k == -1)
		return op1(c, KRED__OP_INV, a);
	return opi(c, KRED__OP_POW, a, 1, &k);
}

/* ---- tensors: TensorDot and Kron are rows of the op table with lists of integers. */

#define MAX_AXES KRED__MAX_INTS

/* Reads one list (length, values) of n->ints from *at. */
static int read_list(const struct kred__node *n, int *at, int *out)
{
	int len = n->ints[(*at)++];

	for (int k = 0; k < len; k++)
		out[k] = n->ints[(*at)++];
	return len;
}

static void put_list(int *ints, int *at, int len, const int *v)
{
	ints[(*at)++] = len;
	for (int k = 0; k < len; k++)
		ints[(*at)++] = v[k];
}

static const struct kred__node *tensordot(struct dx *c, const struct kred__node *a,
					  const struct kred__node *b, int na, const int *da,
					  int nb, const int *db, int nc, const int *ca,
					  const int *cb)
{
	int ints[KRED__MAX_INTS], at = 0;

	if (4 + na + nb + 2 * nc > KRED__MAX_INTS) {
		kred__fail(c->err, KRED_EGRAD, -1,
			   "the gradient of this TensorDot or Kron needs more than %d integer "
			   "arguments",
			   KRED__MAX_INTS);
		return NULL;
	}
	put_list(ints, &at, na, da);
	put_list(ints, &at, nb, db);
	put_list(ints, &at, nc, ca);
	put_list(ints, &at, nc, cb);
	return opi2(c, KRED__OP_TENSORDOT, a, b, at, ints);
}

/* x holds a tensor whose axes, in x's row-major order, are the target axes
 * src[0..n-1] (a permutation); dims[t] is the size of target axis t. Returns the
 * tensor in the row-major order of the target axes. The op table has no transpose, so
 * this joins runs of consecutive entries (Extract) with Concat: fine for the small
 * tensors formulas hold. */
static const struct kred__node *permute(struct dx *c, const struct kred__node *x, int n,
					const int *src, const int *dims)
{
	int stride[MAX_AXES], idx[MAX_AXES] = { 0 };
	int total = 1, start = -1, len = 0, have = 0;
	const struct kred__node *out = NULL, *piece;

	for (int k = n - 1; k >= 0; k--) {
		stride[src[k]] = total;
		total *= dims[src[k]];
	}
	for (int t = 0; t <= total; t++) {
		int s = 0;

		for (int a = 0; a < n; a++)
			s += idx[a] * stride[a];
		if (t < total && len && s == start + len) {
			len++;
		} else {
			if (len) {
				if (!have && len == total)
					return x;
				piece = extract(c, x, start, len);
				out = have ? concat(c, out, piece) : piece;
				have = 1;
			}
			start = s;
			len = 1;
		}
		for (int a = n - 1; a >= 0; a--) {
			if (++idx[a] < dims[a])
				break;
			idx[a] = 0;
		}
	}
	return out;
}

/* ---- the derivative rules. A rule gets the node n, its cotangent ct (of dimension
 * d(n)) and, in need[i], whether argument i depends on the variable; it sets d[i] for
 * those, of the argument's dimension or of d(n) (the caller sums the cotangent of a
 * broadcast dimension-1 argument). A NULL d[i] with need[i] is an error. */

#define A0 (n->arg[0])
#define A1 (n->arg[1])
#define A2 (n->arg[2])

/* Var, Cst, Zero: no formula arguments. */
static void vjp_leaf(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		     const int *need, const struct kred__node **d)
{
}

/* Piecewise-constant operations: zero almost everywhere. */
static void vjp_zero(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		     const int *need, const struct kred__node **d)
{
	for (int i = 0; i < n->nargs; i++)
		if (need[i])
			d[i] = zero(c, n->arg[i]->dim);
}

static void vjp_deriv(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		      const int *need, const struct kred__node **d)
{
	kred__fail(c->err, KRED_EGRAD, -1, "%s must be expanded before it is differentiated",
		   kred__ops[n->op].name);
}

static void vjp_minus(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		      const int *need, const struct kred__node **d)
{
	d[0] = neg(c, ct);
}

/* d(1/a) = -(1/a)^2, from the forward node. */
static void vjp_inv(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		    const int *need, const struct kred__node **d)
{
	d[0] = mul(c, neg(c, ct), op1(c, KRED__OP_SQUARE, n));
}

static void vjp_exp(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		    const int *need, const struct kred__node **d)
{
	d[0] = mul(c, ct, n);
}

static void vjp_log(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		   const int *need, const struct kred__node **d)
{
	d[0] = divide(c, ct, A0);
}

static void vjp_xlogx(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		      const int *need, const struct kred__node **d)
{
	d[0] = mul(c, ct, add(c, op1(c, KRED__OP_LOG, A0), cst(c, 1.0)));
}

static void vjp_sin(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		    const int *need, const struct kred__node **d)
{
	d[0] = mul(c, ct, op1(c, KRED__OP_COS, A0));
}

/* (sin a / a)' = (cos a - sin a / a) / a cancels catastrophically near 0 and is 0/0 at
 * 0, where the value is 0. Below |a| = 0.1 the Taylor series
 * a (-1/3 + a^2 (1/30 - a^2 / 840)) is exact to 3e-14 (next term a^7 / 45360), while
 * the closed form loses about eps / a^2 (float32: 6e-6 at 0.1). IfElse selects; the
 * unselected NaN at 0 is never used. */
static void vjp_sinxdivx(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
			 const int *need, const struct kred__node **d)
{
	const struct kred__node *s2 = op1(c, KRED__OP_SQUARE, A0);
	const struct kred__node *big = divide(c, sub(c, op1(c, KRED__OP_COS, A0), n), A0);
	const struct kred__node *small = mul(
		c, A0,
		add(c, cst(c, -1.0 / 3.0),
		    mul(c, s2, sub(c, cst(c, 1.0 / 30.0), mul(c, cst(c, 1.0 / 840.0), s2)))));
	const struct kred__node *test = sub(c, op1(c, KRED__OP_ABS, A0), cst(c, 0.1));

	d[0] = mul(c, ct, op3(c, KRED__OP_IFELSE, test, big, small));
}

/* 1/sqrt(1 - a^2): Rsqrt gives 0 rather than inf at the ends, where Asin has a kink. */
static void vjp_asin(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		     const int *need, const struct kred__node **d)
{
	d[0] = mul(c, ct,
		   op1(c, KRED__OP_RSQRT, sub(c, cst(c, 1.0), op1(c, KRED__OP_SQUARE, A0))));
}

static void vjp_cos(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		    const int *need, const struct kred__node **d)
{
	d[0] = mul(c, neg(c, ct), op1(c, KRED__OP_SIN, A0));
}

static void vjp_acos(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		     const int *need, const struct kred__node **d)
{
	d[0] = mul(c, neg(c, ct),
		   op1(c, KRED__OP_RSQRT, sub(c, cst(c, 1.0), op1(c, KRED__OP_SQUARE, A0))));
}

static void vjp_atan(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		     const int *need, const struct kred__node **d)
{
	d[0] = divide(c, ct, add(c, cst(c, 1.0), op1(c, KRED__OP_SQUARE, A0)));
}

/* atan2(y, x): d/dy = x / (x^2 + y^2), d/dx = -y / (x^2 + y^2). */
static void vjp_atan2(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		      const int *need, const struct kred__node **d)
{
	const struct kred__node *t = divide(
		c, ct, add(c, op1(c, KRED__OP_SQUARE, A0), op1(c, KRED__OP_SQUARE, A1)));

	if (need[0])
		d[0] = mul(c, t, A1);
	if (need[1])
		d[1] = neg(c, mul(c, t, A0));
}

/* 1 / (2 sqrt a) written with Rsqrt, as KeOps does: Rsqrt(0) = 0 makes the derivative
 * at 0 the subgradient 0 rather than inf, so that Sqrt(SqDist(x, y)) summed over pairs
 * that include x = y has a finite gradient (inf times the 0 of SqDist's rule is NaN). */
static void vjp_sqrt(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		     const int *need, const struct kred__node **d)
{
	d[0] = mul(c, mul(c, cst(c, 0.5), ct), op1(c, KRED__OP_RSQRT, A0));
}

/* (a^-1/2)' = -a^-3/2 / 2 = -n^3 / 2: no division, and 0 at 0 like Rsqrt itself. */
static void vjp_rsqrt(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		      const int *need, const struct kred__node **d)
{
	d[0] = mul(c, mul(c, cst(c, -0.5), ct), mul(c, n, op1(c, KRED__OP_SQUARE, n)));
}

static void vjp_square(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		       const int *need, const struct kred__node **d)
{
	d[0] = mul(c, mul(c, cst(c, 2.0), ct), A0);
}

static void vjp_pow(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		    const int *need, const struct kred__node **d)
{
	int p = n->ints[0];

	if (p == 0)
		d[0] = zero(c, A0->dim);
	else if (p == 1)
		d[0] = ct;
	else if (p == -INT_MAX)
		/* Pow(f, INT_MIN) could be neither parsed nor negated: no exponent below
		 * -INT_MAX is ever made */
		kred__fail(c->err, KRED_ERANGE, -1, "the derivative of Pow(f, %d) needs the "
			   "exponent %d - 1, out of range", p, p);
	else
		d[0] = mul(c, mul(c, cst(c, p), ct), powi(c, A0, p - 1));
}

/* n = exp(b log a): dn/da = b n / a, dn/db = n log a. */
static void vjp_powf(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		     const int *need, const struct kred__node **d)
{
	if (need[0])
		d[0] = mul(c, ct, divide(c, mul(c, A1, n), A0));
	if (need[1])
		d[1] = mul(c, ct, mul(c, n, op1(c, KRED__OP_LOG, A0)));
}

static void vjp_abs(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		    const int *need, const struct kred__node **d)
{
	d[0] = mul(c, ct, op1(c, KRED__OP_SIGN, A0));
}

/* Step(0) = 1: the right-hand derivative at the kink. */
static void vjp_relu(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		     const int *need, const struct kred__node **d)
{
	d[0] = mul(c, ct, op1(c, KRED__OP_STEP, A0));
}

/* Clamp(a, lo, hi) is lo where a < lo, else hi where a > hi, else a (the evaluator's
 * order, so that the rule is exact even for lo > hi); bounds belong to a's branch. */
static void vjp_clamp(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		      const int *need, const struct kred__node **d)
{
	const struct kred__node *ge = op2(c, KRED__OP_GREATEREQUAL, A0, A1);

	if (need[0])
		d[0] = mul(c, ct, mul(c, ge, op2(c, KRED__OP_LESSEQUAL, A0, A2)));
	if (need[1])
		d[1] = mul(c, ct, op2(c, KRED__OP_LESS, A0, A1));
	if (need[2])
		d[2] = mul(c, ct, mul(c, ge, op2(c, KRED__OP_GREATER, A0, A2)));
}

static void vjp_clampint(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
			 const int *need, const struct kred__node **d)
{
	d[0] = mul(c, ct,
		   mul(c, op2(c, KRED__OP_GREATEREQUAL, A0, cst(c, n->ints[0])),
		       op2(c, KRED__OP_LESSEQUAL, A0, cst(c, n->ints[1]))));
}

/* IfElse(f, g, h): the cotangent goes to the branch taken; the test is piecewise. */
static void vjp_ifelse(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		       const int *need, const struct kred__node **d)
{
	if (need[0])
		d[0] = zero(c, A0->dim);
	if (need[1])
		d[1] = op3(c, KRED__OP_IFELSE, A0, ct, zero(c, 1));
	if (need[2])
		d[2] = op3(c, KRED__OP_IFELSE, A0, zero(c, 1), ct);
}

/* Mod(a, m, off) = a - m floor((a - off) / m). */
static void vjp_mod(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		    const int *need, const struct kred__node **d)
{
	if (need[0])
		d[0] = ct;
	if (need[1])
		d[1] = mul(c, neg(c, ct),
			   op1(c, KRED__OP_FLOOR, divide(c, sub(c, A0, A2), A1)));
	if (need[2])
		d[2] = zero(c, A2->dim);
}

static void vjp_add(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		    const int *need, const struct kred__node **d)
{
	d[0] = ct;
	d[1] = ct;
}

static void vjp_subtract(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
			 const int *need, const struct kred__node **d)
{
	d[0] = ct;
	if (need[1])
		d[1] = neg(c, ct);
}

static void vjp_mult(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		     const int *need, const struct kred__node **d)
{
	if (need[0])
		d[0] = mul(c, ct, A1);
	if (need[1])
		d[1] = mul(c, ct, A0);
}

/* n = a / b: da = ct / b, db = -(ct / b) n. */
static void vjp_divide(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		       const int *need, const struct kred__node **d)
{
	const struct kred__node *t = divide(c, ct, A1);

	d[0] = t;
	if (need[1])
		d[1] = neg(c, mul(c, t, n));
}

static void vjp_scal(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		     const int *need, const struct kred__node **d)
{
	if (need[0])
		d[0] = scalprod(c, ct, A1);
	if (need[1])
		d[1] = mul(c, ct, A0);
}

static void vjp_scalprod(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
			 const int *need, const struct kred__node **d)
{
	if (need[0])
		d[0] = mul(c, ct, A1);
	if (need[1])
		d[1] = mul(c, ct, A0);
}

static void vjp_sum(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		    const int *need, const struct kred__node **d)
{
	d[0] = bcast(c, ct, A0->dim);
}

/* Max and Min: through the selected entry, the first one on ties as ArgMax says. */
static void vjp_max(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		    const int *need, const struct kred__node **d)
{
	int dim = A0->dim;

	if (dim == 1)
		d[0] = ct;
	else
		d[0] = mul(c, ct,
			   opi(c, KRED__OP_ONEHOT,
			       op1(c, n->op == KRED__OP_MAX ? KRED__OP_ARGMAX : KRED__OP_ARGMIN,
				   A0),
			       1, &dim));
}

static void vjp_sqnorm2(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
			const int *need, const struct kred__node **d)
{
	d[0] = mul(c, mul(c, cst(c, 2.0), ct), A0);
}

/* a / |a| with Rsqrt(SqNorm2(a)): the subgradient 0 at a = 0 (see vjp_sqrt). */
static void vjp_norm2(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		      const int *need, const struct kred__node **d)
{
	d[0] = mul(c, mul(c, ct, op1(c, KRED__OP_RSQRT, op1(c, KRED__OP_SQNORM2, A0))), A0);
}

/* n = a / |a|: J = (I - n n^T) / |a|, symmetric; 0 at a = 0, where Normalize is 0. */
static void vjp_normalize(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
			  const int *need, const struct kred__node **d)
{
	d[0] = mul(c, sub(c, ct, mul(c, scalprod(c, n, ct), n)),
		   op1(c, KRED__OP_RSQRT, op1(c, KRED__OP_SQNORM2, A0)));
}

static void vjp_sqdist(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		       const int *need, const struct kred__node **d)
{
	const struct kred__node *t = mul(c, mul(c, cst(c, 2.0), ct), sub(c, A0, A1));

	d[0] = t;
	if (need[1])
		d[1] = neg(c, t);
}

/* WeightedSqNorm(s, f) in its three shapes: s scalar (s |f|^2), diagonal
 * (sum s_k f_k^2) or a full d x d matrix, row-major (f^T S f). The full rule does not
 * assume S symmetric: df = (S + S^T) f, so that it is exact for any S. */
static void wsqnorm(struct dx *c, const struct kred__node *s, const struct kred__node *f,
		    const struct kred__node *ct, int need_s, int need_f,
		    const struct kred__node **ds, const struct kred__node **df)
{
	if (s->dim == 1 || s->dim == f->dim) {
		if (need_s)
			*ds = mul(c, ct,
				  op1(c, s->dim == 1 ? KRED__OP_SQNORM2 : KRED__OP_SQUARE, f));
		if (need_f)
			*df = mul(c, mul(c, cst(c, 2.0), ct), mul(c, s, f));
		return;
	}
	if (need_s)
		*ds = mul(c, ct, op2(c, KRED__OP_TENSORPROD, f, f));
	if (need_f)
		*df = mul(c, ct,
			  add(c, op2(c, KRED__OP_MATVECMULT, s, f),
			      op2(c, KRED__OP_VECMATMULT, f, s)));
}

static void vjp_wsqnorm(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
			const int *need, const struct kred__node **d)
{
	wsqnorm(c, A0, A1, ct, need[0], need[1], &d[0], &d[1]);
}

static void vjp_wsqdist(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
			const int *need, const struct kred__node **d)
{
	const struct kred__node *dh = NULL;

	wsqnorm(c, A0, sub(c, A1, A2), ct, need[0], need[1] || need[2], &d[0], &dh);
	if (need[1])
		d[1] = dh;
	if (need[2])
		d[2] = neg(c, dh);
}

static void vjp_elem(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		     const int *need, const struct kred__node **d)
{
	d[0] = elemt(c, ct, A0->dim, n->ints[0]);
}

static void vjp_elemt(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		      const int *need, const struct kred__node **d)
{
	d[0] = elem(c, ct, n->ints[1]);
}

static void vjp_extract(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
			const int *need, const struct kred__node **d)
{
	d[0] = extractt(c, ct, n->ints[0], A0->dim);
}

static void vjp_extractt(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
			 const int *need, const struct kred__node **d)
{
	d[0] = extract(c, ct, n->ints[0], A0->dim);
}

static void vjp_concat(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		       const int *need, const struct kred__node **d)
{
	if (need[0])
		d[0] = extract(c, ct, 0, A0->dim);
	if (need[1])
		d[1] = extract(c, ct, A0->dim, A1->dim);
}

/* y = A x with A of d(y) rows, row-major: dA = ct x^T, dx = A^T ct = ct^T A. */
static void vjp_matvec(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		       const int *need, const struct kred__node **d)
{
	if (need[0])
		d[0] = op2(c, KRED__OP_TENSORPROD, ct, A1);
	if (need[1])
		d[1] = op2(c, KRED__OP_VECMATMULT, ct, A0);
}

/* y = x^T A: dx = A ct, dA = x ct^T. */
static void vjp_vecmat(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		       const int *need, const struct kred__node **d)
{
	if (need[0])
		d[0] = op2(c, KRED__OP_MATVECMULT, A1, ct);
	if (need[1])
		d[1] = op2(c, KRED__OP_TENSORPROD, A0, ct);
}

/* out[i d(b) + j] = a_i b_j: ct is a d(a) x d(b) matrix. */
static void vjp_tensorprod(struct dx *c, const struct kred__node *n,
			   const struct kred__node *ct, const int *need,
			   const struct kred__node **d)
{
	if (need[0])
		d[0] = op2(c, KRED__OP_MATVECMULT, ct, A1);
	if (need[1])
		d[1] = op2(c, KRED__OP_VECMATMULT, A0, ct);
}

/* Kron(a, b) of shapes (f0, f1, ..) and (g0, g1, ..) is the tensor of shape
 * (f0, g0, f1, g1, ..) read row-major (einsum "ij,kl->ikjl"). Seen with that shape, the
 * cotangent contracts with b over its odd axes and leaves a's axes in a's order, and
 * likewise for b over the even axes: no transpose is needed. */
static void vjp_kron(struct dx *c, const struct kred__node *n, const struct kred__node *ct,
		     const int *need, const struct kred__node **d)
{
	int fa[MAX_AXES], fb[MAX_AXES], shape[MAX_AXES], odd[MAX_AXES], even[MAX_AXES];
	int all[MAX_AXES], at = 0, m;

	m = read_list(n, &at, fa);
	read_list(n, &at, fb);
	for (int k = 0; k < m; k++) {
		shape[2 * k] = fa[k];
		shape[2 * k + 1] = fb[k];
		even[k] = 2 * k;
		odd[k] = 2 * k + 1;
		all[k] = k;
	}
	if (need[0])
		d[0] = tensordot(c, ct, A1, 2 * m, shape, m, fb, m, odd, all);
	if (need[1])
		d[1] = tensordot(c, ct, A0, 2 * m, shape, m, fa, m, even, all);
}

static int find(const int *v, int n, int x)
{
	for (int k = 0; k < n; k++)
		if (v[k] == x)
			return k;
	return -1;
}

/* TensorDot(a, b, DA, DB, CA, CB) as numpy.tensordot: the result's axes are a's free
 * axes, then b's free axes, each in their order. The cotangent, contracted with b over
 * b's free axes, gives a tensor whose axes are a's free axes then a's contracted axes
 * in the order of b's axes: permute() puts them back in a's order. Likewise for b. */
static void vjp_tensordot(struct dx *c, const struct kred__node *n,
			  const struct kred__node *ct, const int *need,
			  const struct kred__node **d)
{
	int da[MAX_AXES], db[MAX_AXES], ca[MAX_AXES], cb[MAX_AXES];
	int fa[MAX_AXES], fb[MAX_AXES], r[MAX_AXES], cr[MAX_AXES], src[MAX_AXES];
	int at = 0, na, nb, nc, nfa = 0, nfb = 0, k;
	const struct kred__node *t;

	na = read_list(n, &at, da);
	nb = read_list(n, &at, db);
	nc = read_list(n, &at, ca);
	read_list(n, &at, cb);
	for (int i = 0; i < na; i++)
		if (find(ca, nc, i) < 0)
			fa[nfa++] = i;
	for (int j = 0; j < nb; j++)
		if (find(cb, nc, j) < 0)
			fb[nfb++] = j;
	for (k = 0; k < nfa; k++)
		r[k] = da[fa[k]];
	for (k = 0; k < nfb; k++)
		r[nfa + k] = db[fb[k]];
	if (need[0]) {
		for (k = 0; k < nfb; k++)
			cr[k] = nfa + k;
		if (nfb)
			t = tensordot(c, ct, A1, nfa + nfb, r, nb, db, nfb, cr, fb);
		else
			t = op2(c, KRED__OP_TENSORPROD, ct, A1);
		k = 0;
		for (int i = 0; i < nfa; i++)
			src[k++] = fa[i];
		for (int j = 0; j < nb; j++)
			if (find(cb, nc, j) >= 0)
				src[k++] = ca[find(cb, nc, j)];
		d[0] = t ? permute(c, t, na, src, da) : NULL;
	}
	if (need[1]) {
		for (k = 0; k < nfa; k++)
			cr[k] = k;
		if (nfa)
			t = tensordot(c, ct, A0, nfa + nfb, r, na, da, nfa, cr, fa);
		else
			t = op2(c, KRED__OP_TENSORPROD, ct, A0);
		k = 0;
		for (int j = 0; j < nfb; j++)
			src[k++] = fb[j];
		for (int i = 0; i < na; i++)
			if (find(ca, nc, i) >= 0)
				src[k++] = cb[find(ca, nc, i)];
		d[1] = t ? permute(c, t, nb, src, db) : NULL;
	}
}

#undef A0
#undef A1
#undef A2

/* One rule per operation, in the ORDER of KRED__OPS. */
static void (*const vjp_rules[])(struct dx *c, const struct kred__node *n,
				 const struct kred__node *ct, const int *need,
				 const struct kred__node **d) = {
	[KRED__OP_VAR] = vjp_leaf,
	[KRED__OP_CST] = vjp_leaf,
	[KRED__OP_MINUS] = vjp_minus,
	[KRED__OP_INV] = vjp_inv,
	[KRED__OP_EXP] = vjp_exp,
	[KRED__OP_LOG] = vjp_log,
	[KRED__OP_XLOGX] = vjp_xlogx,
	[KRED__OP_SIN] = vjp_sin,
	[KRED__OP_SINXDIVX] = vjp_sinxdivx,
	[KRED__OP_ASIN] = vjp_asin,
	[KRED__OP_COS] = vjp_cos,
	[KRED__OP_ACOS] = vjp_acos,
	[KRED__OP_ATAN] = vjp_atan,
	[KRED__OP_ATAN2] = vjp_atan2,
	[KRED__OP_SQRT] = vjp_sqrt,
	[KRED__OP_RSQRT] = vjp_rsqrt,
	[KRED__OP_SQUARE] = vjp_square,
	[KRED__OP_POW] = vjp_pow,
	[KRED__OP_POWF] = vjp_powf,
	[KRED__OP_ABS] = vjp_abs,
	[KRED__OP_SIGN] = vjp_zero,
	[KRED__OP_STEP] = vjp_zero,
	[KRED__OP_RELU] = vjp_relu,
	[KRED__OP_CLAMP] = vjp_clamp,
	[KRED__OP_CLAMPINT] = vjp_clampint,
	[KRED__OP_IFELSE] = vjp_ifelse,
	[KRED__OP_MOD] = vjp_mod,
	[KRED__OP_ROUND] = vjp_zero,
	[KRED__OP_FLOOR] = vjp_zero,
	[KRED__OP_ADD] = vjp_add,
	[KRED__OP_SUBTRACT] = vjp_subtract,
	[KRED__OP_MULT] = vjp_mult,
	[KRED__OP_DIVIDE] = vjp_divide,
	[KRED__OP_SCAL] = vjp_scal,
	[KRED__OP_SCALPROD] = vjp_scalprod,
	[KRED__OP_EQUAL] = vjp_zero,
	[KRED__OP_NOTEQUAL] = vjp_zero,
	[KRED__OP_LESS] = vjp_zero,
	[KRED__OP_GREATER] = vjp_zero,
	[KRED__OP_LESSEQUAL] = vjp_zero,
	[KRED__OP_GREATEREQUAL] = vjp_zero,
	[KRED__OP_SUM] = vjp_sum,
	[KRED__OP_MAX] = vjp_max,
	[KRED__OP_MIN] = vjp_max,
	[KRED__OP_ARGMAX] = vjp_zero,
	[KRED__OP_ARGMIN] = vjp_zero,
	[KRED__OP_SQNORM2] = vjp_sqnorm2,
	[KRED__OP_NORM2] = vjp_norm2,
	[KRED__OP_NORMALIZE] = vjp_normalize,
	[KRED__OP_SQDIST] = vjp_sqdist,
	[KRED__OP_WEIGHTEDSQNORM] = vjp_wsqnorm,
	[KRED__OP_WEIGHTEDSQDIST] = vjp_wsqdist,
	[KRED__OP_ZERO] = vjp_leaf,
	[KRED__OP_ELEM] = vjp_elem,
	[KRED__OP_ELEMT] = vjp_elemt,
	[KRED__OP_EXTRACT] = vjp_extract,
	[KRED__OP_EXTRACTT] = vjp_extractt,
	[KRED__OP_CONCAT] = vjp_concat,
	[KRED__OP_ONEHOT] = vjp_zero,
	[KRED__OP_MATVECMULT] = vjp_matvec,
	[KRED__OP_VECMATMULT] = vjp_vecmat,
	[KRED__OP_TENSORPROD] = vjp_tensorprod,
	[KRED__OP_KRON] = vjp_kron,
	[KRED__OP_TENSORDOT] = vjp_tensordot,
	[KRED__OP_GRAD] = vjp_deriv,
	[KRED__OP_DIFF] = vjp_deriv,
	[KRED__OP_GRADFROMPOS] = vjp_deriv,
	[KRED__OP_GRADMATRIX] = vjp_deriv,
	[KRED__OP_DIVERGENCE] = vjp_deriv,
	[KRED__OP_LAPLACIAN] = vjp_deriv,
};
_Static_assert(sizeof(vjp_rules) / sizeof(vjp_rules[0]) == KRED__OP_COUNT,
	       "one derivative rule per operation, in the ORDER of KRED__OPS");

/* ---- reverse accumulation */

#define REACH 1u
#define DEP 2u

/* The contributions to one node's cotangent, summed once they are all in (when the
 * pass down reaches the node). */
struct terms {
	const struct kred__node **v;
	int n, cap;
};

/* Up to this many terms are added left to right, ((t1 + t2) + t3) + ...; more are added
 * pairwise, so that a variable used n times gets a cotangent of depth log2(n), not n
 * (which would cross KRED__MAX_HEIGHT for a formula that is itself shallow). */
#define LEFT_FOLD_TERMS 8

static const struct kred__node *sum_terms(struct dx *c, const struct kred__node **v, int n)
{
	const struct kred__node *s;

	if (n <= LEFT_FOLD_TERMS) {
		s = v[0];
		for (int k = 1; k < n && s; k++)
			s = add(c, s, v[k]);
		return s;
	}
	s = sum_terms(c, v, n / 2);
	return s ? add(c, s, sum_terms(c, v + n / 2, n - n / 2)) : NULL;
}

/* The cotangent of a node from its terms (NULL when it has none or on error, which
 * c->err tells apart). */
static const struct kred__node *cotangent(struct dx *c, const struct terms *t)
{
	return t->n ? sum_terms(c, t->v, t->n) : NULL;
}

/* Adds x to the cotangent terms *slot of argument a. A broadcast dimension-1 argument
 * receives the sum of its cotangent; a cotangent of dimension 1 for a wider argument
 * (the rule of Sum) is broadcast. */
static int accumulate(struct dx *c, struct terms *slot, const struct kred__node *a,
		      const struct kred__node *x)
{
	if (is_zero(x))
		return 0;
	if (x->dim != a->dim) {
		if (a->dim == 1)
			x = sum(c, x);
		else if (x->dim == 1)
			x = bcast(c, x, a->dim);
		else {
			kred__fail(c->err, KRED_EGRAD, -1,
				   "internal: cotangent of dimension %d for an argument of "
				   "dimension %d",
				   x->dim, a->dim);
			return -1;
		}
		if (!x)
			return -1;
	}
	if (slot->n == slot->cap) {
		int cap = slot->cap ? 2 * slot->cap : 4;
		const struct kred__node **v = kred__realloc(slot->v, (size_t)cap * sizeof(*v));

		if (!v) {
			kred__fail(c->err, KRED_ENOMEM, -1, "out of memory");
			return -1;
		}
		slot->v = v;
		slot->cap = cap;
	}
	slot->v[slot->n++] = x;
	return 0;
}

static const struct kred__node *grad(struct dx *c, const struct kred__node *f,
				     const struct kred__node *v, const struct kred__node *e)
{
	const struct kred__node *res;
	struct terms *ct = NULL;
	unsigned char *flag = NULL;
	int n;

	if (!f || !v || !e)
		return NULL;
	if (v->op != KRED__OP_VAR) {
		kred__fail(c->err, KRED_EGRAD, -1, "can only differentiate with respect to a "
						   "variable");
		return NULL;
	}
	if (e->dim != f->dim) {
		kred__fail(c->err, KRED_EDIM, -1,
			   "Grad: the cotangent has dimension %d, the formula %d", e->dim, f->dim);
		return NULL;
	}
	if (v->id > f->id || (c->simplify && is_zero(e)))
		return zero(c, v->dim);
	n = f->id + 1;
	flag = kred__calloc((size_t)n, 1);
	ct = kred__calloc((size_t)n, sizeof(*ct));
	if (!flag || !ct) {
		kred__fail(c->err, KRED_ENOMEM, -1, "out of memory");
		res = NULL;
		goto out;
	}
	/* Ids are a topological order: one pass down marks what f uses, one pass up
	 * marks what depends on v; only nodes with both take part. */
	flag[f->id] = REACH;
	for (int id = f->id; id >= 0; id--) {
		const struct kred__node *m = c->g->nodes[id];

		if (flag[id] & REACH)
			for (int i = 0; i < m->nargs; i++)
				flag[m->arg[i]->id] |= REACH;
	}
	for (int id = 0; id <= f->id; id++) {
		const struct kred__node *m = c->g->nodes[id];

		if (!(flag[id] & REACH))
			continue;
		if (m == v)
			flag[id] |= DEP;
		for (int i = 0; i < m->nargs; i++)
			if (flag[m->arg[i]->id] & DEP)
				flag[id] |= DEP;
	}
	if (accumulate(c, &ct[f->id], f, e) < 0) {
		res = NULL;
		goto out;
	}
	for (int id = f->id; id >= 0; id--) {
		const struct kred__node *m = c->g->nodes[id], *d[KRED__MAX_ARGS] = { NULL };
		const struct kred__node *ctm;
		int need[KRED__MAX_ARGS] = { 0 };

		if (!(flag[id] & DEP) || !ct[id].n || m == v)
			continue;
		/* every user of m has a larger id: its terms are all in */
		ctm = cotangent(c, &ct[id]);
		if (!ctm) {
			res = NULL;
			goto out;
		}
		for (int i = 0; i < m->nargs; i++)
			need[i] = (flag[m->arg[i]->id] & DEP) != 0;
		vjp_rules[m->op](c, m, ctm, need, d);
		for (int i = 0; i < m->nargs; i++) {
			if (!need[i])
				continue;
			if (!d[i]) {
				kred__fail(c->err, KRED_EGRAD, -1,
					   "internal: no derivative of %s", kred__ops[m->op].name);
				res = NULL;
				goto out;
			}
			if (accumulate(c, &ct[m->arg[i]->id], m->arg[i], d[i]) < 0) {
				res = NULL;
				goto out;
			}
		}
	}
	res = ct[v->id].n ? cotangent(c, &ct[v->id]) : zero(c, v->dim);
out:
	if (ct)
		for (int id = 0; id < n; id++)
			kred__free(ct[id].v);
	kred__free(flag);
	kred__free(ct);
	return res;
}

const struct kred__node *kred__grad(struct kred__graph *g, const struct kred__node *f,
				    const struct kred__node *v, const struct kred__node *e,
				    struct kred__error *err)
{
	struct dx c = { g, err, kred__diff_simplify, g->n_nodes };

	return grad(&c, f, v, e);
}

/* ---- Grad, Diff, GradMatrix, Divergence, Laplacian */

/* The k-th vector of the standard basis of dimension dim. */
static const struct kred__node *basis(struct dx *c, int dim, int k)
{
	int ints[2] = { dim, k };

	if (dim == 1)
		return cst(c, 1.0);
	return opi(c, KRED__OP_ELEMT, cst(c, 1.0), 2, ints);
}

/* GradMatrix(f, v) as KeOps lays it out: Concat over i of Grad(f, v, e_i), so that
 * out[i * d(v) + k] = d f_i / d v_k (the Jacobian, row-major, one row per f_i). */
static const struct kred__node *grad_matrix(struct dx *c, const struct kred__node *f,
					    const struct kred__node *v)
{
	const struct kred__node *out = NULL;

	if (!f || !v)
		return NULL;
	for (int i = 0; i < f->dim; i++) {
		const struct kred__node *row = grad(c, f, v, basis(c, f->dim, i));

		out = i ? concat(c, out, row) : row;
		if (!out)
			return NULL;
	}
	return out;
}

/* Divergence(f, v) = sum_k d f_k / d v_k: one pass per k, each seeded with a one-hot
 * cotangent that the constructors keep sparse. */
static const struct kred__node *divergence(struct dx *c, const struct kred__node *f,
					   const struct kred__node *v)
{
	const struct kred__node *out = NULL;

	if (!f || !v)
		return NULL;
	if (f->dim != v->dim) {
		kred__fail(c->err, KRED_EDIM, -1,
			   "Divergence: the formula has dimension %d, the variable %d", f->dim,
			   v->dim);
		return NULL;
	}
	for (int k = 0; k < f->dim; k++) {
		const struct kred__node *t = elem(c, grad(c, f, v, basis(c, f->dim, k)), k);

		out = k ? add(c, out, t) : t;
		if (!out)
			return NULL;
	}
	return out;
}

/* Diff(f, v, e) = J e, the derivative of f at v in direction e: (Grad(f, v, e_i) | e)
 * for each component i. Reverse passes only, so no second rule table (forward mode)
 * and no temporary variable are needed; for the usual scalar f it is one pass. */
static const struct kred__node *directional(struct dx *c, const struct kred__node *f,
					    const struct kred__node *v,
					    const struct kred__node *e)
{
	const struct kred__node *out = NULL;

	if (!f || !v || !e)
		return NULL;
	if (e->dim != v->dim) {
		kred__fail(c->err, KRED_EDIM, -1,
			   "Diff: the direction has dimension %d, the variable %d", e->dim,
			   v->dim);
		return NULL;
	}
	for (int i = 0; i < f->dim; i++) {
		const struct kred__node *t =
			scalprod(c, grad(c, f, v, basis(c, f->dim, i)), e);

		out = i ? concat(c, out, t) : t;
		if (!out)
			return NULL;
	}
	return out;
}

/* The variable of GradFromPos: arg[1] when the parser resolved it, else the variable
 * at position ints[0], from the graph's nodes or its aliases. */
static const struct kred__node *var_at(struct dx *c, const struct kred__node *n)
{
	int pos = n->ints[0];

	if (n->nargs == 3 && n->arg[1]->op == KRED__OP_VAR)
		return n->arg[1];
	for (int id = 0; id < c->g->n_nodes; id++) {
		const struct kred__node *m = c->g->nodes[id];

		if (m->op == KRED__OP_VAR && m->ints[0] == pos)
			return m;
	}
	for (int k = 0; k < c->g->n_vars; k++) {
		const struct kred__var *x = &c->g->vars[k];

		if (x->pos == pos)
			return kred__var_node(c->g, x->pos, x->dim, x->cat, c->err);
	}
	kred__fail(c->err, KRED_EGRAD, -1, "GradFromPos: no variable at position %d", pos);
	return NULL;
}

static const struct kred__node *expand(struct dx *c, const struct kred__node *n,
				       const struct kred__node *const *map)
{
	const struct kred__node *args[KRED__MAX_ARGS];
	const struct kred__node *f, *v, *e;
	int changed = 0;

	for (int i = 0; i < n->nargs; i++) {
		args[i] = map[n->arg[i]->id];
		changed |= args[i] != n->arg[i];
	}
	if (!(kred__ops[n->op].flags & KRED__OP_DERIV))
		return changed ? kred__node(c->g, n->op, n->nargs, args, n->nint, n->ints,
					    n->value, c->err)
			       : n;
	f = args[0];
	v = n->nargs > 1 ? args[1] : NULL;
	e = n->nargs > 2 ? args[2] : NULL;
	switch (n->op) {
	case KRED__OP_GRAD:
		return grad(c, f, v, e);
	case KRED__OP_GRADFROMPOS:
		v = var_at(c, n);
		return grad(c, f, v, args[n->nargs - 1]);
	case KRED__OP_DIFF:
		return directional(c, f, v, e);
	case KRED__OP_GRADMATRIX:
		return grad_matrix(c, f, v);
	case KRED__OP_DIVERGENCE:
		return divergence(c, f, v);
	case KRED__OP_LAPLACIAN:
		if (f->dim != 1) {
			kred__fail(c->err, KRED_EDIM, -1,
				   "Laplacian: the formula must have dimension 1, not %d",
				   f->dim);
			return NULL;
		}
		return divergence(c, grad(c, f, v, cst(c, 1.0)), v);
	default:
		kred__fail(c->err, KRED_EGRAD, -1, "internal: unknown derivative %s",
			   kred__ops[n->op].name);
		return NULL;
	}
}

kred_status kred__diff_expand(struct kred__graph *g, const struct kred__node *root,
			      const struct kred__node **out, struct kred__error *err)
{
	struct dx c = { g, err, kred__diff_simplify, g->n_nodes };
	const struct kred__node **map;
	unsigned char *reach;
	int n = root->id + 1, any = 0;
	kred_status st = KRED_OK;

	*out = NULL;
	reach = kred__calloc((size_t)n, 1);
	map = kred__calloc((size_t)n, sizeof(*map));
	if (!reach || !map) {
		st = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto out;
	}
	reach[root->id] = 1;
	for (int id = root->id; id >= 0; id--) {
		const struct kred__node *m = g->nodes[id];

		if (!reach[id])
			continue;
		any |= (kred__ops[m->op].flags & KRED__OP_DERIV) != 0;
		for (int i = 0; i < m->nargs; i++)
			reach[m->arg[i]->id] = 1;
	}
	if (!any) {
		*out = root;
		goto out;
	}
	/* Arguments first (ids are topological), so derivatives nested in f or e are
	 * expanded before the derivative that holds them. */
	for (int id = 0; id <= root->id; id++) {
		if (!reach[id])
			continue;
		map[id] = expand(&c, g->nodes[id], map);
		if (!map[id]) {
			st = err->status;
			if (st == KRED_OK)
				st = kred__fail(err, KRED_EGRAD, -1, "internal: expansion failed");
			goto out;
		}
	}
	*out = map[root->id];
out:
	kred__free(reach);
	kred__free(map);
	return st;
}

/* ---- products regrouped for the kernels
 *
 * The rules above build a product as the chain rule meets its factors, so the factors
 * that vary with the reduced index (through the column's variables) sit among those
 * that do not: the Gaussian sum's gradient in X came out as
 * 2 * ((-G * (Exp(..) * (B * E))) * (X - Y)), six products per pair beyond the exp. A
 * kernel evaluates the formula pair by pair, and a compiler may not reorder products
 * (that changes their rounding), so each chain of products built here is written again:
 *   (the constants, then the factors constant over the reduced index, multiplied
 *   together: loop-invariant, lifted out of the loop over the reduced index)
 *   * (the scalar factors that vary) * (the invariant vectors) * (the varying vectors),
 * ((-2 * G * E) * (Exp(..) * B)) * (X - Y) above: two products per pair and a
 * multiply-add per component. Only the order of the products changes, as the rules above
 * already move constants and signs: values differ by rounding, and by overflow or
 * underflow of partial products. Chains of more than MAX_FACTORS are left as they are. */

#define MAX_FACTORS 32

struct regroup {
	struct dx *c;
	int red_cat;			/* category of the reduced index's variables */
	const struct kred__node **map;	/* by id: the node written again */
	unsigned char *vary;		/* by id: uses a variable of red_cat */
};

/* The factors of the new product (or negation) n, in order, into f; -1 factors are
 * counted in *sign. Returns how many, or -1 past MAX_FACTORS. */
static int factors(const struct regroup *q, const struct kred__node *n,
		   const struct kred__node **f, int nf, int *sign)
{
	for (int k = 0; k < n->nargs; k++) {
		const struct kred__node *a = n->arg[k];

		if (is_new(q->c, a) && (a->op == KRED__OP_MULT || a->op == KRED__OP_MINUS)) {
			nf = factors(q, a, f, nf, sign);
		} else {
			if (nf < 0 || nf == MAX_FACTORS)
				return -1;
			f[nf++] = a;
		}
		if (nf < 0)
			return -1;
	}
	if (n->op == KRED__OP_MINUS)
		*sign = -*sign;
	return nf;
}

static const struct kred__node *times(struct dx *c, const struct kred__node *acc,
				      const struct kred__node *x)
{
	return acc ? op2(c, KRED__OP_MULT, acc, x) : x;
}

/* The chain of products at n, regrouped; NULL (no error) to keep n's shape. */
static const struct kred__node *regroup_chain(const struct regroup *q,
					      const struct kred__node *n)
{
	struct dx *c = q->c;
	const struct kred__node *f[MAX_FACTORS], *inv = NULL, *var = NULL, *vec = NULL;
	int sign = 1, nf = factors(q, n, f, 0, &sign);
	double k = 1.0;

	if (nf < 2)
		return NULL;
	for (int i = 0; i < nf; i++)
		if (f[i]->op == KRED__OP_CST)
			k *= f[i]->value;
	k *= sign;
	if (!foldable(k) || k == 0.0)
		return NULL;
	if (k != 1.0)
		inv = cst(c, k);
	/* invariant scalars, then varying scalars, then vectors (invariant ones first) */
	for (int i = 0; i < nf; i++)
		if (f[i]->op != KRED__OP_CST && f[i]->dim == 1 && !q->vary[f[i]->id])
			inv = times(c, inv, q->map[f[i]->id]);
	for (int i = 0; i < nf; i++)
		if (f[i]->op != KRED__OP_CST && f[i]->dim == 1 && q->vary[f[i]->id])
			var = times(c, var, q->map[f[i]->id]);
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < nf; i++)
			if (f[i]->dim > 1 && q->vary[f[i]->id] == pass)
				vec = times(c, vec, q->map[f[i]->id]);
	var = inv && var ? op2(c, KRED__OP_MULT, inv, var) : inv ? inv : var;
	if (vec)
		var = var ? op2(c, KRED__OP_MULT, var, vec) : vec;
	return var;
}

/* f with every chain of products built here regrouped (see above). */
static const struct kred__node *regroup(struct dx *c, const struct kred__node *f, int red_cat)
{
	struct kred__graph *g = c->g;
	struct regroup q = { c, red_cat, NULL, NULL };
	unsigned char *reach;
	const struct kred__node *out = NULL;
	int top = f ? f->id : -1;

	if (!f || !c->simplify)
		return f;
	q.map = kred__calloc((size_t)top + 1, sizeof(*q.map));
	q.vary = kred__calloc((size_t)top + 1, 1);
	reach = kred__calloc((size_t)top + 1, 1);
	if (!q.map || !q.vary || !reach) {
		kred__fail(c->err, KRED_ENOMEM, -1, "out of memory");
		goto done;
	}
	/* Ids are a topological order: arguments come first. */
	reach[top] = 1;
	for (int id = top; id >= 0; id--)
		if (reach[id])
			for (int k = 0; k < g->nodes[id]->nargs; k++)
				reach[g->nodes[id]->arg[k]->id] = 1;
	for (int id = 0; id <= top; id++) {
		const struct kred__node *n = g->nodes[id], *args[KRED__MAX_ARGS], *m = NULL;
		int same = 1;

		if (!reach[id])
			continue;
		q.vary[id] = n->op == KRED__OP_VAR && n->ints[2] == red_cat;
		for (int k = 0; k < n->nargs; k++) {
			q.vary[id] |= q.vary[n->arg[k]->id];
			args[k] = q.map[n->arg[k]->id];
			same &= args[k] == n->arg[k];
		}
		if (is_new(c, n) && n->op == KRED__OP_MULT)
			m = regroup_chain(&q, n);
		if (!m && !same && c->err->status == KRED_OK)
			m = kred__node(g, n->op, n->nargs, args, n->nint, n->ints, n->value, c->err);
		/* a builder that failed may have been followed by others that did not */
		if (c->err->status != KRED_OK)
			goto done;
		q.map[id] = m ? m : n;
	}
	out = q.map[top];
done:
	kred__free(q.map);
	kred__free(q.vary);
	kred__free(reach);
	return out;
}

/* ---- gradients of reductions
 *
 * The gradient of out = Red_j F (axis j; swap i and j for axis i) with respect to a
 * variable v is a reduction whose arguments are, by position:
 *   0 .. n-1  the forward reduction's arguments (same aliases, same positions);
 *   n         GRAD_OUT, the cotangent: a Vi variable (Vj for axis i) of dimension
 *             out_dim, the shape of the forward output;
 *   n+1       FWD_OUT, the forward output (same category and dimension), for every
 *             reduction but Sum;
 *   n+2       FWD_LSE, for SumSoftMaxWeight with respect to a variable of the reduced
 *             axis only: the log-normaliser LogSumExp_j F, computed by r->pre and not
 *             passed by the user.
 * For a Vi variable it is a j-reduction (nx x d(v)); for a Vj variable an i-reduction
 * (ny x d(v)); for a Pm variable a j-reduction whose rows the library sums (pm_sum),
 * giving d(v) values. The gradient of such a summed reduction (a Sum) takes its
 * cotangent as a Pm variable. The terms per pair, with e the cotangent, o the output and
 * G(h) = Grad(., v, h):
 *   Sum                  G_F(e)
 *   LogSumExp            G_F(e exp(F - o))       (exp(F - o) <= 1: no overflow)
 *   LogSumExpWeight      G_F((h | W)) + G_W(h),  h = e exp(F - o), per component
 *   SumSoftMaxWeight     SumSoftMaxWeight_j(F, G_F((e | W - o)) + G_W(e)) for Vi and
 *                        Pm; for Vj, Sum_i exp(F - lse_i) (G_F((e | W - o)) + G_W(e))
 *   Max_SumShiftExp(W)   through exp(F - m) for s and the arg-max for m
 *   Min, Max, KMin and Min_ArgMin, Max_ArgMax, KMin_ArgKMin (values part)
 *                        G_F(e [F = o]), rank by rank for KMin: the selected terms,
 *                        "=" within a few ulps (same()). Two j tied within that send
 *                        the cotangent to both.
 */

struct rgrad {
	struct dx c;
	const kred_reduction *r;
	const struct kred__node *f, *w, *v, *e, *o;
	int own; /* category of the output's rows */
};

/* A variable beyond the user's, named so that the command line and kred_reduction_arg
 * can find it: name, or name2, name3, ... when taken (a gradient of a gradient). */
static const struct kred__node *extra_var(struct dx *c, const char *name, int pos, int dim,
					  int cat)
{
	char buf[64];

	snprintf(buf, sizeof(buf), "%s", name);
	for (int k = 2; kred__graph_find(c->g, buf, strlen(buf)); k++)
		snprintf(buf, sizeof(buf), "%s%d", name, k);
	if (kred__graph_declare(c->g, buf, strlen(buf), pos, dim, cat, c->err) != KRED_OK)
		return NULL;
	return kred__var_node(c->g, pos, dim, cat, c->err);
}

/* The aliases of the forward graph. A position that has no alias is declared with the
 * empty name by keep_positions(), which also runs again here. */
static kred_status copy_vars(struct kred__graph *dst, const struct kred__graph *src,
			     struct kred__error *err)
{
	for (int k = 0; k < src->n_vars; k++) {
		const struct kred__var *v = &src->vars[k];
		kred_status st;

		if (!*v->name)
			continue;
		st = kred__graph_declare(dst, v->name, strlen(v->name), v->pos, v->dim, v->cat,
					 err);
		if (st != KRED_OK)
			return st;
	}
	return KRED_OK;
}

/* The gradient keeps every argument position of the forward reduction, even one its
 * formula no longer uses (the gradient of (X|Y) in X drops X), since the caller passes
 * the same arguments. Positions are counted from the declared variables and the
 * formula's nodes, so a position given only as Vi(0,3), without alias, that has
 * dropped out is declared here with the empty name it had. The printer never meets it:
 * it is not in the formula. */
static kred_status keep_positions(struct kred__graph *g, const kred_reduction *r,
				  const struct kred__node *f, const struct kred__node *w,
				  struct kred__error *err)
{
	for (int p = 0; p < r->n_args; p++) {
		const struct kred__arg *a = &r->args[p];
		const struct kred__node *v;
		struct kred__var *vars;
		int uses, declared = 0;

		for (int k = 0; k < g->n_vars; k++)
			declared |= g->vars[k].pos == p;
		if (declared)
			continue;
		v = kred__var_node(g, p, a->dim, a->cat, err);
		if (!v)
			return err->status;
		uses = kred__node_uses(f, v);
		if (!uses && w)
			uses = kred__node_uses(w, v);
		if (uses < 0)
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		if (uses)
			continue;
		vars = kred__realloc(g->vars, sizeof(*vars) * (size_t)(g->n_vars + 1));
		if (!vars)
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		g->vars = vars;
		vars[g->n_vars].name = kred__strdup("");
		if (!vars[g->n_vars].name)
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		vars[g->n_vars].pos = p;
		vars[g->n_vars].dim = a->dim;
		vars[g->n_vars].cat = a->cat;
		g->n_vars++;
	}
	return KRED_OK;
}

/* Gradient of a weighted pair: G_F(a) + G_W(b). */
static const struct kred__node *grad_fw(struct rgrad *s, const struct kred__node *a,
					const struct kred__node *b)
{
	return add(&s->c, grad(&s->c, s->f, s->v, a), grad(&s->c, s->w, s->v, b));
}

/* Whether F is the selected value o. o went through the output's type (in float32, the
 * reference evaluator's double rounded) and another kernel may round F differently, so
 * "equal" means within a few units in the last place: |F - o| < tol |o| + tiny. Strict,
 * so that the +inf of a KMin rank with no term selects nothing. */
static const struct kred__node *same(struct rgrad *s, const struct kred__node *f,
				     const struct kred__node *o)
{
	struct dx *c = &s->c;
	int f32 = s->r->dtype == KRED_FLOAT32;
	double tol = f32 ? 0x1p-21 : 0x1p-50, tiny = f32 ? FLT_MIN : DBL_MIN;

	return op2(c, KRED__OP_LESS, op1(c, KRED__OP_ABS, sub(c, f, o)),
		   add(c, mul(c, cst(c, tol), op1(c, KRED__OP_ABS, o)), cst(c, tiny)));
}

/* The cotangent of F for the selection reductions: value part of rank k at k*D. */
static const struct kred__node *selected(struct rgrad *s, int ranks)
{
	struct dx *c = &s->c;
	const struct kred__node *acc = NULL;
	int dim = s->f->dim;

	for (int k = 0; k < ranks; k++) {
		const struct kred__node *t =
			mul(c, extract(c, s->e, k * dim, dim),
			    same(s, s->f, extract(c, s->o, k * dim, dim)));

		acc = k ? add(c, acc, t) : t;
		if (!acc)
			return NULL;
	}
	return acc;
}

kred_status kred__reduction_grad(const kred_reduction *r, const char *var,
				 kred_reduction **out)
{
	kred_context *ctx = r->ctx;
	struct kred__error err;
	struct kred__graph *g = NULL, *pg = NULL;
	kred_reduction *pre = NULL;
	struct rgrad s;
	struct dx *c = &s.c;
	const struct kred__node *gf = NULL, *gw = NULL, *pf, *lse;
	enum kred__red red = KRED__RED_SUM;
	kred_axis axis = r->axis;
	int pos = -1, n = r->n_args, reduced;
	kred_status st;

	*out = NULL;
	kred__error_clear(&err);
	if (!var)
		return kred__ctx_fail(ctx, KRED_EINVAL, "kred_reduction_grad: no variable");
	switch (r->red) {
	case KRED__RED_ARGMIN:
	case KRED__RED_ARGMAX:
	case KRED__RED_ARGKMIN:
		return kred__ctx_fail(ctx, KRED_EGRAD,
				      "the reduction %s returns indices: it has no gradient",
				      kred__reds[r->red].name);
	default:
		break;
	}
	/* pre computes an argument from the others: a gradient that took it for an
	 * independent input would be wrong. */
	if (r->pre || (r->pm_sum && r->red != KRED__RED_SUM))
		return kred__ctx_fail(ctx, KRED_EGRAD,
				      "no gradient of this gradient reduction (it computes "
				      "the normaliser of a SumSoftMaxWeight, or sums the rows of "
				      "a %s)",
				      kred__reds[r->red].name);
	if (var[0] == '#') {
		char *end;
		long p = strtol(var + 1, &end, 10);

		if (end != var + 1 && !*end && p >= 0 && p < n)
			pos = (int)p;
	} else {
		for (int k = 0; k < n; k++)
			if (r->args[k].name && !strcmp(r->args[k].name, var))
				pos = k;
	}
	if (pos < 0 || r->args[pos].dim <= 0)
		return kred__ctx_fail(ctx, KRED_ENAME,
				      "kred_reduction_grad: no variable \"%s\" in this reduction",
				      var);

	g = kred__graph_new();
	if (!g)
		return kred__ctx_fail(ctx, KRED_ENOMEM, "out of memory");
	*c = (struct dx){ g, &err, kred__diff_simplify, 0 };
	s.r = r;
	s.own = r->axis == KRED_REDUCE_J ? KRED__CAT_I : KRED__CAT_J;
	reduced = r->args[pos].cat == (s.own == KRED__CAT_I ? KRED__CAT_J : KRED__CAT_I);
	if (copy_vars(g, r->g, &err) != KRED_OK)
		goto fail;
	s.f = kred__node_import(g, r->f, &err);
	s.w = r->w ? kred__node_import(g, r->w, &err) : NULL;
	s.v = kred__var_node(g, pos, r->args[pos].dim, r->args[pos].cat, &err);
	/* The rows of a parameter's gradient are summed: its cotangent is one vector. */
	s.e = extra_var(c, "GRAD_OUT", n, r->out_dim, r->pm_sum ? KRED__CAT_P : s.own);
	s.o = NULL;
	if (r->red != KRED__RED_SUM)
		s.o = extra_var(c, "FWD_OUT", n + 1, r->out_dim, s.own);
	if (!s.f || (r->w && !s.w) || !s.v || !s.e || (r->red != KRED__RED_SUM && !s.o))
		goto fail;
	c->first_new = g->n_nodes;

	switch (r->red) {
	case KRED__RED_SUM:
		gf = grad(c, s.f, s.v, s.e);
		break;
	case KRED__RED_LSE:
		gf = grad(c, s.f, s.v, mul(c, s.e, op1(c, KRED__OP_EXP, sub(c, s.f, s.o))));
		break;
	case KRED__RED_LSE_WEIGHT: {
		const struct kred__node *h =
			mul(c, s.e, op1(c, KRED__OP_EXP, sub(c, s.f, s.o)));

		gf = grad_fw(&s, scalprod(c, h, s.w), h);
		break;
	}
	case KRED__RED_SOFTMAX_WEIGHT:
		gw = grad_fw(&s, scalprod(c, s.e, sub(c, s.w, s.o)), s.e);
		if (!reduced) {
			/* Normalised by the same sum over j as the forward pass: itself a
			 * SumSoftMaxWeight, no normaliser needed. */
			red = KRED__RED_SOFTMAX_WEIGHT;
			gf = s.f;
			break;
		}
		/* Over i, each term needs the normaliser of its own row i: computed
		 * first by pre, over the user's arguments only. */
		pg = kred__graph_new();
		if (!pg) {
			kred__fail(&err, KRED_ENOMEM, -1, "out of memory");
			goto fail;
		}
		if (copy_vars(pg, r->g, &err) != KRED_OK)
			goto fail;
		pf = kred__node_import(pg, r->f, &err);
		if (!pf || keep_positions(pg, r, pf, NULL, &err) != KRED_OK)
			goto fail;
		st = kred__reduction_finish(ctx, pg, pf, NULL, KRED__RED_LSE, 0, r->axis,
					    r->dtype, r->sum_scheme, r->fast_math, 0, NULL, &pre);
		pg = NULL;
		if (st != KRED_OK) {
			kred__graph_free(g);
			return st;
		}
		lse = extra_var(c, "FWD_LSE", n + 2, 1, s.own);
		gf = mul(c, op1(c, KRED__OP_EXP, sub(c, s.f, lse)), gw);
		gw = NULL;
		break;
	case KRED__RED_MAX_SUMSHIFTEXP:
	case KRED__RED_MAX_SUMSHIFTEXP_WEIGHT: {
		/* out = (m, s): ds = sum exp(F - m) (W dF + dW) - s dm, and dm flows to
		 * the arg-max. */
		int wd = s.w ? s.w->dim : 1;
		const struct kred__node *em = elem(c, s.e, 0), *m = elem(c, s.o, 0);
		const struct kred__node *es = extract(c, s.e, 1, wd), *so = extract(c, s.o, 1, wd);
		const struct kred__node *x = op1(c, KRED__OP_EXP, sub(c, s.f, m));
		const struct kred__node *sel =
			mul(c, sub(c, em, scalprod(c, es, so)), same(&s, s.f, m));

		if (s.w)
			gf = grad_fw(&s, add(c, mul(c, x, scalprod(c, es, s.w)), sel),
				     mul(c, x, es));
		else
			gf = grad(c, s.f, s.v, add(c, mul(c, x, es), sel));
		break;
	}
	case KRED__RED_MIN:
	case KRED__RED_MAX:
	case KRED__RED_MIN_ARGMIN:
	case KRED__RED_MAX_ARGMAX:
		gf = grad(c, s.f, s.v, selected(&s, 1));
		break;
	case KRED__RED_KMIN:
	case KRED__RED_KMIN_ARGKMIN:
		gf = grad(c, s.f, s.v, selected(&s, r->k));
		break;
	default:
		kred__fail(&err, KRED_EGRAD, -1, "the reduction %s has no gradient",
			   kred__reds[r->red].name);
		goto fail;
	}
	if (reduced)
		axis = r->axis == KRED_REDUCE_J ? KRED_REDUCE_I : KRED_REDUCE_J;
	gf = regroup(c, gf, axis == KRED_REDUCE_J ? KRED__CAT_J : KRED__CAT_I);
	if (!gf || (red == KRED__RED_SOFTMAX_WEIGHT && !gw) ||
	    keep_positions(g, r, gf, gw, &err) != KRED_OK)
		goto fail;
	return kred__reduction_finish(ctx, g, gf, gw, red, 0, axis, r->dtype, r->sum_scheme,
				      r->fast_math, r->args[pos].cat == KRED__CAT_P, pre, out);
fail:
	if (err.status == KRED_OK)
		kred__fail(&err, KRED_EGRAD, -1, "internal: gradient reduction failed");
	if (g)
		kred__graph_free(g);
	if (pg)
		kred__graph_free(pg);
	kred_reduction_destroy(pre);
	return kred__ctx_set_error(ctx, &err, NULL);
}
