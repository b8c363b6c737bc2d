/* Contexts: the chosen backend and its state, the cache directory, and the last error
 * with its message, offset and build log; and the device report. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdatomic.h>

#include "internal.h"

/*
 * Errors are per thread, as errno is: each thread keeps a short list of records, one per
 * context it called lately, so that a thread's kred_errmsg(ctx) tells of its own last
 * call on ctx whatever other threads do with ctx meanwhile. A record names its context
 * by address and serial number (a new context may take a freed one's address). The
 * records use malloc rather than kred__malloc: an allocation failure injected by a test
 * must hit the call under test, not the reporting of its error. A thread's records are
 * freed when it exits, and its record of a context when it destroys that context.
 */
struct record {
	const kred_context *ctx;
	unsigned long serial;
	struct kred__error err;
	char *msg, *log;
	struct record *next;
};

#define MAX_RECORDS 16 /* per thread; the least recently used is dropped past it */

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t key;
static int key_ok;
static atomic_ulong next_serial;

static void clear(struct record *r)
{
	kred__error_clear(&r->err);
	free(r->msg);
	free(r->log);
	r->msg = r->log = NULL;
}

static void free_records(void *head)
{
	for (struct record *r = head, *next; r; r = next) {
		next = r->next;
		clear(r);
		free(r);
	}
}

static void make_key(void)
{
	key_ok = pthread_key_create(&key, free_records) == 0;
}

/* The calling thread's record of ctx, moved to the front of its list; made when create
 * is set (NULL when memory is short), else NULL when there is none. */
static struct record *find(const kred_context *ctx, int create)
{
	struct record *head, *r, *prev = NULL;
	int n = 0;

	pthread_once(&key_once, make_key);
	if (!key_ok)
		return NULL;
	head = pthread_getspecific(key);
	for (r = head; r; prev = r, r = r->next, n++) {
		if (r->ctx != ctx || r->serial != ctx->serial)
			continue;
		if (prev) {
			prev->next = r->next;
			r->next = head;
			pthread_setspecific(key, r);
		}
		return r;
	}
	if (!create)
		return NULL;
	if (n >= MAX_RECORDS) { /* drop the last */
		struct record *last = head, *before = NULL;

		while (last->next) {
			before = last;
			last = last->next;
		}
		if (before)
			before->next = NULL;
		else
			head = NULL;
		clear(last);
		free(last);
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->ctx = ctx;
	r->serial = ctx->serial;
	kred__error_clear(&r->err);
	r->next = head;
	if (pthread_setspecific(key, r) != 0) {
		free(r);
		return NULL;
	}
	return r;
}

/* The calling thread forgets ctx (kred_context_destroy). */
static void forget(const kred_context *ctx)
{
	struct record *r = find(ctx, 0);

	if (r) { /* find moved it to the front */
		pthread_setspecific(key, r->next);
		clear(r);
		free(r);
	}
}

/* When a record could not be made, the status of the last error is still known from
 * here (per thread, for one context). */
static _Thread_local const kred_context *lost_ctx;
static _Thread_local kred_status lost;

static kred_status lost_status(const kred_context *ctx)
{
	return lost_ctx == ctx ? lost : KRED_OK;
}

static int init_lock(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;
	int rc;

	if (pthread_mutexattr_init(&a) != 0)
		return -1;
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
	rc = pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
	return rc ? -1 : 0;
}

int64_t kred__env_bytes(const char *name)
{
	const char *e = getenv(name);
	char *end;
	long long v;

	if (!e || !*e)
		return 0;
	v = strtoll(e, &end, 10);
	if (end == e || v <= 0)
		return 0;
	switch (*end) {
	case 'k': case 'K': return v <= INT64_MAX >> 10 ? v << 10 : INT64_MAX;
	case 'm': case 'M': return v <= INT64_MAX >> 20 ? v << 20 : INT64_MAX;
	case 'g': case 'G': return v <= INT64_MAX >> 30 ? v << 30 : INT64_MAX;
	default: return v;
	}
}

/* Opens the backend that spec names ("auto", "host", "opencl:1", ...). backend.c. */
kred_status kred__backend_open(kred_context *ctx, const char *spec, struct kred__error *err);

static char *default_cache_dir(void)
{
	const char *env = getenv("KRED_CACHE_DIR");
	struct kred__buf b = { 0 };

	if (env && *env)
		return kred__strdup(env);
	env = getenv("XDG_CACHE_HOME");
	if (env && *env) {
		kred__buf_printf(&b, "%s/kred", env);
		return kred__buf_take(&b);
	}
	env = getenv("HOME");
	if (env && *env) {
		kred__buf_printf(&b, "%s/.cache/kred", env);
		return kred__buf_take(&b);
	}
	return kred__strdup("");
}

kred_status kred_context_create(const kred_context_options *opt, kred_context **out)
{
	kred_context *ctx;
	struct kred__error err;
	const char *spec;
	kred_status s;

	if (!out)
		return KRED_EINVAL;
	*out = NULL;
	ctx = kred__calloc(1, sizeof(*ctx));
	if (!ctx)
		return KRED_ENOMEM;
	if (init_lock(&ctx->lock)) {
		kred__free(ctx);
		return KRED_ENOMEM;
	}
	ctx->serial = atomic_fetch_add(&next_serial, 1) + 1;
	kred__ctx_clear_error(ctx);
	if (opt) {
		size_t n = opt->struct_size && opt->struct_size < sizeof(*opt) ? opt->struct_size
									     : sizeof(*opt);
		memcpy(&ctx->opt, opt, n);
	}
	ctx->opt.struct_size = sizeof(ctx->opt);
	ctx->cache_dir = ctx->opt.cache_dir ? kred__strdup(ctx->opt.cache_dir) : default_cache_dir();
	ctx->opt.cache_dir = ctx->cache_dir;
	ctx->opt.backend = NULL; /* not kept: the caller's string may go away */
	if (!ctx->cache_dir) {
		kred_context_destroy(ctx);
		return KRED_ENOMEM;
	}
	if ((unsigned)ctx->opt.scheme > KRED_SCHEME_2D || ctx->opt.device_memory < 0 ||
	    ctx->opt.threads < 0) {
		kred__ctx_fail(ctx, KRED_EINVAL, "invalid context options (scheme %d, device "
			       "memory %lld, threads %d)", (int)ctx->opt.scheme,
			       (long long)ctx->opt.device_memory, ctx->opt.threads);
		*out = ctx;
		return KRED_EINVAL;
	}
	spec = opt && opt->backend ? opt->backend : getenv("KRED_BACKEND");
	if (!spec || !*spec)
		spec = "auto";
	kred__error_clear(&err);
	s = kred__backend_open(ctx, spec, &err);
	if (s == KRED_ENOMEM) {
		kred_context_destroy(ctx);
		return KRED_ENOMEM;
	}
	if (s)
		kred__ctx_set_error(ctx, &err, NULL);
	*out = ctx;
	return s;
}

void kred_context_destroy(kred_context *ctx)
{
	if (!ctx)
		return;
	if (ctx->backend && ctx->backend->close)
		ctx->backend->close(ctx->bstate);
	forget(ctx);
	pthread_mutex_destroy(&ctx->lock);
	kred__free(ctx->backend_name);
	kred__free(ctx->cache_dir);
	kred__free(ctx);
}

const char *kred_context_backend(const kred_context *ctx)
{
	if (!ctx || !ctx->backend_name)
		return "none";
	return ctx->backend_name;
}

const char *kred_errmsg(const kred_context *ctx)
{
	const struct record *r;

	if (!ctx)
		return "no context";
	r = find(ctx, 0);
	if (!r)
		return lost_status(ctx) ? kred_status_message(lost_status(ctx)) : "";
	if (r->err.status == KRED_OK)
		return "";
	return r->msg ? r->msg : r->err.msg;
}

long kred_error_offset(const kred_context *ctx)
{
	const struct record *r = ctx ? find(ctx, 0) : NULL;

	if (!r || r->err.status == KRED_OK)
		return -1;
	return r->err.offset;
}

const char *kred_error_log(const kred_context *ctx)
{
	const struct record *r = ctx ? find(ctx, 0) : NULL;

	if (!r || !r->log || r->err.status != KRED_EBUILD)
		return "";
	return r->log;
}

const struct kred__error *kred__ctx_error(const kred_context *ctx)
{
	static const struct kred__error none = { .status = KRED_OK, .offset = -1 };
	const struct record *r = find(ctx, 0);

	return r ? &r->err : &none;
}

void kred__ctx_clear_error(kred_context *ctx)
{
	struct record *r = find(ctx, 0);

	if (r)
		clear(r);
	if (lost_ctx == ctx)
		lost = KRED_OK;
}

static const char *where_text(const struct kred__error *err)
{
	switch (err->where) {
	case KRED__IN_FORMULA: return "formula";
	case KRED__IN_WEIGHT: return "weight";
	case KRED__IN_ALIAS: return "alias";
	case KRED__IN_REDUCTION: return "reduction";
	default: return NULL;
	}
}

#define ERROR_CONTEXT 60

kred_status kred__ctx_set_error(kred_context *ctx, const struct kred__error *err,
				const char *src)
{
	struct kred__buf b = { 0 };
	const char *where = where_text(err);
	struct record *r = find(ctx, 1);

	if (!r) { /* no memory for the message: kred_errmsg says the status */
		lost_ctx = ctx;
		lost = err->status;
		return err->status;
	}
	free(r->msg);
	r->msg = NULL;
	r->err = *err;
	if (err->where == KRED__IN_ALIAS && where)
		kred__buf_printf(&b, "alias %d: ", err->alias_index);
	else if (where && src)
		kred__buf_printf(&b, "%s: ", where);
	kred__buf_puts(&b, err->msg);
	if (src && err->offset >= 0 && (size_t)err->offset <= strlen(src)) {
		/* The text and a caret under the offending byte; tabs kept so they line up. A
		 * long text shows ERROR_CONTEXT bytes either side of it, "..." for the rest. */
		size_t len = strlen(src), at = (size_t)err->offset;
		size_t from = at > ERROR_CONTEXT ? at - ERROR_CONTEXT : 0;
		size_t to = len - at > ERROR_CONTEXT ? at + ERROR_CONTEXT : len;

		kred__buf_printf(&b, " (at byte %ld)\n  %s", err->offset, from ? "..." : "");
		for (size_t k = from; k < to; k++)
			kred__buf_printf(&b, "%c", src[k] == '\n' || src[k] == '\r' ? ' ' : src[k]);
		kred__buf_printf(&b, "%s\n  %s", to < len ? "..." : "", from ? "   " : "");
		for (size_t k = from; k < at; k++)
			kred__buf_puts(&b, src[k] == '\t' ? "\t" : " ");
		kred__buf_puts(&b, "^");
	}
	/* (kred__buf's memory is kred__malloc's; a record's is malloc's) */
	if (b.p && !b.oom)
		r->msg = strdup(b.p);
	kred__buf_free(&b); /* NULL on failure: kred_errmsg falls back to err.msg */
	return err->status;
}

kred_status kred__ctx_fail(kred_context *ctx, kred_status status, const char *fmt, ...)
{
	struct kred__error err;
	va_list ap;

	kred__error_clear(&err);
	err.status = status;
	va_start(ap, fmt);
	vsnprintf(err.msg, sizeof(err.msg), fmt, ap);
	va_end(ap);
	return kred__ctx_set_error(ctx, &err, NULL);
}

void kred__ctx_set_log(kred_context *ctx, const char *log)
{
	struct record *r = find(ctx, 1);

	if (!r)
		return;
	free(r->log);
	r->log = log ? strdup(log) : NULL;
}

/* ---- the device report: every backend's devices, and what auto opens (a context of its
 * own, which is why it sits here and not in backend.c, below the contexts) */

kred_status kred_devices_report(char **out)
{
	struct kred__buf b = { 0 };
	kred_context *ctx = NULL;
	kred_status s;

	if (!out)
		return KRED_EINVAL;
	*out = NULL;
	for (int k = 0; kred__backends[k]; k++) {
		const struct kred_backend *be = kred__backends[k];

		if (be->report) {
			int n = be->version >= 2 && be->device_count ? be->device_count() : 0;

			be->report(&b);
			if (n == 1)
				kred__buf_printf(&b, "  %s:all  the one device above\n", be->name);
			else if (n > 1)
				kred__buf_printf(&b, "  %s:all  the %d devices above together (each "
						 "run's rows split by measured speed)\n", be->name,
						 n);
		} else {
			struct kred__error e;
			void *state = NULL;

			kred__error_clear(&e);
			if (be->open(NULL, NULL, &state, &e) == KRED_OK) {
				kred__buf_printf(&b, "%s: available: %s\n", be->name,
						 be->describe(state));
				be->close(state);
			} else {
				kred__buf_printf(&b, "%s: not available (%s)\n", be->name, e.msg);
			}
		}
	}
	s = kred_context_create(NULL, &ctx);
	if (s == KRED_ENOMEM) {
		kred__buf_free(&b);
		return s;
	}
	if (s == KRED_OK)
		kred__buf_printf(&b, "auto: %s (%s)\n", kred_context_backend(ctx),
				 getenv("KRED_BACKEND") && *getenv("KRED_BACKEND")
					 ? "set by KRED_BACKEND"
					 : "the first GPU backend with a GPU, else host, else "
					   "reference");
	else
		kred__buf_printf(&b, "auto: none (%s)\n", kred_errmsg(ctx));
	kred_context_destroy(ctx);
	*out = kred__buf_take(&b);
	return *out ? KRED_OK : KRED_ENOMEM;
}
