/* The backend registry (the one place that lists backends), "auto" selection, and the
 * reference backend, which runs the reference evaluator. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* In the order auto tries them: GPUs first (backends whose is_gpu says so), then the
 * backends that have no GPU notion at all (host, then reference). */
const struct kred_backend *const kred__backends[] = {
	&kred__backend_cuda,
	&kred__backend_opencl,
	&kred__backend_vulkan,
	&kred__backend_host,
	&kred__backend_reference,
	NULL,
};

static const struct kred_backend *find_backend(const char *name, size_t len)
{
	for (int k = 0; kred__backends[k]; k++)
		if (strlen(kred__backends[k]->name) == len &&
		    !memcmp(kred__backends[k]->name, name, len))
			return kred__backends[k];
	return NULL;
}

static kred_status open_one(kred_context *ctx, const struct kred_backend *b, const char *device,
			    struct kred__error *err)
{
	void *state = NULL;
	kred_status s = b->open(ctx, device, &state, err);

	if (s)
		return s;
	ctx->backend = b;
	ctx->bstate = state;
	ctx->backend_name = kred__strdup(b->describe(state));
	if (!ctx->backend_name)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	return KRED_OK;
}

static kred_status open_auto(kred_context *ctx, struct kred__error *err)
{
	struct kred__buf why = { 0 };

	for (int pass = 0; pass < 2; pass++) {
		for (int k = 0; kred__backends[k]; k++) {
			const struct kred_backend *b = kred__backends[k];
			struct kred__error e;
			void *state = NULL;

			if ((pass == 0) != (b->is_gpu != NULL))
				continue;
			kred__error_clear(&e);
			if (b->open(ctx, NULL, &state, &e)) {
				if (e.status == KRED_ENOMEM) {
					kred__buf_free(&why);
					return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
				}
				kred__buf_printf(&why, "%s%s: %s", why.len ? "; " : "", b->name,
						 e.msg);
				continue;
			}
			if (pass == 0 && !b->is_gpu(state)) {
				b->close(state);
				continue;
			}
			kred__buf_free(&why);
			ctx->backend = b;
			ctx->bstate = state;
			ctx->backend_name = kred__strdup(b->describe(state));
			if (!ctx->backend_name)
				return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
			return KRED_OK;
		}
	}
	kred__fail(err, KRED_EBACKEND, -1, "no backend can run here (%s)",
		   why.p ? why.p : "none compiled in");
	kred__buf_free(&why);
	return err->status;
}

kred_status kred__backend_open(kred_context *ctx, const char *spec, struct kred__error *err);
kred_status kred__backend_open(kred_context *ctx, const char *spec, struct kred__error *err)
{
	const char *colon = strchr(spec, ':');
	size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
	const struct kred_backend *b;

	if (len == 4 && !memcmp(spec, "auto", 4) && !colon)
		return open_auto(ctx, err);
	b = find_backend(spec, len);
	if (!b) {
		struct kred__buf names = { 0 };

		for (int k = 0; kred__backends[k]; k++)
			kred__buf_printf(&names, "%s%s", k ? ", " : "", kred__backends[k]->name);
		kred__fail(err, KRED_EBACKEND, -1, "unknown backend '%s' (this kred has: auto, %s)",
			   spec, names.p ? names.p : "");
		kred__buf_free(&names);
		return err->status;
	}
	/* "opencl:all": the wrapper of lib/multi.c, told which backend by name. */
	if (colon && !strcmp(colon + 1, "all"))
		return open_one(ctx, &kred__backend_multi, b->name, err);
	return open_one(ctx, b, colon ? colon + 1 : NULL, err);
}

/* ---- the reference backend */

static kred_status ref_open(kred_context *ctx, const char *device, void **state,
			    struct kred__error *err)
{
	if (device && *device)
		return kred__fail(err, KRED_EBACKEND, -1,
				  "the reference backend has no devices (got '%s')", device);
	*state = NULL;
	return KRED_OK;
}

static void ref_close(void *state)
{
}

static const char *ref_describe(void *state)
{
	return "reference";
}

static kred_status ref_compile(void *state, struct kred_reduction *r, void **module,
			       struct kred__error *err)
{
	*module = NULL;
	return KRED_OK;
}

static kred_status ref_run(void *state, void *module, const struct kred_reduction *r,
			   int64_t nx, int64_t ny, const void *const *args, void *out,
			   struct kred__error *err)
{
	return kred__eval_run(r, nx, ny, args, out, err);
}

const struct kred_backend kred__backend_reference = {
	.version = KRED__BACKEND_VERSION,
	.name = "reference",
	.open = ref_open,
	.close = ref_close,
	.describe = ref_describe,
	.compile = ref_compile,
	.run = ref_run,
	.concurrent_run = 1, /* kred__eval_run keeps nothing between runs */
};
