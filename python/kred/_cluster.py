"""KeOps' helpers that make the ranges of block-sparse reductions, over libkred's
(kred_grid_cluster and co.), for numpy arrays (kred.numpy.cluster) and torch tensors
(kred.torch.cluster):

    from kred.torch.cluster import grid_cluster, sort_clusters, cluster_ranges_centroids
    from kred.torch.cluster import from_matrix
    x_labels = grid_cluster(x, 0.05)                  # voxels of 0.05
    x, x_labels = sort_clusters(x, x_labels)          # points sorted by voxel
    x_ranges, x_centroids, _ = cluster_ranges_centroids(x, x_labels)
    ...                                               # the same for y
    D = ((x_centroids[:, None, :] - y_centroids[None, :, :]) ** 2).sum(2)
    ranges_ij = from_matrix(x_ranges, y_ranges, D < cutoff ** 2)
    a = conv(x, y, b, ranges=ranges_ij)

from_centroids(x_ranges, x_centroids, y_ranges, y_centroids, cutoff) gives the same
ranges without the matrix of all cluster pairs (30,000 clusters would make it 900 MB).

Labels come back as int64, ranges as int32 (n, 2), centroids in the points' dtype;
tensors on the points' device. The work is done on the host, in float64."""

import types

import numpy as np

from . import _core


class _Arrays:
    """How one array library's values go to numpy and back."""

    def __init__(self, name, to_numpy, like):
        self.name = name
        self.to_numpy = to_numpy  # (value) -> numpy array
        self.like = like  # (numpy array, reference value or None) -> the library's array


def _np_like(a, ref):
    if ref is not None and isinstance(ref, np.ndarray) and a.dtype.kind == "f":
        return a.astype(ref.dtype, copy=False)
    return a


NUMPY = _Arrays("numpy", np.asarray, _np_like)


def _torch_to_numpy(t):
    import torch

    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def _torch_like(a, ref):
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a))
    if ref is not None and isinstance(ref, torch.Tensor):
        if t.is_floating_point():
            t = t.to(ref.dtype)
        t = t.to(ref.device)
    return t


TORCH = _Arrays("torch", _torch_to_numpy, _torch_like)


def _ctx():
    # The helpers need a context for kred's error messages only.
    return _core.reference()


def _points(lib, x, what="x"):
    a = np.ascontiguousarray(lib.to_numpy(x), dtype=np.float64)
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2:
        raise ValueError(f"{what} has shape {a.shape}: points are an (N, D) array")
    return a


def _labels(lib, lab, n=None):
    a = lib.to_numpy(lab)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise ValueError(f"labels are a vector of integers, not {a.dtype} of shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{a.shape[0]} labels for {n} points")
    if a.size and (a.min() < 0 or a.max() >= 2**31 - 1):
        raise ValueError(f"labels run from {a.min()} to {a.max()}: they count clusters "
                         f"from 0")
    return np.ascontiguousarray(a, dtype=np.int32)


def _ranges_in(lib, r, what):
    a = np.ascontiguousarray(lib.to_numpy(r), dtype=np.int32)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{what} has shape {a.shape}, not (n, 2)")
    return a


def _ranges_out(lib, six, ref):
    shapes = [(-1, 2), (-1,), (-1, 2)] * 2
    return tuple(lib.like(np.frombuffer(b, dtype=np.int32).reshape(s), ref)
                 for b, s in zip(six, shapes))


def module(name, lib):
    """The cluster module of one array library."""

    def grid_cluster(x, size):
        """The label of each point of x (N, D): its voxel of side size, numbered from 0 in
        the voxels' lexicographic order (kred_grid_cluster)."""
        p = _points(lib, x)
        lab = np.empty(p.shape[0], dtype=np.int32)
        _ctx().grid_cluster(p, p.shape[0], p.shape[1], float(size), lab)
        return lib.like(lab.astype(np.int64), None if lib is NUMPY else x)

    def _sort(lab):
        n_lab = int(lab.max()) + 1 if lab.size else 0
        perm = np.empty(lab.shape[0], dtype=np.int64)
        ranges = np.empty((n_lab, 2), dtype=np.int32)
        _ctx().cluster_sort(lab, n_lab, perm, ranges)
        return perm, ranges

    def sort_clusters(x, lab):
        """x (an array, or a tuple of arrays of N rows) and lab sorted by label, stably."""
        labels = _labels(lib, lab)
        perm, _ = _sort(labels)
        if isinstance(x, (tuple, list)):
            return tuple(_take(v, perm) for v in x), _take(lab, perm)
        return _take(x, perm), _take(lab, perm)

    def _take(v, perm):
        if lib is NUMPY:
            return np.asarray(v)[perm]
        import torch

        return v[torch.from_numpy(perm).to(v.device)]

    def cluster_ranges(lab, Nlab=None):
        """The [start, end) of each cluster in sorted labels lab, (Nlab, 2) int32."""
        labels = _labels(lib, lab)
        n_lab = int(labels.max()) + 1 if labels.size else 0
        if Nlab is not None:
            if Nlab < n_lab:
                raise ValueError(f"Nlab = {Nlab}, but the labels reach {n_lab - 1}")
            n_lab = int(Nlab)
        if labels.size and np.any(labels[1:] < labels[:-1]):
            raise ValueError("cluster_ranges takes sorted labels (sort_clusters)")
        perm = np.empty(labels.shape[0], dtype=np.int64)
        ranges = np.empty((n_lab, 2), dtype=np.int32)
        _ctx().cluster_sort(labels, n_lab, perm, ranges)
        return lib.like(ranges, None if lib is NUMPY else lab)

    def cluster_centroids(x, lab, Nlab=None, weights=None, weights_c=None):
        """The weighted mean of each cluster's points, (Nlab, D); a cluster of weight 0
        has its centroid at 0. weights_c is accepted for KeOps' sake and not used."""
        c, _ = _centroids(x, lab, Nlab, weights)
        return c

    def _centroids(x, lab, Nlab, weights):
        p = _points(lib, x)
        labels = _labels(lib, lab, p.shape[0])
        n_lab = int(labels.max()) + 1 if labels.size else 0
        if Nlab is not None:
            n_lab = max(n_lab, int(Nlab))
        w = None
        if weights is not None:
            w = np.ascontiguousarray(lib.to_numpy(weights), dtype=np.float64).reshape(-1)
            if w.shape[0] != p.shape[0]:
                raise ValueError(f"{w.shape[0]} weights for {p.shape[0]} points")
        cen = np.empty((n_lab, p.shape[1]), dtype=np.float64)
        cw = np.empty(n_lab, dtype=np.float64)
        _ctx().cluster_centroids(p, p.shape[1], labels, n_lab, w, cen, cw)
        ref = x if lib is not NUMPY or isinstance(x, np.ndarray) else None
        return lib.like(cen, ref), lib.like(cw, ref)

    def cluster_ranges_centroids(x, lab, weights=None, min_weight=1e-9):
        """For points x sorted by label lab: each cluster's range (int32 (n, 2)), centroid
        and total weight (KeOps' cluster_ranges_centroids). Clusters lighter than
        min_weight have their centroid at 0."""
        ranges = cluster_ranges(lab)
        cen, cw = _centroids(x, lab, None, weights)
        light = lib.to_numpy(cw) < min_weight
        if light.any():
            cen_np = np.array(lib.to_numpy(cen))
            cen_np[light] = 0
            cen = lib.like(cen_np, x if lib is not NUMPY else cen)
        return ranges, cen, cw

    def swap_axes(ranges):
        """The ranges of the transposed problem: (ranges_j, slices_j, redranges_i,
        ranges_i, slices_i, redranges_j)."""
        return tuple(ranges[3:6]) + tuple(ranges[0:3])

    def from_matrix(ranges_i, ranges_j, keep):
        """KeOps' ranges from a boolean matrix keep (clusters of i x clusters of j) and each
        side's cluster ranges: blocks are clusters, their intervals the kept clusters'
        ranges (those that follow each other joined), both triples given."""
        ri = _ranges_in(lib, ranges_i, "ranges_i")
        rj = _ranges_in(lib, ranges_j, "ranges_j")
        k = np.ascontiguousarray(lib.to_numpy(keep)).astype(np.uint8, copy=False)
        if k.shape != (ri.shape[0], rj.shape[0]):
            raise ValueError(f"keep has shape {k.shape}, but there are {ri.shape[0]} i "
                             f"clusters and {rj.shape[0]} j clusters")
        six = _ctx().ranges_from_mask(ri, rj, np.ascontiguousarray(k))
        return _ranges_out(lib, six, None if lib is NUMPY else ranges_i)

    def from_centroids(ranges_i, centroids_i, ranges_j, centroids_j, cutoff):
        """from_matrix of the mask |centroid_i - centroid_j| < cutoff, without the
        matrix (kred_ranges_from_centroids). To keep every pair of points closer than r,
        take cutoff = r + twice the largest distance of a point to its centroid (for
        voxels of side v in dimension D: r + 2 sqrt(D) v)."""
        ri = _ranges_in(lib, ranges_i, "ranges_i")
        rj = _ranges_in(lib, ranges_j, "ranges_j")
        ci = _points(lib, centroids_i, "centroids_i")
        cj = _points(lib, centroids_j, "centroids_j")
        if ci.shape[0] != ri.shape[0] or cj.shape[0] != rj.shape[0] or ci.shape[1] != cj.shape[1]:
            raise ValueError(f"centroids of shapes {ci.shape} and {cj.shape} for {ri.shape[0]} "
                             f"and {rj.shape[0]} clusters")
        six = _ctx().ranges_from_centroids(ri, ci, rj, cj, ci.shape[1], float(cutoff))
        return _ranges_out(lib, six, None if lib is NUMPY else ranges_i)

    m = types.ModuleType(name, __doc__)
    for f in (grid_cluster, sort_clusters, cluster_ranges, cluster_centroids,
              cluster_ranges_centroids, swap_axes, from_matrix, from_centroids):
        f.__module__ = name
        setattr(m, f.__name__, f)
    m.__all__ = ["grid_cluster", "sort_clusters", "cluster_ranges", "cluster_centroids",
                 "cluster_ranges_centroids", "swap_axes", "from_matrix", "from_centroids"]
    return m
