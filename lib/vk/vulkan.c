/* The Vulkan backend: a compute queue on one device ("vulkan:N"), reductions emitted as
 * GLSL (kernels/tiled.comp), and runs split into dispatches every driver completes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vk.h"

/*
 * A run, for R output rows and C reduced columns:
 * - rows go in row blocks and columns in column blocks small enough for the device's
 *   limits (65,535 workgroups per dimension, maxStorageBufferRange per storage binding,
 *   maxTexelBufferElements per texel view, maxMemoryAllocationSize per buffer); each
 *   (row block, column block) pair has its descriptor set;
 * - the columns of a block are split into `split` ranges (the y dimension of the grid)
 *   when there are too few rows to occupy the device;
 * - each range is walked in passes of at most `pass` columns per invocation (the module
 *   knows how many its loops allow: llvmpipe ends any invocation's loops after 65,535
 *   iterations in total, silently), the state of each row and range carried from one
 *   dispatch to the next in the state buffer;
 * - when split > 1, a last dispatch merges the ranges' states with the reduction's merge
 *   and finalizes.
 * All of it is one command buffer and one fence.
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
	s = kred__layout_make(r, &m->l, err);
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
	m->nst = kred__emit_nstate(r);
	m->shape = choose_shape(r, m->nst);
	s = kred__emit_loops(&kred__dialect_glsl, r, &m->l, &lp, err);
	if (s)
		goto fail;
	m->pass = pass_columns(r, &m->l, m->nst, m->shape, &lp, &m->col_cost, &m->interval_cost);
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
	m->push_dp = push_params(v, r, &m->l);
	s = kred__vk_source(v, r, &m->l, m->push_dp, m->shape, &src, err);
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
	kred__layout_free(&m->l);
	kred__free(m);
	return s;
}

static void vk_module_free(void *state, void *module)
{
	struct kred__vk_module *m = module;

	if (!m)
		return;
	kred__layout_free(&m->l);
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

/* ---- running */

struct plan {
	int64_t rows, cols;
	int64_t rb, cb;	 /* rows per row block, columns per column block */
	int nrb, ncb;	 /* blocks */
	int split;	 /* column ranges per block, merged at the end */
	int tpc;	 /* texels per column */
	int carry;	 /* states go from pass to pass (a block-sparse run's passes) */
	int size;	 /* bytes per value */
};

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
	return (a + b - 1) / b;
}

/* How many column ranges make the device busy when there are few rows: on a CPU device
 * (llvmpipe runs a workgroup per thread), four groups per core; on a GPU, a few thousand
 * groups. A range keeps at least 1024 columns, so that the merge stays cheap. */
static int choose_split(const struct kred__vk *v, const struct kred__vk_module *m,
			int64_t rows, int64_t cols)
{
	kred_scheme scheme = v->ctx ? v->ctx->opt.scheme : KRED_SCHEME_AUTO;
	int64_t groups = ceil_div(rows, KRED__VK_WG * m->shape.rpi), target, split;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	if (scheme == KRED_SCHEME_1D || cols < 2)
		return 1;
	target = v->dev->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU
			 ? 4 * (cores > 0 ? cores : 1) : 2048;
	split = ceil_div(target, groups);
	split = min64(split, cols / 1024);
	split = min64(split, 256);
	/* The merge dispatch's loops count against the same budget. */
	split = min64(split, (LOOP_BUDGET - LOOP_MARGIN) /
				     (m->shape.rpi * (m->merge_loops + 2 * m->nst + 1)));
	if (scheme == KRED_SCHEME_2D && split < 2)
		split = 2;
	return split < 1 ? 1 : (int)split;
}

static kred_status make_plan(const struct kred__vk *v, const struct kred__vk_module *m,
			     const struct kred_reduction *r, int64_t rows, int64_t cols, int ranged,
			     struct plan *p, struct kred__error *err)
{
	const VkPhysicalDeviceLimits *lim = &v->dev->props.limits;
	const char *hook = getenv("KRED_VULKAN_TEST_BLOCKS");
	int dr = m->l.width[KRED__SIDE_ROW], dc = m->l.width[KRED__SIDE_COL];
	int per_texel = m->dbl ? 2 : 4;
	int64_t range = lim->maxStorageBufferRange, alloc = (int64_t)v->dev->max_alloc, rb;
	long long hook_rows = 0, hook_cols = 0;

	if (rows > INT32_MAX || cols > INT32_MAX)
		return kred__fail(err, KRED_EUNSUPPORTED, -1,
				  "the Vulkan backend takes at most 2^31 - 1 rows and columns");
	memset(p, 0, sizeof(*p));
	p->rows = rows;
	p->cols = cols;
	p->size = m->dbl ? 8 : 4;
	p->tpc = (dc + per_texel - 1) / per_texel;
	if (range > alloc)
		range = alloc;
	/* A block-sparse run's tasks are its parallelism: no column ranges. */
	p->split = ranged ? 1 : choose_split(v, m, rows, cols);
	/* Row blocks: a whole number of 256 rows, so that every block's offset is aligned
	 * for any storage-buffer offset alignment. */
	rb = (int64_t)lim->maxComputeWorkGroupCount[0] * KRED__VK_WG * m->shape.rpi;
	if (dr)
		rb = min64(rb, range / (dr * p->size));
	rb = min64(rb, range / ((int64_t)p->split * m->nst * p->size));
	rb = min64(rb, range / ((int64_t)r->out_dim * p->size));
	/* The shader's indices are ints. */
	rb = min64(rb, INT32_MAX / ((int64_t)p->split * m->nst + dr + r->out_dim));
	/* A test hook, "ROWS,COLS": blocks that small, so that the block loops run on
	 * inputs a test can check. */
	if (hook && sscanf(hook, "%lld,%lld", &hook_rows, &hook_cols) == 2 && hook_rows > 0)
		rb = min64(rb, hook_rows);
	if (rb < rows)
		rb &= ~(int64_t)255;
	if (rb < 256 && rb < rows)
		return kred__fail(err, KRED_EUNSUPPORTED, -1,
				  "the reduction's state (%d values) does not fit the device's "
				  "storage buffer limits", m->nst);
	p->rb = min64(rb, rows);
	p->nrb = (int)ceil_div(rows, p->rb);
	/* Column blocks: what one texel view reaches, with room for int32 indices. */
	p->cb = (int64_t)1 << 30;
	if (p->tpc) {
		p->cb = min64(p->cb, (int64_t)lim->maxTexelBufferElements / p->tpc);
		p->cb = min64(p->cb, INT32_MAX / p->tpc);
		p->cb = min64(p->cb, alloc / (16 * p->tpc));
	}
	if (p->cb < 1)
		return kred__fail(err, KRED_EUNSUPPORTED, -1,
				  "a column of %d values does not fit the device's texel buffers",
				  dc);
	if (hook_cols > 0)
		p->cb = min64(p->cb, hook_cols);
	p->cb = min64(p->cb, cols > 0 ? cols : 1);
	p->ncb = cols > 0 ? (int)ceil_div(cols, p->cb) : 1;
	if ((double)p->nrb * p->ncb > 1e6)
		return kred__fail(err, KRED_EUNSUPPORTED, -1, "the inputs are too large for this "
				  "Vulkan device's buffer limits");
	return KRED_OK;
}

/* Everything a run creates, freed in one place. */
struct run {
	struct kred__vk *v;
	int nrb, ncb;
	struct vbuf *rows, *states, *outs; /* by row block */
	struct vbuf *cols;		   /* by column block */
	VkBufferView *views;
	struct vbuf prm;
	struct vbuf tasks, red; /* a block-sparse run's; 16 unused bytes otherwise */
	VkDescriptorPool dpool;
	VkDescriptorSet *sets;		   /* by row block * ncb + column block */
	VkCommandBuffer cmd;
	VkFence fence;
};

static void run_free(struct run *u)
{
	struct kred__vk *v = u->v;
	const struct kred__vk_api *a = v->api;

	if (u->fence)
		a->DestroyFence(v->device, u->fence, NULL);
	if (u->cmd)
		a->FreeCommandBuffers(v->device, v->pool, 1, &u->cmd);
	if (u->dpool)
		a->DestroyDescriptorPool(v->device, u->dpool, NULL); /* frees the sets */
	for (int k = 0; u->views && k < u->ncb; k++)
		if (u->views[k])
			a->DestroyBufferView(v->device, u->views[k], NULL);
	for (int k = 0; u->cols && k < u->ncb; k++)
		vbuf_free(v, &u->cols[k]);
	for (int k = 0; k < u->nrb; k++) {
		if (u->rows)
			vbuf_free(v, &u->rows[k]);
		if (u->states)
			vbuf_free(v, &u->states[k]);
		if (u->outs)
			vbuf_free(v, &u->outs[k]);
	}
	vbuf_free(v, &u->prm);
	vbuf_free(v, &u->tasks);
	vbuf_free(v, &u->red);
	kred__free(u->rows);
	kred__free(u->states);
	kred__free(u->outs);
	kred__free(u->cols);
	kred__free(u->views);
	kred__free(u->sets);
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

/* Writes n int32 values (none: 16 unused bytes) into a new storage buffer. */
static kred_status int_buffer(struct kred__vk *v, const int32_t *src, int64_t n, struct vbuf *b,
			      struct kred__error *err)
{
	kred_status s = vbuf_make(v, (VkDeviceSize)(n * 4), VK_BUFFER_USAGE_STORAGE_BUFFER_BIT,
				  HOST_UP, b, err);

	if (!s && n)
		memcpy(b->map, src, (size_t)n * 4);
	return s;
}

/* Buffers, views and descriptor sets for the plan, with the inputs written; for a
 * block-sparse run, its n_tasks tasks and n_red intervals too. */
static kred_status setup(struct run *u, const struct kred__vk_module *m,
			 const struct kred_reduction *r, const struct plan *p,
			 const void *const *args, const int32_t *tasks, int64_t n_tasks,
			 const int32_t *red, int64_t n_red, struct kred__error *err)
{
	struct kred__vk *v = u->v;
	const struct kred__vk_api *a = v->api;
	int side_r = KRED__SIDE_ROW, side_c = KRED__SIDE_COL;
	int dr = m->l.width[side_r], dp = m->l.width[KRED__SIDE_PRM];
	int per_texel = m->dbl ? 2 : 4, nsets = p->nrb * p->ncb;
	int stateful = p->carry || p->split > 1 || p->ncb > 1 ||
		       ceil_div(ceil_div(p->cb, p->split), m->pass) > 1;
	VkDescriptorPoolSize sizes[2] = {
		{ VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, (N_BINDINGS - 1) * (uint32_t)nsets },
		{ VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, (uint32_t)nsets },
	};
	VkDescriptorPoolCreateInfo dpi = {
		.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
		.maxSets = (uint32_t)nsets,
		.poolSizeCount = 2,
		.pPoolSizes = sizes,
	};
	VkResult res;
	kred_status s;

	u->nrb = p->nrb;
	u->ncb = p->ncb;
	u->rows = kred__calloc((size_t)p->nrb, sizeof(*u->rows));
	u->states = kred__calloc((size_t)p->nrb, sizeof(*u->states));
	u->outs = kred__calloc((size_t)p->nrb, sizeof(*u->outs));
	u->cols = kred__calloc((size_t)p->ncb, sizeof(*u->cols));
	u->views = kred__calloc((size_t)p->ncb, sizeof(*u->views));
	u->sets = kred__calloc((size_t)nsets, sizeof(*u->sets));
	if (!u->rows || !u->states || !u->outs || !u->cols || !u->views || !u->sets)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	for (int b = 0; b < p->nrb; b++) {
		int64_t r0 = b * p->rb, n = min64(p->rb, p->rows - r0);

		s = vbuf_make(v, (VkDeviceSize)(n * dr * p->size), VK_BUFFER_USAGE_STORAGE_BUFFER_BIT,
			      HOST_UP, &u->rows[b], err);
		if (s)
			return s;
		if (dr)
			kred__layout_pack(&m->l, r, side_r, args, r0, n, dr, p->size, u->rows[b].map);
		s = vbuf_make(v, stateful ? (VkDeviceSize)(n * p->split * m->nst * p->size) : 16,
			      VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, HOST_NONE, &u->states[b], err);
		if (s)
			return s;
		s = vbuf_make(v, (VkDeviceSize)(n * r->out_dim * p->size),
			      VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, HOST_DOWN, &u->outs[b], err);
		if (s)
			return s;
	}
	for (int b = 0; b < p->ncb; b++) {
		int64_t c0 = b * p->cb, n = min64(p->cb, p->cols - c0);
		VkBufferViewCreateInfo vi = {
			.sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
			.format = m->dbl ? VK_FORMAT_R32G32B32A32_UINT
					 : VK_FORMAT_R32G32B32A32_SFLOAT,
			.range = VK_WHOLE_SIZE,
		};

		if (n < 0)
			n = 0;
		s = vbuf_make(v, (VkDeviceSize)(n * p->tpc * 16), VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT,
			      HOST_UP, &u->cols[b], err);
		if (s)
			return s;
		if (p->tpc)
			kred__layout_pack(&m->l, r, side_c, args, c0, n, p->tpc * per_texel,
					  p->size, u->cols[b].map);
		vi.buffer = u->cols[b].buf;
		res = a->CreateBufferView(v->device, &vi, NULL, &u->views[b]);
		if (res != VK_SUCCESS)
			return vk_fail_res(err, res, "vkCreateBufferView");
	}
	s = vbuf_make(v, (VkDeviceSize)(m->push_dp ? 0 : dp * p->size),
		      VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, HOST_UP, &u->prm, err);
	if (s)
		return s;
	if (dp && !m->push_dp)
		kred__layout_pack(&m->l, r, KRED__SIDE_PRM, args, 0, 1, dp, p->size, u->prm.map);
	s = int_buffer(v, tasks, 4 * n_tasks, &u->tasks, err);
	if (!s)
		s = int_buffer(v, red, 2 * n_red, &u->red, err);
	if (s)
		return s;

	res = a->CreateDescriptorPool(v->device, &dpi, NULL, &u->dpool);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkCreateDescriptorPool");
	for (int k = 0; k < nsets; k++) {
		int rb = k / p->ncb, cb = k % p->ncb;
		VkDescriptorSetAllocateInfo ai = {
			.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
			.descriptorPool = u->dpool,
			.descriptorSetCount = 1,
			.pSetLayouts = &v->set_layout,
		};
		/* by binding, past the texels of binding 1 */
		VkDescriptorBufferInfo bi[N_BINDINGS - 1] = {
			{ u->rows[rb].buf, 0, VK_WHOLE_SIZE },
			{ u->prm.buf, 0, VK_WHOLE_SIZE },
			{ u->states[rb].buf, 0, VK_WHOLE_SIZE },
			{ u->outs[rb].buf, 0, VK_WHOLE_SIZE },
			{ u->tasks.buf, 0, VK_WHOLE_SIZE },
			{ u->red.buf, 0, VK_WHOLE_SIZE },
		};
		VkWriteDescriptorSet w[N_BINDINGS];

		res = a->AllocateDescriptorSets(v->device, &ai, &u->sets[k]);
		if (res != VK_SUCCESS)
			return vk_fail_res(err, res, "vkAllocateDescriptorSets");
		for (uint32_t b = 0; b < N_BINDINGS; b++) {
			w[b] = (VkWriteDescriptorSet){
				.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
				.dstSet = u->sets[k],
				.dstBinding = b,
				.descriptorCount = 1,
				.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
			};
			if (b == 1) {
				w[b].descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER;
				w[b].pTexelBufferView = &u->views[cb];
			} else {
				w[b].pBufferInfo = &bi[b == 0 ? 0 : b - 1];
			}
		}
		a->UpdateDescriptorSets(v->device, N_BINDINGS, w, 0, NULL);
	}
	return KRED_OK;
}

/* The push constants of tiled.comp, laid out as std430 places them. */
struct push {
	unsigned char bytes[MAX_PUSH];
	uint32_t size;
};

static void push_make(struct push *pu, const struct kred__vk_module *m,
		      const struct kred_reduction *r, const void *const *args)
{
	int dp = m->push_dp, size = m->dbl ? 8 : 4;

	memset(pu, 0, sizeof(*pu));
	pu->size = (uint32_t)(push_header(m->dbl) + dp * size);
	if (dp)
		kred__layout_pack(&m->l, r, KRED__SIDE_PRM, args, 0, 1, dp, size,
		     (char *)pu->bytes + push_header(m->dbl));
}

static void push_set(struct push *pu, int dbl, const int32_t ints[PUSH_INTS], int64_t jbase)
{
	memcpy(pu->bytes, ints, 4 * PUSH_INTS);
	if (dbl) {
		double j = (double)jbase;

		memcpy(pu->bytes + push_header(1) - 8, &j, 8);
	} else {
		float j = (float)jbase;

		memcpy(pu->bytes + push_header(0) - 4, &j, 4);
	}
}

/* The passes of a block-sparse run: n_tasks workgroups, each pass folding the columns at
 * [t * count, (t + 1) * count) of each task's intervals laid end to end. */
struct ranged_plan {
	int64_t n_tasks, count, passes;
};

/* The dispatches of a block-sparse run (one row block, one column block). */
static void record_ranged(struct run *u, const struct kred__vk_module *m, const struct plan *p,
			  const struct ranged_plan *rp, struct push *pu)
{
	struct kred__vk *v = u->v;
	const struct kred__vk_api *a = v->api;
	const VkPipelineStageFlags cs = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
	const VkAccessFlags rw = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;

	a->CmdBindDescriptorSets(u->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, v->layout, 0, 1,
				 &u->sets[0], 0, NULL);
	for (int64_t t = 0; t < rp->passes; t++) {
		int32_t ints[PUSH_INTS] = {
			(int32_t)p->rows, (int32_t)p->cols, 0, (int32_t)(t * rp->count),
			(int32_t)rp->count, 1, KR_RANGED,
		};

		if (t == 0)
			ints[6] |= KR_INIT;
		if (t == rp->passes - 1)
			ints[6] |= KR_FINAL;
		push_set(pu, m->dbl, ints, 0);
		a->CmdPushConstants(u->cmd, v->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, pu->size,
				    pu->bytes);
		a->CmdDispatch(u->cmd, (uint32_t)rp->n_tasks, 1, 1);
		barrier(a, u->cmd, cs, VK_ACCESS_SHADER_WRITE_BIT, cs, rw);
	}
}

/* The command buffer of a run: copies in (staging), dispatches (rp: a block-sparse
 * run's), copies out. */
static void record(struct run *u, const struct kred__vk_module *m, const struct plan *p,
		   const struct ranged_plan *rp, struct push *pu)
{
	struct kred__vk *v = u->v;
	const struct kred__vk_api *a = v->api;
	VkCommandBuffer cmd = u->cmd;
	const VkPipelineStageFlags cs = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
	const VkAccessFlags rw = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;

	if (v->staging) {
		for (int b = 0; b < p->nrb; b++)
			copy(a, cmd, u->rows[b].hbuf, u->rows[b].buf, u->rows[b].size);
		for (int b = 0; b < p->ncb; b++)
			copy(a, cmd, u->cols[b].hbuf, u->cols[b].buf, u->cols[b].size);
		copy(a, cmd, u->prm.hbuf, u->prm.buf, u->prm.size);
		copy(a, cmd, u->tasks.hbuf, u->tasks.buf, u->tasks.size);
		copy(a, cmd, u->red.hbuf, u->red.buf, u->red.size);
		barrier(a, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, cs,
			VK_ACCESS_SHADER_READ_BIT);
	}
	a->CmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, m->pipe->pipeline);
	if (rp)
		record_ranged(u, m, p, rp, pu);
	for (int rb = 0; !rp && rb < p->nrb; rb++) {
		int64_t nr = min64(p->rb, p->rows - rb * p->rb);
		uint32_t gx = (uint32_t)ceil_div(nr, KRED__VK_WG * m->shape.rpi);

		for (int cb = 0; cb < p->ncb; cb++) {
			int64_t c0 = cb * p->cb, nc = p->cols > 0 ? min64(p->cb, p->cols - c0) : 0;
			int64_t span = ceil_div(nc, p->split);
			int64_t passes = span > 0 ? ceil_div(span, m->pass) : 1;

			a->CmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, v->layout, 0,
						 1, &u->sets[rb * p->ncb + cb], 0, NULL);
			for (int64_t t = 0; t < passes; t++) {
				int32_t ints[PUSH_INTS] = {
					(int32_t)nr, (int32_t)nc, (int32_t)span,
					(int32_t)(t * m->pass), (int32_t)m->pass, p->split, 0,
				};

				if (cb == 0 && t == 0)
					ints[6] |= KR_INIT;
				if (p->split == 1 && cb == p->ncb - 1 && t == passes - 1)
					ints[6] |= KR_FINAL;
				push_set(pu, m->dbl, ints, c0);
				a->CmdPushConstants(cmd, v->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
						    pu->size, pu->bytes);
				a->CmdDispatch(cmd, gx, (uint32_t)p->split, 1);
				barrier(a, cmd, cs, VK_ACCESS_SHADER_WRITE_BIT, cs, rw);
			}
		}
		if (p->split > 1) {
			int32_t ints[PUSH_INTS] = { (int32_t)nr, 0, 0, 0, 0, p->split, KR_MERGE };

			push_set(pu, m->dbl, ints, 0);
			a->CmdPushConstants(cmd, v->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, pu->size,
					    pu->bytes);
			a->CmdDispatch(cmd, gx, 1, 1);
		}
	}
	if (v->staging) {
		barrier(a, cmd, cs, VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
			VK_ACCESS_TRANSFER_READ_BIT);
		for (int b = 0; b < p->nrb; b++)
			copy(a, cmd, u->outs[b].buf, u->outs[b].hbuf, u->outs[b].size);
		barrier(a, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
			VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
	} else {
		barrier(a, cmd, cs, VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
			VK_ACCESS_HOST_READ_BIT);
	}
}

/* Records, submits and waits for the run u was set up for, then copies its output. */
static kred_status execute(struct run *u, const struct kred__vk_module *m,
			   const struct kred_reduction *r, const struct plan *p,
			   const void *const *args, const struct ranged_plan *rp, void *out,
			   struct kred__error *err)
{
	struct kred__vk *v = u->v;
	const struct kred__vk_api *a = v->api;
	struct push pu;
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
	VkFenceCreateInfo fi = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
	VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1 };
	VkResult res;

	push_make(&pu, m, r, args);
	res = a->AllocateCommandBuffers(v->device, &ci, &u->cmd);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkAllocateCommandBuffers");
	res = a->BeginCommandBuffer(u->cmd, &bi);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkBeginCommandBuffer");
	record(u, m, p, rp, &pu);
	res = a->EndCommandBuffer(u->cmd);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkEndCommandBuffer");
	res = a->CreateFence(v->device, &fi, NULL, &u->fence);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkCreateFence");
	si.pCommandBuffers = &u->cmd;
	res = a->QueueSubmit(v->queue, 1, &si, u->fence);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkQueueSubmit");
	res = a->WaitForFences(v->device, 1, &u->fence, VK_TRUE, UINT64_MAX);
	if (res != VK_SUCCESS)
		return vk_fail_res(err, res, "vkWaitForFences");
	for (int b = 0; b < p->nrb; b++) {
		int64_t r0 = b * p->rb, n = min64(p->rb, p->rows - r0);
		size_t row = (size_t)r->out_dim * (size_t)p->size;

		memcpy((char *)out + (size_t)r0 * row, u->outs[b].map, (size_t)n * row);
	}
	return KRED_OK;
}

static kred_status vk_run(void *state, void *module, const struct kred_reduction *r, int64_t nx,
			  int64_t ny, const void *const *args, void *out, struct kred__error *err)
{
	struct kred__vk *v = state;
	const struct kred__vk_module *m = module;
	int64_t rows = r->axis == KRED_REDUCE_J ? nx : ny, cols = r->axis == KRED_REDUCE_J ? ny : nx;
	struct run u = { .v = v };
	struct plan p;
	double t0 = kred__now();
	kred_status s;

	if (rows == 0)
		return KRED_OK;
	s = make_plan(v, m, r, rows, cols, 0, &p, err);
	if (s)
		return s;
	s = setup(&u, m, r, &p, args, NULL, 0, NULL, 0, err);
	if (!s)
		s = execute(&u, m, r, &p, args, NULL, out, err);
	if (!s)
		kred__log("vulkan: ran %lld x %lld in %.2f ms (%d x %d blocks, %d ranges, passes "
			  "of %lld columns)", (long long)rows, (long long)cols,
			  1e3 * (kred__now() - t0), p.nrb, p.ncb, p.split, (long long)m->pass);
	run_free(&u);
	return s;
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
	int64_t n_red = g->nb ? g->slc[g->nb - 1] : 0, most_cols = 0, most_ints = 0;
	struct run u = { .v = v };
	struct ranged_plan rp = { 0 };
	struct plan p;
	int32_t *tasks = NULL;
	const char *hook = getenv("KRED_VULKAN_TEST_PASS");
	double t0 = kred__now();
	kred_status s;

	if (rows == 0)
		return KRED_OK;
	s = make_plan(v, m, r, rows, cols, 1, &p, err);
	if (!s)
		s = kred__range_tasks(g, rows, KRED__VK_WG * m->shape.rpi, &tasks, &rp.n_tasks, err);
	if (s)
		return s;
	for (int64_t t = 0; t < rp.n_tasks; t++) {
		int64_t c = 0;

		for (int32_t k = tasks[4 * t + 2]; k < tasks[4 * t + 3]; k++)
			c += g->red[2 * k + 1] - g->red[2 * k];
		most_cols = c > most_cols ? c : most_cols;
		if (tasks[4 * t + 3] - tasks[4 * t + 2] > most_ints)
			most_ints = tasks[4 * t + 3] - tasks[4 * t + 2];
	}
	/* the columns that fit a pass beside the walk over the intervals */
	rp.count = m->pass - (int64_t)(most_ints * m->interval_cost / m->col_cost + 1);
	rp.count &= ~(int64_t)7;
	/* A test hook: passes of that many columns, so that intervals cross passes. */
	if (hook && atoll(hook) > 0 && atoll(hook) < rp.count)
		rp.count = atoll(hook);
	if (p.nrb != 1 || p.ncb != 1 || rp.count < (hook ? 1 : 64) ||
	    rp.n_tasks > v->dev->props.limits.maxComputeWorkGroupCount[0]) {
		kred__log("vulkan: ranges block by block (%d x %d blocks, %lld tasks, %lld "
			  "intervals in one)", p.nrb, p.ncb, (long long)rp.n_tasks,
			  (long long)most_ints);
		kred__free(tasks);
		/* the library made r; only this call is const */
		return kred__run_ranged_blocks((kred_reduction *)r, nx, ny, args, out, g, err);
	}
	rp.passes = most_cols > 0 ? ceil_div(most_cols, rp.count) : 1;
	p.carry = rp.passes > 1;
	s = setup(&u, m, r, &p, args, tasks, rp.n_tasks, g->red, n_red, err);
	kred__free(tasks);
	if (!s)
		s = execute(&u, m, r, &p, args, &rp, out, err);
	if (!s)
		kred__log("vulkan: ranged %lld x %lld in %.2f ms (%lld tasks, %lld passes of %lld "
			  "columns)", (long long)rows, (long long)cols, 1e3 * (kred__now() - t0),
			  (long long)rp.n_tasks, (long long)rp.passes, (long long)rp.count);
	run_free(&u);
	return s;
}

/* ---- memory, devices and the device report */

/* The largest device-local heap: where a run's buffers go (on lavapipe, the host's RAM).
 * One allocation may hold maxMemoryAllocationSize at most, but a run splits its buffers
 * into blocks that fit it (make_plan), so only the heap bounds a run. */
static VkDeviceSize local_heap(const struct kred__vk_device *d)
{
	VkDeviceSize heap = 0;

	for (uint32_t h = 0; h < d->mem.memoryHeapCount; h++)
		if ((d->mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
		    d->mem.memoryHeaps[h].size > heap)
			heap = d->mem.memoryHeaps[h].size;
	return heap;
}

static int64_t vk_memory(void *state)
{
	VkDeviceSize heap = local_heap(((struct kred__vk *)state)->dev);

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
	.run = vk_run,
	.module_free = vk_module_free,
	.source = vk_source,
	.report = vk_report,
	.memory = vk_memory,
	.device_count = vk_device_count,
	.run_ranged = vk_run_ranged,
};
