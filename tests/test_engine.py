"""Forward executor: template variable contract, prompting, batching, traces, with the real graphs/*.dln."""
from __future__ import annotations

import dataclasses

import pytest

from dlc.lang.compiler import compile_file
from dlc.engine.forward import (forward, layer_context, layer_variables, resolve_targets, score_batch, strip_options)
from dlc.errors import DlcDataError, DlcFitError
from dlc.ir import Example
from dlc.lm.base import ChatPrompt, ScoreRequest
from dlc.lm.scripted import ScriptedLM

from conftest import REPO as ROOT


def graph(name: str):
    return compile_file(ROOT / "graphs" / f"{name}.dln")


def examples(n: int) -> list[Example]:
    return [Example(inputs={"x": f"s{i} text"}, target=("subjective", "objective")[i % 2], id=f"s{i}")
            for i in range(n)]


def label_lm(**kw) -> ScriptedLM:
    """Says 'subjective' when the input names an even example, else 'objective'."""
    def score(prompt: str, cont: str) -> float:
        even = any(f"s{i} text" in prompt for i in (0, 2, 4, 6))
        return -0.5 if (cont.lower() == "subjective") == even else -3.0
    return ScriptedLM(score_fn=score, **kw)


def test_layer_variables_follow_the_ir_contract():
    g = graph("branched")
    y = g.layers["y"]
    v = layer_variables(g, y, "P", {"x": "X", "steps": "S", "brief": "B"})
    assert v["prompt"] == "P" and v["input"] == "X" and v["hidden"] == "S\n\nB"
    assert v["inputs"] == ["X", "S", "B"] and v["steps"] == "S" and v["brief"] == "B"


def test_strip_options_only_for_hidden_layers():
    g = graph("dln2")
    texts = {"x": "Q?\nOptions:\n(A) a\n(B) b", "h": "H"}
    assert strip_options(texts["x"]) == "Q?"
    h_vars = layer_variables(g, g.layers["h"], "", texts, strip_hidden_options=True)
    y_vars = layer_variables(g, g.layers["y"], "", texts, strip_hidden_options=True)
    assert h_vars["input"] == "Q?" and "Options:" in y_vars["input"]


def test_chat_and_raw_prompting():
    g = graph("dln1")
    y = g.layers["y"]
    ctx = layer_context(g, y, "Decide.", {"x": "hello"})
    assert isinstance(ctx, ChatPrompt) and ctx.user == "Decide.\n\nhello\n\nAnswer:"
    assert ctx.prefix == y.answer_prefix and ctx.system == y.system
    raw = dataclasses.replace(y, format="raw", answer_prefix=" (")
    assert layer_context(g, raw, "Decide.", {"x": "hello"}) == "Decide.\n\nhello\n\nAnswer: ("


def test_forward_dln1_label_argmax_and_trace():
    g = graph("dln1")
    lm = label_lm()
    tr = forward(g, g.prompts(), {"default": lm}, examples(4))
    assert tr.texts["y"] == ["subjective", "objective", "subjective", "objective"]
    assert tr.correct == [True] * 4
    assert lm.batches == [("score", "y/forward", 16)]            # one batched call: 4 examples x 4 verbalizers
    d = tr.nodes["y"].label_logdist[0]
    assert d[0] > d[1]
    js = tr.to_json()
    assert js["nodes"]["y"]["contexts"][0]["user"].endswith("s0 text\n\nAnswer:")


def test_forward_dln2_generates_then_reads_hidden():
    g = graph("dln2")
    lm = ScriptedLM(generate_fn=lambda p, r, i: "because s" + p.split("s", 1)[1][:1])
    tr = forward(g, g.prompts(), {"default": lm}, examples(2))
    gens = [c for c in lm.calls if c.kind == "generate"]
    assert [c.tag for c in gens] == ["h/forward"] * 2 and all(c.temperature == 0.0 for c in gens)
    assert tr.texts["h"][0].startswith("because")
    y_ctx = tr.nodes["y"].contexts[0]
    assert "Your thoughts were:\n" + tr.texts["h"][0] in y_ctx.user
    assert [b[:2] for b in lm.batches] == [("generate", "h/forward"), ("score", "y/forward")]


def test_duplicate_requests_are_sent_once():
    lm = ScriptedLM()
    reqs = [ScoreRequest("p", "a"), ScoreRequest("p", "b"), ScoreRequest("p", "a")]
    res = score_batch(lm, reqs)
    assert len(lm.calls) == 2 and res[0] is res[2]


def test_targets_are_mapped_onto_labels_and_unknown_targets_fail():
    g = graph("dln1")
    fixed = resolve_targets(g, [Example({"x": "a"}, "Subjective")])
    assert fixed[0].target == "subjective"
    with pytest.raises(DlcDataError) as e:
        resolve_targets(g, [Example({"x": "a"}, "neutral", id="7")])
    assert e.value.code == "E819" and "neutral" in str(e.value)


def test_missing_model_is_a_fit_error():
    g = graph("dln1")
    with pytest.raises(DlcFitError) as e:
        forward(g, g.prompts(), {"other": ScriptedLM()}, examples(1))
    assert e.value.code == "E701" and e.value.node == "y"


def test_missing_input_is_a_fit_error():
    g = graph("dln1")
    with pytest.raises(DlcFitError) as e:
        forward(g, g.prompts(), {"default": ScriptedLM()}, [Example({"q": "a"}, "objective")])
    assert e.value.code == "E703"


NUMBER_NET = """
input x
layer y(x) {{ output = number }}
output y {{ metric = {metric} }}
"""


@pytest.mark.parametrize("metric", ["number_presence", "final_answer"])
def test_number_output_predictions_and_metrics(metric):
    """GSM8K-style answers (issue 17, engine 1): the prediction is the final answer spelled exactly, and the two
    number metrics judge the whole text."""
    from dlc.lang.compiler import compile_source
    g = compile_source(NUMBER_NET.format(metric=metric))
    assert g.metric == metric
    said = {"q0": "They made 1,234,000 dollars.", "q1": "The mean is 12345.67", "q2": "It is 72. Check: 3 apples",
            "q3": "The temperature fell to -15 degrees, from 4.", "q4": "#### 2,500,000", "q5": "No idea."}
    targets = {"q0": "1234000", "q1": "12345.67", "q2": "72", "q3": "-15", "q4": "2500000", "q5": "5"}
    lm = ScriptedLM(generate_fn=lambda p, r, i: next(v for k, v in said.items() if k in p))
    ex = [Example(inputs={"x": k}, target=t, id=k) for k, t in targets.items()]
    tr = forward(g, g.prompts(), {"default": lm}, ex)
    assert tr.predictions == ["1234000", "12345.67", "3", "4", "2500000", "No idea."]
    if metric == "number_presence":
        assert tr.correct == [True, True, True, True, True, False]
    else:
        assert tr.correct == [True, True, False, False, True, False]
