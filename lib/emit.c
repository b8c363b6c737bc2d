/* The kernel emitter: a formula graph to straight-line code in a dialect (lib/emit.h), and
 * every reduction's four pieces (init, update, merge, finalize), written once for all. */
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
 * The generated functions take a state pointer and a stride (slot s at st[s * sst]) so
 * that the host template can keep the states of a block of rows slot-major, one row per
 * vector lane; other templates pass their own layout.
 */

/* Largest kernel source we write: a formula past this would take minutes to compile. */
#define MAX_SOURCE (32u << 20)
/* A KMin state of more values than this is handled in loops instead of unrolled. */
#define MAX_UNROLL 64

struct emit {
	const struct kred_dialect *d;
	const struct kred_reduction *r;
	const struct kred__layout *l;
	struct kred__buf *b;
	int dbl;	  /* float64 */
	int kahan;	  /* compensated sums: every term (the kahan scheme) */
	int comp;	  /* compensation slots, used by the merges (kahan, and block) */
	int nst0;	  /* state slots before the compensations */
	int sum0, nsum;	  /* the slots that hold sums */
	int oom;	  /* an allocation of the emitter failed */
	int fbuf;	  /* %F reads F from kr_fold's buffer, not from the formula */
};

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

/* Element k of node n; a node of dimension 1 is broadcast. */
static void put_elem(struct emit *e, const struct kred__node *n, int k)
{
	if (n->op == KRED__OP_CST) {
		put_const(e, n->value);
		return;
	}
	if (n->dim == 1)
		k = 0;
	if (n->op == KRED__OP_VAR) {
		int pos = n->ints[0];
		int side = e->l->side[pos];
		const char *fmt = side == KRED__SIDE_ROW ? e->d->row_fmt
				  : side == KRED__SIDE_COL ? e->d->col_fmt : e->d->prm_fmt;

		put_int_index(e, fmt, e->l->offset[pos] + k);
		return;
	}
	if (n->dim == 1)
		kred__buf_printf(e->b, "v%d", n->id);
	else
		kred__buf_printf(e->b, "v%d_%d", n->id, k);
}

/*
 * printf for generated code. Besides %s, %d and %%:
 *   %c  a double, as a literal of type real      %m  an enum kred__math, by its name
 *   %e  (node, int k): element k of a node       %n  (node, int k): the local it defines
 *   %F  (int c): element c of F                  %G  (int c): element c of G
 *   %S  (int s): state slot s                    %T  (string s): state slot s
 *   %O  (int s): the other state's slot s        %P  (string s): same
 *   %C  (int s): the compensation of sum slot s  %D  (int s): the other state's one
 *   %U  (int c): output value c                  %V  (string c): same
 */
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
		case 'm': kred__buf_puts(e->b, e->d->math[va_arg(ap, int)]); break;
		case 'e':
			n = va_arg(ap, const struct kred__node *);
			k = va_arg(ap, int);
			put_elem(e, n, k);
			break;
		case 'n':
			n = va_arg(ap, const struct kred__node *);
			k = va_arg(ap, int);
			if (n->dim == 1)
				kred__buf_printf(e->b, "v%d", n->id);
			else
				kred__buf_printf(e->b, "v%d_%d", n->id, k);
			break;
		case 'F':
			if (e->fbuf)
				put_int_index(e, e->d->f_fmt, va_arg(ap, int));
			else
				put_elem(e, e->r->f, va_arg(ap, int));
			break;
		case 'G': put_elem(e, e->r->w, va_arg(ap, int)); break;
		case 'S': put_int_index(e, e->d->st_fmt, va_arg(ap, int)); break;
		case 'T': kred__buf_printf(e->b, e->d->st_fmt, va_arg(ap, const char *)); break;
		case 'O': put_int_index(e, e->d->ot_fmt, va_arg(ap, int)); break;
		case 'P': kred__buf_printf(e->b, e->d->ot_fmt, va_arg(ap, const char *)); break;
		case 'C': put_int_index(e, e->d->st_fmt, e->nst0 + va_arg(ap, int) - e->sum0); break;
		case 'D': put_int_index(e, e->d->ot_fmt, e->nst0 + va_arg(ap, int) - e->sum0); break;
		case 'U': put_int_index(e, e->d->out_fmt, va_arg(ap, int)); break;
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

/* `real vN_k = ` */
static void def(struct emit *e, const struct kred__node *n, int k)
{
	emitf(e, "\treal %n = ", n, k);
}

static void vec_scal(struct emit *e, const struct kred__node *n)
{
	for (int k = 0; k < n->dim; k++) {
		def(e, n, k);
		emitf(e, "%e * %e;\n", n->arg[0], 0, A1);
	}
}

/* sum over k < d of a_k * b_k (b may be NULL: sum of a_k) */
static void dot(struct emit *e, const struct kred__node *a, const struct kred__node *b, int d)
{
	for (int k = 0; k < d; k++) {
		emitf(e, "%s%e", k ? " + " : "", a, k);
		if (b)
			emitf(e, " * %e", b, k);
	}
}

static void vec_scalprod(struct emit *e, const struct kred__node *n)
{
	def(e, n, 0);
	dot(e, n->arg[0], n->arg[1], n->arg[0]->dim);
	emitf(e, ";\n");
}

static void vec_sum(struct emit *e, const struct kred__node *n)
{
	def(e, n, 0);
	dot(e, n->arg[0], NULL, n->arg[0]->dim);
	emitf(e, ";\n");
}

/* The first extremum (op ">" for the max, "<" for the min): later values replace it only
 * when strictly better, so ties and NaN keep the earlier one, as in the reference. */
static void extremum(struct emit *e, const struct kred__node *n, const char *op, int want_index)
{
	const struct kred__node *a = n->arg[0];
	int id = n->id;

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
	def(e, n, 0);
	dot(e, n->arg[0], n->arg[0], n->arg[0]->dim);
	emitf(e, ";\n");
}

static void vec_norm2(struct emit *e, const struct kred__node *n)
{
	def(e, n, 0);
	emitf(e, "%m(", KRED__MATH_SQRT);
	dot(e, n->arg[0], n->arg[0], n->arg[0]->dim);
	emitf(e, ");\n");
}

/* Rsqrt(SqNorm2(f)) * f, so Normalize(0) = 0 as in KeOps. */
static void vec_normalize(struct emit *e, const struct kred__node *n)
{
	emitf(e, "\treal v%d_s = ", n->id);
	dot(e, n->arg[0], n->arg[0], n->dim);
	emitf(e, ";\n\treal v%d_r = v%d_s == %c ? %c : %c / %m(v%d_s);\n", n->id, n->id, 0.0, 0.0,
	      1.0, KRED__MATH_SQRT, n->id);
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

static void vec_sqdist(struct emit *e, const struct kred__node *n)
{
	int d = max_dim(n->arg[0], n->arg[1]);

	differences(e, n, n->arg[0], n->arg[1], d);
	def(e, n, 0);
	for (int k = 0; k < d; k++)
		emitf(e, "%sv%d_d%d * v%d_d%d", k ? " + " : "", n->id, k, n->id, k);
	emitf(e, ";\n");
}

/* <v, S v> with v the differences vN_dK: S a scalar, a diagonal or a full matrix. */
static void weighted(struct emit *e, const struct kred__node *n, const struct kred__node *s,
		     int d)
{
	int first = 1;

	def(e, n, 0);
	for (int a = 0; a < d; a++) {
		if ((int64_t)s->dim != (int64_t)d * d) { /* 1 or d: d * d overflows an int past 46,340 */
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

	differences(e, n, n->arg[1], NULL, d);
	weighted(e, n, n->arg[0], d);
}

static void vec_wsqdist(struct emit *e, const struct kred__node *n)
{
	int d = max_dim(n->arg[1], n->arg[2]);

	differences(e, n, n->arg[1], n->arg[2], d);
	weighted(e, n, n->arg[0], d);
}

static void vec_zero(struct emit *e, const struct kred__node *n)
{
	for (int k = 0; k < n->dim; k++) {
		def(e, n, k);
		emitf(e, "%c;\n", 0.0);
	}
}

static void vec_elem(struct emit *e, const struct kred__node *n)
{
	def(e, n, 0);
	emitf(e, "%e;\n", n->arg[0], n->ints[0]);
}

/* ElemT(f, D, M): ints = {D, M}. */
static void vec_elemt(struct emit *e, const struct kred__node *n)
{
	for (int k = 0; k < n->dim; k++) {
		def(e, n, k);
		if (k == n->ints[1])
			emitf(e, "%e;\n", n->arg[0], 0);
		else
			emitf(e, "%c;\n", 0.0);
	}
}

/* Extract(f, M, D): ints = {M, D}. */
static void vec_extract(struct emit *e, const struct kred__node *n)
{
	for (int k = 0; k < n->dim; k++) {
		def(e, n, k);
		emitf(e, "%e;\n", n->arg[0], n->ints[0] + k);
	}
}

/* ExtractT(f, M, D): ints = {M, D}. */
static void vec_extractt(struct emit *e, const struct kred__node *n)
{
	int m = n->ints[0], df = n->arg[0]->dim;

	for (int k = 0; k < n->dim; k++) {
		def(e, n, k);
		if (k >= m && k < m + df)
			emitf(e, "%e;\n", n->arg[0], k - m);
		else
			emitf(e, "%c;\n", 0.0);
	}
}

static void vec_concat(struct emit *e, const struct kred__node *n)
{
	int df = n->arg[0]->dim;

	for (int k = 0; k < n->dim; k++) {
		def(e, n, k);
		if (k < df)
			emitf(e, "%e;\n", n->arg[0], k);
		else
			emitf(e, "%e;\n", n->arg[1], k - df);
	}
}

static void vec_onehot(struct emit *e, const struct kred__node *n)
{
	emitf(e, "\treal v%d_r = %m(%e);\n", n->id, KRED__MATH_ROUND, n->arg[0], 0);
	for (int k = 0; k < n->dim; k++) {
		def(e, n, k);
		emitf(e, "v%d_r == %c ? %c : %c;\n", n->id, (double)k, 1.0, 0.0);
	}
}

/* f is a (d(f) / d(g)) x d(g) matrix, row-major. */
static void vec_matvec(struct emit *e, const struct kred__node *n)
{
	int cols = n->arg[1]->dim;

	for (int r = 0; r < n->dim; r++) {
		def(e, n, r);
		for (int c = 0; c < cols; c++)
			emitf(e, "%s%e * %e", c ? " + " : "", n->arg[0], r * cols + c, n->arg[1], c);
		emitf(e, ";\n");
	}
}

/* g is a d(f) x (d(g) / d(f)) matrix, row-major: the result is f^T g. */
static void vec_vecmat(struct emit *e, const struct kred__node *n)
{
	int rows = n->arg[0]->dim, cols = n->dim;

	for (int c = 0; c < cols; c++) {
		def(e, n, c);
		for (int r = 0; r < rows; r++)
			emitf(e, "%s%e * %e", r ? " + " : "", n->arg[0], r, n->arg[1], r * cols + c);
		emitf(e, ";\n");
	}
}

static void vec_tensorprod(struct emit *e, const struct kred__node *n)
{
	int df = n->arg[0]->dim, dg = n->arg[1]->dim;

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

/* TensorDot(f, g, DIMF, DIMG, CONTF, CONTG), as np.tensordot(f, g, (CONTF, CONTG)): the
 * first product into an output value declares it, the next ones add to it. */
static void vec_tensordot(struct emit *e, const struct kred__node *n)
{
	struct list l[4];
	int ia[KRED__MAX_INTS], ib[KRED__MAX_INTS];
	unsigned char *seen = kred__calloc((size_t)n->dim, 1);

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
	[KRED__OP_SCAL] = VEC(vec_scal),
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
	[KRED__OP_ZERO] = VEC(vec_zero),
	[KRED__OP_ELEM] = VEC(vec_elem),
	[KRED__OP_ELEMT] = VEC(vec_elemt),
	[KRED__OP_EXTRACT] = VEC(vec_extract),
	[KRED__OP_EXTRACTT] = VEC(vec_extractt),
	[KRED__OP_CONCAT] = VEC(vec_concat),
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
		const struct emit_op *op;

		if (!mark[id])
			continue;
		op = (unsigned)n->op < KRED__OP_COUNT ? &emit_ops[n->op] : NULL;
		if (!op || (!op->ew && !op->vec && !op->direct)) {
			kred__free(mark);
			return kred__fail(err, KRED_EUNSUPPORTED, -1,
					  "the emitter met %s, which should have been rewritten "
					  "away", op ? kred__ops[n->op].name : "an unknown op");
		}
		if (op->ew) {
			for (int k = 0; k < n->dim; k++) {
				def(e, n, k);
				op->ew(e, n, k);
				emitf(e, ";\n");
			}
		} else if (op->vec) {
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

/* "precise " where the dialect needs it (struct kred_dialect .exact), else "". */
static const char *exact(const struct emit *e)
{
	return e->d->exact ? e->d->exact : "";
}

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

static void init_sums(struct emit *e)
{
	for (int s = e->sum0; s < e->sum0 + e->nsum; s++) {
		emitf(e, "\t%S = %c;\n", s, 0.0);
		if (e->comp)
			emitf(e, "\t%C = %c;\n", s, 0.0);
	}
}

static void sum_init(struct emit *e)
{
	init_sums(e);
}

static void sum_update(struct emit *e)
{
	for (int c = 0; c < e->r->f->dim; c++)
		acc_add(e, e->kahan, c, "%F", c);
}

static void sum_merge(struct emit *e)
{
	for (int c = 0; c < e->r->f->dim; c++) {
		if (e->comp)
			acc_add(e, 1, c, "(%O - %D)", c, c);
		else
			acc_add(e, 0, c, "%O", c);
	}
}

static void sum_finalize(struct emit *e)
{
	for (int c = 0; c < e->r->f->dim; c++) {
		emitf(e, "\t%U = ", c);
		sum_value(e, c);
		emitf(e, ";\n");
	}
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
	for (int c = 0; s < e->nst0; c++)
		lse_fold(e, e->kahan, s++, "%G", c);
	lse_end(e);
}

static void lse_merge(struct emit *e)
{
	emitf(e, "\treal kr_v = %O;\n", 0);
	lse_begin(e);
	for (int s = 1; s < e->nst0; s++) {
		if (e->comp)
			lse_fold(e, 1, s, "(%O - %D)", s, s);
		else
			lse_fold(e, 0, s, "%O", s);
	}
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

static void lse_weight_finalize(struct emit *e)
{
	for (int c = 0; c < e->r->w->dim; c++) {
		emitf(e, "\t%U = %S == -%s ? %S : %S == %s ? %s : %S + %m(", c, 0, e->d->inf, 0, 0,
		      e->d->inf, e->d->nan, 0, KRED__MATH_LOG);
		sum_value(e, 1 + c);
		emitf(e, ");\n");
	}
}

static void softmax_finalize(struct emit *e)
{
	for (int c = 0; c < e->r->w->dim; c++) {
		emitf(e, "\t%U = %S - %S == %c ? ", c, 0, 0, 0.0);
		sum_value(e, 2 + c);
		emitf(e, " / ");
		sum_value(e, 1);
		emitf(e, " : %s;\n", e->d->nan);
	}
}

static void msse_finalize(struct emit *e)
{
	emitf(e, "\t%U = %S;\n", 0, 0);
	for (int s = 1; s < e->nst0; s++) {
		emitf(e, "\t%U = %S == -%s ? %c : %S == %s ? %s : ", s, 0, e->d->inf, 0.0, 0,
		      e->d->inf, e->d->nan);
		sum_value(e, s);
		emitf(e, ";\n");
	}
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
	int d = e->r->f->dim, idx = e->nst0 > d;

	for (int c = 0; c < d; c++) {
		emitf(e, "\t%S = %s%s;\n", c, *ext_op(e) == '<' ? "" : "-", e->d->inf);
		if (idx)
			emitf(e, "\t%S = %c;\n", d + c, -1.0);
	}
}

static void minmax_update(struct emit *e)
{
	for (int c = 0; c < e->r->f->dim; c++)
		emitf(e, "\t%S = %F %s %S ? %F : %S;\n", c, c, ext_op(e), c, c, c);
}

static void minmax_merge(struct emit *e)
{
	for (int c = 0; c < e->r->f->dim; c++)
		emitf(e, "\t%S = %O %s %S ? %O : %S;\n", c, c, ext_op(e), c, c, c);
}

static void minmax_finalize(struct emit *e)
{
	for (int c = 0; c < e->r->f->dim; c++)
		emitf(e, "\t%U = %S;\n", c, c);
}

/* With indices: the first non-NaN term is always taken (a row of +inf gives index 0),
 * then only strictly better ones, so ties keep the first index. */
static void arg_update(struct emit *e)
{
	int d = e->r->f->dim;

	for (int c = 0; c < d; c++) {
		emitf(e, "\t{\n\t\treal kr_x = %F;\n", c);
		emitf(e, "\t\t%s kr_t = kr_x %s %S || (%S < %c && kr_x == kr_x);\n",
		      e->d->bool_type, ext_op(e), c, d + c, 0.0);
		emitf(e, "\t\t%S = kr_t ? kr_x : %S;\n", c, c);
		emitf(e, "\t\t%S = kr_t ? jr : %S;\n\t}\n", d + c, d + c);
	}
}

/* Partial states may come in any order: on a tie the lower index wins. */
static void arg_merge(struct emit *e)
{
	int d = e->r->f->dim;

	for (int c = 0; c < d; c++) {
		emitf(e, "\t{\n\t\t%s kr_t = %O >= %c && (%S < %c || %O %s %S || (%O == %S && "
		      "%O < %S));\n", e->d->bool_type, d + c, 0.0, d + c, 0.0, c, ext_op(e), c, c,
		      c, d + c, d + c);
		emitf(e, "\t\t%S = kr_t ? %O : %S;\n", c, c, c);
		emitf(e, "\t\t%S = kr_t ? %O : %S;\n\t}\n", d + c, d + c, d + c);
	}
}

static void arg_finalize(struct emit *e)
{
	enum kred__red red = e->r->red;
	int d = e->r->f->dim, both = red == KRED__RED_MIN_ARGMIN || red == KRED__RED_MAX_ARGMAX;

	for (int c = 0; c < d; c++) {
		if (both)
			emitf(e, "\t%U = %S;\n", c, c);
		emitf(e, "\t%U = %S;\n", both ? d + c : c, d + c);
	}
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
	return e->r->k * e->r->f->dim <= MAX_UNROLL;
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
		emitf(e, "\t\tfor (int kr_k = 0; kr_k < %d; kr_k++)\n", e->r->k);
		kmin_step(e, "kr_k", c, other);
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
		emitf(e, "\tfor (int kr_s = 0; kr_s < %d; kr_s++) {\n", kd);
		emitf(e, "\t\t%T = %s;\n\t\t%T = %c;\n\t}\n", "kr_s", e->d->inf, ix, -1.0);
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

static void kmin_update(struct emit *e)
{
	int d = e->r->f->dim;
	char cs[16];

	if (kmin_unrolled(e)) {
		for (int c = 0; c < d; c++) {
			snprintf(cs, sizeof(cs), "%d", c);
			/* a one-pass loop, so that kmin_skip can leave it */
			emitf(e, "\tfor (int kr_once = 0; kr_once < 1; kr_once++) {\n"
			      "\t\treal kr_x = %F, kr_i = jr;\n", c);
			kmin_skip(e, cs);
			kmin_bubble(e, cs, 0);
			emitf(e, "\t}\n");
		}
		return;
	}
	emitf(e, "\treal kr_f[%d];\n", d);
	for (int c = 0; c < d; c++)
		emitf(e, "\tkr_f[%d] = %F;\n", c, c);
	emitf(e, "\tfor (int kr_c = 0; kr_c < %d; kr_c++) {\n\t\treal kr_x = kr_f[kr_c], "
	      "kr_i = jr;\n", d);
	kmin_skip(e, "kr_c");
	kmin_bubble(e, "kr_c", 0);
	emitf(e, "\t}\n");
}

/* Each kept pair of the other state bubbles in turn; its empty ranks (index -1) are not
 * taken. */
static void kmin_merge(struct emit *e)
{
	char v[64], ix[64];

	kmin_slots(e, "kr_q", "kr_c", v, ix, sizeof(v));
	emitf(e, "\tfor (int kr_c = 0; kr_c < %d; kr_c++) {\n", e->r->f->dim);
	emitf(e, "\t\tfor (int kr_q = 0; kr_q < %d; kr_q++) {\n", e->r->k);
	emitf(e, "\t\treal kr_x = %P, kr_i = %P;\n", v, ix);
	kmin_bubble(e, "kr_c", 1);
	emitf(e, "\t\t}\n\t}\n");
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
	emitf(e, "\tfor (int kr_s = 0; kr_s < %d; kr_s++) {\n", kd);
	if (vals)
		emitf(e, "\t\t%V = %T;\n", "kr_s", "kr_s");
	if (idx) {
		char o[48], s[48];

		snprintf(o, sizeof(o), "(%d + kr_s)", vals ? kd : 0);
		snprintf(s, sizeof(s), "(%d + kr_s)", kd);
		emitf(e, "\t\t%V = %T;\n", o, s);
	}
	emitf(e, "\t}\n");
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
	e->nst0 = base_slots(r);
	e->kahan = sumlike && r->sum_scheme == KRED_SUM_KAHAN;
	e->sum0 = r->red == KRED__RED_SUM ? 0 : 1;
	e->nsum = sumlike ? e->nst0 - e->sum0 : 0;
	e->comp = e->nsum > 0 && (e->kahan || r->sum_scheme == KRED_SUM_BLOCK);
}

int kred__emit_nstate(const struct kred_reduction *r)
{
	struct emit e;

	setup(&e, &kred__dialect_c, r, NULL, NULL);
	return e.nst0 + (e.comp ? e.nsum : 0);
}

kred_status kred__emit_source(const struct kred_dialect *d, const struct kred_reduction *r,
			      const struct kred__layout *l, const char *tmpl, char **out,
			      struct kred__error *err)
{
	struct kred__buf b = { 0 };
	const struct red_code *rc = &red_codes[r->red];
	struct emit e;
	kred_status s;

	int select = d->eval_params && (kred__reds[r->red].flags & KRED__RED_K);

	*out = NULL;
	setup(&e, d, r, l, &b);
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
			 "#define KR_TILE_MERGE %d\n#define KR_DF %d\n#define KR_SELECT %d\n",
			 e.dbl, l->width[KRED__SIDE_ROW], l->width[KRED__SIDE_COL],
			 l->width[KRED__SIDE_PRM], e.nst0 + (e.comp ? e.nsum : 0), r->out_dim,
			 e.nsum > 0 && r->sum_scheme == KRED_SUM_BLOCK, r->f->dim, select);
	kred__buf_puts(&b, d->prelude);
	kred__buf_printf(&b, "\n%s void kr_init(%s)\n{\n", d->fn_qual, d->init_params);
	rc->init(&e);
	kred__buf_printf(&b, "}\n\n%s void kr_update(%s)\n{\n%s", d->fn_qual, d->update_params,
			 d->update_unused);
	s = emit_formula(&e, err);
	if (s)
		goto fail;
	rc->update(&e);
	kred__buf_printf(&b, "}\n\n%s void kr_merge(%s)\n{\n", d->fn_qual, d->merge_params);
	rc->merge(&e);
	kred__buf_printf(&b, "}\n\n%s void kr_finalize(%s)\n{\n", d->fn_qual, d->finalize_params);
	rc->finalize(&e);
	kred__buf_puts(&b, "}\n\n");
	if (select) {
		kred__buf_printf(&b, "%s void kr_eval(%s)\n{\n%s", d->fn_qual, d->eval_params,
				 d->update_unused);
		e.oom = 0;
		s = emit_formula(&e, err);
		if (s)
			goto fail;
		for (int c = 0; c < r->f->dim; c++) {
			kred__buf_puts(&b, "\t");
			put_int_index(&e, d->f_fmt, c);
			emitf(&e, " = %F;\n", c);
		}
		kred__buf_printf(&b, "}\n\n%s void kr_fold(%s)\n{\n", d->fn_qual, d->fold_params);
		e.fbuf = 1;
		rc->update(&e);
		e.fbuf = 0;
		kred__buf_puts(&b, "}\n\n");
	}
	kred__buf_puts(&b, tmpl);
	if (b.len > MAX_SOURCE) {
		s = kred__fail(err, KRED_EUNSUPPORTED, -1,
			       "the formula is too large for an unrolled kernel (%zu MB of source)",
			       b.len >> 20);
		goto fail;
	}
	*out = kred__buf_take(&b);
	if (!*out)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	return KRED_OK;
fail:
	kred__buf_free(&b);
	return s;
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
	.math = {
		[KRED__MATH_EXP] = "kr_exp",
		[KRED__MATH_LOG] = "kr_log",
		[KRED__MATH_SIN] = "kr_sin",
		[KRED__MATH_COS] = "kr_cos",
		[KRED__MATH_ASIN] = "kr_asin",
		[KRED__MATH_ACOS] = "kr_acos",
		[KRED__MATH_ATAN] = "kr_atan",
		[KRED__MATH_ATAN2] = "kr_atan2",
		[KRED__MATH_SQRT] = "kr_sqrt",
		[KRED__MATH_FLOOR] = "kr_floor",
		[KRED__MATH_ROUND] = "kr_round",
		[KRED__MATH_FABS] = "kr_fabs",
		[KRED__MATH_POW] = "kr_pow",
	},
	.init_params = "real *restrict st, int sst",
	.update_params = "real *restrict st, int sst, const real *restrict xi, int sxi,\n\t"
			 "const real *restrict yj, const real *restrict p, real jr",
	.merge_params = "real *restrict st, int sst, const real *restrict ot, int sot",
	.finalize_params = "const real *restrict st, int sst, real *restrict out",
	.st_fmt = "st[%s * sst]",
	.ot_fmt = "ot[%s * sot]",
	.out_fmt = "out[%s]",
	.row_fmt = "xi[%s * sxi]",
	.col_fmt = "yj[%s]",
	.prm_fmt = "p[%s]",
	.update_unused = "\t(void)xi;\n\t(void)sxi;\n\t(void)yj;\n\t(void)p;\n\t(void)jr;\n",
	.prelude = kred__kernel_c_prelude_h,
	.eval_params = "real *restrict f, int sf, const real *restrict xi, int sxi,\n\t"
		       "const real *restrict yj, const real *restrict p, real jr",
	.fold_params = "real *restrict st, int sst, const real *restrict f, int sf, real jr",
	.f_fmt = "f[%s * sf]",
};
