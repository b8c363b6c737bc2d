/* Tests of the kred command, run as a separate process on .npy files in a fresh
 * directory, and of the .npy reader and writer it uses (tools/npy.c). */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kred.h"
#include "npy.h"

extern char **environ;

/* ---- the fixture: a fresh directory holding the Gaussian case's inputs ---- */

#define NX 300
#define NY 200
#define G_VALUE 0.7

static char tmpdir[PATH_MAX];
static char oldcwd[PATH_MAX];
static double x[NX * 3], y[NY * 3], b[NY * 2], e2[NX * 2], e1[NX];
static const double g[1] = { G_VALUE };

/* A fixed sequence in [-1, 1): the tests must not depend on the run. */
static void fill(double *v, size_t n, unsigned seed)
{
	uint64_t s = 0x9e3779b97f4a7c15ull * (seed + 1);

	for (size_t k = 0; k < n; k++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		v[k] = (double)(s >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
	}
}

static void write_f64(const char *path, int ndim, int64_t d0, int64_t d1, const double *v)
{
	char err[512];
	int64_t shape[2] = { d0, d1 };

	ck_assert_msg(npy_write(path, KRED_FLOAT64, ndim, shape, v, err, sizeof(err)) == 0,
		      "%s", err);
}

static void write_f32(const char *path, int ndim, int64_t d0, int64_t d1, const double *v)
{
	char err[512];
	int64_t shape[2] = { d0, d1 };
	size_t n = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
	float *f = malloc(n * sizeof(*f) + 1);

	ck_assert_ptr_nonnull(f);
	for (size_t k = 0; k < n; k++)
		f[k] = (float)v[k];
	ck_assert_msg(npy_write(path, KRED_FLOAT32, ndim, shape, f, err, sizeof(err)) == 0,
		      "%s", err);
	free(f);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

static void setup(void)
{
	const char *base = getenv("TMPDIR");

	ck_assert_ptr_nonnull(getcwd(oldcwd, sizeof(oldcwd)));
	snprintf(tmpdir, sizeof(tmpdir), "%s/kred-cli-XXXXXX", base && *base ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	/* Working inside the directory lets argv name files by short relative paths. */
	ck_assert_int_eq(chdir(tmpdir), 0);

	fill(x, NX * 3, 1);
	fill(y, NY * 3, 2);
	fill(b, NY * 2, 3);
	fill(e2, NX * 2, 4);
	fill(e1, NX, 5);
	write_f64("g.npy", 1, 1, 0, g);
	write_f64("x.npy", 2, NX, 3, x);
	write_f64("y.npy", 2, NY, 3, y);
	write_f64("b.npy", 2, NY, 2, b);
	write_f64("e2.npy", 2, NX, 2, e2);
	write_f64("e1.npy", 2, NX, 1, e1);
	write_f32("g32.npy", 1, 1, 0, g);
	write_f32("x32.npy", 2, NX, 3, x);
	write_f32("y32.npy", 2, NY, 3, y);
	write_f32("b32.npy", 2, NY, 2, b);
	/* The culprits of the error cases. */
	write_f64("g2d.npy", 2, 1, 1, g);
	write_f64("b199.npy", 2, NY - 1, 2, b);
	write_f64("y2.npy", 2, NY, 2, y);
	write_text("notnpy.npy", "x,y,z\n1,2,3\n");
}

static void teardown(void)
{
	DIR *d;
	struct dirent *de;

	ck_assert_int_eq(chdir(oldcwd), 0);
	d = opendir(tmpdir);
	if (d) {
		while ((de = readdir(d))) {
			char p[PATH_MAX + 256];

			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			snprintf(p, sizeof(p), "%s/%s", tmpdir, de->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(tmpdir);
}

/* ---- running the command ---- */

struct result {
	int status; /* exit status, or -1 if it did not exit normally */
	char *out, *err;
};

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *s;
	long n;

	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	s = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(s);
	ck_assert_int_eq(fread(s, 1, (size_t)n, f), n);
	s[n] = '\0';
	fclose(f);
	return s;
}

/* Runs kred with argv (NULL-terminated, without the program name), stdout and stderr
 * going to files so that a large output cannot block it. */
static struct result run_kred(const char *const *argv)
{
	const char *exe = getenv("KRED_EXE");
	posix_spawn_file_actions_t fa;
	struct result r = { -1, NULL, NULL };
	char *full[64];
	int n = 0, wst;
	pid_t pid;

	ck_assert_msg(exe && *exe, "KRED_EXE is not set (tests/meson.build sets it)");
	full[n++] = (char *)exe;
	while (argv[n - 1]) {
		ck_assert_int_lt(n, 63);
		full[n] = (char *)argv[n - 1];
		n++;
	}
	full[n] = NULL;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "stdout.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	posix_spawn_file_actions_addopen(&fa, 2, "stderr.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_eq(posix_spawn(&pid, exe, &fa, NULL, full, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	ck_assert_int_eq(waitpid(pid, &wst, 0), pid);
	if (WIFEXITED(wst))
		r.status = WEXITSTATUS(wst);
	r.out = slurp("stdout.txt");
	r.err = slurp("stderr.txt");
	return r;
}

static void result_free(struct result *r)
{
	free(r->out);
	free(r->err);
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static struct npy_array read_out(const char *path, kred_dtype dtype, int64_t d0, int64_t d1)
{
	struct npy_array a;
	char err[512];

	ck_assert_msg(npy_read(path, &a, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(a.dtype, dtype);
	ck_assert_int_eq(a.ndim, d1 ? 2 : 1);
	ck_assert_int_eq(a.shape[0], d0);
	if (d1)
		ck_assert_int_eq(a.shape[1], d1);
	return a;
}

static double value(const struct npy_array *a, size_t k)
{
	return a->dtype == KRED_FLOAT64 ? ((const double *)a->data)[k] :
					  ((const float *)a->data)[k];
}

/* Every value within rtol of the expected one, relative to the largest expected
 * magnitude (sums of signed terms cancel, so a per-value ratio would be unfair). */
static void assert_close(const struct npy_array *a, const double *want, size_t n, double rtol)
{
	double scale = 0;

	ck_assert_uint_eq(a->count, n);
	for (size_t k = 0; k < n; k++)
		scale = fmax(scale, fabs(want[k]));
	for (size_t k = 0; k < n; k++)
		ck_assert_msg(fabs(value(a, k) - want[k]) <= rtol * scale,
			      "value %zu: got %.17g, want %.17g", k, value(a, k), want[k]);
}

/* ---- the independent closed forms ---- */

static double sqdist(int i, int j)
{
	double s = 0;

	for (int d = 0; d < 3; d++)
		s += (x[3 * i + d] - y[3 * j + d]) * (x[3 * i + d] - y[3 * j + d]);
	return s;
}

/* out_i = sum_j exp(-g |x_i - y_j|^2) b_j, or with axis i, out_j = sum_i of the same. */
static void gauss_sum(double *out, int axis_i)
{
	memset(out, 0, sizeof(double) * 2 * (axis_i ? NY : NX));
	for (int i = 0; i < NX; i++)
		for (int j = 0; j < NY; j++) {
			double k = exp(-G_VALUE * sqdist(i, j));
			int row = axis_i ? j : i;

			out[2 * row] += k * b[2 * j];
			out[2 * row + 1] += k * b[2 * j + 1];
		}
}

#define GAUSS "Exp(-G*SqDist(X,Y))*B"
#define ALIASES "-a", "G=Pm(1)", "-a", "X=Vi(3)", "-a", "Y=Vj(3)", "-a", "B=Vj(2)"
#define REF "-r", "Sum", "-b", "reference"
#define INPUTS "-i", "G=g.npy", "-i", "X=x.npy", "-i", "Y=y.npy", "-i", "B=b.npy"
#define INPUTS32 "-i", "G=g32.npy", "-i", "X=x32.npy", "-i", "Y=y32.npy", "-i", "B=b32.npy"

/* Runs argv and checks that it succeeded with nothing on stderr. */
static void run_ok(const char *const *argv)
{
	struct result r = run_kred(argv);

	ck_assert_msg(r.status == 0, "kred exited %d: %s", r.status, r.err);
	ck_assert_msg(r.err[0] == '\0', "unexpected stderr: %s", r.err);
	result_free(&r);
}

START_TEST(gauss_float64)
{
	static const char *const argv[] = { "run", GAUSS, ALIASES, REF, INPUTS, "-o", "out.npy",
					    NULL };
	static double want[NX * 2];
	struct npy_array a;

	run_ok(argv);
	a = read_out("out.npy", KRED_FLOAT64, NX, 2);
	gauss_sum(want, 0);
	assert_close(&a, want, NX * 2, 1e-12);
	npy_free(&a);
}
END_TEST

/* Runs argv, a run of GAUSS on the float32 inputs into out.npy, and checks the output
 * against the closed form within float32's tolerance. */
static void check_gauss_float32(const char *const *argv)
{
	static double want[NX * 2];
	struct npy_array a;

	run_ok(argv);
	a = read_out("out.npy", KRED_FLOAT32, NX, 2);
	gauss_sum(want, 0);
	assert_close(&a, want, NX * 2, 1e-4);
	npy_free(&a);
}

START_TEST(gauss_float32)
{
	static const char *const argv[] = { "run", GAUSS, ALIASES, REF, INPUTS32, "-o", "out.npy",
					    NULL };

	check_gauss_float32(argv);
}
END_TEST

START_TEST(gauss_dtype_converts)
{
	/* float32 files, float64 computation: --dtype converts instead of refusing. */
	static const char *const argv[] = { "run",   GAUSS,	ALIASES,   REF, INPUTS32,
					    "-o",    "out.npy", "--dtype", "float64",
					    NULL };
	static double want[NX * 2];
	struct npy_array a;

	run_ok(argv);
	a = read_out("out.npy", KRED_FLOAT64, NX, 2);
	gauss_sum(want, 0);
	assert_close(&a, want, NX * 2, 1e-6);
	npy_free(&a);
}
END_TEST

START_TEST(gauss_axis_i)
{
	static const char *const argv[] = { "run",	   GAUSS,  ALIASES, REF,	INPUTS,
					    "--axis", "i", "-o",   "out.npy", NULL };
	static double want[NY * 2];
	struct npy_array a;

	run_ok(argv);
	a = read_out("out.npy", KRED_FLOAT64, NY, 2);
	gauss_sum(want, 1);
	assert_close(&a, want, NY * 2, 1e-12);
	npy_free(&a);
}
END_TEST

START_TEST(positional_binding)
{
	/* Arguments without an alias are bound by position: -i '#N=FILE'. */
	static const char *const argv[] = { "run",     "SqDist(Vi(0,3),Vj(1,3))",
					    "-r",      "Sum",
					    "-b",      "reference",
					    "-i",      "#0=x.npy",
					    "-i",      "#1=y.npy",
					    "-o",      "out.npy",
					    NULL };
	static double want[NX];
	struct npy_array a;

	run_ok(argv);
	a = read_out("out.npy", KRED_FLOAT64, NX, 1);
	for (int i = 0; i < NX; i++) {
		want[i] = 0;
		for (int j = 0; j < NY; j++)
			want[i] += sqdist(i, j);
	}
	assert_close(&a, want, NX, 1e-12);
	npy_free(&a);
}
END_TEST

START_TEST(size_from_option)
{
	/* No Vi variable: --nx gives the number of output rows, each the column sums. */
	static const char *const with[] = { "run", "Y", "-a", "Y=Vj(3)", "-r", "Sum", "-b",
					    "reference", "-i", "Y=y.npy", "--nx", "4", "-o",
					    "out.npy", NULL };
	static const char *const without[] = { "run", "Y", "-a", "Y=Vj(3)", "-r", "Sum", "-b",
					       "reference", "-i", "Y=y.npy", "-o", "out.npy",
					       NULL };
	double want[4 * 3] = { 0 };
	struct npy_array a;
	struct result r;

	run_ok(with);
	a = read_out("out.npy", KRED_FLOAT64, 4, 3);
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < NY; j++)
			for (int d = 0; d < 3; d++)
				want[3 * i + d] += y[3 * j + d];
	assert_close(&a, want, 12, 1e-12);
	npy_free(&a);

	r = run_kred(without);
	ck_assert_int_eq(r.status, 1);
	ck_assert_msg(strstr(r.err, "--nx"), "no hint of --nx: %s", r.err);
	result_free(&r);
}
END_TEST

START_TEST(dash_dash)
{
	/* "-G" alone reads as an option; after -- it is the formula. */
	static const char *const argv[] = { "run", "-a", "G=Pm(1)", "-r", "Sum", "-b",
					    "reference", "-i", "G=g.npy", "--nx", "2", "--ny",
					    "3", "-o", "out.npy", "--", "-G", NULL };
	static const double want[2] = { -3 * G_VALUE, -3 * G_VALUE };
	struct npy_array a;

	run_ok(argv);
	a = read_out("out.npy", KRED_FLOAT64, 2, 1);
	assert_close(&a, want, 2, 1e-15);
	npy_free(&a);
}
END_TEST

START_TEST(time_option)
{
	static const char *const argv[] = { "run",	   GAUSS,  ALIASES, REF,	INPUTS,
					    "--time", "-o", "out.npy", NULL };
	struct result r = run_kred(argv);

	ck_assert_msg(r.status == 0, "kred exited %d: %s", r.status, r.err);
	ck_assert_msg(strstr(r.err, "compile") && strstr(r.err, "run") &&
			      strstr(r.err, " s"),
		      "no timings: %s", r.err);
	result_free(&r);
}
END_TEST

/* --device-memory: a cap so small that the 300 x 200 run goes through in blocks of a
 * few rows and columns (merged partial sums) gives the closed form all the same; one
 * below a row and a column is an error that says so; a bad size is a usage error. */
START_TEST(device_memory_option)
{
	static const char *const small[] = { "run", GAUSS, ALIASES, REF, INPUTS,
					     "--device-memory", "1K", "-o", "cap.npy", NULL };
	static const char *const tiny[] = { "run", GAUSS, ALIASES, REF, INPUTS,
					    "--device-memory", "100", "-o", "cap.npy", NULL };
	static const char *const bad[] = { "run", GAUSS, ALIASES, REF, INPUTS,
					   "--device-memory", "12X", "-o", "cap.npy", NULL };
	static double want[NX * 2];
	struct npy_array a;
	struct result r;

	run_ok(small);
	a = read_out("cap.npy", KRED_FLOAT64, NX, 2);
	gauss_sum(want, 0);
	assert_close(&a, want, NX * 2, 1e-12);
	npy_free(&a);
	r = run_kred(tiny);
	ck_assert_msg(r.status == 1 && strstr(r.err, "cap of 100 bytes"), "exit %d: %s", r.status,
		      r.err);
	result_free(&r);
	r = run_kred(bad);
	ck_assert_msg(r.status == 2 && strstr(r.err, "--device-memory"), "exit %d: %s", r.status,
		      r.err);
	result_free(&r);
}
END_TEST

/* ---- gradients, against their closed forms ---- */

START_TEST(grad_vi)
{
	static const char *const argv[] = { "grad", "X",  GAUSS,   ALIASES,  REF,
					    INPUTS, "-i", "GRAD_OUT=e2.npy", "-o", "out.npy",
					    NULL };
	static double want[NX * 3];
	struct npy_array a;

	run_ok(argv);
	a = read_out("out.npy", KRED_FLOAT64, NX, 3);
	/* g_i = sum_j exp(-G r2) (b_j . e_i) (-2 G) (x_i - y_j) */
	memset(want, 0, sizeof(want));
	for (int i = 0; i < NX; i++)
		for (int j = 0; j < NY; j++) {
			double k = exp(-G_VALUE * sqdist(i, j));
			double be = b[2 * j] * e2[2 * i] + b[2 * j + 1] * e2[2 * i + 1];

			for (int d = 0; d < 3; d++)
				want[3 * i + d] +=
					k * be * -2 * G_VALUE * (x[3 * i + d] - y[3 * j + d]);
		}
	assert_close(&a, want, NX * 3, 1e-10);
	npy_free(&a);
}
END_TEST

START_TEST(grad_vj)
{
	static const char *const argv[] = { "grad", "Y",  GAUSS,   ALIASES,  REF,
					    INPUTS, "-i", "GRAD_OUT=e2.npy", "-o", "out.npy",
					    NULL };
	static double want[NY * 3];
	struct npy_array a;

	run_ok(argv);
	a = read_out("out.npy", KRED_FLOAT64, NY, 3);
	memset(want, 0, sizeof(want));
	for (int i = 0; i < NX; i++)
		for (int j = 0; j < NY; j++) {
			double k = exp(-G_VALUE * sqdist(i, j));
			double be = b[2 * j] * e2[2 * i] + b[2 * j + 1] * e2[2 * i + 1];

			for (int d = 0; d < 3; d++)
				want[3 * j + d] +=
					k * be * 2 * G_VALUE * (x[3 * i + d] - y[3 * j + d]);
		}
	assert_close(&a, want, NY * 3, 1e-10);
	npy_free(&a);
}
END_TEST

START_TEST(grad_pm)
{
	/* A parameter's gradient is summed over rows: a 1-D array of its dim values. */
	static const char *const argv[] = { "grad", "G",  GAUSS,   ALIASES,  REF,
					    INPUTS, "-i", "GRAD_OUT=e2.npy", "-o", "out.npy",
					    NULL };
	double want = 0;
	struct npy_array a;

	run_ok(argv);
	a = read_out("out.npy", KRED_FLOAT64, 1, 0);
	for (int i = 0; i < NX; i++)
		for (int j = 0; j < NY; j++) {
			double r2 = sqdist(i, j);
			double be = b[2 * j] * e2[2 * i] + b[2 * j + 1] * e2[2 * i + 1];

			want += exp(-G_VALUE * r2) * -r2 * be;
		}
	assert_close(&a, &want, 1, 1e-10);
	npy_free(&a);
}
END_TEST

START_TEST(grad_logsumexp)
{
	/* Needs the forward output, which the command computes itself. */
	static const char *const argv[] = { "grad",	       "X",
					    "-G*SqDist(X,Y)", "-a",
					    "G=Pm(1)",	       "-a",
					    "X=Vi(3)",	       "-a",
					    "Y=Vj(3)",	       "-r",
					    "LogSumExp",       "-b",
					    "reference",       "-i",
					    "G=g.npy",	       "-i",
					    "X=x.npy",	       "-i",
					    "Y=y.npy",	       "-i",
					    "GRAD_OUT=e1.npy", "-o",
					    "out.npy",	       NULL };
	static double want[NX * 3];
	struct npy_array a;

	run_ok(argv);
	a = read_out("out.npy", KRED_FLOAT64, NX, 3);
	/* g_i = e_i sum_j softmax_j(-G r2_ij) (-2 G) (x_i - y_j) */
	for (int i = 0; i < NX; i++) {
		double m = -INFINITY, s = 0, acc[3] = { 0, 0, 0 };

		for (int j = 0; j < NY; j++)
			m = fmax(m, -G_VALUE * sqdist(i, j));
		for (int j = 0; j < NY; j++) {
			double w = exp(-G_VALUE * sqdist(i, j) - m);

			s += w;
			for (int d = 0; d < 3; d++)
				acc[d] += w * -2 * G_VALUE * (x[3 * i + d] - y[3 * j + d]);
		}
		for (int d = 0; d < 3; d++)
			want[3 * i + d] = e1[i] * acc[d] / s;
	}
	assert_close(&a, want, NX * 3, 1e-10);
	npy_free(&a);
}
END_TEST

/* ---- errors: the exit status and a message naming the culprit ---- */

struct error_case {
	const char *what;
	int status;
	int caret; /* a library error about a position: several lines, with a caret */
	const char *argv[40];
	const char *mentions[3]; /* substrings the message must hold */
};

static const struct error_case error_cases[] = {
	{ "2-D Pm file", 1, 0,
	  { "run", GAUSS, ALIASES, REF, "-i", "G=g2d.npy", "-i", "X=x.npy", "-i", "Y=y.npy",
	    "-i", "B=b.npy", "-o", "out.npy" },
	  { "g2d.npy", "G" } },
	{ "3 columns for Vi(2)", 1, 0,
	  { "run", GAUSS, "-a", "G=Pm(1)", "-a", "X=Vi(2)", "-a", "Y=Vj(2)", "-a", "B=Vj(2)",
	    REF, "-i", "G=g.npy", "-i", "X=x.npy", "-i", "Y=y2.npy", "-i", "B=b.npy", "-o",
	    "out.npy" },
	  { "x.npy", "X", "Vi(2)" } },
	{ "missing -i", 1, 0,
	  { "run", GAUSS, ALIASES, REF, "-i", "G=g.npy", "-i", "X=x.npy", "-i", "Y=y.npy",
	    "-o", "out.npy" },
	  { "B", "-i B=" } },
	{ "extra -i", 1, 0,
	  { "run", GAUSS, ALIASES, REF, INPUTS, "-i", "Z=y.npy", "-o", "out.npy" },
	  { "Z", "y.npy" } },
	{ "same argument twice", 1, 0,
	  { "run", GAUSS, ALIASES, REF, INPUTS, "-i", "#1=x.npy", "-o", "out.npy" },
	  { "X", "twice" } },
	{ "mixed dtypes", 1, 0,
	  { "run", GAUSS, ALIASES, REF, "-i", "G=g.npy", "-i", "X=x.npy", "-i", "Y=y.npy",
	    "-i", "B=b32.npy", "-o", "out.npy" },
	  { "b32.npy", "B", "float32" } },
	{ "not a .npy file", 1, 0,
	  { "run", GAUSS, ALIASES, REF, "-i", "G=g.npy", "-i", "X=notnpy.npy", "-i", "Y=y.npy",
	    "-i", "B=b.npy", "-o", "out.npy" },
	  { "notnpy.npy", "X" } },
	{ "missing file", 1, 0,
	  { "run", GAUSS, ALIASES, REF, "-i", "G=g.npy", "-i", "X=nosuch.npy", "-i", "Y=y.npy",
	    "-i", "B=b.npy", "-o", "out.npy" },
	  { "nosuch.npy", "X" } },
	{ "rows disagree", 1, 0,
	  { "run", GAUSS, ALIASES, REF, "-i", "G=g.npy", "-i", "X=x.npy", "-i", "Y=y.npy",
	    "-i", "B=b199.npy", "-o", "out.npy" },
	  { "b199.npy", "y.npy", "199" } },
	{ "unwritable output", 1, 0,
	  { "run", GAUSS, ALIASES, REF, INPUTS, "-o", "no/such/dir/out.npy" },
	  { "no/such/dir/out.npy" } },
	{ "unknown reduction", 1, 1,
	  { "run", GAUSS, ALIASES, "-r", "Summ", "-b", "reference", INPUTS, "-o", "out.npy" },
	  { "Summ" } },
	{ "no command", 2, 0, { NULL }, { "command" } },
	{ "unknown command", 2, 0, { "frobnicate" }, { "frobnicate" } },
	{ "unknown option", 2, 0,
	  { "run", GAUSS, ALIASES, REF, INPUTS, "-o", "out.npy", "--frobnicate" },
	  { "--frobnicate" } },
	{ "missing value", 2, 0, { "run", GAUSS, ALIASES, INPUTS, "-o", "out.npy", "-r" }, { "-r" } },
	{ "bad axis", 2, 0,
	  { "run", GAUSS, ALIASES, REF, INPUTS, "-o", "out.npy", "--axis", "k" },
	  { "--axis", "k" } },
	{ "bad dtype", 2, 0,
	  { "run", GAUSS, ALIASES, REF, INPUTS, "-o", "out.npy", "--dtype", "float16" },
	  { "float16" } },
	{ "-i without =", 2, 0, { "run", GAUSS, ALIASES, REF, "-i", "x.npy", "-o", "out.npy" },
	  { "NAME=FILE" } },
	{ "no output", 2, 0, { "run", GAUSS, ALIASES, REF, INPUTS }, { "-o" } },
	{ "no reduction", 2, 0, { "run", GAUSS, ALIASES, INPUTS, "-o", "out.npy" }, { "-r" } },
	{ "no formula", 2, 0, { "run", ALIASES, REF, INPUTS, "-o", "out.npy" }, { "formula" } },
	{ "formula read as an option", 2, 0,
	  { "run", "-G", "-a", "G=Pm(1)", "-r", "Sum", "--nx", "1", "--ny", "1", "-o", "out.npy" },
	  { "'-G'", "--" } },
	{ "source takes no files", 2, 0, { "source", GAUSS, ALIASES, REF, INPUTS }, { "-i" } },
	{ "two formulas", 2, 0, { "run", GAUSS, GAUSS, ALIASES, REF, INPUTS, "-o", "out.npy" },
	  { "unexpected" } },
};

START_TEST(error_exits)
{
	const struct error_case *c = &error_cases[_i];
	struct result r = run_kred(c->argv);

	ck_assert_msg(r.status == c->status, "%s: exit %d, want %d; stderr: %s", c->what,
		      r.status, c->status, r.err);
	ck_assert_msg(strncmp(r.err, "kred: error: ", 13) == 0, "%s: stderr: %s", c->what, r.err);
	ck_assert_msg(c->caret ? strchr(r.err, '^') != NULL : count_lines(r.err) == 1,
		      "%s: %s: %s", c->what, c->caret ? "no caret" : "not one line", r.err);
	for (int k = 0; k < 3 && c->mentions[k]; k++)
		ck_assert_msg(strstr(r.err, c->mentions[k]), "%s: '%s' not named in: %s", c->what,
			      c->mentions[k], r.err);
	/* A failed run leaves no output file behind. */
	ck_assert_int_ne(access("out.npy", F_OK), 0);
	result_free(&r);
}
END_TEST

START_TEST(syntax_error)
{
	static const char *const argv[] = { "run", "Exp(-G*SqDist(X,Y)", ALIASES, REF, INPUTS,
					    "-o", "out.npy", NULL };
	struct result r = run_kred(argv);

	ck_assert_msg(r.status == 1, "exit %d; stderr: %s", r.status, r.err);
	ck_assert_msg(strncmp(r.err, "kred: error: ", 13) == 0, "stderr: %s", r.err);
	ck_assert_msg(strstr(r.err, "Exp(-G*SqDist(X,Y)"), "no formula in: %s", r.err);
	ck_assert_msg(strchr(r.err, '^'), "no caret in: %s", r.err);
	ck_assert_int_ne(access("out.npy", F_OK), 0);
	result_free(&r);
}
END_TEST

/* ---- the other subcommands ---- */

START_TEST(devices)
{
	static const char *const argv[] = { "devices", NULL };
	struct result r = run_kred(argv);

	ck_assert_msg(r.status == 0, "exit %d; stderr: %s", r.status, r.err);
	ck_assert_msg(strstr(r.out, "reference"), "no reference backend in: %s", r.out);
	result_free(&r);
}
END_TEST

START_TEST(source)
{
	static const char *const argv[] = { "source", GAUSS, ALIASES, REF, NULL };
	struct result r = run_kred(argv);

	ck_assert_msg(r.status == 0, "exit %d; stderr: %s", r.status, r.err);
	ck_assert_msg(strlen(r.out) > 1, "empty source");
	result_free(&r);
}
END_TEST

/* --fast-math reaches the kernel (the host source says KR_FAST_MATH 1, and 0 without it)
 * and a run with it agrees with the closed form, within float32's tolerance above. */
START_TEST(fast_math_option)
{
	static const char *const src[] = { "source", GAUSS, ALIASES, "-r", "Sum", "-b", "host",
					   "--dtype", "float32", "--fast-math", NULL };
	static const char *const plain[] = { "source", GAUSS, ALIASES, "-r", "Sum", "-b",
					     "host", "--dtype", "float32", NULL };
	static const char *const run[] = { "run", GAUSS, ALIASES, "-r", "Sum", "-b", "host",
					   "--fast-math", INPUTS32, "-o", "out.npy", NULL };
	struct result r = run_kred(src);

	ck_assert_msg(r.status == 0, "exit %d; stderr: %s", r.status, r.err);
	ck_assert_msg(strstr(r.out, "#define KR_FAST_MATH 1"), "no KR_FAST_MATH 1 in the source");
	result_free(&r);
	r = run_kred(plain);
	ck_assert_msg(r.status == 0, "exit %d; stderr: %s", r.status, r.err);
	ck_assert_msg(strstr(r.out, "#define KR_FAST_MATH 0"), "no KR_FAST_MATH 0 in the source");
	result_free(&r);
	check_gauss_float32(run);
}
END_TEST

START_TEST(version_and_help)
{
	static const char *const version[] = { "--version", NULL };
	static const char *const help[] = { "help", NULL };
	static const char *const run_help[] = { "run", "--help", NULL };
	struct result r = run_kred(version);

	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.out, kred_version()), "no version in: %s", r.out);
	result_free(&r);
	r = run_kred(help);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.out, "usage"), "no usage in: %s", r.out);
	result_free(&r);
	r = run_kred(run_help);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.out, "usage"), "no usage in: %s", r.out);
	result_free(&r);
}
END_TEST

/* ---- npy.c on its own ---- */

START_TEST(npy_round_trip)
{
	static const double v[6] = { 1, -2.5, 3e300, -0.0, 5e-310, 6 };
	static const int64_t shapes[][2] = { { 2, 3 }, { 6, 0 }, { 0, 0 } };
	static const int ndims[] = { 2, 1, 0 };
	char err[512];

	for (int t = 0; t < 3; t++) {
		for (int dt = 0; dt < 2; dt++) {
			kred_dtype dtype = dt ? KRED_FLOAT64 : KRED_FLOAT32;
			float f[6];
			struct npy_array a;
			FILE *fp;
			unsigned char pre[10];
			size_t n = ndims[t] == 0 ? 1 : 6;

			for (int k = 0; k < 6; k++)
				f[k] = (float)v[k];
			ck_assert_msg(npy_write("rt.npy", dtype, ndims[t], shapes[t],
						dt ? (const void *)v : (const void *)f, err,
						sizeof(err)) == 0,
				      "%s", err);
			/* Version 1.0, and the data starts on a 64-byte boundary. */
			fp = fopen("rt.npy", "rb");
			ck_assert_ptr_nonnull(fp);
			ck_assert_int_eq(fread(pre, 1, 10, fp), 10);
			fclose(fp);
			ck_assert_int_eq(pre[6], 1);
			ck_assert_int_eq((10 + pre[8] + 256 * pre[9]) % 64, 0);

			ck_assert_msg(npy_read("rt.npy", &a, err, sizeof(err)) == 0, "%s", err);
			ck_assert_int_eq(a.dtype, dtype);
			ck_assert_int_eq(a.ndim, ndims[t]);
			for (int k = 0; k < ndims[t]; k++)
				ck_assert_int_eq(a.shape[k], shapes[t][k]);
			ck_assert_uint_eq(a.count, n);
			ck_assert_int_eq(memcmp(a.data, dt ? (const void *)v : (const void *)f,
						n * (dt ? 8 : 4)),
					 0);
			npy_free(&a);
			ck_assert_ptr_null(a.data);
		}
	}
}
END_TEST

START_TEST(npy_empty)
{
	static const int64_t shape[2] = { 0, 3 };
	struct npy_array a;
	char err[512];

	ck_assert_int_eq(npy_write("empty.npy", KRED_FLOAT64, 2, shape, NULL, err, sizeof(err)), 0);
	ck_assert_msg(npy_read("empty.npy", &a, err, sizeof(err)) == 0, "%s", err);
	ck_assert_uint_eq(a.count, 0);
	ck_assert_int_eq(a.shape[0], 0);
	ck_assert_int_eq(a.shape[1], 3);
	npy_free(&a);
}
END_TEST

/* Writes magic, version, header length (2 or 4 bytes), header, then nbytes zeros. */
static void write_raw(const char *path, int major, const char *header, size_t nbytes)
{
	FILE *f = fopen(path, "wb");
	size_t len = strlen(header);
	unsigned char pre[12] = { 0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0 };
	int prelen = major == 1 ? 10 : 12;

	ck_assert_ptr_nonnull(f);
	for (int k = 0; k < prelen - 8; k++)
		pre[8 + k] = (unsigned char)(len >> (8 * k));
	fwrite(pre, 1, (size_t)prelen, f);
	fwrite(header, 1, len, f);
	for (size_t k = 0; k < nbytes; k++)
		fputc(0, f);
	fclose(f);
}

START_TEST(npy_v2_header)
{
	/* Keys in another order, double quotes, odd spacing, no trailing comma. */
	struct npy_array a;
	char err[512];

	write_raw("v2.npy", 2, "{ \"shape\" : (4 , 2) ,'fortran_order':False, 'descr':'<f4' }  \n",
		  32);
	ck_assert_msg(npy_read("v2.npy", &a, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(a.dtype, KRED_FLOAT32);
	ck_assert_int_eq(a.ndim, 2);
	ck_assert_int_eq(a.shape[0], 4);
	ck_assert_int_eq(a.shape[1], 2);
	ck_assert_uint_eq(a.count, 8);
	npy_free(&a);

	write_raw("v3.npy", 3, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }\n", 24);
	ck_assert_msg(npy_read("v3.npy", &a, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(a.dtype, KRED_FLOAT64);
	ck_assert_int_eq(a.ndim, 1);
	npy_free(&a);
}
END_TEST

static const struct npy_bad {
	const char *what;
	int major;
	const char *header;
	size_t nbytes;
	const char *mentions;
} npy_bad_cases[] = {
	{ "Fortran order", 1, "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }\n", 32,
	  "Fortran" },
	{ "int dtype", 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }\n", 16,
	  "<i8" },
	{ "big-endian", 1, "{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }\n", 16,
	  ">f8" },
	{ "truncated data", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }\n", 16,
	  "truncated" },
	{ "trailing data", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }\n", 16,
	  "after" },
	{ "size overflow", 1,
	  "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n", 0,
	  "overflow" },
	{ "missing key", 1, "{'descr': '<f8', 'shape': (2,), }\n", 16, "fortran_order" },
	{ "unknown key", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'x': 1}\n",
	  16, "'x'" },
	{ "structured dtype", 1, "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (2,)}\n",
	  16, "structured" },
	{ "no newline", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16,
	  "newline" },
	{ "version 9", 9, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", 16,
	  "version" },
};

START_TEST(npy_rejects)
{
	const struct npy_bad *c = &npy_bad_cases[_i];
	struct npy_array a;
	char err[512];

	write_raw("bad.npy", c->major, c->header, c->nbytes);
	ck_assert_msg(npy_read("bad.npy", &a, err, sizeof(err)) == -1, "%s accepted", c->what);
	ck_assert_ptr_null(a.data);
	ck_assert_msg(strstr(err, "bad.npy"), "%s: file not named: %s", c->what, err);
	ck_assert_msg(strstr(err, c->mentions), "%s: '%s' not in: %s", c->what, c->mentions, err);
}
END_TEST

START_TEST(npy_not_npy)
{
	struct npy_array a;
	char err[512];

	write_text("text.npy", "hello, world\n");
	ck_assert_int_eq(npy_read("text.npy", &a, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "text.npy") && strstr(err, "not a .npy"), "%s", err);
	write_text("short.npy", "\x93NUM");
	ck_assert_int_eq(npy_read("short.npy", &a, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "short.npy"), "%s", err);
	ck_assert_int_eq(npy_read("absent.npy", &a, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "absent.npy"), "%s", err);
	/* A short error buffer is cut, never overrun. */
	ck_assert_int_eq(npy_read("absent.npy", &a, err, 4), -1);
	ck_assert_uint_eq(strlen(err), 3);
}
END_TEST

/* A stream whose size cannot be known (a pipe) and whose header promises 8 TB: the
 * reader grows its buffer with the data that arrives and says "truncated", where it once
 * asked malloc for the 8 TB at once (which ASan refuses outright). The stream forms
 * also read and write in memory. Found by the .npy fuzz harness, which reads from
 * memory (corpus/npy/regress-unsized-stream). */
START_TEST(npy_streams)
{
	static const char header[] = "{'descr': '<f8', 'fortran_order': False, "
				     "'shape': (1000000000000,), }\n";
	unsigned char pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, sizeof(header) - 1, 0 };
	double v[3] = { 1, -2, 0.5 };
	int64_t shape[1] = { 3 };
	struct npy_array a;
	char err[512], *buf = NULL;
	size_t len = 0;
	int fds[2];
	FILE *f;

	ck_assert_int_eq(pipe(fds), 0);
	ck_assert(write(fds[1], pre, sizeof(pre)) == (ssize_t)sizeof(pre));
	ck_assert(write(fds[1], header, sizeof(header) - 1) == (ssize_t)sizeof(header) - 1);
	ck_assert(write(fds[1], v, sizeof(v)) == (ssize_t)sizeof(v));
	close(fds[1]);
	f = fdopen(fds[0], "rb");
	ck_assert_int_eq(npy_read_stream(f, "pipe", &a, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "pipe") && strstr(err, "truncated"), "%s", err);
	ck_assert_ptr_null(a.data);
	fclose(f);

	f = open_memstream(&buf, &len);
	ck_assert_int_eq(npy_write_stream(f, "memory", KRED_FLOAT64, 1, shape, v, err,
					  sizeof(err)), 0);
	fclose(f);
	ck_assert_uint_eq((len - sizeof(v)) % 64, 0); /* numpy aligns the data on 64 bytes */
	f = fmemopen(buf, len, "rb");
	ck_assert_msg(npy_read_stream(f, "memory", &a, err, sizeof(err)) == 0, "%s", err);
	fclose(f);
	ck_assert_int_eq(a.ndim, 1);
	ck_assert_uint_eq(a.count, 3);
	ck_assert(memcmp(a.data, v, sizeof(v)) == 0);
	npy_free(&a);
	free(buf);
}
END_TEST

static Suite *cli_suite(void)
{
	Suite *s = suite_create("cli");
	TCase *run = tcase_create("run");
	TCase *grad = tcase_create("grad");
	TCase *errors = tcase_create("errors");
	TCase *other = tcase_create("subcommands");
	TCase *npy = tcase_create("npy");
	TCase *all[] = { run, grad, errors, other, npy };

	for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++) {
		tcase_add_checked_fixture(all[k], setup, teardown);
		suite_add_tcase(s, all[k]);
	}
	tcase_add_test(run, gauss_float64);
	tcase_add_test(run, gauss_float32);
	tcase_add_test(run, gauss_dtype_converts);
	tcase_add_test(run, gauss_axis_i);
	tcase_add_test(run, positional_binding);
	tcase_add_test(run, size_from_option);
	tcase_add_test(run, dash_dash);
	tcase_add_test(run, time_option);
	tcase_add_test(run, device_memory_option);
	tcase_add_test(grad, grad_vi);
	tcase_add_test(grad, grad_vj);
	tcase_add_test(grad, grad_pm);
	tcase_add_test(grad, grad_logsumexp);
	tcase_add_loop_test(errors, error_exits, 0,
			    (int)(sizeof(error_cases) / sizeof(error_cases[0])));
	tcase_add_test(errors, syntax_error);
	tcase_add_test(other, devices);
	tcase_add_test(other, source);
	tcase_add_test(other, fast_math_option);
	tcase_add_test(other, version_and_help);
	tcase_add_test(npy, npy_round_trip);
	tcase_add_test(npy, npy_empty);
	tcase_add_test(npy, npy_v2_header);
	tcase_add_loop_test(npy, npy_rejects, 0,
			    (int)(sizeof(npy_bad_cases) / sizeof(npy_bad_cases[0])));
	tcase_add_test(npy, npy_not_npy);
	tcase_add_test(npy, npy_streams);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(cli_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
