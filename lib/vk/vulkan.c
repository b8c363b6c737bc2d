/* The Vulkan backend: a compute queue on one device ("vulkan:N"), reductions emitted as
 * GLSL (kernels/tiled.comp), and runs planned by the device layer (lib/device.c) over
 * the primitives of lib/vk/run.c, split into dispatches every driver completes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk.h"

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
 * many values (computed and held), on every device, the source takes the wide mode
 * (lib/vk/glsl.c: loops over memory, one row and one column at a time), whose compile
 * time does not grow with them; the vectors of a gram slot do not count: the template
 * loops over them in both modes. */
#define WIDE_MIN_VALUES 512


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
		return kred__vk_fail(err, res, "vkCreateDevice");
	a->GetDeviceQueue(v->device, d->queue_family, 0, &v->queue);
	res = a->CreateCommandPool(v->device, &pi, NULL, &v->pool);
	if (res != VK_SUCCESS)
		return kred__vk_fail(err, res, "vkCreateCommandPool");
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
		return kred__vk_fail(err, res, "vkCreateDescriptorSetLayout");
	v->push_size = d->props.limits.maxPushConstantsSize < MAX_PUSH
			       ? d->props.limits.maxPushConstantsSize & ~3u : MAX_PUSH;
	pr.size = v->push_size;
	res = a->CreatePipelineLayout(v->device, &pli, NULL, &v->layout);
	if (res != VK_SUCCESS)
		return kred__vk_fail(err, res, "vkCreatePipelineLayout");
	return KRED_OK;
}

static void vk_close(void *state)
{
	struct kred__vk *v = state;

	if (!v)
		return;
	if (v->device) {
		const struct kred__vk_api *a = v->api;

		kred__vk_run_free(v);
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

/* auto prefers GPUs: llvmpipe (lavapipe) is a CPU device, slower than the host backend. */
static int vk_is_gpu(void *state)
{
	VkPhysicalDeviceType t = ((struct kred__vk *)state)->dev->props.deviceType;

	return t == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU ||
	       t == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU;
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
	if (v->staging)
		kred__log("vulkan: %s: inputs and outputs go through host buffers and copies",
			  v->dev->props.deviceName);
	kred__vk_layer_make(v, ctx, vk_is_gpu(v));
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
static int formula_values(const struct kred_reduction *r, const struct kred__layout *l)
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
		/* a gram slot: its vectors are read in place, by the template's loops */
		if (kred__emit_gram_node(&kred__dialect_glsl, l, g->nodes[id]))
			continue;
		for (int k = 0; k < g->nodes[id]->nargs; k++)
			used[g->nodes[id]->arg[k]->id] = 1;
	}
	kred__free(used);
	return values;
}

static struct kred__vk_shape choose_shape(const struct kred_reduction *r,
					  const struct kred__layout *l, int nst)
{
	struct kred__vk_shape sh = { 4, 2, 0 };
	const char *env = getenv("KRED_VULKAN_SHAPE"), *wide = getenv("KRED_VULKAN_WIDE");
	int rpi, unroll, values = formula_values(r, l);

	if (values > WIDE_MIN_VALUES - nst || (wide && !strcmp(wide, "1"))) {
		sh.rpi = 1;
		sh.unroll = 1;
		sh.wide = 1;
	} else if (env && sscanf(env, "%dx%d", &rpi, &unroll) == 2 && rpi >= 1 && rpi <= 8 &&
		   unroll >= 1 && unroll <= 8) {
		sh.rpi = rpi;
		sh.unroll = unroll;
	} else if (nst > SHAPE_MAX_STATE || values > SHAPE_MAX_VALUES) {
		sh.rpi = 1;
		sh.unroll = 1;
	}
	return sh;
}

/* Columns one invocation may fold in one dispatch within llvmpipe's loop budget: the
 * unrolled loop takes one iteration per shape.unroll columns, the block-sum tiles one
 * per tile and their kr_init and kr_merge in each row, wide columns one per texel past 8,
 * and the emitter's own loops (lp, counted as it writes them) what they take in each of
 * the invocation's rows. With gram slots a column takes instead one iteration per value
 * the formula reads itself (and one per part of those) and, per slot, one per texel and
 * two loops over the rows. The loops over states, rows and parameters, kr_init and
 * kr_finalize run once per invocation and row. 0 when not even 8 columns fit. */
static int64_t pass_columns(const struct kred_reduction *r, const struct kred__layout *l,
			    int nst, struct kred__vk_shape shape, const struct kred__emit_loops *lp,
			    double *col_cost, double *interval_cost)
{
	int per_texel = r->dtype == KRED_FLOAT64 ? 2 : 4;
	int tpc = (l->width[KRED__SIDE_COL] + per_texel - 1) / per_texel;
	double rpi = shape.rpi;
	double tile = tile_merge(r) ? (1 + rpi * (2 + lp->init + lp->merge)) / KRED__VK_TILE : 0;
	int ng = lp->ngram;
	double fetch = ng ? (double)lp->read[KRED__SIDE_COL] + KRED__EMIT_MAX_GRAM
			  : (tpc > 8 ? tpc - 8 : 0);
	/* the row values an invocation copies: with gram slots, those the formula reads */
	double row_copy = ng ? (double)lp->read[KRED__SIDE_ROW] + KRED__EMIT_MAX_GRAM
			     : l->width[KRED__SIDE_ROW];
	double budget = LOOP_BUDGET - LOOP_MARGIN - l->width[KRED__SIDE_PRM] -
			rpi * (3.0 * nst + row_copy + r->out_dim + 2 + (double)lp->init +
			       (double)lp->finalize);
	double slots = 0, per;
	int64_t pass;

	/* each gram slot: its texels, and the two loops over the rows */
	for (int g = 0; g < ng; g++)
		slots += (lp->grams[g][2] + lp->grams[g][3] + per_texel - 1) / per_texel -
			 lp->grams[g][2] / per_texel + 2 * rpi;
	if (shape.wide) {
		/* The wide mode (rpi 1): nothing copied (the formula reads in place, its
		 * loops are lp's), one column per iteration, no tiles; the merge dispatch's
		 * loops are bounded apart (max_splits). Any pass of one column or more. */
		budget = LOOP_BUDGET - LOOP_MARGIN - (double)lp->init - (double)lp->finalize;
		per = 1 + (double)lp->update + slots;
		*col_cost = per;
		*interval_cost = 2;
		return budget >= per ? (int64_t)(budget / per) : 0;
	}
	per = 1.0 / shape.unroll + tile + rpi * (double)lp->update + fetch + slots;

	/* An interval of a block-sparse pass: its loop iteration, kr_fold's tail loop, and
	 * a block-sum tile of its own. */
	*col_cost = per;
	*interval_cost = 1 + shape.unroll + (tile_merge(r) ? tile * KRED__VK_TILE : 0);
	if (budget / per < 8)
		return 0;
	pass = (int64_t)(budget / per) & ~(int64_t)7;
	return pass < 8 ? 8 : pass;
}

/* The shape (choose_shape), the emitter's loops in it and the columns of a pass
 * (pass_columns, 0 when not even one fits). Where the unrolled shape cannot fit 8 columns
 * in llvmpipe's budget (a gram slot of 65,536 values), the wide mode, whose passes may
 * hold fewer. */
static kred_status plan(struct kred__vk *v, const struct kred_reduction *r,
			const struct kred__layout *l, int nst, struct kred__vk_shape *shape,
			struct kred__emit_loops *lp, int64_t *pass, double *col_cost,
			double *interval_cost, struct kred__error *err)
{
	*shape = choose_shape(r, l, nst);
	for (;;) {
		kred_status s = kred__emit_loops(shape->wide ? &kred__dialect_glsl_wide
							     : &kred__dialect_glsl,
						 r, l, lp, err);

		if (s)
			return s;
		*pass = pass_columns(r, l, nst, *shape, lp, col_cost, interval_cost);
		if (*pass || vk_is_gpu(v) || shape->wide)
			return KRED_OK;
		*shape = (struct kred__vk_shape){ 1, 1, 1 };
	}
}

/* The parameters go in the push constants when they fit (KR_PUSH_DP), else in a buffer. */
static int push_params(const struct kred__vk *v, const struct kred_reduction *r,
		       const struct kred__layout *l)
{
	int dbl = r->dtype == KRED_FLOAT64, dp = l->width[KRED__SIDE_PRM];

	return kred__vk_push_header(dbl) + (dbl ? 8 : 4) * dp <= (int)v->push_size ? dp : 0;
}

static kred_status vk_compile(void *state, struct kred_reduction *r, void **module,
			      struct kred__error *err)
{
	struct kred__vk *v = state;
	struct kred__vk_module *m;
	struct kred__emit_loops lp;
	char *src = NULL;
	int dbl = r->dtype == KRED_FLOAT64;
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
	m->dbl = dbl;
	m->out_dim = r->out_dim;
	m->d.nst = kred__emit_nstate(r);
	m->d.size = dbl ? 8 : 4;
	m->tpc = (m->d.l.width[KRED__SIDE_COL] + (dbl ? 1 : 3)) / (dbl ? 2 : 4);
	for (int k = 0; k < 3; k++)
		m->d.stride[k] = m->d.l.width[k];
	m->d.stride[KRED__SIDE_COL] = m->tpc * (dbl ? 2 : 4);
	s = plan(v, r, &m->d.l, m->d.nst, &m->shape, &lp, &m->pass, &m->col_cost,
		 &m->interval_cost, err);
	if (s)
		goto fail;
	if (!m->pass && !vk_is_gpu(v)) {
		s = kred__fail(err, KRED_EUNSUPPORTED, -1,
			       "%s: this formula's loops run %.0f iterations per column, and llvmpipe "
			       "ends a shader invocation's loops after %d, so that not even %s "
			       "fit in one dispatch; use the host or OpenCL backend",
			       v->dev->props.deviceName, m->col_cost, LOOP_BUDGET,
			       m->shape.wide ? "one column" : "8 columns");
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
	m->d.max_splits = (int)kred__vk_min64(256, (LOOP_BUDGET - LOOP_MARGIN) /
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
	struct kred__vk_shape shape;
	struct kred__emit_loops lp;
	int64_t pass;
	double col_cost, interval_cost;
	kred_status s = kred__layout_make(r, &l, err);

	if (s)
		return s;
	s = plan(v, r, &l, kred__emit_nstate(r), &shape, &lp, &pass, &col_cost, &interval_cost,
		 err);
	if (!s)
		s = kred__vk_source(v, r, &l, push_params(v, r, &l), shape, out, err);
	kred__layout_free(&l);
	return s;
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
	.run_ranged = kred__vk_run_ranged,
};
