"""The backend contract: typed requests and results, batch calls, capabilities and usage counters.

DLN needs samples (proposals at T~0.7, n per input, with stop sequences), greedy outputs, and the *exact*
log-probability of a given continuation: log p(y | .) for labels and log p(h | .) for whole hidden texts
(paper Eq. 2-3). `score` returns per-token log-probs; the caller chooses sum or mean. Label distributions are
computed by scoring every verbalizer as a continuation (`dlc.engine.labels`), never from truncated top-k lists.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence, Union, runtime_checkable


@dataclass(frozen=True)
class ChatPrompt:
    """A single-turn chat: rendered through the model's own chat template, whose markup alone produces special tokens
    (text in `user`, `system` and `prefix` that spells one, e.g. `<|im_start|>`, stays plain text).

    `prefix` is the start of the assistant's reply (e.g. "The answer is ("): generation continues after it and
    scored continuations follow it. `system=None` keeps the chat template's default system message."""

    user: str
    system: str | None = None
    prefix: str = ""


class ModelText(str):
    """A raw prompt already in the model's own format: special-token text in it (`<|im_start|>`) becomes control
    tokens. Only `dlc serve`'s /v1/completions uses it (a completion prompt is model-ready text there, as in vLLM and
    llama-server: clients score chat prompts on the /apply-template rendering). A plain `str` prompt, and every
    part of a ChatPrompt, is text: only the chat template's own markup produces special tokens."""

    __slots__ = ()


# A raw string is sent verbatim as a completion prompt (no chat template; its text is tokenized as plain text).
Prompt = Union[str, ChatPrompt]


@dataclass(frozen=True)
class GenerateRequest:
    prompt: Prompt
    max_tokens: int = 64                   # always >= 1 (llama.cpp treats <= 0 as "fill the context")
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    n: int = 1                             # samples; sample i uses seed (seed, i): distinct cache entries
    seed: int = 0
    tag: str = ""                          # accounting only (graph node / purpose); not part of the cache key


@dataclass(frozen=True)
class GenerateResult:
    texts: tuple[str, ...]                 # n completions (without the prompt or the chat prefix)
    prompt_tokens: int = 0
    completion_tokens: int = 0             # summed over the n samples
    finish_reasons: tuple[str, ...] = ()
    cached: bool = False


class Cancelled(Exception):
    """The caller withdrew the request (`dlc serve`: its client disconnected): raised by a backend between two
    model steps, after it has freed what the request held, so the next request starts at once."""


@dataclass(frozen=True)
class ScoreRequest:
    """log p(continuation | prompt) by teacher forcing."""

    prompt: Prompt
    continuation: str
    tag: str = ""


@dataclass(frozen=True)
class ScoreResult:
    logprobs: tuple[float, ...]            # one per continuation token
    tokens: tuple[str, ...] = ()
    prompt_tokens: int = 0
    cached: bool = False

    @property
    def n_tokens(self) -> int:
        return len(self.logprobs)

    @property
    def logp_sum(self) -> float:
        return math.fsum(self.logprobs)

    @property
    def logp_mean(self) -> float:
        return self.logp_sum / max(1, len(self.logprobs))


@dataclass(frozen=True)
class Capabilities:
    """What an endpoint can do, probed once and recorded in the run directory."""

    prompt_logprobs: bool = True           # exact teacher-forced scoring (echo + logprobs or embedded)
    top_logprobs: int = 0                  # top-k log-probs of generated tokens (0: none)
    n_per_request: bool = True
    batch_prompts: bool = True
    chat: bool = True                      # can render chat prompts
    seed: bool = True


@dataclass
class Usage:
    """Counters, in total and per tag (graph node / purpose)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    per_tag: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, tag: str, *, calls: int = 0, prompt_tokens: int = 0, completion_tokens: int = 0,
            cache_hits: int = 0) -> None:
        self.calls += calls
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cache_hits += cache_hits
        t = self.per_tag.setdefault(tag or "-", {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                                 "cache_hits": 0})
        t["calls"] += calls
        t["prompt_tokens"] += prompt_tokens
        t["completion_tokens"] += completion_tokens
        t["cache_hits"] += cache_hits

    def to_json(self) -> dict[str, object]:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cache_hits": self.cache_hits,
                "per_tag": self.per_tag}


class PrefixTrie:
    """Counts the distinct token prefixes of every sequence inserted: the fewest token evaluations any evaluator
    with perfect prefix sharing needs for those sequences (the benchmark's "minimum" cost column)."""

    def __init__(self) -> None:
        self._edges: dict[tuple[int, int], int] = {}

    def insert(self, tokens: Sequence[int]) -> None:
        node = 0
        edges = self._edges
        for t in tokens:
            key = (node, int(t))
            nxt = edges.get(key)
            if nxt is None:
                nxt = edges[key] = len(edges) + 1
            node = nxt

    def __len__(self) -> int:
        return len(self._edges)


@dataclass
class BackendWork:
    """What a local backend really computed, as opposed to what was requested (`Usage`).

    `decoded_tokens`: tokens sent through the model (llama_decode rows). `unique_tokens`: the minimum for the same
    requests, i.e. distinct prefixes of every (prompt + continuation-but-last) sequence (tracked only when
    `track_prefixes` is on: it costs memory proportional to the distinct tokens). `seconds`: wall time spent inside
    the backend's generate/score calls (dlc's own tokenising, logits copies and sampling included);
    `decode_seconds`: the part of it inside llama.cpp's decode, i.e. the model's own compute. A caller's overhead is
    its wall time minus either, whichever question it asks ("time outside the backend" vs "outside the model")."""

    decoded_tokens: int = 0
    unique_tokens: int | None = None
    seconds: float = 0.0
    decode_seconds: float = 0.0
    # per phase ("generate:posterior", "score:score", ...: the call's kind and the purpose part of its first
    # request's tag): {"seconds", "decoded_tokens", "completion_tokens"} — bench/ throughput per phase
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    # per phase, its llama_decode calls by shape: "one:32" = 17-32 rows of a single sequence (prompt evaluation, an
    # exact score's continuation), "many:16" = 9-16 rows over several sequences (a batched generation step) ->
    # {"tokens", "seconds", "calls", "logits", "context"}: "logits" = rows whose logits were read (llama.cpp
    # projects only those onto the vocabulary), "context" = the rows' KV positions summed (context / tokens = the
    # rows' mean position: a row at position p attends to p + 1 entries, itself included). A decode's cost depends on its rows, on whether they share one
    # sequence, on how many want logits and on how long the context is, so bench/batching.py compares each phase
    # with llama.cpp's best for the shapes it really decoded.
    decode_shapes: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def add_phase(self, phase: str, seconds: float, decoded: int, completion: int = 0) -> None:
        row = self.phases.setdefault(phase, {"seconds": 0.0, "decoded_tokens": 0, "completion_tokens": 0})
        row["seconds"] += seconds
        row["decoded_tokens"] += decoded
        row["completion_tokens"] += completion

    def add_decode(self, phase: str, rows: int, sequences: int, seconds: float, logits: int = 0,
                   context: int = 0) -> None:
        """Book one llama_decode of `rows` rows over `sequences` sequences under its shape (rows rounded up to a
        power of two), with how many of its rows wanted logits and the sum of its rows' positions."""
        key = f"{'one' if sequences == 1 else 'many'}:{1 << max(0, rows - 1).bit_length()}"
        row = self.decode_shapes.setdefault(phase, {}).setdefault(
            key, {"tokens": 0, "seconds": 0.0, "calls": 0, "logits": 0, "context": 0})
        row["tokens"] += rows
        row["seconds"] += seconds
        row["calls"] += 1
        row["logits"] += logits
        row["context"] += context

    def to_json(self) -> dict[str, object]:
        return {"decoded_tokens": self.decoded_tokens, "unique_tokens": self.unique_tokens,
                "seconds": round(self.seconds, 3), "decode_seconds": round(self.decode_seconds, 3),
                "phases": {k: {kk: round(v, 3) for kk, v in row.items()} for k, row in sorted(self.phases.items())},
                "decode_shapes": {p: {k: {kk: round(v, 3) for kk, v in r.items()} for k, r in sorted(t.items())}
                                  for p, t in sorted(self.decode_shapes.items())}}


@runtime_checkable
class LM(Protocol):
    """A language model. Batch methods return one result per request, in order."""

    model_id: str                          # identifies the weights (e.g. "embedded:tiny@<sha256>"); cache namespace
    capabilities: Capabilities
    usage: Usage

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]: ...

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]: ...

    def close(self) -> None: ...
