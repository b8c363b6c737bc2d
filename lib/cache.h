/* The compiled-kernel cache shared by the backends: cache keys, the machine's identity,
 * the cache directory and its private fallback, sealed files, and running a compiler. */
#ifndef KRED_CACHE_H
#define KRED_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* Whether KRED_VERBOSE asks for compile commands, cache hits and timings. */
int kred__verbose(void);
/* One line "kred: ...\n" on stderr when verbose; nothing otherwise. */
void kred__log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Monotonic seconds, for timings. */
double kred__now(void);

/* A 128-bit hash for cache keys. Each add is framed by its length, so that ("ab", "c")
 * and ("a", "bc") differ. */
struct kred__hash {
	uint64_t a, b;
};
void kred__hash_init(struct kred__hash *h);
void kred__hash_add(struct kred__hash *h, const void *p, size_t n);
void kred__hash_str(struct kred__hash *h, const char *s);
/* 32 lowercase hex digits and a NUL. */
void kred__hash_hex(const struct kred__hash *h, char out[33]);

/* What a module built with -march=native depends on: the CPU's model and feature flags
 * (from /proc/cpuinfo) and the machine type. Computed once per process; static. */
const char *kred__cpu_id(void);
/* The CPU's model name for messages ("Intel(R) Xeon(R) ..."), or the machine type. */
const char *kred__cpu_name(void);

/* Runs argv (argv[0] looked up in PATH) with stdin from /dev/null and stdout and stderr
 * gathered into *output (the caller's, kred__free; may be NULL on ENOMEM). Returns the
 * exit status, or -1 when it could not run (then *output says why). */
int kred__spawn(char *const argv[], char **output);

/* The output of "CC --version" (cc is split at spaces, as KRED_CC), computed once per
 * process and compiler; NULL when it cannot run (why in *reason, static or NULL).
 * The string lives until the process exits. */
const char *kred__compiler_version(const char *cc, const char **reason);
/* The file the compiler command's first word runs (looked up in PATH, links resolved),
 * or "" when it cannot be found; computed with the version. */
const char *kred__compiler_path(const char *cc);

/*
 * A writable cache directory: the wanted one (created if missing), else a private
 * temporary one made on first need and removed by kred__cache_close. The fallback prints
 * one warning line under KRED_VERBOSE, once per cache.
 */
struct kred__cache {
	const char *wanted;  /* not owned: the context's cache_dir ("" for none) */
	char *private_dir;   /* mkdtemp'ed, or NULL */
	int wanted_failed;   /* the wanted directory cannot be written */
};
/* The directory reads should look in first: the wanted one, or the private one once the
 * wanted one failed. */
const char *kred__cache_read_dir(const struct kred__cache *c);
/* Creates a new empty file "<dir>/<stem>.tmp.XXXXXX<suffix>" in a writable directory
 * (falling back as above) and returns its path (caller frees) and that directory (owned
 * by c). KRED_EIO with the reason when no directory can be written. */
kred_status kred__cache_tmpfile(struct kred__cache *c, const char *stem, const char *suffix,
				char **path, const char **dir, struct kred__error *err);
void kred__cache_close(struct kred__cache *c);
/* Writes text into path, a file of kred__cache_tmpfile in dir: 0, or -1 with errno. */
int kred__cache_write_text(const struct kred__cache *c, const char *dir, const char *path,
			   const char *text);
/* After a write into dir failed with errno e (or a compiler's log says so): when dir is
 * the wanted directory and e says it is full (ENOSPC, EDQUOT, EFBIG), the cache gives it
 * up for the private one, says why under KRED_VERBOSE, and returns 1: the caller makes
 * its files again (kred__cache_tmpfile now gives private ones). Else 0. */
int kred__cache_full(struct kred__cache *c, const char *dir, int e);
/* Whether a compiler's output says that it ran out of room to write. */
int kred__log_says_full(const char *log);
/* Test hook: while on, writes through kred__cache_write_text into a wanted directory fail
 * with ENOSPC, as on a full file system. */
KRED_API void kred__test_cache_no_space(int on);

/* The identity of what a cache entry was built by and for: everything its key hashes
 * but the source (kred's version, the backend, the CPU or device and driver, the
 * compiler's path, version and flags). A backend hashes these into a kred__hash, keeps
 * kred__cache_identity of it, then adds the source to make the key. */
uint64_t kred__cache_identity(const struct kred__hash *h);

/* Sealed files: a footer (magic, length, checksum of the contents, identity) appended
 * after the contents, so that a truncated or overwritten file is recognised, and so is
 * one built by another kred, compiler, CPU or driver (copied in, or a key collision).
 * ELF loaders ignore trailing bytes. */
kred_status kred__cache_seal(const char *path, uint64_t identity, struct kred__error *err);
/* 1 when path exists, its footer matches its contents and its identity is identity (0:
 * any identity, for tests that check a file is whole), 0 when it does not exist, -1 when
 * it exists but is damaged or foreign. A valid entry's time stamp is refreshed: the size
 * bound below evicts the least recently used. */
int kred__cache_check(const char *path, uint64_t identity);
/* rename(tmp, final): atomic, so readers see the old file or the whole new one. Then the
 * directory is trimmed to its size bound (kred__cache_trim). */
kred_status kred__cache_publish(const char *tmp, const char *final, struct kred__error *err);
/* Stores len bytes of data as the sealed entry "<dir>/<key><suffix>" of c, written to a
 * temporary file and published: the entry's path (caller frees), or NULL when it could not
 * be stored (a failure only costs a rebuild next time). */
char *kred__cache_store(struct kred__cache *c, const char *key, const char *suffix,
			const void *data, size_t len, uint64_t identity);
/* A compiler that turns a source into a cache entry (the host's C compiler, glslc). */
struct kred__compile_job {
	const char *who;		     /* in logs: "host", "vulkan" */
	const char *tool;		     /* in messages: "host compiler" */
	const char *cmd;		     /* its command, in messages */
	const char *src_suffix, *out_suffix; /* ".c", ".so" */
	/* Its argument list (NULL-terminated) to compile src into out; what it allocates
	 * is *store, freed with the list by the caller. NULL: out of memory. */
	char **(*argv)(const void *arg, const char *out, const char *src, char **store);
	const void *arg;
};
/* Writes src to a temporary file, runs the job's compiler on it into a temporary file of
 * the cache directory, seals that with identity and publishes it as
 * "<dir>/<key><out_suffix>" (*path, caller frees); when the directory turns out to be
 * full, once more in the private one (kred__cache_full). A failing compiler:
 * KRED_EBUILD, with its output as ctx's build log. */
kred_status kred__cache_compile(struct kred__cache *c, kred_context *ctx,
				const struct kred__compile_job *job, const char *key,
				uint64_t identity, const char *src, char **path,
				struct kred__error *err);
/* Bounds the entries of dir (its regular files, but those being written: ".tmp." in their
 * name) to $KRED_CACHE_MAX bytes (default 1 GiB; K, M and G suffixes), removing the least
 * recently used first, down to 90% of the bound; keep (may be NULL) is never removed.
 * Safe while other processes read: a file removed under a reader stays whole for it (an
 * open or mapped file lives on), and a reader that finds it gone builds it again. */
void kred__cache_trim(const char *dir, const char *keep);

#endif /* KRED_CACHE_H */
