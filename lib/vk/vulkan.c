/* The Vulkan backend: a compute queue on one device ("vulkan:N"), reductions emitted as
 * GLSL (kernels/tiled.comp), and runs split into dispatches every driver completes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vk.h"

/*
 * A run, for R output rows and C reduced columns, is planned by the device layer
 * (lib/device.c), as OpenCL's and CUDA's are: the sides packed into one buffer each (the
 * columns at whole texels a row), the split of the columns into ranges (the y dimension
 * of the grid) when there are too few rows to occupy the device, their merge, and the
 * tasks of a ranged run. This backend's primitives record it into one command buffer,
 * submitted with one fence when the output is read:
 * - rows go in row blocks and columns in column blocks small enough for the device's
 *   limits (65,535 workgroups per dimension, maxStorageBufferRange per storage binding,
 *   maxTexelBufferElements per texel view), bound at offsets in the sides' buffers, each
 *   (row block, column block) pair with its descriptor set; chunked runs keep each buffer
 *   within maxMemoryAllocationSize (vk_memory);
 * - each range is walked in passes of at most `pass` columns per invocation (the module
 *   knows how many its loops allow: llvmpipe ends any invocation's loops after 65,535
 *   iterations in total, silently), the state of each row and range carried from one
 *   dispatch to the next in the state buffer;
 * - when split > 1, the merge launch merges the ranges' states with the reduction's merge
 *   and finalizes, row block by row block.
 */

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

/* llvmpipe's loop budget per invocation (LP_MAX_TGSI_LOOP_ITERATIONS), less a margin for
 * the loops the template runs once per invocation. */
#define LOOP_BUDGET 65535
#define LOOP_MARGIN 2048
/* Past these (state values, values the formula computes) an invocation takes one row
 * and one column at a time (choose_shape). */
#define SHAPE_MAX_STATE 8
#define SHAPE_MAX_VALUES 64
/* llvmpipe's compile time grows faster than the code (GLSL is unrolled: see
 * lib/vk/glsl.c) with the values a term computes and the state holds: 0.3 s for a squared
 * distance of 64 values, 3.7 s at 300, 23 s at 784; 83 s for SumSoftMaxWeight with a
 * weight of 300 (603 state values); 276 s for KMin(3) of 70 values (420 state values,
 * whose loops index the state, which Mesa lowers to selects over all of it). Past this
 * many values (computed and held) it refuses, rather than compile for minutes. */
#define LLVMPIPE_MAX_VALUES 512

static int vk_fail_res(struct kred__error *err, VkResult res, const char *what)
{
	kred_status s = res == VK_ERROR_OUT_OF_HOST_MEMORY ? KRED_ENOMEM : KRED_EDEVICE;

	return kred__fail(err, s, -1, "%s failed: %s%s", what, kred__vk_result_name(res),
			  res == VK_ERROR_OUT_OF_DEVICE_MEMORY ? " (the inputs do not fit in the "
								 "device's memory)" : "");
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
	return (a + b - 1) / b;
}

static void layer_make(struct kred__vk *v, const kred_context *ctx);
static void run_state_free(struct kred__vk *v);

/* ---- opening a device */

static int type_rank(VkPhysicalDeviceType t)
{
	switch (t) {
	case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
	case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
	case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
	case VK_PHYSICAL_DEVICE_TYPE_CPU: return 3;
	default: return 4;
	}
}

static int usable(const struct kred__vk_device *d)
{
	return d->queue_family != UINT32_MAX && d->texel_f32 && d->texel_u32;
}

/* The device "vulkan:N" names, or the best one: GPUs first. -1 with err set. */
static int pick_device(const char *spec, struct kred__error *err)
{
	const struct kred__vk_device *devs;
	int n = kred__vk_devices(&devs), best = -1;

	if (spec && *spec) {
		char *end;
		long k = strtol(spec, &end, 10);

		if (*end || end == spec || k < 0 || k >= n) {
			kred__fail(err, KRED_EBACKEND, -1,
				   "no Vulkan device '%s' (this machine has vulkan:0 to vulkan:%d)",
				   spec, n - 1);
			return -1;
		}
		if (!usable(&devs[k])) {
			kred__fail(err, KRED_EBACKEND, -1,
				   "the Vulkan device %ld (%s) has no compute queue or no texel "
				   "buffers of RGBA32F and RGBA32UI", k, devs[k].props.deviceName);
			return -1;
		}
		return (int)k;
	}
	for (int k = 0; k < n; k++)
		if (usable(&devs[k]) && (best < 0 || type_rank(devs[k].props.deviceType) <
							     type_rank(devs[best].props.deviceType)))
			best = k;
	if (best < 0)
		kred__fail(err, KRED_EBACKEND, -1,
			   "no Vulkan device has a compute queue and RGBA32F texel buffers");
	return best;
}

static int has_memory(const VkPhysicalDeviceMemoryProperties *m, VkMemoryPropertyFlags need)
{
	for (uint32_t k = 0; k < m->memoryTypeCount; k++)
		if ((m->memoryTypes[k].propertyFlags & need) == need)
			return 1;
	return 0;
}

static kred_status make_device(struct kred__vk *v, struct kred__error *err)
{
	const struct kred__vk_api *a = v->api;
	const struct kred__vk_device *d = v->dev;
	float prio = 1.0f;
	VkDeviceQueueCreateInfo qi = {
		.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
		.queueFamilyIndex = d->queue_family,
		.queueCount = 1,
		.pQueuePriorities = &prio,
	};
	VkPhysicalDeviceFeatures feat = { .shaderFloat64 = d->fp64 ? VK_TRUE : VK_FALSE };
	VkDeviceCreateInfo di = {
		.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
		.queueCreateInfoCount = 1,
		.pQueueCreateInfos = &qi,
		.pEnabledFeatures = &feat,
	};
	VkCommandPoolCreateInfo pi = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
		.flags = VK_COMMAND_POOL_CREATE_TRANSIENT_BIT,
		.queueFamilyIndex = d->queue_family,
	};
	VkDescriptorSetLayoutBinding b[N_BINDINGS];
	VkDescriptorSetLayoutCreateInfo li = {
		.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
		.bindingCount = N_BINDINGS,
		.pBindings = b,
	};
	VkPushConstantRange pr = { .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT };
	VkPipelineLayoutCreateInfo pli = {
		.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
		.setLayoutCount = 1,
		.pSetLayouts = &v->set_layout,
		.pushConstantRangeCount = 1,
		.pPushConstantRanges = &pr,
	};
	VkResult res;

	res = a->CreateDevice(d->pd, &di, NULL, &v->device);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkCreateDevice");
	a->GetDeviceQueue(v->device, d->queue_family, 0, &v->queue);
	res = a->CreateCommandPool(v->device, &pi, NULL, &v->pool);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkCreateCommandPool");
	/* rows, columns (texels), parameters, states, outputs, tasks and intervals: as in
	 * tiled.comp */
	for (uint32_t k = 0; k < N_BINDINGS; k++) {
		b[k] = (VkDescriptorSetLayoutBinding){
			.binding = k,
			.descriptorType = k == 1 ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER
						 : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
			.descriptorCount = 1,
			.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
		};
	}
	res = a->CreateDescriptorSetLayout(v->device, &li, NULL, &v->set_layout);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkCreateDescriptorSetLayout");
	v->push_size = d->props.limits.maxPushConstantsSize < MAX_PUSH
			       ? d->props.limits.maxPushConstantsSize & ~3u : MAX_PUSH;
	pr.size = v->push_size;
	res = a->CreatePipelineLayout(v->device, &pli, NULL, &v->layout);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkCreatePipelineLayout");
	return KRED_OK;
}

static void vk_close(void *state)
{
	struct kred__vk *v = state;

	if (!v)
		return;
	if (v->device) {
		const struct kred__vk_api *a = v->api;

		run_state_free(v);
		kred__vk_pipes_free(v);
		if (v->layout)
			a->DestroyPipelineLayout(v->device, v->layout, NULL);
		if (v->set_layout)
			a->DestroyDescriptorSetLayout(v->device, v->set_layout, NULL);
		if (v->pool)
			a->DestroyCommandPool(v->device, v->pool, NULL);
		a->DestroyDevice(v->device, NULL);
	}
	if (v->api)
		kred__vk_release();
	kred__cache_close(&v->cache);
	kred__free(v->glslc);
	kred__free(v->desc);
	kred__free(v);
}

static kred_status vk_open(kred_context *ctx, const char *device, void **state,
			   struct kred__error *err)
{
	const struct kred__vk_device *devs;
	const char *reason = NULL, *staging = getenv("KRED_VULKAN_STAGING");
	struct kred__buf b = { 0 };
	struct kred__vk *v;
	char why[512];
	kred_status s;

	*state = NULL;
	v = kred__calloc(1, sizeof(*v));
	if (!v)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	v->ctx = ctx;
	v->cache.wanted = ctx ? ctx->cache_dir : "";
	v->api = kred__vk_acquire(why, sizeof(why));
	if (!v->api) {
		s = kred__fail(err, KRED_EBACKEND, -1, "%s", why);
		goto fail;
	}
	v->index = pick_device(device, err);
	if (v->index < 0) {
		s = err->status;
		goto fail;
	}
	kred__vk_devices(&devs);
	v->dev = &devs[v->index];
	v->glslc = kred__strdup(kred__vk_glslc());
	if (!v->glslc) {
		s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto fail;
	}
	if (!kred__compiler_version(v->glslc, &reason)) {
		s = kred__fail(err, reason && !strcmp(reason, "out of memory") ? KRED_ENOMEM
									 : KRED_EBACKEND,
			       -1, "no GLSL compiler: '%s' %s (install glslc, or set KRED_GLSLC)",
			       v->glslc, reason ? reason : "cannot be run");
		goto fail;
	}
	/* A discrete GPU's own memory is not mapped (or only a small window of it is):
	 * inputs and outputs go through host buffers and copies. KRED_VULKAN_STAGING=1
	 * takes that path anywhere, to test it. */
	v->staging = (staging && *staging && strcmp(staging, "0") != 0) ||
		     v->dev->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU ||
		     !has_memory(&v->dev->mem, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
							VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
	s = make_device(v, err);
	if (s)
		goto fail;
	layer_make(v, ctx);
	kred__buf_printf(&b, "vulkan:%s:%s%s%s", v->dev->props.deviceName, v->dev->driver_name,
			 v->dev->driver_info[0] ? " " : "", v->dev->driver_info);
	v->desc = kred__buf_take(&b);
	if (!v->desc) {
		s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto fail;
	}
	*state = v;
	return KRED_OK;
fail:
	vk_close(v);
	return s;
}

static const char *vk_describe(void *state)
{
	return ((struct kred__vk *)state)->desc;
}

/* auto prefers GPUs: llvmpipe (lavapipe) is a CPU device, slower than the host backend. */
static int vk_is_gpu(void *state)
{
	VkPhysicalDeviceType t = ((struct kred__vk *)state)->dev->props.deviceType;

	return t == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU ||
	       t == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU;
}

/* ---- compiling */

static int tile_merge(const struct kred_reduction *r)
{
	return (kred__reds[r->red].flags & KRED__RED_SUMLIKE) && r->sum_scheme == KRED_SUM_BLOCK;
}

/* The invocation's shape. A fetched column costs more than a Gaussian term on llvmpipe,
 * so small formulas take 4 rows per invocation and 2 columns per iteration (2x faster
 * on the Gaussian sum than 1 x 1). The body then holds 8 copies of the formula and 4 of
 * the state: for a wide state or a long formula that multiplies the driver's compile
 * time (llvmpipe took 55 s on ArgKMin(70) in float64 at 4 x 2, 11 s at 1 x 1; the whole
 * conformance table 150 s against 53 s) for little gain, since such a loop is bound by
 * its arithmetic, not by its fetches. So those take 1 x 1: a formula is long when its
 * nodes compute more than SHAPE_MAX_VALUES values (the emitter writes one line per
 * value). KRED_VULKAN_SHAPE=RPIxUNROLL forces a shape (for benchmarks). */
static int formula_values(const struct kred_reduction *r)
{
	const struct kred__graph *g = r->g;
	unsigned char *used = kred__calloc((size_t)g->n_nodes, 1);
	int values = 0;

	if (!used)
		return INT32_MAX; /* the small shape: the cheap guess */
	used[r->f->id] = 1;
	if (r->w)
		used[r->w->id] = 1;
	for (int id = g->n_nodes - 1; id >= 0; id--) {
		if (!used[id])
			continue;
		values += g->nodes[id]->dim;
		for (int k = 0; k < g->nodes[id]->nargs; k++)
			used[g->nodes[id]->arg[k]->id] = 1;
	}
	kred__free(used);
	return values;
}

static struct kred__vk_shape choose_shape(const struct kred_reduction *r, int nst)
{
	struct kred__vk_shape sh = { 4, 2 };
	const char *env = getenv("KRED_VULKAN_SHAPE");
	int rpi, unroll;

	if (env && sscanf(env, "%dx%d", &rpi, &unroll) == 2 && rpi >= 1 && rpi <= 8 &&
	    unroll >= 1 && unroll <= 8) {
		sh.rpi = rpi;
		sh.unroll = unroll;
	} else if (nst > SHAPE_MAX_STATE || formula_values(r) > SHAPE_MAX_VALUES) {
		sh.rpi = 1;
		sh.unroll = 1;
	}
	return sh;
}

/* Columns one invocation may fold in one dispatch within llvmpipe's loop budget: the
 * unrolled loop takes one iteration per shape.unroll columns, the block-sum tiles one
 * per tile and their kr_init and kr_merge in each row, wide columns one per texel past 8,
 * and the emitter's own loops (lp, counted as it writes them) what they take in each of
 * the invocation's rows. The loops over states, rows and parameters, kr_init and
 * kr_finalize run once per invocation and row. 0 when not even 8 columns fit. */
static int64_t pass_columns(const struct kred_reduction *r, const struct kred__layout *l,
			    int nst, struct kred__vk_shape shape, const struct kred__emit_loops *lp,
			    double *col_cost, double *interval_cost)
{
	int per_texel = r->dtype == KRED_FLOAT64 ? 2 : 4;
	int tpc = (l->width[KRED__SIDE_COL] + per_texel - 1) / per_texel;
	double rpi = shape.rpi;
	double tile = tile_merge(r) ? (1 + rpi * (2 + lp->init + lp->merge)) / KRED__VK_TILE : 0;
	double per = 1.0 / shape.unroll + tile + rpi * (double)lp->update + (tpc > 8 ? tpc - 8 : 0);
	double budget = LOOP_BUDGET - LOOP_MARGIN - l->width[KRED__SIDE_PRM] -
			rpi * (3.0 * nst + l->width[KRED__SIDE_ROW] + r->out_dim + 2 +
			       (double)lp->init + (double)lp->finalize);
	int64_t pass;

	/* An interval of a block-sparse pass: its loop iteration, kr_fold's tail loop, and
	 * a block-sum tile of its own. */
	*col_cost = per;
	*interval_cost = 1 + shape.unroll + (tile_merge(r) ? tile * KRED__VK_TILE : 0);
	if (budget / per < 8)
		return 0;
	pass = (int64_t)(budget / per) & ~(int64_t)7;
	return pass < 8 ? 8 : pass;
}

static int push_header(int dbl)
{
	/* seven ints, then jbase aligned to its size */
	return dbl ? 8 * ((4 * PUSH_INTS + 7) / 8) + 8 : 4 * PUSH_INTS + 4;
}

/* The parameters go in the push constants when they fit (KR_PUSH_DP), else in a buffer. */
static int push_params(const struct kred__vk *v, const struct kred_reduction *r,
		       const struct kred__layout *l)
{
	int dbl = r->dtype == KRED_FLOAT64, dp = l->width[KRED__SIDE_PRM];

	return push_header(dbl) + (dbl ? 8 : 4) * dp <= (int)v->push_size ? dp : 0;
}

static kred_status vk_compile(void *state, struct kred_reduction *r, void **module,
			      struct kred__error *err)
{
	struct kred__vk *v = state;
	struct kred__vk_module *m;
	struct kred__emit_loops lp;
	char *src = NULL;
	int dbl = r->dtype == KRED_FLOAT64, values;
	kred_status s;

	*module = NULL;
	if (dbl && !v->dev->fp64)
		return kred__fail(err, KRED_EUNSUPPORTED, -1,
				  "the Vulkan device %s has no float64 (shaderFloat64)",
				  v->dev->props.deviceName);
	m = kred__calloc(1, sizeof(*m));
	if (!m)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	s = kred__layout_make(r, &m->d.l, err);
	if (s)
		goto fail;
	values = vk_is_gpu(v) ? 0 : formula_values(r);
	if (values == INT32_MAX) {
		s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto fail;
	}
	if (values && values + kred__emit_nstate(r) > LLVMPIPE_MAX_VALUES) {
		s = kred__fail(err, KRED_EUNSUPPORTED, -1,
			       "%s: this reduction computes %d values per term and keeps %d in its "
			       "state, and llvmpipe's compile time for that is minutes (past %d in "
			       "all); the host and OpenCL backends run it in loops",
			       v->dev->props.deviceName, values, kred__emit_nstate(r),
			       LLVMPIPE_MAX_VALUES);
		goto fail;
	}
	m->dbl = dbl;
	m->out_dim = r->out_dim;
	m->d.nst = kred__emit_nstate(r);
	m->d.size = dbl ? 8 : 4;
	m->tpc = (m->d.l.width[KRED__SIDE_COL] + (dbl ? 1 : 3)) / (dbl ? 2 : 4);
	for (int k = 0; k < 3; k++)
		m->d.stride[k] = m->d.l.width[k];
	m->d.stride[KRED__SIDE_COL] = m->tpc * (dbl ? 2 : 4);
	m->shape = choose_shape(r, m->d.nst);
	s = kred__emit_loops(&kred__dialect_glsl, r, &m->d.l, &lp, err);
	if (s)
		goto fail;
	m->pass = pass_columns(r, &m->d.l, m->d.nst, m->shape, &lp, &m->col_cost, &m->interval_cost);
	if (!m->pass && !vk_is_gpu(v)) {
		s = kred__fail(err, KRED_EUNSUPPORTED, -1,
			       "%s: this formula's loops run %lld iterations per column, and llvmpipe "
			       "ends a shader invocation's loops after %d, so that not even 8 "
			       "columns fit in one dispatch; use the host or OpenCL backend",
			       v->dev->props.deviceName, (long long)lp.update, LOOP_BUDGET);
		goto fail;
	}
	if (!m->pass)
		m->pass = 8; /* a GPU driver has no such budget */
	m->merge_loops = lp.merge + lp.finalize;
	/* What lib/device.c plans with: groups of KRED__VK_WG invocations of rpi rows; a
	 * column range of 1,024 columns at least (2 x tj), at most 256 ranges, and no more
	 * than the merge dispatch's loops leave within the budget. */
	m->d.shape = (struct kred__tiled_shape){ .wg = KRED__VK_WG, .rpw = m->shape.rpi,
						 .tj = 512 };
	m->d.max_splits = (int)min64(256, (LOOP_BUDGET - LOOP_MARGIN) /
					      (m->shape.rpi * (m->merge_loops + 2 * m->d.nst + 1)));
	if (m->d.max_splits < 1)
		m->d.max_splits = 1;
	m->push_dp = push_params(v, r, &m->d.l);
	s = kred__vk_source(v, r, &m->d.l, m->push_dp, m->shape, &src, err);
	if (s)
		goto fail;
	s = kred__vk_pipeline(v, src, &m->pipe, err);
	if (s)
		goto fail;
	kred__free(src);
	*module = m;
	return KRED_OK;
fail:
	kred__free(src);
	kred__layout_free(&m->d.l);
	kred__free(m);
	return s;
}

static void vk_module_free(void *state, void *module)
{
	struct kred__vk_module *m = module;

	if (!m)
		return;
	kred__layout_free(&m->d.l);
	kred__free(m);
}

static kred_status vk_source(void *state, const struct kred_reduction *r, char **out,
			     struct kred__error *err)
{
	struct kred__vk *v = state;
	struct kred__layout l;
	kred_status s = kred__layout_make(r, &l, err);

	if (s)
		return s;
	s = kred__vk_source(v, r, &l, push_params(v, r, &l),
			    choose_shape(r, kred__emit_nstate(r)), out, err);
	kred__layout_free(&l);
	return s;
}

/* ---- buffers */

/* A buffer the shaders use, with, on the staging path, its host-side twin. map is where
 * the host writes its contents or reads them back. */
struct vbuf {
	VkBuffer buf, hbuf;
	VkDeviceMemory mem, hmem;
	VkDeviceSize size;
	void *map;
};

enum { HOST_NONE, HOST_UP, HOST_DOWN };

static int find_memory(const VkPhysicalDeviceMemoryProperties *m, uint32_t bits,
		       VkMemoryPropertyFlags need, VkMemoryPropertyFlags want)
{
	for (int pass = 0; pass < 2; pass++) {
		VkMemoryPropertyFlags f = pass == 0 ? need | want : need;

		for (uint32_t k = 0; k < m->memoryTypeCount; k++)
			if ((bits & (1u << k)) && (m->memoryTypes[k].propertyFlags & f) == f)
				return (int)k;
	}
	return -1;
}

static kred_status alloc_buffer(struct kred__vk *v, VkDeviceSize size, VkBufferUsageFlags usage,
				VkMemoryPropertyFlags need, VkMemoryPropertyFlags want,
				VkBuffer *buf, VkDeviceMemory *mem, void **map,
				struct kred__error *err)
{
	const struct kred__vk_api *a = v->api;
	VkBufferCreateInfo bi = {
		.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
		.size = size,
		.usage = usage,
		.sharingMode = VK_SHARING_MODE_EXCLUSIVE,
	};
	VkMemoryAllocateInfo ai = { .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO };
	VkMemoryRequirements req;
	VkResult res;
	int type;

	res = a->CreateBuffer(v->device, &bi, NULL, buf);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkCreateBuffer");
	a->GetBufferMemoryRequirements(v->device, *buf, &req);
	type = find_memory(&v->dev->mem, req.memoryTypeBits, need, want);
	if (type < 0)
		return kred__fail(err, KRED_EDEVICE, -1,
				  "the Vulkan device has no memory type for a %s buffer",
				  map ? "host-visible" : "device");
	ai.allocationSize = req.size;
	ai.memoryTypeIndex = (uint32_t)type;
	res = a->AllocateMemory(v->device, &ai, NULL, mem);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkAllocateMemory");
	res = a->BindBufferMemory(v->device, *buf, *mem, 0);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkBindBufferMemory");
	if (map) {
		res = a->MapMemory(v->device, *mem, 0, VK_WHOLE_SIZE, 0, map);
		if (res != VK_SUCCESS)
			return vk_fail_res(err, res, "vkMapMemory");
	}
	return KRED_OK;
}

static kred_status vbuf_make(struct kred__vk *v, VkDeviceSize size, VkBufferUsageFlags usage,
			     int host, struct vbuf *b, struct kred__error *err)
{
	const VkMemoryPropertyFlags visible = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
					      VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
	kred_status s;

	/* Bindings of size 0 are not allowed; 16 bytes also keep texel views legal. */
	b->size = size < 16 ? 16 : size;
	if (!v->staging || host == HOST_NONE)
		return alloc_buffer(v, b->size, usage, v->staging ? 0 : visible,
				    VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, &b->buf, &b->mem,
				    v->staging ? NULL : &b->map, err);
	s = alloc_buffer(v, b->size,
			 usage | (host == HOST_UP ? VK_BUFFER_USAGE_TRANSFER_DST_BIT
						  : VK_BUFFER_USAGE_TRANSFER_SRC_BIT),
			 VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0, &b->buf, &b->mem, NULL, err);
	if (s)
		return s;
	/* Read back through cached memory where there is some: uncached reads crawl. */
	return alloc_buffer(v, b->size,
			    host == HOST_UP ? VK_BUFFER_USAGE_TRANSFER_SRC_BIT
					    : VK_BUFFER_USAGE_TRANSFER_DST_BIT,
			    visible, host == HOST_DOWN ? VK_MEMORY_PROPERTY_HOST_CACHED_BIT : 0,
			    &b->hbuf, &b->hmem, &b->map, err);
}

static void vbuf_free(struct kred__vk *v, struct vbuf *b)
{
	const struct kred__vk_api *a = v->api;

	/* Freeing memory unmaps it. */
	if (b->buf)
		a->DestroyBuffer(v->device, b->buf, NULL);
	if (b->mem)
		a->FreeMemory(v->device, b->mem, NULL);
	if (b->hbuf)
		a->DestroyBuffer(v->device, b->hbuf, NULL);
	if (b->hmem)
		a->FreeMemory(v->device, b->hmem, NULL);
	memset(b, 0, sizeof(*b));
}

/* ---- the device layer's primitives (lib/device.h)
 *
 * lib/device.c plans a run as for OpenCL and CUDA: the sides packed (the columns at whole
 * texels a row), one buffer each, the output's, the column ranges of the 2D scheme and
 * their merge, the tasks of a ranged run. Here its buffers become storage and texel
 * buffers, its launches dispatches recorded into one command buffer, which a read or a
 * finish submits and waits for. A launch of kr_reduce becomes, within the device's limits:
 * - row blocks and column blocks, bound at offsets in the sides' buffers (65,535
 *   workgroups per dimension, maxStorageBufferRange per storage binding,
 *   maxTexelBufferElements per texel view), each pair with its descriptor set;
 * - passes of at most m->pass columns per invocation (llvmpipe ends any invocation's
 *   loops after 65,535 iterations in total, silently), the states carried from one
 *   dispatch to the next in the states buffer: the 2D scheme's, else one of the run's.
 * A launch of kr_merge_parts is the merge dispatch of each row block.
 */

/* A buffer of the device layer. */
struct kred__vk_mem {
	struct vbuf b;
	void *host; /* parameters, tasks, intervals: their values, for push constants and
		     * a ranged run's passes */
	struct kred__vk_mem *next;
};

/* The descriptor pools of the recorded work. */
#define POOL_SETS 64
struct kred__vk_pools {
	VkDescriptorPool pool;
	int used;
	struct kred__vk_pools *next;
};

static void mem_free(struct kred__vk *v, struct kred__vk_mem *vm)
{
	if (!vm)
		return;
	vbuf_free(v, &vm->b);
	kred__free(vm->host);
	kred__free(vm);
}

static struct kred__vk_mem *as_mem(kred__dmem m)
{
	return (struct kred__vk_mem *)(uintptr_t)m;
}

/* Frees what the recorded work used, once it has run (or will never run). */
static void recorded_free(struct kred__vk *v)
{
	const struct kred__vk_api *a = v->api;

	while (v->dead) {
		struct kred__vk_mem *next = v->dead->next;

		mem_free(v, v->dead);
		v->dead = next;
	}
	while (v->pools) {
		struct kred__vk_pools *next = v->pools->next;

		a->DestroyDescriptorPool(v->device, v->pools->pool, NULL);
		kred__free(v->pools);
		v->pools = next;
	}
	for (int k = 0; k < v->n_views; k++)
		a->DestroyBufferView(v->device, v->views[k], NULL);
	v->n_views = 0;
	v->uploads = 0;
}

/* At close: what a failed run left recorded, and the dummy buffer. */
static void run_state_free(struct kred__vk *v)
{
	if (v->cmd)
		v->api->FreeCommandBuffers(v->device, v->pool, 1, &v->cmd);
	v->cmd = NULL;
	recorded_free(v);
	kred__free(v->views);
	v->views = NULL;
	if (v->dummy_view)
		v->api->DestroyBufferView(v->device, v->dummy_view, NULL);
	mem_free(v, v->dummy);
	v->dummy = NULL;
}

static kred_status record_begin(struct kred__vk *v, struct kred__error *err)
{
	const struct kred__vk_api *a = v->api;
	VkCommandBufferAllocateInfo ci = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
		.commandPool = v->pool,
		.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
		.commandBufferCount = 1,
	};
	VkCommandBufferBeginInfo bi = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
		.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
	};
	VkResult res;

	if (v->cmd)
		return KRED_OK;
	res = a->AllocateCommandBuffers(v->device, &ci, &v->cmd);
	if (res != VK_SUCCESS) {
		v->cmd = NULL;
		return vk_fail_res(err, res, "vkAllocateCommandBuffers");
	}
	res = a->BeginCommandBuffer(v->cmd, &bi);
	if (res != VK_SUCCESS) {
		a->FreeCommandBuffers(v->device, v->pool, 1, &v->cmd);
		v->cmd = NULL;
		return vk_fail_res(err, res, "vkBeginCommandBuffer");
	}
	return KRED_OK;
}

/* Submits the recorded work and waits for it; then frees what it used. */
static kred_status record_run(struct kred__vk *v, struct kred__error *err)
{
	const struct kred__vk_api *a = v->api;
	VkFenceCreateInfo fi = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
	VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1 };
	VkFence fence = VK_NULL_HANDLE;
	VkResult res;
	kred_status s = KRED_OK;

	if (!v->cmd) {
		recorded_free(v);
		return KRED_OK;
	}
	res = a->EndCommandBuffer(v->cmd);
	if (res != VK_SUCCESS)
		s = vk_fail_res(err, res, "vkEndCommandBuffer");
	if (!s && (res = a->CreateFence(v->device, &fi, NULL, &fence)) != VK_SUCCESS)
		s = vk_fail_res(err, res, "vkCreateFence");
	si.pCommandBuffers = &v->cmd;
	if (!s && (res = a->QueueSubmit(v->queue, 1, &si, fence)) != VK_SUCCESS)
		s = vk_fail_res(err, res, "vkQueueSubmit");
	if (!s && (res = a->WaitForFences(v->device, 1, &fence, VK_TRUE, UINT64_MAX)) != VK_SUCCESS)
		s = vk_fail_res(err, res, "vkWaitForFences");
	if (fence)
		a->DestroyFence(v->device, fence, NULL);
	a->FreeCommandBuffers(v->device, v->pool, 1, &v->cmd);
	v->cmd = NULL;
	recorded_free(v);
	return s;
}

static void barrier(const struct kred__vk_api *a, VkCommandBuffer cmd, VkPipelineStageFlags src,
		    VkAccessFlags sa, VkPipelineStageFlags dst, VkAccessFlags da)
{
	VkMemoryBarrier mb = {
		.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
		.srcAccessMask = sa,
		.dstAccessMask = da,
	};

	a->CmdPipelineBarrier(cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

static void copy(const struct kred__vk_api *a, VkCommandBuffer cmd, VkBuffer from, VkBuffer to,
		 VkDeviceSize size)
{
	VkBufferCopy c = { .size = size };

	a->CmdCopyBuffer(cmd, from, to, 1, &c);
}

static kred_status mem_make(struct kred__vk *v, int role, size_t bytes, const void *init,
			    struct kred__vk_mem **out, struct kred__error *err)
{
	struct kred__vk_mem *vm = kred__calloc(1, sizeof(*vm));
	int host = init ? HOST_UP : role == KRED__MEM_OUT ? HOST_DOWN : HOST_NONE;
	kred_status s;

	*out = NULL;
	if (!vm)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	s = vbuf_make(v, (VkDeviceSize)bytes,
		      role == KRED__MEM_COL ? VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT
					    : VK_BUFFER_USAGE_STORAGE_BUFFER_BIT,
		      host, &vm->b, err);
	if (!s && init) {
		memcpy(vm->b.map, init, bytes);
		if (role == KRED__MEM_PRM || role == KRED__MEM_TASKS || role == KRED__MEM_RED) {
			vm->host = kred__malloc(bytes);
			if (vm->host)
				memcpy(vm->host, init, bytes);
			else
				s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		}
		if (!s && v->staging) {
			s = record_begin(v, err);
			if (!s)
				copy(v->api, v->cmd, vm->b.hbuf, vm->b.buf, vm->b.size);
			v->uploads = 1;
		}
	}
	if (s) {
		mem_free(v, vm);
		return s;
	}
	*out = vm;
	return KRED_OK;
}

static kred_status vk_alloc(void *state, int role, size_t bytes, const void *init, int read_only,
			    kred__dmem *out, struct kred__error *err)
{
	struct kred__vk_mem *vm;
	kred_status s = mem_make(state, role, bytes, init, &vm, err);

	*out = s ? 0 : (kred__dmem)(uintptr_t)vm;
	return s;
}

/* Freed at once when no recorded work may use it, else once that work has run. */
static void vk_release(void *state, int role, kred__dmem m)
{
	struct kred__vk *v = state;
	struct kred__vk_mem *vm = as_mem(m);

	if (!v->cmd) {
		mem_free(v, vm);
		return;
	}
	vm->next = v->dead;
	v->dead = vm;
}

static kred_status vk_read(void *state, kred__dmem m, void *host, size_t bytes,
			   struct kred__error *err)
{
	struct kred__vk *v = state;
	const struct kred__vk_api *a = v->api;
	struct kred__vk_mem *vm = as_mem(m);
	const VkPipelineStageFlags cs = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
	kred_status s = record_begin(v, err);

	if (s)
		return s;
	if (v->staging) {
		barrier(a, v->cmd, cs, VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
			VK_ACCESS_TRANSFER_READ_BIT);
		copy(a, v->cmd, vm->b.buf, vm->b.hbuf, vm->b.size);
		barrier(a, v->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
			VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
	} else {
		barrier(a, v->cmd, cs, VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
			VK_ACCESS_HOST_READ_BIT);
	}
	s = record_run(v, err);
	if (!s)
		memcpy(host, vm->b.map, bytes);
	return s;
}

static kred_status vk_finish(void *state, struct kred__error *err)
{
	return record_run(state, err);
}

/* Vulkan takes no buffers of the user's (there is no kred_reduction_run_vulkan). */
static kred_status vk_check(void *state, kred__dmem m, int64_t need, const char *what,
			    struct kred__error *err)
{
	return kred__fail(err, KRED_EUNSUPPORTED, -1, "vulkan: %s: the Vulkan backend runs on "
			  "host arrays only", what);
}

/* A descriptor set of the recorded work. */
static kred_status set_make(struct kred__vk *v, VkDescriptorSet *set, struct kred__error *err)
{
	const struct kred__vk_api *a = v->api;
	VkDescriptorPoolSize sizes[2] = {
		{ VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, (N_BINDINGS - 1) * POOL_SETS },
		{ VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, POOL_SETS },
	};
	VkDescriptorPoolCreateInfo dpi = {
		.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
		.maxSets = POOL_SETS,
		.poolSizeCount = 2,
		.pPoolSizes = sizes,
	};
	VkDescriptorSetAllocateInfo ai = {
		.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
		.descriptorSetCount = 1,
		.pSetLayouts = &v->set_layout,
	};
	VkResult res;

	if (!v->pools || v->pools->used == POOL_SETS) {
		struct kred__vk_pools *p = kred__calloc(1, sizeof(*p));

		if (!p)
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		res = a->CreateDescriptorPool(v->device, &dpi, NULL, &p->pool);
		if (res != VK_SUCCESS) {
			kred__free(p);
			return vk_fail_res(err, res, "vkCreateDescriptorPool");
		}
		p->next = v->pools;
		v->pools = p;
	}
	ai.descriptorPool = v->pools->pool;
	res = a->AllocateDescriptorSets(v->device, &ai, set);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkAllocateDescriptorSets");
	v->pools->used++;
	return KRED_OK;
}

/* A texel view of bytes [off, off + range) of b, destroyed with the recorded work. */
static kred_status view_make(struct kred__vk *v, const struct kred__vk_module *m, VkBuffer b,
			     VkDeviceSize off, VkDeviceSize range, VkBufferView *out,
			     struct kred__error *err)
{
	VkBufferViewCreateInfo vi = {
		.sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
		.buffer = b,
		.format = m->dbl ? VK_FORMAT_R32G32B32A32_UINT : VK_FORMAT_R32G32B32A32_SFLOAT,
		.offset = off,
		.range = range,
	};
	VkResult res;

	if (v->n_views == v->cap_views) {
		int cap = v->cap_views ? 2 * v->cap_views : 16;
		VkBufferView *n = kred__realloc(v->views, (size_t)cap * sizeof(*n));

		if (!n)
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		v->views = n;
		v->cap_views = cap;
	}
	res = v->api->CreateBufferView(v->device, &vi, NULL, out);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkCreateBufferView");
	v->views[v->n_views++] = *out;
	return KRED_OK;
}

/* The 16 bytes bound where a run has no such buffer, and their texel view. */
static kred_status dummy_make(struct kred__vk *v, struct kred__error *err)
{
	VkBufferViewCreateInfo vi = {
		.sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
		.format = VK_FORMAT_R32G32B32A32_SFLOAT,
		.range = VK_WHOLE_SIZE,
	};
	kred_status s;
	VkResult res;

	if (v->dummy)
		return KRED_OK;
	s = mem_make(v, KRED__MEM_OWN, 16, NULL, &v->dummy, err);
	if (s)
		return s;
	/* a storage buffer cannot be a texel view's: a texel buffer of its own */
	vbuf_free(v, &v->dummy->b);
	s = vbuf_make(v, 16, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
				     VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT,
		      HOST_NONE, &v->dummy->b, err);
	if (s)
		return s;
	vi.buffer = v->dummy->b.buf;
	res = v->api->CreateBufferView(v->device, &vi, NULL, &v->dummy_view);
	if (res != VK_SUCCESS) {
		v->dummy_view = VK_NULL_HANDLE;
		return vk_fail_res(err, res, "vkCreateBufferView");
	}
	return KRED_OK;
}

/* Where a binding reads: a buffer and its bytes [off, off + range). */
struct bind {
	VkBuffer buf;
	VkDeviceSize off, range;
};

static struct bind bind_of(const struct kred__vk *v, kred__dmem m, VkDeviceSize off,
			   VkDeviceSize range)
{
	const struct kred__vk_mem *vm = as_mem(m);

	if (!vm || range == 0)
		return (struct bind){ v->dummy->b.buf, 0, VK_WHOLE_SIZE };
	return (struct bind){ vm->b.buf, off, range };
}

/* Binds a descriptor set of rows, columns (a view), parameters, states, outputs, tasks
 * and intervals, by tiled.comp's bindings. */
static kred_status set_bind(struct kred__vk *v, const struct bind b[N_BINDINGS - 1],
			    VkBufferView cols, struct kred__error *err)
{
	const struct kred__vk_api *a = v->api;
	VkDescriptorBufferInfo bi[N_BINDINGS - 1];
	VkWriteDescriptorSet w[N_BINDINGS];
	VkDescriptorSet set;
	kred_status s = set_make(v, &set, err);

	if (s)
		return s;
	for (int k = 0; k < N_BINDINGS - 1; k++)
		bi[k] = (VkDescriptorBufferInfo){ b[k].buf, b[k].off, b[k].range };
	for (uint32_t k = 0; k < N_BINDINGS; k++) {
		w[k] = (VkWriteDescriptorSet){
			.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
			.dstSet = set,
			.dstBinding = k,
			.descriptorCount = 1,
			.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
		};
		if (k == 1) {
			w[k].descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER;
			w[k].pTexelBufferView = cols ? &cols : &v->dummy_view;
		} else {
			w[k].pBufferInfo = &bi[k == 0 ? 0 : k - 1];
		}
	}
	a->UpdateDescriptorSets(v->device, N_BINDINGS, w, 0, NULL);
	a->CmdBindDescriptorSets(v->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, v->layout, 0, 1, &set, 0,
				 NULL);
	return KRED_OK;
}

/* The push constants of tiled.comp, laid out as std430 places them. */
struct push {
	unsigned char bytes[MAX_PUSH];
	uint32_t size;
};

static void push_make(struct push *pu, const struct kred__vk_module *m, kred__dmem prm)
{
	int dp = m->push_dp, size = m->dbl ? 8 : 4;

	memset(pu, 0, sizeof(*pu));
	pu->size = (uint32_t)(push_header(m->dbl) + dp * size);
	if (dp && prm)
		memcpy(pu->bytes + push_header(m->dbl), as_mem(prm)->host, (size_t)(dp * size));
}

static void push_set(struct kred__vk *v, struct push *pu, int dbl,
		     const int32_t ints[PUSH_INTS], int64_t jbase)
{
	memcpy(pu->bytes, ints, 4 * PUSH_INTS);
	if (dbl) {
		double j = (double)jbase;

		memcpy(pu->bytes + push_header(1) - 8, &j, 8);
	} else {
		float j = (float)jbase;

		memcpy(pu->bytes + push_header(0) - 4, &j, 4);
	}
	v->api->CmdPushConstants(v->cmd, v->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, pu->size,
				 pu->bytes);
}

/* Row blocks of rb rows and column blocks of cb columns within the device's limits, for
 * rows x cols with split column ranges. */
struct blocks {
	int64_t rb, cb;
	int64_t nrb, ncb;
};

static kred_status blocks_make(const struct kred__vk *v, const struct kred__vk_module *m,
			       int64_t rows, int64_t cols, int64_t split, struct blocks *p,
			       struct kred__error *err)
{
	const VkPhysicalDeviceLimits *lim = &v->dev->props.limits;
	const char *hook = getenv("KRED_VULKAN_TEST_BLOCKS");
	int64_t dr = m->d.l.width[KRED__SIDE_ROW], size = (int64_t)m->d.size, nst = m->d.nst;
	int64_t range = lim->maxStorageBufferRange, rb;
	long long hook_rows = 0, hook_cols = 0;

	if (rows > INT32_MAX || cols > INT32_MAX)
		return kred__fail(err, KRED_EUNSUPPORTED, -1,
				  "the Vulkan backend takes at most 2^31 - 1 rows and columns");
	/* Row blocks: a whole number of 256 rows, so that every block's offset is aligned
	 * for any storage-buffer offset alignment. */
	rb = (int64_t)lim->maxComputeWorkGroupCount[0] * KRED__VK_WG * m->shape.rpi;
	if (dr)
		rb = min64(rb, range / (dr * size));
	rb = min64(rb, range / (split * nst * size));
	rb = min64(rb, range / (m->out_dim * size));
	/* The shader's indices are ints. */
	rb = min64(rb, INT32_MAX / (split * nst + dr + m->out_dim));
	/* A test hook, "ROWS,COLS": blocks that small, so that the block loops run on
	 * inputs a test can check. */
	if (hook && sscanf(hook, "%lld,%lld", &hook_rows, &hook_cols) == 2 && hook_rows > 0)
		rb = min64(rb, hook_rows);
	if (rb < rows)
		rb &= ~(int64_t)255;
	if (rb < 256 && rb < rows)
		return kred__fail(err, KRED_EUNSUPPORTED, -1,
				  "the reduction's state (%d values) does not fit the device's "
				  "storage buffer limits", m->d.nst);
	p->rb = rows > 0 ? min64(rb, rows) : 1;
	p->nrb = rows > 0 ? ceil_div(rows, p->rb) : 0;
	/* Column blocks: what one texel view reaches, with room for int32 indices, 16
	 * columns at a time (256 bytes or more: any texel offset alignment). */
	p->cb = (int64_t)1 << 30;
	if (m->tpc) {
		p->cb = min64(p->cb, (int64_t)lim->maxTexelBufferElements / m->tpc);
		p->cb = min64(p->cb, INT32_MAX / m->tpc);
	}
	if (hook_cols > 0)
		p->cb = min64(p->cb, hook_cols);
	if (p->cb < cols)
		p->cb &= ~(int64_t)15;
	if (p->cb < 16 && p->cb < cols)
		return kred__fail(err, KRED_EUNSUPPORTED, -1,
				  "a column of %d values does not fit the device's texel buffers",
				  m->d.l.width[KRED__SIDE_COL]);
	p->cb = cols > 0 ? min64(p->cb, cols) : 1;
	p->ncb = cols > 0 ? ceil_div(cols, p->cb) : 1;
	if ((double)p->nrb * (double)p->ncb > 1e6)
		return kred__fail(err, KRED_EUNSUPPORTED, -1, "the inputs are too large for this "
				  "Vulkan device's buffer limits");
	return KRED_OK;
}

/* The passes of a block-sparse run over tasks (kred__range_tasks) and intervals red:
 * columns per pass (0: too many intervals in a task for a pass) and passes. */
static void ranged_passes(const struct kred__vk_module *m, const int32_t *tasks, int64_t n_tasks,
			  const int32_t *red, int64_t *count, int64_t *passes)
{
	const char *hook = getenv("KRED_VULKAN_TEST_PASS");
	int64_t most_cols = 0, most_ints = 0;

	for (int64_t t = 0; t < n_tasks; t++) {
		int64_t c = 0;

		for (int32_t k = tasks[4 * t + 2]; k < tasks[4 * t + 3]; k++)
			c += red[2 * k + 1] - red[2 * k];
		most_cols = c > most_cols ? c : most_cols;
		if (tasks[4 * t + 3] - tasks[4 * t + 2] > most_ints)
			most_ints = tasks[4 * t + 3] - tasks[4 * t + 2];
	}
	/* the columns that fit a pass beside the walk over the intervals */
	*count = m->pass - (int64_t)((double)most_ints * m->interval_cost / m->col_cost + 1);
	*count &= ~(int64_t)7;
	/* A test hook: passes of that many columns, so that intervals cross passes. */
	if (hook && atoll(hook) > 0 && atoll(hook) < *count)
		*count = atoll(hook);
	if (*count < (hook ? 1 : 64))
		*count = 0;
	*passes = *count > 0 && most_cols > 0 ? ceil_div(most_cols, *count) : 1;
}

/* A buffer of states for rows x split ranges when the device layer gave none: the run's,
 * freed with the recorded work. */
static kred_status states_of(struct kred__vk *v, const struct kred__vk_module *m, kred__dmem parts,
			     int64_t rows, int need, kred__dmem *out, struct kred__error *err)
{
	struct kred__vk_mem *vm;
	kred_status s;

	*out = parts;
	if (parts || !need)
		return KRED_OK;
	s = mem_make(v, KRED__MEM_OWN, (size_t)rows * (size_t)m->d.nst * m->d.size, NULL, &vm,
		     err);
	if (s)
		return s;
	vm->next = v->dead;
	v->dead = vm;
	*out = (kred__dmem)(uintptr_t)vm;
	return KRED_OK;
}

/* kr_reduce's arguments (lib/device.c): the sides, the output, the 2D scheme's states,
 * rows, columns, and a ranged run's tasks and intervals. */
enum { A_ROW, A_COL, A_PRM, A_OUT, A_PARTS, A_NR, A_NC, A_TASKS, A_RED };

/* A block-sparse run: one workgroup per task, every row and column in one block (vk_run_ranged
 * checked it), in passes over the columns of each task's intervals laid end to end. */
static kred_status launch_ranged(struct kred__vk *v, const struct kred__vk_module *m,
				 int64_t n_tasks, const struct kred__karg *a, struct push *pu,
				 struct kred__error *err)
{
	const struct kred__vk_mem *tasks = as_mem(a[A_TASKS].v.mem), *red = as_mem(a[A_RED].v.mem);
	const VkPipelineStageFlags cs = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
	const VkAccessFlags rw = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
	int64_t nr = a[A_NR].v.l, count, passes, size = (int64_t)m->d.size;
	kred__dmem states;
	VkBufferView cols = VK_NULL_HANDLE;
	kred_status s;

	ranged_passes(m, tasks->host, n_tasks, red->host, &count, &passes);
	if (count == 0)
		return kred__fail(err, KRED_EUNSUPPORTED, -1, "vulkan: too many intervals in a "
				  "task for one pass");
	s = states_of(v, m, 0, nr, passes > 1, &states, err);
	if (!s && a[A_COL].v.mem)
		s = view_make(v, m, as_mem(a[A_COL].v.mem)->b.buf, 0, VK_WHOLE_SIZE, &cols, err);
	if (!s) {
		const struct bind b[N_BINDINGS - 1] = {
			bind_of(v, a[A_ROW].v.mem, 0, VK_WHOLE_SIZE),
			bind_of(v, m->push_dp ? 0 : a[A_PRM].v.mem, 0, VK_WHOLE_SIZE),
			bind_of(v, states, 0, VK_WHOLE_SIZE),
			bind_of(v, a[A_OUT].v.mem, 0, (VkDeviceSize)(nr * m->out_dim * size)),
			bind_of(v, a[A_TASKS].v.mem, 0, VK_WHOLE_SIZE),
			bind_of(v, a[A_RED].v.mem, 0, VK_WHOLE_SIZE),
		};

		s = set_bind(v, b, cols, err);
	}
	for (int64_t t = 0; !s && t < passes; t++) {
		int32_t ints[PUSH_INTS] = { (int32_t)nr, 0, 0, (int32_t)(t * count), (int32_t)count,
					    1, KR_RANGED };

		if (t == 0)
			ints[6] |= KR_INIT;
		if (t == passes - 1)
			ints[6] |= KR_FINAL;
		push_set(v, pu, m->dbl, ints, 0);
		v->api->CmdDispatch(v->cmd, (uint32_t)n_tasks, 1, 1);
		barrier(v->api, v->cmd, cs, VK_ACCESS_SHADER_WRITE_BIT, cs, rw);
	}
	if (!s)
		kred__log("vulkan: %lld tasks in %lld passes of %lld columns", (long long)n_tasks,
			  (long long)passes, (long long)count);
	return s;
}

/* The dense run: for each row block and column block, the passes over each of the split
 * column ranges; the states in the 2D scheme's buffer, else in one of the run's when the
 * columns take more than one dispatch. */
static kred_status launch_dense(struct kred__vk *v, const struct kred__vk_module *m, int64_t split,
				const struct kred__karg *a, struct push *pu,
				struct kred__error *err)
{
	const VkPipelineStageFlags cs = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
	const VkAccessFlags rw = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
	int64_t nr = a[A_NR].v.l, nc = a[A_NC].v.l, size = (int64_t)m->d.size;
	int64_t dr = m->d.l.width[KRED__SIDE_ROW], nst = m->d.nst;
	struct blocks p;
	kred__dmem states;
	kred_status s = blocks_make(v, m, nr, nc, split, &p, err);

	if (s)
		return s;
	s = states_of(v, m, a[A_PARTS].v.mem, nr,
		      split > 1 || p.ncb > 1 || ceil_div(ceil_div(p.cb, split), m->pass) > 1,
		      &states, err);
	for (int64_t cb = 0; !s && cb < p.ncb; cb++) {
		int64_t c0 = cb * p.cb, ncb = nc > 0 ? min64(p.cb, nc - c0) : 0;
		int64_t span = ceil_div(ncb, split), passes = span > 0 ? ceil_div(span, m->pass) : 1;
		VkBufferView cols = VK_NULL_HANDLE;

		if (a[A_COL].v.mem && ncb > 0)
			s = view_make(v, m, as_mem(a[A_COL].v.mem)->b.buf,
				      (VkDeviceSize)(c0 * m->tpc * 16),
				      (VkDeviceSize)(ncb * m->tpc * 16), &cols, err);
		for (int64_t rb = 0; !s && rb < p.nrb; rb++) {
			int64_t r0 = rb * p.rb, nb = min64(p.rb, nr - r0);
			const struct bind b[N_BINDINGS - 1] = {
				bind_of(v, a[A_ROW].v.mem, (VkDeviceSize)(r0 * dr * size),
					(VkDeviceSize)(nb * dr * size)),
				bind_of(v, m->push_dp ? 0 : a[A_PRM].v.mem, 0, VK_WHOLE_SIZE),
				bind_of(v, states, (VkDeviceSize)(r0 * split * nst * size),
					(VkDeviceSize)(nb * split * nst * size)),
				bind_of(v, a[A_OUT].v.mem, (VkDeviceSize)(r0 * m->out_dim * size),
					(VkDeviceSize)(nb * m->out_dim * size)),
				bind_of(v, 0, 0, 0),
				bind_of(v, 0, 0, 0),
			};
			uint32_t gx = (uint32_t)ceil_div(nb, KRED__VK_WG * m->shape.rpi);

			s = set_bind(v, b, cols, err);
			for (int64_t t = 0; !s && t < passes; t++) {
				int32_t ints[PUSH_INTS] = {
					(int32_t)nb, (int32_t)ncb, (int32_t)span,
					(int32_t)(t * m->pass), (int32_t)m->pass, (int32_t)split, 0,
				};

				if (cb == 0 && t == 0)
					ints[6] |= KR_INIT;
				if (split == 1 && cb == p.ncb - 1 && t == passes - 1)
					ints[6] |= KR_FINAL;
				push_set(v, pu, m->dbl, ints, c0);
				v->api->CmdDispatch(v->cmd, gx, (uint32_t)split, 1);
				barrier(v->api, v->cmd, cs, VK_ACCESS_SHADER_WRITE_BIT, cs, rw);
			}
		}
	}
	if (!s && (p.nrb > 1 || p.ncb > 1))
		kred__log("vulkan: %lld x %lld blocks of %lld x %lld", (long long)p.nrb,
			  (long long)p.ncb, (long long)p.rb, (long long)p.cb);
	return s;
}

/* kr_merge_parts: the merge dispatch of each row block, over its split ranges' states. */
static kred_status launch_merge(struct kred__vk *v, const struct kred__vk_module *m,
				const struct kred__karg *a, struct push *pu,
				struct kred__error *err)
{
	const VkPipelineStageFlags cs = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
	const VkAccessFlags rw = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
	int64_t nr = a[2].v.l, split = a[3].v.l, size = (int64_t)m->d.size, nst = m->d.nst;
	struct blocks p;
	kred_status s = blocks_make(v, m, nr, 0, split, &p, err);

	for (int64_t rb = 0; !s && rb < p.nrb; rb++) {
		int64_t r0 = rb * p.rb, nb = min64(p.rb, nr - r0);
		const struct bind b[N_BINDINGS - 1] = {
			bind_of(v, 0, 0, 0),
			bind_of(v, 0, 0, 0),
			bind_of(v, a[0].v.mem, (VkDeviceSize)(r0 * split * nst * size),
				(VkDeviceSize)(nb * split * nst * size)),
			bind_of(v, a[1].v.mem, (VkDeviceSize)(r0 * m->out_dim * size),
				(VkDeviceSize)(nb * m->out_dim * size)),
			bind_of(v, 0, 0, 0),
			bind_of(v, 0, 0, 0),
		};
		int32_t ints[PUSH_INTS] = { (int32_t)nb, 0, 0, 0, 0, (int32_t)split, KR_MERGE };

		s = set_bind(v, b, VK_NULL_HANDLE, err);
		if (s)
			break;
		push_set(v, pu, m->dbl, ints, 0);
		v->api->CmdDispatch(v->cmd, (uint32_t)ceil_div(nb, KRED__VK_WG * m->shape.rpi), 1, 1);
		barrier(v->api, v->cmd, cs, VK_ACCESS_SHADER_WRITE_BIT, cs, rw);
	}
	return s;
}

static kred_status vk_launch(void *state, const void *module, enum kred__kernel k, int64_t gx,
			     int64_t gy, int n, const struct kred__karg *a,
			     struct kred__error *err)
{
	struct kred__vk *v = state;
	const struct kred__vk_module *m = module;
	struct push pu;
	kred_status s;

	if (k != KRED__K_REDUCE && k != KRED__K_MERGE)
		return kred__fail(err, KRED_EUNSUPPORTED, -1, "vulkan: tiled.comp has no %s",
				  kred__kernel_names[k]);
	s = dummy_make(v, err);
	if (!s)
		s = record_begin(v, err);
	if (s)
		return s;
	if (v->uploads) {
		barrier(v->api, v->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT,
			VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
			VK_ACCESS_SHADER_READ_BIT);
		v->uploads = 0;
	}
	v->api->CmdBindPipeline(v->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, m->pipe->pipeline);
	if (k == KRED__K_MERGE) {
		push_make(&pu, m, 0);
		return launch_merge(v, m, a, &pu, err);
	}
	push_make(&pu, m, a[A_PRM].v.mem);
	return a[A_TASKS].v.mem ? launch_ranged(v, m, gx, a, &pu, err)
				: launch_dense(v, m, gy, a, &pu, err);
}

static const struct kred__device_ops vk_ops = {
	.alloc = vk_alloc,
	.release = vk_release,
	.read = vk_read,
	.launch = vk_launch,
	.check = vk_check,
	.finish = vk_finish,
};

/* What the device layer plans with: 2D when the row groups fill under half of four
 * groups per core (llvmpipe runs a workgroup per thread) or 2,048 groups (a GPU); the
 * partial states in half the largest allocation at most. */
static void layer_make(struct kred__vk *v, const kred_context *ctx)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	v->layer = (struct kred__device){
		.ops = &vk_ops,
		.state = v,
		.name = "vulkan",
		.dialect = &kred__dialect_glsl,
		.module_size = sizeof(struct kred__vk_module),
		.scheme = ctx ? ctx->opt.scheme : KRED_SCHEME_AUTO,
		.target_groups = vk_is_gpu(v) ? 2048 : 4 * (cores > 0 ? cores : 1),
		.max_grid_y = v->dev->props.limits.maxComputeWorkGroupCount[1],
		.parts_cap = (size_t)v->dev->max_alloc / 2,
		.none = "NULL",
		.args_name = "args",
		.out_name = "out",
	};
}

/*
 * A block-sparse run in one command buffer: one workgroup per task of rows of one block
 * (kred__range_tasks), in passes over the columns of each task's intervals laid end to
 * end, sized so that a pass's columns and intervals stay within llvmpipe's loop budget.
 * It needs the rows and columns in one block each and the tasks in one dispatch; past
 * those, or when a task has too many intervals for a pass, the library's block-by-block
 * run (ranges.c) takes it.
 */
static kred_status vk_run_ranged(void *state, void *module, const struct kred_reduction *r,
				 int64_t nx, int64_t ny, const void *const *args, void *out,
				 const struct kred__ranges *g, struct kred__error *err)
{
	struct kred__vk *v = state;
	const struct kred__vk_module *m = module;
	int64_t rows = r->axis == KRED_REDUCE_J ? nx : ny, cols = r->axis == KRED_REDUCE_J ? ny : nx;
	int64_t n_tasks = 0, count = 0, passes = 0;
	int32_t *tasks = NULL;
	struct blocks p;
	kred_status s;

	if (rows == 0)
		return KRED_OK;
	s = blocks_make(v, m, rows, cols, 1, &p, err);
	if (!s)
		s = kred__range_tasks(g, rows, KRED__VK_WG * m->shape.rpi, &tasks, &n_tasks, err);
	if (s)
		return s;
	ranged_passes(m, tasks, n_tasks, g->red, &count, &passes);
	kred__free(tasks);
	if (p.nrb != 1 || p.ncb != 1 || count == 0 ||
	    n_tasks > v->dev->props.limits.maxComputeWorkGroupCount[0]) {
		kred__log("vulkan: ranges block by block (%lld x %lld blocks, %lld tasks)",
			  (long long)p.nrb, (long long)p.ncb, (long long)n_tasks);
		/* the library made r; only this call is const */
		return kred__run_ranged_blocks((kred_reduction *)r, nx, ny, args, out, g, err);
	}
	return kred__device_run_ranged(state, module, r, nx, ny, args, out, g, err);
}

/* ---- memory, devices and the device report */

/* The largest device-local heap: where a run's buffers go (on lavapipe, the host's RAM). */
static VkDeviceSize local_heap(const struct kred__vk_device *d)
{
	VkDeviceSize heap = 0;

	for (uint32_t h = 0; h < d->mem.memoryHeapCount; h++)
		if ((d->mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
		    d->mem.memoryHeaps[h].size > heap)
			heap = d->mem.memoryHeaps[h].size;
	return heap;
}

/* What a run may use: the heap, but no more than maxMemoryAllocationSize, the most one
 * buffer may hold: each side of a run (its arguments packed) and its output are one
 * buffer each, and the chunked runs keep all of them together within half of what this
 * returns. */
static int64_t vk_memory(void *state)
{
	const struct kred__vk_device *d = ((struct kred__vk *)state)->dev;
	VkDeviceSize heap = local_heap(d);

	if (d->max_alloc && d->max_alloc < heap)
		heap = d->max_alloc;

	return heap > (VkDeviceSize)INT64_MAX ? INT64_MAX : (int64_t)heap;
}

/* "vulkan:0" to "vulkan:N-1". The instance lives while a context holds it, so this makes
 * (and drops) one when none is open. */
static int vk_device_count(void)
{
	const struct kred__vk_device *devs;
	char why[512];
	int n;

	if (!kred__vk_acquire(why, sizeof(why)))
		return 0;
	n = kred__vk_devices(&devs);
	kred__vk_release();
	return n;
}

static void vk_report(struct kred__buf *b)
{
	const struct kred__vk_device *devs;
	const struct kred__vk_api *api;
	const char *reason = NULL, *glslc = kred__vk_glslc(), *version;
	char why[512];
	int n;

	api = kred__vk_acquire(why, sizeof(why));
	if (!api) {
		kred__buf_printf(b, "vulkan: not available (%s)\n", why);
		return;
	}
	version = kred__compiler_version(glslc, &reason);
	n = kred__vk_devices(&devs);
	if (version)
		kred__buf_printf(b, "vulkan: available: %d device%s, GLSL compiler %s (%.*s)\n",
				 n, n == 1 ? "" : "s", glslc, (int)strcspn(version, "\n"),
				 version);
	else
		kred__buf_printf(b, "vulkan: not available (no GLSL compiler: '%s' %s; install "
				 "glslc, or set KRED_GLSLC); devices:\n", glslc,
				 reason ? reason : "cannot be run");
	for (int k = 0; k < n; k++) {
		const struct kred__vk_device *d = &devs[k];
		VkDeviceSize heap = local_heap(d);

		kred__buf_printf(b, "  vulkan:%d  %s (%s, %.1f GiB, fp64 %s, %s%s%s, Vulkan "
				 "%u.%u.%u)%s\n", k, d->props.deviceName,
				 kred__vk_type_name(d->props.deviceType),
				 (double)heap / (1u << 30), d->fp64 ? "yes" : "no",
				 d->driver_name[0] ? d->driver_name : "driver",
				 d->driver_info[0] ? " " : "", d->driver_info,
				 VK_API_VERSION_MAJOR(d->props.apiVersion),
				 VK_API_VERSION_MINOR(d->props.apiVersion),
				 VK_API_VERSION_PATCH(d->props.apiVersion),
				 usable(d) ? "" : ": unusable (no compute queue or texel buffers)");
	}
	kred__vk_release();
}

const struct kred_backend kred__backend_vulkan = {
	.version = KRED__BACKEND_VERSION,
	.name = "vulkan",
	.open = vk_open,
	.close = vk_close,
	.describe = vk_describe,
	.is_gpu = vk_is_gpu,
	.compile = vk_compile,
	.run = kred__device_run,
	.module_free = vk_module_free,
	.source = vk_source,
	.report = vk_report,
	.memory = vk_memory,
	.device_count = vk_device_count,
	.run_ranged = vk_run_ranged,
};
