/* The conformance table that every backend runs (tests/test_conformance.c) and that the
 * CUDA suite compiles for several architectures: cases, inputs, tolerances, comparing. */
#ifndef KRED_CONFORMANCE_CASES_H
#define KRED_CONFORMANCE_CASES_H

/* For a test file that has included <check.h>, <math.h>, <stdio.h>, <stdlib.h>,
 * <string.h> and "internal.h" (kred.h). */

/*
 * A value passes when |got - want| <= atol + rtol * (|want| + scale), scale being the
 * mean |want| of the whole output: a sum's rounding error is proportional to the sum of
 * its terms' sizes, which the output's typical size stands for even where one value
 * cancels to near 0. NaN matches NaN and an infinity the same infinity.
 *
 * Inputs. "Grid" inputs are multiples of 1/64 within their range: their sums, differences
 * and small products are exact in float32, so that an op with jumps (Floor, Round, Mod,
 * Sign, Step, comparisons, OneHot) or a selection with ties (ArgMin, KMin) sees exactly
 * the same values in float32 as in the reference's double, and ties happen, testing the
 * first-index rule. Elsewhere inputs are uniform, away from the ops' kinks by their range.
 */

/* Tolerances, (rtol, atol), each with its reason. */
/* Indices and selections of exactly computed values: nothing may differ. */
#define EXACT 0.0, 0.0
/* float64: libm's and kred's exp and log are within 1 ulp, sums are reordered; n <= 4099
 * terms give at most n * 2^-53 ~ 5e-13 of the sum of |terms|. 1e-10 leaves a wide margin
 * and still catches any wrong rule, which is off by far more. */
#define T64 1e-10, 1e-13
/* float32, values that are a few roundings of one term (Min, Max, KMin values, the
 * LogSumExp family's output after one log): a few 2^-24 ~ 6e-8 relative. */
#define F32_TERM 2e-6, 1e-7
/* float32 sums with the block scheme: 256-term tile sums then up to 17 tile sums give at
 * worst (256 + 17) * 2^-24 ~ 1.6e-5 of the sum of |terms| (typically ~sqrt of that), on
 * top of a few ulps per term from the formula: 1e-4 leaves a factor of 6. */
#define F32_SUM 1e-4, 1e-6
/* float32 sums with the direct scheme: n * 2^-24 ~ 2.4e-4 at worst for n = 4099, and
 * ~sqrt(n) * 2^-24 ~ 4e-6 for random signs; 1e-3 covers the worst case. */
#define F32_DIRECT 1e-3, 1e-6
/* float32 Kahan sums: 2 * 2^-24 of the sum of |terms| whatever n, plus the formula's
 * few ulps per term. */
#define F32_KAHAN 2e-6, 1e-7
/* float32 formulas that amplify the rounding of their inputs, summed: Powf (exp of
 * y log x), Atan2 near y = 0, 1 / (x + y) near 0, Pow(f, 11): cond ~ 10 to 100. */
#define F32_COND 1e-3, 1e-5

/* Sizes (nx, ny), up to 6 pairs; a pair of -1 ends the list. */
#define END { -1, -1 }
/* Op tests: many terms, one row, an empty reduction and an empty output. */
#define SZ_OP { { 7, 1000 }, { 1, 7 }, { 3, 0 }, { 0, 5 }, END }
/* Reductions: both long axes (4099 columns exercise the host's column split), a square,
 * single terms, empty reductions and outputs. */
#define SZ_RED { { 1000, 1000 }, { 7, 4099 }, { 4099, 7 }, { 1, 1 }, { 5, 0 }, { 0, 7 } }
/* Wide formulas (dimension 100): fewer pairs for the reference's sake. */
#define SZ_WIDE { { 7, 1000 }, { 1, 4099 }, { 1, 1 }, { 2, 0 }, END }
/* Dimensions past the emitter's unrolling, up to 4096: few pairs, for the reference. */
#define SZ_HD { { 7, 50 }, { 1, 3 }, { 2, 0 }, { 0, 4 }, END }
/* KMin with fewer terms than K (missing ranks are +inf and -1), and many. */
#define SZ_KMIN { { 50, 3 }, { 7, 4099 }, { 1000, 1000 }, { 1, 0 }, END }

enum { UNIFORM = 0, GRID = 1 };

struct input {
	double lo, hi;
	int kind;
};

#define IN_UNIT { -1, 1, UNIFORM }
#define IN_POS { 0.1, 2, UNIFORM }
#define IN_SMALL { -0.9, 0.9, UNIFORM }
#define IN_GRID { -2, 2, GRID }
#define IN_GRID_POS { 0, 2, GRID }

struct row {
	const char *formula, *weight, *reduction;
	const char *aliases; /* separated by ';' */
	kred_axis axis;
	kred_dtype dtype;
	kred_sum_scheme scheme;
	int sizes[6][2];
	struct input in;
	double rtol, atol;
};

#define J KRED_REDUCE_J
#define I KRED_REDUCE_I
#define F32 KRED_FLOAT32
#define F64 KRED_FLOAT64
#define DEF KRED_SUM_DEFAULT
#define DIRECT KRED_SUM_DIRECT
#define BLOCK KRED_SUM_BLOCK
#define KAHAN KRED_SUM_KAHAN

#define XY "X=Vi(3);Y=Vj(3)"
#define XYB "X=Vi(3);Y=Vj(3);B=Vj(1)"
#define XYG "X=Vi(3);Y=Vj(3);G=Pm(1)"
#define GAUSS "X=Vi(3);Y=Vj(3);B=Vj(1);G=Pm(1)"
#define XY1 "X=Vi(1);Y=Vj(1)"
#define XYPQ "X=Vi(2);Y=Vj(2);P=Pm(1);Q=Pm(1)"


static const struct row rows[] = {
	/* ---- every operation, one or more rows each (Sum over j unless the row tests
	 * an axis or a dtype too) */
	{ "-X*Y", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "Minus(X)+Y", NULL, "Sum", XY, I, F64, DEF, SZ_OP, IN_UNIT, T64 },
	{ "Inv(X+Y)", NULL, "Sum", XY, I, F64, DEF, SZ_OP, IN_POS, T64 },
	{ "Inv(X+Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_POS, F32_SUM },
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", GAUSS, J, F32, DEF, SZ_RED, IN_UNIT, F32_SUM },
	{ "Exp(-G*SqDist(X,Y))*B", NULL, "Sum", GAUSS, I, F64, DEF, SZ_RED, IN_UNIT, T64 },
	{ "Exp(X-Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "Log(X*Y)", NULL, "Sum", XY, I, F32, DEF, SZ_OP, IN_POS, F32_SUM },
	{ "Log(X*Y)", NULL, "Sum", XY, J, F64, DEF, SZ_OP, IN_POS, T64 },
	{ "XLogX(X*Y)", NULL, "Sum", XY, J, F64, DEF, SZ_OP, IN_GRID_POS, T64 },
	{ "XLogX(X*Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_GRID_POS, F32_SUM },
	{ "Sin(X-Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "SinXDivX(X-Y)", NULL, "Sum", XY, J, F64, DEF, SZ_OP, IN_GRID, T64 },
	{ "SinXDivX(X-Y)", NULL, "Sum", XY, I, F32, DEF, SZ_OP, IN_GRID, F32_SUM },
	{ "Asin(X*Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_SMALL, F32_SUM },
	{ "Cos(X+Y)", NULL, "Sum", XY, I, F64, DEF, SZ_OP, IN_UNIT, T64 },
	{ "Acos(X*Y)", NULL, "Sum", XY, J, F64, DEF, SZ_OP, IN_SMALL, T64 },
	{ "Acos(X*Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_SMALL, F32_SUM },
	{ "Atan(X-Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "Atan2(X,Y)", NULL, "Sum", XY, I, F64, DEF, SZ_OP, IN_UNIT, T64 },
	{ "Atan2(X,Y+3)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_COND },
	{ "Sqrt(X*Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_GRID_POS, F32_SUM },
	{ "Rsqrt(X*Y)", NULL, "Sum", XY, J, F64, DEF, SZ_OP, IN_GRID_POS, T64 },
	{ "Rsqrt(X*Y)", NULL, "Sum", XY, I, F32, DEF, SZ_OP, IN_GRID_POS, F32_SUM },
	{ "Square(X-Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "Pow(X-Y,3)", NULL, "Sum", XY, J, F64, DEF, SZ_OP, IN_UNIT, T64 },
	{ "Pow(X+Y,-2)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_POS, F32_SUM },
	{ "Pow(X*Y,11)", NULL, "Sum", XY, I, F64, DEF, SZ_OP, IN_POS, T64 },
	{ "Pow(X*Y,0)+Pow(X,1)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "Powf(X*Y,Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_POS, F32_COND },
	{ "Powf(X,Y)", NULL, "Sum", XY, I, F64, DEF, SZ_OP, IN_POS, T64 },
	{ "Abs(X-Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "Sign(X-Y)*B", NULL, "Sum", XYB, J, F64, DEF, SZ_OP, IN_GRID, T64 },
	{ "Sign(X-Y)", NULL, "Sum", XY, I, F32, DEF, SZ_OP, IN_GRID, F32_SUM },
	{ "Step(X-Y)*B", NULL, "Sum", XYB, J, F32, DEF, SZ_OP, IN_GRID, F32_SUM },
	{ "ReLU(X-Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_GRID, F32_SUM },
	{ "Clamp(X-Y,-G,G)", NULL, "Sum", XYG, J, F32, DEF, SZ_OP, IN_GRID, F32_SUM },
	{ "Clamp(X,Y,X+1)", NULL, "Sum", XY, I, F64, DEF, SZ_OP, IN_UNIT, T64 },
	{ "ClampInt(X*IntCst(3),0,1)*Y", NULL, "Sum", XY, J, F64, DEF, SZ_OP, IN_GRID, T64 },
	{ "IfElse(X-Y,X,Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_GRID, F32_SUM },
	{ "Mod(X*Y,P,Q)", NULL, "Sum", XYPQ, J, F64, DEF, SZ_OP, IN_GRID_POS, T64 },
	{ "Mod(X-Y,P,Q)", NULL, "Sum", XYPQ, I, F32, DEF, SZ_OP, IN_GRID_POS, F32_SUM },
	/* float32 divides once after the rounding, the reference twice (in double, then to
	 * float32): they may differ by an ulp of the output value. */
	{ "Round(X*Y,2)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_GRID, F32_SUM },
	{ "Round(X-Y,0)+Round(X,-1)", NULL, "Sum", XY, J, F64, DEF, SZ_OP, IN_GRID, T64 },
	{ "Floor(X*4)*Y", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "X+G", NULL, "Sum", XYG, J, F64, DEF, SZ_OP, IN_UNIT, T64 },
	{ "Add(X,Y)-Subtract(Y,B)", NULL, "Sum", XYB, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "Mult(X,Y)*G", NULL, "Sum", XYG, I, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "Divide(X,Y+3)", NULL, "Sum", XY, J, F64, DEF, SZ_OP, IN_UNIT, T64 },
	{ "X/(Y+3)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "Scal(B,X)", NULL, "Sum", XYB, I, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "(X|Y)", NULL, "Sum", XY, J, F64, DEF, SZ_OP, IN_UNIT, T64 },
	{ "Scalprod(X,Y)*B", NULL, "Sum", XYB, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "(X<Y)+2*(X>Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_GRID, F32_SUM },
	{ "(X<=Y)+2*(X>=Y)", NULL, "Sum", XY, I, F64, DEF, SZ_OP, IN_GRID, T64 },
	{ "(X==Y)+2*(X!=Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_GRID, F32_SUM },
	{ "Equal(X,Y)+NotEqual(X,Y)*Less(X,Y)+Greater(X,Y)", NULL, "Sum", XY, J, F64, DEF,
	  SZ_OP, IN_GRID, T64 },
	{ "LessEqual(X,Y)+GreaterEqual(X,Y)", NULL, "Sum", XY, I, F32, DEF, SZ_OP, IN_GRID,
	  F32_SUM },
	{ "Sum(X*Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "Max(X-Y)+Min(X*Y)", NULL, "Sum", XY, J, F64, DEF, SZ_OP, IN_UNIT, T64 },
	{ "Max(X-Y)", NULL, "Sum", XY, I, F32, DEF, SZ_OP, IN_GRID, F32_SUM },
	/* ties within the vector: the first index, as exact values are compared */
	{ "ArgMax(X-Y)+10*ArgMin(X*Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_GRID,
	  F32_SUM },
	{ "ArgMin(X-Y)", NULL, "Sum", XY, I, F64, DEF, SZ_OP, IN_UNIT, T64 },
	{ "SqNorm2(X-Y)+Norm2(X+Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "Normalize(X-Y)", NULL, "Sum", XY, J, F64, DEF, SZ_OP, IN_GRID, T64 },
	{ "Normalize(X-Y)", NULL, "Sum", XY, I, F32, DEF, SZ_OP, IN_GRID, F32_SUM },
	{ "SqDist(X,Y)", NULL, "Sum", XY1, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "SqDist(X,Y)", NULL, "Sum", "X=Vi(17);Y=Vj(17)", I, F64, DEF, SZ_OP, IN_UNIT, T64 },
	{ "SqDist(X,G)", NULL, "Sum", XYG, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "WeightedSqNorm(S,X-Y)", NULL, "Sum", "X=Vi(3);Y=Vj(3);S=Pm(1)", J, F32, DEF, SZ_OP,
	  IN_POS, F32_SUM },
	{ "WeightedSqNorm(S,X-Y)", NULL, "Sum", "X=Vi(3);Y=Vj(3);S=Pm(3)", I, F64, DEF, SZ_OP,
	  IN_UNIT, T64 },
	{ "WeightedSqNorm(S,X)*Y", NULL, "Sum", "X=Vi(3);Y=Vj(1);S=Vj(9)", J, F32, DEF, SZ_OP,
	  IN_UNIT, F32_SUM },
	{ "WeightedSqDist(S,X,Y)", NULL, "Sum", "X=Vi(3);Y=Vj(3);S=Pm(9)", J, F64, DEF, SZ_OP,
	  IN_UNIT, T64 },
	{ "WeightedSqDist(S,X,Y)", NULL, "Sum", "X=Vi(4);Y=Vj(4);S=Vi(4)", I, F32, DEF, SZ_OP,
	  IN_POS, F32_SUM },
	{ "Zero(3)+X*Y", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "Elem(X,1)*Y+Elem(Y,2)", NULL, "Sum", XY, J, F64, DEF, SZ_OP, IN_UNIT, T64 },
	{ "ElemT(B,4,1)+ElemT(Elem(X,2),4,3)", NULL, "Sum", XYB, I, F32, DEF, SZ_OP, IN_UNIT,
	  F32_SUM },
	{ "Extract(X,1,2)*Extract(Y,0,2)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT,
	  F32_SUM },
	{ "ExtractT(B,1,3)*Y+ExtractT(Extract(X,0,2),1,3)", NULL, "Sum", XYB, J, F64, DEF,
	  SZ_OP, IN_UNIT, T64 },
	{ "Concat(X,B)*Concat(B,Y)", NULL, "Sum", XYB, I, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "OneHot(B*4,5)*Elem(X,0)", NULL, "Sum", XYB, J, F32, DEF, SZ_OP, IN_GRID_POS,
	  F32_SUM },
	{ "MatVecMult(A,Y)", NULL, "Sum", "A=Vi(6);Y=Vj(3)", J, F32, DEF, SZ_OP, IN_UNIT,
	  F32_SUM },
	{ "MatVecMult(A,Y)*Elem(X,0)", NULL, "Sum", "A=Pm(20);X=Vi(1);Y=Vj(5)", I, F64, DEF,
	  SZ_OP, IN_UNIT, T64 },
	{ "VecMatMult(Y,A)", NULL, "Sum", "A=Vi(6);Y=Vj(2)", J, F64, DEF, SZ_OP, IN_UNIT, T64 },
	{ "VecMatMult(X,A)", NULL, "Sum", "A=Vj(12);X=Vi(3)", I, F32, DEF, SZ_OP, IN_UNIT,
	  F32_SUM },
	{ "TensorProd(X,Y)", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "Kron(A,C,Ind(2,2),Ind(2,3))", NULL, "Sum", "A=Vi(4);C=Vj(6)", J, F64, DEF, SZ_OP,
	  IN_UNIT, T64 },
	{ "Kron(A,C,Ind(2),Ind(3))", NULL, "Sum", "A=Vi(2);C=Vj(3)", I, F32, DEF, SZ_OP,
	  IN_UNIT, F32_SUM },
	{ "TensorDot(A,C,Ind(2,2),Ind(2,3),Ind(1),Ind(0))", NULL, "Sum", "A=Vi(4);C=Vj(6)", J,
	  F32, DEF, SZ_OP, IN_UNIT, F32_SUM },
	{ "TensorDot(A,C,Ind(2,3,2),Ind(3,2),Ind(1,2),Ind(0,1))", NULL, "Sum",
	  "A=Vi(12);C=Vj(6)", I, F64, DEF, SZ_OP, IN_UNIT, T64 },
	/* variables by position, without aliases; constants */
	{ "Exp(-SqDist(Vi(0,3),Vj(1,3)))*Vj(2,1)", NULL, "Sum", "", J, F32, DEF, SZ_OP, IN_UNIT,
	  F32_SUM },
	{ "Var(0,2,0)*Var(1,2,1)+Var(2,1,2)", NULL, "Sum", "", I, F64, DEF, SZ_OP, IN_UNIT,
	  T64 },
	{ "IntCst(3)*X+IntInv(4)-1e-3*Y+2.5", NULL, "Sum", XY, J, F32, DEF, SZ_OP, IN_UNIT,
	  F32_SUM },
	/* a wide common sub-expression used several times */
	{ "Exp(-SqDist(X,Y))*(X-Y)+Exp(-SqDist(X,Y))", NULL, "Sum", XY, J, F64, DEF, SZ_OP,
	  IN_UNIT, T64 },

	/* ---- dimensions up to 100 */
	{ "X-Y", NULL, "Sum", "X=Vi(100);Y=Vj(100)", J, F32, DEF, SZ_WIDE, IN_UNIT, F32_SUM },
	{ "Exp(-SqDist(X,Y)/100)*B", NULL, "Sum", "X=Vi(100);Y=Vj(100);B=Vj(2)", I, F64, DEF,
	  SZ_WIDE, IN_UNIT, T64 },
	{ "(X|Y)", NULL, "LogSumExp", "X=Vi(64);Y=Vj(64)", J, F32, DEF, SZ_WIDE, IN_UNIT,
	  F32_TERM },
	{ "X*Y", NULL, "Max", "X=Vi(50);Y=Vj(50)", J, F32, DEF, SZ_WIDE, IN_UNIT, F32_TERM },
	{ "X-Y", NULL, "Min_ArgMin", "X=Vi(40);Y=Vj(40)", I, F32, DEF, SZ_WIDE, IN_GRID,
	  F32_TERM },

	/* ---- every reduction, both axes, both dtypes */
	{ "X-Y", NULL, "Sum", XY, J, F32, DEF, SZ_RED, IN_UNIT, F32_SUM },
	{ "X*Y", NULL, "Sum", XY, I, F32, BLOCK, SZ_RED, IN_UNIT, F32_SUM },
	{ "Exp(-SqDist(X,Y))*B", NULL, "Sum", XYB, J, F32, DIRECT, SZ_RED, IN_UNIT,
	  F32_DIRECT },
	{ "Exp(-SqDist(X,Y))*B", NULL, "Sum", XYB, I, F32, KAHAN, SZ_RED, IN_UNIT, F32_KAHAN },
	{ "Exp(-SqDist(X,Y))*B", NULL, "Sum", XYB, J, F64, KAHAN, SZ_RED, IN_UNIT, T64 },
	{ "Exp(-SqDist(X,Y))*B", NULL, "Sum", XYB, I, F64, DIRECT, SZ_RED, IN_UNIT, T64 },
	{ "-G*SqDist(X,Y)", NULL, "LogSumExp", XYG, J, F32, DEF, SZ_RED, IN_UNIT, F32_TERM },
	{ "-G*SqDist(X,Y)", NULL, "LogSumExp", XYG, I, F64, DEF, SZ_RED, IN_UNIT, T64 },
	{ "-G*SqDist(X,Y)", NULL, "LogSumExp", XYG, I, F32, DIRECT, SZ_RED, IN_UNIT,
	  F32_TERM },
	{ "-G*SqDist(X,Y)", NULL, "LogSumExp", XYG, J, F32, KAHAN, SZ_RED, IN_UNIT, F32_TERM },
	/* exp(1000) would overflow float32: the running max keeps it finite */
	{ "(X|Y)*300", NULL, "LogSumExp", XY, J, F32, DEF, SZ_RED, IN_UNIT, F32_TERM },
	{ "-SqDist(X,Y)", "B", "LogSumExpWeight", "X=Vi(3);Y=Vj(3);B=Vj(2)", J, F32, DEF,
	  SZ_RED, IN_POS, F32_TERM },
	{ "-SqDist(X,Y)", "B", "LogSumExpWeight", "X=Vi(3);Y=Vj(3);B=Vi(2)", I, F64, KAHAN,
	  SZ_RED, IN_POS, T64 },
	{ "-SqDist(X,Y)", "A", "SumSoftMaxWeight", "X=Vi(2);Y=Vj(2);A=Vj(3)", J, F32, DEF,
	  SZ_RED, IN_UNIT, F32_TERM },
	{ "-SqDist(X,Y)", "A", "SumSoftMaxWeight", "X=Vi(2);Y=Vj(2);A=Vi(3)", I, F64, DIRECT,
	  SZ_RED, IN_UNIT, T64 },
	{ "-SqDist(X,Y)*10", "A", "SumSoftMaxWeight", "X=Vi(2);Y=Vj(2);A=Vj(3)", J, F32,
	  KAHAN, SZ_RED, IN_UNIT, F32_TERM },
	{ "(X|Y)", NULL, "Max_SumShiftExp", XY, J, F64, DEF, SZ_RED, IN_UNIT, T64 },
	{ "(X|Y)", NULL, "Max_SumShiftExp", XY, I, F32, DEF, SZ_RED, IN_UNIT, F32_SUM },
	{ "(X|Y)", "Y", "Max_SumShiftExpWeight", XY, J, F32, DEF, SZ_RED, IN_UNIT, F32_SUM },
	{ "(X|Y)", "X", "Max_SumShiftExpWeight", XY, I, F64, KAHAN, SZ_RED, IN_UNIT, T64 },
	{ "X-Y", NULL, "Min", XY, J, F32, DEF, SZ_RED, IN_UNIT, F32_TERM },
	{ "SqDist(X,Y)", NULL, "Min", XY, I, F64, DEF, SZ_RED, IN_UNIT, T64 },
	{ "X*Y", NULL, "Max", XY, I, F32, DEF, SZ_RED, IN_UNIT, F32_TERM },
	{ "X*Y", NULL, "Max", XY, J, F64, DEF, SZ_RED, IN_UNIT, T64 },
	/* grid inputs: exact values, ties, the first index */
	{ "SqDist(X,Y)", NULL, "ArgMin", XY, J, F32, DEF, SZ_RED, IN_GRID, EXACT },
	{ "SqDist(X,Y)", NULL, "ArgMin", XY, I, F64, DEF, SZ_RED, IN_UNIT, EXACT },
	{ "X-Y", NULL, "ArgMax", XY, I, F32, DEF, SZ_RED, IN_GRID, EXACT },
	{ "(X|Y)", NULL, "ArgMax", XY, J, F64, DEF, SZ_RED, IN_GRID, EXACT },
	{ "X*Y", NULL, "Min_ArgMin", XY, J, F32, DEF, SZ_RED, IN_GRID, EXACT },
	{ "X-Y", NULL, "Min_ArgMin", XY, I, F64, DEF, SZ_RED, IN_UNIT, EXACT },
	{ "X*Y", NULL, "Max_ArgMax", XY, I, F32, DEF, SZ_RED, IN_GRID, EXACT },
	{ "Abs(X-Y)", NULL, "Max_ArgMax", XY, J, F64, DEF, SZ_RED, IN_GRID, EXACT },
	{ "SqDist(X,Y)", NULL, "KMin(3)", XY, J, F32, DEF, SZ_KMIN, IN_UNIT, F32_TERM },
	{ "X-Y", NULL, "KMin(2)", XY, I, F64, DEF, SZ_KMIN, IN_UNIT, T64 },
	{ "SqDist(X,Y)", NULL, "ArgKMin(10)", XY, J, F32, DEF, SZ_KMIN, IN_GRID, EXACT },
	{ "SqDist(X,Y)", NULL, "ArgKMin(10)", XY, I, F64, DEF, SZ_KMIN, IN_UNIT, EXACT },
	{ "Abs(X-Y)", NULL, "KMin_ArgKMin(5)", XY, J, F32, DEF, SZ_KMIN, IN_GRID, EXACT },
	{ "X*Y", NULL, "KMin_ArgKMin(1)", XY, I, F64, DEF, SZ_KMIN, IN_UNIT, EXACT },
	/* K x D past 64: the state is handled in loops */
	{ "X-Y", NULL, "KMin_ArgKMin(20)", "X=Vi(4);Y=Vj(4)", J, F32, DEF, SZ_KMIN, IN_GRID,
	  EXACT },
	{ "SqDist(X,Y)", NULL, "ArgKMin(70)", XY, I, F64, DEF, SZ_KMIN, IN_UNIT, EXACT },

	/* ---- past 64 values the emitter writes loops (lib/emit.c): streamed element-wise
	 * values, arrays for the ops that read at other indices, the pieces' loops over F,
	 * G and the state; dimensions up to 4096 and a matrix of 65,536 values. Grid inputs
	 * in [0, 2] keep a float32 sum of 784 squared differences exact (multiples of
	 * 2^-12 below 2^12), so that ArgKMin sees the reference's ties. */
	{ "SqDist(X,Y)", NULL, "ArgKMin(5)", "X=Vi(784);Y=Vj(784)", J, F32, DEF, SZ_HD,
	  IN_GRID_POS, EXACT },
	{ "SqDist(X,Y)", NULL, "ArgKMin(10)", "X=Vi(4096);Y=Vj(4096)", I, F64, DEF, SZ_HD,
	  IN_UNIT, EXACT },
	{ "Exp(-SqDist(X,Y)/784)*B", NULL, "Sum", "X=Vi(784);Y=Vj(784);B=Vj(3)", J, F32, DEF,
	  SZ_HD, IN_UNIT, F32_SUM },
	{ "Exp(-SqDist(X,Y)/4096)*B", NULL, "Sum", "X=Vi(4096);Y=Vj(4096);B=Vj(1)", I, F64,
	  DEF, SZ_HD, IN_UNIT, T64 },
	{ "(X|Y)", NULL, "LogSumExp", "X=Vi(300);Y=Vj(300)", J, F64, DEF, SZ_HD, IN_UNIT, T64 },
	{ "SqNorm2(X-Y)+Norm2(X+Y)+Sum(X*Y)", NULL, "Sum", "X=Vi(300);Y=Vj(300)", I, F32, DEF,
	  SZ_HD, IN_UNIT, F32_SUM },
	{ "Max(X-Y)+Min(X*Y)", NULL, "Sum", "X=Vi(65);Y=Vj(65)", J, F64, DEF, SZ_HD, IN_UNIT,
	  T64 },
	{ "ArgMax(X-Y)+100*ArgMin(X*Y)", NULL, "Sum", "X=Vi(65);Y=Vj(65)", I, F32, DEF, SZ_HD,
	  IN_GRID, F32_SUM },
	{ "Normalize(X-Y)", NULL, "Sum", "X=Vi(300);Y=Vj(300)", J, F64, DEF, SZ_HD, IN_UNIT,
	  T64 },
	{ "WeightedSqDist(S,X,Y)", NULL, "Sum", "X=Vi(784);Y=Vj(784);S=Pm(1)", J, F32, DEF,
	  SZ_HD, IN_POS, F32_SUM },
	{ "WeightedSqNorm(S,X-Y)", NULL, "Sum", "X=Vi(300);Y=Vj(300);S=Vj(300)", I, F64, DEF,
	  SZ_HD, IN_UNIT, T64 },
	{ "WeightedSqDist(S,X,Y)", NULL, "Sum", "X=Vi(65);Y=Vj(65);S=Pm(4225)", J, F64, DEF,
	  SZ_HD, IN_UNIT, T64 },
	{ "WeightedSqNorm(S,X)*Y", NULL, "Sum", "X=Vi(256);Y=Vj(1);S=Pm(65536)", I, F64, DEF,
	  SZ_HD, IN_UNIT, T64 },
	{ "Extract(X,10,300)*Extract(Y,400,300)*Elem(X,700)", NULL, "Sum",
	  "X=Vi(784);Y=Vj(784)", J, F32, DEF, SZ_HD, IN_UNIT, F32_SUM },
	{ "ExtractT(Extract(X,5,50),10,300)*Y", NULL, "Sum", "X=Vi(100);Y=Vj(300)", I, F64,
	  DEF, SZ_HD, IN_UNIT, T64 },
	{ "Concat(X,B)*Concat(B,Y)+Concat(X*2,Elem(Y,0))", NULL, "Sum",
	  "X=Vi(64);Y=Vj(64);B=Vj(1)", J, F32, DEF, SZ_HD, IN_UNIT, F32_SUM },
	{ "OneHot(B*4,65)*Elem(X,0)+ElemT(B,65,10)+Scal(B,X)+Zero(65)", NULL, "Sum",
	  "X=Vi(65);B=Vj(1)", J, F32, DEF, SZ_HD, IN_GRID_POS, F32_SUM },
	{ "MatVecMult(A,Y)", NULL, "Sum", "A=Pm(5600);Y=Vj(80)", J, F64, DEF, SZ_HD, IN_UNIT,
	  T64 },
	{ "MatVecMult(A,Y)+VecMatMult(Y,B)", NULL, "Sum", "A=Vi(900);B=Pm(900);Y=Vj(300)", I,
	  F64, DEF, SZ_HD, IN_UNIT, T64 },
	{ "VecMatMult(X,A)", NULL, "Sum", "X=Vi(70);A=Vj(4900)", J, F32, DEF, SZ_HD, IN_UNIT,
	  F32_SUM },
	{ "TensorProd(X,Y)+Kron(X,Y,Ind(20),Ind(30))", NULL, "Sum", "X=Vi(20);Y=Vj(30)", J,
	  F32, DEF, SZ_HD, IN_UNIT, F32_SUM },
	{ "TensorDot(A,C,Ind(300),Ind(300),Ind(0),Ind(0))", NULL, "Sum", "A=Vi(300);C=Vj(300)",
	  I, F64, DEF, SZ_HD, IN_UNIT, T64 },
	{ "X*Y", NULL, "Sum", "X=Vi(65);Y=Vj(65)", I, F32, KAHAN, SZ_HD, IN_UNIT, F32_KAHAN },
	{ "X-Y", NULL, "Max_ArgMax", "X=Vi(70);Y=Vj(70)", J, F32, DEF, SZ_HD, IN_GRID, EXACT },
	{ "X-Y", NULL, "KMin(3)", "X=Vi(70);Y=Vj(70)", J, F32, DEF, SZ_KMIN, IN_GRID, EXACT },
	{ "-SqDist(X,Y)", "X*Y", "LogSumExpWeight", "X=Vi(70);Y=Vj(70)", J, F64, KAHAN, SZ_HD,
	  IN_POS, T64 },
	{ "-SqDist(X,Y)", "A", "SumSoftMaxWeight", "X=Vi(3);Y=Vj(3);A=Vi(300)", I, F32, BLOCK,
	  SZ_HD, IN_UNIT, F32_TERM },
	{ "(X|Y)", "Y", "Max_SumShiftExpWeight", "X=Vi(70);Y=Vj(70)", J, F32, DEF, SZ_HD,
	  IN_UNIT, F32_SUM },
};

#define N_ROWS ((int)(sizeof(rows) / sizeof(rows[0])))

/* ---- inputs */

static uint64_t lcg_state;

static double uniform(void)
{
	lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (double)(lcg_state >> 11) * 0x1.0p-53;
}

static void *make_input(const struct input *in, size_t count, kred_dtype dt, uint64_t seed)
{
	void *p = malloc((count ? count : 1) * 8);

	ck_assert_ptr_nonnull(p);
	lcg_state = seed * 0x9e3779b97f4a7c15ULL + 1;
	for (size_t k = 0; k < count; k++) {
		double v = in->lo + (in->hi - in->lo) * uniform();

		if (in->kind == GRID)
			v = round(v * 64) / 64;
		if (dt == KRED_FLOAT64)
			((double *)p)[k] = v;
		else
			((float *)p)[k] = (float)v;
	}
	return p;
}

/* ---- comparing */

static double value(const void *p, kred_dtype dt, size_t k)
{
	return dt == KRED_FLOAT64 ? ((const double *)p)[k] : ((const float *)p)[k];
}

/* 0 if got matches want within (rtol, atol), else 1 with the first mismatch in msg. */
static int compare(const void *got, const void *want, size_t n, int od, kred_dtype dt,
		   double rtol, double atol, char *msg, size_t len)
{
	double scale = 0;
	size_t finite = 0;

	for (size_t k = 0; k < n; k++) {
		double w = value(want, dt, k);

		if (isfinite(w)) {
			scale += fabs(w);
			finite++;
		}
	}
	scale = finite ? scale / (double)finite : 0;
	for (size_t k = 0; k < n; k++) {
		double g = value(got, dt, k), w = value(want, dt, k);

		if (isnan(w) && isnan(g))
			continue;
		if (isinf(w) && g == w)
			continue;
		if (fabs(g - w) <= atol + rtol * (fabs(w) + scale))
			continue;
		snprintf(msg, len, "row %zu, value %zu: got %.9g, reference %.9g (|diff| %.3g, "
			 "allowed %.3g)", k / (size_t)od, k % (size_t)od, g, w, fabs(g - w),
			 atol + rtol * (fabs(w) + scale));
		return 1;
	}
	return 0;
}

/* Splits "A=Vi(3);B=Vj(1)" into aliases (in buf). */
static size_t split_aliases(const char *text, char *buf, size_t len, const char **al, size_t max)
{
	size_t n = 0;

	snprintf(buf, len, "%s", text);
	for (char *tok = strtok(buf, ";"); tok && n < max; tok = strtok(NULL, ";"))
		al[n++] = tok;
	return n;
}

/* ---- special values, with crafted inputs: X = Vi(1), Y = Vj(1), F = X + Y */

struct special {
	const char *formula, *weight, *reduction;
	kred_sum_scheme scheme;
	double x[3], y[5]; /* 3 rows, 5 terms */
	int ny;
};

static const struct special specials[] = {
	/* LogSumExp: exp(1000) fine in float32; a row of -inf gives -inf (X = -inf); NaN
	 * propagates; +inf gives +inf */
	{ "X+Y", NULL, "LogSumExp", DEF, { 0, -INFINITY, 1 }, { 1000, 999, -INFINITY, 0, 998 }, 5 },
	{ "X+Y", NULL, "LogSumExp", KAHAN, { 0, -INFINITY, 1 }, { 1000, 999, -INFINITY, 0, 1 }, 5 },
	{ "X+Y", NULL, "LogSumExp", DIRECT, { 0, 1, 2 }, { 1, NAN, 2, 3, 4 }, 5 },
	{ "X+Y", NULL, "LogSumExp", DEF, { 0, 1, -INFINITY }, { 1, INFINITY, 2, 3, 4 }, 5 },
	{ "X+Y", NULL, "LogSumExp", DEF, { 0, 1, 2 }, { 0 }, 0 },
	{ "X+Y", NULL, "Max_SumShiftExp", DEF, { 0, -INFINITY, 1 }, { -1000, -999, -INFINITY, 0, 3 }, 5 },
	{ "X+Y", NULL, "Max_SumShiftExp", DEF, { 0, 1, 2 }, { 0 }, 0 },
	{ "X+Y", "Y", "SumSoftMaxWeight", DEF, { 0, -INFINITY, 1 }, { 80, 81, -INFINITY, 0, 3 }, 5 },
	{ "X+Y", "Y*Y", "LogSumExpWeight", DEF, { 0, -INFINITY, 1 }, { 80, 81, -INFINITY, 0, 3 }, 5 },
	{ "X+Y", "Y", "Max_SumShiftExpWeight", DEF, { 0, -INFINITY, 1 }, { 80, 81, -INFINITY, 0, 3 }, 5 },
	/* Min and co skip NaN; a row of +inf gives (+inf, 0); fewer terms than K */
	{ "X+Y", NULL, "Min_ArgMin", DEF, { 0, INFINITY, NAN }, { NAN, 2, 1, 1, 5 }, 5 },
	{ "X+Y", NULL, "Max_ArgMax", DEF, { 0, -INFINITY, 1 }, { 3, NAN, 3, -1, 2 }, 5 },
	{ "X+Y", NULL, "KMin_ArgKMin(4)", DEF, { 0, INFINITY, 1 }, { 3, NAN, 3, 1 }, 4 },
	{ "X+Y", NULL, "ArgKMin(3)", DEF, { 0, 1, 2 }, { 2, 1 }, 2 },
	{ "X+Y", NULL, "Min", DEF, { 0, 1, 2 }, { 0 }, 0 },
	{ "X+Y", NULL, "ArgMax", DEF, { 0, 1, 2 }, { 0 }, 0 },
	/* sums with an infinity stay infinite, the Kahan compensation included */
	{ "X+Y", NULL, "Sum", KAHAN, { 0, 1, -INFINITY }, { 1, INFINITY, 2, 3, 4 }, 5 },
	{ "X+Y", NULL, "Sum", BLOCK, { 0, 1, -INFINITY }, { 1, INFINITY, 2, 3, 4 }, 5 },
	{ "X+Y", NULL, "Sum", DEF, { 0, 1, 2 }, { 0 }, 0 },
	/* the conventions at 0 of FORMULAS.md */
	{ "Rsqrt(X*Y)+XLogX(X*Y)+SinXDivX(X*Y)+Step(X*Y)+Sign(X*Y)", NULL, "Sum", DEF,
	  { 0, 1, 2 }, { 0, 0, 0, 0, 1 }, 5 },
	{ "Exp(X*Y)+Log(X+Y)", NULL, "Sum", DEF, { 0, -INFINITY, 1 }, { 0, 1, 2, 3, 4 }, 5 },
};

#define N_SPECIALS ((int)(sizeof(specials) / sizeof(specials[0])))

#endif
