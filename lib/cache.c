/* The compiled-kernel cache shared by the backends: cache keys, the machine's identity,
 * the cache directory and its private fallback, sealed files, and running a compiler. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"

extern char **environ;

int kred__verbose(void)
{
	const char *v = getenv("KRED_VERBOSE");

	return v && *v && strcmp(v, "0") != 0;
}

void kred__log(const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (!kred__verbose())
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One write per line, so that lines of concurrent processes do not mix. */
	fprintf(stderr, "kred: %s\n", line);
}

double kred__now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- hashing: two 64-bit FNV-1a lanes with different primes, mixed at the end. */

void kred__hash_init(struct kred__hash *h)
{
	h->a = 0xcbf29ce484222325ULL;
	h->b = 0x84222325cbf29ce4ULL;
}

static void hash_bytes(struct kred__hash *h, const unsigned char *p, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		h->a = (h->a ^ p[k]) * 0x100000001b3ULL;
		h->b = (h->b ^ p[k]) * 0x9e3779b97f4a7c15ULL;
	}
}

void kred__hash_add(struct kred__hash *h, const void *p, size_t n)
{
	uint64_t len = n;

	hash_bytes(h, (const unsigned char *)&len, sizeof(len));
	hash_bytes(h, p, n);
}

void kred__hash_str(struct kred__hash *h, const char *s)
{
	kred__hash_add(h, s ? s : "", s ? strlen(s) : 0);
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

void kred__hash_hex(const struct kred__hash *h, char out[33])
{
	snprintf(out, 33, "%016llx%016llx", (unsigned long long)mix64(h->a ^ mix64(h->b)),
		 (unsigned long long)mix64(h->b + 0x9e3779b97f4a7c15ULL * h->a));
}

/* ---- the machine */

static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static char cpu_id[8192];
static char cpu_name[256];

/* The value of "key : value" if line starts with key, else NULL. */
static const char *field(const char *line, const char *key)
{
	size_t n = strlen(key);
	const char *c;

	if (strncmp(line, key, n) != 0 || (line[n] != ' ' && line[n] != '\t' && line[n] != ':'))
		return NULL;
	c = strchr(line + n, ':');
	if (!c)
		return NULL;
	c++;
	while (*c == ' ' || *c == '\t')
		c++;
	return c;
}

static void read_cpu(void)
{
	static const char *const keys[] = { "vendor_id", "model name", "flags", "CPU implementer",
					    "CPU part", "Features", "isa", "uarch" };
	struct utsname u;
	size_t len = 0;
	char line[4096];
	unsigned seen = 0;
	FILE *f;

	if (uname(&u) == 0) {
		snprintf(cpu_id, sizeof(cpu_id), "machine=%s\n", u.machine);
		snprintf(cpu_name, sizeof(cpu_name), "%s", u.machine);
		len = strlen(cpu_id);
	}
	f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return;
	/* The first processor's block says it all: a module is built for this machine. */
	while (fgets(line, sizeof(line), f) && line[0] != '\n') {
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
			const char *v = field(line, keys[k]);

			if (!v || (seen & (1u << k)))
				continue;
			seen |= 1u << k;
			snprintf(cpu_id + len, sizeof(cpu_id) - len, "%s=%s", keys[k], v);
			len += strlen(cpu_id + len);
			if (k == 1) {
				snprintf(cpu_name, sizeof(cpu_name), "%s", v);
				cpu_name[strcspn(cpu_name, "\n")] = 0;
			}
		}
	}
	fclose(f);
}

const char *kred__cpu_id(void)
{
	pthread_once(&cpu_once, read_cpu);
	return cpu_id;
}

const char *kred__cpu_name(void)
{
	pthread_once(&cpu_once, read_cpu);
	return cpu_name[0] ? cpu_name : "unknown CPU";
}

/* ---- running a program */

int kred__spawn(char *const argv[], char **output)
{
	posix_spawn_file_actions_t fa;
	struct kred__buf b = { 0 };
	int fd[2], status, rc;
	char chunk[4096];
	pid_t pid;
	ssize_t n;

	*output = NULL;
	/* Close-on-exec: a compiler spawned meanwhile by another thread must not hold our
	 * pipe open (we would wait for its end too). The child's dup2 clears the flag.
	 * (pipe2 would close the small window left here, but is not POSIX.) */
	if (pipe(fd) != 0) {
		*output = kred__strdup(strerror(errno));
		return -1;
	}
	fcntl(fd[0], F_SETFD, FD_CLOEXEC);
	fcntl(fd[1], F_SETFD, FD_CLOEXEC);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, fd[1], 2);
	posix_spawn_file_actions_addclose(&fa, fd[0]);
	posix_spawn_file_actions_addclose(&fa, fd[1]);
	rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(fd[1]);
	if (rc != 0) {
		close(fd[0]);
		kred__buf_printf(&b, "cannot run '%s': %s", argv[0], strerror(rc));
		*output = kred__buf_take(&b);
		return -1;
	}
	/* Read to the end before waiting: a chatty compiler would block on a full pipe. */
	for (;;) {
		n = read(fd[0], chunk, sizeof(chunk) - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		chunk[n] = 0;
		kred__buf_printf(&b, "%.*s", (int)n, chunk);
	}
	close(fd[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			status = -1;
			break;
		}
	*output = kred__buf_take(&b);
	if (status == -1)
		return -1;
	if (WIFEXITED(status)) {
		/* posix_spawnp reports a missing program this way with some libcs. */
		return WEXITSTATUS(status) == 127 ? -1 : WEXITSTATUS(status);
	}
	return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Splits s at blanks into a NULL-terminated argv with room for `extra` more entries;
 * the strings live in *store. */
static char **split_words(const char *s, int extra, char **store)
{
	size_t n = strlen(s);
	int count = 0;
	char **argv;
	char *w, *save = NULL;

	*store = kred__strdup(s);
	argv = kred__calloc(n / 2 + 2 + (size_t)extra, sizeof(*argv));
	if (!*store || !argv) {
		kred__free(*store);
		kred__free(argv);
		*store = NULL;
		return NULL;
	}
	for (w = strtok_r(*store, " \t", &save); w; w = strtok_r(NULL, " \t", &save))
		argv[count++] = w;
	return argv;
}

/* The compilers seen by this process; a handful at most. Never freed: their strings are
 * handed out for the life of the process. */
struct compiler {
	char *cc, *version, *path;
	const char *reason;
	struct compiler *next;
};
static pthread_mutex_t compilers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct compiler *compilers;

/* realpath() of the program name as execvp would find it, or NULL. */
static char *resolve(const char *name)
{
	const char *path = getenv("PATH");
	struct kred__buf b = { 0 };
	char *found = NULL;

	if (strchr(name, '/'))
		return realpath(name, NULL);
	for (const char *dir = path ? path : "/usr/bin:/bin"; !found; dir++) {
		size_t n = strcspn(dir, ":");
		char *cand;

		kred__buf_printf(&b, "%.*s/%s", (int)n, n ? dir : ".", name);
		cand = kred__buf_take(&b);
		if (cand && access(cand, X_OK) == 0)
			found = realpath(cand, NULL);
		kred__free(cand);
		dir += n;
		if (!*dir)
			break;
	}
	return found;
}

const char *kred__compiler_path(const char *cc)
{
	const char *reason, *path = "";

	if (kred__compiler_version(cc, &reason)) {
		struct compiler *c;

		pthread_mutex_lock(&compilers_lock);
		for (c = compilers; c; c = c->next)
			if (strcmp(c->cc, cc) == 0 && c->path)
				path = c->path;
		pthread_mutex_unlock(&compilers_lock);
	}
	return path;
}

const char *kred__compiler_version(const char *cc, const char **reason)
{
	struct compiler *c;
	char **argv, *store, *out = NULL;
	int rc, n = 0;

	pthread_mutex_lock(&compilers_lock);
	for (c = compilers; c; c = c->next)
		if (strcmp(c->cc, cc) == 0)
			goto done;
	c = kred__calloc(1, sizeof(*c));
	argv = split_words(cc, 1, &store);
	if (!c || !argv || !(c->cc = kred__strdup(cc))) {
		kred__free(c);
		kred__free(argv);
		kred__free(store);
		pthread_mutex_unlock(&compilers_lock);
		*reason = "out of memory";
		return NULL;
	}
	while (argv[n])
		n++;
	if (n == 0) {
		c->reason = "the compiler command is empty";
	} else {
		char *real = resolve(argv[0]);

		/* realpath's memory is malloc's: copied into ours */
		c->path = real ? kred__strdup(real) : NULL;
		free(real);
		argv[n] = "--version";
		rc = kred__spawn(argv, &out);
		if (rc != 0)
			c->reason = rc < 0 ? "it cannot be run" : "'--version' failed";
		else
			c->version = out;
		if (rc != 0)
			kred__free(out);
	}
	kred__free(argv);
	kred__free(store);
	c->next = compilers;
	compilers = c;
done:
	pthread_mutex_unlock(&compilers_lock);
	*reason = c->reason;
	return c->version;
}

/* ---- the cache directory */

/* mkdir -p, mode 0777 less the umask. */
static int make_dirs(const char *path)
{
	char *p = kred__strdup(path);
	int rc = 0;

	if (!p) {
		errno = ENOMEM;
		return -1;
	}
	for (char *c = p + 1; *c && rc == 0; c++) {
		if (*c != '/')
			continue;
		*c = 0;
		if (mkdir(p, 0777) != 0 && errno != EEXIST)
			rc = -1;
		*c = '/';
	}
	if (rc == 0 && mkdir(p, 0777) != 0 && errno != EEXIST)
		rc = -1;
	kred__free(p);
	return rc;
}

const char *kred__cache_read_dir(const struct kred__cache *c)
{
	if (c->wanted_failed || !c->wanted || !*c->wanted)
		return c->private_dir;
	return c->wanted;
}

/* A new empty file from template dir/stem.tmp.XXXXXX + suffix; NULL with errno set. */
static char *new_tmp(const char *dir, const char *stem, const char *suffix)
{
	struct kred__buf b = { 0 };
	char *path;
	int fd;

	kred__buf_printf(&b, "%s/%s.tmp.XXXXXX%s", dir, stem, suffix);
	path = kred__buf_take(&b);
	if (!path) {
		errno = ENOMEM;
		return NULL;
	}
	fd = mkstemps(path, (int)strlen(suffix));
	if (fd < 0) {
		int e = errno;

		kred__free(path);
		errno = e;
		return NULL;
	}
	close(fd);
	return path;
}

static const char *tmp_root(void)
{
	const char *t = getenv("TMPDIR");

	return t && *t ? t : "/tmp";
}

kred_status kred__cache_tmpfile(struct kred__cache *c, const char *stem, const char *suffix,
				char **path, const char **dir, struct kred__error *err)
{
	int why = 0;

	*path = NULL;
	if (!c->wanted_failed && c->wanted && *c->wanted) {
		if (make_dirs(c->wanted) == 0)
			*path = new_tmp(c->wanted, stem, suffix);
		if (*path) {
			*dir = c->wanted;
			return KRED_OK;
		}
		if (errno == ENOMEM)
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		why = errno;
		c->wanted_failed = 1;
	}
	if (!c->private_dir) {
		struct kred__buf b = { 0 };

		kred__buf_printf(&b, "%s/kred-XXXXXX", tmp_root());
		c->private_dir = kred__buf_take(&b);
		if (!c->private_dir)
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		if (!mkdtemp(c->private_dir)) {
			int e = errno;

			kred__free(c->private_dir);
			c->private_dir = NULL;
			return kred__fail(err, KRED_EIO, -1,
					  "cannot write the cache directory '%s' (%s) nor make a "
					  "temporary one in %s (%s)", c->wanted ? c->wanted : "",
					  strerror(why), tmp_root(), strerror(e));
		}
		if (c->wanted && *c->wanted && why) /* (kred__cache_full said why) */
			kred__log("warning: cannot write the cache directory %s (%s): using %s "
				  "for this context", c->wanted, strerror(why), c->private_dir);
	}
	*path = new_tmp(c->private_dir, stem, suffix);
	if (!*path)
		return kred__fail(err, errno == ENOMEM ? KRED_ENOMEM : KRED_EIO, -1,
				  "cannot create a file in %s: %s", c->private_dir,
				  strerror(errno));
	*dir = c->private_dir;
	return KRED_OK;
}

static _Atomic int no_space;

void kred__test_cache_no_space(int on)
{
	no_space = on;
}

int kred__cache_write_text(const struct kred__cache *c, const char *dir, const char *path,
			   const char *text)
{
	size_t n = strlen(text);
	FILE *f;
	int ok;

	if (no_space && c->wanted && dir == c->wanted) {
		errno = ENOSPC;
		return -1;
	}
	f = fopen(path, "w");
	if (!f)
		return -1;
	ok = fwrite(text, 1, n, f) == n;
	if (fclose(f) != 0)
		ok = 0;
	return ok ? 0 : -1;
}

int kred__cache_full(struct kred__cache *c, const char *dir, int e)
{
	if (!c->wanted || dir != c->wanted || c->wanted_failed ||
	    (e != ENOSPC && e != EDQUOT && e != EFBIG))
		return 0;
	c->wanted_failed = 1;
	kred__log("warning: cannot write the cache directory %s (%s): compiling in a private "
		  "directory instead", c->wanted, strerror(e));
	return 1;
}

int kred__log_says_full(const char *log)
{
	return log && (strstr(log, strerror(ENOSPC)) || strstr(log, strerror(EDQUOT)) ||
		       strstr(log, strerror(EFBIG)));
}

void kred__cache_close(struct kred__cache *c)
{
	DIR *d;
	struct dirent *ent;

	if (!c->private_dir)
		return;
	d = opendir(c->private_dir);
	if (d) {
		while ((ent = readdir(d))) {
			struct kred__buf b = { 0 };
			char *p;

			if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, ".."))
				continue;
			kred__buf_printf(&b, "%s/%s", c->private_dir, ent->d_name);
			p = kred__buf_take(&b);
			if (p)
				unlink(p);
			kred__free(p);
		}
		closedir(d);
	}
	rmdir(c->private_dir);
	kred__free(c->private_dir);
	c->private_dir = NULL;
}

/* ---- sealed files */

#define SEAL_MAGIC "KREDSEAL"

struct seal {
	char magic[8];
	uint64_t length;
	uint64_t sum;
	uint64_t identity;
};

uint64_t kred__cache_identity(const struct kred__hash *h)
{
	/* 0 is what a footer from before identities held: never an identity */
	uint64_t id = mix64(h->a) ^ h->b;

	return id ? id : 1;
}

static uint64_t checksum(const unsigned char *p, size_t n)
{
	struct kred__hash h;

	kred__hash_init(&h);
	kred__hash_add(&h, p, n);
	return mix64(h.a) ^ h.b;
}

/* The whole file; NULL if it cannot be read. */
static unsigned char *slurp(const char *path, size_t *len)
{
	struct stat st;
	unsigned char *p = NULL;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) != 0 || st.st_size < 0)
		goto fail;
	p = kred__malloc((size_t)st.st_size + 1);
	if (!p) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, p + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto fail;
		got += (size_t)n;
	}
	close(fd);
	*len = got;
	return p;
fail:
	close(fd);
	kred__free(p);
	return NULL;
}

kred_status kred__cache_seal(const char *path, uint64_t identity, struct kred__error *err)
{
	struct seal s;
	size_t len;
	unsigned char *p = slurp(path, &len);
	int fd;

	if (!p)
		return kred__fail(err, errno == ENOMEM ? KRED_ENOMEM : KRED_EIO, -1,
				  "cannot read %s: %s", path, strerror(errno));
	memset(&s, 0, sizeof(s));
	memcpy(s.magic, SEAL_MAGIC, 8);
	s.length = len;
	s.sum = checksum(p, len);
	s.identity = identity;
	kred__free(p);
	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0 || write(fd, &s, sizeof(s)) != (ssize_t)sizeof(s) || fsync(fd) != 0) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		return kred__fail(err, KRED_EIO, -1, "cannot write %s: %s", path, strerror(e));
	}
	close(fd);
	return KRED_OK;
}

int kred__cache_check(const char *path, uint64_t identity)
{
	struct seal s;
	size_t len;
	unsigned char *p;
	int ok;

	if (access(path, F_OK) != 0)
		return 0;
	p = slurp(path, &len);
	if (!p)
		return -1;
	ok = len >= sizeof(s);
	if (ok) {
		memcpy(&s, p + len - sizeof(s), sizeof(s));
		ok = !memcmp(s.magic, SEAL_MAGIC, 8) && s.length == len - sizeof(s) &&
		     s.sum == checksum(p, (size_t)s.length) &&
		     (s.identity == identity || identity == 0);
	}
	kred__free(p);
	if (ok)
		utimes(path, NULL); /* used now: last in line for eviction */
	return ok ? 1 : -1;
}

kred_status kred__cache_publish(const char *tmp, const char *final, struct kred__error *err)
{
	const char *slash;
	char *dir;

	if (rename(tmp, final) != 0) {
		int e = errno;

		unlink(tmp);
		return kred__fail(err, KRED_EIO, -1, "cannot rename %s to %s: %s", tmp, final,
				  strerror(e));
	}
	slash = strrchr(final, '/');
	dir = slash ? kred__strndup(final, (size_t)(slash - final)) : kred__strdup(".");
	if (dir)
		kred__cache_trim(dir[0] ? dir : "/", final);
	kred__free(dir);
	return KRED_OK;
}

/* kred__cache_compile once; on a failure for want of room in the cache directory, *full
 * receives that directory. */
static kred_status compile_once(struct kred__cache *c, kred_context *ctx,
				const struct kred__compile_job *job, const char *key,
				uint64_t identity, const char *src, char **path, const char **full,
				struct kred__error *err)
{
	char *out = NULL, *src_path = NULL, *store = NULL, *log = NULL, **argv = NULL;
	struct kred__buf cmd = { 0 };
	const char *dir, *src_dir;
	double t0 = kred__now();
	kred_status s;
	int rc;

	*path = NULL;
	/* The output is renamed within dir, so it is made there; the source may go anywhere. */
	s = kred__cache_tmpfile(c, key, job->out_suffix, &out, &dir, err);
	if (s)
		return s;
	s = kred__cache_tmpfile(c, key, job->src_suffix, &src_path, &src_dir, err);
	if (s)
		goto done;
	if (kred__cache_write_text(c, src_dir, src_path, src) != 0) {
		int e = errno;

		if (e == ENOSPC || e == EDQUOT || e == EFBIG)
			*full = src_dir;
		s = kred__fail(err, KRED_EIO, -1, "cannot write %s: %s", src_path, strerror(e));
		goto done;
	}
	argv = job->argv(job->arg, out, src_path, &store);
	if (!argv) {
		s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto done;
	}
	if (kred__verbose()) {
		for (int k = 0; argv[k]; k++)
			kred__buf_printf(&cmd, "%s%s", k ? " " : "", argv[k]);
		kred__log("%s: compiling: %s", job->who, cmd.p ? cmd.p : "");
	}
	rc = kred__spawn(argv, &log);
	if (rc != 0) {
		if (rc > 0 && kred__log_says_full(log))
			*full = dir;
		if (ctx)
			kred__ctx_set_log(ctx, log ? log : "");
		s = kred__fail(err, KRED_EBUILD, -1,
			       rc < 0 ? "the %s '%s' could not be run (see the build log)"
				      : "the %s '%s' failed (see the build log)",
			       job->tool, job->cmd);
		goto done;
	}
	s = kred__cache_seal(out, identity, err);
	if (s)
		goto done;
	kred__buf_free(&cmd);
	kred__buf_printf(&cmd, "%s/%s%s", dir, key, job->out_suffix);
	*path = kred__buf_take(&cmd);
	if (!*path) {
		s = kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto done;
	}
	s = kred__cache_publish(out, *path, err);
	if (s == KRED_OK) {
		kred__free(out);
		out = NULL;
		kred__log("%s: compiled in %.3f s: %s", job->who, kred__now() - t0, *path);
	}
done:
	if (out)
		unlink(out);
	if (src_path)
		unlink(src_path);
	if (s) {
		kred__free(*path);
		*path = NULL;
	}
	kred__buf_free(&cmd);
	kred__free(out);
	kred__free(src_path);
	kred__free(store);
	kred__free(argv);
	kred__free(log);
	return s;
}

kred_status kred__cache_compile(struct kred__cache *c, kred_context *ctx,
				const struct kred__compile_job *job, const char *key,
				uint64_t identity, const char *src, char **path,
				struct kred__error *err)
{
	const char *full = NULL;
	kred_status s = compile_once(c, ctx, job, key, identity, src, path, &full, err);

	if (s && full && kred__cache_full(c, full, ENOSPC)) {
		kred__error_clear(err);
		full = NULL;
		s = compile_once(c, ctx, job, key, identity, src, path, &full, err);
	}
	return s;
}

char *kred__cache_store(struct kred__cache *c, const char *key, const char *suffix,
			const void *data, size_t len, uint64_t identity)
{
	struct kred__error e;
	struct kred__buf b = { 0 };
	char *tmp = NULL, *path = NULL;
	const char *dir;
	FILE *f;

	kred__error_clear(&e);
	if (kred__cache_tmpfile(c, key, suffix, &tmp, &dir, &e))
		return NULL;
	f = fopen(tmp, "wb");
	if (!f || fwrite(data, 1, len, f) != len) {
		if (f)
			fclose(f);
		goto done;
	}
	if (fclose(f) != 0 || kred__cache_seal(tmp, identity, &e))
		goto done;
	kred__buf_printf(&b, "%s/%s%s", dir, key, suffix);
	path = kred__buf_take(&b);
	if (path && kred__cache_publish(tmp, path, &e) == KRED_OK) {
		kred__free(tmp);
		return path;
	}
done:
	unlink(tmp);
	kred__free(tmp);
	kred__free(path);
	return NULL;
}

/* ---- the size bound */

#define CACHE_MAX_DEFAULT ((int64_t)1 << 30)

struct entry {
	char *path;
	int64_t size;
	struct timespec used;
};

static int older_first(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;

	if (x->used.tv_sec != y->used.tv_sec)
		return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
	if (x->used.tv_nsec != y->used.tv_nsec)
		return x->used.tv_nsec < y->used.tv_nsec ? -1 : 1;
	return strcmp(x->path, y->path);
}

void kred__cache_trim(const char *dir, const char *keep)
{
	int64_t max = kred__env_bytes("KRED_CACHE_MAX"), total = 0;
	struct entry *e = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	if (max <= 0)
		max = CACHE_MAX_DEFAULT;
	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		struct kred__buf b = { 0 };
		struct stat st;
		char *path;

		if (de->d_name[0] == '.' || strstr(de->d_name, ".tmp."))
			continue;
		kred__buf_printf(&b, "%s/%s", dir, de->d_name);
		path = kred__buf_take(&b);
		if (!path || lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
			kred__free(path);
			continue;
		}
		if (n == cap) {
			size_t c2 = cap ? 2 * cap : 64;
			struct entry *e2 = kred__realloc(e, c2 * sizeof(*e2));

			if (!e2) {
				kred__free(path);
				break;
			}
			e = e2;
			cap = c2;
		}
		e[n].path = path;
		e[n].size = (int64_t)st.st_size;
		e[n].used = st.st_mtim;
		total += e[n].size;
		n++;
	}
	closedir(d);
	if (total > max) {
		int64_t target = max / 10 * 9;

		qsort(e, n, sizeof(*e), older_first);
		for (size_t k = 0; k < n && total > target; k++) {
			if (keep && !strcmp(e[k].path, keep))
				continue;
			if (unlink(e[k].path) == 0) {
				total -= e[k].size;
				kred__log("cache: evicted %s (%lld bytes; the bound is %lld)",
					  e[k].path, (long long)e[k].size, (long long)max);
			}
		}
	}
	for (size_t k = 0; k < n; k++)
		kred__free(e[k].path);
	kred__free(e);
}
