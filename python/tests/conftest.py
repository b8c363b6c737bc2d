"""What the Python suites share: the backends they run on, the skip-or-fail rule for a
backend that is missing, seeded data, and tolerances.

A backend that cannot run here skips its tests, except in a strict run (meson's
-Dstrict_tests=true, which the meson test passes on as KRED_TEST_STRICT=1, or CI=true):
there every device stack is installed, so a missing one is a failure, as in the C
suites (tests/probe.h)."""

import os

import numpy as np
import pytest

from kred import _core

STRICT = os.environ.get("KRED_TEST_STRICT") == "1" or os.environ.get("CI") == "true"

# The backends every reduction is checked on: the host's C and, through POCL where
# there is no GPU, OpenCL.
BACKENDS = ["host", "opencl"]


def need_backend(name):
    """The context of backend name, or skip (fail in a strict run) with kred's reason."""
    try:
        return _core.context(name)
    except RuntimeError as e:
        if STRICT:
            pytest.fail(f"backend {name} is missing in a strict run: {e}")
        pytest.skip(f"backend {name}: {e}")


def has_gpu():
    """Whether kred's auto finds a GPU here (then "GPU" must work, else it must fail)."""
    return _core.context("auto").backend.split(":")[0] not in ("host", "reference")


def tolerance(dtype, scale):
    """(rtol, atol) for values computed in dtype, against a float64 reference on the
    same (rounded) inputs. scale bounds the sum of |terms| of a row: a sum of n terms is
    within n ulps of it, and the rows here have at most 64 terms (more where a test says
    so), so atol is 64 ulps of scale; rtol allows a few ulps of the formula itself."""
    eps = np.finfo(dtype).eps
    return 16 * eps, 64 * eps * scale


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
