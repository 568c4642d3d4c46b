"""The wire format of the OpenAI-compatible backend: chat messages, and the pure parsers of its answers (raise
`MalformedResponse`, which the transport retries).

Scoring (log p(continuation | prompt), paper Eq. 2-3) follows the vLLM contract: one `/v1/completions` request with
`prompt = context + continuation, echo=True, logprobs=1, max_tokens=1` (never 0: vLLM and llama.cpp treat 0
differently), and the continuation's tokens are found by their `text_offset`s (`align_continuation`): every prompt
token whose text ends after the context belongs to the continuation. A token that straddles the boundary (a BPE merge
across it) is counted as a continuation token, so no continuation character goes unscored.
"""
from __future__ import annotations

import math
from typing import Any

from dlc.errors import DlcLMError
from dlc.lm.base import ChatPrompt, GenerateResult, ScoreResult
from dlc.lm.openai_backend.probe import MalformedResponse


def _messages(prompt: ChatPrompt) -> list[dict[str, str]]:
    msgs = []
    if prompt.system is not None:
        msgs.append({"role": "system", "content": prompt.system})
    msgs.append({"role": "user", "content": prompt.user})
    return msgs


def _usage(data: dict[str, Any]) -> tuple[int, int]:
    u = data.get("usage")
    if not isinstance(u, dict):
        return 0, 0
    p, c = u.get("prompt_tokens", 0), u.get("completion_tokens", 0)
    return (p if isinstance(p, int) else 0), (c if isinstance(c, int) else 0)


def _sorted_choices(data: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(data["choices"], key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)


def _parse_completion(data: dict[str, Any]) -> GenerateResult:
    texts, reasons = [], []
    for c in _sorted_choices(data):
        if not isinstance(c.get("text"), str):
            raise MalformedResponse("a completion choice has no 'text' string")
        texts.append(c["text"])
        reasons.append(str(c.get("finish_reason") or ""))
    p, k = _usage(data)
    return GenerateResult(texts=tuple(texts), prompt_tokens=p, completion_tokens=k, finish_reasons=tuple(reasons))


def _parse_chat(data: dict[str, Any]) -> GenerateResult:
    texts, reasons = [], []
    for c in _sorted_choices(data):
        msg = c.get("message")
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            raise MalformedResponse("a chat choice has no 'message.content' string")
        texts.append(msg["content"])
        reasons.append(str(c.get("finish_reason") or ""))
    p, k = _usage(data)
    return GenerateResult(texts=tuple(texts), prompt_tokens=p, completion_tokens=k, finish_reasons=tuple(reasons))


def _parse_completion_top(data: dict[str, Any]) -> dict[str, float]:
    lp = data["choices"][0].get("logprobs")
    tl = lp.get("top_logprobs") if isinstance(lp, dict) else None
    if not isinstance(tl, list) or not tl or not isinstance(tl[0], dict):
        raise MalformedResponse("no 'logprobs.top_logprobs' in the completion")
    return {str(t): float(v) for t, v in tl[0].items()}


def _parse_chat_top(data: dict[str, Any]) -> dict[str, float]:
    lp = data["choices"][0].get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        raise MalformedResponse("no 'logprobs.content' in the chat completion")
    return {str(t["token"]): float(t["logprob"]) for t in content[0].get("top_logprobs") or []}


def align_continuation(text: str, ctx_len: int, choice: dict[str, Any]) -> ScoreResult:
    """The continuation's tokens of an echo choice for `text` (= context + continuation, context of `ctx_len`
    characters), found by text offsets (vLLM contract).

    Prompt tokens are those starting before the end of `text` (the generated token starts at its end). When the
    token texts concatenate exactly to `text`, offsets are recomputed from their lengths (some servers report byte
    offsets). The continuation starts at the first token whose text ends after `ctx_len`."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        raise MalformedResponse("echo choice has no 'logprobs' object")
    toks, lps, offs = lp.get("tokens"), lp.get("token_logprobs"), lp.get("text_offset")
    if not (isinstance(toks, list) and isinstance(lps, list) and isinstance(offs, list)):
        raise MalformedResponse("echo logprobs lack tokens / token_logprobs / text_offset lists")
    if not len(toks) == len(lps) == len(offs):
        raise MalformedResponse("echo logprobs lists have different lengths")
    out = choice.get("text")
    if not isinstance(out, str) or not out.startswith(text):
        raise MalformedResponse("the echoed text does not start with the prompt (echo ignored?)")
    if not all(isinstance(o, int) for o in offs) or any(b < a for a, b in zip(offs, offs[1:])):
        raise MalformedResponse("text_offset is not a non-decreasing list of integers")
    n = sum(1 for o in offs if o < len(text))
    if n == 0:
        raise MalformedResponse("no echoed prompt tokens")
    if all(isinstance(t, str) for t in toks[:n]) and "".join(toks[:n]) == text:
        offs = [0] * n
        pos = 0
        for i in range(n):
            offs[i] = pos
            pos += len(toks[i])
    ends = [offs[i + 1] if i + 1 < n else len(text) for i in range(n)]
    first = next((i for i in range(n) if ends[i] > ctx_len), None)
    if first is None:
        raise MalformedResponse("no echoed token covers the continuation")
    values: list[float] = []
    for i in range(first, n):
        v = lps[i]
        if v is None:
            if i == 0:
                raise DlcLMError("cannot score a continuation that starts the text: the first token of an echo has "
                                 "no log-prob", code="E643", hint="score a continuation after a non-empty context")
            raise MalformedResponse(f"echoed token {i} has no log-prob")
        if not isinstance(v, (int, float)) or math.isnan(v) or v > 1e-6:
            raise MalformedResponse(f"echoed token {i} has an invalid log-prob {v!r}")
        values.append(float(min(v, 0.0)) if v != -math.inf else -math.inf)
    tokens = tuple(str(t) for t in toks[first:n])
    return ScoreResult(logprobs=tuple(values), tokens=tokens, prompt_tokens=first)
