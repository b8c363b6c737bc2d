/* The OpenCL C dialect's prelude: the scalar type, math names, address spaces, work-item
 * indices and barriers that kernels/tiled.cl and the generated functions are written in. */

/*
 * Every name below is one the CUDA prelude (kernels/prelude_cuda.h) defines too, with the
 * same meaning; tiled.cl uses nothing else that differs between the two languages.
 *
 *   real, kr_long       the scalar type (from KR_DOUBLE) and a 64-bit signed integer
 *   KR_INF, KR_NAN      +infinity and NaN of type real
 *   KR_FN               before a helper function that kernels call
 *   KR_KERNEL           before a kernel entry point
 *   KR_GLOBAL           address space of a kernel's buffer pointers
 *   KR_RESTRICT         restrict, where the language has it
 *   KR_LOCAL            address space of a pointer to a work-group-shared array
 *   KR_LOCAL_ARRAY(t, name, n)   a work-group-shared array, declared in a kernel's body
 *   KR_BARRIER()        work-group barrier that also orders the shared array's accesses
 *   KR_LID()            the work-item's index in its group (dimension 0), an int
 *   KR_GROUP(d), KR_NGROUPS(d)   the group's index and the number of groups in
 *                       dimension d (0 or 1), as kr_long
 *   KR_UNROLL           before a loop of constant count that should be unrolled (its
 *                       array of sums then stays in registers)
 *   kr_exp ... kr_pow   the math functions the emitter's generated code calls
 *
 * Pointers without an address space are private in OpenCL C 1.2: the generated functions
 * (kr_init, kr_update, kr_merge, kr_finalize) only ever see private arrays, which is what
 * lets one set of them serve both languages.
 */
#ifndef KR_DOUBLE
#define KR_DOUBLE 0
#endif
#ifndef KR_FAST_MATH
#define KR_FAST_MATH 0
#endif

#if KR_DOUBLE
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double real;
#define KR_INF ((double)INFINITY)
#define KR_NAN ((double)NAN)
#else
typedef float real;
#define KR_INF INFINITY
#define KR_NAN NAN
#endif
typedef long kr_long;

#define KR_FN static inline
#define KR_KERNEL __kernel
#define KR_GLOBAL __global
#define KR_RESTRICT restrict
#define KR_LOCAL __local
#define KR_LOCAL_ARRAY(t, name, n) __local t name[n]
#define KR_BARRIER() barrier(CLK_LOCAL_MEM_FENCE)
#define KR_LID() ((int)get_local_id(0))
#define KR_GROUP(d) ((kr_long)get_group_id(d))
#define KR_NGROUPS(d) ((kr_long)get_num_groups(d))
#define KR_UNROLL _Pragma("unroll")

/* OpenCL C's built-ins are overloaded on float and double. No -cl-fast-relaxed-math:
 * LogSumExp starts from -inf, Min from +inf, and NaN must stay NaN. */
#define kr_exp exp
#define kr_log log
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
/* Fast math (kred_reduction_options.fast_math) in float32: the native_ functions, of
 * the device's own accuracy (OpenCL C has no native_ forms of double). pow keeps pow:
 * native_powr is undefined below 0. */
#if KR_FAST_MATH && !KR_DOUBLE
#undef kr_exp
#undef kr_log
#undef kr_sin
#undef kr_cos
#undef kr_sqrt
#define kr_exp native_exp
#define kr_log native_log
#define kr_sin native_sin
#define kr_cos native_cos
#define kr_sqrt native_sqrt
#endif
