/* The operation table: one row per operation of the formula language, with its call
 * signature and its dimension rule. The parser, the printer and the builders use it. */
#include <string.h>

#include "internal.h"

#define A(n, k) ((n)->arg[k]->dim)

static int bad(struct kred__error *err, const char *fmt, int a, int b)
{
	kred__fail(err, KRED_EDIM, -1, fmt, a, b);
	return -1;
}

static int range(struct kred__error *err, const char *what, int v)
{
	kred__fail(err, KRED_ERANGE, -1, "%s out of range (%d)", what, v);
	return -1;
}

static int dim_var(const struct kred__node *n, struct kred__error *err)
{
	if (n->ints[0] < 0 || n->ints[0] > 10000)
		return range(err, "variable position", n->ints[0]);
	if (n->ints[1] < 1 || n->ints[1] > KRED__MAX_DIM)
		return range(err, "variable dimension", n->ints[1]);
	if (n->ints[2] < 0 || n->ints[2] > 2)
		return range(err, "variable category (0 = i, 1 = j, 2 = parameter)", n->ints[2]);
	return n->ints[1];
}

static int dim_one(const struct kred__node *n, struct kred__error *err)
{
	return 1;
}

static int dim_same(const struct kred__node *n, struct kred__error *err)
{
	return A(n, 0);
}

/* Element-wise: equal dimensions, or a dimension-1 side broadcast. */
static int dim_bcast(const struct kred__node *n, struct kred__error *err)
{
	int d = 1;

	for (int k = 0; k < n->nargs; k++) {
		int dk = A(n, k);

		if (dk == 1 || dk == d)
			continue;
		if (d != 1)
			return bad(err, "dimension mismatch: %d and %d", d, dk);
		d = dk;
	}
	return d;
}

static int dim_clampint(const struct kred__node *n, struct kred__error *err)
{
	return A(n, 0);
}

static int dim_round(const struct kred__node *n, struct kred__error *err)
{
	if (n->ints[0] < -30 || n->ints[0] > 30)
		return range(err, "number of decimals", n->ints[0]);
	return A(n, 0);
}

static int dim_scal(const struct kred__node *n, struct kred__error *err)
{
	if (A(n, 0) != 1)
		return bad(err, "Scal needs a scalar first argument, got dimension %d (and %d)",
			   A(n, 0), A(n, 1));
	return A(n, 1);
}

static int dim_scalprod(const struct kred__node *n, struct kred__error *err)
{
	if (A(n, 0) != A(n, 1))
		return bad(err, "scalar product of dimensions %d and %d", A(n, 0), A(n, 1));
	return 1;
}

static int dim_sqdist(const struct kred__node *n, struct kred__error *err)
{
	if (A(n, 0) != A(n, 1) && A(n, 0) != 1 && A(n, 1) != 1)
		return bad(err, "SqDist of dimensions %d and %d", A(n, 0), A(n, 1));
	return 1;
}

static int weight_ok(int s, int d)
{
	return s == 1 || s == d || (long)s == (long)d * d;
}

static int dim_wsqnorm(const struct kred__node *n, struct kred__error *err)
{
	if (!weight_ok(A(n, 0), A(n, 1)))
		return bad(err, "weight of dimension %d for a vector of dimension %d "
				"(expected 1, d or d*d)", A(n, 0), A(n, 1));
	return 1;
}

static int dim_wsqdist(const struct kred__node *n, struct kred__error *err)
{
	if (A(n, 1) != A(n, 2))
		return bad(err, "WeightedSqDist of dimensions %d and %d", A(n, 1), A(n, 2));
	if (!weight_ok(A(n, 0), A(n, 1)))
		return bad(err, "weight of dimension %d for vectors of dimension %d "
				"(expected 1, d or d*d)", A(n, 0), A(n, 1));
	return 1;
}

static int dim_zero(const struct kred__node *n, struct kred__error *err)
{
	if (n->ints[0] < 1 || n->ints[0] > KRED__MAX_DIM)
		return range(err, "dimension", n->ints[0]);
	return n->ints[0];
}

static int dim_elem(const struct kred__node *n, struct kred__error *err)
{
	if (n->ints[0] < 0 || n->ints[0] >= A(n, 0))
		return range(err, "index", n->ints[0]);
	return 1;
}

static int dim_elemt(const struct kred__node *n, struct kred__error *err)
{
	if (A(n, 0) != 1)
		return bad(err, "ElemT needs a scalar, got dimension %d (%d)", A(n, 0), 1);
	if (n->ints[0] < 1 || n->ints[0] > KRED__MAX_DIM)
		return range(err, "dimension", n->ints[0]);
	if (n->ints[1] < 0 || n->ints[1] >= n->ints[0])
		return range(err, "index", n->ints[1]);
	return n->ints[0];
}

static int dim_extract(const struct kred__node *n, struct kred__error *err)
{
	if (n->ints[0] < 0 || n->ints[0] >= A(n, 0))
		return range(err, "start", n->ints[0]);
	/* start is within the argument: dim - start cannot overflow, start + length can */
	if (n->ints[1] < 1 || n->ints[1] > A(n, 0) - n->ints[0])
		return range(err, "length", n->ints[1]);
	return n->ints[1];
}

static int dim_extractt(const struct kred__node *n, struct kred__error *err)
{
	if (n->ints[1] < 1 || n->ints[1] > KRED__MAX_DIM)
		return range(err, "dimension", n->ints[1]);
	if (n->ints[0] < 0 || n->ints[0] > n->ints[1] - A(n, 0))
		return range(err, "start", n->ints[0]);
	return n->ints[1];
}

static int dim_concat(const struct kred__node *n, struct kred__error *err)
{
	if (A(n, 0) + A(n, 1) > KRED__MAX_DIM)
		return bad(err, "Concat too large: %d + %d", A(n, 0), A(n, 1));
	return A(n, 0) + A(n, 1);
}

static int dim_onehot(const struct kred__node *n, struct kred__error *err)
{
	if (A(n, 0) != 1)
		return bad(err, "OneHot needs a scalar, got dimension %d (%d)", A(n, 0), 1);
	if (n->ints[0] < 1 || n->ints[0] > KRED__MAX_DIM)
		return range(err, "dimension", n->ints[0]);
	return n->ints[0];
}

static int dim_matvec(const struct kred__node *n, struct kred__error *err)
{
	if (A(n, 0) % A(n, 1))
		return bad(err, "MatVecMult: matrix of %d values and vector of dimension %d",
			   A(n, 0), A(n, 1));
	return A(n, 0) / A(n, 1);
}

static int dim_vecmat(const struct kred__node *n, struct kred__error *err)
{
	if (A(n, 1) % A(n, 0))
		return bad(err, "VecMatMult: vector of dimension %d and matrix of %d values",
			   A(n, 0), A(n, 1));
	return A(n, 1) / A(n, 0);
}

static int dim_tensorprod(const struct kred__node *n, struct kred__error *err)
{
	if ((long)A(n, 0) * A(n, 1) > KRED__MAX_DIM)
		return bad(err, "TensorProd too large: %d x %d", A(n, 0), A(n, 1));
	return A(n, 0) * A(n, 1);
}

/* Reads list number `which` of n's ints (each stored as length, values...). */
static const int *list_at(const struct kred__node *n, int which, int *len)
{
	int at = 0;

	for (int k = 0; k < which; k++)
		at += 1 + n->ints[at];
	*len = n->ints[at];
	return &n->ints[at + 1];
}

/* The product of a list of dimensions (each 1 to KRED__MAX_DIM, list_positive), or
 * KRED__MAX_DIM + 1 once it passes KRED__MAX_DIM: it is only compared with dimensions,
 * and 32 factors of 65,536 would overflow even a 64-bit long. */
static long list_prod(const int *v, int len)
{
	long p = 1;

	for (int k = 0; k < len; k++) {
		p *= v[k];
		if (p > KRED__MAX_DIM)
			return KRED__MAX_DIM + 1L;
	}
	return p;
}

static int list_positive(const int *v, int len)
{
	for (int k = 0; k < len; k++)
		if (v[k] < 1 || v[k] > KRED__MAX_DIM)
			return 0;
	return len > 0;
}

static int dim_kron(const struct kred__node *n, struct kred__error *err)
{
	int la, lb;
	const int *a = list_at(n, 0, &la), *b = list_at(n, 1, &lb);
	long pa, pb;

	if (!list_positive(a, la) || !list_positive(b, lb) || la != lb)
		return range(err, "Kron shape (same number of positive axes)", la);
	pa = list_prod(a, la);
	pb = list_prod(b, lb);
	if (pa != A(n, 0) || pb != A(n, 1))
		return bad(err, "Kron shapes do not match argument dimensions %d and %d",
			   A(n, 0), A(n, 1));
	if (pa * pb > KRED__MAX_DIM)
		return bad(err, "Kron too large: %d x %d", A(n, 0), A(n, 1));
	return (int)(pa * pb);
}

static int dim_tensordot(const struct kred__node *n, struct kred__error *err)
{
	int la, lb, lca, lcb;
	const int *a = list_at(n, 0, &la), *b = list_at(n, 1, &lb);
	const int *ca = list_at(n, 2, &lca), *cb = list_at(n, 3, &lcb);
	long out = 1;

	if (!list_positive(a, la) || !list_positive(b, lb))
		return range(err, "TensorDot shape", 0);
	if (list_prod(a, la) != A(n, 0) || list_prod(b, lb) != A(n, 1))
		return bad(err, "TensorDot shapes do not match argument dimensions %d and %d",
			   A(n, 0), A(n, 1));
	if (lca != lcb)
		return range(err, "TensorDot contraction lists of different lengths", lcb);
	for (int k = 0; k < lca; k++) {
		if (ca[k] < 0 || ca[k] >= la || cb[k] < 0 || cb[k] >= lb)
			return range(err, "TensorDot contracted axis", ca[k]);
		if (a[ca[k]] != b[cb[k]])
			return bad(err, "TensorDot contracts axes of sizes %d and %d",
				   a[ca[k]], b[cb[k]]);
		for (int m = 0; m < k; m++)
			if (ca[m] == ca[k] || cb[m] == cb[k])
				return range(err, "TensorDot axis contracted twice", ca[k]);
	}
	for (int k = 0; k < la; k++) {
		int c = 0;

		for (int m = 0; m < lca; m++)
			c |= ca[m] == k;
		if (!c)
			out *= a[k];
	}
	for (int k = 0; k < lb; k++) {
		int c = 0;

		for (int m = 0; m < lcb; m++)
			c |= cb[m] == k;
		if (!c)
			out *= b[k];
	}
	if (out > KRED__MAX_DIM)
		return bad(err, "TensorDot too large: %d x %d", A(n, 0), A(n, 1));
	return (int)out;
}

static int dim_grad(const struct kred__node *n, struct kred__error *err)
{
	if (A(n, 2) != A(n, 0))
		return bad(err, "gradient: formula of dimension %d, cotangent of dimension %d",
			   A(n, 0), A(n, 2));
	return A(n, 1);
}

static int dim_diff(const struct kred__node *n, struct kred__error *err)
{
	if (A(n, 2) != A(n, 1))
		return bad(err, "Diff: variable of dimension %d, direction of dimension %d",
			   A(n, 1), A(n, 2));
	return A(n, 0);
}

static int dim_gradfrompos(const struct kred__node *n, struct kred__error *err)
{
	return dim_grad(n, err);
}

static int dim_gradmatrix(const struct kred__node *n, struct kred__error *err)
{
	if ((long)A(n, 0) * A(n, 1) > KRED__MAX_DIM)
		return bad(err, "GradMatrix too large: %d x %d", A(n, 0), A(n, 1));
	return A(n, 0) * A(n, 1);
}

static int dim_divergence(const struct kred__node *n, struct kred__error *err)
{
	if (A(n, 0) != A(n, 1))
		return bad(err, "Divergence of a field of dimension %d w.r.t. a variable of "
				"dimension %d", A(n, 0), A(n, 1));
	return 1;
}

static int dim_laplacian(const struct kred__node *n, struct kred__error *err)
{
	if (A(n, 0) != 1)
		return bad(err, "Laplacian needs a scalar formula, got dimension %d (%d)",
			   A(n, 0), 1);
	return 1;
}

const struct kred__op_info kred__ops[KRED__OP_COUNT] = {
#define ROW(e, name, sig, dim, flags) { name, sig, dim, flags },
	KRED__OPS(ROW)
#undef ROW
};

int kred__op_lookup(const char *name, size_t len)
{
	for (int k = 0; k < KRED__OP_COUNT; k++) {
		if (kred__ops[k].flags & KRED__OP_INTERNAL)
			continue;
		if (strlen(kred__ops[k].name) == len && !memcmp(kred__ops[k].name, name, len))
			return k;
	}
	return -1;
}
