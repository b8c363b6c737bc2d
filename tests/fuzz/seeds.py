#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz corpora (tests/fuzz/corpus/*/seed-*) from the spec
and the test suites: the formulas, aliases and reductions of tests/test_parse.c, the
conformance and derivative tables, the golden cases, one row per operation of
docs/FORMULAS.md; .npy files as numpy writes them and damaged ones; kernel texts of
tests/test_kernel_product.c and the header; command lines of the README and tests/test_cli.c.

Run it from anywhere (python3 tests/fuzz/seeds.py): it replaces the seed-* files and
leaves the rest of each corpus (inputs libFuzzer found, regress-* crash inputs) alone.
"""
import hashlib
import os
import re
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAX_LEN = 4096  # the -max_len of the fuzz runs: longer seeds would be cut


def read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def c_strings(text):
    """The C string literals of text (adjacent literals joined), unescaped."""
    out = []
    for m in re.finditer(r'"((?:[^"\\\n]|\\.)*)"', text):
        out.append(bytes(m.group(1), "utf-8").decode("unicode_escape"))
    return out


def formula_input(reduction, formula, aliases, weight=None, axis=None, dtype=None, scheme=None):
    lines = [reduction, formula]
    if weight:
        lines.append("weight: " + weight)
    if axis == "i":
        lines.append("axis: i")
    if dtype == "float32":
        lines.append("dtype: float32")
    if scheme:
        lines.append("sum: " + scheme)
    lines += aliases
    return "\n".join(lines) + "\n"


def formula_seeds():
    seeds = []
    parse = read("tests", "test_parse.c")
    test_aliases = c_strings(parse[parse.index("aliases[] = {"):parse.index("};")])
    # valid[] and invalid[] of test_parse.c: the first string of each row
    for table in ("valid[] = {", "invalid[] = {"):
        body = parse[parse.index(table):]
        body = body[:body.index("\n};")]
        for m in re.finditer(r'^\t\{ ("(?:[^"\\]|\\.)*")', body, re.M):
            seeds.append(("parse", formula_input("Sum", c_strings(m.group(1))[0],
                                                 test_aliases)))
    # the alias table: each alias, with a formula that uses X
    for line in parse.splitlines():
        m = re.match(r'\t\{ ("(?:[^"\\]|\\.)*"), KRED_\w+, -?\d+, \d+, \d+, \d+ \}', line)
        if m:
            seeds.append(("alias", formula_input("Sum", "X", [c_strings(m.group(1))[0]])))
    # the reduction table
    for line in parse.splitlines():
        m = re.match(r'\t\{ ("(?:[^"\\]|\\.)*"), KRED_\w+, (KRED__RED_\w+|0), \d+, \d+ \}', line)
        if m:
            seeds.append(("reduction", formula_input(c_strings(m.group(1))[0], "X - Y",
                                                     ["X = Vi(3)", "Y = Vj(3)"],
                                                     weight="Y")))
    # the conformance table
    conf = read("tests", "conformance_cases.h")
    macros = dict(re.findall(r'^#define (\w+) "([^"]*)"', conf, re.M))
    row = re.compile(r'^\t\{ ("(?:[^"\\]|\\.)*"), (NULL|"(?:[^"\\]|\\.)*"), '
                     r'("(?:[^"\\]|\\.)*"), (\w+|"[^"]*"), (J|I), (F32|F64), (\w+),', re.M)
    for m in row.finditer(conf):
        formula = c_strings(m.group(1))[0]
        weight = None if m.group(2) == "NULL" else c_strings(m.group(2))[0]
        reduction = c_strings(m.group(3))[0]
        al = m.group(4)
        al = macros.get(al, "") if not al.startswith('"') else c_strings(al)[0]
        scheme = {"DIRECT": "direct", "BLOCK": "block", "KAHAN": "kahan"}.get(m.group(7))
        seeds.append(("conformance", formula_input(
            reduction, formula, [a for a in al.split(";") if a], weight,
            "i" if m.group(5) == "I" else None,
            "float32" if m.group(6) == "F32" else None, scheme)))
    # the derivative suite: each operation row, and the reductions' gradients
    diff = read("tests", "diff_cases.h")
    for m in re.finditer(r'^\t\{ ("(?:[^"\\]|\\.)*"),\s*("[^"]*"), "[^"]*"', diff, re.M):
        seeds.append(("diff", formula_input("Sum", c_strings(m.group(1))[0],
                                            c_strings(m.group(2))[0].split())))
    fdefs = dict(re.findall(r'^#define (\w+) "([^"]*)"', diff, re.M))
    red_aliases = re.search(r'red_aliases = "([^"]*)"', diff).group(1).split()
    for m in re.finditer(r'^\t\{ "(\w+(?:\(\d+\))?)", (\w+), (NULL|\w+), KRED_REDUCE_(J|I) \}',
                         diff, re.M):
        seeds.append(("diff-red", formula_input(
            m.group(1), fdefs[m.group(2)], red_aliases,
            None if m.group(3) == "NULL" else fdefs[m.group(3)],
            "i" if m.group(4) == "I" else None)))
    # the golden cases
    for line in read("tests", "data", "golden", "cases.txt").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        f = line.split("\t")
        seeds.append(("golden", formula_input(f[4], f[1], f[3].split(), f[2] or None,
                                              "i" if f[5] == "i" else None)))
    # every operation of docs/FORMULAS.md, and the syntax around it
    xy = ["X = Vi(3)", "Y = Vj(3)", "G = Pm(1)", "B = Vj(2)", "M = Pm(9)", "S = Vi(1)"]
    ops = [
        "Exp(-G*SqDist(X,Y))*B", "-G*SqDist(X,Y)", "Minus(X)+Inv(Y)", "Log(Abs(X)+1)",
        "XLogX(X)", "Sin(X)+SinXDivX(Y)", "Asin(X/4)+Acos(Y/4)", "Cos(X)*Atan(Y)",
        "Atan2(X,Y)", "Sqrt(Abs(X))+Rsqrt(Y)", "Square(X)+Pow(Y,-3)", "Powf(Abs(X),G)",
        "Abs(X)+Sign(Y)+Step(X-Y)+ReLU(X)", "Clamp(X,G,Y)+ClampInt(Y,-1,2)",
        "IfElse(X-Y,X,Y)", "Mod(X,G,Y)", "Round(X*Y,2)+Floor(X)", "Add(X,Y)",
        "Subtract(X,Y)", "Mult(X,Y)", "Divide(X,Y)", "Scal(G,X)", "Scalprod(X,Y)",
        "(X|Y)", "(X-Y | X+Y)", "Sum(X)+Max(Y)+Min(X)", "ArgMax(X)+ArgMin(Y)",
        "SqNorm2(X)+Norm2(Y)", "Normalize(X-Y)", "WeightedSqNorm(G,X)",
        "WeightedSqNorm(X,Y)", "WeightedSqNorm(M,X)", "WeightedSqDist(M,X,Y)",
        "IntCst(3)*X+IntInv(4)", "Zero(3)+X", "Elem(X,2)", "ElemT(G,3,1)",
        "Extract(X,1,2)", "ExtractT(B,1,3)", "Concat(X,B)", "OneHot(G,4)",
        "MatVecMult(M,X)", "VecMatMult(X,M)", "TensorProd(X,B)", "Kron(X,B,3,2)",
        "TensorDot(M,X,Ind(3,3),Ind(3),Ind(1),Ind(0))", "Grad(Exp(-SqDist(X,Y)),X,S)",
        "Grad(SqNorm2(X-Y),X,G)", "Diff(Exp(-SqDist(X,Y)),X,X)",
        "GradFromPos(Exp(-SqDist(X,Y)),1,G)", "GradMatrix(Exp(-SqDist(X,Y)),X)",
        "Divergence(X*Exp(-SqDist(X,Y)),X)", "Laplacian(Exp(-SqDist(X,Y)),X)",
        "Grad(Grad(Exp(-G*SqDist(X,Y)),X,S),Y,Y)", "X == Y", "X != Y", "X < Y", "X > Y",
        "X <= Y", "X >= Y", "Equal(X,Y)+NotEqual(X,Y)+Less(X,Y)", "X ** 2", "X ^ 3",
        "X ** -1", "X ** 0.5", "-X ** 2", "X ** G", "2 ** 3 ** 2", "1e-3 * .5 + 2.5e2",
        "Vi(0,3) + Vj(1,3)", "Var(0,3,0) * Var(2,1,2)", "Pm(2,1) * Vx(0,3) - Vy(1,3)",
        "X+X+X+X+X+X+X+X+X+X", "((((((((((X))))))))))", "-(-(-(-X)))",
    ]
    for f in ops:
        seeds.append(("spec", formula_input("Sum", f, xy)))
    reductions = ["Sum", "LogSumExp", "LogSumExpWeight", "SumSoftMaxWeight",
                  "Max_SumShiftExp", "Max_SumShiftExpWeight", "Min", "Max", "ArgMin",
                  "ArgMax", "Min_ArgMin", "Max_ArgMax", "KMin(2)", "ArgKMin(3)",
                  "KMin_ArgKMin(2)"]
    for k, red in enumerate(reductions):
        for axis in (None, "i"):
            seeds.append(("spec-red", formula_input(
                red, "-G*SqDist(X,Y)", xy, "B" if "Weight" in red else None, axis,
                "float32" if k % 2 else None, ["direct", "block", "kahan"][k % 3])))
    # limits: deep nesting, long chains, large dimensions and K
    seeds.append(("limits", formula_input("Sum", "(" * 1000 + "X" + ")" * 1000, xy)))
    seeds.append(("limits", formula_input("Sum", "Exp(" * 500 + "X" + ")" * 500, xy)))
    seeds.append(("limits", formula_input("Sum", "+".join(["X"] * 1500), xy)))
    seeds.append(("limits", formula_input("Sum", "-" * 2000 + "X", xy)))
    seeds.append(("limits", formula_input("KMin(1024)", "X", ["X = Vi(65536)"])))
    seeds.append(("limits", formula_input("Sum", "Zero(65536)+X", ["X = Vi(1)"])))
    seeds.append(("limits", formula_input("Sum", "X", ["X = Vi(65537)"])))
    seeds.append(("limits", formula_input("ArgKMin(1025)", "X", ["X = Vi(1)"])))
    return seeds


def npy_file(header, data=b"", major=1, pad=True):
    """A .npy file: magic, version, header length, header (padded to 64 as numpy does
    when pad), data."""
    h = header.encode("latin-1") if isinstance(header, str) else header
    pre = 10 if major == 1 else 12
    if pad:
        total = (pre + len(h) + 1 + 63) // 64 * 64
        h = h + b" " * (total - pre - len(h) - 1) + b"\n"
    n = len(h)
    size = struct.pack("<H", n) if major == 1 else struct.pack("<I", n)
    return b"\x93NUMPY" + bytes([major, 0]) + size + h + data


def npy_header(descr, shape, fortran=False):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    return "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (
        descr, "True" if fortran else "False", dims)


def npy_seeds():
    seeds = []
    def values(fmt, n):
        return b"".join(struct.pack(fmt, v) for v in
                        [0.5, -1.0, 0.0, 2.0, float("inf"), float("nan"), 1e-300, -3.0][:n]
                        * (n // 8 + 1))[:n * struct.calcsize(fmt)]
    for descr, fmt in (("<f8", "<d"), ("<f4", "<f")):
        for shape in ((), (0,), (1,), (3,), (2, 3), (3, 1), (0, 5), (5, 0), (1, 1, 1, 1, 1, 1, 1, 1),
                      (2, 1, 2)):
            n = 1
            for d in shape:
                n *= d
            data = values(fmt, n)
            seeds.append(("valid", npy_file(npy_header(descr, shape), data)))
            seeds.append(("valid-v2", npy_file(npy_header(descr, shape), data, major=2)))
        seeds.append(("valid-v3", npy_file(npy_header(descr, (2,)), values(fmt, 2), major=3)))
    d8 = values("<d", 2)
    # test_cli.c: keys in another order, double quotes, spacing, no trailing comma
    seeds.append(("cli", npy_file('{ "shape" : (4 , 2) ,\'fortran_order\':False, '
                                  '\'descr\':\'<f4\' }  \n', bytes(32), major=2, pad=False)))
    # and its rejected files
    bad = [
        (npy_header("<f8", (2, 2), True), bytes(32)),
        (npy_header("<i8", (2,)), bytes(16)),
        (npy_header(">f8", (2,)), bytes(16)),
        (npy_header("|f4", (2,)), bytes(8)),
        (npy_header("=f8", (2,)), bytes(16)),
        (npy_header("f8", (2,)), bytes(16)),
        (npy_header("<f8", (3,)), bytes(16)),
        (npy_header("<f8", (1,)), bytes(16)),
        (npy_header("<f8", (4294967296, 4294967296)), b""),
        (npy_header("<f8", (9223372036854775807,)), b""),
        (npy_header("<f8", (99999999999999999999,)), b""),
        (npy_header("<f8", (1000000000000,)), d8),
        ("{'descr': '<f8', 'shape': (2,), }", bytes(16)),
        ("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'x': 1}", bytes(16)),
        ("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (2,)}", bytes(16)),
        ("{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (2,)}", bytes(16)),
        ("{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 1L), }", bytes(16)),
        ("{'descr': '<f8', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", bytes(8)),
        ("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", bytes(8)),
        ("{'descr': '<f8\\n', 'fortran_order': False, 'shape': (1,), }", bytes(8)),
        ("{'descr': '<f8', 'fortran_order': Maybe, 'shape': (1,), }", bytes(8)),
        ("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), } junk", bytes(8)),
        ("{'descr': '<f8', 'fortran_order': False, 'shape': (1,)", bytes(8)),
        ("{'descr': '<f8', 'fortran_order': False, 'shape': (,), }", bytes(8)),
        ("{}", b""),
        ("", b""),
    ]
    for header, data in bad:
        seeds.append(("bad", npy_file(header, data)))
    seeds.append(("bad", npy_file(npy_header("<f8", (2,)), bytes(16), pad=False)))
    seeds.append(("bad", npy_file(npy_header("<f8", (2,)), bytes(16), major=9)))
    seeds.append(("bad", b"\x93NUMPY\x01\x00\xff\xff"))
    seeds.append(("bad", b"\x93NUMPY\x02\x00\xff\xff\xff\x7f"))
    seeds.append(("bad", b"\x93NUMPY\x02\x00"))
    seeds.append(("bad", b"\x93NUMP"))
    seeds.append(("bad", b"not a npy file at all"))
    seeds.append(("bad", b""))
    return seeds


def kernel_seeds():
    seeds = []
    tkp = read("tests", "test_kernel_product.c")
    kernels = set()
    for text in c_strings(tkp):
        if re.search(r"\w\(\w*'?,?\s*\w*\)", text) or text.strip() in ("", "1 + 2"):
            kernels.add(text)
    kernels.update(re.findall(r'#define ISSUE "([^"]*)"', tkp))
    header = read("include", "kred.h")
    kernels.update(re.findall(r'"([a-z_]+\([a-z],[a-z]\)[^"]*)"', header))
    for k in sorted(kernels):
        seeds.append(("tests", k + "\n"))
    modes = ["sum", "lse", "log_scaled", "log_scaled_lse", "log_scaled_barycenter",
             "lse_mult_i", "sinkhorn_cost", "sinkhorn_primal"]
    shapes = ["scalar", "diagonal", "full", "scalar_j", "diagonal_j", "full_j"]
    for i, mode in enumerate(modes):
        seeds.append(("modes", "gaussian(x,y) * (1 + cauchy(u,v)**2)\nmode: %s\ndims: %d 2\n"
                      "params: %s %s\ne: %d\n%s" % (mode, i % 3 + 1, shapes[i % 6],
                                                    shapes[(i + 1) % 6], 1 if i % 2 else 2,
                                                    "dtype: float32\n" if i % 2 else "")))
    for atom in ("linear", "gaussian", "laplacian", "cauchy", "inverse_multiquadric",
                 "distance"):
        seeds.append(("atoms", "%s(x,y)\n" % atom))
        seeds.append(("atoms", "-%s(a,b)**-3 * 7 - 2\nmode: sum\ndims: 4\n" % atom))
    seeds.append(("limits", "(" * 300 + "gaussian(x,y)" + ")" * 300 + "\n"))
    seeds.append(("limits", "-" * 300 + "gaussian(x,y)\n"))
    seeds.append(("limits", "+".join(["gaussian(x,y)"] * 250) + "\n"))
    seeds.append(("limits", "gaussian(x,y)**1000 * 1000000000\n"))
    seeds.append(("limits", "gaussian(x,y)\ndims: 65536\n"))
    seeds.append(("limits", "gaussian(x,y)\ndims: 257\nparams: full\n"))
    seeds.append(("limits", " * ".join("cauchy(%s,%s)" % (chr(97 + 2 * i), chr(98 + 2 * i))
                                       for i in range(13)) + "\n"))
    return seeds


def cli_seeds():
    seeds = []
    tc = read("tests", "test_cli.c")
    macros = {}
    for name, body in re.findall(r'^#define (\w+) ("[^\n]*)$', tc, re.M):
        macros[name] = c_strings(body)
    # every argv table of test_cli.c that names a command
    for m in re.finditer(r'\{ ("(?:run|grad|source|compile|devices|help|--version|version|'
                         r'bench|kernel-product|frobnicate)"[^{}]*)\}', tc):
        words = []
        for tok in re.findall(r'"(?:[^"\\]|\\.)*"|\b[A-Z][A-Z0-9]+\b|NULL', m.group(1)):
            if tok == "NULL":
                break
            if tok.startswith('"'):
                words += c_strings(tok)
            else:
                words += macros.get(tok, [])
        seeds.append(("tests", "\n".join(words) + "\n"))
    # the README's command lines, and every option once
    g = ["-a", "X=Vi(3)", "-a", "Y=Vj(3)", "-a", "B=Vj(2)", "-a", "G=Pm(1)"]
    ins = ["-i", "X=x.npy", "-i", "Y=y.npy", "-i", "B=b.npy", "-i", "G=g.npy"]
    lines = [
        ["run", "Exp(-G*SqDist(X,Y))*B"] + g + ["-r", "Sum"] + ins + ["-o", "out.npy"],
        ["run", "Exp(-G*SqDist(X,Y))*B"] + g + ["-w", "B", "-r", "SumSoftMaxWeight", "--axis",
                                                "i", "-b", "opencl:all", "--dtype", "float32",
                                                "--sum-scheme", "kahan", "--scheme", "2d",
                                                "--device-memory", "64M", "--time"] + ins +
        ["-o", "out.npy"],
        ["grad", "X", "Exp(-G*SqDist(X,Y))*B"] + g + ["-r", "Sum"] + ins +
        ["-i", "GRAD_OUT=e.npy", "-o", "gx.npy"],
        ["grad", "#0", "--", "-G"] + ["-a", "G=Pm(1)", "-r", "Sum", "--nx", "2", "--ny", "3",
                                      "-o", "g.npy"],
        ["source", "Exp(-G*SqDist(X,Y))*B"] + g + ["-r", "LogSumExp", "-b", "cuda"],
        ["compile", "X-Y", "-a", "X=Vi(1)", "-a", "Y=Vj(1)", "-r", "Min", "--arch", "sm_80",
         "-o", "k.ptx"],
        ["run", "X", "--axis=i", "--dtype=float64", "--reduction=Sum", "--alias=X=Vi(1)",
         "--input=X=x.npy", "--output=o.npy", "--nx=3", "--ny=0", "--device-memory=1G"],
        ["run", "-G*X", "-a", "G=Pm(1)", "-a", "X=Vi(1)", "-r", "Sum", "-o", "o.npy",
         "--device-memory", "9223372036854775807"],
        ["run", "X", "-h"], ["devices"], ["devices", "extra"], ["help"], ["--version"],
        ["version"], ["-h"], ["--help"], [], ["frobnicate"],
    ]
    for words in lines:
        seeds.append(("spec", "\n".join(words) + "\n"))
    return seeds


def dict_entry(word):
    """A quoted libFuzzer dictionary token: printable ASCII as it is, other bytes (of the
    word's Latin-1 encoding) as \\xNN."""
    out = []
    for ch in word:
        c = ord(ch)
        out.append(ch if 32 <= c < 127 and ch not in '"\\' else "\\x%02x" % c)
    return '"' + "".join(out) + '"'


def write_dict(name, words):
    """A libFuzzer dictionary (tests/fuzz/NAME.dict): one quoted token a line."""
    seen = []
    for w in words:
        if w not in seen:
            seen.append(w)
    with open(os.path.join(HERE, name + ".dict"), "w", encoding="utf-8") as f:
        f.write("# Written by seeds.py: the tokens of the %s harness's inputs.\n" % name)
        for w in seen:
            f.write(dict_entry(w) + "\n")


def formula_dict():
    internal = read("lib", "internal.h")
    ops = re.findall(r'X\((\w+), "(\w+)", "(\w*)"', internal)
    words = [name + "(" for e, name, sig in ops if sig and e != "ENUM"]
    words += ["Vi(", "Vj(", "Vx(", "Vy(", "Pm(", "Var(", "Ind(", "IntCst(", "IntInv("]
    words += [name for e, name, _ in re.findall(r'X\((\w+), "(\w+)", (KRED__RED_\w+[^)]*|0)\)',
                                                   internal) if e != "ENUM"]
    words += ["KMin(", "ArgKMin(", "KMin_ArgKMin("]
    words += ["**", "^", "==", "!=", "<=", ">=", "<", ">", "(", ")", ",", "|", "+", "-", "*",
              "/", "=", "\n", "weight: ", "axis: i", "dtype: float32", "sum: direct",
              "sum: block", "sum: kahan", "X = Vi(3)", "Y = Vj(3)", "G = Pm(1)", "X", "Y",
              "G", "1e308", "1e-308", "65536", "65537", "1024", "4096", "2147483647",
              "-2147483648", "0.5", "-0.0", "1e999"]
    return words


def write(corpus, seeds):
    folder = os.path.join(HERE, "corpus", corpus)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.startswith("seed-"):
            os.remove(os.path.join(folder, name))
    seen = set()
    n = 0
    for source, data in seeds:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if len(data) > MAX_LEN:
            data = data[:MAX_LEN]
        digest = hashlib.sha1(data).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        with open(os.path.join(folder, "seed-%s-%s" % (source, digest[:12])), "wb") as f:
            f.write(data)
        n += 1
    print("%s: %d seeds" % (corpus, n))


if __name__ == "__main__":
    write("formula", formula_seeds())
    write_dict("formula", formula_dict())
    write("npy", npy_seeds())
    write_dict("npy", ["\x93NUMPY", "{'descr': ", "'fortran_order': ", "'shape': ", "'<f8'",
                       "'<f4'", "'>f8'", "'|f4'", "True", "False", "(", ")", ",", "}", "L",
                       "\n", "9223372036854775807", "4294967296"])
    write("kernel", kernel_seeds())
    write_dict("kernel", ["linear(", "gaussian(", "laplacian(", "cauchy(",
                          "inverse_multiquadric(", "distance(", "x,y)", "u,v)", "**", "**-",
                          " * ", " + ", " - ", "(", ")", "1000000000", "\nmode: ", "sum",
                          "lse", "log_scaled", "log_scaled_lse", "log_scaled_barycenter",
                          "lse_mult_i", "sinkhorn_cost", "sinkhorn_primal", "\ndims: ",
                          "\nparams: ", "scalar ", "diagonal ", "full ", "scalar_j ",
                          "diagonal_j ", "full_j ", "none ", "\ne: ", "\ndtype: float32"])
    write("cli", cli_seeds())
    write_dict("cli", ["run\n", "grad\n", "source\n", "compile\n", "devices\n", "help\n",
                       "\n-a\n", "\n-w\n", "\n-r\n", "\n--axis\n", "\n-i\n", "\n-o\n",
                       "\n-b\n", "\n--dtype\n", "\n--sum-scheme\n", "\n--scheme\n",
                       "\n--arch\n", "\n--nx\n", "\n--ny\n", "\n--time\n",
                       "\n--device-memory\n", "\n-h\n", "\n--\n", "--axis=", "--dtype=",
                       "X=Vi(3)", "X=x.npy", "#0=", "GRAD_OUT=", "Sum", "float32", "float64",
                       "kahan", "2d", "sm_80", "1K", "9223372036854775807", "-1"])
