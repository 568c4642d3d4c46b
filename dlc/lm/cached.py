"""`CachedLM`: any LM behind the disk cache, with usage accounting per tag (graph node) and a token budget.

Every request is looked up by `dlc.lm.cache.request_key` of its whole canonical form; only misses reach the model,
in one batch call (so the embedded backend still shares prompt prefixes among them). `usage` counts what was really
spent — calls, prompt tokens, completion tokens of misses — and the hits, in total and per tag. A `Budget` shared
by all models of a fit turns "this many tokens" into a clean stop: once it is spent, the next uncached call raises
`DlcFitError` E730 (the trainer also stops between iterations on the same counters).
"""
from __future__ import annotations

import threading
from dataclasses import asdict, replace
from typing import Any, Callable, Sequence

from dlc.errors import DlcFitError
from dlc.lm.base import (LM, ChatPrompt, GenerateRequest, GenerateResult, Prompt, ScoreRequest, ScoreResult,
                         Usage)
from dlc.lm.cache import DiskCache, request_key
from dlc.textcheck import bad_char, valid_text

KEY_VERSION = 1  # bump when the meaning of a cached value changes


class Budget:
    """A token cap shared by several LMs (forward and backward models of one fit). 0 or less: no cap."""

    def __init__(self, max_tokens: int = 0) -> None:
        self.max_tokens = int(max_tokens)
        self.spent = 0
        self._lock = threading.Lock()

    def charge(self, tokens: int) -> None:
        with self._lock:
            self.spent += int(tokens)

    @property
    def exhausted(self) -> bool:
        return self.max_tokens > 0 and self.spent >= self.max_tokens

    def check(self) -> None:
        if self.exhausted:
            raise DlcFitError(f"token budget exhausted: {self.spent} of {self.max_tokens} tokens spent",
                              code="E730", hint="raise budget_tokens (fit setting / --set fit.budget_tokens=N) "
                                                "or resume the run with a larger budget")


def prompt_payload(prompt: Prompt, rendered: str | None) -> dict[str, Any]:
    """The prompt as it enters a cache key: its structure, and the exact text the model saw when known."""
    if isinstance(prompt, ChatPrompt):
        d: dict[str, Any] = {"chat": asdict(prompt)}
    else:
        d = {"raw": prompt}
    if rendered is not None:
        d["rendered"] = rendered
    return d


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise TypeError("not a count")
    return v


def _strs(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TypeError("not a list of strings")
    return tuple(v)


def _generate_hit(hit: Any, n: int) -> GenerateResult:
    """A cached generate row as written by CachedLM.generate; TypeError/KeyError/ValueError when it is not one."""
    texts = _strs(hit["texts"])
    if len(texts) != n:
        raise ValueError(f"{len(texts)} texts for n = {n}")
    return GenerateResult(texts=texts, prompt_tokens=_int(hit["prompt_tokens"]),
                          completion_tokens=_int(hit["completion_tokens"]),
                          finish_reasons=_strs(hit["finish_reasons"]), cached=True)


def _logprob(x: Any) -> float:
    # canonical JSON stores a non-finite float as null: a log-probability that was -inf
    if x is None:
        return float("-inf")
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError("not a log-probability")
    return float(x)


def _score_hit(hit: Any, _: Any) -> ScoreResult:
    """A cached score row as written by CachedLM.score; TypeError/KeyError/ValueError when it is not one."""
    logprobs = hit["logprobs"]
    if not isinstance(logprobs, list):
        raise TypeError("logprobs is not a list")
    tokens = _strs(hit["tokens"])
    return ScoreResult(logprobs=tuple(_logprob(x) for x in logprobs), tokens=tokens,
                       prompt_tokens=_int(hit["prompt_tokens"]), cached=True)


class CachedLM:
    """An `LM` (the protocol) wrapping another: disk cache (optional), accounting per tag, budget (optional)."""

    def __init__(self, inner: LM, cache: DiskCache | None = None, *, budget: Budget | None = None) -> None:
        self.inner = inner
        self.cache = cache
        self.budget = budget
        self.model_id = inner.model_id
        self.capabilities = inner.capabilities
        self.usage = Usage()
        self._lock = threading.Lock()
        # The rendered text is part of the key when the backend renders locally (embedded); remote chat prompts
        # are keyed by their structure (the server's template is fixed by the model id).
        render = getattr(inner, "render", None)
        self._render = render if (callable(render) and inner.model_id.startswith("embedded:")) else None
        self._exact = bool(getattr(inner, "exact", True))

    @property
    def backend(self) -> str:
        return self.model_id.split(":", 1)[0]

    def _base(self, kind: str, prompt: Prompt) -> dict[str, Any]:
        rendered = self._render(prompt) if self._render is not None else None
        d = {"v": KEY_VERSION, "kind": kind, "backend": self.backend, "model": self.model_id,
             "prompt": prompt_payload(prompt, rendered)}
        if not self._exact:     # merged mode (unified KV): scores and texts differ slightly from the exact mode's
            d["scoring"] = "merged"
        return d

    def generate_key(self, r: GenerateRequest) -> str:
        """Key of a generate request: everything but the tag (n and seed included: samples at T > 0 with other
        seeds or counts are other entries)."""
        d = self._base("generate", r.prompt)
        d.update(max_tokens=max(1, int(r.max_tokens)), temperature=float(r.temperature), top_p=float(r.top_p),
                 stop=list(r.stop), n=int(r.n), seed=int(r.seed))
        return request_key(d)

    def score_key(self, r: ScoreRequest) -> str:
        d = self._base("score", r.prompt)
        d["continuation"] = r.continuation
        return request_key(d)

    def _hit(self, key: str, decode: Callable[[Any, Any], Any], expect: Any) -> Any:
        """The decoded cached result of `key`, or None: a miss, or a row of the wrong shape (counted by the cache as
        unreadable; the request goes to the model and its row is rewritten)."""
        if self.cache is None:
            return None
        raw = self.cache.get(key)
        if raw is None:
            return None
        try:
            return decode(raw, expect)
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            self.cache.unreadable_row(key, f"not a cached {decode.__name__.strip('_').split('_')[0]} result: "
                                           f"{type(e).__name__}")
            return None

    # ------------------------------------------------------------------------------------------------ LM API
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        keys = [self.generate_key(r) for r in requests] if self.cache is not None else [""] * len(requests)
        out: list[GenerateResult | None] = [None] * len(requests)
        misses: list[int] = []
        for i, k in enumerate(keys):
            hit = self._hit(k, _generate_hit, max(1, int(requests[i].n)))
            if hit is not None:
                out[i] = hit
                self._count(requests[i].tag, cache_hits=1)
            else:
                misses.append(i)
        if misses:
            if self.budget is not None:
                self.budget.check()
            fresh = [_valid_generation(r) for r in self.inner.generate([requests[i] for i in misses])]
            for i, res in zip(misses, fresh):
                if self.cache is not None:
                    self.cache.put(keys[i], {"texts": list(res.texts), "prompt_tokens": res.prompt_tokens,
                                             "completion_tokens": res.completion_tokens,
                                             "finish_reasons": list(res.finish_reasons)},
                                   kind="generate", model=self.model_id)
                out[i] = replace(res, cached=False)
                self._count(requests[i].tag, calls=1, prompt_tokens=res.prompt_tokens,
                            completion_tokens=res.completion_tokens)
        return [r for r in out if r is not None]

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        keys = [self.score_key(r) for r in requests] if self.cache is not None else [""] * len(requests)
        out: list[ScoreResult | None] = [None] * len(requests)
        misses: list[int] = []
        for i, k in enumerate(keys):
            hit = self._hit(k, _score_hit, None)
            if hit is not None:
                out[i] = hit
                self._count(requests[i].tag, cache_hits=1)
            else:
                misses.append(i)
        if misses:
            if self.budget is not None:
                self.budget.check()
            fresh = [_valid_score(r) for r in self.inner.score([requests[i] for i in misses])]
            for i, res in zip(misses, fresh):
                if self.cache is not None:
                    self.cache.put(keys[i], {"logprobs": list(res.logprobs), "tokens": list(res.tokens),
                                             "prompt_tokens": res.prompt_tokens}, kind="score", model=self.model_id)
                out[i] = replace(res, cached=False)
                # a scored continuation is prompt text too (an API bills echo tokens as prompt tokens)
                self._count(requests[i].tag, calls=1, prompt_tokens=res.prompt_tokens + res.n_tokens)
        return [r for r in out if r is not None]

    def _count(self, tag: str, *, calls: int = 0, prompt_tokens: int = 0, completion_tokens: int = 0,
               cache_hits: int = 0) -> None:
        with self._lock:
            self.usage.add(tag, calls=calls, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                           cache_hits=cache_hits)
        if self.budget is not None and (prompt_tokens or completion_tokens):
            self.budget.charge(prompt_tokens + completion_tokens)

    def close(self) -> None:
        self.inner.close()
        if self.cache is not None:
            self.cache.close()

    def __getattr__(self, name: str) -> Any:
        # backend extras (EmbeddedLM.render/echo/tokenize, OpenAILM probes) stay reachable through the wrapper
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def _valid_generation(res: GenerateResult) -> GenerateResult:
    """A model's texts as valid text: a lone surrogate (a server's `\\ud800` escape) becomes U+FFFD, so the answer
    can be cached, hashed and written like any other (dlc.textcheck)."""
    if all(bad_char(t) is None for t in res.texts):
        return res
    return replace(res, texts=tuple(valid_text(t) for t in res.texts))


def _valid_score(res: ScoreResult) -> ScoreResult:
    """A scored continuation's token texts as valid text (as `_valid_generation`)."""
    if all(not isinstance(t, str) or bad_char(t) is None for t in res.tokens):
        return res
    return replace(res, tokens=tuple(valid_text(t) if isinstance(t, str) else t for t in res.tokens))
