/* The CUDA driver API (libcuda.so.1) and NVRTC (libnvrtc) loaded at run time with dlopen,
 * declared here without the toolkit's headers, so that kred builds and runs without it. */
#ifndef KRED_CUDA_LOADER_H
#define KRED_CUDA_LOADER_H

#include <stddef.h>

#include "internal.h"

/*
 * The few types and constants of cuda.h and nvrtc.h that kred uses, with the values of
 * those headers (stable across CUDA releases: they are part of the driver's ABI). The
 * entry points are the versioned symbols the headers map their names to (cuMemAlloc is
 * cuMemAlloc_v2 since CUDA 3.2); the oldest of them, cuDevicePrimaryCtxRelease_v2, needs
 * a CUDA 11 driver.
 */
typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef unsigned long long CUdeviceptr;

#define CUDA_SUCCESS 0
#define CUDA_ERROR_OUT_OF_MEMORY 2
#define CUDA_ERROR_STUB_LIBRARY 34
#define CUDA_ERROR_NO_DEVICE 100

#define CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK 1
#define CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X 5
#define CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y 6
#define CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK 8
#define CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT 16
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76
#define CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK 0
#define CU_POINTER_ATTRIBUTE_CONTEXT 1
#define CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL 9
#define CU_JIT_ERROR_LOG_BUFFER 5
#define CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES 6

/* The driver entry points kred uses: X(member, symbol, parameters), all returning
 * CUresult. */
#define KRED__CU_FUNCS(X)                                                                \
	X(Init, "cuInit", (unsigned int flags))                                          \
	X(DriverGetVersion, "cuDriverGetVersion", (int *version))                        \
	X(GetErrorName, "cuGetErrorName", (CUresult e, const char **name))               \
	X(GetErrorString, "cuGetErrorString", (CUresult e, const char **text))           \
	X(DeviceGetCount, "cuDeviceGetCount", (int *count))                              \
	X(DeviceGet, "cuDeviceGet", (CUdevice *dev, int ordinal))                        \
	X(DeviceGetName, "cuDeviceGetName", (char *name, int len, CUdevice dev))         \
	X(DeviceGetAttribute, "cuDeviceGetAttribute", (int *v, int attr, CUdevice dev))  \
	X(DeviceTotalMem, "cuDeviceTotalMem_v2", (size_t *bytes, CUdevice dev))          \
	X(PrimaryCtxRetain, "cuDevicePrimaryCtxRetain", (CUcontext *ctx, CUdevice dev))  \
	X(PrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", (CUdevice dev))             \
	X(CtxPushCurrent, "cuCtxPushCurrent_v2", (CUcontext ctx))                        \
	X(CtxPopCurrent, "cuCtxPopCurrent_v2", (CUcontext *ctx))                         \
	X(CtxSynchronize, "cuCtxSynchronize", (void))                                    \
	X(ModuleLoadDataEx, "cuModuleLoadDataEx",                                        \
	  (CUmodule *mod, const void *image, unsigned int n, int *options, void **values)) \
	X(ModuleUnload, "cuModuleUnload", (CUmodule mod))                                \
	X(ModuleGetFunction, "cuModuleGetFunction",                                      \
	  (CUfunction *f, CUmodule mod, const char *name))                               \
	X(FuncGetAttribute, "cuFuncGetAttribute", (int *v, int attr, CUfunction f))      \
	X(LaunchKernel, "cuLaunchKernel",                                                \
	  (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, \
	   unsigned int by, unsigned int bz, unsigned int shared, CUstream stream,      \
	   void **params, void **extra))                                                 \
	X(MemAlloc, "cuMemAlloc_v2", (CUdeviceptr *p, size_t bytes))                     \
	X(MemFree, "cuMemFree_v2", (CUdeviceptr p))                                      \
	X(MemcpyHtoD, "cuMemcpyHtoD_v2", (CUdeviceptr dst, const void *src, size_t bytes)) \
	X(MemcpyDtoH, "cuMemcpyDtoH_v2", (void *dst, CUdeviceptr src, size_t bytes))     \
	X(MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2",                                       \
	  (CUdeviceptr dst, const void *src, size_t bytes, CUstream stream))             \
	X(MemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2",                                       \
	  (void *dst, CUdeviceptr src, size_t bytes, CUstream stream))                   \
	X(StreamSynchronize, "cuStreamSynchronize", (CUstream stream))                   \
	X(StreamGetCtx, "cuStreamGetCtx", (CUstream stream, CUcontext *ctx))             \
	X(MemGetAddressRange, "cuMemGetAddressRange_v2",                                 \
	  (CUdeviceptr *base, size_t *size, CUdeviceptr p))                              \
	X(PointerGetAttribute, "cuPointerGetAttribute", (void *v, int attr, CUdeviceptr p))

struct kred__cu_api {
#define KRED__CU_MEMBER(member, symbol, params) CUresult(*member) params;
	KRED__CU_FUNCS(KRED__CU_MEMBER)
#undef KRED__CU_MEMBER
};

/* One GPU as kred sees it. */
struct kred__cu_device {
	CUdevice id;
	char name[128];
	int major, minor; /* compute capability */
	int sm_count;
	int max_threads;  /* per block */
	int shared_mem;	  /* bytes of static shared memory per block */
	int max_grid_y;
	size_t total_mem;
};

/* Loads the driver, initialises it and lists the GPUs, once per process (thread-safe).
 * Returns the API, or NULL with the reason in why (no driver, a driver that lacks an
 * entry point, cuInit's error: CUDA_ERROR_NO_DEVICE, CUDA_ERROR_STUB_LIBRARY...).
 * $KRED_CUDA_LIBRARY, when set, names the library to open instead of libcuda.so.1 (a
 * path, or "none" to act as if there were none). */
const struct kred__cu_api *kred__cu_load(char *why, size_t whylen);
/* The GPUs found by kred__cu_load ("cuda:N"), and the driver's version (12040 for 12.4). */
int kred__cu_devices(const struct kred__cu_device **devices);
int kred__cu_driver_version(void);
/* "CUDA_ERROR_OUT_OF_MEMORY (out of memory)" for e, from the driver when it is loaded. */
void kred__cu_errtext(CUresult e, char *out, size_t len);

/* NVRTC. */
typedef int nvrtcResult;
typedef struct _nvrtcProgram *nvrtcProgram;

#define NVRTC_SUCCESS 0
#define NVRTC_ERROR_COMPILATION 6

#define KRED__NVRTC_FUNCS(X)                                                             \
	X(Version, "nvrtcVersion", (int *major, int *minor))                             \
	X(GetNumSupportedArchs, "nvrtcGetNumSupportedArchs", (int *n))                   \
	X(GetSupportedArchs, "nvrtcGetSupportedArchs", (int *archs))                     \
	X(CreateProgram, "nvrtcCreateProgram",                                           \
	  (nvrtcProgram *prog, const char *src, const char *name, int n_headers,        \
	   const char *const *headers, const char *const *include_names))               \
	X(DestroyProgram, "nvrtcDestroyProgram", (nvrtcProgram *prog))                   \
	X(CompileProgram, "nvrtcCompileProgram",                                         \
	  (nvrtcProgram prog, int n_options, const char *const *options))               \
	X(GetProgramLogSize, "nvrtcGetProgramLogSize", (nvrtcProgram prog, size_t *size)) \
	X(GetProgramLog, "nvrtcGetProgramLog", (nvrtcProgram prog, char *log))           \
	X(GetPTXSize, "nvrtcGetPTXSize", (nvrtcProgram prog, size_t *size))              \
	X(GetPTX, "nvrtcGetPTX", (nvrtcProgram prog, char *ptx))                         \
	X(GetCUBINSize, "nvrtcGetCUBINSize", (nvrtcProgram prog, size_t *size))          \
	X(GetCUBIN, "nvrtcGetCUBIN", (nvrtcProgram prog, char *cubin))

#define KRED__NVRTC_MAX_ARCHS 64

struct kred__nvrtc_api {
#define KRED__NVRTC_MEMBER(member, symbol, params) nvrtcResult(*member) params;
	KRED__NVRTC_FUNCS(KRED__NVRTC_MEMBER)
#undef KRED__NVRTC_MEMBER
	const char *(*GetErrorString)(nvrtcResult e);
	int major, minor;
	/* The real architectures it compiles for (75 for sm_75), ascending. */
	int archs[KRED__NVRTC_MAX_ARCHS];
	int n_archs;
	char path[256]; /* the library it was loaded from, for messages */
};

/* Loads NVRTC once per process (thread-safe): $KRED_NVRTC_LIBRARY (a path or a name;
 * "none" for none), else the first of libnvrtc.so, libnvrtc.so.13, .12, .11.2 and
 * /usr/local/cuda/lib64/libnvrtc.so that opens. NULL with the reason in why. */
const struct kred__nvrtc_api *kred__nvrtc_load(char *why, size_t whylen);

#endif
