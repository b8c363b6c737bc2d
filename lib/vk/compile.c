/* GLSL to a Vulkan compute pipeline: the source for a device, SPIR-V from the disk cache
 * or from glslc run as a subprocess, and pipelines kept in memory per context. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vk.h"
#include "kernels/kred_kernels.h"

/*
 * Why glslc as a program rather than libshaderc: Debian 12's libshaderc.so.1 cannot even
 * be dlopen'ed (it lacks SPIRV-Tools symbols), and its static archives would bring a C++
 * runtime and ~20 MB into libkred. glslc is one package (glslc) and runs once per new
 * kernel, like the host backend's cc: the SPIR-V is then in the disk cache.
 *
 * The disk cache holds "<key>.spv" files, sealed and published by rename (lib/cache.h).
 * The key hashes kred's version, the device and its driver, the compiler's --version
 * text, its flags and the source, as the other backends' keys do. Mesa keeps its own
 * cache of the machine code made from SPIR-V (under ~/.cache/mesa_shader_cache unless
 * MESA_SHADER_CACHE_DIR says otherwise).
 */

/* -O: spirv-opt's inlining and scalar replacement give the drivers smaller modules. */
static const char *const glslc_flags[] = { "-fshader-stage=compute", "--target-env=vulkan1.1",
					   "-O" };
#define N_FLAGS (sizeof(glslc_flags) / sizeof(glslc_flags[0]))

const char *kred__vk_glslc(void)
{
	const char *g = getenv("KRED_GLSLC");

	return g && *g ? g : "glslc";
}

kred_status kred__vk_source(struct kred__vk *v, const struct kred_reduction *r,
			    const struct kred__layout *l, int push_dp, struct kred__vk_shape shape,
			    char **out, struct kred__error *err)
{
	const struct kred_dialect *d = shape.wide ? &kred__dialect_glsl_wide : &kred__dialect_glsl;
	struct kred__buf src = { 0 };
	char *body = NULL;
	kred_status s;

	*out = NULL;
	s = kred__emit_source(d, r, l, kred__kernel_tiled_comp, &body, err);
	if (s)
		return s;
	/* #version must come before anything but comments, then the backend's #defines,
	 * which the prelude's declarations (the push constants) read. */
	kred__buf_printf(&src, "#version 450\n#define KR_WG %d\n#define KR_T %d\n"
			 "#define KR_PUSH_DP %d\n#define KR_RPI %d\n#define KR_UNROLL %d\n"
			 "#define KR_WIDE %d\n",
			 KRED__VK_WG, KRED__VK_TILE, push_dp, shape.rpi, shape.unroll, shape.wide);
	kred__buf_puts(&src, body);
	kred__free(body);
	*out = kred__buf_take(&src);
	return *out ? KRED_OK : kred__fail(err, KRED_ENOMEM, -1, "out of memory");
}

static char *path_of(const char *dir, const char *key)
{
	struct kred__buf b = { 0 };

	kred__buf_printf(&b, "%s/%s.spv", dir, key);
	return kred__buf_take(&b);
}

/* The size of the seal lib/cache.c appends (magic, length, checksum, reserved). */
#define SEAL_BYTES 32

/* The SPIR-V words of a sealed file already checked by kred__cache_check: KRED_OK,
 * KRED_ENOMEM, or KRED_EIO when it cannot be read or is no SPIR-V. */
static kred_status read_spirv(const char *path, uint32_t **code, size_t *words)
{
	struct stat st;
	uint32_t *p = NULL;
	size_t n, got = 0;
	kred_status s = KRED_EIO;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*code = NULL;
	if (fd < 0)
		return KRED_EIO;
	if (fstat(fd, &st) != 0 || st.st_size < SEAL_BYTES + 20 ||
	    (st.st_size - SEAL_BYTES) % 4 != 0)
		goto fail;
	n = (size_t)st.st_size - SEAL_BYTES;
	p = kred__malloc(n);
	if (!p) {
		s = KRED_ENOMEM;
		goto fail;
	}
	while (got < n) {
		ssize_t k = read(fd, (char *)p + got, n - got);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			goto fail;
		got += (size_t)k;
	}
	if (p[0] != 0x07230203u) /* SPIR-V's magic number */
		goto fail;
	close(fd);
	*code = p;
	*words = n / 4;
	return KRED_OK;
fail:
	close(fd);
	kred__free(p);
	return s;
}

static char **glslc_argv(const void *arg, const char *out, const char *src, char **store)
{
	char **argv = kred__calloc(N_FLAGS + 5, sizeof(*argv));
	size_t n = 0;

	*store = NULL;
	if (!argv)
		return NULL;
	argv[n++] = (char *)arg;
	for (size_t k = 0; k < N_FLAGS; k++)
		argv[n++] = (char *)glslc_flags[k];
	argv[n++] = "-o";
	argv[n++] = (char *)out;
	argv[n++] = (char *)src;
	argv[n] = NULL;
	return argv;
}

/* Compiles src with glslc into a module sealed with identity and published at
 * <dir>/<key>.spv. */
static kred_status build(struct kred__vk *v, const char *key, uint64_t identity, const char *src,
			 char **path, struct kred__error *err)
{
	const struct kred__compile_job job = { "vulkan", "GLSL compiler", v->glslc, ".comp",
					       ".spv", glslc_argv, v->glslc };

	return kred__cache_compile(&v->cache, v->ctx, &job, key, identity, src, path, err);
}

static kred_status make_pipeline(struct kred__vk *v, const uint32_t *code, size_t words,
				 VkPipeline *out, struct kred__error *err)
{
	const struct kred__vk_api *a = v->api;
	VkShaderModuleCreateInfo mi = {
		.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
		.codeSize = words * 4,
		.pCode = code,
	};
	VkComputePipelineCreateInfo pi = {
		.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
		.stage = {
			.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
			.stage = VK_SHADER_STAGE_COMPUTE_BIT,
			.pName = "main",
		},
		.layout = v->layout,
	};
	VkShaderModule sm;
	VkResult res;
	double t0 = kred__now();

	res = a->CreateShaderModule(v->device, &mi, NULL, &sm);
	if (res != VK_SUCCESS)
		return kred__fail(err, res == VK_ERROR_OUT_OF_HOST_MEMORY ? KRED_ENOMEM : KRED_EBUILD,
				  -1, "vkCreateShaderModule failed: %s", kred__vk_result_name(res));
	pi.stage.module = sm;
	res = a->CreateComputePipelines(v->device, VK_NULL_HANDLE, 1, &pi, NULL, out);
	a->DestroyShaderModule(v->device, sm, NULL);
	if (res != VK_SUCCESS)
		return kred__fail(err, res == VK_ERROR_OUT_OF_HOST_MEMORY ? KRED_ENOMEM : KRED_EBUILD,
				  -1, "vkCreateComputePipelines failed: %s",
				  kred__vk_result_name(res));
	kred__log("vulkan: pipeline made in %.1f ms", 1e3 * (kred__now() - t0));
	return KRED_OK;
}

kred_status kred__vk_pipeline(struct kred__vk *v, const char *src, struct kred__vk_pipe **out,
			      struct kred__error *err)
{
	const struct kred__vk_device *d = v->dev;
	const char *version, *reason = NULL, *dir;
	struct kred__vk_pipe *pe;
	struct kred__hash h;
	uint64_t identity;
	uint32_t *code = NULL;
	size_t words = 0;
	char key[33], *path = NULL;
	kred_status s;

	*out = NULL;
	version = kred__compiler_version(v->glslc, &reason);
	if (!version)
		return kred__fail(err, !reason || !strcmp(reason, "out of memory") ? KRED_ENOMEM
									 : KRED_EBUILD,
				  -1, "the GLSL compiler '%s' is not usable: %s", v->glslc,
				  reason ? reason : "out of memory");
	kred__hash_init(&h);
	kred__hash_str(&h, kred_version());
	kred__hash_str(&h, "vulkan");
	kred__hash_add(&h, &d->props.vendorID, sizeof(d->props.vendorID));
	kred__hash_add(&h, &d->props.deviceID, sizeof(d->props.deviceID));
	kred__hash_add(&h, &d->props.driverVersion, sizeof(d->props.driverVersion));
	kred__hash_str(&h, d->props.deviceName);
	kred__hash_str(&h, d->driver_info);
	kred__hash_str(&h, v->glslc);
	kred__hash_str(&h, version);
	for (size_t k = 0; k < N_FLAGS; k++)
		kred__hash_str(&h, glslc_flags[k]);
	identity = kred__cache_identity(&h);
	kred__hash_str(&h, src);
	kred__hash_hex(&h, key);

	for (pe = v->pipes; pe; pe = pe->next) {
		if (!strcmp(pe->key, key)) {
			kred__log("vulkan: cache hit in memory: %s", key);
			*out = pe;
			return KRED_OK;
		}
	}
	pe = kred__calloc(1, sizeof(*pe));
	if (!pe)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	memcpy(pe->key, key, sizeof(pe->key));
	dir = kred__cache_read_dir(&v->cache);
	if (dir && *dir) {
		int state;

		path = path_of(dir, key);
		if (!path) {
			s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
			goto fail;
		}
		state = kred__cache_check(path, identity);
		if (state > 0 && read_spirv(path, &code, &words) == KRED_ENOMEM) {
			s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
			goto fail;
		}
		if (code)
			kred__log("vulkan: cache hit on disk: %s", path);
		else if (state != 0)
			kred__log("vulkan: %s is damaged: rebuilding", path);
		kred__free(path);
		path = NULL;
	}
	if (!code) {
		s = build(v, key, identity, src, &path, err);
		if (s)
			goto fail;
		s = read_spirv(path, &code, &words);
		if (s) {
			s = s == KRED_ENOMEM ? kred__fail(err, KRED_ENOMEM, -1, "out of memory")
					     : kred__fail(err, KRED_EBUILD, -1, "glslc wrote no "
							  "SPIR-V module to %s", path);
			goto fail;
		}
	}
	s = make_pipeline(v, code, words, &pe->pipeline, err);
	if (s)
		goto fail;
	kred__free(code);
	kred__free(path);
	pe->next = v->pipes;
	v->pipes = pe;
	*out = pe;
	return KRED_OK;
fail:
	kred__free(code);
	kred__free(path);
	kred__free(pe);
	return s;
}

void kred__vk_pipes_free(struct kred__vk *v)
{
	while (v->pipes) {
		struct kred__vk_pipe *pe = v->pipes;

		v->pipes = pe->next;
		v->api->DestroyPipeline(v->device, pe->pipeline, NULL);
		kred__free(pe);
	}
}
