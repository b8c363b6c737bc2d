/* What `kred bench` (bench/) uses of the library beyond kred.h, in one header: the
 * compilers and loaders that its plain kernels (the baselines kred is measured against)
 * are built and run with, on the same terms as kred's own, and the derivative engine's
 * node counts. Nothing else of lib/ is for bench/ to include. */
#ifndef KRED_PLAIN_H
#define KRED_PLAIN_H

#include "internal.h" /* kred__host_cc, kred__host_cflags: the host backend's compiler */

/* ---- host: bench/baselines.c, embedded (meson.build), built with the host backend's
 * compiler and flags */
extern const char kred__kernel_baselines_c[];

/* ---- the derivative engine: kred__reduction_nodes, kred__reduction_grad_simplify
 * (internal.h) */

/* ---- OpenCL (where its headers are) and CUDA: loaders, devices, NVRTC */
#if defined(__has_include)
#if __has_include(<CL/cl.h>)
#define KRED_PLAIN_OPENCL 1
#include "cl/loader.h"
#endif
#endif
#include "cuda/compile.h"

#endif
