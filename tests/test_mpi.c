/* kred_mpi_run under mpirun against kred_reduction_run on the whole data in one process.
 *
 * Every rank makes the same reduction on a backend of its own (rank 0 host, rank 1
 * opencl, rank 2 reference, and so on round), holds an uneven, sometimes empty, slice of
 * the i rows and of the j rows of data that every rank generates alike, runs
 * kred_mpi_run, and compares its own rows of the result with those of a single-process
 * run of the whole data on the reference backend; then one rank fails on purpose, and two
 * cases run on MPI_COMM_SELF (a ring of one). Without OpenCL, rank 1 falls back to host
 * and says so; in CI (CI=true) that is a failure.
 *
 * Each case's tolerance is in its comment. A "scale" is a per-row bound on the size of
 * the terms the two runs add (computed on the reference backend in float64 from |term|),
 * since both runs add the same terms in different orders (and blocks, and backends).
 */
#include <math.h>
#include <stdint.h>

#include "kred_mpi.h"
#include "mpi_check.h"
#include "test_config.h"

enum out_kind {
	ROWS_I, /* nx rows: a reduction over j (or a gradient with respect to a Vi) */
	ROWS_J, /* ny rows: a reduction over i */
	WHOLE	/* one vector on every rank: the gradient with respect to a Pm */
};

struct tcase {
	const char *name;
	const char *formula, *reduction;
	const char *aliases[6];
	kred_axis axis;
	kred_dtype dtype;
	const char *grad;	   /* run kred_reduction_grad(forward, grad) instead */
	enum out_kind out;
	int64_t nx[3], ny[3];	   /* the slices of ranks 0, 1, 2 (rank r takes r % 3's) */
	/* |out - expected| <= rtol * scale + atol, per value. The scale is that of the
	 * reduction scale_reduction of scale_formula (float64, reference backend, with the
	 * aliases scale_aliases, or the case's own when NULL, and the same arguments) over
	 * j, per row; for a WHOLE output, summed over the rows. scale_formula NULL: the
	 * scale is |expected|. exact: every value equal (indices, neutral values). */
	const char *scale_formula, *scale_reduction, *scale_aliases[6];
	double rtol, atol;
	int exact;
};

#define GAUSS "Exp(-G * SqDist(X, Y)) * B"
#define GAUSS_ALIASES { "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)" }
/* the arguments of a gradient of the Gaussian sum: the forward ones, then GRAD_OUT (E) */
#define GRAD_ALIASES { "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)", "E = Vi(2)" }

static const struct tcase cases[] = {
	/* The data are in [0, 1] and G in [0.5, 1.5]: every term of a Gaussian sum is
	 * positive, so the sum of |terms| is the result itself. float32: both runs add at most
	 * 40 terms of float32 values whose exp differs by at most a few ulps between backends;
	 * the error bound of such a sum is about (n + 4) eps = 44 * 6e-8 < 3e-6 of the sum of
	 * |terms|; 1e-5 leaves a margin. */
	{ .name = "Sum, Gaussian kernel, float32, slices i 5/0/11, j 7/9/4",
	  .formula = GAUSS, .reduction = "Sum", .aliases = GAUSS_ALIASES,
	  .dtype = KRED_FLOAT32, .out = ROWS_I,
	  .nx = { 5, 0, 11 }, .ny = { 7, 9, 4 }, .rtol = 1e-5 },
	/* float64: the same bound with eps = 1.1e-16 is below 1e-14; 1e-12 leaves a margin
	 * for exp's last bits on each backend. */
	{ .name = "Sum, Gaussian kernel, float64, slices i 6/6/4, j 0/12/8",
	  .formula = GAUSS, .reduction = "Sum", .aliases = GAUSS_ALIASES,
	  .dtype = KRED_FLOAT64, .out = ROWS_I,
	  .nx = { 6, 6, 4 }, .ny = { 0, 12, 8 }, .rtol = 1e-12 },
	{ .name = "Sum, float64, rank 1 holds no rows at all, slices i 8/0/8, j 9/0/7",
	  .formula = GAUSS, .reduction = "Sum", .aliases = GAUSS_ALIASES,
	  .dtype = KRED_FLOAT64, .out = ROWS_I,
	  .nx = { 8, 0, 8 }, .ny = { 9, 0, 7 }, .rtol = 1e-12 },
	/* log sum_j exp(F_j), float32: each F_j carries an absolute error of a few ulps of
	 * max |F_j| (the scale), which passes to the result unchanged, and the sum of the
	 * exponentials (all positive) a relative one below 3e-6, which passes as an absolute
	 * one to the log: 1e-5 * (scale + 1). */
	{ .name = "LogSumExp, float32, slices i 3/8/5, j 10/0/10",
	  .formula = "-G * SqDist(X, Y) + B", .reduction = "LogSumExp",
	  .aliases = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)" },
	  .dtype = KRED_FLOAT32, .out = ROWS_I,
	  .nx = { 3, 8, 5 }, .ny = { 10, 0, 10 },
	  .scale_formula = "Abs(-G * SqDist(X, Y) + B)", .scale_reduction = "Max",
	  .rtol = 1e-5, .atol = 1e-5 },
	/* The 3 nearest j of every i, counted across ranks; rank 0 holds fewer than 3 j
	 * rows, rank 1 none. float64 distances of random points: no ties, so the indices must
	 * be equal. */
	{ .name = "ArgKMin(3), float64, slices i 4/4/4, j 2/0/15",
	  .formula = "SqDist(X, Y)", .reduction = "ArgKMin(3)",
	  .aliases = { "X = Vi(3)", "Y = Vj(3)" },
	  .dtype = KRED_FLOAT64, .out = ROWS_I,
	  .nx = { 4, 4, 4 }, .ny = { 2, 0, 15 }, .exact = 1 },
	/* out_j = sum_i exp(-G |x_i - y_j|^2) a_i: the i slices travel; rank 2 holds no
	 * output rows. Positive terms, float64: as the float64 Sum. */
	{ .name = "Sum over i, float64, slices i 7/0/9, j 5/11/0",
	  .formula = "Exp(-G * SqDist(X, Y)) * A", .reduction = "Sum",
	  .aliases = { "X = Vi(3)", "Y = Vj(3)", "A = Vi(1)", "G = Pm(1)" },
	  .axis = KRED_REDUCE_I, .dtype = KRED_FLOAT64, .out = ROWS_J,
	  .nx = { 7, 0, 9 }, .ny = { 5, 11, 0 }, .rtol = 1e-12 },
	/* d/dX of the float64 Gaussian sum: terms -2G (x_i - y_j) exp(..) <b_j, e_i> of
	 * either sign; the scale is the sum of their absolute values, and the bound that of
	 * the float64 Sum. */
	{ .name = "gradient of the Gaussian Sum with respect to X, float64, slices i 5/0/11, "
		  "j 7/9/4",
	  .formula = GAUSS, .reduction = "Sum", .aliases = GAUSS_ALIASES,
	  .dtype = KRED_FLOAT64, .grad = "X", .out = ROWS_I,
	  .nx = { 5, 0, 11 }, .ny = { 7, 9, 4 },
	  .scale_formula = "2 * G * Abs(X - Y) * Exp(-G * SqDist(X, Y)) * Abs((B | E))",
	  .scale_reduction = "Sum", .scale_aliases = GRAD_ALIASES, .rtol = 1e-12 },
	/* d/dG: summed over every (i, j) of every rank, the whole vector on every rank.
	 * Terms -|x_i - y_j|^2 exp(..) <b_j, e_i>; the scale is the sum of their absolute
	 * values over all pairs, and the bound that of a float64 sum of 250 terms. */
	{ .name = "gradient of the Gaussian Sum with respect to the Pm G, float64, slices "
		  "i 0/9/7, j 6/6/6",
	  .formula = GAUSS, .reduction = "Sum", .aliases = GAUSS_ALIASES,
	  .dtype = KRED_FLOAT64, .grad = "G", .out = WHOLE,
	  .nx = { 0, 9, 7 }, .ny = { 6, 6, 6 },
	  .scale_formula = "SqDist(X, Y) * Exp(-G * SqDist(X, Y)) * Abs((B | E))",
	  .scale_reduction = "Sum", .scale_aliases = GRAD_ALIASES, .rtol = 1e-12 },
	/* the same in float32: 250 terms, (250 + 4) eps < 2e-5 of the sum of |terms| */
	{ .name = "gradient with respect to the Pm G, float32, slices i 0/9/7, j 6/6/6",
	  .formula = GAUSS, .reduction = "Sum", .aliases = GAUSS_ALIASES,
	  .dtype = KRED_FLOAT32, .grad = "G", .out = WHOLE,
	  .nx = { 0, 9, 7 }, .ny = { 6, 6, 6 },
	  .scale_formula = "SqDist(X, Y) * Exp(-G * SqDist(X, Y)) * Abs((B | E))",
	  .scale_reduction = "Sum", .scale_aliases = GRAD_ALIASES, .rtol = 5e-5 },
	/* No j rows on any rank: every i row gets the neutral value, exactly. */
	{ .name = "LogSumExp with no j rows anywhere: -inf, slices i 3/2/1, j 0/0/0",
	  .formula = "-G * SqDist(X, Y) + B", .reduction = "LogSumExp",
	  .aliases = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)" },
	  .dtype = KRED_FLOAT32, .out = ROWS_I,
	  .nx = { 3, 2, 1 }, .ny = { 0, 0, 0 }, .exact = 1 },
};

#define N_CASES (sizeof(cases) / sizeof(cases[0]))

static kred_context *ctx, *ref_ctx;

/* The same numbers on every rank: a generator seeded by the case and the argument. */
static uint64_t lcg;

static double uniform(void)
{
	lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
	return (double)(lcg >> 11) * 0x1.0p-53;
}

/* One argument of a case: the whole data in float64 and in the case's dtype. */
struct arg {
	int cat, dim;
	int64_t rows; /* nx, ny or 1 */
	double *f64;
	void *data;   /* f64 itself for float64 */
};

struct run {
	const struct tcase *c;
	size_t es; /* bytes per value */
	int64_t nx, ny, x0, y0, nx_l, ny_l; /* the whole sizes, this rank's first rows and counts */
	int n_args, out_dim;
	struct arg args[8];
	const void *whole[8], *local[8], *whole_f64[8];
};

static int64_t slice_sum(const int64_t *per3, int upto)
{
	int64_t s = 0;

	for (int r = 0; r < upto; r++)
		s += per3[r % 3];
	return s;
}

static kred_status make(kred_context *c, const struct tcase *t, kred_dtype dtype,
			kred_reduction **out)
{
	size_t n_aliases = 0;
	kred_spec spec = { .formula = t->formula, .aliases = t->aliases, .reduction = t->reduction,
			   .axis = t->axis, .dtype = dtype };
	kred_reduction *fwd = NULL;
	kred_status st;

	while (n_aliases < 6 && t->aliases[n_aliases])
		n_aliases++;
	spec.n_aliases = n_aliases;
	*out = NULL;
	st = kred_reduction_create(c, &spec, t->grad ? &fwd : out);
	if (st == KRED_OK && t->grad)
		st = kred_reduction_grad(fwd, t->grad, out);
	kred_reduction_destroy(fwd);
	return st;
}

/* The arguments of r, generated whole: points in [0, 1], parameters in [0.5, 1.5]. */
static int prepare(struct run *u, const struct tcase *t, int index, kred_reduction *r)
{
	memset(u, 0, sizeof(*u));
	u->c = t;
	u->es = t->dtype == KRED_FLOAT64 ? 8 : 4;
	u->nx = slice_sum(t->nx, mc_size);
	u->ny = slice_sum(t->ny, mc_size);
	u->x0 = slice_sum(t->nx, mc_rank);
	u->y0 = slice_sum(t->ny, mc_rank);
	u->nx_l = t->nx[mc_rank % 3];
	u->ny_l = t->ny[mc_rank % 3];
	u->n_args = kred_reduction_n_args(r);
	u->out_dim = kred_reduction_out_dim(r);
	if (u->n_args < 1 || u->n_args > 8 || u->out_dim < 1)
		return -1;
	for (int k = 0; k < u->n_args; k++) {
		struct arg *a = &u->args[k];
		const char *name;
		int64_t n, first;

		if (kred_reduction_arg(r, k, &a->cat, &a->dim, &name) != KRED_OK)
			return -1;
		a->rows = a->cat == 0 ? u->nx : a->cat == 1 ? u->ny : 1;
		n = a->rows * a->dim;
		a->f64 = malloc(sizeof(double) * (size_t)(n + 1));
		a->data = u->es == 8 ? (void *)a->f64 : malloc(sizeof(float) * (size_t)(n + 1));
		if (!a->f64 || !a->data)
			return -1;
		lcg = 1000003u * (uint64_t)(index + 1) + (uint64_t)k;
		for (int64_t v = 0; v < n; v++) {
			a->f64[v] = a->cat == 2 ? 0.5 + uniform() : uniform();
			if (u->es == 4) {
				/* the float64 copy holds the float32 values, for the scale */
				((float *)a->data)[v] = (float)a->f64[v];
				a->f64[v] = ((float *)a->data)[v];
			}
		}
		first = a->cat == 0 ? u->x0 : a->cat == 1 ? u->y0 : 0;
		u->whole[k] = a->data;
		u->whole_f64[k] = a->f64;
		u->local[k] = (const char *)a->data + (size_t)(first * a->dim) * u->es;
	}
	return 0;
}

static void release(struct run *u)
{
	for (int k = 0; k < u->n_args; k++) {
		if (u->args[k].data != u->args[k].f64)
			free(u->args[k].data);
		free(u->args[k].f64);
	}
}

static double value(const struct run *u, const void *p, int64_t k)
{
	return u->es == 8 ? ((const double *)p)[k] : ((const float *)p)[k];
}

/* Rows of the output, whole and this rank's, and the first of them. */
static void out_rows(const struct run *u, int64_t *whole, int64_t *mine, int64_t *first)
{
	enum out_kind o = u->c->out;

	*whole = o == ROWS_I ? u->nx : o == ROWS_J ? u->ny : 1;
	*mine = o == ROWS_I ? u->nx_l : o == ROWS_J ? u->ny_l : 1;
	*first = o == ROWS_I ? u->x0 : o == ROWS_J ? u->y0 : 0;
}

/* The per-value scale of the tolerance (see struct tcase): n_rows x out_dim values for
 * this rank's rows, from expected itself or from the case's scale reduction. */
static int scale_of(const struct run *u, const void *expected, double *scale)
{
	const struct tcase *t = u->c;
	int64_t rows, mine, first;
	size_t n_al = 0;
	kred_spec spec = { .formula = t->scale_formula, .reduction = t->scale_reduction,
			   .axis = t->axis, .dtype = KRED_FLOAT64 };
	kred_reduction *r = NULL;
	double *all;
	int d = u->out_dim;

	out_rows(u, &rows, &mine, &first);
	if (!t->scale_formula) {
		for (int64_t k = 0; k < mine * d; k++)
			scale[k] = fabs(value(u, expected, first * d + k));
		return 0;
	}
	spec.aliases = t->scale_aliases[0] ? t->scale_aliases : t->aliases;
	while (n_al < 6 && spec.aliases[n_al])
		n_al++;
	spec.n_aliases = n_al;
	all = calloc((size_t)((u->nx > u->ny ? u->nx : u->ny) + 1) * (size_t)d, sizeof(double));
	if (!all || kred_reduction_create(ref_ctx, &spec, &r) != KRED_OK ||
	    kred_reduction_out_dim(r) != d ||
	    kred_reduction_run(r, u->nx, u->ny, u->whole_f64, all) != KRED_OK) {
		printf("rank %d: the scale reduction: %s\n", mc_rank, kred_errmsg(ref_ctx));
		kred_reduction_destroy(r);
		free(all);
		return -1;
	}
	kred_reduction_destroy(r);
	if (t->out == WHOLE) {
		for (int k = 0; k < d; k++) {
			scale[k] = 0;
			for (int64_t i = 0; i < u->nx; i++)
				scale[k] += all[i * d + k];
		}
	} else {
		memcpy(scale, all + first * d, sizeof(double) * (size_t)(mine * d));
	}
	free(all);
	return 0;
}

/* Compares this rank's rows; returns the number of values out of tolerance. */
static int64_t compare(const struct run *u, const void *got, const void *expected,
		       const double *scale)
{
	const struct tcase *t = u->c;
	int64_t rows, mine, first, bad = 0;
	int d = u->out_dim;

	out_rows(u, &rows, &mine, &first);
	for (int64_t k = 0; k < mine * d; k++) {
		double g = value(u, got, k), e = value(u, expected, first * d + k);
		int ok = t->exact || isinf(e) ? g == e || (isnan(g) && isnan(e))
				 : fabs(g - e) <= t->rtol * scale[k] + t->atol;

		if (!ok && bad++ < 5)
			printf("rank %d: row %lld (whole: %lld), value %d: %.17g, expected %.17g "
			       "(tolerance %.3g)\n", mc_rank, (long long)(k / d),
			       (long long)(first + k / d), (int)(k % d), g, e,
			       t->exact ? 0.0 : t->rtol * scale[k] + t->atol);
	}
	return bad;
}

/* One case: the single-process result, kred_mpi_run, the comparison. On MPI_COMM_SELF,
 * every rank runs the whole data alone: a ring of one. */
static void run_case(int index, int with_stats, MPI_Comm comm)
{
	const struct tcase *t = &cases[index];
	kred_reduction *r = NULL, *ref = NULL;
	struct run u;
	void *got = NULL, *expected = NULL;
	double *scale = NULL;
	int64_t rows, mine, first;
	kred_comm_stats stats;
	kred_status st;
	char name[256];

	snprintf(name, sizeof(name), "%s%s", t->name,
		 comm == MPI_COMM_SELF ? " (each rank alone, on MPI_COMM_SELF)" : "");
	memset(&u, 0, sizeof(u));
	mc_section_begin();
	mc_step(t->name, 180);
	st = make(ctx, t, t->dtype, &r);
	MCHECK(st == KRED_OK, "%s: %s", kred_status_name(st), kred_errmsg(ctx));
	st = make(ref_ctx, t, t->dtype, &ref);
	MCHECK(st == KRED_OK, "reference: %s: %s", kred_status_name(st), kred_errmsg(ref_ctx));
	if (!ref || prepare(&u, t, index, ref) != 0) {
		MCHECK(0, "could not prepare the arguments");
		/* still take part, so that the others are not left waiting */
		kred_mpi_run(NULL, comm, 0, 0, NULL, NULL);
		release(&u);
		goto done;
	}
	if (comm == MPI_COMM_SELF) {
		u.nx_l = u.nx, u.ny_l = u.ny, u.x0 = u.y0 = 0;
		memcpy(u.local, u.whole, sizeof(u.local));
	}
	out_rows(&u, &rows, &mine, &first);
	got = malloc(u.es * (size_t)((mine + 1) * u.out_dim));
	expected = malloc(u.es * (size_t)((rows + 1) * u.out_dim));
	scale = malloc(sizeof(double) * (size_t)((mine + 1) * u.out_dim));
	for (int64_t k = 0; got && k < (mine + 1) * u.out_dim; k++) {
		if (u.es == 8)
			((double *)got)[k] = NAN;
		else
			((float *)got)[k] = NAN;
	}
	st = got && expected && scale ? kred_reduction_run(ref, u.nx, u.ny, u.whole, expected)
				       : KRED_ENOMEM;
	MCHECK(st == KRED_OK, "the single-process run: %s: %s", kred_status_name(st),
	       kred_errmsg(ref_ctx));
	MCHECK(st != KRED_OK || scale_of(&u, expected, scale) == 0, "the scale");

	memset(&stats, 0, sizeof(stats));
	st = with_stats ? kred_mpi_run_stats(r, comm, u.nx_l, u.ny_l, u.local, got, &stats)
			: kred_mpi_run(r, comm, u.nx_l, u.ny_l, u.local, got);
	MCHECK(st == KRED_OK, "kred_mpi_run: %s: %s", kred_status_name(st), kred_errmsg(ctx));
	if (st == KRED_OK) {
		int64_t bad = compare(&u, got, expected, scale);

		MCHECK(bad == 0, "%lld of %lld values out of tolerance", (long long)bad,
		       (long long)(mine * u.out_dim));
		MCHECK(isnan(value(&u, got, mine * u.out_dim)), "written past this rank's rows");
	}
	if (with_stats && st == KRED_OK) {
		int64_t sent = 0;

		MCHECK(stats.total_s > 0 && stats.compute_s >= 0 && stats.wait_s >= 0 &&
		       stats.compute_s <= stats.total_s * 1.001 + 1e-6 &&
		       stats.wait_s <= stats.total_s * 1.001 + 1e-6 && stats.bytes_sent >= 0,
		       "stats: total %g s, compute %g s, wait %g s, %lld bytes", stats.total_s,
		       stats.compute_s, stats.wait_s, (long long)stats.bytes_sent);
		MPI_Allreduce(&stats.bytes_sent, &sent, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
		MCHECK(mc_size == 1 || sent > 0, "no bytes sent by any rank");
	}
	release(&u);
done:
	free(got);
	free(expected);
	free(scale);
	kred_reduction_destroy(r);
	kred_reduction_destroy(ref);
	mc_section_end(name);
}

/* One rank passes a NULL argument: every rank returns an error, that one its own, the
 * others KRED_EDEVICE with a message; nobody is left waiting (the alarm says so). Then
 * the same call done right works on every rank: nothing of the failed run is left in
 * flight. */
static void run_error_case(void)
{
	const int index = 1; /* the float64 Gaussian sum */
	const struct tcase *t = &cases[index];
	int culprit = mc_size > 1 ? 1 : 0;
	kred_reduction *r = NULL;
	struct run u;
	void *out;
	kred_status st;

	mc_section_begin();
	mc_step("the error case", 180);
	st = make(ctx, t, t->dtype, &r);
	MCHECK(st == KRED_OK, "%s", kred_errmsg(ctx));
	if (!r || prepare(&u, t, index, r) != 0) {
		kred_mpi_run(NULL, MPI_COMM_WORLD, 0, 0, NULL, NULL);
		kred_reduction_destroy(r);
		mc_section_end("one rank passes a NULL argument: every rank returns an error");
		return;
	}
	out = malloc(u.es * (size_t)((u.nx + 1) * u.out_dim));
	if (mc_rank == culprit)
		u.local[1] = NULL; /* Y, of which it holds 12 rows */
	st = kred_mpi_run(r, MPI_COMM_WORLD, u.nx_l, u.ny_l, u.local, out);
	if (mc_rank == culprit)
		MCHECK(st != KRED_OK, "the rank with the NULL argument: %s", kred_status_name(st));
	else
		MCHECK(st == KRED_EDEVICE && kred_errmsg(ctx)[0], "another rank: %s, \"%s\"",
		       kred_status_name(st), kred_errmsg(ctx));
	mc_section_end("one rank passes a NULL argument: every rank returns an error");

	mc_section_begin();
	mc_step("the run after the error case", 180);
	u.local[1] = (const char *)u.args[1].data + (size_t)(u.y0 * u.args[1].dim) * u.es;
	st = kred_mpi_run(r, MPI_COMM_WORLD, u.nx_l, u.ny_l, u.local, out);
	MCHECK(st == KRED_OK, "%s: %s", kred_status_name(st), kred_errmsg(ctx));
	mc_section_end("after a failed run, the next one succeeds on every rank");
	release(&u);
	free(out);
	kred_reduction_destroy(r);
	/* and its values are checked by the full case again */
	run_case(index, 0, MPI_COMM_WORLD);
}

int main(int argc, char **argv)
{
	static const char *const backends[] = { "host", "opencl", "reference" };
	kred_context_options o = { .struct_size = sizeof(o) };
	int strict = KRED_TEST_STRICT, setup_ok;

	mc_init(&argc, &argv);
	mc_step("creating the contexts", 180);
	mc_section_begin();
	o.backend = backends[mc_rank % 3];
	if (kred_context_create(&o, &ctx) != KRED_OK) {
		MCHECK(!strict, "backend %s: %s (required in a strict_tests build)", o.backend,
		       kred_errmsg(ctx));
		printf("rank %d: backend %s unavailable (%s): falling back to host\n", mc_rank,
		       o.backend, kred_errmsg(ctx));
		kred_context_destroy(ctx);
		ctx = NULL;
		o.backend = "host";
		MCHECK(kred_context_create(&o, &ctx) == KRED_OK, "host: %s", kred_errmsg(ctx));
	}
	o.backend = "reference";
	MCHECK(kred_context_create(&o, &ref_ctx) == KRED_OK, "reference: %s",
	       kred_errmsg(ref_ctx));
	printf("rank %d: backend %s\n", mc_rank, kred_context_backend(ctx));
	setup_ok = mc_section_end("a context on every rank (host, opencl, reference)");
	if (setup_ok) {
		for (size_t k = 0; k < N_CASES; k++)
			run_case((int)k, k == 0, MPI_COMM_WORLD);
		run_error_case();
		run_case(4, 0, MPI_COMM_SELF); /* ArgKMin(3) */
		run_case(7, 0, MPI_COMM_SELF); /* the gradient with respect to G */
	}
	kred_context_destroy(ctx);
	kred_context_destroy(ref_ctx);
	return mc_finish("mpi");
}
