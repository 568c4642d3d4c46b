"""The built-in template library: the variable contract of dlc/ir.py, exact renderings, meta-instruction pools,
and the sandbox (dataset text is only ever a variable)."""
from __future__ import annotations

import pytest

from dlc.lang import templates as T
from dlc.lang.check import FORWARD_VARS, POSTERIOR_VARS, PROMPT_VARS
from dlc.lang.compiler import builtin_template
from dlc.errors import DlcTemplateError

FWD = {"prompt": "Decide.", "input": "Is the sky blue?", "hidden": "It is daytime.", "inputs": ["a", "b"]}


def src(kind: str, name: str) -> str:
    return builtin_template(kind, name).text


def test_library_contents() -> None:
    assert T.builtin_names("forward") == ["brief_analysis", "classify", "named", "residual", "step_by_step"]
    assert T.builtin_names("prompt") == ["proposal"]
    assert T.builtin_names("posterior") == ["edit", "prior", "prior_answer"]


@pytest.mark.parametrize("kind,allowed", [("forward", FORWARD_VARS), ("prompt", PROMPT_VARS),
                                          ("posterior", FORWARD_VARS | POSTERIOR_VARS)])
def test_builtins_read_only_contract_variables(kind: str, allowed: frozenset[str]) -> None:
    for name in T.builtin_names(kind):
        assert T.undeclared(src(kind, name)) <= allowed, name


def test_forward_renderings() -> None:
    assert T.render(src("forward", "classify"), FWD) == "Decide.\n\nIs the sky blue?\n\nAnswer:"
    assert T.render(src("forward", "classify"), {**FWD, "prompt": ""}) == "Is the sky blue?\n\nAnswer:"
    assert T.render(src("forward", "residual"), FWD) == \
        "Decide.\n\nIs the sky blue?\nYour thoughts were:\nIt is daytime.\n\nAnswer:"
    assert T.render(src("forward", "step_by_step"), FWD) == "Is the sky blue?\n\nDecide. Let's think step by step."
    assert T.render(src("forward", "step_by_step"), {**FWD, "prompt": ""}) == \
        "Is the sky blue?\n\nLet's think step by step."
    assert T.render(src("forward", "brief_analysis"), FWD).endswith("Analysis:")


def test_prompt_proposal() -> None:
    s = src("prompt", "proposal")
    pool = T.messages(s)
    assert len(pool) == 4
    assert any("shorter" in m for m in pool) and any("example" in m for m in pool)
    out = T.render(s, {"prompt": "Decide.", "message": pool[0],
                       "successes": [{"input": "2+2", "output": "4", "target": "4"}],
                       "errors": [{"input": "3+3", "output": "7", "target": "6"}]})
    assert "Decide.\n[END]" in out and "Student output: 7" in out and "Expected output: 6" in out
    assert out.endswith("Improved instruction:") and pool[0] in out
    empty = T.render(s, {"prompt": "", "message": "", "successes": [], "errors": []})
    assert "Examples answered correctly:" not in empty and "(empty)" in empty


def test_posteriors() -> None:
    fwd = T.render(src("forward", "step_by_step"), FWD)
    post = {**FWD, "forward": fwd, "output": "It is night.", "target": "yes", "next_prompt": "Answer.",
            "message": "Be brief."}
    assert T.render(src("posterior", "prior"), post) == fwd
    pa = T.render(src("posterior", "prior_answer"), post)
    assert "yes" in pa and pa.endswith(fwd)
    ed = T.render(src("posterior", "edit"), post)
    assert "It is night." in ed and "yes" in ed and "Be brief." in ed and ed.endswith("Thoughts:")
    assert len(T.messages(src("posterior", "edit"))) == 3
    assert T.messages(src("posterior", "prior")) == []


def test_dataset_text_is_never_template_source() -> None:
    evil = "{{ 7 * 7 }} {% for i in range(3) %}x{% endfor %} {{ ''.__class__ }}"
    out = T.render(src("forward", "classify"), {**FWD, "input": evil})
    assert evil in out and "49" not in out


def test_strict_undefined_and_sandbox() -> None:
    with pytest.raises(DlcTemplateError) as ei:
        T.render(src("forward", "classify"), {"prompt": "x"})
    assert ei.value.code == "E352"
    with pytest.raises(DlcTemplateError) as ei:
        T.render("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})
    assert ei.value.code == "E353"
