"""The part of kred's Python layer that knows no array library: backends and their
contexts, reductions compiled once per process, KeOps' names for reductions and
aliases, and the checks of a call's argument shapes.

kred.numpy and kred.torch build on it; kred._kred is the C layer underneath."""

import re
import threading

import numpy as np

from . import _kred

# Argument categories, as kred_reduction_arg numbers them. OUT_VECTOR is the "category"
# of an output that has no rows: the gradient with respect to a Pm.
VI, VJ, PM = 0, 1, 2
OUT_VECTOR = 2
CATEGORY_NAMES = ("Vi", "Vj", "Pm")

# kred's axis values: reduce over j (output indexed by i) or over i.
REDUCE_J, REDUCE_I = 0, 1

# Index reductions (their output is indices, returned as int64) and the reductions
# whose output is values then indices (returned as a pair).
INDEX_REDUCTIONS = ("ArgMin", "ArgMax", "ArgKMin")
PAIR_REDUCTIONS = ("Min_ArgMin", "Max_ArgMax", "KMin_ArgKMin")
K_REDUCTIONS = ("KMin", "ArgKMin", "KMin_ArgKMin")

_SUM_SCHEMES = {
    "auto": 0, "default": 0,
    "direct_sum": 1, "direct": 1,
    "block_sum": 2, "block": 2,
    "kahan_scheme": 3, "kahan": 3,
}

# Guards the caches below when several threads make contexts or reductions at once; a
# run itself is serialised per context by the C layer.
_lock = threading.RLock()
_contexts = {}
_backends = {}
_ops = {}


def context(backend=None, scheme=0):
    """The process's one kred context for backend (a kred name such as "host",
    "opencl:1" or "cuda:0"; None: $KRED_BACKEND, else auto) and scheme (0 auto, 1 1D,
    2 2D). RuntimeError, with kred's reason, when the backend cannot run here."""
    key = (backend, scheme)
    ctx = _contexts.get(key)
    if ctx is None:
        with _lock:
            ctx = _contexts.get(key)
            if ctx is None:
                ctx = _kred.Context(backend, scheme)
                _contexts[key] = ctx
    return ctx


def reference():
    """The reference context: it checks formulas and gives argument lists without
    compiling anything, so the Python layer asks it first."""
    return context("reference")


_GPU_SCHEMES = {"GPU": 0, "GPU_1D": 1, "GPU_2D": 2}
_KRED_BACKENDS = ("auto", "cuda", "opencl", "vulkan", "host", "reference")


def resolve_backend(backend, cuda_device=None):
    """The context that runs a call given backend= (KeOps' names "auto", "CPU", "GPU",
    "GPU_1D", "GPU_2D", or one of kred's) on data that lives on CUDA device cuda_device
    (None: host memory)."""
    key = (backend, cuda_device)
    ctx = _backends.get(key)
    if ctx is not None:
        return ctx
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str such as 'auto', 'CPU' or 'GPU', not {backend!r}")
    if backend == "auto":
        # Data on a GPU is computed there; host data goes to kred's own choice.
        ctx = context(f"cuda:{cuda_device}" if cuda_device is not None else None)
    elif backend == "CPU":
        ctx = context("host")
    elif backend in _GPU_SCHEMES:
        scheme = _GPU_SCHEMES[backend]
        if cuda_device is not None:
            ctx = context(f"cuda:{cuda_device}", scheme)
        else:
            ctx = context("auto", scheme)
            # kred's auto takes the first backend with a GPU, else the host.
            if ctx.backend.split(":")[0] in ("host", "reference"):
                raise RuntimeError(
                    f"backend {backend!r}: kred finds no GPU here (its best backend is "
                    f"{ctx.backend}); kred.devices() says what each backend sees")
    elif backend == "pytorch":
        raise ValueError("backend 'pytorch' is kernel_product's dense fallback only")
    elif backend.split(":")[0] not in _KRED_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: 'auto', 'CPU', 'GPU', 'GPU_1D', "
                         f"'GPU_2D', or one of kred's ({', '.join(_KRED_BACKENDS)}, with "
                         f"':N' or ':all' for the device)")
    else:
        try:
            ctx = context(backend)
        except RuntimeError as e:
            raise RuntimeError(f"backend {backend!r}: {e}") from None
    _backends[key] = ctx
    return ctx


class Op:
    """One reduction whatever its dtype and backend: a formula with its aliases and
    reduction, or the gradient of another Op with respect to one argument.

    Made once per process (see op()). Its argument list and output shape come from a
    copy on the reference backend, which compiles nothing; compiled(dtype, ctx) compiles
    it on a backend once."""

    __slots__ = ("spec", "parent", "var", "ref", "args", "out_dim", "out_cat",
                 "reduction", "is_index", "is_pair", "_compiled", "_grads", "_parts")

    def __init__(self, spec=None, parent=None, var=None):
        self.spec, self.parent, self.var = spec, parent, var
        if parent is None:
            self.ref = reference().reduction(dtype="float64", **spec)
            self.reduction = spec["reduction"]
        else:
            self.ref = parent.ref.grad(var)
            self.reduction = "Sum"
        self.args = self.ref.args
        self.out_dim = self.ref.out_dim
        self.out_cat = self.ref.out_category
        base = self.reduction.split("(")[0].strip()
        self.is_index = base in INDEX_REDUCTIONS
        self.is_pair = base in PAIR_REDUCTIONS
        self._compiled = {}
        self._grads = {}
        self._parts = None

    @property
    def n_args(self):
        return len(self.args)

    def compiled(self, dtype, ctx):
        """The _kred.Reduction of this Op for dtype ("float32" or "float64") on ctx."""
        key = (dtype, ctx)
        r = self._compiled.get(key)
        if r is None:
            if self.parent is None:
                r = ctx.reduction(dtype=dtype, **self.spec)
            else:
                r = self.parent.compiled(dtype, ctx).grad(self.var)
            r = self._compiled.setdefault(key, r)
        return r

    def grad(self, pos):
        """The Op of the gradient with respect to argument pos: its arguments are this
        Op's, the cotangent, then (when takes_fwd_out) this Op's output."""
        g = self._grads.get(pos)
        if g is None:
            with _lock:
                g = self._grads.get(pos)
                if g is None:
                    g = self._grads[pos] = Op(parent=self, var=pos)
        return g

    def softmax_parts(self):
        """For a SumSoftMaxWeight Op, the pair (L, S) of Ops that compose it, else None:
        L = LogSumExp of the formula, and S = Sum of Exp(formula - L) * weight, which
        takes L as one more argument. kred has no gradient of SumSoftMaxWeight's
        gradient reductions, while L and S are differentiable to any order, so second
        derivatives go through them."""
        if self.parent is not None or self.reduction != "SumSoftMaxWeight":
            return None
        if self._parts is None:
            spec, n = self.spec, self.n_args
            name = "KRED_SOFTMAX_LSE"
            # L has the rows of the output; an explicit position suits aliases with or
            # without positions.
            cat = CATEGORY_NAMES[VI if spec["axis"] == REDUCE_J else VJ]
            lse = op(spec["formula"], spec["aliases"], "LogSumExp", spec["axis"],
                     sum_scheme=spec["sum_scheme"], fast_math=spec["fast_math"])
            total = op(f"Exp(({spec['formula']}) - {name}) * ({spec['weight']})",
                       spec["aliases"] + (f"{name} = {cat}({n}, 1)",), "Sum", spec["axis"],
                       sum_scheme=spec["sum_scheme"], fast_math=spec["fast_math"])
            self._parts = (lse, total)
        return self._parts

    def takes_fwd_out(self, grad_op):
        """Whether grad_op (one of this Op's gradients) also takes this Op's output."""
        return grad_op.n_args == self.n_args + 2

    def out_shape(self, nx, ny):
        """The output's shape for sizes nx, ny."""
        if self.out_cat == OUT_VECTOR:
            return (self.out_dim,)
        return (nx if self.out_cat == VI else ny, self.out_dim)

    def describe(self, k):
        """Argument k as its alias reads: "Y = Vj(3)", or "Vj(3)" when unnamed."""
        cat, dim, name = self.args[k]
        text = f"{CATEGORY_NAMES[cat]}({dim})"
        return f"{name} = {text}" if name else text


def op(formula, aliases, reduction="Sum", axis=REDUCE_J, weight=None, sum_scheme=0,
       fast_math=False):
    """The process's one Op for this formula, aliases, reduction, axis, weight, summation
    scheme and fast math (kred_reduction_options.fast_math). A bad formula is a
    ValueError with kred's message (caret and .offset included)."""
    if not isinstance(formula, str):
        raise TypeError(f"a formula is a str, not {type(formula).__name__}")
    if weight is not None and not isinstance(weight, str):
        raise TypeError(f"a weight formula is a str, not {type(weight).__name__}")
    aliases = tuple(aliases)
    for a in aliases:
        if not isinstance(a, str):
            raise TypeError(f"aliases are str such as 'X = Vi(3)', not {a!r}")
    fast_math = bool(fast_math)
    key = (formula, aliases, reduction, axis, weight, sum_scheme, fast_math)
    o = _ops.get(key)
    if o is None:
        with _lock:
            o = _ops.get(key)
            if o is None:
                spec = dict(formula=formula, aliases=aliases, reduction=reduction,
                            axis=axis, weight=weight, sum_scheme=sum_scheme,
                            fast_math=fast_math)
                o = _ops[key] = Op(spec)
    return o


def sum_scheme(name):
    """kred's summation scheme for KeOps' sum_scheme names (and kred's own)."""
    try:
        return _SUM_SCHEMES[name]
    except (KeyError, TypeError):
        raise ValueError(f"sum_scheme must be one of {', '.join(_SUM_SCHEMES)}, "
                         f"not {name!r}") from None


def reduction_name(reduction_op, opt_arg=None, formula2=None):
    """kred's reduction for KeOps' reduction_op, opt_arg (the K of the KMin family) and
    formula2 (the weight of the Weight reductions)."""
    if not isinstance(reduction_op, str):
        raise TypeError(f"reduction_op is a str such as 'Sum', not {reduction_op!r}")
    name = reduction_op.strip()
    if name.endswith("_Reduction"):  # KeOps' internal names
        name = name[:-len("_Reduction")]
    if name == "SoftMax":  # KeOps' older name
        name = "SumSoftMaxWeight"
    if formula2 is not None and name in ("LogSumExp", "Max_SumShiftExp"):
        name += "Weight"
    if name in K_REDUCTIONS:
        if isinstance(opt_arg, bool) or not isinstance(opt_arg, int):
            raise ValueError(f"reduction {name} needs opt_arg=K, an int (got {opt_arg!r})")
        return f"{name}({opt_arg})"
    if opt_arg is not None and "(" not in name:
        raise ValueError(f"opt_arg is the K of {', '.join(K_REDUCTIONS)}; "
                         f"reduction {name} takes none")
    return name


_OUTPUT = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*(Vx|Vy|Vi|Vj)\s*\(\s*(\d+)\s*\)\s*$")


def parse_output(output):
    """KeOps 1.x's output alias ("A = Vx(2)") as (axis, dim): Vx (i-indexed) reduces
    over j, Vy over i."""
    m = _OUTPUT.match(output) if isinstance(output, str) else None
    if not m:
        raise ValueError(f"the output is written 'A = Vx(DIM)' or 'A = Vy(DIM)', not {output!r}")
    return (REDUCE_J if m.group(2) in ("Vx", "Vi") else REDUCE_I), int(m.group(3))


def sizes(op_, shapes):
    """nx and ny from the shapes of a call's arguments, each checked against what the
    Op expects: a Vi argument is (nx, dim), a Vj one (ny, dim) ((n,) when dim is 1), a Pm
    one (dim,) (or a scalar when dim is 1). ValueError naming the argument otherwise.
    Without any Vi (Vj) argument, nx (ny) is 1."""
    n = {VI: None, VJ: None}
    first = {}
    for k, shape in enumerate(shapes):
        cat, dim, _ = op_.args[k]
        if cat == PM:
            if tuple(shape) == (dim,) or (dim == 1 and tuple(shape) in ((), (1, 1))):
                continue
            raise ValueError(f"argument {k} ({op_.describe(k)}) is a vector of {dim} "
                             f"value{'s' if dim > 1 else ''}, not an array of shape "
                             f"{tuple(shape)}")
        if len(shape) == 2 and shape[1] == dim:
            rows = shape[0]
        elif len(shape) == 1 and dim == 1:
            rows = shape[0]
        else:
            rows_name = "nx" if cat == VI else "ny"
            raise ValueError(f"argument {k} ({op_.describe(k)}) is a ({rows_name}, {dim}) "
                             f"array, not one of shape {tuple(shape)}")
        if n[cat] is None:
            n[cat], first[cat] = rows, k
        elif rows != n[cat]:
            raise ValueError(f"argument {k} ({op_.describe(k)}) has {rows} rows, but "
                             f"argument {first[cat]} ({op_.describe(first[cat])}) has "
                             f"{n[cat]}: the {CATEGORY_NAMES[cat]} arguments share their rows")
    # A formula without any Vi (Vj) argument does not depend on i (j): as in a
    # broadcast, that axis has one row.
    return (1 if n[VI] is None else n[VI]), (1 if n[VJ] is None else n[VJ])


def check_count(op_, args, what="the reduction"):
    """TypeError when a call does not pass one value per argument of op_."""
    if len(args) != op_.n_args:
        names = ", ".join(op_.describe(k) for k in range(op_.n_args))
        raise TypeError(f"{what} takes {op_.n_args} argument{'s' if op_.n_args != 1 else ''} "
                        f"({names}), not {len(args)}")


class GenredBase:
    """What kred.numpy.Genred and kred.torch.Genred share: KeOps 2.x's constructor, which
    checks and compiles nothing but the formula's argument list (on the reference
    backend); each subclass's __call__ runs it on its arrays."""

    def __init__(self, formula, aliases, reduction_op="Sum", axis=0, dtype=None, opt_arg=None,
                 formula2=None, cuda_type=None, dtype_acc="auto", use_double_acc=False,
                 sum_scheme="auto", enable_chunks=True, rec_multVar_highdim=False,
                 use_fast_math=False):
        if axis not in (0, 1):
            raise ValueError(f"axis must be 0 (reduce over i) or 1 (reduce over j), not {axis!r}")
        if use_double_acc or dtype_acc not in ("auto", None):
            raise NotImplementedError("dtype_acc and use_double_acc: kred accumulates in the "
                                      "data's type (choose sum_scheme='kahan_scheme' for "
                                      "accuracy)")
        if isinstance(aliases, str):
            aliases = [aliases]
        self.reduction_op = reduction_name(reduction_op, opt_arg, formula2)
        self.axis = axis
        self.op = op(formula, aliases, self.reduction_op, REDUCE_J if axis == 1 else REDUCE_I,
                     formula2, globals()["sum_scheme"](sum_scheme), use_fast_math)

    @staticmethod
    def check_call(device_id, device_hint):
        """KeOps' call argument that kred does not take: device_id."""
        if device_id not in (-1, None):
            raise ValueError(f"device_id: {device_hint}")


class GenericBase:
    """What the functions of generic_sum(_np) and generic_logsumexp(_np) share: KeOps
    1.x's output alias ("A = Vx(2)") checked against the reduction; a subclass sets _run
    (its array library's run)."""

    _run = None

    def __init__(self, reduction, formula, output, *aliases, sum_scheme="auto",
                 use_fast_math=False, dtype=None, cuda_type=None):
        # dtype and cuda_type: KeOps' keywords, accepted as Genred accepts them (the type
        # comes from the arrays).
        axis, dim = parse_output(output)
        self.output = output
        self.op = op(formula, aliases, reduction, axis, None,
                     globals()["sum_scheme"](sum_scheme), use_fast_math)
        if self.op.out_dim != dim:
            raise ValueError(f"the output {output!r} has dimension {dim}, but the "
                             f"{reduction} of {formula!r} has dimension {self.op.out_dim}")

    def __call__(self, *args, backend="auto", ranges=None):
        return type(self)._run(self.op, args, backend, ranges=ranges)


RANGE_NAMES = ("ranges_i", "slices_i", "redranges_j", "ranges_j", "slices_j", "redranges_i")


def ranges_arrays(ranges):
    """KeOps' ranges of a block-sparse call, (ranges_i, slices_i, redranges_j, ranges_j,
    slices_j, redranges_i), as six flat C-contiguous int32 numpy arrays (the last three
    None when kred is to derive them); None for a dense call. Takes numpy arrays, torch
    tensors (on any device) or lists; kred checks the values (blocks within the axis,
    ordered slices, no overlapping blocks) when it runs."""
    if ranges is None:
        return None
    if not isinstance(ranges, (tuple, list)) or len(ranges) != 6:
        raise ValueError("ranges is KeOps' tuple of 6 int32 arrays (ranges_i, slices_i, "
                         "redranges_j, ranges_j, slices_j, redranges_i)")
    out = []
    for name, r in zip(RANGE_NAMES, ranges):
        if r is None:
            out.append(None)
            continue
        if hasattr(r, "detach"):  # a torch tensor, wherever it is
            r = r.detach().cpu().numpy()
        a = np.asarray(r)
        if a.size and a.dtype.kind not in "iu":
            raise TypeError(f"ranges: {name} holds {a.dtype} values, not integers")
        pairs = name != "slices_i" and name != "slices_j"
        if pairs and not (a.ndim == 2 and a.shape[1] == 2) and not (a.ndim == 1 and a.size % 2 == 0):
            raise ValueError(f"ranges: {name} has shape {a.shape}, not (n, 2)")
        if not pairs and a.ndim != 1:
            raise ValueError(f"ranges: {name} has shape {a.shape}, not (n,)")
        if a.size and (a.min() < -2**31 or a.max() >= 2**31):
            raise ValueError(f"ranges: {name} holds values past int32")
        out.append(np.ascontiguousarray(a.reshape(-1), dtype=np.int32))
    if out[0] is None or out[1] is None or out[2] is None:
        raise ValueError("ranges: ranges_i, slices_i and redranges_j must be given")
    return tuple(out)


# ---- batch dimensions ----

_PM_ALIAS = re.compile(r"^(\s*)([A-Za-z_]\w*)(\s*=\s*)Pm(\s*\()")


class BatchPlan:
    """How a call with batch dimensions runs as one block-sparse reduction: the B
    problems stacked along the rows (B x nx rows, B x ny columns, one block of ranges per
    problem), an argument whose batch dimensions are all 1 shared by every problem (the
    side of the reduced axis is then not stacked at all: every block's interval is the
    whole of it), and a parameter with batch dimensions made into a variable of the
    output's side, its value repeated over each problem's rows.

    shape: the batch shape (broadcast of the arguments'); op: the Op to run (this one, or
    the one with batched parameters as variables); actions[k]: what becomes of argument
    k: "stack" (to B x rows), "share" (its rows as they are), "param" (its vector),
    "rows" (a batched parameter, to B x rows of the output's side); nx, ny: the sizes of
    the stacked problem; ranges: its six arrays."""

    def __init__(self, op_, shapes):
        self.op = op_
        batches, core = [], []
        for k, shape in enumerate(shapes):
            cat, dim, _ = op_.args[k]
            shape = tuple(shape)
            if dim == 1 and len(shape) == (0 if cat == PM else 1):
                shape = shape + (1,)  # a number, or a vector of rows of one value
            lead = 1 if cat == PM else 2
            if len(shape) < lead or shape[-1] != dim:
                if cat == PM:
                    raise ValueError(f"argument {k} ({op_.describe(k)}) is a vector of {dim} "
                                     f"value{'s' if dim > 1 else ''}, not an array of shape "
                                     f"{shape} (with batch dimensions: (..., {dim}))")
                rows = "nx" if cat == VI else "ny"
                raise ValueError(f"argument {k} ({op_.describe(k)}) is a ({rows}, {dim}) array "
                                 f"(with batch dimensions: (..., {rows}, {dim})), not one of "
                                 f"shape {shape}")
            batches.append(shape[:-lead])
            core.append(shape[-lead:])
        try:
            self.shape = tuple(np.broadcast_shapes(*batches))
        except ValueError:
            raise ValueError("the arguments' batch dimensions do not broadcast: " +
                             ", ".join(f"argument {k} has {b}" for k, b in enumerate(batches))
                             ) from None
        self.batches, self.core = batches, core
        self.B = int(np.prod(self.shape)) if self.shape else 1
        n = {VI: None, VJ: None}
        for k, c in enumerate(core):
            cat = op_.args[k][0]
            if cat == PM:
                continue
            if n[cat] is None:
                n[cat] = c[0]
            elif n[cat] != c[0]:
                raise ValueError(f"argument {k} ({op_.describe(k)}) has {c[0]} rows, but "
                                 f"the other {CATEGORY_NAMES[cat]} arguments have {n[cat]}")
        self.n = {VI: n[VI] or 1, VJ: n[VJ] or 1}
        if op_.parent is not None:
            raise ValueError("batch dimensions: run the forward reduction; its gradients "
                             "follow")
        out_side = VI if op_.spec["axis"] == REDUCE_J else VJ
        other = VJ if out_side == VI else VI
        ones = [all(d == 1 for d in b) for b in batches]
        batched_pm = [k for k in range(len(shapes))
                      if op_.args[k][0] == PM and not ones[k]]
        # the side of the reduced axis is shared when none of its arguments has a batch
        self.stacked = {out_side: self.B > 1,
                        other: self.B > 1 and any(not ones[k] for k in range(len(shapes))
                                                  if op_.args[k][0] == other)}
        self.actions = []
        for k in range(len(shapes)):
            cat = op_.args[k][0]
            if cat == PM:
                self.actions.append("rows" if k in batched_pm else "param")
            else:
                self.actions.append("stack" if self.stacked[cat] else "share")
        self.out_side = out_side
        if batched_pm:
            self.op = self._params_as_rows(op_, batched_pm, out_side)
        rows = {c: self.n[c] * (self.B if self.stacked[c] else 1) for c in (VI, VJ)}
        self.nx, self.ny = rows[VI], rows[VJ]
        self.ranges = self._ranges() if self.B > 1 else None

    @staticmethod
    def _params_as_rows(op_, ks, side):
        spec = op_.spec
        aliases = list(spec["aliases"])
        cat = CATEGORY_NAMES[side]
        for k in ks:
            name = op_.args[k][2]
            for a, text in enumerate(aliases):
                m = _PM_ALIAS.match(text)
                if m and m.group(2) == name:
                    aliases[a] = _PM_ALIAS.sub(lambda m: m.group(1) + m.group(2) + m.group(3)
                                               + cat + m.group(4), text, count=1)
                    break
            else:
                raise NotImplementedError(
                    f"argument {k} ({op_.describe(k)}) is a parameter with batch dimensions: "
                    f"kred runs it as a variable of each problem's rows, which needs an "
                    f"alias that names it ('G = Pm(1)')")
        return op(spec["formula"], aliases, spec["reduction"], spec["axis"], spec["weight"],
                  spec["sum_scheme"], spec["fast_math"])

    def _ranges(self):
        B, n, st = self.B, self.n, self.stacked
        b = np.arange(B, dtype=np.int64)

        def triple(rows_cat, cols_cat):
            nr, nc = n[rows_cat], n[cols_cat]
            if st[rows_cat]:
                rng = np.stack([b * nr, (b + 1) * nr], 1)
                slc = b + 1
                red = np.stack([b * nc, (b + 1) * nc], 1) if st[cols_cat] else \
                    np.tile([0, nc], (B, 1))
            else:
                rng = np.array([[0, nr]])
                slc = np.array([B])
                red = np.stack([b * nc, (b + 1) * nc], 1)
            return [np.ascontiguousarray(a.reshape(-1), dtype=np.int32)
                    for a in (rng, slc, red)]

        return tuple(triple(VI, VJ) + triple(VJ, VI))

    def arrays(self, args, expand):
        """The stacked problem's arguments from args, with expand(a, shape) (broadcast to
        shape, then flattened to (prod of all but the last, last) as the array library
        does it)."""
        out = []
        for k, (a, act) in enumerate(zip(args, self.actions)):
            cat, dim, _ = self.op.args[k]
            a = a.reshape(self.batches[k] + self.core[k])
            if act == "param":
                out.append(expand(a.reshape((dim,)), (dim,)))
            elif act == "share":
                out.append(expand(a.reshape((self.n[cat], dim)), (self.n[cat], dim)))
            elif act == "stack":
                out.append(expand(a, self.shape + (self.n[cat], dim)))
            else:  # a batched parameter, over each problem's rows
                a = a.reshape(self.batches[k] + (1, dim))
                out.append(expand(a, self.shape + (self.n[self.out_side], dim)))
        return out

    def out_shape(self, out):
        """The output's shape with the batch dimensions: (*shape, rows, dim)."""
        return self.shape + (self.n[self.out_side], out.shape[-1])

    def index_offsets(self, dtype_name):
        """For an index reduction over a stacked axis: the first column of each problem
        (indices come back counted along the stacked axis), as a (B, 1, 1) array; None
        when there is nothing to subtract."""
        other = VJ if self.out_side == VI else VI
        if not (self.op.is_index or self.op.is_pair) or not self.stacked[other]:
            return None
        total = self.n[other] * self.B
        if dtype_name == "float32" and total > 2 ** 24:
            raise ValueError(f"an index reduction over {self.B} stacked problems of "
                             f"{self.n[other]} rows counts to {total}, past the integers "
                             f"float32 holds exactly (2^24): use float64")
        return (np.arange(self.B) * self.n[other]).reshape(self.B, 1, 1)


def batch_plan(op_, shapes):
    """A BatchPlan when an argument has batch dimensions (a Vi or Vj array of more than 2
    dimensions, a Pm of more than 1), else None."""
    for k, shape in enumerate(shapes):
        cat = op_.args[k][0]
        if len(shape) > (1 if cat == PM else 2):
            return BatchPlan(op_, shapes)
    return None
