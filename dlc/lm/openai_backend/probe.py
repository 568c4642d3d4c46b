"""Capability probe of an OpenAI-compatible endpoint: what it can do, asked once and recorded.

DLN needs exact log-probabilities of given continuations (log p(y | .) for labels, log p(h | .) for hidden texts,
paper Eq. 2-3). Over HTTP they come only from `/v1/completions` with `echo=True, logprobs=1` (the vLLM contract);
many servers (hosted chat models, some local servers) do not provide them. Instead of discovering that in the middle
of a fit, `probe_endpoint` sends a handful of tiny requests (each `max_tokens=1`) and records:

- `/v1/models`: whether the model is listed, and its context size when the server says (vLLM `max_model_len`);
- prompt log-probs: `/v1/completions` with echo + logprobs returns a teacher-forced log-prob per prompt token
  (first token null) with `text_offset`s;
- top log-probs of a generated token (`logprobs=k`), `n > 1` per request, a list of prompts per request, `seed`;
- `/v1/chat/completions` (chat-only models);
- a chat-template renderer (`POST /apply-template`, llama.cpp server and `dlc serve`): needed to score chat
  prompts exactly, because the client must know the rendered text to align the continuation.

The probe runs over a `Send` callable supplied by the backend, which carries the retry policy: transport faults
(5xx, 429, dropped connections, garbage JSON) are retried there, and only a *well-formed* answer or a 4xx refusal is
read as "capability present/absent" here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable

from dlc.errors import DlcLMError, did_you_mean
from dlc.lm.base import Capabilities

PROBE_TEXT = "The capital of France is Paris. The capital of Italy is"
PROBE_CHAT = "Reply with the single word OK."


class MalformedResponse(ValueError):
    """A response that is not what the API promises (bad JSON, missing fields, wrong counts). Retried by the
    backend; never used."""


# send(method, path, body, check) -> parsed JSON. `path` is relative to the base URL (".../v1") unless it starts
# with "/" (then relative to the server root). `check(data)` raises MalformedResponse for a structurally broken
# answer (so it is retried). A request the server refuses (4xx) raises a non-retryable DlcLMError.
Check = Callable[[Any], None]
Send = Callable[[str, str, "dict[str, Any] | None", "Check | None"], Awaitable[Any]]


@dataclass(frozen=True)
class EndpointInfo:
    """What one base URL can do for one model (recorded in the run directory via `to_json`)."""

    base_url: str
    model: str
    model_listed: bool | None = None       # None: /v1/models not available
    max_model_len: int | None = None       # context size in tokens, when the server reports it
    completions: bool = False
    chat_completions: bool = False
    prompt_logprobs: bool = False          # echo + logprobs gives exact teacher-forced prompt log-probs
    top_logprobs: int = 0                  # top-k of a generated token (0: none)
    n_per_request: bool = False
    batch_prompts: bool = False
    seed: bool = False
    render: str | None = None              # "apply-template" when the server renders its chat template
    notes: tuple[str, ...] = field(default_factory=tuple)

    def capabilities(self) -> Capabilities:
        return Capabilities(prompt_logprobs=self.prompt_logprobs, top_logprobs=self.top_logprobs,
                            n_per_request=self.n_per_request, batch_prompts=self.batch_prompts,
                            chat=self.chat_completions or (self.completions and self.render is not None),
                            seed=self.seed)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


def merge_infos(infos: list[EndpointInfo]) -> EndpointInfo:
    """Replicas of one model: a capability counts only if every probed replica has it (min of top-k)."""
    assert infos, "merge_infos needs at least one probed endpoint"
    first = infos[0]
    lens = [i.max_model_len for i in infos if i.max_model_len]
    return EndpointInfo(
        base_url=",".join(i.base_url for i in infos), model=first.model,
        model_listed=first.model_listed, max_model_len=min(lens) if lens else None,
        completions=all(i.completions for i in infos), chat_completions=all(i.chat_completions for i in infos),
        prompt_logprobs=all(i.prompt_logprobs for i in infos), top_logprobs=min(i.top_logprobs for i in infos),
        n_per_request=all(i.n_per_request for i in infos), batch_prompts=all(i.batch_prompts for i in infos),
        seed=all(i.seed for i in infos),
        render=first.render if all(i.render == first.render for i in infos) else None,
        notes=tuple(n for i in infos for n in i.notes))


def check_choices(n: int | None = None) -> Check:
    """A structural check: a JSON object with a list of `n` (or >= 1) choice objects."""

    def check(data: Any) -> None:
        if not isinstance(data, dict):
            raise MalformedResponse(f"expected a JSON object, got {type(data).__name__}")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
            raise MalformedResponse("response has no 'choices' list")
        if n is not None and len(choices) != n:
            raise MalformedResponse(f"expected {n} choices, got {len(choices)}")

    return check


def _check_models(data: Any) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise MalformedResponse("/models response has no 'data' list")


def _check_render(data: Any) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
        raise MalformedResponse("/apply-template response has no 'prompt' string")


def echo_is_exact(text: str, choice: dict[str, Any]) -> bool:
    """Does an echo choice carry a log-prob for every prompt token after the first, with offsets into `text`?"""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return False
    toks, lps, offs = lp.get("tokens"), lp.get("token_logprobs"), lp.get("text_offset")
    if not (isinstance(toks, list) and isinstance(lps, list) and isinstance(offs, list)):
        return False
    if not (len(toks) == len(lps) == len(offs)) or len(toks) < 3:
        return False
    out = choice.get("text")
    if not isinstance(out, str) or not out.startswith(text):
        return False
    n_prompt = sum(1 for o in offs if isinstance(o, int) and o < len(text))
    if n_prompt < 2:
        return False
    return all(isinstance(v, (int, float)) and v <= 1e-6 for v in lps[1:n_prompt])


async def _try(send: Send, method: str, path: str, body: dict[str, Any] | None, check: Check | None,
               notes: list[str], what: str) -> Any | None:
    """One probe request: the answer, or None (with a note) when the server refuses it: a 4xx, or a server error
    that persists through the retries (some servers answer 500 to an unsupported option such as a prompt list).
    Only an unreachable endpoint (E621), garbage (E627) or rejected credentials (E624) stop the probe."""
    try:
        return await send(method, path, body, check)
    except DlcLMError as e:
        if e.retryable and (e.code != "E622" or "HTTP 429" in e.message):
            raise
        if e.code == "E624":    # rejected credentials are not a missing capability (it used to read as E628)
            raise
        notes.append(f"{what}: {e.message}")
        return None


async def probe_endpoint(send: Send, base_url: str, model: str) -> EndpointInfo:
    """Probe one endpoint (~7 tiny requests). Raises DlcLMError when the model is not served there or when
    the endpoint cannot be reached after the backend's retries."""
    notes: list[str] = []
    listed: bool | None = None
    max_len: int | None = None
    models = await _try(send, "GET", "models", None, _check_models, notes, "/models")
    if models is not None:
        ids = [m.get("id") for m in models["data"] if isinstance(m, dict)]
        if ids:
            listed = model in ids
            if not listed:
                raise DlcLMError(f"model '{model}' is not served at {base_url} (it serves: {', '.join(map(str, ids))})",
                                 code="E625", hint=did_you_mean(model, [str(i) for i in ids])
                                 or "set the model name to one the server lists")
            entry = next(m for m in models["data"] if isinstance(m, dict) and m.get("id") == model)
            for key in ("max_model_len", "context_length", "n_ctx"):
                if isinstance(entry.get(key), int):
                    max_len = entry[key]
                    break

    base = {"model": model, "max_tokens": 1, "temperature": 0.0}
    echo = await _try(send, "POST", "completions", {**base, "prompt": PROBE_TEXT, "echo": True, "logprobs": 1},
                      check_choices(1), notes, "/completions echo")
    completions = echo is not None
    prompt_logprobs = completions and echo_is_exact(PROBE_TEXT, echo["choices"][0])
    if completions and not prompt_logprobs:
        notes.append("/completions echo: no exact prompt log-probs in the answer")
        # echo may be refused while plain completions work (OpenAI's gpt-3.5-turbo-instruct)
    if not completions:
        plain = await _try(send, "POST", "completions", {**base, "prompt": PROBE_TEXT}, check_choices(1), notes,
                           "/completions")
        completions = plain is not None

    top_k = 0
    n_ok = batch_ok = seed_ok = False
    if completions:
        top = await _try(send, "POST", "completions", {**base, "prompt": PROBE_TEXT, "logprobs": 5},
                         check_choices(1), notes, "/completions logprobs=5")
        if top is not None:
            lp = top["choices"][0].get("logprobs")
            tl = lp.get("top_logprobs") if isinstance(lp, dict) else None
            if isinstance(tl, list) and tl and isinstance(tl[0], dict):
                top_k = len(tl[0])
        many = await _try(send, "POST", "completions",
                          {**base, "prompt": PROBE_TEXT, "n": 2, "temperature": 1.0, "seed": 1},
                          check_choices(), notes, "/completions n=2 seed")
        if many is not None:
            n_ok = len(many["choices"]) == 2
            seed_ok = True
        else:
            seeded = await _try(send, "POST", "completions", {**base, "prompt": PROBE_TEXT, "seed": 1},
                                check_choices(), notes, "/completions seed")
            seed_ok = seeded is not None
        batch = await _try(send, "POST", "completions", {**base, "prompt": [PROBE_TEXT, PROBE_CHAT]},
                           check_choices(), notes, "/completions prompt list")
        if batch is not None:
            idx = sorted(c.get("index", -1) for c in batch["choices"])
            batch_ok = idx == [0, 1]

    messages = [{"role": "user", "content": PROBE_CHAT}]
    chat = await _try(send, "POST", "chat/completions", {**base, "messages": messages}, check_choices(), notes,
                      "/chat/completions")
    chat_ok = chat is not None and isinstance(chat["choices"][0].get("message"), dict)
    if chat_ok and not completions:
        top = await _try(send, "POST", "chat/completions",
                         {**base, "messages": messages, "logprobs": True, "top_logprobs": 5},
                         check_choices(), notes, "/chat/completions top_logprobs")
        content = (((top or {}).get("choices") or [{}])[0].get("logprobs") or {}).get("content")
        if isinstance(content, list) and content and isinstance(content[0], dict):
            top_k = len(content[0].get("top_logprobs") or [])
        many = await _try(send, "POST", "chat/completions",
                          {**base, "messages": messages, "n": 2, "temperature": 1.0, "seed": 1},
                          check_choices(), notes, "/chat/completions n=2 seed")
        n_ok = many is not None and len(many["choices"]) == 2
        seed_ok = many is not None

    render = None
    if completions:
        rendered = await _try(send, "POST", "/apply-template", {"messages": messages}, _check_render, notes,
                              "/apply-template")
        if rendered is not None and PROBE_CHAT in rendered["prompt"]:
            render = "apply-template"

    return EndpointInfo(base_url=base_url, model=model, model_listed=listed, max_model_len=max_len,
                        completions=completions, chat_completions=chat_ok, prompt_logprobs=prompt_logprobs,
                        top_logprobs=top_k, n_per_request=n_ok, batch_prompts=batch_ok, seed=seed_ok,
                        render=render, notes=tuple(notes))
