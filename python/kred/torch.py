"""kred on PyTorch tensors, differentiable to any order: KeOps' generic_sum,
generic_logsumexp, Genred, Kernel and kernel_product, and a LazyTensor.

    import torch
    from kred.torch import generic_sum

    gaussian_conv = generic_sum("Exp(-G * SqDist(X, Y)) * B", "A = Vx(2)",
                                "G = Pm(1)", "X = Vx(3)", "Y = Vy(3)", "B = Vy(2)")
    a = gaussian_conv(1 / sigma**2, x, y, b)      # backend="auto", "CPU", "GPU", ...
    a.sum().backward()                            # gradients through kred

Tensors are float32 or float64, all of one type and on one device. CUDA tensors are
computed on their GPU through kred_reduction_run_cuda_stream (nothing goes through the
host), queued on torch's current stream after its work, with no device-wide wait; host tensors are passed to kred without a copy
when C-contiguous. A gradient is itself a kred reduction (kred_reduction_grad), run by
the same autograd Function, so gradients of gradients work (create_graph=True)."""

import sys

import torch

from . import _cluster, _core
from ._lazy import LazyTensorBase

__all__ = ["Genred", "generic_sum", "generic_logsumexp", "Kernel", "kernel_product",
           "LazyTensor", "Vi", "Vj", "Pm", "cluster"]

_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


def _prepare(op, args):
    """The arguments as contiguous tensors of one dtype on one device (a Python float
    becomes a Pm of dimension 1). Errors name the argument."""
    _core.check_count(op, args)
    first = None
    for k, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            if a.dtype not in _DTYPES:
                raise TypeError(f"argument {k} ({op.describe(k)}) is {a.dtype}: kred computes "
                                f"in float32 or float64")
            if first is None:
                first = k
            elif a.dtype != args[first].dtype:
                raise TypeError(f"argument {k} ({op.describe(k)}) is {a.dtype}, but argument "
                                f"{first} ({op.describe(first)}) is {args[first].dtype}: the "
                                f"arguments must agree")
            elif a.device != args[first].device:
                raise ValueError(f"argument {k} ({op.describe(k)}) is on {a.device}, but "
                                 f"argument {first} ({op.describe(first)}) is on "
                                 f"{args[first].device}: the arguments must be on one device")
    if first is None:
        raise TypeError("a kred reduction takes torch tensors (Python floats only for "
                        "parameters of dimension 1)")
    dtype, device = args[first].dtype, args[first].device
    tensors = []
    for k, a in enumerate(args):
        cat, dim, _ = op.args[k]
        if isinstance(a, torch.Tensor):
            if a.layout != torch.strided:
                raise TypeError(f"argument {k} ({op.describe(k)}) is a {a.layout} tensor: "
                                f"kred takes dense ones")
            if not a.is_contiguous():
                a = a.contiguous()  # one copy, which autograd follows
            if a.is_neg():
                a = a.resolve_neg()  # a lazy negation's memory holds -a
        elif cat == _core.PM and isinstance(a, (float, int)) and not isinstance(a, bool):
            if dim != 1:
                raise ValueError(f"argument {k} ({op.describe(k)}) is a vector of {dim} "
                                 f"values, not one number")
            a = torch.full((1,), a, dtype=dtype, device=device)
        else:
            raise TypeError(f"argument {k} ({op.describe(k)}) must be a torch tensor"
                            f"{' or a float' if cat == _core.PM else ''}, not "
                            f"{type(a).__name__}")
        tensors.append(a)
    return tensors


def _compute(op, backend, nx, ny, args, ranges=None):
    """Runs op on tensors already checked by _prepare, restricted to ranges (the six int32
    arrays of _core.ranges_arrays) when given; returns a new tensor on their device."""
    dtype, device = args[0].dtype, args[0].device
    cuda_index = device.index if device.type == "cuda" else None
    if cuda_index is None and device.type == "cuda":
        cuda_index = torch.cuda.current_device()
    ctx = _core.resolve_backend(backend, cuda_index)
    r = op.compiled(_DTYPES[dtype], ctx)
    shape = op.out_shape(nx, ny)
    if device.type == "cuda" and ranges is None:
        if ctx.cuda_device == cuda_index:
            out = torch.empty(shape, dtype=dtype, device=device)
            # On torch's current stream (non-blocking ones included): after its work,
            # and waited for on that stream alone.
            r.run_cuda(nx, ny, [a.data_ptr() for a in args], out.data_ptr(),
                       torch.cuda.current_stream(device).cuda_stream)
            return out
        if ctx.cuda_device is not None:
            raise ValueError(f"the tensors are on {device}, but backend {backend!r} is GPU "
                             f"{ctx.cuda_device}")
    if device.type == "cuda":
        # A backend of another kind (host, OpenCL...), or a block-sparse run (kred takes
        # ranges on host memory): through host memory.
        host = [a.detach().cpu() for a in args]
        out = torch.empty(shape, dtype=dtype)
        r.run_host(nx, ny, [a.data_ptr() for a in host], out.data_ptr(), ranges)
        return out.to(device)
    if device.type != "cpu":
        raise ValueError(f"kred runs on CPU and CUDA tensors, not {device.type} ones")
    out = torch.empty(shape, dtype=dtype)
    # _prepare checked the shapes, the dtype and the contiguity that run() would check on
    # buffers; a tensor's address is much faster to get than its numpy view.
    r.run_host(nx, ny, [a.data_ptr() for a in args], out.data_ptr(), ranges)
    return out


# The arguments of _Reduce.forward before the tensors: op, backend, ranges, nx, ny.
_FIRST = 5


class _Reduce(torch.autograd.Function):
    """A kred reduction as an autograd Function. Its backward runs the gradient
    reductions through this same Function, so that they are differentiable in turn."""

    @staticmethod
    def forward(ctx, op, backend, ranges, nx, ny, *args):
        out = _compute(op, backend, nx, ny, args, ranges)
        ctx.op, ctx.backend, ctx.ranges, ctx.nx, ctx.ny = op, backend, ranges, nx, ny
        if op.is_index:
            ctx.mark_non_differentiable(out)
        ctx.save_for_backward(*args, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        *args, out = ctx.saved_tensors
        op = ctx.op
        grads = [None] * len(args)
        cotangent = grad_out.contiguous()
        if cotangent.is_neg():
            cotangent = cotangent.resolve_neg()
        parts = op.softmax_parts()
        if parts is not None and torch.is_grad_enabled():
            # create_graph=True on a SumSoftMaxWeight, whose gradient kred cannot
            # differentiate again: differentiate its composition instead.
            lse, total = parts
            norm = _Reduce.apply(lse, ctx.backend, ctx.ranges, ctx.nx, ctx.ny, *args)
            again = _Reduce.apply(total, ctx.backend, ctx.ranges, ctx.nx, ctx.ny, *args, norm)
            wanted = [k for k in range(len(args)) if ctx.needs_input_grad[_FIRST + k]]
            found = torch.autograd.grad(again, [args[k] for k in wanted], cotangent,
                                        create_graph=True, allow_unused=True)
            for k, g in zip(wanted, found):
                grads[k] = g
            return (None,) * _FIRST + tuple(grads)
        for k, a in enumerate(args):
            if not ctx.needs_input_grad[_FIRST + k]:
                continue
            g_op = op.grad(k)
            inputs = args + [cotangent]
            if op.takes_fwd_out(g_op):
                # The saved output keeps its place in the graph, so that a second
                # derivative also flows through it.
                inputs.append(out)
            # On the same ranges: the pairs the forward reduction computed (a gradient
            # over i reads their transposed triple, which kred derives when not given).
            g = _Reduce.apply(g_op, ctx.backend, ctx.ranges, ctx.nx, ctx.ny, *inputs)
            grads[k] = g.reshape(a.shape)
        return (None,) * _FIRST + tuple(grads)


def run(op, args, backend="auto", ranges=None):
    """Runs op (a _core.Op) on tensors, one per argument in position order, with
    autograd, restricted to KeOps' ranges when given (gradients too). Returns the raw
    output: (nx or ny, out_dim), or (out_dim,) for the gradient with respect to a Pm."""
    tensors = _prepare(op, args)
    plan = _core.batch_plan(op, [a.shape for a in tensors])
    if plan is not None:
        return _run_batch(plan, tensors, backend, ranges)
    nx, ny = _core.sizes(op, [a.shape for a in tensors])
    return _Reduce.apply(op, backend, _core.ranges_arrays(ranges), nx, ny, *tensors)


def _expand(a, shape):
    a = a.expand(shape)
    return (a.reshape(-1, shape[-1]) if len(shape) > 1 else a).contiguous()


def _run_batch(plan, tensors, backend, ranges):
    """A call with batch dimensions: the B problems as one block-sparse run
    (_core.BatchPlan); the stacking is torch's, so that autograd sums the gradients of
    what was broadcast."""
    if ranges is not None:
        raise NotImplementedError("ranges= with batch dimensions: kred runs the batch as "
                                  "ranges of its own")
    offsets = plan.index_offsets(_DTYPES[tensors[0].dtype])
    raw = _Reduce.apply(plan.op, backend, plan.ranges, plan.nx, plan.ny,
                        *plan.arrays(tensors, _expand))
    if offsets is not None:
        r3 = raw.reshape(plan.B, -1, raw.shape[-1])
        half = raw.shape[-1] // 2 if plan.op.is_pair else 0
        idx = r3[..., half:].detach()
        off = torch.from_numpy(offsets).to(raw.device, raw.dtype)
        idx = idx - torch.where(idx >= 0, off, torch.zeros_like(off))
        # the values (of Min_ArgMin and co.) keep their gradient
        raw = torch.cat([r3[..., :half], idx], -1) if half else idx
    return raw.reshape(plan.out_shape(raw))


def postprocess(op, out):
    """KeOps' output conventions: indices as int64, values and indices as a pair."""
    if op.is_index:
        return out.long()
    if op.is_pair:
        half = out.shape[-1] // 2
        return out[..., :half], out[..., half:].detach().long()
    return out


class Genred(_core.GenredBase):
    """A reduction of a formula over i or j, as KeOps 2.x's pykeops.torch.Genred; see
    kred.numpy.Genred for the arguments. The call takes tensors (CPU or CUDA; a Python
    float for a Pm of dimension 1) in alias order and backend=, and returns a tensor on
    their device, differentiable with respect to every input that requires grad (index
    reductions excepted)."""

    def __call__(self, *args, backend="auto", device_id=-1, ranges=None, out=None):
        self.check_call(device_id, "kred runs where the tensors are; move them to "
                        "the GPU, or name it in backend= ('cuda:1', 'opencl:0', ...)")
        result = postprocess(self.op, run(self.op, args, backend, ranges))
        if out is not None:
            if isinstance(result, tuple):
                raise ValueError(f"out= takes one tensor; {self.reduction_op} returns two")
            out.copy_(result)
            return out
        return result


class _Generic(_core.GenericBase):
    """The function generic_sum and generic_logsumexp return."""

    _run = staticmethod(run)


def generic_sum(formula, output, *aliases, **options):
    """KeOps 1.x's generic_sum: the formula, the output ("A = Vx(2)": indexed by i, so
    summed over j; Vy: summed over i), then the input aliases ("G = Pm(1)", "X = Vx(3)",
    ...). Returns a function of the tensors, in alias order, and backend= ("auto", "CPU",
    "GPU", "GPU_1D", "GPU_2D", or a kred backend such as "opencl:0"). options:
    sum_scheme= and use_fast_math= as Genred takes them (dtype= and cuda_type= are accepted
    and unused: the type comes from the tensors)."""
    return _Generic("Sum", formula, output, *aliases, **options)


def generic_logsumexp(formula, output, *aliases, **options):
    """As generic_sum, with a log-sum-exp (online and stable) in place of the sum; the
    formula has dimension 1, and so has the output."""
    return _Generic("LogSumExp", formula, output, *aliases, **options)


# ---- kernel_product ----

# The inputs after x and y, in the order KeOps' kernel_product takes them, per mode.
_MODE_INPUTS = {
    "sum": "B", "lse": "B", "log_scaled": "BUV", "log_scaled_lse": "BUV",
    "log_scaled_barycenter": "BUVC", "lse_mult_i": "BH", "sinkhorn_cost": "ST",
    "sinkhorn_primal": "STUV",
}
# ... and in the order of kred's arguments (include/kred.h).
_KRED_INPUT_ORDER = "BUVCHST"
# The shapes of kred_kernel_param.
_NONE, _SCALAR, _DIAGONAL, _FULL, _SCALAR_J, _DIAGONAL_J, _FULL_J = range(7)

_kernel_specs = {}


class Kernel:
    """A kernel by name, as KeOps' Kernel: atomic formulas (linear, gaussian, laplacian,
    cauchy, inverse_multiquadric, distance) of pairs of one-letter variables, combined
    with integers, +, -, * and **k: "gaussian(x,y) * (1 + linear(u,v)**2)". A kernel
    that does not parse is a ValueError with the offset and a caret."""

    def __init__(self, name):
        if isinstance(name, Kernel):
            name = name.name
        atoms, pairs = _core.reference().kernel_parse(name)
        self.name = name
        self.atoms = tuple(a for a, _, _ in atoms)
        self.atom_pairs = tuple(p for _, p, _ in atoms)
        self.pairs = tuple(pairs)

    def __repr__(self):
        return f"Kernel({self.name!r})"


def _as_tuple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _gamma(g, kernel, a, d, ny, like):
    """(shape, tensor) of atom a's parameter g, for its pair's dimension d: 1, d or d*d
    values for a fixed one, ny rows of them (or (ny, d, d)) for one per y point."""
    what = f"gamma {a} ({kernel.atoms[a]} of pair {kernel.pairs[kernel.atom_pairs[a]]})"
    if g is None:
        return _NONE, None
    if isinstance(g, (int, float)) and not isinstance(g, bool):
        g = torch.full((1,), g, dtype=like.dtype, device=like.device)
    if not isinstance(g, torch.Tensor):
        raise TypeError(f"{what} is a tensor or None, not {type(g).__name__}")
    shape = tuple(g.shape)
    if len(shape) <= 1:
        n = g.numel()
        kind = {1: _SCALAR, d: _DIAGONAL, d * d: _FULL}.get(n)
        if kind is not None:
            return kind, g.reshape(n)
    elif len(shape) == 2 and shape[0] == ny:
        kind = {1: _SCALAR_J, d: _DIAGONAL_J, d * d: _FULL_J}.get(shape[1])
        if kind is not None:
            return kind, g
    elif shape == (ny, d, d):
        return _FULL_J, g.reshape(ny, d * d)
    raise ValueError(f"{what}: shape {shape}; in dimension {d} a parameter is 1, {d} or "
                     f"{d * d} values (scalar, diagonal, full matrix), or ny = {ny} rows of "
                     f"them (one per y point), or ({ny}, {d}, {d})")


def _points(v, what):
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{what} is a torch tensor, not {type(v).__name__}")
    if v.dim() == 1:
        return v.reshape(-1, 1)
    if v.dim() != 2:
        raise ValueError(f"{what} is an (n, D) tensor, not one of shape {tuple(v.shape)}")
    return v


def kernel_product(params, x, y, *bs, mode=None, backend=None):
    """KeOps' kernel_product: a_i = sum_j K(x_i, y_j) b_j and its log-domain variants.

    params: {"id": Kernel(...) or its text, "gamma": one parameter per atomic formula
    (None for linear; a tensor otherwise, see below; a lone one need not be in a tuple),
    "backend": "auto" (default), "pytorch" (dense torch, for small data and checks),
    "CPU", "GPU", "GPU_1D", "GPU_2D" or a kred backend, "mode": see below}. x and y: one
    (N, D_p) and one (M, D_p) tensor per pair of variables (a lone one need not be in a
    tuple). Then the mode's inputs (mode= overrides params["mode"]):

        sum                    B (M, E)              sum_j K_ij b_j
        lse                    B (M, 1)              log sum_j exp(log K_ij + b_j)
        log_scaled             B, U (N,1), V (M,1)   sum_j exp(log K_ij + u_i + v_j) b_j
        log_scaled_lse         B, U, V               log sum_j exp(log K_ij + u_i + v_j + b_j)
        log_scaled_barycenter  B, U, V, C (N, E)     sum_j exp(log K_ij + u_i + v_j) (b_j - c_i)
        lse_mult_i             B, H (N, 1)           log sum_j exp(h_i log K_ij + b_j)
        sinkhorn_cost          S (N, 1), T (M, 1)    sum_j -log K_ij exp(log K_ij + s_i + t_j)
        sinkhorn_primal        S, T, U, V            sum_j (u_i + v_j - 1) exp(log K_ij + s_i + t_j)

    A parameter in dimension D is 1 value (scalar: <x-y, g (x-y)>), D values (a
    diagonal), D*D (a symmetric matrix), or M rows of those (one per y_j), or (M, D, D).
    Returns an (N, E) or (N, 1) tensor, differentiable with respect to every input."""
    if not isinstance(params, dict):
        raise TypeError("params is a dict with 'id' (a Kernel) and 'gamma'")
    if "id" not in params:
        raise ValueError("params['id'] is missing: the kernel, e.g. Kernel('gaussian(x,y)')")
    kernel = params["id"] if isinstance(params["id"], Kernel) else Kernel(params["id"])
    backend = backend if backend is not None else params.get("backend", "auto")
    mode = mode if mode is not None else params.get("mode", "sum")
    if mode not in _MODE_INPUTS:
        raise ValueError(f"unknown mode {mode!r} ({', '.join(_MODE_INPUTS)})")
    xs = tuple(_points(v, f"x[{p}]") for p, v in enumerate(_as_tuple(x)))
    ys = tuple(_points(v, f"y[{p}]") for p, v in enumerate(_as_tuple(y)))
    n_pairs = len(kernel.pairs)
    if len(xs) != n_pairs or len(ys) != n_pairs:
        raise ValueError(f"kernel {kernel.name!r} has {n_pairs} pair(s) of variables, so x "
                         f"and y hold {n_pairs} tensor(s) each, not {len(xs)} and {len(ys)}")
    letters = _MODE_INPUTS[mode]
    if len(bs) != len(letters):
        raise TypeError(f"mode {mode!r} takes {len(letters)} tensor(s) after x and y "
                        f"({', '.join(letters)}), not {len(bs)}")
    extras = {}
    for letter, v in zip(letters, bs):
        extras[letter] = _points(v, letter)
    gammas = params.get("gamma")
    if gammas is None and all(a == "linear" for a in kernel.atoms):
        gammas = (None,) * len(kernel.atoms)
    gammas = _as_tuple(gammas)
    if len(gammas) != len(kernel.atoms):
        raise ValueError(f"kernel {kernel.name!r} has {len(kernel.atoms)} atomic formula(s), "
                         f"so params['gamma'] holds {len(kernel.atoms)} parameter(s) (None "
                         f"for linear), not {len(gammas)}")
    dims = [int(v.shape[1]) for v in xs]
    ny = int(ys[0].shape[0])
    shaped = [_gamma(g, kernel, a, dims[kernel.atom_pairs[a]], ny, xs[0])
              for a, g in enumerate(gammas)]
    kinds = tuple(kind for kind, _ in shaped)
    e = int(extras["B"].shape[1]) if "B" in extras else 1
    dtype = _DTYPES.get(xs[0].dtype)
    if dtype is None:
        raise TypeError(f"x[0] is {xs[0].dtype}: kred computes in float32 or float64")
    key = (kernel.name, mode, tuple(dims), kinds, e, dtype)
    spec = _kernel_specs.get(key)
    if spec is None:
        spec = _core.reference().kernel_product_spec(kernel.name, mode, dims, kinds, e, dtype)
        spec = _kernel_specs.setdefault(key, spec)
    formula, aliases, reduction, _ = spec
    if backend == "pytorch":
        from . import _dense

        return _dense.kernel_product(kernel, mode, shaped, xs, ys, extras)
    args = [g for _, g in shaped if g is not None] + list(xs) + list(ys)
    args += [extras[letter] for letter in _KRED_INPUT_ORDER if letter in extras]
    return run(_core.op(formula, aliases, reduction, _core.REDUCE_J), args, backend)


# ---- LazyTensor ----

class LazyTensor(LazyTensorBase):
    """A symbolic (M, N, D) array of torch data: see kred._lazy.LazyTensorBase. Its
    reductions are differentiable like Genred's."""

    _genred = Genred

    @staticmethod
    def _is_array(x):
        return isinstance(x, torch.Tensor)

    @staticmethod
    def _as_2d(x, rows, dim):
        return x.reshape(rows, dim)

    @staticmethod
    def _as_1d(x):
        return x.reshape(-1)

    @staticmethod
    def _reshape(x, shape):
        return x.reshape(shape)


def Vi(x):
    """x (an (N, D) tensor) as the i-indexed LazyTensor x_i."""
    return LazyTensor(x, axis=0)


def Vj(x):
    """x (an (M, D) tensor) as the j-indexed LazyTensor x_j."""
    return LazyTensor(x, axis=1)


def Pm(x):
    """x (a vector or a number) as a parameter LazyTensor."""
    return LazyTensor(x)


# kred.torch.cluster: KeOps' helpers that make ranges (grid_cluster, sort_clusters,
# cluster_ranges_centroids, from_matrix...), on tensors.
cluster = _cluster.module(__name__ + ".cluster", _cluster.TORCH)
sys.modules[cluster.__name__] = cluster
