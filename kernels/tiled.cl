/* The tiled reduction of the GPU backends, written once for OpenCL C and CUDA C: the
 * dialect's prelude (prelude_opencl.h, prelude_cuda.h) supplies every name that differs. */

/*
 * What comes before this text:
 *   the emitter's #defines   KR_DOUBLE, KR_DR, KR_DC, KR_DP (widths of the packed row,
 *                            column and parameter vectors), KR_NST (state slots per
 *                            row), KR_OUT (values per output row), KR_TILE_MERGE (the
 *                            block sum scheme: each tile folds into a fresh state that
 *                            is then merged into the row's total)
 *   the dialect's prelude    real, kr_long, KR_KERNEL, KR_GLOBAL, KR_BARRIER() ...
 *   the generated functions  kr_init, kr_update, kr_merge, kr_finalize, with the contract
 *                            of kernels/host.c; here they only ever get private arrays
 *   the backend's #defines   the launch shape below (defaults for a GPU)
 *
 * The kernels:
 *   kr_reduce        rows split across work-items, KR_RPW rows each, KR_WG work-items
 *                    per group along dimension 0; dimension 1 splits the columns into
 *                    get_num_groups(1) ranges. With one range (the 1D scheme) it writes
 *                    the output; with several (the 2D scheme) each group writes its
 *                    rows' partial states, and kr_merge_parts folds them. Given a list
 *                    of tasks, a block-sparse run: one group per task of rows of one
 *                    block, over the block's intervals of columns.
 *   kr_merge_parts   one work-item per row: merges the ranges' states in column order
 *                    and writes the output.
 *   kr_pack          copies one argument (rows x dim) into its slot of a packed array,
 *                    for data that is already on the device.
 *   kr_sum_rows      sums the rows of an output (the gradient of a Pm variable).
 * Launch sizes are padded to whole groups; the kernels guard the tails themselves.
 *
 * Compiled on its own it uses the sample below:
 *   clang -x cl -cl-std=CL1.2 -include kernels/prelude_opencl.h -fsyntax-only kernels/tiled.cl
 *   nvcc -x cu -ptx -include kernels/prelude_cuda.h kernels/tiled.cl
 */
#ifndef KR_NST
#define KR_DR 1
#define KR_DC 1
#define KR_DP 0
#define KR_NST 1
#define KR_OUT 1
#define KR_TILE_MERGE 1
KR_FN void kr_init(real *st, int sst)
{
	st[0 * sst] = 0;
}
KR_FN void kr_update(real *st, int sst, const real *xi, int sxi, const real *yj, const real *p,
		     real jr, const real *gm, int sgm)
{
	(void)p;
	(void)jr;
	(void)gm;
	(void)sgm;
	st[0 * sst] += kr_exp(-(xi[0 * sxi] - yj[0]) * (xi[0 * sxi] - yj[0]));
}
KR_FN void kr_merge(real *st, int sst, const real *ot, int sot)
{
	st[0 * sst] += ot[0 * sot];
}
KR_FN void kr_finalize(const real *st, int sst, real *out)
{
	out[0] = st[0 * sst];
}
#endif

/* Work-items per group (the launch's local size must be this). */
#ifndef KR_WG
#define KR_WG 128
#endif
/* Rows per work-item: work-item l of group g holds rows g * KR_WG * KR_RPW + r * KR_WG + l,
 * so that neighbouring work-items read neighbouring rows for every r. */
#ifndef KR_RPW
#define KR_RPW 1
#endif
/* 1: the group loads each tile of columns into shared memory, then every work-item reads
 * it from there (GPUs). 0: each work-item reads the columns from global memory itself,
 * with no barrier (CPUs, where shared memory is ordinary memory and barriers cost). */
#ifndef KR_LOCAL_TILES
#define KR_LOCAL_TILES 1
#endif
/* Columns per tile: the unit of the shared-memory load and of the block sum scheme. */
#ifndef KR_TJ
#define KR_TJ KR_WG
#endif

/*
 * Gram slots (lib/emit.c find_grams): the squared distances and scalar products of a row
 * and a column variable of many values, which the formula reads as gm[g * sgm]. The
 * emitter lists them (KR_NG, KR_GRAMS: kind, row offset, column offset, dimension) and the
 * parts of each side that the formula reads itself (KR_NXR, KR_XR, KR_NYR, KR_YR); a
 * variable read only through its slots is not copied into a work-item's arrays.
 * With shared memory (KR_ROOM bytes a group may take), a tile of KR_GTJ columns is
 * computed at once as a small matrix product: chunks of KR_GKC values of the tile's
 * columns in shared memory, each work-item's rows read in place, KR_GTJ sums per row in
 * registers, stored to shared memory for the formula (KR_GRAM_LOCAL; POCL takes it too,
 * its local memory being ordinary memory). Without room for that (KR_ROOM 0, or too many
 * slots for it), each column's values are computed before its update, with the rows
 * innermost (kr_gram_column). Squared distances are sums of squared differences (no
 * cancellation): a GPU is bound by the shared-memory reads here, not the arithmetic.
 */
#ifndef KR_NG
#define KR_NG 0
#define KR_GRAMS { { 0, 0, 0, 0 } }
#define KR_NXR 1
#define KR_XR { { 0, KR_DR } }
#define KR_NYR 1
#define KR_YR { { 0, KR_DC } }
#endif
#ifndef KR_ROOM
#define KR_ROOM 0
#endif
#define KR_GKC 32
#define KR_GBYTES(tj) ((KR_NG * (tj) * KR_WG * KR_RPW + KR_GKC * ((tj) + 1)) * (KR_DOUBLE ? 8 : 4))
#if KR_NG == 0 || KR_ROOM == 0
#define KR_GRAM_LOCAL 0
#elif KR_GBYTES(32) <= KR_ROOM
#define KR_GRAM_LOCAL 1
#define KR_GTJ 32
#elif KR_GBYTES(16) <= KR_ROOM
#define KR_GRAM_LOCAL 1
#define KR_GTJ 16
#elif KR_GBYTES(8) <= KR_ROOM
#define KR_GRAM_LOCAL 1
#define KR_GTJ 8
#else
#define KR_GRAM_LOCAL 0
#endif
/* Columns per tile of the loop over columns, and whether it loads them into shared
 * memory (a module with gram slots reads the few values its formula wants in place). */
#if KR_GRAM_LOCAL
#define KR_STEP KR_GTJ
#else
#define KR_STEP KR_TJ
#endif
#define KR_YS_TILE (KR_LOCAL_TILES && KR_NG == 0)

#if KR_GRAM_LOCAL
#define KR_GRAM_ARRAYS(gs, gy)                                                      \
	KR_LOCAL_ARRAY(real, gs, KR_NG * KR_GTJ * KR_WG * KR_RPW);                  \
	KR_LOCAL_ARRAY(real, gy, KR_GKC * (KR_GTJ + 1))
#else
#define KR_GRAM_ARRAYS(gs, gy)                                                      \
	KR_LOCAL real *gs = 0;                                                      \
	KR_LOCAL real *gy = 0
#endif

/* Zero-length arrays are not C: a side without variables still gets one slot. */
#define KR_DR1 (KR_DR > 0 ? KR_DR : 1)
#define KR_DC1 (KR_DC > 0 ? KR_DC : 1)
#define KR_DP1 (KR_DP > 0 ? KR_DP : 1)

/* A group's tile of columns in shared memory, declared in a kernel's body; without
 * shared-memory tiles, a null pointer that kr_columns does not use. */
#if KR_YS_TILE
#define KR_TILE(ys) KR_LOCAL_ARRAY(real, ys, KR_TJ * KR_DC1)
#else
#define KR_TILE(ys) KR_LOCAL real *ys = 0
#endif

/* The rows of a work-item (base, base + KR_WG, ...) gathered into xs, each row past end
 * repeating the last one: every work-item computes on real data and takes part in every
 * barrier; only its writes are dropped. The states start neutral; the parameters go to
 * pp. */
KR_FN void kr_rows(real *xs, real *st, real *pp, const KR_GLOBAL real *KR_RESTRICT xr,
		   const KR_GLOBAL real *KR_RESTRICT p, kr_long base, kr_long end)
{
	for (int r = 0; r < KR_RPW; r++) {
		kr_long i = base + r * KR_WG;

		i = i < end ? i : end - 1;
#if KR_GRAM_LOCAL
		/* The slots read the rows in place: only what the formula reads itself. */
		{
			const int part[KR_NXR > 0 ? KR_NXR : 1][2] = KR_XR;

			for (int q = 0; q < KR_NXR; q++)
				for (int c = part[q][0]; c < part[q][0] + part[q][1]; c++)
					xs[c * KR_RPW + r] = xr[i * KR_DR + c];
		}
#else
		for (int c = 0; c < KR_DR; c++)
			xs[c * KR_RPW + r] = xr[i * KR_DR + c];
#endif
		kr_init(st + r, KR_RPW);
	}
	for (int c = 0; c < KR_DP; c++)
		pp[c] = p[c];
}

#if KR_NG > 0
/* The values of column j that the formula reads itself, into yj. */
KR_FN void kr_column_read(real *yj, const KR_GLOBAL real *KR_RESTRICT yc, kr_long j)
{
	const int part[KR_NYR > 0 ? KR_NYR : 1][2] = KR_YR;

	for (int q = 0; q < KR_NYR; q++)
		for (int c = part[q][0]; c < part[q][0] + part[q][1]; c++)
			yj[c] = yc[j * KR_DC + c];
}
#endif

#if KR_GRAM_LOCAL
/* The gram slots of the work-item's rows against columns [t0, t0 + tn) into gs: slot g of
 * row r and column t0 + jj at gs[((g * KR_GTJ + jj) * KR_RPW + r) * KR_WG + lid], which
 * only this work-item reads. The whole group calls it (barriers); columns past tn repeat
 * the last one. */
KR_FN void kr_gram_tile(KR_LOCAL real *gs, KR_LOCAL real *gy, const KR_GLOBAL real *KR_RESTRICT xr,
			const KR_GLOBAL real *KR_RESTRICT yc, kr_long base, kr_long end,
			kr_long t0, int tn, int lid)
{
	const int slot[KR_NG][4] = KR_GRAMS;

	for (int g = 0; g < KR_NG; g++) {
		const int sq = slot[g][0], xo = slot[g][1], yo = slot[g][2], dim = slot[g][3];
		real a[KR_GTJ * KR_RPW];

		KR_UNROLL
		for (int q = 0; q < KR_GTJ * KR_RPW; q++)
			a[q] = 0;
		for (int k0 = 0; k0 < dim; k0 += KR_GKC) {
			const int kn = dim - k0 < KR_GKC ? dim - k0 : KR_GKC;

			/* The first barrier keeps the previous chunk alive until all have read
			 * it; the chunk is stored column-minor, padded against bank conflicts. */
			KR_BARRIER();
			for (int q = lid; q < KR_GTJ * KR_GKC; q += KR_WG) {
				const int jj = q / KR_GKC, k = q % KR_GKC;
				const kr_long j = t0 + (jj < tn ? jj : tn - 1);

				gy[k * (KR_GTJ + 1) + jj] = k < kn ? yc[j * KR_DC + yo + k0 + k] : 0;
			}
			KR_BARRIER();
			for (int r = 0; r < KR_RPW; r++) {
				kr_long i = base + r * KR_WG;
				const KR_GLOBAL real *x;

				i = i < end ? i : end - 1;
				x = xr + i * KR_DR + xo + k0;
				/* sq is the same for the whole loop: one branch outside it */
				if (sq) {
					for (int k = 0; k < kn; k++) {
						const real xv = x[k];
						const KR_LOCAL real *y = gy + k * (KR_GTJ + 1);

						KR_UNROLL
						for (int jj = 0; jj < KR_GTJ; jj++) {
							const real d = xv - y[jj];

							a[jj * KR_RPW + r] += d * d;
						}
					}
				} else {
					for (int k = 0; k < kn; k++) {
						const real xv = x[k];
						const KR_LOCAL real *y = gy + k * (KR_GTJ + 1);

						KR_UNROLL
						for (int jj = 0; jj < KR_GTJ; jj++)
							a[jj * KR_RPW + r] += xv * y[jj];
					}
				}
			}
		}
		KR_UNROLL
		for (int q = 0; q < KR_GTJ * KR_RPW; q++)
			gs[(g * KR_GTJ * KR_RPW + q) * KR_WG + lid] = a[q];
	}
}
#endif

#if KR_NG > 0 && !KR_GRAM_LOCAL
/* The gram slots of the work-item's rows (xs, all of them copied) against column j, into
 * gv[g * KR_RPW + r]: the rows innermost, so that a CPU driver vectorises across them. */
KR_FN void kr_gram_column(real *gv, const real *xs, const KR_GLOBAL real *KR_RESTRICT yc,
			  kr_long j)
{
	const int slot[KR_NG][4] = KR_GRAMS;

	for (int g = 0; g < KR_NG; g++) {
		const int sq = slot[g][0], xo = slot[g][1], dim = slot[g][3];
		const KR_GLOBAL real *y = yc + j * KR_DC + slot[g][2];
		real *a = gv + g * KR_RPW;

		for (int r = 0; r < KR_RPW; r++)
			a[r] = 0;
		if (sq) {
			for (int k = 0; k < dim; k++) {
				const real yv = y[k];
				const real *x = xs + (xo + k) * KR_RPW;

				for (int r = 0; r < KR_RPW; r++)
					a[r] += (x[r] - yv) * (x[r] - yv);
			}
		} else {
			for (int k = 0; k < dim; k++) {
				const real yv = y[k];
				const real *x = xs + (xo + k) * KR_RPW;

				for (int r = 0; r < KR_RPW; r++)
					a[r] += x[r] * yv;
			}
		}
	}
}
#endif

/* Folds columns [j0, j1) into the states st of the work-item's rows, tile by tile. The
 * bounds must be the same for the whole group: with shared-memory tiles, a barrier that
 * some work-items of a group skip is undefined (a hang on GPUs). */
KR_FN void kr_columns(real *st, real *acc, const real *xs, const real *pp, real *yj,
		      KR_LOCAL real *ys, const KR_GLOBAL real *KR_RESTRICT yc, kr_long j0,
		      kr_long j1, int lid, KR_LOCAL real *gs, KR_LOCAL real *gy,
		      const KR_GLOBAL real *KR_RESTRICT xr, kr_long base, kr_long end)
{
	real gv[KR_NG > 0 ? KR_NG * KR_RPW : 1];

	(void)ys;
	(void)lid;
	(void)acc;
	(void)gs;
	(void)gy;
	(void)xr;
	(void)base;
	(void)end;
	gv[0] = 0;
	for (kr_long t0 = j0; t0 < j1; t0 += KR_STEP) {
		const int tn = (int)(j1 - t0 < KR_STEP ? j1 - t0 : KR_STEP);

#if KR_YS_TILE
		/* The first barrier keeps the previous tile alive until all have read it. */
		KR_BARRIER();
		for (int q = lid; q < tn * KR_DC; q += KR_WG)
			ys[q] = yc[t0 * KR_DC + q];
		KR_BARRIER();
#endif
#if KR_GRAM_LOCAL
		kr_gram_tile(gs, gy, xr, yc, base, end, t0, tn, lid);
#endif
#if KR_TILE_MERGE
		for (int r = 0; r < KR_RPW; r++)
			kr_init(acc + r, KR_RPW);
#define KR_ACC acc
#else
#define KR_ACC st
#endif
		for (int jj = 0; jj < tn; jj++) {
			const real jr = (real)(t0 + jj);

#if KR_NG > 0
			kr_column_read(yj, yc, t0 + jj);
#if KR_GRAM_LOCAL
			for (int r = 0; r < KR_RPW; r++)
				for (int g = 0; g < KR_NG; g++)
					gv[g * KR_RPW + r] =
						gs[((g * KR_GTJ + jj) * KR_RPW + r) * KR_WG + lid];
#else
			kr_gram_column(gv, xs, yc, t0 + jj);
#endif
#else
			for (int c = 0; c < KR_DC; c++)
#if KR_YS_TILE
				yj[c] = ys[jj * KR_DC + c];
#else
				yj[c] = yc[(t0 + jj) * KR_DC + c];
#endif
#endif
			for (int r = 0; r < KR_RPW; r++)
				kr_update(KR_ACC + r, KR_RPW, xs + r, KR_RPW, yj, pp, jr, gv + r,
					  KR_RPW);
		}
#undef KR_ACC
#if KR_TILE_MERGE
		for (int r = 0; r < KR_RPW; r++)
			kr_merge(st + r, KR_RPW, acc + r, KR_RPW);
#endif
	}
}

/* Writes the work-item's rows below end. */
KR_FN void kr_write(const real *st, KR_GLOBAL real *KR_RESTRICT out, kr_long base, kr_long end)
{
	for (int r = 0; r < KR_RPW; r++) {
		const kr_long i = base + r * KR_WG;
		real o[KR_OUT];

		if (i >= end)
			continue;
		kr_finalize(st + r, KR_RPW, o);
		for (int c = 0; c < KR_OUT; c++)
			out[i * KR_OUT + c] = o[c];
	}
}

/*
 * kr_reduce. Dense (tasks is NULL): group g along dimension 0 takes rows from
 * g * KR_WG * KR_RPW, and group s along dimension 1 range s of get_num_groups(1)
 * near-equal ranges of the nc columns; with one range (the 1D scheme) it writes the
 * output, with several (the 2D scheme) its rows' partial states, which kr_merge_parts
 * folds. Block-sparse (KeOps 2's ranges): group g takes task g, the quadruple
 * tasks[4g..] = first row, end row, first and end interval in red (pairs [start, end)
 * of columns); the library (kred__range_tasks) makes the tasks, each at most
 * KR_WG * KR_RPW rows of one block of the ranges, and every row of the output in one
 * task (rows in no block in tasks with no interval, which write the neutral value).
 * Both in one kernel with one call of kr_columns, so that the formula is compiled once.
 */
KR_KERNEL void kr_reduce(const KR_GLOBAL real *KR_RESTRICT xr,
			 const KR_GLOBAL real *KR_RESTRICT yc,
			 const KR_GLOBAL real *KR_RESTRICT p, KR_GLOBAL real *KR_RESTRICT out,
			 KR_GLOBAL real *KR_RESTRICT parts, kr_long nr, kr_long nc,
			 const KR_GLOBAL int *KR_RESTRICT tasks,
			 const KR_GLOBAL int *KR_RESTRICT red)
{
	KR_TILE(ys);
	KR_GRAM_ARRAYS(gs, gy);
	const int lid = KR_LID();
	const kr_long g = KR_GROUP(0), ns = KR_NGROUPS(1), s = KR_GROUP(1);
	const kr_long base = tasks ? tasks[4 * g] + lid : g * (KR_WG * KR_RPW) + lid;
	const kr_long end = tasks ? tasks[4 * g + 1] : nr;
	const int k0 = tasks ? tasks[4 * g + 2] : 0, k1 = tasks ? tasks[4 * g + 3] : 1;
	real st[KR_NST * KR_RPW], xs[KR_DR1 * KR_RPW], pp[KR_DP1], yj[KR_DC1];
	real acc[KR_TILE_MERGE ? KR_NST * KR_RPW : 1];

	kr_rows(xs, st, pp, xr, p, base, end);
	yj[0] = 0;
	for (int k = k0; k < k1; k++) {
		/* The block's interval k, or this group's range of columns. */
		const kr_long j0 = tasks ? red[2 * k] : nc * s / ns;
		const kr_long j1 = tasks ? red[2 * k + 1] : nc * (s + 1) / ns;

		kr_columns(st, acc, xs, pp, yj, ys, yc, j0, j1, lid, gs, gy, xr, base, end);
	}
	if (tasks || ns == 1) {
		kr_write(st, out, base, end);
		return;
	}
	for (int r = 0; r < KR_RPW; r++) {
		const kr_long i = base + r * KR_WG;

		if (i >= nr)
			continue;
		/* Slot-major per range, so that neighbouring rows are neighbours. */
		for (int c = 0; c < KR_NST; c++)
			parts[(s * KR_NST + c) * nr + i] = st[c * KR_RPW + r];
	}
}

KR_KERNEL void kr_merge_parts(const KR_GLOBAL real *KR_RESTRICT parts,
			      KR_GLOBAL real *KR_RESTRICT out, kr_long nr, kr_long ns)
{
	const kr_long i = KR_GROUP(0) * KR_WG + KR_LID();
	real st[KR_NST], ot[KR_NST], o[KR_OUT];

	/* No barrier in this kernel: the tail may leave at once. */
	if (i >= nr)
		return;
	for (int c = 0; c < KR_NST; c++)
		st[c] = parts[c * nr + i];
	/* Ranges in column order, each merged into the running state (st first): a merge
	 * that keeps st's entry on ties then keeps the lower column index, as a single
	 * sequential pass would (ArgMin, Min_ArgMin, KMin_ArgKMin). */
	for (kr_long s = 1; s < ns; s++) {
		for (int c = 0; c < KR_NST; c++)
			ot[c] = parts[(s * KR_NST + c) * nr + i];
		kr_merge(st, 1, ot, 1);
	}
	kr_finalize(st, 1, o);
	for (int c = 0; c < KR_OUT; c++)
		out[i * KR_OUT + c] = o[c];
}

KR_KERNEL void kr_pack(const KR_GLOBAL real *KR_RESTRICT src, KR_GLOBAL real *KR_RESTRICT dst,
		       kr_long rows, int dim, int width, int offset)
{
	const kr_long q = KR_GROUP(0) * KR_WG + KR_LID();

	if (q >= rows * dim)
		return;
	dst[(q / dim) * width + offset + (int)(q % dim)] = src[q];
}

/* Sums of the rows of a (n x d) output, compensated (Kahan), in parts of chunk rows:
 * work-item t sums column c = t % d over rows [q * chunk, (q + 1) * chunk) of part
 * q = t / d into out[q * d + c], for the parts q < parts (the launch covers them). The
 * library sums many rows in two launches (the rows into parts, then the parts), so that
 * no work-item walks more than about the square root of the rows. */
KR_KERNEL void kr_sum_rows(const KR_GLOBAL real *KR_RESTRICT rows, KR_GLOBAL real *KR_RESTRICT out,
			   kr_long n, int d, kr_long chunk)
{
	const kr_long t = KR_GROUP(0) * KR_WG + KR_LID();
	const kr_long q = d > 0 ? t / d : 0, parts = chunk > 0 ? (n + chunk - 1) / chunk : 1;
	const int c = d > 0 ? (int)(t % d) : 0;
	const kr_long i1 = (q + 1) * chunk < n ? (q + 1) * chunk : n;
	real sum = 0, comp = 0;

	/* No barrier in this kernel: the tail may leave at once. One part when n is 0. */
	if (d <= 0 || q >= (parts > 0 ? parts : 1))
		return;
	for (kr_long i = q * chunk; i < i1; i++) {
		const real y = rows[i * d + c] - comp;
		const real s = sum + y;

		comp = (s - sum) - y;
		sum = s;
	}
	out[q * d + c] = sum;
}
