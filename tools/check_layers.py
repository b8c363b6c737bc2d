#!/usr/bin/env python3
"""The layering rules of docs/DESIGN.md, checked on the built library and the tree.

usage: check_layers.py SOURCE_ROOT LIBKRED_A

1. No circle of calls between the files of lib/: from `nm -A` over the static library,
   file A calls file B when A's object leaves a function undefined that B's object
   defines (T). Backends reached through the registry's tables (data, not calls) do not
   count: that is the registry's job.
2. lib/ includes nothing of bench/ or tools/.
3. bench/ includes kred.h, its own headers, system headers and one header of lib/:
   lib/plain.h.
Exits 1, naming each breach, when one does not hold.
"""
import os
import re
import subprocess
import sys


def call_graph(archive):
    out = subprocess.run(["nm", "-A", archive], capture_output=True, text=True, check=True)
    defined, undefined = {}, {}
    for line in out.stdout.splitlines():
        # "libkred.a:lib_diff.c.o:0000000000000000 T kred__grad" or "...:  U memcpy"
        head, _, rest = line.rpartition(":")
        member = head.split(":")[-1]
        fields = rest.split()
        if len(fields) == 3 and fields[1] == "T":
            defined.setdefault(member, set()).add(fields[2])
        elif len(fields) == 2 and fields[0] == "U":
            undefined.setdefault(member, set()).add(fields[1])
    owner = {sym: m for m, syms in defined.items() for sym in syms}
    graph = {m: set() for m in set(defined) | set(undefined)}
    for m, syms in undefined.items():
        for sym in syms:
            o = owner.get(sym)
            if o and o != m:
                graph[m].add(o)
    return graph


def circles(graph):
    """The strongly connected components of more than one file (Tarjan's)."""
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def includes(path):
    with open(path, encoding="utf-8") as f:
        return INCLUDE.findall(f.read())


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    root, archive = sys.argv[1], sys.argv[2]
    bad = []
    graph = call_graph(archive)
    if len(graph) < 20:
        bad.append(f"{archive}: only {len(graph)} objects read: not the library")
    for comp in circles(graph):
        bad.append("lib/ files call each other in a circle: " + ", ".join(comp))

    lib = os.path.join(root, "lib")
    for dirpath, _, files in os.walk(lib):
        for name in files:
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(dirpath, name)
            for inc in includes(path):
                if "bench" in inc or inc.startswith(("../tools", "tools/")):
                    bad.append(f"{os.path.relpath(path, root)} includes {inc}")

    bench = os.path.join(root, "bench")
    own = set(os.listdir(bench))
    for name in sorted(own):
        if not name.endswith((".c", ".h")):
            continue
        for inc in includes(os.path.join(bench, name)):
            if inc in own or inc in ("kred.h", "kred_mpi.h", "plain.h"):
                continue
            bad.append(f"bench/{name} includes {inc} (bench/ takes kred.h and lib/plain.h)")

    for line in bad:
        print("check_layers: " + line)
    edges = sum(len(v) for v in graph.values())
    print(f"check_layers: {len(graph)} objects, {edges} calls between files, "
          f"{len(bad)} breach{'es' if len(bad) != 1 else ''}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
