/* The device layer: kernels/tiled.cl's sources in its two dialects, the making of its
 * modules, and the planning of the GPU backends' runs (packing, buffers, the 1D and 2D
 * schemes, ranges, auxiliary reductions and argument checks), written once over a table
 * of primitives per backend (OpenCL, CUDA, and Vulkan with its own template), so that
 * what CI runs on POCL and lavapipe is what runs on a GPU. */
#ifndef KRED_DEVICE_H
#define KRED_DEVICE_H

#include "emit.h"

/* ---- the template and its dialects (lib/tiled.c) */

extern const struct kred_dialect kred__dialect_opencl;
extern const struct kred_dialect kred__dialect_cuda;

/* The launch shape of kernels/tiled.cl, as the #defines put before it. */
struct kred__tiled_shape {
	int wg;		 /* KR_WG: work-items per group */
	int rpw;	 /* KR_RPW: rows per work-item */
	int tj;		 /* KR_TJ: columns per tile */
	int local_tiles; /* KR_LOCAL_TILES */
	int room;	 /* KR_ROOM: bytes of shared memory a group may take (gram tiles); 0:
			  * none, the device's shared memory is ordinary memory */
};

/* The whole source of r for kernels/tiled.cl in dialect d with the given shape: the
 * emitter's output with the shape's #defines put before the template. Caller frees. */
kred_status kred__tiled_source(const struct kred_dialect *d, const struct kred_reduction *r,
			       const struct kred__layout *l, const struct kred__tiled_shape *sh,
			       char **out, struct kred__error *err);

/* Whether src was emitted for fast math (kred_reduction_options.fast_math): the
 * backends add their compiler's fast-math options for such a source, so that the
 * options follow the source, which is in every cache key. */
int kred__tiled_fast_math(const char *src);

/* The kernels of tiled.cl, by the index a backend's launch takes. */
enum kred__kernel {
	KRED__K_REDUCE,
	KRED__K_MERGE,
	KRED__K_PACK,
	KRED__K_SUM_ROWS,
	KRED__N_KERNELS
};
extern const char *const kred__kernel_names[KRED__N_KERNELS];

/* ---- what a backend provides (lib/device.c plans with it) */

/* A device buffer: a cl_mem or a CUdeviceptr; 0 is none. */
typedef uint64_t kred__dmem;

/* The buffers a run asks for by role: a backend may keep one of each from run to run
 * (CUDA does), or make a new one every time (OpenCL does). KRED__MEM_OWN: a buffer of the
 * run's own, made and freed at each use. */
enum kred__mem_role {
	KRED__MEM_OWN = -1,
	KRED__MEM_ROW = KRED__SIDE_ROW, /* the packed sides */
	KRED__MEM_COL = KRED__SIDE_COL,
	KRED__MEM_PRM = KRED__SIDE_PRM,
	KRED__MEM_OUT,	 /* the output of a run on host arrays */
	KRED__MEM_PARTS, /* the partial states of the 2D scheme */
	KRED__MEM_TASKS, /* the tasks and intervals of a ranged run */
	KRED__MEM_RED,
	KRED__N_MEM_ROLES
};

/* An argument of a kernel launch. */
struct kred__karg {
	enum { KRED__ARG_MEM, KRED__ARG_LONG, KRED__ARG_INT } type;
	union {
		kred__dmem mem;
		int64_t l;
		int32_t i;
	} v;
};

/*
 * The primitives of one backend, each on its own state (struct kred__device.state).
 * Every call that can fail fills err with the backend's words for it. Work is queued in
 * order: a launch sees what earlier copies and launches wrote.
 */
struct kred__device_ops {
	/* A buffer of bytes (> 0) for role, holding a copy of init when it is not NULL
	 * (taken before the call returns). read_only: kernels only read it. */
	kred_status (*alloc)(void *state, int role, size_t bytes, const void *init,
			     int read_only, kred__dmem *out, struct kred__error *err);
	/* Gives back what alloc gave for role; the queued work that uses it still sees
	 * it. 0 is ignored. */
	void (*release)(void *state, int role, kred__dmem m);
	/* Copies bytes of m to host once the queued work is done. */
	kred_status (*read)(void *state, kred__dmem m, void *host, size_t bytes,
			    struct kred__error *err);
	/* Queues kernel k of module (the backend's own) on gx x gy groups of the module's
	 * shape.wg work-items each, with n arguments. */
	kred_status (*launch)(void *state, const void *module, enum kred__kernel k, int64_t gx,
			      int64_t gy, int n, const struct kred__karg *args,
			      struct kred__error *err);
	/* Checks that m, a buffer the user gave, is one of this device's with at least need
	 * bytes; what names it in the message ("argument 2"). */
	kred_status (*check)(void *state, kred__dmem m, int64_t need, const char *what,
			     struct kred__error *err);
	/* Waits for the queued work; where a failure inside a kernel shows. */
	kred_status (*finish)(void *state, struct kred__error *err);
	/* Optional: puts the work that follows on the caller's queue (a CUstream), or back
	 * on the backend's own for NULL; called under the context's lock. */
	void (*queue)(void *state, void *queue);

	/* -- modules: kernels/tiled.cl compiled for the device */
	/* The launch shape of r's kernels for the layout l on this device: its group size
	 * and a tile of columns that fits its local memory. */
	void (*shape)(void *state, const struct kred_reduction *r, const struct kred__layout *l,
		      struct kred__tiled_shape *sh);
	/* Compiles src, kernels/tiled.cl in the device's dialect for r, into module (the
	 * backend's, of struct kred__device.module_size bytes, whose first member is the
	 * struct kred__dmodule already filled); the build log goes to r->ctx. */
	kred_status (*build)(void *state, const struct kred_reduction *r, const char *src,
			     void *module, struct kred__error *err);
	/* The largest group kernel k of a built module runs at (fewer than the shape's when
	 * it needs many registers); 0 when the device does not say. */
	int64_t (*max_group)(void *state, const void *module, enum kred__kernel k);
	/* Frees what build made in module (not the module itself). */
	void (*unload)(void *state, void *module);
	/* Optional: makes the device current for the calling thread (CUDA's primary
	 * context) until end; fails, saying why, where the device cannot run (a
	 * compile-only context). Runs, builds and unloads happen between the two. */
	kred_status (*begin)(void *state, struct kred__error *err);
	void (*end)(void *state);
};

/* A device as the planner sees it: its primitives and the figures it plans with. A
 * backend's state begins with its struct kred__device, so that the backend table's
 * compile, source, module_free, run and run_ranged may be the ones below. */
struct kred__device {
	const struct kred__device_ops *ops;
	void *state;
	const char *name;	/* the backend's, for logs: "opencl", "cuda" */
	const struct kred_dialect *dialect; /* what the template is written in */
	size_t module_size;	/* bytes of the backend's module, a struct kred__dmodule first */
	int compile_only;	/* modules get a shape and a source, and are never built */
	kred_scheme scheme;	/* the context's, or $KRED_SCHEME's */
	int64_t target_groups;	/* groups that make the device busy */
	int64_t max_grid_y;	/* the most groups along dimension 1; 0: no limit */
	size_t parts_cap;	/* bytes the 2D scheme's partial states may take */
	/* In messages about the user's buffers: what a missing one is ("NULL", "0"), and
	 * the names of the arguments of the public run call. */
	const char *none, *args_name, *out_name;
};

/* The part of a backend's module that the planner reads: the first member of each. */
struct kred__dmodule {
	struct kred__layout l;
	struct kred__tiled_shape shape;
	int nst;	/* state slots per row */
	size_t size;	/* bytes per value */
	int stride[3];	/* values per packed row of each side: its width, or more (Vulkan
			 * reads columns as whole texels of 4 floats or 2 doubles) */
	int max_splits; /* the most column ranges the device merges; 0: no limit of its own */
};

/* The largest power of two <= n, from 1 to 1024: a group size. */
int kred__device_pow2(int64_t n);

/* The scheme a context's runs take: its option, else $KRED_SCHEME (1d, 2d) when that is
 * auto (how the test suites run every case in both). */
kred_scheme kred__device_scheme(const kred_context *ctx);

/* ---- the backend table's entries for a device-layer backend (state: its struct
 * kred__device first) */

/* A module: the layout, the device's shape, the source built, and built again with
 * smaller groups while the device says the kernels cannot run at the shape's. */
kred_status kred__device_compile(void *state, struct kred_reduction *r, void **module,
				 struct kred__error *err);
void kred__device_module_free(void *state, void *module);
/* r's source as its module was (or would be) built. */
kred_status kred__device_source(void *state, const struct kred_reduction *r, char **out,
				struct kred__error *err);
/* Runs on host arrays: out = the reduction of args (restricted to g). */
kred_status kred__device_run(void *state, void *module, const struct kred_reduction *r,
			     int64_t nx, int64_t ny, const void *const *args, void *out,
			     struct kred__error *err);
kred_status kred__device_run_ranged(void *state, void *module, const struct kred_reduction *r,
				    int64_t nx, int64_t ny, const void *const *args, void *out,
				    const struct kred__ranges *g, struct kred__error *err);

/* The device of ctx for the public call named call (kred_reduction_run_opencl...), which
 * works on one device of backend b; NULL, with the context's error set, when ctx is
 * another backend's or b:all (hint: what to open instead). */
struct kred__device *kred__device_of(kred_context *ctx, const struct kred_backend *b,
				     const char *call, const char *hint);

/* kred_reduction_run_opencl and _cuda once the backend has checked that r is its own and
 * turned the user's buffers into mems (NULL when the user gave no array): the sizes and
 * buffers checked, then the run
 * (auxiliary reduction, reduction, row sum of a parameter's gradient) under the
 * context's lock, on the caller's queue when queue is not NULL (the backend must have
 * ops->queue), then a wait for that queue. Sets the context's error on failure. */
kred_status kred__device_run_user(const struct kred__device *d, kred_reduction *r, int64_t nx,
				  int64_t ny, const kred__dmem *mems, kred__dmem out, void *queue);

#endif
