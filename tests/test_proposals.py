"""Proposals that are instructions (issue 14 §2): cleaning of what small proposers really wrote, rejection of
copies, empties and long texts, and the trace records that say why a proposal was not scored."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dlc.engine.proposals import clean_proposal, rejection_reason, template_lines
from dlc.train.trainer import Trainer
from dlc.ir import Example
from dlc.lang.compiler import compile_file
from dlc.lang.templates import builtin_path
from dlc.lm.scripted import ScriptedLM

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = builtin_path("prompt", "proposal").read_text(encoding="utf-8")


@pytest.mark.parametrize("raw,clean", [
    ("> Be brief. [END] junk", "Be brief."),
    ("Classify the question by its answer type.[End]", "Classify the question by its answer type."),
    ("Classify it.\n[ end ]\nmore", "Classify it."),
    ("Classify it. </END>", "Classify it."),
    ("Classify it.\nEND\nTrailing text", "Classify it."),
    ("Improved instruction: Classify the question.", "Classify the question."),
    ("**New instruction:** \"Decide whether the sentence states facts.\"", "Decide whether the sentence states facts."),
    ("Here is the improved instruction:\n'Label each tweet.'", "Label each tweet."),
    ("“Answer yes or no.”", "Answer yes or no."),
    ("```\nAnswer with one word.\n```", "Answer with one word."),
    # the template's own words echoed back (seen on the default model), then the real instruction
    ("Your job is to write an improved instruction so that the student answers the wrong examples correctly.\n"
     "Pick the answer type of the question.", "Pick the answer type of the question."),
    ("Current instruction:\nPick the type.", "Pick the type."),
    ("Reply with the new instruction only: plain text, no headings, no quotes, no commentary.", ""),
    ("  Keep me as I am.  ", "Keep me as I am."),
])
def test_clean_proposal(raw, clean):
    assert clean_proposal(raw, TEMPLATE) == clean


def test_template_lines_are_the_literal_text_only():
    lines = template_lines(TEMPLATE)
    assert "current instruction" in lines and not any("{{" in x or "prompt" == x for x in lines)
    assert all(len(x.split()) >= 2 for x in lines)


def test_rejection_reasons():
    shown = ["If you follow these instructions, do you return to the starting point? Always face forward. "
             "Take 1 step backward. Take 9 steps left."]
    copy = "Always face forward. Take 1 step backward. Take 9 steps left. Answer yes or no."
    assert rejection_reason(copy, shown) == "copies_input"
    assert rejection_reason(copy, shown, copy_ngram=0) is None
    assert rejection_reason("Decide whether the moves return you to the start.", shown) is None
    assert rejection_reason("", shown) == "empty" and rejection_reason(" ... ", shown) == "empty"
    assert rejection_reason("word " * 151, shown) == "too_long"
    assert rejection_reason("word " * 151, shown, max_words=0) is None
    # a short instruction that shares a few words with the input is not a copy
    assert rejection_reason("Take each step and decide.", shown) is None


def test_rejected_proposals_are_recorded_and_never_scored():
    """Proposals that copy a shown input or are empty after cleaning never reach candidate scoring; the trace says
    why, and the layer record counts them by reason."""
    g = compile_file(ROOT / "graphs" / "dln1.dln")
    truth = ("subjective", "objective")
    exs = [Example({"x": f"sentence number {i} says the film is a joyous heartfelt delight"}, truth[i % 2], f"e{i}")
           for i in range(8)]
    outs = iter(["Improved instruction: \"Decide if the sentence is an opinion.\" [END]",
                 "sentence number 3 says the film is a joyous heartfelt delight",
                 "[END]"])

    def gen(prompt, r, i):
        return next(outs) if r.tag == "y/propose" else None

    def score(prompt, cont):
        if cont.lower() in truth:
            return -0.1 if cont.lower() == "objective" else -2.0     # always 'objective': errors to learn from
        return None
    lm = ScriptedLM(generate_fn=gen, score_fn=score)
    cfg = dataclasses.replace(g.fit, iters=1, batch_size=4, num_p_samples=4, val_freq=1,
                              held_out_prompt_ranking=False)
    rec = Trainer(g, {"default": lm}, exs, exs[:2], cfg).step()
    layer = rec["layers"]["y"]
    reasons = [p["rejected"] for p in layer["proposals"]]
    assert reasons == [None, "copies_input", "empty"]
    assert layer["proposals"][0]["text"] == "Decide if the sentence is an opinion."
    assert layer["proposals"][0]["raw"].startswith("Improved instruction:")
    assert layer["rejected"] == {"copies_input": 1, "empty": 1}
    assert layer["candidates"] == [g.layers["y"].prompt, "Decide if the sentence is an opinion."]
    n_scored = len([c for c in lm.calls if c.tag == "y/score"])
    assert n_scored == 2 * 4 * 4          # 2 candidates x 4 examples x 4 verbalizers: nothing rejected was scored


def test_proposal_counts_sum_made_and_rejected_by_reason():
    """What `dlc show RUN` prints as "proposals N made, M rejected before scoring (reason k, ...)": the counts over
    the trace's records, two iterations each with one copy and one empty proposal."""
    from dlc.artifacts.records import IterationRecord
    from dlc.report.stats import proposal_counts

    rec = {"iteration": 0, "layers": {"y": {"node": "y", "proposals": [
        {"text": "Decide.", "raw": "Decide.", "rejected": None},
        {"text": "sentence 3 says", "raw": "sentence 3 says", "rejected": "copies_input"},
        {"text": "", "raw": "[END]", "rejected": "empty"}], "rejected": {"copies_input": 1, "empty": 1}}}}
    trace = [IterationRecord.from_json(rec), IterationRecord.from_json(dict(rec, iteration=1))]
    assert proposal_counts(trace) == (6, {"copies_input": 2, "empty": 2})
    assert proposal_counts([IterationRecord.from_json({"iteration": 0, "layers": {}})]) == (0, {})
