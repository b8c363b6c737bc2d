"""Batch dimensions, as KeOps 2.x has them: B independent problems in one call, inputs
with leading batch dimensions, size-1 batch dimensions broadcast. Each against dense
numpy or torch on every problem; the gradients against torch's own, so that what was
broadcast gets its gradient summed over the problems."""

import numpy as np
import pytest
import torch

import kred.numpy
import kred.torch

from conftest import BACKENDS, need_backend

ALIASES = ["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"]
GAUSS = "Exp(-G * SqDist(X, Y)) * B"


def _dense(g, x, y, b):
    """sum_j exp(-g |x_i - y_j|^2) b_j for each problem, numpy broadcasting the batch."""
    d2 = ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)
    return np.exp(-g[..., None] * d2) @ b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_genred_batches(backend, dtype, rng):
    need_backend(backend)
    conv = kred.numpy.Genred(GAUSS, ALIASES, axis=1)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    x = rng.random((2, 3, 40, 3))
    y = rng.random((2, 3, 30, 3))
    b = rng.random((2, 3, 30, 2))
    g = rng.random((2, 3, 1)) + 0.5
    cases = [
        (g, x, y, b),                      # every argument batched
        (g[:1], x, y[:, :1], b[:, :1]),    # size-1 batch dimensions broadcast
        (g[0, 0], x, y[0, 0], b[0, 0]),    # the reduced side shared: no batch there
        (g, x[0, 0], y, b),                # the output's side shared, copied per problem
        (np.float64(0.7), x[0], y[0], b[0]),  # one batch dimension
    ]
    for args in cases:
        args = tuple(np.asarray(a, dtype=dtype) for a in args)
        want = _dense(*(np.asarray(a, dtype=np.float64) for a in
                        (args[0].reshape(args[0].shape[:-1] + (1,)) if args[0].ndim else
                         args[0].reshape(1, 1), *args[1:])))
        got = conv(*args, backend=backend)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_axis_i_and_indices(backend, rng):
    need_backend(backend)
    x, y, a = rng.random((3, 25, 2)), rng.random((3, 35, 2)), rng.random((1, 25, 1))
    g = kred.numpy.Genred("Exp(-SqDist(X, Y)) * A", ["X = Vi(2)", "Y = Vj(2)", "A = Vi(1)"],
                          axis=0)
    got = g(x, y, a, backend=backend)
    d2 = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
    want = np.swapaxes(np.exp(-d2), 1, 2) @ a
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # indices count each problem's own rows (the stacked run counts all of them)
    k = kred.numpy.Genred("SqDist(X, Y)", ["X = Vi(2)", "Y = Vj(2)"], reduction_op="ArgKMin",
                          opt_arg=3, axis=1)(x, y, backend=backend)
    np.testing.assert_array_equal(k, np.argsort(d2, -1, kind="stable")[..., :3])
    v, i = kred.numpy.Genred("SqDist(X, Y)", ["X = Vi(2)", "Y = Vj(2)"],
                             reduction_op="Min_ArgMin", axis=0)(x, y, backend=backend)
    np.testing.assert_allclose(v[..., 0], d2.min(1), rtol=1e-12)
    np.testing.assert_array_equal(i[..., 0], d2.argmin(1))
    # the shared side's indices need no shift
    k1 = kred.numpy.Genred("SqDist(X, Y)", ["X = Vi(2)", "Y = Vj(2)"], reduction_op="ArgMin",
                           axis=1)(x, y[0], backend=backend)
    np.testing.assert_array_equal(k1[..., 0], (((x[:, :, None, :] - y[0]) ** 2).sum(-1)).argmin(-1))


def test_torch_gradients(rng):
    """Gradients through the stacked run: a broadcast Y and b (batch 1) get theirs summed
    over the problems, the batched parameter G per problem."""
    x = torch.tensor(rng.random((2, 3, 20, 3)), requires_grad=True)
    y = torch.tensor(rng.random((1, 3, 15, 3)), requires_grad=True)
    b = torch.tensor(rng.random((15, 2)), requires_grad=True)
    g = torch.tensor(rng.random((2, 1, 1)) + 0.5, requires_grad=True)
    conv = kred.torch.Genred(GAUSS, ALIASES, axis=1)
    out = conv(g, x, y, b)
    w = torch.tensor(rng.random(out.shape))
    got = torch.autograd.grad((out * w).sum(), (g, x, y, b))
    gd, xd, yd, bd = (t.detach().clone().requires_grad_() for t in (g, x, y, b))
    d2 = ((xd[..., :, None, :] - yd[..., None, :, :]) ** 2).sum(-1)
    want_out = torch.exp(-gd[..., None] * d2) @ bd
    want = torch.autograd.grad((want_out * w).sum(), (gd, xd, yd, bd))
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    for a, c in zip(got, want):
        assert a.shape == c.shape
        torch.testing.assert_close(a, c, rtol=1e-11, atol=1e-11)


def test_lazytensor_batches(rng):
    x = torch.tensor(rng.random((2, 30, 1, 3)))
    y = torch.tensor(rng.random((2, 1, 20, 3)))
    s = torch.tensor(rng.random((2, 1, 1, 1)) + 0.5)
    b = torch.tensor(rng.random((1, 1, 20, 2)))
    X, Y, S = kred.torch.LazyTensor(x), kred.torch.LazyTensor(y), kred.torch.LazyTensor(s)
    K = (-S * ((X - Y) ** 2).sum(-1)).exp()
    got = (K * kred.torch.LazyTensor(b)).sum(dim=1)
    d2 = ((x - y) ** 2).sum(-1)
    want = torch.exp(-s[..., 0] * d2) @ b[:, 0]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    idx = ((X - Y) ** 2).sum(-1).argKmin(2, dim=1)
    torch.testing.assert_close(idx, d2.argsort(-1)[..., :2])


def test_bad_batches(rng):
    conv = kred.numpy.Genred(GAUSS, ALIASES, axis=1)
    x, y, b = rng.random((3, 20, 3)), rng.random((2, 10, 3)), rng.random((10, 2))
    with pytest.raises(ValueError, match="do not broadcast"):
        conv(0.5, x, y, b)
    with pytest.raises(ValueError, match=r"argument 1 \(X = Vi\(3\)\) is a \(nx, 3\) array"):
        conv(0.5, rng.random((3, 20, 4)), y[:1], b)
    with pytest.raises(ValueError, match="has 9 rows"):
        conv(0.5, x, y[:1], b[:9])
    with pytest.raises(NotImplementedError, match="ranges= with batch"):
        conv(0.5, x, y[:1], b, ranges=(np.array([[0, 20]]), np.array([1]),
                                       np.array([[0, 10]]), None, None, None))
    # a batched parameter needs an alias that names it
    anon = kred.numpy.Genred("Exp(-Pm(2, 1) * SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)"],
                             axis=1)
    with pytest.raises(NotImplementedError, match="alias that names it"):
        anon(x, y[:1], np.ones((3, 1)))
