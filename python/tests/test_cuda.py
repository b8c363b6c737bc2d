"""The cuda backend from Python, where there is an NVIDIA GPU: Genred on host arrays with
backend="cuda:0", and Reduction.run_cuda on device memory allocated through the CUDA
driver (ctypes, in this test only: torch builds without CUDA cannot make device
tensors). Without a GPU (CI) these skip, as the C suites' CUDA runs do."""

import ctypes

import numpy as np
import pytest

import kred.numpy
from kred import _core


class Driver:
    """The few CUDA driver calls the test needs, in the GPU's primary context (the one
    kred's cuda:0 context uses)."""

    def __init__(self):
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            pytest.skip(f"no CUDA driver: {e}")
        count = ctypes.c_int(0)
        if self.lib.cuInit(0) != 0 or self.lib.cuDeviceGetCount(ctypes.byref(count)) != 0 \
                or count.value == 0:
            pytest.skip("no CUDA device")
        self.device = ctypes.c_int(0)
        self.ctx = ctypes.c_void_p()
        self.check(self.lib.cuDeviceGet(ctypes.byref(self.device), 0))
        self.check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.ctx), self.device))
        self.check(self.lib.cuCtxPushCurrent_v2(self.ctx))
        self.ptrs = []

    @staticmethod
    def check(status):
        assert status == 0, f"CUDA driver error {status}"

    def upload(self, a):
        a = np.ascontiguousarray(a)
        ptr = ctypes.c_uint64(0)
        self.check(self.lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(max(a.nbytes, 1))))
        self.ptrs.append(ptr.value)
        self.check(self.lib.cuMemcpyHtoD_v2(ptr, a.ctypes.data_as(ctypes.c_void_p),
                                            ctypes.c_size_t(a.nbytes)))
        return ptr.value

    def download(self, ptr, shape, dtype):
        out = np.empty(shape, dtype)
        self.check(self.lib.cuMemcpyDtoH_v2(out.ctypes.data_as(ctypes.c_void_p),
                                            ctypes.c_uint64(ptr), ctypes.c_size_t(out.nbytes)))
        return out

    def close(self):
        for p in self.ptrs:
            self.lib.cuMemFree_v2(ctypes.c_uint64(p))
        self.lib.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
        self.lib.cuDevicePrimaryCtxRelease_v2(self.device)


@pytest.fixture
def driver():
    d = Driver()
    yield d
    d.close()


ALIASES = ["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"]
FORMULA = "Exp(-G * SqDist(X, Y)) * B"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_backend_on_device_memory(driver, dtype, rng):
    g = np.array([0.5], dtype)
    x = rng.standard_normal((1000, 3)).astype(dtype)
    y = rng.standard_normal((3000, 3)).astype(dtype)
    b = rng.standard_normal((3000, 2)).astype(dtype)
    conv = kred.numpy.Genred(FORMULA, ALIASES, axis=1)
    host = conv(g, x, y, b, backend="CPU")
    eps = np.finfo(dtype).eps
    scale = np.abs(b).sum(0).max()
    # Host arrays on the cuda backend: kred copies them through.
    np.testing.assert_allclose(conv(g, x, y, b, backend="cuda:0"), host, rtol=16 * eps,
                               atol=3000 * eps * scale)
    # Device memory: nothing goes through the host.
    ctx = _core.context("cuda:0")
    assert ctx.cuda_device == 0
    r = conv.op.compiled(np.dtype(dtype).name, ctx)
    ptrs = [driver.upload(a) for a in (g, x, y, b)]
    out = driver.upload(np.zeros((1000, 2), dtype))
    r.run_cuda(1000, 3000, ptrs, out)
    np.testing.assert_allclose(driver.download(out, (1000, 2), dtype), host, rtol=16 * eps,
                               atol=3000 * eps * scale)
    # A pointer that is not device memory is kred's EINVAL, not a crash.
    with pytest.raises(ValueError):
        r.run_cuda(1000, 3000, [ptrs[0], x.ctypes.data, ptrs[2], ptrs[3]], out)
    # The gradient reduction runs on device memory too.
    gx = r.grad(1)
    cot = driver.upload(np.ones((1000, 2), dtype))
    gout = driver.upload(np.zeros((1000, 3), dtype))
    gx.run_cuda(1000, 3000, ptrs + [cot], gout)
    ghost = _core.context("host")
    want = conv.op.grad(1).compiled(np.dtype(dtype).name, ghost)
    wout = np.empty((1000, 3), dtype)
    want.run(1000, 3000, [g, x, y, b, np.ones((1000, 2), dtype)], wout)
    np.testing.assert_allclose(driver.download(gout, (1000, 3), dtype), wout, rtol=16 * eps,
                               atol=3000 * eps * scale * 10)
