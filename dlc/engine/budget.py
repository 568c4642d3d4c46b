"""Context budgeting of backward prompts: a proposal or posterior prompt the model's context cannot hold is made
smaller until it fits, instead of aborting the fit (E641 embedded, E623 OpenAI-compatible server).

The backend is the judge of "fits" (its own tokenizer and context size: nothing is estimated here). A batch that
fails with a context error is sent again request by request; each over-long request is rebuilt by the caller's
`shrink(j, attempt)` -- the prompt proposal shows fewer examples (prompts.propose), the posterior prompt clips the
texts of its example (hidden.infer_hidden: `clip_text`) -- until it fits, and what was cut is recorded by the caller
in the trace. Only when the smallest version (one example shown, texts clipped to a few words) still does not fit
is the context error raised. Requests that fit are never changed, so a run that fits is exactly as before.
"""
from __future__ import annotations

from typing import Callable, Sequence

from dlc.engine.forward import generate_batch
from dlc.errors import DlcLMError
from dlc.lm.base import LM, GenerateRequest, GenerateResult

CONTEXT_ERRORS = ("E641", "E623")     # embedded / OpenAI-compatible: the prompt is longer than the context
MIN_CLIP = 64                         # characters a clipped text keeps at the least


def is_context_error(e: DlcLMError) -> bool:
    return e.code in CONTEXT_ERRORS


def generate_fitting(lm: LM, requests: Sequence[GenerateRequest], node: str,
                     shrink: Callable[[int, int], GenerateRequest | None], what: str
                     ) -> tuple[list[GenerateResult], list[int]]:
    """Generate `requests` (one batched call when they all fit); returns the results and, per request, how many
    times it was shrunk (0: sent as given). `shrink(j, attempt)` returns request j made smaller for the
    attempt-th time (1, 2, ...), or None when it cannot be made smaller: then the context error is raised, saying
    that even `what` at its smallest does not fit."""
    reqs = list(requests)
    try:
        return generate_batch(lm, reqs, node), [0] * len(reqs)
    except DlcLMError as e:
        if not is_context_error(e):
            raise
    results: list[GenerateResult] = []
    steps: list[int] = []
    for j, r in enumerate(reqs):
        attempt = 0
        while True:
            try:
                results.append(generate_batch(lm, [r], node)[0])
                steps.append(attempt)
                break
            except DlcLMError as e:
                if not is_context_error(e):
                    raise
                attempt += 1
                smaller = shrink(j, attempt)
                if smaller is None:
                    raise DlcLMError(f"{e.message} (even {what} at its smallest)", code=e.code, node=node,
                                     hint=e.hint) from None
                r = smaller
    return results, steps


def clip_text(text: str, limit: int) -> str:
    """`text` cut to at most about `limit` characters, at a word boundary, marked with " [...]" (the text is shown
    to a backward prompt, never scored)."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    sp = cut.rfind(" ")
    if sp > limit // 2:
        cut = cut[:sp]
    return cut.rstrip() + " [...]"


def clip_limit(texts: Sequence[str], attempt: int) -> int | None:
    """The character limit of the attempt-th clipping: the longest text halved `attempt` times, or None once
    that is under MIN_CLIP (nothing left worth showing)."""
    longest = max((len(t) for t in texts), default=0)
    limit = longest >> attempt
    return limit if limit >= MIN_CLIP else None


__all__ = ["generate_fitting", "clip_text", "clip_limit", "is_context_error", "CONTEXT_ERRORS"]
