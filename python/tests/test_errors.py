"""Bad inputs raise ValueError or TypeError with kred's message (never a crash, never a
silent wrong answer), inputs that need a copy are copied and give the right answer, and
the C layer checks the buffers it is given."""

import threading

import numpy as np
import pytest
import torch

import kred.numpy
import kred.torch
from kred import _core, _kred

ALIASES = ["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"]
FORMULA = "Exp(-G * SqDist(X, Y)) * B"


@pytest.fixture
def data(rng):
    return (np.array([0.5]), rng.standard_normal((7, 3)), rng.standard_normal((9, 3)),
            rng.standard_normal((9, 2)))


def dense(g, x, y, b):
    return np.exp(-g[0] * ((x[:, None] - y[None]) ** 2).sum(-1)) @ b


@pytest.fixture
def conv():
    return kred.numpy.Genred(FORMULA, ALIASES, axis=1)


def test_formula_errors_carry_the_caret():
    with pytest.raises(ValueError) as e:
        kred.numpy.Genred("Exp(-G * SqDist(X, Y) * B", ALIASES, axis=1)
    msg = str(e.value)
    assert "expected ')'" in msg and msg.splitlines()[-1].strip() == "^"
    assert e.value.offset == len("Exp(-G * SqDist(X, Y) * B") and e.value.status == "KRED_ESYNTAX"
    with pytest.raises(ValueError, match="Foo") as e:
        kred.torch.Genred("Foo(X)", ["X = Vi(3)"], axis=1)
    assert e.value.offset == 0
    with pytest.raises(ValueError, match="dimension"):
        kred.numpy.Genred("X + Y", ["X = Vi(3)", "Y = Vj(2)"], axis=1)
    with pytest.raises(ValueError, match="alias|Vz"):
        kred.numpy.Genred("X", ["X = Vz(3)"], axis=1)
    with pytest.raises(ValueError, match="opt_arg"):
        kred.numpy.Genred("X", ["X = Vi(3)"], "KMin", axis=1)
    with pytest.raises(ValueError, match="Sum"):
        kred.numpy.Genred("X", ["X = Vi(3)"], "Summ", axis=1)
    with pytest.raises(ValueError, match="has dimension 2, but"):
        kred.torch.generic_sum("X", "A = Vx(2)", "X = Vx(3)")
    with pytest.raises(ValueError, match="Vx"):
        kred.torch.generic_sum("X", "A = Vz(3)", "X = Vx(3)")
    with pytest.raises(ValueError, match="axis"):
        kred.numpy.Genred("X", ["X = Vi(3)"], axis=2)


def test_argument_errors(conv, data):
    g, x, y, b = data
    with pytest.raises(TypeError, match="takes 4 arguments"):
        conv(g, x, y)
    with pytest.raises(ValueError, match=r"argument 1 \(X = Vi\(3\)\)"):
        conv(g, x[:, :2], y, b)
    with pytest.raises(ValueError, match="share their rows"):
        conv(g, x, y, b[:5])
    with pytest.raises(ValueError, match="vector of 1"):
        conv(np.array([0.5, 1.0]), x, y, b)
    with pytest.raises(TypeError, match="float32 or float64"):
        conv(g, x.astype(np.int64), y, b)
    with pytest.raises(TypeError, match="must agree"):
        conv(g, x.astype(np.float32), y, b)
    with pytest.raises(TypeError, match="numpy array"):
        conv(g, x.tolist(), y, b)
    with pytest.raises(ValueError, match="unknown backend"):
        conv(g, x, y, b, backend="tpu")
    with pytest.raises(ValueError, match="tuple of 6 int32 arrays"):
        conv(g, x, y, b, ranges=(1, 2))
    t = kred.torch.Genred(FORMULA, ALIASES, axis=1)
    tg, tx, ty, tb = (torch.from_numpy(v) for v in data)
    with pytest.raises(TypeError, match="must agree"):
        t(tg, tx.float(), ty, tb)
    with pytest.raises(TypeError, match="torch tensor"):
        t(tg, x, ty, tb)
    with pytest.raises(ValueError, match="on one device|CPU and CUDA"):
        t(tg, tx.to("meta"), ty, tb)
    with pytest.raises(ValueError, match="vector of 1 value, not"):
        t(torch.ones(1, 2, dtype=torch.float64), tx, ty, tb)
    with pytest.raises(TypeError, match="dense"):
        t(tg, tx.to_sparse(), ty, tb)


def test_copies_give_the_right_answer(conv, data):
    """Non-contiguous, Fortran-ordered and byte-swapped arrays are copied once; a float
    stands for a Pm of dimension 1; a Vi of dimension 1 may be 1-D."""
    g, x, y, b = data
    want = dense(g, x, y, b)
    xf = np.asfortranarray(x)
    y2 = np.concatenate([y, y], 1)[:, :3]
    bs = b.astype(b.dtype.newbyteorder(">"))
    assert not y2.flags.c_contiguous and not bs.dtype.isnative
    np.testing.assert_allclose(conv(0.5, xf, y2, bs), want, rtol=1e-13, atol=1e-13)
    t = kred.torch.Genred(FORMULA, ALIASES, axis=1)
    tx = torch.from_numpy(np.ascontiguousarray(x.T)).T
    assert not tx.is_contiguous()
    got = t(0.5, tx, torch.from_numpy(y), torch.from_numpy(b))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-13, atol=1e-13)
    # A lazily negated tensor's memory holds the values before the negation.
    neg = torch._neg_view(torch.from_numpy(-x))
    assert neg.is_neg()
    got = t(0.5, neg, torch.from_numpy(y), torch.from_numpy(b))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-13, atol=1e-13)
    one = kred.numpy.Genred("X * Y", ["X = Vi(1)", "Y = Vj(1)"], axis=1)
    np.testing.assert_allclose(one(x[:, 0], y[:, :1])[:, 0], x[:, 0] * y[:, 0].sum(), rtol=1e-13)


def test_out_argument(conv, data):
    g, x, y, b = data
    out = np.empty((7, 2))
    assert conv(g, x, y, b, out=out) is out
    np.testing.assert_allclose(out, dense(g, x, y, b), rtol=1e-13)
    with pytest.raises(ValueError, match="out must be"):
        conv(g, x, y, b, out=np.empty((7, 3)))


def test_c_layer_checks_buffers(conv, data):
    """The C layer is the last defence: wrong sizes and types are errors, not reads
    past the end."""
    g, x, y, b = data
    r = conv.op.compiled("float64", _core.resolve_backend("CPU"))
    out = np.empty((7, 2))
    with pytest.raises(ValueError, match=r"argument 2 \(Y\) has 48 bytes"):
        r.run(7, 9, [g, x, y[:2], b], out)
    with pytest.raises(TypeError, match="float64"):
        r.run(7, 9, [g, x.astype(np.float32), y, b], out)
    with pytest.raises(ValueError, match="the output"):
        r.run(7, 9, [g, x, y, b], np.empty((6, 2)))
    with pytest.raises(ValueError, match="takes 4 arguments"):
        r.run(7, 9, [g, x, y], out)
    with pytest.raises(ValueError, match="negative"):
        r.run(-1, 9, [g, x, y, b], out)
    with pytest.raises(ValueError, match="contiguous"):  # numpy's own refusal
        r.run(7, 9, [g, x, y, b], np.empty((2, 7)).T)
    with pytest.raises(BufferError, match="not writable"):
        r.run(7, 9, [g, x, y, b], out.tobytes())
    with pytest.raises(ValueError, match="out of range"):
        r.grad(9)
    r.run(7, 9, [g, x, y, b], out)
    np.testing.assert_allclose(out, dense(g, x, y, b), rtol=1e-13)


def test_threads_share_a_context(conv, rng):
    """Runs release the GIL; the context's lock keeps kred to one thread at a time, and
    every thread gets its own answer."""
    inputs = [(np.array([0.5]), rng.standard_normal((50, 3)), rng.standard_normal((80, 3)),
               rng.standard_normal((80, 2))) for _ in range(4)]
    results = [None] * 4

    def work(k):
        for _ in range(20):
            results[k] = conv(*inputs[k], backend="CPU")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for k in range(4):
        np.testing.assert_allclose(results[k], dense(*inputs[k]), rtol=1e-12, atol=1e-12)


def test_status_names():
    """kred's status travels with the exception."""
    with pytest.raises(RuntimeError) as e:
        _kred.Context("cuda:7")
    assert e.value.status == "KRED_EBACKEND" and e.value.offset is None
