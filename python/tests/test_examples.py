"""The Python examples (examples/python) run, small, and do what they say: the energy
of the gradient descent goes down, Sinkhorn's marginal error gets below its tolerance,
the block-sparse convolution agrees with the dense one on fewer pairs."""

import os
import re
import subprocess
import sys

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python")


def run(name, *args):
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], check=True,
                         capture_output=True, text=True, timeout=300)
    return out.stdout


def test_gaussian_descent():
    out = run("gaussian_descent.py", "--n", "300", "--steps", "20", "--backend", "CPU")
    energies = [float(e) for e in re.findall(r"energy ([-+.\d]+)", out)]
    assert len(energies) == 6 and energies[-1] < energies[0] - 0.01


def test_sinkhorn():
    out = run("sinkhorn.py", "--n", "300", "--eps", "0.05", "--backend", "CPU")
    errors = [float(e) for e in re.findall(r"marginal error ([-+.e\d]+)", out)]
    assert errors and errors[-1] < 1e-3
    cost = float(re.search(r"OT cost .*: ([\d.]+)", out).group(1))
    assert 0 < cost < 0.5


def test_block_sparse():
    out = run("block_sparse.py", "--n", "4000", "--sigma", "0.05", "--voxel", "0.1",
              "--backend", "CPU")
    share = float(re.search(r"pairs kept, ([\d.]+)% of all", out).group(1))
    assert 0 < share < 20
    m = re.search(r"values ([-+.e\d]+), gradient ([-+.e\d]+)", out)
    # dropped terms weigh exp(-25) = 1.4e-11 at most, relative to the row's largest
    assert float(m.group(1)) < 1e-9 and float(m.group(2)) < 1e-8
