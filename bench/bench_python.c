/* The C side of the Python overhead benchmark (bench/bench_python.py): the time of one
 * kred_reduction_run of the Gaussian convolution on host arrays of a few rows, with the
 * reduction created once, as the Python layer runs it. */
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"
#include "kred.h"

/* The same reduction as bench_python.py's. */
static const char *const aliases[] = { "G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)" };

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10, batches = 25, calls = 400;
	kred_spec spec = { .formula = "Exp(-G * SqDist(X, Y)) * B", .aliases = aliases,
			   .n_aliases = 4, .reduction = "Sum", .dtype = KRED_FLOAT64 };
	kred_context_options opt = { .struct_size = sizeof(opt), .backend = "host" };
	double *x = calloc((size_t)n * 3, sizeof(double));
	double *y = calloc((size_t)n * 3, sizeof(double));
	double *b = calloc((size_t)n * 2, sizeof(double));
	double *a = calloc((size_t)n * 2, sizeof(double));
	double g = 0.5, t[25];
	const void *args[] = { &g, x, y, b };
	kred_context *ctx = NULL;
	kred_reduction *r = NULL;

	if (n < 1 || !x || !y || !b || !a) {
		fprintf(stderr, "usage: bench_python [ROWS]\n");
		return 2;
	}
	for (int k = 0; k < n * 3; k++) {
		x[k] = 0.1 * k;
		y[k] = 0.05 * k;
	}
	for (int k = 0; k < n * 2; k++)
		b[k] = 1.0 + k;
	if (kred_context_create(&opt, &ctx) || kred_reduction_create(ctx, &spec, &r) ||
	    kred_reduction_run(r, n, n, args, a)) {
		fprintf(stderr, "bench_python: %s\n", kred_errmsg(ctx));
		return 1;
	}
	/* The median over batches of the mean time of a call. */
	for (int k = 0; k < batches; k++) {
		double t0 = now();

		for (int c = 0; c < calls; c++)
			kred_reduction_run(r, n, n, args, a);
		t[k] = (now() - t0) / calls;
	}
	printf("c_api_us %.3f\n", 1e6 * median(t, batches));
	kred_reduction_destroy(r);
	kred_context_destroy(ctx);
	free(x);
	free(y);
	free(b);
	free(a);
	return 0;
}
