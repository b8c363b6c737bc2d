/* The OpenCL backend: reductions emitted as OpenCL C into kernels/tiled.cl, built for one
 * device, launched in the 1D or 2D scheme on the context's in-order queue, on host arrays
 * or on cl_mem buffers that stay on the device. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "device.h"
#include "loader.h"

/*
 * Programs. POCL keeps its own cache of built kernels (keyed by source and options), and
 * asking it for a program's binary makes it compile one more copy, so on POCL kred builds
 * from source every time and lets that cache answer; its directory is put under kred's
 * cache directory (POCL_CACHE_DIR, unless the user set it). On other platforms kred keeps
 * the binaries itself, as sealed "<key>.clbin" files keyed by kred's version, the
 * platform, the device, its driver and version, the build options and the source.
 * KRED_OPENCL_BINARY_CACHE=1 turns kred's binary cache on for POCL too (tests), =0 off.
 * KRED_OPENCL_OPTIONS adds build options ("-cl-mad-enable"); they are part of the key.
 *
 * Contexts. Every kred context on one device shares that device's cl_context
 * (kred__cl_device_context), and has a queue of its own.
 *
 * Variants. On a GPU a group loads each tile of columns into local memory (one row per
 * work-item). On a CPU device local memory is ordinary memory and a barrier is a loop
 * split in POCL's work-group compiler, so each work-item reads its columns from global
 * memory, with no barrier, for several rows. KRED_OPENCL_TILES=local|global forces one.
 *
 * Schemes. 1D: one range of columns; 2D: the columns split into ranges across groups too,
 * their partial states merged by a second kernel. auto takes 2D when the rows alone make
 * too few groups to fill the device's compute units and the columns are many. The
 * context's scheme option decides; when it is auto, $KRED_SCHEME=1d|2d may force one
 * (how the test suites run every case in both).
 *
 * A process that has used OpenCL cannot use it in a fork()ed child (POCL's worker
 * threads stay in the parent): the loader says so, and auto then goes on to host.
 */

struct cl_state {
	struct kred__device layer; /* first: what lib/device.c plans runs with */
	const struct kred__cl_api *cl;
	const struct kred__cl_device *dev;
	cl_context context;
	cl_command_queue queue;
	char *desc;
	struct kred__cache cache;
	struct kred__tiled_shape shape; /* before the per-reduction adjustments */
	int binary_cache;
	int fp64;      /* the device has fp64 (KRED_OPENCL_NO_FP64=1 says not, for tests) */
	char *options; /* build options: $KRED_OPENCL_OPTIONS, else "" */
};

static void layer_make(struct cl_state *st, const kred_context *ctx);

struct cl_module {
	struct kred__dmodule d; /* first: what lib/device.c reads */
	cl_program program;
	cl_kernel k[KRED__N_KERNELS];
};

static kred_status cl_fail(struct kred__error *err, const char *what, cl_int e)
{
	if (e == CL_MEM_OBJECT_ALLOCATION_FAILURE || e == CL_OUT_OF_RESOURCES ||
	    e == CL_INVALID_BUFFER_SIZE)
		return kred__fail(err, KRED_EDEVICE, -1, "opencl: %s: %s (%d): out of device "
				  "memory or resources", what, kred__cl_errname(e), (int)e);
	return kred__fail(err, KRED_EDEVICE, -1, "opencl: %s: %s (%d)", what, kred__cl_errname(e),
			  (int)e);
}

/* ---- where POCL keeps its kernels */

static int make_dirs(const char *path)
{
	char *p = kred__strdup(path);
	int ok = p != NULL;

	for (char *c = p ? p + 1 : NULL; ok && c && *c; c++) {
		if (*c != '/')
			continue;
		*c = 0;
		ok = mkdir(p, 0700) == 0 || errno == EEXIST;
		*c = '/';
	}
	ok = ok && (mkdir(p, 0700) == 0 || errno == EEXIST) && access(p, W_OK) == 0;
	kred__free(p);
	return ok;
}

/* "<kred cache dir>/pocl" when that can be made, else a private temporary directory,
 * else NULL (POCL then uses its own default); NULL too when the user set POCL_CACHE_DIR. POCL reads its directory once per process, so it follows the process's
 * default cache directory (the rules of lib/context.c), not a context's cache_dir option:
 * that would be whichever context came first, and would put a directory among the files
 * of a cache that kred_context_options.cache_dir says is kred's. */
static char *pocl_cache_dir(void)
{
	struct kred__buf b = { 0 };
	const char *env;
	char *dir;

	if ((env = getenv("KRED_CACHE_DIR")) && *env) {
		kred__buf_printf(&b, "%s/pocl", env);
	} else if ((env = getenv("XDG_CACHE_HOME")) && *env) {
		kred__buf_printf(&b, "%s/kred/pocl", env);
	} else if ((env = getenv("HOME")) && *env) {
		kred__buf_printf(&b, "%s/.cache/kred/pocl", env);
	}
	dir = kred__buf_take(&b);
	if (getenv("POCL_CACHE_DIR")) {
		kred__free(dir);
		return NULL;
	}
	if (dir && !make_dirs(dir)) {
		/* An unwritable cache (a read-only home, another user's directory): POCL
		 * cannot start its devices without a cache of its own, so it gets a private
		 * temporary one, as kred's own files do (lib/cache.c). */
		const char *t = getenv("TMPDIR");
		struct kred__buf p = { 0 };
		char *tmp;

		kred__buf_printf(&p, "%s/kred-pocl-XXXXXX", t && *t ? t : "/tmp");
		tmp = kred__buf_take(&p);
		if (tmp && mkdtemp(tmp)) {
			kred__log("warning: cannot write %s: POCL's cache goes to %s", dir, tmp);
			kred__free(dir);
			return tmp;
		}
		kred__free(tmp);
		kred__free(dir);
		dir = NULL;
	}
	return dir;
}

static const struct kred__cl_api *load(char *why, size_t whylen)
{
	char *dir = pocl_cache_dir();
	const struct kred__cl_api *cl = kred__cl_load(dir, why, whylen);

	kred__free(dir);
	return cl;
}

/* ---- opening a device */

static const char *type_name(cl_device_type t)
{
	if (t & CL_DEVICE_TYPE_GPU)
		return "GPU";
	if (t & CL_DEVICE_TYPE_ACCELERATOR)
		return "accelerator";
	if (t & CL_DEVICE_TYPE_CPU)
		return "CPU";
	return "other";
}

static int is_gpu_device(const struct kred__cl_device *d)
{
	return (d->type & CL_DEVICE_TYPE_GPU) != 0;
}

/* The device's launch shape, before a reduction's own adjustments (tile sizes). */
static void device_shape(const struct kred__cl_device *d, struct kred__tiled_shape *sh)
{
	const char *env = getenv("KRED_OPENCL_TILES");
	int local = !(d->type & (CL_DEVICE_TYPE_CPU));

	if (env && !strcmp(env, "local"))
		local = 1;
	else if (env && !strcmp(env, "global"))
		local = 0;
	if (local) {
		sh->wg = 128;
		sh->rpw = 1;
		sh->tj = 128;
	} else {
		/* POCL runs a group as one task, and the loop its compiler vectorises is
		 * the innermost one: here the loop over a work-item's rows, for each column
		 * loaded. With one row per work-item nothing is vectorised (the plain
		 * kernel's speed); 8 rows run ~8x faster on AVX-512, more bring no more. */
		sh->wg = 64;
		sh->rpw = 8;
		sh->tj = 256;
	}
	sh->local_tiles = local;
	/* Local memory for gram tiles (kernels/tiled.cl), on CPUs too, where it is ordinary
	 * memory; none with KRED_OPENCL_TILES=global (the tests' way to the slots' other
	 * path). Half of it at most: the rest is the compiler's. */
	sh->room = 0;
	if (!(env && !strcmp(env, "global")))
		sh->room = d->local_mem ? (int)(d->local_mem / 2 < (1u << 30) ? d->local_mem / 2
									   : 1u << 30)
					: 16384;
	if (d->max_wg && (size_t)sh->wg > d->max_wg)
		sh->wg = kred__device_pow2(d->max_wg);
}

static void cl_close(void *state)
{
	struct cl_state *st = state;

	if (!st)
		return;
	if (st->queue)
		st->cl->ReleaseCommandQueue(st->queue);
	if (st->context)
		st->cl->ReleaseContext(st->context);
	kred__cache_close(&st->cache);
	kred__free(st->options);
	kred__free(st->desc);
	kred__free(st);
}

static kred_status cl_open(kred_context *ctx, const char *device, void **state,
			   struct kred__error *err)
{
	const struct kred__cl_api *cl;
	const struct kred__cl_device *devs;
	struct kred__buf b = { 0 };
	struct cl_state *st;
	const char *env;
	char why[256];
	int n, index = -1;
	cl_int e = CL_SUCCESS;

	*state = NULL;
	cl = load(why, sizeof(why));
	if (!cl)
		return kred__fail(err, KRED_EBACKEND, -1, "OpenCL is not available: %s", why);
	n = kred__cl_devices(&devs);
	if (device && *device) {
		char *end;
		long k = strtol(device, &end, 10);

		if (*end || end == device || k < 0 || k >= n) {
			for (int d = 0; d < n; d++)
				kred__buf_printf(&b, "%s%d = %s", d ? ", " : "", d, devs[d].name);
			kred__fail(err, KRED_EBACKEND, -1, "no OpenCL device '%s' (this machine has "
				   "%d: %s)", device, n, b.p ? b.p : "");
			kred__buf_free(&b);
			return err->status;
		}
		index = (int)k;
	} else {
		/* The first GPU, else the first device. */
		for (int d = 0; d < n && index < 0; d++)
			if (is_gpu_device(&devs[d]))
				index = d;
		if (index < 0)
			index = 0;
	}
	st = kred__calloc(1, sizeof(*st));
	if (!st)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	st->cl = cl;
	st->dev = &devs[index];
	st->cache.wanted = ctx && ctx->cache_dir ? ctx->cache_dir : "";
	device_shape(st->dev, &st->shape);
	layer_make(st, ctx);
	env = getenv("KRED_OPENCL_BINARY_CACHE");
	st->binary_cache = env && *env ? strcmp(env, "0") != 0 : !st->dev->is_pocl;
	env = getenv("KRED_OPENCL_NO_FP64");
	st->fp64 = st->dev->fp64 && !(env && !strcmp(env, "1"));
	env = getenv("KRED_OPENCL_OPTIONS");
	st->options = kred__strdup(env ? env : "");
	if (!st->options) {
		kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto fail;
	}
	st->context = kred__cl_device_context(index, &e);
	if (!st->context) {
		kred__fail(err, e == CL_OUT_OF_HOST_MEMORY ? KRED_ENOMEM : KRED_EBACKEND, -1,
			   "cannot create an OpenCL context on %s: %s", st->dev->name,
			   kred__cl_errname(e));
		goto fail;
	}
	st->queue = cl->CreateCommandQueue(st->context, st->dev->id, 0, &e);
	if (!st->queue) {
		kred__fail(err, e == CL_OUT_OF_HOST_MEMORY ? KRED_ENOMEM : KRED_EBACKEND, -1,
			   "cannot create an OpenCL queue on %s: %s", st->dev->name,
			   kred__cl_errname(e));
		goto fail;
	}
	kred__buf_printf(&b, "opencl:%s:%s", st->dev->platform_name, st->dev->name);
	st->desc = kred__buf_take(&b);
	if (!st->desc) {
		kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto fail;
	}
	*state = st;
	return KRED_OK;
fail:
	cl_close(st);
	return err->status;
}

static const char *cl_describe(void *state)
{
	return ((struct cl_state *)state)->desc;
}

static int cl_is_gpu(void *state)
{
	return is_gpu_device(((struct cl_state *)state)->dev);
}

/* What a run may use: CL_DEVICE_GLOBAL_MEM_SIZE (on POCL, a CPU device, a part of the
 * host's RAM), but no more than CL_DEVICE_MAX_MEM_ALLOC_SIZE, the most one buffer may
 * hold (POCL 3.1: 1 GiB of 3.8 GiB): each side of a run (its arguments packed) and its
 * output are one buffer each, and the chunked runs keep all of them together within
 * half of what this returns. */
static int64_t cl_memory(void *state)
{
	const struct kred__cl_device *d = ((struct cl_state *)state)->dev;
	cl_ulong mem = d->global_mem;

	if (d->max_alloc && d->max_alloc < mem)
		mem = d->max_alloc;
	return mem > (cl_ulong)INT64_MAX ? INT64_MAX : (int64_t)mem;
}

/* "opencl:0" to "opencl:N-1": the loader's list, made once per process. */
static int cl_device_count(void)
{
	const struct kred__cl_device *devs;
	char why[256];

	if (!load(why, sizeof(why)))
		return 0;
	return kred__cl_devices(&devs);
}

/* ---- building programs */

/* A CPU driver (POCL) keeps the private arrays of a group's work-items (its rows, a
 * column, its states: kernels/tiled.cl) on a thread's stack at once; past this a wide
 * formula would overflow it (D = 4096 in float64 took 16 MB at 64 x 8 rows). */
#define CPU_PRIVATE_MAX (1u << 20)

/* The reduction's launch shape: the device's, with a tile that fits local memory and, on
 * a CPU, groups whose private arrays fit CPU_PRIVATE_MAX (smaller groups, then fewer rows
 * per work-item: for such widths the formula's own loops are what vectorise). */
static void cl_shape(void *state, const struct kred_reduction *r, const struct kred__layout *l,
		     struct kred__tiled_shape *sh)
{
	const struct cl_state *st = state;
	size_t size = r->dtype == KRED_FLOAT64 ? 8 : 4, per_col = (size_t)l->width[KRED__SIDE_COL];
	size_t nst = (size_t)kred__emit_nstate(r);

	int slots[KRED__EMIT_MAX_GRAM][4];
	int grams = kred__emit_gram_slots(&kred__dialect_opencl, r, l, slots);

	*sh = st->shape;
	if (grams && !sh->local_tiles && sh->room) {
		/* Gram tiles in the local memory, which is ordinary memory here, with the
		 * columns' loop innermost (what POCL vectorises): D = 784, 2,000 x 2,000 points,
		 * float32, 0.104 s at 128 x 1 rows against 0.264 s with each column's slots
		 * computed across 8 rows a work-item (kr_gram_column) and 2.2 s in the formula. */
		sh->wg = 128;
		sh->rpw = 1;
		if (st->dev->max_wg && (size_t)sh->wg > st->dev->max_wg)
			sh->wg = kred__device_pow2(st->dev->max_wg);
	}
	if (st->dev->type & CL_DEVICE_TYPE_CPU) {
#define PRIV(rpw) (size * ((size_t)l->width[KRED__SIDE_ROW] * (rpw) + per_col + \
			   (size_t)l->width[KRED__SIDE_PRM] + nst * (rpw)))
		while (sh->wg > 8 && (size_t)sh->wg * PRIV(sh->rpw) > CPU_PRIVATE_MAX)
			sh->wg /= 2;
		while (sh->rpw > 1 && (size_t)sh->wg * PRIV(sh->rpw) > CPU_PRIVATE_MAX)
			sh->rpw /= 2;
		while (sh->wg > 1 && (size_t)sh->wg * PRIV(sh->rpw) > CPU_PRIVATE_MAX)
			sh->wg /= 2;
#undef PRIV
	}
	if (sh->local_tiles && per_col) {
		size_t cols = (size_t)sh->room / (per_col * size);

		if (cols < (size_t)sh->tj)
			sh->tj = cols > 0 ? (int)cols : 1;
		/* not one column fits (a Vj of thousands of values): read them in place */
		sh->local_tiles = cols > 0;
	}
}

static char *build_log(const struct cl_state *st, cl_program prog)
{
	size_t n = 0;
	char *log;

	if (st->cl->GetProgramBuildInfo(prog, st->dev->id, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) !=
	    CL_SUCCESS)
		return NULL;
	log = kred__malloc(n + 1);
	if (!log)
		return NULL;
	if (st->cl->GetProgramBuildInfo(prog, st->dev->id, CL_PROGRAM_BUILD_LOG, n, log, NULL) !=
	    CL_SUCCESS)
		n = 0;
	log[n] = 0;
	return log;
}

/* What a program's binary depends on but its source: kred, the device, its driver and
 * the build options. */
static void identity_hash(const struct cl_state *st, const char *opts, struct kred__hash *h)
{
	kred__hash_init(h);
	kred__hash_str(h, kred_version());
	kred__hash_str(h, "opencl");
	kred__hash_str(h, st->dev->platform_name);
	kred__hash_str(h, st->dev->name);
	kred__hash_str(h, st->dev->driver);
	kred__hash_str(h, st->dev->version);
	kred__hash_str(h, opts);
}

/* The identity sealed into a cached binary (kred__cache_seal). */
static uint64_t program_identity(const struct cl_state *st, const char *opts)
{
	struct kred__hash h;

	identity_hash(st, opts, &h);
	return kred__cache_identity(&h);
}

/* The cache key of a program: everything its binary depends on. */
static void program_key(const struct cl_state *st, const char *src, const char *opts,
			char key[33])
{
	struct kred__hash h;

	identity_hash(st, opts, &h);
	kred__hash_str(&h, src);
	kred__hash_hex(&h, key);
}

static char *clbin_path(const char *dir, const char *key)
{
	struct kred__buf b = { 0 };

	kred__buf_printf(&b, "%s/%s.clbin", dir, key);
	return kred__buf_take(&b);
}

/* The sealed binary at path without its seal, or NULL. */
static unsigned char *read_binary(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *p = NULL;
	long n;

	if (!f)
		return NULL;
	/* 32 bytes of seal (lib/cache.c) follow the binary. */
	if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 32 || fseek(f, 0, SEEK_SET) != 0)
		goto done;
	p = kred__malloc((size_t)n);
	if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
		kred__free(p);
		p = NULL;
	}
	*len = (size_t)n - 32;
done:
	fclose(f);
	return p;
}

/* A program from a cached binary, built; NULL when there is none or it does not load. */
static cl_program program_from_cache(struct cl_state *st, const char *key, const char *opts)
{
	const char *dir = kred__cache_read_dir(&st->cache);
	const unsigned char *bin;
	unsigned char *data = NULL;
	char *path;
	size_t len = 0;
	cl_program prog = NULL;
	cl_int e = CL_SUCCESS, be = CL_SUCCESS;
	int state;

	if (!dir || !*dir || !(path = clbin_path(dir, key)))
		return NULL;
	state = kred__cache_check(path, program_identity(st, opts));
	if (state > 0)
		data = read_binary(path, &len);
	else if (state < 0)
		kred__log("opencl: %s is damaged: rebuilding", path);
	if (data) {
		bin = data;
		prog = st->cl->CreateProgramWithBinary(st->context, 1, &st->dev->id, &len, &bin,
						       &be, &e);
		if (prog && (e != CL_SUCCESS || be != CL_SUCCESS ||
			     st->cl->BuildProgram(prog, 1, &st->dev->id, opts, NULL, NULL) !=
				     CL_SUCCESS)) {
			st->cl->ReleaseProgram(prog);
			prog = NULL;
		}
		kred__log("opencl: %s %s", prog ? "cache hit on disk:" : "cannot load", path);
	}
	kred__free(data);
	kred__free(path);
	return prog;
}

/* Stores a built program's binary; failures only cost a rebuild next time. */
static void program_to_cache(struct cl_state *st, cl_program prog, const char *key,
			     const char *opts)
{
	unsigned char *bin = NULL;
	char *path = NULL;
	size_t len = 0;

	if (st->cl->GetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof(len), &len, NULL) ==
		    CL_SUCCESS &&
	    len > 0 && (bin = kred__malloc(len)) &&
	    st->cl->GetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof(bin), &bin, NULL) ==
		    CL_SUCCESS)
		path = kred__cache_store(&st->cache, key, ".clbin", bin, len,
					 program_identity(st, opts));
	if (path)
		kred__log("opencl: cached %s", path);
	kred__free(path);
	kred__free(bin);
}

/* build_program with the build options opts. */
static kred_status build_with(struct cl_state *st, kred_context *ctx, const char *src,
			      const char *opts, double t0, cl_program *out,
			      struct kred__error *err)
{
	cl_program prog = NULL;
	char key[33];
	cl_int e = CL_SUCCESS;

	/* POCL cannot build once its cache directory is gone (a user who clears ~/.cache
	 * while a process runs): make it again, as kred does its own. */
	if (st->dev->is_pocl && getenv("POCL_CACHE_DIR") && *getenv("POCL_CACHE_DIR"))
		make_dirs(getenv("POCL_CACHE_DIR"));
	if (st->binary_cache) {
		program_key(st, src, opts, key);
		prog = program_from_cache(st, key, opts);
		if (prog) {
			*out = prog;
			return KRED_OK;
		}
	}
	prog = st->cl->CreateProgramWithSource(st->context, 1, &src, NULL, &e);
	if (!prog)
		return cl_fail(err, "clCreateProgramWithSource", e);
	e = st->cl->BuildProgram(prog, 1, &st->dev->id, opts, NULL, NULL);
	if (e != CL_SUCCESS) {
		char *log = build_log(st, prog);

		kred__ctx_set_log(ctx, log ? log : "");
		kred__free(log);
		st->cl->ReleaseProgram(prog);
		if (e == CL_BUILD_PROGRAM_FAILURE || e == CL_INVALID_BUILD_OPTIONS)
			return kred__fail(err, KRED_EBUILD, -1, "the OpenCL compiler of %s failed "
					  "(see the build log)", st->dev->name);
		return cl_fail(err, "clBuildProgram", e);
	}
	kred__log("opencl: built in %.3f s on %s", kred__now() - t0, st->dev->name);
	if (st->binary_cache)
		program_to_cache(st, prog, key, opts);
	*out = prog;
	return KRED_OK;
}

/* Builds src for the device: from kred's binary cache, else from source. A failed build
 * is KRED_EBUILD with the compiler's log on ctx. */
static kred_status build_program(struct cl_state *st, kred_context *ctx, const char *src,
				 cl_program *out, struct kred__error *err)
{
	struct kred__buf ob = { 0 };
	char *opts;
	double t0 = kred__now();
	kred_status s;

	*out = NULL;
	/* Fast math: native_ functions (kernels/prelude_opencl.h) and -cl-mad-enable. Not
	 * -cl-fast-relaxed-math: it assumes no infinity and no NaN. */
	kred__buf_printf(&ob, "%s%s%s", st->options,
			 *st->options && kred__tiled_fast_math(src) ? " " : "",
			 kred__tiled_fast_math(src) ? "-cl-mad-enable" : "");
	opts = kred__buf_take(&ob);
	if (!opts)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	s = build_with(st, ctx, src, opts, t0, out, err);
	kred__free(opts);
	return s;
}

static kred_status check_fp64(const struct cl_state *st, const struct kred_reduction *r,
			      struct kred__error *err)
{
	if (r->dtype == KRED_FLOAT64 && !st->fp64)
		return kred__fail(err, KRED_EUNSUPPORTED, -1,
				  "float64 needs an OpenCL device with fp64 (cl_khr_fp64), and %s "
				  "has none: use float32, or another device", st->dev->name);
	return KRED_OK;
}

static kred_status cl_build(void *state, const struct kred_reduction *r, const char *src,
			    void *module, struct kred__error *err)
{
	struct cl_state *st = state;
	struct cl_module *m = module;
	kred_status s;
	cl_int e = CL_SUCCESS;

	s = check_fp64(st, r, err);
	if (!s)
		s = build_program(st, r->ctx, src, &m->program, err);
	if (s)
		return s;
	for (int k = 0; k < KRED__N_KERNELS; k++) {
		m->k[k] = st->cl->CreateKernel(m->program, kred__kernel_names[k], &e);
		if (!m->k[k])
			return cl_fail(err, "clCreateKernel", e);
	}
	return KRED_OK;
}

static void cl_unload(void *state, void *module)
{
	const struct cl_state *st = state;
	struct cl_module *m = module;

	for (int k = 0; k < KRED__N_KERNELS; k++) {
		if (m->k[k])
			st->cl->ReleaseKernel(m->k[k]);
		m->k[k] = NULL;
	}
	if (m->program)
		st->cl->ReleaseProgram(m->program);
	m->program = NULL;
}

/* The largest group kernel k runs at (CL_KERNEL_WORK_GROUP_SIZE); 0 when unknown. */
static int64_t cl_max_group(void *state, const void *module, enum kred__kernel k)
{
	const struct cl_state *st = state;
	const struct cl_module *m = module;
	size_t n = 0;

	if (st->cl->GetKernelWorkGroupInfo(m->k[k], st->dev->id, CL_KERNEL_WORK_GROUP_SIZE,
					   sizeof(n), &n, NULL) != CL_SUCCESS)
		return 0;
	return (int64_t)n;
}

/* ---- the device layer's primitives (lib/device.h) */

static cl_mem new_buffer(const struct cl_state *st, cl_mem_flags flags, size_t bytes, void *host,
			 struct kred__error *err)
{
	cl_int e = CL_SUCCESS;
	cl_mem b;

	if (st->dev->max_alloc && bytes > st->dev->max_alloc) {
		kred__fail(err, KRED_EDEVICE, -1, "opencl: a buffer of %zu bytes is more than %s "
			   "allows in one allocation (%llu)", bytes, st->dev->name,
			   (unsigned long long)st->dev->max_alloc);
		return NULL;
	}
	b = st->cl->CreateBuffer(st->context, flags, bytes, host, &e);
	if (!b)
		cl_fail(err, "clCreateBuffer", e);
	return b;
}

static cl_mem as_mem(kred__dmem m)
{
	return (cl_mem)(uintptr_t)m;
}

/* A new buffer every time: OpenCL frees a released one once the kernels using it ran. */
static kred_status cl_alloc(void *state, int role, size_t bytes, const void *init, int read_only,
			    kred__dmem *out, struct kred__error *err)
{
	cl_mem_flags flags = (read_only ? CL_MEM_READ_ONLY : CL_MEM_READ_WRITE) |
			     (init ? CL_MEM_COPY_HOST_PTR : 0);
	cl_mem b = new_buffer(state, flags, bytes, (void *)init, err);

	(void)role;
	if (!b)
		return err->status;
	*out = (kred__dmem)(uintptr_t)b;
	return KRED_OK;
}

static void cl_release(void *state, int role, kred__dmem m)
{
	const struct cl_state *st = state;

	(void)role;
	st->cl->ReleaseMemObject(as_mem(m));
}

static kred_status cl_read(void *state, kred__dmem m, void *host, size_t bytes,
			   struct kred__error *err)
{
	const struct cl_state *st = state;
	cl_int e = st->cl->EnqueueReadBuffer(st->queue, as_mem(m), CL_TRUE, 0, bytes, host, 0,
					     NULL, NULL);

	return e == CL_SUCCESS ? KRED_OK : cl_fail(err, "clEnqueueReadBuffer", e);
}

static kred_status cl_launch(void *state, const void *module, enum kred__kernel k, int64_t gx,
			     int64_t gy, int n, const struct kred__karg *args,
			     struct kred__error *err)
{
	const struct cl_state *st = state;
	const struct cl_module *m = module;
	cl_kernel kernel = m->k[k];
	size_t local[2] = { (size_t)m->d.shape.wg, 1 }, global[2];
	char what[64];
	cl_int e = CL_SUCCESS;

	for (int i = 0; i < n && e == CL_SUCCESS; i++) {
		cl_mem mem = as_mem(args[i].v.mem);
		cl_long l = args[i].v.l;
		cl_int v = args[i].v.i;

		switch (args[i].type) {
		case KRED__ARG_MEM:
			e = st->cl->SetKernelArg(kernel, (cl_uint)i, sizeof(mem), &mem);
			break;
		case KRED__ARG_LONG:
			e = st->cl->SetKernelArg(kernel, (cl_uint)i, sizeof(l), &l);
			break;
		default:
			e = st->cl->SetKernelArg(kernel, (cl_uint)i, sizeof(v), &v);
			break;
		}
	}
	if (e != CL_SUCCESS)
		return cl_fail(err, "clSetKernelArg", e);
	global[0] = (size_t)gx * local[0];
	global[1] = (size_t)gy;
	e = st->cl->EnqueueNDRangeKernel(st->queue, kernel, 2, NULL, global, local, 0, NULL, NULL);
	if (e == CL_SUCCESS)
		return KRED_OK;
	snprintf(what, sizeof(what), "clEnqueueNDRangeKernel(%s)", kred__kernel_names[k]);
	return cl_fail(err, what, e);
}

/* Checks that b is a buffer of this context with at least need bytes. */
static kred_status cl_check(void *state, kred__dmem m, int64_t need, const char *what,
			    struct kred__error *err)
{
	const struct cl_state *st = state;
	cl_mem b = as_mem(m);
	cl_context c = NULL;
	size_t size = 0;

	if (st->cl->GetMemObjectInfo(b, CL_MEM_CONTEXT, sizeof(c), &c, NULL) != CL_SUCCESS ||
	    st->cl->GetMemObjectInfo(b, CL_MEM_SIZE, sizeof(size), &size, NULL) != CL_SUCCESS)
		return kred__fail(err, KRED_EINVAL, -1, "%s is not a valid cl_mem", what);
	if (c != st->context)
		return kred__fail(err, KRED_EINVAL, -1, "%s belongs to another cl_context (make "
				  "buffers in the one kred_context_opencl_handles gives)", what);
	if ((uint64_t)size < (uint64_t)need)
		return kred__fail(err, KRED_EINVAL, -1, "%s holds %zu bytes, %lld are needed", what,
				  size, (long long)need);
	return KRED_OK;
}

static kred_status cl_finish(void *state, struct kred__error *err)
{
	const struct cl_state *st = state;
	cl_int e = st->cl->Finish(st->queue);

	return e == CL_SUCCESS ? KRED_OK : cl_fail(err, "clFinish", e);
}

static const struct kred__device_ops cl_ops = {
	.alloc = cl_alloc,
	.release = cl_release,
	.read = cl_read,
	.launch = cl_launch,
	.check = cl_check,
	.finish = cl_finish,
	.shape = cl_shape,
	.build = cl_build,
	.max_group = cl_max_group,
	.unload = cl_unload,
};

/* What the device layer plans with: 2D when the row groups fill under half of four (CPU)
 * or eight (GPU) groups per compute unit; the partial states in at most half the largest
 * allocation. */
static void layer_make(struct cl_state *st, const kred_context *ctx)
{
	int64_t cu = st->dev->compute_units ? st->dev->compute_units : 1;

	st->layer = (struct kred__device){
		.ops = &cl_ops,
		.state = st,
		.name = "opencl",
		.dialect = &kred__dialect_opencl,
		.module_size = sizeof(struct cl_module),
		.scheme = kred__device_scheme(ctx),
		.target_groups = cu * (is_gpu_device(st->dev) ? 8 : 4),
		.parts_cap = st->dev->max_alloc ? st->dev->max_alloc / 2 : SIZE_MAX,
		.none = "NULL",
		.args_name = "cl_mem_args",
		.out_name = "cl_mem_out",
	};
}

kred_status kred_reduction_run_opencl(kred_reduction *r, int64_t nx, int64_t ny,
				      const void *const *cl_mem_args, void *cl_mem_out)
{
	struct kred__device *d;
	kred__dmem *mems = NULL;
	int n_user;
	kred_status s;

	if (!r)
		return KRED_EINVAL;
	kred__ctx_clear_error(r->ctx);
	d = kred__device_of(r->ctx, &kred__backend_opencl, "kred_reduction_run_opencl",
			    "make the reduction on the context of the device that holds the "
			    "buffers (opencl:N)");
	if (!d)
		return kred__ctx_error(r->ctx)->status;
	n_user = kred_reduction_n_args(r);
	if (cl_mem_args) {
		mems = kred__calloc((size_t)n_user + 1, sizeof(*mems));
		if (!mems)
			return kred__ctx_fail(r->ctx, KRED_ENOMEM, "out of memory");
		for (int k = 0; k < n_user; k++)
			mems[k] = (kred__dmem)(uintptr_t)cl_mem_args[k];
	}
	s = kred__device_run_user(d, r, nx, ny, mems, (kred__dmem)(uintptr_t)cl_mem_out, NULL);
	kred__free(mems);
	return s;
}

kred_status kred_context_opencl_handles(kred_context *ctx, void **cl_context_out,
					void **cl_queue_out)
{
	const struct cl_state *st;

	if (cl_context_out)
		*cl_context_out = NULL;
	if (cl_queue_out)
		*cl_queue_out = NULL;
	if (!ctx)
		return KRED_EINVAL;
	kred__ctx_clear_error(ctx);
	st = (const struct cl_state *)kred__device_of(ctx, &kred__backend_opencl,
						      "kred_context_opencl_handles", "open opencl:N");
	if (!st)
		return kred__ctx_error(ctx)->status;
	if (cl_context_out)
		*cl_context_out = st->context;
	if (cl_queue_out)
		*cl_queue_out = st->queue;
	return KRED_OK;
}

/* ---- the device report */

static void cl_report(struct kred__buf *b)
{
	const struct kred__cl_device *devs;
	char why[256];
	int n;

	if (!load(why, sizeof(why))) {
		kred__buf_printf(b, "opencl: not available (%s)\n", why);
		return;
	}
	n = kred__cl_devices(&devs);
	kred__buf_printf(b, "opencl: available: %d device%s\n", n, n == 1 ? "" : "s");
	for (int k = 0; k < n; k++) {
		const struct kred__cl_device *d = &devs[k];

		kred__buf_printf(b, "  opencl:%d  %s: %s (%s, %u compute units, %.1f GiB, fp64 "
				 "%s, driver %s)\n", k, d->platform_name, d->name,
				 type_name(d->type), (unsigned)d->compute_units,
				 (double)d->global_mem / (1024.0 * 1024.0 * 1024.0),
				 d->fp64 ? "yes" : "no", d->driver);
	}
}

const struct kred_backend kred__backend_opencl = {
	.version = KRED__BACKEND_VERSION,
	.name = "opencl",
	.open = cl_open,
	.close = cl_close,
	.describe = cl_describe,
	.is_gpu = cl_is_gpu,
	.compile = kred__device_compile,
	.run = kred__device_run,
	.module_free = kred__device_module_free,
	.source = kred__device_source,
	.report = cl_report,
	.memory = cl_memory,
	.device_count = cl_device_count,
	.run_ranged = kred__device_run_ranged,
};
