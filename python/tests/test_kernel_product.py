"""kernel_product: every mode, every parameter shape, the kernel names and their
combinations, against backend="pytorch" (the kernel matrix formed densely by torch from
the kernel text, kred._dense), and its errors."""

import pytest
import torch

from kred.torch import Kernel, kernel_product

N, M, D, E = 9, 11, 3, 2


def gen(seed):
    return torch.Generator().manual_seed(seed)


def t(*shape, seed=0, positive=False):
    v = torch.randn(*shape, generator=gen(seed), dtype=torch.float64)
    return v.abs() + 0.5 if positive else v


def inputs(mode, seed=0):
    """The mode's inputs after x and y, in KeOps' order."""
    b1 = mode in ("lse", "log_scaled_lse", "lse_mult_i")
    b = t(M, 1 if b1 else E, seed=seed + 1)
    u, v = t(N, 1, seed=seed + 2) * 0.3, t(M, 1, seed=seed + 3) * 0.3
    c = t(N, E, seed=seed + 4)
    h = t(N, 1, seed=seed + 5, positive=True)
    s, tt = t(N, 1, seed=seed + 6) * 0.3, t(M, 1, seed=seed + 7) * 0.3
    return {"sum": (b,), "lse": (b,), "log_scaled": (b, u, v), "log_scaled_lse": (b, u, v),
            "log_scaled_barycenter": (b, u, v, c), "lse_mult_i": (b, h),
            "sinkhorn_cost": (s, tt), "sinkhorn_primal": (s, tt, u, v)}[mode]


def both(params, x, y, *bs, **kw):
    """kred's result and the dense one."""
    return (kernel_product(params, x, y, *bs, **kw),
            kernel_product(dict(params, backend="pytorch"), x, y, *bs, **kw))


MODES = ["sum", "lse", "log_scaled", "log_scaled_lse", "log_scaled_barycenter", "lse_mult_i",
         "sinkhorn_cost", "sinkhorn_primal"]


@pytest.mark.parametrize("mode", MODES)
def test_modes(mode):
    """Each mode on a Gaussian-times-Cauchy kernel, with gradients in x, y, gamma and the
    mode's inputs."""
    x, y = t(N, D, seed=10).requires_grad_(), t(M, D, seed=11).requires_grad_()
    g1 = torch.tensor([0.4], dtype=torch.float64, requires_grad=True)
    g2 = torch.tensor([0.8], dtype=torch.float64, requires_grad=True)
    bs = tuple(v.requires_grad_() for v in inputs(mode))
    params = {"id": Kernel("gaussian(x,y) * cauchy(x,y)"), "gamma": (g1, g2), "mode": mode}
    got, want = both(params, x, y, *bs)
    assert got.shape == want.shape == (N, E if mode in ("sum", "log_scaled",
                                                         "log_scaled_barycenter") else 1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    wrt = [x, y, g1, g2, *bs]
    for a, b in zip(torch.autograd.grad(got.sum(), wrt), torch.autograd.grad(want.sum(), wrt)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


def param_values(shape):
    """A positive definite parameter of each shape, for dimension D and M points."""
    a = t(D, D, seed=20)
    full = a @ a.T / D + torch.eye(D, dtype=torch.float64)
    fulls = torch.stack([full * (1 + 0.1 * k) for k in range(M)])
    return {
        "scalar": torch.tensor([0.6], dtype=torch.float64),
        "diagonal": t(D, seed=21, positive=True),
        "full": full.reshape(D * D),
        "scalar_j": t(M, 1, seed=22, positive=True),
        "diagonal_j": t(M, D, seed=23, positive=True),
        "full_j": fulls.reshape(M, D * D),
        "full_j_3d": fulls,
    }[shape]


@pytest.mark.parametrize("shape", ["scalar", "diagonal", "full", "scalar_j", "diagonal_j",
                                   "full_j", "full_j_3d"])
def test_parameter_shapes(shape):
    """Scalar, diagonal, full matrix, and one per y point of each (M rows, or (M, D, D))."""
    x, y, b = t(N, D, seed=30), t(M, D, seed=31), t(M, E, seed=32)
    g = param_values(shape).requires_grad_()
    params = {"id": Kernel("gaussian(x,y)"), "gamma": g}
    got, want = both(params, x, y, b)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    (gg,), (gw,) = torch.autograd.grad(got.sum(), [g]), torch.autograd.grad(want.sum(), [g])
    assert gg.shape == g.shape
    torch.testing.assert_close(gg, gw, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("name,mode", [
    ("laplacian(x,y)", "sum"),
    ("inverse_multiquadric(x,y)", "lse"),
    ("-distance(x,y)", "sum"),
    ("distance(x,y)", "lse"),
    ("linear(x,y)", "sum"),
    ("cauchy(x,y) + gaussian(x,y) * (1 + cauchy(u,v)**2)", "sum"),
    ("cauchy(x,y) + gaussian(x,y) * (1 + cauchy(u,v)**2)", "log_scaled"),
    ("gaussian(x,y) * linear(u,v)**2", "lse"),
    ("2 * gaussian(x,y) - laplacian(u,v)**-1", "sum"),
])
def test_kernel_names(name, mode):
    """The atomic formulas and their combinations, in a sum mode and a log mode."""
    k = Kernel(name)
    xs = tuple(t(N, D + p, seed=40 + p) for p in range(len(k.pairs)))
    ys = tuple(t(M, D + p, seed=50 + p) for p in range(len(k.pairs)))
    gammas = tuple(None if a == "linear" else torch.tensor([0.5 + 0.1 * i], dtype=torch.float64)
                   for i, a in enumerate(k.atoms))
    params = {"id": k, "gamma": gammas if len(gammas) > 1 else gammas[0]}
    got, want = both(params, xs if len(xs) > 1 else xs[0], ys if len(ys) > 1 else ys[0],
                     *inputs(mode), mode=mode)
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


def test_float32_and_kernel_text_forms():
    """float32 data; a kernel given as text; a lone pair given as tuples."""
    x, y, b = (v.float() for v in (t(N, D, seed=60), t(M, D, seed=61), t(M, E, seed=62)))
    g = torch.tensor([0.5])
    got = kernel_product({"id": "gaussian(x,y)", "gamma": (g,)}, (x,), (y,), b, backend="CPU")
    want = kernel_product({"id": Kernel("gaussian(x,y)"), "gamma": g}, x, y, b,
                          backend="pytorch")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=M * 1.2e-7 * 4)


def test_errors():
    x, y, b = t(N, D), t(M, D), t(M, E)
    g = torch.tensor([0.5], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\^") as e:  # the caret under the error
        Kernel("gaussian(x,y) + cauchy(y,z)")
    assert e.value.offset is not None
    with pytest.raises(ValueError, match="linear"):
        kernel_product({"id": Kernel("linear(x,y)"), "gamma": None}, x, y, b[:, :1], mode="lse")
    with pytest.raises(ValueError, match="gamma 0"):
        kernel_product({"id": Kernel("gaussian(x,y)"), "gamma": t(5)}, x, y, b)
    with pytest.raises(ValueError, match="parameter"):
        kernel_product({"id": Kernel("gaussian(x,y)"), "gamma": None}, x, y, b)
    with pytest.raises(ValueError, match="2 atomic formula"):
        kernel_product({"id": Kernel("gaussian(x,y) * cauchy(x,y)"), "gamma": g}, x, y, b)
    with pytest.raises(TypeError, match="B, U, V"):
        kernel_product({"id": Kernel("gaussian(x,y)"), "gamma": g}, x, y, b, mode="log_scaled")
    with pytest.raises(ValueError, match="unknown mode"):
        kernel_product({"id": Kernel("gaussian(x,y)"), "gamma": g}, x, y, b, mode="max")
    with pytest.raises(ValueError, match="b of dimension 1"):
        kernel_product({"id": Kernel("gaussian(x,y)"), "gamma": g}, x, y, b, mode="lse")
    with pytest.raises(ValueError, match="rows"):
        kernel_product({"id": Kernel("gaussian(x,y)"), "gamma": g}, x, y, b[:3])
