/* libOpenCL loaded at run time through the ICD loader, and the device list, made once
 * per process. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loader.h"

#define MAX_DEVICES 64

static struct kred__cl_api api;
static struct kred__cl_device devices[MAX_DEVICES];
static cl_context shared[MAX_DEVICES]; /* kred__cl_device_context */
static int n_devices;
static int loaded; /* 1 ok, -1 failed */
static pid_t load_pid; /* the process that initialised OpenCL */
static char load_why[256];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void *sym(void *lib, const char *name, int *missing)
{
	void *p = dlsym(lib, name);

	if (!p && !*missing) {
		*missing = 1;
		snprintf(load_why, sizeof(load_why), "libOpenCL lacks %s", name);
	}
	return p;
}

static void info_str(cl_device_id d, cl_device_info what, char *out, size_t n)
{
	out[0] = 0;
	if (api.GetDeviceInfo(d, what, n, out, NULL) != CL_SUCCESS)
		snprintf(out, n, "?");
	out[n - 1] = 0;
}

static void load(const char *pocl_cache_dir)
{
	static const char *const names[] = { "libOpenCL.so.1", "libOpenCL.so" };
	const char *env = getenv("KRED_OPENCL_LIBRARY");
	void *lib = NULL;
	int missing = 0;
	cl_platform_id platforms[16];
	cl_uint np = 0;

	if (env && *env) {
		if (strcmp(env, "none") != 0)
			lib = dlopen(env, RTLD_NOW | RTLD_LOCAL);
		if (!lib) {
			snprintf(load_why, sizeof(load_why), "no OpenCL library (KRED_OPENCL_LIBRARY="
				 "%s: %s)", env, strcmp(env, "none") ? dlerror() : "disabled");
			loaded = -1;
			return;
		}
	}
	for (size_t k = 0; k < 2 && !lib; k++)
		lib = dlopen(names[k], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		snprintf(load_why, sizeof(load_why), "no OpenCL ICD loader (libOpenCL.so.1: %s)",
			 dlerror());
		loaded = -1;
		return;
	}
	/* Before the first call into OpenCL, which is when POCL reads it. setenv is not
	 * thread-safe against getenv elsewhere; this runs once, under the loader's lock. */
	if (pocl_cache_dir && *pocl_cache_dir)
		setenv("POCL_CACHE_DIR", pocl_cache_dir, 0);
#define LOAD(name) *(void **)&api.name = sym(lib, "cl" #name, &missing)
	LOAD(GetPlatformIDs);
	LOAD(GetPlatformInfo);
	LOAD(GetDeviceIDs);
	LOAD(GetDeviceInfo);
	LOAD(CreateContext);
	LOAD(RetainContext);
	LOAD(ReleaseContext);
	LOAD(CreateCommandQueue);
	LOAD(ReleaseCommandQueue);
	LOAD(CreateBuffer);
	LOAD(ReleaseMemObject);
	LOAD(CreateProgramWithSource);
	LOAD(CreateProgramWithBinary);
	LOAD(BuildProgram);
	LOAD(GetProgramBuildInfo);
	LOAD(GetProgramInfo);
	LOAD(ReleaseProgram);
	LOAD(CreateKernel);
	LOAD(ReleaseKernel);
	LOAD(SetKernelArg);
	LOAD(GetKernelWorkGroupInfo);
	LOAD(EnqueueNDRangeKernel);
	LOAD(EnqueueWriteBuffer);
	LOAD(EnqueueReadBuffer);
	LOAD(EnqueueFillBuffer);
	LOAD(Finish);
	LOAD(GetMemObjectInfo);
#undef LOAD
	if (missing) {
		loaded = -1;
		return; /* the library stays loaded: harmless, and dlclose of ICDs is risky */
	}
	if (api.GetPlatformIDs(16, platforms, &np) != CL_SUCCESS || np == 0) {
		snprintf(load_why, sizeof(load_why),
			 "the OpenCL ICD loader found no platform (is an ICD such as "
			 "pocl-opencl-icd installed?)");
		loaded = -1;
		return;
	}
	for (cl_uint p = 0; p < np && p < 16; p++) {
		cl_device_id ids[MAX_DEVICES];
		cl_uint nd = 0;
		char pname[128] = "";

		api.GetPlatformInfo(platforms[p], CL_PLATFORM_NAME, sizeof(pname), pname, NULL);
		pname[sizeof(pname) - 1] = 0;
		if (api.GetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, ids, &nd) !=
		    CL_SUCCESS)
			continue;
		for (cl_uint d = 0; d < nd && n_devices < MAX_DEVICES; d++) {
			struct kred__cl_device *dev = &devices[n_devices++];
			cl_device_fp_config fp = 0;

			dev->platform = platforms[p];
			dev->id = ids[d];
			snprintf(dev->platform_name, sizeof(dev->platform_name), "%s", pname);
			info_str(ids[d], CL_DEVICE_NAME, dev->name, sizeof(dev->name));
			info_str(ids[d], CL_DRIVER_VERSION, dev->driver, sizeof(dev->driver));
			info_str(ids[d], CL_DEVICE_VERSION, dev->version, sizeof(dev->version));
			api.GetDeviceInfo(ids[d], CL_DEVICE_TYPE, sizeof(dev->type), &dev->type, NULL);
			api.GetDeviceInfo(ids[d], CL_DEVICE_MAX_COMPUTE_UNITS,
					  sizeof(dev->compute_units), &dev->compute_units, NULL);
			api.GetDeviceInfo(ids[d], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof(dev->global_mem),
					  &dev->global_mem, NULL);
			api.GetDeviceInfo(ids[d], CL_DEVICE_LOCAL_MEM_SIZE, sizeof(dev->local_mem),
					  &dev->local_mem, NULL);
			api.GetDeviceInfo(ids[d], CL_DEVICE_MAX_MEM_ALLOC_SIZE,
					  sizeof(dev->max_alloc), &dev->max_alloc, NULL);
			api.GetDeviceInfo(ids[d], CL_DEVICE_MAX_WORK_GROUP_SIZE,
					  sizeof(dev->max_wg), &dev->max_wg, NULL);
			api.GetDeviceInfo(ids[d], CL_DEVICE_DOUBLE_FP_CONFIG, sizeof(fp), &fp, NULL);
			dev->fp64 = fp != 0;
			dev->is_pocl = strstr(pname, "Portable Computing Language") != NULL ||
				       strstr(dev->version, "PoCL") != NULL;
		}
	}
	if (n_devices == 0) {
		snprintf(load_why, sizeof(load_why), "OpenCL platforms found, but no device");
		loaded = -1;
		return;
	}
	loaded = 1;
	load_pid = getpid();
}

const struct kred__cl_api *kred__cl_load(const char *pocl_cache_dir, char *why, size_t whylen)
{
	pthread_mutex_lock(&lock);
	if (!loaded)
		load(pocl_cache_dir);
	pthread_mutex_unlock(&lock);
	/* An OpenCL platform does not survive fork: POCL's worker threads stay in the parent
	 * and the child's first kernel would wait for them forever. Say so instead. */
	if (loaded > 0 && getpid() != load_pid) {
		snprintf(why, whylen, "OpenCL was initialised in a parent process (pid %ld) "
			 "before fork(); it cannot be used in the child: initialise it after "
			 "forking, or exec", (long)load_pid);
		return NULL;
	}
	if (loaded < 0) {
		snprintf(why, whylen, "%s", load_why);
		return NULL;
	}
	return &api;
}

int kred__cl_devices(const struct kred__cl_device **out)
{
	*out = devices;
	return loaded > 0 && getpid() == load_pid ? n_devices : 0;
}

cl_context kred__cl_device_context(int index, cl_int *e)
{
	cl_context_properties props[3];
	cl_context c;

	*e = CL_SUCCESS;
	if (loaded <= 0 || getpid() != load_pid || index < 0 || index >= n_devices) {
		*e = CL_INVALID_DEVICE;
		return NULL;
	}
	pthread_mutex_lock(&lock);
	if (!shared[index]) {
		props[0] = CL_CONTEXT_PLATFORM;
		props[1] = (cl_context_properties)devices[index].platform;
		props[2] = 0;
		shared[index] = api.CreateContext(props, 1, &devices[index].id, NULL, NULL, e);
	}
	c = shared[index];
	if (c && (*e = api.RetainContext(c)) != CL_SUCCESS)
		c = NULL;
	pthread_mutex_unlock(&lock);
	return c;
}

const char *kred__cl_errname(cl_int e)
{
	switch (e) {
#define E(x) case x: return #x;
	E(CL_SUCCESS) E(CL_DEVICE_NOT_FOUND) E(CL_DEVICE_NOT_AVAILABLE)
	E(CL_COMPILER_NOT_AVAILABLE) E(CL_MEM_OBJECT_ALLOCATION_FAILURE)
	E(CL_OUT_OF_RESOURCES) E(CL_OUT_OF_HOST_MEMORY) E(CL_BUILD_PROGRAM_FAILURE)
	E(CL_INVALID_VALUE) E(CL_INVALID_DEVICE) E(CL_INVALID_CONTEXT)
	E(CL_INVALID_COMMAND_QUEUE) E(CL_INVALID_MEM_OBJECT) E(CL_INVALID_BINARY)
	E(CL_INVALID_BUILD_OPTIONS) E(CL_INVALID_PROGRAM) E(CL_INVALID_KERNEL_NAME)
	E(CL_INVALID_KERNEL) E(CL_INVALID_ARG_INDEX) E(CL_INVALID_ARG_VALUE)
	E(CL_INVALID_ARG_SIZE) E(CL_INVALID_KERNEL_ARGS) E(CL_INVALID_WORK_DIMENSION)
	E(CL_INVALID_WORK_GROUP_SIZE) E(CL_INVALID_WORK_ITEM_SIZE)
	E(CL_INVALID_GLOBAL_OFFSET) E(CL_INVALID_BUFFER_SIZE)
	E(CL_INVALID_GLOBAL_WORK_SIZE)
#undef E
	default: return "CL error";
	}
}
