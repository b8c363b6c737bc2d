"""Entropic optimal transport between two point clouds by Sinkhorn iterations in the
log domain: each half-step is one generic_logsumexp, computed online and stably,

    f_i = -eps log sum_j exp((g_j - |x_i - y_j|^2 / 2) / eps + log b_j)
    g_j = -eps log sum_i exp((f_i - |x_i - y_j|^2 / 2) / eps + log a_i)

so that even a small eps, where exp(-C / eps) underflows, is fine.

    python3 examples/python/sinkhorn.py [--n 4000] [--eps 0.01] [--backend auto]
"""

import argparse
import math
import time

import torch

from kred.torch import generic_logsumexp, generic_sum


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4000, help="points in each cloud")
    p.add_argument("--eps", type=float, default=0.01, help="the entropic regularisation")
    p.add_argument("--iters", type=int, default=200, help="at most this many iterations")
    p.add_argument("--tol", type=float, default=1e-3, help="stop below this marginal error")
    p.add_argument("--backend", default="auto", help="auto, CPU, GPU, opencl, ...")
    args = p.parse_args()

    torch.manual_seed(0)
    n = m = args.n
    x = torch.rand(n, 2, dtype=torch.float64)
    t = 2 * math.pi * torch.rand(m, dtype=torch.float64)
    r = (0.09 + (0.2025 - 0.09) * torch.rand(m, dtype=torch.float64)).sqrt()
    y = 0.5 + r[:, None] * torch.stack([t.cos(), t.sin()], 1)
    log_a = torch.full((n, 1), -math.log(n), dtype=torch.float64)
    log_b = torch.full((m, 1), -math.log(m), dtype=torch.float64)
    e = torch.tensor([1 / args.eps], dtype=torch.float64)

    # The i-side update reduces over j (output Vx), the j-side one over i (output Vy).
    update_f = generic_logsumexp("(G - SqDist(X, Y) / 2) * E + L", "F = Vx(1)",
                                 "E = Pm(1)", "X = Vx(2)", "Y = Vy(2)", "G = Vy(1)",
                                 "L = Vy(1)")
    update_g = generic_logsumexp("(F - SqDist(X, Y) / 2) * E + L", "G = Vy(1)",
                                 "E = Pm(1)", "X = Vx(2)", "Y = Vy(2)", "F = Vx(1)",
                                 "L = Vx(1)")
    # The plan's row sums, sum_j exp((f_i + g_j - C_ij) / eps + log a_i + log b_j).
    marginal = generic_sum("Exp((F + G - SqDist(X, Y) / 2) * E + LA + LB)", "A = Vx(1)",
                           "E = Pm(1)", "X = Vx(2)", "Y = Vy(2)", "F = Vx(1)", "G = Vy(1)",
                           "LA = Vx(1)", "LB = Vy(1)")

    f = torch.zeros(n, 1, dtype=torch.float64)
    g = torch.zeros(m, 1, dtype=torch.float64)
    t0 = time.perf_counter()
    for it in range(1, args.iters + 1):
        f = -args.eps * update_f(e, x, y, g, log_b, backend=args.backend)
        g = -args.eps * update_g(e, x, y, f, log_a, backend=args.backend)
        err = (marginal(e, x, y, f, g, log_a, log_b, backend=args.backend)
               - log_a.exp()).abs().sum().item()
        if it % 10 == 0 or err < args.tol:
            print(f"iteration {it:4d}  marginal error {err:.2e}")
        if err < args.tol:
            break
    cost = (log_a.exp() * f).sum() + (log_b.exp() * g).sum()
    print(f"OT cost (W2^2 / 2, eps = {args.eps}): {cost.item():.6f} after {it} iterations, "
          f"{time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
