"""A block-sparse Gaussian convolution with kred.torch, as KeOps 2's users write it:
points labelled by voxels, sorted by label, and only the pairs of clusters whose
centroids are close enough computed (ranges=), gradients included.

    python3 examples/python/block_sparse.py [--n N] [--sigma S] [--voxel V] [--backend B]

a_i = sum_j exp(-|x_i - y_j|^2 / s^2) b_j for N points near the unit sphere, in float64;
the pairs of clusters kept are those whose centroids are closer than 5 s + 2 sqrt(3) v
(every pair of points closer than 5 s), so what is dropped weighs at most exp(-25) of a
term. Prints the pairs kept, the times of the ranged and dense runs, and the largest
relative difference between them, of the values and of the gradient in x."""

import argparse
import math
import time

import torch

from kred.torch import Genred
from kred.torch.cluster import (cluster_ranges_centroids, from_centroids, grid_cluster,
                                sort_clusters)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--sigma", type=float, default=0.01)
    ap.add_argument("--voxel", type=float, default=0.02)
    ap.add_argument("--backend", default="auto")
    a = ap.parse_args()

    torch.manual_seed(0)
    p = torch.randn(a.n, 3, dtype=torch.float64)
    x = p / p.norm(dim=1, keepdim=True) * (1 + 0.01 * (torch.rand(a.n, 1) - 0.5))
    b = torch.rand(a.n, 1, dtype=torch.float64) + 0.5

    t0 = time.perf_counter()
    labels = grid_cluster(x, a.voxel)
    x, labels = sort_clusters(x, labels)
    ranges, centroids, _ = cluster_ranges_centroids(x, labels)
    cutoff = 5 * a.sigma + 2 * math.sqrt(3) * a.voxel
    ranges_ij = from_centroids(ranges, centroids, ranges, centroids, cutoff)
    t_ranges = time.perf_counter() - t0
    rng_i, slc_i, red_j = ranges_ij[:3]
    rows = rng_i[:, 1] - rng_i[:, 0]
    per_block = torch.zeros(len(slc_i), dtype=torch.int64)
    widths = (red_j[:, 1] - red_j[:, 0]).long()
    starts = torch.cat([torch.zeros(1, dtype=torch.int64), slc_i[:-1].long()])
    for k in range(len(slc_i)):
        per_block[k] = widths[starts[k]:slc_i[k]].sum()
    pairs = int((rows.long() * per_block).sum())
    print(f"{a.n} points, {len(ranges)} clusters (voxels of {a.voxel}), cut-off {cutoff:.4f}: "
          f"{pairs} pairs kept, {100 * pairs / a.n ** 2:.3f}% of all, in {t_ranges:.3f} s")

    conv = Genred("Exp(-SqDist(X, Y) * G) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)",
                                                   "G = Pm(1)"], axis=1)
    g = 1 / a.sigma ** 2
    # the reduction and its gradient compiled before timing
    xw = x[:10].clone().requires_grad_()
    torch.autograd.grad(conv(xw, x, b, g, backend=a.backend).sum(), xw)
    results = {}
    for name, rg in (("ranged", ranges_ij), ("dense", None)):
        xi = x.clone().requires_grad_()
        t0 = time.perf_counter()
        out = conv(xi, x, b, g, backend=a.backend, ranges=rg)
        grad, = torch.autograd.grad(out.sum(), xi)
        results[name] = (out, grad, time.perf_counter() - t0)
        print(f"{name} run and gradient in x: {results[name][2]:.3f} s")
    (o1, g1, t1), (o2, g2, t2) = results["ranged"], results["dense"]
    value = ((o1 - o2).abs() / o2.abs()).max().item()
    gradient = ((g1 - g2).norm(dim=1) / g2.norm(dim=1).clamp_min(1e-300)).max().item()
    print(f"ranged vs dense: {t2 / t1:.1f}x faster; largest relative difference: values "
          f"{value:.3g}, gradient {gradient:.3g}")


if __name__ == "__main__":
    main()
