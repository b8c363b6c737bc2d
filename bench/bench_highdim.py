"""kred against numpy's dense route in high dimensions: the Gaussian sum
a_i = sum_j exp(-g |x_i - y_j|^2) b_j and the 10 nearest neighbours of each x_i, float32,
N = M (default 10,000), D = 784 and 4,096 (default).

numpy's route is what a numpy user writes: the squared distances as
|x|^2 + |y|^2 - 2 X @ Y.T (one matrix product through numpy's BLAS), then exp and a
matrix-vector product, or argpartition and a sort of the 10 kept. It stores the N x M
matrix (400 MB at N = M = 10,000); kred keeps O(N + M). Each case alternates kred and
numpy, ROUNDS times, and prints the medians, their ratio, and how far the results are
apart (largest relative difference of the sums; rows whose 10 neighbours differ, which
near-ties between float32 distances computed in different orders can cause).

    PYTHONPATH=build/python /usr/bin/python3 bench/bench_highdim.py [N] [D...]

The figure to compare with is numpy on an optimised BLAS: Debian's numpy uses the
libblas.so.3 alternative, the slow reference BLAS unless OpenBLAS is installed
(apt install libopenblas0-pthread); the script says which one was loaded. `kred bench
--cases highdim` compares kred with the plain C loop instead."""

import statistics
import sys
import time

import numpy as np

import kred.numpy

ROUNDS = 3
K = 10


def blas_name():
    """The BLAS library that numpy loaded, from the process's mappings."""
    np.ones((64, 64), np.float32) @ np.ones((64, 64), np.float32)
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower()}
    except OSError:
        return "unknown"
    return ", ".join(sorted(libs)) or "unknown"


def numpy_sqdist(x, y):
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :]
    d2 -= 2 * (x @ y.T)
    return d2


def numpy_gauss(x, y, b, g):
    d2 = numpy_sqdist(x, y)
    np.exp(-g * d2, out=d2)
    return d2 @ b


def numpy_knn(x, y):
    d2 = numpy_sqdist(x, y)
    part = np.argpartition(d2, K, axis=1)[:, :K]
    order = np.argsort(np.take_along_axis(d2, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def case(name, n, kred_f, numpy_f, compare):
    kred_f()  # compile (or load from the cache) outside the timing
    tk, tn = [], []
    for _ in range(ROUNDS):
        t, a = timed(kred_f)
        tk.append(t)
        t, w = timed(numpy_f)
        tn.append(t)
    mk, mn = statistics.median(tk), statistics.median(tn)
    print(f"{name:<28} {n:>6} {mk:8.3f} {n * n / mk * 1e-9:8.3f} {mn:8.3f} {mn / mk:7.2f}x"
          f"   {compare(a, w)}", flush=True)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    dims = [int(d) for d in sys.argv[2:]] or [784, 4096]
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, BLAS: {blas_name()}; float32, medians of {ROUNDS} "
          "alternated runs; x = numpy time / kred time")
    print(f"{'case':<28} {'n':>6} {'kred s':>8} {'Gpair/s':>8} {'numpy s':>8} {'x':>8}   "
          "difference")
    for d in dims:
        x = rng.random((n, d), dtype=np.float32)
        y = rng.random((n, d), dtype=np.float32)
        b = rng.standard_normal((n, 1)).astype(np.float32)
        g = np.float32(6.0 / d)  # exp(-g |x - y|^2) near exp(-1): |x - y|^2 is about d / 6
        gauss = kred.numpy.Genred("Exp(-G*SqDist(X,Y))*B",
                                  [f"X=Vi({d})", f"Y=Vj({d})", "B=Vj(1)", "G=Pm(1)"],
                                  reduction_op="Sum", axis=1, dtype="float32")
        knn = kred.numpy.Genred("SqDist(X,Y)", [f"X=Vi({d})", f"Y=Vj({d})"],
                                reduction_op="ArgKMin", opt_arg=K, axis=1, dtype="float32")
        gv = np.array([g], np.float32)
        case(f"Gaussian sum D={d}", n, lambda: gauss(x, y, b, gv, backend="CPU"),
             lambda: numpy_gauss(x, y, b, g),
             lambda a, w: f"{np.abs(a - w).max() / np.abs(w).max():.1e} (largest, relative)")
        case(f"ArgKMin({K}) D={d}", n, lambda: knn(x, y, backend="CPU"),
             lambda: numpy_knn(x, y),
             lambda a, w: f"{int((a.astype(np.int64) != w).any(1).sum())} rows of {n}")


if __name__ == "__main__":
    main()
