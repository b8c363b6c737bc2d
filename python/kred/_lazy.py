"""LazyTensor, KeOps 2.x's symbolic arrays, for numpy and torch: operations build a kred
formula as text, a reduction (.sum(dim), .logsumexp(dim), .min(dim), .argKmin(K, dim),
@ ...) compiles it once per process and runs it through the library's Genred.

    x_i = LazyTensor(x[:, None, :])      # (N, 1, D): indexed by i
    y_j = LazyTensor(y[None, :, :])      # (1, M, D): indexed by j
    K_ij = (-((x_i - y_j) ** 2).sum(-1)).exp()
    a = K_ij @ b                         # a_i = sum_j K_ij b_j

A LazyTensor has the shape (N, M, D) of the array it stands for (1 where it does not
depend on i or j) and is never formed: kred streams over it."""

import itertools
import re

from . import _core

_ids = itertools.count()
_PLACEHOLDER = re.compile(r"@(\d+)@")


def _broadcast(d1, d2, what):
    if d1 == d2 or d2 == 1:
        return d1
    if d1 == 1:
        return d2
    raise ValueError(f"{what}: dimensions {d1} and {d2} do not match (nor is one of them 1)")


def _number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class LazyTensorBase:
    """The symbolic array: a formula with placeholders for its variables.

    LazyTensor(x) takes an array of shape (N, 1, D) (an i variable, x[:, None, :]),
    (1, M, D) (a j variable, y[None, :, :]), (D,) or (1, 1, D) (a parameter); a 2-D
    array with axis=0 (i) or axis=1 (j); a float (a parameter of dimension 1) or an int
    (a constant in the formula). The subclasses of kred.numpy and kred.torch say what an
    array is and which Genred reduces."""

    _genred = None
    # KeOps' block-sparse ranges, as kred.numpy.cluster / kred.torch.cluster make them:
    # set on a LazyTensor (K.ranges = ...), they go to what is made of it, and restrict
    # its reductions; ranges= in a reduction's call does the same for that call.
    ranges = None
    # numpy: let `array * lazy` reach LazyTensor.__rmul__.
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, x=None, axis=None):
        if isinstance(x, LazyTensorBase):
            self._set(x.formula, x.vars, x.dim, x.ni, x.nj)
            if x.ranges is not None:
                self.ranges = x.ranges
        elif isinstance(x, bool) or x is None:
            raise TypeError(f"a LazyTensor is made of an array or a number, not {x!r}")
        elif isinstance(x, int):
            # Integers go into the formula; kred's constants are exact.
            self._set(str(x) if x >= 0 else f"({x})", {}, 1, None, None)
        elif isinstance(x, float):
            # Floats become parameters, so that a new value does not compile a new formula.
            self._leaf(x, _core.PM, 1, None, None)
        elif self._is_array(x):
            self._from_array(x, axis)
        else:
            raise TypeError(f"a LazyTensor is made of an array or a number, not "
                            f"{type(x).__name__}")

    # ---- what the subclasses provide ----

    @staticmethod
    def _is_array(x):
        raise NotImplementedError

    @staticmethod
    def _as_2d(x, rows, dim):
        raise NotImplementedError

    @staticmethod
    def _as_1d(x):
        raise NotImplementedError

    @staticmethod
    def _reshape(x, shape):
        raise NotImplementedError

    # ---- construction ----

    def _set(self, formula, vars_, dim, ni, nj):
        self.formula, self.vars, self.dim, self.ni, self.nj = formula, vars_, dim, ni, nj

    def _leaf(self, value, cat, dim, ni, nj):
        vid = next(_ids)
        self._set(f"@{vid}@", {vid: (value, cat, dim)}, dim, ni, nj)

    def _from_array(self, x, axis):
        shape = tuple(x.shape)
        if axis not in (None, 0, 1):
            raise ValueError(f"axis is 0 (an i variable) or 1 (a j variable), not {axis!r}")
        if len(shape) >= 4 and axis is None and (shape[-3] == 1 or shape[-2] == 1):
            # batch dimensions in front: (..., N, 1, D), (..., 1, M, D), (..., 1, 1, D)
            lead, (n, m, d) = shape[:-3], shape[-3:]
            if n == 1 and m == 1:
                self._leaf(self._reshape(x, lead + (d,)), _core.PM, d, None, None)
            elif m == 1:
                self._leaf(self._reshape(x, lead + (n, d)), _core.VI, d, n, None)
            else:
                self._leaf(self._reshape(x, lead + (m, d)), _core.VJ, d, None, m)
        elif len(shape) == 3 and shape[0] == 1 and shape[1] == 1 and axis is None:
            self._leaf(self._as_1d(x), _core.PM, shape[2], None, None)
        elif len(shape) == 3 and shape[1] == 1 and axis in (None, 0):
            self._leaf(self._as_2d(x, shape[0], shape[2]), _core.VI, shape[2], shape[0], None)
        elif len(shape) == 3 and shape[0] == 1 and axis in (None, 1):
            self._leaf(self._as_2d(x, shape[1], shape[2]), _core.VJ, shape[2], None, shape[1])
        elif len(shape) == 2 and axis is not None:
            cat = _core.VI if axis == 0 else _core.VJ
            self._leaf(x, cat, shape[1], shape[0] if axis == 0 else None,
                       shape[0] if axis == 1 else None)
        elif len(shape) <= 1 and axis is None:
            x = self._as_1d(x)
            self._leaf(x, _core.PM, int(x.shape[0]), None, None)
        else:
            raise ValueError(f"a LazyTensor is made of x[:, None, :] (shape (N, 1, D), i), "
                             f"y[None, :, :] ((1, M, D), j), a vector (a parameter), the same "
                             f"with batch dimensions in front ((B, N, 1, D), (B, 1, M, D), "
                             f"(B, 1, 1, D)), or a 2-D array with axis=0 or 1, not an array "
                             f"of shape {shape}"
                             f"{'' if axis is None else f' with axis={axis}'}")

    def _new(self, formula, others, dim):
        """A LazyTensor of formula, over the variables of self and others."""
        vars_ = dict(self.vars)
        ni, nj = self.ni, self.nj
        for o in others:
            vars_.update(o.vars)
            for attr, n in (("ni", o.ni), ("nj", o.nj)):
                mine = ni if attr == "ni" else nj
                if n is not None and mine is not None and n != mine:
                    raise ValueError(f"the operands have {mine} and {n} "
                                     f"{'i' if attr == 'ni' else 'j'} rows")
                if mine is None:
                    if attr == "ni":
                        ni = n
                    else:
                        nj = n
        t = object.__new__(type(self))
        t._set(formula, vars_, dim, ni, nj)
        for o in (self, *others):
            if o.ranges is not None:
                t.ranges = o.ranges
                break
        return t

    def _wrap(self, other):
        if isinstance(other, LazyTensorBase):
            return other
        if _number(other) or self._is_array(other):
            return type(self)(other)
        raise TypeError(f"cannot combine a LazyTensor with {type(other).__name__}")

    def _unary(self, name, dim=None):
        return self._new(f"{name}({self.formula})", (), self.dim if dim is None else dim)

    def _binary(self, other, template, what, dim=None):
        other = self._wrap(other)
        d = _broadcast(self.dim, other.dim, what) if dim is None else dim
        return self._new(template.format(self.formula, other.formula), (other,), d)

    # ---- the shape it stands for ----

    @property
    def shape(self):
        """(N, M, D), with 1 where the formula does not depend on i (j)."""
        return (self.ni or 1, self.nj or 1, self.dim)

    @property
    def ndim(self):
        return 3

    def __repr__(self):
        return (f"{type(self).__module__}.LazyTensor(shape={self.shape}, "
                f"formula={self._spec()[0]!r})")

    # ---- arithmetic ----

    def __add__(self, other):
        return self._binary(other, "({} + {})", "+")

    def __radd__(self, other):
        return self._wrap(other)._binary(self, "({} + {})", "+")

    def __sub__(self, other):
        return self._binary(other, "({} - {})", "-")

    def __rsub__(self, other):
        return self._wrap(other)._binary(self, "({} - {})", "-")

    def __mul__(self, other):
        return self._binary(other, "({} * {})", "*")

    def __rmul__(self, other):
        return self._wrap(other)._binary(self, "({} * {})", "*")

    def __truediv__(self, other):
        return self._binary(other, "({} / {})", "/")

    def __rtruediv__(self, other):
        return self._wrap(other)._binary(self, "({} / {})", "/")

    def __neg__(self):
        return self._new(f"(-{self.formula})", (), self.dim)

    def __pos__(self):
        return self

    def __abs__(self):
        return self._unary("Abs")

    def __pow__(self, other):
        if isinstance(other, float) and other.is_integer():
            other = int(other)
        if isinstance(other, int) and not isinstance(other, bool):
            if other == 2:
                return self._unary("Square")
            return self._new(f"Pow({self.formula},{other})", (), self.dim)
        if other == 0.5:
            return self._unary("Sqrt")
        if other == -0.5:
            return self._unary("Rsqrt")
        return self._binary(other, "Powf({},{})", "**")

    def __or__(self, other):
        """(x | y): the scalar product, of dimension 1."""
        other = self._wrap(other)
        if self.dim != other.dim:
            raise ValueError(f"(x | y): dimensions {self.dim} and {other.dim} differ")
        return self._binary(other, "({} | {})", "|", dim=1)

    def __ror__(self, other):
        return self._wrap(other).__or__(self)

    def __getitem__(self, key):
        """x[..., k] or x[k]: the k-th entry of the last dimension, of dimension 1."""
        if isinstance(key, tuple) and len(key) >= 1 and key[0] is Ellipsis:
            key = key[-1] if len(key) == 2 else None
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError("a LazyTensor is indexed by one int on its last dimension "
                            "(x[..., k])")
        k = key + self.dim if key < 0 else key
        if not 0 <= k < self.dim:
            raise IndexError(f"entry {key} of a dimension-{self.dim} LazyTensor")
        return self._new(f"Elem({self.formula},{k})", (), 1)

    # ---- element-wise functions ----

    def exp(self):
        return self._unary("Exp")

    def log(self):
        return self._unary("Log")

    def sqrt(self):
        return self._unary("Sqrt")

    def rsqrt(self):
        return self._unary("Rsqrt")

    def sin(self):
        return self._unary("Sin")

    def cos(self):
        return self._unary("Cos")

    def abs(self):
        return self._unary("Abs")

    def relu(self):
        return self._unary("ReLU")

    def sign(self):
        return self._unary("Sign")

    def step(self):
        return self._unary("Step")

    def square(self):
        return self._unary("Square")

    def inv(self):
        return self._unary("Inv")

    def clamp(self, lo, hi):
        """Clamp(f, lo, hi); lo and hi are numbers or LazyTensors."""
        lo, hi = self._wrap(lo), self._wrap(hi)
        return self._new(f"Clamp({self.formula},{lo.formula},{hi.formula})", (lo, hi), self.dim)

    # ---- vector operations ----

    def sqnorm2(self):
        return self._unary("SqNorm2", 1)

    def norm2(self):
        return self._unary("Norm2", 1)

    def norm(self, dim=-1):
        if dim not in (-1, 2):
            raise ValueError("norm() is over the last dimension (dim=-1)")
        return self.norm2()

    def normalize(self):
        return self._unary("Normalize")

    def sqdist(self, other):
        """|x - y|^2, of dimension 1."""
        other = self._wrap(other)
        _broadcast(self.dim, other.dim, "sqdist")
        return self._binary(other, "SqDist({},{})", "sqdist", dim=1)

    def weightedsqnorm(self, s):
        """<x, S x> with S a scalar (dimension 1), a diagonal (D) or a full matrix (D*D)."""
        s = self._wrap(s)
        return self._new(f"WeightedSqNorm({s.formula},{self.formula})", (s,), 1)

    def weightedsqdist(self, other, s):
        """<x - y, S (x - y)>, S as for weightedsqnorm."""
        other, s = self._wrap(other), self._wrap(s)
        return self._new(f"WeightedSqDist({s.formula},{self.formula},{other.formula})",
                         (other, s), 1)

    def concat(self, other):
        other = self._wrap(other)
        return self._binary(other, "Concat({},{})", "concat", dim=self.dim + other.dim)

    def matvecmult(self, v):
        """The matrix self (D / dim(v) rows, row-major) times the vector v."""
        v = self._wrap(v)
        if self.dim % v.dim:
            raise ValueError(f"matvecmult: a matrix of {self.dim} values by a vector of {v.dim}")
        return self._binary(v, "MatVecMult({},{})", "matvecmult", dim=self.dim // v.dim)

    def tensorprod(self, other):
        other = self._wrap(other)
        return self._binary(other, "TensorProd({},{})", "tensorprod", dim=self.dim * other.dim)

    # ---- reductions ----

    def _spec(self, weight=None):
        """(formula, weight formula, aliases, values): the placeholders named V0, V1, ...
        in order, so that the same expression built twice is the same formula."""
        vars_ = dict(self.vars)
        if weight is not None:
            vars_.update(weight.vars)
        names = {vid: f"V{k}" for k, vid in enumerate(vars_)}

        def name(m):
            return names[int(m.group(1))]

        formula = _PLACEHOLDER.sub(name, self.formula)
        formula2 = _PLACEHOLDER.sub(name, weight.formula) if weight is not None else None
        aliases = [f"{names[vid]} = {_core.CATEGORY_NAMES[cat]}({dim})"
                   for vid, (_, cat, dim) in vars_.items()]
        values = [value for value, _, _ in vars_.values()]
        return formula, formula2, aliases, values

    def _reduce(self, reduction_op, dim, axis, opt_arg=None, weight=None, backend="auto",
                **kwargs):
        d = axis if dim is None else dim
        if d is None:
            raise ValueError(f"{reduction_op}: say which axis to reduce, dim=0 (over i) or "
                             f"dim=1 (over j)")
        if d not in (0, 1):
            raise ValueError(f"{reduction_op}: dim is 0 (over i) or 1 (over j), not {d!r}")
        if weight is not None:
            weight = self._wrap(weight)
        ranges = kwargs.pop("ranges", None)
        if ranges is None:
            ranges = self.ranges
        formula, formula2, aliases, values = self._spec(weight)
        g = self._genred(formula, aliases, reduction_op, axis=d, opt_arg=opt_arg,
                         formula2=formula2, **kwargs)
        return g(*values, backend=backend, ranges=ranges)

    def _k_shape(self, out, K):
        # kred lays KMin out rank-major: out[:, k * D + d].
        if isinstance(out, tuple):
            return tuple(self._k_shape(o, K) for o in out)
        if self.dim == 1:
            return out
        return self._reshape(out, (out.shape[0], K, self.dim))

    def sum(self, dim=None, axis=None, **kwargs):
        """dim=0: sum over i, an (M, D) array; dim=1: over j, (N, D); dim=-1 (or 2): the
        sum of the D entries, a LazyTensor of dimension 1."""
        d = axis if dim is None else dim
        if d in (-1, 2):
            return self._unary("Sum", 1)
        return self._reduce("Sum", dim, axis, **kwargs)

    def sum_reduction(self, dim=None, axis=None, **kwargs):
        return self._reduce("Sum", dim, axis, **kwargs)

    def logsumexp(self, dim=None, axis=None, weight=None, **kwargs):
        """log sum exp over i (dim=0) or j (dim=1), online and stable; self has dimension
        1. With weight, log sum exp(self) * weight."""
        return self._reduce("LogSumExp", dim, axis, weight=weight, **kwargs)

    def logsumexp_reduction(self, dim=None, axis=None, weight=None, **kwargs):
        return self.logsumexp(dim, axis, weight, **kwargs)

    def sumsoftmaxweight(self, weight, dim=None, axis=None, **kwargs):
        """sum exp(self) weight / sum exp(self), over i (dim=0) or j (dim=1)."""
        return self._reduce("SumSoftMaxWeight", dim, axis, weight=weight, **kwargs)

    def min(self, dim=None, axis=None, **kwargs):
        d = axis if dim is None else dim
        if d in (-1, 2):
            return self._unary("Min", 1)
        return self._reduce("Min", dim, axis, **kwargs)

    def max(self, dim=None, axis=None, **kwargs):
        d = axis if dim is None else dim
        if d in (-1, 2):
            return self._unary("Max", 1)
        return self._reduce("Max", dim, axis, **kwargs)

    def argmin(self, dim=None, axis=None, **kwargs):
        return self._reduce("ArgMin", dim, axis, **kwargs)

    def argmax(self, dim=None, axis=None, **kwargs):
        return self._reduce("ArgMax", dim, axis, **kwargs)

    def min_argmin(self, dim=None, axis=None, **kwargs):
        return self._reduce("Min_ArgMin", dim, axis, **kwargs)

    def max_argmax(self, dim=None, axis=None, **kwargs):
        return self._reduce("Max_ArgMax", dim, axis, **kwargs)

    def Kmin(self, K, dim=None, axis=None, **kwargs):
        """The K smallest values over i or j, sorted: (N, K), or (N, K, D) when D > 1."""
        return self._k_shape(self._reduce("KMin", dim, axis, opt_arg=K, **kwargs), K)

    def argKmin(self, K, dim=None, axis=None, **kwargs):
        """The indices of the K smallest, as Kmin lays them out (int64)."""
        return self._k_shape(self._reduce("ArgKMin", dim, axis, opt_arg=K, **kwargs), K)

    def Kmin_argKmin(self, K, dim=None, axis=None, **kwargs):
        return self._k_shape(self._reduce("KMin_ArgKMin", dim, axis, opt_arg=K, **kwargs), K)

    def __matmul__(self, b):
        """K @ b for K of dimension 1 and b an (M, E) array (or (M,)): sum_j K_ij b_j."""
        if self.dim != 1:
            raise ValueError(f"K @ b needs a LazyTensor of dimension 1 (a kernel matrix), "
                             f"not {self.dim}")
        if not self._is_array(b) or len(b.shape) not in (1, 2):
            raise TypeError("K @ b takes an (M, E) or (M,) array")
        flat = len(b.shape) == 1
        b_j = type(self)(self._reshape(b, (b.shape[0], 1)) if flat else b, axis=1)
        out = (self * b_j).sum(dim=1)
        return self._reshape(out, (out.shape[0],)) if flat else out
