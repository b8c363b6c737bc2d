/* The Vulkan part of `kred bench`: kred vulkan against kred opencl and kred host on the
 * Gaussian sum, the backends taking turns on the same data in one process. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_vulkan.h"
#include "kred.h"
#include "bench_util.h"

#define N_BACKENDS 3
#define MAX_REPS 64

static const char *const names[N_BACKENDS] = { "vulkan", "opencl", "host" };

struct side {
	kred_context *ctx;
	kred_reduction *r;
	float *out;
	double t[MAX_REPS];
	char why[512];
};

static float *fill(int64_t count, double lo, double hi, uint64_t *s)
{
	float *p = malloc((size_t)count * sizeof(float));

	for (int64_t k = 0; p && k < count; k++) {
		*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
		p[k] = (float)(lo + (hi - lo) * (double)(*s >> 11) * 0x1.0p-53);
	}
	return p;
}

/* A context and the reduction on one backend, or why not. */
static void open_side(struct side *sd, const char *backend, int64_t nx)
{
	static const char *const al[4] = { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" };
	kred_context_options o = { 0 };
	kred_spec s = { 0 };

	o.struct_size = sizeof(o);
	o.backend = backend;
	if (kred_context_create(&o, &sd->ctx) != KRED_OK) {
		snprintf(sd->why, sizeof(sd->why), "%s", kred_errmsg(sd->ctx));
		kred_context_destroy(sd->ctx);
		sd->ctx = NULL;
		return;
	}
	s.formula = "Exp(-G*SqDist(X,Y))*B";
	s.reduction = "Sum";
	s.aliases = al;
	s.n_aliases = 4;
	sd->out = malloc((size_t)nx * sizeof(float));
	if (kred_reduction_create(sd->ctx, &s, &sd->r) != KRED_OK || !sd->out)
		snprintf(sd->why, sizeof(sd->why), "%s", sd->out ? kred_errmsg(sd->ctx)
								 : "out of memory");
}

/* Largest |a - b| / (|b| + mean |b|). */
static double rel_diff(const float *a, const float *b, int64_t n)
{
	double worst = 0, scale = 0;

	for (int64_t k = 0; k < n; k++)
		scale += fabs(b[k]) / (double)n;
	for (int64_t k = 0; k < n; k++) {
		double d = fabs((double)a[k] - b[k]) / (fabs(b[k]) + scale);

		worst = d > worst || d != d ? d : worst;
	}
	return worst;
}

int kred_bench_vulkan(int64_t nx, int64_t ny, int reps, const char *device)
{
	const char *backends[N_BACKENDS] = { device ? device : "vulkan", "opencl", "host" };
	struct side sd[N_BACKENDS] = { 0 };
	uint64_t seed = 42;
	float *x = fill(3 * nx, 0, 1, &seed), *y = fill(3 * ny, 0, 1, &seed);
	float *b = fill(ny, -0.2, 1, &seed), g = 2;
	const void *args[4] = { x, y, b, &g };
	double med[N_BACKENDS] = { 0 };
	const float *ref = NULL;
	int rc = 0;

	if (reps > MAX_REPS)
		reps = MAX_REPS;
	if (!x || !y || !b) {
		fprintf(stderr, "kred: error: bench: out of memory\n");
		rc = 1;
		goto done;
	}
	for (int k = 0; k < N_BACKENDS; k++)
		open_side(&sd[k], backends[k], nx);
	/* One untimed run each: first dispatches pay the drivers' JIT. */
	for (int rep = -1; rep < reps; rep++) {
		for (int k = 0; k < N_BACKENDS; k++) {
			double t0 = now();

			if (sd[k].why[0])
				continue;
			if (kred_reduction_run(sd[k].r, nx, ny, args, sd[k].out) != KRED_OK) {
				snprintf(sd[k].why, sizeof(sd[k].why), "%s", kred_errmsg(sd[k].ctx));
				rc = 1;
				continue;
			}
			if (rep >= 0)
				sd[k].t[rep] = now() - t0;
		}
	}
	for (int k = 0; k < N_BACKENDS; k++)
		if (!sd[k].why[0]) {
			med[k] = median(sd[k].t, reps);
			ref = sd[k].out; /* host's when it runs: the last one */
		}
	printf("\nkred vulkan against kred opencl and kred host: Exp(-G*SqDist(X,Y))*B  D=3  "
	       "E=1  float32, nx = %lld, ny = %lld, median of %d runs, taking turns\n",
	       (long long)nx, (long long)ny, reps);
	printf("%-8s %10s %9s %12s %13s  %s\n", "backend", "s", "Gpair/s", "vulkan/this",
	       "max rel diff", "device");
	for (int k = 0; k < N_BACKENDS; k++) {
		double diff;

		if (sd[k].why[0]) {
			printf("%-8s not run: %s\n", names[k], sd[k].why);
			continue;
		}
		diff = rel_diff(sd[k].out, ref, nx);
		printf("%-8s %10.4f %9.3f", names[k], med[k], (double)nx * (double)ny / med[k] * 1e-9);
		if (k > 0 && med[0] > 0)
			printf(" %11.2fx", med[k] / med[0]);
		else
			printf(" %12s", "");
		printf(" %13.1e  %s\n", diff, kred_context_backend(sd[k].ctx));
		if (diff > 1e-4)
			rc = 1;
	}
	printf("(vulkan/this: vulkan's pairs per second over this backend's; max rel diff: "
	       "against %s)\n", sd[2].why[0] ? "the last backend that ran" : "host");
	fflush(stdout);
done:
	for (int k = 0; k < N_BACKENDS; k++) {
		kred_reduction_destroy(sd[k].r);
		kred_context_destroy(sd[k].ctx);
		free(sd[k].out);
	}
	free(x);
	free(y);
	free(b);
	return rc;
}
