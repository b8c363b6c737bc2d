"""Differentiation through kred: torch.autograd.gradcheck and gradgradcheck in float64
with respect to Vi, Vj and Pm variables of Sum, LogSumExp and SumSoftMaxWeight (the
gradients are kred's own gradient reductions, run again by the same autograd Function),
and gradients against those of the same function written densely in torch."""

import pytest
import torch

import kred.torch
from kred import _core

# nx, ny small: gradcheck perturbs every input value; the point is the formulas.
NX, NY = 4, 5

# name: (formula, weight, aliases, reduction, dense(g, x, y, v) in torch)
CASES = {
    "Sum": ("Exp(-G * SqDist(X, Y)) * V", None, "Sum",
            lambda g, x, y, v: torch.exp(-g * ((x[:, None] - y[None]) ** 2).sum(-1)) @ v),
    "LogSumExp": ("-G * SqDist(X, Y) + Sin(Elem(V, 0))", None, "LogSumExp",
                  lambda g, x, y, v: torch.logsumexp(
                      -g * ((x[:, None] - y[None]) ** 2).sum(-1) + torch.sin(v[:, 0])[None], 1,
                      keepdim=True)),
    "SumSoftMaxWeight": ("-G * SqDist(X, Y)", "V", "SumSoftMaxWeight",
                         lambda g, x, y, v: torch.softmax(
                             -g * ((x[:, None] - y[None]) ** 2).sum(-1), 1) @ v),
}
ALIASES = ["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "V = Vj(2)"]


def inputs(seed, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    g = torch.tensor([0.7], dtype=torch.float64)
    x = torch.randn(NX, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(NY, 3, generator=gen, dtype=torch.float64)
    v = torch.randn(NY, 2, generator=gen, dtype=torch.float64)
    return tuple(t.requires_grad_(requires_grad) for t in (g, x, y, v))


def genred(name):
    formula, weight, red, _ = CASES[name]
    base = "SumSoftMaxWeight" if weight else red
    return kred.torch.Genred(formula, ALIASES, base, axis=1, formula2=weight)


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    """First derivatives with respect to G (Pm), X (Vi), Y and V (Vj), against finite
    differences."""
    f = genred(name)
    assert torch.autograd.gradcheck(lambda *a: f(*a, backend="CPU"), inputs(1), eps=1e-6,
                                    atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_gradgradcheck(name):
    """Second derivatives: the backward is itself differentiable (create_graph=True),
    including through the forward output that the gradients of LogSumExp and
    SumSoftMaxWeight take."""
    f = genred(name)
    assert torch.autograd.gradgradcheck(lambda *a: f(*a, backend="CPU"), inputs(2), eps=1e-6,
                                        atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_against_dense(name):
    """The value, the gradient and a Hessian-vector product agree with torch's own
    derivatives of the dense formula."""
    f = genred(name)
    dense = CASES[name][3]
    a, b = inputs(3), inputs(3)
    out_k, out_d = f(*a, backend="CPU"), dense(*b)
    torch.testing.assert_close(out_k, out_d, rtol=1e-12, atol=1e-12)
    w = torch.randn(out_d.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    gk = torch.autograd.grad((out_k * w).sum(), a, create_graph=True)
    gd = torch.autograd.grad((out_d * w).sum(), b, create_graph=True)
    for u, v in zip(gk, gd):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)
    hk = torch.autograd.grad(sum((u ** 2).sum() for u in gk), a)
    hd = torch.autograd.grad(sum((u ** 2).sum() for u in gd), b)
    for u, v in zip(hk, hd):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-11)


def test_grad_of_pm_given_as_0d_and_float():
    """A Pm may be a 0-d tensor (its gradient has its shape) or a Python float (no
    gradient)."""
    f = genred("Sum")
    _, x, y, v = inputs(5)
    g0 = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    out = f(g0, x, y, v, backend="CPU")
    (gg,) = torch.autograd.grad(out.sum(), [g0])
    assert gg.shape == ()
    torch.testing.assert_close(f(0.7, x, y, v, backend="CPU"), out)


def test_min_gradient_and_index_outputs():
    """Min's gradient flows to the selected terms; ArgMin's output is indices, which
    carry no gradient."""
    aliases = ["X = Vi(2)", "Y = Vj(2)"]
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    m = kred.torch.Genred("SqDist(X, Y)", aliases, "Min", axis=1)(x, y, backend="CPU")
    dense = ((x[:, None] - y[None]) ** 2).sum(-1).min(1, keepdim=True).values
    torch.testing.assert_close(m, dense)
    gk = torch.autograd.grad(m.sum(), [x, y])
    gd = torch.autograd.grad(dense.sum(), [x, y])
    for u, v in zip(gk, gd):
        torch.testing.assert_close(u, v)
    idx = kred.torch.Genred("SqDist(X, Y)", aliases, "ArgMin", axis=1)(x, y, backend="CPU")
    assert idx.dtype == torch.int64 and not idx.requires_grad
    vals, idx2 = kred.torch.Genred("SqDist(X, Y)", aliases, "Min_ArgMin", axis=1)(
        x, y, backend="CPU")
    assert vals.requires_grad and not idx2.requires_grad
    torch.testing.assert_close(idx2, idx)


def test_gradient_reductions_are_cached():
    """A second backward compiles nothing: the gradient Ops are made once."""
    f = genred("LogSumExp")
    a = inputs(6)
    f(*a, backend="CPU").sum().backward()
    n_ops = len(f.op._grads)
    compiled = {k: len(g._compiled) for k, g in f.op._grads.items()}
    b = inputs(7)
    f(*b, backend="CPU").sum().backward()
    assert len(f.op._grads) == n_ops == 4
    assert {k: len(g._compiled) for k, g in f.op._grads.items()} == compiled
    assert all(isinstance(g, _core.Op) for g in f.op._grads.values())


def test_gradcheck_over_i():
    """axis=0 (a reduction over i, output indexed by j): the roles of the gradient
    reductions swap."""
    f = kred.torch.Genred("Exp(-G * SqDist(X, Y)) * V", ["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)",
                                                         "V = Vi(2)"], "Sum", axis=0)
    g, x, y, _ = inputs(8)
    v = torch.randn(NX, 2, dtype=torch.float64, requires_grad=True)
    out = f(g, x, y, v, backend="CPU")
    assert out.shape == (NY, 2)
    assert torch.autograd.gradcheck(lambda *a: f(*a, backend="CPU"), (g, x, y, v), eps=1e-6,
                                    atol=1e-7, rtol=1e-5)
