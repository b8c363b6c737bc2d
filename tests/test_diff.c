/* Tests of the derivative engine: every operation's gradient and every reduction's
 * gradient against central finite differences, higher derivatives, and errors. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "probe.h"
#include "diff_cases.h"

/* diff.c: 0 turns the simplifier off (tests and bench only). */


/*
 * Finite differences. Every check compares a symbolic gradient g with the central
 * difference (phi(x + h) - phi(x - h)) / 2h, h = 1e-6 max(1, |x|), in float64. Its
 * error is the truncation h^2 |phi'''| / 6 (about 1e-13 for the O(1) derivatives of
 * these formulas) plus the rounding eps |phi| / h (about 2e-10 |phi|). A tolerance of
 * 1e-6 max(1, |fd|, |phi|) is so more than 1000 times both, and still far below the
 * size of any mistake in a rule (a wrong sign, factor or index is O(|g|)).
 */
#define FD_STEP 1e-6
#define FD_TOL 1e-6

static kred_context *ctx;

/* The backend that runs the gradients and the finite differences: $KRED_TEST_BACKEND,
 * else the reference. */
static const char *backend = "reference";

static void setup(void)
{
	kred_context_options o = { 0 };

	o.backend = backend;
	ck_assert_int_eq(kred_context_create(&o, &ctx), KRED_OK);
	kred__diff_simplify = 1;
}

static void teardown(void)
{
	kred_context_destroy(ctx);
	ctx = NULL;
	kred__diff_simplify = 1;
}

/* A small deterministic generator: each test draws the same points every run. */
static uint64_t rng_state;

static void rng_seed(uint64_t s)
{
	rng_state = s * 0x9e3779b97f4a7c15ull + 1;
}

static double uniform(double lo, double hi)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return lo + (hi - lo) * (double)(rng_state >> 11) / 9007199254740992.0;
}

#define MAX_POS 16

/* Aliases split from "X=Vi(3) Y=Vj(3)", plus extra ones appended. */
struct aliases {
	char buf[1024];
	const char *a[MAX_POS];
	int n;
};

static void split_aliases(struct aliases *al, const char *s)
{
	char *p;

	snprintf(al->buf, sizeof(al->buf), "%s", s);
	al->n = 0;
	for (p = strtok(al->buf, " "); p; p = strtok(NULL, " "))
		al->a[al->n++] = p;
}

/* The arguments of one run, by position. */
struct args {
	int n;
	int cat[MAX_POS], dim[MAX_POS];
	const char *name[MAX_POS];
	double *v[MAX_POS];
	int64_t nx, ny;
};

static int64_t rows_of(const struct args *a, int cat)
{
	return cat == 0 ? a->nx : cat == 1 ? a->ny : 1;
}

static int64_t count_of(const struct args *a, int p)
{
	return rows_of(a, a->cat[p]) * a->dim[p];
}

static kred_reduction *make(const char *formula, const char *weight, const struct aliases *al,
			    const char *reduction, kred_axis axis)
{
	kred_spec s = { 0 };
	kred_reduction *r = NULL;
	kred_status st;

	s.formula = formula;
	s.weight = weight;
	s.aliases = al->a;
	s.n_aliases = (size_t)al->n;
	s.reduction = reduction;
	s.axis = axis;
	s.dtype = KRED_FLOAT64;
	st = kred_reduction_create(ctx, &s, &r);
	ck_assert_msg(st == KRED_OK, "%s [%s]: %s", formula, reduction, kred_errmsg(ctx));
	return r;
}

static kred_reduction *make_op(const char *formula, const struct aliases *al)
{
	return make(formula, NULL, al, "Sum", KRED_REDUCE_J);
}

/* Reads the argument table of r and allocates (zeroed) values for each position. */
static void args_init(struct args *a, const kred_reduction *r, int64_t nx, int64_t ny)
{
	memset(a, 0, sizeof(*a));
	a->nx = nx;
	a->ny = ny;
	a->n = kred_reduction_n_args(r);
	for (int p = 0; p < a->n; p++) {
		ck_assert_int_eq(kred_reduction_arg(r, p, &a->cat[p], &a->dim[p], &a->name[p]),
				 KRED_OK);
		a->v[p] = calloc((size_t)count_of(a, p), sizeof(double));
	}
}

/* Adds one more position (a cotangent, a forward output) of cat x dim. */
static double *args_push(struct args *a, int cat, int dim)
{
	a->cat[a->n] = cat;
	a->dim[a->n] = dim;
	a->name[a->n] = "";
	a->v[a->n] = calloc((size_t)count_of(a, a->n), sizeof(double));
	return a->v[a->n++];
}

static void args_free(struct args *a)
{
	for (int p = 0; p < a->n; p++)
		free(a->v[p]);
	a->n = 0;
}

static int find_arg(const struct args *a, const char *name)
{
	for (int p = 0; p < a->n; p++)
		if (!strcmp(a->name[p], name))
			return p;
	ck_abort_msg("no argument %s", name);
	return -1;
}

static void run(kred_reduction *r, const struct args *a, double *out)
{
	kred_status st = kred_reduction_run(r, a->nx, a->ny, (const void *const *)a->v, out);

	ck_assert_msg(st == KRED_OK, "run %s: %s", kred_reduction_formula(r), kred_errmsg(ctx));
}

static int64_t out_rows(const kred_reduction *r, const struct args *a, kred_axis axis)
{
	return axis == KRED_REDUCE_J ? a->nx : a->ny;
}

/* <forward output, e>: the function whose gradient the engine computes. */
static double phi(kred_reduction *r, const struct args *a, kred_axis axis, const double *e)
{
	int64_t m = out_rows(r, a, axis) * kred_reduction_out_dim(r);
	double *out = calloc((size_t)m, sizeof(double)), s = 0;

	run(r, a, out);
	for (int64_t k = 0; k < m; k++)
		s += out[k] * e[k];
	free(out);
	return s;
}

/* Checks g (the gradient with respect to argument p) against central differences of
 * phi(r, a, axis, e). */
static void check_fd(kred_reduction *r, struct args *a, kred_axis axis, const double *e,
		     int p, const double *g, const char *what)
{
	double phi0 = phi(r, a, axis, e);

	for (int64_t k = 0; k < count_of(a, p); k++) {
		double x = a->v[p][k], h = FD_STEP * fmax(1.0, fabs(x)), fp, fm, fd, tol;

		a->v[p][k] = x + h;
		fp = phi(r, a, axis, e);
		a->v[p][k] = x - h;
		fm = phi(r, a, axis, e);
		a->v[p][k] = x;
		fd = (fp - fm) / (2 * h);
		tol = FD_TOL * fmax(1.0, fmax(fabs(fd), fabs(phi0)));
		ck_assert_msg(isfinite(g[k]) && fabs(g[k] - fd) <= tol,
			      "%s: d/d%s[%lld] = %.15g, finite differences %.15g", what, a->name[p],
			      (long long)k, g[k], fd);
	}
}

/* ---- one row per operation: Grad(F, V, E) against finite differences of (F|E) */

/* The rows (tests/diff_cases.h, which the CUDA suite compiles too): Grad(F, V, E) summed
 * over j for each variable of wrt, against finite differences of (F|E). */

/* Fills argument p from the row's values, else uniformly in [lo, hi]. */
static void fill_arg(struct args *a, int p, const char *values, double lo, double hi)
{
	char key[64];
	const char *s;
	int64_t k = 0;

	for (k = 0; k < count_of(a, p); k++)
		a->v[p][k] = uniform(lo, hi);
	if (!values)
		return;
	snprintf(key, sizeof(key), "%s=", a->name[p]);
	for (s = strstr(values, key); s; s = strstr(s + 1, key))
		if (s == values || s[-1] == ' ')
			break;
	if (!s)
		return;
	s += strlen(key);
	for (k = 0; k < count_of(a, p); k++) {
		char *end;

		a->v[p][k] = strtod(s, &end);
		ck_assert_msg(end != s, "bad values for %s", a->name[p]);
		s = *end == ',' ? end + 1 : end;
	}
}

static void check_op_row(const struct op_row *row, int simplify)
{
	struct aliases al;
	struct args a;
	kred_reduction *rf;
	char ealias[64], wrt[128], *w, formula[1024];
	double *e;
	int d;

	split_aliases(&al, row->aliases);
	rf = make_op(row->formula, &al);
	d = kred_reduction_out_dim(rf);
	args_init(&a, rf, 1, 1);
	for (int p = 0; p < a.n; p++)
		fill_arg(&a, p, row->values, 0.3, 0.9);
	e = args_push(&a, 0, d);
	for (int k = 0; k < d; k++)
		e[k] = uniform(-1, 1);
	snprintf(ealias, sizeof(ealias), "E__=Vi(%d)", d);
	al.a[al.n++] = ealias;
	snprintf(wrt, sizeof(wrt), "%s", row->wrt);
	kred__diff_simplify = simplify;
	for (w = strtok(wrt, " "); w; w = strtok(NULL, " ")) {
		int p = find_arg(&a, w);
		kred_reduction *rg;
		double *g = calloc((size_t)a.dim[p], sizeof(double));

		snprintf(formula, sizeof(formula), "Grad(%s,%s,E__)", row->formula, w);
		rg = make_op(formula, &al);
		ck_assert_int_eq(kred_reduction_out_dim(rg), a.dim[p]);
		run(rg, &a, g);
		check_fd(rf, &a, KRED_REDUCE_J, e, p, g, kred_reduction_formula(rg));
		kred_reduction_destroy(rg);
		free(g);
	}
	kred__diff_simplify = 1;
	args_free(&a);
	kred_reduction_destroy(rf);
}

START_TEST(test_op_grad)
{
	rng_seed((uint64_t)_i + 1);
	check_op_row(&op_rows[_i], 1);
}
END_TEST

/* The same rows with the simplifier off: the plain chain rule must agree, so that a
 * simplification can never be what makes a rule right. */
START_TEST(test_op_grad_unsimplified)
{
	rng_seed((uint64_t)_i + 1);
	check_op_row(&op_rows[_i], 0);
}
END_TEST

#define N(a) (int)(sizeof(a) / sizeof((a)[0]))

/* Every operation of the table is exercised by some row. */
START_TEST(test_op_rows_cover_table)
{
	for (int op = 0; op < KRED__OP_COUNT; op++) {
		char call[64];
		int found = 0;

		if (kred__ops[op].flags & (KRED__OP_INTERNAL | KRED__OP_DERIV))
			continue;
		snprintf(call, sizeof(call), "%s(", kred__ops[op].name);
		for (int k = 0; k < N(op_rows) && !found; k++) {
			const char *s = op_rows[k].formula;

			/* a whole name: "Max(" must not be found inside "ArgMax(" */
			for (s = strstr(s, call); s && !found; s = strstr(s + 1, call))
				found = s == op_rows[k].formula ||
					!((s[-1] >= 'A' && s[-1] <= 'Z') ||
					  (s[-1] >= 'a' && s[-1] <= 'z'));
		}
		ck_assert_msg(found, "no row of op_rows uses %s", kred__ops[op].name);
	}
}
END_TEST

/* ---- gradients of reductions, for Vi, Vj and Pm variables, on both axes */


/* The gradient of r with respect to var, checked against finite differences of
 * <out, e> for the data in a (e: random cotangent, pushed with the forward output). */
static void check_red_grad(kred_reduction *r, struct args *a, kred_axis axis, const char *var,
			   const char *what)
{
	int n = a->n, own = axis == KRED_REDUCE_J ? 0 : 1, d = kred_reduction_out_dim(r);
	int p, cat, dim;
	const char *name;
	kred_reduction *g = NULL;
	double *e, *o, *gv;
	int64_t rows;
	kred_status st;

	e = args_push(a, own, d);
	for (int64_t k = 0; k < count_of(a, n); k++)
		e[k] = uniform(-1, 1);
	o = args_push(a, own, d);
	run(r, a, o);
	st = kred_reduction_grad(r, var, &g);
	ck_assert_msg(st == KRED_OK, "%s: grad %s: %s", what, var, kred_errmsg(ctx));
	p = var[0] == '#' ? atoi(var + 1) : find_arg(a, var);
	ck_assert_int_eq(kred_reduction_out_dim(g), a->dim[p]);
	/* original positions, then the cotangent, then the forward output if needed */
	ck_assert_int_ge(kred_reduction_n_args(g), n + 1);
	ck_assert_int_le(kred_reduction_n_args(g), n + 2);
	ck_assert_int_eq(kred_reduction_arg(g, n, &cat, &dim, &name), KRED_OK);
	ck_assert_int_eq(cat, own);
	ck_assert_int_eq(dim, d);
	ck_assert_msg(!strncmp(name, "GRAD_OUT", 8), "cotangent named %s", name);
	for (int q = 0; q < n; q++) {
		ck_assert_int_eq(kred_reduction_arg(g, q, &cat, &dim, NULL), KRED_OK);
		ck_assert_int_eq(cat, a->cat[q]);
		ck_assert_int_eq(dim, a->dim[q]);
	}
	rows = a->cat[p] == 2 ? 1 : rows_of(a, a->cat[p]);
	gv = calloc((size_t)(rows * a->dim[p]), sizeof(double));
	run(g, a, gv);
	a->n = n; /* the forward reduction takes the first n */
	check_fd(r, a, axis, e, p, gv, what);
	free(gv);
	free(e);
	free(o);
	kred_reduction_destroy(g);
}

START_TEST(test_reduction_grad)
{
	const struct red_row *row = &red_rows[_i];
	const char *const vars[] = { "X", "Y", "P", "#1" };
	struct aliases al;
	struct args a;
	kred_reduction *r;
	char what[256];

	rng_seed(100 + (uint64_t)_i);
	split_aliases(&al, red_aliases);
	r = make(row->formula, row->weight, &al, row->reduction, row->axis);
	for (int v = 0; v < N(vars); v++) {
		args_init(&a, r, 3, 4);
		for (int p = 0; p < a.n; p++)
			fill_arg(&a, p, "P=0.7", -1, 1);
		snprintf(what, sizeof(what), "%s axis %c, wrt %s", row->reduction,
			 row->axis == KRED_REDUCE_J ? 'j' : 'i', vars[v]);
		check_red_grad(r, &a, row->axis, vars[v], what);
		args_free(&a);
	}
	kred_reduction_destroy(r);
}
END_TEST

/* Positions given without alias keep their place in the gradient even when its formula
 * drops them (the gradient of (X|Y) in X does not use X). */
START_TEST(test_grad_positional_args)
{
	struct aliases al;
	struct args a;
	kred_reduction *r;

	rng_seed(7);
	split_aliases(&al, "");
	r = make("(Vi(0,3)|Vj(1,3))*Pm(2,1)", NULL, &al, "Sum", KRED_REDUCE_J);
	for (int v = 0; v < 3; v++) {
		char var[8];

		snprintf(var, sizeof(var), "#%d", v);
		args_init(&a, r, 2, 3);
		for (int p = 0; p < a.n; p++)
			fill_arg(&a, p, NULL, -1, 1);
		check_red_grad(r, &a, KRED_REDUCE_J, var, var);
		args_free(&a);
	}
	kred_reduction_destroy(r);
}
END_TEST

/* ---- higher derivatives and the other derivative operations */

/* Values of a Sum reduction of formula over aliases, nx x ny, with arguments a. */
static double *eval_sum(const char *formula, struct aliases *al, struct args *a, int *dim)
{
	kred_reduction *r = make(formula, NULL, al, "Sum", KRED_REDUCE_J);
	double *out;

	*dim = kred_reduction_out_dim(r);
	out = calloc((size_t)(a->nx * *dim), sizeof(double));
	run(r, a, out);
	kred_reduction_destroy(r);
	return out;
}

/* Hessian of the Gaussian kernel sum: Grad(Grad(k, X, E), X, V) against the closed form
 * sum_j e k (4 p^2 (x - y)((x - y)|v) - 2 p v) and against finite differences of the
 * first gradient. */
START_TEST(test_second_derivative_gaussian)
{
	struct aliases al;
	struct args a;
	kred_reduction *r1;
	double *h, *v, *e;
	int d;

	rng_seed(11);
	split_aliases(&al, "P=Pm(1) X=Vi(3) Y=Vj(3) E=Vi(1) V=Vi(3)");
	r1 = make("Grad(Exp(-P*SqDist(X,Y)),X,E)", NULL, &al, "Sum", KRED_REDUCE_J);
	args_init(&a, r1, 2, 3);
	for (int p = 0; p < a.n; p++)
		fill_arg(&a, p, "P=0.8", -1, 1);
	h = eval_sum("Grad(Grad(Exp(-P*SqDist(X,Y)),X,E),X,V)", &al, &a, &d);
	ck_assert_int_eq(d, 3);
	v = a.v[4];
	e = a.v[3];
	for (int i = 0; i < 2; i++) {
		double want[3] = { 0, 0, 0 }, p = a.v[0][0];

		for (int j = 0; j < 3; j++) {
			double r[3], r2 = 0, rv = 0, k;

			for (int c = 0; c < 3; c++) {
				r[c] = a.v[1][i * 3 + c] - a.v[2][j * 3 + c];
				r2 += r[c] * r[c];
				rv += r[c] * v[i * 3 + c];
			}
			k = exp(-p * r2);
			for (int c = 0; c < 3; c++)
				want[c] += e[i] * k *
					   (4 * p * p * r[c] * rv - 2 * p * v[i * 3 + c]);
		}
		for (int c = 0; c < 3; c++)
			ck_assert_msg(fabs(h[i * 3 + c] - want[c]) <= 1e-12 * (1 + fabs(want[c])),
				      "Hessian[%d][%d] = %.17g, closed form %.17g", i, c,
				      h[i * 3 + c], want[c]);
	}
	/* finite differences of <first gradient, V> in X */
	check_fd(r1, &a, KRED_REDUCE_J, v, 1, h, "Hessian");
	free(h);
	args_free(&a);
	kred_reduction_destroy(r1);
}
END_TEST

/* The gradient reduction of a gradient reduction: d/dY of <d/dX <out, e1>, e2>. */
START_TEST(test_grad_of_grad_reduction)
{
	struct aliases al;
	struct args a;
	kred_reduction *r, *g1 = NULL;

	rng_seed(12);
	split_aliases(&al, "X=Vi(3) Y=Vj(3) P=Pm(1)");
	r = make("Exp(-P*SqDist(X,Y))", NULL, &al, "Sum", KRED_REDUCE_J);
	ck_assert_int_eq(kred_reduction_grad(r, "X", &g1), KRED_OK);
	args_init(&a, g1, 3, 4);
	for (int p = 0; p < a.n; p++)
		fill_arg(&a, p, "P=0.6", -1, 1);
	check_red_grad(g1, &a, KRED_REDUCE_J, "Y", "grad of grad in Y");
	check_red_grad(g1, &a, KRED_REDUCE_J, "P", "grad of grad in P");
	args_free(&a);
	kred_reduction_destroy(g1);
	kred_reduction_destroy(r);
}
END_TEST

/* The gradient of a parameter's gradient (rows summed by the library): its cotangent
 * is one vector, a Pm argument. d/dX <d/dP <out, e1>, e2> by finite differences. */
START_TEST(test_grad_of_pm_grad)
{
	struct aliases al;
	struct args a;
	kred_reduction *r, *g1 = NULL, *g2 = NULL;
	double *e2, gx[6];
	int cat, dim;

	rng_seed(17);
	split_aliases(&al, "X=Vi(3) Y=Vj(3) P=Pm(2)");
	r = make("Exp(-Elem(P,0)*SqDist(X,Y))*Elem(P,1)", NULL, &al, "Sum", KRED_REDUCE_J);
	ck_assert_int_eq(kred_reduction_grad(r, "P", &g1), KRED_OK);
	args_init(&a, g1, 2, 3);
	for (int p = 0; p < a.n; p++)
		fill_arg(&a, p, "P=0.6,1.3", -1, 1);
	ck_assert_int_eq(kred_reduction_out_dim(g1), 2);
	ck_assert_int_eq(kred_reduction_grad(g1, "X", &g2), KRED_OK);
	ck_assert_int_eq(kred_reduction_n_args(g2), 5);
	ck_assert_int_eq(kred_reduction_arg(g2, 4, &cat, &dim, NULL), KRED_OK);
	ck_assert_int_eq(cat, 2);
	ck_assert_int_eq(dim, 2);
	e2 = args_push(&a, 2, 2);
	e2[0] = 0.4;
	e2[1] = -1.1;
	run(g2, &a, gx);
	a.n = 4;
	/* g1's output is one vector of 2 (pm_sum): phi = <g1, e2> */
	for (int k = 0; k < 6; k++) {
		double x = a.v[0][k], h = FD_STEP, o[2], fp, fm;

		a.v[0][k] = x + h;
		run(g1, &a, o);
		fp = o[0] * e2[0] + o[1] * e2[1];
		a.v[0][k] = x - h;
		run(g1, &a, o);
		fm = o[0] * e2[0] + o[1] * e2[1];
		a.v[0][k] = x;
		ck_assert_msg(fabs(gx[k] - (fp - fm) / (2 * h)) <= FD_TOL * fmax(1, fabs(fp)),
			      "d/dX[%d] = %.15g, fd %.15g", k, gx[k], (fp - fm) / (2 * h));
	}
	a.n = 5;
	args_free(&a);
	kred_reduction_destroy(g2);
	kred_reduction_destroy(g1);
	kred_reduction_destroy(r);
}
END_TEST

/* Diff, Divergence, Laplacian, GradMatrix and GradFromPos, one pair (nx = ny = 1). */
START_TEST(test_derivative_ops)
{
	struct aliases al;
	struct args a;
	kred_reduction *r;
	double *f, *df, x0[3], want;
	int d;
	const double h = 1e-5;

	rng_seed(13);
	split_aliases(&al, "X=Vi(3) Y=Vj(3) V=Vi(3) E=Vi(1)");
	r = make("X+Y+V+E", NULL, &al, "Sum", KRED_REDUCE_J); /* just the argument table */
	args_init(&a, r, 1, 1);
	kred_reduction_destroy(r);
	for (int p = 0; p < a.n; p++)
		fill_arg(&a, p, NULL, -1, 1);
	memcpy(x0, a.v[0], sizeof(x0));

	/* Diff(F, X, V) = J V: against (F(x + hV) - F(x - hV)) / 2h */
	df = eval_sum("Diff(Exp(-SqDist(X,Y))*Y,X,V)", &al, &a, &d);
	ck_assert_int_eq(d, 3);
	{
		double fp[3], fm[3];

		for (int s = 0; s < 2; s++) {
			for (int c = 0; c < 3; c++)
				a.v[0][c] = x0[c] + (s ? -h : h) * a.v[2][c];
			f = eval_sum("Exp(-SqDist(X,Y))*Y", &al, &a, &d);
			memcpy(s ? fm : fp, f, sizeof(fp));
			free(f);
		}
		memcpy(a.v[0], x0, sizeof(x0));
		for (int c = 0; c < 3; c++)
			ck_assert_msg(fabs(df[c] - (fp[c] - fm[c]) / (2 * h)) < 1e-8,
				      "Diff[%d] = %.15g, fd %.15g", c, df[c],
				      (fp[c] - fm[c]) / (2 * h));
	}
	free(df);

	/* GradMatrix(F, X), out[i * 3 + k] = d F_i / d X_k, F of dimension 4; and
	 * Divergence of its first three components: the trace */
	df = eval_sum("GradMatrix(Concat(Sin(X*Y),SqNorm2(X)),X)", &al, &a, &d);
	ck_assert_int_eq(d, 12);
	{
		double *div = eval_sum("Divergence(Sin(X*Y),X)", &al, &a, &d), trace = 0;

		ck_assert_int_eq(d, 1);
		for (int k = 0; k < 3; k++) {
			double fp[4], fm[4];

			for (int s = 0; s < 2; s++) {
				a.v[0][k] = x0[k] + (s ? -h : h);
				f = eval_sum("Concat(Sin(X*Y),SqNorm2(X))", &al, &a, &d);
				memcpy(s ? fm : fp, f, sizeof(fp));
				free(f);
			}
			a.v[0][k] = x0[k];
			for (int i = 0; i < 4; i++) {
				double fd = (fp[i] - fm[i]) / (2 * h);

				ck_assert_msg(fabs(df[i * 3 + k] - fd) < 1e-8,
					      "GradMatrix[%d][%d] = %.15g, fd %.15g", i, k,
					      df[i * 3 + k], fd);
			}
			trace += df[k * 3 + k];
		}
		ck_assert_msg(fabs(*div - trace) < 1e-13, "Divergence %.17g, trace %.17g", *div,
			      trace);
		free(div);
	}
	free(df);

	/* Divergence of a field that is not diagonal: sum_k d F_k / d X_k by fd */
	df = eval_sum("Divergence((X-Y)*Exp(-SqDist(X,Y)),X)", &al, &a, &d);
	want = 0;
	for (int k = 0; k < 3; k++) {
		double fp, fm;

		a.v[0][k] = x0[k] + h;
		f = eval_sum("(X-Y)*Exp(-SqDist(X,Y))", &al, &a, &d);
		fp = f[k];
		free(f);
		a.v[0][k] = x0[k] - h;
		f = eval_sum("(X-Y)*Exp(-SqDist(X,Y))", &al, &a, &d);
		fm = f[k];
		free(f);
		a.v[0][k] = x0[k];
		want += (fp - fm) / (2 * h);
	}
	ck_assert_msg(fabs(*df - want) < 1e-8, "Divergence %.15g, fd %.15g", *df, want);
	free(df);

	/* Laplacian of the Gaussian: k (4 |x - y|^2 - 2 d) */
	df = eval_sum("Laplacian(Exp(-SqDist(X,Y)),X)", &al, &a, &d);
	{
		double r2 = 0;

		for (int c = 0; c < 3; c++)
			r2 += (x0[c] - a.v[1][c]) * (x0[c] - a.v[1][c]);
		want = exp(-r2) * (4 * r2 - 6);
		ck_assert_msg(fabs(*df - want) < 1e-13, "Laplacian %.17g, closed form %.17g", *df,
			      want);
	}
	free(df);

	/* GradFromPos(F, 0, E) is Grad(F, X, E) */
	{
		double *g1 = eval_sum("GradFromPos(Exp(-SqDist(X,Y)),0,E)", &al, &a, &d);
		double *g2 = eval_sum("Grad(Exp(-SqDist(X,Y)),X,E)", &al, &a, &d);

		ck_assert_int_eq(d, 3);
		for (int c = 0; c < 3; c++)
			ck_assert(g1[c] == g2[c]);
		free(g1);
		free(g2);
	}
	args_free(&a);
}
END_TEST

/* LogSumExp of values near 1000: exp(F) overflows, the gradient must not. Checked
 * against the soft-max written out here with its own shift. */
START_TEST(test_lse_large_inputs)
{
	struct aliases al;
	struct args a;
	kred_reduction *r, *g;
	const char *const vars[] = { "X", "Y", "P" };
	const int nx = 3, ny = 4;

	rng_seed(14);
	split_aliases(&al, "X=Vi(2) Y=Vj(2) P=Pm(1)");
	r = make("P - SqDist(X,Y)", NULL, &al, "LogSumExp", KRED_REDUCE_J);
	args_init(&a, r, nx, ny);
	for (int p = 0; p < a.n; p++)
		fill_arg(&a, p, "P=1000", -1, 1);
	args_push(&a, 0, 1);
	for (int i = 0; i < nx; i++)
		a.v[3][i] = uniform(0.5, 1.5);
	args_push(&a, 0, 1);
	run(r, &a, a.v[4]);
	for (int i = 0; i < nx; i++)
		ck_assert(isfinite(a.v[4][i]) && a.v[4][i] > 990);
	for (int v = 0; v < 3; v++) {
		double want[8] = { 0 }, got[8];

		for (int i = 0; i < nx; i++) {
			double f[4], m = -INFINITY, s = 0;

			for (int j = 0; j < ny; j++) {
				double d0 = a.v[0][2 * i] - a.v[1][2 * j];
				double d1 = a.v[0][2 * i + 1] - a.v[1][2 * j + 1];

				f[j] = a.v[2][0] - d0 * d0 - d1 * d1;
				m = fmax(m, f[j]);
			}
			for (int j = 0; j < ny; j++)
				s += exp(f[j] - m);
			for (int j = 0; j < ny; j++) {
				double w = a.v[3][i] * exp(f[j] - m) / s;

				for (int c = 0; c < 2; c++) {
					double dc = a.v[0][2 * i + c] - a.v[1][2 * j + c];

					if (v == 0)
						want[2 * i + c] -= 2 * w * dc;
					else if (v == 1)
						want[2 * j + c] += 2 * w * dc;
				}
				if (v == 2)
					want[0] += w;
			}
		}
		g = NULL;
		ck_assert_int_eq(kred_reduction_grad(r, vars[v], &g), KRED_OK);
		run(g, &a, got);
		for (int k = 0; k < (v == 0 ? 2 * nx : v == 1 ? 2 * ny : 1); k++)
			ck_assert_msg(isfinite(got[k]) &&
					      fabs(got[k] - want[k]) <= 1e-12 * (1 + fabs(want[k])),
				      "d/d%s[%d] = %.17g, want %.17g", vars[v], k, got[k], want[k]);
		kred_reduction_destroy(g);
	}
	args_free(&a);
	kred_reduction_destroy(r);
}
END_TEST

/* In float32 the forward output of Min or KMin is rounded to float while the reference
 * evaluator recomputes F in double: the selection must still find its term. The float32
 * gradient is compared with the float64 one on the same (float) data. */
static void grad_in(kred_dtype dtype, const char *reduction, const char *var,
		    const double *const *in, double *g, int64_t count)
{
	static const char *const al[] = { "X=Vi(2)", "Y=Vj(2)", "P=Pm(1)" };
	const int nx = 3, ny = 4, n = 5;
	int64_t sizes[5] = { nx * 2, ny * 2, 1, 0, 0 };
	kred_spec s = { 0 };
	kred_reduction *r = NULL, *gr = NULL;
	void *args[5];
	int d;

	s.formula = F2;
	s.aliases = al;
	s.n_aliases = 3;
	s.reduction = reduction;
	s.dtype = dtype;
	ck_assert_int_eq(kred_reduction_create(ctx, &s, &r), KRED_OK);
	d = kred_reduction_out_dim(r);
	sizes[3] = sizes[4] = nx * d;
	for (int p = 0; p < n; p++) {
		args[p] = calloc((size_t)sizes[p], 8);
		for (int64_t k = 0; k < sizes[p] && p < 4; k++) {
			if (dtype == KRED_FLOAT32)
				((float *)args[p])[k] = (float)in[p][k];
			else
				((double *)args[p])[k] = in[p][k];
		}
	}
	ck_assert_int_eq(kred_reduction_run(r, nx, ny, (const void *const *)args, args[4]),
			 KRED_OK);
	ck_assert_int_eq(kred_reduction_grad(r, var, &gr), KRED_OK);
	{
		double out[16];

		ck_assert_int_eq(kred_reduction_run(gr, nx, ny, (const void *const *)args, out),
				 KRED_OK);
		for (int64_t k = 0; k < count; k++)
			g[k] = dtype == KRED_FLOAT32 ? ((float *)out)[k] : out[k];
	}
	for (int p = 0; p < n; p++)
		free(args[p]);
	kred_reduction_destroy(gr);
	kred_reduction_destroy(r);
}

START_TEST(test_selection_grad_float32)
{
	static const char *const reds[] = { "Min", "Max", "KMin(2)", "Max_ArgMax" };
	double x[6], y[8], p = 0.7f, e[12];
	const double *const in[4] = { x, y, &p, e };

	rng_seed(16);
	for (int k = 0; k < 6; k++)
		x[k] = (float)uniform(-1, 1);
	for (int k = 0; k < 8; k++)
		y[k] = (float)uniform(-1, 1);
	for (int k = 0; k < 12; k++)
		e[k] = (float)uniform(-1, 1);
	for (int k = 0; k < N(reds); k++) {
		double g32[8], g64[8], sum = 0;

		grad_in(KRED_FLOAT32, reds[k], "Y", in, g32, 8);
		grad_in(KRED_FLOAT64, reds[k], "Y", in, g64, 8);
		for (int m = 0; m < 8; m++) {
			ck_assert_msg(fabs(g32[m] - g64[m]) <= 1e-5 * (1 + fabs(g64[m])),
				      "%s: float32 d/dY[%d] = %.9g, float64 %.17g", reds[k], m,
				      g32[m], g64[m]);
			sum += fabs(g64[m]);
		}
		ck_assert(sum > 0.1);
	}
}
END_TEST

/* ---- errors */

START_TEST(test_grad_errors)
{
	static const struct {
		const char *reduction, *var;
		kred_status want;
		const char *msg;
	} rows[] = {
		{ "ArgMin", "X", KRED_EGRAD, "ArgMin" },
		{ "ArgMax", "Y", KRED_EGRAD, "ArgMax" },
		{ "ArgKMin(2)", "X", KRED_EGRAD, "ArgKMin" },
		{ "Sum", "Q", KRED_ENAME, "\"Q\"" },
		{ "Sum", "#3", KRED_ENAME, "#3" },
		{ "Sum", "#", KRED_ENAME, "#" },
		{ "Sum", "", KRED_ENAME, "\"\"" },
	};
	struct aliases al;

	split_aliases(&al, "X=Vi(2) Y=Vj(2) P=Pm(1)");
	for (int k = 0; k < N(rows); k++) {
		kred_reduction *r = make("SqDist(X,Y)*P", NULL, &al, rows[k].reduction,
					 KRED_REDUCE_J);
		kred_reduction *g = (void *)1;

		ck_assert_int_eq(kred_reduction_grad(r, rows[k].var, &g), rows[k].want);
		ck_assert_ptr_null(g);
		ck_assert_msg(strstr(kred_errmsg(ctx), rows[k].msg), "message: %s",
			      kred_errmsg(ctx));
		kred_reduction_destroy(r);
	}
	/* a gradient that computes its own normaliser has no gradient itself */
	{
		kred_reduction *r = make("-SqDist(X,Y)", "X*P", &al, "SumSoftMaxWeight",
					 KRED_REDUCE_J);
		kred_reduction *g = NULL, *g2 = (void *)1;

		ck_assert_int_eq(kred_reduction_grad(r, "Y", &g), KRED_OK);
		ck_assert_int_eq(kred_reduction_n_args(g), 5);
		ck_assert_int_eq(kred_reduction_grad(g, "X", &g2), KRED_EGRAD);
		ck_assert_ptr_null(g2);
		ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "normaliser"));
		kred_reduction_destroy(g);
		kred_reduction_destroy(r);
	}
}
END_TEST

/* Derivatives written in a formula that cannot be: errors with a position. */
START_TEST(test_formula_grad_errors)
{
	static const struct {
		const char *formula;
		kred_status want;
	} rows[] = {
		{ "Grad(SqDist(X,Y),X+Y,P)", KRED_EGRAD },   /* not a variable */
		{ "Grad(SqDist(X,Y),X,Y)", KRED_EDIM },      /* cotangent of dimension 2 */
		{ "Divergence(SqDist(X,Y),X)", KRED_EDIM },  /* field of dimension 1 */
		{ "Laplacian(X-Y,X)", KRED_EDIM },           /* not scalar */
		{ "Diff(SqDist(X,Y),X,P)", KRED_EDIM },      /* direction of dimension 1 */
	};
	struct aliases al;

	split_aliases(&al, "X=Vi(2) Y=Vj(2) P=Pm(1)");
	for (int k = 0; k < N(rows); k++) {
		kred_spec s = { 0 };
		kred_reduction *r = (void *)1;

		s.formula = rows[k].formula;
		s.aliases = al.a;
		s.n_aliases = (size_t)al.n;
		s.reduction = "Sum";
		s.dtype = KRED_FLOAT64;
		ck_assert_msg(kred_reduction_create(ctx, &s, &r) == rows[k].want, "%s: %s",
			      rows[k].formula, kred_errmsg(ctx));
		ck_assert_ptr_null(r);
	}
}
END_TEST

/* ---- size of the Gaussian gradient: node counts with and without simplification */

/* Whether two distinct nodes under root compute the same thing up to the order of the
 * arguments of a commutative operation (hash-consing makes exact copies one node). */
static int has_duplicate(const struct kred__graph *g, const struct kred__node *root)
{
	for (int a = 0; a <= root->id; a++) {
		for (int b = a + 1; b <= root->id; b++) {
			const struct kred__node *x = g->nodes[a], *y = g->nodes[b];
			int comm = x->op == KRED__OP_ADD || x->op == KRED__OP_MULT ||
				   x->op == KRED__OP_SCALPROD;

			if (x->op != y->op || x->nargs != 2 || y->nargs != 2 || !comm ||
			    !kred__node_uses(root, x) || !kred__node_uses(root, y))
				continue;
			if (x->arg[0] == y->arg[1] && x->arg[1] == y->arg[0])
				return 1;
		}
	}
	return 0;
}

static int gaussian_grad_nodes(int simplify, int *forward, char **text)
{
	struct kred__graph *g = kred__graph_new();
	struct kred__error err;
	const struct kred__node *f = NULL, *v, *e, *gr;
	const char *const al[] = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)",
				   "E = Vi(2)" };
	int n;

	kred__error_clear(&err);
	for (int k = 0; k < 5; k++)
		ck_assert_int_eq(kred__parse_alias(g, al[k], k, &err), KRED_OK);
	ck_assert_int_eq(kred__parse_formula(g, "Exp(-G*SqDist(X,Y))*B", &f, &err), KRED_OK);
	v = kred__var_node(g, 0, 3, KRED__CAT_I, &err);
	e = kred__var_node(g, 4, 2, KRED__CAT_I, &err);
	kred__diff_simplify = simplify;
	gr = kred__grad(g, f, v, e, &err);
	kred__diff_simplify = 1;
	ck_assert_msg(gr != NULL, "%s", err.msg);
	*forward = kred__node_count(g, f);
	n = kred__node_count(g, gr);
	if (simplify)
		ck_assert_msg(!has_duplicate(g, gr), "duplicate node in the gradient");
	*text = kred__node_print(g, gr);
	kred__graph_free(g);
	return n;
}

START_TEST(test_gaussian_grad_size)
{
	int fwd, before, after;
	char *t0, *t1;

	before = gaussian_grad_nodes(0, &fwd, &t0);
	after = gaussian_grad_nodes(1, &fwd, &t1);
	printf("Gaussian kernel Exp(-G*SqDist(X,Y))*B: forward %d nodes; gradient in X "
	       "%d nodes without simplification, %d with\n  %s\n  %s\n",
	       fwd, before, after, t0, t1);
	ck_assert_int_le(after, before);
	/* forward (9 nodes, X Y B G E included) plus a handful: the gradient reuses the
	 * forward's Exp and SqDist */
	ck_assert_int_le(after, fwd + 8);
	kred__free(t0);
	kred__free(t1);
}
END_TEST

/* The gradient reductions' products come regrouped (lib/diff.c, regroup): the factors
 * constant over the reduced index first, multiplied together (the compilers lift them
 * out of the loop over it), then the varying scalars, then the vectors. With the
 * factors in the chain rule's order, the Gaussian's gradient in X took six products per
 * pair beyond the exp; here two. Its values are checked by test_reduction_grad. */
START_TEST(test_grad_regrouped)
{
	static const struct {
		const char *var, *want;
	} rows[] = {
		/* over j: G and the cotangent (a Vi) are invariant */
		{ "X", "Mult(Mult(Mult(Mult(2,Minus(G)),GRAD_OUT),"
		       "Mult(Exp(Mult(Minus(G),SqDist(X,Y))),B)),Subtract(X,Y))" },
		/* over i: B (a Vj) is, the cotangent (a Vi now) varies */
		{ "Y", "Mult(Mult(Mult(Mult(-2,Minus(G)),B),"
		       "Mult(Exp(Mult(Minus(G),SqDist(X,Y))),GRAD_OUT)),Subtract(X,Y))" },
	};
	struct aliases a;

	split_aliases(&a, "X=Vi(3) Y=Vj(3) B=Vj(1) G=Pm(1)");
	for (int k = 0; k < 2; k++) {
		kred_reduction *r = make("Exp(-G*SqDist(X,Y))*B", NULL, &a, "Sum", KRED_REDUCE_J);
		kred_reduction *g = NULL;

		ck_assert_int_eq(kred_reduction_grad(r, rows[k].var, &g), KRED_OK);
		ck_assert_str_eq(kred_reduction_formula(g), rows[k].want);
		kred_reduction_destroy(g);
		kred_reduction_destroy(r);
	}
}
END_TEST

/* ---- allocation failures on the derivative paths: every one is reported as
 * KRED_ENOMEM and frees what it made (run under ASan or valgrind for the leaks). */

static const struct {
	const char *formula, *weight, *reduction, *var;
} sweep_rows[] = {
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", "Y" },
	{ "-SqDist(X,Y)*G", "B", "SumSoftMaxWeight", "Y" },
	{ "Laplacian(Exp(-SqDist(X,Y)),X) + Divergence((X-Y)*G,X)", NULL, "KMin(2)", "X" },
	{ "TensorDot(X,Y,Ind(3),Ind(3),Ind(0),Ind(0))+(B|B)", NULL, "Max", "#0" },
};

static kred_status sweep_cycle(int row, const void *const *args, double *out)
{
	static const char *const al[] = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)" };
	kred_context_options o = { 0 };
	kred_context *c = NULL;
	kred_reduction *r = NULL, *g = NULL;
	kred_spec s = { 0 };
	kred_status st;

	s.formula = sweep_rows[row].formula;
	s.weight = sweep_rows[row].weight;
	s.reduction = sweep_rows[row].reduction;
	s.aliases = al;
	s.n_aliases = 4;
	s.dtype = KRED_FLOAT64;
	o.backend = "reference";
	st = kred_context_create(&o, &c);
	if (st == KRED_OK)
		st = kred_reduction_create(c, &s, &r);
	if (st == KRED_OK)
		st = kred_reduction_grad(r, sweep_rows[row].var, &g);
	if (st == KRED_OK)
		st = kred_reduction_run(g, 2, 3, args, out);
	kred_reduction_destroy(g);
	kred_reduction_destroy(r);
	kred_context_destroy(c);
	return st;
}

START_TEST(test_alloc_sweep)
{
	double x[6], y[9], b[6], gm = 0.5, e[4], fo[4], out[64];
	const void *const args[] = { x, y, b, &gm, e, fo };
	kred_status want, st = KRED_OK;
	long fails = 0;

	rng_seed(15);
	for (int k = 0; k < 6; k++)
		x[k] = uniform(-1, 1), b[k] = uniform(-1, 1);
	for (int k = 0; k < 9; k++)
		y[k] = uniform(-1, 1);
	for (int k = 0; k < 4; k++)
		e[k] = uniform(-1, 1), fo[k] = uniform(-1, 1);
	kred__test_alloc_fail(0, 0);
	want = sweep_cycle(_i, args, out);
	ck_assert_msg(want == KRED_OK, "row %d: %s", _i, kred_status_name(want));
	for (int sticky = 0; sticky < 2; sticky++) {
		for (long n = 1;; n++) {
			kred__test_alloc_fail(n, sticky);
			st = sweep_cycle(_i, args, out);
			if (kred__test_alloc_fail(0, 0) < n)
				break;
			ck_assert_msg(st == KRED_ENOMEM || st == want,
				      "allocation %ld failed, status %s", n, kred_status_name(st));
			fails += st == KRED_ENOMEM;
			ck_assert_msg(n < 100000, "too many allocations");
		}
		ck_assert_int_eq(st, want);
	}
	ck_assert_int_gt(fails, 10);
}
END_TEST

int main(void)
{
	const char *env = getenv("KRED_TEST_BACKEND");
	Suite *s;
	TCase *ops = tcase_create("ops"), *reds = tcase_create("reductions");
	TCase *more = tcase_create("derivatives"), *errs = tcase_create("errors");
	if (env && *env) {
		/* A backend that cannot run here is a skip (77), except in CI. */
		int rc;

		backend = env;
		rc = probe_or_skip(backend);
		if (rc)
			return rc < 0 ? 0 : rc;
	}
	s = suite_create("diff");
	tcase_add_checked_fixture(ops, setup, teardown);
	tcase_add_test(ops, test_op_rows_cover_table);
	tcase_add_loop_test(ops, test_op_grad, 0, N(op_rows));
	/* The rules without the simplifier, and the allocation sweep (which runs on the
	 * reference whatever the backend), test the derivative engine alone: a backend
	 * adds nothing to them but its compile time (on POCL, ~2 s per kernel). */
	if (!strcmp(backend, "reference"))
		tcase_add_loop_test(ops, test_op_grad_unsimplified, 0, N(op_rows));
	suite_add_tcase(s, ops);

	tcase_add_checked_fixture(reds, setup, teardown);
	tcase_add_loop_test(reds, test_reduction_grad, 0, N(red_rows));
	tcase_add_test(reds, test_grad_positional_args);
	tcase_add_test(reds, test_grad_of_grad_reduction);
	tcase_add_test(reds, test_grad_of_pm_grad);
	tcase_add_test(reds, test_lse_large_inputs);
	tcase_add_test(reds, test_selection_grad_float32);
	suite_add_tcase(s, reds);

	tcase_add_checked_fixture(more, setup, teardown);
	tcase_add_test(more, test_second_derivative_gaussian);
	tcase_add_test(more, test_derivative_ops);
	tcase_add_test(more, test_gaussian_grad_size);
	tcase_add_test(more, test_grad_regrouped);
	suite_add_tcase(s, more);

	tcase_add_checked_fixture(errs, setup, teardown);
	tcase_add_test(errs, test_grad_errors);
	tcase_add_test(errs, test_formula_grad_errors);
	tcase_set_timeout(errs, 600);
	if (!strcmp(backend, "reference"))
		tcase_add_loop_test(errs, test_alloc_sweep, 0, N(sweep_rows));
	suite_add_tcase(s, errs);

	return run_suites(NULL, s) ? EXIT_FAILURE : EXIT_SUCCESS;
}
