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
 *   kr_update(st, sst, xi, sxi, yj, p, jr)
 *                      folds the term of column jr (its index, as a real) into the state:
 *                      row variable c at xi[c * sxi], column variable c at yj[c]
 *   kr_merge(st, sst, ot, sot)   folds another partial state into st
 *   kr_finalize(st, sst, out)    writes the KR_OUT values of one row
 *   KR_SELECT          1 for the K-selections (KMin and co), which come with
 *   KR_DF, kr_eval(f, sf, xi, sxi, yj, p, jr)  the KR_DF values of F at f[c * sf]
 *   kr_fold(st, sst, f, sf, jr)  folds them in, skipping terms that cannot enter
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
static inline void kr_init(real *restrict st, int sst)
{
	st[0 * sst] = 0;
}
static inline void kr_update(real *restrict st, int sst, const real *restrict xi, int sxi,
			     const real *restrict yj, const real *restrict p, real jr)
{
	(void)p;
	(void)jr;
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

/* Rows per block: two AVX-512 vectors of floats; the rows' states and variables are
 * stored slot-major (st[s * KR_R + r]) so that one lane handles one row. */
#ifndef KR_R
#define KR_R (KR_DOUBLE ? 16 : 32)
#endif
/* Columns per tile: the block sum scheme's partial sums run over KR_T terms. */
#ifndef KR_T
#define KR_T 256
#endif
/* Columns per tile of the K-selections: the buffer of F values, KR_TS x KR_DF x KR_R,
 * stays in the first-level cache. */
#ifndef KR_TS
#define KR_TS 64
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

/* Folds columns [j0, j1) into the states st of the block's rows. */
static void kr_columns(real *restrict st, real *restrict part, const real *restrict xs,
		       const real *restrict yc, const real *restrict p, int64_t j0, int64_t j1)
{
#if KR_SELECT
	/* A K-list takes few of the terms it sees: F is computed for the tile in vectorised
	 * loops, then each row folds it in with a test that skips most terms, as a loop
	 * written by hand would; the branch-free insertion in kr_update costs K steps for
	 * every term. part holds the tile's F values, (t * KR_DF + c) * KR_R + r. */
	for (int64_t t0 = j0; t0 < j1; t0 += KR_TS) {
		int64_t t1 = t0 + KR_TS < j1 ? t0 + KR_TS : j1;

		for (int64_t j = t0; j < t1; j++) {
			const real *restrict yj = yc + j * KR_DC;
			real *restrict f = part + (j - t0) * KR_DF * KR_R;

#pragma omp simd
			for (int r = 0; r < KR_R; r++)
				kr_eval(f + r, KR_R, xs + r, KR_R, yj, p, (real)j);
		}
		for (int r = 0; r < KR_R; r++)
			for (int64_t j = t0; j < t1; j++)
				kr_fold(st + r, KR_R, part + (j - t0) * KR_DF * KR_R + r, KR_R,
					(real)j);
	}
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
		for (int64_t j = t0; j < t1; j++) {
			const real *restrict yj = yc + j * KR_DC;
			real jr = (real)j;

#pragma omp simd
			for (int r = 0; r < KR_R; r++)
				kr_update(acc + r, KR_R, xs + r, KR_R, yj, p, jr);
		}
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
	int64_t nb = (nr + KR_R - 1) / KR_R, ns = 1, ntask;
	real *parts = NULL;
	int fail = 0;

	if (nb < 64 && nc >= 8 * KR_T) {
		ns = 64 / nb;
		if (ns > nc / (4 * KR_T))
			ns = nc / (4 * KR_T);
	}
	ntask = nb * ns;
	if (ns > 1) {
		parts = malloc((size_t)ntask * sz * sizeof(real));
		if (!parts)
			return 1;
	}
#pragma omp parallel if ((double)nr * (double)nc > KR_PARALLEL_PAIRS) num_threads(nt)
	{
		/* st, part (or the F values of a selection's tile), xs */
		size_t psz = KR_SELECT ? (size_t)KR_TS * KR_DF * KR_R : sz;
		real *buf = malloc((sz + psz + (size_t)KR_DR * KR_R + 1) * sizeof(real));

		if (!buf) {
#pragma omp atomic write
			fail = 1;
		}
#pragma omp for schedule(dynamic, 1)
		for (int64_t t = 0; t < ntask; t++) {
			int64_t b = t / ns, s = t % ns;
			real *st, *xs;

			if (!buf)
				continue;
			st = parts ? parts + (size_t)t * sz : buf;
			xs = buf + sz + psz;
			kr_gather(xs, xr, b * KR_R, nr);
			for (int r = 0; r < KR_R; r++)
				kr_init(st + r, KR_R);
			kr_columns(st, buf + sz, xs, yc, p, nc * s / ns, nc * (s + 1) / ns);
			if (!parts)
				kr_write(st, out, b * KR_R, nr);
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
	return fail;
}
