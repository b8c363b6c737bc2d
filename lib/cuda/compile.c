/* NVRTC for the CUDA backend: kernel sources compiled into cubins (or PTX), the choice of
 * the architecture, and a disk cache of the results keyed by everything they depend on. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compile.h"
#include "device.h"

int kred__cu_arch_parse(const char *s)
{
	const char *d = s;
	long v;
	char *end;

	if (!s)
		return -1;
	if (!strncmp(s, "sm_", 3))
		d = s + 3;
	else if (!strncmp(s, "compute_", 8))
		d = s + 8;
	if (*d < '1' || *d > '9')
		return -1;
	v = strtol(d, &end, 10);
	if (*end || v < 10 || v > 999)
		return -1;
	return (int)v;
}

int kred__nvrtc_knows(const struct kred__nvrtc_api *nv, int arch)
{
	for (int k = 0; k < nv->n_archs; k++)
		if (nv->archs[k] == arch)
			return 1;
	return 0;
}

void kred__nvrtc_archs(const struct kred__nvrtc_api *nv, char *out, size_t len)
{
	snprintf(out, len, "sm_%d to sm_%d", nv->archs[0], nv->archs[nv->n_archs - 1]);
}

kred_status kred__cu_device_target(const struct kred__nvrtc_api *nv, int arch,
				   struct kred__cu_target *t, struct kred__error *err)
{
	char archs[64];

	t->arch = -1;
	t->cubin = 0;
	if (kred__nvrtc_knows(nv, arch)) {
		t->arch = arch;
		t->cubin = 1;
		return KRED_OK;
	}
	/* Newer than this NVRTC: PTX of the newest architecture it knows below the GPU's,
	 * which the driver compiles for the GPU (PTX runs on every later GPU). */
	for (int k = 0; k < nv->n_archs; k++)
		if (nv->archs[k] < arch)
			t->arch = nv->archs[k];
	if (t->arch > 0)
		return KRED_OK;
	kred__nvrtc_archs(nv, archs, sizeof(archs));
	return kred__fail(err, KRED_EBACKEND, -1, "NVRTC %d.%d (%s) compiles for %s, not for this "
			  "GPU's sm_%d: set KRED_NVRTC_LIBRARY to the libnvrtc of an older CUDA "
			  "toolkit", nv->major, nv->minor, nv->path, archs, arch);
}

/* $KRED_CUDA_OPTIONS, split at spaces into opts (at most max - 1); *store owns them. */
static int split_options(char **store, const char **opts, int max)
{
	const char *env = getenv("KRED_CUDA_OPTIONS");
	int n = 0;

	*store = NULL;
	if (!env || !*env)
		return 0;
	*store = kred__strdup(env);
	if (!*store)
		return -1;
	for (char *w = strtok(*store, " \t"); w && n < max - 1; w = strtok(NULL, " \t"))
		opts[n++] = w;
	return n;
}

static char *nvrtc_log(const struct kred__nvrtc_api *nv, nvrtcProgram prog)
{
	size_t n = 0;
	char *log;

	if (nv->GetProgramLogSize(prog, &n) != NVRTC_SUCCESS)
		return NULL;
	log = kred__malloc(n + 1);
	if (!log)
		return NULL;
	if (nv->GetProgramLog(prog, log) != NVRTC_SUCCESS)
		n = 0;
	log[n] = 0;
	return log;
}

static kred_status nvrtc_fail(const struct kred__nvrtc_api *nv, struct kred__error *err,
			      const char *what, nvrtcResult e)
{
	return kred__fail(err, KRED_EBUILD, -1, "NVRTC: %s: %s (%d)", what, nv->GetErrorString(e),
			  (int)e);
}

/* NVRTC itself: src to a cubin or PTX. */
static kred_status build(const struct kred__nvrtc_api *nv, kred_context *ctx, const char *src,
			 const struct kred__cu_target *t, char **image, size_t *len,
			 struct kred__error *err)
{
	const char *opts[32];
	char arch[32], *store = NULL, *log = NULL;
	nvrtcProgram prog = NULL;
	double t0 = kred__now();
	int n;
	nvrtcResult e;
	kred_status s = KRED_OK;

	*image = NULL;
	snprintf(arch, sizeof(arch), "-arch=%s_%d", t->cubin ? "sm" : "compute", t->arch);
	opts[0] = arch;
	n = split_options(&store, opts + 1, 30);
	if (n < 0)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	if (kred__tiled_fast_math(src))
		opts[1 + n++] = "--use_fast_math";
	e = nv->CreateProgram(&prog, src, "kred.cu", 0, NULL, NULL);
	if (e != NVRTC_SUCCESS) {
		s = nvrtc_fail(nv, err, "nvrtcCreateProgram", e);
		prog = NULL;
		goto done;
	}
	e = nv->CompileProgram(prog, n + 1, opts);
	if (e != NVRTC_SUCCESS) {
		log = nvrtc_log(nv, prog);
		if (ctx)
			kred__ctx_set_log(ctx, log ? log : "");
		if (e == NVRTC_ERROR_COMPILATION)
			s = kred__fail(err, KRED_EBUILD, -1, "NVRTC %d.%d failed to compile the "
				       "kernel for %s_%d (see the build log)", nv->major, nv->minor,
				       t->cubin ? "sm" : "compute", t->arch);
		else
			s = nvrtc_fail(nv, err, "nvrtcCompileProgram", e);
		goto done;
	}
	e = t->cubin ? nv->GetCUBINSize(prog, len) : nv->GetPTXSize(prog, len);
	if (e != NVRTC_SUCCESS) {
		s = nvrtc_fail(nv, err, t->cubin ? "nvrtcGetCUBINSize" : "nvrtcGetPTXSize", e);
		goto done;
	}
	*image = kred__malloc(*len + 1);
	if (!*image) {
		s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto done;
	}
	e = t->cubin ? nv->GetCUBIN(prog, *image) : nv->GetPTX(prog, *image);
	if (e != NVRTC_SUCCESS) {
		s = nvrtc_fail(nv, err, t->cubin ? "nvrtcGetCUBIN" : "nvrtcGetPTX", e);
		goto done;
	}
	(*image)[*len] = 0;
	kred__log("cuda: NVRTC %d.%d compiled %s in %.3f s", nv->major, nv->minor, arch + 6,
		  kred__now() - t0);
done:
	if (s) {
		kred__free(*image);
		*image = NULL;
	}
	if (prog)
		nv->DestroyProgram(&prog);
	kred__free(log);
	kred__free(store);
	return s;
}

/* The key of an image, and in *identity what it was built by and for (the sealed
 * identity: kred, the target, the driver, NVRTC and its options). */
static void cache_key(const struct kred__nvrtc_api *nv, int driver_version, const char *src,
		      const struct kred__cu_target *t, char key[33], uint64_t *identity)
{
	const char *env = getenv("KRED_CUDA_OPTIONS");
	struct kred__hash h;
	char ver[64];

	kred__hash_init(&h);
	kred__hash_str(&h, kred_version());
	kred__hash_str(&h, "cuda");
	snprintf(ver, sizeof(ver), "%s_%d driver %d nvrtc %d.%d", t->cubin ? "sm" : "compute",
		 t->arch, driver_version, nv->major, nv->minor);
	kred__hash_str(&h, ver);
	kred__hash_str(&h, env ? env : "");
	*identity = kred__cache_identity(&h);
	kred__hash_str(&h, src);
	kred__hash_hex(&h, key);
}

static char *image_path(const char *dir, const char *key, int cubin)
{
	struct kred__buf b = { 0 };

	kred__buf_printf(&b, "%s/%s.%s", dir, key, cubin ? "cubin" : "ptx");
	return kred__buf_take(&b);
}

/* The image of a sealed cache file, without its seal and with a NUL after it; NULL when
 * the file is missing or damaged. */
static char *cache_read(const char *path, uint64_t identity, size_t *len)
{
	FILE *f;
	char *p = NULL;
	long n;

	if (kred__cache_check(path, identity) <= 0)
		return NULL;
	f = fopen(path, "rb");
	if (!f)
		return NULL;
	/* The seal (lib/cache.c) is 32 bytes at the end. */
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 32 && fseek(f, 0, SEEK_SET) == 0) {
		p = kred__malloc((size_t)n + 1);
		if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
			kred__free(p);
			p = NULL;
		}
		if (p) {
			*len = (size_t)n - 32;
			p[*len] = 0;
		}
	}
	fclose(f);
	return p;
}

/* Stores an image; a failure only costs a compile next time. */
static void cache_write(struct kred__cache *cache, const char *key, uint64_t identity, int cubin,
			const char *image, size_t len)
{
	char *path = kred__cache_store(cache, key, cubin ? ".cubin" : ".ptx", image, len,
				       identity);

	if (path)
		kred__log("cuda: cached %s", path);
	kred__free(path);
}

kred_status kred__cu_compile(const struct kred__nvrtc_api *nv, kred_context *ctx,
			     struct kred__cache *cache, int lookup, int driver_version,
			     const char *src, const struct kred__cu_target *t, char **image,
			     size_t *len, int *hit, struct kred__error *err)
{
	const char *dir = cache ? kred__cache_read_dir(cache) : NULL;
	uint64_t identity = 0;
	char key[33];
	kred_status s;

	*image = NULL;
	*hit = 0;
	if (cache) {
		cache_key(nv, driver_version, src, t, key, &identity);
		if (lookup && dir && *dir) {
			char *path = image_path(dir, key, t->cubin);

			if (!path)
				return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
			*image = cache_read(path, identity, len);
			if (*image)
				kred__log("cuda: cache hit on disk: %s", path);
			kred__free(path);
			if (*image) {
				*hit = 1;
				return KRED_OK;
			}
		}
	}
	s = build(nv, ctx, src, t, image, len, err);
	if (!s && cache)
		cache_write(cache, key, identity, t->cubin, *image, *len);
	return s;
}
