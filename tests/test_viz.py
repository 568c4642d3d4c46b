"""Views of a graph: text summary, DOT, Mermaid, and Graphviz images when `dot` is installed."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dlc.report import viz
from dlc.lang.compiler import compile_file
from dlc.errors import DlcUsageError

from conftest import GRAPHS


@pytest.fixture(scope="module")
def branched():  # type: ignore[no-untyped-def]
    return compile_file(GRAPHS / "branched.dln")


def test_text_summary(branched) -> None:  # type: ignore[no-untyped-def]
    text = viz.to_text(branched)
    assert text.splitlines()[0].startswith("network branched")
    assert "y(x, steps, brief)  <- output" in text
    assert "template  residual (builtin)" in text
    assert "trainable prompts: 3 (brief, steps, y)" in text
    assert "output: y   target field: label   metric: accuracy" in text
    assert "fit: iters=6" in text


def test_dot(branched) -> None:  # type: ignore[no-untyped-def]
    dot = viz.to_dot(branched)
    assert dot.startswith('digraph "branched" {') and dot.rstrip().endswith("}")
    for edge in ('"x" -> "steps"', '"x" -> "brief"', '"steps" -> "y"', '"brief" -> "y"', '"x" -> "y"'):
        assert edge in dot
    assert "peripheries=2" in dot and dot.count("shape=ellipse") == 1


def test_mermaid(branched) -> None:  # type: ignore[no-untyped-def]
    mm = viz.to_mermaid(branched)
    assert mm.startswith("flowchart LR")
    assert "n_steps --> n_y" in mm and 'n_y[["y<br/>residual' in mm


def test_images(branched, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("dot") is None:
        with pytest.raises(DlcUsageError) as ei:
            viz.render_image(branched, "svg", tmp_path / "g.svg")
        assert ei.value.code == "E106" and "--format dot" in (ei.value.hint or "")
        return
    out = viz.render_image(branched, "svg", tmp_path / "g.svg")
    assert out.read_text(encoding="utf-8").lstrip().startswith(("<?xml", "<svg"))
    png = viz.render_image(branched, "png", tmp_path / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_text_summary_writes_settings_as_dln_not_python() -> None:
    """Issue 17 Using-it 7: list and mapping settings are shown as the .dln writes them, not as Python tuples."""
    g = compile_file(GRAPHS / "dln1.dln", {"fit.train": "[y]", "data.fields": '{x: "text"}',
                                          "fit.do_first_eval": "false"})
    text = viz.to_text(g)
    assert "train=[y]" in text and 'fields={x: "text"}' in text and "do_first_eval=false" in text
    assert "('" not in text and "False" not in text
