/* `kred bench --cases opencl`: kred's OpenCL backend in its 1D, 2D and auto schemes against
 * a plain one-work-item-per-row OpenCL kernel written here, and against kred host. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_opencl.h"
#include "kred.h"

#include "plain.h"

#ifdef KRED_PLAIN_OPENCL
#include "bench_util.h"

/*
 * The Gaussian case, out_i = sum_j exp(-g |x_i - y_j|^2) b_j, D = 3, E = 1, float32. The
 * plain kernel is what a careful user writes first: one work-item per row, the columns
 * read from global memory, OpenCL's exp, the launch padded to whole groups of 64 with a
 * guarded tail. Every timed call does the same work on both sides: buffers made from the
 * host arrays, the kernel, the output read back, the buffers released.
 */
static const char plain_src[] =
	"__kernel void plain_gauss(__global const float *x, __global const float *y,\n"
	"                          __global const float *b, float g, __global float *out,\n"
	"                          long nx, long ny)\n"
	"{\n"
	"	long i = get_global_id(0);\n"
	"	float x0, x1, x2, s = 0;\n"
	"\n"
	"	if (i >= nx)\n"
	"		return;\n"
	"	x0 = x[3 * i], x1 = x[3 * i + 1], x2 = x[3 * i + 2];\n"
	"	for (long j = 0; j < ny; j++) {\n"
	"		float d0 = x0 - y[3 * j], d1 = x1 - y[3 * j + 1], d2 = x2 - y[3 * j + 2];\n"
	"\n"
	"		s += exp(-g * (d0 * d0 + d1 * d1 + d2 * d2)) * b[j];\n"
	"	}\n"
	"	out[i] = s;\n"
	"}\n";

struct plain {
	const struct kred__cl_api *cl;
	cl_context ctx;
	cl_command_queue q;
	cl_program prog;
	cl_kernel k;
};

static void plain_free(struct plain *p)
{
	if (p->k)
		p->cl->ReleaseKernel(p->k);
	if (p->prog)
		p->cl->ReleaseProgram(p->prog);
	if (p->q)
		p->cl->ReleaseCommandQueue(p->q);
	if (p->ctx)
		p->cl->ReleaseContext(p->ctx);
}

/* The plain kernel built on the device the opencl context uses, in its own cl_context. */
static int plain_open(struct plain *p, kred_context *kctx)
{
	const struct kred__cl_device *devs;
	const char *src = plain_src;
	void *kc = NULL, *kq = NULL;
	cl_device_id dev = NULL;
	char why[256];
	cl_int e = CL_SUCCESS;
	int n;

	memset(p, 0, sizeof(*p));
	p->cl = kred__cl_load(NULL, why, sizeof(why));
	if (!p->cl || kred_context_opencl_handles(kctx, &kc, &kq) != KRED_OK)
		return 1;
	/* The device of the kred context: the one whose name its description ends with. */
	n = kred__cl_devices(&devs);
	for (int k = 0; k < n && !dev; k++) {
		const char *d = kred_context_backend(kctx);
		size_t ld = strlen(d), ln = strlen(devs[k].name);

		if (ld >= ln && !strcmp(d + ld - ln, devs[k].name))
			dev = devs[k].id;
	}
	if (!dev)
		return 1;
	p->ctx = p->cl->CreateContext(NULL, 1, &dev, NULL, NULL, &e);
	if (p->ctx)
		p->q = p->cl->CreateCommandQueue(p->ctx, dev, 0, &e);
	if (p->q)
		p->prog = p->cl->CreateProgramWithSource(p->ctx, 1, &src, NULL, &e);
	if (p->prog && p->cl->BuildProgram(p->prog, 1, &dev, "", NULL, NULL) == CL_SUCCESS)
		p->k = p->cl->CreateKernel(p->prog, "plain_gauss", &e);
	if (!p->k) {
		fprintf(stderr, "kred: error: bench: the plain kernel: %s\n", kred__cl_errname(e));
		plain_free(p);
		return 1;
	}
	return 0;
}

static int plain_run(struct plain *p, int64_t nx, int64_t ny, const float *x, const float *y,
		     const float *b, float g, float *out)
{
	const struct kred__cl_api *cl = p->cl;
	cl_mem bx, by, bb, bo, all[4];
	cl_long lnx = nx, lny = ny;
	size_t local = 64, global = (size_t)(nx + 63) / 64 * 64;
	cl_int e = CL_SUCCESS;
	int rc;

	bx = cl->CreateBuffer(p->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
			      (size_t)nx * 3 * sizeof(float), (void *)x, &e);
	by = cl->CreateBuffer(p->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
			      (size_t)ny * 3 * sizeof(float), (void *)y, &e);
	bb = cl->CreateBuffer(p->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
			      (size_t)ny * sizeof(float), (void *)b, &e);
	bo = cl->CreateBuffer(p->ctx, CL_MEM_WRITE_ONLY, (size_t)nx * sizeof(float), NULL, &e);
	rc = !bx || !by || !bb || !bo;
	if (!rc) {
		cl->SetKernelArg(p->k, 0, sizeof(cl_mem), &bx);
		cl->SetKernelArg(p->k, 1, sizeof(cl_mem), &by);
		cl->SetKernelArg(p->k, 2, sizeof(cl_mem), &bb);
		cl->SetKernelArg(p->k, 3, sizeof(float), &g);
		cl->SetKernelArg(p->k, 4, sizeof(cl_mem), &bo);
		cl->SetKernelArg(p->k, 5, sizeof(cl_long), &lnx);
		cl->SetKernelArg(p->k, 6, sizeof(cl_long), &lny);
		rc = cl->EnqueueNDRangeKernel(p->q, p->k, 1, NULL, &global, &local, 0, NULL, NULL) !=
			     CL_SUCCESS ||
		     cl->EnqueueReadBuffer(p->q, bo, CL_TRUE, 0, (size_t)nx * sizeof(float), out, 0,
					   NULL, NULL) != CL_SUCCESS;
	}
	all[0] = bx;
	all[1] = by;
	all[2] = bb;
	all[3] = bo;
	for (int k = 0; k < 4; k++)
		if (all[k])
			cl->ReleaseMemObject(all[k]);
	return rc;
}

enum { K_1D, K_2D, K_AUTO, K_HOST, N_KRED };

int kred_bench_opencl(int64_t nx, int64_t ny, int reps, const char *device)
{
	static const char *const al[4] = { "X=Vi(3)", "Y=Vj(3)", "B=Vj(1)", "G=Pm(1)" };
	static const char *const names[N_KRED] = { "kred opencl 1D", "kred opencl 2D",
						   "kred opencl auto", "kred host" };
	static const kred_scheme schemes[N_KRED] = { KRED_SCHEME_1D, KRED_SCHEME_2D,
						     KRED_SCHEME_AUTO, KRED_SCHEME_AUTO };
	kred_context *ctx[N_KRED] = { 0 };
	kred_reduction *r[N_KRED] = { 0 };
	struct plain p = { 0 };
	uint64_t seed = 7;
	float *x = fill_f32(3 * nx, 0, 1, &seed), *y = fill_f32(3 * ny, 0, 1, &seed);
	float *b = fill_f32(ny, -0.2, 1, &seed), g = 2;
	float *out[N_KRED + 1] = { 0 };
	const void *args[4] = { x, y, b, &g };
	double t[N_KRED + 1][64], med[N_KRED + 1];
	char opencl_name[40];
	int rc = 1, have_plain;

	if (reps < 1 || reps > 64 || !x || !y || !b)
		goto done;
	snprintf(opencl_name, sizeof(opencl_name), "%s", device && *device ? device : "opencl");
	for (int k = 0; k < N_KRED; k++) {
		kred_context_options o = { 0 };
		kred_spec s = { 0 };

		o.struct_size = sizeof(o);
		o.backend = k == K_HOST ? "host" : opencl_name;
		o.scheme = schemes[k];
		if (kred_context_create(&o, &ctx[k]) != KRED_OK) {
			fprintf(stderr, "kred: error: bench: %s: %s\n", o.backend,
				kred_errmsg(ctx[k]));
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
	for (int k = 0; k <= N_KRED; k++)
		if (!(out[k] = malloc((size_t)nx * sizeof(float))))
			goto done;
	have_plain = plain_open(&p, ctx[K_1D]) == 0;
	if (!have_plain)
		goto done;
	/* One untimed call of each: POCL finishes compiling a kernel on its first launch. */
	for (int k = 0; k < N_KRED; k++)
		if (kred_reduction_run(r[k], nx < 256 ? nx : 256, ny < 256 ? ny : 256, args,
				       out[k]) != KRED_OK)
			goto done;
	if (plain_run(&p, nx < 256 ? nx : 256, ny < 256 ? ny : 256, x, y, b, g, out[N_KRED]))
		goto done;
	/* Interleaved, so that a neighbour's load on a shared machine hits all alike. */
	for (int rep = 0; rep < reps; rep++) {
		for (int k = 0; k <= N_KRED; k++) {
			double t0 = now();

			if (k == N_KRED ? plain_run(&p, nx, ny, x, y, b, g, out[k])
					: kred_reduction_run(r[k], nx, ny, args, out[k]) != KRED_OK) {
				fprintf(stderr, "kred: error: bench: %s\n",
					k == N_KRED ? "the plain kernel failed"
						    : kred_errmsg(ctx[k]));
				goto done;
			}
			t[k][rep] = now() - t0;
		}
	}
	for (int k = 0; k <= N_KRED; k++)
		med[k] = median(t[k], reps);
	printf("\nopencl: %s\n", kred_context_backend(ctx[K_1D]));
	printf("Exp(-G*SqDist(X,Y))*B  D=3  E=1  float32, nx = %lld, ny = %lld, median of %d\n",
	       (long long)nx, (long long)ny, reps);
	printf("%-26s %9s %9s %12s %12s   %s\n", "", "s", "Gpair/s", "vs plain", "vs host",
	       "max rel diff to plain");
	rc = 0;
	for (int k = 0; k <= N_KRED; k++) {
		const char *name = k == N_KRED ? "plain OpenCL kernel" : names[k];
		double diff = rel_diff_f32(out[k], out[N_KRED], nx);

		printf("%-26s %9.3f %9.3f %11.2fx %11.2fx   %.1e\n", name, med[k],
		       (double)nx * (double)ny / med[k] * 1e-9, med[N_KRED] / med[k],
		       med[K_HOST] / med[k], diff);
		/* float32 sums of 10^5 positive-weighted terms agree to ~1e-5. */
		if (!(diff < 1e-3)) {
			fprintf(stderr, "kred: error: bench: %s disagrees with the plain kernel\n",
				name);
			rc = 1;
		}
	}
	fflush(stdout);
done:
	if (have_plain)
		plain_free(&p);
	for (int k = 0; k < N_KRED; k++) {
		kred_reduction_destroy(r[k]);
		kred_context_destroy(ctx[k]);
	}
	for (int k = 0; k <= N_KRED; k++)
		free(out[k]);
	free(x);
	free(y);
	free(b);
	return rc;
}

#else

int kred_bench_opencl(int64_t nx, int64_t ny, int reps, const char *device)
{
	fprintf(stderr, "kred: error: bench: this kred was built without the OpenCL headers\n");
	return 1;
}

#endif
