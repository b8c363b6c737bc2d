/* "name:all": one context over every device of a backend ("opencl:all", "vulkan:all",
 * "cuda:all"). A wrapper backend whose state holds the inner backend's state on each
 * device: a reduction is compiled on every device, and each run's output rows are split
 * into one contiguous slice per device, sized by the devices' measured speeds, run at once
 * on one thread per device. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cache.h"
#include "internal.h"

/*
 * Splitting rows, not the reduced axis: a row's result is computed by one device from all
 * of the reduced axis, so a slice runs the same kernel on fewer rows, indices (ArgMin...)
 * need no offset, and there is nothing to merge. Each device receives the whole of the
 * reduced axis's variables and the parameters, and its own rows of the others.
 *
 * Shares. Each device d has a share w_d of the rows (the shares add up to 1; equal at
 * first). After a run, every device that ran a slice has a measured speed, rows / seconds;
 * within the set S of those devices the run says what their shares should have been,
 * W_S * speed_d / sum_S speed (W_S the shares S held, so that a device that sat this run
 * out keeps its share), and each w_d moves up to halfway there: less after a short run,
 * whose times say more about launches, thread wake-ups and the clock than about the
 * devices (update_shares). Moving shares rather than averaging raw speeds keeps the
 * estimate independent of the runs' sizes and formulas, whose rows per second differ by
 * orders of magnitude while the ratio between two devices moves much less. With a fixed
 * cost per run (a launch, a copy, a work-group that costs the same full or not) the
 * slower-looking device is the one with fewer rows, which pulls the shares back towards
 * equal, never away: they converge to equal finishing times.
 */

struct multi_state {
	const struct kred_backend *inner;
	int n;
	void **states;	   /* one per device, "name:d" */
	double *share;	   /* of the rows, adding up to 1 */
	double *speed;	   /* rows per second in the last run that gave the device rows */
	double *time_scale; /* test hook: measured times are multiplied by this (1) */
	char *desc;
};

struct multi_module {
	int n;
	void *mods[]; /* the inner modules, one per device */
};

/* The step of the shares towards what a run measured: SHARE_STEP * t / (t + MEASURE_S)
 * for a run whose longest slice took t seconds, so nearly halfway for a run of tens of
 * milliseconds, and a twentieth of that for one of 0.1 ms. */
#define SHARE_STEP 0.5
#define MEASURE_S 0.002

static void multi_close(void *state)
{
	struct multi_state *m = state;

	if (!m)
		return;
	for (int d = 0; d < m->n && m->states; d++)
		if (m->states[d])
			m->inner->close(m->states[d]);
	kred__free(m->states);
	kred__free(m->share);
	kred__free(m->speed);
	kred__free(m->time_scale);
	kred__free(m->desc);
	kred__free(m);
}

/* device is the inner backend's name ("opencl"): kred__backend_open passes it for
 * "opencl:all". */
static kred_status multi_open(kred_context *ctx, const char *device, void **state,
			      struct kred__error *err)
{
	const struct kred_backend *b = NULL;
	struct kred__buf desc = { 0 };
	struct multi_state *m;
	struct kred__error e;
	void *probe = NULL;
	int n;

	*state = NULL;
	for (int k = 0; device && kred__backends[k] && !b; k++)
		if (!strcmp(kred__backends[k]->name, device))
			b = kred__backends[k];
	if (!b)
		return kred__fail(err, KRED_EBACKEND, -1, "'all' needs a backend name before it "
				  "('opencl:all', 'vulkan:all', 'cuda:all')");
	if (b->version < 2 || !b->device_count)
		return kred__fail(err, KRED_EBACKEND, -1, "%s:all: the %s backend has no devices "
				  "to run on together (it is one device: use '%s')", b->name, b->name,
				  b->name);
	n = b->device_count();
	if (n <= 0) {
		/* Opening it plainly says why there is no device. */
		kred__error_clear(&e);
		if (b->open(ctx, NULL, &probe, &e) != KRED_OK)
			return kred__fail(err, e.status == KRED_ENOMEM ? KRED_ENOMEM : KRED_EBACKEND,
					  -1, "%s:all: %s", b->name, e.msg);
		/* e.g. a CUDA context that only compiles */
		kred__fail(err, KRED_EBACKEND, -1, "%s:all: no %s device to run on (%s)", b->name,
			   b->name, b->describe(probe));
		b->close(probe);
		return err->status;
	}
	m = kred__calloc(1, sizeof(*m));
	if (!m)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	m->inner = b;
	m->n = n;
	m->states = kred__calloc((size_t)n, sizeof(*m->states));
	m->share = kred__calloc((size_t)n, sizeof(*m->share));
	m->speed = kred__calloc((size_t)n, sizeof(*m->speed));
	m->time_scale = kred__calloc((size_t)n, sizeof(*m->time_scale));
	if (!m->states || !m->share || !m->speed || !m->time_scale) {
		kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto fail;
	}
	kred__buf_printf(&desc, "%s:all(%d): ", b->name, n);
	for (int d = 0; d < n; d++) {
		char index[16];

		snprintf(index, sizeof(index), "%d", d);
		kred__error_clear(&e);
		if (b->open(ctx, index, &m->states[d], &e) != KRED_OK) {
			m->states[d] = NULL;
			kred__fail(err, e.status == KRED_ENOMEM ? KRED_ENOMEM : KRED_EBACKEND, -1,
				   "%s:all: cannot open %s:%d of %d: %s", b->name, b->name, d, n,
				   e.msg);
			goto fail;
		}
		m->share[d] = 1.0 / n;
		m->time_scale[d] = 1.0;
		kred__buf_printf(&desc, "%s%s", d ? " | " : "", b->describe(m->states[d]));
	}
	m->desc = kred__buf_take(&desc);
	if (!m->desc) {
		kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto fail;
	}
	*state = m;
	return KRED_OK;
fail:
	kred__buf_free(&desc);
	multi_close(m);
	return err->status;
}

static const char *multi_describe(void *state)
{
	return ((struct multi_state *)state)->desc;
}

static int multi_is_gpu(void *state)
{
	const struct multi_state *m = state;

	for (int d = 0; d < m->n; d++)
		if (m->inner->is_gpu && m->inner->is_gpu(m->states[d]))
			return 1;
	return 0;
}

static void multi_module_free(void *state, void *module)
{
	const struct multi_state *m = state;
	struct multi_module *mm = module;

	if (!mm)
		return;
	for (int d = 0; d < mm->n; d++)
		if (mm->mods[d] && m->inner->module_free)
			m->inner->module_free(m->states[d], mm->mods[d]);
	kred__free(mm);
}

static kred_status multi_compile(void *state, struct kred_reduction *r, void **module,
				 struct kred__error *err)
{
	const struct multi_state *m = state;
	struct multi_module *mm;

	*module = NULL;
	mm = kred__calloc(1, sizeof(*mm) + (size_t)m->n * sizeof(mm->mods[0]));
	if (!mm)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	mm->n = m->n;
	/* One device after the other: builds share the process's compilers and caches. */
	for (int d = 0; d < m->n; d++) {
		if (m->inner->compile(m->states[d], r, &mm->mods[d], err) != KRED_OK) {
			kred_status s = err->status;

			mm->mods[d] = NULL;
			multi_module_free(state, mm);
			return s;
		}
	}
	*module = mm;
	return KRED_OK;
}

/* One device's part of a run. */
struct slice {
	const struct multi_state *m;
	int d;
	struct kred_reduction r; /* the caller's, with this device's module */
	int64_t nx, ny, rows;
	const void **args;
	void *out;
	struct kred__error err;
	kred_status s;
	double seconds;
	pthread_t thread;
	int threaded;
};

static void *slice_run(void *arg)
{
	struct slice *sl = arg;
	const struct multi_state *m = sl->m;
	double t0 = kred__now();

	kred__error_clear(&sl->err);
	sl->s = m->inner->run(m->states[sl->d], sl->r.module, &sl->r, sl->nx, sl->ny, sl->args,
			      sl->out, &sl->err);
	sl->seconds = (kred__now() - t0) * m->time_scale[sl->d];
	return NULL;
}

/* The shares after a run, from the speeds of the devices that ran a slice. */
static void update_shares(struct multi_state *m, const struct slice *sl)
{
	double held = 0, total = 0, longest = 0, step;
	int ran = 0;

	for (int d = 0; d < m->n; d++) {
		if (sl[d].rows == 0 || sl[d].s != KRED_OK)
			continue;
		/* A clock too coarse for the slice still gives a finite speed. */
		m->speed[d] = (double)sl[d].rows / (sl[d].seconds > 1e-7 ? sl[d].seconds : 1e-7);
		held += m->share[d];
		total += m->speed[d];
		longest = sl[d].seconds > longest ? sl[d].seconds : longest;
		ran++;
	}
	if (ran < 2 || total <= 0)
		return;
	step = SHARE_STEP * longest / (longest + MEASURE_S);
	for (int d = 0; d < m->n; d++)
		if (sl[d].rows > 0 && sl[d].s == KRED_OK)
			m->share[d] += step * (held * m->speed[d] / total - m->share[d]);
}

static void log_run(const struct multi_state *m, const struct slice *sl, int64_t rows)
{
	struct kred__buf b = { 0 };

	for (int d = 0; d < m->n; d++)
		kred__buf_printf(&b, "%s%lld rows in %.2f ms", d ? ", " : "", (long long)sl[d].rows,
				 1e3 * sl[d].seconds);
	kred__buf_puts(&b, "; shares now");
	for (int d = 0; d < m->n; d++)
		kred__buf_printf(&b, " %.3f", m->share[d]);
	kred__log("%s:all: %lld rows: %s", m->inner->name, (long long)rows, b.p ? b.p : "");
	kred__buf_free(&b);
}

static kred_status multi_run(void *state, void *module, const struct kred_reduction *r,
			     int64_t nx, int64_t ny, const void *const *args, void *out,
			     struct kred__error *err)
{
	struct multi_state *m = state;
	const struct multi_module *mm = module;
	const int rows_cat = r->axis == KRED_REDUCE_J ? KRED__CAT_I : KRED__CAT_J;
	const int64_t rows = r->axis == KRED_REDUCE_J ? nx : ny;
	const size_t size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	struct slice *sl;
	const void **argv;
	double acc = 0;
	int64_t start = 0;
	int busy = 0, last = -1;
	kred_status s = KRED_OK;

	if (rows == 0)
		return KRED_OK;
	sl = kred__calloc((size_t)m->n, sizeof(*sl));
	argv = kred__calloc((size_t)m->n * (size_t)(r->n_args > 0 ? r->n_args : 1),
			    sizeof(*argv));
	if (!sl || !argv) {
		kred__free(sl);
		kred__free(argv);
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	}
	for (int d = 0; d < m->n; d++) {
		int64_t end;

		acc += m->share[d];
		end = d == m->n - 1 ? rows : (int64_t)(acc * (double)rows + 0.5);
		end = end < start ? start : end > rows ? rows : end;
		sl[d].m = m;
		sl[d].d = d;
		sl[d].r = *r;
		sl[d].r.module = mm->mods[d];
		sl[d].rows = end - start;
		sl[d].nx = r->axis == KRED_REDUCE_J ? sl[d].rows : nx;
		sl[d].ny = r->axis == KRED_REDUCE_J ? ny : sl[d].rows;
		sl[d].args = argv + (size_t)d * (size_t)(r->n_args > 0 ? r->n_args : 1);
		for (int p = 0; p < r->n_args; p++)
			sl[d].args[p] = r->args[p].cat == rows_cat && sl[d].rows > 0
						? (const char *)args[p] +
							  (size_t)start * (size_t)r->args[p].dim * size
						: args[p];
		sl[d].out = (char *)out + (size_t)start * (size_t)r->out_dim * size;
		if (sl[d].rows > 0) {
			busy++;
			last = d;
		}
		start = end;
	}
	/* The last busy slice runs on this thread; a thread that cannot be made runs here
	 * too, after the others have started. */
	for (int d = 0; d < m->n; d++)
		if (sl[d].rows > 0 && d != last)
			sl[d].threaded = pthread_create(&sl[d].thread, NULL, slice_run, &sl[d]) == 0;
	for (int d = 0; d < m->n; d++)
		if (sl[d].rows > 0 && !sl[d].threaded)
			slice_run(&sl[d]);
	for (int d = 0; d < m->n; d++)
		if (sl[d].threaded)
			pthread_join(sl[d].thread, NULL);
	for (int d = 0; d < m->n && !s; d++) {
		if (sl[d].rows == 0 || sl[d].s == KRED_OK)
			continue;
		s = kred__fail(err, sl[d].s, -1, "%s:%d: %s", m->inner->name, d, sl[d].err.msg);
	}
	if (!s) {
		update_shares(m, sl);
		if (busy > 1 && kred__verbose())
			log_run(m, sl, rows);
	}
	kred__free(argv);
	kred__free(sl);
	return s;
}

static kred_status multi_source(void *state, const struct kred_reduction *r, char **out,
				struct kred__error *err)
{
	const struct multi_state *m = state;
	const struct multi_module *mm = r->module;
	struct kred_reduction r0 = *r;

	/* Device 0's: the inner backend reads its own module from the reduction. */
	r0.module = mm ? mm->mods[0] : NULL;
	if (!m->inner->source) {
		*out = kred__strdup(r->formula_text);
		return *out ? KRED_OK : kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	}
	return m->inner->source(m->states[0], &r0, out, err);
}

/* The least of the devices' memories: each run is sized for the smallest device. A device
 * without a limit of its own (0) does not count. */
static int64_t multi_memory(void *state)
{
	const struct multi_state *m = state;
	int64_t least = 0;

	if (m->inner->version < 2 || !m->inner->memory)
		return 0;
	for (int d = 0; d < m->n; d++) {
		int64_t b = m->inner->memory(m->states[d]);

		if (b > 0 && (least == 0 || b < least))
			least = b;
	}
	return least;
}

const struct kred_backend kred__backend_multi = {
	.version = KRED__BACKEND_VERSION,
	.name = "all",
	.open = multi_open,
	.close = multi_close,
	.describe = multi_describe,
	.is_gpu = multi_is_gpu,
	.compile = multi_compile,
	.run = multi_run,
	.module_free = multi_module_free,
	.source = multi_source,
	.memory = multi_memory,
};

const struct kred_backend *kred__multi_inner(const kred_context *ctx, int *n)
{
	const struct multi_state *m;

	if (!ctx || ctx->backend != &kred__backend_multi)
		return NULL;
	m = ctx->bstate;
	if (n)
		*n = m->n;
	return m->inner;
}

int kred__multi_shares(const kred_context *ctx, double *shares, int max)
{
	const struct multi_state *m;

	if (!ctx || ctx->backend != &kred__backend_multi)
		return 0;
	m = ctx->bstate;
	for (int d = 0; d < m->n && d < max && shares; d++)
		shares[d] = m->share[d];
	return m->n;
}

kred_status kred__multi_test_time_scale(kred_context *ctx, int device, double scale)
{
	struct multi_state *m;

	if (!ctx || ctx->backend != &kred__backend_multi)
		return KRED_EBACKEND;
	m = ctx->bstate;
	if (device < 0 || device >= m->n || !(scale > 0))
		return KRED_EINVAL;
	m->time_scale[device] = scale;
	return KRED_OK;
}
