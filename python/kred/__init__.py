"""kred: symbolic kernel reductions on any GPU or CPU, from Python.

A formula given as a string is compiled by libkred into a tiled kernel that reduces over
i or j without ever forming the nx x ny matrix, on CUDA, OpenCL, Vulkan or the host.
The interface is KeOps': kred.numpy (generic_sum_np, generic_logsumexp_np, Genred,
LazyTensor) and kred.torch (generic_sum, generic_logsumexp, Genred, Kernel,
kernel_product, LazyTensor, with autograd), so that a KeOps script runs with its import
line changed:

    from kred.torch import generic_sum      # was: from pykeops.torch import generic_sum

Compiled kernels are cached on disk ($KRED_CACHE_DIR, else ~/.cache/kred) and, per
formula, dtype and backend, in the process."""

from . import _kred

__all__ = ["devices", "version", "__version__"]


def version():
    """The version of the libkred inside this package."""
    return _kred.version()


def devices():
    """A report of every backend kred has, the devices each sees, why one is missing,
    and which one "auto" picks (as `kred devices` prints it)."""
    return _kred.devices_report()


__version__ = version()
