"""A deterministic, scripted in-memory LM implementing `dlc.lm.base.LM`, for engine tests.

Outputs and log-probs are either given by rule functions or derived from sha256 of the request, so the same request
always gets the same answer (like a cached real model). Every request is logged in `calls` in order, which lets tests
check the exact sequence of LLM calls the engine makes. It is for engine arithmetic only: real behaviour is tested
against the embedded model.

It is also an ordinary backend: `model NAME { backend = scripted }` (or `--set model.default.backend=scripted`) makes
`dlc.lm.registry.open_backend` open one, behind the same cache and accounting as any model, so the product around the
engine (runs, resume, exit codes, reports) is tested through the path users take. `delay = seconds` (a setting of
this backend only) sleeps that long in every batch call, which lets a test interrupt a fit inside an iteration.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from dlc.lm.base import (Capabilities, ChatPrompt, GenerateRequest, GenerateResult, Prompt, ScoreRequest,
                         ScoreResult, Usage)

GenerateFn = Callable[[str, GenerateRequest, int], "str | None"]
ScoreFn = Callable[[str, str], "float | Sequence[float] | None"]


def prompt_text(prompt: Prompt) -> str:
    """The text a scripted rule sees: the user message followed by the assistant prefix (or the raw string)."""
    if isinstance(prompt, ChatPrompt):
        return prompt.user + (("\n" + prompt.prefix) if prompt.prefix else "")
    return prompt


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode("utf-8")).digest()[:8], "big")


@dataclass(frozen=True)
class Call:
    """One logged request: kind ("generate" | "score"), tag, prompt text and continuation/seed/temperature/cap."""

    kind: str
    tag: str
    prompt: str
    continuation: str = ""
    seed: int = 0
    temperature: float = 0.0
    max_tokens: int = 0


@dataclass
class ScriptedLM:
    """generate_fn(prompt_text, request, sample_index) -> text or None (default: a hash-named text);
    score_fn(prompt_text, continuation) -> total log-prob (spread over the words), per-token list, or None."""

    model_id: str = "scripted"
    generate_fn: GenerateFn | None = None
    score_fn: ScoreFn | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    usage: Usage = field(default_factory=Usage)
    calls: list[Call] = field(default_factory=list)
    batches: list[tuple[str, str, int]] = field(default_factory=list)   # (kind, first tag, size) per batch call
    closed: bool = False
    delay: float = 0.0          # seconds slept per batch call (generate or score)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        if self.delay > 0:
            time.sleep(self.delay)
        if requests:
            self.batches.append(("generate", requests[0].tag, len(requests)))
        out = []
        for r in requests:
            text = prompt_text(r.prompt)
            self.calls.append(Call("generate", r.tag, text, seed=r.seed, temperature=r.temperature,
                                   max_tokens=r.max_tokens))
            texts = []
            for i in range(r.n):
                t = self.generate_fn(text, r, i) if self.generate_fn else None
                if t is None:
                    t = f"gen{_h(self.model_id, text, r.seed, i, r.temperature) % 10**6:06d}"
                for s in r.stop:
                    if s and s in t:
                        t = t[:t.index(s)]
                words = t.split()
                if len(words) > r.max_tokens:
                    t = " ".join(words[:r.max_tokens])
                texts.append(t)
            ntok = sum(max(1, len(t.split())) for t in texts)
            ptok = len(text.split())
            self.usage.add(r.tag, calls=1, prompt_tokens=ptok, completion_tokens=ntok)
            out.append(GenerateResult(texts=tuple(texts), prompt_tokens=ptok, completion_tokens=ntok,
                                      finish_reasons=("stop",) * r.n))
        return out

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        if self.delay > 0:
            time.sleep(self.delay)
        if requests:
            self.batches.append(("score", requests[0].tag, len(requests)))
        out = []
        for r in requests:
            text = prompt_text(r.prompt)
            self.calls.append(Call("score", r.tag, text, continuation=r.continuation))
            tokens = r.continuation.split() or [r.continuation]
            v = self.score_fn(text, r.continuation) if self.score_fn else None
            if v is None:
                v = -((_h(self.model_id, text, r.continuation) % 1000) / 250.0 + 0.01) * len(tokens)
            if isinstance(v, (int, float)):
                lps = tuple(float(v) / len(tokens) for _ in tokens)
            else:
                lps = tuple(float(x) for x in v)
            ptok = len(text.split())
            self.usage.add(r.tag, calls=1, prompt_tokens=ptok + len(lps))
            out.append(ScoreResult(logprobs=lps, tokens=tuple(tokens[:len(lps)]), prompt_tokens=ptok))
        return out

    def close(self) -> None:
        self.closed = True
