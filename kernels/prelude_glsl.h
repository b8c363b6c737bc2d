/* The GLSL dialect's prelude: the scalar type, array sizes and the math functions that
 * generated GLSL calls, for Vulkan compute shaders (kernels/tiled.comp). */

/*
 * GLSL has no typedef and no double versions of exp, log, sin, cos, asin, acos, atan or
 * pow; Vulkan also allows its float built-ins to be loose (atan within 4096 ulp, sin and
 * cos within 2^-11 absolute, exp within 3 + 2|x| ulp), and Mesa computes exp as exp2 of
 * x log2(e), which loses |x| ulps. So both precisions use the functions below, written
 * like kernels/c_prelude.h's kr_exp and kr_log: Cephes (float) and fdlibm (double)
 * polynomials after a Cody-Waite reduction, selects rather than branches, bits moved
 * with floatBitsToInt / packDouble2x32 (no 64-bit integers needed). Within a few ulp of
 * the correctly rounded result; exp(-inf) = 0, log(0) = -inf, log(x < 0) = NaN, NaN
 * propagated. sqrt, floor, abs and trunc are GLSL's own: exact in both precisions.
 *
 *   real               the scalar type (from KR_DOUBLE)
 *   KR_INF, KR_NAN     +infinity and NaN of type real
 *   KR_DRA, KR_DCA, KR_DPA   sizes of the row, column and parameter arrays that the
 *                      generated functions take: GLSL has no arrays of size 0, and a
 *                      column is read as whole texels (KR_TPC per column)
 *   KR_GMA             size of the gram slots' array (gm) that kr_update takes: the
 *                      most slots a source has (lib/emit.h KRED__EMIT_MAX_GRAM)
 */
#ifndef KR_DOUBLE
#define KR_DOUBLE 0
#endif
#ifndef KR_FAST_MATH
#define KR_FAST_MATH 0
#endif

#if KR_DOUBLE
#define real double
/* A column of doubles is read as RGBA32UI texels: two doubles per texel. */
#define KR_PER_TEXEL 2
#else
#define real float
#define KR_PER_TEXEL 4
#endif

#define KR_TPC ((KR_DC + KR_PER_TEXEL - 1) / KR_PER_TEXEL)
#define KR_DRA (KR_DR > 0 ? KR_DR : 1)
#define KR_DCA (KR_TPC > 0 ? KR_TPC * KR_PER_TEXEL : 1)
#define KR_DPA (KR_DP > 0 ? KR_DP : 1)
#define KR_GMA 8

#if KR_DOUBLE

#define KR_INF packDouble2x32(uvec2(0u, 0x7ff00000u))
#define KR_NAN packDouble2x32(uvec2(0u, 0x7ff80000u))
#define KR_PI 3.14159265358979311600lf
#define KR_PIO2 1.57079632679489655800lf

bool kr_signbit(double x)
{
	return (unpackDouble2x32(x).y >> 31) != 0u;
}

/* 2^n for integer n in [-1022, 1023]. */
double kr_pow2i(int n)
{
	return packDouble2x32(uvec2(0u, uint(n + 1023) << 20));
}

double kr_exp(double x)
{
	/* Clamped first so that the conversion to int stays defined; NaN is put back at
	 * the end. */
	double xc = clamp(x, -746.0lf, 710.0lf);
	double t, n, r, p, y;
	int ni, a;

	xc = isnan(x) ? 0.0lf : xc;
	/* n = round(x / ln 2), r = x - n ln 2 in two parts. */
	t = xc * 1.4426950408889634074lf;
	n = floor(t + 0.5lf);
	r = xc - n * 6.93147180369123816490e-01lf;
	r = r - n * 1.90821492927058770002e-10lf;
	/* exp(r) on [-ln2/2, ln2/2]: Taylor to degree 13, truncation below 2e-17. */
	p = 1.0lf / 6227020800.0lf;
	p = p * r + 1.0lf / 479001600.0lf;
	p = p * r + 1.0lf / 39916800.0lf;
	p = p * r + 1.0lf / 3628800.0lf;
	p = p * r + 1.0lf / 362880.0lf;
	p = p * r + 1.0lf / 40320.0lf;
	p = p * r + 1.0lf / 5040.0lf;
	p = p * r + 1.0lf / 720.0lf;
	p = p * r + 1.0lf / 120.0lf;
	p = p * r + 1.0lf / 24.0lf;
	p = p * r + 1.0lf / 6.0lf;
	p = p * r + 0.5lf;
	p = p * (r * r) + r + 1.0lf;
	/* 2^n as two factors, so that subnormal results and n = 1024 stay representable. */
	ni = int(n);
	a = ni >> 1;
	y = p * kr_pow2i(a) * kr_pow2i(ni - a);
	y = x > 709.782712893383973096lf ? KR_INF : y;
	y = x < -745.2lf ? 0.0lf : y;
	return isnan(x) ? x : y;
}

/* fdlibm's log: x = 2^k m with m in [sqrt(2)/2, sqrt(2)), log(m) = f - hfsq + s (hfsq + R),
 * s = f / (2 + f). Subnormals are scaled by 2^54 first. Only the high word moves. */
double kr_log(double x)
{
	bool sub = x < 2.2250738585072014e-308lf;
	double xs = sub ? x * 18014398509481984.0lf : x;
	double f, hfsq, s, z, w, t1, t2, R, dk, y;
	uvec2 b = unpackDouble2x32(xs);
	int k = sub ? -54 : 0;

	b.y += 0x3ff00000u - 0x3fe6a09eu;
	k += int(b.y >> 20) - 0x3ff;
	b.y = (b.y & 0x000fffffu) + 0x3fe6a09eu;
	xs = packDouble2x32(b);
	f = xs - 1.0lf;
	hfsq = 0.5lf * f * f;
	s = f / (2.0lf + f);
	z = s * s;
	w = z * z;
	t1 = w * (3.999999999940941908e-01lf +
		  w * (2.222219843214978396e-01lf + w * 1.531383769920937332e-01lf));
	t2 = z * (6.666666666666735130e-01lf +
		  w * (2.857142874366239149e-01lf +
		       w * (1.818357216161805012e-01lf + w * 1.479819860511658591e-01lf)));
	R = t2 + t1;
	dk = double(k);
	y = s * (hfsq + R) + dk * 1.90821492927058770002e-10lf - hfsq + f +
	    dk * 6.93147180369123816490e-01lf;
	y = x == KR_INF ? x : y;
	y = x == 0.0lf ? -KR_INF : y;
	y = x < 0.0lf ? KR_NAN : y;
	return isnan(x) ? x : y;
}

/* fdlibm's kernels on [-pi/4, pi/4]. */
double kr_ksin(double x)
{
	double z = x * x, v = z * x;
	double r = 8.33333333332248946124e-03lf +
		   z * (-1.98412698298579493134e-04lf +
			z * (2.75573137070700676789e-06lf +
			     z * (-2.50507602534068634195e-08lf + z * 1.58969099521155010221e-10lf)));

	return x + v * (-1.66666666666666324348e-01lf + z * r);
}

double kr_kcos(double x)
{
	double z = x * x;
	double r = z * (4.16666666666666019037e-02lf +
			z * (-1.38888888888741095749e-03lf +
			     z * (2.48015872894767294178e-05lf +
				  z * (-2.75573143513906633035e-07lf +
				       z * (2.08757232129817482790e-09lf +
					    z * -1.13596475577881948265e-11lf)))));
	double hz = 0.5lf * z, w = 1.0lf - hz;

	return w + (((1.0lf - w) - hz) + z * r);
}

/* x - n pi/2 with pi/2 in three parts of 33 bits: n pi/2 is exact for |n| < 2^20. The
 * quadrant is n mod 4. */
double kr_reduce(double x, out int q)
{
	double n = floor(x * 6.36619772367581382433e-01lf + 0.5lf);
	double nc = isinf(n) || isnan(n) ? 0.0lf : n;

	q = int(mod(nc, 4.0lf));
	return ((x - n * 1.57079632673412561417e+00lf) - n * 6.07710050630396597660e-11lf) -
	       n * 2.02226624871116645580e-21lf;
}

double kr_sin(double x)
{
	int q;
	double r = kr_reduce(x, q);
	double s = (q & 1) == 0 ? kr_ksin(r) : kr_kcos(r);

	return (q & 2) == 0 ? s : -s;
}

double kr_cos(double x)
{
	int q;
	double r = kr_reduce(x, q);
	double c = (q & 1) == 0 ? kr_kcos(r) : kr_ksin(r);

	return ((q + 1) & 2) == 0 ? c : -c;
}

/* fdlibm's rational approximation of (asin(x) - x) / x^3 at t = x^2, |x| <= 0.5. */
double kr_asin_r(double t)
{
	double p = t * (1.66666666666666657415e-01lf +
			t * (-3.25565818622400915405e-01lf +
			     t * (2.01212532134862925881e-01lf +
				  t * (-4.00555345006794114027e-02lf +
				       t * (7.91534994289814532176e-04lf +
					    t * 3.47933107596021167570e-05lf)))));
	double q = 1.0lf + t * (-2.40339491173441421878e+00lf +
				t * (2.02094576023350569471e+00lf +
				     t * (-6.88283971605453293030e-01lf +
					  t * 7.70381505559019352791e-02lf)));

	return p / q;
}

double kr_asin(double x)
{
	double ax = abs(x);
	double small = x + x * kr_asin_r(x * x);
	/* |x| >= 0.5: asin(x) = pi/2 - 2 asin(sqrt((1 - |x|) / 2)). */
	double t = (1.0lf - ax) * 0.5lf, s = sqrt(t);
	double big = KR_PIO2 - (2.0lf * (s + s * kr_asin_r(t)) - 6.12323399573676603587e-17lf);
	double y = ax < 0.5lf ? small : (kr_signbit(x) ? -big : big);

	return ax > 1.0lf ? KR_NAN : y;
}

double kr_acos(double x)
{
	double t = (1.0lf - abs(x)) * 0.5lf, s = sqrt(t);
	double a = 2.0lf * (s + s * kr_asin_r(t));
	double y = abs(x) < 0.5lf ? KR_PIO2 - (x + x * kr_asin_r(x * x))
				  : (x > 0.0lf ? a : KR_PI - a);

	return abs(x) > 1.0lf ? KR_NAN : (isnan(x) ? x : y);
}

/* fdlibm's atan: four reduction intervals, each with the exact atan of its point in two
 * parts (hi, lo). */
double kr_atan(double x)
{
	double ax = abs(x), hi = 0.0lf, lo = 0.0lf, z, w, s1, s2, y;
	bool reduced = ax >= 0.4375lf;

	if (ax >= 2.4375lf) {
		hi = 1.57079632679489655800e+00lf;
		lo = 6.12323399573676603587e-17lf;
		ax = -1.0lf / ax;
	} else if (ax >= 1.1875lf) {
		hi = 9.82793723247329054082e-01lf;
		lo = 1.39033110312309984516e-17lf;
		ax = (ax - 1.5lf) / (1.0lf + 1.5lf * ax);
	} else if (ax >= 0.6875lf) {
		hi = 7.85398163397448278999e-01lf;
		lo = 3.06161699786838301793e-17lf;
		ax = (ax - 1.0lf) / (ax + 1.0lf);
	} else if (ax >= 0.4375lf) {
		hi = 4.63647609000806093515e-01lf;
		lo = 2.26987774529616870924e-17lf;
		ax = (2.0lf * ax - 1.0lf) / (2.0lf + ax);
	}
	z = ax * ax;
	w = z * z;
	s1 = z * (3.33333333333329318027e-01lf +
		  w * (1.42857142725034663711e-01lf +
		       w * (9.09088713343650656196e-02lf +
			    w * (6.66107313738753120669e-02lf +
				 w * (4.97687799461593236017e-02lf +
				      w * 1.62858201153657823623e-02lf)))));
	s2 = w * (-1.99999999998764832476e-01lf +
		  w * (-1.11111104054623557880e-01lf +
		       w * (-7.69187620504482999495e-02lf +
			    w * (-5.83357013379057348645e-02lf + w * -3.65315727442169155270e-02lf))));
	y = reduced ? hi - ((ax * (s1 + s2) - lo) - ax) : ax - ax * (s1 + s2);
	y = kr_signbit(x) ? -y : y;
	return isnan(x) ? x : y;
}

#else /* float32 */

#define KR_INF uintBitsToFloat(0x7f800000u)
#define KR_NAN uintBitsToFloat(0x7fc00000u)
#define KR_PI 3.14159265358979f
#define KR_PIO2 1.57079632679490f

bool kr_signbit(float x)
{
	return (floatBitsToUint(x) >> 31) != 0u;
}

/* Cephes expf: n = round(x / ln 2), exp(x) = 2^n exp(r) with r = x - n ln 2 (ln 2 in two
 * parts) and exp(r) a degree-6 polynomial. 2^n is built as 2^(n-1) * 2, so that n = 128
 * (x up to 88.72) stays in range; results below 2^-125 (x < -86.99) are flushed to 0, as
 * many devices flush them anyway. Out-of-range x give some n: the selects discard it. A
 * NaN stays NaN through r and p. This is the costliest part of a Gaussian term: every
 * operation here costs ~5% of the Gaussian sum on llvmpipe. */
#if KR_FAST_MATH
/* Fast math (kred_reduction_options.fast_math): GLSL's own exp and log, within Vulkan's
 * bounds (exp: 3 + 2|x| ulp; Mesa computes exp2(x log2(e))), with the special values of
 * the functions below kept by selects. */
float kr_exp(float x)
{
	float y = exp(x);

	y = x > 88.72283935546875f ? KR_INF : y;
	return x < -103.97f ? 0.0f : y;
}

float kr_log(float x)
{
	float y = log(x);

	y = x == KR_INF ? x : y;
	y = x == 0.0f ? -KR_INF : y;
	y = x < 0.0f ? KR_NAN : y;
	return isnan(x) ? x : y;
}
#else
float kr_exp(float x)
{
	float n = roundEven(x * 1.44269504088896341f);
	float r = x - n * 0.693359375f;
	float z, p, y;

	r = r + n * 2.12194440e-4f;
	z = r * r;
	p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * z + r + 1.0f;
	y = p * intBitsToFloat((int(n) + 126) << 23) * 2.0f;
	y = x > 88.72283935546875f ? KR_INF : y;
	return x < -86.99f ? 0.0f : y;
}

/* musl's logf (from fdlibm), with the reduction of the double version. */
float kr_log(float x)
{
	bool sub = x < 1.17549435e-38f;
	float xs = sub ? x * 33554432.0f : x;
	float f, s, z, w, t1, t2, R, hfsq, dk, y;
	uint ix = floatBitsToUint(xs);
	int k = sub ? -25 : 0;

	ix += 0x3f800000u - 0x3f3504f3u;
	k += int(ix >> 23) - 0x7f;
	ix = (ix & 0x007fffffu) + 0x3f3504f3u;
	xs = uintBitsToFloat(ix);
	f = xs - 1.0f;
	s = f / (2.0f + f);
	z = s * s;
	w = z * z;
	t1 = w * (0.40000972152f + w * 0.24279078841f);
	t2 = z * (0.66666662693f + w * 0.28498786688f);
	R = t2 + t1;
	hfsq = 0.5f * f * f;
	dk = float(k);
	y = s * (hfsq + R) + dk * 9.0580006145e-06f - hfsq + f + dk * 6.9313812256e-01f;
	y = x == KR_INF ? x : y;
	y = x == 0.0f ? -KR_INF : y;
	y = x < 0.0f ? KR_NAN : y;
	return isnan(x) ? x : y;
}
#endif

/* Cephes sinf and cosf: octant j of |x| by 4/pi, reduced by pi/4 in three parts. */
float kr_ksin(float x)
{
	float z = x * x;

	return ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * x + x;
}

float kr_kcos(float x)
{
	float z = x * x;

	return ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z +
		4.166664568298827e-2f) * z * z - 0.5f * z + 1.0f;
}

float kr_reduce(float x, out int j)
{
	float ax = abs(x);
	float n = floor(ax * 1.27323954473516f);
	float y;

	n = isinf(n) || isnan(n) ? 0.0f : n;
	/* The odd octants go to the next even one: j is even, r in [-pi/4, pi/4]. */
	n = n + mod(n, 2.0f);
	j = int(mod(n, 8.0f));
	y = ((ax - n * 0.78515625f) - n * 2.4187564849853515625e-4f) - n * 3.77489497744594108e-8f;
	return isinf(x) ? KR_NAN : y;
}

float kr_sin(float x)
{
	int j;
	float r = kr_reduce(x, j);
	float s = (j & 2) == 0 ? kr_ksin(r) : kr_kcos(r);

	/* sin(-x) = -sin(x); octants 4..7 change the sign again. */
	s = (j & 4) == 0 ? s : -s;
	return kr_signbit(x) ? -s : s;
}

float kr_cos(float x)
{
	int j;
	float r = kr_reduce(x, j);
	float c = (j & 2) == 0 ? kr_kcos(r) : kr_ksin(r);

	return ((j + 2) & 4) == 0 ? c : -c;
}

/* Cephes asinf: |x| > 0.5 goes through asin(x) = pi/2 - 2 asin(sqrt((1 - |x|) / 2)). */
float kr_asin(float x)
{
	float ax = abs(x);
	bool big = ax > 0.5f;
	float z = big ? 0.5f * (1.0f - ax) : ax * ax;
	float s = big ? sqrt(z) : ax;
	float y = ((((4.2163199048e-2f * z + 2.4181311049e-2f) * z + 4.5470025998e-2f) * z +
		    7.4953002686e-2f) * z + 1.6666752422e-1f) * z * s + s;

	y = big ? KR_PIO2 - (y + y) : y;
	y = kr_signbit(x) ? -y : y;
	return ax > 1.0f ? KR_NAN : (isnan(x) ? x : y);
}

float kr_acos(float x)
{
	float y = x < -0.5f ? KR_PI - 2.0f * kr_asin(sqrt(0.5f * (1.0f + x)))
		: x > 0.5f ? 2.0f * kr_asin(sqrt(0.5f * (1.0f - x)))
			   : KR_PIO2 - kr_asin(x);

	return isnan(x) ? x : y;
}

/* Cephes atanf. */
float kr_atan(float x)
{
	float ax = abs(x), y0 = 0.0f, z, y;

	if (ax > 2.414213562373095f) {
		y0 = KR_PIO2;
		ax = -1.0f / ax;
	} else if (ax > 0.4142135623730950f) {
		y0 = 0.78539816339744830962f;
		ax = (ax - 1.0f) / (ax + 1.0f);
	}
	z = ax * ax;
	y = y0 + ((((8.05374449538e-2f * z - 1.38776856032e-1f) * z + 1.99777106478e-1f) * z -
		   3.33329491539e-1f) * z * ax + ax);
	y = kr_signbit(x) ? -y : y;
	return isnan(x) ? x : y;
}

#endif /* float32 */

/* atan2 on atan of the ratio of the smaller to the larger magnitude (in [0, 1]), then
 * the octant: C's values at zeros and infinities (atan2(+-0, -0) = +-pi, atan2(inf, inf)
 * = pi/4), NaN propagated. */
real kr_atan2(real y, real x)
{
	real ax = abs(x), ay = abs(y);
	real mx = max(ax, ay), mn = min(ax, ay);
	real q = mx == real(0) ? real(0) : (isinf(mx) ? (isinf(mn) ? real(1) : real(0)) : mn / mx);
	real r = kr_atan(q);

	r = ay > ax ? KR_PIO2 - r : r;
	r = kr_signbit(x) ? KR_PI - r : r;
	r = kr_signbit(y) ? -r : r;
	return isnan(x) || isnan(y) ? x + y : r;
}

/* Halves away from zero, as C's round (GLSL's round may go either way). */
real kr_round(real x)
{
	real t = trunc(x);

	return abs(x - t) >= real(0.5) ? t + sign(x) : t;
}

/* C's pow for the integer exponents the emitter passes (|n| > 8), and any real one:
 * exp(y log |x|), negative for a negative x and an odd integer y, NaN for a negative x
 * and a non-integer y. */
real kr_pow(real x, real y)
{
	bool yint = floor(y) == y;
	bool odd = yint && mod(y, real(2)) == real(1);
	real r = kr_exp(y * kr_log(abs(x)));

	r = x < real(0) && !yint ? KR_NAN : r;
	r = x < real(0) && odd ? -r : r;
	r = y == real(0) ? real(1) : r;
	return x == real(1) ? real(1) : r;
}

#define kr_sqrt sqrt
#define kr_floor floor
#define kr_fabs abs

/* ---- the shader's interface (kernels/tiled.comp), here so that the wide mode's generated
 * functions (lib/vk/glsl.c) can read the buffers themselves */
#ifndef KR_PUSH_DP
#define KR_PUSH_DP 0
#endif
layout(std430, set = 0, binding = 0) readonly buffer KrRows { real kr_rows[]; };
#if KR_DOUBLE
layout(set = 0, binding = 1) uniform usamplerBuffer kr_cols;
#else
layout(set = 0, binding = 1) uniform samplerBuffer kr_cols;
#endif
layout(std430, set = 0, binding = 2) readonly buffer KrPrms { real kr_prms[]; };
/* State slot s of row i in split range r at ((r * KR_NST + s) * nr + i): neighbouring
 * invocations touch neighbouring words. */
layout(std430, set = 0, binding = 3) buffer KrStates { real kr_states[]; };
layout(std430, set = 0, binding = 4) writeonly buffer KrOut { real kr_out[]; };
/* A block-sparse run (KR_RANGED): task g is kr_tasks[4g..] = first row, end row, first
 * and end interval in kr_red (pairs [start, end) of columns), made by the library
 * (kred__range_tasks), every row of the output in one task. Each pass folds the columns
 * at positions [start, start + count) of the task's intervals laid end to end. */
layout(std430, set = 0, binding = 5) readonly buffer KrTasks { int kr_tasks[]; };
layout(std430, set = 0, binding = 6) readonly buffer KrRed { int kr_red[]; };

layout(push_constant) uniform KrPush {
	int nr;	    /* rows of this row block */
	int nc;	    /* columns of the bound column block */
	int span;   /* columns of one split range (the last one may be shorter) */
	int start;  /* first column of this pass within each range */
	int count;  /* columns per range in this pass, at most */
	int nsplit; /* split ranges (the merge dispatch's count) */
	int flags;
	real jbase; /* index of the column block's first column */
#if KR_PUSH_DP > 0
	real prm[KR_PUSH_DP];
#endif
} pc;

#if KR_PUSH_DP > 0
#define KR_PRM(c) pc.prm[c]
#else
#define KR_PRM(c) kr_prms[c]
#endif

#ifdef KR_DC
/* Value c of column j. */
real kr_col_value(int j, int c)
{
#if KR_DOUBLE
	uvec4 v = texelFetch(kr_cols, j * KR_TPC + c / 2);

	return packDouble2x32((c & 1) != 0 ? v.zw : v.xy);
#else
	return texelFetch(kr_cols, j * KR_TPC + c / 4)[c & 3];
#endif
}
#endif
