/* The host kernel template: OpenMP threads over blocks of KR_R rows; each block walks the
 * reduced index in tiles of KR_T, updating its KR_R rows per loaded column in a loop the
 * compiler vectorises. The emitter prepends #defines, the C prelude and the pieces. */

/*
 * What the emitter provides before this text:
 *   KR_DOUBLE          0 or 1 (and the prelude's typedef real)
 *   KR_DR, KR_DC, KR_DP  widths of the packed row, column and parameter vectors: the
 *                      variables indexed like the output (row side), those reduced over
 *                      (column side) and the parameters, each side's variables side by side
 *   KR_NST             state slots per row; KR_OUT values per output row
 *   KR_TILE_MERGE      1 for the block sum scheme: each tile folds into a fresh state
 *                      that is then merged into the row's total
 *   kr_init(st, sst)   the neutral state; slot s of a row at st[s * sst]
 *   kr_update(st, sst, xi, sxi, yj, p, jr, gm, sgm)
 *                      folds the term of column jr (its index, as a real) into the state:
 *                      row variable c at xi[c * sxi], column variable c at yj[c], the
 *                      value of gram slot g (below) at gm[g * sgm]
 *   kr_merge(st, sst, ot, sot)   folds another partial state into st
 *   kr_finalize(st, sst, out)    writes the KR_OUT values of one row
 *   KR_SELECT          1 for the K-selections (KMin and co), which come with
 *   KR_DF, kr_eval(f, sf, xi, sxi, yj, p, jr, gm, sgm)  the KR_DF values of F at f[c * sf]
 *   kr_fold(st, sst, f, sf, jr)  folds them in, skipping terms that cannot enter
 *   kr_may(st, sst, f, sf)       nonzero when the term at f may enter
 *   KR_LSE_TILE        1 for LogSumExp and Max_SumShiftExp of a scalar F with the block
 *                      scheme (state: the maximum, the sum of exp(F - max), its
 *                      compensation), which come with kr_eval: the template sums a
 *                      tile's exponentials itself
 *   KR_GUARD, kr_update_g(..., bad)   kr_update with the exps of kr_exp_g, which set
 *                      *bad where kr_exp's handling of large arguments and NaN is needed:
 *                      then the row's tile is computed again with kr_update
 *   KR_NE, kr_args_g(..., ea, sea), kr_update_x(..., ea, sea)   float64 only, where
 *                      kr_update_g is straight-line code: its KR_NE exps' arguments
 *                      written to ea[k * sea], and kr_update_g with the exps' values
 *                      read from there (below, KR_VEXP)
 *   KR_NG, KR_GRAMS    the gram slots: squared distances and scalar products of a row
 *                      and a column variable of many values, which this template
 *                      computes for a tile of rows and columns at once, as a matrix
 *                      product; KR_GRAMS lists { squared distance?, row variable's
 *                      offset, column variable's offset, dimension } by slot
 * Compiled on its own (cc -fsyntax-only kernels/host.c) it uses the sample below.
 */
#ifndef KR_NST
#include "c_prelude.h"
#define KR_DR 1
#define KR_DC 1
#define KR_DP 0
#define KR_NST 1
#define KR_OUT 1
#define KR_TILE_MERGE 1
#define KR_SELECT 0
#define KR_DF 1
#define KR_NG 0
#define KR_GRAMS {}
static inline void kr_init(real *restrict st, int sst)
{
	st[0 * sst] = 0;
}
static inline void kr_update(real *restrict st, int sst, const real *restrict xi, int sxi,
			     const real *restrict yj, const real *restrict p, real jr,
			     const real *restrict gm, int sgm)
{
	(void)p;
	(void)jr;
	(void)gm;
	(void)sgm;
	st[0 * sst] += kr_exp(-(xi[0 * sxi] - yj[0]) * (xi[0 * sxi] - yj[0]));
}
static inline void kr_merge(real *restrict st, int sst, const real *restrict ot, int sot)
{
	st[0 * sst] += ot[0 * sot];
}
static inline void kr_finalize(const real *restrict st, int sst, real *restrict out)
{
	out[0] = st[0 * sst];
}
#endif

#include <stdlib.h>
#include <string.h>

#ifndef KR_LSE_TILE
#define KR_LSE_TILE 0
#endif
#ifndef KR_GUARD
#define KR_GUARD 0
#endif

/* Rows per block: two vectors of floats (AVX-512, and NEON's 32 registers hold four);
 * the rows' states and variables are stored slot-major (st[s * KR_R + r]) so that one
 * lane handles one row. */
#ifndef KR_R
#if defined(__AVX512F__) && (KR_GUARD || KR_LSE_TILE) && (KR_DOUBLE || !KR_FAST_MATH)
/* With AVX-512, four vectors of rows where the update calls exp: each vector's term is
 * a chain of some 25 dependent operations (exp's polynomial by Horner's rule), and with
 * two chains a column the core waits on them (the float64 Gaussian ran at 60% of its
 * FMA pipes' rate, 70% with four; with 8 rows, half the speed of 16). Measured on a
 * Zen 5 EPYC, 2 threads, kernels alternated in one process: Gaussian sum float32 1.09x
 * to 1.12x, float64 1.12x to 1.13x (fast math 1.14x to 1.16x), LogSumExp 1.07x to 1.13x,
 * gradient in X 1.06x to 1.08x, D = 64 1.03x. Not the float32 fast math Gaussian
 * (shorter polynomial: 0.92x to 0.96x), nor kernels with no exp (SqDist sum, Min: 0.98x to
 * 1.01x) or K-selections (1.01x), which keep two. */
#define KR_R (KR_DOUBLE ? 32 : 64)
#elif defined(__AVX512F__) || defined(__aarch64__)
#define KR_R (KR_DOUBLE ? 16 : 32)
#else
/* With 16 vector registers (AVX2, SSE), two vectors of rows: four spilled the rows'
 * values and the constants of exp to the stack (Gaussian sum compiled for AVX2: 0.60 s
 * with 32 rows, 0.56 s with 16). */
#define KR_R (KR_DOUBLE ? 8 : 16)
#endif
#endif
/* The float64 fast path with AVX-512, where the emitter split the update (KR_NE: its exps,
 * kr_args_g and kr_update_x): for each column, the block's exp arguments are written to a
 * buffer, kr_vexp computes them there, and kr_update_x reads them; LogSumExp's tiles
 * (KR_LSE_TILE) sum their exps with the same function. kr_vexp8 is exp with a table:
 * exp(x) = 2^m 2^(j/8) exp(r), 8m + j = round(8 x / ln 2), r = x - (8m + j) ln 2 / 8 in
 * two parts (|r| <= ln 2 / 16), exp(r) = 1 + q, q = r + r^2 Q(r), Q of degree 5 fitted at
 * Chebyshev nodes (tools/exp_coefficients.py: below 1.1e-17 relative), and 2^(j/8) as a
 * sum of two doubles read from registers by vpermpd, which the compiler does not emit for
 * scalar code: 12 fused multiply-adds and multiplies a value where kr_exp_g has 15, and a
 * last rounding of 2^(j/8) + (2^(j/8) q + its tail). It keeps kr_exp_g's ends and flags:
 * 2^(m+64) put into the exponent, then times 2^-64; 0 below -752; past 664, and for NaN,
 * the row's flag (kr_vexp), and the tile is computed again with kr_update. Within 1 ulp
 * (tests/test_math.c: 0.85 in its sample). Measured on a Zen 5 EPYC, 2 threads, kernels
 * alternated in one process, against the unsplit kr_update_g (-DKR_NO_VEXP): Gaussian sum
 * D = 3 float64 1.16x to 1.17x, with two exps 1.17x, with a square root 1.12x, an exp
 * of an exp 1.36x, times a sine (libm) 1.13x, fast math 1.02x (its own polynomial has 9);
 * LogSumExp of -G SqDist D = 3 float64 1.20x. Not with AVX2: the same with 2^(j/4) read
 * by vpermps from a float pair a double (Q of degree 6), compiled with -mno-avx512f on
 * that EPYC, ran at 0.97x with the 8 rows of AVX2's blocks and 1.03x with 16. */
#if defined(__AVX512F__) && KR_DOUBLE && (defined(KR_NE) || KR_LSE_TILE) && \
	!defined(KR_NO_VEXP)
#include <immintrin.h>
static inline __m512d kr_vexp8(__m512d x)
{
	const __m512d th = _mm512_set_pd(1.8340080864093424, 1.681792830507429,
					 1.5422108254079407, 1.4142135623730951,
					 1.2968395546510096, 1.189207115002721,
					 1.0905077326652577, 1.0);
	const __m512d tl = _mm512_set_pd(3.2831072242456272e-17, 8.1990100205814965e-17,
					 7.9498348096976209e-17, -9.6672933134529135e-17,
					 2.5382502794888315e-17, 3.9820152314656461e-17,
					 -3.0467820798124711e-17, 0.0);
	const __m512d c = _mm512_set1_pd(6755399441055744.0);
	__m512d t = _mm512_fmadd_pd(x, _mm512_set1_pd(11.541560327111707259), c);
	__m512d n = _mm512_sub_pd(t, c);
	__m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(0x1.62e42feep-4), x);
	__m512i nb = _mm512_castpd_si512(t);
	__m512d hi = _mm512_permutexvar_pd(nb, th);
	__m512d lo = _mm512_permutexvar_pd(nb, tl);
	__m512d q, r2;
	__m512i a;

	/* ln 2 / 8 in two parts: the first has 32 bits, n times it is exact */
	r = _mm512_fnmadd_pd(n, _mm512_set1_pd(1.90821492927058770002e-10 / 8), r);
	r2 = _mm512_mul_pd(r, r);
	q = _mm512_set1_pd(1.984204567305594352e-4);
	q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.388958714047483367e-3));
	q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(8.333333327872835867e-3));
	q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(4.166666661752192031e-2));
	q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.666666666666672360e-1));
	q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(5.000000000000051243e-1));
	q = _mm512_fmadd_pd(q, r2, r);
	q = _mm512_add_pd(hi, _mm512_fmadd_pd(hi, q, lo));
	/* t's bits are 0x4338000000000000 + 8m + j: shifted down by 3 and up by 52, m in
	 * the exponent's place, the rest shifted out */
	a = _mm512_slli_epi64(_mm512_srai_epi64(nb, 3), 52);
	a = _mm512_add_epi64(a, _mm512_set1_epi64((int64_t)64 << 52));
	q = _mm512_castsi512_pd(_mm512_add_epi64(_mm512_castpd_si512(q), a));
	q = _mm512_mul_pd(q, _mm512_set1_pd(0x1p-64));
	return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(x, _mm512_set1_pd(-752.0), _CMP_NLT_UQ),
				   q);
}
#define KR_VEXP8 1
#else
#define KR_VEXP8 0
#endif
#if KR_VEXP8 && KR_GUARD && KR_TILE_MERGE && defined(KR_NE)
#define KR_VEXP 1
static inline void kr_vexp(double *restrict e, __mmask8 *restrict bm)
{
	for (int k = 0; k < KR_NE; k++) {
		for (int v = 0; v < KR_R / 8; v++) {
			double *ev = e + k * KR_R + 8 * v;
			__m512d x = _mm512_load_pd(ev);

			bm[v] |= _mm512_cmp_pd_mask(x, _mm512_set1_pd(664.0), _CMP_NLE_UQ);
			_mm512_store_pd(ev, kr_vexp8(x));
		}
	}
}
#else
#define KR_VEXP 0
#endif
/* Columns per tile: the block sum scheme's partial sums run over KR_T terms. */
#ifndef KR_T
#define KR_T 256
#endif
/* Columns per tile of the K-selections: the buffer of F values, KR_TS x KR_DF x KR_R,
 * stays in the first-level cache. With gram slots, a multiple of the 12 (or 3) columns
 * of a gram pass: 64 left a last pass of 4 that redid 8 (ArgKMin(10) at D = 784, 10,000
 * x 10,000: 1.06 s with 64, 0.93 s with 72). */
#ifndef KR_TS
#define KR_TS (KR_NG > 0 ? 72 : 64)
#endif
/* Row blocks that walk the columns together, tile by tile, so that a tile read from
 * memory serves them all: 4 where gram slots make the kernel as fast as its reads (at
 * D = 4096 the columns are 164 MB at 10,000 points, read again for each group), 1
 * otherwise, and for rows so wide that 4 blocks of them would take more than 8 MB per
 * thread. */
#ifndef KR_GROUP
#define KR_GROUP (KR_NG > 0 && KR_DR <= 16384 ? 4 : 1)
#endif
/* Below this many pairs, one thread does it all: waking the team costs more. */
#ifndef KR_PARALLEL_PAIRS
#define KR_PARALLEL_PAIRS 32768
#endif

/* The rows r0.. of block b, transposed slot-major into xs; rows past nr repeat the last
 * row so that every lane computes on real data (its result is dropped). */
static void kr_gather(real *restrict xs, const real *restrict xr, int64_t r0, int64_t nr)
{
	for (int r = 0; r < KR_R; r++) {
		int64_t i = r0 + r < nr ? r0 + r : nr - 1;

		for (int c = 0; c < KR_DR; c++)
			xs[c * KR_R + r] = xr[i * KR_DR + c];
	}
}

/*
 * Gram slots, as a matrix product: for the block's KR_R rows and a tile of columns, the
 * scalar products x_r . y_t of each slot's variables, accumulated over the dimension as
 * rank-one updates: KR_GJ columns at a time, the block's rows as KR_GV vectors (the
 * transposed rows xs, one row per lane, as kr_update reads them), KR_GJ x KR_GV sums in
 * registers, so that each row value loaded serves KR_GJ products and each column value
 * (broadcast) KR_GV vectors of them. Then, for a squared distance, |x|^2 + |y|^2 - 2 x.y,
 * the squared norms computed once per row and per column.
 *
 * That expansion loses what it subtracts: its rounding error is a few ulps of
 * |x|^2 + |y|^2 (times the dimension at worst, as the direct sum's is of the result).
 * So a squared distance is computed on x - c and y - c, c the mean of the columns (the
 * distance is the same; the norms, and the error, are smaller: data away from the
 * origin, as pixel values are, would otherwise lose several digits), and where the
 * result is still below KR_GRAM_CUT of |x - c|^2 + |y - c|^2, or not finite (infinities
 * and NaN in the inputs, or squares that overflow), it is recomputed as the sum of
 * squared differences of x and y: its error then stays within 1 / KR_GRAM_CUT times the
 * direct sum's bound, and a point's distance to itself is 0. With near neighbours that
 * recomputation is rare: in a k-NN search, about k of the columns of each row.
 */
#if KR_NG
static const int kr_grams[KR_NG][4] = KR_GRAMS;
#ifndef KR_GRAM_CUT
#define KR_GRAM_CUT 0.125
#endif
/* Values of the dimension per chunk of a group's gram (kr_gram_tile). */
#ifndef KR_GK
#define KR_GK (KR_DOUBLE ? 128 : 256)
#endif
#define KR_GKP (KR_GK + 64 / (int)sizeof(real)) /* a chunk's row in yb, padded */
/* The vector registers: width in bytes, and how many hold sums (of 32 or 16). */
#if defined(__AVX512F__)
#define KR_VB 64
#define KR_GACC 24
#elif defined(__AVX__)
#define KR_VB 32
#define KR_GACC 12
#elif defined(__aarch64__)
#define KR_VB 16
#define KR_GACC 24
#else
#define KR_VB 16
#define KR_GACC 12
#endif
#define KR_GL (KR_VB / (int)sizeof(real)) /* lanes */
#define KR_GV (KR_R / KR_GL)		     /* vectors per column of the block */
#define KR_GJ (KR_GACC / KR_GV > 0 ? KR_GACC / KR_GV : 1) /* columns per pass */
/* Unaligned vectors of real: rows of xs and the tile start anywhere. */
typedef real kr_vec __attribute__((vector_size(KR_VB), aligned(sizeof(real))));

struct kr_gram {
	const real *xs, *yc; /* the block's rows, transposed (kr_gather); the columns */
	int64_t nc;	     /* the number of columns */
	const real *yn;	     /* squared norms of the columns, yn[g * nc + j] (of y - c) */
	const real *ctr;     /* the centres c, slot g's at ctr + kr_gram_at(g) */
	real *xn;	     /* squared norms of the block's rows, xn[g * KR_R + r] */
	real *xc;	     /* the block's rows less c, transposed: slot g's at
			      * xc + kr_gram_at(g) * KR_R */
	real *gm;	     /* the tile's values: column g0 + t, slot g, row r at
			      * gm[(t * KR_NG + g) * KR_R + r] */
	int64_t g0;
	real *yb;	     /* a chunk of the tile's columns less the centre (per thread) */
};

/* Where slot g's values start in the arrays of all slots' (ctr, xc). */
static int kr_gram_at(int g)
{
	int at = 0;

	for (int h = 0; h < g; h++)
		at += kr_grams[h][3];
	return at;
}

/* The values of all slots. */
static int kr_gram_total(void)
{
	return kr_gram_at(KR_NG);
}

/* The centres (the columns' means, for the squared distances; 0 for the scalar products,
 * which are computed on the values themselves) and the columns' squared norms less
 * them. */
static void kr_gram_columns(real *restrict yn, real *restrict ctr, const real *restrict yc,
			    int64_t nc, int nt)
{
	for (int g = 0; g < KR_NG; g++) {
		real *restrict c = ctr + kr_gram_at(g);
		const int yo = kr_grams[g][2], d = kr_grams[g][3];

		for (int k = 0; k < d; k++)
			c[k] = 0;
		if (!kr_grams[g][0] || nc == 0)
			continue;
#pragma omp parallel for if ((double)nc * d > KR_PARALLEL_PAIRS) num_threads(nt)
		for (int k = 0; k < d; k++) {
			double m = 0;

			for (int64_t j = 0; j < nc; j++)
				m += yc[j * KR_DC + yo + k];
			c[k] = (real)(m / (double)nc);
		}
#pragma omp parallel for if ((double)nc * d > KR_PARALLEL_PAIRS) num_threads(nt)
		for (int64_t j = 0; j < nc; j++) {
			const real *restrict y = yc + j * KR_DC + yo;
			real n = 0;

#pragma omp simd reduction(+ : n)
			for (int k = 0; k < d; k++)
				n += (y[k] - c[k]) * (y[k] - c[k]);
			yn[g * nc + j] = n;
		}
	}
}

/* The block's rows less the centres, and their squared norms, one row per lane. */
static void kr_gram_block(struct kr_gram *q)
{
	for (int g = 0; g < KR_NG; g++) {
		real *restrict xn = q->xn + g * KR_R;
		real *restrict xc = q->xc + kr_gram_at(g) * KR_R;
		const real *restrict c = q->ctr + kr_gram_at(g);

		if (!kr_grams[g][0])
			continue;
		for (int r = 0; r < KR_R; r++)
			xn[r] = 0;
		for (int k = 0; k < kr_grams[g][3]; k++) {
			const real *restrict x = q->xs + (kr_grams[g][1] + k) * KR_R;

#pragma omp simd
			for (int r = 0; r < KR_R; r++) {
				real v = x[r] - c[k];

				xc[k * KR_R + r] = v;
				xn[r] += v * v;
			}
		}
	}
}

/* acc[c][v] += the products of the rows in vector v (xs, transposed) with column c (at
 * y + c * sy), over d values. b - 0 is b, -0 included: a broadcast that GCC does not
 * turn into an addition. */
static inline void kr_gram_pass(kr_vec acc[KR_GJ][KR_GV], const real *restrict xs,
				const real *restrict y, int sy, int d)
{
	for (int k = 0; k < d; k++) {
		kr_vec x[KR_GV];

		for (int v = 0; v < KR_GV; v++)
			x[v] = *(const kr_vec *)(xs + k * KR_R + v * KR_GL);
		for (int c = 0; c < KR_GJ; c++) {
			kr_vec b = y[c * sy + k] - (kr_vec){ 0 };

			for (int v = 0; v < KR_GV; v++)
				acc[c][v] += x[v] * b;
		}
	}
}

/* The same for one column. */
static void kr_gram_pass1(kr_vec acc[KR_GV], const real *restrict xs, const real *restrict y,
			  int d)
{
	for (int k = 0; k < d; k++) {
		kr_vec b = y[k] - (kr_vec){ 0 };

		for (int v = 0; v < KR_GV; v++)
			acc[v] += *(const kr_vec *)(xs + k * KR_R + v * KR_GL) * b;
	}
}

/* Slot g's products for the dimension's values k0.. (kn of them) of the tile's columns
 * [t0, t1), in yb (column t at yb + (t - t0) * KR_GKP), in passes of KR_GJ columns,
 * added to (k0 > 0) or stored in the block's gram values. */
static void kr_gram_chunk(const struct kr_gram *q, int g, int64_t t0, int64_t t1, int k0,
			  int kn, const real *restrict yb)
{
	const int sq = kr_grams[g][0], xo = kr_grams[g][1];
	const real *restrict xg = (sq ? q->xc + kr_gram_at(g) * KR_R : q->xs + xo * KR_R) +
				  k0 * KR_R;

	for (int64_t j = t0; j < t1; j += KR_GJ) {
		/* A last pass of fewer columns starts earlier, at columns done already,
		 * which it does not store again. */
		int64_t j0 = j + KR_GJ <= t1 || t1 - t0 < KR_GJ ? j : t1 - KR_GJ;
		kr_vec acc[KR_GJ][KR_GV];

		for (int u = 0; u < KR_GJ; u++)
			for (int v = 0; v < KR_GV; v++)
				acc[u][v] = (kr_vec){ 0 };
		if (j0 + KR_GJ <= t1)
			kr_gram_pass(acc, xg, yb + (j0 - t0) * KR_GKP, KR_GKP, kn);
		else /* a tile of fewer columns than a pass */
			for (int u = 0; j0 + u < t1; u++)
				kr_gram_pass1(acc[u], xg, yb + (j0 + u - t0) * KR_GKP, kn);
		for (int u = (int)(j - j0); u < KR_GJ && j0 + u < t1; u++) {
			real *o = q->gm + ((j0 + u - t0) * KR_NG + g) * KR_R;

			for (int v = 0; v < KR_GV; v++) {
				if (k0)
					acc[u][v] += *(kr_vec *)(o + v * KR_GL);
				*(kr_vec *)(o + v * KR_GL) = acc[u][v];
			}
		}
	}
}

/* The squared distances of slot g from its scalar products, and where they cancel, the
 * direct sums. */
static void kr_gram_finish(const struct kr_gram *q, int g, int64_t t0, int64_t t1)
{
	const int xo = kr_grams[g][1], yo = kr_grams[g][2], d = kr_grams[g][3];
	const real *restrict xs = q->xs + xo * KR_R;
	const real *restrict xn = q->xn + g * KR_R;

	for (int64_t j = t0; j < t1; j++) {
		real *o = q->gm + ((j - t0) * KR_NG + g) * KR_R;
		const real *restrict yj = q->yc + j * KR_DC + yo;
		real ny = q->yn[g * q->nc + j];
		int bad = 0;

		/* vectorised; the rare recomputation after it */
#pragma omp simd reduction(| : bad)
		for (int r = 0; r < KR_R; r++) {
			real v = xn[r] + ny - 2 * o[r];

			bad |= !(v >= (real)KR_GRAM_CUT * (xn[r] + ny) && v - v == 0);
			o[r] = v;
		}
		for (int r = 0; bad && r < KR_R; r++) {
			real v = o[r];

			if (v >= (real)KR_GRAM_CUT * (xn[r] + ny) && v - v == 0)
				continue;
			v = 0;
			for (int k = 0; k < d; k++) {
				real t = xs[k * KR_R + r] - yj[k];

				v += t * t;
			}
			o[r] = v;
		}
	}
}

/* The gram slots of the group's nbk blocks (q[0..nbk)) and the columns [t0, t1): chunk
 * by chunk of the dimension, the chunk of the tile's columns copied less the centre
 * into yb (rows of KR_GKP values: at the columns' own stride, 4 bytes past 16 KB at
 * D = 4096, the 12 columns of a pass fell in the same cache sets), then each block of
 * the group in turn reads it from the second-level cache. */
static void kr_gram_tile(struct kr_gram *q, int nbk, int64_t t0, int64_t t1)
{
	real *restrict yb = q[0].yb;

	for (int g = 0; g < KR_NG; g++) {
		const int yo = kr_grams[g][2], d = kr_grams[g][3];
		const real *restrict c = q[0].ctr + kr_gram_at(g);

		for (int k0 = 0; k0 < d; k0 += KR_GK) {
			int kn = d - k0 < KR_GK ? d - k0 : KR_GK;

			for (int64_t j = t0; j < t1; j++) {
				const real *restrict y = q[0].yc + j * KR_DC + yo + k0;
				real *restrict o = yb + (j - t0) * KR_GKP;

#pragma omp simd
				for (int k = 0; k < kn; k++)
					o[k] = y[k] - c[k0 + k];
			}
			for (int u = 0; u < nbk; u++)
				kr_gram_chunk(&q[u], g, t0, t1, k0, kn, yb);
		}
		for (int u = 0; kr_grams[g][0] && u < nbk; u++)
			kr_gram_finish(&q[u], g, t0, t1);
	}
	for (int u = 0; u < nbk; u++)
		q[u].g0 = t0;
}
#else
struct kr_gram {
	real *gm;
	int64_t g0;
};
#define kr_gram_tile(q, nbk, t0, t1) ((void)0)
#endif

/* Row r of the block alone, term by term with kr_update, over columns [t0, t1), into the
 * fresh state at st (slots sst apart): where a tiled fast path meets values it does not
 * take. */
#if (KR_GUARD && KR_TILE_MERGE) || KR_LSE_TILE
static void kr_row_tile(real *restrict st, int sst, const real *restrict xs, int r,
			const real *restrict yc, const real *restrict p, int64_t t0, int64_t t1,
			const struct kr_gram *q)
{
	kr_init(st, sst);
	for (int64_t j = t0; j < t1; j++)
		kr_update(st, sst, xs + r, KR_R, yc + j * KR_DC, p, (real)j,
			  q->gm + (j - q->g0) * KR_NG * KR_R + r, KR_R);
}
#endif

/* Folds columns [j0, j1) into the states st of the block's rows. Not inlined: inlined
 * into kr_run's loop over the tiles, GCC 12 made the K-selection's loops 2.6x slower
 * (ArgKMin(10), D = 3, float32, 30,000 x 30,000: 0.95 s against 0.35 s). */
static __attribute__((noinline)) void kr_columns(real *restrict st, real *restrict part, const real *restrict xs,
		       const real *restrict yc, const real *restrict p, int64_t j0, int64_t j1,
		       const struct kr_gram *q)
{
#if KR_SELECT
	/* A K-list takes few of the terms it sees: F is computed for the tile in vectorised
	 * loops, then each row folds it in with a test that skips most terms, as a loop
	 * written by hand would; the branch-free insertion in kr_update costs K steps for
	 * every term. part holds the tile's F values, (t * KR_DF + c) * KR_R + r. */
	for (int64_t t0 = j0; t0 < j1; t0 += KR_TS) {
		int64_t t1 = t0 + KR_TS < j1 ? t0 + KR_TS : j1;
		int may[KR_R];

		for (int r = 0; r < KR_R; r++)
			may[r] = 0;
		for (int64_t j = t0; j < t1; j++) {
			const real *restrict yj = yc + j * KR_DC;
			const real *restrict gm = q->gm + (j - q->g0) * KR_NG * KR_R;
			real *restrict f = part + (j - t0) * KR_DF * KR_R;

#pragma omp simd
			for (int r = 0; r < KR_R; r++) {
				kr_eval(f + r, KR_R, xs + r, KR_R, yj, p, (real)j, gm + r, KR_R);
				may[r] |= kr_may(st + r, KR_R, f + r, KR_R);
			}
		}
		/* a row none of whose terms may enter (most rows, once their lists are
		 * full) skips the tile */
		for (int r = 0; r < KR_R; r++)
			for (int64_t j = t0; may[r] && j < t1; j++)
				kr_fold(st + r, KR_R, part + (j - t0) * KR_DF * KR_R + r, KR_R,
					(real)j);
	}
	return;
#endif
#if KR_LSE_TILE
	/* LogSumExp (and Max_SumShiftExp) by tiles: F for a tile of columns into part, each row's largest value m,
	 * then s = the sum of exp(F - m), one exp a term with nothing around it (the running
	 * form, kr_update, rescales with selects at every term), and {m, s} merged into the
	 * row's state as a partial state of the tile. A row whose m is not finite (an
	 * infinity or NaN among its terms, or only -inf) takes the tile term by term. */
	for (int64_t t0 = j0; t0 < j1; t0 += KR_TS) {
		int64_t t1 = t0 + KR_TS < j1 ? t0 + KR_TS : j1;
		real m[KR_R], s[KR_R];

		for (int r = 0; r < KR_R; r++) {
			m[r] = -KR_INF;
			s[r] = 0;
		}
		for (int64_t j = t0; j < t1; j++) {
			const real *restrict yj = yc + j * KR_DC;
			const real *restrict gm = q->gm + (j - q->g0) * KR_NG * KR_R;
			real *restrict f = part + (j - t0) * KR_R;

#pragma omp simd
			for (int r = 0; r < KR_R; r++) {
				kr_eval(f + r, KR_R, xs + r, KR_R, yj, p, (real)j, gm + r, KR_R);
				m[r] = f[r] > m[r] || f[r] != f[r] ? f[r] : m[r];
			}
		}
#if KR_VEXP8
		/* float64 with AVX-512: kr_vexp8's exp (above), the same sums in the same
		 * order */
		{
			__m512d sv[KR_R / 8], mv[KR_R / 8];

			for (int v = 0; v < KR_R / 8; v++) {
				sv[v] = _mm512_setzero_pd();
				mv[v] = _mm512_loadu_pd(m + 8 * v);
			}
			for (int64_t j = t0; j < t1; j++) {
				const real *restrict f = part + (j - t0) * KR_R;

				for (int v = 0; v < KR_R / 8; v++)
					sv[v] = _mm512_add_pd(sv[v], kr_vexp8(_mm512_sub_pd(
						_mm512_loadu_pd(f + 8 * v), mv[v])));
			}
			for (int v = 0; v < KR_R / 8; v++)
				_mm512_storeu_pd(s + 8 * v, sv[v]);
		}
#else
		for (int64_t j = t0; j < t1; j++) {
			const real *restrict f = part + (j - t0) * KR_R;

			/* f - m is at most 0 (or -inf): kr_exp_g's value, with no flag to
			 * raise */
#pragma omp simd
			for (int r = 0; r < KR_R; r++) {
				int none = 0;

				s[r] += kr_exp_g(f[r] - m[r], &none);
			}
		}
#endif
		for (int r = 0; r < KR_R; r++) {
			real ot[KR_NST];

			if (m[r] - m[r] == 0) {
				ot[0] = m[r];
				ot[1] = s[r];
				for (int k = 2; k < KR_NST; k++)
					ot[k] = 0;
			} else {
				kr_row_tile(ot, 1, xs, r, yc, p, t0, t1, q);
			}
			kr_merge(st + r, KR_R, ot, 1);
		}
	}
	(void)part;
	return;
#endif
	for (int64_t t0 = j0; t0 < j1; t0 += KR_T) {
		int64_t t1 = t0 + KR_T < j1 ? t0 + KR_T : j1;
#if KR_TILE_MERGE
		real *restrict acc = part;

		for (int r = 0; r < KR_R; r++)
			kr_init(acc + r, KR_R);
#else
		real *restrict acc = st;

		(void)part;
#endif
#if KR_GUARD && KR_TILE_MERGE
		/* The fast path: a row whose tile met a large argument or a NaN (rare) is
		 * computed again, from a fresh tile state, with kr_exp. */
		int bad[KR_R];

		for (int r = 0; r < KR_R; r++)
			bad[r] = 0;
#if KR_VEXP
		__mmask8 bm[KR_R / 8] = { 0 };
		double ea[KR_NE * KR_R] __attribute__((aligned(64)));
#endif

		for (int64_t j = t0; j < t1; j++) {
			const real *restrict yj = yc + j * KR_DC;
			const real *restrict gm = q->gm + (j - q->g0) * KR_NG * KR_R;
			real jr = (real)j;

#if KR_VEXP
#pragma omp simd
			for (int r = 0; r < KR_R; r++)
				kr_args_g(acc + r, KR_R, xs + r, KR_R, yj, p, jr, gm + r, KR_R,
					  ea + r, KR_R);
			kr_vexp(ea, bm);
#pragma omp simd
			for (int r = 0; r < KR_R; r++)
				kr_update_x(acc + r, KR_R, xs + r, KR_R, yj, p, jr, gm + r, KR_R,
					    ea + r, KR_R);
#else
#pragma omp simd
			for (int r = 0; r < KR_R; r++)
				kr_update_g(acc + r, KR_R, xs + r, KR_R, yj, p, jr, gm + r, KR_R,
					    bad + r);
#endif
		}
#if KR_VEXP
		for (int r = 0; r < KR_R; r++)
			bad[r] = (bm[r / 8] >> (r % 8)) & 1;
#endif
		for (int r = 0; r < KR_R; r++) {
			if (!bad[r])
				continue;
			kr_row_tile(acc + r, KR_R, xs, r, yc, p, t0, t1, q);
		}
#else
		for (int64_t j = t0; j < t1; j++) {
			const real *restrict yj = yc + j * KR_DC;
			const real *restrict gm = q->gm + (j - q->g0) * KR_NG * KR_R;
			real jr = (real)j;

#pragma omp simd
			for (int r = 0; r < KR_R; r++)
				kr_update(acc + r, KR_R, xs + r, KR_R, yj, p, jr, gm + r, KR_R);
		}
#endif
#if KR_TILE_MERGE
		for (int r = 0; r < KR_R; r++)
			kr_merge(st + r, KR_R, acc + r, KR_R);
#endif
	}
}

static void kr_write(const real *restrict st, real *restrict out, int64_t r0, int64_t nr)
{
	for (int r = 0; r < KR_R && r0 + r < nr; r++)
		kr_finalize(st + r, KR_R, out + (r0 + r) * KR_OUT);
}

/* The values of all gram slots' variables. */
#if KR_NG
#define KR_GTOTAL kr_gram_total()
#define KR_YBSZ ((size_t)KR_T * KR_GKP)
#else
#define KR_GTOTAL 0
#define KR_YBSZ 0
#endif

/* The size of a group's buffers (kr_buffers), in reals. */
static size_t kr_buffer_size(void)
{
	const size_t sz = (size_t)KR_NST * KR_R, xsz = (size_t)KR_DR * KR_R;
	/* the gram values of a tile of KR_T columns, and the row norms and rows less the
	 * centres, for each block of the group */
	const size_t gtile = (size_t)KR_T * KR_NG * KR_R;
	const size_t gblk = (size_t)KR_NG * KR_R + (size_t)KR_GTOTAL * KR_R;
	const size_t ybsz = KR_YBSZ;
	/* part: a tile's partial states, or the F values of a selection's or a tiled
	 * LogSumExp's tile */
	const size_t psz = KR_SELECT || KR_LSE_TILE ? (size_t)KR_TS * KR_DF * KR_R : sz;

	return KR_GROUP * (sz + xsz + gtile + gblk) + psz + ybsz + 1;
}

/* Lays out a thread's buffer buf (kr_buffer_size reals): the group's states (buf + u *
 * sz), part, the group's transposed rows xs (*xs0 + u * xsz) and the gram slots' tiles
 * in q; yn: the columns' norms and centres (kr_prepare). */
static void kr_buffers(real *buf, struct kr_gram q[KR_GROUP], const real *yc, int64_t nc,
		       const real *yn, real **part, real **xs0)
{
	const size_t sz = (size_t)KR_NST * KR_R, xsz = (size_t)KR_DR * KR_R;
	const size_t gtile = (size_t)KR_T * KR_NG * KR_R;
	const size_t gblk = (size_t)KR_NG * KR_R + (size_t)KR_GTOTAL * KR_R;
	const size_t psz = KR_SELECT || KR_LSE_TILE ? (size_t)KR_TS * KR_DF * KR_R : sz;

	*part = buf + KR_GROUP * sz;
	*xs0 = *part + psz;
	memset(q, 0, sizeof(*q) * KR_GROUP);
	for (int u = 0; u < KR_GROUP; u++) {
		q[u].gm = *xs0 + KR_GROUP * xsz + u * gtile;
#if KR_NG
		q[u].xs = *xs0 + u * xsz;
		q[u].yc = yc;
		q[u].nc = nc;
		q[u].yn = yn;
		q[u].ctr = yn + (size_t)KR_NG * (size_t)nc;
		q[u].xn = *xs0 + KR_GROUP * (xsz + gtile) + u * gblk;
		q[u].xc = q[u].xn + KR_NG * KR_R;
		q[u].yb = *xs0 + KR_GROUP * (xsz + gtile + gblk);
#else
		(void)yc;
		(void)nc;
		(void)yn;
		(void)gblk;
#endif
	}
}

/* What the gram slots need of all columns: their squared norms, then the centres
 * (kr_gram_columns). *yn is NULL without gram slots. Returns 1 when memory runs out. */
static int kr_prepare(real **yn, const real *yc, int64_t nc, int nt)
{
	*yn = NULL;
#if KR_NG
	*yn = malloc(((size_t)KR_NG * (size_t)nc + (size_t)kr_gram_total()) * sizeof(real) + 1);
	if (!*yn)
		return 1;
	kr_gram_columns(*yn, *yn + (size_t)KR_NG * (size_t)nc, yc, nc, nt);
#else
	(void)yc;
	(void)nc;
	(void)nt;
#endif
	return 0;
}

/* The group of nbk blocks of rows from r0 (rows below end) against the columns of the
 * intervals iv[0..niv) (each [start, end)): gathers the rows, folds in the columns tile by
 * tile, each block of the group in turn so that a tile's columns are read from memory
 * once for the group, and writes the rows to out when out is not NULL; the states stay
 * at st[u] otherwise. */
static void kr_group(real *const st[KR_GROUP], int nbk, real *part, real *xs0, struct kr_gram *q,
		     const real *xr, const real *yc, const real *p, int64_t r0, int64_t end,
		     const int32_t *iv, int64_t niv, int64_t j0, int64_t j1, real *out)
{
	const size_t xsz = (size_t)KR_DR * KR_R;

	for (int u = 0; u < nbk; u++) {
		kr_gather(xs0 + u * xsz, xr, r0 + u * KR_R, end);
#if KR_NG
		kr_gram_block(&q[u]);
#endif
		for (int r = 0; r < KR_R; r++)
			kr_init(st[u] + r, KR_R);
	}
	for (int64_t k = 0; k < (iv ? niv : 1); k++) {
		int64_t c0 = iv ? iv[2 * k] : j0, c1 = iv ? iv[2 * k + 1] : j1;

		for (int64_t t0 = c0; t0 < c1; t0 += KR_T) {
			int64_t t1 = t0 + KR_T < c1 ? t0 + KR_T : c1;

			kr_gram_tile(q, nbk, t0, t1);
			for (int u = 0; u < nbk; u++)
				kr_columns(st[u], part, xs0 + u * xsz, yc, p, t0, t1, &q[u]);
		}
	}
	for (int u = 0; out && u < nbk; u++)
		kr_write(st[u], out, r0 + u * KR_R, end);
}

/*
 * The module's entry: out (nr x KR_OUT) = the reduction over nc columns. xr is nr x KR_DR,
 * yc nc x KR_DC, p KR_DP values (pointers valid even when a width is 0). Returns 0, or 1
 * when memory for the states runs out.
 *
 * nt OpenMP threads run it (the host backend passes its own count, so that what the
 * process set with omp_set_num_threads, as PyTorch does, does not decide it).
 *
 * Few row blocks and many columns (nx = 100, ny = 10^6): each block's columns are split
 * into ns ranges computed apart and merged in order. ns depends on the sizes only, so
 * that the result does not depend on the number of threads.
 */
int kr_run(int64_t nr, int64_t nc, const real *xr, const real *yc, const real *p, real *out,
	   int nt);
int kr_run(int64_t nr, int64_t nc, const real *xr, const real *yc, const real *p, real *out,
	   int nt)
{
	const size_t sz = (size_t)KR_NST * KR_R;
	int64_t nb = (nr + KR_R - 1) / KR_R, ng = (nb + KR_GROUP - 1) / KR_GROUP, ns = 1, ntask;
	real *parts = NULL, *yn = NULL;
	int fail = 0;

	if (ng < 64 && nc >= 8 * KR_T) {
		ns = 64 / ng;
		if (ns > nc / (4 * KR_T))
			ns = nc / (4 * KR_T);
	}
	ntask = ng * ns;
	if (ns > 1) {
		parts = malloc((size_t)nb * (size_t)ns * sz * sizeof(real));
		if (!parts)
			return 1;
	}
	if (kr_prepare(&yn, yc, nc, nt)) {
		free(parts);
		return 1;
	}
#pragma omp parallel if ((double)nr * (double)nc > KR_PARALLEL_PAIRS) num_threads(nt)
	{
		real *buf = malloc(kr_buffer_size() * sizeof(real)), *part = NULL, *xs0 = NULL;
		struct kr_gram q[KR_GROUP];

		if (!buf) {
#pragma omp atomic write
			fail = 1;
		} else {
			kr_buffers(buf, q, yc, nc, yn, &part, &xs0);
		}
#pragma omp for schedule(dynamic, 1)
		for (int64_t t = 0; t < ntask; t++) {
			const int64_t b0 = t / ns * KR_GROUP, s = t % ns;
			const int nbk = (int)(nb - b0 < KR_GROUP ? nb - b0 : KR_GROUP);
			real *st[KR_GROUP];

			if (!buf)
				continue;
			for (int u = 0; u < nbk; u++)
				st[u] = parts ? parts + ((size_t)(b0 + u) * ns + s) * sz : buf + u * sz;
			kr_group(st, nbk, part, xs0, q, xr, yc, p, b0 * KR_R, nr, NULL, 0,
				 nc * s / ns, nc * (s + 1) / ns, parts ? NULL : out);
		}
		free(buf);
	}
	if (parts && !fail) {
#pragma omp parallel for if ((double)nb * ns * sz > KR_PARALLEL_PAIRS) num_threads(nt)
		for (int64_t b = 0; b < nb; b++) {
			real *st = parts + (size_t)b * ns * sz;

			for (int64_t s = 1; s < ns; s++)
				for (int r = 0; r < KR_R; r++)
					kr_merge(st + r, KR_R, st + (size_t)s * sz + r, KR_R);
			kr_write(st, out, b * KR_R, nr);
		}
	}
	free(parts);
	free(yn);
	return fail;
}

/* Rows per task of kr_run_ranged, for the library's kred__range_tasks. */
const int kr_task_rows = KR_R * KR_GROUP;

/*
 * The block-sparse entry (KeOps 2's ranges), on the tasks the library made
 * (kred__range_tasks, lib/ranges.c, as for the GPUs): task t is rows [tasks[4t],
 * tasks[4t + 1]), at most kr_task_rows of one block of the ranges, reducing over the
 * intervals red[2k..2k+1] for k from tasks[4t + 2] to tasks[4t + 3]; an interval listed
 * twice counts twice. Every row is in one task: those in no block, in tasks with no
 * interval, get the reduction's neutral value. Threads take the tasks in turn.
 */
int kr_run_ranged(int64_t nr, int64_t nc, const real *xr, const real *yc, const real *p,
		  real *out, int nt, int64_t ntask, const int32_t *tasks, const int32_t *red);
int kr_run_ranged(int64_t nr, int64_t nc, const real *xr, const real *yc, const real *p,
		  real *out, int nt, int64_t ntask, const int32_t *tasks, const int32_t *red)
{
	double pairs = 0;
	real *yn = NULL;
	int fail = 0;

	for (int64_t t = 0; t < ntask; t++)
		for (int32_t k = tasks[4 * t + 2]; k < tasks[4 * t + 3]; k++)
			pairs += (double)(tasks[4 * t + 1] - tasks[4 * t]) *
				 (double)(red[2 * k + 1] - red[2 * k]);
	if (kr_prepare(&yn, yc, nc, nt))
		return 1;
#pragma omp parallel if (pairs > KR_PARALLEL_PAIRS) num_threads(nt)
	{
		const size_t sz = (size_t)KR_NST * KR_R;
		real *buf = malloc(kr_buffer_size() * sizeof(real)), *part = NULL, *xs0 = NULL;
		struct kr_gram q[KR_GROUP];
		real *st[KR_GROUP];

		if (!buf) {
#pragma omp atomic write
			fail = 1;
		} else {
			kr_buffers(buf, q, yc, nc, yn, &part, &xs0);
			for (int u = 0; u < KR_GROUP; u++)
				st[u] = buf + u * sz;
		}
#pragma omp for schedule(dynamic, 1)
		for (int64_t t = 0; t < ntask; t++) {
			const int64_t r0 = tasks[4 * t], end = tasks[4 * t + 1];
			const int32_t k0 = tasks[4 * t + 2];

			if (!buf)
				continue;
			kr_group(st, (int)((end - r0 + KR_R - 1) / KR_R), part, xs0, q, xr, yc, p, r0,
				 end, red + 2 * k0, tasks[4 * t + 3] - k0, 0, 0, out);
		}
		free(buf);
	}
	(void)nr;
	free(yn);
	return fail;
}
