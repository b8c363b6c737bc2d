/* The C dialect's prelude: the scalar type and the math functions that generated C code
 * calls. Prepended to every C kernel after the emitter's #defines (KR_DOUBLE). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef KR_DOUBLE
#define KR_DOUBLE 0
#endif
#ifndef KR_FAST_MATH
#define KR_FAST_MATH 0
#endif

/*
 * Kernels are compiled without -ffast-math: LogSumExp starts from -inf, Min from +inf,
 * and NaN must stay NaN. libm's exp and log are calls the vectoriser cannot see through,
 * so kr_exp and kr_log below are straight-line code (selects, no branches, bit moves
 * through memcpy) that a compiler vectorises with plain -O3: within 1.1 ulp of the
 * correctly rounded result in float32 and float64 (kr_exp: 0.97 ulp over every float,
 * 0.94 over 2e7 random doubles, measured against expl), with exp(-inf) = 0, exp(+inf) = inf,
 * exp(large) = inf, subnormal results right, log(0) = -inf, log(x < 0) = NaN, and NaN
 * propagated. The other functions are libm's: correct, not vectorised.
 */

#if KR_DOUBLE
typedef double real;
#define KR_INF ((double)INFINITY)
#define KR_NAN ((double)NAN)
#define kr_sin sin
#define kr_cos cos
#define kr_asin asin
#define kr_acos acos
#define kr_atan atan
#define kr_atan2 atan2
#define kr_sqrt sqrt
#define kr_floor floor
#define kr_round round
#define kr_fabs fabs
#define kr_pow pow

/* exp(x) = 2^n p: n = round(x / ln 2) by the 1.5 * 2^52 trick, left in the low bits of
 * *t, and p = exp(r), r = x - n ln 2 in two parts, as 1 + r + r^2 Q(r), Q of degree 9
 * fitted at Chebyshev nodes (tools/exp_coefficients.py): below 1.8e-17 relative,
 * evaluated by Horner's rule, 11 fused multiply-adds (fast math: degree 7, below 7.9e-14,
 * two less). kr_exp and kr_exp_g scale p by 2^n each in their way. */
static inline double kr_exp_core(double x, double *t)
{
	double n, r, p;

	*t = x * 1.4426950408889634074 + 6755399441055744.0;
	n = *t - 6755399441055744.0;
	r = x - n * 6.93147180369123816490e-01;
	r = r - n * 1.90821492927058770002e-10;
#if KR_FAST_MATH
	p = 2.761759959412538292e-6;
	p = p * r + 2.486790848350535239e-5;
	p = p * r + 1.984122454738129245e-4;
	p = p * r + 1.388883905304807722e-3;
	p = p * r + 8.333333344221820941e-3;
	p = p * r + 4.166666678647306160e-2;
	p = p * r + 1.666666666666257717e-1;
	p = p * r + 4.999999999995500297e-1;
#else
	p = 2.510040371657669145e-8;
	p = p * r + 2.762011213957236449e-7;
	p = p * r + 2.755726842168261226e-6;
	p = p * r + 2.480152124613149443e-5;
	p = p * r + 1.984126986307827975e-4;
	p = p * r + 1.388888891724578757e-3;
	p = p * r + 8.333333333330056894e-3;
	p = p * r + 4.166666666662406365e-2;
	p = p * r + 1.666666666666666745e-1;
	p = p * r + 5.000000000000001024e-1;
#endif
	p = p * r + 1.0;
	return p * r + 1.0;
}

static inline double kr_exp(double x)
{
	double t, p = kr_exp_core(x, &t);
	uint64_t nb, a;

	memcpy(&nb, &t, sizeof(nb));
#if KR_FAST_MATH
	/* Fast math: 2^(n-1) put into p's exponent (t's bits shifted up are n's), then
	 * times 2, so that n up to 1024 stays in range. Results below 2^-1020 (x below
	 * -707.35) are flushed to 0 rather than made subnormal, as CUDA's fast math flushes;
	 * past 709.78, and for NaN, x + inf. Elsewhere kr_exp's value, bit for bit. */
	memcpy(&a, &p, sizeof(a));
	a += (nb << 52) - ((uint64_t)1 << 52);
	memcpy(&p, &a, sizeof(p));
	p = p * 2.0;
	p = !(x <= 709.782712893383973096) ? x + KR_INF : p;
	return x < -707.35 ? 0.0 : p;
#else
	/* 2^n as two factors 2^a 2^(n-a), a = floor(n / 2), so that n down to -1075
	 * (subnormal results) and up to 1024 stay representable, p 2^a is exact and the
	 * product rounds once. n is t's bits less the trick's (folded into the constants
	 * below; the trick's bits are even): integer operations only, on unsigned values,
	 * so that whatever x is (NaN, infinite, huge) nothing is undefined. */
	double sa, sb;
	uint64_t b;

	a = (uint64_t)((int64_t)nb >> 1) + (1023u - 0x4338000000000000ULL / 2);
	b = (nb - a + (2046u - 0x4338000000000000ULL)) << 52;
	a <<= 52;
	memcpy(&sa, &a, sizeof(sa));
	memcpy(&sb, &b, sizeof(sb));
	p = p * sa * sb;
	/* Past the ends, where n is out of that range, the selects give the answer; a NaN
	 * went through the products above and stays one. No clamp of x first: on AVX-512
	 * its compares and blends cost 8% of a Gaussian sum. */
	p = x > 709.782712893383973096 ? KR_INF : p;
	return x < -745.2 ? 0.0 : p;
#endif
}

/* kr_exp for the sums' fast path (KR_GUARD, kernels/host.c): 2^n put into p's exponent
 * as 2^(n+64), then times 2^-64, which rounds once, as kr_exp's two factors do, so the
 * value is kr_exp's bit for bit, subnormal results included, for x up to 664; below -752
 * the product would leave the range, and 0 is the answer. Past 664, and for NaN, it
 * sets *bad, and the caller computes the tile again with kr_exp. Saves the integer work
 * of kr_exp's two factors and its select on the upper side. Under fast math, with fast
 * math's shorter polynomial (and subnormal results still exact: they cost nothing here). */
static inline double kr_exp_g(double x, int *bad)
{
	double t, p = kr_exp_core(x, &t);
	uint64_t nb, a;

	memcpy(&nb, &t, sizeof(nb));
	memcpy(&a, &p, sizeof(a));
	a += (nb << 52) + ((uint64_t)64 << 52);
	memcpy(&p, &a, sizeof(p));
	p = p * 0x1p-64;
	*bad |= !(x <= 664.0);
	return x < -752.0 ? 0.0 : p;
}

/* fdlibm's log: x = 2^k m with m in [sqrt(2)/2, sqrt(2)), log(m) = f - hfsq + s (hfsq + R),
 * with s = f / (2 + f). Subnormals are scaled by 2^54 first. */
static inline double kr_log(double x)
{
	double xs = x < 2.2250738585072014e-308 ? x * 18014398509481984.0 : x;
	double f, hfsq, s, z, w, t1, t2, R, dk, y;
	uint64_t ix;
	int64_t k;

	/* Unsigned: the bits of a negative x, an infinity or a NaN must not overflow. */
	memcpy(&ix, &xs, sizeof(ix));
	k = x < 2.2250738585072014e-308 ? -54 : 0;
	ix += 0x3ff0000000000000ULL - 0x3fe6a09e00000000ULL;
	k += (int64_t)(ix >> 52) - 0x3ff;
	ix = (ix & 0x000fffffffffffffULL) + 0x3fe6a09e00000000ULL;
	memcpy(&xs, &ix, sizeof(xs));
	f = xs - 1.0;
	hfsq = 0.5 * f * f;
	s = f / (2.0 + f);
	z = s * s;
	w = z * z;
	t1 = w * (3.999999999940941908e-01 +
		  w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01));
	t2 = z * (6.666666666666735130e-01 +
		  w * (2.857142874366239149e-01 +
		       w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
	R = t2 + t1;
	dk = (double)k;
	y = s * (hfsq + R) + dk * 1.90821492927058770002e-10 - hfsq + f +
	    dk * 6.93147180369123816490e-01;
	y = x == KR_INF ? x : y;
	y = x == 0 ? -KR_INF : y;
	y = x < 0 ? KR_NAN : y;
	return x != x ? x : y;
}

#else /* float32 */
typedef float real;
#define KR_INF INFINITY
#define KR_NAN NAN
#define kr_sin sinf
#define kr_cos cosf
#define kr_asin asinf
#define kr_acos acosf
#define kr_atan atanf
#define kr_atan2 atan2f
#define kr_sqrt sqrtf
#define kr_floor floorf
#define kr_round roundf
#define kr_fabs fabsf
#define kr_pow powf

/* As kr_exp_core in double: n from -150 to 128 in *t's low bits; ln 2 in two parts
 * (Cephes); 1 + r + r^2 Q(r), Q of degree 4: below 1.1e-8 relative (fast math: degree 3,
 * below 4.5e-7). */
static inline float kr_exp_core(float x, float *t)
{
	float n, r, p;

	*t = x * 1.44269504088896341f + 12582912.0f;
	n = *t - 12582912.0f;
	r = x - n * 0.693359375f;
	r = r + n * 2.12194440e-4f;
#if KR_FAST_MATH
	p = 8.357213943574424e-3f;
	p = p * r + 4.183390072486954e-2f;
	p = p * r + 1.666663078376766e-1f;
	p = p * r + 4.999974869988623e-1f;
#else
	p = 1.392619766942992e-3f;
	p = p * r + 8.363190325615149e-3f;
	p = p * r + 4.166655453261579e-2f;
	p = p * r + 1.666657692198540e-1f;
	p = p * r + 0.5f;
#endif
	p = p * r + 1.0f;
	return p * r + 1.0f;
}

static inline float kr_exp(float x)
{
	float t, p = kr_exp_core(x, &t);
	uint32_t nb, a;

	memcpy(&nb, &t, sizeof(nb));
#if KR_FAST_MATH
	/* As in double: results below 2^-124 (x below -86.29) flushed to 0. */
	memcpy(&a, &p, sizeof(a));
	a += (nb << 23) - (1u << 23);
	memcpy(&p, &a, sizeof(p));
	p = p * 2.0f;
	p = !(x <= 88.72283935546875f) ? x + KR_INF : p;
	return x < -86.29f ? 0.0f : p;
#else
	float sa, sb;
	uint32_t b;

	a = (uint32_t)((int32_t)nb >> 1) + (127u - 0x4B400000u / 2);
	b = (nb - a + (254u - 0x4B400000u)) << 23;
	a <<= 23;
	memcpy(&sa, &a, sizeof(sa));
	memcpy(&sb, &b, sizeof(sb));
	p = p * sa * sb;
	p = x > 88.72283935546875f ? KR_INF : p;
	return x < -103.972084045410f ? 0.0f : p;
#endif
}

/* As kr_exp_g in double: exact for x up to 44 (2^(n+64) in the exponent), 0 below
 * -131, *bad set past 44 and for NaN. */
static inline float kr_exp_g(float x, int *bad)
{
	float t, p = kr_exp_core(x, &t);
	uint32_t nb, a;

	memcpy(&nb, &t, sizeof(nb));
	memcpy(&a, &p, sizeof(a));
	a += (nb << 23) + (64u << 23);
	memcpy(&p, &a, sizeof(p));
	p = p * 0x1p-64f;
	*bad |= !(x <= 44.0f);
	return x < -131.0f ? 0.0f : p;
}

/* musl's logf (from fdlibm), with the same reduction as kr_log above. */
static inline float kr_log(float x)
{
	float xs = x < 1.17549435e-38f ? x * 33554432.0f : x;
	float f, s, z, w, t1, t2, R, hfsq, dk, y;
	uint32_t ix;
	int32_t k;

	memcpy(&ix, &xs, sizeof(ix));
	k = x < 1.17549435e-38f ? -25 : 0;
	ix += 0x3f800000u - 0x3f3504f3u;
	k += (int32_t)(ix >> 23) - 0x7f;
	ix = (ix & 0x007fffffu) + 0x3f3504f3u;
	memcpy(&xs, &ix, sizeof(xs));
	f = xs - 1.0f;
	s = f / (2.0f + f);
	z = s * s;
	w = z * z;
	t1 = w * (0.40000972152f + w * 0.24279078841f);
	t2 = z * (0.66666662693f + w * 0.28498786688f);
	R = t2 + t1;
	hfsq = 0.5f * f * f;
	dk = (float)k;
	y = s * (hfsq + R) + dk * 9.0580006145e-06f - hfsq + f + dk * 6.9313812256e-01f;
	y = x == KR_INF ? x : y;
	y = x == 0 ? -KR_INF : y;
	y = x < 0 ? KR_NAN : y;
	return x != x ? x : y;
}
#endif

/* The split fast path's kr_args_g (kernels/host.c, KR_NE): stores an exp's argument for
 * the template to compute, and returns its value for an exp inside another's argument
 * (unused otherwise, and then dropped as dead code, with the call). */
static inline real kr_exp_put(real *e, real x, int *bad)
{
	*e = x;
	return kr_exp_g(x, bad);
}
