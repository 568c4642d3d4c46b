"""`dlc serve --model tiny --port 0` as a real subprocess (started and stopped by PID), driven by OpenAILM and by
raw HTTP: exact echo log-probs equal the embedded scorer's, generation equals the embedded backend's, and results
through the fault-injecting proxy equal a clean run's."""
from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
from typing import Callable

import httpx
import pytest

from dlc.errors import DlcLMError
from dlc.lm.base import ChatPrompt, GenerateRequest, ModelText, ScoreRequest
from dlc.lm.openai_backend import OpenAILM
from tests.faultproxy import FaultProxy

from conftest import start_serve, stop_serve

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def serve():
    proc, url = start_serve("--model", "tiny", "--port", "0", "--n-ctx", "512")
    yield url
    assert stop_serve(proc) == 0


@pytest.fixture(scope="module")
def embedded():
    from dlc.lm.embedded import EmbeddedLM

    lm = EmbeddedLM("tiny", n_ctx=512, n_threads=1)
    yield lm
    lm.close()


SCORES = [ScoreRequest("The capital of France is", " Paris"),
          ScoreRequest("Review: great movie!\nSentiment:", " positive"),
          ScoreRequest(ChatPrompt("Is the sky blue? Answer yes or no."), "yes"),
          ScoreRequest(ChatPrompt("Is the sky blue?", prefix="The answer is"), " yes")]
GENS = [GenerateRequest("Once upon a time", max_tokens=8, temperature=0.7, n=2, seed=5),
        GenerateRequest(ChatPrompt("Name a color."), max_tokens=6),
        GenerateRequest(ChatPrompt("Name a color.", prefix="My favourite color is"), max_tokens=6, stop=("\n",))]


def test_listening_line_and_echo_contract(serve):
    r = httpx.post(serve + "/completions", json={"model": "tiny", "prompt": "The capital of France is Paris",
                                                 "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0},
                   timeout=60).json()
    lp = r["choices"][0]["logprobs"]
    assert r["choices"][0]["text"].startswith("The capital of France is Paris")
    assert lp["token_logprobs"][0] is None and lp["tokens"][:2] == ["The", " capital"]
    i = lp["tokens"].index(" Paris")
    assert lp["text_offset"][i] == len("The capital of France is")
    assert abs(lp["token_logprobs"][i] - (-0.264)) < 0.01           # issue 3: exact value on SmolLM2
    m = httpx.get(serve + "/models", timeout=10).json()["data"][0]
    assert m["id"] == "tiny" and m["max_model_len"] == 512


def test_openai_client_scores_and_generates_like_embedded(serve, embedded):
    with OpenAILM("tiny", [serve], timeout=60) as lm:
        assert lm.capabilities.prompt_logprobs and lm.info.render == "apply-template"
        s, g = lm.score(SCORES), lm.generate(GENS)
    ref = embedded.score(SCORES)
    for a, b in zip(s, ref):
        assert a.tokens == b.tokens
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-3
    assert [r.texts for r in g] == [r.texts for r in embedded.generate(GENS)]


def test_faulty_proxy_equals_clean_run(serve):
    with OpenAILM("tiny", [serve], timeout=60) as lm:
        clean_s, clean_g = lm.score(SCORES[:2]), lm.generate(GENS[:1])
    root = serve[: -len("/v1")]
    proxy = FaultProxy(root, ["500", "drop", "429", "garbage"], only_paths=("/completions",))
    try:
        with OpenAILM("tiny", [proxy.url + "/v1"], timeout=60, backoff_base=0.01, backoff_max=0.05) as lm:
            s, g = lm.score(SCORES[:2]), lm.generate(GENS[:1])
    finally:
        proxy.close()
    assert [r.logprobs for r in s] == [r.logprobs for r in clean_s]
    assert [r.texts for r in g] == [r.texts for r in clean_g]
    assert proxy.served["garbage"] > 0 and proxy.served["drop"] > 0


def test_errors_are_openai_shaped(serve):
    r = httpx.post(serve + "/completions", json={"model": "nope", "prompt": "x"}, timeout=30)
    assert r.status_code == 404 and "tiny" in r.json()["error"]["message"]
    r = httpx.post(serve + "/completions", json={"model": "tiny", "prompt": "x " * 600, "max_tokens": 4}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = httpx.post(serve + "/chat/completions", json={"model": "tiny", "messages": []}, timeout=30)
    assert r.status_code == 400
    with OpenAILM("tiny", [serve], timeout=60) as lm:
        with pytest.raises(DlcLMError) as ei:
            lm.generate([GenerateRequest("word " * 600, max_tokens=4)])
    assert ei.value.code == "E623" and "512" in ei.value.message


def test_port_in_use_is_a_clear_error(serve):
    port = serve.rsplit(":", 1)[1].split("/")[0]
    r = subprocess.run([sys.executable, "-m", "dlc", "serve", "--model", "tiny", "--port", port],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "E629" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- issue 19: the completions contract of vLLM
def _post(url: str, path: str, body: dict) -> dict:
    r = httpx.post(url + path, json={"model": "tiny", **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def _exact(lm, prompt, token_text: str) -> float:
    """dlc's exact scorer: log p(token | prompt), for a token whose text tokenizes as itself."""
    r = lm.score([ScoreRequest(prompt, token_text)])[0]
    assert r.tokens == (token_text,), (token_text, r.tokens)
    return r.logprobs[0]


def _check_top(top: dict, token: str, logprob: float, k: int) -> None:
    """k most likely entries, most likely first, then the token itself when not among them."""
    vals = list(top.values())
    assert len(top) in (k, k + 1) and token in top and top[token] == logprob
    assert vals[:k] == sorted(vals[:k], reverse=True) and all(v <= 0 for v in vals)
    if len(top) == k + 1:                                       # the token is last and below the k-th
        assert list(top)[-1] == token and vals[-1] <= vals[k - 1]
    else:
        assert logprob >= vals[-1]


DLN_PROMPT = "Review: the plot was dull and the acting was worse.\nIs the review positive or negative?\nAnswer:"


def test_dln_request_shape_logprobs_100(serve, embedded):
    # gap 1: the DLN scorer's request; gap 2: 100 alternatives, sorted, the greedy token first
    body = {"prompt": DLN_PROMPT + "\n", "echo": False, "logprobs": 100, "max_tokens": 1, "temperature": 0.0,
            "seed": 7270}
    ch = _post(serve, "/completions", body)["choices"][0]
    lp = ch["logprobs"]
    assert lp["tokens"] == [ch["text"]] and lp["text_offset"] == [len(body["prompt"])]
    top = lp["top_logprobs"][0]
    _check_top(top, ch["text"], lp["token_logprobs"][0], 100)
    assert len(top) == 100 and list(top)[0] == ch["text"]       # greedy: the most likely token was sampled
    # the numbers are dlc's exact scorer's (the first generated token reads the prompt's last logits)
    prompt = ModelText(body["prompt"])
    for tok in [t for t in list(top)[:8] if embedded.tokenize(t, special=False, add_bos=False).__len__() == 1][:5]:
        assert abs(top[tok] - _exact(embedded, prompt, tok)) < 1e-6
    r = httpx.post(serve + "/completions", json={**body, "logprobs": 101}, timeout=60)
    assert r.status_code == 400 and "--max-logprobs" in r.json()["error"]["message"]


def test_top_logprobs_of_samples_are_the_sampling_distribution(serve, embedded):
    # n > 1 at temperature 1: each sample's tokens with their own log-probs, the sampled one always listed
    prompt = "Once upon a time"
    res = _post(serve, "/completions", {"prompt": prompt, "max_tokens": 5, "temperature": 1.0, "n": 3, "seed": 11,
                                        "logprobs": 4})
    assert len(res["choices"]) == 3
    assert res["usage"]["completion_tokens"] == sum(len(c["logprobs"]["tokens"]) for c in res["choices"])
    for ch in res["choices"]:
        lp = ch["logprobs"]
        assert "".join(lp["tokens"]) == ch["text"]
        for tok, v, off, top in zip(lp["tokens"], lp["token_logprobs"], lp["text_offset"], lp["top_logprobs"]):
            _check_top(top, tok, v, 4)
            assert (prompt + ch["text"])[off:off + len(tok)] == tok
        assert abs(lp["token_logprobs"][0] - _exact(embedded, ModelText(prompt), lp["tokens"][0])) < 1e-6
    assert len({c["text"] for c in res["choices"]}) > 1          # the samples differ
    # greedy: the log-probs are those the tokens were sampled from (the embedded backend's, in-process); after the
    # first token they come from one-row decodes, which llama.cpp computes with other kernels than teacher forcing
    # (a few 0.01 nats), so they are close to, not equal to, the exact scores of the text
    prompt = ModelText("The capital of France is")
    ch = _post(serve, "/completions", {"prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 2})
    ch = ch["choices"][0]
    res, toks = embedded.generate_logprobs(GenerateRequest(prompt, max_tokens=8), 2)
    assert res.texts == (ch["text"],) and [t.logprob for t in toks[0]] == ch["logprobs"]["token_logprobs"]
    assert [[(d, v) for d, _, v in t.top] for t in toks[0]] == [list(d.items()) for d in ch["logprobs"]["top_logprobs"]]
    ref = embedded.score([ScoreRequest(prompt, ch["text"])])[0]
    assert ref.tokens == tuple(ch["logprobs"]["tokens"]) and ref.logprobs[0] == ch["logprobs"]["token_logprobs"][0]
    assert max(abs(a - b) for a, b in zip(ref.logprobs, ch["logprobs"]["token_logprobs"])) < 0.2


def test_echo_top_logprobs_and_offsets(serve, embedded):
    text = "The capital of France is Paris. Ça?"
    want = embedded.echo(text)
    for mt in (0, 1):
        ch = _post(serve, "/completions", {"prompt": text, "echo": True, "logprobs": 5, "max_tokens": mt,
                                           "temperature": 0})["choices"][0]
        lp = ch["logprobs"]
        n = len(want)
        assert len(lp["tokens"]) == n + mt and ch["text"].startswith(text)
        assert [(t, o) for t, o, _ in want] == list(zip(lp["tokens"], lp["text_offset"]))[:n]
        assert "".join(lp["tokens"][:n]) == text
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        keys = [e.display for e in embedded.echo_logprobs(text, 5)]
        for i in range(1, n):
            assert abs(lp["token_logprobs"][i] - want[i][2]) < 1e-6
            # a token holding a piece of "Ç" is listed among the alternatives as bytes:\x20\xc3 (as OpenAI)
            assert keys[i] == lp["tokens"][i] or keys[i].startswith("bytes:")
            _check_top(lp["top_logprobs"][i], keys[i], lp["token_logprobs"][i], 5)
        if mt:
            assert lp["text_offset"][n] == len(text) and lp["tokens"][n] == ch["text"][len(text):]
            _check_top(lp["top_logprobs"][n], lp["tokens"][n], lp["token_logprobs"][n], 5)
    # the exact values are the scorer's: " Paris" after the prompt (issue 3: -0.264)
    i = lp["tokens"].index(" Paris")
    assert abs(lp["token_logprobs"][i] - _exact(embedded, "The capital of France is", " Paris")) < 1e-6


def test_first_generated_token_merging_with_the_prompt_is_reported(serve, embedded):
    # gap 3: "?\n" + "\n" re-tokenizes as "?\n\n"; the generated token is reported as generated
    prompt = "Is it subjective?\n"
    res = _post(serve, "/completions", {"prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": 1})
    ch = res["choices"][0]
    lp = ch["logprobs"]
    assert ch["text"] == "\n" and res["usage"]["completion_tokens"] == 1
    assert lp["tokens"] == ["\n"] and lp["text_offset"] == [len(prompt)]
    assert abs(lp["token_logprobs"][0] - _exact(embedded, ModelText(prompt), "\n")) < 1e-6
    assert len(embedded.tokenize(prompt + "\n")) == len(embedded.tokenize(prompt))   # the merge is real


def test_chat_logprobs_and_top_logprobs(serve, embedded):
    msgs = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]
    res = _post(serve, "/chat/completions", {"messages": msgs, "max_tokens": 4, "temperature": 0, "logprobs": True,
                                             "top_logprobs": 5})
    content = res["choices"][0]["logprobs"]["content"]
    assert len(content) == res["usage"]["completion_tokens"]      # every generated token, the end token too
    text = "".join(t["token"] for t in content)
    assert text in (res["choices"][0]["message"]["content"], res["choices"][0]["message"]["content"] + "<|im_end|>")
    for t in content:
        top = t["top_logprobs"]
        assert len(top) == 5 and top[0]["token"] == t["token"] and top[0]["logprob"] == t["logprob"]   # greedy
        assert [x["logprob"] for x in top] == sorted((x["logprob"] for x in top), reverse=True)
        assert all(bytes(x["bytes"]).decode() == x["token"] for x in top)
    assert abs(content[0]["logprob"] - _exact(embedded, ChatPrompt(msgs[0]["content"]), content[0]["token"])) < 1e-6
    res = _post(serve, "/chat/completions", {"messages": msgs, "max_tokens": 2, "logprobs": True})
    assert all(t["top_logprobs"] == [] for t in res["choices"][0]["logprobs"]["content"])
    r = httpx.post(serve + "/chat/completions", json={"model": "tiny", "messages": msgs, "logprobs": True,
                                                      "top_logprobs": 101}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_logprobs"


def test_max_logprobs_option():
    proc, url = start_serve("--model", "tiny", "--port", "0", "--n-ctx", "128", "--max-logprobs", "3")
    try:
        body = {"model": "tiny", "prompt": "Hello", "max_tokens": 1, "temperature": 0}
        assert httpx.post(url + "/completions", json={**body, "logprobs": 3}, timeout=60).status_code == 200
        r = httpx.post(url + "/completions", json={**body, "logprobs": 4}, timeout=60)
        assert r.status_code == 400 and "at most 3" in r.json()["error"]["message"]
    finally:
        assert stop_serve(proc) == 0


def _dln_style_class_scores(top: dict[str, float], classes: list[str],
                            clean: Callable[[str], str] = lambda key: key) -> list[float]:
    """Class probabilities from first-token top log-probs, as the DLN implementation's scorer computes them
    (dln/score.py, agg = max): each key mapped through `clean` (its VLLM.clean_text); a class's verbalizers are its
    name with and without a leading space; a verbalizer missing from the top-k counts the smallest probability."""
    min_prob = math.exp(min(top.values())) if top else 1e-6
    cleaned = {clean(key): key for key in top}
    scores = [min_prob + max([0.0] + [math.exp(top[cleaned[v]]) if v in cleaned else min_prob for v in (c, " " + c)])
              for c in classes]
    total = sum(scores)
    return [s / total for s in scores]


def test_openai_client_and_dln_style_scorer(serve, embedded):
    """A client written elsewhere: the `openai` package's legacy completions call with logprobs=100, and a DLN-style
    class scorer over top_logprobs. The class it prefers is the one with the higher exact log-prob."""
    from openai import OpenAI

    client = OpenAI(base_url=serve, api_key="unused", max_retries=0, timeout=120)
    classes = ["positive", "negative"]
    reviews = ["the plot was dull and the acting was worse.", "a wonderful, moving film. I loved every minute!",
               "boring, far too long, and the ending made no sense.", "great fun, brilliant cast, a joy to watch."]
    for review in reviews:
        prompt = f"Review: {review}\nIs the review positive or negative?\nAnswer:"
        out = client.completions.create(model="tiny", prompt=prompt, max_tokens=1, temperature=0.0, logprobs=100,
                                        echo=False, seed=7270)
        top = out.choices[0].logprobs.top_logprobs[0]
        assert len(top) == 100
        scores = _dln_style_class_scores(dict(top), classes)
        exact = [_exact(embedded, ModelText(prompt), " " + c) for c in classes]
        assert all(abs(top[" " + c] - e) < 1e-6 for c, e in zip(classes, exact))    # both in the top 100
        assert scores.index(max(scores)) == exact.index(max(exact))


def _vocabulary(lm) -> dict[str, int]:
    """Each vocabulary string of the GGUF ("Ġword", "Ċ", "<|im_end|>") with its id: what Hugging Face's
    convert_tokens_to_ids looks up (for SmolLM2 the strings are the same as its tokenizer's, id for id)."""
    return {lm.vocab_text(i): i for i in range(lm.n_vocab)}


def _dln_clean_text(lm, vocab: dict[str, int]) -> Callable[[str], str]:
    """The DLN implementation's VLLM.clean_text, `decode(convert_tokens_to_ids(key))`, without transformers: a key
    that is a vocabulary string becomes that token's text; any other key becomes the unknown token, whose text is
    no verbalizer."""
    return lambda key: lm.detokenize([vocab[key]]) if key in vocab else "<unk>"


# DLN's class-scoring request on its subj task, as its scorer sends it (logged from the DLN implementation), for
# sentences after which the tiny model lists " subjective" among its top 100 (at -7.9..-7.6; the 100th: -8.1..-8.0)
SUBJ = ("Read the following sentence, then choose whether it is subjective or objective.\n\n{}\n"
        "Options:\n- subjective\n- objective\n\nAnswer:\n")
SUBJ_SENTENCES = ["a film that tries too hard to be clever and ends up merely smug .",
                  "the songs are lovely , but the story is thin as paper .",
                  "it is a dull , lifeless picture that never finds its heart ."]


def test_logprob_tokens_vocab_lets_the_dln_scorer_find_classes(serve, embedded):
    """The DLN implementation reads top_logprobs keys as vocabulary strings ("Ġsubjective": vLLM's OpenAI server
    before 0.4 returned convert_ids_to_tokens) and maps them back with clean_text. On text keys (" subjective")
    that loses every key with a leading space; "subjective" is two tokens (subject + ive), so the class is not
    found although " subjective" is in the top 100, and it gets the floor score. `--logprob-tokens vocab` keys by
    vocabulary strings (the values, their order, the text and the offsets stay those of text keys): the class is
    found with its exact log-prob."""
    vocab = _vocabulary(embedded)
    clean = _dln_clean_text(embedded, vocab)
    classes = ["subjective", "objective"]
    assert len(embedded.tokenize("subjective", add_bos=False)) == 2 and " subjective" not in vocab
    proc, url = start_serve("--model", "tiny", "--port", "0", "--n-ctx", "512", "--logprob-tokens", "vocab")
    try:
        for sentence in SUBJ_SENTENCES:
            body = {"prompt": SUBJ.format(sentence), "echo": False, "logprobs": 100, "max_tokens": 1,
                    "temperature": 0.0, "seed": 7270}
            t, v = _post(serve, "/completions", body)["choices"][0], _post(url, "/completions", body)["choices"][0]
            tlp, vlp = t["logprobs"], v["logprobs"]
            assert v["text"] == t["text"] and vlp["token_logprobs"] == tlp["token_logprobs"]
            assert vlp["text_offset"] == tlp["text_offset"]
            assert [embedded.token_display(vocab[k])[0] for k in vlp["tokens"]] == tlp["tokens"]
            vtop, ttop = vlp["top_logprobs"][0], tlp["top_logprobs"][0]
            assert len(vtop) == 100 and list(vtop.values()) == list(ttop.values())
            assert [embedded.token_display(vocab[k])[0] for k in vtop] == list(ttop)
            # text keys: " subjective" is listed, but DLN's clean_text loses it; the class gets the floor score
            assert " subjective" in ttop and not {"subjective", " subjective"} & {clean(k) for k in ttop}
            text_scores = _dln_style_class_scores(ttop, classes, clean)
            # vocabulary keys: DLN's clean_text finds " subjective" with its exact log-prob, and its scorer prefers
            # the class whose verbalizer is more likely (dlc's exact scorer)
            cleaned = {clean(k): x for k, x in vtop.items()}
            assert cleaned[" subjective"] == pytest.approx(_exact(embedded, ModelText(body["prompt"]), " subjective"),
                                                           abs=1e-6)
            exact = [max(_exact(embedded, ModelText(body["prompt"]), w) for w in (c, " " + c) if w in cleaned)
                     for c in classes]
            scores = _dln_style_class_scores(vtop, classes, clean)
            assert scores.index(max(scores)) == exact.index(max(exact))
            assert scores[0] > text_scores[0] + 1e-4                   # more than the floor of the text keys
    finally:
        assert stop_serve(proc) == 0


def test_logprobs_come_from_sampling_and_echo_shares_prefixes(embedded):
    """Gap 4: log-probs are read while sampling (no decode beyond the generation's own); echo decodes only what
    differs from the last text (vLLM-style prefix caching, exact values)."""
    req = GenerateRequest(ModelText("A list of colours: red, green,"), max_tokens=12, temperature=0.8, seed=3)
    embedded.echo("reset sequence 0")
    w0 = embedded.work().decoded_tokens
    plain = embedded.generate([req])[0]
    w1 = embedded.work().decoded_tokens
    embedded.echo("reset sequence 0")
    w2 = embedded.work().decoded_tokens
    res, toks = embedded.generate_logprobs(req, 5)
    w3 = embedded.work().decoded_tokens
    assert res.texts == plain.texts and w3 - w2 == w1 - w0
    assert len(toks[0]) == res.completion_tokens and all(len(t.top) == 5 for t in toks[0])
    text = "Review: a wonderful, moving film.\nSentiment:"
    ref = embedded.echo(text)
    a = embedded.echo(text + " positive")
    w4 = embedded.work().decoded_tokens
    b = embedded.echo(text + " negative")                       # shares the text: decodes its last 2 tokens
    w5 = embedded.work().decoded_tokens
    assert w5 - w4 == 2 and a[:len(ref)] == ref and b[:len(ref)] == ref
    embedded.echo(text + " negative")
    assert embedded.work().decoded_tokens == w5                # same text: nothing decoded
    fresh = embedded.score_reference([ScoreRequest(ModelText(text), " negative")])[0]
    assert b[-1][2] == fresh.logprobs[0] and b[-1][0] == " negative"


# ---------------------------------------------------------------- issue 16: a client that disconnects
STORY = "Here is a very long story about a dragon, told in many chapters.\n\nChapter 1\n"
# both run to their budget (finish_reason length, no end token) on the tiny model: 2000 tokens, ~48 s each on this
# 2-core machine under load; a client that leaves after 0.5 s must not make the server compute them
LONG = {"model": "tiny", "prompt": STORY, "max_tokens": 2000, "temperature": 1.0, "seed": 1}
LONG_CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Write a very long story about a dragon, in "
                                                                       "many chapters."}],
             "max_tokens": 2000, "temperature": 1.0, "seed": 1}
QUEUED = {"model": "tiny", "prompt": "A long list of numbers: " + ", ".join(map(str, range(150))), "max_tokens": 1000,
          "temperature": 1.0}
SHORT = {"model": "tiny", "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}


def _send_and_leave(url: str, path: str, body: dict, after: float) -> float:
    """POST `body` on a raw socket, close the connection after `after` s without reading the answer (a client that
    times out or is killed); return the time of the close (perf_counter)."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                  b"\r\n%s" % (path.encode(), host.encode(), len(data), data))
        time.sleep(after)
    return time.perf_counter()


def _leave_while_running(url: str, path: str, body: dict) -> float:
    """A long request whose client leaves after 0.5 s, and a second one sent 0.1 s later whose client leaves at
    0.3 s, while it waits for the model; returns the time the first client left."""
    closed: list[float] = []
    first = threading.Thread(target=lambda: closed.append(_send_and_leave(url, path, body, 0.5)))
    first.start()
    time.sleep(0.1)
    queued = threading.Thread(target=_send_and_leave, args=(url, "/completions", QUEUED, 0.2))
    queued.start()
    first.join()
    queued.join()
    return closed[0]


class _Decodes:
    """Records when the model's decoded-token counter changes (every 2 ms). Reads the counter without the model's
    lock: `work()` would wait for the very generation being watched."""

    def __init__(self, lm) -> None:
        self.lm, self.changes, self._stop = lm, [(time.perf_counter(), lm._work.decoded_tokens)], False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            d = self.lm._work.decoded_tokens
            if d != self.changes[-1][1]:
                self.changes.append((time.perf_counter(), d))
            time.sleep(0.002)

    def last_change_once_quiet(self, quiet: float, deadline: float) -> float | None:
        """Wait until the counter has not changed for `quiet` s; the time of its last change, None at `deadline`."""
        while time.perf_counter() < deadline:
            last = self.changes[-1][0]
            if time.perf_counter() - last >= quiet:
                return last
            time.sleep(0.05)
        return None

    def close(self) -> None:
        self._stop = True
        self._thread.join()


def test_disconnected_client_stops_its_work():
    """A client that leaves: its generation stops before the next decode step (completions and chat), a request
    whose client left while waiting never runs, and the next request is served at once. Real uvicorn on 127.0.0.1
    and the tiny model, in-process so the model's decode counter can be watched."""
    from dlc.lm.embedded import EmbeddedLM
    from dlc.server.app import Server, bind_socket, create_app

    lm = EmbeddedLM("tiny", n_ctx=2048, n_threads=1)
    srv = Server(create_app(lm, "tiny"), bind_socket("127.0.0.1", 0))
    url = srv.start()
    mon = _Decodes(lm)
    try:
        # the time the long request takes for a client that stays, from 100 of its tokens
        t0 = time.perf_counter()
        r = _post(url, "/completions", {**LONG, "max_tokens": 100})
        full = (time.perf_counter() - t0) / 100 * LONG["max_tokens"]
        assert r["choices"][0]["finish_reason"] == "length" and r["usage"]["completion_tokens"] == 100
        first = r["choices"][0]["text"]
        for path, body in (("/completions", LONG), ("/chat/completions", LONG_CHAT)):
            d0 = lm._work.decoded_tokens
            left = _leave_while_running(url, path, body)
            stopped = mon.last_change_once_quiet(1.0, deadline=left + min(full / 4, 20.0))
            assert stopped is not None, f"{path}: still decoding {min(full / 4, 20.0):.0f} s after the client left"
            decoded = lm._work.decoded_tokens - d0
            # prompt + the tokens of ~0.5 s, nothing of the queued request, far from the 2000 asked for
            assert decoded < LONG["max_tokens"] / 4, decoded
            # the next request is served at once
            t0 = time.perf_counter()
            r = _post(url, "/completions", SHORT)
            latency = time.perf_counter() - t0
            assert r["choices"][0]["text"]
            print(f"{path}: the client left after 0.5 s, decoding stopped {stopped - left:+.3f} s after, "
                  f"{decoded} tokens decoded (the whole request: ~{full:.0f} s); the next request took {latency:.3f} s")
        # the cancelled requests left nothing behind: the first request, again, gives the same text
        assert _post(url, "/completions", {**LONG, "max_tokens": 100})["choices"][0]["text"] == first
    finally:
        mon.close()
        srv.stop()
        lm.close()


def test_dlc_serve_serves_the_next_request_when_a_client_leaves(serve):
    """`dlc serve` itself (a subprocess): a request sent right after a long request's client left is answered in
    about its own time, not after the long request (~10 s here)."""
    t0 = time.perf_counter()
    _post(serve, "/completions", SHORT)
    alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = _post(serve, "/completions", {**LONG, "max_tokens": 50})
    assert r["choices"][0]["finish_reason"] == "length"
    full = (time.perf_counter() - t0) / 50 * 480
    _send_and_leave(serve, "/completions", {**LONG, "max_tokens": 480}, 0.5)       # n_ctx 512: 480 tokens, ~10 s
    t0 = time.perf_counter()
    r = httpx.post(serve + "/completions", json=SHORT, timeout=full * 3)
    latency = time.perf_counter() - t0
    assert r.status_code == 200 and latency < min(full / 4, alone + 3.0), (latency, alone, full)
