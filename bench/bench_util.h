/* What every benchmark of bench/ times with: a monotonic clock and the median of runs;
 * and the inputs and the check of the GPU baselines (bench_cuda.c, bench_opencl.c). */
#ifndef KRED_BENCH_UTIL_H
#define KRED_BENCH_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static inline double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static inline int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Sorts v. */
static inline double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The largest difference of a from b, relative to |b_k| plus the mean |b|. */
static inline double rel_diff_f32(const float *a, const float *b, int64_t n)
{
	double worst = 0, scale = 0;

	for (int64_t k = 0; k < n; k++)
		scale += fabs(b[k]);
	scale = n ? scale / (double)n : 1;
	for (int64_t k = 0; k < n; k++) {
		double d = fabs((double)a[k] - b[k]) / (fabs(b[k]) + scale);

		if (d > worst || d != d)
			worst = d;
	}
	return worst;
}

/* n floats uniform in [lo, hi) from the generator state *s (malloc'd). */
static inline float *fill_f32(int64_t n, double lo, double hi, uint64_t *s)
{
	float *p = malloc((size_t)(n ? n : 1) * sizeof(float));

	for (int64_t k = 0; p && k < n; k++) {
		*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
		p[k] = (float)(lo + (hi - lo) * (double)(*s >> 11) * 0x1.0p-53);
	}
	return p;
}

#endif
