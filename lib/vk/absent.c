/* The Vulkan backend of a kred built without the Vulkan headers: listed, so that `kred
 * devices` and `-b vulkan` say why it is missing rather than that it is unknown. */
#include "internal.h"

static kred_status absent_open(kred_context *ctx, const char *device, void **state,
			       struct kred__error *err)
{
	*state = NULL;
	return kred__fail(err, KRED_EBACKEND, -1,
			  "this kred was built without the Vulkan headers (install "
			  "libvulkan-dev and rebuild)");
}

static void absent_close(void *state)
{
}

static const char *absent_describe(void *state)
{
	return "vulkan";
}

static kred_status absent_compile(void *state, struct kred_reduction *r, void **module,
				  struct kred__error *err)
{
	return kred__fail(err, KRED_EBACKEND, -1, "no Vulkan backend in this build");
}

static kred_status absent_run(void *state, void *module, const struct kred_reduction *r,
			      int64_t nx, int64_t ny, const void *const *args, void *out,
			      struct kred__error *err)
{
	return kred__fail(err, KRED_EBACKEND, -1, "no Vulkan backend in this build");
}

/* No device, so "vulkan:all" says why by opening: memory stays NULL, for a backend that
 * never opens. */
static int absent_device_count(void)
{
	return 0;
}

const struct kred_backend kred__backend_vulkan = {
	.version = KRED__BACKEND_VERSION,
	.name = "vulkan",
	.open = absent_open,
	.close = absent_close,
	.describe = absent_describe,
	.compile = absent_compile,
	.run = absent_run,
	.device_count = absent_device_count,
};
