"""Backends without prompt log-probs (chat-only hosted models; `dlc serve --no-logprobs`): choice layers answer by
generation (greedy text -> label through the verbalizers; no label = wrong), prompts are scored by the accuracy of
those answers, and what still needs log-probs is E628 with a hint that works. Engine tests on the scripted LM whose
scorer fails if called, and one end-to-end fit against a real `dlc serve --model tiny --no-logprobs`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dlc.engine.forward import forward, label_of_text
from dlc.engine.prompts import score_candidates
from dlc.errors import DlcLMError
from dlc.ir import Example, FitConfig
from dlc.lang.compiler import compile_file, compile_source
from dlc.lm.base import Capabilities
from dlc.lm.scripted import ScriptedLM
from dlc.train.evaluation import evaluate

from conftest import DATA, REPO, start_serve

NO_LOGPROBS = Capabilities(prompt_logprobs=False, top_logprobs=0)


def graph():
    return compile_file(REPO / "graphs" / "dln1.dln")


def never_scores(prompt: str, cont: str) -> float:
    raise AssertionError(f"scored {cont!r} on a backend without prompt log-probs")


def examples(n: int) -> list[Example]:
    return [Example(inputs={"x": f"s{i} text"}, target=("subjective", "objective")[i % 2], id=f"s{i}")
            for i in range(n)]


def answers(prompt: str, req, i: int) -> str:
    """s0: a label then an explanation; s1: 'Objective.'; s2: the wrong label; s3: no label at all."""
    for k, text in (("s0 text", "subjective. The sentence states an opinion"), ("s1 text", "Objective."),
                    ("s2 text", "objective"), ("s3 text", "I cannot tell")):
        if k in prompt:
            return "subjective" if "ALWAYS-SUBJ" in prompt else text
    return "hmm"


def test_label_of_text_reads_the_answer_through_the_verbalizers():
    g = compile_source('network t\ninput x\nlayer y(x) { template = classify\n'
                       '  output = choice { pos: "positive" | "good", neg: "negative", neu: "not sure" } }\n'
                       'output y { target = label }\n')
    y = g.layers["y"]
    assert label_of_text(y, "positive") == "pos"
    assert label_of_text(y, " Good!") == "pos"                    # a verbalizer, case and punctuation aside
    assert label_of_text(y, "negative. The review complains") == "neg"   # a label first, then words
    assert label_of_text(y, "Not sure, maybe") == "neu"           # a verbalizer of several words
    assert label_of_text(y, "neu") == "neu"                       # the label's name
    assert label_of_text(y, "positively negative") == ""          # no word-boundary match
    assert label_of_text(y, "The answer is positive") == ""       # unmapped: wrong, never guessed
    assert label_of_text(y, "") == ""


def test_choice_forward_generates_when_the_backend_has_no_logprobs():
    g = graph()
    lm = ScriptedLM(generate_fn=answers, score_fn=never_scores, capabilities=NO_LOGPROBS)
    ex = examples(4)
    tr = forward(g, g.prompts(), {"default": lm}, ex)
    assert tr.texts["y"] == ["subjective", "objective", "objective", ""]
    assert tr.correct == [True, True, False, False]
    node = tr.nodes["y"]
    assert node.generated[3] == "I cannot tell" and node.label_logdist == [None] * 4
    assert node.to_json()["generated"][0].startswith("subjective. The")
    assert all(c.kind == "generate" and c.temperature == 0.0 for c in lm.calls)
    # evaluation: accuracy from the answers, no log-likelihood to validate on (falls back to accuracy)
    res = evaluate(g, g.prompts(), {"default": lm}, ex)
    assert res.accuracy == 0.5 and res.loglik is None and res.scores("loglik") == [1.0, 1.0, 0.0, 0.0]
    # with log-probs the same layer scores its verbalizers (the default path is unchanged)
    lm2 = ScriptedLM(generate_fn=answers)
    forward(g, g.prompts(), {"default": lm2}, ex)
    assert {c.kind for c in lm2.calls} == {"score"}


def test_candidates_are_scored_by_their_generated_answers():
    g = graph()
    lm = ScriptedLM(generate_fn=answers, score_fn=never_scores, capabilities=NO_LOGPROBS)
    ex = examples(4)
    tr = forward(g, g.prompts(), {"default": lm}, ex)
    cfg = FitConfig(output_scoring="accuracy")
    elbo, kl, pen, offs = score_candidates(g, "y", [g.prompts()["y"], "ALWAYS-SUBJ"], g.prompts(),
                                           {"default": lm}, tr, {}, cfg, 0.0)
    assert elbo == [0.5, 0.5] and offs is None     # 2 of 4 right each (s0, s1 / s0, s2)
    ex2 = [e for e in ex if e.target == "subjective"]
    tr2 = forward(g, g.prompts(), {"default": lm}, ex2)
    elbo, *_ = score_candidates(g, "y", [g.prompts()["y"], "ALWAYS-SUBJ"], g.prompts(), {"default": lm}, tr2, {},
                                cfg, 0.0)
    assert elbo == [0.5, 1.0]
    # log p(label) scoring cannot be done: E628 with a hint that names the settings that work
    for bad in (FitConfig(), FitConfig(output_scoring="accuracy", trust_factor=1.0)):
        with pytest.raises(DlcLMError) as ei:
            score_candidates(g, "y", [g.prompts()["y"]], g.prompts(), {"default": lm}, tr, {}, bad, 0.0)
        assert ei.value.code == "E628" and "output_scoring = accuracy" in ei.value.hint
        assert "trust_factor = 0" in ei.value.hint


# ---------------------------------------------------------------------------------------------- end to end
DLN = """network chatonly
input x
layer y(x) {
  template = classify
  prompt = "Is the sentence subjective or objective? Answer with one word."
  output = choice { subjective: "subjective" | "Subjective", objective: "objective" | "Objective" }
  backward { max_tokens = 40 }
}
output y { target = label  metric = accuracy }
model default { backend = openai  model = "tiny"  base_url_env = "CHATONLY_URL"  timeout = 300 }
data { task = "subj"  train_size = 6  dev_size = 3  test_size = 3 }
fit { iters = 1  batch_size = 2  num_p_samples = 2  calibration_size = 2  output_scoring = accuracy }
"""


@pytest.mark.model
def test_fit_against_dlc_serve_without_logprobs(tmp_path, monkeypatch):
    proc, url = start_serve("--model", "tiny", "--port", "0", "--n-ctx", "2048", "--no-logprobs")
    try:
        # the server refuses log-probs as a chat-only model does
        r = httpx.post(url + "/completions", json={"model": "tiny", "prompt": "Hi", "max_tokens": 1, "echo": True,
                                                   "logprobs": 1}, timeout=60)
        assert r.status_code == 400 and "--no-logprobs" in r.json()["error"]["message"]
        r = httpx.post(url + "/chat/completions", json={"model": "tiny", "max_tokens": 1, "logprobs": True,
                                                        "messages": [{"role": "user", "content": "Hi"}]}, timeout=60)
        assert r.status_code == 400
        monkeypatch.chdir(tmp_path)
        Path("chatonly.dln").write_text(DLN)
        env = {**os.environ, "CHATONLY_URL": url, "DLC_CACHE_DIR": str(tmp_path / "cache"), "DLC_THREADS": "1"}
        base = [sys.executable, "-m", "dlc", "fit", "chatonly.dln", "--data-dir", str(DATA), "--no-progress"]
        # log p(label) scoring (the default) is refused with a hint that works
        bad = subprocess.run(base + ["--set", "fit.output_scoring=logprobs"], capture_output=True, text=True,
                             env=env, timeout=900)
        assert bad.returncode == 1 and "error[E628]" in bad.stderr and "Traceback" not in bad.stderr
        assert "output_scoring = accuracy" in bad.stderr
        ok = subprocess.run(base + ["--run-dir", "run"], capture_output=True, text=True, env=env, timeout=900)
        assert ok.returncode == 0, ok.stderr
        res = json.loads(Path("run/result.json").read_text())
        assert 0.0 <= res["test_accuracy"] <= 1.0
        backend = json.loads(Path("run/backend.json").read_text())
        assert "'prompt_logprobs': False" in str(backend) or '"prompt_logprobs": false' in json.dumps(backend)
        trace = [json.loads(line) for line in Path("run/trace.jsonl").read_text().splitlines()]
        fwd = json.dumps(trace)
        assert '"generated"' in fwd       # the output layer answered by generation, recorded in the trace
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
