"""Executes the Python code blocks of every guide in `guides/`.

Blocks of one guide run in order in one namespace, in a temporary working
directory, so each guide is a tested program. A block fenced as
```python no-run``` is shown to readers but not run (TPU-only code).
"""

import pathlib
import re

import pytest

GUIDES = sorted(
    (pathlib.Path(__file__).parents[2] / "guides").glob("*.md")
)
BLOCK = re.compile(r"^```python[ \t]*(?P<info>[^\n]*)\n(?P<code>.*?)^```",
                   re.M | re.S)


def python_blocks(path):
    text = path.read_text(encoding="utf-8")
    return [
        m["code"] for m in BLOCK.finditer(text) if "no-run" not in m["info"]
    ]


def test_guides_exist():
    names = {p.name for p in GUIDES}
    assert {
        "getting_started.md",
        "scaling_laws.md",
        "shape_oracle.md",
        "distributed_and_tpu.md",
        "fine_tuning.md",
    } <= names


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.stem)
def test_guide_runs(guide, tmp_path, monkeypatch):
    blocks = python_blocks(guide)
    assert blocks, f"{guide.name} has no runnable python block"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"guide_{guide.stem}"}
    for index, code in enumerate(blocks):
        compiled = compile(code, f"{guide.name}[block {index}]", "exec")
        exec(compiled, namespace)
