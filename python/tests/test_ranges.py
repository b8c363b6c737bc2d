"""Block-sparse reductions from Python (ranges=, LazyTensor.ranges) and the cluster helpers
(kred.numpy.cluster, kred.torch.cluster): each against the dense reduction restricted to
the same pairs, computed here with numpy from a table of how often each pair counts."""

import numpy as np
import pytest
import torch

import kred.numpy
import kred.torch
from kred.numpy.cluster import (cluster_centroids, cluster_ranges, cluster_ranges_centroids,
                                from_centroids, from_matrix, grid_cluster, sort_clusters,
                                swap_axes)

from conftest import BACKENDS, need_backend

ALIASES = ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"]
GAUSS = "Exp(-SqDist(X, Y) * 4) * B"


def _mask(ranges, nx, ny):
    """How many times each pair (i, j) counts under the i triple of ranges."""
    m = np.zeros((nx, ny))
    rng_i, slc_i, red_j = (np.asarray(a).reshape(-1) for a in ranges[:3])
    for b in range(len(slc_i)):
        s, e = rng_i[2 * b], rng_i[2 * b + 1]
        for k in range(slc_i[b - 1] if b else 0, slc_i[b]):
            m[s:e, red_j[2 * k]:red_j[2 * k + 1]] += 1
    return m


def _handmade(nx=90, ny=70):
    """Blocks out of order, a one-row block, an empty block, rows in no block, a block
    with no interval, overlapping and empty intervals; the j triple left to kred."""
    ranges_i = np.array([[40, 90], [0, 10], [10, 11], [11, 11], [20, 35]], dtype=np.int32)
    red = [[[0, 30], [20, 50]], [[60, 70]], [[5, 6], [6, 6]], [], [[0, 70]]]
    slices = np.cumsum([len(r) for r in red]).astype(np.int32)
    redranges_j = np.array([iv for r in red for iv in r], dtype=np.int32)
    return (ranges_i, slices, redranges_j, None, None, None)


def _clustered(rng, nx=400, ny=300):
    x = rng.random((nx, 3))
    y = rng.random((ny, 3))
    b = rng.random((ny, 2))
    xl, yl = grid_cluster(x, 0.25), grid_cluster(y, 0.25)
    x, xl = sort_clusters(x, xl)
    (y, b), yl = sort_clusters((y, b), yl)
    xr, xc, _ = cluster_ranges_centroids(x, xl)
    yr, yc, _ = cluster_ranges_centroids(y, yl)
    return x, y, b, from_centroids(xr, xc, yr, yc, 0.45)


def _gauss(x, y):
    return np.exp(-4 * ((x[:, None, :] - y[None, :, :]) ** 2).sum(2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_genred_sum_lse_argkmin(backend, dtype, rng):
    need_backend(backend)
    x, y, b = rng.random((90, 3)), rng.random((70, 3)), rng.random((70, 2))
    ranges = _handmade()
    m = _mask(ranges, 90, 70)
    xs, ys, bs = (v.astype(dtype) for v in (x, y, b))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    s = kred.numpy.Genred(GAUSS, ALIASES, axis=1)(xs, ys, bs, ranges=ranges, backend=backend)
    np.testing.assert_allclose(s, (_gauss(x, y) * m) @ b, rtol=tol, atol=tol)
    lse = kred.numpy.Genred("-SqDist(X, Y) * 4", ALIASES[:2], reduction_op="LogSumExp",
                            axis=1)(xs, ys, ranges=ranges, backend=backend)
    with np.errstate(divide="ignore"):
        want = np.log((_gauss(x, y) * m).sum(1))
    assert np.all(np.isneginf(lse[:, 0]) == np.isneginf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(lse[fin, 0], want[fin], rtol=tol, atol=tol)
    if dtype == np.float64:
        idx = kred.numpy.Genred("SqDist(X, Y)", ALIASES[:2], reduction_op="ArgKMin", opt_arg=2,
                                axis=1)(x, y, ranges=ranges, backend=backend)
        d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(2)
        for i in range(90):
            cand = sorted((d2[i, j], j) for j in range(70) for _ in range(int(m[i, j])))
            want = [j for _, j in cand[:2]] + [-1] * (2 - min(2, len(cand)))
            assert list(idx[i]) == want, i


@pytest.mark.parametrize("backend", BACKENDS)
def test_axis_i_and_derived_triple(backend, rng):
    """A reduction over i reads the j triple: given, or derived from the i one."""
    need_backend(backend)
    x, y, _, ranges = _clustered(rng)
    g = kred.numpy.Genred("Exp(-SqDist(X, Y) * 4) * A", ["X = Vi(3)", "Y = Vj(3)", "A = Vi(1)"],
                          axis=0)
    a = rng.random((x.shape[0], 1))
    mask = _mask(ranges, x.shape[0], y.shape[0])
    want = (_gauss(x, y) * mask).T @ a
    np.testing.assert_allclose(g(x, y, a, ranges=ranges, backend=backend), want, rtol=1e-12,
                               atol=1e-12)
    derived = tuple(ranges[:3]) + (None, None, None)
    np.testing.assert_allclose(g(x, y, a, ranges=derived, backend=backend), want, rtol=1e-12,
                               atol=1e-12)
    # swap_axes: the same pairs seen from the other side
    s = swap_axes(ranges)
    np.testing.assert_array_equal(_mask(s, y.shape[0], x.shape[0]), mask.T)


def test_torch_gradients(rng):
    """The gradients of a ranged reduction run on the same pairs (in Y: a reduction over
    i on the transposed triple), against torch's own on the masked dense matrix."""
    x, y, b, ranges = _clustered(rng, 200, 150)
    m = torch.from_numpy(_mask(ranges, 200, 150))
    conv = kred.torch.Genred(GAUSS, ALIASES, axis=1)
    xt, yt, bt = (torch.tensor(v, requires_grad=True) for v in (x, y, b))
    tr = tuple(torch.from_numpy(np.asarray(r)) for r in ranges)
    out = conv(xt, yt, bt, ranges=tr)
    w = torch.from_numpy(rng.random(out.shape))
    got = torch.autograd.grad((out * w).sum(), (xt, yt, bt))
    xd, yd, bd = (torch.tensor(v, requires_grad=True) for v in (x, y, b))
    k = torch.exp(-4 * ((xd[:, None, :] - yd[None, :, :]) ** 2).sum(2)) * m
    want = torch.autograd.grad(((k @ bd) * w).sum(), (xd, yd, bd))
    for gk, wk in zip(got, want):
        torch.testing.assert_close(gk, wk, rtol=1e-11, atol=1e-11)
    # second order, through the same ranges
    xt2 = torch.tensor(x, requires_grad=True)
    gx, = torch.autograd.grad(conv(xt2, yt, bt, ranges=tr).sum(), xt2, create_graph=True)
    gxx, = torch.autograd.grad(gx.sum(), xt2)
    xd2 = torch.tensor(x, requires_grad=True)
    k2 = torch.exp(-4 * ((xd2[:, None, :] - yd[None, :, :]) ** 2).sum(2)) * m
    hx, = torch.autograd.grad((k2 @ bd).sum(), xd2, create_graph=True)
    hxx, = torch.autograd.grad(hx.sum(), xd2)
    torch.testing.assert_close(gxx, hxx, rtol=1e-10, atol=1e-10)


def test_lazytensor_and_generic(rng):
    x, y, b, ranges = _clustered(rng, 150, 120)
    want = (_gauss(x, y) * _mask(ranges, 150, 120)) @ b
    X = kred.numpy.LazyTensor(x[:, None, :])
    Y = kred.numpy.LazyTensor(y[None, :, :])
    K = (-4 * ((X - Y) ** 2).sum(-1)).exp()
    B = kred.numpy.LazyTensor(b[None, :, :])
    np.testing.assert_allclose((K * B).sum(1, ranges=ranges), want, rtol=1e-12, atol=1e-12)
    K.ranges = ranges
    np.testing.assert_allclose(K @ b, want, rtol=1e-12, atol=1e-12)
    f = kred.numpy.generic_sum_np(GAUSS, "A = Vx(2)", *ALIASES)
    np.testing.assert_allclose(f(x, y, b, ranges=ranges), want, rtol=1e-12, atol=1e-12)


def test_cluster_helpers(rng):
    x = rng.random((500, 2)) * 3 - 1
    lab = grid_cluster(x, 0.4)
    assert lab.dtype == np.int64
    cells = np.floor((x - x.min(0)) / 0.4).astype(np.int64)
    _, want = np.unique(cells, axis=0, return_inverse=True)
    np.testing.assert_array_equal(lab, want.reshape(-1))
    xs, ls = sort_clusters(x, lab)
    order = np.argsort(lab, kind="stable")
    np.testing.assert_array_equal(xs, x[order])
    np.testing.assert_array_equal(ls, lab[order])
    r = cluster_ranges(ls)
    assert r.dtype == np.int32 and r.shape == (lab.max() + 1, 2)
    for c in range(r.shape[0]):
        assert np.all(ls[r[c, 0]:r[c, 1]] == c)
    w = rng.random(500)
    cen = cluster_centroids(xs, ls, weights=w[order])
    for c in (0, r.shape[0] // 2, r.shape[0] - 1):
        sl = slice(r[c, 0], r[c, 1])
        ws = w[order][sl]
        np.testing.assert_allclose(cen[c], (xs[sl] * ws[:, None]).sum(0) / ws.sum())
    rr, cc, cw = cluster_ranges_centroids(xs, ls)
    np.testing.assert_array_equal(rr, r)
    np.testing.assert_allclose(cw, np.diff(r, axis=1).reshape(-1))
    d = ((cc[:, None, :] - cc[None, :, :]) ** 2).sum(2)
    a, b = from_matrix(rr, rr, d < 0.5 ** 2), from_centroids(rr, cc, rr, cc, 0.5)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(_mask(a, 500, 500) > 0,
                                  (d < 0.5 ** 2)[ls][:, ls])
    # torch: the same values, as tensors
    tl = kred.torch.cluster.grid_cluster(torch.from_numpy(x), 0.4)
    assert isinstance(tl, torch.Tensor) and tl.dtype == torch.int64
    np.testing.assert_array_equal(tl.numpy(), lab)
    tr = kred.torch.cluster.from_centroids(torch.from_numpy(rr), torch.from_numpy(cc),
                                           torch.from_numpy(rr), torch.from_numpy(cc), 0.5)
    for u, v in zip(tr, b):
        assert isinstance(u, torch.Tensor) and u.dtype == torch.int32
        np.testing.assert_array_equal(u.numpy(), v)


def test_bad_ranges(rng):
    x, y, b = rng.random((20, 3)), rng.random((10, 3)), rng.random((10, 2))
    conv = kred.numpy.Genred(GAUSS, ALIASES, axis=1)
    ok = (np.array([[0, 20]]), np.array([1]), np.array([[0, 10]]), None, None, None)
    with pytest.raises(ValueError, match="tuple of 6"):
        conv(x, y, b, ranges=ok[:3])
    with pytest.raises(TypeError, match="float64 values, not integers"):
        conv(x, y, b, ranges=(np.array([[0.0, 20.0]]),) + ok[1:])
    with pytest.raises(ValueError, match=r"ranges_i has shape \(3,\)"):
        conv(x, y, b, ranges=(np.array([0, 20, 5]),) + ok[1:])
    with pytest.raises(ValueError, match="reaches interval 3"):
        conv(x, y, b, ranges=(ok[0], np.array([3]), ok[2], None, None, None))
    with pytest.raises(ValueError, match=r"interval 0 of redranges_j is \[0, 11\)"):
        conv(x, y, b, ranges=(ok[0], ok[1], np.array([[0, 11]]), None, None, None))
    with pytest.raises(ValueError, match="overlap"):
        conv(x, y, b, ranges=(np.array([[0, 12], [10, 20]]), np.array([1, 2]),
                              np.array([[0, 10], [0, 10]]), None, None, None))
    with pytest.raises(ValueError, match="all arrays or all None"):
        conv(x, y, b, ranges=ok[:3] + (ok[0], None, None))
    with pytest.raises(ValueError, match="labels run from"):
        cluster_ranges(np.array([0, -1]))
    with pytest.raises(ValueError, match="voxel size is 0"):
        grid_cluster(x, 0)
    with pytest.raises(ValueError, match="keep has shape"):
        from_matrix(np.array([[0, 1]]), np.array([[0, 1]]), np.ones((2, 2), bool))
