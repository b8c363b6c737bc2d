/* Fuzz harness of the formula language: a reduction spec is created on the reference
 * backend, then its canonical formula must parse back to the same text, every gradient is
 * built (and printed, and parsed back), and the reduction and its gradients run on small
 * inputs. Errors are fine; crashes, sanitizer reports and failed checks are not.
 *
 * An input is text, one item per line:
 *   line 1          the reduction ("Sum", "KMin(3)", ...)
 *   line 2          the formula
 *   "weight: G"     the weight formula of the ...Weight reductions
 *   "axis: i"       reduce over i (default j)
 *   "dtype: float32"  (default float64)
 *   "sum: kahan"    the summation scheme (direct, block, kahan)
 *   any other line  an alias ("X = Vi(3)"); blank lines are skipped
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "kred.h"

#define MAX_ALIASES 64
/* Rows of the runs: small, and different, so that nx and ny cannot be mixed up unseen. */
#define NX 3
#define NY 2

struct input {
	char *text; /* owned; the strings below point into it */
	const char *reduction, *formula, *weight;
	const char *aliases[MAX_ALIASES];
	size_t n_aliases;
	kred_axis axis;
	kred_dtype dtype;
	kred_sum_scheme sum;
};

static kred_context *ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	kred_context_options opt = { .struct_size = sizeof(opt), .backend = "reference" };

	(void)argc, (void)argv;
	fz_log_init();
	if (kred_context_create(&opt, &ctx) != KRED_OK) {
		fprintf(stderr, "fuzz_formula: no reference context: %s\n", kred_errmsg(ctx));
		abort();
	}
	return 0;
}

static const char *after(const char *line, const char *key)
{
	size_t n = strlen(key);

	if (strncmp(line, key, n) != 0)
		return NULL;
	line += n;
	while (*line == ' ')
		line++;
	return line;
}

static bool split(const uint8_t *data, size_t size, struct input *in)
{
	char *line, *next;
	int k = 0;

	memset(in, 0, sizeof(*in));
	in->dtype = KRED_FLOAT64;
	in->text = fz_text(data, size);
	if (!in->text)
		return false;
	for (line = in->text; line; line = next, k++) {
		const char *v;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (k == 0)
			in->reduction = line;
		else if (k == 1)
			in->formula = line;
		else if (!*line)
			continue; /* blank lines, and the end of the last line */
		else if ((v = after(line, "weight:")))
			in->weight = v;
		else if ((v = after(line, "axis:")))
			in->axis = *v == 'i' ? KRED_REDUCE_I : KRED_REDUCE_J;
		else if ((v = after(line, "dtype:")))
			in->dtype = strcmp(v, "float32") == 0 ? KRED_FLOAT32 : KRED_FLOAT64;
		else if ((v = after(line, "sum:")))
			in->sum = !strcmp(v, "direct")	? KRED_SUM_DIRECT
				  : !strcmp(v, "block") ? KRED_SUM_BLOCK
				  : !strcmp(v, "kahan") ? KRED_SUM_KAHAN
							: KRED_SUM_DEFAULT;
		else if (in->n_aliases < MAX_ALIASES)
			in->aliases[in->n_aliases++] = line;
	}
	if (!in->formula) {
		free(in->text);
		return false;
	}
	return true;
}

static kred_spec spec_of(const struct input *in)
{
	kred_spec spec = { .formula = in->formula, .weight = in->weight,
			   .aliases = in->aliases, .n_aliases = in->n_aliases,
			   .reduction = in->reduction, .axis = in->axis, .dtype = in->dtype,
			   .sum_scheme = in->sum };
	return spec;
}

/* A failed create must say what and where. */
static void check_error(kred_status st, const struct input *in)
{
	const char *msg = kred_errmsg(ctx);
	long off = kred_error_offset(ctx);
	size_t longest = strlen(in->formula) + strlen(in->reduction);

	FZ_CHECK(st > KRED_OK && st < KRED_STATUS_COUNT, "status %d", (int)st);
	FZ_CHECK(msg && *msg, "%s without a message", kred_status_name(st));
	if (in->weight)
		longest += strlen(in->weight);
	for (size_t k = 0; k < in->n_aliases; k++)
		longest += strlen(in->aliases[k]);
	FZ_CHECK(off >= -1 && (off < 0 || (size_t)off <= longest), "offset %ld: %s", off, msg);
}

/* The gradient with respect to argument pos (by name, else "#POS"): built, printed and
 * parsed back, run; for pos 0 also its own gradient with respect to the same variable. */
static void gradient(kred_reduction *r, int pos, int order)
{
	int cat, dim;
	const char *name;
	char var[80];
	kred_reduction *g = NULL;
	kred_status st;

	if (kred_reduction_arg(r, pos, &cat, &dim, &name) != KRED_OK)
		return;
	if (name && *name && strlen(name) < sizeof(var))
		snprintf(var, sizeof(var), "%s", name);
	else
		snprintf(var, sizeof(var), "#%d", pos);
	st = kred_reduction_grad(r, var, &g);
	if (st != KRED_OK) {
		const char *msg = kred_errmsg(ctx);

		FZ_CHECK(g == NULL && msg && *msg, "grad %s: %s without a message", var,
			 kred_status_name(st));
		return;
	}
	fz_round_trip_args(g);
	fz_run(g, NX, NY);
	if (order == 1 && pos == 0)
		gradient(g, pos, 2);
	kred_reduction_destroy(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in;
	kred_spec spec;
	kred_reduction *r = NULL;
	kred_status st;

	if (!split(data, size, &in))
		return 0;
	spec = spec_of(&in);
	st = kred_reduction_create(ctx, &spec, &r);
	if (getenv("KRED_FUZZ_VERBOSE"))
		fprintf(fz_log, "%s: %.300s\n", kred_status_name(st),
			st ? kred_errmsg(ctx) : kred_reduction_formula(r));
	if (st != KRED_OK) {
		FZ_CHECK(r == NULL, "an error, and a reduction");
		check_error(st, &in);
		free(in.text);
		return 0;
	}
	FZ_CHECK(kred_reduction_source(r), "no source: %s", kred_errmsg(ctx));
	fz_round_trip(r, &spec);
	fz_run(r, NX, NY);
	fz_run(r, NX, 0);
	fz_run(r, 0, NY);
	for (int pos = 0; pos < kred_reduction_n_args(r); pos++)
		gradient(r, pos, 1);
	kred_reduction_destroy(r);
	free(in.text);
	return 0;
}
