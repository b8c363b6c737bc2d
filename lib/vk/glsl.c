/* The GLSL dialect of the emitter: how generated code reads states, rows, columns and
 * parameters in a Vulkan compute shader (kernels/tiled.comp), and its math names. */
#include "vk.h"
#include "kernels/kred_kernels.h"

/*
 * GLSL has no pointers: the generated functions take fixed-size arrays (KR_DRA and the
 * like, from kernels/prelude_glsl.h, never 0) by value, which Mesa's and the vendors'
 * compilers inline and turn back into registers, since every index the emitter writes is
 * a constant or a loop counter over constants. `out` is a keyword: the output is `o`.
 * So the emitter unrolls vectors of every size here (.unroll_all): Mesa lowers an access
 * at a variable index into such an array to a select over all of it, and a loop over a
 * Vi(300) took llvmpipe 47 s to compile against 3.7 s unrolled (the widest formulas
 * take the wide mode below). The exception is the gram slots (.gram_fmt): a squared
 * distance or a scalar product of a row and a column variable past 64 values is a loop
 * of the template over the buffers themselves, and the formula reads its value.
 */
/* What both GLSL dialects share. */
#define GLSL_COMMON                                                                       \
	/* An unsuffixed literal is a float in GLSL: 0.1 in a double expression would be  \
	 * float's 0.1. */                                                                \
	.suffix = { "", "lf" }, .inf = "KR_INF", .nan = "KR_NAN", .bool_type = "bool",    \
	.fn_qual = "", .exact = "precise ",                                               \
	.math = KRED__MATH_KR_NAMES,                                                      \
	.update_unused = "", .prelude = kred__kernel_prelude_glsl_h,                      \
	/* Squared distances and scalar products past 64 values: loops of the template    \
	 * that read the rows' buffer and the columns' texels, not local arrays           \
	 * (tiled.comp). */                                                               \
	.gram_fmt = "gm[%s]", .gram_min_dim = 64

const struct kred_dialect kred__dialect_glsl = {
	.name = "GLSL",
	GLSL_COMMON,
	.unroll_all = 1,
	.init_params = "inout real st[KR_NST]",
	.update_params = "inout real st[KR_NST], in real xi[KR_DRA], in real yj[KR_DCA],\n\t"
			 "in real p[KR_DPA], real jr, in real gm[KR_GMA]",
	.merge_params = "inout real st[KR_NST], in real ot[KR_NST]",
	.finalize_params = "in real st[KR_NST], out real o[KR_OUT]",
	.st_fmt = "st[%s]",
	.ot_fmt = "ot[%s]",
	.out_fmt = "o[%s]",
	.row_fmt = "xi[%s]",
	.col_fmt = "yj[%s]",
	.prm_fmt = "p[%s]",
};

/*
 * The wide mode (KR_WIDE, for the formulas too long to unroll: lib/vk/vulkan.c): nothing
 * is copied into local arrays. The generated functions read the row, the column and the
 * parameters where they are (the rows' buffer, the columns' texels, the parameters'
 * buffer or push constants) and keep the state in the states' buffer, slot s of the state
 * at a at kr_states[a + s * pc.nr] (tiled.comp's layout), so that the emitter's loops
 * index memory, which every driver does at a variable index, and the code's size is
 * independent of the dimension. One row per invocation, one column at a time, and no
 * block-sum tiles: the block scheme's sums are compensated term by term (.no_tiles).
 */
const struct kred_dialect kred__dialect_glsl_wide = {
	.name = "GLSL, wide",
	GLSL_COMMON,
	.no_tiles = 1,
	.init_params = "int kr_sa",
	.update_params = "int kr_sa, int kr_xi, int kr_yj, real jr, in real gm[KR_GMA]",
	.merge_params = "int kr_sa, int kr_sb",
	.finalize_params = "int kr_sa, int kr_oi",
	.st_fmt = "kr_states[kr_sa + (%s) * pc.nr]",
	.ot_fmt = "kr_states[kr_sb + (%s) * pc.nr]",
	.out_fmt = "kr_out[kr_oi + (%s)]",
	.row_fmt = "kr_rows[kr_xi + (%s)]",
	.col_fmt = "kr_col_value(kr_yj, %s)",
	.prm_fmt = "KR_PRM(%s)",
};
