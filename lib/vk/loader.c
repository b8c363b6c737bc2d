/* The Vulkan loader opened at run time, the instance shared by the open contexts of a
 * process (reference-counted), and its device list. */
#define _GNU_SOURCE /* dl_iterate_phdr */
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader.h"

#define MAX_DEVICES 16

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void *lib;	/* dlopen'ed once and kept: unloading ICDs is not safe */
static PFN_vkGetInstanceProcAddr get_proc;
static struct kred__vk_api api;
static struct kred__vk_device devices[MAX_DEVICES];
static int n_devices;
static int refs;

static int open_library(char *why, size_t whylen)
{
	const char *env = getenv("KRED_VULKAN_LIBRARY");
	const char *name = env && *env ? env : "libvulkan.so.1";

	if (lib)
		return 0;
	lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		/* dlerror names the file */
		snprintf(why, whylen, "no Vulkan loader (%s; install libvulkan1 and a driver "
			 "such as mesa-vulkan-drivers)", dlerror());
		return -1;
	}
	get_proc = (PFN_vkGetInstanceProcAddr)dlsym(lib, "vkGetInstanceProcAddr");
	if (!get_proc) {
		snprintf(why, whylen, "%s has no vkGetInstanceProcAddr", name);
		dlclose(lib);
		lib = NULL;
		return -1;
	}
	return 0;
}

/* The shared objects of the process, by name, as dl_iterate_phdr lists them. */
struct objects {
	char **names;
	int n, cap;
};

static int add_object(struct dl_phdr_info *info, size_t size, void *data)
{
	struct objects *o = data;

	if (!info->dlpi_name || !info->dlpi_name[0])
		return 0;
	if (o->n == o->cap) {
		int cap = o->cap ? 2 * o->cap : 64;
		char **names = realloc(o->names, (size_t)cap * sizeof(*names));

		if (!names)
			return 1;
		o->names = names;
		o->cap = cap;
	}
	o->names[o->n] = strdup(info->dlpi_name);
	if (!o->names[o->n])
		return 1;
	o->n++;
	return 0;
}

static void free_objects(struct objects *o)
{
	for (int k = 0; k < o->n; k++)
		free(o->names[k]);
	free(o->names);
	memset(o, 0, sizeof(*o));
}

/*
 * Keeps loaded for good every shared object that was loaded since before was taken: the
 * driver (ICD) that vkCreateInstance brought in, and its libraries. The Vulkan loader
 * unloads the driver at vkDestroyInstance, but drivers leave threads behind that still
 * run its code (lavapipe's), and whatever they allocated is then reported by
 * LeakSanitizer against "<unknown module>", where no suppression naming the driver can
 * match it. Pinned, a driver's code stays mapped while its threads live, and a later
 * instance finds it loaded. Objects loaded by others before are left alone.
 */
static void pin_new_objects(const struct objects *before)
{
	struct objects after = { 0 };

	dl_iterate_phdr(add_object, &after);
	for (int k = 0; k < after.n; k++) {
		int seen = 0;
		void *dl;

		for (int m = 0; m < before->n && !seen; m++)
			seen = !strcmp(before->names[m], after.names[k]);
		if (seen)
			continue;
		dl = dlopen(after.names[k], RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
		if (dl)
			dlclose(dl);
	}
	free_objects(&after);
}

static int queue_family(VkPhysicalDevice pd)
{
	VkQueueFamilyProperties q[16];
	uint32_t n = 16;
	int best = -1;

	api.GetPhysicalDeviceQueueFamilyProperties(pd, &n, q);
	/* A compute-only family, where there is one, is the one meant for compute work. */
	for (uint32_t k = 0; k < n; k++) {
		if (!(q[k].queueFlags & VK_QUEUE_COMPUTE_BIT) || q[k].queueCount == 0)
			continue;
		if (best < 0 || !(q[k].queueFlags & VK_QUEUE_GRAPHICS_BIT))
			best = (int)k;
		if (!(q[k].queueFlags & VK_QUEUE_GRAPHICS_BIT))
			break;
	}
	return best;
}

static void describe_device(struct kred__vk_device *d)
{
	VkPhysicalDeviceFeatures f;
	VkFormatProperties fp;
	int qf;

	api.GetPhysicalDeviceProperties(d->pd, &d->props);
	api.GetPhysicalDeviceMemoryProperties(d->pd, &d->mem);
	api.GetPhysicalDeviceFeatures(d->pd, &f);
	d->fp64 = f.shaderFloat64 == VK_TRUE;
	d->max_alloc = 1u << 30; /* what Vulkan 1.1 guarantees */
	snprintf(d->driver_name, sizeof(d->driver_name), "%s", "");
	snprintf(d->driver_info, sizeof(d->driver_info), "%s", "");
	if (api.GetPhysicalDeviceProperties2 && d->props.apiVersion >= VK_API_VERSION_1_1) {
		VkPhysicalDeviceDriverProperties drv = {
			.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES,
		};
		VkPhysicalDeviceMaintenance3Properties m3 = {
			.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES,
		};
		VkPhysicalDeviceProperties2 p2 = {
			.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
			.pNext = &m3,
		};

		/* The driver's name and version say which compiler turns SPIR-V into code. */
		if (d->props.apiVersion >= VK_API_VERSION_1_2)
			m3.pNext = &drv;
		api.GetPhysicalDeviceProperties2(d->pd, &p2);
		if (m3.maxMemoryAllocationSize)
			d->max_alloc = m3.maxMemoryAllocationSize;
		if (d->props.apiVersion >= VK_API_VERSION_1_2) {
			d->driver_id = drv.driverID;
			memcpy(d->driver_name, drv.driverName, sizeof(d->driver_name));
			memcpy(d->driver_info, drv.driverInfo, sizeof(d->driver_info));
			d->driver_name[sizeof(d->driver_name) - 1] = 0;
			d->driver_info[sizeof(d->driver_info) - 1] = 0;
		}
	}
	qf = queue_family(d->pd);
	d->queue_family = qf < 0 ? UINT32_MAX : (uint32_t)qf;
	api.GetPhysicalDeviceFormatProperties(d->pd, VK_FORMAT_R32G32B32A32_SFLOAT, &fp);
	d->texel_f32 = (fp.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT) != 0;
	api.GetPhysicalDeviceFormatProperties(d->pd, VK_FORMAT_R32G32B32A32_UINT, &fp);
	d->texel_u32 = (fp.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT) != 0;
}

/* Creates the instance and fills api and devices; 0, or -1 with why. */
static int create_instance(char *why, size_t whylen)
{
	PFN_vkCreateInstance create;
	PFN_vkEnumerateInstanceVersion version;
	VkPhysicalDevice pds[MAX_DEVICES];
	uint32_t n = MAX_DEVICES, v = VK_API_VERSION_1_0;
	VkResult res;
	int missing = 0;

	create = (PFN_vkCreateInstance)get_proc(NULL, "vkCreateInstance");
	version = (PFN_vkEnumerateInstanceVersion)get_proc(NULL, "vkEnumerateInstanceVersion");
	if (!create) {
		snprintf(why, whylen, "the Vulkan loader has no vkCreateInstance");
		return -1;
	}
	if (version && version(&v) != VK_SUCCESS)
		v = VK_API_VERSION_1_0;
	if (v < VK_API_VERSION_1_1) {
		snprintf(why, whylen, "the Vulkan loader is version %u.%u; kred needs 1.1",
			 VK_API_VERSION_MAJOR(v), VK_API_VERSION_MINOR(v));
		return -1;
	}
	{
		VkApplicationInfo app = {
			.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
			.pApplicationName = "kred",
			.pEngineName = "kred",
			.engineVersion = (uint32_t)kred_version_number(),
			.apiVersion = v >= VK_API_VERSION_1_2 ? VK_API_VERSION_1_2
							      : VK_API_VERSION_1_1,
		};
		VkInstanceCreateInfo ci = {
			.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
			.pApplicationInfo = &app,
		};

		memset(&api, 0, sizeof(api));
		api.api_version = app.apiVersion;
		res = create(&ci, NULL, &api.instance);
		if (res != VK_SUCCESS) {
			snprintf(why, whylen, "vkCreateInstance failed: %s%s",
				 kred__vk_result_name(res),
				 res == VK_ERROR_INCOMPATIBLE_DRIVER
					 ? " (no Vulkan driver is installed: install "
					   "mesa-vulkan-drivers, or a GPU vendor's driver)"
					 : "");
			return -1;
		}
	}
#define LOAD(name)                                                                        \
	do {                                                                              \
		api.name = (PFN_vk##name)get_proc(api.instance, "vk" #name);              \
		if (!api.name && !missing) {                                              \
			missing = 1;                                                      \
			snprintf(why, whylen, "the Vulkan loader lacks vk%s", #name);     \
		}                                                                         \
	} while (0);
	KRED__VK_FUNCS(LOAD)
#undef LOAD
	if (missing) {
		if (api.DestroyInstance)
			api.DestroyInstance(api.instance, NULL);
		return -1;
	}
	res = api.EnumeratePhysicalDevices(api.instance, &n, pds);
	if ((res != VK_SUCCESS && res != VK_INCOMPLETE) || n == 0) {
		snprintf(why, whylen, "the Vulkan instance has no device (%s)",
			 res == VK_SUCCESS ? "no driver found one" : kred__vk_result_name(res));
		api.DestroyInstance(api.instance, NULL);
		return -1;
	}
	n_devices = (int)n;
	for (int k = 0; k < n_devices; k++) {
		memset(&devices[k], 0, sizeof(devices[k]));
		devices[k].pd = pds[k];
		describe_device(&devices[k]);
	}
	return 0;
}

const struct kred__vk_api *kred__vk_acquire(char *why, size_t whylen)
{
	const struct kred__vk_api *out = NULL;

	pthread_mutex_lock(&lock);
	if (refs == 0 && open_library(why, whylen) == 0) {
		struct objects before = { 0 };

		dl_iterate_phdr(add_object, &before);
		if (create_instance(why, whylen) == 0)
			out = &api;
		pin_new_objects(&before);
		free_objects(&before);
	} else if (refs > 0) {
		out = &api;
	}
	if (out)
		refs++;
	pthread_mutex_unlock(&lock);
	return out;
}

void kred__vk_release(void)
{
	pthread_mutex_lock(&lock);
	if (refs > 0 && --refs == 0) {
		api.DestroyInstance(api.instance, NULL);
		api.instance = VK_NULL_HANDLE;
		n_devices = 0;
	}
	pthread_mutex_unlock(&lock);
}

int kred__vk_devices(const struct kred__vk_device **out)
{
	*out = devices;
	return n_devices;
}

const char *kred__vk_type_name(VkPhysicalDeviceType t)
{
	switch (t) {
	case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated GPU";
	case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete GPU";
	case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual GPU";
	case VK_PHYSICAL_DEVICE_TYPE_CPU: return "CPU";
	default: return "other";
	}
}

const char *kred__vk_result_name(VkResult r)
{
	switch (r) {
#define E(x) case x: return #x;
	E(VK_SUCCESS) E(VK_NOT_READY) E(VK_TIMEOUT) E(VK_INCOMPLETE)
	E(VK_ERROR_OUT_OF_HOST_MEMORY) E(VK_ERROR_OUT_OF_DEVICE_MEMORY)
	E(VK_ERROR_INITIALIZATION_FAILED) E(VK_ERROR_DEVICE_LOST)
	E(VK_ERROR_MEMORY_MAP_FAILED) E(VK_ERROR_LAYER_NOT_PRESENT)
	E(VK_ERROR_EXTENSION_NOT_PRESENT) E(VK_ERROR_FEATURE_NOT_PRESENT)
	E(VK_ERROR_INCOMPATIBLE_DRIVER) E(VK_ERROR_TOO_MANY_OBJECTS)
	E(VK_ERROR_FORMAT_NOT_SUPPORTED) E(VK_ERROR_FRAGMENTED_POOL)
	E(VK_ERROR_OUT_OF_POOL_MEMORY) E(VK_ERROR_INVALID_SHADER_NV)
	E(VK_ERROR_UNKNOWN)
#undef E
	default: return "VkResult error";
	}
}
