/* Contexts: the chosen backend and its state, the cache directory, and the last error
 * with its message, offset and build log. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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
	kred__error_clear(&ctx->err);
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
	if ((unsigned)ctx->opt.scheme > KRED_SCHEME_2D || ctx->opt.device_memory < 0) {
		kred__ctx_fail(ctx, KRED_EINVAL, "invalid context options (scheme %d, device "
			       "memory %lld)", (int)ctx->opt.scheme,
			       (long long)ctx->opt.device_memory);
		*out = ctx;
		return KRED_EINVAL;
	}
	spec = opt && opt->backend ? opt->backend : getenv("KRED_BACKEND");
	if (!spec || !*spec)
		spec = "auto";
	kred__error_clear(&err);
	s = kred__backend_open(ctx, spec, &err);
	if (s == KRED_ENOMEM && !ctx->errmsg) {
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
	kred__free(ctx->backend_name);
	kred__free(ctx->cache_dir);
	kred__free(ctx->errmsg);
	kred__free(ctx->errlog);
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
	if (!ctx)
		return "no context";
	if (ctx->err.status == KRED_OK)
		return "";
	return ctx->errmsg ? ctx->errmsg : ctx->err.msg;
}

long kred_error_offset(const kred_context *ctx)
{
	if (!ctx || ctx->err.status == KRED_OK)
		return -1;
	return ctx->err.offset;
}

const char *kred_error_log(const kred_context *ctx)
{
	if (!ctx || !ctx->errlog || ctx->err.status != KRED_EBUILD)
		return "";
	return ctx->errlog;
}

void kred__ctx_clear_error(kred_context *ctx)
{
	kred__error_clear(&ctx->err);
	kred__free(ctx->errmsg);
	ctx->errmsg = NULL;
	kred__free(ctx->errlog);
	ctx->errlog = NULL;
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

	kred__free(ctx->errmsg);
	ctx->errmsg = NULL;
	ctx->err = *err;
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
	ctx->errmsg = kred__buf_take(&b); /* NULL on failure: kred_errmsg falls back */
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
	kred__free(ctx->errlog);
	ctx->errlog = log ? kred__strdup(log) : NULL;
}
