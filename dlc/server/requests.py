"""`dlc serve`'s request bodies and errors: what a client may send (pydantic models, checked before any model work)
and the OpenAI-shaped error every refusal becomes (`{"error": {"message", "type", "param", "code"}}`)."""
from __future__ import annotations

from typing import Any, Literal, Sequence

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dlc.lm.base import ChatPrompt
from dlc.textcheck import find_bad_text


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status, content={"error": {
            "message": self.message, "type": self.type, "param": self.param, "code": self.code}})


class _Text(BaseModel):
    """A request body whose strings must be text: a `\\ud800` escape (a lone surrogate) is a 400 naming the field,
    not a UnicodeEncodeError (HTTP 500) in the tokenizer."""

    @model_validator(mode="after")
    def _valid_text(self) -> "_Text":
        bad = find_bad_text(self.model_dump())
        if bad is not None:
            raise ValueError(f"{bad} is not valid text (a lone UTF-16 surrogate)")
        return self


# strict: a JSON type other than the field's is a 400, as OpenAI's schema check ("max_tokens": "5" or true, and
# "logprobs": true for an integer, used to be coerced to 5, 1 and 1); an integer stays acceptable for a float
STRICT = ConfigDict(extra="ignore", strict=True)
MAX_CHOICES = 1024    # prompts x n of one completion request: each choice is held until the response is sent


class _Common(_Text):
    model_config = STRICT

    model: str | None = None
    n: int = Field(1, ge=1, le=128)
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)   # OpenAI's default
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: int | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = None
    stream: bool = False
    # OpenAI parameters that would change the result and that dlc serve does not implement: refused when set to
    # anything but their no-op value, rather than dropped without a word (other unknown keys are ignored)
    logit_bias: dict[str, Any] | None = None
    best_of: int | None = None
    suffix: str | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    functions: list[Any] | None = None
    top_k: int | None = None                  # vLLM's sampling extensions
    repetition_penalty: float | None = None
    min_tokens: int | None = None

    @model_validator(mode="after")
    def _unsupported(self) -> "_Common":
        for name, noop in (("logit_bias", {}), ("best_of", self.n), ("suffix", ""), ("tools", []),
                           ("response_format", {"type": "text"}), ("presence_penalty", 0), ("frequency_penalty", 0),
                           ("functions", []), ("top_k", -1), ("repetition_penalty", 1), ("min_tokens", 0)):
            value = getattr(self, name)
            if value is not None and value != noop:
                raise ApiError(400, f"{name} is not supported by dlc serve", param=name)
        return self

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)


class CompletionBody(_Common):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0)    # at most the server's max_logprobs


class Message(BaseModel):
    model_config = STRICT

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = [p.get("text") for p in self.content if isinstance(p, dict) and p.get("type") == "text"]
        if len(parts) != len(self.content):
            raise ApiError(400, "only text content parts are supported", param="messages")
        if not all(isinstance(p, str) for p in parts):     # was str(): None, 5 and {"a": 1} became prompt text
            raise ApiError(400, "a text content part needs `text`, a string", param="messages")
        return "".join(parts)  # type: ignore[arg-type]


class ChatBody(_Common):
    messages: list[Message]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> "ChatBody":
        if self.top_logprobs is not None and not self.logprobs:   # OpenAI: 400, not silently ignored
            raise ApiError(400, "top_logprobs needs logprobs = true", param="top_logprobs")
        return self


class TemplateBody(_Text):
    model_config = STRICT

    messages: list[Message]


def chat_prompt(messages: Sequence[Message]) -> ChatPrompt:
    """[system?] user [assistant?] -> ChatPrompt(user, system, prefix). Multi-turn chats are not supported
    (ChatPrompt is a single turn, dlc.lm.base)."""
    msgs = list(messages)
    system = None
    if msgs and msgs[0].role in ("system", "developer"):
        system = msgs.pop(0).text()
    prefix = ""
    if msgs and msgs[-1].role == "assistant":
        prefix = msgs.pop().text()
    if len(msgs) != 1 or msgs[0].role != "user":
        raise ApiError(400, "messages must be one user message, optionally after a system message and before a "
                            "final assistant message (the start of the reply)", param="messages")
    return ChatPrompt(user=msgs[0].text(), system=system, prefix=prefix)
