/* Block-sparse runs (kred_reduction_run_ranges) against the dense reduction restricted to
 * the same pairs, computed here in double from a table of how often each pair counts:
 * Sum, LogSumExp, ArgKMin and gradients in both axes (the one over i on the derived,
 * transposed ranges), float32 and float64, with empty blocks, one-row blocks, rows in no
 * block, empty and overlapping intervals; and the checks of bad ranges. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kred.h"
#include "probe.h"

static const char *backend = "host";

#define NX 53
#define NY 71
#define D 3

/* The layouts: blocks of i rows, each with its j intervals (start, end pairs). */
struct layout {
	const char *name;
	int nb;
	int32_t ranges[8][2];
	int nint[8];
	int32_t red[16][2];
};

static const struct layout layouts[] = {
	/* the whole problem as one block and one interval: the dense reduction */
	{ "dense", 1, { { 0, NX } }, { 1 }, { { 0, NY } } },
	/* rows 0-4 and 40-52 in no block; an empty block; a one-row block; a block with no
	 * interval; an empty interval; overlapping intervals (pairs that count twice) */
	{ "mixed",
	  6,
	  { { 5, 12 }, { 12, 12 }, { 12, 13 }, { 13, 20 }, { 20, 40 }, { 52, 52 } },
	  { 2, 1, 2, 0, 3, 1 },
	  { { 0, 10 }, { 30, 31 }, { 3, 3 }, { 70, 71 }, { 0, 71 }, { 10, 40 }, { 20, 50 },
	    { 60, 60 }, { 5, 6 } } },
	/* blocks listed out of order, intervals out of order */
	{ "unordered",
	  3,
	  { { 30, 53 }, { 0, 10 }, { 10, 30 } },
	  { 2, 1, 2 },
	  { { 50, 71 }, { 0, 20 }, { 10, 30 }, { 40, 45 }, { 0, 5 } } },
};
#define N_LAYOUTS ((int)(sizeof(layouts) / sizeof(layouts[0])))

static double x[NX * D], y[NY * D], b[NY], cot[NX > NY ? NX : NY], g = 1.3;
static int mult[NX][NY]; /* how many times pair (i, j) counts */
static int32_t slices[8], red_flat[32], ranges_flat[16];

static uint64_t rng;

static double uniform(void)
{
	rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
	return (double)(rng >> 11) * 0x1.0p-53;
}

static void setup_data(void)
{
	rng = 11;
	for (int k = 0; k < NX * D; k++)
		x[k] = 2 * uniform() - 1;
	for (int k = 0; k < NY * D; k++)
		y[k] = 2 * uniform() - 1;
	for (int k = 0; k < NY; k++)
		b[k] = uniform() + 0.5;
	for (int k = 0; k < (NX > NY ? NX : NY); k++)
		cot[k] = 2 * uniform() - 1;
}

/* The kred_ranges of layout l (over j), and mult. */
static kred_ranges make_ranges(const struct layout *l)
{
	kred_ranges r = { 0 };
	int k = 0;

	memset(mult, 0, sizeof(mult));
	for (int bl = 0; bl < l->nb; bl++) {
		ranges_flat[2 * bl] = l->ranges[bl][0];
		ranges_flat[2 * bl + 1] = l->ranges[bl][1];
		for (int q = 0; q < l->nint[bl]; q++, k++) {
			red_flat[2 * k] = l->red[k][0];
			red_flat[2 * k + 1] = l->red[k][1];
			for (int i = l->ranges[bl][0]; i < l->ranges[bl][1]; i++)
				for (int j = l->red[k][0]; j < l->red[k][1]; j++)
					mult[i][j]++;
		}
		slices[bl] = k;
	}
	r.struct_size = sizeof(r);
	r.n_blocks_i = l->nb;
	r.ranges_i = ranges_flat;
	r.slices_i = slices;
	r.redranges_j = red_flat;
	return r;
}

static double sqdist(int i, int j)
{
	double s = 0;

	for (int c = 0; c < D; c++)
		s += (x[i * D + c] - y[j * D + c]) * (x[i * D + c] - y[j * D + c]);
	return s;
}

static kred_context *ctx;

static void setup(void)
{
	kred_context_options o = { 0 };

	o.struct_size = sizeof(o);
	o.backend = backend;
	ck_assert_msg(kred_context_create(&o, &ctx) == KRED_OK, "%s: %s", backend,
		      kred_errmsg(ctx));
	setup_data();
}

static void teardown(void)
{
	kred_context_destroy(ctx);
	ctx = NULL;
}

static const char *const aliases[] = { "X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)" };

static kred_reduction *make(const char *formula, const char *red, kred_dtype dt)
{
	kred_spec s = { 0 };
	kred_reduction *r = NULL;

	s.formula = formula;
	s.aliases = aliases;
	s.n_aliases = 4;
	s.reduction = red;
	s.dtype = dt;
	ck_assert_msg(kred_reduction_create(ctx, &s, &r) == KRED_OK, "%s: %s", formula,
		      kred_errmsg(ctx));
	return r;
}

/* Runs r on its arguments src[k] (len[k] values each, converted to dt), nx x ny, with
 * ranges rg, or as the batch bt when it is not NULL; out (rows x dim) in double. */
static void run_args(kred_reduction *r, kred_dtype dt, const double *const *src, const int *len,
		     int64_t nx, int64_t ny, const kred_ranges *rg, const kred_batch *bt,
		     double *out, int rows)
{
	void *args[5], *o;
	int n = kred_reduction_n_args(r), dim = kred_reduction_out_dim(r);
	size_t sz = dt == KRED_FLOAT64 ? 8 : 4;
	kred_status st;

	for (int k = 0; k < n; k++) {
		args[k] = malloc((size_t)len[k] * sz);
		for (int v = 0; v < len[k]; v++) {
			if (dt == KRED_FLOAT64)
				((double *)args[k])[v] = src[k][v];
			else
				((float *)args[k])[v] = (float)src[k][v];
		}
	}
	o = malloc((size_t)rows * (size_t)dim * sz);
	st = bt ? kred_reduction_run_batch(r, bt, nx, ny, (const void *const *)args, o)
		: kred_reduction_run_ranges(r, nx, ny, (const void *const *)args, o, rg);
	ck_assert_msg(st == KRED_OK, "%s", kred_errmsg(ctx));
	for (int v = 0; v < rows * dim; v++)
		out[v] = dt == KRED_FLOAT64 ? ((double *)o)[v] : ((float *)o)[v];
	for (int k = 0; k < n; k++)
		free(args[k]);
	free(o);
}

/* Runs r on the data (in dt) with ranges; out (rows x dim) in double. */
static void run(kred_reduction *r, kred_dtype dt, const kred_ranges *rg, double *out, int rows)
{
	const double *src[5] = { x, y, b, &g, cot };
	const int len[5] = { NX * D, NY * D, NY, 1, NX > NY ? NX : NY };

	run_args(r, dt, src, len, NX, NY, rg, NULL, out, rows);
}

/* float64: a few roundings in another order; float32: the inputs' rounding (2^-24 each)
 * moves a term exp(-g d^2) by up to g |d^2| 6e-8 ~ 1e-6 of itself, and the sum's own
 * rounding is smaller. */
static double tol(kred_dtype dt)
{
	return dt == KRED_FLOAT64 ? 1e-12 : 2e-5;
}

static void near(double got, double want, double t, const char *what, const char *lay, int row)
{
	int ok = isinf(want) ? got == want : fabs(got - want) <= t * (1 + fabs(want));

	ck_assert_msg(ok, "%s, %s, %s, row %d: got %.17g, want %.17g", backend, lay, what, row,
		      got, want);
}

/* loop index: layout x dtype */
START_TEST(test_sum_lse)
{
	const struct layout *l = &layouts[_i / 2];
	kred_dtype dt = _i % 2 ? KRED_FLOAT64 : KRED_FLOAT32;
	kred_ranges rg = make_ranges(l);
	kred_reduction *sum = make("Exp(-G*SqDist(X,Y))*B", "Sum", dt);
	kred_reduction *lse = make("-G*SqDist(X,Y)", "LogSumExp", dt);
	double out[NX], out2[NX];

	run(sum, dt, &rg, out, NX);
	run(lse, dt, &rg, out2, NX);
	for (int i = 0; i < NX; i++) {
		double s = 0, m = -INFINITY, e = 0;

		for (int j = 0; j < NY; j++) {
			s += mult[i][j] * exp(-g * sqdist(i, j)) * b[j];
			if (mult[i][j] && -g * sqdist(i, j) > m)
				m = -g * sqdist(i, j);
		}
		for (int j = 0; j < NY; j++)
			e += mult[i][j] * exp(-g * sqdist(i, j) - m);
		near(out[i], s, tol(dt), "Sum", l->name, i);
		near(out2[i], isinf(m) ? m : m + log(e), tol(dt), "LogSumExp", l->name, i);
	}
	kred_reduction_destroy(sum);
	kred_reduction_destroy(lse);
}
END_TEST

/* Inserts (v, j) into the K smallest so far (best ascending, ties to the first seen). */
static void keep_best(double v, int j, double *best, int *idx, int K)
{
	int k = K - 1;

	if (!(v < best[K - 1]))
		return;
	while (k > 0 && best[k - 1] > v) {
		best[k] = best[k - 1];
		idx[k] = idx[k - 1];
		k--;
	}
	best[k] = v;
	idx[k] = j;
}

/* ArgKMin(4) in float64 (float32 distances could order near ties otherwise): the K
 * smallest of the multiset of (distance, index) over row i's pairs, -1 past its size. */
START_TEST(test_argkmin)
{
	const struct layout *l = &layouts[_i];
	kred_ranges rg = make_ranges(l);
	kred_reduction *r = make("SqDist(X,Y)", "ArgKMin(4)", KRED_FLOAT64);
	double out[NX * 4];

	run(r, KRED_FLOAT64, &rg, out, NX);
	for (int i = 0; i < NX; i++) {
		double best[4] = { INFINITY, INFINITY, INFINITY, INFINITY };
		int idx[4] = { -1, -1, -1, -1 };

		for (int j = 0; j < NY; j++) {
			for (int m = 0; m < mult[i][j]; m++) {
				keep_best(sqdist(i, j), j, best, idx, 4);
			}
		}
		for (int k = 0; k < 4; k++)
			ck_assert_msg(out[i * 4 + k] == idx[k],
				      "%s, %s, ArgKMin row %d rank %d: got %g, want %d", backend,
				      l->name, i, k, out[i * 4 + k], idx[k]);
	}
	kred_reduction_destroy(r);
}
END_TEST

/* The gradient of the ranged Gaussian sum with respect to X (a reduction over j, the
 * same ranges) and to Y (over i: the transposed ranges, derived), cotangent e:
 *   dX_i = sum_j m_ij e_i b_j exp(-g d2) (-2g) (x_i - y_j)
 *   dY_j = sum_i m_ij e_i b_j exp(-g d2) (2g) (x_i - y_j) */
START_TEST(test_gradients)
{
	const struct layout *l = &layouts[_i / 2];
	kred_dtype dt = _i % 2 ? KRED_FLOAT64 : KRED_FLOAT32;
	kred_ranges rg = make_ranges(l);
	kred_reduction *f = make("Exp(-G*SqDist(X,Y))*B", "Sum", dt), *gx = NULL, *gy = NULL;
	double ox[NX * D], oy[NY * D];

	ck_assert_int_eq(kred_reduction_grad(f, "X", &gx), KRED_OK);
	ck_assert_int_eq(kred_reduction_grad(f, "Y", &gy), KRED_OK);
	run(gx, dt, &rg, ox, NX);
	run(gy, dt, &rg, oy, NY);
	for (int c = 0; c < D; c++) {
		for (int i = 0; i < NX; i++) {
			double s = 0;

			for (int j = 0; j < NY; j++)
				s += mult[i][j] * cot[i] * b[j] * exp(-g * sqdist(i, j)) * -2 * g *
				     (x[i * D + c] - y[j * D + c]);
			near(ox[i * D + c], s, tol(dt), "d/dX", l->name, i);
		}
		for (int j = 0; j < NY; j++) {
			double s = 0;

			for (int i = 0; i < NX; i++)
				s += mult[i][j] * cot[i] * b[j] * exp(-g * sqdist(i, j)) * 2 * g *
				     (x[i * D + c] - y[j * D + c]);
			near(oy[j * D + c], s, tol(dt), "d/dY", l->name, j);
		}
	}
	kred_reduction_destroy(gx);
	kred_reduction_destroy(gy);
	kred_reduction_destroy(f);
}
END_TEST

/*
 * A larger random layout, so that the backends' own ranged kernels meet what small
 * ones do not: blocks of 1 to 150 rows (several of a kernel's blocks of rows, and a
 * part of one), listed in shuffled order, some empty or with no interval, rows in no
 * block; up to 4 intervals each, of 0 to 600 columns (several of a kernel's tiles),
 * overlapping. At D = 3, at D = 24 (where the host computes squared distances as
 * matrix products) and at D = 70 (where OpenCL and CUDA do, kernels/tiled.cl): the Sum
 * in float32 and float64, ArgKMin(3) and the gradient in Y (over i, on the derived
 * ranges) in float64. Loop index: D = 3, 24, 70.
 */
#define LX 700
#define LY 1100
#define LD 70
#define LB 40 /* blocks at most */
#define LK 4  /* intervals per block at most */

static int32_t l_rng[2 * LB], l_slc[LB], l_red[2 * LB * LK];
static unsigned char l_mult[LX][LY];
static double lx[LX * LD], ly[LY * LD], lb[LY], lcot[LX], lg = 0.3;

static int below(int n)
{
	return (int)(uniform() * n);
}

static kred_ranges large_layout(void)
{
	kred_ranges r = { 0 };
	int32_t cut[LB + 1], order[LB];
	int nb = 0, k = 0;

	memset(l_mult, 0, sizeof(l_mult));
	/* consecutive blocks from 20, with a gap of rows in no block after some */
	cut[0] = 20;
	while (nb < LB && cut[nb] < LX) {
		int len = below(10) == 0 ? 0 : below(10) == 0 ? 1 : 1 + below(150);

		cut[nb + 1] = cut[nb] + len > LX ? LX : cut[nb] + len;
		l_rng[2 * nb] = cut[nb];
		l_rng[2 * nb + 1] = cut[nb + 1];
		if (below(6) == 0 && cut[nb + 1] + 7 < LX)
			cut[nb + 1] += 7;
		order[nb] = nb;
		nb++;
	}
	for (int a = nb - 1; a > 0; a--) {
		int c = below(a + 1), t = order[a];

		order[a] = order[c];
		order[c] = t;
	}
	{
		int32_t tmp[2 * LB];

		memcpy(tmp, l_rng, sizeof(tmp));
		for (int bl = 0; bl < nb; bl++) {
			l_rng[2 * bl] = tmp[2 * order[bl]];
			l_rng[2 * bl + 1] = tmp[2 * order[bl] + 1];
		}
	}
	for (int bl = 0; bl < nb; bl++) {
		int nint = below(LK + 1);

		for (int q = 0; q < nint; q++, k++) {
			int32_t s = below(LY), e = s + below(601);

			l_red[2 * k] = s;
			l_red[2 * k + 1] = e > LY ? LY : e;
			for (int i = l_rng[2 * bl]; i < l_rng[2 * bl + 1]; i++)
				for (int j = l_red[2 * k]; j < l_red[2 * k + 1]; j++)
					l_mult[i][j]++;
		}
		l_slc[bl] = k;
	}
	r.struct_size = sizeof(r);
	r.n_blocks_i = nb;
	r.ranges_i = l_rng;
	r.slices_i = l_slc;
	r.redranges_j = l_red;
	return r;
}

/* args (x, y, b, g, cotangent) converted to dt, in the order of the aliases below. */
static void large_run(kred_reduction *r, kred_dtype dt, const kred_ranges *rg, int d,
		      double *out, int rows)
{
	const double *src[5] = { lx, ly, lb, &lg, lcot };
	const int len[5] = { LX * d, LY * d, LY, 1, LX };

	run_args(r, dt, src, len, LX, LY, rg, NULL, out, rows);
}

static double l_sqdist(int i, int j, int d)
{
	double s = 0;

	for (int c = 0; c < d; c++)
		s += (lx[i * d + c] - ly[j * d + c]) * (lx[i * d + c] - ly[j * d + c]);
	return s;
}

START_TEST(test_large)
{
	const int d = _i == 0 ? 3 : _i == 1 ? 24 : LD;
	char what[32];
	char ax[16], ay[16];
	const char *al[5] = { ax, ay, "B = Vj(1)", "G = Pm(1)" };
	kred_spec sp = { 0 };
	kred_reduction *sum[2], *akm, *gy;
	kred_ranges rg;
	double *out = malloc(sizeof(double) * LY * LD), *want = malloc(sizeof(double) * LY * LD);

	rng = 29 + (uint64_t)_i;
	for (int k = 0; k < LX * d; k++)
		lx[k] = uniform();
	for (int k = 0; k < LY * d; k++)
		ly[k] = uniform();
	for (int k = 0; k < LY; k++)
		lb[k] = uniform() + 0.5;
	for (int k = 0; k < LX; k++)
		lcot[k] = 2 * uniform() - 1;
	lg = d == 3 ? 2.0 : 0.3 * 24 / d;
	snprintf(what, sizeof(what), "Sum, D = %d", d);
	rg = large_layout();
	snprintf(ax, sizeof(ax), "X = Vi(%d)", d);
	snprintf(ay, sizeof(ay), "Y = Vj(%d)", d);
	sp.aliases = al;
	sp.n_aliases = 4;
	sp.formula = "Exp(-G*SqDist(X,Y))*B";
	sp.reduction = "Sum";
	for (int t = 0; t < 2; t++) {
		sp.dtype = t ? KRED_FLOAT64 : KRED_FLOAT32;
		ck_assert_msg(kred_reduction_create(ctx, &sp, &sum[t]) == KRED_OK, "%s",
			      kred_errmsg(ctx));
	}
	ck_assert_int_eq(kred_reduction_grad(sum[1], "Y", &gy), KRED_OK);
	sp.formula = "SqDist(X,Y)";
	sp.reduction = "ArgKMin(3)";
	ck_assert_msg(kred_reduction_create(ctx, &sp, &akm) == KRED_OK, "%s", kred_errmsg(ctx));

	for (int i = 0; i < LX; i++) {
		double s = 0;

		for (int j = 0; j < LY; j++)
			if (l_mult[i][j])
				s += l_mult[i][j] * exp(-lg * l_sqdist(i, j, d)) * lb[j];
		want[i] = s;
	}
	for (int t = 0; t < 2; t++) {
		large_run(sum[t], t ? KRED_FLOAT64 : KRED_FLOAT32, &rg, d, out, LX);
		for (int i = 0; i < LX; i++)
			near(out[i], want[i], tol(t ? KRED_FLOAT64 : KRED_FLOAT32),
			     what, "large", i);
	}
	large_run(akm, KRED_FLOAT64, &rg, d, out, LX);
	for (int i = 0; i < LX; i++) {
		double best[3] = { INFINITY, INFINITY, INFINITY };
		int idx[3] = { -1, -1, -1 };

		for (int j = 0; j < LY; j++) {
			for (int m = 0; m < l_mult[i][j]; m++) {
				keep_best(l_sqdist(i, j, d), j, best, idx, 3);
			}
		}
		for (int k = 0; k < 3; k++)
			ck_assert_msg(out[i * 3 + k] == idx[k],
				      "%s, large, D = %d, ArgKMin row %d rank %d: got %g, want %d",
				      backend, d, i, k, out[i * 3 + k], idx[k]);
	}
	large_run(gy, KRED_FLOAT64, &rg, d, out, LY);
	memset(want, 0, sizeof(double) * LY * LD);
	for (int i = 0; i < LX; i++)
		for (int j = 0; j < LY; j++) {
			double f;

			if (!l_mult[i][j])
				continue;
			f = l_mult[i][j] * lcot[i] * lb[j] * exp(-lg * l_sqdist(i, j, d)) * 2 * lg;
			for (int c = 0; c < d; c++)
				want[j * d + c] += f * (lx[i * d + c] - ly[j * d + c]);
		}
	for (int j = 0; j < LY * d; j++)
		near(out[j], want[j], tol(KRED_FLOAT64), "d/dY", "large", j / d);
	kred_reduction_destroy(sum[0]);
	kred_reduction_destroy(sum[1]);
	kred_reduction_destroy(gy);
	kred_reduction_destroy(akm);
	free(out);
	free(want);
}
END_TEST

/*
 * Batches (kred_reduction_run_batch): 3 problems of 40 x 30, against each problem's dense
 * reduction computed here. Loop index: 0 every argument batched, 1 Y and B shared (the
 * reduced side not stacked), 2 X shared (the output's side repeated). Sum in float32 and
 * float64, ArgKMin(2) (indices per problem) and the gradient in Y (over i) in float64.
 */
#define BB 3
#define BN 40
#define BM 30

static double bx[BB * BN * 3], by[BB * BM * 3], bb[BB * BM], bcot[BB * BN];

static double b_d2(int p, int i, int j, const int share[3])
{
	const double *xi = bx + ((share[0] ? 0 : p) * BN + i) * 3;
	const double *yj = by + ((share[1] ? 0 : p) * BM + j) * 3;
	double s = 0;

	for (int c = 0; c < 3; c++)
		s += (xi[c] - yj[c]) * (xi[c] - yj[c]);
	return s;
}

/* The batch's arguments X, Y, B, G (gs: one value, or one per problem), cotangent. */
static void b_run_g(kred_reduction *r, kred_dtype dt, const int64_t *ab, int n, int rows,
		    const double *gs, double *out)
{
	const double *src[5] = { bx, by, bb, gs, bcot };
	int len[5] = { BN * 3, BM * 3, BM, 1, BN };
	kred_batch batch = { sizeof(batch), BB, ab };

	for (int k = 0; k < n; k++)
		len[k] *= (int)ab[k];
	run_args(r, dt, src, len, BN, BM, NULL, &batch, out, BB * rows);
}

static void b_run(kred_reduction *r, kred_dtype dt, const int64_t *ab, int n, int rows,
		  double *out)
{
	b_run_g(r, dt, ab, n, rows, &g, out);
}

/* A parameter with a value per problem (the reduction remade with it as a row variable):
 * Sum in float32 and float64, and ArgKMin whose formula is scaled per problem. */
START_TEST(test_batch_params)
{
	const int64_t ab[4] = { BB, 1, BB, BB };
	double gs[BB], out[BB * BN * 2];
	kred_reduction *sum[2], *akm;

	rng = 43;
	for (int k = 0; k < BB * BN * 3; k++)
		bx[k] = uniform();
	for (int k = 0; k < BM * 3; k++)
		by[k] = uniform();
	for (int k = 0; k < BB * BM; k++)
		bb[k] = uniform() + 0.5;
	for (int p = 0; p < BB; p++)
		gs[p] = 0.5 + 3.0 * p; /* far apart: a shared G would fail every problem but one */
	sum[0] = make("Exp(-G*SqDist(X,Y))*B", "Sum", KRED_FLOAT32);
	sum[1] = make("Exp(-G*SqDist(X,Y))*B", "Sum", KRED_FLOAT64);
	/* ArgKMin of B_j - G |x - y|^2: which j come first depends on G */
	akm = make("B - G*SqDist(X,Y)", "ArgKMin(2)", KRED_FLOAT64);
	/* t = 2: float64 again with the values of G reversed, on the reduction kept from
	 * the first call */
	for (int t = 0; t < 3; t++) {
		if (t == 2)
			for (int p = 0; p < BB; p++)
				gs[p] = 0.5 + 3.0 * (BB - 1 - p);
		b_run_g(sum[t ? 1 : 0], t ? KRED_FLOAT64 : KRED_FLOAT32, ab, 4, BN, gs, out);
		for (int p = 0; p < BB; p++)
			for (int i = 0; i < BN; i++) {
				double w = 0;

				for (int j = 0; j < BM; j++) {
					double d2 = 0;

					for (int c = 0; c < 3; c++) {
						double d = bx[(p * BN + i) * 3 + c] - by[j * 3 + c];

						d2 += d * d;
					}
					w += exp(-gs[p] * d2) * bb[p * BM + j];
				}
				near(out[p * BN + i], w, tol(t ? KRED_FLOAT64 : KRED_FLOAT32),
				     "Sum, G per problem", "batch", p * BN + i);
			}
	}
	b_run_g(akm, KRED_FLOAT64, ab, 4, BN, gs, out);
	for (int p = 0; p < BB; p++)
		for (int i = 0; i < BN; i++) {
			double v[BM];
			int best = 0, second = -1;

			for (int j = 0; j < BM; j++) {
				double d2 = 0;

				for (int c = 0; c < 3; c++) {
					double d = bx[(p * BN + i) * 3 + c] - by[j * 3 + c];

					d2 += d * d;
				}
				v[j] = bb[p * BM + j] - gs[p] * d2;
			}
			for (int j = 1; j < BM; j++) {
				if (v[j] < v[best]) {
					second = best;
					best = j;
				} else if (second < 0 || v[j] < v[second]) {
					second = j;
				}
			}
			ck_assert_msg(out[(p * BN + i) * 2] == best &&
				      out[(p * BN + i) * 2 + 1] == second,
				      "%s, G per problem, problem %d row %d: ArgKMin %g %g, want %d %d",
				      backend, p, i, out[(p * BN + i) * 2], out[(p * BN + i) * 2 + 1],
				      best, second);
		}
	kred_reduction_destroy(sum[0]);
	kred_reduction_destroy(sum[1]);
	kred_reduction_destroy(akm);
}
END_TEST

START_TEST(test_batch)
{
	static const int shares[3][3] = { { 0, 0, 0 }, { 0, 1, 1 }, { 1, 0, 0 } };
	const int *share = shares[_i];
	/* X, Y, B, G, cotangent */
	const int64_t ab[5] = { share[0] ? 1 : BB, share[1] ? 1 : BB, share[2] ? 1 : BB, 1, BB };
	double out[BB * BM * 3];
	kred_reduction *sum[2], *akm, *gy;

	rng = 41;
	for (int k = 0; k < BB * BN * 3; k++)
		bx[k] = uniform();
	for (int k = 0; k < BB * BM * 3; k++)
		by[k] = uniform();
	for (int k = 0; k < BB * BM; k++)
		bb[k] = uniform() + 0.5;
	for (int k = 0; k < BB * BN; k++)
		bcot[k] = 2 * uniform() - 1;
	sum[0] = make("Exp(-G*SqDist(X,Y))*B", "Sum", KRED_FLOAT32);
	sum[1] = make("Exp(-G*SqDist(X,Y))*B", "Sum", KRED_FLOAT64);
	akm = make("SqDist(X,Y)", "ArgKMin(2)", KRED_FLOAT64);
	ck_assert_int_eq(kred_reduction_grad(sum[1], "Y", &gy), KRED_OK);
	for (int t = 0; t < 2; t++) {
		b_run(sum[t], t ? KRED_FLOAT64 : KRED_FLOAT32, ab, 4, BN, out);
		for (int p = 0; p < BB; p++)
			for (int i = 0; i < BN; i++) {
				double w = 0;

				for (int j = 0; j < BM; j++)
					w += exp(-g * b_d2(p, i, j, share)) *
					     bb[(share[2] ? 0 : p) * BM + j];
				near(out[p * BN + i], w, tol(t ? KRED_FLOAT64 : KRED_FLOAT32), "Sum",
				     "batch", p * BN + i);
			}
	}
	b_run(akm, KRED_FLOAT64, ab, 4, BN, out);
	for (int p = 0; p < BB; p++)
		for (int i = 0; i < BN; i++) {
			int best = 0, second = -1;

			for (int j = 1; j < BM; j++) {
				if (b_d2(p, i, j, share) < b_d2(p, i, best, share)) {
					second = best;
					best = j;
				} else if (second < 0 || b_d2(p, i, j, share) < b_d2(p, i, second, share)) {
					second = j;
				}
			}
			ck_assert_msg(out[(p * BN + i) * 2] == best && out[(p * BN + i) * 2 + 1] == second,
				      "%s, batch %d, problem %d row %d: ArgKMin %g %g, want %d %d",
				      backend, _i, p, i, out[(p * BN + i) * 2],
				      out[(p * BN + i) * 2 + 1], best, second);
		}
	/* d/dY over i: problem p's rows of Y (or, shared, the sum over the problems) */
	if (!share[1]) {
		b_run(gy, KRED_FLOAT64, ab, 5, BM, out);
		for (int p = 0; p < BB; p++)
			for (int j = 0; j < BM; j++)
				for (int c = 0; c < 3; c++) {
					double w = 0;

					for (int i = 0; i < BN; i++) {
						const double *xi = bx + ((share[0] ? 0 : p) * BN + i) * 3;

						w += bcot[p * BN + i] * bb[(share[2] ? 0 : p) * BM + j] *
						     exp(-g * b_d2(p, i, j, share)) * 2 * g *
						     (xi[c] - by[(p * BM + j) * 3 + c]);
					}
					near(out[(p * BM + j) * 3 + c], w, tol(KRED_FLOAT64), "d/dY",
					     "batch", p * BM + j);
				}
	}
	kred_reduction_destroy(sum[0]);
	kred_reduction_destroy(sum[1]);
	kred_reduction_destroy(akm);
	kred_reduction_destroy(gy);
}
END_TEST

START_TEST(test_batch_bad)
{
	kred_reduction *r = make("Exp(-G*SqDist(X,Y))*B", "Sum", KRED_FLOAT64);
	const void *args[4] = { x, y, b, &g };
	const int64_t two[4] = { 3, 2, 3, 1 };
	kred_batch bt = { sizeof(bt), 3, two };
	double out[3 * 10];

	ck_assert_int_eq(kred_reduction_run_batch(r, &bt, 10, 10, args, out), KRED_EINVAL);
	ck_assert_msg(strstr(kred_errmsg(ctx), "argument 1 holds 2 problems, not 1"), "%s",
		      kred_errmsg(ctx));
	/* a parameter per problem where an auxiliary reduction runs first: the gradient of
	 * SumSoftMaxWeight in a variable of the reduced axis */
	{
		kred_spec sp = { 0 };
		kred_reduction *sm = NULL, *gy = NULL;
		const int64_t ab[7] = { 3, 3, 3, 3, 3, 3, 3 };
		const void *none[7] = { 0 };

		sp.formula = "-G*SqDist(X,Y)";
		sp.weight = "B";
		sp.aliases = aliases;
		sp.n_aliases = 4;
		sp.reduction = "SumSoftMaxWeight";
		sp.dtype = KRED_FLOAT64;
		ck_assert_int_eq(kred_reduction_create(ctx, &sp, &sm), KRED_OK);
		ck_assert_int_eq(kred_reduction_grad(sm, "Y", &gy), KRED_OK);
		ck_assert_int_le(kred_reduction_n_args(gy), 7);
		bt.arg_batch = ab;
		ck_assert_int_eq(kred_reduction_run_batch(gy, &bt, 10, 10, none, out),
				 KRED_EUNSUPPORTED);
		ck_assert_msg(strstr(kred_errmsg(ctx), "auxiliary"), "%s", kred_errmsg(ctx));
		kred_reduction_destroy(gy);
		kred_reduction_destroy(sm);
	}
	bt.n_batch = 0;
	ck_assert_int_eq(kred_reduction_run_batch(r, &bt, 10, 10, args, out), KRED_EINVAL);
	/* one problem, or no batch: the plain run */
	bt.n_batch = 1;
	bt.arg_batch = NULL;
	ck_assert_int_eq(kred_reduction_run_batch(r, &bt, 10, 10, args, out), KRED_OK);
	ck_assert_int_eq(kred_reduction_run_batch(r, NULL, 10, 10, args, out), KRED_OK);
	kred_reduction_destroy(r);
}
END_TEST

/* Long intervals: 200,000 columns, overlapping, so that a block's columns laid end to
 * end (349,000) take several of Vulkan's passes sized by llvmpipe's loop budget (about
 * 118,000 columns for this formula; a pass that overran the budget would be cut short
 * without an error). float64; the tolerance bounds the rounding of sums of 349,000
 * positive terms in any order (349,000 x 1.1e-16 = 3.9e-11, relative). */
#define LN 40
#define LM 200000
START_TEST(test_long)
{
	static const int32_t rng2[4] = { 0, 20, 20, LN }, slc[2] = { 2, 3 };
	static const int32_t red[6] = { 0, LM, 1000, 150000, 50000, LM };
	static const char *const al[4] = { "X = Vi(1)", "Y = Vj(1)", "B = Vj(1)", "G = Pm(1)" };
	double *yv = malloc(sizeof(double) * LM), *bv = malloc(sizeof(double) * LM);
	double xv[LN], gv = 3.0, out[LN];
	const void *args[4] = { xv, yv, bv, &gv };
	kred_ranges rg = { sizeof(rg), 2, rng2, slc, red, 0, NULL, NULL, NULL };
	kred_spec sp = { 0 };
	kred_reduction *r;

	ck_assert(yv && bv);
	rng = 53;
	for (int i = 0; i < LN; i++)
		xv[i] = uniform();
	for (int j = 0; j < LM; j++) {
		yv[j] = uniform();
		bv[j] = uniform() + 0.5;
	}
	sp.formula = "Exp(-G*SqDist(X,Y))*B";
	sp.reduction = "Sum";
	sp.aliases = al;
	sp.n_aliases = 4;
	sp.dtype = KRED_FLOAT64;
	ck_assert_msg(kred_reduction_create(ctx, &sp, &r) == KRED_OK, "%s", kred_errmsg(ctx));
	ck_assert_msg(kred_reduction_run_ranges(r, LN, LM, args, out, &rg) == KRED_OK, "%s",
		      kred_errmsg(ctx));
	for (int i = 0; i < LN; i++) {
		double want = 0;

		for (int k = i < 20 ? 0 : 2; k < (i < 20 ? 2 : 3); k++)
			for (int j = red[2 * k]; j < red[2 * k + 1]; j++)
				want += exp(-gv * (xv[i] - yv[j]) * (xv[i] - yv[j])) * bv[j];
		near(out[i], want, 1e-10, "Sum", "long intervals", i);
	}
	kred_reduction_destroy(r);
	free(yv);
	free(bv);
}
END_TEST

/* Bad ranges: KRED_EINVAL, a message naming the array and the entry, out untouched. */
START_TEST(test_bad)
{
	static const struct {
		int32_t rng[4], slc[2], red[4];
		const char *want;
	} rows[] = {
		{ { 0, 10, 5, 4 }, { 1, 2 }, { 0, 5, 0, 5 }, "block 1 of ranges_i is [5, 4)" },
		{ { 0, 10, 10, 54 }, { 1, 2 }, { 0, 5, 0, 5 }, "block 1 of ranges_i is [10, 54)" },
		{ { 0, 10, 10, 20 }, { 2, 1 }, { 0, 5, 0, 5 }, "slices_i[1] = 1 is below" },
		{ { 0, 10, 10, 20 }, { 1, 2 }, { 0, 5, -1, 5 }, "interval 1 of redranges_j" },
		{ { 0, 10, 10, 20 }, { 1, 2 }, { 0, 72, 0, 5 }, "[0, 72), not within [0, ny = 71)" },
		{ { 0, 10, 9, 20 }, { 1, 2 }, { 0, 5, 0, 5 }, "blocks 0 [0, 10) and 1 [9, 20)" },
	};
	kred_reduction *r = make("Exp(-G*SqDist(X,Y))*B", "Sum", KRED_FLOAT64);
	const void *args[4] = { x, y, b, &g };
	double out[NX];

	for (int k = 0; k < (int)(sizeof(rows) / sizeof(rows[0])); k++) {
		kred_ranges rg = { sizeof(rg), 2, rows[k].rng, rows[k].slc, rows[k].red, 0, NULL,
				   NULL, NULL };

		for (int i = 0; i < NX; i++)
			out[i] = 42;
		ck_assert_int_eq(kred_reduction_run_ranges(r, NX, NY, args, out, &rg),
				 KRED_EINVAL);
		ck_assert_msg(strstr(kred_errmsg(ctx), rows[k].want), "row %d: '%s' lacks '%s'",
			      k, kred_errmsg(ctx), rows[k].want);
		for (int i = 0; i < NX; i++)
			ck_assert(out[i] == 42);
	}
	{
		kred_ranges rg = { sizeof(rg), 1, NULL, NULL, NULL, 0, NULL, NULL, NULL };

		ck_assert_int_eq(kred_reduction_run_ranges(r, NX, NY, args, out, &rg),
				 KRED_EINVAL);
		ck_assert(strstr(kred_errmsg(ctx), "ranges_i is NULL"));
	}
	/* NULL ranges: the plain run */
	ck_assert_int_eq(kred_reduction_run_ranges(r, NX, NY, args, out, NULL), KRED_OK);
	kred_reduction_destroy(r);
}
END_TEST

int main(int argc, char **argv)
{
	Suite *s;
	TCase *tc;

	if (argc > 1 && argv[1][0])
		backend = argv[1];
	{
		int rc = probe_or_skip(backend);

		if (rc)
			return rc < 0 ? 0 : rc;
	}
	s = suite_create("ranges");
	tc = tcase_create("ranges");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 600);
	tcase_add_loop_test(tc, test_sum_lse, 0, 2 * N_LAYOUTS);
	tcase_add_loop_test(tc, test_argkmin, 0, N_LAYOUTS);
	tcase_add_loop_test(tc, test_gradients, 0, 2 * N_LAYOUTS);
	tcase_add_loop_test(tc, test_large, 0, 3);
	tcase_add_loop_test(tc, test_batch, 0, 3);
	tcase_add_test(tc, test_batch_bad);
	tcase_add_test(tc, test_batch_params);
	tcase_add_test(tc, test_long);
	tcase_add_test(tc, test_bad);
	suite_add_tcase(s, tc);
	return run_suites(NULL, s) ? 1 : 0;
}
