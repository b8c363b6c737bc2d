/* The run planning of the GPU backends, once for OpenCL, CUDA and Vulkan (device.h), and
 * the making of kernels/tiled.cl's modules for the first two: each backend gives its
 * primitives (buffers, copies, launches, checks, builds) and the figures the plan needs;
 * everything between the library's call and a launch is here, so that the runs POCL and
 * lavapipe do in CI go through the code a GPU runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "device.h"

const char *const kred__kernel_names[KRED__N_KERNELS] = {
	[KRED__K_REDUCE] = "kr_reduce",
	[KRED__K_MERGE] = "kr_merge_parts",
	[KRED__K_PACK] = "kr_pack",
	[KRED__K_SUM_ROWS] = "kr_sum_rows",
};

/* More column ranges than this add merge work and memory for no gain. */
#define MAX_SPLITS 1024

static struct kred__karg mem_arg(kred__dmem m)
{
	return (struct kred__karg){ .type = KRED__ARG_MEM, .v.mem = m };
}

static struct kred__karg long_arg(int64_t l)
{
	return (struct kred__karg){ .type = KRED__ARG_LONG, .v.l = l };
}

static struct kred__karg int_arg(int32_t i)
{
	return (struct kred__karg){ .type = KRED__ARG_INT, .v.i = i };
}

kred_scheme kred__device_scheme(const kred_context *ctx)
{
	const char *env = getenv("KRED_SCHEME");

	if (ctx && ctx->opt.scheme != KRED_SCHEME_AUTO)
		return ctx->opt.scheme;
	if (env && !strcmp(env, "1d"))
		return KRED_SCHEME_1D;
	if (env && !strcmp(env, "2d"))
		return KRED_SCHEME_2D;
	return KRED_SCHEME_AUTO;
}

static kred_status launch(const struct kred__device *d, const void *module, enum kred__kernel k,
			  int64_t gx, int64_t gy, int n, const struct kred__karg *a,
			  struct kred__error *err)
{
	return d->ops->launch(d->state, module, k, gx, gy, n, a, err);
}

static kred_status alloc(const struct kred__device *d, int role, size_t bytes, const void *init,
			 int read_only, kred__dmem *out, struct kred__error *err)
{
	*out = 0;
	return d->ops->alloc(d->state, role, bytes, init, read_only, out, err);
}

static void release(const struct kred__device *d, int role, kred__dmem m)
{
	if (m)
		d->ops->release(d->state, role, m);
}

/* The output's rows nr, the reduced ones nc, and the rows of each side of the packed
 * arguments (row, column, parameters). */
static void rows_cols(const struct kred_reduction *r, int64_t nx, int64_t ny, int64_t *nr,
		      int64_t *nc, int64_t rows[3])
{
	*nr = r->axis == KRED_REDUCE_J ? nx : ny;
	*nc = r->axis == KRED_REDUCE_J ? ny : nx;
	rows[KRED__SIDE_ROW] = *nr;
	rows[KRED__SIDE_COL] = *nc;
	rows[KRED__SIDE_PRM] = 1;
}

/* How many column ranges (groups along dimension 1) the scheme takes for groups row
 * groups over nc columns. */
static int64_t splits(const struct kred__device *d, const struct kred__dmodule *m,
		      int64_t groups, int64_t nr, int64_t nc)
{
	int64_t target = d->target_groups > 0 ? d->target_groups : 1;
	int64_t want = (target + groups - 1) / groups, s;
	size_t bytes_per_split = (size_t)m->nst * (size_t)nr * m->size;

	switch (d->scheme) {
	case KRED_SCHEME_1D:
		return 1;
	case KRED_SCHEME_2D:
		/* Forced: at least two ranges, even of a few columns, so that the merge
		 * always runs. */
		s = want > 2 ? want : 2;
		if (s > (nc + 7) / 8 && s > 2)
			s = (nc + 7) / 8 > 2 ? (nc + 7) / 8 : 2;
		break;
	default:
		/* Enough row groups already, or too few columns to share out. */
		if (2 * groups >= target)
			return 1;
		s = want;
		if (s > nc / (2 * m->shape.tj))
			s = nc / (2 * m->shape.tj);
		if (s < 2)
			return 1;
		break;
	}
	if (s > MAX_SPLITS)
		s = MAX_SPLITS;
	if (m->max_splits > 0 && s > m->max_splits)
		s = m->max_splits;
	if (d->max_grid_y > 0 && s > d->max_grid_y)
		s = d->max_grid_y;
	while (s > 2 && (size_t)s * bytes_per_split > d->parts_cap)
		s /= 2;
	return s;
}

/* out (nr x out_dim) = the reduction of the packed sides: the 1D or 2D scheme. */
static kred_status run_dense(const struct kred__device *d, const struct kred__dmodule *m,
			     int64_t nr, int64_t nc, const kred__dmem *side, kred__dmem out,
			     struct kred__error *err)
{
	const int64_t per_group = (int64_t)m->shape.wg * m->shape.rpw;
	int64_t groups = (nr + per_group - 1) / per_group, ns = splits(d, m, groups, nr, nc);
	kred__dmem parts = 0;
	kred_status s;

	if (ns > 1) {
		s = alloc(d, KRED__MEM_PARTS, (size_t)ns * (size_t)m->nst * (size_t)nr * m->size,
			  NULL, 0, &parts, err);
		if (s)
			return s;
	}
	{
		const struct kred__karg a[] = { mem_arg(side[0]), mem_arg(side[1]),
						mem_arg(side[2]), mem_arg(out),
						mem_arg(parts),	  long_arg(nr),
						long_arg(nc),	  mem_arg(0),
						mem_arg(0) };

		s = launch(d, m, KRED__K_REDUCE, groups, ns, 9, a, err);
	}
	if (!s && ns > 1) {
		const struct kred__karg a[] = { mem_arg(parts), mem_arg(out), long_arg(nr),
						long_arg(ns) };

		/* Padded to whole groups: the kernel drops the tail. */
		s = launch(d, m, KRED__K_MERGE, (nr + m->shape.wg - 1) / m->shape.wg, 1, 4, a,
			   err);
	}
	if (!s)
		kred__log("%s: %lld x %lld, %s scheme, %lld group%s x %lld range%s", d->name,
			  (long long)nr, (long long)nc, ns > 1 ? "2D" : "1D", (long long)groups,
			  groups == 1 ? "" : "s", (long long)ns, ns == 1 ? "" : "s");
	release(d, KRED__MEM_PARTS, parts);
	return s;
}

/* out (nr x out_dim) = the reduction restricted to g: kr_reduce with one group per task
 * of rows (kred__range_tasks), over its block's intervals. */
static kred_status run_ranged(const struct kred__device *d, const struct kred__dmodule *m,
			      int64_t nr, const kred__dmem *side, kred__dmem out,
			      const struct kred__ranges *g, struct kred__error *err)
{
	const int64_t per_group = (int64_t)m->shape.wg * m->shape.rpw;
	int64_t n_tasks = 0, n_red = g->nb ? g->slc[g->nb - 1] : 0;
	int32_t *tasks = NULL;
	kred__dmem tbuf = 0, rbuf = 0;
	kred_status s;

	s = kred__range_tasks(g, nr, per_group, &tasks, &n_tasks, err);
	if (s)
		return s;
	s = alloc(d, KRED__MEM_TASKS, sizeof(*tasks) * 4 * (size_t)n_tasks, tasks, 1, &tbuf, err);
	/* an empty list of intervals still needs a buffer */
	if (!s)
		s = alloc(d, KRED__MEM_RED, sizeof(int32_t) * (size_t)(n_red ? 2 * n_red : 2),
			  n_red ? (const void *)g->red : (const void *)tasks, 1, &rbuf, err);
	kred__free(tasks);
	if (!s) {
		const struct kred__karg a[] = { mem_arg(side[0]), mem_arg(side[1]),
						mem_arg(side[2]), mem_arg(out),
						mem_arg(0),	  long_arg(nr),
						long_arg(0),	  mem_arg(tbuf),
						mem_arg(rbuf) };

		s = launch(d, m, KRED__K_REDUCE, n_tasks, 1, 9, a, err);
	}
	if (!s)
		kred__log("%s: %lld rows in %lld blocks of ranges, %lld groups", d->name,
			  (long long)nr, (long long)g->nb, (long long)n_tasks);
	release(d, KRED__MEM_TASKS, tbuf);
	release(d, KRED__MEM_RED, rbuf);
	return s;
}

/* The arguments of one side packed rows x width on the host; the argument itself when
 * it is alone there. *owned is what to free. */
static const void *pack_host(const struct kred__dmodule *m, const struct kred_reduction *r,
			     int side, int64_t rows, const void *const *args, void **owned)
{
	int stride = m->stride[side], alone = kred__layout_alone(&m->l, r, side);
	char *dst;

	*owned = NULL;
	if (alone >= 0 && stride == m->l.width[side])
		return args[alone];
	dst = kred__malloc((size_t)rows * (size_t)stride * m->size);
	if (!dst)
		return NULL;
	kred__layout_pack(&m->l, r, side, args, 0, rows, stride, m->size, dst);
	*owned = dst;
	return dst;
}

/* out = the reduction of the host arrays args, restricted to g when it is not NULL. */
static kred_status run_host(const struct kred__device *d, const struct kred__dmodule *m,
			    const struct kred_reduction *r, int64_t nx, int64_t ny,
			    const void *const *args, void *out, const struct kred__ranges *g,
			    struct kred__error *err)
{
	kred__dmem side[3] = { 0, 0, 0 }, obuf = 0;
	int64_t nr, nc, rows[3];
	size_t out_bytes;
	kred_status s = KRED_OK;

	rows_cols(r, nx, ny, &nr, &nc, rows);
	if (nr == 0)
		return KRED_OK;
	for (int k = 0; k < 3 && !s; k++) {
		size_t bytes = (size_t)rows[k] * (size_t)m->stride[k] * m->size;
		void *owned = NULL;
		const void *host;

		if (bytes == 0)
			continue;
		host = pack_host(m, r, k, rows[k], args, &owned);
		/* The copy is taken here: the caller's array is free to change on return. */
		s = host ? alloc(d, k, bytes, host, 1, &side[k], err)
			 : kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		kred__free(owned);
	}
	out_bytes = (size_t)nr * (size_t)r->out_dim * m->size;
	if (!s)
		s = alloc(d, KRED__MEM_OUT, out_bytes, NULL, 0, &obuf, err);
	if (!s)
		s = g ? run_ranged(d, m, nr, side, obuf, g, err)
		      : run_dense(d, m, nr, nc, side, obuf, err);
	if (!s) {
		s = d->ops->read(d->state, obuf, out, out_bytes, err);
	} else {
		/* What was queued before the failure still runs: wait for it before the
		 * buffers go (a failure of its own says nothing more). */
		struct kred__error later;

		kred__error_clear(&later);
		d->ops->finish(d->state, &later);
	}
	for (int k = 0; k < 3; k++)
		release(d, k, side[k]);
	release(d, KRED__MEM_OUT, obuf);
	return s;
}

static kred_status begin(const struct kred__device *d, struct kred__error *err)
{
	return d->ops->begin ? d->ops->begin(d->state, err) : KRED_OK;
}

static void end(const struct kred__device *d)
{
	if (d->ops->end)
		d->ops->end(d->state);
}

kred_status kred__device_run(void *state, void *module, const struct kred_reduction *r,
			     int64_t nx, int64_t ny, const void *const *args, void *out,
			     struct kred__error *err)
{
	return kred__device_run_ranged(state, module, r, nx, ny, args, out, NULL, err);
}

kred_status kred__device_run_ranged(void *state, void *module, const struct kred_reduction *r,
				    int64_t nx, int64_t ny, const void *const *args, void *out,
				    const struct kred__ranges *g, struct kred__error *err)
{
	const struct kred__device *d = state;
	kred_status s = begin(d, err);

	if (s)
		return s;
	s = run_host(d, module, r, nx, ny, args, out, g, err);
	end(d);
	return s;
}

/* ---- modules */

int kred__device_pow2(int64_t n)
{
	int p = 1;

	while (p * 2 <= n && p < 1024)
		p *= 2;
	return p;
}

/* The layout and the launch shape of r on d, in m. */
static kred_status module_plan(const struct kred__device *d, const struct kred_reduction *r,
			       struct kred__dmodule *m, struct kred__error *err)
{
	kred_status s = kred__layout_make(r, &m->l, err);

	if (s)
		return s;
	m->nst = kred__emit_nstate(r);
	m->size = r->dtype == KRED_FLOAT64 ? 8 : 4;
	for (int k = 0; k < 3; k++)
		m->stride[k] = m->l.width[k];
	d->ops->shape(d->state, r, &m->l, &m->shape);
	return KRED_OK;
}

/* Builds m at its shape, and again with smaller groups (twice at most) while the device
 * says that its kernels need more registers than the shape's group size leaves. */
static kred_status module_build(const struct kred__device *d, struct kred_reduction *r,
				struct kred__dmodule *m, struct kred__error *err)
{
	for (int tries = 0;; tries++) {
		char *src = NULL;
		int64_t max;
		kred_status s = kred__tiled_source(d->dialect, r, &m->l, &m->shape, &src, err);

		if (!s)
			s = d->ops->build(d->state, r, src, m, err);
		kred__free(src);
		if (s)
			return s;
		/* the group size every kernel of the module can run at */
		max = 0;
		for (int k = 0; k < KRED__N_KERNELS; k++) {
			int64_t mk = d->ops->max_group(d->state, m, (enum kred__kernel)k);

			if (mk <= 0) {
				max = 0;
				break;
			}
			max = max == 0 || mk < max ? mk : max;
		}
		if (max <= 0 || max >= m->shape.wg || tries == 2)
			return KRED_OK;
		kred__log("%s: the kernels run %lld work-items per group, not %d: building "
			  "again", d->name, (long long)max, m->shape.wg);
		d->ops->unload(d->state, m);
		m->shape.wg = kred__device_pow2(max);
		if (m->shape.tj > m->shape.wg && m->shape.local_tiles)
			m->shape.tj = m->shape.wg;
	}
}

kred_status kred__device_compile(void *state, struct kred_reduction *r, void **module,
				 struct kred__error *err)
{
	const struct kred__device *d = state;
	struct kred__dmodule *m;
	kred_status s;

	*module = NULL;
	m = kred__calloc(1, d->module_size);
	if (!m)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	s = module_plan(d, r, m, err);
	/* Compile-only: the module gives the source its shape, and nothing runs. */
	if (!s && !d->compile_only) {
		s = begin(d, err);
		if (!s) {
			s = module_build(d, r, m, err);
			if (s)
				d->ops->unload(d->state, m);
			end(d);
		}
	}
	if (s) {
		kred__layout_free(&m->l);
		kred__free(m);
		return s;
	}
	*module = m;
	return KRED_OK;
}

void kred__device_module_free(void *state, void *module)
{
	const struct kred__device *d = state;
	struct kred__dmodule *m = module;
	struct kred__error e;

	if (!m)
		return;
	kred__error_clear(&e);
	if (!d->compile_only && begin(d, &e) == KRED_OK) {
		d->ops->unload(d->state, m);
		end(d);
	}
	kred__layout_free(&m->l);
	kred__free(m);
}

kred_status kred__device_source(void *state, const struct kred_reduction *r, char **out,
				struct kred__error *err)
{
	const struct kred__device *d = state;
	const struct kred__dmodule *m = r->module;
	struct kred__dmodule plan = { 0 };
	kred_status s;

	if (m)
		return kred__tiled_source(d->dialect, r, &m->l, &m->shape, out, err);
	s = module_plan(d, r, &plan, err);
	if (!s)
		s = kred__tiled_source(d->dialect, r, &plan.l, &plan.shape, out, err);
	kred__layout_free(&plan.l);
	return s;
}

struct kred__device *kred__device_of(kred_context *ctx, const struct kred_backend *b,
				     const char *call, const char *hint)
{
	int n = 0;

	if (kred__multi_inner(ctx, &n) == b) {
		kred__ctx_fail(ctx, KRED_EBACKEND, "%s works on one device, not with %s:all (%d "
			       "devices): %s", call, b->name, n, hint);
		return NULL;
	}
	if (ctx->backend != b) {
		kred__ctx_fail(ctx, KRED_EBACKEND, "%s needs %s %s context, not %s", call,
			       strchr("aeiou", b->name[0]) ? "an" : "a", b->name,
			       kred_context_backend(ctx));
		return NULL;
	}
	return ctx->bstate;
}

/* ---- runs on buffers the user gave */

/* The buffer of one side: the argument's own when it is alone there, else one that
 * kr_pack fills (in *owned). */
static kred_status pack_device(const struct kred__device *d, const struct kred__dmodule *m,
			       const struct kred_reduction *r, int side, int64_t rows,
			       const kred__dmem *mems, kred__dmem *buf, kred__dmem *owned,
			       struct kred__error *err)
{
	int width = m->l.width[side], alone = kred__layout_alone(&m->l, r, side);
	kred_status s;

	*buf = *owned = 0;
	if (width == 0 || rows == 0)
		return KRED_OK;
	if (alone >= 0) {
		*buf = mems[alone];
		return KRED_OK;
	}
	s = alloc(d, side, (size_t)rows * (size_t)width * m->size, NULL, 0, owned, err);
	if (s)
		return s;
	*buf = *owned;
	for (int p = 0; p < m->l.n_args; p++) {
		const int32_t dim = r->args[p].dim;
		const struct kred__karg a[] = { mem_arg(mems[p]),	 mem_arg(*owned),
						long_arg(rows),		 int_arg(dim),
						int_arg(width),		 int_arg(m->l.offset[p]) };

		if (m->l.side[p] != side)
			continue;
		s = launch(d, m, KRED__K_PACK, (rows * dim + m->shape.wg - 1) / m->shape.wg, 1, 6,
			   a, err);
		if (s)
			return s;
	}
	return KRED_OK;
}

static kred_status buffers_plain(const struct kred__device *d, const struct kred_reduction *r,
				 int64_t nx, int64_t ny, const kred__dmem *mems, kred__dmem out,
				 struct kred__error *err)
{
	const struct kred__dmodule *m = r->module;
	kred__dmem side[3] = { 0, 0, 0 }, owned[3] = { 0, 0, 0 };
	int64_t nr, nc, rows[3];
	kred_status s = KRED_OK;

	rows_cols(r, nx, ny, &nr, &nc, rows);
	if (nr == 0)
		return KRED_OK;
	for (int k = 0; k < 3 && !s; k++)
		s = pack_device(d, m, r, k, rows[k], mems, &side[k], &owned[k], err);
	if (!s)
		s = run_dense(d, m, nr, nc, side, out, err);
	for (int k = 0; k < 3; k++)
		release(d, k, owned[k]);
	return s;
}

/* Rows below which one launch sums them, each work-item walking all the rows of its
 * column; past it, parts of about sqrt(rows) rows are summed first. */
#define SUM_ROWS_ONE 4096

/* out (d values) = the sums of the columns of rows_out (n x d), compensated. */
static kred_status sum_rows(const struct kred__device *d, const struct kred__dmodule *m,
			    kred__dmem rows_out, kred__dmem out, int64_t n, int dim,
			    struct kred__error *err)
{
	int64_t chunk = n > 0 ? n : 1, parts = 1, wg = m->shape.wg;
	kred__dmem part = 0;
	kred_status s;

	if (n > SUM_ROWS_ONE) {
		for (chunk = 1; chunk * chunk < n; chunk *= 2)
			;
		parts = (n + chunk - 1) / chunk;
		s = alloc(d, KRED__MEM_OWN, (size_t)(parts * dim) * m->size, NULL, 0, &part, err);
		if (s)
			return s;
	}
	{
		const struct kred__karg a[] = { mem_arg(rows_out), mem_arg(part ? part : out),
						long_arg(n), int_arg(dim), long_arg(chunk) };

		s = launch(d, m, KRED__K_SUM_ROWS, (parts * dim + wg - 1) / wg + !dim, 1, 5, a, err);
	}
	if (!s && part) {
		const struct kred__karg a[] = { mem_arg(part), mem_arg(out), long_arg(parts),
						int_arg(dim), long_arg(parts) };

		s = launch(d, m, KRED__K_SUM_ROWS, (dim + wg - 1) / wg + !dim, 1, 5, a, err);
	}
	release(d, KRED__MEM_OWN, part);
	return s;
}

/* kred_reduction_run's run_inner on device buffers: the auxiliary reduction first, then
 * the reduction, then the row sum of a parameter's gradient. */
static kred_status buffers_run(const struct kred__device *d, const struct kred_reduction *r,
			       int64_t nx, int64_t ny, const kred__dmem *mems, kred__dmem out,
			       struct kred__error *err)
{
	const struct kred__dmodule *m = r->module;
	kred__dmem *mems2 = NULL, pre_out = 0, rows_out = 0;
	kred_status s = KRED_OK;

	if (r->pre) {
		int64_t rows = r->pre->axis == KRED_REDUCE_J ? nx : ny;

		mems2 = kred__calloc((size_t)r->n_args, sizeof(*mems2));
		if (!mems2)
			return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		if (rows > 0)
			s = alloc(d, KRED__MEM_OWN, (size_t)rows * (size_t)r->pre->out_dim * m->size,
				  NULL, 0, &pre_out, err);
		if (!s)
			s = buffers_run(d, r->pre, nx, ny, mems, pre_out, err);
		if (s)
			goto done;
		memcpy(mems2, mems, sizeof(*mems2) * (size_t)(r->n_args - 1));
		mems2[r->n_args - 1] = pre_out;
		mems = mems2;
	}
	if (r->pm_sum) {
		int64_t rows = r->axis == KRED_REDUCE_J ? nx : ny;

		if (rows > 0)
			s = alloc(d, KRED__MEM_OWN, (size_t)rows * (size_t)r->out_dim * m->size,
				  NULL, 0, &rows_out, err);
		if (!s)
			s = buffers_plain(d, r, nx, ny, mems, rows_out, err);
		if (!s)
			s = sum_rows(d, m, rows_out, out, rows, r->out_dim, err);
	} else {
		s = buffers_plain(d, r, nx, ny, mems, out, err);
	}
done:
	release(d, KRED__MEM_OWN, pre_out);
	release(d, KRED__MEM_OWN, rows_out);
	kred__free(mems2);
	return s;
}

/* bytes = rows * dim * size, or -1 on overflow. */
static int64_t bytes_of(int64_t rows, int64_t dim, int64_t size)
{
	if (rows < 0 || dim < 0 || (dim && rows > INT64_MAX / dim / size))
		return -1;
	return rows * dim * size;
}

static kred_status check_user(const struct kred__device *d, const struct kred_reduction *r,
			      int64_t nx, int64_t ny, const kred__dmem *mems, kred__dmem out,
			      struct kred__error *err)
{
	int64_t size = r->dtype == KRED_FLOAT64 ? 8 : 4, rows, need, reduced;
	int n_user = kred_reduction_n_args(r);
	kred_status s;

	if (nx < 0 || ny < 0)
		return kred__fail(err, KRED_EINVAL, -1, "negative size (nx = %lld, ny = %lld)",
				  (long long)nx, (long long)ny);
	if (n_user && !mems)
		return kred__fail(err, KRED_EINVAL, -1, "%s is NULL but the reduction takes %d "
				  "arguments", d->args_name, n_user);
	for (int k = 0; k < n_user; k++) {
		char what[64];

		rows = r->args[k].cat == 0 ? nx : r->args[k].cat == 1 ? ny : 1;
		need = bytes_of(rows, r->args[k].dim, size);
		if (need < 0)
			return kred__fail(err, KRED_EOVERFLOW, -1, "argument %d: %lld x %d values "
					  "overflow", k, (long long)rows, r->args[k].dim);
		if (need == 0)
			continue;
		if (!mems[k])
			return kred__fail(err, KRED_EINVAL, -1, "argument %d is %s", k, d->none);
		snprintf(what, sizeof(what), "argument %d", k);
		s = d->ops->check(d->state, mems[k], need, what, err);
		if (s)
			return s;
	}
	rows = r->pm_sum ? 1 : r->axis == KRED_REDUCE_J ? nx : ny;
	need = bytes_of(rows, r->out_dim, size);
	if (need < 0 || bytes_of(r->axis == KRED_REDUCE_J ? nx : ny, r->out_dim, size) < 0)
		return kred__fail(err, KRED_EOVERFLOW, -1, "output of %lld x %d values overflows",
				  (long long)rows, r->out_dim);
	if (need > 0) {
		if (!out)
			return kred__fail(err, KRED_EINVAL, -1, "%s is %s", d->out_name, d->none);
		s = d->ops->check(d->state, out, need, "the output", err);
		if (s)
			return s;
	}
	reduced = r->axis == KRED_REDUCE_J ? ny : nx;
	if ((kred__reds[r->red].flags & KRED__RED_INDEX) && r->dtype == KRED_FLOAT32 &&
	    reduced > (1 << 24))
		return kred__fail(err, KRED_ERANGE, -1, "%s over %lld terms in float32: indices "
				  "above 2^24 are not exact in float32; use float64",
				  kred__reds[r->red].name, (long long)reduced);
	return KRED_OK;
}

kred_status kred__device_run_user(const struct kred__device *d, kred_reduction *r, int64_t nx,
				  int64_t ny, const kred__dmem *mems, kred__dmem out, void *queue)
{
	struct kred__error err, later;
	kred_status s, w;

	kred__error_clear(&err);
	kred__error_clear(&later);
	s = check_user(d, r, nx, ny, mems, out, &err);
	if (!s)
		s = begin(d, &err);
	if (!s) {
		pthread_mutex_lock(&r->ctx->lock); /* the context's runs are serialised */
		if (queue)
			d->ops->queue(d->state, queue);
		s = buffers_run(d, r, nx, ny, mems, out, &err);
		/* Returns with the work done, so that the caller may use the output on any
		 * queue or stream. */
		w = d->ops->finish(d->state, s ? &later : &err);
		if (queue)
			d->ops->queue(d->state, NULL);
		pthread_mutex_unlock(&r->ctx->lock);
		end(d);
		if (!s)
			s = w;
	}
	if (s)
		kred__ctx_set_error(r->ctx, &err, NULL);
	return s;
}
