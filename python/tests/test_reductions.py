"""Every reduction kred has, through kred.numpy.Genred and kred.torch.Genred, against the
same reduction of the dense (nx, ny) array computed by numpy in float64, in float32 and
float64, on the host and OpenCL backends."""

import numpy as np
import pytest
import torch

import kred.numpy
import kred.torch
from conftest import BACKENDS, need_backend, tolerance

NX, NY, K = 37, 53, 3
ALIASES = ["X = Vi(2)", "Y = Vj(2)", "B = Vj(2)"]
# A vector formula for the element-wise reductions, a scalar one for the LogSumExp
# family, and a positive weight.
VEC = "Sin(X - Y) + X * Y"
SCAL = "(X | Y) - SqDist(X, Y)"
WEIGHT = "Square(B) + 1"


def dense(x, y, b):
    """The formulas on every (i, j) pair, in float64: (nx, ny, 2), (nx, ny), (ny, 2)."""
    x, y, b = (v.astype(np.float64) for v in (x, y, b))
    d = x[:, None, :] - y[None, :, :]
    vec = np.sin(d) + x[:, None, :] * y[None, :, :]
    scal = (x[:, None, :] * y[None, :, :]).sum(-1) - (d ** 2).sum(-1)
    return vec, scal, b ** 2 + 1


def lse(f, axis):
    m = f.max(axis=axis, keepdims=True)
    return m + np.log(np.exp(f - m).sum(axis=axis, keepdims=True))


# name: (formula, weight, opt_arg, reference(vec, scal, weight) -> expected over j)
CASES = {
    "Sum": (VEC, None, None, lambda v, s, w: v.sum(1)),
    "Min": (VEC, None, None, lambda v, s, w: v.min(1)),
    "Max": (VEC, None, None, lambda v, s, w: v.max(1)),
    "ArgMin": (VEC, None, None, lambda v, s, w: v.argmin(1)),
    "ArgMax": (VEC, None, None, lambda v, s, w: v.argmax(1)),
    "Min_ArgMin": (VEC, None, None, lambda v, s, w: (v.min(1), v.argmin(1))),
    "Max_ArgMax": (VEC, None, None, lambda v, s, w: (v.max(1), v.argmax(1))),
    # rank-major: out[:, k * D + d]
    "KMin": (VEC, None, K, lambda v, s, w: np.sort(v, 1)[:, :K].reshape(len(v), -1)),
    "ArgKMin": (VEC, None, K, lambda v, s, w: np.argsort(v, 1, kind="stable")[:, :K]
                .reshape(len(v), -1)),
    "KMin_ArgKMin": (VEC, None, K, lambda v, s, w: (
        np.sort(v, 1)[:, :K].reshape(len(v), -1),
        np.argsort(v, 1, kind="stable")[:, :K].reshape(len(v), -1))),
    "LogSumExp": (SCAL, None, None, lambda v, s, w: lse(s, 1)),
    "LogSumExpWeight": (SCAL, WEIGHT, None,
                        lambda v, s, w: lse(s[:, :, None] + np.log(w)[None], 1)[:, 0]),
    "SumSoftMaxWeight": (SCAL, WEIGHT, None, lambda v, s, w: (
        (np.exp(s - s.max(1, keepdims=True))[:, :, None] * w[None]).sum(1)
        / np.exp(s - s.max(1, keepdims=True)).sum(1)[:, None])),
    "Max_SumShiftExp": (SCAL, None, None, lambda v, s, w: np.stack(
        [s.max(1), np.exp(s - s.max(1, keepdims=True)).sum(1)], 1)),
    "Max_SumShiftExpWeight": (SCAL, WEIGHT, None, lambda v, s, w: np.concatenate(
        [s.max(1)[:, None],
         (np.exp(s - s.max(1, keepdims=True))[:, :, None] * w[None]).sum(1)], 1)),
}


# What bounds the rounding of each result, beyond the sum of |terms| of the default.
SCALES = {
    "LogSumExp": lambda v, s, w: np.abs(s).max() + np.log(NY),
    "LogSumExpWeight": lambda v, s, w: np.abs(s).max() + np.log(NY * w.max()),
    "SumSoftMaxWeight": lambda v, s, w: w.max(),
    "Max_SumShiftExp": lambda v, s, w: np.abs(s).max() + NY,
    "Max_SumShiftExpWeight": lambda v, s, w: np.abs(s).max() + NY * w.max(),
}


def data(rng, dtype):
    return (rng.standard_normal((NX, 2)).astype(dtype), rng.standard_normal((NY, 2)).astype(dtype),
            rng.standard_normal((NY, 2)).astype(dtype))


def gather(v, idx):
    """v[i, idx[i, k*D + d], d] for the (nx, ny, D) values v and rank-major indices."""
    nx, _, dim = v.shape
    idx = idx.reshape(nx, -1, dim)
    return np.take_along_axis(v, idx, 1).reshape(nx, -1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_reduction(backend, dtype, name, rng):
    need_backend(backend)
    formula, weight, opt_arg, ref = CASES[name]
    x, y, b = data(rng, dtype)
    vec, scal, w = dense(x, y, b)
    want = ref(vec, scal, w)
    base = name.replace("Weight", "") if name == "LogSumExpWeight" else name
    red = kred.numpy.Genred(formula, ALIASES, base if weight else name, axis=1,
                            opt_arg=opt_arg, formula2=weight)
    got = red(x, y, b, backend=backend)
    scale = SCALES.get(name, lambda v, s_, w_: np.abs(v).sum(1).max())(vec, scal, w)
    rtol, atol = tolerance(dtype, scale)
    if name in ("ArgMin", "ArgMax", "ArgKMin"):
        values = gather(vec, got)
        wanted = gather(vec, want)
        assert got.dtype == np.int64 and got.shape == want.shape
        if np.dtype(dtype) == np.float64:
            np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(values, wanted, rtol=rtol, atol=tolerance(dtype, 10)[1])
    elif name in ("Min_ArgMin", "Max_ArgMax", "KMin_ArgKMin"):
        vals, idx = got
        assert vals.dtype == dtype and idx.dtype == np.int64
        np.testing.assert_allclose(vals, want[0], rtol=rtol, atol=tolerance(dtype, 10)[1])
        np.testing.assert_allclose(gather(vec, idx), want[0], rtol=rtol,
                                   atol=tolerance(dtype, 10)[1])
        if np.dtype(dtype) == np.float64:
            np.testing.assert_array_equal(idx, want[1])
    else:
        assert got.dtype == dtype
        assert got.shape == (NX, red.op.out_dim)
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=rtol, atol=atol)

    # kred.torch.Genred runs the same compiled reduction on tensors: the same numbers.
    tred = kred.torch.Genred(formula, ALIASES, base if weight else name, axis=1,
                             opt_arg=opt_arg, formula2=weight)
    tgot = tred(*(torch.from_numpy(v) for v in (x, y, b)), backend=backend)
    if isinstance(got, tuple):
        for g, t in zip(got, tgot):
            np.testing.assert_array_equal(t.numpy(), g)
    else:
        np.testing.assert_array_equal(tgot.numpy(), got)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["Sum", "ArgKMin", "LogSumExp"])
def test_reduction_over_i(dtype, name, rng):
    """axis=0 reduces over i: the output has ny rows."""
    formula, _, opt_arg, ref = CASES[name]
    x, y, b = data(rng, dtype)
    vec, scal, w = dense(x, y, b)
    got = kred.numpy.Genred(formula, ALIASES, name, axis=0, opt_arg=opt_arg)(x, y, b, backend="CPU")
    want = ref(vec.transpose(1, 0, 2), scal.T, w)
    assert got.shape[0] == NY
    if name == "ArgKMin":
        rtol, atol = tolerance(dtype, 10)
        np.testing.assert_allclose(gather(vec.transpose(1, 0, 2), got),
                                   gather(vec.transpose(1, 0, 2), want), rtol=rtol, atol=atol)
    else:
        rtol, atol = tolerance(dtype, np.abs(vec).sum(0).max())
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=rtol, atol=atol)


def test_empty_reduction(rng):
    """ny = 0 gives the reduction's neutral value; nx = 0 an empty output."""
    x, y, b = data(rng, np.float64)
    s = kred.numpy.Genred(VEC, ALIASES, "Sum", axis=1)
    np.testing.assert_array_equal(s(x, y[:0], b[:0], backend="CPU"), np.zeros((NX, 2)))
    assert s(x[:0], y, b, backend="CPU").shape == (0, 2)
    m = kred.numpy.Genred(VEC, ALIASES, "ArgMin", axis=1)
    np.testing.assert_array_equal(m(x, y[:0], b[:0], backend="CPU"), -np.ones((NX, 2)))
    lse_ = kred.numpy.Genred(SCAL, ALIASES, "LogSumExp", axis=1)
    assert np.all(lse_(x, y[:0], b[:0], backend="CPU") == -np.inf)


def test_sum_schemes(rng):
    """The summation schemes give the same sums (here the terms are few and tame)."""
    x, y, b = data(rng, np.float64)
    want = dense(x, y, b)[0].sum(1)
    for scheme in ("auto", "direct_sum", "block_sum", "kahan_scheme"):
        red = kred.numpy.Genred(VEC, ALIASES, "Sum", axis=1, sum_scheme=scheme)
        got = red(x, y, b, backend="CPU")
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_math(rng, backend):
    """use_fast_math=True reaches the library (the host's shorter exp changes the float32
    sums' last bits), stays within 1e-5 of float64 numpy (kred.h's bound for each fast
    function, with room), keeps -inf and NaN, and its gradient runs with it."""
    need_backend(backend)
    x = rng.uniform(0, 1, (300, 3)).astype(np.float32)
    y = rng.uniform(0, 1, (2000, 3)).astype(np.float32)
    b = rng.uniform(0, 1, (2000, 1)).astype(np.float32)
    aliases = ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"]
    d2 = ((x[:, None, :].astype(np.float64) - y[None, :, :]) ** 2).sum(-1)
    want = np.exp(-2 * d2) @ b.astype(np.float64)
    fast = kred.numpy.Genred("Exp(-IntCst(2)*SqDist(X,Y))*B", aliases, "Sum", axis=1,
                             use_fast_math=True)
    slow = kred.numpy.Genred("Exp(-IntCst(2)*SqDist(X,Y))*B", aliases, "Sum", axis=1)
    got_fast, got_slow = fast(x, y, b, backend=backend), slow(x, y, b, backend=backend)
    np.testing.assert_allclose(got_fast, want, rtol=1e-5)
    np.testing.assert_allclose(got_slow, want, rtol=1e-6)
    if backend == "host":
        assert not np.array_equal(got_fast, got_slow)
    lse = kred.numpy.Genred("X + Y", ["X = Vi(1)", "Y = Vj(1)"], "LogSumExp", axis=1,
                            use_fast_math=True)
    xs = np.array([[0], [-np.inf], [1]], np.float32)
    ys = np.array([[1000], [999], [-np.inf], [np.nan]], np.float32)
    out = lse(xs, ys[:3], backend=backend)
    assert out[1, 0] == -np.inf and abs(out[0, 0] - (1000 + np.log1p(np.exp(-1)))) < 1e-3
    assert np.isnan(lse(xs, ys, backend=backend)).all()
    tx = torch.tensor(x, requires_grad=True)
    red = kred.torch.Genred("Exp(-IntCst(2)*SqDist(X,Y))*B", aliases, "Sum", axis=1,
                            use_fast_math=True)
    red(tx, torch.tensor(y), torch.tensor(b), backend=backend).sum().backward()
    diff = x[:, None, :].astype(np.float64) - y[None, :, :]
    grad = (-4 * diff * (np.exp(-2 * d2) * b[:, 0].astype(np.float64))[:, :, None]).sum(1)
    np.testing.assert_allclose(tx.grad.numpy(), grad, rtol=1e-5,
                               atol=1e-5 * np.abs(grad).max())


def test_generic_options(rng):
    """generic_sum and generic_logsumexp take Genred's sum_scheme= and use_fast_math= (and
    KeOps' dtype=, unused), and refuse a keyword they do not know."""
    x = rng.uniform(0, 1, (50, 3))
    y = rng.uniform(0, 1, (70, 3))
    want = np.exp(-((x[:, None, :] - y[None]) ** 2).sum(-1)).sum(1, keepdims=True)
    for options in ({}, {"sum_scheme": "kahan_scheme"}, {"use_fast_math": True},
                    {"dtype": "float64"}):
        f = kred.numpy.generic_sum_np("Exp(-SqDist(X,Y))", "A = Vx(1)", "X = Vx(3)",
                                      "Y = Vy(3)", **options)
        # float64: fast math's exp is within 8e-14 (kred.h)
        np.testing.assert_allclose(f(x, y, backend="CPU"), want, rtol=1e-12)
        t = kred.torch.generic_logsumexp("-SqDist(X,Y)", "A = Vx(1)", "X = Vx(3)",
                                         "Y = Vy(3)", **options)
        np.testing.assert_allclose(t(torch.tensor(x), torch.tensor(y), backend="CPU").numpy(),
                                   np.log(want), rtol=1e-12)
    with pytest.raises(TypeError):
        kred.numpy.generic_sum_np("X", "A = Vx(3)", "X = Vx(3)", fast=True)
