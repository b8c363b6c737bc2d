/* The CUDA backend: reductions emitted as CUDA C into kernels/tiled.cl, compiled by NVRTC
 * for the GPU, launched with the driver API in the 1D or 2D scheme on host arrays or on
 * device pointers; without a GPU, a compile-only context that gives sources and PTX. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "compile.h"
#include "loader.h"

/*
 * Contexts. "cuda:N" opens GPU N in its primary context (the one the CUDA runtime uses, so
 * that pointers from cudaMalloc, CuPy or PyTorch are valid here); "cuda" opens GPU 0, and
 * where there is no GPU, or no driver, a compile-only context: its reductions have a
 * source and give PTX (kred_reduction_ptx), and running one is KRED_EBACKEND.
 * "cuda:sm_80" is a compile-only context for sm_80 that never touches the driver, GPU or
 * not. auto never takes a compile-only context (is_gpu says no). Every call into the
 * driver makes the primary context current and restores the caller's after.
 *
 * Modules. The source is compiled by NVRTC into a cubin for the GPU's architecture, or
 * into PTX for the newest architecture NVRTC knows when the GPU is newer than NVRTC (the
 * driver compiles the PTX); the result is cached on disk (lib/cuda/compile.c).
 *
 * Launches go on the legacy default stream (0), which orders them after the work of
 * every blocking stream of the context; each call returns once its output is written.
 * Device memory is plain cuMemAlloc (never managed memory); the buffers a run needs
 * (packed sides, output, partial states) are kept from run to run and grown on need.
 */

/* The static shared memory a block may have on every CUDA GPU. */
#define SHARED_MEM 49152

#define N_SCRATCH KRED__N_MEM_ROLES

struct scratch {
	CUdeviceptr p;
	size_t size;
};

struct cu_state {
	struct kred__device layer;	   /* first: what lib/device.c plans runs with */
	const struct kred__cu_api *cu;	   /* NULL: compile-only */
	const struct kred__cu_device *dev; /* NULL: compile-only */
	int ordinal;
	CUcontext context;		   /* the GPU's primary context, retained */
	const struct kred__nvrtc_api *nv;  /* at open with a GPU, else on first need */
	struct kred__cu_target target;	   /* what modules are compiled for */
	int arch;			   /* "cuda:sm_80": 80, kred_reduction_ptx's default */
	int driver_version;
	char why[400];			   /* compile-only: why there is no GPU */
	char *desc;
	struct kred__cache cache;
	size_t mem_cap;			   /* bytes the partial states may take */
	struct scratch scratch[N_SCRATCH];
	/* The caller's stream during kred_reduction_run_cuda_stream (set under the
	 * context's lock), else NULL: the legacy default stream. */
	CUstream stream;
};

struct cu_module {
	struct kred__dmodule d; /* first: what lib/device.c reads */
	CUmodule mod;		/* NULL in a compile-only context */
	CUfunction k[KRED__N_KERNELS];
};

static void layer_make(struct cu_state *st, const kred_context *ctx);

/* Waits for kred's work: the caller's stream, or the whole context on the legacy
 * default stream (the work of the context's blocking streams included, as always). */
static CUresult cu_sync(const struct cu_state *st)
{
	return st->stream ? st->cu->StreamSynchronize(st->stream) : st->cu->CtxSynchronize();
}

static kred_status cu_fail(struct kred__error *err, const char *what, CUresult e)
{
	char t[160];

	kred__cu_errtext(e, t, sizeof(t));
	return kred__fail(err, KRED_EDEVICE, -1, "cuda: %s: %s%s", what, t,
			  e == CUDA_ERROR_OUT_OF_MEMORY ? ": out of device memory" : "");
}

/* The primary context made current for the calls that follow, until leave(). */
static kred_status enter(const struct cu_state *st, struct kred__error *err)
{
	CUresult e = st->cu->CtxPushCurrent(st->context);

	return e == CUDA_SUCCESS ? KRED_OK : cu_fail(err, "cuCtxPushCurrent", e);
}

static void leave(const struct cu_state *st)
{
	CUcontext c;

	st->cu->CtxPopCurrent(&c);
}

/* ---- opening */

static void scratch_free(struct cu_state *st)
{
	for (int k = 0; k < N_SCRATCH; k++) {
		if (st->scratch[k].p)
			st->cu->MemFree(st->scratch[k].p);
		st->scratch[k].p = 0;
		st->scratch[k].size = 0;
	}
}

static void cu_close(void *state)
{
	struct cu_state *st = state;

	if (!st)
		return;
	if (st->context) {
		struct kred__error e;

		kred__error_clear(&e);
		if (enter(st, &e) == KRED_OK) {
			scratch_free(st);
			leave(st);
		}
		st->cu->PrimaryCtxRelease(st->dev->id);
	}
	kred__cache_close(&st->cache);
	kred__free(st->desc);
	kred__free(st);
}

/* The GPU index of "N", or -1. */
static int parse_index(const char *s)
{
	char *end;
	long k = strtol(s, &end, 10);

	if (end == s || *end || k < 0 || k > INT_MAX)
		return -1;
	return (int)k;
}

static kred_status open_gpu(struct cu_state *st, const struct kred__cu_api *cu, int index,
			    struct kred__error *err)
{
	const struct kred__cu_device *devs;
	struct kred__buf b = { 0 };
	char why[512];
	int n = kred__cu_devices(&devs), arch;
	CUresult e;

	if (index >= n) {
		for (int d = 0; d < n; d++)
			kred__buf_printf(&b, "%s%d = %s", d ? ", " : "", d, devs[d].name);
		kred__fail(err, KRED_EBACKEND, -1, "no CUDA device %d (this machine has %d: %s)",
			   index, n, b.p ? b.p : "");
		kred__buf_free(&b);
		return err->status;
	}
	st->cu = cu;
	st->dev = &devs[index];
	st->ordinal = index;
	st->driver_version = kred__cu_driver_version();
	arch = st->dev->major * 10 + st->dev->minor;
	st->nv = kred__nvrtc_load(why, sizeof(why));
	if (!st->nv)
		return kred__fail(err, KRED_EBACKEND, -1, "cuda: %s has no compiler: %s",
				  st->dev->name, why);
	/* A cubin or PTX from a newer toolkit than the driver's does not load. */
	if (st->driver_version / 1000 < st->nv->major)
		return kred__fail(err, KRED_EBACKEND, -1, "cuda: the driver (CUDA %d.%d) is older "
				  "than NVRTC %d.%d (%s), whose code it cannot load: set "
				  "KRED_NVRTC_LIBRARY to the libnvrtc of CUDA %d",
				  st->driver_version / 1000, st->driver_version % 1000 / 10,
				  st->nv->major, st->nv->minor, st->nv->path,
				  st->driver_version / 1000);
	if (kred__cu_device_target(st->nv, arch, &st->target, err))
		return err->status;
	e = cu->PrimaryCtxRetain(&st->context, st->dev->id);
	if (e != CUDA_SUCCESS) {
		kred__cu_errtext(e, why, sizeof(why));
		st->context = NULL;
		return kred__fail(err, KRED_EBACKEND, -1, "cuda: cannot open %s: "
				  "cuDevicePrimaryCtxRetain: %s", st->dev->name, why);
	}
	st->mem_cap = st->dev->total_mem / 4;
	kred__buf_printf(&b, "cuda:%d:%s (sm_%d)", index, st->dev->name, arch);
	st->desc = kred__buf_take(&b);
	if (!st->desc)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	return KRED_OK;
}

static kred_status cu_open(kred_context *ctx, const char *device, void **state,
			   struct kred__error *err)
{
	const struct kred__cu_api *cu;
	struct kred__buf b = { 0 };
	struct cu_state *st;
	char why[320];
	int index = 0;

	*state = NULL;
	if (device && *device) {
		index = parse_index(device);
		if (index < 0 && kred__cu_arch_parse(device) < 0)
			return kred__fail(err, KRED_EBACKEND, -1, "no CUDA device '%s' (cuda:N "
					  "takes the GPU's index, cuda:sm_80 an architecture to "
					  "compile for)", device);
	}
	st = kred__calloc(1, sizeof(*st));
	if (!st)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	st->cache.wanted = ctx && ctx->cache_dir ? ctx->cache_dir : "";
	if (index < 0) {
		/* An architecture: compile-only by request. */
		st->arch = kred__cu_arch_parse(device);
		snprintf(st->why, sizeof(st->why), "cuda:sm_%d is a compile-only context",
			 st->arch);
		kred__buf_printf(&b, "cuda:compile-only:sm_%d", st->arch);
		st->desc = kred__buf_take(&b);
		if (!st->desc) {
			kred__fail(err, KRED_ENOMEM, -1, "out of memory");
			goto fail;
		}
		layer_make(st, ctx);
		*state = st;
		return KRED_OK;
	}
	cu = kred__cu_load(why, sizeof(why));
	if (cu) {
		if (open_gpu(st, cu, index, err))
			goto fail;
		if (ctx && ctx->opt.device_memory > 0 &&
		    (uint64_t)ctx->opt.device_memory / 4 < (uint64_t)st->mem_cap)
			st->mem_cap = (size_t)(ctx->opt.device_memory / 4);
		layer_make(st, ctx);
		*state = st;
		return KRED_OK;
	}
	if (device && *device) {
		kred__fail(err, KRED_EBACKEND, -1, "no CUDA device %d: %s", index, why);
		goto fail;
	}
	/* No GPU: what needs none (sources, PTX) still works. */
	snprintf(st->why, sizeof(st->why), "%s", why);
	kred__buf_printf(&b, "cuda:compile-only (no GPU: %s)", why);
	st->desc = kred__buf_take(&b);
	if (!st->desc) {
		kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto fail;
	}
	layer_make(st, ctx);
	*state = st;
	return KRED_OK;
fail:
	cu_close(st);
	return err->status;
}

static const char *cu_describe(void *state)
{
	return ((struct cu_state *)state)->desc;
}

static int cu_is_gpu(void *state)
{
	return ((struct cu_state *)state)->cu != NULL;
}

/* The GPU's memory (cuDeviceTotalMem, what cuMemGetInfo calls total); 0 in a compile-only
 * context, which runs nothing. CUDA has no limit on one allocation below that. */
static int64_t cu_memory(void *state)
{
	const struct cu_state *st = state;

	if (!st->cu)
		return 0;
	return st->dev->total_mem > (size_t)INT64_MAX ? INT64_MAX : (int64_t)st->dev->total_mem;
}

/* "cuda:0" to "cuda:N-1": the GPUs the driver lists (none without a driver). */
static int cu_device_count(void)
{
	const struct kred__cu_device *devs;
	char why[320];

	if (!kred__cu_load(why, sizeof(why)))
		return 0;
	return kred__cu_devices(&devs);
}

/* ---- modules */

/* The reduction's launch shape: a tile of columns that fits in half the shared memory
 * (the same in a compile-only context, so that its source is the GPU's). */
static void cu_shape(void *state, const struct kred_reduction *r, const struct kred__layout *l,
		     struct kred__tiled_shape *sh)
{
	const struct cu_state *st = state;
	size_t size = r->dtype == KRED_FLOAT64 ? 8 : 4, per_col = (size_t)l->width[KRED__SIDE_COL];
	size_t room = (size_t)(st->dev && st->dev->shared_mem ? st->dev->shared_mem
							       : SHARED_MEM) / 2;

	sh->wg = 128;
	sh->rpw = 1;
	sh->tj = 128;
	sh->local_tiles = 1;
	sh->room = (int)room;
	if (st->dev && st->dev->max_threads > 0 && st->dev->max_threads < sh->wg)
		sh->wg = kred__device_pow2(st->dev->max_threads);
	if (per_col && room / (per_col * size) < (size_t)sh->tj) {
		size_t cols = room / (per_col * size);

		/* not one column fits (a Vj of thousands of values): read them in place */
		sh->tj = cols > 0 ? (int)cols : 1;
		sh->local_tiles = cols > 0;
	}
}

static void cu_unload(void *state, void *module)
{
	const struct cu_state *st = state;
	struct cu_module *m = module;

	if (m->mod)
		st->cu->ModuleUnload(m->mod);
	m->mod = NULL;
	memset(m->k, 0, sizeof(m->k));
}

/* Loads an image into m; KRED_EBUILD with the driver's log when it refuses it. */
static kred_status module_load(const struct cu_state *st, kred_context *ctx, struct cu_module *m,
			       const char *image, struct kred__error *err)
{
	char log[4096];
	int opts[2] = { CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES };
	void *vals[2] = { log, (void *)(uintptr_t)sizeof(log) };
	CUresult e;

	log[0] = 0;
	e = st->cu->ModuleLoadDataEx(&m->mod, image, 2, opts, vals);
	if (e != CUDA_SUCCESS) {
		char t[160];

		m->mod = NULL;
		log[sizeof(log) - 1] = 0;
		if (ctx)
			kred__ctx_set_log(ctx, log);
		kred__cu_errtext(e, t, sizeof(t));
		return kred__fail(err, e == CUDA_ERROR_OUT_OF_MEMORY ? KRED_EDEVICE : KRED_EBUILD,
				  -1, "cuda: the driver cannot load the kernel for sm_%d: %s",
				  st->target.arch, t);
	}
	for (int k = 0; k < KRED__N_KERNELS; k++) {
		e = st->cu->ModuleGetFunction(&m->k[k], m->mod, kred__kernel_names[k]);
		if (e != CUDA_SUCCESS)
			return cu_fail(err, "cuModuleGetFunction", e);
	}
	return KRED_OK;
}

static kred_status cu_build(void *state, const struct kred_reduction *r, const char *src,
			    void *module, struct kred__error *err)
{
	struct cu_state *st = state;
	struct cu_module *m = module;
	char *image = NULL;
	size_t len = 0;
	int hit = 0;
	kred_status s;

	s = kred__cu_compile(st->nv, r->ctx, &st->cache, 1, st->driver_version, src, &st->target,
			     &image, &len, &hit, err);
	if (!s) {
		s = module_load(st, r->ctx, m, image, err);
		if (s && hit) {
			/* A cached image the driver refuses: compile it again (which replaces
			 * the file) before giving up. */
			kred__log("cuda: the cached kernel does not load: compiling it again");
			cu_unload(st, m);
			kred__free(image);
			image = NULL;
			kred__error_clear(err);
			s = kred__cu_compile(st->nv, r->ctx, &st->cache, 0, st->driver_version, src,
					     &st->target, &image, &len, &hit, err);
			if (!s)
				s = module_load(st, r->ctx, m, image, err);
		}
	}
	kred__free(image);
	return s;
}

/* The largest block kernel k runs at (CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK); 0 when
 * unknown. */
static int64_t cu_max_group(void *state, const void *module, enum kred__kernel k)
{
	const struct cu_state *st = state;
	const struct cu_module *m = module;
	int n = 0;

	if (st->cu->FuncGetAttribute(&n, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, m->k[k]) !=
	    CUDA_SUCCESS)
		return 0;
	return n > 0 ? n : 0;
}

/* ---- the device layer's primitives (lib/device.h) */

/* A buffer of at least bytes (bytes > 0) for role: the role's scratch buffer, kept from
 * run to run and grown on need, or for KRED__MEM_OWN a new one. */
static kred_status cu_alloc(void *state, int role, size_t bytes, const void *init, int read_only,
			    kred__dmem *out, struct kred__error *err)
{
	struct cu_state *st = state;
	CUdeviceptr p = 0;
	CUresult e;

	(void)read_only;
	if (role == KRED__MEM_OWN) {
		e = st->cu->MemAlloc(&p, bytes);
		if (e != CUDA_SUCCESS)
			return cu_fail(err, "cuMemAlloc", e);
	} else {
		struct scratch *sc = &st->scratch[role];

		if (sc->size < bytes) {
			if (sc->p) {
				/* Launches that read it may still be queued. */
				cu_sync(st);
				st->cu->MemFree(sc->p);
			}
			sc->p = 0;
			sc->size = 0;
			e = st->cu->MemAlloc(&sc->p, bytes);
			if (e != CUDA_SUCCESS) {
				sc->p = 0;
				return cu_fail(err, "cuMemAlloc", e);
			}
			sc->size = bytes;
		}
		p = sc->p;
	}
	if (init) {
		/* On kred's stream, after the launches queued before it; from pageable memory,
		 * init is staged before the call returns. */
		e = st->cu->MemcpyHtoDAsync(p, init, bytes, st->stream);
		if (e != CUDA_SUCCESS) {
			if (role == KRED__MEM_OWN)
				st->cu->MemFree(p);
			return cu_fail(err, "cuMemcpyHtoDAsync", e);
		}
	}
	*out = (kred__dmem)p;
	return KRED_OK;
}

/* Scratch buffers stay; a buffer of the run's own goes once the launches that use it
 * are done. */
static void cu_release(void *state, int role, kred__dmem m)
{
	struct cu_state *st = state;

	if (role != KRED__MEM_OWN)
		return;
	cu_sync(st);
	st->cu->MemFree((CUdeviceptr)m);
}

static kred_status cu_read(void *state, kred__dmem m, void *host, size_t bytes,
			   struct kred__error *err)
{
	struct cu_state *st = state;
	/* On kred's stream, then waited for: also where a failure inside a kernel shows. */
	CUresult e = st->cu->MemcpyDtoHAsync(host, (CUdeviceptr)m, bytes, st->stream);

	if (e != CUDA_SUCCESS)
		return cu_fail(err, "cuMemcpyDtoHAsync", e);
	e = st->cu->StreamSynchronize(st->stream);
	return e == CUDA_SUCCESS ? KRED_OK : cu_fail(err, "cuStreamSynchronize", e);
}

static kred_status cu_launch(void *state, const void *module, enum kred__kernel k, int64_t gx,
			     int64_t gy, int n, const struct kred__karg *args,
			     struct kred__error *err)
{
	struct cu_state *st = state;
	const struct cu_module *m = module;
	const char *name = kred__kernel_names[k];
	/* The values, in the kernel's types, and pointers to them (cuLaunchKernel's). */
	CUdeviceptr mems[10];
	long long longs[10];
	int ints[10];
	void *params[10];
	CUresult e;

	if (n > 10 || gx <= 0 || gx > INT_MAX || gy <= 0 || gy > 65535)
		return kred__fail(err, KRED_EOVERFLOW, -1, "cuda: %s: a grid of %lld x %lld "
				  "blocks is too large", name, (long long)gx, (long long)gy);
	for (int i = 0; i < n; i++) {
		switch (args[i].type) {
		case KRED__ARG_MEM:
			mems[i] = (CUdeviceptr)args[i].v.mem;
			params[i] = &mems[i];
			break;
		case KRED__ARG_LONG:
			longs[i] = args[i].v.l;
			params[i] = &longs[i];
			break;
		default:
			ints[i] = args[i].v.i;
			params[i] = &ints[i];
			break;
		}
	}
	e = st->cu->LaunchKernel(m->k[k], (unsigned)gx, (unsigned)gy, 1,
				 (unsigned)m->d.shape.wg, 1, 1, 0, st->stream, params, NULL);
	if (e != CUDA_SUCCESS) {
		char what[64];

		snprintf(what, sizeof(what), "cuLaunchKernel(%s)", name);
		return cu_fail(err, what, e);
	}
	return KRED_OK;
}

/* Checks that p is device memory of this context with at least need bytes from p on. */
static kred_status cu_check(void *state, kred__dmem m, int64_t need, const char *what,
			    struct kred__error *err)
{
	const struct cu_state *st = state;
	CUdeviceptr p = (CUdeviceptr)m, base = 0;
	CUcontext c = NULL;
	size_t size = 0;

	if (st->cu->PointerGetAttribute(&c, CU_POINTER_ATTRIBUTE_CONTEXT, p) != CUDA_SUCCESS ||
	    st->cu->MemGetAddressRange(&base, &size, p) != CUDA_SUCCESS)
		return kred__fail(err, KRED_EINVAL, -1, "%s (0x%llx) is not device memory", what,
				  (unsigned long long)p);
	/* Memory of the stream-ordered allocator (cuMemAllocAsync) and of cuMemCreate
	 * belongs to a device, not to a context: then the device must be this one. */
	if (!c) {
		int ordinal = -1;

		if (st->cu->PointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p) !=
			    CUDA_SUCCESS ||
		    ordinal != st->ordinal)
			return kred__fail(err, KRED_EINVAL, -1, "%s is memory of GPU %d, not of %s "
					  "(GPU %d)", what, ordinal, st->dev->name, st->ordinal);
	} else if (c != st->context) {
		return kred__fail(err, KRED_EINVAL, -1, "%s belongs to another CUDA context than "
				  "the primary context of %s", what, st->dev->name);
	}
	if ((uint64_t)(base + size - p) < (uint64_t)need)
		return kred__fail(err, KRED_EINVAL, -1, "%s has %llu bytes from its start to the "
				  "end of its allocation, %lld are needed", what,
				  (unsigned long long)(base + size - p), (long long)need);
	return KRED_OK;
}

static kred_status cu_finish(void *state, struct kred__error *err)
{
	struct cu_state *st = state;
	CUresult e = cu_sync(st);

	return e == CUDA_SUCCESS ? KRED_OK
				 : cu_fail(err, st->stream ? "cuStreamSynchronize" : "cuCtxSynchronize",
					   e);
}

static void cu_queue(void *state, void *queue)
{
	((struct cu_state *)state)->stream = (CUstream)queue;
}

static kred_status no_gpu(const struct cu_state *st, struct kred__error *err)
{
	return kred__fail(err, KRED_EBACKEND, -1, "cuda: no GPU to run on (%s): this context "
			  "only compiles (kred_reduction_source, kred_reduction_ptx)", st->why);
}

static kred_status cu_begin(void *state, struct kred__error *err)
{
	const struct cu_state *st = state;

	return st->cu ? enter(st, err) : no_gpu(st, err);
}

static void cu_end(void *state)
{
	leave(state);
}

static const struct kred__device_ops cu_ops = {
	.alloc = cu_alloc,
	.release = cu_release,
	.read = cu_read,
	.launch = cu_launch,
	.check = cu_check,
	.finish = cu_finish,
	.queue = cu_queue,
	.shape = cu_shape,
	.build = cu_build,
	.max_group = cu_max_group,
	.unload = cu_unload,
	.begin = cu_begin,
	.end = cu_end,
};

/* What the device layer plans with: 2D when the row blocks fill under half of eight
 * blocks per multiprocessor; the partial states in a quarter of the memory at most. A
 * compile-only context (no GPU) has the layer too, for its modules' shapes and sources. */
static void layer_make(struct cu_state *st, const kred_context *ctx)
{
	st->layer = (struct kred__device){
		.ops = &cu_ops,
		.state = st,
		.name = "cuda",
		.dialect = &kred__dialect_cuda,
		.module_size = sizeof(struct cu_module),
		.compile_only = !st->cu,
		.scheme = kred__device_scheme(ctx),
		.target_groups = (int64_t)(st->dev && st->dev->sm_count > 0 ? st->dev->sm_count
									    : 1) * 8,
		.max_grid_y = st->dev ? st->dev->max_grid_y : 0,
		.parts_cap = st->mem_cap,
		.none = "0",
		.args_name = "cu_args",
		.out_name = "cu_out",
	};
}

/* CU_STREAM_LEGACY and CU_STREAM_PER_THREAD: handles of the calling thread's current
 * context, which kred makes the GPU's primary one. */
#define STREAM_LEGACY ((CUstream)0x1)
#define STREAM_PER_THREAD ((CUstream)0x2)

kred_status kred_reduction_run_cuda(kred_reduction *r, int64_t nx, int64_t ny,
				    const uint64_t *cu_args, uint64_t cu_out)
{
	return kred_reduction_run_cuda_stream(r, nx, ny, cu_args, cu_out, NULL);
}

kred_status kred_reduction_run_cuda_stream(kred_reduction *r, int64_t nx, int64_t ny,
					   const uint64_t *cu_args, uint64_t cu_out, void *stream)
{
	struct cu_state *st;
	struct kred__error err;
	kred__dmem *mems = NULL;
	int n_user;
	kred_status s = KRED_OK;

	if (!r)
		return KRED_EINVAL;
	kred__ctx_clear_error(r->ctx);
	kred__error_clear(&err);
	st = (struct cu_state *)kred__device_of(r->ctx, &kred__backend_cuda,
						"kred_reduction_run_cuda",
						"make the reduction on the context of the GPU that "
						"holds the pointers (cuda:N)");
	if (!st)
		return kred__ctx_error(r->ctx)->status;
	if (!st->cu) {
		no_gpu(st, &err);
		return kred__ctx_set_error(r->ctx, &err, NULL);
	}
	if (stream && stream != STREAM_LEGACY && stream != STREAM_PER_THREAD) {
		CUcontext c = NULL;
		CUresult e = st->cu->StreamGetCtx((CUstream)stream, &c);

		if (e != CUDA_SUCCESS)
			s = kred__fail(&err, KRED_EINVAL, -1, "the stream (%p) is not a CUDA stream "
				       "kred can use: cuStreamGetCtx failed", stream);
		else if (c != st->context)
			s = kred__fail(&err, KRED_EINVAL, -1, "the stream belongs to another CUDA "
				       "context than the primary context of %s", st->dev->name);
		if (s)
			return kred__ctx_set_error(r->ctx, &err, NULL);
	}
	n_user = kred_reduction_n_args(r);
	if (cu_args) {
		mems = kred__calloc((size_t)n_user + 1, sizeof(*mems));
		if (!mems)
			return kred__ctx_fail(r->ctx, KRED_ENOMEM, "out of memory");
		for (int k = 0; k < n_user; k++)
			mems[k] = (kred__dmem)cu_args[k];
	}
	s = kred__device_run_user(&st->layer, r, nx, ny, mems, (kred__dmem)cu_out, stream);
	kred__free(mems);
	return s;
}

kred_status kred_context_cuda_handles(kred_context *ctx, int *device, void **cu_context)
{
	const struct cu_state *st;

	if (device)
		*device = -1;
	if (cu_context)
		*cu_context = NULL;
	if (!ctx)
		return KRED_EINVAL;
	kred__ctx_clear_error(ctx);
	st = (const struct cu_state *)kred__device_of(ctx, &kred__backend_cuda,
						      "kred_context_cuda_handles", "open cuda:N");
	if (!st)
		return kred__ctx_error(ctx)->status;
	if (!st->cu)
		return kred__ctx_fail(ctx, KRED_EBACKEND, "this cuda context has no GPU (%s)",
				      st->why);
	if (device)
		*device = st->ordinal;
	if (cu_context)
		*cu_context = st->context;
	return KRED_OK;
}

/* ---- compiling without a GPU */

kred_status kred_reduction_ptx(kred_reduction *r, const char *arch, char **ptx)
{
	struct cu_state *st;
	struct kred__error err;
	struct kred__cu_target t = { 0, 0 };
	const char *src;
	char why[512], archs[64];
	size_t len = 0;
	int hit = 0;
	kred_status s;

	if (ptx)
		*ptx = NULL;
	if (!r)
		return KRED_EINVAL;
	kred__ctx_clear_error(r->ctx);
	kred__error_clear(&err);
	if (!ptx)
		return kred__ctx_fail(r->ctx, KRED_EINVAL, "kred_reduction_ptx: NULL ptx");
	st = (struct cu_state *)kred__device_of(r->ctx, &kred__backend_cuda, "kred_reduction_ptx",
						"make the reduction on cuda:N (or cuda:sm_XX, with "
						"no GPU)");
	if (!st)
		return kred__ctx_error(r->ctx)->status;
	if (!st->nv) {
		st->nv = kred__nvrtc_load(why, sizeof(why));
		if (!st->nv)
			return kred__ctx_fail(r->ctx, KRED_EBACKEND, "cuda: NVRTC is not "
					      "available: %s", why);
	}
	if (arch) {
		t.arch = kred__cu_arch_parse(arch);
		if (t.arch < 0)
			return kred__ctx_fail(r->ctx, KRED_EINVAL, "'%s' is not a CUDA "
					      "architecture (sm_80, compute_80 or 80)", arch);
	} else {
		/* The GPU's, or the context's, else the oldest NVRTC knows: PTX that runs
		 * on every GPU it knows. */
		t.arch = st->cu ? st->target.arch : st->arch ? st->arch : st->nv->archs[0];
	}
	if (!kred__nvrtc_knows(st->nv, t.arch)) {
		kred__nvrtc_archs(st->nv, archs, sizeof(archs));
		return kred__ctx_fail(r->ctx, KRED_EUNSUPPORTED, "NVRTC %d.%d (%s) compiles for "
				      "%s, not for sm_%d", st->nv->major, st->nv->minor,
				      st->nv->path, archs, t.arch);
	}
	src = kred_reduction_source(r);
	if (!src)
		return kred__ctx_error(r->ctx)->status ? kred__ctx_error(r->ctx)->status
						       : KRED_ENOMEM;
	s = kred__cu_compile(st->nv, r->ctx, NULL, 0, 0, src, &t, ptx, &len, &hit, &err);
	if (s)
		kred__ctx_set_error(r->ctx, &err, NULL);
	return s;
}

/* ---- the device report */

static void cu_report(struct kred__buf *b)
{
	const struct kred__nvrtc_api *nv;
	const struct kred__cu_device *devs;
	char why[320], nvwhy[512], archs[64] = "";
	int n, v;

	nv = kred__nvrtc_load(nvwhy, sizeof(nvwhy));
	if (nv)
		kred__nvrtc_archs(nv, archs, sizeof(archs));
	if (!kred__cu_load(why, sizeof(why))) {
		if (nv)
			kred__buf_printf(b, "cuda: not available (%s); compile-only with NVRTC "
					 "%d.%d (%s, %s): kred source and kred compile -b cuda "
					 "work\n", why, nv->major, nv->minor, archs, nv->path);
		else
			kred__buf_printf(b, "cuda: not available (%s; %s)\n", why, nvwhy);
		return;
	}
	n = kred__cu_devices(&devs);
	v = kred__cu_driver_version();
	if (nv)
		kred__buf_printf(b, "cuda: available: %d GPU%s, driver CUDA %d.%d, NVRTC %d.%d "
				 "(%s, %s)\n", n, n == 1 ? "" : "s", v / 1000, v % 1000 / 10,
				 nv->major, nv->minor, archs, nv->path);
	else
		kred__buf_printf(b, "cuda: not available (%d GPU%s, driver CUDA %d.%d, but %s)\n",
				 n, n == 1 ? "" : "s", v / 1000, v % 1000 / 10, nvwhy);
	for (int k = 0; k < n; k++) {
		const struct kred__cu_device *d = &devs[k];

		kred__buf_printf(b, "  cuda:%d  %s (sm_%d%d, %d multiprocessors, %.1f GiB)\n", k,
				 d->name, d->major, d->minor, d->sm_count,
				 (double)d->total_mem / (1024.0 * 1024.0 * 1024.0));
	}
}

const struct kred_backend kred__backend_cuda = {
	.version = KRED__BACKEND_VERSION,
	.name = "cuda",
	.open = cu_open,
	.close = cu_close,
	.describe = cu_describe,
	.is_gpu = cu_is_gpu,
	.compile = kred__device_compile,
	.run = kred__device_run,
	.module_free = kred__device_module_free,
	.source = kred__device_source,
	.report = cu_report,
	.memory = cu_memory,
	.device_count = cu_device_count,
	.run_ranged = kred__device_run_ranged,
};
