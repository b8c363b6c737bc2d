/* What the files of the Vulkan backend share: its state on one device, a compiled
 * module, the GLSL dialect, and the compile entry (GLSL to SPIR-V to a pipeline). */
#ifndef KRED_VK_H
#define KRED_VK_H

#include "cache.h"
#include "device.h"
#include "loader.h"

/* The shape of kernels/tiled.comp: invocations per workgroup and the block-sum tile in
 * columns. Output rows per invocation and columns per iteration of the column loop are
 * chosen per reduction (struct kred__vk_shape). */
#define KRED__VK_WG 64
#define KRED__VK_TILE 256

/* Rows per invocation and columns per loop iteration: the loop body holds rpi x unroll
 * copies of the formula. wide: kernels/tiled.comp's wide mode (KR_WIDE; rpi and unroll
 * are 1), the source in kred__dialect_glsl_wide. */
struct kred__vk_shape {
	int rpi, unroll, wide;
};

extern const struct kred_dialect kred__dialect_glsl, kred__dialect_glsl_wide;

/* A pipeline built from one SPIR-V module, shared by the reductions of a context that
 * have the same key; kept until the context closes. */
struct kred__vk_pipe {
	char key[33];
	VkPipeline pipeline;
	struct kred__vk_pipe *next;
};

struct kred__vk_mem;
struct kred__vk_pools;

/* The backend's state: a logical device with one compute queue. */
struct kred__vk {
	struct kred__device layer; /* first: what lib/device.c plans runs with */
	kred_context *ctx; /* NULL when opened for the device report */
	const struct kred__vk_api *api;
	const struct kred__vk_device *dev;
	int index; /* in the device list: "vulkan:N" */
	VkDevice device;
	VkQueue queue;
	VkCommandPool pool;
	VkDescriptorSetLayout set_layout;
	VkPipelineLayout layout;
	uint32_t push_size;  /* bytes of push constants the layout declares */
	int staging;	     /* device buffers are not mapped: copy through host buffers */
	char *glslc;	     /* the GLSL compiler command */
	char *desc;
	struct kred__cache cache;
	struct kred__vk_pipe *pipes;
	/* What lib/device.c's calls record between two waits: one command buffer, and
	 * what it uses that goes once it has run. */
	VkCommandBuffer cmd;
	int uploads;		     /* copies recorded that the next dispatch waits for */
	struct kred__vk_mem *dead;   /* released buffers the recorded work may use */
	struct kred__vk_pools *pools; /* descriptor pools of the recorded work */
	VkBufferView *views;	     /* texel views of the recorded work */
	int n_views, cap_views;
	struct kred__vk_mem *dummy;  /* bound where a run has no such buffer; kept */
	VkBufferView dummy_view[2];  /* its float and uint texel views */
};

/* What a reduction holds. */
struct kred__vk_module {
	struct kred__dmodule d; /* first: what lib/device.c reads (d.shape: groups of
				 * KRED__VK_WG invocations of shape.rpi rows each) */
	struct kred__vk_pipe *pipe;
	int dbl;
	int out_dim;
	int tpc;	  /* texels per column */
	int push_dp;	  /* parameters passed as push constants (0: in a buffer) */
	int64_t pass;	  /* columns one invocation folds in one dispatch */
	int64_t merge_loops; /* loop iterations of one kr_merge and one kr_finalize */
	/* llvmpipe's loop budget spent per column folded and per interval walked in a
	 * block-sparse pass (vk_run_ranged sizes its passes with them) */
	double col_cost, interval_cost;
	struct kred__vk_shape shape;
};

/* The bindings of tiled.comp. */
#define N_BINDINGS 7

/* Push constants: seven ints, then jbase and the parameters (std430). */
#define PUSH_INTS 7
#define MAX_PUSH 128

/* The flags of kernels/tiled.comp. */
#define KR_INIT 1
#define KR_FINAL 2
#define KR_MERGE 4
#define KR_RANGED 8

static inline int64_t kred__vk_min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static inline int64_t kred__vk_ceil_div(int64_t a, int64_t b)
{
	return (a + b - 1) / b;
}

/* Bytes of the push constants before the parameters: seven ints, then jbase aligned to
 * its size. */
static inline int kred__vk_push_header(int dbl)
{
	return dbl ? 8 * ((4 * PUSH_INTS + 7) / 8) + 8 : 4 * PUSH_INTS + 4;
}

/* err filled for a Vulkan call that returned res; the status. */
int kred__vk_fail(struct kred__error *err, VkResult res, const char *what);

/* ---- runs (lib/vk/run.c) */

/* v's struct kred__device, the table of its primitives: is_gpu, a GPU (else llvmpipe). */
void kred__vk_layer_make(struct kred__vk *v, const kred_context *ctx, int is_gpu);
/* Frees, at close, what a failed run left recorded and the buffers kept for binding. */
void kred__vk_run_free(struct kred__vk *v);
/* The backend table's run_ranged: through the device layer when the run fits one block
 * and its tasks' intervals fit a pass, else block by block (lib/ranges.c). */
kred_status kred__vk_run_ranged(void *state, void *module, const struct kred_reduction *r,
				int64_t nx, int64_t ny, const void *const *args, void *out,
				const struct kred__ranges *g, struct kred__error *err);

/* The GLSL source of r for this device (with its #version line); *out is the caller's. */
kred_status kred__vk_source(struct kred__vk *v, const struct kred_reduction *r,
			    const struct kred__layout *l, int push_dp, struct kred__vk_shape shape,
			    char **out, struct kred__error *err);
/* The pipeline of a source: from the context's memory, else from SPIR-V in the disk
 * cache, else compiled by glslc (and published to the disk cache). */
kred_status kred__vk_pipeline(struct kred__vk *v, const char *src, struct kred__vk_pipe **out,
			      struct kred__error *err);
/* Destroys every pipeline of v. */
void kred__vk_pipes_free(struct kred__vk *v);
/* The GLSL compiler command ($KRED_GLSLC, else glslc). */
const char *kred__vk_glslc(void);

#endif /* KRED_VK_H */
