/* The kernel emitter's interface: dialects (what differs between C, OpenCL C, CUDA C and
 * GLSL), the packed layout of a reduction's arguments, and source generation. */
#ifndef KRED_EMIT_H
#define KRED_EMIT_H

#include "internal.h"

/* The math functions generated code calls, by the dialect's names. */
#define KRED__MATH(X)                                                                    \
	X(EXP) X(LOG) X(SIN) X(COS) X(ASIN) X(ACOS) X(ATAN) X(ATAN2) X(SQRT) X(FLOOR)   \
	X(ROUND) X(FABS) X(POW)

enum kred__math {
#define KRED__MATH_ENUM(e) KRED__MATH_##e,
	KRED__MATH(KRED__MATH_ENUM)
#undef KRED__MATH_ENUM
	KRED__MATH_COUNT
};

/* The names every dialect's prelude gives them (kr_exp, kr_log...): struct kred_dialect's
 * .math, the same in all. */
#define KRED__MATH_KR_NAMES                                                             \
	{                                                                               \
		[KRED__MATH_EXP] = "kr_exp",                                            \
		[KRED__MATH_LOG] = "kr_log",                                            \
		[KRED__MATH_SIN] = "kr_sin",                                            \
		[KRED__MATH_COS] = "kr_cos",                                            \
		[KRED__MATH_ASIN] = "kr_asin",                                          \
		[KRED__MATH_ACOS] = "kr_acos",                                          \
		[KRED__MATH_ATAN] = "kr_atan",                                          \
		[KRED__MATH_ATAN2] = "kr_atan2",                                        \
		[KRED__MATH_SQRT] = "kr_sqrt",                                          \
		[KRED__MATH_FLOOR] = "kr_floor",                                        \
		[KRED__MATH_ROUND] = "kr_round",                                        \
		[KRED__MATH_FABS] = "kr_fabs",                                          \
		[KRED__MATH_POW] = "kr_pow",                                            \
	}

/*
 * What differs from one kernel language to another. The emitter writes statements and
 * expressions that all of C, OpenCL C, CUDA C and GLSL accept (declarations, assignments,
 * ?:, for loops over ints, function calls) and takes everything else from here. The
 * generated code names its scalar type `real`: the prelude defines it from KR_DOUBLE.
 */
struct kred_dialect {
	const char *name;	 /* in the generated source's first comment */
	const char *suffix[2];	 /* appended to a literal, by dtype: "f", "" */
	const char *inf, *nan;	 /* +infinity and NaN in type real */
	const char *bool_type;	 /* for a local that holds a comparison: "int", "bool" */
	const char *fn_qual;	 /* before each generated function: "static inline" */
	const char *math[KRED__MATH_COUNT];
	/* Parameter lists of the generated functions, and printf formats for what they
	 * access, each with one %s: an index, a number or an expression of a loop
	 * variable. The state of one row: slot s; another state in a merge; output value
	 * c; row-side variable value c, column-side c, parameter c. */
	const char *init_params, *update_params, *merge_params, *finalize_params;
	const char *st_fmt, *ot_fmt, *out_fmt;
	const char *row_fmt, *col_fmt, *prm_fmt;
	/* Statements that mark parameters as used (C: "(void)p;"), may be "". */
	const char *update_unused;
	const char *prelude; /* the dialect's prelude text, from kernels/ */
	/* Optional, for templates that split the K-selections (KMin and co) in two: F of
	 * a tile computed for all rows into a buffer (kr_eval: value c of one row at
	 * f_fmt), then folded in row by row (kr_fold), skipping the terms that cannot
	 * enter (kr_may: nonzero when a term at f may enter, for a test of a whole tile
 * across rows). NULL: only kr_update is written. */
	const char *eval_params, *fold_params, *may_params, *f_fmt;
	/* Before the declaration of a local that compensated sums need computed as written
	 * ("precise " in GLSL, where the compiler may otherwise simplify (t - s) - y to 0);
	 * NULL: nothing. */
	const char *exact;
	/* 1 where the driver turns each access to a local array at a variable index into a
	 * select over the whole array (Mesa's llvmpipe does: a loop over a Vi(300) took 45 s
	 * to compile): the emitter then unrolls vectors of any size instead of looping. */
	int unroll_all;
	/* 1 where the template folds every column straight into the row's state, with no
	 * block-sum tiles to merge (kernels/tiled.comp's wide mode): the block scheme's sums
	 * are then compensated term by term, as the kahan scheme's, and KR_TILE_MERGE is 0. */
	int no_tiles;
	/* Where the template computes the squared distances and scalar products of a row
	 * and a column variable of many values as matrix products (lib/emit.c, find_grams),
	 * the format of gram slot g's value in kr_update and kr_eval; NULL: computed in the
	 * formula. The template then gets KR_NG and KR_GRAMS, and the parts of each side's
	 * packed row that the generated functions read themselves (KR_NXR, KR_XR, KR_NYR,
	 * KR_YR: a variable read only through gram slots need not be copied). */
	const char *gram_fmt;
	/* The least dimension a gram slot takes (its vectors have more values); 0: lib/emit.c's
	 * GRAM_MIN_DIM, measured for the host template. */
	int gram_min_dim;
	/* Where the template has a fast path for sums (the C dialect's host template,
	 * KR_GUARD): the exp that flags the arguments it does not take, called as
	 * name(x, kr_bad), for a second copy of kr_update (kr_update_g); NULL: none. A
	 * tile's row that raises the flag is computed again with kr_update. */
	const char *exp_guarded;
};

extern const struct kred_dialect kred__dialect_c;

/* Where each argument goes in the packed vectors a kernel reads: the row side holds the
 * variables indexed like the output (Vi for KRED_REDUCE_J, Vj for KRED_REDUCE_I), the
 * column side those reduced over, then the parameters. Arguments that F and G do not
 * use are left out. */
enum kred__side { KRED__SIDE_NONE = -1, KRED__SIDE_ROW = 0, KRED__SIDE_COL = 1,
		  KRED__SIDE_PRM = 2 };
struct kred__layout {
	int width[3];	/* by side: values per packed row */
	int n_args;
	int *side;	/* by argument position: enum kred__side */
	int *offset;	/* by argument position: first value in its side's packed row */
};
kred_status kred__layout_make(const struct kred_reduction *r, struct kred__layout *l,
			      struct kred__error *err);
void kred__layout_free(struct kred__layout *l);
/* The argument that fills side by itself (its only one, all of its width), else -1: a run
 * may use that argument's array as the side's packed rows. */
int kred__layout_alone(const struct kred__layout *l, const struct kred_reduction *r, int side);
/* Packs the rows [r0, r0 + n) of side's arguments (args, by position, size bytes a value)
 * into dst, stride values a row (stride >= the side's width; zeros past it). */
void kred__layout_pack(const struct kred__layout *l, const struct kred_reduction *r, int side,
		       const void *const *args, int64_t r0, int64_t n, int stride, size_t size,
		       void *dst);

/* State slots per output row of r's reduction (Kahan compensations included). */
int kred__emit_nstate(const struct kred_reduction *r);
/* The most gram slots a source has (KR_NG; kernels/prelude_glsl.h's KR_GMA). */
#define KRED__EMIT_MAX_GRAM 8
/* The gram slots that d's source of r under layout l may have, into slots (at most
 * KRED__EMIT_MAX_GRAM, as KR_GRAMS lists them: kind, row offset, column offset,
 * dimension), and their count: every squared distance or scalar product of r's graph that
 * the emitter would take, whether under F or not, so at least KR_NG. The backends size
 * their launches and budgets by them. */
int kred__emit_gram_slots(const struct kred_dialect *d, const struct kred_reduction *r,
			  const struct kred__layout *l, int slots[][4]);
/* Whether node n is one that d's source under layout l reads from a gram slot. */
int kred__emit_gram_node(const struct kred_dialect *d, const struct kred__layout *l,
			 const struct kred__node *n);

/*
 * The whole kernel source of r in dialect d: "#define KR_..." lines for the sizes, the
 * dialect's prelude, the formula F (and G) and the reduction's pieces as the functions
 * kr_init, kr_update, kr_merge and kr_finalize (see kernels/host.c for their contract),
 * then the template text tmpl. *out is the caller's (kred__free). KRED_EUNSUPPORTED when
 * a derivative op is left or the source is too large.
 */
kred_status kred__emit_source(const struct kred_dialect *d, const struct kred_reduction *r,
			      const struct kred__layout *l, const char *tmpl, char **out,
			      struct kred__error *err);

/* Loop iterations that one call of each generated function runs (kr_update with F's own
 * loops): past a few values the emitter writes loops (lib/emit.c), and llvmpipe ends an
 * invocation's loops after 65,535 iterations in all, which the Vulkan backend plans by. */
struct kred__emit_loops {
	int64_t init, update, merge, finalize;
	/* where the dialect has gram slots: the values of each side that the generated
	 * functions read themselves (KR_XR, KR_YR: the template copies them) */
	int64_t read[3];
	/* the gram slots of the source (KR_NG, KR_GRAMS) */
	int ngram;
	int grams[KRED__EMIT_MAX_GRAM][4];
};
kred_status kred__emit_loops(const struct kred_dialect *d, const struct kred_reduction *r,
			     const struct kred__layout *l, struct kred__emit_loops *loops,
			     struct kred__error *err);
/* Both in one pass: kred__emit_source's *out, and the same source's counts into *loops
 * (the host backend chooses its compile flags by the gram slots). */
kred_status kred__emit_source_loops(const struct kred_dialect *d, const struct kred_reduction *r,
				    const struct kred__layout *l, const char *tmpl, char **out,
				    struct kred__emit_loops *loops, struct kred__error *err);

#endif /* KRED_EMIT_H */
