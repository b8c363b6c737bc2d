/* kred._kred: the C layer of the Python package. Contexts and reductions as Python objects
 * over libkred, runs on host buffers and on CUDA device pointers with the GIL released, and
 * kred's errors as Python exceptions. Everything else (arrays, autograd) is Python. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kred.h"

/* What this file uses from Pythons newer than the oldest it builds for (3.8). */
#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *Py_NewRef(PyObject *o)
{
	Py_INCREF(o);
	return o;
}

static int PyModule_AddObjectRef(PyObject *m, const char *name, PyObject *v)
{
	Py_INCREF(v);
	if (PyModule_AddObject(m, name, v)) {
		Py_DECREF(v);
		return -1;
	}
	return 0;
}
#endif
#if PY_VERSION_HEX < 0x03090000
#define PyObject_CallOneArg(f, a) PyObject_CallFunctionObjArgs((f), (a), NULL)
#endif

/* The row count of an output or argument, by category: as kred_reduction_arg numbers them,
 * plus OUT_VECTOR for the output of a parameter's gradient (one vector, no rows). */
enum { CAT_I = 0, CAT_J = 1, CAT_PM = 2, OUT_VECTOR = 2 };

typedef struct {
	PyObject_HEAD
	kred_context *ctx;
	/* kred lets one thread at a time use a context and the reductions made from it, and
	 * runs release the GIL: this lock is what serialises them. It also keeps a context's
	 * last error message for the thread that caused it. */
	PyThread_type_lock lock;
} ContextObject;

typedef struct {
	PyObject_HEAD
	ContextObject *owner; /* a reduction must not outlive its context */
	kred_reduction *r;
	kred_dtype dtype;
	int out_cat; /* CAT_I: nx rows, CAT_J: ny rows, OUT_VECTOR: out_dim values */
	int out_dim;
	int n_args;
	int *cat, *dim;
	PyObject *args_info; /* tuple of (category, dim, name) */
} ReductionObject;

static PyTypeObject ContextType;
static PyTypeObject ReductionType;

/* ---- errors: captured under the context's lock (no GIL), raised with the GIL ---- */

struct error {
	kred_status status;
	char *msg, *log;
	long offset;
};

static char *dup_text(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	char *p = malloc(n + 1);

	if (p) {
		if (n)
			memcpy(p, s, n);
		p[n] = 0;
	}
	return p;
}

/* Copies what kred says about the failed call; called with the lock held. */
static void error_capture(struct error *e, const kred_context *ctx, kred_status st)
{
	const char *msg = kred_errmsg(ctx);

	e->status = st;
	e->msg = dup_text(msg && *msg ? msg : kred_status_message(st));
	e->log = st == KRED_EBUILD ? dup_text(kred_error_log(ctx)) : NULL;
	e->offset = kred_error_offset(ctx);
}

/* The Python exception of a kred status: what the caller got wrong is a ValueError (a
 * formula, an alias, a size), what the machine cannot do a RuntimeError. */
static PyObject *error_type(kred_status st)
{
	switch (st) {
	case KRED_ENOMEM: return PyExc_MemoryError;
	case KRED_EBACKEND:
	case KRED_EBUILD:
	case KRED_EDEVICE:
	case KRED_EUNSUPPORTED:
	case KRED_EIO: return PyExc_RuntimeError;
	default: return PyExc_ValueError;
	}
}

/* Raises e (prefixed by what, when not NULL) and frees it. The exception carries kred's
 * status name, the byte offset in the formula (None when the error has no position) and,
 * for a failed kernel build, the compiler's log. Returns NULL. */
static PyObject *error_raise(struct error *e, const char *what)
{
	PyObject *type = error_type(e->status), *exc, *v;
	const char *msg = e->msg ? e->msg : kred_status_message(e->status);
	size_t len = strlen(msg);

	/* kred's formula messages end with the caret line and a newline: keep the caret,
	 * drop the final newline. */
	while (len && msg[len - 1] == '\n')
		len--;
	v = what ? PyUnicode_FromFormat("%s: %.*s", what, (int)len, msg)
		 : PyUnicode_FromStringAndSize(msg, (Py_ssize_t)len);
	exc = v ? PyObject_CallOneArg(type, v) : NULL;
	Py_XDECREF(v);
	if (exc) {
		PyObject *status = PyUnicode_FromString(kred_status_name(e->status));
		PyObject *offset = e->offset >= 0 ? PyLong_FromLong(e->offset) : Py_NewRef(Py_None);
		PyObject *log = e->log ? PyUnicode_DecodeUTF8(e->log, (Py_ssize_t)strlen(e->log),
							      "replace")
				       : Py_NewRef(Py_None);

		if (!status || !offset || !log ||
		    PyObject_SetAttrString(exc, "status", status) ||
		    PyObject_SetAttrString(exc, "offset", offset) ||
		    PyObject_SetAttrString(exc, "log", log)) {
			Py_CLEAR(exc);
		}
		Py_XDECREF(status);
		Py_XDECREF(offset);
		Py_XDECREF(log);
	}
	if (exc) {
		PyErr_SetObject(type, exc);
		Py_DECREF(exc);
	}
	free(e->msg);
	free(e->log);
	e->msg = e->log = NULL;
	return NULL;
}

static void lock_with_gil(ContextObject *c)
{
	if (!PyThread_acquire_lock(c->lock, NOWAIT_LOCK)) {
		Py_BEGIN_ALLOW_THREADS
		PyThread_acquire_lock(c->lock, WAIT_LOCK);
		Py_END_ALLOW_THREADS
	}
}

/* ---- small conversions ---- */

static int to_dtype(PyObject *o, kred_dtype *out)
{
	const char *s;

	if (PyLong_Check(o)) {
		long v = PyLong_AsLong(o);

		if (v == KRED_FLOAT32 || v == KRED_FLOAT64) {
			*out = (kred_dtype)v;
			return 0;
		}
	} else if (PyUnicode_Check(o) && (s = PyUnicode_AsUTF8(o))) {
		if (!strcmp(s, "float32") || !strcmp(s, "float64")) {
			*out = s[5] == '6' ? KRED_FLOAT64 : KRED_FLOAT32;
			return 0;
		}
	}
	if (!PyErr_Occurred())
		PyErr_Format(PyExc_TypeError, "dtype must be 'float32' or 'float64', not %R", o);
	return -1;
}

/* A list of C strings borrowed from a sequence of str; *keep holds the references. */
static const char **string_list(PyObject *seq, const char *what, PyObject **keep, size_t *n)
{
	const char **list;
	Py_ssize_t len;

	*keep = PySequence_Fast(seq, what);
	if (!*keep)
		return NULL;
	len = PySequence_Fast_GET_SIZE(*keep);
	list = PyMem_Calloc((size_t)len + 1, sizeof(*list));
	if (!list) {
		PyErr_NoMemory();
		return NULL;
	}
	for (Py_ssize_t k = 0; k < len; k++) {
		PyObject *item = PySequence_Fast_GET_ITEM(*keep, k);

		if (!PyUnicode_Check(item)) {
			PyErr_Format(PyExc_TypeError, "%s: item %zd is %.100s, not str", what, k,
				     Py_TYPE(item)->tp_name);
			PyMem_Free(list);
			return NULL;
		}
		list[k] = PyUnicode_AsUTF8(item);
		if (!list[k]) {
			PyMem_Free(list);
			return NULL;
		}
	}
	*n = (size_t)len;
	return list;
}

/* ---- Reduction ---- */

/* Wraps r (owned from now on), made on context c, whose output has out_cat rows. */
static PyObject *reduction_wrap(ContextObject *c, kred_reduction *r, kred_dtype dtype,
				int out_cat)
{
	ReductionObject *o = PyObject_New(ReductionObject, &ReductionType);
	int n = kred_reduction_n_args(r);

	if (!o) {
		kred_reduction_destroy(r);
		return NULL;
	}
	o->owner = (ContextObject *)Py_NewRef(c);
	o->r = r;
	o->dtype = dtype;
	o->out_cat = out_cat;
	o->out_dim = kred_reduction_out_dim(r);
	o->n_args = n;
	o->cat = PyMem_Calloc((size_t)n + 1, sizeof(int));
	o->dim = PyMem_Calloc((size_t)n + 1, sizeof(int));
	o->args_info = PyTuple_New(n);
	if (!o->cat || !o->dim || !o->args_info) {
		Py_DECREF(o);
		return PyErr_NoMemory();
	}
	for (int k = 0; k < n; k++) {
		const char *name = "";
		PyObject *t;

		kred_reduction_arg(r, k, &o->cat[k], &o->dim[k], &name);
		t = Py_BuildValue("(iis)", o->cat[k], o->dim[k], name);
		if (!t) {
			Py_DECREF(o);
			return NULL;
		}
		PyTuple_SET_ITEM(o->args_info, k, t);
	}
	return (PyObject *)o;
}

static void reduction_dealloc(ReductionObject *o)
{
	if (o->r) {
		lock_with_gil(o->owner);
		kred_reduction_destroy(o->r);
		PyThread_release_lock(o->owner->lock);
	}
	Py_XDECREF(o->owner);
	Py_XDECREF(o->args_info);
	PyMem_Free(o->cat);
	PyMem_Free(o->dim);
	PyObject_Free(o);
}

PyDoc_STRVAR(grad_doc,
	     "grad(var) -> Reduction\n\n"
	     "The gradient reduction with respect to argument var (its position, or its alias\n"
	     "name). Its arguments: this reduction's, then the cotangent GRAD_OUT (shaped like\n"
	     "this output), then the forward output FWD_OUT for every reduction but Sum. Its\n"
	     "output is shaped like argument var (one vector for a Pm).");

static PyObject *reduction_grad(ReductionObject *self, PyObject *var)
{
	ContextObject *c = self->owner;
	kred_reduction *g = NULL;
	struct error e = { 0 };
	char name[32];
	const char *v;
	kred_status st;
	int pos = -1;

	if (PyLong_Check(var)) {
		long k = PyLong_AsLong(var);

		if (k < 0 || k >= self->n_args) {
			if (!PyErr_Occurred())
				PyErr_Format(PyExc_ValueError, "grad: argument %ld is out of range "
					     "(the reduction takes %d)", k, self->n_args);
			return NULL;
		}
		pos = (int)k;
		snprintf(name, sizeof(name), "#%d", pos);
		v = name;
	} else if (PyUnicode_Check(var)) {
		v = PyUnicode_AsUTF8(var);
		if (!v)
			return NULL;
		for (int k = 0; k < self->n_args && pos < 0; k++) {
			PyObject *n = PyTuple_GET_ITEM(PyTuple_GET_ITEM(self->args_info, k), 2);

			if (!strcmp(PyUnicode_AsUTF8(n), v))
				pos = k;
		}
	} else {
		return PyErr_Format(PyExc_TypeError, "grad: var is an int or a str, not %.100s",
				    Py_TYPE(var)->tp_name);
	}
	Py_BEGIN_ALLOW_THREADS
	PyThread_acquire_lock(c->lock, WAIT_LOCK);
	st = kred_reduction_grad(self->r, v, &g);
	if (st)
		error_capture(&e, c->ctx, st);
	PyThread_release_lock(c->lock);
	Py_END_ALLOW_THREADS
	if (st)
		return error_raise(&e, NULL);
	if (pos < 0) { /* "#POS", or a name kred knows but no argument has */
		pos = v[0] == '#' ? atoi(v + 1) : -1;
		if (pos < 0 || pos >= self->n_args) {
			lock_with_gil(c);
			kred_reduction_destroy(g);
			PyThread_release_lock(c->lock);
			return PyErr_Format(PyExc_ValueError, "grad: no argument is '%s'", v);
		}
	}
	return reduction_wrap(c, g, self->dtype, self->cat[pos]);
}

/* rows * dim * size, or -1 when it overflows. */
static int64_t byte_count(int64_t rows, int64_t dim, int64_t size)
{
	int64_t n;

	if (rows < 0 || __builtin_mul_overflow(rows, dim, &n) ||
	    __builtin_mul_overflow(n, size, &n))
		return -1;
	return n;
}

static int64_t rows_of(int cat, int64_t nx, int64_t ny)
{
	return cat == CAT_I ? nx : cat == CAT_J ? ny : 1;
}

/* Whether a buffer holds values of kred's dtype, in native byte order. */
static int format_ok(const Py_buffer *b, kred_dtype dtype)
{
	const char *f = b->format ? b->format : "B";
	char want = dtype == KRED_FLOAT64 ? 'd' : 'f';

	if (*f == '@' || *f == '=' || *f == '<')
		f++;
	return f[0] == want && !f[1] && b->itemsize == (dtype == KRED_FLOAT64 ? 8 : 4);
}

static const char *arg_name(const ReductionObject *self, int k)
{
	return PyUnicode_AsUTF8(PyTuple_GET_ITEM(PyTuple_GET_ITEM(self->args_info, k), 2));
}

/* Checks that buffer b (argument k, or the output when k < 0) holds exactly the values the
 * run reads or writes: the last defence against a crash, since the Python layer checks
 * shapes first. */
static int check_buffer(const ReductionObject *self, const Py_buffer *b, int k, int64_t nx,
			int64_t ny)
{
	int cat = k < 0 ? self->out_cat : self->cat[k];
	int dim = k < 0 ? self->out_dim : self->dim[k];
	int64_t want = byte_count(rows_of(cat, nx, ny), dim, self->dtype == KRED_FLOAT64 ? 8 : 4);
	char what[96];

	if (k < 0)
		snprintf(what, sizeof(what), "the output");
	else
		snprintf(what, sizeof(what), "argument %d (%s)", k, arg_name(self, k));
	if (!format_ok(b, self->dtype)) {
		PyErr_Format(PyExc_TypeError, "%s holds '%s' values, but the reduction is %s", what,
			     b->format ? b->format : "B",
			     self->dtype == KRED_FLOAT64 ? "float64" : "float32");
		return -1;
	}
	if (want < 0 || (int64_t)b->len != want) {
		PyErr_Format(PyExc_ValueError, "%s has %zd bytes, but nx = %lld, ny = %lld need "
			     "%lld", what, b->len, (long long)nx, (long long)ny, (long long)want);
		return -1;
	}
	return 0;
}

/* ---- ranges ---- */

/* KeOps's ranges: a sequence of six int32 buffers (ranges_i, slices_i, redranges_j,
 * ranges_j, slices_j, redranges_i), the last three None when kred is to derive them. The
 * views stay held until ranges_release. */
struct ranges_view {
	kred_ranges rg;
	Py_buffer v[6];
};

static const char *const range_names[6] = { "ranges_i", "slices_i", "redranges_j",
					     "ranges_j", "slices_j", "redranges_i" };

static void ranges_release(struct ranges_view *rv)
{
	for (int k = 0; k < 6; k++)
		if (rv->v[k].obj)
			PyBuffer_Release(&rv->v[k]);
}

/* An int32 buffer, C-contiguous: what kred reads. */
static int int32_buffer(PyObject *o, Py_buffer *b, const char *what)
{
	const char *f;

	if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT))
		return -1;
	f = b->format ? b->format : "B";
	if (*f == '@' || *f == '=' || *f == '<')
		f++;
	if (b->itemsize != 4 || !(f[0] == 'i' || (f[0] == 'l' && sizeof(long) == 4)) || f[1]) {
		PyErr_Format(PyExc_TypeError, "%s holds '%s' values, not int32", what,
			     b->format ? b->format : "B");
		PyBuffer_Release(b);
		b->obj = NULL;
		return -1;
	}
	return 0;
}

/* Fills rv from obj (None: rv->rg.struct_size stays 0, no ranges). */
static int ranges_get(PyObject *obj, struct ranges_view *rv)
{
	PyObject *seq;
	Py_ssize_t n;
	int64_t nb[2] = { 0, 0 };
	const int32_t *p[6] = { 0 };

	memset(rv, 0, sizeof(*rv));
	if (obj == Py_None)
		return 0;
	seq = PySequence_Fast(obj, "ranges must be a tuple of 6 int32 arrays (KeOps' layout)");
	if (!seq)
		return -1;
	n = PySequence_Fast_GET_SIZE(seq);
	if (n != 6) {
		Py_DECREF(seq);
		PyErr_Format(PyExc_ValueError, "ranges holds %zd arrays, not 6 (ranges_i, slices_i, "
			     "redranges_j, ranges_j, slices_j, redranges_i)", n);
		return -1;
	}
	for (int t = 0; t < 2; t++) {
		int given = 0;

		for (int k = 3 * t; k < 3 * t + 3; k++)
			given += PySequence_Fast_GET_ITEM(seq, k) != Py_None;
		if (t == 0 && given < 3) {
			PyErr_Format(PyExc_ValueError, "ranges: %s, %s and %s must be arrays",
				     range_names[0], range_names[1], range_names[2]);
			goto fail;
		}
		if (given != 0 && given != 3) {
			PyErr_Format(PyExc_ValueError, "ranges: %s, %s and %s are all arrays or all "
				     "None (derived)", range_names[3], range_names[4], range_names[5]);
			goto fail;
		}
		if (!given)
			continue;
		for (int k = 3 * t; k < 3 * t + 3; k++) {
			if (int32_buffer(PySequence_Fast_GET_ITEM(seq, k), &rv->v[k], range_names[k]))
				goto fail;
			p[k] = rv->v[k].buf;
		}
		{
			Py_buffer *rng = &rv->v[3 * t], *slc = &rv->v[3 * t + 1], *red = &rv->v[3 * t + 2];
			int64_t most = 0;

			nb[t] = slc->len / 4;
			if (rng->len / 4 != 2 * nb[t]) {
				PyErr_Format(PyExc_ValueError, "ranges: %s holds %zd values, but %s's "
					     "%lld blocks need %lld", range_names[3 * t], rng->len / 4,
					     range_names[3 * t + 1], (long long)nb[t],
					     (long long)(2 * nb[t]));
				goto fail;
			}
			for (int64_t b = 0; b < nb[t]; b++)
				if (p[3 * t + 1][b] > most)
					most = p[3 * t + 1][b];
			if (red->len / 4 < 2 * most) {
				PyErr_Format(PyExc_ValueError, "ranges: %s holds %zd values, but %s "
					     "reaches interval %lld", range_names[3 * t + 2],
					     red->len / 4, range_names[3 * t + 1], (long long)most);
				goto fail;
			}
		}
	}
	Py_DECREF(seq);
	rv->rg.struct_size = sizeof(rv->rg);
	rv->rg.n_blocks_i = nb[0];
	rv->rg.ranges_i = p[0];
	rv->rg.slices_i = p[1];
	rv->rg.redranges_j = p[2];
	rv->rg.n_blocks_j = nb[1];
	rv->rg.ranges_j = p[3];
	rv->rg.slices_j = p[4];
	rv->rg.redranges_i = p[5];
	return 0;
fail:
	Py_DECREF(seq);
	ranges_release(rv);
	return -1;
}

PyDoc_STRVAR(run_doc,
	     "run(nx, ny, args, out, ranges=None)\n\n"
	     "Runs the reduction on host memory: args holds one C-contiguous buffer per argument\n"
	     "(numpy arrays of the reduction's dtype), out a writable one. Each must hold\n"
	     "exactly the values kred reads or writes. ranges: KeOps' six int32 arrays of a\n"
	     "block-sparse run (kred_reduction_run_ranges), or None. The GIL is released\n"
	     "meanwhile.");

static PyObject *reduction_run(ReductionObject *self, PyObject *const *argv, Py_ssize_t argc)
{
	ContextObject *c = self->owner;
	long long nx, ny;
	PyObject *seq = NULL, *result = NULL;
	Py_buffer *bufs = NULL, outb = { 0 };
	const void **ptrs = NULL;
	struct error e = { 0 };
	Py_ssize_t n = 0, got = 0;
	kred_status st;

	struct ranges_view rv;

	if (argc != 4 && argc != 5)
		return PyErr_Format(PyExc_TypeError,
				    "run takes 4 or 5 arguments (nx, ny, args, out, ranges)");
	if (ranges_get(argc == 5 ? argv[4] : Py_None, &rv))
		return NULL;
	nx = PyLong_AsLongLong(argv[0]);
	ny = PyLong_AsLongLong(argv[1]);
	if (PyErr_Occurred())
		goto done;
	if (nx < 0 || ny < 0) {
		PyErr_Format(PyExc_ValueError, "negative size (nx = %lld, ny = %lld)", nx, ny);
		goto done;
	}
	seq = PySequence_Fast(argv[2], "run: args must be a sequence");
	if (!seq)
		goto done;
	n = PySequence_Fast_GET_SIZE(seq);
	if (n != self->n_args) {
		PyErr_Format(PyExc_ValueError, "the reduction takes %d arguments, not %zd",
			     self->n_args, n);
		goto done;
	}
	bufs = PyMem_Calloc((size_t)n + 1, sizeof(*bufs));
	ptrs = PyMem_Calloc((size_t)n + 1, sizeof(*ptrs));
	if (!bufs || !ptrs) {
		PyErr_NoMemory();
		goto done;
	}
	for (; got < n; got++) {
		if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &bufs[got],
				       PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) ||
		    check_buffer(self, &bufs[got], (int)got, nx, ny)) {
			if (bufs[got].obj)
				got++;
			goto done;
		}
		ptrs[got] = bufs[got].buf;
	}
	if (PyObject_GetBuffer(argv[3], &outb,
			       PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) ||
	    check_buffer(self, &outb, -1, nx, ny))
		goto done;
	Py_BEGIN_ALLOW_THREADS
	PyThread_acquire_lock(c->lock, WAIT_LOCK);
	st = kred_reduction_run_ranges(self->r, nx, ny, ptrs, outb.buf,
				       rv.rg.struct_size ? &rv.rg : NULL);
	if (st)
		error_capture(&e, c->ctx, st);
	PyThread_release_lock(c->lock);
	Py_END_ALLOW_THREADS
	if (st)
		error_raise(&e, NULL);
	else
		result = Py_NewRef(Py_None);
done:
	ranges_release(&rv);
	if (outb.obj)
		PyBuffer_Release(&outb);
	for (Py_ssize_t k = 0; k < got; k++)
		PyBuffer_Release(&bufs[k]);
	PyMem_Free(bufs);
	PyMem_Free(ptrs);
	Py_XDECREF(seq);
	return result;
}

PyDoc_STRVAR(run_cuda_doc,
	     "run_cuda(nx, ny, ptrs, out, stream=0)\n\n"
	     "Runs the reduction on CUDA memory of the context's GPU: ptrs holds one device\n"
	     "address (an int, 0 where there is nothing to read) per argument, out the output's.\n"
	     "kred checks that each is device memory large enough. stream: a CUstream as an int\n"
	     "(torch's Stream.cuda_stream), on which kred queues its work after what is there\n"
	     "(kred_reduction_run_cuda_stream); 0 is the legacy default stream. The call\n"
	     "returns once the output is written. The GIL is released meanwhile.");

PyDoc_STRVAR(run_host_doc,
	     "run_host(nx, ny, ptrs, out, ranges=None)\n\n"
	     "run() on host addresses (ints) rather than buffers, for array libraries whose\n"
	     "buffers are slow to reach (torch): the caller vouches that each holds exactly the\n"
	     "C-contiguous values of the reduction's dtype that run() would check.");

/* run_cuda and run_host: addresses as ints, device or host. */
static PyObject *run_addresses(ReductionObject *self, PyObject *args, int cuda)
{
	ContextObject *c = self->owner;
	long long nx, ny;
	unsigned long long out, stream = 0;
	PyObject *list, *seq;
	uint64_t *ptrs;
	const void **host;
	struct error e = { 0 };
	kred_status st;
	Py_ssize_t n;

	PyObject *ranges = Py_None;
	struct ranges_view rv;

	if (cuda ? !PyArg_ParseTuple(args, "LLOK|K", &nx, &ny, &list, &out, &stream)
		 : !PyArg_ParseTuple(args, "LLOK|O", &nx, &ny, &list, &out, &ranges))
		return NULL;
	if (ranges_get(ranges, &rv))
		return NULL;
	seq = PySequence_Fast(list, "ptrs must be a sequence of int");
	if (!seq) {
		ranges_release(&rv);
		return NULL;
	}
	n = PySequence_Fast_GET_SIZE(seq);
	if (n != self->n_args) {
		Py_DECREF(seq);
		ranges_release(&rv);
		return PyErr_Format(PyExc_ValueError, "the reduction takes %d arguments, not %zd",
				    self->n_args, n);
	}
	ptrs = PyMem_Calloc((size_t)n + 1, sizeof(*ptrs));
	host = PyMem_Calloc((size_t)n + 1, sizeof(*host));
	if (!ptrs || !host) {
		PyMem_Free(ptrs);
		PyMem_Free(host);
		Py_DECREF(seq);
		ranges_release(&rv);
		return PyErr_NoMemory();
	}
	for (Py_ssize_t k = 0; k < n; k++) {
		ptrs[k] = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, k));
		host[k] = (const void *)(uintptr_t)ptrs[k];
		if (PyErr_Occurred()) {
			PyMem_Free(ptrs);
			PyMem_Free(host);
			Py_DECREF(seq);
			ranges_release(&rv);
			return NULL;
		}
	}
	Py_DECREF(seq);
	Py_BEGIN_ALLOW_THREADS
	PyThread_acquire_lock(c->lock, WAIT_LOCK);
	if (cuda)
		st = kred_reduction_run_cuda_stream(self->r, nx, ny, ptrs, out,
						    (void *)(uintptr_t)stream);
	else
		st = kred_reduction_run_ranges(self->r, nx, ny, host, (void *)(uintptr_t)out,
					       rv.rg.struct_size ? &rv.rg : NULL);
	if (st)
		error_capture(&e, c->ctx, st);
	PyThread_release_lock(c->lock);
	Py_END_ALLOW_THREADS
	PyMem_Free(ptrs);
	PyMem_Free(host);
	ranges_release(&rv);
	if (st)
		return error_raise(&e, NULL);
	Py_RETURN_NONE;
}

static PyObject *reduction_run_cuda(ReductionObject *self, PyObject *args)
{
	return run_addresses(self, args, 1);
}

static PyObject *reduction_run_host(ReductionObject *self, PyObject *args)
{
	return run_addresses(self, args, 0);
}

PyDoc_STRVAR(source_doc, "source() -> str\n\nThe generated kernel source (for the reference "
			 "backend, the canonical formula).");

static PyObject *reduction_source(ReductionObject *self, PyObject *unused)
{
	ContextObject *c = self->owner;
	struct error e = { 0 };
	const char *src;
	PyObject *result;

	Py_BEGIN_ALLOW_THREADS
	PyThread_acquire_lock(c->lock, WAIT_LOCK);
	src = kred_reduction_source(self->r);
	if (!src)
		error_capture(&e, c->ctx, KRED_EBUILD);
	PyThread_release_lock(c->lock);
	Py_END_ALLOW_THREADS
	if (!src)
		return error_raise(&e, NULL);
	lock_with_gil(c);
	result = PyUnicode_FromString(src);
	PyThread_release_lock(c->lock);
	return result;
}

static PyObject *reduction_get_formula(ReductionObject *self, void *unused)
{
	return PyUnicode_FromString(kred_reduction_formula(self->r));
}

static PyObject *reduction_get_args(ReductionObject *self, void *unused)
{
	return Py_NewRef(self->args_info);
}

static PyObject *reduction_get_int(ReductionObject *self, void *which)
{
	switch ((intptr_t)which) {
	case 0: return PyLong_FromLong(self->n_args);
	case 1: return PyLong_FromLong(self->out_dim);
	case 2: return PyLong_FromLong(self->out_cat);
	default: return PyUnicode_FromString(self->dtype == KRED_FLOAT64 ? "float64" : "float32");
	}
}

static PyObject *reduction_get_context(ReductionObject *self, void *unused)
{
	return Py_NewRef(self->owner);
}

static PyMethodDef reduction_methods[] = {
	{ "grad", (PyCFunction)reduction_grad, METH_O, grad_doc },
	{ "run", (PyCFunction)(void (*)(void))reduction_run, METH_FASTCALL, run_doc },
	{ "run_cuda", (PyCFunction)reduction_run_cuda, METH_VARARGS, run_cuda_doc },
	{ "run_host", (PyCFunction)reduction_run_host, METH_VARARGS, run_host_doc },
	{ "source", (PyCFunction)reduction_source, METH_NOARGS, source_doc },
	{ NULL }
};

static PyGetSetDef reduction_getset[] = {
	{ "formula", (getter)reduction_get_formula, NULL,
	  "The formula after aliases, derivatives and simplification.", NULL },
	{ "args", (getter)reduction_get_args, NULL,
	  "One (category, dim, name) per argument position; category 0 = Vi, 1 = Vj, 2 = Pm.",
	  NULL },
	{ "n_args", (getter)reduction_get_int, NULL, "The number of arguments.", (void *)0 },
	{ "out_dim", (getter)reduction_get_int, NULL, "Values per output row.", (void *)1 },
	{ "out_category", (getter)reduction_get_int, NULL,
	  "Rows of the output: 0 = nx, 1 = ny, 2 = none (one vector).", (void *)2 },
	{ "dtype", (getter)reduction_get_int, NULL, "'float32' or 'float64'.", (void *)3 },
	{ "context", (getter)reduction_get_context, NULL, "The context it was made on.", NULL },
	{ NULL }
};

static PyTypeObject ReductionType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "kred._kred.Reduction",
	.tp_basicsize = sizeof(ReductionObject),
	.tp_dealloc = (destructor)reduction_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "A compiled reduction, made by Context.reduction() or Reduction.grad().",
	.tp_methods = reduction_methods,
	.tp_getset = reduction_getset,
};

/* ---- Context ---- */

static PyObject *context_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
	static char *names[] = { "backend", "scheme", "cache_dir", "device_memory", NULL };
	kred_context_options opt = { .struct_size = sizeof(opt) };
	const char *backend = NULL, *cache_dir = NULL;
	int scheme = 0;
	long long device_memory = 0;
	struct error e = { 0 };
	ContextObject *self;
	kred_status st;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|zizL:Context", names, &backend, &scheme,
					 &cache_dir, &device_memory))
		return NULL;
	if (scheme < KRED_SCHEME_AUTO || scheme > KRED_SCHEME_2D)
		return PyErr_Format(PyExc_ValueError, "scheme must be 0 (auto), 1 (1D) or 2 (2D)");
	opt.backend = backend;
	opt.scheme = (kred_scheme)scheme;
	opt.cache_dir = cache_dir;
	opt.device_memory = device_memory;
	self = (ContextObject *)type->tp_alloc(type, 0);
	if (!self)
		return NULL;
	self->lock = PyThread_allocate_lock();
	if (!self->lock) {
		Py_DECREF(self);
		return PyErr_NoMemory();
	}
	/* Opening a device can take a while (driver start-up, device probes). */
	Py_BEGIN_ALLOW_THREADS
	st = kred_context_create(&opt, &self->ctx);
	if (st) {
		error_capture(&e, self->ctx, st);
		kred_context_destroy(self->ctx);
		self->ctx = NULL;
	}
	Py_END_ALLOW_THREADS
	if (st) {
		Py_DECREF(self);
		return error_raise(&e, NULL);
	}
	return (PyObject *)self;
}

static void context_dealloc(ContextObject *self)
{
	kred_context_destroy(self->ctx);
	if (self->lock)
		PyThread_free_lock(self->lock);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(reduction_doc,
	     "reduction(formula, aliases, reduction, axis=0, dtype='float32', weight=None,\n"
	     "          sum_scheme=0, fast_math=False) -> Reduction\n\n"
	     "Parses, checks and compiles a reduction (kred_reduction_create_ex; fast_math:\n"
	     "the backend's fast math functions, see kred.h). axis 0 reduces\n"
	     "over j (output indexed by i), 1 over i. Errors are ValueError (formula, aliases,\n"
	     "reduction: with kred's message, caret and .offset) or RuntimeError (build).");

static PyObject *context_reduction(ContextObject *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "formula", "aliases", "reduction", "axis", "dtype", "weight",
				 "sum_scheme", "fast_math", NULL };
	const char *formula, *reduction, *weight = NULL, **aliases;
	PyObject *alias_seq, *keep = NULL, *dtype_obj = NULL;
	kred_spec spec = { 0 };
	kred_reduction *r = NULL;
	struct error e = { 0 };
	size_t n_aliases = 0;
	kred_reduction_options ro = { sizeof(ro), KRED_FAST_MATH_OFF };
	int axis = 0, sum_scheme = 0, fast = 0;
	kred_dtype dtype = KRED_FLOAT32;
	kred_status st;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "sOs|iOzip:reduction", names, &formula,
					 &alias_seq, &reduction, &axis, &dtype_obj, &weight,
					 &sum_scheme, &fast))
		return NULL;
	ro.fast_math = fast ? KRED_FAST_MATH_ON : KRED_FAST_MATH_OFF;
	if (dtype_obj && to_dtype(dtype_obj, &dtype))
		return NULL;
	if (axis != KRED_REDUCE_J && axis != KRED_REDUCE_I)
		return PyErr_Format(PyExc_ValueError, "axis must be 0 (over j) or 1 (over i)");
	if (sum_scheme < KRED_SUM_DEFAULT || sum_scheme > KRED_SUM_KAHAN)
		return PyErr_Format(PyExc_ValueError, "sum_scheme must be 0 to 3");
	aliases = string_list(alias_seq, "aliases must be a sequence of str", &keep, &n_aliases);
	if (!aliases) {
		Py_XDECREF(keep);
		return NULL;
	}
	spec.formula = formula;
	spec.weight = weight;
	spec.aliases = aliases;
	spec.n_aliases = n_aliases;
	spec.reduction = reduction;
	spec.axis = (kred_axis)axis;
	spec.dtype = dtype;
	spec.sum_scheme = (kred_sum_scheme)sum_scheme;
	/* Compiling takes from milliseconds (cached) to seconds. */
	Py_BEGIN_ALLOW_THREADS
	PyThread_acquire_lock(self->lock, WAIT_LOCK);
	st = kred_reduction_create_ex(self->ctx, &spec, &ro, &r);
	if (st)
		error_capture(&e, self->ctx, st);
	PyThread_release_lock(self->lock);
	Py_END_ALLOW_THREADS
	PyMem_Free(aliases);
	Py_DECREF(keep);
	if (st)
		return error_raise(&e, NULL);
	return reduction_wrap(self, r, dtype, axis == KRED_REDUCE_J ? CAT_I : CAT_J);
}

/* The shapes of kred_kernel_param, by the names the Python layer uses. */
static int to_param(PyObject *o, kred_kernel_param *out)
{
	long v = PyLong_AsLong(o);

	if (v == -1 && PyErr_Occurred())
		return -1;
	if (v < KRED_KP_NONE || v > KRED_KP_FULL_J) {
		PyErr_Format(PyExc_ValueError, "parameter shape %ld is not one of 0 to 6", v);
		return -1;
	}
	*out = (kred_kernel_param)v;
	return 0;
}

PyDoc_STRVAR(kernel_spec_doc,
	     "kernel_product_spec(kernel, mode, dims, params, e=1, dtype='float32',\n"
	     "                    sum_scheme=0) -> (formula, aliases, reduction, inputs)\n\n"
	     "The ordinary reduction a kernel product is (kred_kernel_product_spec_build):\n"
	     "dims has one dimension per pair of variables, params one shape per atomic\n"
	     "formula (0 none, 1 scalar, 2 diagonal, 3 full, 4-6 the same per y point);\n"
	     "inputs is the KRED_KP_IN_* bits of the mode's extra inputs.");

static PyObject *context_kernel_spec(ContextObject *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "kernel", "mode", "dims", "params", "e", "dtype", "sum_scheme",
				 NULL };
	kred_kernel_product_spec kp = { 0 };
	const char *kernel, *mode;
	PyObject *dims_obj, *params_obj, *dims_seq = NULL, *params_seq = NULL, *dtype_obj = NULL;
	PyObject *result = NULL, *aliases = NULL;
	int *dims = NULL, e_cols = 1, sum_scheme = 0;
	kred_kernel_param *params = NULL;
	kred_kernel_mode m;
	kred_spec *spec = NULL;
	struct error e = { 0 };
	kred_status st;
	Py_ssize_t nd, np;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "ssOO|iOi:kernel_product_spec", names, &kernel,
					 &mode, &dims_obj, &params_obj, &e_cols, &dtype_obj,
					 &sum_scheme))
		return NULL;
	if (kred_kernel_mode_parse(mode, &m))
		return PyErr_Format(PyExc_ValueError, "unknown mode '%s' (sum, lse, log_scaled, "
				    "log_scaled_lse, log_scaled_barycenter, lse_mult_i, "
				    "sinkhorn_cost, sinkhorn_primal)", mode);
	kp.kernel = kernel;
	kp.mode = m;
	kp.e = e_cols;
	kp.dtype = KRED_FLOAT32;
	if ((dtype_obj && to_dtype(dtype_obj, &kp.dtype)))
		return NULL;
	if (sum_scheme < KRED_SUM_DEFAULT || sum_scheme > KRED_SUM_KAHAN)
		return PyErr_Format(PyExc_ValueError, "sum_scheme must be 0 to 3");
	kp.sum_scheme = (kred_sum_scheme)sum_scheme;
	dims_seq = PySequence_Fast(dims_obj, "dims must be a sequence of int");
	params_seq = dims_seq ? PySequence_Fast(params_obj, "params must be a sequence of int")
			      : NULL;
	if (!params_seq)
		goto done;
	nd = PySequence_Fast_GET_SIZE(dims_seq);
	np = PySequence_Fast_GET_SIZE(params_seq);
	dims = PyMem_Calloc((size_t)nd + 1, sizeof(*dims));
	params = PyMem_Calloc((size_t)np + 1, sizeof(*params));
	if (!dims || !params) {
		PyErr_NoMemory();
		goto done;
	}
	for (Py_ssize_t k = 0; k < nd; k++) {
		dims[k] = PyLong_AsLong(PySequence_Fast_GET_ITEM(dims_seq, k));
		if (PyErr_Occurred())
			goto done;
	}
	for (Py_ssize_t k = 0; k < np; k++)
		if (to_param(PySequence_Fast_GET_ITEM(params_seq, k), &params[k]))
			goto done;
	kp.dims = dims;
	kp.n_pairs = (size_t)nd;
	kp.params = params;
	kp.n_params = (size_t)np;
	lock_with_gil(self);
	st = kred_kernel_product_spec_build(self->ctx, &kp, &spec);
	if (st)
		error_capture(&e, self->ctx, st);
	PyThread_release_lock(self->lock);
	if (st) {
		error_raise(&e, NULL);
		goto done;
	}
	aliases = PyTuple_New((Py_ssize_t)spec->n_aliases);
	for (size_t k = 0; aliases && k < spec->n_aliases; k++) {
		PyObject *s = PyUnicode_FromString(spec->aliases[k]);

		if (!s)
			Py_CLEAR(aliases);
		else
			PyTuple_SET_ITEM(aliases, (Py_ssize_t)k, s);
	}
	if (aliases)
		result = Py_BuildValue("(sOsI)", spec->formula, aliases, spec->reduction,
				       kred_kernel_mode_inputs(m));
done:
	kred_free(spec);
	Py_XDECREF(aliases);
	PyMem_Free(dims);
	PyMem_Free(params);
	Py_XDECREF(dims_seq);
	Py_XDECREF(params_seq);
	return result;
}

PyDoc_STRVAR(kernel_parse_doc,
	     "kernel_parse(kernel) -> (atoms, pairs)\n\n"
	     "Parses a kernel text: atoms is one (name, pair, offset) per atomic formula, in\n"
	     "order of appearance; pairs one (x, y) pair of letters per pair of variables.");

static PyObject *context_kernel_parse(ContextObject *self, PyObject *arg)
{
	const char *text = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
	kred_kernel *k = NULL;
	struct error e = { 0 };
	PyObject *atoms = NULL, *pairs = NULL, *result = NULL;
	kred_status st;

	if (!text) {
		if (!PyErr_Occurred())
			PyErr_Format(PyExc_TypeError, "a kernel is a str, not %.100s",
				     Py_TYPE(arg)->tp_name);
		return NULL;
	}
	lock_with_gil(self);
	st = kred_kernel_parse(self->ctx, text, &k);
	if (st)
		error_capture(&e, self->ctx, st);
	PyThread_release_lock(self->lock);
	if (st)
		return error_raise(&e, NULL);
	atoms = PyTuple_New(kred_kernel_n_atoms(k));
	pairs = PyTuple_New(kred_kernel_n_pairs(k));
	if (!atoms || !pairs)
		goto done;
	for (int a = 0; a < kred_kernel_n_atoms(k); a++) {
		const char *name = "";
		int pair = 0;
		long offset = 0;
		PyObject *t;

		kred_kernel_atom(k, a, &name, &pair, &offset);
		t = Py_BuildValue("(sil)", name, pair, offset);
		if (!t)
			goto done;
		PyTuple_SET_ITEM(atoms, a, t);
	}
	for (int p = 0; p < kred_kernel_n_pairs(k); p++) {
		char x = 0, y = 0;
		PyObject *t;

		kred_kernel_pair(k, p, &x, &y);
		t = Py_BuildValue("(s#s#)", &x, (Py_ssize_t)1, &y, (Py_ssize_t)1);
		if (!t)
			goto done;
		PyTuple_SET_ITEM(pairs, p, t);
	}
	result = PyTuple_Pack(2, atoms, pairs);
done:
	Py_XDECREF(atoms);
	Py_XDECREF(pairs);
	kred_kernel_destroy(k);
	return result;
}

/* ---- the cluster helpers: buffers in, buffers (or new bytearrays) out; the Python layer
 * (kred._cluster) makes the arrays of the right types, this checks their sizes ---- */

/* Whether buffer b holds count values of size bytes. */
static int sized(const Py_buffer *b, int64_t count, int size, const char *what)
{
	if (count < 0 || (int64_t)b->len != count * size) {
		PyErr_Format(PyExc_ValueError, "%s has %zd bytes, not %lld", what, b->len,
			     (long long)(count * size));
		return -1;
	}
	return 0;
}

/* The six arrays of r as bytearrays (int32 values). */
static PyObject *ranges_tuple(const kred_ranges *r)
{
	int64_t n_red_j = r->n_blocks_i ? r->slices_i[r->n_blocks_i - 1] : 0;
	int64_t n_red_i = r->n_blocks_j ? r->slices_j[r->n_blocks_j - 1] : 0;
	const int32_t *p[6] = { r->ranges_i, r->slices_i, r->redranges_j,
				r->ranges_j, r->slices_j, r->redranges_i };
	int64_t len[6] = { 2 * r->n_blocks_i, r->n_blocks_i, 2 * n_red_j,
			   2 * r->n_blocks_j, r->n_blocks_j, 2 * n_red_i };
	PyObject *t = PyTuple_New(6);

	for (int k = 0; t && k < 6; k++) {
		PyObject *b = PyByteArray_FromStringAndSize(len[k] ? (const char *)p[k] : "",
							    (Py_ssize_t)(4 * len[k]));

		if (!b) {
			Py_CLEAR(t);
			break;
		}
		PyTuple_SET_ITEM(t, k, b);
	}
	return t;
}

/* Runs call with the context's lock held and the GIL released; raises kred's error. */
#define LOCKED_CALL(self, st, call)                                                        \
	do {                                                                               \
		struct error e_ = { 0 };                                                   \
		Py_BEGIN_ALLOW_THREADS PyThread_acquire_lock((self)->lock, WAIT_LOCK);     \
		(st) = (call);                                                             \
		if (st)                                                                    \
			error_capture(&e_, (self)->ctx, (st));                             \
		PyThread_release_lock((self)->lock);                                       \
		Py_END_ALLOW_THREADS if (st) error_raise(&e_, NULL);                       \
	} while (0)

static PyObject *context_grid_cluster(ContextObject *self, PyObject *args)
{
	Py_buffer x = { 0 }, lab = { 0 };
	long long n;
	int d;
	double voxel;
	int64_t nc = 0;
	kred_status st = KRED_OK;
	PyObject *result = NULL;

	if (!PyArg_ParseTuple(args, "y*Lidw*", &x, &n, &d, &voxel, &lab))
		return NULL;
	if (d < 1 || sized(&x, (int64_t)n * d, 8, "x") || sized(&lab, n, 4, "labels"))
		goto done;
	LOCKED_CALL(self, st, kred_grid_cluster(self->ctx, x.buf, n, d, voxel, lab.buf, &nc));
	if (!st)
		result = PyLong_FromLongLong(nc);
done:
	PyBuffer_Release(&x);
	PyBuffer_Release(&lab);
	if (d < 1 && !PyErr_Occurred())
		PyErr_Format(PyExc_ValueError, "grid_cluster: dimension %d", d);
	return result;
}

static PyObject *context_cluster_sort(ContextObject *self, PyObject *args)
{
	Py_buffer lab = { 0 }, perm = { 0 }, rng = { 0 };
	long long nc;
	int64_t n;
	kred_status st = KRED_OK;
	PyObject *result = NULL;

	if (!PyArg_ParseTuple(args, "y*Lw*w*", &lab, &nc, &perm, &rng))
		return NULL;
	n = lab.len / 4;
	if (sized(&lab, n, 4, "labels") || sized(&perm, n, 8, "perm") ||
	    sized(&rng, 2 * (int64_t)nc, 4, "ranges"))
		goto done;
	LOCKED_CALL(self, st, kred_cluster_sort(self->ctx, lab.buf, n, nc, perm.buf, rng.buf));
	if (!st)
		result = Py_NewRef(Py_None);
done:
	PyBuffer_Release(&lab);
	PyBuffer_Release(&perm);
	PyBuffer_Release(&rng);
	return result;
}

static PyObject *context_cluster_centroids(ContextObject *self, PyObject *args)
{
	Py_buffer x = { 0 }, lab = { 0 }, cen = { 0 }, cw = { 0 }, w = { 0 };
	PyObject *wo, *result = NULL;
	long long nc;
	int d;
	int64_t n;
	kred_status st = KRED_OK;

	if (!PyArg_ParseTuple(args, "y*iy*LOw*w*", &x, &d, &lab, &nc, &wo, &cen, &cw))
		return NULL;
	n = lab.len / 4;
	if (wo != Py_None && PyObject_GetBuffer(wo, &w, PyBUF_C_CONTIGUOUS))
		goto done;
	if (d < 1 || sized(&x, n * d, 8, "x") || sized(&lab, n, 4, "labels") ||
	    (w.obj && sized(&w, n, 8, "weights")) || sized(&cen, (int64_t)nc * d, 8, "centroids") ||
	    sized(&cw, nc, 8, "the clusters' weights"))
		goto done;
	LOCKED_CALL(self, st, kred_cluster_centroids(self->ctx, x.buf, n, d, lab.buf, nc,
						     w.obj ? w.buf : NULL, cen.buf, cw.buf));
	if (!st)
		result = Py_NewRef(Py_None);
done:
	if (d < 1 && !PyErr_Occurred())
		PyErr_Format(PyExc_ValueError, "cluster_centroids: dimension %d", d);
	PyBuffer_Release(&x);
	PyBuffer_Release(&lab);
	PyBuffer_Release(&cen);
	PyBuffer_Release(&cw);
	if (w.obj)
		PyBuffer_Release(&w);
	return result;
}

static PyObject *context_ranges_from_mask(ContextObject *self, PyObject *args)
{
	Py_buffer ri = { 0 }, rj = { 0 }, keep = { 0 };
	kred_ranges r = { 0 };
	int64_t nci, ncj;
	kred_status st = KRED_OK;
	PyObject *result = NULL;

	if (!PyArg_ParseTuple(args, "y*y*y*", &ri, &rj, &keep))
		return NULL;
	nci = ri.len / 8;
	ncj = rj.len / 8;
	if (sized(&ri, 2 * nci, 4, "ranges_i") || sized(&rj, 2 * ncj, 4, "ranges_j") ||
	    sized(&keep, nci * ncj, 1, "keep"))
		goto done;
	LOCKED_CALL(self, st, kred_ranges_from_mask(self->ctx, ri.buf, nci, rj.buf, ncj,
						    keep.buf, &r));
	if (!st)
		result = ranges_tuple(&r);
	kred_ranges_free(&r);
done:
	PyBuffer_Release(&ri);
	PyBuffer_Release(&rj);
	PyBuffer_Release(&keep);
	return result;
}

static PyObject *context_ranges_from_centroids(ContextObject *self, PyObject *args)
{
	Py_buffer ri = { 0 }, ci = { 0 }, rj = { 0 }, cj = { 0 };
	kred_ranges r = { 0 };
	int64_t nci, ncj;
	int d;
	double cutoff;
	kred_status st = KRED_OK;
	PyObject *result = NULL;

	if (!PyArg_ParseTuple(args, "y*y*y*y*id", &ri, &ci, &rj, &cj, &d, &cutoff))
		return NULL;
	nci = ri.len / 8;
	ncj = rj.len / 8;
	if (d < 1) {
		PyErr_Format(PyExc_ValueError, "ranges_from_centroids: dimension %d", d);
		goto done;
	}
	if (sized(&ri, 2 * nci, 4, "ranges_i") || sized(&rj, 2 * ncj, 4, "ranges_j") ||
	    sized(&ci, nci * d, 8, "centroids_i") || sized(&cj, ncj * d, 8, "centroids_j"))
		goto done;
	LOCKED_CALL(self, st, kred_ranges_from_centroids(self->ctx, ri.buf, ci.buf, nci, rj.buf,
							 cj.buf, ncj, d, cutoff, &r));
	if (!st)
		result = ranges_tuple(&r);
	kred_ranges_free(&r);
done:
	PyBuffer_Release(&ri);
	PyBuffer_Release(&ci);
	PyBuffer_Release(&rj);
	PyBuffer_Release(&cj);
	return result;
}

static PyObject *context_get_backend(ContextObject *self, void *unused)
{
	return PyUnicode_FromString(kred_context_backend(self->ctx));
}

static PyObject *context_get_cuda_device(ContextObject *self, void *unused)
{
	int device = -1;

	if (kred_context_cuda_handles(self->ctx, &device, NULL) != KRED_OK)
		Py_RETURN_NONE;
	return PyLong_FromLong(device);
}

static PyMethodDef context_methods[] = {
	{ "reduction", (PyCFunction)(void (*)(void))context_reduction,
	  METH_VARARGS | METH_KEYWORDS, reduction_doc },
	{ "kernel_product_spec", (PyCFunction)(void (*)(void))context_kernel_spec,
	  METH_VARARGS | METH_KEYWORDS, kernel_spec_doc },
	{ "kernel_parse", (PyCFunction)context_kernel_parse, METH_O, kernel_parse_doc },
	{ "grid_cluster", (PyCFunction)context_grid_cluster, METH_VARARGS,
	  "grid_cluster(x, n, d, voxel, labels): kred_grid_cluster; returns n_clusters." },
	{ "cluster_sort", (PyCFunction)context_cluster_sort, METH_VARARGS,
	  "cluster_sort(labels, n_clusters, perm, ranges): kred_cluster_sort." },
	{ "cluster_centroids", (PyCFunction)context_cluster_centroids, METH_VARARGS,
	  "cluster_centroids(x, d, labels, n_clusters, weights, centroids, cluster_weights)." },
	{ "ranges_from_mask", (PyCFunction)context_ranges_from_mask, METH_VARARGS,
	  "ranges_from_mask(ranges_i, ranges_j, keep): six bytearrays of int32." },
	{ "ranges_from_centroids", (PyCFunction)context_ranges_from_centroids, METH_VARARGS,
	  "ranges_from_centroids(ranges_i, centroids_i, ranges_j, centroids_j, d, cutoff)." },
	{ NULL }
};

static PyGetSetDef context_getset[] = {
	{ "backend", (getter)context_get_backend, NULL,
	  "The backend in use, e.g. 'host:...' or 'opencl:...'.", NULL },
	{ "cuda_device", (getter)context_get_cuda_device, NULL,
	  "The GPU index of a cuda context that can run, else None.", NULL },
	{ NULL }
};

static PyTypeObject ContextType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "kred._kred.Context",
	.tp_basicsize = sizeof(ContextObject),
	.tp_dealloc = (destructor)context_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Context(backend=None, scheme=0, cache_dir=None, device_memory=0)\n\n"
		  "A kred context on one backend ('auto', 'host', 'opencl:1', 'cuda:0', ...;\n"
		  "None: $KRED_BACKEND, else auto). scheme: 0 auto, 1 1D, 2 2D. RuntimeError,\n"
		  "with kred's reason, when the backend cannot run here.",
	.tp_methods = context_methods,
	.tp_getset = context_getset,
	.tp_new = context_new,
};

/* ---- the module ---- */

static PyObject *mod_devices_report(PyObject *self, PyObject *unused)
{
	char *text = NULL;
	kred_status st;
	PyObject *result;

	Py_BEGIN_ALLOW_THREADS
	st = kred_devices_report(&text);
	Py_END_ALLOW_THREADS
	if (st) {
		kred_free(text);
		return PyErr_Format(error_type(st), "kred_devices_report: %s",
				    kred_status_message(st));
	}
	result = PyUnicode_FromString(text);
	kred_free(text);
	return result;
}

static PyObject *mod_version(PyObject *self, PyObject *unused)
{
	return PyUnicode_FromString(kred_version());
}

static PyMethodDef module_methods[] = {
	{ "devices_report", mod_devices_report, METH_NOARGS,
	  "Every backend compiled into kred, the devices each sees, and which one 'auto' picks." },
	{ "version", mod_version, METH_NOARGS, "libkred's version, 'MAJOR.MINOR.PATCH'." },
	{ NULL }
};

static struct PyModuleDef kred_module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "kred._kred",
	.m_doc = "The C layer of the kred package: contexts and compiled reductions of libkred.",
	.m_size = -1,
	.m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__kred(void);

PyMODINIT_FUNC PyInit__kred(void)
{
	PyObject *m;

	if (kred_version_number() != KRED_VERSION_NUMBER) {
		PyErr_Format(PyExc_ImportError, "kred._kred was built for kred %s but links %s",
			     KRED_VERSION_STRING, kred_version());
		return NULL;
	}
	if (PyType_Ready(&ContextType) || PyType_Ready(&ReductionType))
		return NULL;
	m = PyModule_Create(&kred_module);
	if (!m)
		return NULL;
	if (PyModule_AddObjectRef(m, "Context", (PyObject *)&ContextType) ||
	    PyModule_AddObjectRef(m, "Reduction", (PyObject *)&ReductionType) ||
	    PyModule_AddIntConstant(m, "FLOAT32", KRED_FLOAT32) ||
	    PyModule_AddIntConstant(m, "FLOAT64", KRED_FLOAT64)) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
