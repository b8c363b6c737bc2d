"""The README's Python example runs as printed (its last line needs a GPU: elsewhere it
is the RuntimeError the README announces)."""

import os
import re

import pytest
import torch

from conftest import has_gpu

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def test_readme_example():
    text = open(README).read()
    m = re.search(r"<!-- readme-python-example: begin -->\n```python\n(.*?)```\n"
                  r"<!-- readme-python-example: end -->", text, re.S)
    assert m, "README.md has no readme-python-example block"
    code = m.group(1)
    assert "from kred.torch import generic_sum" in code
    scope = {}
    if has_gpu():
        exec(compile(code, "README.md", "exec"), scope)
    else:
        with pytest.raises(RuntimeError, match="GPU_2D.*no GPU"):
            exec(compile(code, "README.md", "exec"), scope)
    a, x, y, b, sigma = (scope[k] for k in ("a", "x", "y", "b", "sigma"))
    want = torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1) / sigma ** 2) @ b
    torch.testing.assert_close(a, want, rtol=1e-5, atol=1e-4)
    a.sum().backward()
    assert all(t.grad is not None for t in (x, y, b, sigma))
