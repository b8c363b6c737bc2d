"""kred on numpy arrays: KeOps' generic_sum_np, generic_logsumexp_np and Genred, and a
LazyTensor, computed by libkred on any of its backends.

    from kred.numpy import Genred
    conv = Genred("Exp(-SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"],
                  reduction_op="Sum", axis=1)
    a = conv(x, y, b)                 # a[i] = sum_j exp(-|x_i - y_j|^2) b_j

Arrays are float32 or float64 (all of one type); C-contiguous ones are passed to kred
without a copy, others are copied once. A Pm argument is a 1-D array or, in dimension 1,
a Python float."""

import sys

import numpy as np

from . import _cluster, _core
from ._lazy import LazyTensorBase

__all__ = ["Genred", "generic_sum_np", "generic_logsumexp_np", "LazyTensor", "Vi", "Vj", "Pm",
           "cluster"]

_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def _arrays(op, args):
    """The arguments as C-contiguous arrays of one float dtype, and that dtype's name."""
    args = [np.asarray(a) if isinstance(a, np.generic) else a for a in args]
    dtype = None
    for k, a in enumerate(args):
        if isinstance(a, np.ndarray):
            # The type, whatever its byte order: a byte-swapped array is copied below.
            t = a.dtype if a.dtype.isnative else a.dtype.newbyteorder("=")
            if t not in _DTYPES:
                raise TypeError(f"argument {k} ({op.describe(k)}) is {a.dtype}: kred computes "
                                f"in float32 or float64")
            if dtype is None:
                dtype, first = t, k
            elif t != dtype:
                raise TypeError(f"argument {k} ({op.describe(k)}) is {t}, but argument "
                                f"{first} ({op.describe(first)}) is {dtype}: the arguments "
                                f"must agree")
    if dtype is None:
        dtype = np.dtype(np.float64)
    out = []
    for k, a in enumerate(args):
        cat, dim, _ = op.args[k]
        if isinstance(a, np.ndarray):
            if not (a.flags.c_contiguous and a.flags.aligned and a.dtype.isnative):
                a = np.ascontiguousarray(a, dtype=dtype)
        elif cat == _core.PM and isinstance(a, (float, int)) and not isinstance(a, bool):
            if dim != 1:
                raise ValueError(f"argument {k} ({op.describe(k)}) is a vector of {dim} "
                                 f"values, not one number")
            a = np.full(1, a, dtype=dtype)
        else:
            raise TypeError(f"argument {k} ({op.describe(k)}) must be a numpy array"
                            f"{' or a float' if cat == _core.PM else ''}, not "
                            f"{type(a).__name__}")
        out.append(a)
    return out, _DTYPES[dtype]


def run(op, args, backend="auto", out=None, ranges=None):
    """Runs op (a _core.Op) on numpy arrays: one per argument, in position order, restricted
    to KeOps' ranges when they are given. Returns the raw output, (nx or ny, out_dim) or
    (out_dim,) for a Pm's gradient."""
    _core.check_count(op, args)
    arrays, dtype = _arrays(op, args)
    plan = _core.batch_plan(op, [a.shape for a in arrays])
    if plan is not None:
        return _run_batch(plan, arrays, dtype, backend, out, ranges)
    nx, ny = _core.sizes(op, [a.shape for a in arrays])
    ctx = _core.resolve_backend(backend)
    r = op.compiled(dtype, ctx)
    shape = op.out_shape(nx, ny)
    if out is None:
        out = np.empty(shape, dtype=dtype)
    elif not (isinstance(out, np.ndarray) and out.shape == shape and _DTYPES.get(out.dtype) == dtype
              and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"out must be a writable C-contiguous {dtype} array of shape {shape}")
    r.run(nx, ny, arrays, out, _core.ranges_arrays(ranges))
    return out


def _expand(a, shape):
    return np.ascontiguousarray(np.broadcast_to(a, shape).reshape(-1, shape[-1])
                                if len(shape) > 1 else np.broadcast_to(a, shape))


def _run_batch(plan, arrays, dtype, backend, out, ranges):
    """A call with batch dimensions: the B problems as one block-sparse run
    (_core.BatchPlan)."""
    if ranges is not None:
        raise NotImplementedError("ranges= with batch dimensions: kred runs the batch as "
                                  "ranges of its own")
    if out is not None:
        raise NotImplementedError("out= with batch dimensions")
    op = plan.op
    r = op.compiled(dtype, _core.resolve_backend(backend))
    offsets = plan.index_offsets(dtype)
    raw = np.empty(op.out_shape(plan.nx, plan.ny), dtype=dtype)
    r.run(plan.nx, plan.ny, plan.arrays(arrays, _expand), raw, plan.ranges)
    if offsets is not None:
        raw = raw.reshape(plan.B, -1, raw.shape[-1])
        half = raw.shape[-1] // 2 if op.is_pair else 0
        idx = raw[..., half:]
        idx -= np.where(idx >= 0, offsets, 0).astype(dtype)
    return raw.reshape(plan.out_shape(raw))


def postprocess(op, out):
    """KeOps' output conventions: indices as int64, values and indices as a pair."""
    if op.is_index:
        return out.astype(np.int64)
    if op.is_pair:
        half = out.shape[-1] // 2
        return out[..., :half], out[..., half:].astype(np.int64)
    return out


class Genred(_core.GenredBase):
    """A reduction of a formula over i or j, as KeOps 2.x's pykeops.numpy.Genred.

    formula: the formula, in kred's (KeOps') syntax. aliases: its variables, such as
    "X = Vi(3)", "Y = Vj(3)", "G = Pm(1)" (Vx and Vy are synonyms of Vi and Vj); they give
    the order of the call's arguments. reduction_op: "Sum", "LogSumExp", "Min", "Max",
    "ArgMin", "ArgMax", "Min_ArgMin", "Max_ArgMax", "KMin", "ArgKMin", "KMin_ArgKMin"
    (with opt_arg=K), "SumSoftMaxWeight" and "LogSumExp" with a weight formula2,
    "Max_SumShiftExp"... axis=1 reduces over j (the output has nx rows), axis=0 over i
    (ny rows). dtype is taken from the arrays (the argument is accepted for KeOps'
    sake). sum_scheme: "auto", "direct_sum", "block_sum" or "kahan_scheme".
    use_fast_math=True: the backend's fast math functions (kred_reduction_options in
    kred.h; off by default, where KeOps' default is on), which keep infinities, NaN and
    the compensated sums.

    The call takes the arrays in alias order, backend= ("auto", "CPU", "GPU", "GPU_1D",
    "GPU_2D", or a kred backend name such as "opencl:0") and ranges= (KeOps' block-sparse
    ranges, as kred.numpy.cluster makes them), and returns a
    (nx or ny, dim) array; index reductions return int64 arrays, Min_ArgMin and the like
    a (values, indices) pair. The reduction is compiled once per process for each dtype
    and backend.
    """

    def __call__(self, *args, backend="auto", device_id=-1, ranges=None, out=None):
        self.check_call(device_id, "name the device in backend= instead ('cuda:1', "
                        "'opencl:0', ...)")
        return postprocess(self.op, run(self.op, args, backend, out, ranges))


class _Generic(_core.GenericBase):
    """The function generic_sum_np and generic_logsumexp_np return."""

    _run = staticmethod(run)


def generic_sum_np(formula, output, *aliases, **options):
    """KeOps 1.x's generic_sum_np: the formula, the output ("A = Vx(2)": indexed by i,
    so summed over j; Vy: summed over i), then the input aliases ("G = Pm(1)",
    "X = Vx(3)", ...). Returns a function of the arrays, in alias order, and backend=.
    options: sum_scheme= and use_fast_math= as Genred takes them (dtype= and cuda_type=
    are accepted and unused: the type comes from the arrays)."""
    return _Generic("Sum", formula, output, *aliases, **options)


def generic_logsumexp_np(formula, output, *aliases, **options):
    """As generic_sum_np, with a log-sum-exp (computed online and stably) in place of the
    sum; the formula has dimension 1, and so has the output."""
    return _Generic("LogSumExp", formula, output, *aliases, **options)


class LazyTensor(LazyTensorBase):
    """A symbolic (M, N, D) array of numpy data: see kred._lazy.LazyTensorBase."""

    _genred = Genred

    @staticmethod
    def _is_array(x):
        return isinstance(x, np.ndarray)

    @staticmethod
    def _as_2d(x, rows, dim):
        return np.reshape(x, (rows, dim))

    @staticmethod
    def _as_1d(x):
        return np.reshape(x, (-1,))

    @staticmethod
    def _reshape(x, shape):
        return np.reshape(x, shape)


def Vi(x):
    """x (an (N, D) array) as the i-indexed LazyTensor x_i."""
    return LazyTensor(x, axis=0)


def Vj(x):
    """x (an (M, D) array) as the j-indexed LazyTensor x_j."""
    return LazyTensor(x, axis=1)


def Pm(x):
    """x (a vector or a number) as a parameter LazyTensor."""
    return LazyTensor(x)


# kred.numpy.cluster: KeOps' helpers that make ranges (grid_cluster, sort_clusters,
# cluster_ranges_centroids, from_matrix...), on numpy arrays.
cluster = _cluster.module(__name__ + ".cluster", _cluster.NUMPY)
sys.modules[cluster.__name__] = cluster
