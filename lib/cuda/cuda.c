/* The CUDA backend: reductions emitted as CUDA C into kernels/tiled.cl, compiled by NVRTC
 * for the GPU, launched with the driver API in the 1D or 2D scheme on host arrays or on
 * device pointers; without a GPU, a compile-only context that gives sources and PTX. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl/dialect.h"
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

#define MAX_SPLITS 1024
/* The static shared memory a block may have on every CUDA GPU. */
#define SHARED_MEM 49152

enum { SCR_ROW, SCR_COL, SCR_PRM, SCR_OUT, SCR_PARTS, N_SCRATCH };

struct scratch {
	CUdeviceptr p;
	size_t size;
};

struct cu_state {
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
	kred_scheme scheme;
	size_t mem_cap;			   /* bytes the partial states may take */
	struct scratch scratch[N_SCRATCH];
};

struct cu_module {
	struct kred__layout l;
	struct kred__tiled_shape shape;
	CUmodule mod; /* NULL in a compile-only context */
	CUfunction reduce, merge, pack, sum_rows;
	int nst;
	size_t size; /* bytes per value */
};

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

static kred_scheme scheme_of(const kred_context *ctx)
{
	const char *env = getenv("KRED_SCHEME");

	if (ctx && ctx->opt.scheme != KRED_SCHEME_AUTO)
		return ctx->opt.scheme;
	if (env && !strcmp(env, "1d"))
		return KRED_SCHEME_1D;
	if (env && !strcmp(env, "2d"))
		return KRED_SCHEME_2D;
	return KRED_SCHEME_AUTO;
}

static int floor_pow2(int n)
{
	int p = 1;

	while (p * 2 <= n && p < 1024)
		p *= 2;
	return p;
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
	st->scheme = scheme_of(ctx);
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
static void module_shape(const struct cu_state *st, const struct kred_reduction *r,
			 const struct kred__layout *l, struct kred__tiled_shape *sh)
{
	size_t size = r->dtype == KRED_FLOAT64 ? 8 : 4, per_col = (size_t)l->width[KRED__SIDE_COL];
	size_t room = (size_t)(st->dev && st->dev->shared_mem ? st->dev->shared_mem
							       : SHARED_MEM) / 2;

	sh->wg = 128;
	sh->rpw = 1;
	sh->tj = 128;
	sh->local_tiles = 1;
	if (st->dev && st->dev->max_threads > 0 && st->dev->max_threads < sh->wg)
		sh->wg = floor_pow2(st->dev->max_threads);
	if (per_col && room / (per_col * size) < (size_t)sh->tj) {
		size_t cols = room / (per_col * size);

		/* not one column fits (a Vj of thousands of values): read them in place */
		sh->tj = cols > 0 ? (int)cols : 1;
		sh->local_tiles = cols > 0;
	}
}

static void module_release(const struct cu_state *st, struct cu_module *m)
{
	if (m->mod)
		st->cu->ModuleUnload(m->mod);
	m->mod = NULL;
	m->reduce = m->merge = m->pack = m->sum_rows = NULL;
}

/* Loads an image into m; KRED_EBUILD with the driver's log when it refuses it. */
static kred_status module_load(const struct cu_state *st, kred_context *ctx, struct cu_module *m,
			       const char *image, struct kred__error *err)
{
	char log[4096];
	int opts[2] = { CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES };
	void *vals[2] = { log, (void *)(uintptr_t)sizeof(log) };
	struct {
		CUfunction *f;
		const char *name;
	} fs[] = { { &m->reduce, "kr_reduce" }, { &m->merge, "kr_merge_parts" },
		   { &m->pack, "kr_pack" }, { &m->sum_rows, "kr_sum_rows" } };
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
	for (size_t k = 0; k < sizeof(fs) / sizeof(fs[0]); k++) {
		e = st->cu->ModuleGetFunction(fs[k].f, m->mod, fs[k].name);
		if (e != CUDA_SUCCESS)
			return cu_fail(err, "cuModuleGetFunction", e);
	}
	return KRED_OK;
}

static kred_status module_build(struct cu_state *st, struct kred_reduction *r, struct cu_module *m,
				struct kred__error *err)
{
	char *src = NULL, *image = NULL;
	size_t len = 0;
	int hit = 0;
	kred_status s;

	s = kred__tiled_source(&kred__dialect_cuda, r, &m->l, &m->shape, &src, err);
	if (s)
		return s;
	s = kred__cu_compile(st->nv, r->ctx, &st->cache, 1, st->driver_version, src, &st->target,
			     &image, &len, &hit, err);
	if (!s) {
		s = module_load(st, r->ctx, m, image, err);
		if (s && hit) {
			/* A cached image the driver refuses: compile it again (which replaces
			 * the file) before giving up. */
			kred__log("cuda: the cached kernel does not load: compiling it again");
			module_release(st, m);
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
	kred__free(src);
	return s;
}

static void cu_module_free(void *state, void *module)
{
	struct cu_state *st = state;
	struct cu_module *m = module;
	struct kred__error e;

	if (!m)
		return;
	kred__error_clear(&e);
	if (m->mod && enter(st, &e) == KRED_OK) {
		module_release(st, m);
		leave(st);
	}
	kred__layout_free(&m->l);
	kred__free(m);
}

static kred_status cu_compile(void *state, struct kred_reduction *r, void **module,
			      struct kred__error *err)
{
	struct cu_state *st = state;
	struct cu_module *m;
	kred_status s;

	*module = NULL;
	m = kred__calloc(1, sizeof(*m));
	if (!m)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	s = kred__layout_make(r, &m->l, err);
	if (s)
		goto fail;
	m->nst = kred__emit_nstate(r);
	m->size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	module_shape(st, r, &m->l, &m->shape);
	/* Compile-only: NVRTC runs when kred_reduction_ptx asks for an architecture. */
	if (!st->cu) {
		*module = m;
		return KRED_OK;
	}
	s = enter(st, err);
	if (s)
		goto fail;
	for (int tries = 0;; tries++) {
		int max = 0;

		s = module_build(st, r, m, err);
		if (s)
			break;
		if (st->cu->FuncGetAttribute(&max, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
					     m->reduce) != CUDA_SUCCESS ||
		    max <= 0 || max >= m->shape.wg || tries == 2)
			break;
		/* Too many registers for this block size on this GPU: smaller blocks. */
		kred__log("cuda: kr_reduce fits %d threads per block, not %d: recompiling", max,
			  m->shape.wg);
		module_release(st, m);
		m->shape.wg = floor_pow2(max);
		if (m->shape.tj > m->shape.wg)
			m->shape.tj = m->shape.wg;
	}
	if (s)
		module_release(st, m);
	leave(st);
	if (s)
		goto fail;
	*module = m;
	return KRED_OK;
fail:
	kred__layout_free(&m->l);
	kred__free(m);
	return s;
}

static kred_status cu_source(void *state, const struct kred_reduction *r, char **out,
			     struct kred__error *err)
{
	const struct cu_state *st = state;
	const struct cu_module *m = r->module;
	struct kred__layout l = { 0 };
	struct kred__tiled_shape sh;
	kred_status s;

	if (m)
		return kred__tiled_source(&kred__dialect_cuda, r, &m->l, &m->shape, out, err);
	s = kred__layout_make(r, &l, err);
	if (s)
		return s;
	module_shape(st, r, &l, &sh);
	s = kred__tiled_source(&kred__dialect_cuda, r, &l, &sh, out, err);
	kred__layout_free(&l);
	return s;
}

/* ---- device memory */

/* A scratch buffer of at least bytes (bytes > 0), grown when too small. */
static kred_status scratch_get(struct cu_state *st, int k, size_t bytes, CUdeviceptr *p,
			       struct kred__error *err)
{
	struct scratch *sc = &st->scratch[k];
	CUresult e;

	if (sc->size < bytes) {
		if (sc->p) {
			/* Launches that read it may still be queued. */
			st->cu->CtxSynchronize();
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
	*p = sc->p;
	return KRED_OK;
}

static kred_status mem_alloc(const struct cu_state *st, size_t bytes, CUdeviceptr *p,
			     struct kred__error *err)
{
	CUresult e;

	*p = 0;
	if (bytes == 0)
		return KRED_OK;
	e = st->cu->MemAlloc(p, bytes);
	if (e != CUDA_SUCCESS) {
		*p = 0;
		return cu_fail(err, "cuMemAlloc", e);
	}
	return KRED_OK;
}

static void mem_free(const struct cu_state *st, CUdeviceptr p)
{
	if (p)
		st->cu->MemFree(p);
}

/* ---- launching */

static kred_status launch_kernel(const struct cu_state *st, CUfunction f, const char *name,
				 int64_t gx, int64_t gy, int bx, void **params,
				 struct kred__error *err)
{
	CUresult e;

	if (gx <= 0 || gx > INT_MAX || gy <= 0 || gy > 65535)
		return kred__fail(err, KRED_EOVERFLOW, -1, "cuda: %s: a grid of %lld x %lld "
				  "blocks is too large", name, (long long)gx, (long long)gy);
	e = st->cu->LaunchKernel(f, (unsigned)gx, (unsigned)gy, 1, (unsigned)bx, 1, 1, 0, NULL,
				 params, NULL);
	if (e != CUDA_SUCCESS) {
		char what[64];

		snprintf(what, sizeof(what), "cuLaunchKernel(%s)", name);
		return cu_fail(err, what, e);
	}
	return KRED_OK;
}

/* How many column ranges (blocks along y) the scheme takes for groups row blocks over nc
 * columns. */
static int64_t splits(const struct cu_state *st, const struct cu_module *m, int64_t groups,
		      int64_t nr, int64_t nc)
{
	int64_t target = (int64_t)(st->dev->sm_count > 0 ? st->dev->sm_count : 1) * 8;
	int64_t want = (target + groups - 1) / groups, s;
	size_t bytes_per_split = (size_t)m->nst * (size_t)nr * m->size;

	switch (st->scheme) {
	case KRED_SCHEME_1D:
		return 1;
	case KRED_SCHEME_2D:
		/* Forced: at least two ranges, even of a few columns, so that the merge
		 * always runs. */
		s = want > 2 ? want : 2;
		if (s > (nc + 7) / 8 && s > 2)
			s = (nc + 7) / 8 > 2 ? (nc + 7) / 8 : 2;
		break;
	default:
		/* Enough row blocks already, or too few columns to share out. */
		if (2 * groups >= target)
			return 1;
		s = want;
		if (s > nc / (2 * m->shape.tj))
			s = nc / (2 * m->shape.tj);
		if (s < 2)
			return 1;
		break;
	}
	if (s > MAX_SPLITS)
		s = MAX_SPLITS;
	if (st->dev->max_grid_y > 0 && s > st->dev->max_grid_y)
		s = st->dev->max_grid_y;
	while (s > 2 && (size_t)s * bytes_per_split > st->mem_cap)
		s /= 2;
	return s;
}

/* out (nr x out_dim) = the reduction of the packed sides: the 1D or 2D scheme. */
static kred_status launch(struct cu_state *st, const struct cu_module *m, int64_t nr, int64_t nc,
			  const CUdeviceptr *side, CUdeviceptr out, struct kred__error *err)
{
	const int64_t per_group = (int64_t)m->shape.wg * m->shape.rpw;
	int64_t groups = (nr + per_group - 1) / per_group, ns = splits(st, m, groups, nr, nc);
	CUdeviceptr s0 = side[0], s1 = side[1], s2 = side[2], o = out, parts = 0;
	long long lnr = nr, lnc = nc, lns = ns;
	kred_status s;

	if (ns > 1) {
		s = scratch_get(st, SCR_PARTS, (size_t)ns * (size_t)m->nst * (size_t)nr * m->size,
				&parts, err);
		if (s)
			return s;
	}
	{
		void *params[] = { &s0, &s1, &s2, &o, &parts, &lnr, &lnc };

		s = launch_kernel(st, m->reduce, "kr_reduce", groups, ns, m->shape.wg, params, err);
		if (s)
			return s;
	}
	if (ns > 1) {
		void *params[] = { &parts, &o, &lnr, &lns };

		s = launch_kernel(st, m->merge, "kr_merge_parts",
				  (nr + m->shape.wg - 1) / m->shape.wg, 1, m->shape.wg, params,
				  err);
		if (s)
			return s;
	}
	kred__log("cuda: %lld x %lld, %s scheme, %lld block%s x %lld range%s", (long long)nr,
		  (long long)nc, ns > 1 ? "2D" : "1D", (long long)groups, groups == 1 ? "" : "s",
		  (long long)ns, ns == 1 ? "" : "s");
	return KRED_OK;
}

static void rows_cols(const struct kred_reduction *r, int64_t nx, int64_t ny, int64_t *nr,
		      int64_t *nc)
{
	*nr = r->axis == KRED_REDUCE_J ? nx : ny;
	*nc = r->axis == KRED_REDUCE_J ? ny : nx;
}

/* The only argument of a side when it fills the side's packed row by itself, else -1. */
static int alone_on(const struct cu_module *m, const struct kred_reduction *r, int side)
{
	int alone = -1, count = 0;

	for (int p = 0; p < m->l.n_args; p++) {
		if (m->l.side[p] == side) {
			alone = p;
			count++;
		}
	}
	return count == 1 && r->args[alone].dim == m->l.width[side] ? alone : -1;
}

/* The arguments of one side packed rows x width on the host; the argument itself when
 * it is alone there. *owned is what to free. */
static const void *pack_host(const struct cu_module *m, const struct kred_reduction *r, int side,
			     int64_t rows, const void *const *args, void **owned)
{
	int width = m->l.width[side], alone = alone_on(m, r, side);
	char *dst;

	*owned = NULL;
	if (alone >= 0)
		return args[alone];
	dst = kred__malloc((size_t)rows * (size_t)width * m->size);
	if (!dst)
		return NULL;
	for (int p = 0; p < m->l.n_args; p++) {
		const char *src = args[p];
		size_t d = (size_t)r->args[p].dim * m->size, off = (size_t)m->l.offset[p] * m->size;

		if (m->l.side[p] != side)
			continue;
		for (int64_t i = 0; i < rows; i++)
			memcpy(dst + (size_t)i * (size_t)width * m->size + off,
			       src + (size_t)i * d, d);
	}
	*owned = dst;
	return dst;
}

static kred_status no_gpu(const struct cu_state *st, struct kred__error *err)
{
	return kred__fail(err, KRED_EBACKEND, -1, "cuda: no GPU to run on (%s): this context "
			  "only compiles (kred_reduction_source, kred_reduction_ptx)", st->why);
}

static kred_status cu_run(void *state, void *module, const struct kred_reduction *r, int64_t nx,
			  int64_t ny, const void *const *args, void *out, struct kred__error *err)
{
	struct cu_state *st = state;
	const struct cu_module *m = module;
	CUdeviceptr side[3] = { 0, 0, 0 }, obuf = 0;
	int64_t nr, nc, rows[3];
	size_t out_bytes;
	kred_status s;
	CUresult e;

	if (!st->cu)
		return no_gpu(st, err);
	rows_cols(r, nx, ny, &nr, &nc);
	if (nr == 0)
		return KRED_OK;
	rows[KRED__SIDE_ROW] = nr;
	rows[KRED__SIDE_COL] = nc;
	rows[KRED__SIDE_PRM] = 1;
	s = enter(st, err);
	if (s)
		return s;
	for (int k = 0; k < 3; k++) {
		size_t bytes = (size_t)rows[k] * (size_t)m->l.width[k] * m->size;
		void *owned = NULL;
		const void *host;

		if (bytes == 0)
			continue;
		host = pack_host(m, r, k, rows[k], args, &owned);
		if (!host) {
			s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
			goto done;
		}
		s = scratch_get(st, SCR_ROW + k, bytes, &side[k], err);
		if (!s) {
			e = st->cu->MemcpyHtoD(side[k], host, bytes);
			if (e != CUDA_SUCCESS)
				s = cu_fail(err, "cuMemcpyHtoD", e);
		}
		kred__free(owned);
		if (s)
			goto done;
	}
	out_bytes = (size_t)nr * (size_t)r->out_dim * m->size;
	s = scratch_get(st, SCR_OUT, out_bytes, &obuf, err);
	if (!s)
		s = launch(st, m, nr, nc, side, obuf, err);
	if (!s) {
		/* Synchronous: also where a failure inside a kernel shows. */
		e = st->cu->MemcpyDtoH(out, obuf, out_bytes);
		if (e != CUDA_SUCCESS)
			s = cu_fail(err, "cuMemcpyDtoH", e);
	}
done:
	leave(st);
	return s;
}

/* ---- runs on data already on the GPU */

/* The pointer of one side: the argument's own when it is alone there, else a scratch
 * buffer that kr_pack fills. */
static kred_status pack_device(struct cu_state *st, const struct cu_module *m,
			       const struct kred_reduction *r, int side, int64_t rows,
			       const CUdeviceptr *ptrs, CUdeviceptr *buf, struct kred__error *err)
{
	int width = m->l.width[side], alone = alone_on(m, r, side);
	kred_status s;

	*buf = 0;
	if (width == 0 || rows == 0)
		return KRED_OK;
	if (alone >= 0) {
		*buf = ptrs[alone];
		return KRED_OK;
	}
	s = scratch_get(st, SCR_ROW + side, (size_t)rows * (size_t)width * m->size, buf, err);
	if (s)
		return s;
	for (int p = 0; p < m->l.n_args; p++) {
		CUdeviceptr src = ptrs[p], dst = *buf;
		long long lrows = rows;
		int dim = r->args[p].dim, w = width, off = m->l.offset[p];
		void *params[] = { &src, &dst, &lrows, &dim, &w, &off };

		if (m->l.side[p] != side)
			continue;
		s = launch_kernel(st, m->pack, "kr_pack",
				  (rows * dim + m->shape.wg - 1) / m->shape.wg, 1, m->shape.wg,
				  params, err);
		if (s)
			return s;
	}
	return KRED_OK;
}

static kred_status device_plain(struct cu_state *st, const struct kred_reduction *r, int64_t nx,
				int64_t ny, const CUdeviceptr *ptrs, CUdeviceptr out,
				struct kred__error *err)
{
	const struct cu_module *m = r->module;
	CUdeviceptr side[3] = { 0, 0, 0 };
	int64_t nr, nc, rows[3];
	kred_status s = KRED_OK;

	rows_cols(r, nx, ny, &nr, &nc);
	if (nr == 0)
		return KRED_OK;
	rows[KRED__SIDE_ROW] = nr;
	rows[KRED__SIDE_COL] = nc;
	rows[KRED__SIDE_PRM] = 1;
	for (int k = 0; k < 3 && !s; k++)
		s = pack_device(st, m, r, k, rows[k], ptrs, &side[k], err);
	if (!s)
		s = launch(st, m, nr, nc, side, out, err);
	return s;
}

/* kred_reduction_run's run_inner on device pointers: the auxiliary reduction first, then
 * the reduction, then the row sum of a parameter's gradient. */
static kred_status device_run(struct cu_state *st, const struct kred_reduction *r, int64_t nx,
			      int64_t ny, const CUdeviceptr *ptrs, CUdeviceptr out,
			      struct kred__error *err)
{
	const struct cu_module *m = r->module;
	CUdeviceptr *ptrs2 = NULL, pre_out = 0, rows_out = 0;
	kred_status s = KRED_OK;

	if (r->pre) {
		int64_t rows = r->pre->axis == KRED_REDUCE_J ? nx : ny;

		ptrs2 = kred__calloc((size_t)r->n_args, sizeof(*ptrs2));
		if (!ptrs2)
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		s = mem_alloc(st, (size_t)rows * (size_t)r->pre->out_dim * m->size, &pre_out, err);
		if (!s)
			s = device_run(st, r->pre, nx, ny, ptrs, pre_out, err);
		if (s)
			goto done;
		memcpy(ptrs2, ptrs, sizeof(*ptrs2) * (size_t)(r->n_args - 1));
		ptrs2[r->n_args - 1] = pre_out;
		ptrs = ptrs2;
	}
	if (r->pm_sum) {
		int64_t rows = r->axis == KRED_REDUCE_J ? nx : ny;
		long long n = rows;
		int d = r->out_dim;
		CUdeviceptr o = out;
		void *params[] = { &rows_out, &o, &n, &d };

		s = mem_alloc(st, (size_t)rows * (size_t)d * m->size, &rows_out, err);
		if (!s)
			s = device_plain(st, r, nx, ny, ptrs, rows_out, err);
		/* One block: it sums with n = 0 too, giving zeros. */
		if (!s)
			s = launch_kernel(st, m->sum_rows, "kr_sum_rows", 1, 1, m->shape.wg, params,
					  err);
	} else {
		s = device_plain(st, r, nx, ny, ptrs, out, err);
	}
done:
	/* The kernels that use them are done before they go. */
	if (pre_out || rows_out)
		st->cu->CtxSynchronize();
	mem_free(st, pre_out);
	mem_free(st, rows_out);
	kred__free(ptrs2);
	return s;
}

/* bytes = rows * dim * size, or -1 on overflow. */
static int64_t bytes_of(int64_t rows, int64_t dim, int64_t size)
{
	if (rows < 0 || dim < 0 || (dim && rows > INT64_MAX / dim / size))
		return -1;
	return rows * dim * size;
}

/* Checks that p is device memory of this context with at least need bytes from p on. */
static kred_status check_ptr(const struct cu_state *st, CUdeviceptr p, int64_t need,
			     const char *what, struct kred__error *err)
{
	CUcontext c = NULL;
	CUdeviceptr base = 0;
	size_t size = 0;

	if (st->cu->PointerGetAttribute(&c, CU_POINTER_ATTRIBUTE_CONTEXT, p) != CUDA_SUCCESS ||
	    st->cu->MemGetAddressRange(&base, &size, p) != CUDA_SUCCESS)
		return kred__fail(err, KRED_EINVAL, -1, "%s (0x%llx) is not device memory", what,
				  (unsigned long long)p);
	if (c != st->context)
		return kred__fail(err, KRED_EINVAL, -1, "%s belongs to another CUDA context than "
				  "the primary context of %s", what, st->dev->name);
	if ((uint64_t)(base + size - p) < (uint64_t)need)
		return kred__fail(err, KRED_EINVAL, -1, "%s has %llu bytes from its start to the "
				  "end of its allocation, %lld are needed", what,
				  (unsigned long long)(base + size - p), (long long)need);
	return KRED_OK;
}

kred_status kred_reduction_run_cuda(kred_reduction *r, int64_t nx, int64_t ny,
				    const uint64_t *cu_args, uint64_t cu_out)
{
	struct cu_state *st;
	struct kred__error err;
	int64_t size, rows, need, reduced;
	CUdeviceptr *ptrs = NULL;
	int n_user, entered = 0, n_dev;
	kred_status s;
	CUresult e;

	if (!r)
		return KRED_EINVAL;
	kred__ctx_clear_error(r->ctx);
	kred__error_clear(&err);
	if (kred__multi_inner(r->ctx, &n_dev) == &kred__backend_cuda)
		return kred__ctx_fail(r->ctx, KRED_EBACKEND, "kred_reduction_run_cuda runs on one "
				      "GPU, not with cuda:all (%d GPUs): make the reduction on the "
				      "context of the GPU that holds the pointers (cuda:N)", n_dev);
	if (r->ctx->backend != &kred__backend_cuda)
		return kred__ctx_fail(r->ctx, KRED_EBACKEND, "kred_reduction_run_cuda needs a "
				      "reduction made on a cuda context, not %s",
				      kred_context_backend(r->ctx));
	st = r->ctx->bstate;
	if (!st->cu) {
		no_gpu(st, &err);
		return kred__ctx_set_error(r->ctx, &err, NULL);
	}
	if (nx < 0 || ny < 0)
		return kred__ctx_fail(r->ctx, KRED_EINVAL, "negative size (nx = %lld, ny = %lld)",
				      (long long)nx, (long long)ny);
	size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	n_user = kred_reduction_n_args(r);
	if (n_user && !cu_args)
		return kred__ctx_fail(r->ctx, KRED_EINVAL, "cu_args is NULL but the reduction "
				      "takes %d arguments", n_user);
	ptrs = kred__calloc((size_t)(n_user > 0 ? n_user : 1) + 1, sizeof(*ptrs));
	if (!ptrs)
		return kred__ctx_fail(r->ctx, KRED_ENOMEM, "out of memory");
	s = enter(st, &err);
	if (s)
		goto done;
	entered = 1;
	for (int k = 0; k < n_user; k++) {
		char what[64];

		rows = r->args[k].cat == 0 ? nx : r->args[k].cat == 1 ? ny : 1;
		need = bytes_of(rows, r->args[k].dim, size);
		snprintf(what, sizeof(what), "argument %d", k);
		if (need < 0) {
			s = kred__fail(&err, KRED_EOVERFLOW, -1, "argument %d: %lld x %d values "
				       "overflow", k, (long long)rows, r->args[k].dim);
			goto done;
		}
		ptrs[k] = (CUdeviceptr)cu_args[k];
		if (need == 0)
			continue;
		if (!ptrs[k]) {
			s = kred__fail(&err, KRED_EINVAL, -1, "argument %d is 0", k);
			goto done;
		}
		s = check_ptr(st, ptrs[k], need, what, &err);
		if (s)
			goto done;
	}
	rows = r->pm_sum ? 1 : r->axis == KRED_REDUCE_J ? nx : ny;
	need = bytes_of(rows, r->out_dim, size);
	if (need < 0 || bytes_of(r->axis == KRED_REDUCE_J ? nx : ny, r->out_dim, size) < 0) {
		s = kred__fail(&err, KRED_EOVERFLOW, -1, "output of %lld x %d values overflows",
			       (long long)rows, r->out_dim);
		goto done;
	}
	if (need > 0) {
		if (!cu_out) {
			s = kred__fail(&err, KRED_EINVAL, -1, "cu_out is 0");
			goto done;
		}
		s = check_ptr(st, (CUdeviceptr)cu_out, need, "the output", &err);
		if (s)
			goto done;
	}
	reduced = r->axis == KRED_REDUCE_J ? ny : nx;
	if ((kred__reds[r->red].flags & KRED__RED_INDEX) && r->dtype == KRED_FLOAT32 &&
	    reduced > (1 << 24)) {
		s = kred__fail(&err, KRED_ERANGE, -1, "%s over %lld terms in float32: indices "
			       "above 2^24 are not exact in float32; use float64",
			       kred__reds[r->red].name, (long long)reduced);
		goto done;
	}
	pthread_mutex_lock(&r->ctx->lock); /* the context's runs are serialised */
	s = device_run(st, r, nx, ny, ptrs, (CUdeviceptr)cu_out, &err);
	/* Returns with the work done, so that the caller may use the output on any
	 * stream; a failure inside a kernel shows here. */
	e = st->cu->CtxSynchronize();
	pthread_mutex_unlock(&r->ctx->lock);
	if (!s && e != CUDA_SUCCESS)
		s = cu_fail(&err, "cuCtxSynchronize", e);
done:
	if (entered)
		leave(st);
	kred__free(ptrs);
	if (s)
		kred__ctx_set_error(r->ctx, &err, NULL);
	return s;
}

kred_status kred_context_cuda_handles(kred_context *ctx, int *device, void **cu_context)
{
	const struct cu_state *st;
	int n_dev;

	if (device)
		*device = -1;
	if (cu_context)
		*cu_context = NULL;
	if (!ctx)
		return KRED_EINVAL;
	kred__ctx_clear_error(ctx);
	if (kred__multi_inner(ctx, &n_dev) == &kred__backend_cuda)
		return kred__ctx_fail(ctx, KRED_EBACKEND, "kred_context_cuda_handles gives one "
				      "GPU's handles, not those of cuda:all (%d GPUs): open cuda:N",
				      n_dev);
	if (ctx->backend != &kred__backend_cuda)
		return kred__ctx_fail(ctx, KRED_EBACKEND, "kred_context_cuda_handles needs a cuda "
				      "context, not %s", kred_context_backend(ctx));
	st = ctx->bstate;
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
	if (kred__multi_inner(r->ctx, NULL) == &kred__backend_cuda)
		return kred__ctx_fail(r->ctx, KRED_EBACKEND, "kred_reduction_ptx compiles for one "
				      "GPU, not with cuda:all: make the reduction on cuda:N (or "
				      "cuda:sm_XX, with no GPU)");
	if (r->ctx->backend != &kred__backend_cuda)
		return kred__ctx_fail(r->ctx, KRED_EBACKEND, "kred_reduction_ptx needs a reduction "
				      "made on a cuda context, not %s",
				      kred_context_backend(r->ctx));
	st = r->ctx->bstate;
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
	.compile = cu_compile,
	.run = cu_run,
	.module_free = cu_module_free,
	.source = cu_source,
	.report = cu_report,
	.memory = cu_memory,
	.device_count = cu_device_count,
};
