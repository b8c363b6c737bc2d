/* The Vulkan compute template: one invocation per output row folds a range of columns,
 * read as texels, into its state, in dispatches short enough for every driver; a second
 * mode merges the partial states of split column ranges and writes the outputs. */

/*
 * What comes before this text: "#version 450", the backend's #defines (KR_WG invocations
 * per workgroup, KR_RPI rows per invocation, KR_UNROLL columns per loop iteration, KR_T
 * the block-sum tile, KR_PUSH_DP parameters passed as push constants, 0 when they go in a
 * buffer, KR_WIDE the wide mode), the emitter's (KR_DOUBLE, KR_DR, KR_DC, KR_DP, KR_NST,
 * KR_OUT, KR_TILE_MERGE), kernels/prelude_glsl.h (with the buffers' declarations) and the
 * generated kr_init, kr_update, kr_merge and kr_finalize (their contract is in
 * kernels/host.c; the wide mode's take indices: lib/vk/glsl.c).
 *
 * Why it is shaped this way (lib/vk/vulkan.c plans the dispatches):
 * - llvmpipe stops all the loops of an invocation after 65,535 iterations in total,
 *   without an error. So an invocation folds at most a pass of columns, which the
 *   backend sizes below that bound from the loops here (the only ones that run per
 *   column: the emitter unrolls its own, but for KMin's widest states), and hands its
 *   states on to the next dispatch through the state buffer.
 * - Reading storage buffers in the column loop is ~15x slower on llvmpipe than reading
 *   the same values through a texel buffer: columns are read as RGBA32F texels
 *   (RGBA32UI holding two doubles), every invocation of a group reading the same column.
 * - A fetch still costs more than a Gaussian term: each invocation holds KR_RPI rows, so
 *   that one fetched column serves them all, and unrolls KR_UNROLL columns, so that the
 *   loop body holds KR_RPI x KR_UNROLL independent updates. On llvmpipe 4 x 2 ran the
 *   Gaussian sum 2x and a plain sum 3x faster than one row with 8 columns unrolled.
 * - A few rows and many columns leave most of a device idle: the columns are then split
 *   into gl_NumWorkGroups.y ranges whose states a last dispatch merges, in order.
 *
 * Compiled on its own with the sample below:
 *   (echo '#version 450'; cat kernels/prelude_glsl.h kernels/tiled.comp) |
 *           glslc -fshader-stage=comp - -o /dev/null
 */
#ifndef KR_NST
#define KR_DR 1
#define KR_DC 1
#define KR_DP 0
#define KR_NST 1
#define KR_OUT 1
#define KR_TILE_MERGE 1
void kr_init(inout real st[KR_NST])
{
	st[0] = real(0);
}
void kr_update(inout real st[KR_NST], in real xi[KR_DRA], in real yj[KR_DCA],
	       in real p[KR_DPA], real jr, in real gm[KR_GMA])
{
	st[0] += kr_exp(-(xi[0] - yj[0]) * (xi[0] - yj[0]));
}
void kr_merge(inout real st[KR_NST], in real ot[KR_NST])
{
	st[0] += ot[0];
}
void kr_finalize(in real st[KR_NST], out real o[KR_OUT])
{
	o[0] = st[0];
}
#endif

#ifndef KR_WG
#define KR_WG 64
#endif
#ifndef KR_RPI
#define KR_RPI 4
#endif
#ifndef KR_UNROLL
#define KR_UNROLL 2
#endif
#ifndef KR_T
#define KR_T 256
#endif
/* Gram slots (lib/emit.c find_grams): KR_NG squared distances or scalar products of a row
 * and a column variable past 64 values, KR_GRAMS (kind, row offset, column offset,
 * dimension), which the formula reads as gm[g]; KR_XR and KR_YR list the parts of a row
 * and of a column that the formula reads itself. */
#ifndef KR_NG
#define KR_NG 0
#endif

/* flags */
#define KR_INIT 1  /* the first pass: start from kr_init, not from the state buffer */
#define KR_FINAL 2 /* the last pass of an unsplit range: finalize into the output */
#define KR_MERGE 4 /* the merge dispatch: fold the nsplit states of each row */
#define KR_RANGED 8 /* a block-sparse pass: workgroup g takes task g (below) */

#ifndef KR_WIDE
#define KR_WIDE 0
#endif

layout(local_size_x = KR_WG) in;

/* The buffers and push constants (pc) are declared in kernels/prelude_glsl.h. */

#if !KR_WIDE

void kr_load_state(int r, int i, out real st[KR_NST])
{
	for (int s = 0; s < KR_NST; s++)
		st[s] = kr_states[(r * KR_NST + s) * pc.nr + i];
}

void kr_store_state(int r, int i, in real st[KR_NST])
{
	for (int s = 0; s < KR_NST; s++)
		kr_states[(r * KR_NST + s) * pc.nr + i] = st[s];
}

void kr_write(int i, in real st[KR_NST])
{
	real o[KR_OUT];

	kr_finalize(st, o);
	for (int c = 0; c < KR_OUT; c++)
		kr_out[i * KR_OUT + c] = o[c];
}

/* Column j of the bound block, texel by texel: unrolled by the preprocessor, since a
 * loop here would count against llvmpipe's budget once per column. */
#if KR_DOUBLE
#define KR_FETCH(t)                                                                       \
	{                                                                                 \
		uvec4 v = texelFetch(kr_cols, j * KR_TPC + t);                            \
		y[2 * t] = packDouble2x32(v.xy);                                          \
		y[2 * t + 1] = packDouble2x32(v.zw);                                      \
	}
#else
#define KR_FETCH(t)                                                                       \
	{                                                                                 \
		vec4 v = texelFetch(kr_cols, j * KR_TPC + t);                             \
		y[4 * t] = v.x;                                                           \
		y[4 * t + 1] = v.y;                                                       \
		y[4 * t + 2] = v.z;                                                       \
		y[4 * t + 3] = v.w;                                                       \
	}
#endif

#endif

#if KR_NG > 0
#if !KR_WIDE
/* The values of column j that the formula reads itself: its gram slots read the rest in
 * place (kr_gram). */
void kr_column(int j, out real y[KR_DCA])
{
	const int part[KR_NYR > 0 ? KR_NYR : 1][2] = KR_YR;

	y[0] = real(0);
	for (int q = 0; q < KR_NYR; q++)
		for (int c = part[q][0]; c < part[q][0] + part[q][1]; c++)
			y[c] = kr_col_value(j, c);
}
#endif

/* Value q of the texel (v), at c of the slot, into row k's sum (a[k]). */
#define KR_GROW(q, k)                                                                     \
	{                                                                                 \
		real xv = kr_rows[ir[k] * KR_DR + xo + c];                                \
		a[k] += sq ? (xv - v[q]) * (xv - v[q]) : xv * v[q];                       \
	}
#if KR_RPI == 1
#define KR_GROWS(q) KR_GROW(q, 0)
#elif KR_RPI == 2
#define KR_GROWS(q) KR_GROW(q, 0) KR_GROW(q, 1)
#else
#define KR_GROWS(q) KR_GROW(q, 0) KR_GROW(q, 1) KR_GROW(q, 2) KR_GROW(q, 3)
#endif
#define KR_GVAL(q)                                                                        \
	{                                                                                 \
		int c = t * KR_PER_TEXEL + (q) - yo;                                      \
		if (c >= 0 && c < dim) {                                                  \
			KR_GROWS(q)                                                       \
		}                                                                         \
	}

/* Gram slot g (a constant, so that its kind and offsets fold) of the invocation's rows
 * ir against column j, into a: one loop over the column's texels, each value of a texel
 * taken by every row, read from the rows' buffer. No local array is indexed by a loop's
 * variable (Mesa would select over all of it: lib/vk/glsl.c), and the loops over a
 * texel's values and the rows are written out, since llvmpipe's loop budget counts every
 * iteration that its compiler leaves (lib/vk/vulkan.c counts the texels' and the
 * two loops of KR_RPI). */
void kr_gram_slot(int j, in int ir[KR_RPI], int g, out real a[KR_RPI])
{
	const int slot[KR_NG][4] = KR_GRAMS;
	bool sq = slot[g][0] != 0;
	int xo = slot[g][1], yo = slot[g][2], dim = slot[g][3];
	int t1 = (yo + dim + KR_PER_TEXEL - 1) / KR_PER_TEXEL;

	for (int k = 0; k < KR_RPI; k++)
		a[k] = real(0);
	for (int t = yo / KR_PER_TEXEL; t < t1; t++) {
		real v[KR_PER_TEXEL];
#if KR_DOUBLE
		uvec4 w = texelFetch(kr_cols, j * KR_TPC + t);

		v[0] = packDouble2x32(w.xy);
		v[1] = packDouble2x32(w.zw);
		KR_GVAL(0)
		KR_GVAL(1)
#else
		vec4 w = texelFetch(kr_cols, j * KR_TPC + t);

		v[0] = w.x;
		v[1] = w.y;
		v[2] = w.z;
		v[3] = w.w;
		KR_GVAL(0)
		KR_GVAL(1)
		KR_GVAL(2)
		KR_GVAL(3)
#endif
	}
}

#define KR_GSLOT(g)                                                                       \
	{                                                                                 \
		real a[KR_RPI];                                                           \
		kr_gram_slot(j, ir, g, a);                                                \
		for (int k = 0; k < KR_RPI; k++)                                          \
			gm[k][g] = a[k];                                                  \
	}

/* The gram slots of the invocation's rows against column j. */
void kr_gram(int j, in int ir[KR_RPI], out real gm[KR_RPI][KR_GMA])
{
	KR_GSLOT(0)
#if KR_NG > 1
	KR_GSLOT(1)
#endif
#if KR_NG > 2
	KR_GSLOT(2)
#endif
#if KR_NG > 3
	KR_GSLOT(3)
#endif
#if KR_NG > 4
	KR_GSLOT(4)
#endif
#if KR_NG > 5
	KR_GSLOT(5)
#endif
#if KR_NG > 6
	KR_GSLOT(6)
#endif
#if KR_NG > 7
	KR_GSLOT(7)
#endif
}
#endif

/* The columns [j0, j1) of this pass in interval q of a block-sparse task (pos: where q
 * starts in the task's columns laid end to end, moved past it), or in the dense range
 * [lo, hi). */
void kr_pass_columns(bool ranged, int q, int lo, int hi, inout int pos, out int j0, out int j1)
{
	if (ranged) {
		int a = kr_red[2 * q], len = kr_red[2 * q + 1] - a;

		j0 = a + clamp(pc.start - pos, 0, len);
		j1 = a + clamp(pc.start + pc.count - pos, 0, len);
		pos += len;
	} else {
		j0 = min(lo + pc.start, hi);
		j1 = min(j0 + pc.count, hi);
	}
}

#if !KR_WIDE
#if KR_NG == 0
void kr_column(int j, out real y[KR_DCA])
{
#if KR_TPC == 0
	y[0] = real(0);
#endif
#if KR_TPC > 0
	KR_FETCH(0)
#endif
#if KR_TPC > 1
	KR_FETCH(1)
#endif
#if KR_TPC > 2
	KR_FETCH(2)
#endif
#if KR_TPC > 3
	KR_FETCH(3)
#endif
#if KR_TPC > 4
	KR_FETCH(4)
#endif
#if KR_TPC > 5
	KR_FETCH(5)
#endif
#if KR_TPC > 6
	KR_FETCH(6)
#endif
#if KR_TPC > 7
	KR_FETCH(7)
#endif
#if KR_TPC > 8
	/* Wide columns: the rest in a loop, which the backend counts in its pass budget. */
	for (int t = 8; t < KR_TPC; t++)
		KR_FETCH(t)
#endif
}
#endif

/* Row k of the invocation's rows takes column y. */
#define KR_ROW(k) kr_update(st[k], x[k], y, p, jr, gm[k]);
#if KR_RPI == 1
#define KR_ROWS KR_ROW(0)
#elif KR_RPI == 2
#define KR_ROWS KR_ROW(0) KR_ROW(1)
#elif KR_RPI == 4
#define KR_ROWS KR_ROW(0) KR_ROW(1) KR_ROW(2) KR_ROW(3)
#else
#error KR_RPI must be 1, 2 or 4
#endif

#if KR_NG > 0
#define KR_GRAM_OF(j) kr_gram(j, ir, gm);
#else
#define KR_GRAM_OF(j)
#endif

/* One column folded into the states of the invocation's rows. */
#define KR_STEP(u)                                                                        \
	{                                                                                 \
		real y[KR_DCA];                                                           \
		real gm[KR_RPI][KR_GMA];                                                  \
		real jr = pc.jbase + real(j + u);                                         \
		kr_column(j + u, y);                                                      \
		KR_GRAM_OF(j + u)                                                         \
		KR_ROWS                                                                   \
	}

/* Columns [j0, j1) of the bound block folded into st. */
void kr_fold(inout real st[KR_RPI][KR_NST], in real x[KR_RPI][KR_DRA], in real p[KR_DPA],
	     in int ir[KR_RPI], int j0, int j1)
{
	int j = j0;

	for (; j + KR_UNROLL <= j1; j += KR_UNROLL) {
		KR_STEP(0)
#if KR_UNROLL > 1
		KR_STEP(1)
#endif
#if KR_UNROLL > 2
		KR_STEP(2)
		KR_STEP(3)
#endif
	}
	for (; j < j1; j++)
		KR_STEP(0)
}

void main()
{
	const bool ranged = (pc.flags & KR_RANGED) != 0;
	const int g = int(gl_WorkGroupID.x);
	/* This invocation's rows, i0 to i0 + KR_RPI, below end. */
	const int end = ranged ? kr_tasks[4 * g + 1] : pc.nr;
	const int i0 = ranged ? kr_tasks[4 * g] + int(gl_LocalInvocationID.x) * KR_RPI
			      : int(gl_GlobalInvocationID.x) * KR_RPI;
	real st[KR_RPI][KR_NST];

	if (i0 >= end)
		return;
	if ((pc.flags & KR_MERGE) != 0) {
		for (int k = 0; k < KR_RPI && i0 + k < pc.nr; k++) {
			real s0[KR_NST];

			kr_load_state(0, i0 + k, s0);
			for (int r = 1; r < pc.nsplit; r++) {
				real ot[KR_NST];

				kr_load_state(r, i0 + k, ot);
				kr_merge(s0, ot);
			}
			kr_write(i0 + k, s0);
		}
		return;
	}

	const int r = ranged ? 0 : int(gl_WorkGroupID.y);
	const int lo = min(r * pc.span, pc.nc), hi = min(lo + pc.span, pc.nc);
	/* Dense: one interval, this range's columns of this pass. */
	const int k0 = ranged ? kr_tasks[4 * g + 2] : 0, k1 = ranged ? kr_tasks[4 * g + 3] : 1;
	real x[KR_RPI][KR_DRA], p[KR_DPA];
	int ir[KR_RPI];
	int pos = 0; /* where interval k starts in the task's columns laid end to end */

	for (int k = 0; k < KR_RPI; k++) {
		/* Rows past the end compute on the last row; their results are dropped. */
		int i = min(i0 + k, end - 1);

		ir[k] = i;
#if KR_NG > 0
		/* what the formula reads itself: its gram slots read the rows in place */
		const int part[KR_NXR > 0 ? KR_NXR : 1][2] = KR_XR;

		x[k][0] = real(0);
		for (int q = 0; q < KR_NXR; q++)
			for (int c = part[q][0]; c < part[q][0] + part[q][1]; c++)
				x[k][c] = kr_rows[i * KR_DR + c];
#else
		for (int c = 0; c < KR_DR; c++)
			x[k][c] = kr_rows[i * KR_DR + c];
#endif
#if KR_DR == 0
		x[k][0] = real(0);
#endif
		if ((pc.flags & KR_INIT) != 0)
			kr_init(st[k]);
		else
			kr_load_state(r, i, st[k]);
	}
	for (int c = 0; c < KR_DP; c++)
#if KR_PUSH_DP > 0
		p[c] = pc.prm[c];
#else
		p[c] = kr_prms[c];
#endif
#if KR_DP == 0
	p[0] = real(0);
#endif
	/* One call of the fold for both kinds of run: the formula is compiled once. */
	for (int q = k0; q < k1; q++) {
		int j0, j1;

		kr_pass_columns(ranged, q, lo, hi, pos, j0, j1);
#if KR_TILE_MERGE
		/* The block sum scheme: each tile of KR_T columns is summed apart, then
		 * added. */
		for (int t0 = j0; t0 < j1; t0 += KR_T) {
			real acc[KR_RPI][KR_NST];

			for (int k = 0; k < KR_RPI; k++)
				kr_init(acc[k]);
			kr_fold(acc, x, p, ir, t0, min(t0 + KR_T, j1));
			for (int k = 0; k < KR_RPI; k++)
				kr_merge(st[k], acc[k]);
		}
#else
		kr_fold(st, x, p, ir, j0, j1);
#endif
	}
	for (int k = 0; k < KR_RPI && i0 + k < end; k++) {
		if ((pc.flags & KR_FINAL) != 0)
			kr_write(i0 + k, st[k]);
		else
			kr_store_state(r, i0 + k, st[k]);
	}
}
#else /* KR_WIDE */

/* The wide mode (lib/vk/glsl.c: formulas too long to unroll, in loops that read memory):
 * one row per invocation (KR_RPI is 1), one column at a time, the state of row i in split
 * range r in the states' buffer at r * KR_NST * nr + i, where the generated functions
 * read and write it, the row and the column read in place. */
void main()
{
	const bool ranged = (pc.flags & KR_RANGED) != 0;
	const int g = int(gl_WorkGroupID.x);
	const int end = ranged ? kr_tasks[4 * g + 1] : pc.nr;
	const int i = ranged ? kr_tasks[4 * g] + int(gl_LocalInvocationID.x)
			     : int(gl_GlobalInvocationID.x);

	if (i >= end)
		return;
	if ((pc.flags & KR_MERGE) != 0) {
		for (int r = 1; r < pc.nsplit; r++)
			kr_merge(i, r * KR_NST * pc.nr + i);
		kr_finalize(i, i * KR_OUT);
		return;
	}

	const int r = ranged ? 0 : int(gl_WorkGroupID.y);
	const int lo = min(r * pc.span, pc.nc), hi = min(lo + pc.span, pc.nc);
	const int k0 = ranged ? kr_tasks[4 * g + 2] : 0, k1 = ranged ? kr_tasks[4 * g + 3] : 1;
	const int sa = r * KR_NST * pc.nr + i;
	int pos = 0;

	if ((pc.flags & KR_INIT) != 0)
		kr_init(sa);
	for (int q = k0; q < k1; q++) {
		int j0, j1;

		kr_pass_columns(ranged, q, lo, hi, pos, j0, j1);
		for (int j = j0; j < j1; j++) {
			real gm[1][KR_GMA];
#if KR_NG > 0
			int ir[1];

			ir[0] = i;
			kr_gram(j, ir, gm);
#else
			gm[0][0] = real(0);
#endif
			kr_update(sa, i * KR_DR, j, pc.jbase + real(j), gm[0]);
		}
	}
	if ((pc.flags & KR_FINAL) != 0)
		kr_finalize(sa, i * KR_OUT);
}
#endif /* KR_WIDE */
