/* kred: symbolic kernel reductions on any GPU or CPU.
 * The whole public API. Every call returns a kred_status; objects come back through an
 * out-pointer; destructors accept NULL. Strings returned by the library are owned by the
 * object they came from and live until that object is destroyed or the next call on it,
 * unless a comment says otherwise.
 *
 * ABI policy: symbols marked KRED_API are the only exported ones. Within a major version,
 * functions and enum values are only added, and option structs only grow at their end
 * (the caller sets their size field, so that an older caller keeps working).
 *
 * Threads: a context may be shared by threads. Several threads may create, run, get the
 * gradient of and destroy reductions on one context at once; the context serialises its
 * compilations and, on the GPU backends (opencl, cuda, vulkan), its runs, while host
 * and reference runs go on in parallel. One reduction may be used by one thread at a
 * time (run it from several threads only with a lock of your own). kred_errmsg,
 * kred_error_offset and kred_error_log tell of the calling thread's last call on the
 * context, as errno does, whatever other threads do with it. Creating and destroying a
 * context are not concurrent with other calls on it. Distinct contexts are independent.
 */
#ifndef KRED_H
#define KRED_H

#include <stddef.h>
#include <stdint.h>

#include "kred_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(KRED_BUILDING) && defined(__GNUC__)
#define KRED_API __attribute__((visibility("default")))
#else
#define KRED_API
#endif

/* The status list, written once: the enum, kred_status_name() and
 * kred_status_message() are all generated from it. Values are stable. */
#define KRED_STATUS_MAP(X)                                                        \
	X(OK, "success")                                                          \
	X(ENOMEM, "out of memory")                                                \
	X(EINVAL, "invalid argument")                                             \
	X(ESYNTAX, "syntax error")                                                \
	X(ENAME, "unknown name")                                                  \
	X(EARITY, "wrong number of arguments")                                    \
	X(EDIM, "dimension mismatch")                                             \
	X(EALIAS, "bad or conflicting alias")                                     \
	X(ERANGE, "integer argument out of range")                                \
	X(EDEPTH, "formula nested too deeply")                                    \
	X(EGRAD, "cannot differentiate")                                          \
	X(EREDUCTION, "bad reduction")                                            \
	X(EBACKEND, "backend not available")                                      \
	X(EBUILD, "kernel build failed")                                          \
	X(EDEVICE, "device error")                                                \
	X(EUNSUPPORTED, "not supported")                                          \
	X(EOVERFLOW, "size overflow")                                             \
	X(EIO, "input or output error")

typedef enum kred_status {
#define KRED__STATUS_ENUM(name, msg) KRED_##name,
	KRED_STATUS_MAP(KRED__STATUS_ENUM)
#undef KRED__STATUS_ENUM
	KRED_STATUS_COUNT
} kred_status;

/* "KRED_EDIM" and the like; "KRED_UNKNOWN" for a value outside the list. Static strings. */
KRED_API const char *kred_status_name(kred_status s);
/* One-line description of a status ("dimension mismatch"). Static string. */
KRED_API const char *kred_status_message(kred_status s);

/* The library's version, "MAJOR.MINOR.PATCH", and the same as one number
 * MAJOR * 10000 + MINOR * 100 + PATCH: compare with KRED_VERSION_NUMBER to check that the
 * header and the library agree. */
KRED_API const char *kred_version(void);
KRED_API int kred_version_number(void);

typedef enum kred_axis {
	KRED_REDUCE_J = 0, /* out_i = Reduction_j F: output has nx rows */
	KRED_REDUCE_I = 1  /* out_j = Reduction_i F: output has ny rows */
} kred_axis;

typedef enum kred_dtype {
	KRED_FLOAT32 = 0, /* the default of a zero-initialised spec, as in KeOps */
	KRED_FLOAT64 = 1
} kred_dtype;

typedef enum kred_sum_scheme {
	KRED_SUM_DEFAULT = 0, /* block */
	KRED_SUM_DIRECT = 1,  /* one running sum */
	KRED_SUM_BLOCK = 2,   /* a partial sum per tile, added to the total */
	KRED_SUM_KAHAN = 3    /* compensated summation */
} kred_sum_scheme;

typedef enum kred_scheme {
	KRED_SCHEME_AUTO = 0,
	KRED_SCHEME_1D = 1,
	KRED_SCHEME_2D = 2
} kred_scheme;

typedef struct kred_context kred_context;
typedef struct kred_reduction kred_reduction;

/* Options of a context. Zero-initialise, set struct_size = sizeof(kred_context_options)
 * (0 is taken as the current size), then set what you need. */
typedef struct kred_context_options {
	size_t struct_size;
	/* "auto" (default, also when NULL), "reference", "host", "opencl", "opencl:N",
	 * "cuda[:N]", "vulkan[:N]"; "opencl:all" (and "cuda:all", "vulkan:all") spreads
	 * each run's rows over every device of that backend. NULL means $KRED_BACKEND,
	 * else "auto". */
	const char *backend;
	/* Where compiled kernels are cached. NULL means $KRED_CACHE_DIR, else
	 * $XDG_CACHE_HOME/kred, else ~/.cache/kred. */
	const char *cache_dir;
	kred_scheme scheme;	/* 1D / 2D choice of the GPU backends */
	/* Cap on the device memory a run may use, in bytes; 0 = the device's own size
	 * ($KRED_DEVICE_MEMORY, when set, caps it too). Inputs and outputs that do not fit
	 * are streamed through the device in chunks whose partial results are merged. */
	int64_t device_memory;
	/* OpenMP threads of the host backend's runs; 0 = $KRED_NUM_THREADS, else
	 * $OMP_NUM_THREADS (its first number), else every CPU this process may run on. The
	 * runs use that many whatever omp_set_num_threads said elsewhere in the process
	 * (importing PyTorch sets it to the physical cores: 1 on a machine of 2 hyper-threads). */
	int threads;
	/* Nonzero: the context's reductions use fast math (kred_reduction_options.fast_math
	 * says what it is) unless their own options say otherwise. 0, the default: off. */
	int fast_math;
} kred_context_options;

/* Creates a context on the backend the options name. A backend that cannot run here
 * gives KRED_EBACKEND, and *out is still set (unless KRED_ENOMEM) so that
 * kred_errmsg(*out) says why; destroy it either way. opt may be NULL. */
KRED_API kred_status kred_context_create(const kred_context_options *opt, kred_context **out);
KRED_API void kred_context_destroy(kred_context *ctx);
/* The backend in use, e.g. "reference" or "host" or "opencl:Portable Computing Language:
 * pthread-...". Owned by the context. */
KRED_API const char *kred_context_backend(const kred_context *ctx);

/* The calling thread's last error on this context (or on a reduction made from it): a
 * message that, for a formula error, holds the formula and a caret under the offending
 * byte (a window of it for a long formula). "" when that call succeeded. Owned by the
 * context, valid until the thread's next call on it. ctx may be NULL. */
KRED_API const char *kred_errmsg(const kred_context *ctx);
/* Byte offset in the formula string (or alias, or weight: the message says which) of
 * the last error, or -1 when the error is not about a position. */
KRED_API long kred_error_offset(const kred_context *ctx);
/* For KRED_EBUILD: the compiler's log, else "". Owned by the context. */
KRED_API const char *kred_error_log(const kred_context *ctx);

typedef struct kred_spec {
	const char *formula;	      /* F */
	const char *weight;	      /* G of the ...Weight reductions, else NULL */
	const char *const *aliases;   /* "X = Vi(3)", "Y = Vj(1, 3)", "G = Pm(1)" ... */
	size_t n_aliases;
	const char *reduction;	      /* "Sum", "LogSumExp", "ArgKMin(5)", ... */
	kred_axis axis;		      /* KRED_REDUCE_J (default) or KRED_REDUCE_I */
	kred_dtype dtype;	      /* KRED_FLOAT32 (default) or KRED_FLOAT64 */
	kred_sum_scheme sum_scheme;   /* KRED_SUM_DEFAULT is block */
} kred_spec;

/* Parses, checks and compiles a reduction. The spec and its strings are copied: they may
 * be freed on return. On error *out is NULL and kred_errmsg(ctx) / kred_error_offset(ctx)
 * say what and where. */
KRED_API kred_status kred_reduction_create(kred_context *ctx, const kred_spec *spec,
					   kred_reduction **out);

/* Fast math: the math functions in the fast forms each backend has, in exchange for
 * accuracy. CUDA compiles with NVRTC's --use_fast_math (__expf, __logf, __sinf ...,
 * approximate division and square root, float32 subnormals flushed to zero); OpenCL calls
 * native_exp, native_log, native_sin, native_cos and native_sqrt in float32 and builds
 * with -cl-mad-enable; Vulkan calls GLSL's own exp and log in float32 (Vulkan allows exp
 * 3 + 2|x| ulp) instead of kred's; the host backend's exp is a shorter polynomial
 * (float32: within 4.5e-7 relative, 5.4 ulp measured, instead of 1 ulp; float64: within
 * 8e-14) whose results below 2^-124 (float32) and 2^-1020 (float64) may be flushed to
 * 0, as CUDA's fast math flushes subnormals. The reference backend ignores it. What fast
 * math never does:
 * assume away infinities and NaN (LogSumExp starts from -inf, Min from +inf; so not
 * -cl-fast-relaxed-math, not -ffast-math), reassociate sums (the block and Kahan schemes
 * still compensate), or change float64 on OpenCL and Vulkan. docs/DESIGN.md gives the
 * errors and speeds measured. */
typedef enum kred_fast_math {
	KRED_FAST_MATH_DEFAULT = 0, /* the context's kred_context_options.fast_math */
	KRED_FAST_MATH_OFF = 1,
	KRED_FAST_MATH_ON = 2
} kred_fast_math;

/* Options of a reduction. Zero-initialise, set struct_size =
 * sizeof(kred_reduction_options) (0 is taken as the current size), then set what you
 * need. */
typedef struct kred_reduction_options {
	size_t struct_size;
	kred_fast_math fast_math;
} kred_reduction_options;

/* kred_reduction_create with options (NULL: as kred_reduction_create). A gradient,
 * partial state or batch form of the reduction keeps its options. */
KRED_API kred_status kred_reduction_create_ex(kred_context *ctx, const kred_spec *spec,
					      const kred_reduction_options *opt,
					      kred_reduction **out);
/* 1 when r was compiled with fast math, else 0 (also for NULL). */
KRED_API int kred_reduction_fast_math(const kred_reduction *r);

/* Runs the reduction. args holds one pointer per argument position (the positions of the
 * aliases, or of Vi(POS,DIM) in the formula): a Vi argument is nx x dim, a Vj argument
 * ny x dim, a Pm argument dim values, all row-major and of the spec's dtype. out receives
 * nx x out_dim values (KRED_REDUCE_J) or ny x out_dim (KRED_REDUCE_I). nx or ny may be 0:
 * an empty reduction gives the reduction's neutral value (0, -inf, +inf, -1 for indices).
 * Checks: NULL pointers, negative sizes, byte counts that overflow, and in float32 an
 * index reduction over more than 2^24 terms (the index would not be exact). */
KRED_API kred_status kred_reduction_run(kred_reduction *r, int64_t nx, int64_t ny,
					const void *const *args, void *out);

/* ---- block-sparse runs (ranges), in KeOps 2's layout
 *
 * A ranged run restricts each block of output rows to a list of intervals of the reduced
 * rows; pairs outside them are not computed. For a reduction over j, block b holds the i
 * rows [ranges_i[2b], ranges_i[2b + 1]) and reduces over the j intervals
 * [redranges_j[2k], redranges_j[2k + 1]) for k from slices_i[b - 1] (0 for b = 0) to
 * slices_i[b] - 1: slices_i holds the cumulative end of each block's list. Blocks must not
 * overlap (a row has one list); an interval may be empty and intervals may overlap (a
 * pair in two intervals counts twice, as in KeOps). Rows in no block, and blocks with no
 * interval, get the reduction's neutral value (0, -inf, +inf, -1 for indices).
 *
 * A reduction over i reads the symmetric triple: blocks of j rows (ranges_j, slices_j)
 * with intervals of i rows (redranges_i). Left NULL, it is derived from the first one,
 * so that the gradient of a ranged reduction over j with respect to a j variable (a
 * reduction over i) runs on the same kred_ranges as the forward one, on the pairs the
 * forward reduction computed. All arrays are int32, as KeOps's, and are read during the
 * call only. */
typedef struct kred_ranges {
	size_t struct_size;	    /* sizeof(kred_ranges), or 0 */
	int64_t n_blocks_i;	    /* blocks of i rows */
	const int32_t *ranges_i;    /* n_blocks_i x 2: [start, end) of each block */
	const int32_t *slices_i;    /* n_blocks_i: the end of each block's list in redranges_j */
	const int32_t *redranges_j; /* slices_i[n_blocks_i - 1] x 2: intervals of j rows */
	int64_t n_blocks_j;	    /* the same for a reduction over i; NULL arrays: derived */
	const int32_t *ranges_j, *slices_j, *redranges_i;
} kred_ranges;

/* kred_reduction_run restricted to ranges (above); ranges NULL is kred_reduction_run.
 * Runs on every backend: each block's intervals are runs of the reduction's partial
 * state, merged with its own rules, as chunked runs are (so indices count the whole
 * reduced axis). Besides kred_reduction_run's checks: a block or interval that ends
 * before it starts or past its axis, slices that decrease or pass the intervals given,
 * and overlapping blocks are KRED_EINVAL, naming the array, the entry and the values. */
KRED_API kred_status kred_reduction_run_ranges(kred_reduction *r, int64_t nx, int64_t ny,
					       const void *const *args, void *out,
					       const kred_ranges *ranges);

/* ---- batches: B independent problems of the same sizes in one call (KeOps 2's batch
 * dimensions). Argument k holds arg_batch[k] problems' rows one after the other (B x nx
 * rows of a Vi variable, say), or 1 when one serves every problem (a size-1 batch
 * dimension, broadcast); out holds the B problems' outputs one after the other. Indices
 * (ArgMin, ArgKMin...) count each problem's own rows. The problems run as one
 * block-sparse run of them stacked along the rows: one launch on the host, OpenCL and
 * CUDA. A parameter may have a value per problem (arg_batch B: B x dim values): the
 * reduction is then remade with it as a variable of the output's rows holding each
 * problem's value on its rows (a compile on the first such call, kept with the reduction
 * for the next calls with the same parameters per problem). KRED_EUNSUPPORTED: the gradient with respect to a parameter, and a
 * parameter per problem in a reduction that runs an auxiliary one first (the gradient of
 * SumSoftMaxWeight in a variable of the reduced axis); run those problem by problem. */
typedef struct kred_batch {
	size_t struct_size;	  /* sizeof(kred_batch), or 0 */
	int64_t n_batch;	  /* B >= 1 */
	const int64_t *arg_batch; /* per argument: B or 1; NULL: B for every argument */
} kred_batch;

/* kred_reduction_run over a batch (above), nx and ny the sizes of one problem; batch NULL
 * is kred_reduction_run. */
KRED_API kred_status kred_reduction_run_batch(kred_reduction *r, const kred_batch *batch,
					      int64_t nx, int64_t ny, const void *const *args,
					      void *out);

/* ---- ranges from point clouds, as KeOps's grid_cluster, sort_clusters,
 * cluster_ranges_centroids and from_matrix: label points by voxel, sort them by label,
 * take each cluster's range and centroid, and keep the pairs of clusters whose centroids
 * are closer than a cut-off. Errors as elsewhere: kred_errmsg(ctx) says why. */

/* Labels the n points of dimension d (rows of x) by the voxel of side voxel that holds
 * them, counted from the smallest coordinates: labels[k] in [0, *n_clusters), numbered
 * in the lexicographic order of the voxels. A voxel that is not a positive number, or a
 * coordinate that is not finite, is KRED_EINVAL. */
KRED_API kred_status kred_grid_cluster(kred_context *ctx, const double *x, int64_t n, int d,
				       double voxel, int32_t *labels, int64_t *n_clusters);
/* The stable permutation that sorts points by label (perm[k]: the point that goes k-th)
 * and each cluster's range in that order, ranges[2c], ranges[2c + 1] (n_clusters x 2,
 * empty clusters included). Labels outside [0, n_clusters) are KRED_EINVAL. */
KRED_API kred_status kred_cluster_sort(kred_context *ctx, const int32_t *labels, int64_t n,
				       int64_t n_clusters, int64_t *perm, int32_t *ranges);
/* Each cluster's centroid (n_clusters x d), the mean of its points weighted by weights
 * (NULL: 1 each), and, when cluster_weights is not NULL, its total weight. A cluster of
 * weight 0 has its centroid at 0. */
KRED_API kred_status kred_cluster_centroids(kred_context *ctx, const double *x, int64_t n, int d,
					    const int32_t *labels, int64_t n_clusters,
					    const double *weights, double *centroids,
					    double *cluster_weights);
/* The ranges of a mask of cluster pairs (KeOps's from_matrix): keep[a * nc_j + c] != 0
 * when cluster a of the i side (rows ranges_i[2a] to ranges_i[2a + 1], as points sorted by
 * cluster) meets cluster c of the j side. Fills out with both triples, each block a
 * cluster, its intervals the kept clusters' ranges, those that follow each other joined;
 * the arrays are the library's: free them with kred_ranges_free. */
KRED_API kred_status kred_ranges_from_mask(kred_context *ctx, const int32_t *ranges_i,
					   int64_t nc_i, const int32_t *ranges_j, int64_t nc_j,
					   const unsigned char *keep, kred_ranges *out);
/* The same with the mask keep[a, c] = |centroid_i[a] - centroid_j[c]| < cutoff, without
 * making it: for d <= 3 the j centroids are sorted into cells of side cutoff and each i
 * centroid looks at the 3^d cells around its own. To keep every pair of points closer
 * than r, take cutoff = r plus the largest diameter of a cluster of each side (for
 * voxels of side v, r + 2 sqrt(d) v). */
KRED_API kred_status kred_ranges_from_centroids(kred_context *ctx, const int32_t *ranges_i,
						const double *centroids_i, int64_t nc_i,
						const int32_t *ranges_j, const double *centroids_j,
						int64_t nc_j, int d, double cutoff, kred_ranges *out);
/* Frees what kred_ranges_from_mask or _from_centroids put in r, and zeroes r. */
KRED_API void kred_ranges_free(kred_ranges *r);

/* ---- runs spread over several processes (the MPI companion library, libkred_mpi,
 * implements kred_comm with MPI; see kred_mpi.h).
 *
 * Each process (rank) holds its own slice of the rows of the i variables (nx_local rows)
 * and of the j variables (ny_local rows), and the parameters whole; slices may be uneven
 * or empty. kred_reduction_run_comm gives each rank its own rows of the result (its i
 * rows for a reduction over j, its j rows for one over i), reduced over the data of all
 * ranks: the slices of the reduced axis travel around a ring, each rank folding the block
 * it holds into partial states while the next block is in flight, and merging them with
 * the reduction's own merge. Indices (ArgMin, ArgKMin...) count the reduced axis across
 * ranks in rank order. A gradient with respect to a Pm variable is summed over the rows
 * of all ranks: every rank gets the whole vector. Every rank must call it with the same
 * reduction (same formula, reduction, dtype); each may use its own backend. If one rank
 * fails, every rank returns an error (KRED_EDEVICE "another rank failed" on the others)
 * and no rank is left waiting. */
typedef struct kred_comm {
	size_t struct_size; /* sizeof(kred_comm), or 0 */
	void *data;	    /* passed to every call */
	int rank, size;	    /* this process's rank, and the number of ranks */
	/* all[r] = the value rank r passed, for every r; 0 on success. */
	int (*allgather_i64)(void *data, int64_t mine, int64_t *all);
	/* Every rank: the maximum of the values passed, into *out; 0 on success. */
	int (*allreduce_max_i32)(void *data, int mine, int *out);
	/* Every rank: the element-wise sum of every rank's buf[0..n), in buf; 0 on success. */
	int (*allreduce_sum_f64)(void *data, double *buf, int64_t n);
	/* Starts sending send_bytes from send to rank (rank + 1) % size while receiving
	 * recv_bytes from rank (rank - 1 + size) % size into recv, and returns at once; *req
	 * is what shift_wait takes. 0 on success. */
	int (*shift_start)(void *data, const void *send, size_t send_bytes, void *recv,
			   size_t recv_bytes, void **req);
	/* Waits for the exchange that shift_start began; 0 on success. */
	int (*shift_wait)(void *data, void *req);
	/* Optional (NULL for none): lets the exchange req move on without waiting for it
	 * (MPI_Testall: many MPIs move a large message only inside MPI calls). When set, a
	 * rank computes the block in hand in pieces and calls it between them, so that the
	 * exchange overlaps the computation. 0 on success. */
	int (*progress)(void *data, void *req);
} kred_comm;

/* What a run_comm call measured, for benchmarks: seconds in all, computing, and waiting
 * for exchanges that computation did not hide. */
typedef struct kred_comm_stats {
	double total_s, compute_s, wait_s;
	int64_t bytes_sent;
} kred_comm_stats;

/* See above. args: this rank's slices and the parameters, as for kred_reduction_run
 * with (nx_local, ny_local); out: this rank's rows of the result. stats may be NULL. */
KRED_API kred_status kred_reduction_run_comm(kred_reduction *r, const kred_comm *comm,
					     int64_t nx_local, int64_t ny_local,
					     const void *const *args, void *out,
					     kred_comm_stats *stats);

/* The gradient of the reduction with respect to the variable named var (an alias name, or
 * "#POS" for a positional variable), as a new reduction that the caller destroys. Its
 * arguments, by position:
 *   0 .. n-1  the original arguments, in their positions;
 *   n         the cotangent, named "GRAD_OUT": same shape as the forward output (a Pm
 *             when the reduction is itself the gradient of a Pm variable);
 *   n + 1     the forward output, named "FWD_OUT", for every reduction except Sum
 *             (LogSumExp, the Weight reductions, Max_SumShiftExp, Min, Max, KMin and the
 *             value parts of Min_ArgMin, Max_ArgMax, KMin_ArgKMin).
 * (The names get a digit appended if the formula already uses them.) Its output has the
 * shape of var's input; for a Pm variable it is one vector of dim values (the library
 * sums over rows). Index reductions (ArgMin, ArgKMin...) have no gradient: KRED_EGRAD.
 * The gradient of Min/Max/KMin flows through the selected terms; terms tied within a
 * few ulps share the cotangent. */
KRED_API kred_status kred_reduction_grad(const kred_reduction *r, const char *var,
					 kred_reduction **out);

/* Number of argument positions the run call expects, and for each its category
 * (0 = Vi, 1 = Vj, 2 = Pm), dimension and name ("" if none). */
KRED_API int kred_reduction_n_args(const kred_reduction *r);
KRED_API kred_status kred_reduction_arg(const kred_reduction *r, int pos, int *category,
					int *dim, const char **name);
/* Values per output row. */
KRED_API int kred_reduction_out_dim(const kred_reduction *r);
/* The formula after aliases, derivatives and simplification, in canonical form. Owned
 * by the reduction. */
KRED_API const char *kred_reduction_formula(const kred_reduction *r);
/* The generated kernel source (for the reference backend, the canonical formula).
 * Owned by the reduction. NULL on error, with the reason in kred_errmsg. */
KRED_API const char *kred_reduction_source(kred_reduction *r);
KRED_API void kred_reduction_destroy(kred_reduction *r);

/* A text report of every backend compiled into this kred, the devices each sees, which
 * one "auto" would pick, and why a backend is missing. Free it with kred_free(). */
KRED_API kred_status kred_devices_report(char **out);
/* Frees memory the library handed over to the caller. */
KRED_API void kred_free(void *p);

/* ---- kernel_product: kernels by name, as in KeOps' kernel_product.
 *
 * A kernel is a text such as "gaussian(x,y) * (1 + linear(u,v)**2)". Its atomic formulas,
 * with D = <x-y, G (x-y)> (G the atom's parameter, see kred_kernel_param):
 *
 *   linear(x,y)                <x,y>                  (takes no parameter)
 *   gaussian(x,y)              exp(-D)
 *   laplacian(x,y)             exp(-sqrt(D))
 *   cauchy(x,y)                1 / (1 + D)
 *   inverse_multiquadric(x,y)  1 / sqrt(1 + D)
 *   distance(x,y)              sqrt(D)                (KeOps' name; the energy-distance
 *                                                      kernel is written "-distance(x,y)")
 *
 * combined with integer constants (0 to 10^9), +, -, *, unary minus, f**k (k an integer
 * from -1000 to 1000; write (f**2)**3, not f**2**3) and parentheses. Variables are single
 * lowercase letters; each atom takes a pair of them, x indexed by i and y by j. Pairs are
 * numbered in order of first appearance, atoms (and their parameters) in order of
 * appearance. A letter belongs to one pair and one role: "gaussian(x,y) + cauchy(y,z)" is
 * an error, as is "gaussian(x',yy)"; errors carry the byte offset in the kernel text
 * (kred_error_offset) and the message shows the text with a caret.
 *
 * The modes, with these extra inputs (E: columns of b and c):
 *   b: ny x E (Vj)   u: nx x 1 (Vi)   v: ny x 1 (Vj)   c: nx x E (Vi)
 *   h: nx x 1 (Vi)   s: nx x 1 (Vi)   t: ny x 1 (Vj)
 *
 *   KRED_KP_SUM                    a_i = sum_j K_ij b_j                              (E)
 *   KRED_KP_LSE                    a_i = log sum_j exp(log K_ij + b_j)               (1)
 *   KRED_KP_LOG_SCALED             a_i = sum_j exp(log K_ij + u_i + v_j) b_j         (E)
 *   KRED_KP_LOG_SCALED_LSE         a_i = log sum_j exp(log K_ij + u_i + v_j + b_j)   (1)
 *   KRED_KP_LOG_SCALED_BARYCENTER  a_i = sum_j exp(log K_ij + u_i + v_j) (b_j - c_i) (E)
 *   KRED_KP_LSE_MULT_I             a_i = log sum_j exp(h_i log K_ij + b_j)           (1)
 *   KRED_KP_SINKHORN_COST          a_i = sum_j -log K_ij exp(log K_ij + s_i + t_j)   (1)
 *   KRED_KP_SINKHORN_PRIMAL        a_i = sum_j (u_i + v_j - 1) exp(log K_ij + s_i + t_j) (1)
 *
 * (the output's values per row in brackets). The LogSumExp modes need E = 1. log K is
 * formed from the atoms' own logs: log gaussian = -D, log cauchy = -log(1 + D), a
 * product's log is the sum of the logs, log(f**k) = k log f, and a sum's log is Log of the
 * sum. So the log modes need a kernel that cannot be negative: linear(x,y) and a minus
 * are refused there (KRED_EINVAL, with the offset), unless under an even power.
 *
 * Each call becomes an ordinary kred_spec (formula, aliases, reduction "Sum" or
 * "LogSumExp", axis KRED_REDUCE_J), so every backend, kred_reduction_grad and
 * kred_reduction_source serve it unchanged. Its aliases, in argument order:
 *   G_a = Pm(k) or Vj(k)   one per atom a that has a parameter, in atom order (a counts
 *                          every atom, linear ones included: "G_0", "G_2" for
 *                          "gaussian(x,y) * linear(u,v) * cauchy(x,y)")
 *   x = Vi(D_p)            the first letter of every pair, in pair order
 *   y = Vj(D_p)            then the second letter of every pair, in pair order
 *   B U V C H S T          the mode's extra inputs, in this order, those it uses
 * (the order of KeOps' kernel_product: parameters, x's, y's, then the mode's inputs). */

typedef enum kred_kernel_mode {
	KRED_KP_SUM = 0,
	KRED_KP_LSE = 1,
	KRED_KP_LOG_SCALED = 2,
	KRED_KP_LOG_SCALED_LSE = 3,
	KRED_KP_LOG_SCALED_BARYCENTER = 4,
	KRED_KP_LSE_MULT_I = 5,
	KRED_KP_SINKHORN_COST = 6,
	KRED_KP_SINKHORN_PRIMAL = 7
} kred_kernel_mode;

/* The shape of an atom's parameter G, for a pair of dimension D. The j-varying shapes hold
 * one G per point y_j (ny rows). A full matrix is row-major and should be symmetric (only
 * its symmetric part counts). */
typedef enum kred_kernel_param {
	KRED_KP_NONE = 0,	/* no parameter: linear, and only linear */
	KRED_KP_SCALAR = 1,	/* 1 value: D = g |x-y|^2 */
	KRED_KP_DIAGONAL = 2,	/* D values */
	KRED_KP_FULL = 3,	/* D*D values */
	KRED_KP_SCALAR_J = 4,	/* ny x 1 */
	KRED_KP_DIAGONAL_J = 5, /* ny x D */
	KRED_KP_FULL_J = 6	/* ny x D*D */
} kred_kernel_param;

/* The extra inputs, as the bits kred_kernel_mode_inputs() returns. */
enum {
	KRED_KP_IN_B = 1,
	KRED_KP_IN_U = 2,
	KRED_KP_IN_V = 4,
	KRED_KP_IN_C = 8,
	KRED_KP_IN_H = 16,
	KRED_KP_IN_S = 32,
	KRED_KP_IN_T = 64
};

/* "sum", "lse", "log_scaled", ... to the mode; KRED_EINVAL for another name. */
KRED_API kred_status kred_kernel_mode_parse(const char *name, kred_kernel_mode *out);
/* The mode's name, a static string; NULL for a value outside the list. */
KRED_API const char *kred_kernel_mode_name(kred_kernel_mode mode);
/* The extra inputs the mode takes (KRED_KP_IN_* bits); 0 for a value outside the list. */
KRED_API unsigned kred_kernel_mode_inputs(kred_kernel_mode mode);

/* A parsed kernel text, for a caller that needs its atoms and pairs before it knows the
 * dimensions (the command does). */
typedef struct kred_kernel kred_kernel;

/* Parses a kernel text (copied). On error *out is NULL and kred_errmsg(ctx) /
 * kred_error_offset(ctx) say what and where (KRED_ESYNTAX, KRED_ENAME for an unknown
 * kernel name, KRED_EALIAS for a letter used in two pairs or roles). */
KRED_API kred_status kred_kernel_parse(kred_context *ctx, const char *text, kred_kernel **out);
KRED_API int kred_kernel_n_atoms(const kred_kernel *k);
KRED_API int kred_kernel_n_pairs(const kred_kernel *k);
/* Atom a: its name ("gaussian", owned by the library), its pair, and its byte offset in the
 * text. Any out-pointer may be NULL. KRED_EINVAL when a is out of range. */
KRED_API kred_status kred_kernel_atom(const kred_kernel *k, int a, const char **name, int *pair,
				      long *offset);
/* Pair p: its two letters. */
KRED_API kred_status kred_kernel_pair(const kred_kernel *k, int p, char *x, char *y);
KRED_API void kred_kernel_destroy(kred_kernel *k);

/* What a kernel product computes. Zero-initialise, then set the fields. The pointers are
 * read during the call only. */
typedef struct kred_kernel_product_spec {
	const char *kernel;		   /* "gaussian(x,y) * linear(u,v)**2" */
	kred_kernel_mode mode;
	const int *dims;		   /* dimension D of each pair, in pair order */
	size_t n_pairs;
	const kred_kernel_param *params;   /* shape of each atom's parameter, in atom order */
	size_t n_params;
	int e;				   /* columns of b and c; 0 means 1; ignored
					    * by the modes without b */
	kred_dtype dtype;
	kred_sum_scheme sum_scheme;
} kred_kernel_product_spec;

/* Translates a kernel product into a kred_spec: formula, aliases (see above) and reduction.
 * *out is one block (the struct, its alias array and its strings) that the caller frees
 * with kred_free(); it can be passed to kred_reduction_create as it is. On error *out is
 * NULL, and kred_errmsg(ctx) names what is wrong: the kernel text (with its offset), the
 * number of dims or params against the kernel's pairs and atoms, a parameter shape that
 * does not fit its atom, E != 1 in a LogSumExp mode, a log mode on a signed kernel. */
KRED_API kred_status kred_kernel_product_spec_build(kred_context *ctx,
						    const kred_kernel_product_spec *kp,
						    kred_spec **out);
/* kred_kernel_product_spec_build then kred_reduction_create: a reduction like any other,
 * whose arguments are in the order above. Destroy it with kred_reduction_destroy. */
KRED_API kred_status kred_kernel_product_create(kred_context *ctx,
						const kred_kernel_product_spec *kp,
						kred_reduction **out);

/* The inputs of a kernel product by name; each array is row-major, of the spec's dtype.
 * gamma has n_params pointers (NULL, or anything, for a KRED_KP_NONE atom); x and y have
 * n_pairs pointers (x[p]: nx x D_p, y[p]: ny x D_p). Inputs the mode does not take are
 * ignored. */
typedef struct kred_kernel_product_args {
	const void *const *gamma;
	const void *const *x;
	const void *const *y;
	const void *b, *u, *v, *c, *h, *s, *t;
} kred_kernel_product_args;

/* Runs a reduction made by kred_kernel_product_create(ctx, kp) with the inputs by name:
 * out receives nx rows of E values (sum, log_scaled, log_scaled_barycenter) or of 1 value.
 * KRED_EINVAL, naming the input, when one the mode needs is NULL (with rows to read), or
 * when r does not take the arguments kp describes. Errors are recorded on r's context. */
KRED_API kred_status kred_kernel_product_run(kred_reduction *r,
					     const kred_kernel_product_spec *kp, int64_t nx,
					     int64_t ny, const kred_kernel_product_args *args,
					     void *out);
/* The one-shot form: create, run, destroy. A loop that runs the same kernel product many
 * times should create it once and call kred_kernel_product_run. */
KRED_API kred_status kred_kernel_product(kred_context *ctx, const kred_kernel_product_spec *kp,
					 int64_t nx, int64_t ny,
					 const kred_kernel_product_args *args, void *out);

/* ---- data already on an OpenCL device (the opencl backend).
 *
 * The OpenCL objects of an opencl context, so that the caller can make buffers in its
 * cl_context and order its own work with kred's: *cl_context receives the cl_context and
 * *cl_queue the in-order cl_command_queue, each cast to void *. The queue is the
 * context's own; the cl_context is shared by every opencl context on the same device in
 * the process (so a buffer made for one of them is valid in the others), and kept until
 * the process ends. Both are valid at least until kred_context_destroy (clRetain* them
 * to keep them longer). Either
 * out-pointer may be NULL. KRED_EBACKEND when ctx is not an opencl context. */
KRED_API kred_status kred_context_opencl_handles(kred_context *ctx, void **cl_context,
						 void **cl_queue);

/* kred_reduction_run on OpenCL buffers, with nothing copied through the host: each
 * cl_mem_args[k] and cl_mem_out is a cl_mem cast to void * (NULL where there is nothing to
 * read or write), made in the cl_context of r's context (kred_context_opencl_handles),
 * holding the same row-major values kred_reduction_run takes. Same sizes and checks as
 * kred_reduction_run, plus: a buffer smaller than its argument, or from another
 * cl_context, is KRED_EINVAL; a context that is not an opencl one is KRED_EBACKEND. Work
 * that wrote the inputs must be finished or on the context's queue; the call returns once
 * the output is written (the queue finished). The buffers are the caller's. */
KRED_API kred_status kred_reduction_run_opencl(kred_reduction *r, int64_t nx, int64_t ny,
					       const void *const *cl_mem_args,
					       void *cl_mem_out);

/* ---- NVIDIA GPUs (the cuda backend), and CUDA code compiled without one.
 *
 * The CUDA driver (libcuda.so.1) and NVRTC (libnvrtc.so, else libnvrtc.so.13, .12, .11.2,
 * else /usr/local/cuda/lib64/libnvrtc.so) are opened at run time: kred links neither, and
 * $KRED_CUDA_LIBRARY and $KRED_NVRTC_LIBRARY name other files ("none" for none).
 *
 * "cuda:N" runs on GPU N (KRED_EBACKEND when there is no such GPU, or no NVRTC), in the
 * GPU's primary context: the one the CUDA runtime uses, so that memory from cudaMalloc,
 * CuPy or PyTorch can be passed to kred_reduction_run_cuda. "cuda" is GPU 0 or, where
 * there is no GPU (or no driver), a compile-only context: kred_context_backend says
 * "cuda:compile-only (no GPU: why)", reductions are created without compiling (NVRTC runs
 * in kred_reduction_ptx), kred_reduction_source gives their CUDA source, and running one
 * is KRED_EBACKEND. "cuda:sm_80" (or compute_80) is a compile-only context for that
 * architecture that never touches the driver, GPU or not. "auto" never takes a
 * compile-only context. On a GPU, kernels are compiled by NVRTC for its architecture (PTX
 * for the newest one NVRTC knows when the GPU is newer) and cached on disk;
 * $KRED_CUDA_OPTIONS adds NVRTC options. */

/* The PTX of r's CUDA source (kred_reduction_source) compiled by NVRTC for arch ("sm_80",
 * "compute_80" or "80"; NULL: the context's GPU, or the architecture of "cuda:sm_80", else
 * the oldest one NVRTC knows). Needs NVRTC only: no GPU, no driver. *ptx is the caller's
 * (kred_free). r must come from a cuda context (else KRED_EBACKEND, as when NVRTC is
 * missing); an architecture NVRTC does not know is KRED_EUNSUPPORTED, and a compile error
 * KRED_EBUILD with NVRTC's log in kred_error_log. For a gradient that runs an auxiliary
 * reduction first (SumSoftMaxWeight's), it is the PTX of the gradient's own kernels. */
KRED_API kred_status kred_reduction_ptx(kred_reduction *r, const char *arch, char **ptx);

/* kred_reduction_run on GPU memory, with nothing copied through the host: cu_args[k] and
 * cu_out are CUdeviceptr values (0 where there is nothing to read or write) in the
 * primary context of r's GPU, holding the same row-major values kred_reduction_run takes.
 * Same sizes and checks as kred_reduction_run, plus: a pointer that is not device memory
 * of that context, or whose allocation ends too soon, is KRED_EINVAL; a context that is not
 * a cuda one, or is compile-only, is KRED_EBACKEND. kred's kernels run on the legacy
 * default stream, after the work of the context's blocking streams; the call returns once
 * the output is written. The memory is the caller's. */
KRED_API kred_status kred_reduction_run_cuda(kred_reduction *r, int64_t nx, int64_t ny,
					     const uint64_t *cu_args, uint64_t cu_out);

/* kred_reduction_run_cuda on the caller's stream (a CUstream cast to void *; NULL is
 * kred_reduction_run_cuda's legacy default stream; CU_STREAM_LEGACY and
 * CU_STREAM_PER_THREAD are taken): kred's copies and kernels are queued on it, after the
 * work queued there before, and the call waits for that stream only, not for the GPU,
 * before it returns with the output written. So a caller orders kred after its own
 * work without a device-wide synchronisation; a non-blocking stream and memory from
 * cuMemAllocAsync on it are fine. A stream of another context than the primary one of
 * r's GPU is KRED_EINVAL. */
KRED_API kred_status kred_reduction_run_cuda_stream(kred_reduction *r, int64_t nx, int64_t ny,
						    const uint64_t *cu_args, uint64_t cu_out,
						    void *stream);

/* The GPU of a cuda context: *device its index (as in "cuda:N" and cuDeviceGet) and
 * *cu_context its primary CUcontext cast to void * (owned by the context: retain it to
 * keep it longer). Either out-pointer may be NULL. KRED_EBACKEND for a context that is not
 * a cuda one or is compile-only. */
KRED_API kred_status kred_context_cuda_handles(kred_context *ctx, int *device,
					       void **cu_context);

#ifdef __cplusplus
}
#endif
#endif /* KRED_H */
