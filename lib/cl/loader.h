/* libOpenCL loaded at run time through the ICD loader (dlopen), so that one build of kred
 * runs where no OpenCL exists and says why; platforms and devices enumerated once. */
#ifndef KRED_CL_LOADER_H
#define KRED_CL_LOADER_H

#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>

#include "internal.h"

/* The entry points kred uses, filled by kred__cl_load. */
struct kred__cl_api {
	cl_int (*GetPlatformIDs)(cl_uint, cl_platform_id *, cl_uint *);
	cl_int (*GetPlatformInfo)(cl_platform_id, cl_platform_info, size_t, void *, size_t *);
	cl_int (*GetDeviceIDs)(cl_platform_id, cl_device_type, cl_uint, cl_device_id *,
			       cl_uint *);
	cl_int (*GetDeviceInfo)(cl_device_id, cl_device_info, size_t, void *, size_t *);
	cl_context (*CreateContext)(const cl_context_properties *, cl_uint,
				    const cl_device_id *,
				    void(CL_CALLBACK *)(const char *, const void *, size_t,
							void *),
				    void *, cl_int *);
	cl_int (*RetainContext)(cl_context);
	cl_int (*ReleaseContext)(cl_context);
	cl_command_queue (*CreateCommandQueue)(cl_context, cl_device_id,
					       cl_command_queue_properties, cl_int *);
	cl_int (*ReleaseCommandQueue)(cl_command_queue);
	cl_mem (*CreateBuffer)(cl_context, cl_mem_flags, size_t, void *, cl_int *);
	cl_int (*ReleaseMemObject)(cl_mem);
	cl_program (*CreateProgramWithSource)(cl_context, cl_uint, const char **, const size_t *,
					      cl_int *);
	cl_program (*CreateProgramWithBinary)(cl_context, cl_uint, const cl_device_id *,
					      const size_t *, const unsigned char **, cl_int *,
					      cl_int *);
	cl_int (*BuildProgram)(cl_program, cl_uint, const cl_device_id *, const char *,
			       void(CL_CALLBACK *)(cl_program, void *), void *);
	cl_int (*GetProgramBuildInfo)(cl_program, cl_device_id, cl_program_build_info, size_t,
				      void *, size_t *);
	cl_int (*GetProgramInfo)(cl_program, cl_program_info, size_t, void *, size_t *);
	cl_int (*ReleaseProgram)(cl_program);
	cl_kernel (*CreateKernel)(cl_program, const char *, cl_int *);
	cl_int (*ReleaseKernel)(cl_kernel);
	cl_int (*SetKernelArg)(cl_kernel, cl_uint, size_t, const void *);
	cl_int (*GetKernelWorkGroupInfo)(cl_kernel, cl_device_id, cl_kernel_work_group_info,
					 size_t, void *, size_t *);
	cl_int (*EnqueueNDRangeKernel)(cl_command_queue, cl_kernel, cl_uint, const size_t *,
				       const size_t *, const size_t *, cl_uint, const cl_event *,
				       cl_event *);
	cl_int (*EnqueueWriteBuffer)(cl_command_queue, cl_mem, cl_bool, size_t, size_t,
				     const void *, cl_uint, const cl_event *, cl_event *);
	cl_int (*EnqueueReadBuffer)(cl_command_queue, cl_mem, cl_bool, size_t, size_t, void *,
				    cl_uint, const cl_event *, cl_event *);
	cl_int (*EnqueueFillBuffer)(cl_command_queue, cl_mem, const void *, size_t, size_t,
				    size_t, cl_uint, const cl_event *, cl_event *);
	cl_int (*Finish)(cl_command_queue);
	cl_int (*GetMemObjectInfo)(cl_mem, cl_mem_info, size_t, void *, size_t *);
};

/* One OpenCL device as kred sees it. */
struct kred__cl_device {
	cl_platform_id platform;
	cl_device_id id;
	char platform_name[128];
	char name[128];
	char driver[64];
	char version[128];
	cl_device_type type;
	cl_uint compute_units;
	cl_ulong global_mem, local_mem, max_alloc;
	size_t max_wg;
	int fp64;
	int is_pocl;
};

/* Loads libOpenCL and lists the devices, once per process (thread-safe). Returns the
 * API, or NULL with the reason in why. $KRED_OPENCL_LIBRARY, when set, names the library
 * to open instead of the ICD loader (a path, or "none" to act as if there were none).
 * pocl_cache_dir, when not NULL and not "", is where POCL keeps its kernel cache unless
 * $POCL_CACHE_DIR says otherwise: POCL reads that variable once, when the first OpenCL
 * call initialises it, so only the first call's value counts. */
const struct kred__cl_api *kred__cl_load(const char *pocl_cache_dir, char *why, size_t whylen);
/* The devices found by kred__cl_load, in platform then device order ("opencl:N"). */
int kred__cl_devices(const struct kred__cl_device **devices);
/* The cl_context of devices[index] that every kred context on that device shares, made at
 * the first call and kept for the life of the process, retained once more for the caller
 * (who releases it); NULL with the error in *e if it cannot be made. One per device
 * rather than one per kred context: an implementation may attach costly state to a
 * cl_context (POCL loads its kernel library, about 0.5 s, into each one, before its first
 * build), and buffers made through one kred context are then valid in another. */
cl_context kred__cl_device_context(int index, cl_int *e);
/* "CL_OUT_OF_RESOURCES" and the like. */
const char *kred__cl_errname(cl_int e);

#endif
