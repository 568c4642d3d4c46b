"""Bounded fuzzing: random and mutated .dln text (and random --set overrides) must either compile or fail with
clean DlcErrors that render — never another exception."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings, strategies as st

from dlc import ir
from dlc.lang.compiler import compile_source
from dlc.errors import DlcError

from conftest import GRAPHS as GRAPHS_DIR

GRAPHS = sorted(GRAPHS_DIR.glob("*.dln"))
EXAMPLES = [p.read_text(encoding="utf-8") for p in GRAPHS]
DLN2 = next(p for p in GRAPHS if p.stem == "dln2").read_text(encoding="utf-8")
TOKENS = ["input", "layer", "output", "model", "network", "data", "fit", "backward", "x", "h", "y", "(", ")",
          "{", "}", "[", "]", ",", "=", ":", "|", '"', '"""', "#", "\n", " ", "file", "true", "false", "choice",
          "text", "number", "template", "prompt", "posterior", "prior", "classify", "residual", "1", "-2.5",
          "\\", "{{", "}}", "{%", "%}", "é", "\t", "max_tokens", "iters", "'", "@", "0"]

SETTINGS = settings(max_examples=int(os.environ.get("DLC_FUZZ_EXAMPLES", "250")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_clean(text: str, overrides: dict[str, str] | None = None) -> None:
    try:
        g = compile_source(text, "fuzz.dln", overrides)
    except DlcError as e:
        rendered = e.render()
        assert "error[" in rendered and "Traceback" not in rendered
        assert e.code.startswith("E") and len(e.code) == 4
        return
    assert isinstance(g, ir.Graph) and g.output in g.layers


@given(st.lists(st.sampled_from(TOKENS), max_size=60).map("".join))
@SETTINGS
def test_random_token_soup(text: str) -> None:
    check_clean(text)


@given(st.text(max_size=200))
@SETTINGS
def test_random_unicode(text: str) -> None:
    check_clean(text)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(EXAMPLES))
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        j = draw(st.integers(i, min(len(text), i + 12)))
        op = draw(st.sampled_from(["delete", "insert", "replace", "duplicate"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif op == "replace":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[j:]
        else:
            text = text[:j] + text[i:j] + text[j:]
    return text


@given(mutated())
@SETTINGS
def test_mutated_examples(text: str) -> None:
    check_clean(text)


KEYS = ["fit.iters", "fit.train", "fit.output_scoring", "data.task", "data.fields", "output.metric",
        "layer.h.prompt", "layer.y.output", "layer.h.backward.posterior", "model.default.model", "model.x.model",
        "layer.zz.prompt", "fit", "layer.h.backward.nope", "output.target"]


@given(st.dictionaries(st.sampled_from(KEYS), st.lists(st.sampled_from(TOKENS), max_size=8).map("".join),
                       max_size=4))
@settings(max_examples=150, deadline=None)
def test_random_overrides(overrides: dict[str, str]) -> None:
    check_clean(DLN2, overrides)
