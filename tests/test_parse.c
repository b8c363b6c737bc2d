/* Tests of the parser, the printer and hash-consing: valid formulas with their canonical
 * form and dimension, invalid ones with their status and byte offset, aliases. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Every valid formula is parsed over these aliases. */
static const char *const aliases[] = {
	"X = Vi(0, 3)", "Y = Vj(1, 3)", "G = Pm(2, 1)", "B = Vj(3, 2)",
	"U = Vi(4, 1)", "M = Pm(5, 9)", "W = Pm(6, 3)", "V = Vj(7, 1)",
};

static struct kred__graph *graph(void)
{
	struct kred__graph *g = kred__graph_new();
	struct kred__error err;

	ck_assert_ptr_nonnull(g);
	for (size_t k = 0; k < sizeof(aliases) / sizeof(aliases[0]); k++) {
		kred__error_clear(&err);
		ck_assert_int_eq(kred__parse_alias(g, aliases[k], (int)k, &err), KRED_OK);
	}
	return g;
}

static const struct {
	const char *src, *canonical;
	int dim;
} valid[] = {
	{ "X", "X", 3 },
	{ "X + Y", "Add(X,Y)", 3 },
	{ "X - Y", "Subtract(X,Y)", 3 },
	{ "X * Y", "Mult(X,Y)", 3 },
	{ "X / Y", "Divide(X,Y)", 3 },
	{ "-X", "Minus(X)", 3 },
	{ "G * X", "Mult(G,X)", 3 },
	{ "X * 2", "Mult(X,2)", 3 },
	{ "-2", "-2", 1 },
	{ "0.5", "0.5", 1 },
	{ "1e-3", "0.001", 1 },
	{ "2.5e2", "250", 1 },
	{ "X ** 2", "Square(X)", 3 },
	{ "X ^ 3", "Pow(X,3)", 3 },
	{ "X ** -1", "Pow(X,-1)", 3 },
	{ "X ** 0.5", "Powf(X,0.5)", 3 },
	{ "-X ** 2", "Minus(Square(X))", 3 },
	{ "(X|Y)", "Scalprod(X,Y)", 1 },
	{ "(X - Y | X + Y)", "Scalprod(Subtract(X,Y),Add(X,Y))", 1 },
	{ "X + Y * G", "Add(X,Mult(Y,G))", 3 },
	{ "(X + Y) * G", "Mult(Add(X,Y),G)", 3 },
	{ "X - Y - X", "Subtract(Subtract(X,Y),X)", 3 },
	{ "X / Y / G", "Divide(Divide(X,Y),G)", 3 },
	{ "X < Y", "Less(X,Y)", 3 },
	{ "X <= Y", "LessEqual(X,Y)", 3 },
	{ "X > Y", "Greater(X,Y)", 3 },
	{ "X >= Y", "GreaterEqual(X,Y)", 3 },
	{ "X == Y", "Equal(X,Y)", 3 },
	{ "X != Y", "NotEqual(X,Y)", 3 },
	{ "X + Y < G", "Less(Add(X,Y),G)", 3 },
	{ "Exp(-G*SqDist(X,Y))*B", "Mult(Exp(Mult(Minus(G),SqDist(X,Y))),B)", 2 },
	{ "Minus(X)", "Minus(X)", 3 },
	{ "Inv(X)", "Inv(X)", 3 },
	{ "Exp(X)", "Exp(X)", 3 },
	{ "Log(X)", "Log(X)", 3 },
	{ "XLogX(X)", "XLogX(X)", 3 },
	{ "Sin(X)", "Sin(X)", 3 },
	{ "SinXDivX(X)", "SinXDivX(X)", 3 },
	{ "Asin(X)", "Asin(X)", 3 },
	{ "Cos(X)", "Cos(X)", 3 },
	{ "Acos(X)", "Acos(X)", 3 },
	{ "Atan(X)", "Atan(X)", 3 },
	{ "Atan2(X, Y)", "Atan2(X,Y)", 3 },
	{ "Sqrt(X)", "Sqrt(X)", 3 },
	{ "Rsqrt(X)", "Rsqrt(X)", 3 },
	{ "Square(X)", "Square(X)", 3 },
	{ "Pow(X, -2)", "Pow(X,-2)", 3 },
	{ "Powf(X, G)", "Powf(X,G)", 3 },
	{ "Abs(X)", "Abs(X)", 3 },
	{ "Sign(X)", "Sign(X)", 3 },
	{ "Step(X)", "Step(X)", 3 },
	{ "ReLU(X)", "ReLU(X)", 3 },
	{ "Clamp(X, G, Y)", "Clamp(X,G,Y)", 3 },
	{ "ClampInt(X, 0, 1)", "ClampInt(X,0,1)", 3 },
	{ "IfElse(X, Y, G)", "IfElse(X,Y,G)", 3 },
	{ "Mod(X, G, G)", "Mod(X,G,G)", 3 },
	{ "Round(X, 2)", "Round(X,2)", 3 },
	{ "Floor(X)", "Floor(X)", 3 },
	{ "Add(X, Y)", "Add(X,Y)", 3 },
	{ "Subtract(X, G)", "Subtract(X,G)", 3 },
	{ "Mult(G, G)", "Mult(G,G)", 1 },
	{ "Divide(X, G)", "Divide(X,G)", 3 },
	{ "Scal(G, Y)", "Scal(G,Y)", 3 },
	{ "Scalprod(X, Y)", "Scalprod(X,Y)", 1 },
	{ "Sum(X)", "Sum(X)", 1 },
	{ "Max(X)", "Max(X)", 1 },
	{ "Min(X)", "Min(X)", 1 },
	{ "ArgMax(X)", "ArgMax(X)", 1 },
	{ "ArgMin(X)", "ArgMin(X)", 1 },
	{ "SqNorm2(X)", "SqNorm2(X)", 1 },
	{ "Norm2(X)", "Norm2(X)", 1 },
	{ "Normalize(X)", "Normalize(X)", 3 },
	{ "SqDist(X, Y)", "SqDist(X,Y)", 1 },
	{ "WeightedSqNorm(G, X)", "WeightedSqNorm(G,X)", 1 },
	{ "WeightedSqNorm(W, X)", "WeightedSqNorm(W,X)", 1 },
	{ "WeightedSqNorm(M, X)", "WeightedSqNorm(M,X)", 1 },
	{ "WeightedSqDist(M, X, Y)", "WeightedSqDist(M,X,Y)", 1 },
	{ "IntCst(3)", "3", 1 },
	{ "IntInv(4)", "0.25", 1 },
	{ "Zero(4)", "Zero(4)", 4 },
	{ "Elem(X, 2)", "Elem(X,2)", 1 },
	{ "ElemT(G, 5, 1)", "ElemT(G,5,1)", 5 },
	{ "Extract(X, 1, 2)", "Extract(X,1,2)", 2 },
	{ "ExtractT(B, 1, 4)", "ExtractT(B,1,4)", 4 },
	{ "Concat(X, B)", "Concat(X,B)", 5 },
	{ "OneHot(G, 4)", "OneHot(G,4)", 4 },
	{ "MatVecMult(M, X)", "MatVecMult(M,X)", 3 },
	{ "VecMatMult(X, M)", "VecMatMult(X,M)", 3 },
	{ "TensorProd(X, B)", "TensorProd(X,B)", 6 },
	{ "Kron(X, B, 3, 2)", "Kron(X,B,Ind(3),Ind(2))", 6 },
	{ "TensorDot(M, X, Ind(3,3), Ind(3), Ind(1), Ind(0))",
	  "TensorDot(M,X,Ind(3,3),Ind(3),Ind(1),Ind(0))", 3 },
	{ "Vi(0, 3)", "X", 3 },
	{ "Vj(9, 2)", "Var(9,2,1)", 2 },
	{ "Var(1, 3, 1)", "Y", 3 },
	{ "Vx(0,3) + Vy(1,3)", "Add(X,Y)", 3 },
	{ "Pm(2, 1)", "G", 1 },
	{ "Grad(SqDist(X,Y), X, G)", "Grad(SqDist(X,Y),X,G)", 3 },
	{ "Diff(SqNorm2(X), X, X)", "Diff(SqNorm2(X),X,X)", 1 },
	{ "GradFromPos(SqDist(X,Y), 1, G)", "Grad(SqDist(X,Y),Y,G)", 3 },
	{ "GradMatrix(X, X)", "GradMatrix(X,X)", 9 },
	{ "Divergence(X, X)", "Divergence(X,X)", 1 },
	{ "Laplacian(SqNorm2(X), X)", "Laplacian(SqNorm2(X),X)", 1 },
	{ "X + G", "Add(X,G)", 3 },
	{ "  X  *  (  Y  )  ", "Mult(X,Y)", 3 },
	{ "1/X", "Divide(1,X)", 3 },
	{ "-(X)", "Minus(X)", 3 },
	{ "--X", "Minus(Minus(X))", 3 },
	{ "-(2)", "-2", 1 },
	{ "X*-2", "Mult(X,-2)", 3 },
	{ "0.1", "0.1", 1 },
	{ "3.14159", "3.14159", 1 },
	{ "Exp(-SqDist(X,Y)/G)", "Exp(Divide(Minus(SqDist(X,Y)),G))", 1 },
	{ "U*Y", "Mult(U,Y)", 3 },
	{ "V", "V", 1 },
	{ "\tX\n+\nY", "Add(X,Y)", 3 },
};

START_TEST(test_valid)
{
	struct kred__graph *g = graph();
	struct kred__error err;
	const struct kred__node *n = NULL, *again = NULL;
	char *text;

	kred__error_clear(&err);
	ck_assert_msg(kred__parse_formula(g, valid[_i].src, &n, &err) == KRED_OK,
		      "'%s': %s", valid[_i].src, err.msg);
	ck_assert_int_eq(n->dim, valid[_i].dim);
	text = kred__node_print(g, n);
	ck_assert_str_eq(text, valid[_i].canonical);
	/* the canonical text reads back into the same node */
	ck_assert_int_eq(kred__parse_formula(g, text, &again, &err), KRED_OK);
	ck_assert_ptr_eq(again, n);
	kred__free(text);
	kred__graph_free(g);
}
END_TEST

static const struct {
	const char *src;
	kred_status status;
	long offset;
} invalid[] = {
	{ "Exp(-G*SqDist(X,Y)", KRED_ESYNTAX, 18 },
	{ "", KRED_ESYNTAX, 0 },
	{ "   ", KRED_ESYNTAX, 0 },
	{ "X +", KRED_ESYNTAX, 3 },
	{ "X Y", KRED_ESYNTAX, 2 },
	{ "Z", KRED_ENAME, 0 },
	{ "X + Zed", KRED_ENAME, 4 },
	{ "Foo(X)", KRED_ENAME, 0 },
	{ "Exp(X, Y)", KRED_EARITY, 0 },
	{ "Atan2(X)", KRED_EARITY, 0 },
	{ "Exp()", KRED_EARITY, 0 },
	{ "Concat(X)", KRED_EARITY, 0 },
	{ "Vi(0,3,1)", KRED_EARITY, 0 },
	{ "X + B", KRED_EDIM, 2 },
	{ "(X|B)", KRED_EDIM, 2 },
	{ "SqDist(X, B)", KRED_EDIM, 0 },
	{ "Scal(X, Y)", KRED_EDIM, 0 },
	{ "MatVecMult(M, B)", KRED_EDIM, 0 },
	{ "WeightedSqNorm(B, X)", KRED_EDIM, 0 },
	{ "OneHot(X, 3)", KRED_EDIM, 0 },
	{ "ElemT(X, 3, 1)", KRED_EDIM, 0 },
	{ "Laplacian(X, X)", KRED_EDIM, 0 },
	{ "Divergence(Concat(X, U), X)", KRED_EDIM, 0 },
	{ "Clamp(X, B, Y)", KRED_EDIM, 0 },
	{ "Kron(X, B, 2, 2)", KRED_EDIM, 0 },
	{ "Grad(SqNorm2(X), X, X)", KRED_EDIM, 0 },
	{ "1 + Exp(X + B)", KRED_EDIM, 10 },
	{ "X)", KRED_ESYNTAX, 1 },
	{ "(X", KRED_ESYNTAX, 2 },
	{ "((X)", KRED_ESYNTAX, 4 },
	{ "Sum(X", KRED_ESYNTAX, 5 },
	{ "X,Y", KRED_ESYNTAX, 1 },
	{ "X|Y", KRED_ESYNTAX, 1 },
	{ "X**", KRED_ESYNTAX, 3 },
	{ "X $ Y", KRED_ESYNTAX, 2 },
	{ "Exp", KRED_ESYNTAX, 0 },
	{ "Pow(X, 1.5)", KRED_ESYNTAX, 7 },
	{ "Elem(X, 3)", KRED_ERANGE, 0 },
	{ "Elem(X, -1)", KRED_ERANGE, 0 },
	{ "Extract(X, 2, 2)", KRED_ERANGE, 0 },
	{ "Zero(0)", KRED_ERANGE, 0 },
	{ "Var(0, 3, 5)", KRED_ERANGE, 0 },
	{ "IntInv(0)", KRED_ERANGE, 0 },
	{ "Elem(X, 99999999999)", KRED_ERANGE, 8 },
	{ "1e999", KRED_ERANGE, 0 },
	{ "TensorDot(M, X, Ind(3,3), Ind(3), Ind(1), Ind(1))", KRED_ERANGE, 0 },
	{ "Ind(1)", KRED_ENAME, 0 },
	{ "Grad(X, Y, X)", KRED_EGRAD, 8 },
	{ "Grad(SqNorm2(X), X*2, G)", KRED_EGRAD, 17 },
	{ "GradFromPos(SqDist(X,Y), 5, G)", KRED_EGRAD, 0 },
	/* found by tests/fuzz: sums and products of integer arguments that overflowed
	 * (undefined behaviour) in the dimension rules (corpus/formula/regress-ops-*) */
	{ "Extract(X, 1, 2147483647)", KRED_ERANGE, 0 },
	{ "ExtractT(X, 2147483647, 5)", KRED_ERANGE, 0 },
	{ "TensorDot(X, X, Ind(65536,65536,65536,65536,3), Ind(3), Ind(4), Ind(0))", KRED_EDIM,
	  0 },
	{ "Kron(X, X, Ind(65536,65536,65536,65536,3), Ind(1,1,1,1,3))", KRED_EDIM, 0 },
	{ "Pow(X, -2147483648)", KRED_ERANGE, 7 },
};

START_TEST(test_invalid)
{
	struct kred__graph *g = graph();
	struct kred__error err;
	const struct kred__node *n = (const void *)1;
	kred_status s;

	kred__error_clear(&err);
	s = kred__parse_formula(g, invalid[_i].src, &n, &err);
	ck_assert_msg(s == invalid[_i].status, "'%s': got %s (%s), expected %s", invalid[_i].src,
		      kred_status_name(s), err.msg, kred_status_name(invalid[_i].status));
	ck_assert_msg(err.offset == invalid[_i].offset, "'%s': offset %ld, expected %ld (%s)",
		      invalid[_i].src, err.offset, invalid[_i].offset, err.msg);
	ck_assert_ptr_null(n);
	ck_assert(strlen(err.msg) > 0);
	kred__graph_free(g);
}
END_TEST

/* A formula nested 100,000 deep is an error, not a stack overflow. */
START_TEST(test_deep)
{
	static const char *const open[] = { "Exp(", "(", "-", "Sum(" };
	struct kred__graph *g = graph();
	struct kred__error err;
	const struct kred__node *n;
	struct kred__buf b = { 0 };
	const int depth = 100000;
	char *src;

	for (int k = 0; k < depth; k++)
		kred__buf_puts(&b, open[_i]);
	kred__buf_puts(&b, "X");
	for (int k = 0; k < depth && _i != 2; k++)
		kred__buf_puts(&b, ")");
	src = kred__buf_take(&b);
	kred__error_clear(&err);
	ck_assert_int_eq(kred__parse_formula(g, src, &n, &err), KRED_EDEPTH);
	ck_assert_int_ge(err.offset, 0);
	kred__free(src);
	kred__graph_free(g);
}
END_TEST

START_TEST(test_depth_limit_ok)
{
	/* 100 levels are fine */
	struct kred__graph *g = graph();
	struct kred__error err;
	const struct kred__node *n;
	struct kred__buf b = { 0 };
	char *src;

	for (int k = 0; k < 100; k++)
		kred__buf_puts(&b, "Exp(");
	kred__buf_puts(&b, "X");
	for (int k = 0; k < 100; k++)
		kred__buf_puts(&b, ")");
	src = kred__buf_take(&b);
	kred__error_clear(&err);
	ck_assert_int_eq(kred__parse_formula(g, src, &n, &err), KRED_OK);
	ck_assert_int_eq(kred__node_count(g, n), 101);
	kred__free(src);
	kred__graph_free(g);
}
END_TEST

START_TEST(test_hash_consing)
{
	struct kred__graph *g = graph();
	struct kred__error err;
	const struct kred__node *a, *b;

	kred__error_clear(&err);
	ck_assert_int_eq(kred__parse_formula(g, "Exp(SqDist(X,Y)) + SqDist(X,Y)", &a, &err), 0);
	/* X, Y, SqDist, Exp, Add: the repeated SqDist is one node */
	ck_assert_int_eq(kred__node_count(g, a), 5);
	ck_assert_ptr_eq(a->arg[0]->arg[0], a->arg[1]);
	ck_assert_int_eq(kred__parse_formula(g, "SqDist(Vi(0,3), Var(1,3,1))", &b, &err), 0);
	ck_assert_ptr_eq(b, a->arg[1]);
	/* 0 and -0 are different constants; 2 and IntCst(2) the same */
	ck_assert_int_eq(kred__parse_formula(g, "0", &a, &err), 0);
	ck_assert_int_eq(kred__parse_formula(g, "-0", &b, &err), 0);
	ck_assert_ptr_ne(a, b);
	ck_assert_int_eq(kred__parse_formula(g, "2", &a, &err), 0);
	ck_assert_int_eq(kred__parse_formula(g, "IntCst(2)", &b, &err), 0);
	ck_assert_ptr_eq(a, b);
	kred__graph_free(g);
}
END_TEST

static const struct {
	const char *src;
	kred_status status;
	long offset;
	int pos, dim, cat;
} alias_rows[] = {
	{ "X = Vi(3)", KRED_OK, -1, 5, 3, 0 },
	{ "X=Vj(2,4)", KRED_OK, -1, 2, 4, 1 },
	{ "X = Vx(0,3)", KRED_OK, -1, 0, 3, 0 },
	{ "X = Vy(1)", KRED_OK, -1, 5, 1, 1 },
	{ "Gamma_2 = Pm(1)", KRED_OK, -1, 5, 1, 2 },
	{ "X = Var(3,2,2)", KRED_OK, -1, 3, 2, 2 },
	{ "  X  =  Pm ( 7 , 2 )  ", KRED_OK, -1, 7, 2, 2 },
	{ "X = Vk(3)", KRED_EALIAS, 4, 0, 0, 0 },
	{ "X Vi(3)", KRED_ESYNTAX, 2, 0, 0, 0 },
	{ "Exp = Vi(3)", KRED_EALIAS, 0, 0, 0, 0 },
	{ "Vi = Vi(3)", KRED_EALIAS, 0, 0, 0, 0 },
	{ "X = Vi(0)", KRED_ERANGE, 4, 0, 0, 0 },
	{ "X = Vi()", KRED_ESYNTAX, 7, 0, 0, 0 },
	{ "X = Vi(1,2,3)", KRED_EARITY, 4, 0, 0, 0 },
	{ "X = Var(0,3)", KRED_EARITY, 4, 0, 0, 0 },
	{ "X = Var(0,3,7)", KRED_ERANGE, 4, 0, 0, 0 },
	{ "X = Vi(3) junk", KRED_ESYNTAX, 10, 0, 0, 0 },
	{ "= Vi(3)", KRED_ESYNTAX, 0, 0, 0, 0 },
	{ "X = Vi(-1, 3)", KRED_ERANGE, 4, 0, 0, 0 },
};

START_TEST(test_alias)
{
	struct kred__graph *g = kred__graph_new();
	struct kred__error err;
	const struct kred__var *v;
	kred_status s;

	kred__error_clear(&err);
	s = kred__parse_alias(g, alias_rows[_i].src, 5, &err);
	ck_assert_msg(s == alias_rows[_i].status, "'%s': %s (%s)", alias_rows[_i].src,
		      kred_status_name(s), err.msg);
	if (s == KRED_OK) {
		ck_assert_int_eq(g->n_vars, 1);
		v = &g->vars[0];
		ck_assert_int_eq(v->pos, alias_rows[_i].pos);
		ck_assert_int_eq(v->dim, alias_rows[_i].dim);
		ck_assert_int_eq(v->cat, alias_rows[_i].cat);
	} else {
		ck_assert_msg(err.offset == alias_rows[_i].offset, "'%s': offset %ld (%s)",
			      alias_rows[_i].src, err.offset, err.msg);
	}
	kred__graph_free(g);
}
END_TEST

/* An alias that ends early says so, not "the end of the formula" (seen in the messages
 * of the formula fuzz harness, KRED_FUZZ_VERBOSE=1). */
START_TEST(test_alias_end_message)
{
	struct kred__graph *g = kred__graph_new();
	struct kred__error err;

	kred__error_clear(&err);
	ck_assert_int_eq(kred__parse_alias(g, "X = Vi(3", 0, &err), KRED_ESYNTAX);
	ck_assert_msg(strstr(err.msg, "end of the alias") && !strstr(err.msg, "formula"), "%s",
		      err.msg);
	kred__error_clear(&err);
	ck_assert_int_eq(kred__parse_alias(g, "", 0, &err), KRED_ESYNTAX);
	ck_assert_msg(strstr(err.msg, "end of the alias"), "%s", err.msg);
	kred__graph_free(g);
}
END_TEST

START_TEST(test_alias_conflicts)
{
	struct kred__graph *g = kred__graph_new();
	struct kred__error err;

	kred__error_clear(&err);
	ck_assert_int_eq(kred__parse_alias(g, "X = Vi(0,3)", 0, &err), KRED_OK);
	ck_assert_int_eq(kred__parse_alias(g, "X = Vj(1,3)", 1, &err), KRED_EALIAS);
	ck_assert_ptr_nonnull(strstr(err.msg, "twice"));
	kred__error_clear(&err);
	ck_assert_int_eq(kred__parse_alias(g, "Y = Vj(0,3)", 1, &err), KRED_EALIAS);
	ck_assert_ptr_nonnull(strstr(err.msg, "conflicts"));
	ck_assert_int_eq(err.offset, 0);
	kred__error_clear(&err);
	/* the same position with the same category and dimension is allowed */
	ck_assert_int_eq(kred__parse_alias(g, "Z = Vi(0,3)", 2, &err), KRED_OK);
	kred__graph_free(g);
}
END_TEST

static const struct {
	const char *src;
	kred_status status;
	int red, k, out_dim_d3;
} red_rows[] = {
	{ "Sum", KRED_OK, KRED__RED_SUM, 0, 3 },
	{ " LogSumExp ", KRED_OK, KRED__RED_LSE, 0, 1 },
	{ "ArgKMin(5)", KRED_OK, KRED__RED_ARGKMIN, 5, 15 },
	{ "KMin_ArgKMin( 2 )", KRED_OK, KRED__RED_KMIN_ARGKMIN, 2, 12 },
	{ "Min_ArgMin", KRED_OK, KRED__RED_MIN_ARGMIN, 0, 6 },
	{ "Max_SumShiftExp", KRED_OK, KRED__RED_MAX_SUMSHIFTEXP, 0, 2 },
	{ "KMin", KRED_EREDUCTION, 0, 0, 0 },
	{ "KMin(0)", KRED_ERANGE, 0, 0, 0 },
	{ "KMin(x)", KRED_EREDUCTION, 0, 0, 0 },
	{ "Summ", KRED_EREDUCTION, 0, 0, 0 },
	{ "Sum(3)", KRED_EREDUCTION, 0, 0, 0 },
	{ "", KRED_EREDUCTION, 0, 0, 0 },
};

START_TEST(test_reduction_names)
{
	struct kred__error err;
	enum kred__red red;
	int k;
	kred_status s;

	kred__error_clear(&err);
	s = kred__red_parse(red_rows[_i].src, &red, &k, &err);
	ck_assert_msg(s == red_rows[_i].status, "'%s': %s", red_rows[_i].src, err.msg);
	if (s == KRED_OK) {
		ck_assert_int_eq(red, red_rows[_i].red);
		ck_assert_int_eq(k, red_rows[_i].k);
		ck_assert_int_eq(kred__red_out_dim(red, 3, 0, k), red_rows[_i].out_dim_d3);
	}
}
END_TEST

START_TEST(test_status_names)
{
	ck_assert_str_eq(kred_status_name(KRED_EDIM), "KRED_EDIM");
	ck_assert_str_eq(kred_status_message(KRED_EDIM), "dimension mismatch");
	ck_assert_str_eq(kred_status_name((kred_status)999), "KRED_UNKNOWN");
	for (int s = 0; s < KRED_STATUS_COUNT; s++)
		ck_assert(strncmp(kred_status_name((kred_status)s), "KRED_", 5) == 0);
	ck_assert_int_eq(kred_version_number(), KRED_VERSION_NUMBER);
	ck_assert_str_eq(kred_version(), KRED_VERSION_STRING);
}
END_TEST

#define N(a) (int)(sizeof(a) / sizeof((a)[0]))

int main(void)
{
	Suite *s = suite_create("parse");
	TCase *tc = tcase_create("parse");
	SRunner *sr;
	int failed;

	tcase_add_loop_test(tc, test_valid, 0, N(valid));
	tcase_add_loop_test(tc, test_invalid, 0, N(invalid));
	tcase_add_loop_test(tc, test_deep, 0, 4);
	tcase_add_test(tc, test_depth_limit_ok);
	tcase_add_test(tc, test_hash_consing);
	tcase_add_loop_test(tc, test_alias, 0, N(alias_rows));
	tcase_add_test(tc, test_alias_conflicts);
	tcase_add_test(tc, test_alias_end_message);
	tcase_add_loop_test(tc, test_reduction_names, 0, N(red_rows));
	tcase_add_test(tc, test_status_names);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
