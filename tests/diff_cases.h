/* The cases of the derivative suite (tests/test_diff.c), which the CUDA suite also
 * compiles: one row per operation, and the reductions whose gradients are checked. */
#ifndef KRED_DIFF_CASES_H
#define KRED_DIFF_CASES_H

#include "kred.h"

/* ---- one row per operation: Grad(F, V, E) against finite differences of (F|E) */

struct op_row {
	const char *formula;
	const char *aliases;
	const char *wrt;    /* the variables to differentiate with respect to */
	const char *values; /* "X=0.1,-0.5,0.9 P=0.3"; others uniform in [0.3, 0.9] */
};

/* Points are away from kinks: the random ones lie in [0.3, 0.9] (inside the domains of
 * Log, Sqrt, Asin, ...), and explicit values keep clear of the kinks of Abs, ReLU,
 * Clamp, IfElse, Mod, Round, Floor and OneHot by far more than the step. */
static const struct op_row op_rows[] = {
	{ "Minus(X)*Y", "X=Vi(3) Y=Vj(3)", "X Y", NULL },
	{ "Inv(X)", "X=Vi(3)", "X", NULL },
	{ "Exp(Mult(X,Y))", "X=Vi(3) Y=Vj(3)", "X Y", NULL },
	{ "Log(X)", "X=Vi(3)", "X", NULL },
	{ "XLogX(X)", "X=Vi(3)", "X", NULL },
	{ "Sin(X)*Y", "X=Vi(3) Y=Vj(3)", "X Y", NULL },
	{ "SinXDivX(Mult(X,Y))", "X=Vi(3) Y=Vj(3)", "X Y", NULL },
	/* both branches of the rule, and 0 itself, where the value is defined as 1 */
	{ "SinXDivX(X)", "X=Vi(4)", "X", "X=0.05,2.5,0,-0.3" },
	{ "Asin(X)", "X=Vi(3)", "X", NULL },
	{ "Cos(X)", "X=Vi(3)", "X", NULL },
	{ "Acos(X)", "X=Vi(3)", "X", NULL },
	{ "Atan(X)", "X=Vi(3)", "X", NULL },
	{ "Atan2(X,Y)", "X=Vi(3) Y=Vj(3)", "X Y", "X=0.3,-0.5,0.8 Y=-0.4,-0.6,0.2" },
	{ "Atan2(P,X)", "P=Pm(1) X=Vi(3)", "P X", NULL },
	{ "Sqrt(X)", "X=Vi(3)", "X", NULL },
	{ "Rsqrt(X)", "X=Vi(3)", "X", NULL },
	{ "Square(X)", "X=Vi(3)", "X", NULL },
	{ "Pow(X,3)", "X=Vi(3)", "X", "X=0.5,-1.5,2" },
	{ "Pow(X,-2)", "X=Vi(3)", "X", "X=0.5,-1.5,2" },
	{ "Pow(X,-1)+Pow(X,1)+Pow(X,0)", "X=Vi(3)", "X", NULL },
	{ "Powf(X,Y)", "X=Vi(3) Y=Vj(3)", "X Y", NULL },
	{ "Powf(X,P)", "X=Vi(3) P=Pm(1)", "X P", NULL },
	{ "X**1.5", "X=Vi(3)", "X", NULL },
	{ "Abs(X)", "X=Vi(3)", "X", "X=0.3,-0.5,0.8" },
	{ "Sign(X)*X", "X=Vi(3)", "X", "X=0.3,-0.5,0.8" },
	{ "Step(X-P)*Y", "X=Vi(3) P=Pm(1) Y=Vj(3)", "X P Y", "X=0.2,0.8,0.5 P=0.45" },
	{ "ReLU(X)", "X=Vi(3)", "X", "X=0.3,-0.5,0.8" },
	{ "Clamp(X,P,Q)", "X=Vi(3) P=Pm(1) Q=Pm(1)", "X P Q", "X=0.1,0.5,0.9 P=0.3 Q=0.7" },
	{ "Clamp(X,Y,Z)", "X=Vi(3) Y=Vj(3) Z=Vj(3)", "X Y Z",
	  "X=0.1,0.5,0.9 Y=0.3,0.2,0.1 Z=0.7,0.6,0.8" },
	{ "ClampInt(X*3,0,2)", "X=Vi(3)", "X", "X=-0.1,0.5,0.9" },
	{ "IfElse(X-P,X*Y,Square(Y))", "X=Vi(3) P=Pm(1) Y=Vj(3)", "X P Y",
	  "X=0.2,0.8,0.6 P=0.5" },
	{ "Mod(X*Y,P,Q)", "X=Vi(3) Y=Vj(3) P=Pm(1) Q=Pm(1)", "X Y P Q",
	  "X=0.3,0.5,0.9 Y=0.7,0.6,0.8 P=0.25 Q=0.1" },
	{ "Round(X*Y,1)*X", "X=Vi(3) Y=Vj(3)", "X Y", "X=0.3,0.5,0.9 Y=0.7,0.6,0.8" },
	{ "Floor(X*3)*Y", "X=Vi(3) Y=Vj(3)", "X Y", "X=0.3,0.5,0.9" },
	{ "Add(X,Y)*Y", "X=Vi(3) Y=Vj(3)", "X Y", NULL },
	{ "Subtract(X,P)*X", "X=Vi(3) P=Pm(1)", "X P", NULL },
	{ "Mult(X,P)", "X=Vi(3) P=Pm(1)", "X P", NULL },
	{ "Divide(X,Y)", "X=Vi(3) Y=Vj(3)", "X Y", NULL },
	{ "Divide(P,X)", "P=Pm(1) X=Vi(3)", "P X", NULL },
	{ "Scal(P,X)", "P=Pm(1) X=Vi(3)", "P X", NULL },
	{ "Scalprod(X,Y)", "X=Vi(3) Y=Vj(3)", "X Y", NULL },
	{ "Equal(X,Y)+NotEqual(X,Y)+Less(X,Y)+Greater(X,Y)+LessEqual(X,Y)+GreaterEqual(X,Y)+X",
	  "X=Vi(3) Y=Vj(3)", "X Y", "X=0.3,0.5,0.9 Y=0.4,0.2,0.6" },
	{ "Sum(X*Y)", "X=Vi(3) Y=Vj(3)", "X Y", NULL },
	{ "Max(X*Y)", "X=Vi(3) Y=Vj(3)", "X Y", "X=0.3,0.5,0.9 Y=0.4,0.2,0.6" },
	{ "Min(X*Y)", "X=Vi(3) Y=Vj(3)", "X Y", "X=0.3,0.5,0.9 Y=0.4,0.2,0.6" },
	{ "ArgMax(X)*Y+ArgMin(X)*Y", "X=Vi(3) Y=Vj(3)", "X Y", "X=0.3,0.5,0.9" },
	{ "SqNorm2(X)", "X=Vi(3)", "X", NULL },
	{ "Norm2(X)", "X=Vi(3)", "X", NULL },
	{ "Normalize(X)", "X=Vi(3)", "X", NULL },
	{ "SqDist(X,Y)", "X=Vi(3) Y=Vj(3)", "X Y", NULL },
	{ "SqDist(P,X)", "P=Pm(1) X=Vi(3)", "P X", NULL },
	{ "WeightedSqNorm(S,X)", "S=Pm(1) X=Vi(3)", "S X", NULL },
	{ "WeightedSqNorm(S,X)", "S=Pm(3) X=Vi(3)", "S X", NULL },
	{ "WeightedSqNorm(S,X)", "S=Pm(9) X=Vi(3)", "S X", NULL },
	{ "WeightedSqDist(S,X,Y)", "S=Pm(1) X=Vi(3) Y=Vj(3)", "S X Y", NULL },
	{ "WeightedSqDist(S,X,Y)", "S=Pm(3) X=Vi(3) Y=Vj(3)", "S X Y", NULL },
	/* a full weight that is not symmetric: the rule must not assume it is */
	{ "WeightedSqDist(S,X,Y)", "S=Pm(4) X=Vi(2) Y=Vj(2)", "S X Y",
	  "S=1,0.3,-0.7,2 X=0.1,0.9 Y=0.5,0.2" },
	{ "Zero(3)+X", "X=Vi(3)", "X", NULL },
	{ "Elem(X,1)*Y", "X=Vi(3) Y=Vj(3)", "X Y", NULL },
	{ "ElemT(Elem(X,0),3,1)*Y", "X=Vi(3) Y=Vj(3)", "X Y", NULL },
	{ "Extract(X,1,2)", "X=Vi(3)", "X", NULL },
	{ "ExtractT(X,1,5)", "X=Vi(3)", "X", NULL },
	{ "Concat(X,Y)", "X=Vi(3) Y=Vj(2)", "X Y", NULL },
	{ "OneHot(P*3,4)*Elem(X,0)", "P=Pm(1) X=Vi(3)", "P X", "P=0.45" },
	{ "MatVecMult(A,X)", "A=Pm(6) X=Vi(3)", "A X", NULL },
	{ "VecMatMult(X,A)", "X=Vi(2) A=Pm(6)", "X A", NULL },
	{ "TensorProd(X,Y)", "X=Vi(2) Y=Vj(3)", "X Y", NULL },
	{ "Kron(A,B,Ind(2),Ind(3))", "A=Vi(2) B=Vj(3)", "A B", NULL },
	{ "Kron(A,B,Ind(2,2),Ind(2,3))", "A=Vi(4) B=Vj(6)", "A B", NULL },
	/* a matrix product, A^T B (the cotangent of A needs a transpose), and a
	 * contraction over two axes in crossed order */
	{ "TensorDot(A,B,Ind(2,3),Ind(3,2),Ind(1),Ind(0))", "A=Vi(6) B=Vj(6)", "A B", NULL },
	{ "TensorDot(A,B,Ind(3,2),Ind(3,4),Ind(0),Ind(0))", "A=Vi(6) B=Vj(12)", "A B", NULL },
	{ "TensorDot(A,B,Ind(2,3,2),Ind(2,2),Ind(2,0),Ind(0,1))", "A=Vi(12) B=Vj(4)", "A B",
	  NULL },
	/* past 64 values the emitter loops (lib/emit.c): the derivatives' formulas of the
	 * high-dimensional ops, with streamed values, arrays and looped pieces. P = 0.01
	 * keeps the Gaussian of 300 dimensions away from 0, where any gradient would pass. */
	{ "Exp(-P*SqDist(X,Y))*B", "P=Pm(1) X=Vi(300) Y=Vj(300) B=Vj(2)", "P X Y B", "P=0.01" },
	{ "SqNorm2(X)*Sum(Y)+(X|Y)", "X=Vi(100) Y=Vj(100)", "X Y", NULL },
	{ "Normalize(X)*Y", "X=Vi(70) Y=Vj(70)", "X Y", NULL },
	{ "WeightedSqDist(S,X,Y)", "S=Pm(4900) X=Vi(70) Y=Vj(70)", "S X Y", NULL },
	{ "MatVecMult(A,X)+VecMatMult(X,B)", "A=Pm(200) X=Vi(100) B=Pm(200)", "A X B", NULL },
	{ "Extract(X,5,70)*Concat(Y,Y)", "X=Vi(100) Y=Vj(35)", "X Y", NULL },
	{ "TensorProd(X,Y)", "X=Vi(30) Y=Vj(3)", "X Y", NULL },
	/* the Gaussian kernel and a derivative of a derivative, through the same check */
	{ "Exp(-P*SqDist(X,Y))*B", "P=Pm(1) X=Vi(3) Y=Vj(3) B=Vj(2)", "P X Y B", NULL },
	{ "Grad(Exp(-P*SqDist(X,Y)),X,Y)", "P=Pm(1) X=Vi(3) Y=Vi(1)", "P X Y", NULL },
};

/* ---- gradients of reductions, for Vi, Vj and Pm variables, on both axes */

struct red_row {
	const char *reduction, *formula, *weight;
	kred_axis axis;
};

#define F1 "-P*SqDist(X,Y) + Elem(X,0)*Elem(Y,1)"
#define F2 "Sin(X*Y)*P + X - Y"
#define G2 "Exp(Y*P) + Square(X)"

static const struct red_row red_rows[] = {
	{ "Sum", F2, NULL, KRED_REDUCE_J },
	{ "Sum", F2, NULL, KRED_REDUCE_I },
	{ "LogSumExp", F1, NULL, KRED_REDUCE_J },
	{ "LogSumExp", F1, NULL, KRED_REDUCE_I },
	{ "LogSumExpWeight", F1, G2, KRED_REDUCE_J },
	{ "LogSumExpWeight", F1, G2, KRED_REDUCE_I },
	{ "SumSoftMaxWeight", F1, G2, KRED_REDUCE_J },
	{ "SumSoftMaxWeight", F1, G2, KRED_REDUCE_I },
	{ "Max_SumShiftExp", F1, NULL, KRED_REDUCE_J },
	{ "Max_SumShiftExp", F1, NULL, KRED_REDUCE_I },
	{ "Max_SumShiftExpWeight", F1, G2, KRED_REDUCE_J },
	{ "Max_SumShiftExpWeight", F1, G2, KRED_REDUCE_I },
	{ "Min", F2, NULL, KRED_REDUCE_J },
	{ "Min", F2, NULL, KRED_REDUCE_I },
	{ "Max", F2, NULL, KRED_REDUCE_J },
	{ "Max", F2, NULL, KRED_REDUCE_I },
	{ "Min_ArgMin", F2, NULL, KRED_REDUCE_J },
	{ "Max_ArgMax", F2, NULL, KRED_REDUCE_I },
	{ "KMin(2)", F2, NULL, KRED_REDUCE_J },
	{ "KMin(3)", F2, NULL, KRED_REDUCE_I },
	{ "KMin_ArgKMin(2)", F2, NULL, KRED_REDUCE_J },
};

static const char *const red_aliases = "X=Vi(2) Y=Vj(2) P=Pm(1)";

#endif
