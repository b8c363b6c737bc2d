#!/usr/bin/python3
"""Expected outputs of the conformance table, computed with numpy, independently of kred.

    /usr/bin/python3 tools/conformance_numpy.py            # writes tests/data/conformance/
    /usr/bin/python3 tools/conformance_numpy.py --golden   # checks this evaluator on the
                                                           # golden cases first

tests/test_conformance.c compares the reference backend with these values (issue 19: the
reference compared with itself could not fail). This file is written from
docs/FORMULAS.md and KeOps' conventions, not from lib/eval.c, so that the two are two
implementations of one specification: a disagreement is a bug in one of them.

It reads the rows of tests/conformance_cases.h (the C initialisers and their macros),
makes the same inputs as make_input() there, evaluates each formula on arrays shaped
(nx, 1, d) for i-variables, (1, ny, d) for j-variables and (1, 1, d) for parameters
(numpy's broadcasting is FORMULAS.md's "a dimension-1 side is broadcast"), in float64
(a float32 row's inputs are rounded to float32 first, as the C test makes them), and
reduces. Sizes whose output has more than MAX_OUT_ROWS rows are not stored.

Output, deterministic (np.save of float64 arrays; indices as float64, exact):
  tests/data/conformance/index.txt   one line per row: the row's identity (what the C
                                     test checks it against, so that a changed table
                                     asks for a regeneration) and the sizes stored
  tests/data/conformance/rNNN.npy    row NNN: the outputs of its stored sizes, in the
                                     row's order, stacked: shape (sum of out rows, out dim)
"""

import os
import re
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = os.path.join(ROOT, "tests", "conformance_cases.h")
OUT_DIR = os.path.join(ROOT, "tests", "data", "conformance")
GOLDEN = os.path.join(ROOT, "tests", "data", "golden")
MAX_OUT_ROWS = 1000
SCHEMES = {"KRED_SUM_DEFAULT": "default", "KRED_SUM_DIRECT": "direct",
           "KRED_SUM_BLOCK": "block", "KRED_SUM_KAHAN": "kahan"}

# ---------------------------------------------------------------- the C table

C_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|([A-Za-z_]\w*)|'
                     r'((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(.))', re.S)


def c_tokens(text):
    out = []
    for m in C_TOKEN.finditer(text):
        s, ident, num, punct = m.groups()
        if s is not None:
            out.append(("str", bytes(s[1:-1], "utf-8").decode("unicode_escape")))
        elif ident is not None:
            out.append(("id", ident))
        elif num is not None:
            out.append(("num", float(num)))
        elif punct is not None and not punct.isspace():
            out.append(("p", punct))
    return out


def read_table(path=CASES):
    """The rows of conformance_cases.h as dicts, in order."""
    text = open(path).read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = text.replace("\\\n", " ")
    macros = {}
    for m in re.finditer(r"^#define[ \t]+(\w+)(?!\()[ \t]*(.*)$", text, flags=re.M):
        macros[m.group(1)] = c_tokens(m.group(2))
    enum = dict((k, float(v)) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)",
                                                   re.search(r"enum\s*\{([^}]*)\}", text).group(1)))
    body = re.search(r"static const struct row rows\[\] = \{(.*?)\n\};", text, re.S).group(1)

    def expand(tokens, depth=0):
        out = []
        for t in tokens:
            if t[0] == "id" and t[1] in macros and depth < 20:
                out.extend(expand(macros[t[1]], depth + 1))
            elif t[0] == "id" and t[1] in enum:
                out.append(("num", enum[t[1]]))
            else:
                out.append(t)
        return out

    toks = expand(c_tokens(body))
    pos = 0

    def value():
        nonlocal pos
        t = toks[pos]
        if t == ("p", "{"):
            pos += 1
            items = []
            while toks[pos] != ("p", "}"):
                items.append(value())
                if toks[pos] == ("p", ","):
                    pos += 1
            pos += 1
            return items
        if t == ("p", "-"):
            pos += 1
            return -value()
        pos += 1
        if t[0] == "str":  # adjacent literals are one string
            s = t[1]
            while pos < len(toks) and toks[pos][0] == "str":
                s += toks[pos][1]
                pos += 1
            return s
        if t[0] == "id" and t[1] == "NULL":
            return None
        return t[1]

    rows = []
    while pos < len(toks):
        r = value()
        if pos < len(toks) and toks[pos] == ("p", ","):
            pos += 1
        sizes = [tuple(int(v) for v in s) for s in r[7]]
        sizes += [(0, 0)] * (6 - len(sizes))  # as C zero-fills
        live = []
        for s in sizes:  # test_row: k < 6 && sizes[k][0] >= 0
            if s[0] < 0:
                break
            live.append(s)
        rows.append({
            "formula": r[0], "weight": r[1], "reduction": r[2], "aliases": r[3],
            "axis": {"KRED_REDUCE_J": "j", "KRED_REDUCE_I": "i"}[r[4]],
            "dtype": {"KRED_FLOAT32": "float32", "KRED_FLOAT64": "float64"}[r[5]],
            "scheme": SCHEMES[r[6]], "sizes": live,
            "input": (float(r[8][0]), float(r[8][1]), int(r[8][2])),
            "rtol": r[9], "atol": r[10]})
    return rows


def row_key(k, row):
    """The line of index.txt that names row k; test_conformance.c prints the same."""
    lo, hi, kind = row["input"]
    return "\t".join([
        "%03d" % k, row["formula"], row["weight"] if row["weight"] is not None else "-",
        row["reduction"], row["aliases"], row["axis"], row["dtype"], row["scheme"],
        "%s %g %g" % ("grid" if kind else "uniform", lo, hi),
        " ".join("%dx%d" % s for s in row["sizes"])])


# ---------------------------------------------------------------- inputs

LCG_A = 6364136223846793005
LCG_C = 1442695040888963407
M64 = (1 << 64) - 1
_powers = None


def lcg_uniforms(seed, n):
    """The first n values of make_input()'s uniform() after seeding with seed: the LCG
    state after k steps is a^k s0 + c (a^(k-1) + ... + 1) mod 2^64, computed for all k at
    once (numpy's uint64 arithmetic wraps, which is the mod 2^64)."""
    global _powers
    if _powers is None or len(_powers[0]) < n:
        m = max(n, 1 << 19)
        a_pow = np.multiply.accumulate(np.full(m, LCG_A, dtype=np.uint64))  # a^1 .. a^m
        geo = np.cumsum(np.concatenate(([np.uint64(1)], a_pow[:-1])), dtype=np.uint64)
        _powers = (a_pow, geo * np.uint64(LCG_C))
    s0 = np.uint64((seed * 0x9e3779b97f4a7c15 + 1) & M64)
    state = _powers[0][:n] * s0 + _powers[1][:n]
    return (state >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def c_round(x):
    """C's round(): halves away from zero (np.round goes to even)."""
    t = np.trunc(x)
    return t + np.where(np.abs(x - t) >= 0.5, np.sign(x), 0.0)


def make_input(inp, count, dtype, seed):
    lo, hi, kind = inp
    v = lo + (hi - lo) * lcg_uniforms(seed, count)
    if kind == 1:
        v = c_round(v * 64) / 64
    if dtype == "float32":
        v = v.astype(np.float32).astype(np.float64)
    return v


# ---------------------------------------------------------------- formulas

F_TOKEN = re.compile(r"\s*(?:((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|([A-Za-z_]\w*)|"
                     r"(\*\*|==|!=|<=|>=|[-+*/^()<>,|]))")


class Parser:
    """FORMULAS.md's grammar, loosest first: comparisons, + -, * /, unary minus,
    ** and ^ (right-associative), then calls, variables, literals and parentheses.
    Nodes are tuples: ("num", value, text), ("var", name), ("call", name, [args])."""

    def __init__(self, text):
        self.toks, p = [], 0
        text = text.rstrip()
        while p < len(text):
            m = F_TOKEN.match(text, p)
            if not m:
                raise ValueError("cannot read %r at %d" % (text, p))
            self.toks.append(m.group(1) and ("num", m.group(1)) or
                             m.group(2) and ("id", m.group(2)) or ("op", m.group(3)))
            p = m.end()
        self.pos = 0

    def peek(self):
        return self.toks[self.pos] if self.pos < len(self.toks) else ("end", "")

    def take(self, want=None):
        t = self.peek()
        if want is not None and t[1] != want:
            raise ValueError("expected %r, got %r" % (want, t))
        self.pos += 1
        return t

    def parse(self):
        e = self.compare()
        if self.peek()[0] != "end":
            raise ValueError("trailing %r" % (self.peek(),))
        return e

    CMP = {"==": "Equal", "!=": "NotEqual", "<": "Less", ">": "Greater",
           "<=": "LessEqual", ">=": "GreaterEqual"}

    def compare(self):
        e = self.add()
        while self.peek()[1] in self.CMP:
            e = ("call", self.CMP[self.take()[1]], [e, self.add()])
        return e

    def add(self):
        e = self.mul()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            e = ("call", "Add" if op == "+" else "Subtract", [e, self.mul()])
        return e

    def mul(self):
        e = self.unary()
        while self.peek()[1] in ("*", "/"):
            op = self.take()[1]
            e = ("call", "Mult" if op == "*" else "Divide", [e, self.unary()])
        return e

    def unary(self):
        if self.peek()[1] == "-" and not self.neg_literal():
            self.take()
            return ("call", "Minus", [self.unary()])
        return self.power()

    def neg_literal(self):
        """A minus directly before a numeric literal makes one negative constant."""
        return self.pos + 1 < len(self.toks) and self.toks[self.pos + 1][0] == "num"

    def power(self):
        base = self.primary()
        if self.peek()[1] in ("**", "^"):
            self.take()
            exp = self.power() if self.peek()[1] != "-" else self.primary()
            if exp[0] == "num" and float(exp[1]) == int(float(exp[1])):
                k = int(float(exp[1]))
                return ("call", "Square", [base]) if k == 2 else ("call", "Pow", [base, exp])
            return ("call", "Powf", [base, exp])
        return base

    def primary(self):
        t = self.take()
        if t[1] == "-":  # only before a literal (see unary)
            n = self.take()
            return ("num", -float(n[1]), "-" + n[1])
        if t[0] == "num":
            return ("num", float(t[1]), t[1])
        if t[1] == "(":
            e = self.compare()
            if self.peek()[1] == "|":
                self.take()
                e = ("call", "Scalprod", [e, self.compare()])
            self.take(")")
            return e
        if t[0] == "id":
            if self.peek()[1] == "(":
                self.take()
                args = []
                if self.peek()[1] != ")":
                    args.append(self.compare())
                    while self.peek()[1] == ",":
                        self.take()
                        args.append(self.compare())
                self.take(")")
                return ("call", t[1], args)
            return ("var", t[1])
        raise ValueError("unexpected %r" % (t,))


CATEGORIES = {"Vi": 0, "Vx": 0, "Vj": 1, "Vy": 1, "Pm": 2}


def arguments(row, trees):
    """{position: (category, dim)} and {alias name: position}, from the aliases (a
    position defaults to the alias's index in the list) and the positional forms."""
    args, names = {}, {}

    def put(pos, cat, dim):
        if args.get(pos, (cat, dim)) != (cat, dim):
            raise ValueError("position %d declared twice, differently" % pos)
        args[pos] = (cat, dim)

    for k, a in enumerate(x for x in row["aliases"].split(";") if x):
        m = re.fullmatch(r"\s*(\w+)\s*=\s*(\w+)\((\d+)(?:,(\d+))?\)\s*", a)
        name, cat, p1, p2 = m.groups()
        pos, dim = (int(p1), int(p2)) if p2 else (k, int(p1))
        put(pos, CATEGORIES[cat], dim)
        names[name] = pos

    def walk(n):
        if n[0] == "call":
            if n[1] in CATEGORIES and len(n[2]) == 2:
                put(int(n[2][0][1]), CATEGORIES[n[1]], int(n[2][1][1]))
            elif n[1] == "Var":
                put(int(n[2][0][1]), int(n[2][2][1]), int(n[2][1][1]))
            else:
                for c in n[2]:
                    walk(c)

    for t in trees:
        walk(t)
    if sorted(args) != list(range(len(args))):
        raise ValueError("positions with a gap: %s" % sorted(args))
    return args, names


def num_arg(n):
    """An integer argument (Pow's P, Elem's M, ...): a literal."""
    if n[0] != "num" or n[1] != int(n[1]):
        raise ValueError("expected an integer, got %r" % (n,))
    return int(n[1])


def ind_arg(n):
    if n[0] != "call" or n[1] != "Ind":
        raise ValueError("expected Ind(...), got %r" % (n,))
    return [num_arg(a) for a in n[2]]


def where(cond, a, b):
    return np.where(cond, a, b)


def rsqrt(f):
    """Rsqrt(0) = 0 (FORMULAS.md, as in KeOps)."""
    with np.errstate(divide="ignore"):
        return where(f == 0, 0.0, 1.0 / np.sqrt(f))


def sqnorm2(f):
    return np.sum(f * f, axis=-1, keepdims=True)


def weighted_sqnorm(s, f):
    """s of dimension 1 (a scalar weight), d(f) (a diagonal) or d(f)^2 (a full symmetric
    matrix, row-major): sum_kl f_k S_kl f_l."""
    d, ds = f.shape[-1], s.shape[-1]
    if ds == 1:
        return s * sqnorm2(f)
    if ds == d:
        return np.sum(s * f * f, axis=-1, keepdims=True)
    if ds == d * d:
        m = s.reshape(s.shape[:-1] + (d, d))
        return np.einsum("...k,...kl,...l->...", f, m, f)[..., None]
    raise ValueError("WeightedSqNorm: weight of dimension %d for a vector of %d" % (ds, d))


def placed(f, offset, dim):
    """f placed at offset in a zero vector of dimension dim (ElemT, ExtractT)."""
    out = np.zeros(f.shape[:-1] + (dim,))
    out[..., offset:offset + f.shape[-1]] = f
    return out


def concat(f, g):
    lead = np.broadcast_shapes(f.shape[:-1], g.shape[:-1])
    return np.concatenate([np.broadcast_to(f, lead + f.shape[-1:]),
                           np.broadcast_to(g, lead + g.shape[-1:])], axis=-1)


def matrix(f, rows, cols):
    return f.reshape(f.shape[:-1] + (rows, cols))


def kron(f, g, df, dg):
    """Kronecker product of f (a tensor of shape df, row-major) and g (shape dg): the
    entry (a_1 dg_1 + b_1, ..., a_r dg_r + b_r) is f[a] g[b], flattened row-major."""
    r = len(df)
    lead = np.broadcast_shapes(f.shape[:-1], g.shape[:-1])
    fe = np.broadcast_to(f, lead + f.shape[-1:]).reshape(lead + tuple(
        x for d in df for x in (d, 1)))
    ge = np.broadcast_to(g, lead + g.shape[-1:]).reshape(lead + tuple(
        x for d in dg for x in (1, d)))
    out = fe * ge
    return out.reshape(lead + (int(np.prod([df[k] * dg[k] for k in range(r)])),))


def tensordot(f, g, df, dg, cf, cg):
    """np.tensordot(F, G, (cf, cg)) with F, G the row-major tensors of shapes df, dg:
    the free axes of F then those of G, flattened row-major (KeOps' TensorDot)."""
    letters = "abcdefghijklmnopqrstuvw"
    fl = list(letters[:len(df)])
    gl = list(letters[len(df):len(df) + len(dg)])
    for a, b in zip(cf, cg):
        gl[b] = fl[a]
    free = [c for k, c in enumerate(fl) if k not in cf] + \
           [c for k, c in enumerate(gl) if k not in cg]
    lead = np.broadcast_shapes(f.shape[:-1], g.shape[:-1])
    fe = np.broadcast_to(f, lead + f.shape[-1:]).reshape(lead + tuple(df))
    ge = np.broadcast_to(g, lead + g.shape[-1:]).reshape(lead + tuple(dg))
    out = np.einsum("...%s,...%s->...%s" % ("".join(fl), "".join(gl), "".join(free)), fe, ge)
    return out.reshape(lead + (int(np.prod(out.shape[len(lead):])),))


def first_index(f, pick):
    """The index of the first entry of the last axis equal to pick(f) (ArgMin, ArgMax
    as vector operations), as a value."""
    m = pick(f, axis=-1, keepdims=True)
    return np.argmax(f == m, axis=-1)[..., None].astype(np.float64)


def mod(f, m, off):
    return f - m * np.floor((f - off) / m)


def round_dec(f, d):
    """Round(f, D): D decimals, halves away from zero. D >= 0 as KeOps writes it,
    round(f * 10^D) / 10^D with exact powers; D < 0 (FORMULAS.md does not say how) as
    round(f / 10^-D) * 10^-D, the same number without KeOps' inexact 0.1."""
    if d >= 0:
        p = 10.0 ** d
        return c_round(f * p) / p
    p = 10.0 ** -d
    return c_round(f / p) * p


def one_hot(f, d):
    """OneHot(f, D): 1 at round(f) (halves away from zero), 0 elsewhere, so all zero
    when round(f) is outside 0..D-1."""
    return (c_round(f) == np.arange(d)).astype(np.float64)


def clamp(f, a, b):
    """KeOps: a if f < a, else b if f > b, else f (also when a > b); NaN passes."""
    return where(f < a, a, where(f > b, b, f))


def binary(fn):
    return lambda a, n: fn(a[0], a[1])


def unary(fn):
    return lambda a, n: fn(a[0])


OPS = {
    "Minus": unary(lambda f: -f),
    "Inv": unary(lambda f: 1.0 / f),
    "Exp": unary(np.exp),
    "Log": unary(np.log),
    "XLogX": unary(lambda f: where(f == 0, 0.0, f * np.log(f))),       # 0 at 0
    "Sin": unary(np.sin),
    "SinXDivX": unary(lambda f: where(f == 0, 1.0, np.sin(f) / f)),    # 1 at 0
    "Asin": unary(np.arcsin),
    "Cos": unary(np.cos),
    "Acos": unary(np.arccos),
    "Atan": unary(np.arctan),
    "Atan2": binary(np.arctan2),
    "Sqrt": unary(np.sqrt),
    "Rsqrt": unary(rsqrt),
    "Square": unary(lambda f: f * f),
    "Pow": lambda a, n: a[0] ** float(num_arg(n[1])),
    # the definition exp(g log f), so NaN for f < 0 whatever g
    "Powf": binary(lambda f, g: np.exp(g * np.log(f))),
    "Abs": unary(np.abs),
    "Sign": unary(lambda f: where(np.isnan(f), 0.0, np.sign(f))),     # Sign(NaN) = 0
    "Step": unary(lambda f: where(f < 0, 0.0, 1.0)),                   # Step(NaN) = 1
    "ReLU": unary(lambda f: where(f < 0, 0.0, f)),
    "Clamp": lambda a, n: clamp(a[0], a[1], a[2]),
    "ClampInt": lambda a, n: clamp(a[0], float(num_arg(n[1])), float(num_arg(n[2]))),
    "IfElse": lambda a, n: where(a[0] >= 0, a[1], a[2]),               # NaN: h
    "Mod": lambda a, n: mod(a[0], a[1], a[2]),
    "Round": lambda a, n: round_dec(a[0], num_arg(n[1])),
    "Floor": unary(np.floor),
    "Add": binary(lambda f, g: f + g),
    "Subtract": binary(lambda f, g: f - g),
    "Mult": binary(lambda f, g: f * g),
    "Divide": binary(lambda f, g: f / g),
    "Scal": binary(lambda f, g: f * g),
    "Scalprod": binary(lambda f, g: np.sum(f * g, axis=-1, keepdims=True)),
    "Equal": binary(lambda f, g: (f == g).astype(np.float64)),
    "NotEqual": binary(lambda f, g: (f != g).astype(np.float64)),
    "Less": binary(lambda f, g: (f < g).astype(np.float64)),
    "Greater": binary(lambda f, g: (f > g).astype(np.float64)),
    "LessEqual": binary(lambda f, g: (f <= g).astype(np.float64)),
    "GreaterEqual": binary(lambda f, g: (f >= g).astype(np.float64)),
    "Sum": unary(lambda f: np.sum(f, axis=-1, keepdims=True)),
    "Max": unary(lambda f: np.max(f, axis=-1, keepdims=True)),
    "Min": unary(lambda f: np.min(f, axis=-1, keepdims=True)),
    "ArgMax": unary(lambda f: first_index(f, np.max)),
    "ArgMin": unary(lambda f: first_index(f, np.min)),
    "SqNorm2": unary(sqnorm2),
    "Norm2": unary(lambda f: np.sqrt(sqnorm2(f))),
    "Normalize": unary(lambda f: rsqrt(sqnorm2(f)) * f),               # 0 at 0
    "SqDist": binary(lambda f, g: sqnorm2(f - g)),
    "WeightedSqNorm": binary(weighted_sqnorm),
    "WeightedSqDist": lambda a, n: weighted_sqnorm(a[0], a[1] - a[2]),
    "IntCst": lambda a, n: np.full((1, 1, 1), float(num_arg(n[0]))),
    "IntInv": lambda a, n: np.full((1, 1, 1), 1.0 / num_arg(n[0])),
    "Zero": lambda a, n: np.zeros((1, 1, num_arg(n[0]))),
    "Elem": lambda a, n: a[0][..., num_arg(n[1]):num_arg(n[1]) + 1],
    "ElemT": lambda a, n: placed(a[0], num_arg(n[2]), num_arg(n[1])),
    "Extract": lambda a, n: a[0][..., num_arg(n[1]):num_arg(n[1]) + num_arg(n[2])],
    "ExtractT": lambda a, n: placed(a[0], num_arg(n[1]), num_arg(n[2])),
    "Concat": lambda a, n: concat(a[0], a[1]),
    "OneHot": lambda a, n: one_hot(a[0], num_arg(n[1])),
    # f a matrix of d(f)/d(g) rows by d(g) columns, row-major (FORMULAS.md, golden
    # matvec_rowmajor): out_r = sum_c F[r, c] g_c
    "MatVecMult": lambda a, n: np.einsum(
        "...rc,...c->...r", matrix(a[0], a[0].shape[-1] // a[1].shape[-1], a[1].shape[-1]),
        a[1]),
    # g a matrix of d(f) rows by d(g)/d(f) columns, row-major (golden vecmat_rowmajor):
    # out_c = sum_r f_r G[r, c]
    "VecMatMult": lambda a, n: np.einsum(
        "...r,...rc->...c", a[0],
        matrix(a[1], a[0].shape[-1], a[1].shape[-1] // a[0].shape[-1])),
    # out[a * d(g) + b] = f_a g_b (golden tensorprod_layout)
    "TensorProd": lambda a, n: (a[0][..., :, None] * a[1][..., None, :]).reshape(
        np.broadcast_shapes(a[0].shape[:-1], a[1].shape[:-1]) +
        (a[0].shape[-1] * a[1].shape[-1],)),
    "Kron": lambda a, n: kron(a[0], a[1], ind_arg(n[2]), ind_arg(n[3])),
    "TensorDot": lambda a, n: tensordot(a[0], a[1], ind_arg(n[2]), ind_arg(n[3]),
                                        ind_arg(n[4]), ind_arg(n[5])),
}

# the arguments of these are integers or Ind lists, not formulas: not evaluated
INT_ARGS = {"Pow": (1,), "ClampInt": (1, 2), "Round": (1,), "IntCst": (0,), "IntInv": (0,),
            "Zero": (0,), "Elem": (1,), "ElemT": (1, 2), "Extract": (1, 2),
            "ExtractT": (1, 2), "OneHot": (1,), "Kron": (2, 3),
            "TensorDot": (2, 3, 4, 5)}


class Evaluator:
    """A formula's value: (nx or 1, ny or 1, dim) arrays, broadcast as numpy does."""

    def __init__(self, values, names):
        self.values, self.names = values, names

    def __call__(self, n):
        if n[0] == "num":
            return np.full((1, 1, 1), n[1])
        if n[0] == "var":
            return self.values[self.names[n[1]]]
        name, kids = n[1], n[2]
        if name in CATEGORIES or name == "Var":  # a variable by position
            return self.values[int(kids[0][1])]
        skip = INT_ARGS.get(name, ())
        vals = [None if k in skip else self(c) for k, c in enumerate(kids)]
        with np.errstate(all="ignore"):
            return np.asarray(OPS[name](vals, kids), dtype=np.float64)


# ---------------------------------------------------------------- reductions

def parse_reduction(text):
    m = re.fullmatch(r"(\w+)(?:\((\d+)\))?", text)
    return m.group(1), int(m.group(2)) if m.group(2) else 0


def select(v, k, largest):
    """The k smallest (or largest) entries of v along axis 1 and their indices, sorted,
    NaN skipped, ties in index order (a stable sort); missing ranks are +inf (-inf for
    the largest) with index -1. v: (nout, nred, D); returns two (nout, k, D) arrays."""
    nout, nred, d = v.shape
    key = -v if largest else v
    fill = -np.inf if largest else np.inf
    vals = np.full((nout, k, d), fill)
    idx = np.full((nout, k, d), -1.0)
    if nred:
        nan = np.isnan(key)
        keyed = np.where(nan, np.inf, key)
        # primary key: NaN last; then the value; then the index (lexsort is stable)
        order = np.lexsort((keyed, nan), axis=1)[:, :k, :]
        got = np.take_along_axis(v, order, axis=1)
        bad = np.take_along_axis(nan, order, axis=1)
        kk = order.shape[1]
        vals[:, :kk] = np.where(bad, fill, got)
        idx[:, :kk] = np.where(bad, -1.0, order)
    return vals, idx


def reduce_rows(red, k, f, g, nout):
    """f: (nout, nred, D) values of the formula, g: (nout, nred, Dg) or None."""
    nred = f.shape[1]
    d = f.shape[2]
    with np.errstate(all="ignore"):
        if red == "Sum":
            return np.sum(f, axis=1)
        if red in ("Min", "Max", "ArgMin", "ArgMax", "Min_ArgMin", "Max_ArgMax"):
            vals, idx = select(f, 1, red.startswith("Max") or red == "ArgMax")
            vals, idx = vals[:, 0], idx[:, 0]
            return {"Min": vals, "Max": vals, "ArgMin": idx, "ArgMax": idx}.get(
                red, np.concatenate([vals, idx], axis=1))
        if red in ("KMin", "ArgKMin", "KMin_ArgKMin"):
            vals, idx = select(f, k, False)
            vals, idx = vals.reshape(nout, k * d), idx.reshape(nout, k * d)  # rank-major
            return {"KMin": vals, "ArgKMin": idx}.get(red, np.concatenate([vals, idx], axis=1))
        # The LogSumExp family: f of dimension 1, m = max f, sums of exp(f - m). The
        # shift is m where m is finite, else 0: a row of all -inf (or no term) then sums
        # exp(-inf) = 0, giving log 0 = -inf, (-inf, 0) and 0/0 = NaN as FORMULAS.md
        # says; NaN passes through; +inf gives +inf (FORMULAS.md is silent on +inf in
        # the shifted forms, which no row of the table has).
        assert d == 1
        f = f[..., 0]
        m = np.max(f, axis=1) if nred else np.full(nout, -np.inf)
        shift = np.where(np.isfinite(m), m, 0.0)
        e = np.exp(f - shift[:, None])
        s = np.sum(e, axis=1)
        ew = np.sum(e[..., None] * g, axis=1) if g is not None else None
        if ew is not None:
            # A row whose f is -inf for every j (or that has no term) gives the neutral
            # value, never NaN (FORMULAS.md), whatever its weights: its sum of weighted
            # terms is 0, even where a weight is infinite (0 * inf would be NaN). Other
            # rows follow IEEE arithmetic term by term.
            ew = np.where((m == -np.inf)[:, None], 0.0, ew)
        if red == "LogSumExp":
            return (shift + np.log(s))[:, None]
        if red == "Max_SumShiftExp":
            return np.stack([m, s], axis=1)
        if red == "LogSumExpWeight":
            return shift[:, None] + np.log(ew)
        if red == "SumSoftMaxWeight":
            return ew / s[:, None]
        if red == "Max_SumShiftExpWeight":
            return np.concatenate([m[:, None], ew], axis=1)
    raise ValueError("unknown reduction " + red)


# ---------------------------------------------------------------- rows

class Row:
    def __init__(self, row):
        self.row = row
        self.tree = Parser(row["formula"]).parse()
        self.wtree = Parser(row["weight"]).parse() if row["weight"] else None
        self.args, self.names = arguments(row, [t for t in (self.tree, self.wtree) if t])
        self.red, self.k = parse_reduction(row["reduction"])

    def inputs(self, nx, ny, seed):
        """make_input() of test_conformance.c's run_pair: argument p of seed*31 + p."""
        out = {}
        for p, (cat, dim) in sorted(self.args.items()):
            n = nx if cat == 0 else ny if cat == 1 else 1
            v = make_input(self.row["input"], dim * n, self.row["dtype"], seed * 31 + p)
            out[p] = v.reshape((n, 1, dim) if cat == 0 else (1, n, dim) if cat == 1
                               else (1, 1, dim))
        return out

    def run(self, nx, ny, values):
        ev = Evaluator(values, self.names)
        f = ev(self.tree)
        f = np.broadcast_to(f, (nx, ny, f.shape[-1]))
        g = None
        if self.wtree:
            g = ev(self.wtree)
            g = np.broadcast_to(g, (nx, ny, g.shape[-1]))
        if self.row["axis"] == "i":
            f = f.transpose(1, 0, 2)
            g = g.transpose(1, 0, 2) if g is not None else None
        return reduce_rows(self.red, self.k, f, g, f.shape[0])


def out_rows(row, size):
    return size[0] if row["axis"] == "j" else size[1]


def generate(rows, out_dir=OUT_DIR):
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):  # a shorter table leaves no stale row behind
        if re.fullmatch(r"r\d+\.npy", name):
            os.remove(os.path.join(out_dir, name))
    index = ["# written by tools/conformance_numpy.py: do not edit. Per row: its index, "
             "formula, weight, reduction, aliases, axis, dtype, scheme, inputs, sizes; "
             "then the sizes stored in rNNN.npy, in order (the others' output has more "
             "than %d rows)." % MAX_OUT_ROWS]
    total, skipped = 0, []
    for k, row in enumerate(rows):
        r = Row(row)
        parts, kept = [], []
        for s, (nx, ny) in enumerate(row["sizes"]):
            if out_rows(row, (nx, ny)) > MAX_OUT_ROWS:
                skipped.append("row %d at %dx%d" % (k, nx, ny))
                continue
            out = r.run(nx, ny, r.inputs(nx, ny, k * 7 + s))  # test_row's seed
            assert out.ndim == 2 and len(out) == out_rows(row, (nx, ny)), (k, out.shape)
            parts.append(out)
            kept.append("%dx%d" % (nx, ny))
        data = np.ascontiguousarray(np.concatenate(parts, axis=0), dtype="<f8")
        path = os.path.join(out_dir, "r%03d.npy" % k)
        np.save(path, data)
        total += os.path.getsize(path)
        index.append(row_key(k, row) + "\t" + " ".join(kept))
    with open(os.path.join(out_dir, "index.txt"), "w") as f:
        f.write("\n".join(index) + "\n")
    return total, skipped


# ---------------------------------------------------------------- special values

def read_specials(path=CASES):
    """The specials[] table of conformance_cases.h (special values: NaN, infinities, empty
    reductions, the conventions at 0), as dicts."""
    text = open(path).read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    body = re.search(r"static const struct special specials\[\] = \{(.*?)\n\};", text,
                     re.S).group(1)
    consts = {"INFINITY": np.inf, "NAN": np.nan, "NULL": None}
    out = []
    for m in re.finditer(r"\{\s*((?:\"[^\"]*\"\s*)+),\s*(NULL|\"[^\"]*\"),\s*\"([^\"]*)\",\s*(\w+),"
                         r"\s*\{([^}]*)\},\s*\{([^}]*)\},\s*(\d+)\s*\}", body):
        formula = "".join(re.findall(r'"([^"]*)"', m.group(1)))
        weight = None if m.group(2) == "NULL" else m.group(2).strip('"')

        def nums(t):
            vals = []
            for v in t.split(","):
                v = v.strip()
                neg = v.startswith("-")
                v = v.lstrip("-").strip()
                x = consts[v] if v in consts else float(v)
                vals.append(-x if neg else x)
            return vals
        x, y = nums(m.group(5)), nums(m.group(6))
        x += [0.0] * (3 - len(x))  # as C zero-fills
        y += [0.0] * (5 - len(y))
        out.append({"formula": formula, "weight": weight, "reduction": m.group(3),
                    "scheme": SCHEMES[m.group(4)] if m.group(4) in SCHEMES else m.group(4),
                    "x": x, "y": y, "ny": int(m.group(7))})
    return out


def generate_specials(specials, out_dir=OUT_DIR):
    """specials.npy: for special k and dtype t (0 float32, 1 float64, test_special's order
    2k + t), its 3 output rows, padded with NaN to the widest output; the inputs in
    float32 are the same values (each is exact in float32, or an infinity or NaN)."""
    outs = []
    for sp in specials:
        row = {"formula": sp["formula"], "weight": sp["weight"], "reduction": sp["reduction"],
               "aliases": "X=Vi(1);Y=Vj(1)", "axis": "j"}
        r = Row(row)
        ny = sp["ny"]
        for dtype in (np.float32, np.float64):
            xv = np.array(sp["x"], dtype).astype(np.float64).reshape(3, 1, 1)
            yv = np.array(sp["y"][:ny], dtype).astype(np.float64).reshape(1, ny, 1)
            values = {r.names["X"]: xv, r.names["Y"]: yv}
            outs.append(r.run(3, ny, values))
    width = max(o.shape[1] for o in outs)
    data = np.full((len(outs), 3, width), np.nan)
    for k, o in enumerate(outs):
        data[k, :, :o.shape[1]] = o
    path = os.path.join(out_dir, "specials.npy")
    np.save(path, np.ascontiguousarray(data.reshape(len(outs) * 3, width), dtype="<f8"))
    with open(os.path.join(out_dir, "specials.txt"), "w") as f:
        f.write("# written by tools/conformance_numpy.py: do not edit. specials.npy holds, "
                "for each line (special k, float32 then float64), 3 output rows of %d "
                "columns\n" % width)
        for k, sp in enumerate(specials):
            f.write("%02d\t%s\t%s\t%s\t%s\n" % (k, sp["formula"], sp["weight"] or "",
                                                sp["reduction"], sp["scheme"]))
    return os.path.getsize(path)


# ---------------------------------------------------------------- golden cases

def check_golden():
    """This evaluator on the golden cases (numpy-computed elsewhere, FORMULAS.md):
    the conventions it shares with them (layouts, values at 0) checked before use."""
    bad = 0
    for line in open(os.path.join(GOLDEN, "cases.txt")):
        if line.startswith("#") or not line.strip():
            continue
        name, formula, weight, aliases, red, axis = line.rstrip("\n").split("\t")[:6]
        if re.search(r"\b(Grad|Diff|Laplacian|Divergence)\(", formula):
            continue  # derivatives: not this evaluator's business
        al = aliases.split()
        row = {"formula": formula, "weight": weight or None, "reduction": red,
               "aliases": ";".join(al), "axis": axis}
        r = Row(row)
        values, nx, ny = {}, 0, 0
        for a in al:
            nm = a.split("=")[0]
            arr = np.load(os.path.join(GOLDEN, name, nm + ".npy")).astype(np.float64)
            cat, dim = r.args[r.names[nm]]
            if cat == 0:
                nx = arr.shape[0]
            elif cat == 1:
                ny = arr.shape[0]
            values[r.names[nm]] = arr.reshape((-1, 1, dim) if cat == 0 else
                                              (1, -1, dim) if cat == 1 else (1, 1, dim))
        want = np.load(os.path.join(GOLDEN, name, "expected.npy"))
        got = r.run(nx, ny, values).reshape(want.shape)
        ok = np.allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
        print("golden %-20s %s" % (name, "ok" if ok else "DIFFERS"))
        bad += not ok
    return bad


def main(argv):
    if "--golden" in argv:
        if check_golden():
            return 1
    rows = read_table()
    total, skipped = generate(rows)
    total += generate_specials(read_specials())
    print("%d rows, %.2f MB in %s; not stored (more than %d output rows): %d sizes, %s"
          % (len(rows), total / 1e6, os.path.relpath(OUT_DIR, ROOT), MAX_OUT_ROWS,
             len(skipped), ", ".join(skipped)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
