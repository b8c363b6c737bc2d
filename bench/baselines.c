/* The baselines of `kred bench`: each case written as a careful user writes it in C with
 * OpenMP, on the same machine as kred's host kernels and with the same compiler and
 * flags. `kred bench` embeds this file, compiles it twice into shared objects with the
 * flags of kred's host kernels (-O3 -march=native -fno-math-errno -fno-trapping-math
 * -fopenmp), then again with -ffast-math added (which lets GCC call glibc's vector
 * expf/exp), and times both against kred on the same data.
 *
 * What a careful user does here: one parallel loop over the output rows, coordinates
 * stored as separate arrays (structure of arrays) so that the loop over j reads them
 * contiguously, and `omp simd` reductions over j (or over the dimension, at D = 64). LogSumExp
 * takes a max pass then a shifted sum; ArgKMin computes the distances of a tile of
 * columns as a vector loop, then inserts the few that beat the current tenth best.
 *
 * No kred header is included: the file is compiled alone, at run time. */
#include <math.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))

/* out_i = sum_j exp(-g |x_i - y_j|^2) b_j, D = 3, float32; x[c] and y[c] hold
 * coordinate c of every point. */
EXPORT void base_gauss_f32(int64_t nx, int64_t ny, const float *const *x,
			   const float *const *y, const float *b, float g, float *out)
{
	const float *y0 = y[0], *y1 = y[1], *y2 = y[2];

#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < nx; i++) {
		float x0 = x[0][i], x1 = x[1][i], x2 = x[2][i], s = 0;

#pragma omp simd reduction(+ : s)
		for (int64_t j = 0; j < ny; j++) {
			float d0 = x0 - y0[j], d1 = x1 - y1[j], d2 = x2 - y2[j];

			s += expf(-g * (d0 * d0 + d1 * d1 + d2 * d2)) * b[j];
		}
		out[i] = s;
	}
}

/* the same in float64 */
EXPORT void base_gauss_f64(int64_t nx, int64_t ny, const double *const *x,
			   const double *const *y, const double *b, double g, double *out)
{
	const double *y0 = y[0], *y1 = y[1], *y2 = y[2];

#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < nx; i++) {
		double x0 = x[0][i], x1 = x[1][i], x2 = x[2][i], s = 0;

#pragma omp simd reduction(+ : s)
		for (int64_t j = 0; j < ny; j++) {
			double d0 = x0 - y0[j], d1 = x1 - y1[j], d2 = x2 - y2[j];

			s += exp(-g * (d0 * d0 + d1 * d1 + d2 * d2)) * b[j];
		}
		out[i] = s;
	}
}

/* out_i = log sum_j exp(-g |x_i - y_j|^2), D = 3, float32: the max of the exponents, then
 * the sum shifted by it, so that nothing overflows */
EXPORT void base_lse_f32(int64_t nx, int64_t ny, const float *const *x, const float *const *y,
			 float g, float *out)
{
	const float *y0 = y[0], *y1 = y[1], *y2 = y[2];

#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < nx; i++) {
		float x0 = x[0][i], x1 = x[1][i], x2 = x[2][i], m = -INFINITY, s = 0;

#pragma omp simd reduction(max : m)
		for (int64_t j = 0; j < ny; j++) {
			float d0 = x0 - y0[j], d1 = x1 - y1[j], d2 = x2 - y2[j];
			float f = -g * (d0 * d0 + d1 * d1 + d2 * d2);

			m = f > m ? f : m;
		}
#pragma omp simd reduction(+ : s)
		for (int64_t j = 0; j < ny; j++) {
			float d0 = x0 - y0[j], d1 = x1 - y1[j], d2 = x2 - y2[j];

			s += expf(-g * (d0 * d0 + d1 * d1 + d2 * d2) - m);
		}
		out[i] = m + logf(s);
	}
}

/* The indices of the 10 nearest y_j (as floats, as kred writes them), D = 3, float32;
 * ties keep the smaller index. */
#define K 10
#define TILE 512
EXPORT void base_argkmin_f32(int64_t nx, int64_t ny, const float *const *x,
			     const float *const *y, float *out)
{
	const float *y0 = y[0], *y1 = y[1], *y2 = y[2];

#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < nx; i++) {
		float x0 = x[0][i], x1 = x[1][i], x2 = x[2][i], best[K], d[TILE];
		int64_t idx[K];

		for (int k = 0; k < K; k++) {
			best[k] = INFINITY;
			idx[k] = -1;
		}
		for (int64_t j0 = 0; j0 < ny; j0 += TILE) {
			int n = ny - j0 < TILE ? (int)(ny - j0) : TILE;

#pragma omp simd
			for (int t = 0; t < n; t++) {
				float d0 = x0 - y0[j0 + t], d1 = x1 - y1[j0 + t], d2 = x2 - y2[j0 + t];

				d[t] = d0 * d0 + d1 * d1 + d2 * d2;
			}
			for (int t = 0; t < n; t++) {
				int k = K - 1;

				if (!(d[t] < best[K - 1]))
					continue;
				while (k > 0 && best[k - 1] > d[t]) {
					best[k] = best[k - 1];
					idx[k] = idx[k - 1];
					k--;
				}
				best[k] = d[t];
				idx[k] = j0 + t;
			}
		}
		for (int k = 0; k < K; k++)
			out[K * i + k] = (float)idx[k];
	}
}

/* out_i = sum_j exp(-g |x_i - y_j|^2) b_j at D = 64, float32, x and y row-major (n x 64):
 * a vector loop over the 64 coordinates of each pair */
EXPORT void base_gauss_d64_f32(int64_t nx, int64_t ny, const float *x, const float *y,
			       const float *b, float g, float *out)
{
#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < nx; i++) {
		const float *xi = x + 64 * i;
		float s = 0;

		for (int64_t j = 0; j < ny; j++) {
			const float *yj = y + 64 * j;
			float r2 = 0;

#pragma omp simd reduction(+ : r2)
			for (int c = 0; c < 64; c++) {
				float dc = xi[c] - yj[c];

				r2 += dc * dc;
			}
			s += expf(-g * r2) * b[j];
		}
		out[i] = s;
	}
}

/* The gradient in x of sum_j exp(-g |x_i - y_j|^2) b_j against the cotangent e_i:
 * out_i = e_i sum_j -2 g (x_i - y_j) exp(-g |x_i - y_j|^2) b_j, D = 3, float32, out
 * row-major (nx x 3) */
EXPORT void base_gauss_grad_f32(int64_t nx, int64_t ny, const float *const *x,
				const float *const *y, const float *b, float g, const float *e,
				float *out)
{
	const float *y0 = y[0], *y1 = y[1], *y2 = y[2];

#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < nx; i++) {
		float x0 = x[0][i], x1 = x[1][i], x2 = x[2][i], s0 = 0, s1 = 0, s2 = 0;

#pragma omp simd reduction(+ : s0, s1, s2)
		for (int64_t j = 0; j < ny; j++) {
			float d0 = x0 - y0[j], d1 = x1 - y1[j], d2 = x2 - y2[j];
			float k = expf(-g * (d0 * d0 + d1 * d1 + d2 * d2)) * b[j];

			s0 += k * d0;
			s1 += k * d1;
			s2 += k * d2;
		}
		out[3 * i] = -2 * g * e[i] * s0;
		out[3 * i + 1] = -2 * g * e[i] * s1;
		out[3 * i + 2] = -2 * g * e[i] * s2;
	}
}

/* out_i = sum_j exp(-g |x_i - y_j|^2) b_j at any dimension d, float32, x and y row-major
 * (n x d): the plain loop of a high-dimensional reduction, a vector loop over the d
 * coordinates of each pair */
EXPORT void base_gauss_dn_f32(int64_t nx, int64_t ny, int d, const float *x, const float *y,
			      const float *b, float g, float *out)
{
#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < nx; i++) {
		const float *xi = x + (int64_t)d * i;
		float s = 0;

		for (int64_t j = 0; j < ny; j++) {
			const float *yj = y + (int64_t)d * j;
			float r2 = 0;

#pragma omp simd reduction(+ : r2)
			for (int c = 0; c < d; c++) {
				float dc = xi[c] - yj[c];

				r2 += dc * dc;
			}
			s += expf(-g * r2) * b[j];
		}
		out[i] = s;
	}
}

/* The indices of the 10 nearest y_j at any dimension d, float32, row-major: each squared
 * distance as a vector loop over the coordinates, then the insertion of the few that
 * beat the current tenth best */
EXPORT void base_argkmin_dn_f32(int64_t nx, int64_t ny, int d, const float *x, const float *y,
				float *out)
{
#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < nx; i++) {
		const float *xi = x + (int64_t)d * i;
		float best[K];
		int64_t idx[K];

		for (int k = 0; k < K; k++) {
			best[k] = INFINITY;
			idx[k] = -1;
		}
		for (int64_t j = 0; j < ny; j++) {
			const float *yj = y + (int64_t)d * j;
			float r2 = 0;
			int k = K - 1;

#pragma omp simd reduction(+ : r2)
			for (int c = 0; c < d; c++) {
				float dc = xi[c] - yj[c];

				r2 += dc * dc;
			}
			if (!(r2 < best[K - 1]))
				continue;
			while (k > 0 && best[k - 1] > r2) {
				best[k] = best[k - 1];
				idx[k] = idx[k - 1];
				k--;
			}
			best[k] = r2;
			idx[k] = j;
		}
		for (int k = 0; k < K; k++)
			out[K * i + k] = (float)idx[k];
	}
}
