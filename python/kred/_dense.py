"""kernel_product's backend="pytorch": the kernel matrix formed densely with torch
operations, for small data and as an independent check of kred's own translation
(lib/kernel_product.c). It reads the kernel text itself and forms log K by the same rules
as kred (the atoms' own logs, a product's log is the sum of the logs, log f**k = k log f
for a non-negative f), so that the log modes agree where exp(-D) underflows."""

import re

import torch

_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_]\w*)|(\*\*|[-+*(),]))")


def _tokens(text):
    pos, out = 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"kernel {text!r}: unexpected {text[pos:]!r}")
        if m.group(1):
            out.append(("int", int(m.group(1))))
        elif m.group(2):
            out.append(("name", m.group(2)))
        else:
            out.append(("op", m.group(3)))
        pos = m.end()
    return out


class _Parser:
    """The kernel grammar (already checked by kred): sums of products of unary minus
    and powers of integers, atoms name(a,b) and parenthesised kernels."""

    def __init__(self, text):
        self.toks, self.pos, self.n_atoms = _tokens(text), 0, 0

    def peek(self, value=None):
        t = self.toks[self.pos] if self.pos < len(self.toks) else (None, None)
        return t if value is None else t == ("op", value)

    def take(self):
        self.pos += 1
        return self.toks[self.pos - 1]

    def sum(self):
        node = self.product()
        while self.peek("+") or self.peek("-"):
            op = self.take()[1]
            node = ("add" if op == "+" else "sub", node, self.product())
        return node

    def product(self):
        node = self.unary()
        while self.peek("*"):
            self.take()
            node = ("mul", node, self.unary())
        return node

    def unary(self):
        if self.peek("-"):
            self.take()
            return ("neg", self.unary())
        return self.power()

    def power(self):
        node = self.primary()
        if self.peek("**"):
            self.take()
            sign = -1 if self.peek("-") else 1
            if sign < 0:
                self.take()
            node = ("pow", node, sign * self.take()[1])
        return node

    def primary(self):
        kind, value = self.take()
        if kind == "int":
            return ("int", value)
        if kind == "op" and value == "(":
            node = self.sum()
            self.take()  # ")"
            return node
        self.take()  # "("
        a = self.take()[1]
        self.take()  # ","
        b = self.take()[1]
        self.take()  # ")"
        self.n_atoms += 1
        return ("atom", value, self.n_atoms - 1, a, b)


def _nonneg(n):
    kind = n[0]
    if kind == "atom":
        return n[1] != "linear"
    if kind == "int":
        return True
    if kind in ("add", "mul"):
        return _nonneg(n[1]) and _nonneg(n[2])
    if kind == "pow":
        return n[2] % 2 == 0 or _nonneg(n[1])
    return False


def _core_quantity(kind, g, x, y):
    """<x-y, G (x-y)> for every (i, j) (or <x,y> for linear), an (N, M) tensor."""
    if kind == 0:
        return x @ y.T
    diff = x[:, None, :] - y[None, :, :]
    d = x.shape[1]
    if kind == 1:
        return g[0] * (diff ** 2).sum(-1)
    if kind == 2:
        return (diff ** 2 * g).sum(-1)
    if kind == 3:
        return torch.einsum("nmd,de,nme->nm", diff, g.reshape(d, d), diff)
    if kind == 4:
        return g[:, 0][None, :] * (diff ** 2).sum(-1)
    if kind == 5:
        return (diff ** 2 * g[None, :, :]).sum(-1)
    return torch.einsum("nmd,mde,nme->nm", diff, g.reshape(-1, d, d), diff)


def kernel_product(kernel, mode, gammas, xs, ys, extras):
    """The dense kernel_product: gammas holds (shape, tensor) per atom, xs and ys the
    points per pair, extras the mode's inputs by letter (already (n, 1) or (n, E))."""
    parser = _Parser(kernel.name)
    tree = parser.sum()
    letters = {}
    for p, (a, b) in enumerate(kernel.pairs):
        letters[a] = letters[b] = p
    cores = {}

    def core(n):
        index = n[2]
        if index not in cores:
            kind, g = gammas[index]
            p = letters[n[3]]
            cores[index] = _core_quantity(kind, g, xs[p], ys[p])
        return cores[index]

    def value(n):
        kind = n[0]
        if kind == "int":
            return torch.tensor(float(n[1]), dtype=xs[0].dtype, device=xs[0].device)
        if kind == "atom":
            d, name = core(n), n[1]
            return {"linear": lambda: d, "gaussian": lambda: torch.exp(-d),
                    "laplacian": lambda: torch.exp(-torch.sqrt(d)),
                    "cauchy": lambda: 1 / (1 + d),
                    "inverse_multiquadric": lambda: torch.rsqrt(1 + d),
                    "distance": lambda: torch.sqrt(d)}[name]()
        if kind == "add":
            return value(n[1]) + value(n[2])
        if kind == "sub":
            return value(n[1]) - value(n[2])
        if kind == "mul":
            return value(n[1]) * value(n[2])
        if kind == "neg":
            return -value(n[1])
        return value(n[1]) ** n[2]

    def log(n):
        kind = n[0]
        if kind == "atom":
            d, name = core(n), n[1]
            return {"linear": lambda: torch.log(d), "gaussian": lambda: -d,
                    "laplacian": lambda: -torch.sqrt(d),
                    "cauchy": lambda: -torch.log(1 + d),
                    "inverse_multiquadric": lambda: -torch.log(1 + d) / 2,
                    "distance": lambda: torch.log(d) / 2}[name]()
        if kind == "mul":
            return log(n[1]) + log(n[2])
        if kind == "pow" and _nonneg(n[1]):
            return n[2] * log(n[1])
        return torch.log(value(n))

    b, u, v, c = (extras.get(k) for k in "BUVC")
    h, s, t = (extras.get(k) for k in "HST")
    if mode == "sum":
        return value(tree) @ b
    logk = log(tree)
    if mode == "lse":
        return torch.logsumexp(logk + b.T, dim=1, keepdim=True)
    if mode == "log_scaled":
        return torch.exp(logk + u + v.T) @ b
    if mode == "log_scaled_lse":
        return torch.logsumexp(logk + u + v.T + b.T, dim=1, keepdim=True)
    if mode == "log_scaled_barycenter":
        p = torch.exp(logk + u + v.T)
        return p @ b - p.sum(1, keepdim=True) * c
    if mode == "lse_mult_i":
        return torch.logsumexp(h * logk + b.T, dim=1, keepdim=True)
    plan = torch.exp(logk + s + t.T)
    if mode == "sinkhorn_cost":
        return (-logk * plan).sum(1, keepdim=True)
    return ((u + v.T - 1) * plan).sum(1, keepdim=True)
