"""backend=: KeOps' names and kred's own, one context per backend and one compiled
reduction per (formula, dtype, backend) in the process, and CUDA tensors where torch has
a GPU."""

import numpy as np
import pytest
import torch

import kred
import kred.numpy
import kred.torch
from kred import _core
from conftest import has_gpu, need_backend

ALIASES = ["X = Vi(2)", "Y = Vj(2)"]
FORMULA = "Exp(-SqDist(X, Y))"


def want(x, y):
    return np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)).sum(1, keepdims=True)


@pytest.mark.parametrize("backend", ["auto", "CPU", "host", "reference", "opencl", "opencl:0",
                                     "vulkan"])
def test_backend_names(backend, rng):
    if backend not in ("auto", "CPU"):
        need_backend(backend)
    x, y = rng.standard_normal((11, 2)), rng.standard_normal((13, 2))
    got = kred.numpy.Genred(FORMULA, ALIASES, axis=1)(x, y, backend=backend)
    np.testing.assert_allclose(got, want(x, y), rtol=1e-12)


@pytest.mark.parametrize("backend", ["GPU", "GPU_1D", "GPU_2D"])
def test_gpu_backends(backend, rng):
    """The first backend with a GPU, in the scheme asked; a clear error where there is
    none."""
    x, y = rng.standard_normal((11, 2)), rng.standard_normal((13, 2))
    f = kred.numpy.Genred(FORMULA, ALIASES, axis=1)
    if has_gpu():
        np.testing.assert_allclose(f(x, y, backend=backend), want(x, y), rtol=1e-12)
    else:
        with pytest.raises(RuntimeError, match=f"backend '{backend}': kred finds no GPU"):
            f(x, y, backend=backend)


def test_one_context_and_one_compile(rng):
    """Genred objects of one formula share the compiled reduction; "CPU" and "host" are
    one context."""
    assert _core.resolve_backend("CPU") is _core.resolve_backend("host") is _core.context("host")
    x, y = rng.standard_normal((5, 2)), rng.standard_normal((6, 2))
    a = kred.numpy.Genred(FORMULA, ALIASES, axis=1)
    b = kred.torch.Genred(FORMULA, ALIASES, axis=1)
    assert a.op is b.op
    a(x, y, backend="CPU")
    b(torch.from_numpy(x), torch.from_numpy(y), backend="CPU")
    r = a.op._compiled[("float64", _core.context("host"))]
    a(x, y, backend="CPU")
    assert a.op._compiled[("float64", _core.context("host"))] is r
    assert r.context.backend.startswith("host")
    assert "host" in kred.devices() and kred.version() == kred.__version__


def test_unavailable_backend_is_a_runtime_error(rng):
    x, y = rng.standard_normal((5, 2)), rng.standard_normal((6, 2))
    with pytest.raises(RuntimeError, match="cuda:9"):
        kred.numpy.Genred(FORMULA, ALIASES, axis=1)(x, y, backend="cuda:9")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device for torch here")
def test_cuda_tensors(rng):
    """CUDA tensors run on their GPU through kred_reduction_run_cuda, after the work of a
    non-default current stream, with gradients; backend="CPU" goes through the host."""
    x = torch.tensor(rng.standard_normal((300, 2)), device="cuda", requires_grad=True)
    y = torch.tensor(rng.standard_normal((400, 2)), device="cuda")
    f = kred.torch.Genred(FORMULA, ALIASES, axis=1)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        y2 = y * 2  # queued on the side stream: kred must wait for it
        out = f(x, y2)
    assert out.device == x.device
    host = f(x.detach().cpu(), y2.cpu(), backend="CPU")
    torch.testing.assert_close(out.cpu(), host)
    torch.testing.assert_close(f(x, y2, backend="CPU").cpu(), host)
    (g,) = torch.autograd.grad(out.sum(), [x])
    xc = x.detach().cpu().requires_grad_()
    (gc,) = torch.autograd.grad(f(xc, y2.cpu(), backend="CPU").sum(), [xc])
    torch.testing.assert_close(g.cpu(), gc)
