"""LazyTensor (numpy and torch) against the same formulas written as strings for Genred,
and against dense numpy."""

import numpy as np
import pytest
import torch

import kred.numpy
import kred.torch
from kred import _core
from kred.numpy import LazyTensor as NLT
from kred.torch import LazyTensor as TLT

N, M, D = 23, 31, 3


@pytest.fixture
def xyb(rng):
    return rng.standard_normal((N, D)), rng.standard_normal((M, D)), rng.standard_normal((M, 2))


def test_gaussian_conv_numpy(xyb):
    x, y, b = xyb
    x_i, y_j = NLT(x[:, None, :]), NLT(y[None, :, :])
    assert x_i.shape == (N, 1, D) and y_j.shape == (1, M, D)
    K = (-((x_i - y_j) ** 2).sum(-1) * 0.5).exp()
    assert K.shape == (N, M, 1)
    a = K @ b
    s = kred.numpy.Genred("Exp(-SqDist(X, Y) * G) * B",
                          ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)"], axis=1)
    np.testing.assert_allclose(a, s(x, y, b, 0.5), rtol=1e-13, atol=1e-13)
    want = np.exp(-0.5 * ((x[:, None] - y[None]) ** 2).sum(-1)) @ b
    np.testing.assert_allclose(a, want, rtol=1e-13, atol=1e-13)
    # K @ b with b of shape (M,): a vector out.
    np.testing.assert_allclose(K @ b[:, 0], want[:, 0], rtol=1e-13, atol=1e-13)


def test_reductions_numpy(xyb):
    x, y, _ = xyb
    x_i, y_j = NLT(x, axis=0), NLT(y, axis=1)
    d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
    D_ij = x_i.sqdist(y_j)
    np.testing.assert_allclose(D_ij.sum(dim=0)[:, 0], d2.sum(0), rtol=1e-12)
    np.testing.assert_allclose(D_ij.min(dim=1)[:, 0], d2.min(1), rtol=1e-13)
    np.testing.assert_array_equal(D_ij.argmin(dim=1)[:, 0], d2.argmin(1))
    idx = D_ij.argKmin(4, dim=1)
    assert idx.shape == (N, 4) and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, np.argsort(d2, 1, kind="stable")[:, :4])
    np.testing.assert_allclose(D_ij.Kmin(4, dim=1), np.sort(d2, 1)[:, :4], rtol=1e-13)
    lse = (-D_ij).logsumexp(dim=1)
    np.testing.assert_allclose(lse[:, 0], np.log(np.exp(-d2).sum(1)), rtol=1e-12)
    # Kmin of a vector formula: (N, K, D).
    v = (x_i - y_j).Kmin(2, dim=1)
    np.testing.assert_allclose(v, np.sort(x[:, None] - y[None], 1)[:, :2], rtol=1e-13)


def test_same_expression_same_formula(xyb):
    """Building an expression again makes the same formula text: no new Op, no new
    compile."""
    x, y, b = xyb

    def conv():
        x_i, y_j, b_j = NLT(x[:, None]), NLT(y[None]), NLT(b[None])
        return ((-x_i.sqdist(y_j)).exp() * b_j).sum(dim=1)

    conv()
    n = len(_core._ops)
    conv()
    assert len(_core._ops) == n
    assert "Exp" in repr((-NLT(x[:, None]).sqdist(NLT(y[None]))).exp())


def test_torch_against_strings(rng):
    """The torch LazyTensor and Genred on the string formula: values and gradients."""
    x = torch.tensor(rng.standard_normal((N, D)), requires_grad=True)
    y = torch.tensor(rng.standard_normal((M, D)), requires_grad=True)
    b = torch.tensor(rng.standard_normal((M, 2)), requires_grad=True)
    x_i, y_j = TLT(x[:, None, :]), TLT(y[None, :, :])
    out = ((x_i | y_j).sin() - (x_i - y_j).norm2() / 2).exp() @ b
    s = kred.torch.Genred("Exp(Sin((X | Y)) - Norm2(X - Y) / 2) * B",
                          ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"], axis=1)
    want = s(x, y, b, backend="CPU")
    torch.testing.assert_close(out, want, rtol=1e-13, atol=1e-13)
    w = torch.randn(N, 2, dtype=torch.float64)
    g1 = torch.autograd.grad((out * w).sum(), [x, y, b])
    g2 = torch.autograd.grad((want * w).sum(), [x, y, b])
    for u, v in zip(g1, g2):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    # A float parameter is a Pm: a new value reuses the compiled formula.
    sm = (-x_i.sqdist(y_j) * 0.3).sumsoftmaxweight(TLT(b[None]), dim=1)
    n = len(_core._ops)
    sm2 = (-x_i.sqdist(y_j) * 0.7).sumsoftmaxweight(TLT(b[None]), dim=1)
    assert len(_core._ops) == n
    d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
    torch.testing.assert_close(sm, torch.softmax(-0.3 * d2, 1) @ b)
    torch.testing.assert_close(sm2, torch.softmax(-0.7 * d2, 1) @ b)


def test_operations(rng):
    """Arithmetic with numbers and arrays, powers, indexing and vector operations, each
    against numpy."""
    x, y = rng.standard_normal((N, D)), rng.standard_normal((M, D))
    p = np.abs(rng.standard_normal(D)) + 0.5
    x_i, y_j, p_ = NLT(x[:, None]), NLT(y[None]), NLT(p)
    X, Y = x[:, None], y[None]
    cases = [
        (2 - x_i * 3 + y_j / 2, 2 - X * 3 + Y / 2),
        (abs(x_i - y_j) ** 1.5, np.abs(X - Y) ** 1.5),
        ((x_i - y_j) ** -1, 1 / (X - Y)),
        ((x_i ** 2 + 1) ** 0.5, np.sqrt(X ** 2 + 1)),
        (x_i.weightedsqdist(y_j, p_), (((X - Y) ** 2) * p).sum(-1, keepdims=True)),
        ((x_i * p_)[..., 1], (X * p)[..., 1:2]),
        (x_i.concat(y_j).relu(), np.maximum(np.concatenate(np.broadcast_arrays(X, Y), -1), 0)),
        ((x_i - y_j).normalize().cos(), np.cos((X - Y) / np.linalg.norm(X - Y, axis=-1,
                                                                        keepdims=True))),
        ((x_i - y_j).clamp(-0.5, 0.5), np.clip(X - Y, -0.5, 0.5)),
    ]
    for lazy, dense in cases:
        dense = np.broadcast_to(dense, lazy.shape[:2] + dense.shape[-1:])
        np.testing.assert_allclose(lazy.sum(dim=1), dense.sum(1), rtol=1e-12, atol=1e-12)


def test_errors(rng):
    x, y = rng.standard_normal((N, D)), rng.standard_normal((M, 2))
    with pytest.raises(ValueError, match="axis"):
        NLT(x)
    with pytest.raises(ValueError, match="do not match"):
        NLT(x[:, None]) + NLT(y[None])
    with pytest.raises(ValueError, match="dimension 1"):
        NLT(x[:, None]) @ y
    with pytest.raises(ValueError, match="dim"):
        NLT(x[:, None]).sqdist(NLT(x[None])).sum()
    with pytest.raises(ValueError, match="rows"):
        NLT(x[:, None]) - NLT(x[:5, None])
    with pytest.raises(TypeError):
        NLT([1.0, 2.0])
