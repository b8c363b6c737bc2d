/* The host backend: reductions emitted as C, built by the system's C compiler ($KRED_CC)
 * into OpenMP shared objects, cached in memory and on disk, and loaded with dlopen.
 * It is not a device of lib/device.c's layer, for a reason: its kernel (kernels/host.c)
 * plans its own run inside the compiled module (threads, row blocks, column tiles, the
 * ranged tasks) on the caller's arrays, so there is nothing to allocate, copy or launch;
 * it shares the packing of a side's arguments (kred__layout_pack) and the cache's
 * compile step (kred__cache_compile) with the others. */
#define _GNU_SOURCE /* sched_getaffinity */
#include <dlfcn.h>
#include <sched.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "emit.h"
#include "kernels/kred_kernels.h"

/*
 * A module is keyed by a hash of everything its machine code depends on: kred's version,
 * the backend, the CPU (a -march=native module must not run on another one), the
 * compiler command and its --version text, the flags, and the source. The disk cache
 * holds "<key>.so" files, sealed (lib/cache.h) and published by rename, so that a reader
 * sees a whole module or none, two processes building the same module both succeed (the
 * last rename wins; the two files are equivalent), and a truncated or overwritten file is
 * detected and rebuilt.
 */

typedef int (*run_f32)(int64_t, int64_t, const float *, const float *, const float *, float *,
		       int);
typedef int (*run_f64)(int64_t, int64_t, const double *, const double *, const double *,
		       double *, int);
typedef int (*ranged_f32)(int64_t, int64_t, const float *, const float *, const float *, float *,
			  int, int64_t, const int32_t *, const int32_t *);
typedef int (*ranged_f64)(int64_t, int64_t, const double *, const double *, const double *,
			  double *, int, int64_t, const int32_t *, const int32_t *);

/* A loaded module, shared by the reductions of a context that have the same key. */
struct entry {
	char key[33];
	void *dl;
	void *run[2]; /* kr_run (run_f32 or run_f64) and kr_run_ranged (ranged_f32 or _f64) */
	int task_rows; /* kr_task_rows: rows per task of kr_run_ranged */
	struct entry *next;
};

struct host {
	kred_context *ctx; /* NULL when opened for the device report */
	char *cc;
	char *desc;
	struct kred__cache cache;
	struct entry *entries;
	int threads; /* of each run (kred_context_options.threads) */
};

/* What a reduction holds: its module and where its arguments go. */
struct host_module {
	struct entry *e;
	struct kred__layout l;
};

static const char *compiler(void)
{
	const char *cc = getenv("KRED_CC");

	return cc && *cc ? cc : "cc";
}

/* Whether cc is GCC, not clang (which rejects -fsched-pressure). */
static int compiler_is_gcc(const char *cc)
{
	const char *reason = NULL, *v = kred__compiler_version(cc, &reason);

	return v && !strstr(v, "clang") &&
	       (strstr(v, "gcc") || strstr(v, "GCC") || strstr(v, "Free Software Foundation"));
}

/* The compile flags. No -ffast-math: it assumes away the infinities and NaN that
 * LogSumExp and Min start from. -fno-math-errno lets sqrt vectorise, -fno-trapping-math
 * lets selects be if-converted; neither changes a result.
 *
 * With GCC, and for kernels with no gram slots (KR_NG 0), -fschedule-insns
 * -fsched-pressure: GCC vectorises a block's rows as two vectors and emits the second's
 * chain of operations after the first's (an exp is some 60 cycles of dependent
 * operations), and on x86 it does not reorder them before register allocation unless
 * asked; interleaved, the processor finds independent work within its window. Measured
 * on the AVX2 EPYC, float32, medians of 7 runs alternated in one process: Gaussian sum
 * 1.10x, LogSumExp 1.10x, gradient in X 1.17x, float64 Gaussian 1.01x; but the gram
 * slots' matrix product, blocked by hand to the register file, ran at 0.65x (Gaussian,
 * D = 64), so not there. With AVX-512 (an EPYC of GCC's znver3 family with AVX-512, 2
 * threads, medians of 7, two and three runs): Gaussian sum 1.06x, float64 1.03x,
 * LogSumExp 1.02x, gradient 1.04x, gram slots 0.69x, and the K-selections (ArgKMin(10),
 * KRED__RED_K) 0.96x to 0.97x, which therefore go without there (compiled for AVX2 on
 * the same machine they gain, 1.06x). Scheduling changes no result. The gram slots are
 * counted by the emitter in the same pass that writes the source. */
#define CFLAGS "-std=gnu11 -O3 -march=native -fopenmp -fno-math-errno -fno-trapping-math "
#define CFLAGS_512 "-mprefer-vector-width=512 "
#define CFLAGS_SCHED "-fschedule-insns -fsched-pressure "
#define CFLAGS_END "-fPIC -shared"

static const char *cflags(const char *cc, int gram, int select)
{
	int avx512 = 0, sched;

#if defined(__x86_64__)
	/* Full-width AVX-512 is worth 1.5x on the kernels here; GCC defaults to 256 bits. */
	avx512 = strstr(kred__cpu_id(), " avx512f") != NULL;
#endif
	sched = !gram && !(avx512 && select) && compiler_is_gcc(cc);
	if (avx512)
		return sched ? CFLAGS CFLAGS_512 CFLAGS_SCHED CFLAGS_END : CFLAGS CFLAGS_512 CFLAGS_END;
	return sched ? CFLAGS CFLAGS_SCHED CFLAGS_END : CFLAGS CFLAGS_END;
}

const char *kred__host_cc(void)
{
	return compiler();
}

const char *kred__host_cflags(void)
{
	return cflags(compiler(), 0, 0);
}

/* The threads of a run: the context's option, else $KRED_NUM_THREADS, else the first
 * number of $OMP_NUM_THREADS, else the CPUs this process may run on. */
static int run_threads(const kred_context *ctx)
{
	const char *vars[2] = { "KRED_NUM_THREADS", "OMP_NUM_THREADS" };
	cpu_set_t set;

	if (ctx && ctx->opt.threads > 0)
		return ctx->opt.threads;
	for (int k = 0; k < 2; k++) {
		const char *v = getenv(vars[k]);
		long n = v ? strtol(v, NULL, 10) : 0;

		if (n > 0)
			return n > 4096 ? 4096 : (int)n;
	}
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	return sysconf(_SC_NPROCESSORS_ONLN) > 0 ? (int)sysconf(_SC_NPROCESSORS_ONLN) : 1;
}

static kred_status host_open(kred_context *ctx, const char *device, void **state,
			     struct kred__error *err)
{
	const char *reason = NULL;
	struct kred__buf b = { 0 };
	struct host *h;

	*state = NULL;
	if (device && *device)
		return kred__fail(err, KRED_EBACKEND, -1,
				  "the host backend has no devices (got '%s')", device);
	if (!kred__compiler_version(compiler(), &reason)) {
		if (reason && !strcmp(reason, "out of memory"))
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		return kred__fail(err, KRED_EBACKEND, -1,
				  "the C compiler '%s' is not usable: %s (set KRED_CC)",
				  compiler(), reason ? reason : "out of memory");
	}
	h = kred__calloc(1, sizeof(*h));
	if (!h)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	h->ctx = ctx;
	h->threads = run_threads(ctx);
	h->cc = kred__strdup(compiler());
	kred__buf_printf(&b, "host:%s", kred__cpu_name());
	h->desc = kred__buf_take(&b);
	h->cache.wanted = ctx ? ctx->cache_dir : "";
	if (!h->cc || !h->desc) {
		kred__free(h->cc);
		kred__free(h->desc);
		kred__free(h);
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	}
	*state = h;
	return KRED_OK;
}

static void host_close(void *state)
{
	struct host *h = state;

	if (!h)
		return;
	while (h->entries) {
		struct entry *e = h->entries;

		h->entries = e->next;
		dlclose(e->dl);
		kred__free(e);
	}
	kred__cache_close(&h->cache);
	kred__free(h->cc);
	kred__free(h->desc);
	kred__free(h);
}

static const char *host_describe(void *state)
{
	return ((struct host *)state)->desc;
}

static char *path_of(const char *dir, const char *key)
{
	struct kred__buf b = { 0 };

	kred__buf_printf(&b, "%s/%s.so", dir, key);
	return kred__buf_take(&b);
}

/* Keeps the OpenMP runtime a module brought in loaded for good: its worker threads
 * outlive the parallel regions, and unloading it with the last module would pull the
 * code from under them. GCC's, LLVM's and Intel's runtimes by name; what is not loaded
 * is left alone. */
static void pin_openmp_runtime(void)
{
	static const char *const names[] = { "libgomp.so.1", "libomp.so", "libomp.so.5",
					     "libiomp5.so" };

	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
		void *dl = dlopen(names[k], RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);

		if (dl)
			dlclose(dl);
	}
}

/* dlopen + dlsym; NULL (and the loader's message in why) when it fails. */
static void *load(const char *path, void *run[2], int *task_rows, const char **why)
{
	const int *rows;
	void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);

	*why = NULL;
	if (!dl) {
		*why = dlerror();
		return NULL;
	}
	run[0] = dlsym(dl, "kr_run");
	run[1] = dlsym(dl, "kr_run_ranged");
	rows = dlsym(dl, "kr_task_rows");
	*task_rows = rows ? *rows : 0;
	if (!run[0] || !run[1] || *task_rows < 1) {
		*why = !run[0]	 ? "no kr_run in the module"
		       : !run[1] ? "no kr_run_ranged in the module"
				 : "no kr_task_rows in the module";
		dlclose(dl);
		return NULL;
	}
	pin_openmp_runtime();
	return dl;
}

/* The argument list of the compiler: KRED_CC's words, the flags, -o out src. */
static char **compile_argv(const char *cc, const char *flags, const char *out, const char *src,
			   char **store)
{
	struct kred__buf b = { 0 };
	char **argv = NULL, *save = NULL;
	int n = 0;

	kred__buf_printf(&b, "%s %s", cc, flags);
	*store = kred__buf_take(&b);
	if (*store)
		argv = kred__calloc(strlen(*store) / 2 + 8, sizeof(*argv));
	if (!argv)
		return NULL;
	for (char *w = strtok_r(*store, " \t", &save); w; w = strtok_r(NULL, " \t", &save))
		argv[n++] = w;
	argv[n++] = "-o";
	argv[n++] = (char *)out;
	argv[n++] = (char *)src;
	argv[n++] = "-lm";
	argv[n] = NULL;
	return argv;
}

struct cc_job {
	const char *cc, *flags;
};

static char **cc_argv(const void *arg, const char *out, const char *src, char **store)
{
	const struct cc_job *j = arg;

	return compile_argv(j->cc, j->flags, out, src, store);
}

/* Compiles src into a module sealed with identity and published at <dir>/<key>.so;
 * *path is where. */
static kred_status build(struct host *h, const char *key, uint64_t identity, const char *src,
			 const char *flags, char **path, struct kred__error *err)
{
	const struct cc_job cj = { h->cc, flags };
	const struct kred__compile_job job = { "host", "host compiler", h->cc, ".c", ".so",
					       cc_argv, &cj };

	return kred__cache_compile(&h->cache, h->ctx, &job, key, identity, src, path, err);
}

/* The module with this key: from the context's memory, else from the disk cache (when
 * its seal holds identity), else freshly built. */
static kred_status get_module(struct host *h, const char *key, uint64_t identity,
			      const char *src, const char *flags, struct entry **out,
			      struct kred__error *err)
{
	struct entry *e;
	const char *dir, *why = NULL;
	char *path = NULL;
	void *dl = NULL, *run[2] = { NULL, NULL };
	int task_rows = 0;
	double t0 = kred__now();
	kred_status s;

	for (e = h->entries; e; e = e->next) {
		if (!strcmp(e->key, key)) {
			kred__log("host: cache hit in memory: %s", key);
			*out = e;
			return KRED_OK;
		}
	}
	e = kred__calloc(1, sizeof(*e));
	if (!e)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	memcpy(e->key, key, sizeof(e->key));
	dir = kred__cache_read_dir(&h->cache);
	if (dir && *dir) {
		int state;

		path = path_of(dir, key);
		if (!path) {
			kred__free(e);
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		}
		state = kred__cache_check(path, identity);
		if (state > 0)
			dl = load(path, run, &task_rows, &why);
		if (dl)
			kred__log("host: cache hit on disk: %s (%.2f ms)", path,
				  1e3 * (kred__now() - t0));
		else if (state != 0)
			kred__log("host: %s is damaged (%s): rebuilding", path,
				  why ? why : "its seal does not match");
		kred__free(path);
		path = NULL;
	}
	if (!dl) {
		s = build(h, key, identity, src, flags, &path, err);
		if (s) {
			kred__free(e);
			return s;
		}
		dl = load(path, run, &task_rows, &why);
		if (!dl) {
			if (h->ctx)
				kred__ctx_set_log(h->ctx, why);
			s = kred__fail(err, KRED_EBUILD, -1, "cannot load the module %s: %s", path,
				       why);
			kred__free(path);
			kred__free(e);
			return s;
		}
		kred__free(path);
	}
	e->dl = dl;
	e->run[0] = run[0];
	e->run[1] = run[1];
	e->task_rows = task_rows;
	e->next = h->entries;
	h->entries = e;
	*out = e;
	return KRED_OK;
}

static kred_status host_source(void *state, const struct kred_reduction *r, char **out,
			       struct kred__error *err)
{
	struct kred__layout l;
	kred_status s = kred__layout_make(r, &l, err);

	if (s)
		return s;
	s = kred__emit_source(&kred__dialect_c, r, &l, kred__kernel_host_c, out, err);
	kred__layout_free(&l);
	return s;
}

static kred_status host_compile(void *state, struct kred_reduction *r, void **module,
				struct kred__error *err)
{
	struct host *h = state;
	struct host_module *m;
	struct kred__hash hash;
	struct kred__emit_loops loops;
	uint64_t identity;
	const char *flags, *reason = NULL, *version;
	char *src = NULL, key[33];
	kred_status s;

	*module = NULL;
	m = kred__calloc(1, sizeof(*m));
	if (!m)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	s = kred__layout_make(r, &m->l, err);
	if (s)
		goto fail;
	s = kred__emit_source_loops(&kred__dialect_c, r, &m->l, kred__kernel_host_c, &src, &loops,
				    err);
	if (s)
		goto fail;
	flags = cflags(h->cc, loops.ngram > 0, (kred__reds[r->red].flags & KRED__RED_K) != 0);
	version = kred__compiler_version(h->cc, &reason);
	if (!version) {
		s = kred__fail(err, KRED_EBUILD, -1, "the C compiler '%s' is not usable: %s",
			       h->cc, reason ? reason : "out of memory");
		goto fail;
	}
	kred__hash_init(&hash);
	kred__hash_str(&hash, kred_version());
	kred__hash_str(&hash, "host");
	kred__hash_str(&hash, kred__cpu_id());
	kred__hash_str(&hash, h->cc);
	kred__hash_str(&hash, kred__compiler_path(h->cc));
	kred__hash_str(&hash, version);
	kred__hash_str(&hash, flags);
	identity = kred__cache_identity(&hash);
	kred__hash_str(&hash, src);
	kred__hash_hex(&hash, key);
	s = get_module(h, key, identity, src, flags, &m->e, err);
	if (s)
		goto fail;
	kred__free(src);
	*module = m;
	return KRED_OK;
fail:
	kred__free(src);
	kred__layout_free(&m->l);
	kred__free(m);
	return s;
}

static void host_module_free(void *state, void *module)
{
	struct host_module *m = module;

	if (!m)
		return;
	kred__layout_free(&m->l);
	kred__free(m);
}

/* The arguments of one side, packed rows x width; the argument itself when it is alone
 * there, a dummy when the side is empty. *owned is what to free. */
static const void *pack(const struct host_module *m, const struct kred_reduction *r, int side,
			int64_t rows, const void *const *args, size_t size, void **owned)
{
	static const double dummy[1];
	int width = m->l.width[side], alone = kred__layout_alone(&m->l, r, side);
	char *dst;

	*owned = NULL;
	if (width == 0)
		return dummy;
	if (alone >= 0)
		return args[alone];
	dst = kred__malloc((size_t)rows * (size_t)width * size);
	if (!dst)
		return NULL;
	kred__layout_pack(&m->l, r, side, args, 0, rows, width, size, dst);
	*owned = dst;
	return dst;
}

/* A run, restricted to g when it is not NULL. */
static kred_status host_call(const struct host *h, const struct host_module *m,
			     const struct kred_reduction *r, int64_t nx, int64_t ny,
			     const void *const *args, void *out, const struct kred__ranges *g,
			     struct kred__error *err)
{
	int64_t rows = r->axis == KRED_REDUCE_J ? nx : ny, cols = r->axis == KRED_REDUCE_J ? ny : nx;
	size_t size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	void *own[3] = { 0 };
	const void *xr, *yc, *p;
	int32_t *tasks = NULL;
	int64_t n_tasks = 0;
	kred_status s = KRED_OK;
	int rc;

	if (rows == 0)
		return KRED_OK;
	xr = pack(m, r, KRED__SIDE_ROW, rows, args, size, &own[0]);
	yc = pack(m, r, KRED__SIDE_COL, cols, args, size, &own[1]);
	p = pack(m, r, KRED__SIDE_PRM, 1, args, size, &own[2]);
	if (!xr || !yc || !p) {
		s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto done;
	}
	if (g) {
		s = kred__range_tasks(g, rows, m->e->task_rows, &tasks, &n_tasks, err);
		if (s)
			goto done;
	}
	if (g && size == 8)
		rc = ((ranged_f64)m->e->run[1])(rows, cols, xr, yc, p, out, h->threads, n_tasks,
						tasks, g->red);
	else if (g)
		rc = ((ranged_f32)m->e->run[1])(rows, cols, xr, yc, p, out, h->threads, n_tasks,
						tasks, g->red);
	else if (size == 8)
		rc = ((run_f64)m->e->run[0])(rows, cols, xr, yc, p, out, h->threads);
	else
		rc = ((run_f32)m->e->run[0])(rows, cols, xr, yc, p, out, h->threads);
	if (rc)
		s = kred__fail(err, KRED_ENOMEM, -1, "out of memory in the host kernel");
done:
	for (int k = 0; k < 3; k++)
		kred__free(own[k]);
	kred__free(tasks);
	return s;
}

static kred_status host_run(void *state, void *module, const struct kred_reduction *r,
			    int64_t nx, int64_t ny, const void *const *args, void *out,
			    struct kred__error *err)
{
	return host_call(state, module, r, nx, ny, args, out, NULL, err);
}

static kred_status host_run_ranged(void *state, void *module, const struct kred_reduction *r,
				   int64_t nx, int64_t ny, const void *const *args, void *out,
				   const struct kred__ranges *g, struct kred__error *err)
{
	return host_call(state, module, r, nx, ny, args, out, g, err);
}

static void host_report(struct kred__buf *b)
{
	const char *reason = NULL, *v = kred__compiler_version(compiler(), &reason);

	if (!v) {
		kred__buf_printf(b, "host: not available (the C compiler '%s' is not usable: %s; "
				 "set KRED_CC)\n", compiler(), reason ? reason : "out of memory");
		return;
	}
	kred__buf_printf(b, "host: available: %s, compiler '%s' (%.*s)\n", kred__cpu_name(),
			 compiler(), (int)strcspn(v, "\n"), v);
}

const struct kred_backend kred__backend_host = {
	.version = KRED__BACKEND_VERSION,
	.name = "host",
	.open = host_open,
	.close = host_close,
	.describe = host_describe,
	.compile = host_compile,
	.run = host_run,
	.module_free = host_module_free,
	.source = host_source,
	.report = host_report,
	/* a run reads its module and writes only its own buffers (the module stays
	 * loaded while the reduction holds it) */
	.concurrent_run = 1,
	.run_ranged = host_run_ranged,
};
