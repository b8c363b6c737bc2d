#!/usr/bin/env python3
"""Pairs per second against N for the Gaussian kernel sum, and the figure of the README.

    /usr/bin/python3 bench/plot.py measure -o bench/figures.json [--max-n N]
    /usr/bin/python3 bench/plot.py draw bench/figures.json [gpu.json ...] -o docs/benchmark.svg

measure times out_i = sum_j exp(-g |x_i - y_j|^2) b_j (D = 3, float32, nx = ny = N, N
from 1e3 to 1e6) on every kred backend that opens here (through the kred Python
package), and on the dense computations a numpy or PyTorch user writes (the N x N
kernel matrix, then a matrix-vector product) until their matrix would pass --dense-mem.
Each point is the median of runs alternated between the methods at that N. draw
plots every file given (a GPU machine's file too), log-log, with matplotlib (Debian:
python3-matplotlib).
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

FORMULA = "Exp(-G*SqDist(X,Y))*B"
ALIASES = ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)"]
SIZES = [1000, 3000, 10000, 30000, 100000, 300000, 1000000]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def methods(backends):
    """(label, make(x, y, b, g) -> callable) for each method that works here."""
    import numpy as np
    from kred.numpy import Genred

    out = []
    for name in backends:
        try:
            op = Genred(FORMULA, ALIASES, reduction_op="Sum", axis=1)
            x = np.zeros((2, 3), np.float32)
            op(x, x, np.ones((2, 1), np.float32), np.ones(1, np.float32), backend=name)
        except Exception as e:  # a backend this machine lacks: say so, go on
            print(f"kred {name}: not measured ({e})", file=sys.stderr)
            continue
        out.append((f"kred {name}", lambda x, y, b, g, op=op, name=name:
                    (lambda: op(x, y, b, g, backend=name))))

    def numpy_dense(x, y, b, g):
        def run():
            d = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
            return np.exp(-g[0] * d) @ b
        return run
    out.append(("numpy dense", numpy_dense))
    try:
        import torch

        def torch_dense(x, y, b, g):
            tx, ty, tb = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(b)
            gg = float(g[0])

            def run():
                return torch.exp(-gg * torch.cdist(tx, ty) ** 2) @ tb
            return run
        out.append(("torch dense", torch_dense))
    except ImportError:
        print("torch: not measured (not installed)", file=sys.stderr)
    return out


def measure(args):
    import numpy as np

    rng = np.random.default_rng(0)
    ms = methods(args.backends.split(","))
    points = {label: [] for label, _ in ms}
    for n in [s for s in SIZES if s <= args.max_n]:
        x = rng.random((n, 3), dtype=np.float32)
        y = rng.random((n, 3), dtype=np.float32)
        b = rng.random((n, 1), dtype=np.float32)
        g = np.array([2.0], np.float32)
        live = []
        for label, make in ms:
            if "dense" in label and 4 * n * n * 3 > args.dense_mem:
                continue  # the N x N matrices (differences, distances, kernel) do not fit
            run = make(x, y, b, g)
            run()  # compile, allocate
            live.append((label, run))
        times = {label: [] for label, _ in live}
        for _ in range(args.reps):
            for label, run in live:
                t0 = time.perf_counter()
                run()
                times[label].append(time.perf_counter() - t0)
        for label, _ in live:
            t = statistics.median(times[label])
            points[label].append([n, n * n / t])
            print(f"N = {n:8d}  {label:14s} {t:9.4f} s  {n * n / t:10.3e} pairs/s", flush=True)
    doc = {"machine": cpu_model(), "threads": os.cpu_count(), "formula": FORMULA,
           "dtype": "float32", "reps": args.reps, "series": points}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {args.out}")


def draw(args):
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for path in args.files:
        with open(path) as f:
            doc = json.load(f)
        for label, pts in doc["series"].items():
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        label=f"{label} ({doc['machine']})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N = nx = ny")
    ax.set_ylabel("pairs per second")
    ax.set_title("Gaussian kernel sum, D = 3, float32")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, metadata={"Date": None})
    print(f"wrote {args.out}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("-o", "--out", default="bench/figures.json")
    m.add_argument("--backends", default="host,opencl,vulkan,cuda")
    m.add_argument("--max-n", type=int, default=1000000)
    m.add_argument("--dense-mem", type=float, default=4e9,
                   help="bytes the dense methods' N x N x 3 differences may take")
    m.add_argument("--reps", type=int, default=3)
    d = sub.add_parser("draw")
    d.add_argument("files", nargs="+")
    d.add_argument("-o", "--out", default="docs/benchmark.svg")
    args = p.parse_args()
    measure(args) if args.cmd == "measure" else draw(args)


if __name__ == "__main__":
    main()
