"""The examples of the documents kred's interface comes from (KeOps' README and Python
API page), run as they are written there with only the import changed, and checked
against the same computation done densely by torch."""

import pytest
import torch
import torch.nn.functional as F

from kred.torch import Kernel, generic_sum, kernel_product
from conftest import has_gpu

torch.manual_seed(0)


def dense_gaussian(g, x, y, b):
    return torch.exp(-g * ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)) @ b


def close(a, b, scale):
    """float32 sums of 2000 terms of size up to scale: within 2000 ulps of scale."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=2000 * 1.2e-7 * scale)


def test_generic_sum_gaussian():
    """The generic_sum example: backend "auto" and "CPU"; "GPU_2D" where there is a GPU
    (elsewhere a clear RuntimeError). Gradients with respect to x, y, b and sigma."""
    sigma = torch.tensor([.5], requires_grad=True)
    x = torch.randn(1000, 3, requires_grad=True)
    y = torch.randn(2000, 3, requires_grad=True)
    b = torch.randn(2000, 2, requires_grad=True)

    gaussian_conv = generic_sum("Exp(-G*SqDist(X,Y)) * B",
                                "A = Vx(2)",
                                "G = Pm(1)",
                                "X = Vx(3)",
                                "Y = Vy(3)",
                                "B = Vy(2)")
    a = gaussian_conv(1. / sigma**2, x, y, b)
    a_cpu = gaussian_conv(1. / sigma**2, x, y, b, backend="CPU")
    if has_gpu():
        a_gpu = gaussian_conv(1. / sigma**2, x, y, b, backend="GPU_2D")
        close(a_gpu, a_cpu, b.abs().max().item())
    else:
        with pytest.raises(RuntimeError, match="no GPU"):
            gaussian_conv(1. / sigma**2, x, y, b, backend="GPU_2D")

    want = dense_gaussian(1. / sigma**2, x, y, b)
    assert a.shape == (1000, 2)
    close(a, want, b.abs().max().item())
    close(a_cpu, want, b.abs().max().item())
    w = torch.randn(1000, 2)
    grads = torch.autograd.grad((a * w).sum(), [x, y, b, sigma])
    wants = torch.autograd.grad((want * w).sum(), [x, y, b, sigma])
    for g, v in zip(grads, wants):
        torch.testing.assert_close(g, v, rtol=1e-4, atol=1e-3 * v.abs().max().item())


def test_kernel_product_gaussian():
    """The README's kernel_product example, differentiable in x, y, b and sigma."""
    x = torch.randn(1000, 3, requires_grad=True)
    y = torch.randn(2000, 3, requires_grad=True)
    b = torch.randn(2000, 2, requires_grad=True)

    sigma = torch.tensor([.5], requires_grad=True)
    params = {
        "id": Kernel("gaussian(x,y)"),
        "gamma": 1. / sigma**2,
    }
    a = kernel_product(params, x, y, b)

    want = dense_gaussian(1. / sigma**2, x, y, b)
    close(a, want, b.abs().max().item())
    close(kernel_product(dict(params, backend="pytorch"), x, y, b), want, b.abs().max().item())
    grads = torch.autograd.grad(a.sum(), [x, y, b, sigma])
    wants = torch.autograd.grad(want.sum(), [x, y, b, sigma])
    for g, v in zip(grads, wants):
        torch.testing.assert_close(g, v, rtol=1e-4, atol=1e-3 * v.abs().max().item())


def test_kernel_product_varifold():
    """The (Gaussian * Cauchy-Binet) varifold kernel on (x, u), (y, v)."""
    N, M = 1000, 2000
    x = torch.randn(N, 3)
    u = torch.randn(N, 2)
    y = torch.randn(M, 3)
    v = torch.randn(M, 2)
    b = torch.randn(M, 4)

    sigma = torch.tensor([.5])
    params = {
        "id": Kernel("gaussian(x,y) * (linear(u,v)**2) "),
        "gamma": (1. / sigma**2, None),
    }
    u = F.normalize(u, p=2, dim=1)
    v = F.normalize(v, p=2, dim=1)
    a = kernel_product(params, (x, u), (y, v), b)

    k = torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1) / sigma**2) * (u @ v.T) ** 2
    want = k @ b
    assert a.shape == (N, 4)
    close(a, want, b.abs().max().item())
    close(kernel_product(params, (x, u), (y, v), b, backend="pytorch"), want,
          b.abs().max().item())
