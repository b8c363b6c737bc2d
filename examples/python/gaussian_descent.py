"""Gradient descent through a Gaussian convolution: points x move to match a target
cloud y by minimising the kernel (MMD) distance between their Gaussian blurs,

    E(x) = 1/2 sum_ij k(x_i, x_j) / n^2 - sum_ij k(x_i, y_j) / (n m),
    k(x, y) = exp(-|x - y|^2 / (2 s^2)),

each sum a kred reduction and its gradient with respect to x a kred gradient reduction:
no n x m matrix is ever formed.

    python3 examples/python/gaussian_descent.py [--n 2000] [--steps 100] [--backend auto]
"""

import argparse
import math
import time

import torch

from kred.torch import generic_sum


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="points in each cloud")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--backend", default="auto", help="auto, CPU, GPU, opencl, ...")
    args = p.parse_args()

    torch.manual_seed(0)
    n = m = args.n
    x = torch.rand(n, 2, requires_grad=True)  # the source: the unit square
    t = 2 * math.pi * torch.rand(m)
    y = 0.5 + 0.3 * torch.stack([t.cos(), t.sin()], 1)  # the target: a circle
    g = torch.tensor([1 / (2 * 0.1 ** 2)])

    # sum_j exp(-g |x_i - y_j|^2): one reduction, its output indexed by i.
    blur = generic_sum("Exp(-G * SqDist(X, Y))", "A = Vx(1)",
                       "G = Pm(1)", "X = Vx(2)", "Y = Vy(2)")

    def energy(x):
        return (0.5 * blur(g, x, x, backend=args.backend).sum() / n ** 2
                - blur(g, x, y, backend=args.backend).sum() / (n * m))

    opt = torch.optim.SGD([x], lr=0.1 * n)
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        opt.zero_grad()
        e = energy(x)
        if step % max(1, args.steps // 5) == 0:
            r = ((x.detach() - 0.5) ** 2).sum(1).sqrt()
            print(f"step {step:4d}  energy {e.item():+.6f}  radius {r.mean():.3f} "
                  f"+- {r.std():.3f}")
        if step < args.steps:
            e.backward()
            opt.step()
    print(f"{args.steps} steps of {n} points in {time.perf_counter() - t0:.2f} s "
          f"(the target is the circle of radius 0.300)")


if __name__ == "__main__":
    main()
