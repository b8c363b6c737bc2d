/* Tests of the public API's contracts: contexts and backends, errors with offsets and
 * carets, argument validation in run, and an allocation-failure sweep. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static kred_context *ref_ctx(void)
{
	kred_context_options o = { 0 };
	kred_context *ctx = NULL;

	o.backend = "reference";
	ck_assert_int_eq(kred_context_create(&o, &ctx), KRED_OK);
	ck_assert_str_eq(kred_context_backend(ctx), "reference");
	return ctx;
}

static const char *const gauss_aliases[] = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)" };

static kred_spec gauss_spec(void)
{
	kred_spec s = { 0 };

	s.formula = "Exp(-G*SqDist(X,Y))*B";
	s.aliases = gauss_aliases;
	s.n_aliases = 4;
	s.reduction = "Sum";
	s.dtype = KRED_FLOAT64;
	return s;
}

START_TEST(test_null_and_destroy)
{
	kred_context *ctx = NULL;
	kred_reduction *r = (void *)1;
	kred_spec s = gauss_spec();

	kred_context_destroy(NULL);
	kred_reduction_destroy(NULL);
	ck_assert_int_eq(kred_context_create(NULL, NULL), KRED_EINVAL);
	ck_assert_int_eq(kred_reduction_create(NULL, &s, &r), KRED_EINVAL);
	ck_assert_ptr_null(r);
	ctx = ref_ctx();
	ck_assert_int_eq(kred_reduction_create(ctx, NULL, &r), KRED_EINVAL);
	ck_assert_int_eq(kred_reduction_create(ctx, &s, NULL), KRED_EINVAL);
	s.formula = NULL;
	ck_assert_int_eq(kred_reduction_create(ctx, &s, &r), KRED_EINVAL);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "formula"));
	s = gauss_spec();
	s.dtype = (kred_dtype)7;
	ck_assert_int_eq(kred_reduction_create(ctx, &s, &r), KRED_EINVAL);
	ck_assert_int_eq(kred_reduction_run(NULL, 1, 1, NULL, NULL), KRED_EINVAL);
	ck_assert_int_eq(kred_reduction_out_dim(NULL), 0);
	ck_assert_ptr_null(kred_reduction_source(NULL));
	ck_assert_str_eq(kred_errmsg(NULL), "no context");
	kred_context_destroy(ctx);
}
END_TEST

START_TEST(test_unknown_backend)
{
	kred_context_options o = { 0 };
	kred_context *ctx = NULL;

	o.backend = "quantum:3";
	ck_assert_int_eq(kred_context_create(&o, &ctx), KRED_EBACKEND);
	ck_assert_ptr_nonnull(ctx);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "unknown backend 'quantum:3'"));
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "reference"));
	kred_context_destroy(ctx);
	o.backend = "reference:2";
	ck_assert_int_eq(kred_context_create(&o, &ctx), KRED_EBACKEND);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "no devices"));
	kred_context_destroy(ctx);
	/* auto always finds something: at worst the reference backend */
	o.backend = "auto";
	ck_assert_int_eq(kred_context_create(&o, &ctx), KRED_OK);
	kred_context_destroy(ctx);
}
END_TEST

START_TEST(test_env_backend)
{
	kred_context *ctx = NULL;

	setenv("KRED_BACKEND", "reference", 1);
	ck_assert_int_eq(kred_context_create(NULL, &ctx), KRED_OK);
	ck_assert_str_eq(kred_context_backend(ctx), "reference");
	kred_context_destroy(ctx);
	unsetenv("KRED_BACKEND");
}
END_TEST

START_TEST(test_reduction_info)
{
	kred_context *ctx = ref_ctx();
	kred_spec s = gauss_spec();
	kred_reduction *r = NULL;
	int cat, dim;
	const char *name;

	ck_assert_int_eq(kred_reduction_create(ctx, &s, &r), KRED_OK);
	ck_assert_str_eq(kred_errmsg(ctx), "");
	ck_assert_int_eq(kred_error_offset(ctx), -1);
	ck_assert_int_eq(kred_reduction_out_dim(r), 2);
	ck_assert_int_eq(kred_reduction_n_args(r), 4);
	ck_assert_int_eq(kred_reduction_arg(r, 3, &cat, &dim, &name), KRED_OK);
	ck_assert_int_eq(cat, 2);
	ck_assert_int_eq(dim, 1);
	ck_assert_str_eq(name, "G");
	ck_assert_int_eq(kred_reduction_arg(r, 4, &cat, &dim, &name), KRED_EINVAL);
	ck_assert_str_eq(kred_reduction_formula(r), "Mult(Exp(Mult(Minus(G),SqDist(X,Y))),B)");
	ck_assert_ptr_nonnull(kred_reduction_source(r));
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
}
END_TEST

/* Errors through the API: status, offset, and a message naming the culprit, with the
 * formula and a caret when the error has a position. */
static const struct {
	const char *formula, *weight, *reduction, *alias2;
	kred_status status;
	long offset;
	const char *needle;
} api_errors[] = {
	{ "Exp(-G*SqDist(X,Y)", NULL, "Sum", NULL, KRED_ESYNTAX, 18,
	  "  Exp(-G*SqDist(X,Y)\n                    ^" },
	{ "X + B", NULL, "Sum", NULL, KRED_EDIM, 2, "3 and 2" },
	{ "SqDist(X,Y)", NULL, "Summ", NULL, KRED_EREDUCTION, 0, "unknown reduction 'Summ'" },
	{ "X", NULL, "LogSumExp", NULL, KRED_EDIM, -1, "dimension 1, got dimension 3" },
	{ "SqDist(X,Y)", NULL, "LogSumExpWeight", NULL, KRED_EREDUCTION, -1, "needs a weight" },
	{ "SqDist(X,Y)", "B", "Sum", NULL, KRED_EREDUCTION, -1, "takes no weight" },
	{ "SqDist(X,Y)", "B + X", "SumSoftMaxWeight", NULL, KRED_EDIM, 2, "weight:" },
	{ "SqDist(X,Y)", NULL, "Sum", "Q = Vq(3)", KRED_EALIAS, 4, "alias 1:" },
	{ "SqDist(X,Y) + Vi(0,2)", NULL, "Sum", NULL, KRED_EALIAS, -1, "position 0" },
	{ "SqDist(X,Y) + Elem(Vi(9,2),0)", NULL, "Sum", NULL, KRED_EALIAS, -1, "position 4" },
	{ "Grad(SqDist(X,Y), B, G)", NULL, "Sum", NULL, KRED_EGRAD, 18, "does not occur" },
	{ "SqDist(X,Y)", NULL, "ArgKMin(0)", NULL, KRED_ERANGE, 8, "out of range" },
};

START_TEST(test_api_errors)
{
	const char *aliases[] = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)" };
	kred_context *ctx = ref_ctx();
	kred_spec s = { 0 };
	kred_reduction *r = (void *)1;
	kred_status st;

	s.formula = api_errors[_i].formula;
	s.weight = api_errors[_i].weight;
	s.reduction = api_errors[_i].reduction;
	if (api_errors[_i].alias2)
		aliases[1] = api_errors[_i].alias2;
	s.aliases = aliases;
	s.n_aliases = 4;
	st = kred_reduction_create(ctx, &s, &r);
	ck_assert_msg(st == api_errors[_i].status, "case %d: %s: %s", _i, kred_status_name(st),
		      kred_errmsg(ctx));
	ck_assert_ptr_null(r);
	ck_assert_msg(kred_error_offset(ctx) == api_errors[_i].offset, "case %d: offset %ld: %s",
		      _i, kred_error_offset(ctx), kred_errmsg(ctx));
	ck_assert_msg(strstr(kred_errmsg(ctx), api_errors[_i].needle), "case %d: '%s' not in '%s'",
		      _i, api_errors[_i].needle, kred_errmsg(ctx));
	kred_context_destroy(ctx);
}
END_TEST

START_TEST(test_run_validation)
{
	kred_context *ctx = ref_ctx();
	kred_spec s = gauss_spec();
	kred_reduction *r = NULL;
	double x[3] = { 0 }, y[3] = { 0 }, b[2] = { 1, 2 }, g = 1, out[2] = { 7, 7 };
	const void *args[4] = { x, y, b, &g }, *bad[4] = { x, NULL, b, &g };

	ck_assert_int_eq(kred_reduction_create(ctx, &s, &r), KRED_OK);
	ck_assert_int_eq(kred_reduction_run(r, 1, 1, args, out), KRED_OK);
	ck_assert_double_eq_tol(out[0], 1, 1e-15);
	ck_assert_double_eq_tol(out[1], 2, 1e-15);
	ck_assert_int_eq(kred_reduction_run(r, -1, 1, args, out), KRED_EINVAL);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "negative"));
	ck_assert_int_eq(kred_reduction_run(r, 1, -5, args, out), KRED_EINVAL);
	ck_assert_int_eq(kred_reduction_run(r, 1, 1, NULL, out), KRED_EINVAL);
	ck_assert_int_eq(kred_reduction_run(r, 1, 1, bad, out), KRED_EINVAL);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "argument 1 (Y)"));
	ck_assert_int_eq(kred_reduction_run(r, 1, 1, args, NULL), KRED_EINVAL);
	ck_assert_int_eq(kred_reduction_run(r, INT64_MAX / 2, 1, args, out), KRED_EOVERFLOW);
	ck_assert_int_eq(kred_reduction_run(r, 1, INT64_MAX / 8, args, out), KRED_EOVERFLOW);
	/* empty sizes need no pointers for the empty side */
	ck_assert_int_eq(kred_reduction_run(r, 0, 1, bad, NULL), KRED_EINVAL); /* Y has 1 row */
	bad[0] = NULL;
	bad[1] = y;
	ck_assert_msg(kred_reduction_run(r, 0, 1, bad, NULL) == KRED_OK, "%s", kred_errmsg(ctx));
	out[0] = out[1] = 7;
	ck_assert_int_eq(kred_reduction_run(r, 1, 0, args, out), KRED_OK);
	ck_assert(out[0] == 0 && out[1] == 0);
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
}
END_TEST

START_TEST(test_float32_index_limit)
{
	const char *aliases[] = { "X = Vi(1)", "Y = Vj(1)" };
	kred_context *ctx = ref_ctx();
	kred_spec s = { 0 };
	kred_reduction *r = NULL;
	float dummy = 0;
	const void *args[2] = { &dummy, &dummy };

	s.formula = "X - Y";
	s.aliases = aliases;
	s.n_aliases = 2;
	s.reduction = "ArgMin";
	ck_assert_int_eq(kred_reduction_create(ctx, &s, &r), KRED_OK);
	/* the check comes before any data is read */
	ck_assert_int_eq(kred_reduction_run(r, 1, (1 << 24) + 1, args, &dummy), KRED_ERANGE);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "2^24"));
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
}
END_TEST

START_TEST(test_devices_report)
{
	char *text = NULL;

	ck_assert_int_eq(kred_devices_report(&text), KRED_OK);
	ck_assert_ptr_nonnull(strstr(text, "reference: available"));
	ck_assert_ptr_nonnull(strstr(text, "auto: "));
	kred_free(text);
	ck_assert_int_eq(kred_devices_report(NULL), KRED_EINVAL);
}
END_TEST

/* Fails the Nth allocation for every N until the whole sequence succeeds: each run
 * must end in KRED_ENOMEM or success, never crash; leaks are caught by the ASan build. */
static kred_status create_run_destroy(const char *backend, const kred_spec *s, int64_t nx,
				      int64_t ny, const void *const *args, void *out)
{
	kred_context_options o = { 0 };
	kred_context *ctx = NULL;
	kred_reduction *r = NULL;
	kred_status st;

	o.backend = backend;
	st = kred_context_create(&o, &ctx);
	if (st == KRED_OK)
		st = kred_reduction_create(ctx, s, &r);
	if (st == KRED_OK)
		st = kred_reduction_run(r, nx, ny, args, out);
	if (st == KRED_OK) {
		/* the source and the error paths allocate too */
		if (!kred_reduction_source(r))
			st = KRED_ENOMEM;
	}
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
	return st;
}

static const struct {
	const char *formula, *weight, *reduction;
} sweep_rows[] = {
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum" },
	{ "-SqDist(X,Y)*G", NULL, "LogSumExp" },
	{ "-SqDist(X,Y)", "B", "SumSoftMaxWeight" },
	{ "X - Elem(B,0)", NULL, "KMin_ArgKMin(2)" },
	{ "Exp(X + Y) + Exp(X + Y) * G", NULL, "Min_ArgMin" },
	{ "Exp(-G*SqDist(X,Y) + Z)", NULL, "Sum" }, /* an error path: unknown Z */
};

START_TEST(test_alloc_sweep)
{
	kred_spec s = gauss_spec();
	double x[6] = { 0, 1, 2, 3, 4, 5 }, y[9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
	double b[6] = { 1, 2, 3, 4, 5, 6 }, g = 0.1, out[2 * 12];
	const void *args[4] = { x, y, b, &g };
	kred_status want, st;
	long n, fails = 0;

	s.formula = sweep_rows[_i].formula;
	s.weight = sweep_rows[_i].weight;
	s.reduction = sweep_rows[_i].reduction;
	kred__test_alloc_fail(0, 0);
	want = create_run_destroy("reference", &s, 2, 3, args, out);
	for (int sticky = 0; sticky < 2; sticky++) {
		for (n = 1;; n++) {
			kred__test_alloc_fail(n, sticky);
			st = create_run_destroy("reference", &s, 2, 3, args, out);
			if (kred__test_alloc_fail(0, 0) < n)
				break; /* the Nth allocation was never reached: done */
			ck_assert_msg(st == KRED_ENOMEM || st == want,
				      "allocation %ld failed, status %s", n, kred_status_name(st));
			fails += st == KRED_ENOMEM;
			ck_assert_msg(n < 100000, "too many allocations");
		}
		ck_assert_int_eq(st, want);
	}
	ck_assert_int_gt(fails, 5);
}
END_TEST

#define N(a) (int)(sizeof(a) / sizeof((a)[0]))


/* ---- formulas of a megabyte: every one either works or is KRED_EDEPTH, with a short
 * message, in bounded time (no recursion deeper than the depth limit). */

#define MEGA (1 << 20)

/* A chain "X+X+...+X" of n terms (n - 1 nested additions). */
static char *chain(long n, const char *term, const char *op)
{
	size_t tl = strlen(term), ol = strlen(op);
	char *s = malloc((size_t)n * (tl + ol) + 1), *p = s;

	ck_assert_ptr_nonnull(s);
	for (long k = 0; k < n; k++) {
		if (k) {
			memcpy(p, op, ol);
			p += ol;
		}
		memcpy(p, term, tl);
		p += tl;
	}
	*p = 0;
	return s;
}

static kred_status try_formula(kred_context *ctx, const char *f, kred_reduction **r)
{
	static const char *const aliases[] = { "X = Vi(1)", "Y = Vj(1)" };
	kred_spec s = { 0 };

	s.formula = f;
	s.aliases = aliases;
	s.n_aliases = 2;
	s.reduction = "Sum";
	s.dtype = KRED_FLOAT64;
	*r = NULL;
	return kred_reduction_create(ctx, &s, r);
}

/* 1 MB formulas deeper than the limit: a chain, parentheses, minus signs, a chain of
 * calls. Each is KRED_EDEPTH with the offset where the limit was crossed, and the message
 * shows a window of the formula, not the megabyte. */
START_TEST(test_megabyte_too_deep)
{
	kred_context *ctx = ref_ctx();
	kred_reduction *r;
	char *f[4];

	f[0] = chain(MEGA / 2, "X", "+");
	f[1] = malloc(MEGA + 2);
	memset(f[1], '(', MEGA / 2);
	f[1][MEGA / 2] = 'X';
	memset(f[1] + MEGA / 2 + 1, ')', MEGA / 2);
	f[1][MEGA + 1] = 0;
	f[2] = malloc(MEGA + 2);
	memset(f[2], '-', MEGA);
	strcpy(f[2] + MEGA, "X");
	f[3] = chain(MEGA / 4, "Exp(", "");
	for (int k = 0; k < 4; k++) {
		const char *msg;

		ck_assert_int_eq(try_formula(ctx, f[k], &r), KRED_EDEPTH);
		ck_assert_ptr_null(r);
		msg = kred_errmsg(ctx);
		ck_assert_msg(strlen(msg) < 600, "formula %d: a %zu-byte message", k, strlen(msg));
		ck_assert_ptr_nonnull(strstr(msg, "^"));
		ck_assert_int_gt(kred_error_offset(ctx), 4000);
		ck_assert_int_lt(kred_error_offset(ctx), 4 * 4100);
		free(f[k]);
	}
	kred_context_destroy(ctx);
}
END_TEST

/* Sum over j of a balanced tree of 65,536 distinct terms X*k - Y (k = 1..65536), about a
 * megabyte of text nested 17 deep: it works, with the value and gradient of the closed
 * form sum_j sum_k (k x - y_j) = ny K(K+1)/2 x - K sum_j y_j. */
static void balanced(char **p, int lo, int hi)
{
	if (lo == hi) {
		*p += sprintf(*p, "X*%d-Y", lo);
		return;
	}
	*(*p)++ = '(';
	balanced(p, lo, (lo + hi) / 2);
	*(*p)++ = ')';
	*(*p)++ = '+';
	*(*p)++ = '(';
	balanced(p, (lo + hi) / 2 + 1, hi);
	*(*p)++ = ')';
}

START_TEST(test_megabyte_balanced)
{
	enum { K = 65536 };
	kred_context *ctx = ref_ctx();
	kred_reduction *r, *g;
	char *f = malloc(16u * K * 2), *p = f;
	double x[2] = { 0.5, -2 }, y[3] = { 1, 2, 4 }, a[2], one[2] = { 1, 1 }, ga[2];
	const void *args[] = { x, y }, *gargs[] = { x, y, one };
	double sk = (double)K * (K + 1) / 2;

	balanced(&p, 1, K);
	*p = 0;
	ck_assert_uint_gt(strlen(f), 900000);
	ck_assert_msg(try_formula(ctx, f, &r) == KRED_OK, "%.300s", kred_errmsg(ctx));
	ck_assert_int_eq(kred_reduction_run(r, 2, 3, args, a), KRED_OK);
	for (int i = 0; i < 2; i++) {
		double want = 3 * sk * x[i] - K * 7.0;

		ck_assert_msg(fabs(a[i] - want) <= 1e-12 * fabs(sk * 3), "row %d: %.17g, want %.17g",
			      i, a[i], want);
	}
	ck_assert_int_eq(kred_reduction_grad(r, "X", &g), KRED_OK);
	ck_assert_int_eq(kred_reduction_run(g, 2, 3, gargs, ga), KRED_OK);
	for (int i = 0; i < 2; i++)
		ck_assert_msg(fabs(ga[i] - 3 * sk) <= 1e-12 * 3 * sk, "d/dX row %d: %.17g", i,
			      ga[i]);
	kred_reduction_destroy(g);
	kred_reduction_destroy(r);
	free(f);
	kred_context_destroy(ctx);
}
END_TEST

/* The longest chain under the limit works, its gradient too, and its canonical form,
 * nested as deep as the chain is long, parses back to the same text. */
START_TEST(test_longest_chain)
{
	kred_context *ctx = ref_ctx();
	kred_reduction *r, *back, *g;
	char *f = chain(4000, "Exp(X-Y)", "+"), *text;
	double x[1] = { 0.25 }, y[2] = { 0, 1 }, a, one = 1, ga;
	const void *args[] = { x, y }, *gargs[] = { x, y, &one };
	double want = 4000 * (exp(0.25) + exp(-0.75));

	ck_assert_msg(try_formula(ctx, f, &r) == KRED_OK, "%.300s", kred_errmsg(ctx));
	ck_assert_int_eq(kred_reduction_run(r, 1, 2, args, &a), KRED_OK);
	ck_assert_msg(fabs(a - want) <= 1e-12 * want, "%.17g, want %.17g", a, want);
	ck_assert_int_eq(kred_reduction_grad(r, "X", &g), KRED_OK);
	ck_assert_int_eq(kred_reduction_run(g, 1, 2, gargs, &ga), KRED_OK);
	ck_assert_msg(fabs(ga - want) <= 1e-12 * want, "d/dX %.17g, want %.17g", ga, want);
	text = strdup(kred_reduction_formula(r));
	ck_assert_msg(try_formula(ctx, text, &back) == KRED_OK, "%.300s", kred_errmsg(ctx));
	ck_assert_str_eq(kred_reduction_formula(back), text);
	free(text);
	free(f);
	kred_reduction_destroy(back);
	kred_reduction_destroy(g);
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
}
END_TEST

/* A canonical form longer than the printer's 4 MiB (a DAG printed as a tree: here the
 * gradient of Exp(Exp(...(X))), which holds every Exp(...(X)) of the chain, grows as its
 * square) is cut to a prefix of itself followed by "...". The frames still open at the
 * cut once appended their closing parentheses and commas ("Exp())))...,)"), which balanced
 * the text: now they add nothing, and the cut text has more '(' than ')'. Found by
 * tests/fuzz (corpus/formula/regress-print-cut). */
START_TEST(test_cut_canonical_form)
{
	enum { N = 2000 };
	kred_context *ctx = ref_ctx();
	kred_reduction *r, *g;
	char *f = malloc(5 * N + 2), *p = f;
	const char *text;
	size_t len, open = 0, close = 0;

	for (int k = 0; k < N; k++, p += 4)
		memcpy(p, "Exp(", 4);
	*p++ = 'X';
	memset(p, ')', N);
	p[N] = 0;
	ck_assert_msg(try_formula(ctx, f, &r) == KRED_OK, "%.300s", kred_errmsg(ctx));
	ck_assert_int_eq(kred_reduction_grad(r, "X", &g), KRED_OK);
	text = kred_reduction_formula(g);
	len = strlen(text);
	ck_assert_uint_eq(len, (4u << 20) + 3);
	ck_assert_str_eq(text + len - 3, "...");
	for (const char *c = text; *c; c++) {
		open += *c == '(';
		close += *c == ')';
	}
	ck_assert_msg(open > close, "a cut text with %zu '(' and %zu ')'", open, close);
	ck_assert_ptr_null(strstr(text, "()"));
	ck_assert_ptr_null(strstr(text, ",)"));
	kred_reduction_destroy(g);
	kred_reduction_destroy(r);
	free(f);
	kred_context_destroy(ctx);
}
END_TEST

/* Pow's exponent stays within -INT_MAX..INT_MAX, so that every Pow prints to an integer
 * the parser reads back (and that the emitters can negate): the derivative of
 * Pow(X, -INT_MAX), which would need Pow(X, INT_MIN), is KRED_ERANGE; one step up, the
 * derivative exists and its canonical form parses back to itself. Found by tests/fuzz
 * (corpus/formula/regress-pow-int-min). */
START_TEST(test_pow_exponent_limit)
{
	kred_context *ctx = ref_ctx();
	kred_reduction *r, *g, *back;
	char *text;

	ck_assert_msg(try_formula(ctx, "Pow(X, -2147483647) * Y", &r) == KRED_OK, "%s",
		      kred_errmsg(ctx));
	ck_assert_int_eq(kred_reduction_grad(r, "X", &g), KRED_ERANGE);
	ck_assert_ptr_null(g);
	ck_assert_ptr_nonnull(strstr(kred_errmsg(ctx), "Pow"));
	kred_reduction_destroy(r);

	ck_assert_msg(try_formula(ctx, "Pow(X, -2147483646) * Y", &r) == KRED_OK, "%s",
		      kred_errmsg(ctx));
	ck_assert_int_eq(kred_reduction_grad(r, "X", &g), KRED_OK);
	ck_assert_ptr_nonnull(strstr(kred_reduction_formula(g), "Pow(X,-2147483647)"));
	text = strdup(kred_reduction_formula(g));
	kred_reduction_destroy(g);
	/* the gradient's text, over the same variables and GRAD_OUT */
	{
		static const char *const aliases[] = { "X = Vi(1)", "Y = Vj(1)", "GRAD_OUT = Vi(1)" };
		kred_spec s = { .formula = text, .aliases = aliases, .n_aliases = 3,
				.reduction = "Sum", .dtype = KRED_FLOAT64 };

		ck_assert_msg(kred_reduction_create(ctx, &s, &back) == KRED_OK, "%s",
			      kred_errmsg(ctx));
		ck_assert_str_eq(kred_reduction_formula(back), text);
		kred_reduction_destroy(back);
	}
	free(text);
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
}
END_TEST

/* WeightedSqNorm and WeightedSqDist at the largest dimension, with a scalar and a
 * diagonal weight: the reference evaluator told a full matrix by ds != d * d, an int
 * product that overflows past d = 46,340 (undefined behaviour: UBSan's report in the
 * sanitized suites). Found by tests/fuzz (corpus/kernel/regress-wide-weight). */
START_TEST(test_wide_weighted_sqnorm)
{
	enum { D = 65536 };
	static const char *const aliases[] = { "S = Pm(1)", "T = Pm(65536)", "X = Vi(65536)",
					       "Y = Vj(1)" };
	kred_spec s = { .formula = "WeightedSqNorm(S, X) + WeightedSqDist(T, X, Y * X)",
			.aliases = aliases, .n_aliases = 4, .reduction = "Sum",
			.dtype = KRED_FLOAT64 };
	kred_context *ctx = ref_ctx();
	kred_reduction *r;
	double *t = malloc(D * sizeof(double)), *x = malloc(D * sizeof(double));
	double sv = 2, y = 3, out;
	const void *args[] = { &sv, t, x, &y };

	for (int k = 0; k < D; k++) {
		t[k] = 0.5;
		x[k] = 1;
	}
	ck_assert_msg(kred_reduction_create(ctx, &s, &r) == KRED_OK, "%s", kred_errmsg(ctx));
	ck_assert_int_eq(kred_reduction_run(r, 1, 1, args, &out), KRED_OK);
	/* 2 |x|^2 + sum 0.5 (x - 3 x)^2 */
	ck_assert_msg(out == 2.0 * D + 0.5 * 4 * D, "%.17g", out);
	kred_reduction_destroy(r);
	free(t);
	free(x);
	kred_context_destroy(ctx);
}
END_TEST

/* A kernel-product text of a megabyte: a chain of atoms, and parentheses. */
START_TEST(test_megabyte_kernel)
{
	kred_context *ctx = ref_ctx();
	kred_kernel *k = NULL;
	char *text = chain(MEGA / 14, "gaussian(x,y)", "+"), *par = malloc(MEGA + 16);

	ck_assert_int_eq(kred_kernel_parse(ctx, text, &k), KRED_EDEPTH);
	ck_assert_ptr_null(k);
	ck_assert_uint_lt(strlen(kred_errmsg(ctx)), 600);
	memset(par, '(', MEGA / 2);
	strcpy(par + MEGA / 2, "gaussian(x,y)");
	ck_assert_int_eq(kred_kernel_parse(ctx, par, &k), KRED_EDEPTH);
	ck_assert_uint_lt(strlen(kred_errmsg(ctx)), 600);
	free(par);
	free(text);
	kred_context_destroy(ctx);
}
END_TEST

/* Two aliases of one position: the argument is named by the first, as the canonical form
 * writes it, so that a caller can find it by the name the formula shows. */
START_TEST(test_two_aliases)
{
	static const char *const al[] = { "X = Vi(0,3)", "G = Vi(0,3)" };
	kred_context *ctx = ref_ctx();
	kred_reduction *r = NULL;
	kred_spec s = { 0 };
	const char *name = NULL;
	int cat, dim;

	s.formula = "X+G";
	s.aliases = al;
	s.n_aliases = 2;
	s.reduction = "Sum";
	ck_assert_int_eq(kred_reduction_create(ctx, &s, &r), KRED_OK);
	ck_assert_int_eq(kred_reduction_n_args(r), 1);
	ck_assert_int_eq(kred_reduction_arg(r, 0, &cat, &dim, &name), KRED_OK);
	ck_assert_str_eq(name, "X");
	ck_assert_str_eq(kred_reduction_formula(r), "Add(X,X)");
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("api");
	TCase *tc = tcase_create("api");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_null_and_destroy);
	tcase_add_test(tc, test_unknown_backend);
	tcase_add_test(tc, test_env_backend);
	tcase_add_test(tc, test_reduction_info);
	tcase_add_loop_test(tc, test_api_errors, 0, N(api_errors));
	tcase_add_test(tc, test_run_validation);
	tcase_add_test(tc, test_float32_index_limit);
	tcase_add_test(tc, test_devices_report);
	tcase_add_loop_test(tc, test_alloc_sweep, 0, N(sweep_rows));
	tcase_add_test(tc, test_two_aliases);
	tcase_add_test(tc, test_megabyte_too_deep);
	tcase_add_test(tc, test_megabyte_balanced);
	tcase_add_test(tc, test_longest_chain);
	tcase_add_test(tc, test_cut_canonical_form);
	tcase_add_test(tc, test_pow_exponent_limit);
	tcase_add_test(tc, test_wide_weighted_sqnorm);
	tcase_add_test(tc, test_megabyte_kernel);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
