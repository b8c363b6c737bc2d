#!/usr/bin/env python3
"""The coefficients of kr_exp's polynomials (kernels/c_prelude.h).

exp(r) on [-ln2/2, ln2/2] (a little wider, for the reduction's rounding) is written
1 + r + r^2 Q(r), and Q = (exp(r) - 1 - r) / r^2 is interpolated at Chebyshev nodes in
50-digit arithmetic (mpmath; Debian: python3-mpmath): degree 4 for float32, 9 for
float64. The printed error bounds are those of Q, and of exp relative to its value.
Prints the coefficients, highest degree first, as the prelude's Horner rule uses them.

Then those of kernels/host.c's kr_vexp (the float64 fast path with AVX-512): exp(r) on
[-ln2/16, ln2/16] as 1 + r + r^2 Q(r), Q of degree 5, and its table of 2^(j/8), j = 0..7,
each as the nearest double and the nearest double to what that leaves.
"""
import mpmath as mp

mp.mp.dps = 50
HALF = mp.log(2) / 2 + mp.mpf("1e-4")


def q(r):
    if abs(r) < mp.mpf("1e-20"):
        return mp.mpf(1) / 2
    return (mp.exp(r) - 1 - r) / r**2


for degree, name in ((4, "float32"), (9, "float64")):
    poly, err = mp.chebyfit(q, [-HALF, HALF], degree + 1, error=True)
    rel = err * HALF**2 / mp.exp(-HALF)
    print(f"{name}: Q of degree {degree}, error of Q {mp.nstr(err, 3)}, "
          f"of exp {mp.nstr(rel, 3)} relative")
    for c in poly:
        print("   ", mp.nstr(c, 19))

EIGHTH = mp.log(2) / 16 + mp.mpf("1e-6")
poly, err = mp.chebyfit(q, [-EIGHTH, EIGHTH], 6, error=True)
print(f"float64 with a table of 8: Q of degree 5, error of Q {mp.nstr(err, 3)}, "
      f"of exp {mp.nstr(err * EIGHTH**2 / mp.exp(-EIGHTH), 3)} relative")
for c in poly:
    print("   ", mp.nstr(c, 19))
print("2^(j/8), j = 0..7, as hi + lo:")
for j in range(8):
    v = mp.power(2, mp.mpf(j) / 8)
    hi = float(v)
    print(f"    {hi!r}, {float(v - mp.mpf(hi))!r}")
