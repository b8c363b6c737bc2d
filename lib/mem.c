/* Allocation for the whole library, with fault injection for the tests, and a growing
 * string buffer. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Fault injection: countdown > 0 counts allocations down to the failing one. Atomics:
 * the library allocates from several threads (one per device of "opencl:all", or a
 * user's threads on contexts of their own), where plain counters would be a data race;
 * the sweep tests that set a countdown run single-threaded, and in production countdown
 * stays 0. */
static _Atomic long countdown;
static _Atomic int sticky_fail;
static _Atomic long n_allocs;

static int should_fail(void)
{
	long c;

	atomic_fetch_add_explicit(&n_allocs, 1, memory_order_relaxed);
	c = atomic_load_explicit(&countdown, memory_order_relaxed);
	if (c <= 0)
		return 0;
	if (c == 1) {
		if (!atomic_load_explicit(&sticky_fail, memory_order_relaxed))
			atomic_store_explicit(&countdown, 0, memory_order_relaxed);
		return 1;
	}
	atomic_store_explicit(&countdown, c - 1, memory_order_relaxed);
	return 0;
}

long kred__test_alloc_fail(long n, int sticky)
{
	long made = atomic_exchange(&n_allocs, 0);

	atomic_store(&countdown, n > 0 ? n : 0);
	atomic_store(&sticky_fail, sticky);
	return made;
}

void *kred__malloc(size_t n)
{
	if (should_fail())
		return NULL;
	return malloc(n ? n : 1);
}

void *kred__calloc(size_t count, size_t size)
{
	if (should_fail())
		return NULL;
	if (count == 0 || size == 0)
		count = size = 1;
	return calloc(count, size);
}

void *kred__realloc(void *p, size_t n)
{
	if (should_fail())
		return NULL;
	return realloc(p, n ? n : 1);
}

char *kred__strndup(const char *s, size_t n)
{
	char *d = kred__malloc(n + 1);

	if (!d)
		return NULL;
	memcpy(d, s, n);
	d[n] = 0;
	return d;
}

char *kred__strdup(const char *s)
{
	return kred__strndup(s, strlen(s));
}

void kred__free(void *p)
{
	free(p);
}

void kred_free(void *p)
{
	free(p);
}

static int buf_reserve(struct kred__buf *b, size_t extra)
{
	size_t want, cap;
	char *p;

	if (b->oom)
		return -1;
	want = b->len + extra + 1;
	if (want <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < want)
		cap *= 2;
	p = kred__realloc(b->p, cap);
	if (!p) {
		kred__free(b->p);
		b->p = NULL;
		b->len = b->cap = 0;
		b->oom = 1;
		return -1;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

void kred__buf_vprintf(struct kred__buf *b, const char *fmt, va_list ap)
{
	va_list aq;
	int n;

	va_copy(aq, ap);
	n = vsnprintf(NULL, 0, fmt, aq);
	va_end(aq);
	if (n < 0 || buf_reserve(b, (size_t)n))
		return;
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
}

void kred__buf_printf(struct kred__buf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	kred__buf_vprintf(b, fmt, ap);
	va_end(ap);
}

void kred__buf_puts(struct kred__buf *b, const char *s)
{
	size_t n = strlen(s);

	if (buf_reserve(b, n))
		return;
	memcpy(b->p + b->len, s, n + 1);
	b->len += n;
}

char *kred__buf_take(struct kred__buf *b)
{
	char *p = NULL;

	if (!b->oom) {
		if (!b->p)
			buf_reserve(b, 0);
		p = b->p;
		if (p)
			p[b->len] = 0;
	}
	b->p = NULL;
	b->len = b->cap = 0;
	b->oom = 0;
	return p;
}

void kred__buf_free(struct kred__buf *b)
{
	kred__free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->oom = 0;
}
