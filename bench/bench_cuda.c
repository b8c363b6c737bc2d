/* `kred bench --cases cuda`: kred's CUDA backend in its 1D, 2D and auto schemes against a
 * plain one-thread-per-row CUDA kernel written here, and against kred host. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_cuda.h"
#include "kred.h"
#include "plain.h"
#include "bench_util.h"

/*
 * The Gaussian case, out_i = sum_j exp(-g |x_i - y_j|^2) b_j, D = 3, E = 1, float32. The
 * plain kernel is what a careful user writes first: one thread per row, the columns read
 * from global memory, expf, blocks of 128 threads with a guarded tail, compiled by the
 * same NVRTC for the same GPU. It is timed twice: on host arrays (device memory made, the
 * inputs copied, the kernel, the output copied back, the memory freed), as kred's host
 * array runs are, and on device memory (the kernel alone), as kred_reduction_run_cuda is.
 */
static const char plain_src[] =
	"extern \"C\" __global__ void plain_gauss(const float *x, const float *y,\n"
	"                                         const float *b, float g, float *out,\n"
	"                                         long long nx, long long ny)\n"
	"{\n"
	"	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
	"	float x0, x1, x2, s = 0;\n"
	"\n"
	"	if (i >= nx)\n"
	"		return;\n"
	"	x0 = x[3 * i], x1 = x[3 * i + 1], x2 = x[3 * i + 2];\n"
	"	for (long long j = 0; j < ny; j++) {\n"
	"		float d0 = x0 - y[3 * j], d1 = x1 - y[3 * j + 1], d2 = x2 - y[3 * j + 2];\n"
	"\n"
	"		s += expf(-g * (d0 * d0 + d1 * d1 + d2 * d2)) * b[j];\n"
	"	}\n"
	"	out[i] = s;\n"
	"}\n";

struct plain {
	const struct kred__cu_api *cu;
	CUcontext ctx;
	CUmodule mod;
	CUfunction k;
};

static void push(const struct plain *p)
{
	p->cu->CtxPushCurrent(p->ctx);
}

static void pop(const struct plain *p)
{
	CUcontext c;

	p->cu->CtxPopCurrent(&c);
}

static void plain_free(struct plain *p)
{
	if (p->mod) {
		push(p);
		p->cu->ModuleUnload(p->mod);
		pop(p);
	}
	memset(p, 0, sizeof(*p));
}

/* The plain kernel compiled for the GPU of the kred context, in its primary context. */
static int plain_open(struct plain *p, kred_context *kctx)
{
	const struct kred__cu_device *devs;
	const struct kred__nvrtc_api *nv;
	struct kred__cu_target t;
	struct kred__error err;
	char why[512], *image = NULL;
	void *c = NULL;
	size_t len = 0;
	int dev = -1, hit = 0, rc = 1;

	memset(p, 0, sizeof(*p));
	kred__error_clear(&err);
	p->cu = kred__cu_load(why, sizeof(why));
	nv = kred__nvrtc_load(why, sizeof(why));
	if (!p->cu || !nv || kred_context_cuda_handles(kctx, &dev, &c) != KRED_OK ||
	    dev >= kred__cu_devices(&devs))
		return 1;
	p->ctx = c;
	if (kred__cu_device_target(nv, devs[dev].major * 10 + devs[dev].minor, &t, &err) ||
	    kred__cu_compile(nv, NULL, NULL, 0, 0, plain_src, &t, &image, &len, &hit, &err)) {
		fprintf(stderr, "kred: error: bench: the plain kernel: %s\n", err.msg);
		return 1;
	}
	push(p);
	if (p->cu->ModuleLoadDataEx(&p->mod, image, 0, NULL, NULL) == CUDA_SUCCESS &&
	    p->cu->ModuleGetFunction(&p->k, p->mod, "plain_gauss") == CUDA_SUCCESS)
		rc = 0;
	pop(p);
	kred__free(image);
	if (rc) {
		fprintf(stderr, "kred: error: bench: the plain kernel does not load\n");
		plain_free(p);
	}
	return rc;
}

static int plain_launch(const struct plain *p, int64_t nx, int64_t ny, CUdeviceptr x,
			CUdeviceptr y, CUdeviceptr b, float g, CUdeviceptr out)
{
	long long lnx = nx, lny = ny;
	void *params[] = { &x, &y, &b, &g, &out, &lnx, &lny };

	return p->cu->LaunchKernel(p->k, (unsigned)((nx + 127) / 128), 1, 1, 128, 1, 1, 0, NULL,
				   params, NULL) != CUDA_SUCCESS;
}

/* Host arrays: allocate, copy in, run, copy out, free, as kred's host array runs do. */
static int plain_run(const struct plain *p, int64_t nx, int64_t ny, const float *x,
		     const float *y, const float *b, float g, float *out)
{
	CUdeviceptr d[4] = { 0, 0, 0, 0 };
	size_t bytes[4] = { (size_t)nx * 12, (size_t)ny * 12, (size_t)ny * 4, (size_t)nx * 4 };
	int rc = 0;

	push(p);
	for (int k = 0; k < 4 && !rc; k++)
		rc = p->cu->MemAlloc(&d[k], bytes[k] ? bytes[k] : 4) != CUDA_SUCCESS;
	rc = rc || p->cu->MemcpyHtoD(d[0], x, bytes[0]) != CUDA_SUCCESS ||
	     p->cu->MemcpyHtoD(d[1], y, bytes[1]) != CUDA_SUCCESS ||
	     p->cu->MemcpyHtoD(d[2], b, bytes[2]) != CUDA_SUCCESS ||
	     plain_launch(p, nx, ny, d[0], d[1], d[2], g, d[3]) ||
	     p->cu->MemcpyDtoH(out, d[3], bytes[3]) != CUDA_SUCCESS;
	for (int k = 0; k < 4; k++)
		if (d[k])
			p->cu->MemFree(d[k]);
	pop(p);
	return rc;
}

/* The contestants, in the order of the table. */
enum { K_1D, K_2D, K_AUTO, K_DEV, K_HOST, N_KRED, P_HOST = N_KRED, P_DEV, N_ALL };

static const char *const names[N_ALL] = {
	"kred cuda 1D", "kred cuda 2D", "kred cuda auto", "kred cuda auto, device mem",
	"kred host", "plain CUDA kernel", "plain CUDA kernel, device mem",
};

int kred_bench_cuda(int64_t nx, int64_t ny, int reps, const char *device)
{
	static const char *const al[4] = { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" };
	static const kred_scheme schemes[N_KRED] = { KRED_SCHEME_1D, KRED_SCHEME_2D,
						     KRED_SCHEME_AUTO, KRED_SCHEME_AUTO,
						     KRED_SCHEME_AUTO };
	kred_context *ctx[N_KRED] = { 0 };
	kred_reduction *r[N_KRED] = { 0 };
	struct plain p = { 0 };
	uint64_t seed = 7;
	float *x = fill_f32(3 * nx, 0, 1, &seed), *y = fill_f32(3 * ny, 0, 1, &seed);
	float *b = fill_f32(ny, -0.2, 1, &seed), g = 2;
	float *out[N_ALL] = { 0 };
	const void *args[4] = { x, y, b, &g };
	CUdeviceptr dev[5] = { 0, 0, 0, 0, 0 };
	uint64_t dargs[4]; /* dev[0..3], as kred_reduction_run_cuda takes them */
	double t[N_ALL][64], med[N_ALL];
	char cuda_name[40];
	int rc = 1, have_plain = 0;

	if (reps < 1 || reps > 64 || !x || !y || !b)
		goto done;
	snprintf(cuda_name, sizeof(cuda_name), "%s", device && *device ? device : "cuda");
	for (int k = 0; k < N_KRED; k++) {
		kred_context_options o = { 0 };
		kred_spec s = { 0 };

		o.struct_size = sizeof(o);
		o.backend = k == K_HOST ? "host" : cuda_name;
		o.scheme = schemes[k];
		if (kred_context_create(&o, &ctx[k]) != KRED_OK) {
			fprintf(stderr, "kred: error: bench: %s: %s\n", o.backend,
				kred_errmsg(ctx[k]));
			goto done;
		}
		if (k == K_1D && !strncmp(kred_context_backend(ctx[k]), "cuda:compile-only", 17)) {
			printf("\ncuda: skipped: %s\n", kred_context_backend(ctx[k]));
			rc = 0;
			goto done;
		}
		s.formula = "Exp(-G*SqDist(X,Y))*B";
		s.reduction = "Sum";
		s.aliases = al;
		s.n_aliases = 4;
		if (kred_reduction_create(ctx[k], &s, &r[k]) != KRED_OK) {
			fprintf(stderr, "kred: error: bench: %s\n%s", kred_errmsg(ctx[k]),
				kred_error_log(ctx[k]));
			goto done;
		}
	}
	for (int k = 0; k < N_ALL; k++)
		if (!(out[k] = malloc((size_t)(nx ? nx : 1) * sizeof(float))))
			goto done;
	have_plain = plain_open(&p, ctx[K_DEV]) == 0;
	if (!have_plain)
		goto done;
	/* Device memory for the device-memory runs: x, y, b, g, out. */
	push(&p);
	{
		const size_t bytes[5] = { (size_t)nx * 12, (size_t)ny * 12, (size_t)ny * 4, 4,
					  (size_t)nx * 4 };
		const void *src[5] = { x, y, b, &g, NULL };

		for (int k = 0; k < 5; k++) {
			int bad = p.cu->MemAlloc(&dev[k], bytes[k] ? bytes[k] : 4) != CUDA_SUCCESS;

			if (!bad && src[k])
				bad = p.cu->MemcpyHtoD(dev[k], src[k], bytes[k]) != CUDA_SUCCESS;
			if (bad) {
				pop(&p);
				fprintf(stderr, "kred: error: bench: no device memory\n");
				goto done;
			}
		}
	}
	pop(&p);
	for (int k = 0; k < 4; k++)
		dargs[k] = dev[k];
	/* One untimed call of each: the first launch loads the module. */
	for (int k = 0; k < N_ALL; k++) {
		int64_t wx = nx < 256 ? nx : 256, wy = ny < 256 ? ny : 256;
		int bad;

		if (k == K_DEV)
			bad = kred_reduction_run_cuda(r[k], wx, wy, dargs, dev[4]) != KRED_OK;
		else if (k == P_HOST)
			bad = plain_run(&p, wx, wy, x, y, b, g, out[k]);
		else if (k == P_DEV)
			bad = 0;
		else
			bad = kred_reduction_run(r[k], wx, wy, args, out[k]) != KRED_OK;
		if (bad) {
			fprintf(stderr, "kred: error: bench: %s: %s\n", names[k],
				k < N_KRED ? kred_errmsg(ctx[k]) : "failed");
			goto done;
		}
	}
	/* Interleaved, so that a neighbour's load on a shared machine hits all alike. */
	for (int rep = 0; rep < reps; rep++) {
		for (int k = 0; k < N_ALL; k++) {
			double t0 = now();
			int bad;

			if (k == K_DEV) {
				bad = kred_reduction_run_cuda(r[k], nx, ny, dargs, dev[4]);
			} else if (k == P_HOST) {
				bad = plain_run(&p, nx, ny, x, y, b, g, out[k]);
			} else if (k == P_DEV) {
				push(&p);
				bad = plain_launch(&p, nx, ny, dev[0], dev[1], dev[2], g, dev[4]) ||
				      p.cu->CtxSynchronize() != CUDA_SUCCESS;
				pop(&p);
			} else {
				bad = kred_reduction_run(r[k], nx, ny, args, out[k]) != KRED_OK;
			}
			if (bad) {
				fprintf(stderr, "kred: error: bench: %s: %s\n", names[k],
					k < N_KRED ? kred_errmsg(ctx[k]) : "failed");
				goto done;
			}
			t[k][rep] = now() - t0;
			/* The device-memory outputs, for the comparison. */
			if (k == K_DEV || k == P_DEV) {
				push(&p);
				bad = p.cu->MemcpyDtoH(out[k], dev[4], (size_t)nx * 4);
				pop(&p);
				if (bad)
					goto done;
			}
		}
	}
	for (int k = 0; k < N_ALL; k++)
		med[k] = median(t[k], reps);
	printf("\ncuda: %s\n", kred_context_backend(ctx[K_1D]));
	printf("Exp(-G*SqDist(X,Y))*B  D=3  E=1  float32, nx = %lld, ny = %lld, median of %d; "
	       "host arrays include the copies\n", (long long)nx, (long long)ny, reps);
	printf("%-30s %9s %9s %10s %10s   %s\n", "", "s", "Gpair/s", "vs plain", "vs host",
	       "max rel diff to plain");
	for (int k = 0; k < N_ALL; k++) {
		/* Each against the plain kernel of its kind: host arrays, or device memory. */
		int plain = k == K_DEV || k == P_DEV ? P_DEV : P_HOST;

		printf("%-30s %9.4f %9.2f %9.2fx %9.2fx   %.1e\n", names[k], med[k],
		       (double)nx * (double)ny / med[k] * 1e-9, med[plain] / med[k],
		       med[K_HOST] / med[k], rel_diff_f32(out[k], out[P_HOST], nx));
	}
	fflush(stdout);
	rc = 0;
done:
	if (have_plain) {
		push(&p);
		for (int k = 0; k < 5; k++)
			if (dev[k])
				p.cu->MemFree(dev[k]);
		pop(&p);
		plain_free(&p);
	}
	for (int k = 0; k < N_KRED; k++) {
		kred_reduction_destroy(r[k]);
		kred_context_destroy(ctx[k]);
	}
	for (int k = 0; k < N_ALL; k++)
		free(out[k]);
	free(x);
	free(y);
	free(b);
	return rc;
}
