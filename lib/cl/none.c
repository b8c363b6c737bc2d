/* The OpenCL backend of a kred built without the OpenCL headers: it is listed, says why it
 * cannot run, and the cl_mem entry points answer KRED_EBACKEND. */
#include "internal.h"

static kred_status none_open(kred_context *ctx, const char *device, void **state,
			     struct kred__error *err)
{
	*state = NULL;
	return kred__fail(err, KRED_EBACKEND, -1, "OpenCL is not available: this kred was built "
			  "without the OpenCL headers (CL/cl.h)");
}

static void none_close(void *state)
{
}

static const char *none_describe(void *state)
{
	return "opencl";
}

static kred_status none_compile(void *state, struct kred_reduction *r, void **module,
				struct kred__error *err)
{
	return kred__fail(err, KRED_EBACKEND, -1, "OpenCL is not available");
}

static kred_status none_run(void *state, void *module, const struct kred_reduction *r,
			    int64_t nx, int64_t ny, const void *const *args, void *out,
			    struct kred__error *err)
{
	return kred__fail(err, KRED_EBACKEND, -1, "OpenCL is not available");
}

static void none_report(struct kred__buf *b)
{
	kred__buf_puts(b, "opencl: not available (this kred was built without the OpenCL "
		       "headers, CL/cl.h)\n");
}

/* No device, so "opencl:all" says why by opening: memory stays NULL, for a backend that
 * never opens. */
static int none_device_count(void)
{
	return 0;
}

kred_status kred_reduction_run_opencl(kred_reduction *r, int64_t nx, int64_t ny,
				      const void *const *cl_mem_args, void *cl_mem_out)
{
	if (!r)
		return KRED_EINVAL;
	return kred__ctx_fail(r->ctx, KRED_EBACKEND, "OpenCL is not available in this kred");
}

kred_status kred_context_opencl_handles(kred_context *ctx, void **cl_context, void **cl_queue)
{
	if (cl_context)
		*cl_context = NULL;
	if (cl_queue)
		*cl_queue = NULL;
	if (!ctx)
		return KRED_EINVAL;
	return kred__ctx_fail(ctx, KRED_EBACKEND, "OpenCL is not available in this kred");
}

const struct kred_backend kred__backend_opencl = {
	.version = KRED__BACKEND_VERSION,
	.name = "opencl",
	.open = none_open,
	.close = none_close,
	.describe = none_describe,
	.compile = none_compile,
	.run = none_run,
	.report = none_report,
	.device_count = none_device_count,
};
