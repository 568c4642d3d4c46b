"""An OpenAI-compatible backend (`openai` client): OpenAI, Azure's v1 API, vLLM, llama.cpp servers, `dlc serve`.

Scoring (log p(continuation | prompt), paper Eq. 2-3) follows the vLLM contract: one `/v1/completions` request with
`prompt = context + continuation, echo=True, logprobs=1, max_tokens=1` (never 0: vLLM and llama.cpp treat 0
differently), and the continuation's tokens are found by their `text_offset`s: every prompt token whose text ends
after the context belongs to the continuation. A token that straddles the boundary (a BPE merge across it) is
counted as a continuation token, so no continuation character goes unscored.

Chat prompts are generated with `/v1/chat/completions`; when they need an assistant prefix, or are scored, the
client needs the exact rendered text, which it asks the server for (`POST /apply-template`, llama.cpp server and
`dlc serve`). Endpoints are probed once (`probe`); what an algorithm needs and an endpoint lacks is a clear
`DlcLMError` naming it (E628), never a silent approximation. Without prompt log-probs the engine's choice layers
answer by generation (greedy text mapped to a label, dlc.engine.forward.label_of_text) and prompts are scored by
accuracy; `first_token_top_logprobs` (first-token top-k, dln-reference §3.2) is an approximation offered to callers.

Scale-out: several base URLs serve one model (e.g. a vLLM cluster): requests go round-robin to replicas that are
healthy; a replica that fails (connection error, timeout, 5xx, garbage) is set aside with an exponential cool-down,
so one replica down does not stop a fit. At most `max_concurrency` requests are in flight per replica. Each request
has a hard timeout; 429/5xx/connection errors/timeouts/malformed answers are retried with exponential backoff and
jitter (tenacity), immediately on another replica when one is healthy; 4xx request errors are not retried and become
a one-line DlcLMError (context too long: with the sizes). The API key is read from the environment by the caller
(`dlc.lm.registry`), held only in the HTTP client, and never logged, stored, or put into errors or `model_id`.

Error codes: E620 configuration, E621 unreachable/timeout, E622 server error or rate limit after retries,
E623 context too long, E624 authentication, E625 model/endpoint not found, E626 request rejected,
E627 malformed response after retries, E628 capability missing.

Layout: `transport` (replicas, retries with backoff, fail-over, per-replica probing), `wire` (messages and the pure
parsers of answers, `align_continuation`), `probe` (what an endpoint can do, asked once) and `client` (`OpenAILM`:
generate, score, chat rendering, the first-token fallback).
"""
from __future__ import annotations

from dlc.lm.openai_backend.client import OpenAILM
from dlc.lm.openai_backend.probe import MalformedResponse
from dlc.lm.openai_backend.wire import align_continuation

__all__ = ["OpenAILM", "MalformedResponse", "align_continuation"]
