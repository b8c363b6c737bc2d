/* The dialects of kernels/tiled.cl, OpenCL C and CUDA C, and its source: shared by the
 * OpenCL and CUDA backends, below both. The generated functions are written in names that
 * each prelude (kernels/prelude_opencl.h, prelude_cuda.h) defines, and see private arrays
 * only. */
#include <string.h>

#include "device.h"
#include "kernels/kred_kernels.h"

/*
 * Everything here but the name and the prelude is also what CUDA C needs: the function
 * qualifier, restrict and the math names are macros that each prelude defines. The
 * pointers carry no address space: in OpenCL C 1.2 they are then private, which is all
 * the template ever passes.
 */
/* Gram slots (kernels/tiled.cl computes them a tile at a time) past this dimension:
 * up to it the formula is unrolled and a work-item holds its rows in registers (POCL,
 * Gaussian sum at D = 64, 20,000 x 20,000 float32: 1.5 s unrolled, 2.1 s as a slot). */
#define KRED__TILED_GRAM_MIN_DIM 64

#define KRED__TILED_DIALECT(dname, dprelude)                                            \
	{                                                                                \
		.name = dname,                                                           \
		.suffix = { "f", "" },                                                   \
		.inf = "KR_INF",                                                         \
		.nan = "KR_NAN",                                                         \
		.bool_type = "int",                                                      \
		.fn_qual = "KR_FN",                                                      \
		.math = KRED__MATH_KR_NAMES,                                             \
		.init_params = "real *KR_RESTRICT st, int sst",                          \
		.update_params = "real *KR_RESTRICT st, int sst, const real *KR_RESTRICT xi, " \
				 "int sxi,\n\tconst real *KR_RESTRICT yj, "              \
				 "const real *KR_RESTRICT p, real jr,\n\t"               \
				 "const real *KR_RESTRICT gm, int sgm",                  \
		.merge_params = "real *KR_RESTRICT st, int sst, "                        \
				"const real *KR_RESTRICT ot, int sot",                   \
		.finalize_params = "const real *KR_RESTRICT st, int sst, "               \
				   "real *KR_RESTRICT out",                              \
		.st_fmt = "st[%s * sst]",                                                \
		.ot_fmt = "ot[%s * sot]",                                                \
		.out_fmt = "out[%s]",                                                    \
		.row_fmt = "xi[%s * sxi]",                                               \
		.col_fmt = "yj[%s]",                                                     \
		.prm_fmt = "p[%s]",                                                      \
		.update_unused = "\t(void)xi;\n\t(void)sxi;\n\t(void)yj;\n\t(void)p;\n"  \
				 "\t(void)jr;\n\t(void)gm;\n\t(void)sgm;\n",              \
		.prelude = dprelude,                                                     \
		.gram_fmt = "gm[%s * sgm]",                                              \
		.gram_min_dim = KRED__TILED_GRAM_MIN_DIM,                                \
	}

const struct kred_dialect kred__dialect_opencl =
	KRED__TILED_DIALECT("OpenCL C", kred__kernel_prelude_opencl_h);

/* The same template under NVRTC, for the CUDA backend and for compile checks. */
const struct kred_dialect kred__dialect_cuda =
	KRED__TILED_DIALECT("CUDA C", kred__kernel_prelude_cuda_h);

kred_status kred__tiled_source(const struct kred_dialect *d, const struct kred_reduction *r,
			       const struct kred__layout *l, const struct kred__tiled_shape *sh,
			       char **out, struct kred__error *err)
{
	struct kred__buf tmpl = { 0 };
	char *t;
	kred_status s;

	*out = NULL;
	kred__buf_printf(&tmpl, "\n/* The launch shape. */\n#define KR_WG %d\n#define KR_RPW %d\n"
			 "#define KR_TJ %d\n#define KR_LOCAL_TILES %d\n#define KR_ROOM %d\n\n",
			 sh->wg, sh->rpw, sh->tj, sh->local_tiles, sh->room);
	kred__buf_puts(&tmpl, kred__kernel_tiled_cl);
	t = kred__buf_take(&tmpl);
	if (!t)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	s = kred__emit_source(d, r, l, t, out, err);
	kred__free(t);
	return s;
}

int kred__tiled_fast_math(const char *src)
{
	return strstr(src, "\n#define KR_FAST_MATH 1\n") != NULL;
}
