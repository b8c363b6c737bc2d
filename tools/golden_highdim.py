"""Writes the high-dimensional golden cases (tests/data/golden/hdD/NAME/expected.npy, the
arguments they share in tests/data/golden/hdD/, and their lines at the end of
tests/data/golden/cases.txt): the vector ops at D = 1, 7, 64, 300, 784 and
4096, forward and gradient, with values computed by numpy in float64 straight from
docs/FORMULAS.md, not from kred.

    /usr/bin/python3 tools/golden_highdim.py

The inputs are multiples of 1/32 in [0, 1] (S's entries multiples of 1/4 in [-1, 1]), so
that every squared distance, scalar product and quadratic form is exact in float32 too
(sums of at most 2^24 units of the last place): the float32 runs then differ from numpy
by the exponentials and the final sums only, whatever the order in which a backend adds
(directly, or as |x|^2 + |y|^2 - 2 x.y on the host), and test_golden's tolerances hold
at every dimension. Each row's distances are distinct, so ArgKMin has one answer.
Deterministic: a fixed seed, the same files every run."""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "tests", "data", "golden")
DIMS = [1, 7, 64, 300, 784, 4096]
FULL_MATRIX_MAX = 64  # a D x D parameter has at most 65,536 values
MARK = "# high dimensions (tools/golden_highdim.py)"


def sizes(d):
    """(nx, ny): fewer points in higher dimensions, to keep the files small."""
    if d >= 4096:
        return 3, 5
    if d >= 784:
        return 4, 6
    return 5, 8


def grid(rng, shape, step=32):
    return rng.integers(0, step + 1, size=shape) / step


def distinct_rows(rng, nx, y):
    """x rows whose squared distances to the rows of y are all distinct."""
    rows = []
    while len(rows) < nx:
        x = grid(rng, y.shape[1])
        d2 = ((x - y) ** 2).sum(1)
        if len(set(d2.tolist())) == len(d2):
            rows.append(x)
    return np.array(rows)


def gauss(x, y, g):
    return np.exp(-g * ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))


def cases_for(d, rng):
    nx, ny = sizes(d)
    y = grid(rng, (ny, d))
    x = distinct_rows(rng, nx, y)
    b = grid(rng, (ny, 1)) - 0.5
    e = grid(rng, (nx, 1)) - 0.5
    g = np.array([[4.0 / d]])
    al = f"X=Vi({d}) Y=Vj({d})"
    k = gauss(x, y, g[0, 0])  # nx x ny
    dot = x @ y.T
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    out = []

    out.append(("gauss", "Exp(-G*SqDist(X,Y))*B", "", f"G=Pm(1) {al} B=Vj(1)", "Sum", "j",
                "Gaussian sum", {"G": g, "X": x, "Y": y, "B": b}, k @ b))
    kk = min(3, ny)
    out.append(("knn", "SqDist(X,Y)", "", al, f"ArgKMin({kk})", "j",
                "indices of the nearest columns, nearest first",
                {"X": x, "Y": y}, np.argsort(d2, axis=1, kind="stable")[:, :kk].astype(float)))
    ge = np.exp(g[0, 0] * dot)  # Exp(G*(X|Y)), G = 4/D: at most e^4
    out.append(("scalprod", "Exp(G*(X|Y))*B", "", f"G=Pm(1) {al} B=Vj(1)", "Sum", "j",
                "scalar product kernel", {"G": g, "X": x, "Y": y, "B": b}, ge @ b))
    out.append(("tensordot", f"TensorDot(X,Y,Ind({d}),Ind({d}),Ind(0),Ind(0))*B", "",
                f"{al} B=Vj(1)", "Sum", "j", "TensorDot contracting the only axes: x.y",
                {"X": x, "Y": y, "B": b}, dot @ b))
    a = grid(rng, (2, d)) - 0.5
    out.append(("matvec", "MatVecMult(A,Y)*Elem(X,0)", "", f"A=Pm({2 * d}) {al}", "Sum", "j",
                "A is a 2 x D matrix stored row-major",
                {"A": a.reshape(1, -1), "X": x, "Y": y},
                x[:, :1] * (y @ a.T).sum(0, keepdims=True)))
    # d/dx_i of sum_j e_i exp(-g |x_i - y_j|^2) b_j = e_i sum_j -2 g (x_i - y_j) k_ij b_j
    diff = x[:, None, :] - y[None, :, :]
    grad_x = e * (-2 * g[0, 0]) * ((k * b[:, 0][None, :])[:, :, None] * diff).sum(1)
    out.append(("grad_x", "Grad(Exp(-G*SqDist(X,Y))*B,X,E)", "",
                f"G=Pm(1) {al} B=Vj(1) E=Vi(1)", "Sum", "j",
                "gradient in X of the Gaussian sum against the cotangent E",
                {"G": g, "X": x, "Y": y, "B": b, "E": e}, grad_x))
    # d/dy_j of sum_i e_i exp(g x_i.y_j) b_j = sum_i e_i b_j g x_i exp(g x_i.y_j), over i
    grad_y = (b[:, 0][:, None] * g[0, 0]) * ((e * ge)[:, :, None] * x[:, None, :]).sum(0)
    out.append(("grad_y", "Grad(Exp(G*(X|Y))*B,Y,E)", "", f"G=Pm(1) {al} B=Vj(1) E=Vi(1)",
                "Sum", "i", "gradient in Y of the scalar product kernel: a reduction over i",
                {"G": g, "X": x, "Y": y, "B": b, "E": e}, grad_y))
    if d <= FULL_MATRIX_MAX:
        s = rng.integers(-4, 5, size=(d, d)) / 4
        q = np.einsum("ija,ab,ijb->ij", diff, s, diff)
        out.append(("wsqdist_full", "WeightedSqDist(S,X,Y)", "", f"S=Pm({d * d}) {al}", "Sum",
                    "j", "S a full D x D matrix, row-major: (x-y)^T S (x-y)",
                    {"S": s.reshape(1, -1), "X": x, "Y": y}, q.sum(1, keepdims=True)))
        # d/dx of e_i (x-y)^T S (x-y) = e_i (S + S^T)(x - y)
        gq = e * np.einsum("ab,ijb->ia", s + s.T, diff)
        out.append(("wsqdist_grad", "Grad(WeightedSqDist(S,X,Y),X,E)", "",
                    f"S=Pm({d * d}) {al} E=Vi(1)", "Sum", "j",
                    "gradient in X of the quadratic form: e (S + S^T)(x - y), summed over j",
                    {"S": s.reshape(1, -1), "X": x, "Y": y, "E": e}, gq))
    return out


def main():
    rng = np.random.default_rng(20261206)
    path = os.path.join(GOLDEN, "cases.txt")
    with open(path) as f:
        text = f.read()
    text = text.split(MARK)[0].rstrip("\n") + "\n"
    lines = [MARK]
    for d in DIMS:
        shared = {}
        for name, formula, weight, aliases, red, axis, note, arrays, expected in cases_for(d, rng):
            folder = f"hd{d}/{name}"
            os.makedirs(os.path.join(GOLDEN, folder), exist_ok=True)
            for alias, arr in arrays.items():
                assert alias not in shared or np.array_equal(shared[alias], arr), alias
                shared[alias] = arr
            np.save(os.path.join(GOLDEN, folder, "expected.npy"),
                    np.ascontiguousarray(expected, dtype=np.float64))
            lines.append("\t".join([folder, formula, weight, aliases, red, axis,
                                    f"D = {d}: {note}"]))
        for alias, arr in shared.items():
            np.save(os.path.join(GOLDEN, f"hd{d}", f"{alias}.npy"),
                    np.ascontiguousarray(arr, dtype=np.float64))
    with open(path, "w") as f:
        f.write(text + "\n".join(lines) + "\n")
    print(f"{len(lines) - 1} cases written under {os.path.normpath(GOLDEN)}", file=sys.stderr)


if __name__ == "__main__":
    main()
