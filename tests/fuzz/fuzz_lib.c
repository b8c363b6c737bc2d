/* What the formula and kernel harnesses do with a reduction that was made: run it on small
 * deterministic inputs, and check that its canonical formula parses back to itself. */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "internal.h"

FILE *fz_log;

void fz_log_init(void)
{
	int fd = dup(2);

	fz_log = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!fz_log)
		fz_log = stderr;
}

char *fz_text(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		return NULL;
	if (size)
		memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* Deterministic values with zeros, negatives, ties and a few magnitudes. */
void fz_fill(void *p, size_t n, kred_dtype dtype, unsigned seed)
{
	static const double pattern[] = { 0.5, -1.25, 0, 2, 0.5, -3, 1e-3, 7, -0.75, 1 };

	for (size_t k = 0; k < n; k++) {
		double v = pattern[(k + seed) % (sizeof(pattern) / sizeof(pattern[0]))];

		if (dtype == KRED_FLOAT32)
			((float *)p)[k] = (float)v;
		else
			((double *)p)[k] = v;
	}
}

kred_status fz_run(kred_reduction *r, int64_t nx, int64_t ny)
{
	int n = kred_reduction_n_args(r), out_dim = kred_reduction_out_dim(r);
	kred_dtype dtype = r->dtype;
	size_t size = dtype == KRED_FLOAT32 ? sizeof(float) : sizeof(double);
	int64_t rows = nx > ny ? nx : ny;
	const void **args = calloc((size_t)n + 1, sizeof(*args));
	void **bufs = calloc((size_t)n + 1, sizeof(*bufs));
	void *out = NULL;
	kred_status st = KRED_OK;

	FZ_CHECK(n >= 0 && out_dim >= 1, "%d arguments, out_dim %d", n, out_dim);
	if (!args || !bufs)
		goto out;
	/* wide arguments or outputs run on one row each, so that dimensions up to the
	 * largest still run */
	for (int k = 0; k < n && (nx > 1 || ny > 1); k++) {
		int cat, dim;

		if (kred_reduction_arg(r, k, &cat, &dim, NULL) == KRED_OK &&
		    ((int64_t)dim * (cat == 0 ? nx : cat == 1 ? ny : 1) > FZ_MAX_VALUES ||
		     (int64_t)out_dim * rows > FZ_MAX_VALUES)) {
			nx = nx > 1 ? 1 : nx;
			ny = ny > 1 ? 1 : ny;
			rows = nx > ny ? nx : ny;
		}
	}
	if ((int64_t)out_dim * (rows ? rows : 1) > FZ_MAX_VALUES)
		goto out;
	for (int k = 0; k < n; k++) {
		int cat, dim;
		const char *name;
		int64_t count;

		st = kred_reduction_arg(r, k, &cat, &dim, &name);
		FZ_CHECK(st == KRED_OK && cat >= 0 && cat <= 2 && dim >= 1 && name,
			 "argument %d of %d: %s", k, n, kred_status_name(st));
		count = (int64_t)dim * (cat == 0 ? nx : cat == 1 ? ny : 1);
		if (count > FZ_MAX_VALUES)
			goto out;
		bufs[k] = malloc((size_t)count * size + 1);
		if (!bufs[k])
			goto out;
		fz_fill(bufs[k], (size_t)count, dtype, (unsigned)k);
		args[k] = bufs[k];
	}
	out = malloc((size_t)out_dim * (size_t)(rows ? rows : 1) * size);
	if (out)
		st = kred_reduction_run(r, nx, ny, args, out);
	/* the only error a run of checked sizes may give */
	FZ_CHECK(st == KRED_OK || st == KRED_ENOMEM, "run: %s: %s", kred_status_name(st),
		 kred_errmsg(r->ctx));
out:
	for (int k = 0; k < n; k++)
		free(bufs[k]);
	free(bufs);
	free(args);
	free(out);
	return st;
}

/* Whether the canonical text was cut: the printer stops at 4 MiB (a derivative's DAG,
 * printed as a tree, can grow exponentially) and ends the text with "...". */
static bool cut(const char *text)
{
	size_t n = strlen(text);

	return n > (4u << 20) && strcmp(text + n - 3, "...") == 0;
}

void fz_round_trip(kred_reduction *r, const kred_spec *spec)
{
	const char *text = kred_reduction_formula(r);
	char *f, *w = NULL;
	kred_spec again_spec = *spec;
	kred_reduction *again = NULL;
	kred_status st;

	FZ_CHECK(text && *text, "no canonical formula");
	if (cut(text))
		return;
	f = strdup(text);
	if (!f)
		return;
	if (spec->weight) {
		w = strstr(f, " ; weight ");
		FZ_CHECK(w, "a weight, but the canonical text has none: %.3000s", text);
		*w = '\0';
		w += strlen(" ; weight ");
	}
	again_spec.formula = f;
	again_spec.weight = w;
	st = kred_reduction_create(r->ctx, &again_spec, &again);
	if (st != KRED_ENOMEM) {
		FZ_CHECK(st == KRED_OK, "the canonical text does not parse back: %s\n%s\n%.3000s",
			 kred_status_name(st), kred_errmsg(r->ctx), text);
		FZ_CHECK(strcmp(kred_reduction_formula(again), text) == 0,
			 "parse(print(f)) prints otherwise:\n%.3000s\n%.3000s", text,
			 kred_reduction_formula(again));
		FZ_CHECK(kred_reduction_n_args(again) == kred_reduction_n_args(r) &&
				 kred_reduction_out_dim(again) == kred_reduction_out_dim(r),
			 "the canonical text has other arguments: %.3000s", text);
	}
	kred_reduction_destroy(again);
	free(f);
}

void fz_round_trip_args(kred_reduction *r)
{
	const char *text = kred_reduction_formula(r);
	const struct kred__graph *g = r->g;
	int n = r->n_args + g->n_vars;
	char (*aliases)[96] = calloc((size_t)n + 1, sizeof(*aliases));
	const char **list = calloc((size_t)n + 1, sizeof(*list));
	size_t n_aliases = 0;
	kred_reduction *again = NULL;
	kred_status st;

	FZ_CHECK(text && *text, "no canonical formula");
	if (!aliases || !list || strstr(text, " ; weight ") || cut(text))
		goto out;
	/* every name of the graph: a position may have several, and the printer uses the
	 * first that matches, the argument table the last */
	for (int k = 0; k < g->n_vars; k++) {
		const struct kred__var *v = &g->vars[k];

		if (!*v->name) /* a gradient keeps an unnamed argument's place so */
			continue;
		if (strlen(v->name) > 32)
			goto out;
		snprintf(aliases[n_aliases], sizeof(aliases[0]), "%s = Var(%d, %d, %d)", v->name,
			 v->pos, v->dim, v->cat);
		list[n_aliases] = aliases[n_aliases];
		n_aliases++;
	}
	for (int k = 0; k < r->n_args; k++) {
		const struct kred__arg *a = &r->args[k];
		char var[48];

		if (a->name && *a->name)
			continue;
		/* an argument the formula does not use (a variable that the derivative took
		 * away) keeps its place through an alias of its own */
		snprintf(var, sizeof(var), "Var(%d,%d,%d)", k, a->dim, a->cat);
		if (strstr(text, var))
			continue;
		snprintf(aliases[n_aliases], sizeof(aliases[0]), "_unused%d = %s", k, var);
		list[n_aliases] = aliases[n_aliases];
		n_aliases++;
	}
	{
		kred_spec spec = { .formula = text, .aliases = list, .n_aliases = n_aliases,
				   .reduction = "Sum", .dtype = KRED_FLOAT64 };

		st = kred_reduction_create(r->ctx, &spec, &again);
	}
	if (st != KRED_ENOMEM) {
		FZ_CHECK(st == KRED_OK, "a gradient's text does not parse back: %s\n%s\n%.3000s",
			 kred_status_name(st), kred_errmsg(r->ctx), text);
		FZ_CHECK(strcmp(kred_reduction_formula(again), text) == 0,
			 "a gradient's parse(print(f)) prints otherwise:\n%.3000s\n%.3000s", text,
			 kred_reduction_formula(again));
	}
out:
	kred_reduction_destroy(again);
	free(list);
	free(aliases);
}
