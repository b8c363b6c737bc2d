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
#include "dialect.h"
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

#define MAX_SPLITS 1024

struct cl_state {
	const struct kred__cl_api *cl;
	const struct kred__cl_device *dev;
	cl_context context;
	cl_command_queue queue;
	char *desc;
	struct kred__cache cache;
	kred_scheme scheme;
	struct kred__tiled_shape shape; /* before the per-reduction adjustments */
	int binary_cache;
	int fp64;      /* the device has fp64 (KRED_OPENCL_NO_FP64=1 says not, for tests) */
	char *options; /* build options: $KRED_OPENCL_OPTIONS, else "" */
};

struct cl_module {
	struct kred__layout l;
	struct kred__tiled_shape shape;
	cl_program program;
	cl_kernel reduce, merge, pack, sum_rows, ranged;
	int nst;
	size_t size; /* bytes per value */
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

static int floor_pow2(size_t n)
{
	int p = 1;

	while ((size_t)p * 2 <= n && p < 1024)
		p *= 2;
	return p;
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
	if (d->max_wg && (size_t)sh->wg > d->max_wg)
		sh->wg = floor_pow2(d->max_wg);
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
	st->scheme = scheme_of(ctx);
	device_shape(st->dev, &st->shape);
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
static void module_shape(const struct cl_state *st, const struct kred_reduction *r,
			 const struct kred__layout *l, struct kred__tiled_shape *sh)
{
	size_t size = r->dtype == KRED_FLOAT64 ? 8 : 4, per_col = (size_t)l->width[KRED__SIDE_COL];
	size_t nst = (size_t)kred__emit_nstate(r);

	*sh = st->shape;
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
		/* Half the local memory at most: the rest is the compiler's. */
		size_t room = st->dev->local_mem ? st->dev->local_mem / 2 : 16384;
		size_t cols = room / (per_col * size);

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
	struct kred__error e;
	unsigned char *bin = NULL;
	char *tmp = NULL, *path = NULL;
	const char *dir;
	size_t len = 0;
	FILE *f;

	kred__error_clear(&e);
	if (st->cl->GetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof(len), &len, NULL) !=
		    CL_SUCCESS ||
	    len == 0 || !(bin = kred__malloc(len)))
		goto done;
	if (st->cl->GetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof(bin), &bin, NULL) !=
	    CL_SUCCESS)
		goto done;
	if (kred__cache_tmpfile(&st->cache, key, ".clbin", &tmp, &dir, &e))
		goto done;
	f = fopen(tmp, "wb");
	if (!f || fwrite(bin, 1, len, f) != len) {
		if (f)
			fclose(f);
		goto done;
	}
	if (fclose(f) != 0 || kred__cache_seal(tmp, program_identity(st, opts), &e) ||
	    !(path = clbin_path(dir, key)))
		goto done;
	if (kred__cache_publish(tmp, path, &e) == KRED_OK) {
		kred__log("opencl: cached %s", path);
		kred__free(tmp);
		tmp = NULL;
	}
done:
	if (tmp)
		unlink(tmp);
	kred__free(tmp);
	kred__free(path);
	kred__free(bin);
}

/* Builds src for the device: from kred's binary cache, else from source. A failed build
 * is KRED_EBUILD with the compiler's log on ctx. */
static kred_status build_program(struct cl_state *st, kred_context *ctx, const char *src,
				 cl_program *out, struct kred__error *err)
{
	const char *opts = st->options;
	double t0 = kred__now();
	cl_program prog = NULL;
	char key[33];
	cl_int e = CL_SUCCESS;

	*out = NULL;
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

static void module_release(const struct cl_state *st, struct cl_module *m)
{
	cl_kernel *k[] = { &m->reduce, &m->merge, &m->pack, &m->sum_rows, &m->ranged };

	for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
		if (*k[i])
			st->cl->ReleaseKernel(*k[i]);
		*k[i] = NULL;
	}
	if (m->program)
		st->cl->ReleaseProgram(m->program);
	m->program = NULL;
}

static kred_status module_build(struct cl_state *st, struct kred_reduction *r,
				struct cl_module *m, struct kred__error *err)
{
	struct {
		cl_kernel *k;
		const char *name;
	} ks[] = { { &m->reduce, "kr_reduce" }, { &m->merge, "kr_merge_parts" },
		   { &m->pack, "kr_pack" }, { &m->sum_rows, "kr_sum_rows" },
		   { &m->ranged, "kr_reduce_ranged" } };
	char *src = NULL;
	kred_status s;
	cl_int e = CL_SUCCESS;

	s = kred__tiled_source(&kred__dialect_opencl, r, &m->l, &m->shape, &src, err);
	if (s)
		return s;
	s = build_program(st, r->ctx, src, &m->program, err);
	kred__free(src);
	if (s)
		return s;
	for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) {
		*ks[i].k = st->cl->CreateKernel(m->program, ks[i].name, &e);
		if (!*ks[i].k)
			return cl_fail(err, "clCreateKernel", e);
	}
	return KRED_OK;
}

/* The largest group the device runs a kernel in (the shape is rebuilt smaller when the
 * kernel needs more registers than its group size allows). */
static size_t kernel_max_wg(const struct cl_state *st, cl_kernel k)
{
	size_t n = 0;

	if (st->cl->GetKernelWorkGroupInfo(k, st->dev->id, CL_KERNEL_WORK_GROUP_SIZE, sizeof(n),
					   &n, NULL) != CL_SUCCESS)
		return 0;
	return n;
}

static void cl_module_free(void *state, void *module)
{
	struct cl_module *m = module;

	if (!m)
		return;
	module_release(state, m);
	kred__layout_free(&m->l);
	kred__free(m);
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

static kred_status cl_compile(void *state, struct kred_reduction *r, void **module,
			      struct kred__error *err)
{
	struct cl_state *st = state;
	struct cl_module *m;
	kred_status s;

	*module = NULL;
	s = check_fp64(st, r, err);
	if (s)
		return s;
	m = kred__calloc(1, sizeof(*m));
	if (!m)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	s = kred__layout_make(r, &m->l, err);
	if (s)
		goto fail;
	m->nst = kred__emit_nstate(r);
	m->size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	module_shape(st, r, &m->l, &m->shape);
	for (int tries = 0;; tries++) {
		size_t max;

		s = module_build(st, r, m, err);
		if (s)
			goto fail;
		max = kernel_max_wg(st, m->reduce);
		if (!max || max >= (size_t)m->shape.wg || tries == 2)
			break;
		/* Too many registers for this group size on this device: smaller groups. */
		module_release(st, m);
		m->shape.wg = floor_pow2(max);
		if (m->shape.tj > m->shape.wg && m->shape.local_tiles)
			m->shape.tj = m->shape.wg;
	}
	*module = m;
	return KRED_OK;
fail:
	cl_module_free(st, m);
	return s;
}

static kred_status cl_source(void *state, const struct kred_reduction *r, char **out,
			     struct kred__error *err)
{
	struct cl_state *st = state;
	const struct cl_module *m = r->module;
	struct kred__layout l = { 0 };
	struct kred__tiled_shape sh;
	kred_status s;

	if (m)
		return kred__tiled_source(&kred__dialect_opencl, r, &m->l, &m->shape, out, err);
	s = kred__layout_make(r, &l, err);
	if (s)
		return s;
	module_shape(st, r, &l, &sh);
	s = kred__tiled_source(&kred__dialect_opencl, r, &l, &sh, out, err);
	kred__layout_free(&l);
	return s;
}

/* ---- launching */

static kred_status set_args(const struct cl_state *st, cl_kernel k, int n, const size_t *sizes,
			    const void *const *values, struct kred__error *err)
{
	for (int i = 0; i < n; i++) {
		cl_int e = st->cl->SetKernelArg(k, (cl_uint)i, sizes[i], values[i]);

		if (e != CL_SUCCESS)
			return cl_fail(err, "clSetKernelArg", e);
	}
	return KRED_OK;
}

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

static void release(const struct cl_state *st, cl_mem b)
{
	if (b)
		st->cl->ReleaseMemObject(b);
}

/* How many column ranges (groups along dimension 1) the scheme takes for groups row
 * groups over nc columns. */
static int64_t splits(const struct cl_state *st, const struct cl_module *m, int64_t groups,
		      int64_t nr, int64_t nc)
{
	int64_t cu = st->dev->compute_units ? st->dev->compute_units : 1;
	int64_t target = cu * (is_gpu_device(st->dev) ? 8 : 4);
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
		/* Enough row groups already, or too few columns to share out. */
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
	while (s > 2 && st->dev->max_alloc && (size_t)s * bytes_per_split > st->dev->max_alloc / 2)
		s /= 2;
	return s;
}

/* out (nr x out_dim) = the reduction of the packed arrays: the 1D or 2D scheme. */
static kred_status launch(const struct cl_state *st, const struct cl_module *m, int64_t nr,
			  int64_t nc, const cl_mem *side, cl_mem out, struct kred__error *err)
{
	const struct kred__cl_api *cl = st->cl;
	const int64_t per_group = (int64_t)m->shape.wg * m->shape.rpw;
	int64_t groups = (nr + per_group - 1) / per_group, ns;
	cl_long lnr = nr, lnc = nc, lns;
	cl_mem parts = NULL;
	size_t global[2], local[2] = { (size_t)m->shape.wg, 1 };
	kred_status s;
	cl_int e;

	ns = splits(st, m, groups, nr, nc);
	lns = ns;
	if (ns > 1) {
		parts = new_buffer(st, CL_MEM_READ_WRITE,
				   (size_t)ns * (size_t)m->nst * (size_t)nr * m->size, NULL, err);
		if (!parts)
			return err->status;
	}
	{
		const size_t sz[] = { sizeof(cl_mem), sizeof(cl_mem), sizeof(cl_mem),
				      sizeof(cl_mem), sizeof(cl_mem), sizeof(cl_long),
				      sizeof(cl_long) };
		const void *v[] = { &side[0], &side[1], &side[2], &out, &parts, &lnr, &lnc };

		s = set_args(st, m->reduce, 7, sz, v, err);
		if (s)
			goto done;
	}
	global[0] = (size_t)groups * (size_t)m->shape.wg;
	global[1] = (size_t)ns;
	e = cl->EnqueueNDRangeKernel(st->queue, m->reduce, 2, NULL, global, local, 0, NULL, NULL);
	if (e != CL_SUCCESS) {
		s = cl_fail(err, "clEnqueueNDRangeKernel(kr_reduce)", e);
		goto done;
	}
	if (ns > 1) {
		const size_t sz[] = { sizeof(cl_mem), sizeof(cl_mem), sizeof(cl_long),
				      sizeof(cl_long) };
		const void *v[] = { &parts, &out, &lnr, &lns };

		s = set_args(st, m->merge, 4, sz, v, err);
		if (s)
			goto done;
		/* Padded to whole groups: the kernel drops the tail. */
		global[0] = (size_t)((nr + m->shape.wg - 1) / m->shape.wg) * (size_t)m->shape.wg;
		e = cl->EnqueueNDRangeKernel(st->queue, m->merge, 1, NULL, global, local, 0, NULL,
					     NULL);
		if (e != CL_SUCCESS)
			s = cl_fail(err, "clEnqueueNDRangeKernel(kr_merge_parts)", e);
	}
	kred__log("opencl: %lld x %lld, %s scheme, %lld group%s x %lld range%s", (long long)nr,
		  (long long)nc, ns > 1 ? "2D" : "1D", (long long)groups, groups == 1 ? "" : "s",
		  (long long)ns, ns == 1 ? "" : "s");
done:
	/* Released now, freed by OpenCL once the kernels that use it have run. */
	release(st, parts);
	return s;
}

/* out (nr x out_dim) = the reduction restricted to g: one group per task of rows
 * (kred__range_tasks), over its block's intervals. */
static kred_status launch_ranged(const struct cl_state *st, const struct cl_module *m, int64_t nr,
				 const cl_mem *side, cl_mem out, const struct kred__ranges *g,
				 struct kred__error *err)
{
	const int64_t per_group = (int64_t)m->shape.wg * m->shape.rpw;
	int64_t n_tasks = 0, n_red = g->nb ? g->slc[g->nb - 1] : 0;
	int32_t *tasks = NULL;
	cl_mem tbuf = NULL, rbuf = NULL;
	size_t global, local = (size_t)m->shape.wg;
	kred_status s;
	cl_int e;

	s = kred__range_tasks(g, nr, per_group, &tasks, &n_tasks, err);
	if (s)
		return s;
	tbuf = new_buffer(st, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
			  sizeof(*tasks) * 4 * (size_t)n_tasks, tasks, err);
	/* an empty list still needs a buffer */
	rbuf = tbuf ? new_buffer(st, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
				 sizeof(int32_t) * (size_t)(n_red ? 2 * n_red : 2),
				 n_red ? (void *)g->red : (void *)tasks, err)
		    : NULL;
	kred__free(tasks);
	if (!tbuf || !rbuf) {
		s = err->status;
		goto done;
	}
	{
		const size_t sz[] = { sizeof(cl_mem), sizeof(cl_mem), sizeof(cl_mem),
				      sizeof(cl_mem), sizeof(cl_mem), sizeof(cl_mem) };
		const void *v[] = { &side[0], &side[1], &side[2], &out, &tbuf, &rbuf };

		s = set_args(st, m->ranged, 6, sz, v, err);
		if (s)
			goto done;
	}
	global = (size_t)n_tasks * (size_t)m->shape.wg;
	e = st->cl->EnqueueNDRangeKernel(st->queue, m->ranged, 1, NULL, &global, &local, 0, NULL,
					 NULL);
	if (e != CL_SUCCESS)
		s = cl_fail(err, "clEnqueueNDRangeKernel(kr_reduce_ranged)", e);
	kred__log("opencl: %lld rows in %lld blocks of ranges, %lld groups", (long long)nr,
		  (long long)g->nb, (long long)n_tasks);
done:
	release(st, tbuf);
	release(st, rbuf);
	return s;
}

static void rows_cols(const struct kred_reduction *r, int64_t nx, int64_t ny, int64_t *nr,
		      int64_t *nc)
{
	*nr = r->axis == KRED_REDUCE_J ? nx : ny;
	*nc = r->axis == KRED_REDUCE_J ? ny : nx;
}

/* The arguments of one side, packed rows x width on the host; the argument itself when it
 * is alone there. *owned is what to free. */
static const void *pack_host(const struct cl_module *m, const struct kred_reduction *r, int side,
			     int64_t rows, const void *const *args, void **owned)
{
	int width = m->l.width[side], alone = -1, count = 0;
	char *dst;

	*owned = NULL;
	for (int p = 0; p < m->l.n_args; p++) {
		if (m->l.side[p] == side) {
			alone = p;
			count++;
		}
	}
	if (count == 1 && r->args[alone].dim == width)
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
			memcpy(dst + (size_t)i * (size_t)width * m->size + off, src + (size_t)i * d, d);
	}
	*owned = dst;
	return dst;
}

/* A run on host arrays, restricted to g when it is not NULL. */
static kred_status cl_call(const struct cl_state *st, const struct cl_module *m,
			   const struct kred_reduction *r, int64_t nx, int64_t ny,
			   const void *const *args, void *out, const struct kred__ranges *g,
			   struct kred__error *err)
{
	cl_mem side[3] = { NULL, NULL, NULL }, obuf = NULL;
	int64_t nr, nc, rows[3];
	size_t out_bytes;
	kred_status s = KRED_OK;
	cl_int e;

	rows_cols(r, nx, ny, &nr, &nc);
	if (nr == 0)
		return KRED_OK;
	rows[KRED__SIDE_ROW] = nr;
	rows[KRED__SIDE_COL] = nc;
	rows[KRED__SIDE_PRM] = 1;
	for (int k = 0; k < 3; k++) {
		void *owned = NULL;
		const void *host;

		if (m->l.width[k] == 0 || rows[k] == 0)
			continue;
		host = pack_host(m, r, k, rows[k], args, &owned);
		if (!host) {
			s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
			goto done;
		}
		/* The copy is made here: the caller's array is free to change on return. */
		side[k] = new_buffer(st, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
				     (size_t)rows[k] * (size_t)m->l.width[k] * m->size,
				     (void *)host, err);
		kred__free(owned);
		if (!side[k]) {
			s = err->status;
			goto done;
		}
	}
	out_bytes = (size_t)nr * (size_t)r->out_dim * m->size;
	obuf = new_buffer(st, CL_MEM_WRITE_ONLY, out_bytes, NULL, err);
	if (!obuf) {
		s = err->status;
		goto done;
	}
	s = g ? launch_ranged(st, m, nr, side, obuf, g, err) : launch(st, m, nr, nc, side, obuf, err);
	if (s)
		goto done;
	e = st->cl->EnqueueReadBuffer(st->queue, obuf, CL_TRUE, 0, out_bytes, out, 0, NULL, NULL);
	if (e != CL_SUCCESS)
		s = cl_fail(err, "clEnqueueReadBuffer", e);
done:
	for (int k = 0; k < 3; k++)
		release(st, side[k]);
	release(st, obuf);
	return s;
}

static kred_status cl_run(void *state, void *module, const struct kred_reduction *r, int64_t nx,
			  int64_t ny, const void *const *args, void *out, struct kred__error *err)
{
	return cl_call(state, module, r, nx, ny, args, out, NULL, err);
}

static kred_status cl_run_ranged(void *state, void *module, const struct kred_reduction *r,
				 int64_t nx, int64_t ny, const void *const *args, void *out,
				 const struct kred__ranges *g, struct kred__error *err)
{
	return cl_call(state, module, r, nx, ny, args, out, g, err);
}

/* ---- runs on data already on the device */

/* The buffer of one side: the argument's own when it is alone there, else a new buffer
 * (in *owned) that kr_pack fills. */
static kred_status pack_device(const struct cl_state *st, const struct cl_module *m,
			       const struct kred_reduction *r, int side, int64_t rows,
			       const cl_mem *mems, cl_mem *buf, cl_mem *owned,
			       struct kred__error *err)
{
	int width = m->l.width[side], alone = -1, count = 0;

	*buf = *owned = NULL;
	if (width == 0 || rows == 0)
		return KRED_OK;
	for (int p = 0; p < m->l.n_args; p++) {
		if (m->l.side[p] == side) {
			alone = p;
			count++;
		}
	}
	if (count == 1 && r->args[alone].dim == width) {
		*buf = mems[alone];
		return KRED_OK;
	}
	*owned = new_buffer(st, CL_MEM_READ_WRITE, (size_t)rows * (size_t)width * m->size, NULL,
			    err);
	if (!*owned)
		return err->status;
	*buf = *owned;
	for (int p = 0; p < m->l.n_args; p++) {
		cl_long lrows = rows;
		cl_int dim = r->args[p].dim, w = width, off = m->l.offset[p];
		const size_t sz[] = { sizeof(cl_mem), sizeof(cl_mem), sizeof(cl_long),
				      sizeof(cl_int), sizeof(cl_int), sizeof(cl_int) };
		const void *v[] = { &mems[p], owned, &lrows, &dim, &w, &off };
		size_t wg = (size_t)m->shape.wg, global;
		kred_status s;
		cl_int e;

		if (m->l.side[p] != side)
			continue;
		s = set_args(st, m->pack, 6, sz, v, err);
		if (s)
			return s;
		global = ((size_t)rows * (size_t)dim + wg - 1) / wg * wg;
		e = st->cl->EnqueueNDRangeKernel(st->queue, m->pack, 1, NULL, &global, &wg, 0, NULL,
						 NULL);
		if (e != CL_SUCCESS)
			return cl_fail(err, "clEnqueueNDRangeKernel(kr_pack)", e);
	}
	return KRED_OK;
}

static kred_status device_plain(const struct cl_state *st, const struct kred_reduction *r,
				int64_t nx, int64_t ny, const cl_mem *mems, cl_mem out,
				struct kred__error *err)
{
	const struct cl_module *m = r->module;
	cl_mem side[3] = { NULL, NULL, NULL }, owned[3] = { NULL, NULL, NULL };
	int64_t nr, nc, rows[3];
	kred_status s = KRED_OK;

	rows_cols(r, nx, ny, &nr, &nc);
	if (nr == 0)
		return KRED_OK;
	rows[KRED__SIDE_ROW] = nr;
	rows[KRED__SIDE_COL] = nc;
	rows[KRED__SIDE_PRM] = 1;
	for (int k = 0; k < 3 && !s; k++)
		s = pack_device(st, m, r, k, rows[k], mems, &side[k], &owned[k], err);
	if (!s)
		s = launch(st, m, nr, nc, side, out, err);
	for (int k = 0; k < 3; k++)
		release(st, owned[k]);
	return s;
}

/* kred_reduction_run's run_inner on device buffers: the auxiliary reduction first, then
 * the reduction, then the row sum of a parameter's gradient. */
static kred_status device_run(const struct cl_state *st, const struct kred_reduction *r,
			      int64_t nx, int64_t ny, const cl_mem *mems, cl_mem out,
			      struct kred__error *err)
{
	const struct cl_module *m = r->module;
	cl_mem *args2 = NULL, pre_out = NULL, rows_out = NULL;
	kred_status s = KRED_OK;

	if (r->pre) {
		int64_t rows = r->pre->axis == KRED_REDUCE_J ? nx : ny;

		args2 = kred__calloc((size_t)r->n_args, sizeof(*args2));
		if (!args2)
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		if (rows > 0) {
			pre_out = new_buffer(st, CL_MEM_READ_WRITE,
					     (size_t)rows * (size_t)r->pre->out_dim * m->size, NULL,
					     err);
			if (!pre_out) {
				s = err->status;
				goto done;
			}
		}
		s = device_run(st, r->pre, nx, ny, mems, pre_out, err);
		if (s)
			goto done;
		memcpy(args2, mems, sizeof(*args2) * (size_t)(r->n_args - 1));
		args2[r->n_args - 1] = pre_out;
		mems = args2;
	}
	if (r->pm_sum) {
		int64_t rows = r->axis == KRED_REDUCE_J ? nx : ny;
		cl_long n = rows;
		cl_int d = r->out_dim;
		const size_t sz[] = { sizeof(cl_mem), sizeof(cl_mem), sizeof(cl_long),
				      sizeof(cl_int) };
		const void *v[] = { &rows_out, &out, &n, &d };
		size_t wg = (size_t)m->shape.wg;
		cl_int e;

		if (rows > 0) {
			rows_out = new_buffer(st, CL_MEM_READ_WRITE,
					      (size_t)rows * (size_t)d * m->size, NULL, err);
			if (!rows_out) {
				s = err->status;
				goto done;
			}
		}
		s = device_plain(st, r, nx, ny, mems, rows_out, err);
		if (!s)
			s = set_args(st, m->sum_rows, 4, sz, v, err);
		if (s)
			goto done;
		e = st->cl->EnqueueNDRangeKernel(st->queue, m->sum_rows, 1, NULL, &wg, &wg, 0, NULL,
						 NULL);
		if (e != CL_SUCCESS)
			s = cl_fail(err, "clEnqueueNDRangeKernel(kr_sum_rows)", e);
	} else {
		s = device_plain(st, r, nx, ny, mems, out, err);
	}
done:
	release(st, pre_out);
	release(st, rows_out);
	kred__free(args2);
	return s;
}

/* bytes = rows * dim * size, or -1 on overflow. */
static int64_t bytes_of(int64_t rows, int64_t dim, int64_t size)
{
	if (rows < 0 || dim < 0 || (dim && rows > INT64_MAX / dim / size))
		return -1;
	return rows * dim * size;
}

/* Checks that b is a buffer of this context with at least need bytes. */
static kred_status check_mem(const struct cl_state *st, cl_mem b, int64_t need,
			     const char *what, struct kred__error *err)
{
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

kred_status kred_reduction_run_opencl(kred_reduction *r, int64_t nx, int64_t ny,
				      const void *const *cl_mem_args, void *cl_mem_out)
{
	const struct cl_state *st;
	struct kred__error err;
	int64_t size, rows, need, reduced;
	cl_mem *mems = NULL;
	int n_user, n_dev;
	kred_status s;
	cl_int e;

	if (!r)
		return KRED_EINVAL;
	kred__ctx_clear_error(r->ctx);
	kred__error_clear(&err);
	if (kred__multi_inner(r->ctx, &n_dev) == &kred__backend_opencl)
		return kred__ctx_fail(r->ctx, KRED_EBACKEND, "kred_reduction_run_opencl runs on "
				      "one device, not with opencl:all (%d devices): make the "
				      "reduction on the context of the device that holds the buffers "
				      "(opencl:N)", n_dev);
	if (r->ctx->backend != &kred__backend_opencl)
		return kred__ctx_fail(r->ctx, KRED_EBACKEND, "kred_reduction_run_opencl needs a "
				      "reduction made on an opencl context, not %s",
				      kred_context_backend(r->ctx));
	st = r->ctx->bstate;
	if (nx < 0 || ny < 0)
		return kred__ctx_fail(r->ctx, KRED_EINVAL, "negative size (nx = %lld, ny = %lld)",
				      (long long)nx, (long long)ny);
	size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	n_user = kred_reduction_n_args(r);
	if (n_user && !cl_mem_args)
		return kred__ctx_fail(r->ctx, KRED_EINVAL, "cl_mem_args is NULL but the reduction "
				      "takes %d arguments", n_user);
	mems = kred__calloc((size_t)(n_user > 0 ? n_user : 1) + 1, sizeof(*mems));
	if (!mems)
		return kred__ctx_fail(r->ctx, KRED_ENOMEM, "out of memory");
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
		mems[k] = (cl_mem)cl_mem_args[k];
		if (need == 0)
			continue;
		if (!mems[k]) {
			s = kred__fail(&err, KRED_EINVAL, -1, "argument %d is NULL", k);
			goto done;
		}
		s = check_mem(st, mems[k], need, what, &err);
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
		if (!cl_mem_out) {
			s = kred__fail(&err, KRED_EINVAL, -1, "cl_mem_out is NULL");
			goto done;
		}
		s = check_mem(st, (cl_mem)cl_mem_out, need, "the output", &err);
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
	s = device_run(st, r, nx, ny, mems, (cl_mem)cl_mem_out, &err);
	pthread_mutex_unlock(&r->ctx->lock);
	/* Returns with the work done, so that the caller may use the output on any queue. */
	e = st->cl->Finish(st->queue);
	if (!s && e != CL_SUCCESS)
		s = cl_fail(&err, "clFinish", e);
done:
	kred__free(mems);
	if (s)
		kred__ctx_set_error(r->ctx, &err, NULL);
	return s;
}

kred_status kred_context_opencl_handles(kred_context *ctx, void **cl_context_out,
					void **cl_queue_out)
{
	const struct cl_state *st;
	int n_dev;

	if (cl_context_out)
		*cl_context_out = NULL;
	if (cl_queue_out)
		*cl_queue_out = NULL;
	if (!ctx)
		return KRED_EINVAL;
	kred__ctx_clear_error(ctx);
	if (kred__multi_inner(ctx, &n_dev) == &kred__backend_opencl)
		return kred__ctx_fail(ctx, KRED_EBACKEND, "kred_context_opencl_handles gives one "
				      "device's handles, not those of opencl:all (%d devices): open "
				      "opencl:N", n_dev);
	if (ctx->backend != &kred__backend_opencl)
		return kred__ctx_fail(ctx, KRED_EBACKEND, "kred_context_opencl_handles needs an "
				      "opencl context, not %s", kred_context_backend(ctx));
	st = ctx->bstate;
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
	.compile = cl_compile,
	.run = cl_run,
	.module_free = cl_module_free,
	.source = cl_source,
	.report = cl_report,
	.memory = cl_memory,
	.device_count = cl_device_count,
	.run_ranged = cl_run_ranged,
};
