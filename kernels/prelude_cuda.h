/* The CUDA C dialect's prelude: the same names as kernels/prelude_opencl.h, so that
 * kernels/tiled.cl and the generated functions compile under NVRTC with no other header. */

/*
 * See prelude_opencl.h for the list of names and their meaning. NVRTC compiles C++ and
 * provides the device math functions without any #include; nothing here may include a
 * standard header (NVRTC has none by default), which is why infinity and NaN are built
 * from their bits.
 */
#ifndef KR_DOUBLE
#define KR_DOUBLE 0
#endif
/* KR_FAST_MATH (kred_reduction_options.fast_math) is NVRTC's --use_fast_math, which
 * lib/cuda/cuda.c passes with it: expf becomes __expf and so on, nothing to do here. */

#if KR_DOUBLE
typedef double real;
#define KR_INF __longlong_as_double(0x7ff0000000000000LL)
#define KR_NAN __longlong_as_double(0x7ff8000000000000LL)
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
#else
typedef float real;
#define KR_INF __int_as_float(0x7f800000)
#define KR_NAN __int_as_float(0x7fc00000)
#define kr_exp expf
#define kr_log logf
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
#endif
typedef long long kr_long;

#define KR_FN static __device__ __forceinline__
/* extern "C": the kernels keep their plain names, which is what cuModuleGetFunction
 * looks up. */
#define KR_KERNEL extern "C" __global__
#define KR_GLOBAL
#define KR_RESTRICT __restrict__
#define KR_LOCAL
#define KR_LOCAL_ARRAY(t, name, n) __shared__ t name[n]
#define KR_BARRIER() __syncthreads()
#define KR_LID() ((int)threadIdx.x)
#define KR_GROUP(d) ((kr_long)((d) == 0 ? blockIdx.x : blockIdx.y))
#define KR_NGROUPS(d) ((kr_long)((d) == 0 ? gridDim.x : gridDim.y))
#define KR_UNROLL _Pragma("unroll")
