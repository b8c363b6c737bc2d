/* The kernel emitter: a formula graph to straight-line code in a dialect (lib/emit.h), and
 * every reduction's four pieces (init, update, merge, finalize), written once for all. */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emit.h"
#include "kernels/kred_kernels.h"

/*
 * How the code looks. Every node under F and G is emitted once, in id order (ids are a
 * topological order, and common sub-expressions are already one node), as scalar locals:
 * `real v12` for a node of dimension 1, `real v12_0, v12_1, ...` for a vector, one
 * statement per value. Variables and constants are not copied: a use prints the access
 * (xi[2 * sxi], yj[0], p[1]) or the literal. Fully unrolled scalar code is what compilers
 * vectorise best across the rows of a block: a local array inside the vectorised loop
 * stops GCC's if-conversion once kr_exp's selects are there.
 *
 * Past MAX_UNROLL_DIM values a vector is not unrolled: the code would grow with the
 * dimension (with its square for a squared distance's gradient), and so would the
 * compile time, to minutes at a few thousand. (Below it, unrolled code is faster on the
 * host: a Gaussian sum at D = 64 ran 8x slower in loops, which stop the vectorisation
 * across rows; past a few hundred values loops are faster, and a selection's kr_eval is
 * faster in loops at every size: 14x at D = 784.) Such a "big" node is either
 *   streamed: an element-wise op whose every user reads it at the index of the user's own
 *     loop over the components; it has no storage, and each such loop declares it,
 *     `real v12 = ...;`, in its body at the loop variable (e->ix), from its arguments at
 *     the same index. `SqDist(X, Y)` of dimension 784 is one loop of three statements.
 *   an array: `real v12[784];`, filled by a loop (or, for Kron and TensorDot, value by
 *     value), for the ops whose users read it at other indices (Extract, MatVecMult...).
 * So the code's size is independent of the dimension, and the common high-dimensional
 * formulas (distances, scalar products, their gradients) need no storage per component.
 * The reductions' pieces loop over F's, G's and the state's components in the same way.
 *
 * The generated functions take a state pointer and a stride (slot s at st[s * sst]) so
 * that the host template can keep the states of a block of rows slot-major, one row per
 * vector lane; other templates pass their own layout.
 */

/* Largest kernel source we write: a formula past this would take minutes to compile. */
#define MAX_SOURCE (32u << 20)
/* A KMin state of more values than this is handled in loops instead of unrolled. */
#define MAX_UNROLL 64
/* A vector of more values than this is computed in loops (see above). */
#define MAX_UNROLL_DIM 64
/* An op of more multiply-adds than this (a quadratic form with a full matrix, a matrix
 * product, a TensorDot) is computed in loops even when its result is small: unrolled,
 * the gradient of a WeightedSqDist with a 64 x 64 matrix took gcc 16 s. */
#define MAX_UNROLL_WORK 256
/* The element index "at the current loop variable" (e->ix) where an int k is taken. */
#define KX (-1)
/* Gram nodes (see find_grams): a squared distance or a scalar product between a row
 * variable and a column variable of more than GRAM_MIN_DIM values, at most MAX_GRAM of
 * them per formula. (On the 2-core AVX-512 EPYC, float32, 10,000 x 10,000: the Gaussian
 * sum ran faster as a gram slot from D = 17 (0.059 s against 0.088 s unrolled; 0.103
 * against 0.442 at D = 64), ArgKMin(10) from D = 24 (0.086 against 0.099).) */
#define GRAM_MIN_DIM 20
#define MAX_GRAM KRED__EMIT_MAX_GRAM
/* The most parts of a side's packed row listed as read (put_read); past them the last
 * part takes in the rest. */
#define MAX_READ_PARTS 8

/* How a node's values are held: by id. Variables and constants are used in place. */
enum { CL_SMALL, CL_STREAM, CL_ARRAY };

struct emit {
	const struct kred_dialect *d;
	const struct kred_reduction *r;
	const struct kred__layout *l;
	struct kred__buf *b;
	int dbl;	  /* float64 */
	int kahan;	  /* compensated sums: every term (the kahan scheme) */
	int kahan_diff;	  /* the kahan scheme in float32: exact differences (vec_sqdist) */
	int comp;	  /* compensation slots, used by the merges (kahan, and block) */
	int nst0;	  /* state slots before the compensations */
	int sum0, nsum;	  /* the slots that hold sums */
	int oom;	  /* an allocation of the emitter failed */
	int fbuf;	  /* %F reads F from kr_fold's buffer, not from the formula */
	int exps;	  /* exp calls written so far */
	unsigned char *cls;  /* by node id: CL_SMALL, CL_STREAM or CL_ARRAY */
	unsigned char *seen; /* by node id: scratch of stream_decls */
	int *stack;	  /* by node id: scratch of stream_decls */
	const char *ix;	  /* the innermost loop's variable: the index KX stands for */
	const char *sym;  /* in the pieces' loops over components: the loop variable, which
			   * the ints of %S %C %O %D %U %F %G are offsets from */
	int bug;	  /* the emitter asked for a value it has not defined: its own error */
	int64_t iters;	  /* loop iterations written in the current function, counted */
	int64_t mult;	  /* iterations of the loops around the code being written */
	int64_t mults[8]; /* outer values of mult, by loop depth */
	int depth;
	int unroll_dim;	  /* MAX_UNROLL_DIM, or no limit (struct kred_dialect .unroll_all) */
	int *gram;	  /* by node id: the gram slot the template computes it in, or -1 */
	int ngram;
	int grams[MAX_GRAM][4]; /* by slot: squared distance (1) or scalar product (0), the
				 * row variable's offset, the column variable's, the dimension */
	int *read;	  /* by argument position: its values that the functions read
			   * themselves (not through a gram slot), where the dialect has grams */
};

/* Counting loop iterations (kred__emit_loops): a loop of n written inside others runs n
 * times each of their iterations. */
static void count_enter(struct emit *e, int n)
{
	e->iters += (int64_t)n * e->mult;
	if (e->depth >= 8) {
		e->bug = 1;
		return;
	}
	e->mults[e->depth++] = e->mult;
	e->mult *= n;
}

static void count_leave(struct emit *e)
{
	if (e->depth > 0)
		e->mult = e->mults[--e->depth];
}

static int big(const struct emit *e, const struct kred__node *n)
{
	return n->dim > e->unroll_dim;
}

static int64_t op_work(const struct kred__node *n);

/* Whether node n is computed in loops: a big node, or an op of much work (its vector
 * arguments are then arrays or variables, which the loops read at computed indices). */
static int looped(const struct emit *e, const struct kred__node *n)
{
	return big(e, n) || (e->unroll_dim != INT_MAX && op_work(n) > MAX_UNROLL_WORK);
}

/* ---- printing */

static void put_const(struct emit *e, double v)
{
	char s[48];
	double t = e->dbl ? v : (double)(float)v;

	if (isnan(t)) {
		kred__buf_puts(e->b, e->d->nan);
		return;
	}
	if (isinf(t)) {
		kred__buf_printf(e->b, t > 0 ? "%s" : "(-%s)", e->d->inf);
		return;
	}
	snprintf(s, sizeof(s), e->dbl ? "%.17g" : "%.9g", t);
	/* "2" would be an int in every dialect: give it a point. */
	if (!strpbrk(s, ".eE"))
		strcat(s, ".0");
	kred__buf_printf(e->b, s[0] == '-' ? "(%s%s)" : "%s%s", s, e->d->suffix[e->dbl]);
}

static void put_int_index(struct emit *e, const char *fmt, int k)
{
	char s[16];

	snprintf(s, sizeof(s), "%d", k);
	kred__buf_printf(e->b, fmt, s);
}

/* Slot or value i through fmt; in a loop over components (e->sym), i is an offset from
 * the loop variable. */
static void put_index(struct emit *e, const char *fmt, int i)
{
	char s[48];

	if (!e->sym) {
		put_int_index(e, fmt, i);
		return;
	}
	snprintf(s, sizeof(s), "(%d + %s)", i, e->sym);
	kred__buf_printf(e->b, fmt, s);
}

/* The printf format of variable n's accesses: its side's (one %s, the index). Counts
 * the variable as read by the generated code. */
static const char *var_fmt(struct emit *e, const struct kred__node *n)
{
	int side = e->l->side[n->ints[0]];

	if (e->read && e->read[n->ints[0]] < n->dim)
		e->read[n->ints[0]] = n->dim;
	return side == KRED__SIDE_ROW ? e->d->row_fmt
	       : side == KRED__SIDE_COL ? e->d->col_fmt : e->d->prm_fmt;
}

/* Element ix (an expression) of node n, which is a variable, a constant, a scalar or an
 * array: the nodes that the emitter reads at indices other than a loop's own. */
static void put_elem_at(struct emit *e, const struct kred__node *n, const char *ix)
{
	char s[64];

	if (n->op == KRED__OP_CST) {
		put_const(e, n->value);
		return;
	}
	if (n->dim == 1 && n->op != KRED__OP_VAR) {
		kred__buf_printf(e->b, "v%d", n->id);
		return;
	}
	if (n->op == KRED__OP_VAR) {
		int off = e->l->offset[n->ints[0]];

		if (n->dim == 1)
			snprintf(s, sizeof(s), "%d", off);
		else
			snprintf(s, sizeof(s), "(%d + %s)", off, ix);
		kred__buf_printf(e->b, var_fmt(e, n), s);
		return;
	}
	if (e->cls[n->id] != CL_ARRAY) {
		e->bug = 1;
		return;
	}
	kred__buf_printf(e->b, "v%d[%s]", n->id, ix);
}

/* Element k of node n (k = KX: at the loop variable); a node of dimension 1 is
 * broadcast. */
static void put_elem(struct emit *e, const struct kred__node *n, int k)
{
	if (n->op == KRED__OP_CST) {
		put_const(e, n->value);
		return;
	}
	if (n->dim == 1)
		k = 0;
	if (k == KX && n->op != KRED__OP_VAR && e->cls[n->id] == CL_STREAM) {
		kred__buf_printf(e->b, "v%d", n->id);
		return;
	}
	if (k == KX) {
		if (!e->ix)
			e->bug = 1;
		else
			put_elem_at(e, n, e->ix);
		return;
	}
	if (n->op == KRED__OP_VAR) {
		put_int_index(e, var_fmt(e, n), e->l->offset[n->ints[0]] + k);
		return;
	}
	if (n->dim == 1)
		kred__buf_printf(e->b, "v%d", n->id);
	else if (e->cls[n->id] == CL_ARRAY)
		kred__buf_printf(e->b, "v%d[%d]", n->id, k);
	else if (e->cls[n->id] == CL_SMALL)
		kred__buf_printf(e->b, "v%d_%d", n->id, k);
	else
		e->bug = 1; /* a streamed node out of its loop */
}

/* The local that node n's element k is stored in (k = KX: at the loop variable). */
static void put_local(struct emit *e, const struct kred__node *n, int k)
{
	int c = e->cls ? e->cls[n->id] : CL_SMALL;

	if (c == CL_ARRAY && k == KX)
		kred__buf_printf(e->b, "v%d[%s]", n->id, e->ix ? e->ix : "?");
	else if (c == CL_ARRAY)
		kred__buf_printf(e->b, "v%d[%d]", n->id, k);
	else if (n->dim == 1 || c == CL_STREAM)
		kred__buf_printf(e->b, "v%d", n->id);
	else
		kred__buf_printf(e->b, "v%d_%d", n->id, k);
}

/* The element c of F (which = 'F') or G in the pieces: in a loop over components, c is
 * an offset from its variable (always 0: the loop covers them all). */
static void put_root(struct emit *e, const struct kred__node *n, int c)
{
	if (e->sym) {
		if (c)
			e->bug = 1;
		put_elem(e, n, KX);
		return;
	}
	put_elem(e, n, c);
}

/*
 * printf for generated code. Besides %s, %d and %%:
 *   %c  a double, as a literal of type real      %m  an enum kred__math, by its name
 *   %e  (node, int k): element k of a node       %n  (node, int k): the local it defines
 *   %x  (node, string i): element i of a node (a variable, constant, scalar or array)
 *   %F  (int c): element c of F                  %G  (int c): element c of G
 *   %S  (int s): state slot s                    %T  (string s): state slot s
 *   %O  (int s): the other state's slot s        %P  (string s): same
 *   %C  (int s): the compensation of sum slot s  %D  (int s): the other state's one
 *   %U  (int c): output value c                  %V  (string c): same
 * k may be KX: at the innermost loop's variable. In a loop over components (e->sym),
 * the ints of %F %G %S %C %O %D %U are offsets from its variable. */
static void emitv(struct emit *e, const char *fmt, va_list ap)
{
	const char *run = fmt, *c;
	const struct kred__node *n;
	int k;

	for (c = fmt;; c++) {
		if (*c && *c != '%')
			continue;
		if (c > run)
			kred__buf_printf(e->b, "%.*s", (int)(c - run), run);
		if (!*c)
			break;
		c++;
		switch (*c) {
		case 's': kred__buf_puts(e->b, va_arg(ap, const char *)); break;
		case 'd': kred__buf_printf(e->b, "%d", va_arg(ap, int)); break;
		case 'c': put_const(e, va_arg(ap, double)); break;
		case 'm':
			k = va_arg(ap, int);
			e->exps += k == KRED__MATH_EXP;
			kred__buf_puts(e->b, e->d->math[k]);
			break;
		case 'e':
			n = va_arg(ap, const struct kred__node *);
			k = va_arg(ap, int);
			put_elem(e, n, k);
			break;
		case 'n':
			n = va_arg(ap, const struct kred__node *);
			k = va_arg(ap, int);
			put_local(e, n, k);
			break;
		case 'x':
			n = va_arg(ap, const struct kred__node *);
			put_elem_at(e, n, va_arg(ap, const char *));
			break;
		case 'F':
			if (e->fbuf)
				put_index(e, e->d->f_fmt, va_arg(ap, int));
			else
				put_root(e, e->r->f, va_arg(ap, int));
			break;
		case 'G': put_root(e, e->r->w, va_arg(ap, int)); break;
		case 'S': put_index(e, e->d->st_fmt, va_arg(ap, int)); break;
		case 'T': kred__buf_printf(e->b, e->d->st_fmt, va_arg(ap, const char *)); break;
		case 'O': put_index(e, e->d->ot_fmt, va_arg(ap, int)); break;
		case 'P': kred__buf_printf(e->b, e->d->ot_fmt, va_arg(ap, const char *)); break;
		case 'C': put_index(e, e->d->st_fmt, e->nst0 + va_arg(ap, int) - e->sum0); break;
		case 'D': put_index(e, e->d->ot_fmt, e->nst0 + va_arg(ap, int) - e->sum0); break;
		case 'U': put_index(e, e->d->out_fmt, va_arg(ap, int)); break;
		case 'V': kred__buf_printf(e->b, e->d->out_fmt, va_arg(ap, const char *)); break;
		default: kred__buf_printf(e->b, "%%%c", *c); break;
		}
		run = c + 1;
	}
}

static void emitf(struct emit *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emitv(e, fmt, ap);
	va_end(ap);
}

/* ---- operations. An element-wise op prints the expression of its element k (arguments
 * of dimension 1 are broadcast by put_elem); the others print their statements. */

#define A0 n->arg[0], k
#define A1 n->arg[1], k
#define A2 n->arg[2], k

typedef void (*ew_fn)(struct emit *e, const struct kred__node *n, int k);
typedef void (*vec_fn)(struct emit *e, const struct kred__node *n);

struct emit_op {
	ew_fn ew;
	vec_fn vec;
	int direct; /* variables and constants: used in place, nothing to emit */
};

static void ew_minus(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "(-%e)", A0);
}

static void ew_inv(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "(%c / %e)", 1.0, A0);
}

static void math1(struct emit *e, const struct kred__node *n, int k, enum kred__math m)
{
	emitf(e, "%m(%e)", (int)m, A0);
}

static void ew_exp(struct emit *e, const struct kred__node *n, int k)
{
	math1(e, n, k, KRED__MATH_EXP);
}

static void ew_log(struct emit *e, const struct kred__node *n, int k)
{
	math1(e, n, k, KRED__MATH_LOG);
}

static void ew_xlogx(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "(%e == %c ? %c : %e * %m(%e))", A0, 0.0, 0.0, A0, KRED__MATH_LOG, A0);
}

static void ew_sin(struct emit *e, const struct kred__node *n, int k)
{
	math1(e, n, k, KRED__MATH_SIN);
}

static void ew_sinxdivx(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "(%e == %c ? %c : %m(%e) / %e)", A0, 0.0, 1.0, KRED__MATH_SIN, A0, A0);
}

static void ew_asin(struct emit *e, const struct kred__node *n, int k)
{
	math1(e, n, k, KRED__MATH_ASIN);
}

static void ew_cos(struct emit *e, const struct kred__node *n, int k)
{
	math1(e, n, k, KRED__MATH_COS);
}

static void ew_acos(struct emit *e, const struct kred__node *n, int k)
{
	math1(e, n, k, KRED__MATH_ACOS);
}

static void ew_atan(struct emit *e, const struct kred__node *n, int k)
{
	math1(e, n, k, KRED__MATH_ATAN);
}

static void ew_atan2(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "%m(%e, %e)", KRED__MATH_ATAN2, A0, A1);
}

static void ew_sqrt(struct emit *e, const struct kred__node *n, int k)
{
	math1(e, n, k, KRED__MATH_SQRT);
}

static void ew_rsqrt(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "(%e == %c ? %c : %c / %m(%e))", A0, 0.0, 0.0, 1.0, KRED__MATH_SQRT, A0);
}

static void ew_square(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "(%e * %e)", A0, A0);
}

/* Small integer powers as products (exact to a few ulp), larger ones through pow. */
static void ew_pow(struct emit *e, const struct kred__node *n, int k)
{
	int p = n->ints[0], a = p < 0 ? -p : p;

	if (a > 8) {
		emitf(e, "%m(%e, %c)", KRED__MATH_POW, A0, (double)p);
		return;
	}
	emitf(e, p < 0 ? "(%c / (" : "((", 1.0);
	if (a == 0)
		emitf(e, "%c", 1.0);
	for (int t = 0; t < a; t++)
		emitf(e, "%s%e", t ? " * " : "", A0);
	emitf(e, "))");
}

/* exp(g log f), as FORMULAS.md defines it. */
static void ew_powf(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "%m(%e * %m(%e))", KRED__MATH_EXP, A1, KRED__MATH_LOG, A0);
}

static void ew_abs(struct emit *e, const struct kred__node *n, int k)
{
	math1(e, n, k, KRED__MATH_FABS);
}

/* NaN gives 0, as (x > 0) - (x < 0) does. */
static void ew_sign(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "(%e > %c ? %c : (%e < %c ? %c : %c))", A0, 0.0, 1.0, A0, 0.0, -1.0, 0.0);
}

static void ew_step(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "(%e < %c ? %c : %c)", A0, 0.0, 0.0, 1.0);
}

static void ew_relu(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "(%e < %c ? %c : %e)", A0, 0.0, 0.0, A0);
}

static void ew_clamp(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "(%e < %e ? %e : (%e > %e ? %e : %e))", A0, A1, A1, A0, A2, A2, A0);
}

static void ew_clampint(struct emit *e, const struct kred__node *n, int k)
{
	double lo = n->ints[0], hi = n->ints[1];

	emitf(e, "(%e < %c ? %c : (%e > %c ? %c : %e))", A0, lo, lo, A0, hi, hi, A0);
}

static void ew_ifelse(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "(%e >= %c ? %e : %e)", A0, 0.0, A1, A2);
}

static void ew_mod(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "(%e - %e * %m((%e - %e) / %e))", A0, A1, KRED__MATH_FLOOR, A0, A2, A1);
}

/* Halves away from zero, as the reference's round(). */
static void ew_round(struct emit *e, const struct kred__node *n, int k)
{
	double scale = pow(10, n->ints[0]);

	if (n->ints[0] == 0)
		math1(e, n, k, KRED__MATH_ROUND);
	else
		emitf(e, "(%m(%e * %c) / %c)", KRED__MATH_ROUND, A0, scale, scale);
}

static void ew_floor(struct emit *e, const struct kred__node *n, int k)
{
	math1(e, n, k, KRED__MATH_FLOOR);
}

static void binop(struct emit *e, const struct kred__node *n, int k, const char *op)
{
	emitf(e, "(%e %s %e)", A0, op, A1);
}

static void ew_add(struct emit *e, const struct kred__node *n, int k)
{
	binop(e, n, k, "+");
}

static void ew_sub(struct emit *e, const struct kred__node *n, int k)
{
	binop(e, n, k, "-");
}

static void ew_mult(struct emit *e, const struct kred__node *n, int k)
{
	binop(e, n, k, "*");
}

static void ew_div(struct emit *e, const struct kred__node *n, int k)
{
	binop(e, n, k, "/");
}

static void compare(struct emit *e, const struct kred__node *n, int k, const char *op)
{
	emitf(e, "(%e %s %e ? %c : %c)", A0, op, A1, 1.0, 0.0);
}

static void ew_eq(struct emit *e, const struct kred__node *n, int k)
{
	compare(e, n, k, "==");
}

static void ew_ne(struct emit *e, const struct kred__node *n, int k)
{
	compare(e, n, k, "!=");
}

static void ew_lt(struct emit *e, const struct kred__node *n, int k)
{
	compare(e, n, k, "<");
}

static void ew_gt(struct emit *e, const struct kred__node *n, int k)
{
	compare(e, n, k, ">");
}

static void ew_le(struct emit *e, const struct kred__node *n, int k)
{
	compare(e, n, k, "<=");
}

static void ew_ge(struct emit *e, const struct kred__node *n, int k)
{
	compare(e, n, k, ">=");
}

static void ew_scal(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "(%e * %e)", n->arg[0], 0, A1);
}

static void ew_zero(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "%c", 0.0);
}

/* ElemT(f, D, M): ints = {D, M}. */
static void ew_elemt(struct emit *e, const struct kred__node *n, int k)
{
	int m = n->ints[1];

	if (k == KX)
		emitf(e, "(%s == %d ? %e : %c)", e->ix, m, n->arg[0], 0, 0.0);
	else if (k == m)
		emitf(e, "%e", n->arg[0], 0);
	else
		emitf(e, "%c", 0.0);
}

/* Extract(f, M, D): ints = {M, D}. */
static void ew_extract(struct emit *e, const struct kred__node *n, int k)
{
	char ix[48];

	if (k != KX) {
		emitf(e, "%e", n->arg[0], n->ints[0] + k);
		return;
	}
	snprintf(ix, sizeof(ix), "(%s + %d)", e->ix, n->ints[0]);
	emitf(e, "%x", n->arg[0], ix);
}

/* ExtractT(f, M, D): ints = {M, D}. Out of f's range the ?: reads nothing. */
static void ew_extractt(struct emit *e, const struct kred__node *n, int k)
{
	int m = n->ints[0], df = n->arg[0]->dim;
	char ix[48];

	if (k != KX) {
		if (k >= m && k < m + df)
			emitf(e, "%e", n->arg[0], k - m);
		else
			emitf(e, "%c", 0.0);
		return;
	}
	snprintf(ix, sizeof(ix), "(%s - %d)", e->ix, m);
	emitf(e, "(%s >= %d && %s < %d ? %x : %c)", e->ix, m, e->ix, m + df, n->arg[0], ix, 0.0);
}

static void ew_concat(struct emit *e, const struct kred__node *n, int k)
{
	int df = n->arg[0]->dim;
	char ix[48];

	if (k != KX) {
		if (k < df)
			emitf(e, "%e", n->arg[0], k);
		else
			emitf(e, "%e", n->arg[1], k - df);
		return;
	}
	snprintf(ix, sizeof(ix), "(%s - %d)", e->ix, df);
	emitf(e, "(%s < %d ? %x : %x)", e->ix, df, n->arg[0], e->ix, n->arg[1], ix);
}

/* `real vN_k = `, or `vN[k] = ` for an array. */
static void def(struct emit *e, const struct kred__node *n, int k)
{
	if (e->cls[n->id] == CL_ARRAY)
		emitf(e, "\t%n = ", n, k);
	else
		emitf(e, "\treal %n = ", n, k);
}

/* ---- loops over a vector's components */

static const char *const loop_vars[] = { "kr_k", "kr_k1", "kr_k2" };

static void emit_ew(struct emit *e, const struct kred__node *n, int k);

/* Declares, at the loop variable, every streamed node that roots[0..nr) read, in id
 * order (each after its arguments). */
static void stream_decls(struct emit *e, const struct kred__node *const *roots, int nr)
{
	const struct kred__graph *g = e->r->g;
	int top = 0, lo = g->n_nodes, hi = -1;

	for (int r = 0; r < nr; r++) {
		const struct kred__node *n = roots[r];

		if (n && e->cls[n->id] == CL_STREAM && !e->seen[n->id]) {
			e->seen[n->id] = 1;
			e->stack[top++] = n->id;
		}
	}
	while (top > 0) {
		const struct kred__node *n = g->nodes[e->stack[--top]];

		lo = n->id < lo ? n->id : lo;
		hi = n->id > hi ? n->id : hi;
		for (int k = 0; k < n->nargs; k++) {
			const struct kred__node *a = n->arg[k];

			if (e->cls[a->id] == CL_STREAM && !e->seen[a->id]) {
				e->seen[a->id] = 1;
				e->stack[top++] = a->id;
			}
		}
	}
	for (int id = lo; id <= hi; id++) {
		if (!e->seen[id])
			continue;
		e->seen[id] = 0;
		emitf(e, "\t\treal v%d = ", id);
		emit_ew(e, g->nodes[id], KX);
		emitf(e, ";\n");
	}
}

/* `for (int V = 0; V < count; V++) {`, V becoming the index that KX stands for, and the
 * streamed nodes that a, b and c read declared at V (any may be NULL). Returns the outer
 * loop's variable, for loop_close. */
static const char *loop_open(struct emit *e, int count, const struct kred__node *a,
			     const struct kred__node *b, const struct kred__node *c)
{
	const struct kred__node *roots[3] = { a, b, c };
	const char *outer = e->ix;
	int depth = 0;

	while (outer && depth < 3 && loop_vars[depth] != outer)
		depth++;
	depth = outer ? depth + 1 : 0;
	if (depth >= 3) {
		e->bug = 1;
		depth = 2;
	}
	e->ix = loop_vars[depth];
	emitf(e, "\tfor (int %s = 0; %s < %d; %s++) {\n", e->ix, e->ix, count, e->ix);
	count_enter(e, count);
	stream_decls(e, roots, 3);
	return outer;
}

static void loop_close(struct emit *e, const char *outer)
{
	emitf(e, "\t}\n");
	count_leave(e);
	e->ix = outer;
}

/* `real NAME = sum over k < d of a_k * b_k` (b NULL: of a_k): unrolled, or in a loop. */
static void dot_local(struct emit *e, const char *name, const struct kred__node *a,
		      const struct kred__node *b, int d)
{
	const char *o;

	if (d <= e->unroll_dim) {
		emitf(e, "\treal %s = ", name);
		for (int k = 0; k < d; k++) {
			emitf(e, "%s%e", k ? " + " : "", a, k);
			if (b)
				emitf(e, " * %e", b, k);
		}
		emitf(e, ";\n");
		return;
	}
	emitf(e, "\treal %s = %c;\n", name, 0.0);
	o = loop_open(e, d, a, b, NULL);
	emitf(e, "\t\t%s += %e", name, a, KX);
	if (b)
		emitf(e, " * %e", b, KX);
	emitf(e, ";\n");
	loop_close(e, o);
}

static void vec_scalprod(struct emit *e, const struct kred__node *n)
{
	char name[24];

	snprintf(name, sizeof(name), "v%d", n->id);
	dot_local(e, name, n->arg[0], n->arg[1], n->arg[0]->dim);
}

static void vec_sum(struct emit *e, const struct kred__node *n)
{
	char name[24];

	snprintf(name, sizeof(name), "v%d", n->id);
	dot_local(e, name, n->arg[0], NULL, n->arg[0]->dim);
}

/* The first extremum (op ">" for the max, "<" for the min): later values replace it only
 * when strictly better, so ties and NaN keep the earlier one, as in the reference. */
static void extremum(struct emit *e, const struct kred__node *n, const char *op, int want_index)
{
	const struct kred__node *a = n->arg[0];
	int id = n->id;
	const char *o;

	if (big(e, a)) {
		/* the first value is taken whatever it is; the index counts in a real */
		emitf(e, "\treal v%d_m = %c;\n", id, 0.0);
		if (want_index)
			emitf(e, "\treal v%d = %c;\n\treal v%d_i = %c;\n", id, 0.0, id, 0.0);
		o = loop_open(e, a->dim, a, NULL, NULL);
		emitf(e, "\t\t%s kr_b = %s == 0 || %e %s v%d_m;\n", e->d->bool_type, e->ix, a, KX,
		      op, id);
		if (want_index)
			emitf(e, "\t\tv%d = kr_b ? v%d_i : v%d;\n\t\tv%d_i += %c;\n", id, id, id, id,
			      1.0);
		emitf(e, "\t\tv%d_m = kr_b ? %e : v%d_m;\n", id, a, KX, id);
		loop_close(e, o);
		if (!want_index)
			emitf(e, "\treal v%d = v%d_m;\n", id, id);
		return;
	}
	emitf(e, "\treal v%d_m = %e;\n", id, a, 0);
	if (want_index)
		emitf(e, "\treal v%d = %c;\n", id, 0.0);
	for (int k = 1; k < a->dim; k++) {
		if (want_index)
			emitf(e, "\tv%d = %e %s v%d_m ? %c : v%d;\n", id, a, k, op, id, (double)k, id);
		emitf(e, "\tv%d_m = %e %s v%d_m ? %e : v%d_m;\n", id, a, k, op, id, a, k, id);
	}
	if (!want_index)
		emitf(e, "\treal v%d = v%d_m;\n", id, id);
}

static void vec_max(struct emit *e, const struct kred__node *n)
{
	extremum(e, n, ">", 0);
}

static void vec_min(struct emit *e, const struct kred__node *n)
{
	extremum(e, n, "<", 0);
}

static void vec_argmax(struct emit *e, const struct kred__node *n)
{
	extremum(e, n, ">", 1);
}

static void vec_argmin(struct emit *e, const struct kred__node *n)
{
	extremum(e, n, "<", 1);
}

static void vec_sqnorm2(struct emit *e, const struct kred__node *n)
{
	char name[24];

	snprintf(name, sizeof(name), "v%d", n->id);
	dot_local(e, name, n->arg[0], n->arg[0], n->arg[0]->dim);
}

static void vec_norm2(struct emit *e, const struct kred__node *n)
{
	char name[24];

	snprintf(name, sizeof(name), "v%d_s", n->id);
	dot_local(e, name, n->arg[0], n->arg[0], n->arg[0]->dim);
	emitf(e, "\treal v%d = %m(v%d_s);\n", n->id, KRED__MATH_SQRT, n->id);
}

/* Rsqrt(SqNorm2(f)) * f, so Normalize(0) = 0 as in KeOps. */
static void vec_normalize(struct emit *e, const struct kred__node *n)
{
	char name[24];
	const char *o;

	snprintf(name, sizeof(name), "v%d_s", n->id);
	dot_local(e, name, n->arg[0], n->arg[0], n->dim);
	emitf(e, "\treal v%d_r = v%d_s == %c ? %c : %c / %m(v%d_s);\n", n->id, n->id, 0.0, 0.0,
	      1.0, KRED__MATH_SQRT, n->id);
	if (big(e, n)) {
		o = loop_open(e, n->dim, n->arg[0], NULL, NULL);
		def(e, n, KX);
		emitf(e, "v%d_r * %e;\n", n->id, n->arg[0], KX);
		loop_close(e, o);
		return;
	}
	for (int k = 0; k < n->dim; k++) {
		def(e, n, k);
		emitf(e, "v%d_r * %e;\n", n->id, A0);
	}
}

/* The differences f - g (g may be NULL) of dimension d, as locals vN_dK. */
static void differences(struct emit *e, const struct kred__node *n, const struct kred__node *f,
			const struct kred__node *g, int d)
{
	for (int k = 0; k < d; k++) {
		emitf(e, "\treal v%d_d%d = %e", n->id, k, f, k);
		if (g)
			emitf(e, " - %e", g, k);
		emitf(e, ";\n");
	}
}

static int max_dim(const struct kred__node *a, const struct kred__node *b)
{
	return a->dim > b->dim ? a->dim : b->dim;
}

/* "precise " where the dialect needs it (struct kred_dialect .exact), else "". */
static const char *exact(const struct emit *e)
{
	return e->d->exact ? e->d->exact : "";
}

/*
 * Under the kahan scheme in float32, the squared distance carries the rounding errors of
 * its differences: x - y = d + l exactly (Knuth's TwoSum, l the part d lost), and
 * |x - y|^2 = sum d^2 + 2 sum d l up to l^2. Those roundings are the one error of a
 * Gaussian sum's terms that does not average out: x_i's low bits are cut the same way
 * against every y_j of a binade, and over 2^20 terms they left the float32 sum 6.57e-8
 * off, where the exact terms' sum rounded is 5.42e-8 off; the squares, their sum, the
 * exp and the products moved nothing (measured in C on tests/test_conformance.c's data).
 * Five operations and a multiply-add more per coordinate. Gram slots (host, D > 20)
 * compute their distances from scalar products, without it.
 */
static void sqdist_error(struct emit *e, const struct kred__node *n, const char *tab,
			 const char *d, const char *l, int k)
{
	const char *x = exact(e);

	emitf(e, "%s%sreal %s_p = %s - %e;\n", tab, x, l, d, n->arg[0], k);
	emitf(e, "%s%sreal %s = (%e - (%s - %s_p)) - (%e + %s_p);\n", tab, x, l, n->arg[0], k, d,
	      l, n->arg[1], k, l);
}

static void vec_sqdist(struct emit *e, const struct kred__node *n)
{
	int d = max_dim(n->arg[0], n->arg[1]);
	const int xd = e->kahan_diff;
	char dn[48], ln[48];
	const char *o;

	if (d > e->unroll_dim) {
		emitf(e, "\treal v%d = %c;\n", n->id, 0.0);
		if (xd)
			emitf(e, "\treal v%d_c = %c;\n", n->id, 0.0);
		o = loop_open(e, d, n->arg[0], n->arg[1], NULL);
		emitf(e, "\t\treal v%d_d = %e - %e;\n\t\tv%d += v%d_d * v%d_d;\n", n->id,
		      n->arg[0], KX, n->arg[1], KX, n->id, n->id, n->id);
		if (xd) {
			snprintf(dn, sizeof(dn), "v%d_d", n->id);
			snprintf(ln, sizeof(ln), "v%d_l", n->id);
			sqdist_error(e, n, "\t\t", dn, ln, KX);
			emitf(e, "\t\tv%d_c += v%d_d * v%d_l;\n", n->id, n->id, n->id);
		}
		loop_close(e, o);
		if (xd)
			emitf(e, "\tv%d += %c * v%d_c;\n", n->id, 2.0, n->id);
		return;
	}
	differences(e, n, n->arg[0], n->arg[1], d);
	for (int k = 0; xd && k < d; k++) {
		snprintf(dn, sizeof(dn), "v%d_d%d", n->id, k);
		snprintf(ln, sizeof(ln), "v%d_l%d", n->id, k);
		sqdist_error(e, n, "\t", dn, ln, k);
	}
	def(e, n, 0);
	for (int k = 0; k < d; k++)
		emitf(e, "%sv%d_d%d * v%d_d%d", k ? " + " : "", n->id, k, n->id, k);
	if (xd)
		emitf(e, " + %c * (", 2.0);
	for (int k = 0; xd && k < d; k++)
		emitf(e, "%sv%d_d%d * v%d_l%d", k ? " + " : "", n->id, k, n->id, k);
	emitf(e, xd ? ");\n" : ";\n");
}

static int full_matrix(const struct kred__node *s, int d)
{
	return (int64_t)s->dim == (int64_t)d * d; /* d * d overflows an int past 46,340 */
}

/* <v, S v> with v = f - g (g may be NULL) of dimension d, in loops: S a scalar or a
 * diagonal in one, a full matrix in two over the differences kept in an array, in the
 * unrolled code's order. */
static void weighted_loop(struct emit *e, const struct kred__node *n, const struct kred__node *s,
			  const struct kred__node *f, const struct kred__node *g, int d)
{
	const char *o, *o2, *a;
	char ix[64];

	if (!full_matrix(s, d)) {
		emitf(e, "\treal v%d = %c;\n", n->id, 0.0);
		o = loop_open(e, d, f, g, s);
		emitf(e, "\t\treal v%d_d = %e", n->id, f, KX);
		if (g)
			emitf(e, " - %e", g, KX);
		emitf(e, ";\n\t\tv%d += %e * v%d_d * v%d_d;\n", n->id, s, KX, n->id, n->id);
		loop_close(e, o);
		return;
	}
	emitf(e, "\treal v%d_d[%d];\n", n->id, d);
	o = loop_open(e, d, f, g, NULL);
	emitf(e, "\t\tv%d_d[%s] = %e", n->id, e->ix, f, KX);
	if (g)
		emitf(e, " - %e", g, KX);
	emitf(e, ";\n");
	loop_close(e, o);
	emitf(e, "\treal v%d = %c;\n", n->id, 0.0);
	o = loop_open(e, d, NULL, NULL, NULL);
	a = e->ix;
	o2 = loop_open(e, d, NULL, NULL, NULL);
	snprintf(ix, sizeof(ix), "(%s * %d + %s)", a, d, e->ix);
	emitf(e, "\t\tv%d += v%d_d[%s] * %x * v%d_d[%s];\n", n->id, n->id, a, s, ix, n->id, e->ix);
	loop_close(e, o2);
	loop_close(e, o);
}

/* <v, S v> with v the differences vN_dK: S a scalar, a diagonal or a full matrix. */
static void weighted(struct emit *e, const struct kred__node *n, const struct kred__node *s,
		     int d)
{
	int first = 1;

	def(e, n, 0);
	for (int a = 0; a < d; a++) {
		if (!full_matrix(s, d)) {
			emitf(e, "%s%e * v%d_d%d * v%d_d%d", a ? " + " : "", s, s->dim == 1 ? 0 : a,
			      n->id, a, n->id, a);
			continue;
		}
		for (int b = 0; b < d; b++) {
			emitf(e, "%sv%d_d%d * %e * v%d_d%d", first ? "" : " + ", n->id, a, s,
			      a * d + b, n->id, b);
			first = 0;
		}
	}
	emitf(e, ";\n");
}

static void vec_wsqnorm(struct emit *e, const struct kred__node *n)
{
	int d = n->arg[1]->dim;

	if (d > e->unroll_dim || looped(e, n)) {
		weighted_loop(e, n, n->arg[0], n->arg[1], NULL, d);
		return;
	}
	differences(e, n, n->arg[1], NULL, d);
	weighted(e, n, n->arg[0], d);
}

static void vec_wsqdist(struct emit *e, const struct kred__node *n)
{
	int d = max_dim(n->arg[1], n->arg[2]);

	if (d > e->unroll_dim || looped(e, n)) {
		weighted_loop(e, n, n->arg[0], n->arg[1], n->arg[2], d);
		return;
	}
	differences(e, n, n->arg[1], n->arg[2], d);
	weighted(e, n, n->arg[0], d);
}

static void vec_elem(struct emit *e, const struct kred__node *n)
{
	def(e, n, 0);
	emitf(e, "%e;\n", n->arg[0], n->ints[0]);
}

static void vec_onehot(struct emit *e, const struct kred__node *n)
{
	const char *o;

	emitf(e, "\treal v%d_r = %m(%e);\n", n->id, KRED__MATH_ROUND, n->arg[0], 0);
	if (big(e, n)) {
		/* the index counts in a real, compared with the rounded value */
		emitf(e, "\treal v%d_c = %c;\n", n->id, 0.0);
		o = loop_open(e, n->dim, NULL, NULL, NULL);
		def(e, n, KX);
		emitf(e, "v%d_r == v%d_c ? %c : %c;\n\t\tv%d_c += %c;\n", n->id, n->id, 1.0, 0.0,
		      n->id, 1.0);
		loop_close(e, o);
		return;
	}
	for (int k = 0; k < n->dim; k++) {
		def(e, n, k);
		emitf(e, "v%d_r == %c ? %c : %c;\n", n->id, (double)k, 1.0, 0.0);
	}
}

/* out_o = sum over i < inner of mat[o, i] * vec[i], o < outer; mat's value (o, i) at
 * o * inner + i (MatVecMult), else at i * outer + o (VecMatMult). The products are
 * printed matrix first (exact either way). Unrolled where both sizes are small; else
 * each sum is a loop, and a large output an array filled by a loop. */
static void matprod(struct emit *e, const struct kred__node *n, const struct kred__node *mat,
		    const struct kred__node *vec, int by_row)
{
	int outer = n->dim, inner = vec->dim;
	const char *o, *o2;
	char ix[64], ox[24];

	if (!looped(e, n) && inner <= e->unroll_dim) {
		for (int r = 0; r < outer; r++) {
			def(e, n, r);
			for (int c = 0; c < inner; c++)
				emitf(e, "%s%e * %e", c ? " + " : "", mat,
				      by_row ? r * inner + c : c * outer + r, vec, c);
			emitf(e, ";\n");
		}
		return;
	}
	if (e->cls[n->id] != CL_ARRAY) {
		for (int r = 0; r < outer; r++) {
			emitf(e, "\treal v%d_s%d = %c;\n", n->id, r, 0.0);
			o = loop_open(e, inner, NULL, NULL, NULL);
			if (by_row)
				snprintf(ix, sizeof(ix), "(%d + %s)", r * inner, e->ix);
			else
				snprintf(ix, sizeof(ix), "(%s * %d + %d)", e->ix, outer, r);
			emitf(e, "\t\tv%d_s%d += %x * %x;\n", n->id, r, mat, ix, vec, e->ix);
			loop_close(e, o);
			def(e, n, r);
			emitf(e, "v%d_s%d;\n", n->id, r);
		}
		return;
	}
	o = loop_open(e, outer, NULL, NULL, NULL);
	snprintf(ox, sizeof(ox), "%s", e->ix);
	emitf(e, "\t\treal v%d_s = %c;\n", n->id, 0.0);
	o2 = loop_open(e, inner, NULL, NULL, NULL);
	if (by_row)
		snprintf(ix, sizeof(ix), "(%s * %d + %s)", ox, inner, e->ix);
	else
		snprintf(ix, sizeof(ix), "(%s * %d + %s)", e->ix, outer, ox);
	emitf(e, "\t\tv%d_s += %x * %x;\n", n->id, mat, ix, vec, e->ix);
	loop_close(e, o2);
	def(e, n, KX);
	emitf(e, "v%d_s;\n", n->id);
	loop_close(e, o);
}

/* f is a (d(f) / d(g)) x d(g) matrix, row-major. */
static void vec_matvec(struct emit *e, const struct kred__node *n)
{
	matprod(e, n, n->arg[0], n->arg[1], 1);
}

/* g is a d(f) x (d(g) / d(f)) matrix, row-major: the result is f^T g. */
static void vec_vecmat(struct emit *e, const struct kred__node *n)
{
	matprod(e, n, n->arg[1], n->arg[0], 0);
}

static void vec_tensorprod(struct emit *e, const struct kred__node *n)
{
	int df = n->arg[0]->dim, dg = n->arg[1]->dim;
	const char *o, *o2;
	char fx[24];

	if (big(e, n)) {
		o = loop_open(e, df, NULL, NULL, NULL);
		snprintf(fx, sizeof(fx), "%s", e->ix);
		o2 = loop_open(e, dg, NULL, NULL, NULL);
		emitf(e, "\t\tv%d[%s * %d + %s] = %x * %x;\n", n->id, fx, dg, e->ix, n->arg[0],
		      fx, n->arg[1], e->ix);
		loop_close(e, o2);
		loop_close(e, o);
		return;
	}
	for (int x = 0; x < df; x++) {
		for (int y = 0; y < dg; y++) {
			def(e, n, x * dg + y);
			emitf(e, "%e * %e;\n", n->arg[0], x, n->arg[1], y);
		}
	}
}

/* An integer list argument inside node->ints, stored as (length, values...). */
struct list {
	int n;
	const int *v;
};

static void read_lists(const struct kred__node *n, struct list *l, int count)
{
	int at = 0;

	for (int k = 0; k < count; k++) {
		l[k].n = n->ints[at];
		l[k].v = n->ints + at + 1;
		at += 1 + l[k].n;
	}
}

/* The multi-index of flat position p in a row-major array of shape s. */
static void unravel(long p, struct list s, int *idx)
{
	for (int k = s.n - 1; k >= 0; k--) {
		idx[k] = (int)(p % s.v[k]);
		p /= s.v[k];
	}
}

static int in_list(struct list l, int ax)
{
	for (int k = 0; k < l.n; k++)
		if (l.v[k] == ax)
			return 1;
	return 0;
}

/* Kron(f, g, DIMF, DIMG), as np.kron: each output value is one product. */
static void vec_kron(struct emit *e, const struct kred__node *n)
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
			def(e, n, (int)out);
			emitf(e, "%e * %e;\n", n->arg[0], (int)p, n->arg[1], (int)q);
		}
	}
}

/* The size of TensorDot n's contraction: the product of f's contracted axes. */
static int64_t contracted(const struct kred__node *n)
{
	struct list l[4];
	int64_t c = 1;

	read_lists(n, l, 4);
	for (int k = 0; k < l[2].n; k++)
		c *= l[0].v[l[2].v[k]];
	return c;
}

/* Multiply-adds of node n (see MAX_UNROLL_WORK): its values, or for the ops that sum
 * products into each of them, their count. */
static int64_t op_work(const struct kred__node *n)
{
	int d;

	switch (n->op) {
	case KRED__OP_WEIGHTEDSQNORM:
		d = n->arg[1]->dim;
		return full_matrix(n->arg[0], d) ? (int64_t)d * d : d;
	case KRED__OP_WEIGHTEDSQDIST:
		d = max_dim(n->arg[1], n->arg[2]);
		return full_matrix(n->arg[0], d) ? (int64_t)d * d : d;
	case KRED__OP_MATVECMULT:
		return (int64_t)n->dim * n->arg[1]->dim;
	case KRED__OP_VECMATMULT:
		return (int64_t)n->dim * n->arg[0]->dim;
	case KRED__OP_TENSORDOT:
		return (int64_t)n->dim * contracted(n);
	default:
		return n->dim;
	}
}

/* Prints to s the index in f (which 0) or g (1) of TensorDot n's product at output value
 * `out` and contraction value `c` (C expressions): each axis's digit, (v / R) % size, times
 * its stride. The output's axes are f's free ones then g's, the contraction's CONTF's. */
static void tensordot_index(const struct kred__node *n, int which, const char *out,
			    const char *c, char *s, size_t len)
{
	struct list l[4];
	int64_t r_out = 1, r_c = 1, stride[KRED__MAX_INTS];
	size_t at;

	read_lists(n, l, 4);
	snprintf(s, len, "(0");
	at = strlen(s);
	for (int t = l[which].n - 1, st = 1; t >= 0; t--) {
		stride[t] = st;
		st *= l[which].v[t];
	}
	/* out's digits from the last axis (g's last free one) backwards */
	for (int w = 1; w >= 0; w--) {
		for (int t = l[w].n - 1; t >= 0; t--) {
			if (in_list(l[2 + w], t))
				continue;
			if (w == which && at < len)
				at += (size_t)snprintf(s + at, len - at, " + (%s / %lld %% %d) * %lld", out,
						       (long long)r_out, l[w].v[t], (long long)stride[t]);
			r_out *= l[w].v[t];
		}
	}
	for (int k = l[2].n - 1; k >= 0; k--) {
		int t = l[2 + which].v[k];

		if (at < len)
			at += (size_t)snprintf(s + at, len - at, " + (%s / %lld %% %d) * %lld", c,
					       (long long)r_c, l[which].v[t], (long long)stride[t]);
		r_c *= l[which].v[t];
	}
	if (at < len)
		snprintf(s + at, len - at, ")");
}

/* TensorDot in loops: over the contraction for each output value (in a loop over them
 * when the output is an array, unrolled when it is a scalar). f and g are arrays or
 * variables here (classify). */
static void tensordot_loop(struct emit *e, const struct kred__node *n)
{
	int64_t c = contracted(n);
	int arr = e->cls[n->id] == CL_ARRAY, outs = arr ? 1 : n->dim;
	const char *o = NULL, *o2;
	char ix_f[512], ix_g[512], out[24], cv[24];

	if (arr) {
		o = loop_open(e, n->dim, NULL, NULL, NULL);
		snprintf(out, sizeof(out), "%s", e->ix);
	}
	for (int r = 0; r < outs; r++) {
		char acc[32];

		if (!arr)
			snprintf(out, sizeof(out), "%d", r);
		snprintf(acc, sizeof(acc), arr ? "v%d_s" : "v%d_s%d", n->id, r);
		emitf(e, "\t\treal %s = %c;\n", acc, 0.0);
		o2 = loop_open(e, (int)c, NULL, NULL, NULL);
		snprintf(cv, sizeof(cv), "%s", e->ix);
		tensordot_index(n, 0, out, cv, ix_f, sizeof(ix_f));
		tensordot_index(n, 1, out, cv, ix_g, sizeof(ix_g));
		emitf(e, "\t\t%s += %x * %x;\n", acc, n->arg[0], ix_f, n->arg[1], ix_g);
		loop_close(e, o2);
		def(e, n, arr ? KX : r);
		emitf(e, "%s;\n", acc);
	}
	if (arr)
		loop_close(e, o);
}

/* TensorDot(f, g, DIMF, DIMG, CONTF, CONTG), as np.tensordot(f, g, (CONTF, CONTG)): the
 * first product into an output value declares it, the next ones add to it. */
static void vec_tensordot(struct emit *e, const struct kred__node *n)
{
	struct list l[4];
	int ia[KRED__MAX_INTS], ib[KRED__MAX_INTS];
	unsigned char *seen;

	if (looped(e, n)) {
		tensordot_loop(e, n);
		return;
	}
	seen = kred__calloc((size_t)n->dim, 1);
	if (!seen) {
		e->oom = 1;
		return;
	}
	read_lists(n, l, 4);
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
			if (seen[out])
				emitf(e, "\t%n += ", n, (int)out);
			else
				def(e, n, (int)out);
			seen[out] = 1;
			emitf(e, "%e * %e;\n", n->arg[0], (int)p, n->arg[1], (int)q);
		}
	}
	for (int k = 0; k < n->dim; k++) {
		if (!seen[k]) {
			def(e, n, k);
			emitf(e, "%c;\n", 0.0);
		}
	}
	kred__free(seen);
}

#define EW(fn) { .ew = fn }
#define VEC(fn) { .vec = fn }

/* ORDER KRED__OPS. The derivative ops have no rule: diff.c rewrites them away. */
static const struct emit_op emit_ops[] = {
	[KRED__OP_VAR] = { .direct = 1 },
	[KRED__OP_CST] = { .direct = 1 },
	[KRED__OP_MINUS] = EW(ew_minus),
	[KRED__OP_INV] = EW(ew_inv),
	[KRED__OP_EXP] = EW(ew_exp),
	[KRED__OP_LOG] = EW(ew_log),
	[KRED__OP_XLOGX] = EW(ew_xlogx),
	[KRED__OP_SIN] = EW(ew_sin),
	[KRED__OP_SINXDIVX] = EW(ew_sinxdivx),
	[KRED__OP_ASIN] = EW(ew_asin),
	[KRED__OP_COS] = EW(ew_cos),
	[KRED__OP_ACOS] = EW(ew_acos),
	[KRED__OP_ATAN] = EW(ew_atan),
	[KRED__OP_ATAN2] = EW(ew_atan2),
	[KRED__OP_SQRT] = EW(ew_sqrt),
	[KRED__OP_RSQRT] = EW(ew_rsqrt),
	[KRED__OP_SQUARE] = EW(ew_square),
	[KRED__OP_POW] = EW(ew_pow),
	[KRED__OP_POWF] = EW(ew_powf),
	[KRED__OP_ABS] = EW(ew_abs),
	[KRED__OP_SIGN] = EW(ew_sign),
	[KRED__OP_STEP] = EW(ew_step),
	[KRED__OP_RELU] = EW(ew_relu),
	[KRED__OP_CLAMP] = EW(ew_clamp),
	[KRED__OP_CLAMPINT] = EW(ew_clampint),
	[KRED__OP_IFELSE] = EW(ew_ifelse),
	[KRED__OP_MOD] = EW(ew_mod),
	[KRED__OP_ROUND] = EW(ew_round),
	[KRED__OP_FLOOR] = EW(ew_floor),
	[KRED__OP_ADD] = EW(ew_add),
	[KRED__OP_SUBTRACT] = EW(ew_sub),
	[KRED__OP_MULT] = EW(ew_mult),
	[KRED__OP_DIVIDE] = EW(ew_div),
	[KRED__OP_SCAL] = EW(ew_scal),
	[KRED__OP_SCALPROD] = VEC(vec_scalprod),
	[KRED__OP_EQUAL] = EW(ew_eq),
	[KRED__OP_NOTEQUAL] = EW(ew_ne),
	[KRED__OP_LESS] = EW(ew_lt),
	[KRED__OP_GREATER] = EW(ew_gt),
	[KRED__OP_LESSEQUAL] = EW(ew_le),
	[KRED__OP_GREATEREQUAL] = EW(ew_ge),
	[KRED__OP_SUM] = VEC(vec_sum),
	[KRED__OP_MAX] = VEC(vec_max),
	[KRED__OP_MIN] = VEC(vec_min),
	[KRED__OP_ARGMAX] = VEC(vec_argmax),
	[KRED__OP_ARGMIN] = VEC(vec_argmin),
	[KRED__OP_SQNORM2] = VEC(vec_sqnorm2),
	[KRED__OP_NORM2] = VEC(vec_norm2),
	[KRED__OP_NORMALIZE] = VEC(vec_normalize),
	[KRED__OP_SQDIST] = VEC(vec_sqdist),
	[KRED__OP_WEIGHTEDSQNORM] = VEC(vec_wsqnorm),
	[KRED__OP_WEIGHTEDSQDIST] = VEC(vec_wsqdist),
	[KRED__OP_ZERO] = EW(ew_zero),
	[KRED__OP_ELEM] = VEC(vec_elem),
	[KRED__OP_ELEMT] = EW(ew_elemt),
	[KRED__OP_EXTRACT] = EW(ew_extract),
	[KRED__OP_EXTRACTT] = EW(ew_extractt),
	[KRED__OP_CONCAT] = EW(ew_concat),
	[KRED__OP_ONEHOT] = VEC(vec_onehot),
	[KRED__OP_MATVECMULT] = VEC(vec_matvec),
	[KRED__OP_VECMATMULT] = VEC(vec_vecmat),
	[KRED__OP_TENSORPROD] = VEC(vec_tensorprod),
	[KRED__OP_KRON] = VEC(vec_kron),
	[KRED__OP_TENSORDOT] = VEC(vec_tensordot),
	[KRED__OP_GRAD] = { 0 },
	[KRED__OP_DIFF] = { 0 },
	[KRED__OP_GRADFROMPOS] = { 0 },
	[KRED__OP_GRADMATRIX] = { 0 },
	[KRED__OP_DIVERGENCE] = { 0 },
	[KRED__OP_LAPLACIAN] = { 0 },
};
_Static_assert(sizeof(emit_ops) / sizeof(emit_ops[0]) == KRED__OP_COUNT,
	       "emit_ops must have one row per op of KRED__OPS");

static void emit_ew(struct emit *e, const struct kred__node *n, int k)
{
	emit_ops[n->op].ew(e, n, k);
}

/* Whether node p reads its argument i only at the index of its own loop over that
 * argument's components (so the argument may be streamed). The element-wise ops that
 * read at other indices (Extract and co) do not, nor do the matrix products. */
static int reads_in_step(const struct kred__node *p, int i)
{
	int d;

	switch (p->op) {
	case KRED__OP_EXTRACT:
	case KRED__OP_EXTRACTT:
	case KRED__OP_CONCAT:
	case KRED__OP_ELEMT:
		return 0;
	case KRED__OP_SUM:
	case KRED__OP_SQNORM2:
	case KRED__OP_NORM2:
	case KRED__OP_NORMALIZE:
	case KRED__OP_SCALPROD:
	case KRED__OP_SQDIST:
	case KRED__OP_MAX:
	case KRED__OP_MIN:
	case KRED__OP_ARGMAX:
	case KRED__OP_ARGMIN:
		return 1;
	case KRED__OP_WEIGHTEDSQNORM:
		d = p->arg[1]->dim;
		return i > 0 || !full_matrix(p->arg[0], d);
	case KRED__OP_WEIGHTEDSQDIST:
		d = max_dim(p->arg[1], p->arg[2]);
		return i > 0 || !full_matrix(p->arg[0], d);
	default:
		return emit_ops[p->op].ew != NULL;
	}
}

/* Each marked node's class (see the top of this file). A big element-wise node is
 * streamed unless a user reads it at another index; then it is an array, as is every
 * other big node, and every vector that a user with loops reads at computed indices. F
 * and G are read by the pieces' loops, in step. */
static int classify(struct emit *e, const unsigned char *mark)
{
	const struct kred__graph *g = e->r->g;
	size_t n = (size_t)g->n_nodes + 1;

	if (!e->cls) {
		e->cls = kred__calloc(n, 1);
		e->seen = kred__calloc(n, 1);
		e->stack = kred__calloc(n, sizeof(*e->stack));
		if (!e->cls || !e->seen || !e->stack)
			return -1;
	}
	for (int id = 0; id < g->n_nodes; id++) {
		const struct kred__node *v = g->nodes[id];

		e->cls[id] = CL_SMALL;
		if (mark[id] && !emit_ops[v->op].direct && big(e, v))
			e->cls[id] = emit_ops[v->op].ew ? CL_STREAM : CL_ARRAY;
		else if (mark[id] && !emit_ops[v->op].direct && v->dim > 1 && looped(e, v))
			e->cls[id] = CL_ARRAY; /* written by its loop over its values */
	}
	for (int id = 0; id < g->n_nodes; id++) {
		const struct kred__node *p = g->nodes[id];

		if (!mark[id] || emit_ops[p->op].direct)
			continue;
		for (int i = 0; i < p->nargs; i++) {
			const struct kred__node *a = p->arg[i];

			if (emit_ops[a->op].direct || a->dim == 1)
				continue;
			if (!big(e, p) && looped(e, p)) {
				e->cls[a->id] = CL_ARRAY;
				continue;
			}
			if (reads_in_step(p, i))
				continue;
			if (big(e, p) || big(e, a))
				e->cls[a->id] = CL_ARRAY;
		}
	}
	return 0;
}

/*
 * Gram nodes, for dialects whose template computes them (struct kred_dialect .gram_fmt):
 * SqDist(a, b) and (a|b) where one of a, b is a row variable and the other a column
 * variable, both of more than GRAM_MIN_DIM values. The template computes a tile of them
 * at once, blocks of rows against blocks of columns, as a matrix product does (the
 * dimension innermost, several rows and columns per pass, each value loaded once for
 * several products); the formula reads each as one value of gram slot g. A squared
 * distance is |x|^2 + |y|^2 - 2 x.y there, recomputed as the sum of squared differences
 * where that cancels (kernels/host.c). Same slot for the same (kind, offsets, dimension).
 */
/* Whether node n is a gram node for dialect d under layout l, and its slot's key: kind
 * (squared distance 1, scalar product 0), row offset, column offset, dimension. */
static int gram_key(const struct kred_dialect *d, const struct kred__layout *l,
		    const struct kred__node *n, int key[4])
{
	const struct kred__node *a, *b;
	int side_a, side_b;

	if (n->op != KRED__OP_SQDIST && n->op != KRED__OP_SCALPROD)
		return 0;
	a = n->arg[0];
	b = n->arg[1];
	if (a->op != KRED__OP_VAR || b->op != KRED__OP_VAR || a->dim != b->dim ||
	    a->dim <= (d->gram_min_dim ? d->gram_min_dim : GRAM_MIN_DIM) ||
	    a->ints[0] >= l->n_args || b->ints[0] >= l->n_args)
		return 0;
	side_a = l->side[a->ints[0]];
	side_b = l->side[b->ints[0]];
	if (side_a == KRED__SIDE_COL && side_b == KRED__SIDE_ROW) {
		const struct kred__node *t = a;

		a = b;
		b = t;
	} else if (side_a != KRED__SIDE_ROW || side_b != KRED__SIDE_COL) {
		return 0;
	}
	key[0] = n->op == KRED__OP_SQDIST;
	key[1] = l->offset[a->ints[0]];
	key[2] = l->offset[b->ints[0]];
	key[3] = a->dim;
	return 1;
}

static int find_grams(struct emit *e, const unsigned char *mark)
{
	const struct kred__graph *g = e->r->g;

	if (!e->d->gram_fmt || !e->l)
		return 0;
	if (!e->gram) {
		e->gram = kred__malloc(((size_t)g->n_nodes + 1) * sizeof(*e->gram));
		if (!e->gram)
			return -1;
	}
	e->ngram = 0;
	for (int id = 0; id < g->n_nodes; id++) {
		int key[4], slot;

		e->gram[id] = -1;
		if (!mark[id] || !gram_key(e->d, e->l, g->nodes[id], key))
			continue;
		for (slot = 0; slot < e->ngram; slot++)
			if (!memcmp(e->grams[slot], key, sizeof(key)))
				break;
		if (slot == MAX_GRAM)
			continue;
		if (slot == e->ngram)
			memcpy(e->grams[e->ngram++], key, sizeof(key));
		e->gram[id] = slot;
	}
	return 0;
}

int kred__emit_gram_slots(const struct kred_dialect *d, const struct kred_reduction *r,
			  const struct kred__layout *l, int slots[][4])
{
	int n = 0;

	if (!d->gram_fmt)
		return 0;
	for (int id = 0; id < r->g->n_nodes; id++) {
		int key[4], k;

		if (!gram_key(d, l, r->g->nodes[id], key))
			continue;
		for (k = 0; k < n; k++)
			if (!memcmp(slots[k], key, sizeof(key)))
				break;
		if (k == n && n < MAX_GRAM)
			memcpy(slots[n++], key, sizeof(key));
	}
	return n;
}

int kred__emit_gram_node(const struct kred_dialect *d, const struct kred__layout *l,
			 const struct kred__node *n)
{
	int key[4];

	return d->gram_fmt && gram_key(d, l, n, key);
}

/* Every node under F and G, once, in id order. */
static kred_status emit_formula(struct emit *e, struct kred__error *err)
{
	const struct kred__graph *g = e->r->g;
	unsigned char *mark = kred__calloc((size_t)g->n_nodes + 1, 1);

	if (!mark)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	mark[e->r->f->id] = 1;
	if (e->r->w)
		mark[e->r->w->id] = 1;
	for (int id = g->n_nodes - 1; id >= 0; id--)
		if (mark[id])
			for (int k = 0; k < g->nodes[id]->nargs; k++)
				mark[g->nodes[id]->arg[k]->id] = 1;
	for (int id = 0; id < g->n_nodes; id++) {
		const struct kred__node *n = g->nodes[id];
		const struct emit_op *op = (unsigned)n->op < KRED__OP_COUNT ? &emit_ops[n->op] : NULL;

		if (mark[id] && (!op || (!op->ew && !op->vec && !op->direct))) {
			kred__free(mark);
			return kred__fail(err, KRED_EUNSUPPORTED, -1,
					  "the emitter met %s, which should have been rewritten "
					  "away", op ? kred__ops[n->op].name : "an unknown op");
		}
	}
	if (classify(e, mark) || find_grams(e, mark)) {
		kred__free(mark);
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	}
	for (int id = 0; id < g->n_nodes; id++) {
		const struct kred__node *n = g->nodes[id];
		const struct emit_op *op = &emit_ops[n->op];
		int c = e->cls[id];

		if (!mark[id] || op->direct || c == CL_STREAM)
			continue; /* a streamed node is declared in its users' loops */
		if (e->gram && e->gram[id] >= 0) {
			emitf(e, "\treal v%d = ", id);
			put_int_index(e, e->d->gram_fmt, e->gram[id]);
			emitf(e, ";\n");
			continue;
		}
		if (c == CL_ARRAY)
			emitf(e, "\treal v%d[%d];\n", id, n->dim);
		if (op->ew && c == CL_ARRAY && big(e, n)) {
			const char *o = loop_open(e, n->dim, n->nargs > 0 ? n->arg[0] : NULL,
						  n->nargs > 1 ? n->arg[1] : NULL,
						  n->nargs > 2 ? n->arg[2] : NULL);

			def(e, n, KX);
			op->ew(e, n, KX);
			emitf(e, ";\n");
			loop_close(e, o);
		} else if (op->ew) {
			for (int k = 0; k < n->dim; k++) {
				def(e, n, k);
				op->ew(e, n, k);
				emitf(e, ";\n");
			}
		} else {
			op->vec(e, n);
		}
	}
	kred__free(mark);
	return e->oom ? kred__fail(err, KRED_ENOMEM, -1, "out of memory") : KRED_OK;
}

/* ---- the reductions' pieces. State layout, for F of dimension D, G of dimension W:
 *   Sum                   D sums
 *   LogSumExp             max m, sum s of exp(f - m)
 *   LogSumExpWeight       m, W sums of exp(f - m) g
 *   SumSoftMaxWeight      m, s, W sums of exp(f - m) g
 *   Max_SumShiftExp       m, s          Max_SumShiftExpWeight   m, W sums
 *   Min, Max              D values      ArgMin ... Max_ArgMax   D values, D indices
 *   KMin and co           K x D values rank-major, then K x D indices
 * then, for the kahan and block schemes, one compensation per sum slot. Indices are reals.
 * The kahan scheme compensates every term; the block scheme sums a tile's terms plainly
 * in a fresh state and compensates the merge of each tile's sums into the total (and
 * every other merge), which keeps the error of a long sum near that of one tile. */

/* The end of a compensated addition, the sum t = s + y in kr_t: slot s's compensation
 * becomes what the rounded sum has over the exact one, and s becomes t. An infinite sum
 * resets the compensation, else inf - inf would turn the sum into NaN. */
static void comp_store(struct emit *e, const char *tab, int s)
{
	emitf(e, "%s%sreal kr_c = (kr_t - %S) - kr_y;\n", tab, exact(e), s);
	emitf(e, "%s%sreal kr_z = kr_t - kr_t;\n", tab, exact(e));
	emitf(e, "%s%C = kr_z == %c ? kr_c : %c;\n%s%S = kr_t;\n", tab, s, 0.0, 0.0, tab, s);
}

/* Adds the value printed by fmt to sum slot s, compensated when comp. */
static void acc_add(struct emit *e, int comp, int s, const char *fmt, ...)
{
	va_list ap;

	if (!comp) {
		emitf(e, "\t%S += ", s);
		va_start(ap, fmt);
		emitv(e, fmt, ap);
		va_end(ap);
		emitf(e, ";\n");
		return;
	}
	emitf(e, "\t{\n\t\t%sreal kr_y = ", exact(e));
	va_start(ap, fmt);
	emitv(e, fmt, ap);
	va_end(ap);
	emitf(e, " - %C;\n\t\t%sreal kr_t = %S + kr_y;\n", s, exact(e), s);
	comp_store(e, "\t\t", s);
	emitf(e, "\t}\n");
}

/* The value of sum slot s: with a compensation, the sum less it. */
static void sum_value(struct emit *e, int s)
{
	if (e->comp)
		emitf(e, "(%S - %C)", s, s);
	else
		emitf(e, "%S", s);
}

/*
 * Past MAX_UNROLL_DIM components, a piece loops over them: comp_open writes
 * `for (int kr_n = 0; kr_n < n; kr_n++) {` and makes the ints of %S %C %O %D %U %F %G
 * offsets from kr_n (e->sym), declaring the streamed nodes of root (F or G, or NULL)
 * there. It returns how many components the piece then writes: n unrolled, or 1 (the
 * first, the loop doing the rest).
 */
static int comp_open(struct emit *e, int n, const struct kred__node *root)
{
	if (n <= e->unroll_dim)
		return n;
	emitf(e, "\tfor (int kr_n = 0; kr_n < %d; kr_n++) {\n", n);
	count_enter(e, n);
	e->sym = e->ix = "kr_n";
	if (root && !e->fbuf)
		stream_decls(e, &root, 1);
	return 1;
}

static void comp_close(struct emit *e)
{
	if (!e->sym)
		return;
	e->sym = e->ix = NULL;
	count_leave(e);
	emitf(e, "\t}\n");
}

static void init_sums(struct emit *e)
{
	int n = comp_open(e, e->nsum, NULL);

	for (int s = e->sum0; s < e->sum0 + n; s++) {
		emitf(e, "\t%S = %c;\n", s, 0.0);
		if (e->comp)
			emitf(e, "\t%C = %c;\n", s, 0.0);
	}
	comp_close(e);
}

static void sum_init(struct emit *e)
{
	init_sums(e);
}

static void sum_update(struct emit *e)
{
	int n = comp_open(e, e->r->f->dim, e->r->f);

	for (int c = 0; c < n; c++)
		acc_add(e, e->kahan, c, "%F", c);
	comp_close(e);
}

/* Merges the other state's compensated sum slot s into this one's: the sums' rounding
 * error found exactly (Knuth's TwoSum: a + b = t + kr_e, whichever is larger), the
 * compensations added to it. Adding the other's value (sum less compensation) as a
 * compensated term rounded that value first, up to half an ulp of the partial sum lost
 * at each merge, so that the result depended on how the columns were split: the float32
 * Gaussian sum of 2^20 terms came 5.42e-8 to 7.58e-8 off with 16 or 32 column ranges on
 * host, POCL and lavapipe, and now 6.57e-8 on each, the float32 terms' exact sum
 * rounded (tests/test_conformance.c). */
static void comp_merge(struct emit *e, int s)
{
	const char *x = exact(e);

	emitf(e, "\t{\n\t\t%sreal kr_a = %S;\n\t\t%sreal kr_b = %O;\n", x, s, x, s);
	emitf(e, "\t\t%sreal kr_t = kr_a + kr_b;\n\t\t%sreal kr_p = kr_t - kr_a;\n", x, x);
	emitf(e, "\t\t%sreal kr_e = (kr_a - (kr_t - kr_p)) + (kr_b - kr_p);\n", x);
	emitf(e, "\t\t%sreal kr_c = (%C + %D) - kr_e;\n", x, s, s);
	emitf(e, "\t\t%sreal kr_z = kr_t - kr_t;\n", x);
	emitf(e, "\t\t%C = kr_z == %c ? kr_c : %c;\n\t\t%S = kr_t;\n\t}\n", s, 0.0, 0.0, s);
}

static void sum_merge(struct emit *e)
{
	int n = comp_open(e, e->r->f->dim, NULL);

	for (int c = 0; c < n; c++) {
		if (e->comp)
			comp_merge(e, c);
		else
			acc_add(e, 0, c, "%O", c);
	}
	comp_close(e);
}

static void sum_finalize(struct emit *e)
{
	int n = comp_open(e, e->r->f->dim, NULL);

	for (int c = 0; c < n; c++) {
		emitf(e, "\t%U = ", c);
		sum_value(e, c);
		emitf(e, ";\n");
	}
	comp_close(e);
}

/* The LogSumExp family. A term (or another state) with maximum kr_v meets the state
 * (m, sums): the smaller side is rescaled by exp(-|kr_v - m|), one exp per term. A term
 * of -inf adds nothing (and -inf - -inf must not make NaN); NaN makes the state NaN. */
static void lse_begin(struct emit *e)
{
	emitf(e, "\t{\n\t\treal kr_e = kr_v == -%s ? %c : %m(-%m(kr_v - %S));\n", e->d->inf, 0.0,
	      KRED__MATH_EXP, KRED__MATH_FABS, 0);
	emitf(e, "\t\treal kr_sc = kr_v > %S ? kr_e : %c;\n", 0, 1.0);
	emitf(e, "\t\treal kr_ad = kr_v > %S ? %c : kr_e;\n", 0, 1.0);
}

/* sum slot s = s * kr_sc + (what fmt prints) * kr_ad, compensated when comp. An
 * uncompensated fold leaves the slot's compensation alone: there is one only under the
 * block scheme, whose terms go into a fresh tile state (compensation 0, KR_TILE_MERGE)
 * and whose merges are compensated. */
static void lse_fold(struct emit *e, int comp, int s, const char *fmt, ...)
{
	va_list ap;

	if (!comp) {
		emitf(e, "\t\t%S = %S * kr_sc + ", s, s);
		va_start(ap, fmt);
		emitv(e, fmt, ap);
		va_end(ap);
		emitf(e, " * kr_ad;\n");
		return;
	}
	emitf(e, "\t\t%S *= kr_sc;\n\t\t%C *= kr_sc;\n", s, s);
	emitf(e, "\t\t{\n\t\t\t%sreal kr_y = ", exact(e));
	va_start(ap, fmt);
	emitv(e, fmt, ap);
	va_end(ap);
	emitf(e, " * kr_ad - %C;\n\t\t\t%sreal kr_t = %S + kr_y;\n", s, exact(e), s);
	comp_store(e, "\t\t\t", s);
	emitf(e, "\t\t}\n");
}

static void lse_end(struct emit *e)
{
	emitf(e, "\t\t%S = kr_v > %S || kr_v != kr_v ? kr_v : %S;\n\t}\n", 0, 0, 0);
}

static void lse_init(struct emit *e)
{
	emitf(e, "\t%S = -%s;\n", 0, e->d->inf);
	init_sums(e);
}

/* Whether slot 1 is the plain sum s (else the sums are the weighted ones from slot 1). */
static int has_plain_sum(const struct emit *e)
{
	enum kred__red red = e->r->red;

	return red == KRED__RED_LSE || red == KRED__RED_SOFTMAX_WEIGHT ||
	       red == KRED__RED_MAX_SUMSHIFTEXP;
}

static void lse_update(struct emit *e)
{
	int s = 1;

	emitf(e, "\treal kr_v = %F;\n", 0);
	lse_begin(e);
	if (has_plain_sum(e))
		lse_fold(e, e->kahan, s++, "%c", 1.0);
	if (s < e->nst0) {
		int n = comp_open(e, e->nst0 - s, e->r->w);

		for (int c = 0; c < n; c++)
			lse_fold(e, e->kahan, s + c, "%G", c);
		comp_close(e);
	}
	lse_end(e);
}

static void lse_merge(struct emit *e)
{
	int n;

	emitf(e, "\treal kr_v = %O;\n", 0);
	lse_begin(e);
	n = comp_open(e, e->nst0 - 1, NULL);
	for (int s = 1; s < 1 + n; s++) {
		if (e->comp)
			lse_fold(e, 1, s, "(%O - %D)", s, s);
		else
			lse_fold(e, 0, s, "%O", s);
	}
	comp_close(e);
	lse_end(e);
}

/* The LogSumExp finalisers follow the reference on special rows. m = -inf (every term
 * -inf, or none): LogSumExp and LogSumExpWeight give -inf, Max_SumShiftExp(Weight) gives
 * (-inf, 0...), whatever an infinite weight did to the sums; SumSoftMaxWeight gives NaN,
 * the honest 0 / 0. m = +inf: LogSumExp gives +inf, the weighted forms NaN
 * (exp(inf - inf)). */
static void lse_finalize(struct emit *e)
{
	emitf(e, "\t%U = %S == %s || %S == -%s ? %S : %S + %m(", 0, 0, e->d->inf, 0, e->d->inf,
	      0, 0, KRED__MATH_LOG);
	sum_value(e, 1);
	emitf(e, ");\n");
}

/* The maximum (slot 0) and the plain sum are read into locals first, as the loops over
 * the weighted sums take slot numbers from their variable. */
static void lse_weight_finalize(struct emit *e)
{
	int n;

	emitf(e, "\treal kr_m = %S;\n", 0);
	n = comp_open(e, e->r->w->dim, NULL);
	for (int c = 0; c < n; c++) {
		emitf(e, "\t%U = kr_m == -%s ? kr_m : kr_m == %s ? %s : kr_m + %m(", c, e->d->inf,
		      e->d->inf, e->d->nan, KRED__MATH_LOG);
		sum_value(e, 1 + c);
		emitf(e, ");\n");
	}
	comp_close(e);
}

static void softmax_finalize(struct emit *e)
{
	int n;

	emitf(e, "\treal kr_z = %S - %S;\n\treal kr_s = ", 0, 0);
	sum_value(e, 1);
	emitf(e, ";\n");
	n = comp_open(e, e->r->w->dim, NULL);
	for (int c = 0; c < n; c++) {
		emitf(e, "\t%U = kr_z == %c ? ", c, 0.0);
		sum_value(e, 2 + c);
		emitf(e, " / kr_s : %s;\n", e->d->nan);
	}
	comp_close(e);
}

static void msse_finalize(struct emit *e)
{
	int n;

	emitf(e, "\treal kr_m = %S;\n\t%U = kr_m;\n", 0, 0);
	n = comp_open(e, e->nst0 - 1, NULL);
	for (int s = 1; s < 1 + n; s++) {
		emitf(e, "\t%U = kr_m == -%s ? %c : kr_m == %s ? %s : ", s, e->d->inf, 0.0,
		      e->d->inf, e->d->nan);
		sum_value(e, s);
		emitf(e, ";\n");
	}
	comp_close(e);
}

/* Min and Max: compare and select; NaN never wins a comparison, so it is skipped. */
static const char *ext_op(const struct emit *e)
{
	enum kred__red red = e->r->red;

	return red == KRED__RED_MIN || red == KRED__RED_ARGMIN || red == KRED__RED_MIN_ARGMIN
		       ? "<" : ">";
}

static void ext_init(struct emit *e)
{
	int d = e->r->f->dim, idx = e->nst0 > d, n = comp_open(e, d, NULL);

	for (int c = 0; c < n; c++) {
		emitf(e, "\t%S = %s%s;\n", c, *ext_op(e) == '<' ? "" : "-", e->d->inf);
		if (idx)
			emitf(e, "\t%S = %c;\n", d + c, -1.0);
	}
	comp_close(e);
}

static void minmax_update(struct emit *e)
{
	int n = comp_open(e, e->r->f->dim, e->r->f);

	for (int c = 0; c < n; c++)
		emitf(e, "\t%S = %F %s %S ? %F : %S;\n", c, c, ext_op(e), c, c, c);
	comp_close(e);
}

static void minmax_merge(struct emit *e)
{
	int n = comp_open(e, e->r->f->dim, NULL);

	for (int c = 0; c < n; c++)
		emitf(e, "\t%S = %O %s %S ? %O : %S;\n", c, c, ext_op(e), c, c, c);
	comp_close(e);
}

static void minmax_finalize(struct emit *e)
{
	int n = comp_open(e, e->r->f->dim, NULL);

	for (int c = 0; c < n; c++)
		emitf(e, "\t%U = %S;\n", c, c);
	comp_close(e);
}

/* With indices: the first non-NaN term is always taken (a row of +inf gives index 0),
 * then only strictly better ones, so ties keep the first index. */
static void arg_update(struct emit *e)
{
	int d = e->r->f->dim, n = comp_open(e, d, e->r->f);

	for (int c = 0; c < n; c++) {
		emitf(e, "\t{\n\t\treal kr_x = %F;\n", c);
		emitf(e, "\t\t%s kr_t = kr_x %s %S || (%S < %c && kr_x == kr_x);\n",
		      e->d->bool_type, ext_op(e), c, d + c, 0.0);
		emitf(e, "\t\t%S = kr_t ? kr_x : %S;\n", c, c);
		emitf(e, "\t\t%S = kr_t ? jr : %S;\n\t}\n", d + c, d + c);
	}
	comp_close(e);
}

/* Partial states may come in any order: on a tie the lower index wins. */
static void arg_merge(struct emit *e)
{
	int d = e->r->f->dim, n = comp_open(e, d, NULL);

	for (int c = 0; c < n; c++) {
		emitf(e, "\t{\n\t\t%s kr_t = %O >= %c && (%S < %c || %O %s %S || (%O == %S && "
		      "%O < %S));\n", e->d->bool_type, d + c, 0.0, d + c, 0.0, c, ext_op(e), c, c,
		      c, d + c, d + c);
		emitf(e, "\t\t%S = kr_t ? %O : %S;\n", c, c, c);
		emitf(e, "\t\t%S = kr_t ? %O : %S;\n\t}\n", d + c, d + c, d + c);
	}
	comp_close(e);
}

static void arg_finalize(struct emit *e)
{
	enum kred__red red = e->r->red;
	int d = e->r->f->dim, both = red == KRED__RED_MIN_ARGMIN || red == KRED__RED_MAX_ARGMAX;
	int n = comp_open(e, d, NULL);

	for (int c = 0; c < n; c++) {
		if (both)
			emitf(e, "\t%U = %S;\n", c, c);
		emitf(e, "\t%U = %S;\n", both ? d + c : c, d + c);
	}
	comp_close(e);
}

/*
 * KMin: per component, a sorted list of K (value, index) pairs. A new term bubbles
 * through it: at each rank the smaller of (carried, kept) stays and the other is carried
 * on, ties going to the lower index, an empty rank (index -1) taking any non-NaN value.
 * The kept order is then the reference's insertion sort, with branch-free selects that
 * vectorise across rows. Up to MAX_UNROLL values the ranks are unrolled, else looped.
 */

/* The slot strings of rank k, component c: values at k*D + c, indices K*D after. */
static void kmin_slots(const struct emit *e, const char *k, const char *c, char *v, char *ix,
		       size_t size)
{
	int d = e->r->f->dim, kd = e->r->k * d;
	char *end1, *end2;
	long kn = strtol(k, &end1, 10), cn = strtol(c, &end2, 10);

	if (!*end1 && !*end2 && *k && *c) {
		/* unrolled: plain numbers */
		snprintf(v, size, "%ld", kn * d + cn);
		snprintf(ix, size, "%ld", kd + kn * d + cn);
		return;
	}
	snprintf(v, size, "(%s * %d + %s)", k, d, c);
	snprintf(ix, size, "(%d + %s * %d + %s)", kd, k, d, c);
}

static int kmin_unrolled(const struct emit *e)
{
	return e->r->k * e->r->f->dim <= MAX_UNROLL && !big(e, e->r->f);
}

/* `for (int var = 0; var < n; var++) {` in the KMin pieces, counted, and its end. */
static void for_open(struct emit *e, const char *tab, const char *var, int n)
{
	emitf(e, "%sfor (int %s = 0; %s < %d; %s++) {\n", tab, var, var, n, var);
	count_enter(e, n);
}

static void for_close(struct emit *e, const char *tab)
{
	emitf(e, "%s}\n", tab);
	count_leave(e);
}

/* One bubble step at rank k of component c, carrying (kr_x, kr_i). */
static void kmin_step(struct emit *e, const char *k, const char *c, int other)
{
	char v[64], ix[64];

	kmin_slots(e, k, c, v, ix, sizeof(v));
	emitf(e, "\t\t{\n\t\t\t%s kr_t = kr_x < %T || (kr_x == %T && kr_i < %T) || "
	      "(%T < %c && kr_x == kr_x);\n", e->d->bool_type, v, v, ix, ix, 0.0);
	if (other)
		emitf(e, "\t\t\tkr_t = kr_t && kr_i >= %c;\n", 0.0);
	emitf(e, "\t\t\treal kr_v = %T, kr_j = %T;\n", v, ix);
	emitf(e, "\t\t\t%T = kr_t ? kr_x : kr_v;\n\t\t\t%T = kr_t ? kr_i : kr_j;\n", v, ix);
	emitf(e, "\t\t\tkr_x = kr_t ? kr_v : kr_x;\n\t\t\tkr_i = kr_t ? kr_j : kr_i;\n\t\t}\n");
}

/* All K steps for component c (a string: a number, or the loop variable). */
static void kmin_bubble(struct emit *e, const char *c, int other)
{
	char ks[16];

	if (!kmin_unrolled(e) || other) {
		for_open(e, "\t\t", "kr_k", e->r->k);
		kmin_step(e, "kr_k", c, other);
		for_close(e, "\t\t");
		return;
	}
	for (int k = 0; k < e->r->k; k++) {
		snprintf(ks, sizeof(ks), "%d", k);
		kmin_step(e, ks, c, other);
	}
}

static void kmin_init(struct emit *e)
{
	int kd = e->r->k * e->r->f->dim;

	if (kmin_unrolled(e)) {
		for (int s = 0; s < kd; s++)
			emitf(e, "\t%S = %s;\n\t%S = %c;\n", s, e->d->inf, kd + s, -1.0);
		return;
	}
	{
		char ix[48];

		snprintf(ix, sizeof(ix), "(%d + kr_s)", kd);
		for_open(e, "\t", "kr_s", kd);
		emitf(e, "\t\t%T = %s;\n\t\t%T = %c;\n", "kr_s", e->d->inf, ix, -1.0);
		for_close(e, "\t");
	}
}

/* In kr_fold, which runs row by row, a term that is not below the K-th kept value of a
 * full list is skipped by a branch: after the first few terms, nearly all are. */
static void kmin_skip(struct emit *e, const char *c)
{
	char v[64], ix[64], last[16];

	if (!e->fbuf)
		return;
	snprintf(last, sizeof(last), "%d", e->r->k - 1);
	kmin_slots(e, last, c, v, ix, sizeof(v));
	/* Most terms are above the K-th value, and that one compare settles them; a tie
	 * or an infinity asks whether the list is full. */
	emitf(e, "\t\tif (!(kr_x < %T) && (kr_x > %T || %T >= %c))\n\t\t\tcontinue;\n", v, v,
	      ix, 0.0);
}

/* kr_may's body: kr_m is nonzero when some component of the term at f would not be
 * skipped by kmin_skip, so that a row whose terms of a tile are all skipped skips the
 * tile at once. The test is kmin_skip's, negated, and written with | and & so that it
 * vectorises across rows. */
static void kmin_may(struct emit *e)
{
	const char *sym = e->sym;
	char v[64], ix[64], last[16], cs[16];
	int d = e->r->f->dim;

	snprintf(last, sizeof(last), "%d", e->r->k - 1);
	if (kmin_unrolled(e)) {
		for (int c = 0; c < d; c++) {
			snprintf(cs, sizeof(cs), "%d", c);
			kmin_slots(e, last, cs, v, ix, sizeof(v));
			emitf(e, "	kr_m |= (%F < %T) | (!(%F > %T) & (%T < %c));\n", c, v, c, v,
			      ix, 0.0);
		}
		return;
	}
	kmin_slots(e, last, "kr_c", v, ix, sizeof(v));
	for_open(e, "\t", "kr_c", d);
	e->sym = "kr_c";
	emitf(e, "\t\tkr_m |= (%F < %T) | (!(%F > %T) & (%T < %c));\n", 0, v, 0, v, ix, 0.0);
	e->sym = sym;
	for_close(e, "\t");
}

static void kmin_update(struct emit *e)
{
	int d = e->r->f->dim;
	char cs[16];

	if (kmin_unrolled(e)) {
		for (int c = 0; c < d; c++) {
			snprintf(cs, sizeof(cs), "%d", c);
			/* a one-pass loop, so that kmin_skip can leave it */
			for_open(e, "\t", "kr_once", 1);
			emitf(e, "\t\treal kr_x = %F, kr_i = jr;\n", c);
			kmin_skip(e, cs);
			kmin_bubble(e, cs, 0);
			for_close(e, "\t");
		}
		return;
	}
	emitf(e, "\treal kr_f[%d];\n", d);
	comp_open(e, d, e->r->f);
	if (e->sym) {
		emitf(e, "\t\tkr_f[kr_n] = %F;\n", 0);
	} else {
		for (int c = 0; c < d; c++)
			emitf(e, "\tkr_f[%d] = %F;\n", c, c);
	}
	comp_close(e);
	for_open(e, "\t", "kr_c", d);
	emitf(e, "\t\treal kr_x = kr_f[kr_c], kr_i = jr;\n");
	kmin_skip(e, "kr_c");
	kmin_bubble(e, "kr_c", 0);
	for_close(e, "\t");
}

/* Each kept pair of the other state bubbles in turn; its empty ranks (index -1) are not
 * taken. */
static void kmin_merge(struct emit *e)
{
	char v[64], ix[64];

	kmin_slots(e, "kr_q", "kr_c", v, ix, sizeof(v));
	for_open(e, "\t", "kr_c", e->r->f->dim);
	for_open(e, "\t\t", "kr_q", e->r->k);
	emitf(e, "\t\treal kr_x = %P, kr_i = %P;\n", v, ix);
	kmin_bubble(e, "kr_c", 1);
	for_close(e, "\t\t");
	for_close(e, "\t");
}

static void kmin_finalize(struct emit *e)
{
	enum kred__red red = e->r->red;
	int kd = e->r->k * e->r->f->dim;
	int vals = red != KRED__RED_ARGKMIN, idx = red != KRED__RED_KMIN;

	if (kmin_unrolled(e)) {
		for (int s = 0; s < kd; s++) {
			if (vals)
				emitf(e, "\t%U = %S;\n", s, s);
			if (idx)
				emitf(e, "\t%U = %S;\n", vals ? kd + s : s, kd + s);
		}
		return;
	}
	for_open(e, "\t", "kr_s", kd);
	if (vals)
		emitf(e, "\t\t%V = %T;\n", "kr_s", "kr_s");
	if (idx) {
		char o[48], s[48];

		snprintf(o, sizeof(o), "(%d + kr_s)", vals ? kd : 0);
		snprintf(s, sizeof(s), "(%d + kr_s)", kd);
		emitf(e, "\t\t%V = %T;\n", o, s);
	}
	for_close(e, "\t");
}

typedef void (*piece_fn)(struct emit *e);

struct red_code {
	piece_fn init, update, merge, finalize;
};

/* ORDER KRED__REDUCTIONS */
static const struct red_code red_codes[] = {
	[KRED__RED_SUM] = { sum_init, sum_update, sum_merge, sum_finalize },
	[KRED__RED_LSE] = { lse_init, lse_update, lse_merge, lse_finalize },
	[KRED__RED_LSE_WEIGHT] = { lse_init, lse_update, lse_merge, lse_weight_finalize },
	[KRED__RED_SOFTMAX_WEIGHT] = { lse_init, lse_update, lse_merge, softmax_finalize },
	[KRED__RED_MAX_SUMSHIFTEXP] = { lse_init, lse_update, lse_merge, msse_finalize },
	[KRED__RED_MAX_SUMSHIFTEXP_WEIGHT] = { lse_init, lse_update, lse_merge, msse_finalize },
	[KRED__RED_MIN] = { ext_init, minmax_update, minmax_merge, minmax_finalize },
	[KRED__RED_MAX] = { ext_init, minmax_update, minmax_merge, minmax_finalize },
	[KRED__RED_ARGMIN] = { ext_init, arg_update, arg_merge, arg_finalize },
	[KRED__RED_ARGMAX] = { ext_init, arg_update, arg_merge, arg_finalize },
	[KRED__RED_MIN_ARGMIN] = { ext_init, arg_update, arg_merge, arg_finalize },
	[KRED__RED_MAX_ARGMAX] = { ext_init, arg_update, arg_merge, arg_finalize },
	[KRED__RED_KMIN] = { kmin_init, kmin_update, kmin_merge, kmin_finalize },
	[KRED__RED_ARGKMIN] = { kmin_init, kmin_update, kmin_merge, kmin_finalize },
	[KRED__RED_KMIN_ARGKMIN] = { kmin_init, kmin_update, kmin_merge, kmin_finalize },
};
_Static_assert(sizeof(red_codes) / sizeof(red_codes[0]) == KRED__RED_COUNT,
	       "red_codes must have one row per reduction of KRED__REDUCTIONS");

/* State slots without compensations. */
static int base_slots(const struct kred_reduction *r)
{
	int d = r->f->dim, w = r->w ? r->w->dim : 0;

	switch (r->red) {
	case KRED__RED_SUM:
	case KRED__RED_MIN:
	case KRED__RED_MAX:
		return d;
	case KRED__RED_LSE:
	case KRED__RED_MAX_SUMSHIFTEXP:
		return 2;
	case KRED__RED_LSE_WEIGHT:
	case KRED__RED_MAX_SUMSHIFTEXP_WEIGHT:
		return 1 + w;
	case KRED__RED_SOFTMAX_WEIGHT:
		return 2 + w;
	case KRED__RED_ARGMIN:
	case KRED__RED_ARGMAX:
	case KRED__RED_MIN_ARGMIN:
	case KRED__RED_MAX_ARGMAX:
		return 2 * d;
	default:
		return 2 * r->k * d;
	}
}

static void setup(struct emit *e, const struct kred_dialect *d, const struct kred_reduction *r,
		  const struct kred__layout *l, struct kred__buf *b)
{
	int sumlike = (kred__reds[r->red].flags & KRED__RED_SUMLIKE) != 0;

	memset(e, 0, sizeof(*e));
	e->d = d;
	e->r = r;
	e->l = l;
	e->b = b;
	e->dbl = r->dtype == KRED_FLOAT64;
	e->mult = 1;
	e->unroll_dim = d->unroll_all ? INT_MAX : MAX_UNROLL_DIM;
	e->nst0 = base_slots(r);
	e->kahan = sumlike && (r->sum_scheme == KRED_SUM_KAHAN ||
			       (d->no_tiles && r->sum_scheme == KRED_SUM_BLOCK));
	e->sum0 = r->red == KRED__RED_SUM ? 0 : 1;
	e->nsum = sumlike ? e->nst0 - e->sum0 : 0;
	e->comp = e->nsum > 0 && (e->kahan || r->sum_scheme == KRED_SUM_BLOCK);
	e->kahan_diff = sumlike && !e->dbl && r->sum_scheme == KRED_SUM_KAHAN;
}

static void emit_free(struct emit *e)
{
	kred__free(e->cls);
	kred__free(e->seen);
	kred__free(e->stack);
	kred__free(e->gram);
	kred__free(e->read);
	e->cls = e->seen = NULL;
	e->stack = e->gram = e->read = NULL;
}

int kred__emit_nstate(const struct kred_reduction *r)
{
	struct emit e;

	setup(&e, &kred__dialect_c, r, NULL, NULL);
	return e.nst0 + (e.comp ? e.nsum : 0);
}

/* The parts of side's packed row that the generated functions read themselves, as
 * "#define KR_N<name> n" and "#define KR_<name> { { offset, length }, ... }", in
 * offset order, touching parts joined (one part, { 0, 0 }, when there is none). */
static void put_read(struct kred__buf *b, const struct emit *e, int side, const char *name)
{
	int parts[2 * MAX_READ_PARTS], n = 0, at = 0;

	for (;;) {
		int next = -1, end;

		/* The read variable of this side that starts first at or after at. */
		for (int a = 0; a < e->l->n_args; a++)
			if (e->read[a] > 0 && e->l->side[a] == side && e->l->offset[a] >= at &&
			    (next < 0 || e->l->offset[a] < e->l->offset[next]))
				next = a;
		if (next < 0)
			break;
		end = e->l->offset[next] + e->read[next];
		if (n > 0 && e->l->offset[next] <= parts[2 * n - 1]) {
			if (end > parts[2 * n - 1])
				parts[2 * n - 1] = end;
		} else if (n < MAX_READ_PARTS) {
			parts[2 * n] = e->l->offset[next];
			parts[2 * n + 1] = end;
			n++;
		} else {
			/* too many parts to list: the last one reaches to the end */
			parts[2 * n - 1] = end;
		}
		at = e->l->offset[next] + 1;
	}
	kred__buf_printf(b, "#define KR_N%s %d\n#define KR_%s {", name, n, name);
	for (int q = 0; q < n; q++)
		kred__buf_printf(b, "%s{ %d, %d }", q ? ", " : " ", parts[2 * q],
				 parts[2 * q + 1] - parts[2 * q]);
	kred__buf_puts(b, n ? " }\n" : " { 0, 0 } }\n");
}

/* The longest kr_update (bytes of source) that gets a fast-path copy (KR_GUARD). */
#define GUARD_MAX_UPDATE 32768
/* The most exps of a split update (emit_split): the template's buffer of their arguments
 * is 256 bytes an exp (32 float64 rows), on the thread's stack. */
#define SPLIT_MAX_EXPS 16

/* The float64 fast path's split update (kernels/host.c, KR_NE): kr_args_g writes the
 * arguments of the update's n exps, row by row, to kr_ea[k * sea] (k in the order the
 * formula calls them), the template computes them all at once, and kr_update_x reads
 * them back where the update called exp. Each function is the formula's code with its
 * calls "kr_exp(" renumbered "kr_expk(k, " and a macro for kr_expk: the code that only
 * led to an exp's argument (in kr_update_x), or to nothing (in kr_args_g, which updates
 * no state), is dead and the compiler drops it. An exp inside another's argument is
 * computed in kr_args_g with kr_exp_g as well (its flag dropped: kr_ea holds its
 * argument too). Written only for straight-line code (no loops, so that the calls
 * written are the calls made) whose update adds no exp of its own; nothing otherwise. */
static char *renumber_exps(const struct kred_dialect *d, const char *text, int n)
{
	const char *name = d->math[KRED__MATH_EXP];
	size_t len = strlen(name), cap = strlen(text) + (size_t)n * 16 + 1, o = 0;
	char *out = kred__calloc(cap, 1);
	int k = 0;

	if (!out)
		return NULL;
	for (const char *c = text; *c;) {
		int ident = c > text && (isalnum((unsigned char)c[-1]) || c[-1] == '_');

		if (!ident && !strncmp(c, name, len) && c[len] == '(') {
			if (k == n) {
				k = n + 1; /* more calls than counted: no split */
				break;
			}
			o += (size_t)snprintf(out + o, cap - o, "kr_expk(%d, ", k++);
			c += len + 1;
		} else {
			out[o++] = *c++;
		}
	}
	if (k != n) {
		kred__free(out);
		return NULL;
	}
	return out;
}

static kred_status emit_split(struct emit *e, const struct kred_dialect *d,
			      const struct red_code *rc, int n, struct kred__error *err)
{
	struct kred__buf *b = e->b;
	size_t start = b->len, f0;
	int exps;
	char *text;
	kred_status s;

	kred__buf_printf(b, "#define KR_NE %d\n%s void kr_args_g(%s, real *restrict kr_ea, "
			 "int sea)\n{\n\tint kr_nb = 0;\n\n\t(void)st;\n\t(void)sst;\n%s",
			 n, d->fn_qual, d->update_params, d->update_unused);
	f0 = b->len;
	exps = e->exps;
	e->oom = 0;
	s = emit_formula(e, err);
	if (s)
		return s;
	if (b->oom)
		return KRED_OK;
	text = e->exps - exps == n ? renumber_exps(d, b->p + f0, n) : NULL;
	if (!text) {
		b->len = start;
		b->p[start] = 0;
		return KRED_OK;
	}
	b->len = f0;
	kred__buf_puts(b, "#define kr_expk(k, x) kr_exp_put(kr_ea + (k) * sea, (x), &kr_nb)\n");
	kred__buf_puts(b, text);
	kred__buf_printf(b, "#undef kr_expk\n\t(void)kr_nb;\n}\n\n%s void kr_update_x(%s, "
			 "const real *restrict kr_ea, int sea)\n{\n"
			 "#define kr_expk(k, x) (kr_ea[(k) * sea])\n%s",
			 d->fn_qual, d->update_params, d->update_unused);
	kred__buf_puts(b, text);
	kred__free(text);
	exps = e->exps;
	rc->update(e);
	kred__buf_puts(b, "#undef kr_expk\n}\n\n");
	if (e->exps != exps) {
		b->len = start;
		b->p[start] = 0;
	}
	return KRED_OK;
}

/* The source (when out) and the loop counts (when loops) of r in dialect d. */
static kred_status emit_all(const struct kred_dialect *d, const struct kred_reduction *r,
			    const struct kred__layout *l, const char *tmpl, char **out,
			    struct kred__emit_loops *loops, struct kred__error *err)
{
	struct kred__buf b = { 0 };
	const struct red_code *rc = &red_codes[r->red];
	struct emit e;
	kred_status s;
	struct kred__emit_loops n;
	int select = d->eval_params && (kred__reds[r->red].flags & KRED__RED_K);
	/* LogSumExp and Max_SumShiftExp of a scalar F with the block scheme (their state is
	 * the maximum and the sum of exp(F - max)): the host template takes a tile's values
	 * of F (kr_eval) and sums their exponentials itself (KR_LSE_TILE). */
	int lse_tile = d->eval_params && (kred__reds[r->red].flags & KRED__RED_EXPSUM) && !r->w &&
		       r->f->dim == 1 && r->sum_scheme == KRED_SUM_BLOCK;
	size_t upd0 = 0, upd1 = 0;
	int exps0 = 0, exps1 = 0;

	if (out)
		*out = NULL;
	setup(&e, d, r, l, &b);
	if (d->gram_fmt && l) {
		e.read = kred__calloc((size_t)(l->n_args > 0 ? l->n_args : 1), sizeof(*e.read));
		if (!e.read)
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	}
	kred__buf_printf(&b, "/* Generated by kred %s (%s dialect): %s of ", kred_version(),
			 d->name, kred__reds[r->red].name);
	/* The formula text inside a comment: no "*" "/" may close it early. */
	for (const char *c = r->formula_text; *c; c++) {
		if (c[0] == '*' && c[1] == '/')
			kred__buf_puts(&b, "* ");
		else
			kred__buf_printf(&b, "%c", *c);
	}
	kred__buf_printf(&b, " */\n#define KR_DOUBLE %d\n#define KR_DR %d\n#define KR_DC %d\n"
			 "#define KR_DP %d\n#define KR_NST %d\n#define KR_OUT %d\n"
			 "#define KR_TILE_MERGE %d\n#define KR_DF %d\n#define KR_SELECT %d\n"
			 "#define KR_FAST_MATH %d\n#define KR_LSE_TILE %d\n",
			 e.dbl, l->width[KRED__SIDE_ROW], l->width[KRED__SIDE_COL],
			 l->width[KRED__SIDE_PRM], e.nst0 + (e.comp ? e.nsum : 0), r->out_dim,
			 e.nsum > 0 && r->sum_scheme == KRED_SUM_BLOCK && !d->no_tiles, r->f->dim,
			 select,
			 r->fast_math, lse_tile);
	kred__buf_puts(&b, d->prelude);
	kred__buf_printf(&b, "\n%s void kr_init(%s)\n{\n", d->fn_qual, d->init_params);
	rc->init(&e);
	n.init = e.iters;
	e.iters = 0;
	kred__buf_printf(&b, "}\n\n%s void kr_update(%s)\n{\n%s", d->fn_qual, d->update_params,
			 d->update_unused);
	upd0 = b.len;
	exps0 = e.exps;
	s = emit_formula(&e, err);
	if (s)
		goto fail;
	rc->update(&e);
	upd1 = b.len;
	exps1 = e.exps;
	n.update = e.iters;
	e.iters = 0;
	kred__buf_printf(&b, "}\n\n%s void kr_merge(%s)\n{\n", d->fn_qual, d->merge_params);
	rc->merge(&e);
	n.merge = e.iters;
	e.iters = 0;
	kred__buf_printf(&b, "}\n\n%s void kr_finalize(%s)\n{\n", d->fn_qual, d->finalize_params);
	rc->finalize(&e);
	n.finalize = e.iters;
	kred__buf_puts(&b, "}\n\n");
	if (select || lse_tile) {
		kred__buf_printf(&b, "%s void kr_eval(%s)\n{\n%s", d->fn_qual, d->eval_params,
				 d->update_unused);
		e.oom = 0;
		s = emit_formula(&e, err);
		if (s)
			goto fail;
		int nc = comp_open(&e, r->f->dim, r->f);

		for (int c = 0; c < nc; c++) {
			kred__buf_puts(&b, "\t");
			put_index(&e, d->f_fmt, c);
			emitf(&e, " = %F;\n", c);
		}
		comp_close(&e);
		kred__buf_puts(&b, "}\n\n");
	}
	if (select) {
		kred__buf_printf(&b, "%s void kr_fold(%s)\n{\n", d->fn_qual, d->fold_params);
		e.fbuf = 1;
		rc->update(&e);
		kred__buf_printf(&b, "}\n\n%s int kr_may(%s)\n{\n\tint kr_m = 0;\n\n",
				 d->fn_qual, d->may_params);
		kmin_may(&e);
		e.fbuf = 0;
		kred__buf_puts(&b, "\treturn kr_m;\n}\n\n");
	}
	/* The host template's fast path for sums under the block scheme (KR_GUARD): a copy
	 * of kr_update whose exps (kr_exp_g, kernels/c_prelude.h) skip kr_exp's handling of
	 * large arguments and NaN and flag them instead; a row whose tile meets one is
	 * computed again with kr_update. Only where kr_update calls exp, and is short
	 * enough that a second copy costs little to compile. */
	if (d->exp_guarded && !select && !lse_tile && e.nsum > 0 &&
	    r->sum_scheme == KRED_SUM_BLOCK && exps1 > exps0 && upd1 - upd0 <= GUARD_MAX_UPDATE) {
		int iters = e.iters;

		kred__buf_printf(&b, "#define KR_GUARD 1\n%s void kr_update_g(%s, int *restrict "
				 "kr_bad)\n{\n#define %s(x) %s((x), kr_bad)\n%s", d->fn_qual,
				 d->update_params, d->math[KRED__MATH_EXP], d->exp_guarded,
				 d->update_unused);
		e.oom = 0;
		s = emit_formula(&e, err);
		if (s)
			goto fail;
		rc->update(&e);
		kred__buf_printf(&b, "#undef %s\n}\n\n", d->math[KRED__MATH_EXP]);
		if (e.dbl && e.iters == iters && exps1 - exps0 <= SPLIT_MAX_EXPS) {
			s = emit_split(&e, d, rc, exps1 - exps0, err);
			if (s)
				goto fail;
		}
		e.iters = iters;
	}
	if (d->gram_fmt) {
		kred__buf_printf(&b, "#define KR_NG %d\n#define KR_GRAMS {", e.ngram);
		for (int g = 0; g < e.ngram; g++)
			kred__buf_printf(&b, "%s{ %d, %d, %d, %d }", g ? ", " : " ",
					 e.grams[g][0], e.grams[g][1], e.grams[g][2],
					 e.grams[g][3]);
		kred__buf_puts(&b, e.ngram ? " }\n" : "}\n");
		put_read(&b, &e, KRED__SIDE_ROW, "XR");
		put_read(&b, &e, KRED__SIDE_COL, "YR");
		kred__buf_puts(&b, "\n");
	}
	kred__buf_puts(&b, tmpl);
	if (e.bug) {
		s = kred__fail(err, KRED_EUNSUPPORTED, -1,
			       "internal error: the emitter read a value of %s that it had not "
			       "defined", r->formula_text);
		goto fail;
	}
	if (b.len > MAX_SOURCE) {
		s = kred__fail(err, KRED_EUNSUPPORTED, -1,
			       "the formula is too large for an unrolled kernel (%zu MB of source)",
			       b.len >> 20);
		goto fail;
	}
	memset(n.read, 0, sizeof(n.read));
	n.ngram = e.ngram;
	memcpy(n.grams, e.grams, sizeof(n.grams));
	for (int a = 0; e.read && a < l->n_args; a++)
		if (l->side[a] >= 0 && l->side[a] < 3)
			n.read[l->side[a]] += e.read[a];
	emit_free(&e);
	if (loops)
		*loops = n;
	if (!out) {
		kred__buf_free(&b);
		return KRED_OK;
	}
	*out = kred__buf_take(&b);
	if (!*out)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	return KRED_OK;
fail:
	emit_free(&e);
	kred__buf_free(&b);
	return s;
}

kred_status kred__emit_source(const struct kred_dialect *d, const struct kred_reduction *r,
			      const struct kred__layout *l, const char *tmpl, char **out,
			      struct kred__error *err)
{
	return emit_all(d, r, l, tmpl, out, NULL, err);
}

kred_status kred__emit_loops(const struct kred_dialect *d, const struct kred_reduction *r,
			     const struct kred__layout *l, struct kred__emit_loops *loops,
			     struct kred__error *err)
{
	return emit_all(d, r, l, "", NULL, loops, err);
}

kred_status kred__emit_source_loops(const struct kred_dialect *d, const struct kred_reduction *r,
				    const struct kred__layout *l, const char *tmpl, char **out,
				    struct kred__emit_loops *loops, struct kred__error *err)
{
	return emit_all(d, r, l, tmpl, out, loops, err);
}

/* ---- layout */

kred_status kred__layout_make(const struct kred_reduction *r, struct kred__layout *l,
			      struct kred__error *err)
{
	const struct kred__graph *g = r->g;
	unsigned char *mark = kred__calloc((size_t)g->n_nodes + 1, 1);
	int n = r->n_args > 0 ? r->n_args : 1;

	memset(l, 0, sizeof(*l));
	l->side = kred__malloc((size_t)n * sizeof(*l->side));
	l->offset = kred__calloc((size_t)n, sizeof(*l->offset));
	if (!mark || !l->side || !l->offset) {
		kred__free(mark);
		kred__layout_free(l);
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	}
	l->n_args = r->n_args;
	for (int p = 0; p < n; p++)
		l->side[p] = KRED__SIDE_NONE;
	mark[r->f->id] = 1;
	if (r->w)
		mark[r->w->id] = 1;
	for (int id = g->n_nodes - 1; id >= 0; id--) {
		const struct kred__node *v = g->nodes[id];

		if (!mark[id])
			continue;
		for (int k = 0; k < v->nargs; k++)
			mark[v->arg[k]->id] = 1;
		if (v->op == KRED__OP_VAR && v->ints[0] < r->n_args) {
			int cat = v->ints[2];

			l->side[v->ints[0]] = cat == KRED__CAT_P ? KRED__SIDE_PRM
					      : (cat == KRED__CAT_I) == (r->axis == KRED_REDUCE_J)
						      ? KRED__SIDE_ROW : KRED__SIDE_COL;
		}
	}
	kred__free(mark);
	/* In position order, so that one variable alone on a side sits at offset 0. */
	for (int p = 0; p < r->n_args; p++) {
		if (l->side[p] == KRED__SIDE_NONE)
			continue;
		l->offset[p] = l->width[l->side[p]];
		l->width[l->side[p]] += r->args[p].dim;
	}
	return KRED_OK;
}

int kred__layout_alone(const struct kred__layout *l, const struct kred_reduction *r, int side)
{
	int alone = -1, count = 0;

	for (int p = 0; p < l->n_args; p++) {
		if (l->side[p] == side) {
			alone = p;
			count++;
		}
	}
	return count == 1 && r->args[alone].dim == l->width[side] ? alone : -1;
}

void kred__layout_pack(const struct kred__layout *l, const struct kred_reduction *r, int side,
		       const void *const *args, int64_t r0, int64_t n, int stride, size_t size,
		       void *dst)
{
	const size_t row = (size_t)stride * size;

	if (stride > l->width[side])
		memset(dst, 0, (size_t)n * row);
	for (int p = 0; p < l->n_args; p++) {
		size_t d = (size_t)r->args[p].dim * size, off = (size_t)l->offset[p] * size;
		const char *src;

		if (l->side[p] != side)
			continue;
		src = (const char *)args[p] + (size_t)r0 * d;
		if (d == row) {
			memcpy(dst, src, (size_t)n * d);
			continue;
		}
		for (int64_t i = 0; i < n; i++)
			memcpy((char *)dst + (size_t)i * row + off, src + (size_t)i * d, d);
	}
}

void kred__layout_free(struct kred__layout *l)
{
	kred__free(l->side);
	kred__free(l->offset);
	l->side = l->offset = NULL;
}

/* ---- the C dialect: the host backend's, and the shape later dialects follow. */

const struct kred_dialect kred__dialect_c = {
	.name = "C",
	.suffix = { "f", "" },
	.inf = "KR_INF",
	.nan = "KR_NAN",
	.bool_type = "int",
	.fn_qual = "static inline",
	.math = KRED__MATH_KR_NAMES,
	.init_params = "real *restrict st, int sst",
	.update_params = "real *restrict st, int sst, const real *restrict xi, int sxi,\n\t"
			 "const real *restrict yj, const real *restrict p, real jr,\n\t"
			 "const real *restrict gm, int sgm",
	.merge_params = "real *restrict st, int sst, const real *restrict ot, int sot",
	.finalize_params = "const real *restrict st, int sst, real *restrict out",
	.st_fmt = "st[%s * sst]",
	.ot_fmt = "ot[%s * sot]",
	.out_fmt = "out[%s]",
	.row_fmt = "xi[%s * sxi]",
	.col_fmt = "yj[%s]",
	.prm_fmt = "p[%s]",
	.update_unused = "\t(void)xi;\n\t(void)sxi;\n\t(void)yj;\n\t(void)p;\n\t(void)jr;\n"
			 "\t(void)gm;\n\t(void)sgm;\n",
	.prelude = kred__kernel_c_prelude_h,
	.eval_params = "real *restrict f, int sf, const real *restrict xi, int sxi,\n\t"
		       "const real *restrict yj, const real *restrict p, real jr,\n\t"
		       "const real *restrict gm, int sgm",
	.fold_params = "real *restrict st, int sst, const real *restrict f, int sf, real jr",
	.may_params = "const real *restrict st, int sst, const real *restrict f, int sf",
	.f_fmt = "f[%s * sf]",
	.gram_fmt = "gm[%s * sgm]",
	.exp_guarded = "kr_exp_g",
};
