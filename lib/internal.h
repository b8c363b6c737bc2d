/* Internal declarations shared by the files of libkred: formula nodes and graphs, the
 * operation and reduction tables, errors, allocation, and the backend interface. */
#ifndef KRED_INTERNAL_H
#define KRED_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "kred.h"

#define KRED__HIDDEN __attribute__((visibility("hidden")))

/* ---- allocation: every allocation of the library goes through these, so that tests can
 * make the Nth one fail (kred__test_alloc_fail). */
void *kred__malloc(size_t n);
void *kred__calloc(size_t count, size_t size);
void *kred__realloc(void *p, size_t n);
char *kred__strdup(const char *s);
char *kred__strndup(const char *s, size_t n);
void kred__free(void *p);
/* Makes the n-th allocation from now fail (n >= 1), and every one after it while
 * `sticky`; n = 0 turns failures off. Returns how many allocations were made since the
 * last call. For tests only. */
KRED_API long kred__test_alloc_fail(long n, int sticky);

/* ---- a growing string; an allocation failure is sticky (oom set, text dropped). */
struct kred__buf {
	char *p;
	size_t len, cap;
	int oom;
};
void kred__buf_printf(struct kred__buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void kred__buf_vprintf(struct kred__buf *b, const char *fmt, va_list ap);
void kred__buf_puts(struct kred__buf *b, const char *s);
/* Hands the text over (NULL after an allocation failure) and resets b. */
char *kred__buf_take(struct kred__buf *b);
void kred__buf_free(struct kred__buf *b);

/* ---- errors. Where says which string the offset points into. */
enum kred__where { KRED__IN_NONE, KRED__IN_FORMULA, KRED__IN_WEIGHT, KRED__IN_ALIAS,
		   KRED__IN_REDUCTION };
struct kred__error {
	kred_status status;
	long offset;	    /* byte offset, -1 if none */
	enum kred__where where;
	int alias_index;    /* for KRED__IN_ALIAS */
	char msg[512];
};
/* Sets status and message (printf-style) once: a second call on an error already set
 * keeps the first one, so that the innermost cause wins. Returns status. */
kred_status kred__fail(struct kred__error *err, kred_status status, long offset,
		       const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void kred__error_clear(struct kred__error *err);

/* A byte count from the environment variable name: digits and an optional K, M or G
 * suffix (powers of 1024); 0 when it is unset, empty, not a positive number. */
int64_t kred__env_bytes(const char *name);

/* ---- the operation table. One row per operation:
 *   X(ENUM, "Name", "signature", dim rule, flags)
 * signature: one letter per argument in the call, f = formula, i = integer,
 *   L = integer list (an integer, or Ind(a, b, ...)), v = a variable (formula that must be
 *   a variable node), p = an argument position (integer), for GradFromPos.
 * The dimension rules live in ops.c; the evaluator (eval.c), the derivative rules
 * (diff.c) and the emitter (emit.c) keep tables in the same ORDER, checked at compile
 * time against KRED__OP_COUNT. */
#define KRED__OP_INTERNAL 1u	/* not callable by name (variables, constants) */
#define KRED__OP_ELEMENTWISE 2u /* element-wise with broadcasting of dimension-1 sides */
#define KRED__OP_DERIV 4u	/* rewritten away by diff.c before evaluation */
#define KRED__OP_PIECEWISE 8u	/* piecewise constant: zero derivative */

#define KRED__OPS(X)                                                                     \
	X(VAR, "Var", "", dim_var, KRED__OP_INTERNAL)                                    \
	X(CST, "Cst", "", dim_one, KRED__OP_INTERNAL)                                    \
	X(MINUS, "Minus", "f", dim_same, KRED__OP_ELEMENTWISE)                           \
	X(INV, "Inv", "f", dim_same, KRED__OP_ELEMENTWISE)                               \
	X(EXP, "Exp", "f", dim_same, KRED__OP_ELEMENTWISE)                               \
	X(LOG, "Log", "f", dim_same, KRED__OP_ELEMENTWISE)                               \
	X(XLOGX, "XLogX", "f", dim_same, KRED__OP_ELEMENTWISE)                           \
	X(SIN, "Sin", "f", dim_same, KRED__OP_ELEMENTWISE)                               \
	X(SINXDIVX, "SinXDivX", "f", dim_same, KRED__OP_ELEMENTWISE)                     \
	X(ASIN, "Asin", "f", dim_same, KRED__OP_ELEMENTWISE)                             \
	X(COS, "Cos", "f", dim_same, KRED__OP_ELEMENTWISE)                               \
	X(ACOS, "Acos", "f", dim_same, KRED__OP_ELEMENTWISE)                             \
	X(ATAN, "Atan", "f", dim_same, KRED__OP_ELEMENTWISE)                             \
	X(ATAN2, "Atan2", "ff", dim_bcast, KRED__OP_ELEMENTWISE)                         \
	X(SQRT, "Sqrt", "f", dim_same, KRED__OP_ELEMENTWISE)                             \
	X(RSQRT, "Rsqrt", "f", dim_same, KRED__OP_ELEMENTWISE)                           \
	X(SQUARE, "Square", "f", dim_same, KRED__OP_ELEMENTWISE)                         \
	X(POW, "Pow", "fi", dim_same, KRED__OP_ELEMENTWISE)                              \
	X(POWF, "Powf", "ff", dim_bcast, KRED__OP_ELEMENTWISE)                           \
	X(ABS, "Abs", "f", dim_same, KRED__OP_ELEMENTWISE)                               \
	X(SIGN, "Sign", "f", dim_same, KRED__OP_ELEMENTWISE | KRED__OP_PIECEWISE)        \
	X(STEP, "Step", "f", dim_same, KRED__OP_ELEMENTWISE | KRED__OP_PIECEWISE)        \
	X(RELU, "ReLU", "f", dim_same, KRED__OP_ELEMENTWISE)                             \
	X(CLAMP, "Clamp", "fff", dim_bcast, KRED__OP_ELEMENTWISE)                        \
	X(CLAMPINT, "ClampInt", "fii", dim_clampint, KRED__OP_ELEMENTWISE)               \
	X(IFELSE, "IfElse", "fff", dim_bcast, KRED__OP_ELEMENTWISE)                      \
	X(MOD, "Mod", "fff", dim_bcast, KRED__OP_ELEMENTWISE)                            \
	X(ROUND, "Round", "fi", dim_round, KRED__OP_ELEMENTWISE | KRED__OP_PIECEWISE)    \
	X(FLOOR, "Floor", "f", dim_same, KRED__OP_ELEMENTWISE | KRED__OP_PIECEWISE)      \
	X(ADD, "Add", "ff", dim_bcast, KRED__OP_ELEMENTWISE)                             \
	X(SUBTRACT, "Subtract", "ff", dim_bcast, KRED__OP_ELEMENTWISE)                   \
	X(MULT, "Mult", "ff", dim_bcast, KRED__OP_ELEMENTWISE)                           \
	X(DIVIDE, "Divide", "ff", dim_bcast, KRED__OP_ELEMENTWISE)                       \
	X(SCAL, "Scal", "ff", dim_scal, 0)                                               \
	X(SCALPROD, "Scalprod", "ff", dim_scalprod, 0)                                   \
	X(EQUAL, "Equal", "ff", dim_bcast, KRED__OP_ELEMENTWISE | KRED__OP_PIECEWISE)    \
	X(NOTEQUAL, "NotEqual", "ff", dim_bcast, KRED__OP_ELEMENTWISE | KRED__OP_PIECEWISE) \
	X(LESS, "Less", "ff", dim_bcast, KRED__OP_ELEMENTWISE | KRED__OP_PIECEWISE)      \
	X(GREATER, "Greater", "ff", dim_bcast, KRED__OP_ELEMENTWISE | KRED__OP_PIECEWISE) \
	X(LESSEQUAL, "LessEqual", "ff", dim_bcast, KRED__OP_ELEMENTWISE | KRED__OP_PIECEWISE) \
	X(GREATEREQUAL, "GreaterEqual", "ff", dim_bcast,                                 \
	  KRED__OP_ELEMENTWISE | KRED__OP_PIECEWISE)                                     \
	X(SUM, "Sum", "f", dim_one, 0)                                                   \
	X(MAX, "Max", "f", dim_one, 0)                                                   \
	X(MIN, "Min", "f", dim_one, 0)                                                   \
	X(ARGMAX, "ArgMax", "f", dim_one, KRED__OP_PIECEWISE)                            \
	X(ARGMIN, "ArgMin", "f", dim_one, KRED__OP_PIECEWISE)                            \
	X(SQNORM2, "SqNorm2", "f", dim_one, 0)                                           \
	X(NORM2, "Norm2", "f", dim_one, 0)                                               \
	X(NORMALIZE, "Normalize", "f", dim_same, 0)                                      \
	X(SQDIST, "SqDist", "ff", dim_sqdist, 0)                                         \
	X(WEIGHTEDSQNORM, "WeightedSqNorm", "ff", dim_wsqnorm, 0)                        \
	X(WEIGHTEDSQDIST, "WeightedSqDist", "fff", dim_wsqdist, 0)                       \
	X(ZERO, "Zero", "i", dim_zero, 0)                                                \
	X(ELEM, "Elem", "fi", dim_elem, 0)                                               \
	X(ELEMT, "ElemT", "fii", dim_elemt, 0)                                           \
	X(EXTRACT, "Extract", "fii", dim_extract, 0)                                     \
	X(EXTRACTT, "ExtractT", "fii", dim_extractt, 0)                                  \
	X(CONCAT, "Concat", "ff", dim_concat, 0)                                         \
	X(ONEHOT, "OneHot", "fi", dim_onehot, KRED__OP_PIECEWISE)                        \
	X(MATVECMULT, "MatVecMult", "ff", dim_matvec, 0)                                 \
	X(VECMATMULT, "VecMatMult", "ff", dim_vecmat, 0)                                 \
	X(TENSORPROD, "TensorProd", "ff", dim_tensorprod, 0)                             \
	X(KRON, "Kron", "ffLL", dim_kron, 0)                                             \
	X(TENSORDOT, "TensorDot", "ffLLLL", dim_tensordot, 0)                            \
	X(GRAD, "Grad", "fvf", dim_grad, KRED__OP_DERIV)                                 \
	X(DIFF, "Diff", "fvf", dim_diff, KRED__OP_DERIV)                                 \
	X(GRADFROMPOS, "GradFromPos", "fpf", dim_gradfrompos, KRED__OP_DERIV)            \
	X(GRADMATRIX, "GradMatrix", "fv", dim_gradmatrix, KRED__OP_DERIV)                \
	X(DIVERGENCE, "Divergence", "fv", dim_divergence, KRED__OP_DERIV)                \
	X(LAPLACIAN, "Laplacian", "fv", dim_laplacian, KRED__OP_DERIV)

enum kred__op {
#define KRED__OP_ENUM(e, name, sig, dim, flags) KRED__OP_##e,
	KRED__OPS(KRED__OP_ENUM)
#undef KRED__OP_ENUM
	KRED__OP_COUNT
};

#define KRED__MAX_ARGS 3  /* formula arguments of one node */
#define KRED__MAX_INTS 32 /* integer arguments of one node (lists stored as n, v...) */
#define KRED__MAX_DIM 65536
/* The longest path from a node down to a variable or constant, in any formula graph (the
 * user's, its derivatives, kernel products'). Every walk over a formula that recurses
 * (the parser, the printer, the simplifying builders of diff.c, the kernel-product
 * translation) recurses at most this deep, whatever the input: a left-nested chain such
 * as X+X+...+X, which nests nothing in its text, gets KRED_EDEPTH past it too. At the
 * limit the parser, the deepest of those walks, takes about 1.5 MiB of stack (8 MiB is
 * the default of a Linux thread). */
#define KRED__MAX_HEIGHT 4096
/* Parser nesting limit: the same, so that the canonical form of any formula, which nests
 * as deep as the formula is high, parses back. */
#define KRED__MAX_DEPTH KRED__MAX_HEIGHT

/* Variable categories, as in Var(POS, DIM, CAT). */
enum kred__cat { KRED__CAT_I = 0, KRED__CAT_J = 1, KRED__CAT_P = 2 };

/* A formula node. Nodes are hash-consed in a graph: two nodes are equal iff they are the
 * same pointer. Arguments are created before the node, so ids are a topological order.
 * VAR: ints = {pos, dim, cat}. CST: value. Integer arguments in ints, in call order;
 * a list argument (L) is stored as its length followed by its values. GradFromPos's
 * position and the variable of Grad/Diff/...: the variable is arg[1], a VAR node. */
struct kred__node {
	enum kred__op op;
	int dim;
	int nargs;
	int nint;
	const struct kred__node *arg[KRED__MAX_ARGS];
	int ints[KRED__MAX_INTS];
	double value;
	int id;		 /* index in graph->nodes */
	int height;	 /* 1 for a leaf, else 1 + the highest argument's: <= KRED__MAX_HEIGHT */
	uint64_t hash;
	struct kred__node *chain; /* hash bucket */
};

/* A named variable declared by an alias. */
struct kred__var {
	char *name;
	int pos, dim, cat;
};

/* The arena of one formula (and of the derivatives built from it): owns every node. */
struct kred__graph {
	struct kred__node **nodes; /* by id */
	int n_nodes, cap_nodes;
	struct kred__node **buckets;
	size_t n_buckets;
	struct kred__var *vars; /* aliases, in declaration order */
	int n_vars;
};

struct kred__op_info {
	const char *name;
	const char *sig;
	/* Checks the arguments of n (already set, dim not yet) and returns n's dimension,
	 * or -1 with err set (KRED_EDIM, KRED_ERANGE). */
	int (*dim)(const struct kred__node *n, struct kred__error *err);
	unsigned flags;
};
extern const struct kred__op_info kred__ops[KRED__OP_COUNT];
/* The op called name (a callable one), or -1. */
int kred__op_lookup(const char *name, size_t len);

/* ---- graphs and nodes (tree.c) */
struct kred__graph *kred__graph_new(void);
void kred__graph_free(struct kred__graph *g);
/* The unique node (op, args, ints, value), made if new; its dimension is checked with the
 * op's rule. NULL on error (KRED_ENOMEM, or the dimension rule's KRED_EDIM/KRED_ERANGE
 * with a message; offset left at -1 for the caller to fill). */
const struct kred__node *kred__node(struct kred__graph *g, enum kred__op op, int nargs,
				    const struct kred__node *const *args, int nint,
				    const int *ints, double value, struct kred__error *err);
/* Shorthands of kred__node; NULL arguments propagate NULL (the error stays in err). */
const struct kred__node *kred__cst(struct kred__graph *g, double v, struct kred__error *err);
const struct kred__node *kred__var_node(struct kred__graph *g, int pos, int dim, int cat,
					struct kred__error *err);
const struct kred__node *kred__op1(struct kred__graph *g, enum kred__op op,
				   const struct kred__node *a, struct kred__error *err);
const struct kred__node *kred__op2(struct kred__graph *g, enum kred__op op,
				   const struct kred__node *a, const struct kred__node *b,
				   struct kred__error *err);
const struct kred__node *kred__op3(struct kred__graph *g, enum kred__op op,
				   const struct kred__node *a, const struct kred__node *b,
				   const struct kred__node *c, struct kred__error *err);
/* An op with formula arguments and integer arguments. */
const struct kred__node *kred__opi(struct kred__graph *g, enum kred__op op, int nargs,
				   const struct kred__node *const *args, int nint,
				   const int *ints, struct kred__error *err);
/* Declares a named variable (alias). KRED_EALIAS if the name is taken by another
 * variable, or its position is taken with another category or dimension. */
kred_status kred__graph_declare(struct kred__graph *g, const char *name, size_t len, int pos,
				int dim, int cat, struct kred__error *err);
const struct kred__var *kred__graph_find(const struct kred__graph *g, const char *name,
					 size_t len);
/* Copies the DAG under n (made in graph src) into dst and returns its image there. The
 * variables (aliases) of src should be declared in dst first (kred__graph_copy_vars). */
const struct kred__node *kred__node_import(struct kred__graph *dst, const struct kred__node *n,
					   struct kred__error *err);
kred_status kred__graph_copy_vars(struct kred__graph *dst, const struct kred__graph *src,
				  struct kred__error *err);
/* The same with the variables at position p given category cat[p] where p < n_cat and
 * cat[p] >= 0 (batch.c: parameters with a value per problem become row variables). */
const struct kred__node *kred__node_import_recat(struct kred__graph *dst,
						 const struct kred__node *n, const int *cat,
						 int n_cat, struct kred__error *err);
kred_status kred__graph_copy_vars_recat(struct kred__graph *dst, const struct kred__graph *src,
					const int *cat, int n_cat, struct kred__error *err);
/* Whether node v occurs in the DAG under root. */
int kred__node_uses(const struct kred__node *root, const struct kred__node *v);
/* The canonical text of a node: functional form with the op table's names, variables by
 * alias name (else Var(POS,DIM,CAT)), constants as the shortest text that reads back
 * exactly. Parsing it with the same aliases gives the same node. Caller frees (kred__free). */
char *kred__node_print(const struct kred__graph *g, const struct kred__node *n);
/* Number of distinct nodes in the DAG under root. */
int kred__node_count(const struct kred__graph *g, const struct kred__node *root);

/* ---- parsing (parse.c) */
/* Parses an alias "NAME = Vi(DIM)", "NAME = Vj(POS, DIM)", "NAME=Pm(2)", "X = Vx(0,3)",
 * "X = Var(0,3,0)" into a declared variable; default_pos is used when POS is absent. */
kred_status kred__parse_alias(struct kred__graph *g, const char *src, int default_pos,
			      struct kred__error *err);
/* Parses a formula over the graph's aliases. On error err has the status, a message
 * and the byte offset in src. */
kred_status kred__parse_formula(struct kred__graph *g, const char *src,
				const struct kred__node **out, struct kred__error *err);

/* ---- derivatives (diff.c) */
/* Rewrites every derivative node (Grad, Diff, GradFromPos, GradMatrix, Divergence,
 * Laplacian) under root into ordinary operations, innermost first, and simplifies. */
kred_status kred__diff_expand(struct kred__graph *g, const struct kred__node *root,
			      const struct kred__node **out, struct kred__error *err);
/* The vector-Jacobian product: the gradient of (f | e) with respect to variable v (a VAR
 * node), as a formula of dimension d(v). f must be free of derivative nodes. */
const struct kred__node *kred__grad(struct kred__graph *g, const struct kred__node *f,
				    const struct kred__node *v, const struct kred__node *e,
				    struct kred__error *err);

/* Whether diff.c's builders simplify (1, always in the library). Tests and the bench set
 * it to 0 only to count the nodes of a gradient before simplification. */
extern int kred__diff_simplify;
/* The nodes of r's formula (its graph below the root); kred_reduction_grad with the
 * simplification on or off (what `kred bench` reports). */
int kred__reduction_nodes(const kred_reduction *r);
kred_status kred__reduction_grad_simplify(const kred_reduction *r, const char *var,
					  int simplify, kred_reduction **out);

/* ---- the reduction table (reduce.c). One row per reduction:
 *   X(ENUM, "Name", flags)
 * The row's out_dim rule is in reduce.c. */
#define KRED__RED_K 1u	    /* takes (K) */
#define KRED__RED_WEIGHT 2u /* takes a weight formula */
#define KRED__RED_SCALAR 4u /* F must be of dimension 1 */
#define KRED__RED_INDEX 8u  /* returns indices */
#define KRED__RED_SUMLIKE 16u /* takes a summation scheme */
#define KRED__RED_VALUES 32u  /* with INDEX: the values, then as many indices */
/* Without a weight, the state is (m, the sum of exp(F - m)) and, under the block and
 * Kahan schemes, the sum's compensation: a tile's partial state can be made from F's
 * values alone (the host template's KR_LSE_TILE). */
#define KRED__RED_EXPSUM 64u

#define KRED__REDUCTIONS(X)                                                              \
	X(SUM, "Sum", KRED__RED_SUMLIKE)                                                 \
	X(LSE, "LogSumExp", KRED__RED_SCALAR | KRED__RED_SUMLIKE | KRED__RED_EXPSUM)     \
	X(LSE_WEIGHT, "LogSumExpWeight", KRED__RED_SCALAR | KRED__RED_WEIGHT | KRED__RED_SUMLIKE) \
	X(SOFTMAX_WEIGHT, "SumSoftMaxWeight",                                            \
	  KRED__RED_SCALAR | KRED__RED_WEIGHT | KRED__RED_SUMLIKE)                       \
	X(MAX_SUMSHIFTEXP, "Max_SumShiftExp",                                            \
	  KRED__RED_SCALAR | KRED__RED_SUMLIKE | KRED__RED_EXPSUM)                       \
	X(MAX_SUMSHIFTEXP_WEIGHT, "Max_SumShiftExpWeight",                               \
	  KRED__RED_SCALAR | KRED__RED_WEIGHT | KRED__RED_SUMLIKE)                       \
	X(MIN, "Min", 0)                                                                 \
	X(MAX, "Max", 0)                                                                 \
	X(ARGMIN, "ArgMin", KRED__RED_INDEX)                                             \
	X(ARGMAX, "ArgMax", KRED__RED_INDEX)                                             \
	X(MIN_ARGMIN, "Min_ArgMin", KRED__RED_INDEX | KRED__RED_VALUES)                  \
	X(MAX_ARGMAX, "Max_ArgMax", KRED__RED_INDEX | KRED__RED_VALUES)                  \
	X(KMIN, "KMin", KRED__RED_K)                                                     \
	X(ARGKMIN, "ArgKMin", KRED__RED_K | KRED__RED_INDEX)                             \
	X(KMIN_ARGKMIN, "KMin_ArgKMin", KRED__RED_K | KRED__RED_INDEX | KRED__RED_VALUES)

enum kred__red {
#define KRED__RED_ENUM(e, name, flags) KRED__RED_##e,
	KRED__REDUCTIONS(KRED__RED_ENUM)
#undef KRED__RED_ENUM
	KRED__RED_COUNT
};

struct kred__red_info {
	const char *name;
	unsigned flags;
};
extern const struct kred__red_info kred__reds[KRED__RED_COUNT];
/* Parses "Sum", "ArgKMin(5)", ... */
kred_status kred__red_parse(const char *s, enum kred__red *red, int *k,
			    struct kred__error *err);
/* Values per output row, for F of dimension d, weight of dimension wd (0 if none). */
int kred__red_out_dim(enum kred__red red, int d, int wd, int k);

/* ---- contexts, reductions */
struct kred_reduction;
struct kred__ranges;

/* The backend interface. A backend is one const table; optional members may be NULL.
 * Members are only ever appended; version says how many the table has. */
#define KRED__BACKEND_VERSION 4
struct kred_backend {
	int version;
	const char *name; /* "reference", "host", "opencl", "cuda", "vulkan" */
	/* Opens the backend on a device: device is the text after "name:" or NULL.
	 * KRED_EBACKEND with the reason when it cannot run here. Required. */
	kred_status (*open)(kred_context *ctx, const char *device, void **state,
			    struct kred__error *err);
	/* Frees what open made. Required. */
	void (*close)(void *state);
	/* "opencl:POCL:pthread-..."; owned by state. Required. */
	const char *(*describe)(void *state);
	/* Whether this is a GPU (auto prefers GPUs). Optional: NULL means no. */
	int (*is_gpu)(void *state);
	/* Compiles a reduction into a module for this backend. Required. */
	kred_status (*compile)(void *state, struct kred_reduction *r, void **module,
			       struct kred__error *err);
	/* Runs a module; sizes and pointers are already checked. Required. */
	kred_status (*run)(void *state, void *module, const struct kred_reduction *r,
			   int64_t nx, int64_t ny, const void *const *args, void *out,
			   struct kred__error *err);
	/* Frees a module. Optional. */
	void (*module_free)(void *state, void *module);
	/* The kernel source of a reduction (caller frees). Optional: NULL means the
	 * canonical formula. */
	kred_status (*source)(void *state, const struct kred_reduction *r, char **out,
			      struct kred__error *err);
	/* Appends a listing of this backend's devices to b, or why there is none.
	 * Optional. */
	void (*report)(struct kred__buf *b);
	/* -- version 2 */
	/* Bytes of device memory a run may use (inputs, outputs and working buffers), or 0
	 * for no limit of the backend's own (the host). Optional: NULL means 0. */
	int64_t (*memory)(void *state);
	/* How many devices "name:N" can open (N from 0), for "name:all"; 0 when none.
	 * Optional: NULL means the backend has one device and no "all". */
	int (*device_count)(void);
	/* -- version 3 */
	/* Non-zero when run may be called by several threads at once on one state (each
	 * with its own module or reduction); otherwise the context serialises runs. */
	int concurrent_run;
	/* -- version 4 */
	/* Runs a module restricted to a block-sparse triple g (blocks of output rows, and
	 * their intervals of reduced rows; checked): rows outside g get the neutral value.
	 * Optional: NULL means the library runs it block by block (ranges.c). */
	kred_status (*run_ranged)(void *state, void *module, const struct kred_reduction *r,
				  int64_t nx, int64_t ny, const void *const *args, void *out,
				  const struct kred__ranges *g, struct kred__error *err);
};

extern const struct kred_backend kred__backend_reference;
extern const struct kred_backend kred__backend_cuda;
extern const struct kred_backend kred__backend_host;
extern const struct kred_backend kred__backend_opencl;
extern const struct kred_backend kred__backend_vulkan;
/* The host backend's C compiler ($KRED_CC, else cc) and its flags on this CPU: what
 * `kred bench` builds its baselines with, so that they meet kred's kernels on equal terms. */
const char *kred__host_cc(void);
const char *kred__host_cflags(void);
/* The registry: NULL-terminated, in the order auto tries them. */
extern const struct kred_backend *const kred__backends[];

/* "name:all" (multi.c): every device of a backend in one context, each run's output rows
 * split between them by measured speed. Not in the registry: kred__backend_open opens it
 * with the inner backend's name as its device. Code that needs one device (cl_mem and
 * CUdeviceptr runs, handles) refuses a context whose backend is this one. */
extern const struct kred_backend kred__backend_multi;
/* The inner backend of a "name:all" context, and its number of devices in *n (when n is
 * not NULL); NULL for another context. */
const struct kred_backend *kred__multi_inner(const kred_context *ctx, int *n);
/* The number of devices of a "name:all" context (0 for another context), and the share
 * of the rows each gets next, into shares[0..max) when shares is not NULL. */
int kred__multi_shares(const kred_context *ctx, double *shares, int max);
/* Test hook: the times measured on device are multiplied by scale (> 0), as if it were
 * that much slower. KRED_EBACKEND when ctx is not a "name:all" context. */
kred_status kred__multi_test_time_scale(kred_context *ctx, int device, double scale);

/* A context may be shared by threads (kred.h): its backend's compile, source and
 * module_free, and its run unless the backend says concurrent_run, are called under
 * lock (recursive). Its last error is kept per thread (context.c), as errno is. */
struct kred_context {
	const struct kred_backend *backend;
	void *bstate;
	char *backend_name;
	char *cache_dir;
	kred_context_options opt;
	pthread_mutex_t lock;
	unsigned long serial; /* unique in the process: tells a new context at an old
			       * address from the old one */
};

/* The calling thread's last error on ctx (status KRED_OK when there is none). */
const struct kred__error *kred__ctx_error(const kred_context *ctx);
/* Records err as the calling thread's last error on the context, formatting the message
 * with src and a caret at the offset when there is one. Returns err->status. */
kred_status kred__ctx_set_error(kred_context *ctx, const struct kred__error *err,
				const char *src);
kred_status kred__ctx_fail(kred_context *ctx, kred_status status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void kred__ctx_clear_error(kred_context *ctx);
/* Records a compiler's log with a KRED_EBUILD error (copied). */
void kred__ctx_set_log(kred_context *ctx, const char *log);

/* One argument position of a reduction. */
struct kred__arg {
	int cat, dim;
	const char *name; /* "" when only positional */
};

struct kred_reduction {
	kred_context *ctx;
	struct kred__graph *g;
	const struct kred__node *f; /* F, free of derivative nodes */
	const struct kred__node *w; /* weight G, or NULL */
	enum kred__red red;
	int k;
	kred_axis axis;
	kred_dtype dtype;
	kred_sum_scheme sum_scheme;
	int fast_math; /* kred_reduction_options.fast_math resolved: 0 or 1 */
	int out_dim;
	int n_args;
	struct kred__arg *args;
	char *formula_text; /* canonical F (and G) */
	char *source;	    /* from the backend, made on demand */
	void *module;	    /* the backend's compiled form */
	/* A gradient with respect to a Pm variable is an i-output reduction whose rows
	 * the library sums: then pm_sum is set and out_dim is the reduction's. */
	int pm_sum;
	/* An auxiliary reduction run first by kred_reduction_run on the first
	 * pre->n_args arguments (same nx, ny); its output is passed as the last argument
	 * (position n_args - 1, declared as a Vi or Vj variable of the right dimension).
	 * Used by gradients that need a forward quantity the user does not pass (e.g. the
	 * log-normaliser of SumSoftMaxWeight). Owned. The user passes n_args - 1 args. */
	struct kred_reduction *pre;
	/* The reduction whose output is r's partial state, when r's own output is not
	 * (partial.c); made when first needed. Owned. */
	struct kred_reduction *state_red;
	/* The reduction remade for batches with parameters of a value per problem
	 * (batch.c), and which positions it made row variables (n_args flags); kept for
	 * the next call with the same ones. Owned. */
	struct kred_reduction *batch_red;
	unsigned char *batch_rows;
};

/* Builds a reduction from parts already parsed (used by create and by grad): takes
 * ownership of g; compiles it on the context's backend. */
kred_status kred__reduction_finish(kred_context *ctx, struct kred__graph *g,
				   const struct kred__node *f, const struct kred__node *w,
				   enum kred__red red, int k, kred_axis axis, kred_dtype dtype,
				   kred_sum_scheme sum, int fast_math, int pm_sum,
				   kred_reduction *pre,
				   kred_reduction **out);
/* The gradient reduction of r with respect to variable var (diff.c); see
 * kred_reduction_grad in kred.h. Errors are recorded on r->ctx. */
kred_status kred__reduction_grad(const kred_reduction *r, const char *var,
				 kred_reduction **out);

/* The checks of kred_reduction_run (sizes, NULL pointers, overflows, float32 indices
 * over `reduced` terms), recorded on r's context. */
kred_status kred__run_check(kred_reduction *r, int64_t nx, int64_t ny, const void *const *args,
			    const void *out, int64_t reduced);

/* ---- partial states and chunked runs (partial.c). A state is a row of doubles
 * (kred__state_width per output row) from which blocks of the reduced axis merge. */
/* Makes r's state form ready (compiles its companion reduction when it needs one). */
kred_status kred__state_prepare(kred_reduction *r, struct kred__error *err);
int kred__state_width(const kred_reduction *r);
/* The states of an empty reduction. */
void kred__state_init(const kred_reduction *r, int64_t rows, double *st);
/* The states of r over one block: sizes and args as for run, offset = the index of the
 * block's first reduced row in the whole axis. Prepares r. */
kred_status kred__state_block(kred_reduction *r, int64_t nx, int64_t ny, int64_t offset,
			      const void *const *args, double *st, struct kred__error *err);
/* sub = the arguments of the block at output row r0 and reduced row c0 (pointers into
 * args, parameters unchanged). */
void kred__offset_args(const kred_reduction *r, const void *const *args, int64_t r0, int64_t c0,
		       const void **sub);
/* acc = the merge of acc and blk, row by row. */
void kred__state_merge(const kred_reduction *r, int64_t rows, double *acc, const double *blk);
/* r's output (of its dtype) from states. */
void kred__state_finish(const kred_reduction *r, int64_t rows, const double *st, void *out);
/* Runs r (no pre, no row sum) on its backend, in blocks when the inputs and output do not
 * fit the device memory cap (kred__memory_cap). */
kred_status kred__run_plain(kred_reduction *r, int64_t nx, int64_t ny, const void *const *args,
			    void *out, struct kred__error *err);
/* ---- ranged runs (ranges.c): kred_ranges checked, and its transposed triple derived
 * where a reduction over i needs it. */
struct kred__ranges {
	int64_t nb;		     /* blocks of output rows */
	const int32_t *rng, *slc, *red; /* as kred_ranges's triples */
};
struct kred__ranged {
	struct kred__ranges over_j, over_i; /* for reductions over j, and over i */
	int32_t *own;			     /* what was derived, one allocation */
};
/* Checks ranges against (nx, ny) and fills rg; need_i: derive over_i when not given.
 * kred__ranged_free(rg) afterwards, also on failure. */
kred_status kred__ranged_prepare(const kred_ranges *ranges, int64_t nx, int64_t ny, int need_i,
				 struct kred__ranged *rg, struct kred__error *err);
void kred__ranged_free(struct kred__ranged *rg);
/* The tasks of a GPU's ranged run (kernels/tiled.cl, kr_reduce given tasks): every row of
 * [0, nr) in one task of at most per rows within one block of g, or within a gap between
 * blocks (no interval), as int32 quadruples (first row, end row, first and end interval
 * in g->red); *tasks is freed with kred__free. */
kred_status kred__range_tasks(const struct kred__ranges *g, int64_t nr, int64_t per,
			      int32_t **tasks, int64_t *n_tasks, struct kred__error *err);
/* Runs r (no pre, no row sum) restricted to g, the triple of r's axis. */
kred_status kred__run_ranged(kred_reduction *r, int64_t nx, int64_t ny, const void *const *args,
			     void *out, const struct kred__ranges *g, struct kred__error *err);
/* The same block by block: each block's intervals run as partial states merged in
 * order, on any backend (what a backend's run_ranged falls back on for what it cannot
 * take in one launch). */
kred_status kred__run_ranged_blocks(kred_reduction *r, int64_t nx, int64_t ny,
				    const void *const *args, void *out,
				    const struct kred__ranges *g, struct kred__error *err);
/* Whether r's run on (nx, ny) goes to the backend whole, without chunks (partial.c). */
int kred__run_whole(kred_reduction *r, int64_t nx, int64_t ny);
/* The bytes a run may use on ctx's device: the least of the context option, of
 * $KRED_DEVICE_MEMORY and of what the backend reports; 0 = no limit. */
int64_t kred__memory_cap(const kred_context *ctx);
/* Counts since the last call, for tests: backend runs, and runs that were chunked. */
struct kred__run_stats {
	int64_t runs, chunked;
};
KRED_API struct kred__run_stats kred__run_stats_take(void);

/* ---- the reference evaluator (eval.c): double precision, pair by pair. */
/* Runs r on the reference evaluator; arguments already validated. */
kred_status kred__eval_run(const struct kred_reduction *r, int64_t nx, int64_t ny,
			   const void *const *args, void *out, struct kred__error *err);

#endif /* KRED_INTERNAL_H */
