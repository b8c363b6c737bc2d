/* The Vulkan backend's runs: its buffers, and the device layer's primitives over them
 * (lib/device.h), which record a run into one command buffer. */
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

int kred__vk_fail(struct kred__error *err, VkResult res, const char *what)
{
	kred_status s = res == VK_ERROR_OUT_OF_HOST_MEMORY ? KRED_ENOMEM : KRED_EDEVICE;

	return kred__fail(err, s, -1, "%s failed: %s%s", what, kred__vk_result_name(res),
			  res == VK_ERROR_OUT_OF_DEVICE_MEMORY ? " (the inputs do not fit in the "
								 "device's memory)" : "");
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
		return kred__vk_fail(err, res, "vkCreateBuffer");
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
		return kred__vk_fail(err, res, "vkAllocateMemory");
	res = a->BindBufferMemory(v->device, *buf, *mem, 0);
	if (res != VK_SUCCESS)
		return kred__vk_fail(err, res, "vkBindBufferMemory");
	if (map) {
		res = a->MapMemory(v->device, *mem, 0, VK_WHOLE_SIZE, 0, map);
		if (res != VK_SUCCESS)
			return kred__vk_fail(err, res, "vkMapMemory");
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
void kred__vk_run_free(struct kred__vk *v)
{
	if (v->cmd)
		v->api->FreeCommandBuffers(v->device, v->pool, 1, &v->cmd);
	v->cmd = NULL;
	recorded_free(v);
	kred__free(v->views);
	v->views = NULL;
	for (int k = 0; k < 2; k++)
		if (v->dummy_view[k])
			v->api->DestroyBufferView(v->device, v->dummy_view[k], NULL);
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
		return kred__vk_fail(err, res, "vkAllocateCommandBuffers");
	}
	res = a->BeginCommandBuffer(v->cmd, &bi);
	if (res != VK_SUCCESS) {
		a->FreeCommandBuffers(v->device, v->pool, 1, &v->cmd);
		v->cmd = NULL;
		return kred__vk_fail(err, res, "vkBeginCommandBuffer");
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
		s = kred__vk_fail(err, res, "vkEndCommandBuffer");
	if (!s && (res = a->CreateFence(v->device, &fi, NULL, &fence)) != VK_SUCCESS)
		s = kred__vk_fail(err, res, "vkCreateFence");
	si.pCommandBuffers = &v->cmd;
	if (!s && (res = a->QueueSubmit(v->queue, 1, &si, fence)) != VK_SUCCESS)
		s = kred__vk_fail(err, res, "vkQueueSubmit");
	if (!s && (res = a->WaitForFences(v->device, 1, &fence, VK_TRUE, UINT64_MAX)) != VK_SUCCESS)
		s = kred__vk_fail(err, res, "vkWaitForFences");
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
			return kred__vk_fail(err, res, "vkCreateDescriptorPool");
		}
		p->next = v->pools;
		v->pools = p;
	}
	ai.descriptorPool = v->pools->pool;
	res = a->AllocateDescriptorSets(v->device, &ai, set);
	if (res != VK_SUCCESS)
		return kred__vk_fail(err, res, "vkAllocateDescriptorSets");
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
		return kred__vk_fail(err, res, "vkCreateBufferView");
	v->views[v->n_views++] = *out;
	return KRED_OK;
}

/* The 16 bytes bound where a run has no such buffer, and their texel views (float and
 * uint texels: the columns of float32 and of float64 modules). */
static kred_status dummy_make(struct kred__vk *v, struct kred__error *err)
{
	VkBufferViewCreateInfo vi = {
		.sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
		.range = VK_WHOLE_SIZE,
	};

	if (!v->dummy) {
		struct kred__vk_mem *vm = kred__calloc(1, sizeof(*vm));
		kred_status s;

		if (!vm)
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		s = vbuf_make(v, 16, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
					     VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT,
			      HOST_NONE, &vm->b, err);
		if (s) {
			mem_free(v, vm);
			return s;
		}
		v->dummy = vm;
	}
	vi.buffer = v->dummy->b.buf;
	for (int k = 0; k < 2; k++) {
		VkResult res;

		if (v->dummy_view[k])
			continue;
		vi.format = k ? VK_FORMAT_R32G32B32A32_UINT : VK_FORMAT_R32G32B32A32_SFLOAT;
		res = v->api->CreateBufferView(v->device, &vi, NULL, &v->dummy_view[k]);
		if (res != VK_SUCCESS) {
			v->dummy_view[k] = VK_NULL_HANDLE;
			return kred__vk_fail(err, res, "vkCreateBufferView");
		}
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
static kred_status set_bind(struct kred__vk *v, const struct kred__vk_module *m,
			    const struct bind b[N_BINDINGS - 1], VkBufferView cols,
			    struct kred__error *err)
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
			w[k].pTexelBufferView = cols ? &cols : &v->dummy_view[m->dbl];
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
	pu->size = (uint32_t)(kred__vk_push_header(m->dbl) + dp * size);
	if (dp && prm)
		memcpy(pu->bytes + kred__vk_push_header(m->dbl), as_mem(prm)->host,
		       (size_t)(dp * size));
}

static void push_set(struct kred__vk *v, struct push *pu, int dbl,
		     const int32_t ints[PUSH_INTS], int64_t jbase)
{
	memcpy(pu->bytes, ints, 4 * PUSH_INTS);
	if (dbl) {
		double j = (double)jbase;

		memcpy(pu->bytes + kred__vk_push_header(1) - 8, &j, 8);
	} else {
		float j = (float)jbase;

		memcpy(pu->bytes + kred__vk_push_header(0) - 4, &j, 4);
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
		rb = kred__vk_min64(rb, range / (dr * size));
	rb = kred__vk_min64(rb, range / (split * nst * size));
	rb = kred__vk_min64(rb, range / (m->out_dim * size));
	/* The shader's indices are ints. */
	rb = kred__vk_min64(rb, INT32_MAX / (split * nst + dr + m->out_dim));
	/* A test hook, "ROWS,COLS": blocks that small, so that the block loops run on
	 * inputs a test can check. */
	if (hook && sscanf(hook, "%lld,%lld", &hook_rows, &hook_cols) == 2 && hook_rows > 0)
		rb = kred__vk_min64(rb, hook_rows);
	if (rb < rows)
		rb &= ~(int64_t)255;
	if (rb < 256 && rb < rows)
		return kred__fail(err, KRED_EUNSUPPORTED, -1,
				  "the reduction's state (%d values) does not fit the device's "
				  "storage buffer limits", m->d.nst);
	p->rb = rows > 0 ? kred__vk_min64(rb, rows) : 1;
	p->nrb = rows > 0 ? kred__vk_ceil_div(rows, p->rb) : 0;
	/* Column blocks: what one texel view reaches, with room for int32 indices, 16
	 * columns at a time (256 bytes or more: any texel offset alignment). */
	p->cb = (int64_t)1 << 30;
	if (m->tpc) {
		p->cb = kred__vk_min64(p->cb, (int64_t)lim->maxTexelBufferElements / m->tpc);
		p->cb = kred__vk_min64(p->cb, INT32_MAX / m->tpc);
	}
	if (hook_cols > 0)
		p->cb = kred__vk_min64(p->cb, hook_cols);
	if (p->cb < cols)
		p->cb &= ~(int64_t)15;
	if (p->cb < 16 && p->cb < cols)
		return kred__fail(err, KRED_EUNSUPPORTED, -1,
				  "a column of %d values does not fit the device's texel buffers",
				  m->d.l.width[KRED__SIDE_COL]);
	p->cb = cols > 0 ? kred__vk_min64(p->cb, cols) : 1;
	p->ncb = cols > 0 ? kred__vk_ceil_div(cols, p->cb) : 1;
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
	if (!m->shape.wide)
		*count &= ~(int64_t)7;
	/* A test hook: passes of that many columns, so that intervals cross passes. */
	if (hook && atoll(hook) > 0 && atoll(hook) < *count)
		*count = atoll(hook);
	/* (the wide mode's columns are long: any count will do) */
	if (*count < (hook || m->shape.wide ? 1 : 64))
		*count = 0;
	*passes = *count > 0 && most_cols > 0 ? kred__vk_ceil_div(most_cols, *count) : 1;
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
	s = states_of(v, m, 0, nr, passes > 1 || m->shape.wide, &states, err);
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

		s = set_bind(v, m, b, cols, err);
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
	int stateful;
	kred_status s = blocks_make(v, m, nr, nc, split, &p, err);

	if (s)
		return s;
	/* the states go from dispatch to dispatch when there are ranges, column blocks or
	 * passes; the wide mode keeps them there all along */
	stateful = m->shape.wide || split > 1 || p.ncb > 1 ||
		   kred__vk_ceil_div(kred__vk_ceil_div(p.cb, split), m->pass) > 1;
	s = states_of(v, m, a[A_PARTS].v.mem, nr, stateful, &states, err);
	for (int64_t cb = 0; !s && cb < p.ncb; cb++) {
		int64_t c0 = cb * p.cb, ncb = nc > 0 ? kred__vk_min64(p.cb, nc - c0) : 0;
		int64_t span = kred__vk_ceil_div(ncb, split);
		int64_t passes = span > 0 ? kred__vk_ceil_div(span, m->pass) : 1;
		VkBufferView cols = VK_NULL_HANDLE;

		if (a[A_COL].v.mem && ncb > 0)
			s = view_make(v, m, as_mem(a[A_COL].v.mem)->b.buf,
				      (VkDeviceSize)(c0 * m->tpc * 16),
				      (VkDeviceSize)(ncb * m->tpc * 16), &cols, err);
		for (int64_t rb = 0; !s && rb < p.nrb; rb++) {
			int64_t r0 = rb * p.rb, nb = kred__vk_min64(p.rb, nr - r0);
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
			uint32_t gx = (uint32_t)kred__vk_ceil_div(nb, KRED__VK_WG * m->shape.rpi);

			s = set_bind(v, m, b, cols, err);
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
		int64_t r0 = rb * p.rb, nb = kred__vk_min64(p.rb, nr - r0);
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
		uint32_t gx;

		s = set_bind(v, m, b, VK_NULL_HANDLE, err);
		if (s)
			break;
		push_set(v, pu, m->dbl, ints, 0);
		gx = (uint32_t)kred__vk_ceil_div(nb, KRED__VK_WG * m->shape.rpi);
		v->api->CmdDispatch(v->cmd, gx, 1, 1);
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
void kred__vk_layer_make(struct kred__vk *v, const kred_context *ctx, int is_gpu)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	v->layer = (struct kred__device){
		.ops = &vk_ops,
		.state = v,
		.name = "vulkan",
		.dialect = &kred__dialect_glsl,
		.module_size = sizeof(struct kred__vk_module),
		.scheme = ctx ? ctx->opt.scheme : KRED_SCHEME_AUTO,
		.target_groups = is_gpu ? 2048 : 4 * (cores > 0 ? cores : 1),
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
kred_status kred__vk_run_ranged(void *state, void *module, const struct kred_reduction *r,
				 int64_t nx, int64_t ny, const void *const *args, void *out,
				 const struct kred__ranges *g, struct kred__error *err)
{
	struct kred__vk *v = state;
	const struct kred__vk_module *m = module;
	int64_t rows = r->axis == KRED_REDUCE_J ? nx : ny;
	int64_t cols = r->axis == KRED_REDUCE_J ? ny : nx;
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

