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


class _Common(_Text):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    n: int = Field(1, ge=1, le=128)
    temperature: float = Field(1.0, ge=0.0, le=2.0)   # OpenAI's default
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = None
    stream: bool = False

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)


class CompletionBody(_Common):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0)    # at most the server's max_logprobs


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = [p.get("text") for p in self.content if isinstance(p, dict) and p.get("type") == "text"]
        if len(parts) != len(self.content):
            raise ApiError(400, "only text content parts are supported", param="messages")
        return "".join(str(p) for p in parts)


class ChatBody(_Common):
    messages: list[Message]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)


class TemplateBody(_Text):
    model_config = ConfigDict(extra="ignore")

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
