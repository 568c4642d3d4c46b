"""`OpenAILM`: the `dlc.lm.base.LM` interface over the OpenAI-compatible transport — generation (chat or completions),
exact scoring by echo log-probs, the server's chat-template rendering, and the documented first-token fallback.

Chat prompts are generated with `/v1/chat/completions`; when they need an assistant prefix, or are scored, the
client needs the exact rendered text, which it asks the server for (`POST /apply-template`, llama.cpp server and
`dlc serve`). What an algorithm needs and the probed endpoint lacks is a clear `DlcLMError` naming it (E628), never a
silent approximation.
"""
from __future__ import annotations

import asyncio
from typing import Any, Sequence

from dlc.errors import DlcLMError, redact
from dlc.lm.base import ChatPrompt, GenerateRequest, GenerateResult, Prompt, ScoreRequest, ScoreResult, Usage
from dlc.lm.openai_backend.probe import MalformedResponse, check_choices
from dlc.lm.openai_backend.transport import Transport
from dlc.lm.openai_backend.wire import (_messages, _parse_chat, _parse_chat_top, _parse_completion,
                                        _parse_completion_top, align_continuation)
from dlc.rng import derive_seed


class OpenAILM(Transport):
    """`dlc.lm.base.LM` over one model served at one or more OpenAI-compatible base URLs (replicas).

    Synchronous batch API over an asyncio event loop in a private thread: a batch of N requests is sent with at most
    `max_concurrency` in flight per replica. `max_retries` bounds the retries of one request (not counting the first
    attempt). `probe=False` skips the capability probe and assumes `Capabilities()` (every capability present)."""

    def __init__(self, model: str, base_urls: Sequence[str], api_key: str | None = None, *,
                 max_concurrency: int = 8, timeout: float = 120.0, max_retries: int = 6,
                 backoff_base: float = 0.5, backoff_max: float = 20.0, score_batch: int = 8,
                 probe: bool = True) -> None:
        self.model_id = f"openai:{model}"
        self.usage = Usage()
        self.score_batch = max(1, score_batch)
        self._render_cache: dict[tuple[str | None, str], str] = {}
        super().__init__(model, base_urls, api_key, max_concurrency=max_concurrency, timeout=timeout,
                         max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max, probe=probe)

    def __repr__(self) -> str:  # never shows the key or a URL's credentials
        return redact(f"OpenAILM(model={self.model!r}, base_urls={list(self.base_urls)!r})")

    def __enter__(self) -> "OpenAILM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ chat rendering
    def _needs(self, what: str, purpose: str, hint: str) -> DlcLMError:
        return DlcLMError(f"{self.model} at {', '.join(self.base_urls)} does not provide {what}, which {purpose} "
                          "needs", code="E628", hint=hint)

    async def _render(self, prompt: ChatPrompt, purpose: str) -> str:
        """The chat template applied by the server (generation prompt included), plus the assistant prefix."""
        if self.info is not None and self.info.render is None:
            raise self._needs("a chat-template renderer (POST /apply-template)", purpose,
                              "use format = raw for this layer, or serve the model with `dlc serve` or llama.cpp's "
                              "llama-server, which render chat templates")
        key = (prompt.system, prompt.user)
        if key not in self._render_cache:
            messages = _messages(prompt)

            def parse(data: Any) -> str:
                if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
                    raise MalformedResponse("/apply-template response has no 'prompt' string")
                return data["prompt"]

            self._render_cache[key] = await self._send("/apply-template", {"messages": messages}, None, parse)
        return self._render_cache[key] + prompt.prefix

    # ------------------------------------------------------------------ generate
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        if not requests:
            return []
        return self._run(self._agenerate(list(requests)))

    async def _agenerate(self, reqs: list[GenerateRequest]) -> list[GenerateResult]:
        return list(await asyncio.gather(*(self._generate_one(r) for r in reqs)))

    async def _generate_one(self, req: GenerateRequest) -> GenerateResult:
        if req.max_tokens < 1:
            raise DlcLMError(f"max_tokens must be >= 1 (got {req.max_tokens})", code="E631",
                             hint="servers treat 0 or negative as 'fill the context'; dlc never sends it")
        if req.n < 1:
            raise DlcLMError(f"n must be >= 1 (got {req.n})", code="E631", hint="ask for at least one sample")
        caps = self.capabilities
        greedy = req.temperature == 0.0
        n_send = 1 if greedy else req.n            # greedy samples are identical: ask once
        if n_send > 1 and not caps.n_per_request:
            parts = await asyncio.gather(*(self._generate_call(req, 1, derive_seed(req.seed, i) % (2**31 - 1))
                                           for i in range(n_send)))
            texts = tuple(t for p in parts for t in p.texts)
            reasons = tuple(r for p in parts for r in p.finish_reasons)
            res = GenerateResult(texts=texts, prompt_tokens=parts[0].prompt_tokens,
                                 completion_tokens=sum(p.completion_tokens for p in parts), finish_reasons=reasons)
        else:
            res = await self._generate_call(req, n_send, req.seed)
        if len(res.texts) < req.n:
            res = GenerateResult(texts=res.texts * req.n, prompt_tokens=res.prompt_tokens,
                                 completion_tokens=res.completion_tokens * req.n,
                                 finish_reasons=res.finish_reasons * req.n)
        self.usage.add(req.tag, calls=1, prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens)
        return res

    async def _generate_call(self, req: GenerateRequest, n: int, seed: int) -> GenerateResult:
        info = self.info
        params: dict[str, Any] = {"model": self.model, "max_tokens": req.max_tokens,
                                  "temperature": req.temperature, "top_p": req.top_p}
        if n > 1:
            params["n"] = n
        if self.capabilities.seed:
            params["seed"] = seed
        if req.stop:
            params["stop"] = list(req.stop)
        prompt = req.prompt
        use_chat = isinstance(prompt, ChatPrompt) and not prompt.prefix and (
            info is None or info.chat_completions or not info.completions)
        if isinstance(prompt, ChatPrompt) and not use_chat:
            if info is not None and not info.completions:
                raise self._needs("/v1/completions with a rendered chat template", "a chat prompt with an "
                                  f"assistant prefix ({prompt.prefix!r})",
                                  "set answer_prefix = \"\" for this layer, or use a server with completions")
            text = await self._render(prompt, "generating after an assistant prefix")
        elif isinstance(prompt, str):
            if info is not None and not info.completions:
                raise self._needs("/v1/completions", "a raw-format prompt",
                                  "use format = chat for layers on this model")
            text = prompt
        ctx = {"prompt_chars": len(text if not use_chat else prompt.user), "max_tokens": req.max_tokens}
        if use_chat:
            assert isinstance(prompt, ChatPrompt)
            body = {**params, "messages": _messages(prompt)}
            return await self._send("chat/completions", body, check_choices(n), _parse_chat, ctx=ctx)
        body = {**params, "prompt": text}
        return await self._send("completions", body, check_choices(n), _parse_completion, ctx=ctx)

    # ------------------------------------------------------------------ score
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        if not requests:
            return []
        return self._run(self._ascore(list(requests)))

    async def _context_text(self, prompt: Prompt) -> str:
        if isinstance(prompt, ChatPrompt):
            return await self._render(prompt, "scoring a chat prompt exactly")
        return prompt

    async def _ascore(self, reqs: list[ScoreRequest]) -> list[ScoreResult]:
        if not self.capabilities.prompt_logprobs:
            raise self._needs("prompt log-probabilities (/v1/completions with echo + logprobs)",
                              "exact scoring (log p(y | .) of labels, log p(h | .) of hidden texts in DLN-2)",
                              "serve the model with vLLM or `dlc serve`; without prompt log-probs only a network "
                              "without hidden layers trains, with fit.output_scoring = accuracy (choice layers then "
                              "answer by generation) and fit.trust_factor = 0")
        contexts = await asyncio.gather(*(self._context_text(r.prompt) for r in reqs))
        results: list[ScoreResult | None] = [None] * len(reqs)
        todo = []
        for i, (r, c) in enumerate(zip(reqs, contexts)):
            if r.continuation == "":
                results[i] = ScoreResult(logprobs=())
            else:
                todo.append((i, c, r.continuation))
        size = self.score_batch if self.capabilities.batch_prompts else 1
        chunks = [todo[k:k + size] for k in range(0, len(todo), size)]
        for chunk, out in zip(chunks, await asyncio.gather(*(self._score_chunk(ch) for ch in chunks))):
            for (i, _, _), res in zip(chunk, out):
                results[i] = res
                self.usage.add(reqs[i].tag, calls=1, prompt_tokens=res.prompt_tokens + res.n_tokens)
        return [r for r in results if r is not None]

    async def _score_chunk(self, chunk: list[tuple[int, str, str]]) -> list[ScoreResult]:
        texts = [c + cont for _, c, cont in chunk]
        body = {"model": self.model, "prompt": texts if len(texts) > 1 else texts[0], "max_tokens": 1,
                "echo": True, "logprobs": 1, "temperature": 0.0}

        def parse(data: Any) -> list[ScoreResult]:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
            return [align_continuation(t, len(c), ch) for (_, c, _), t, ch in zip(chunk, texts, choices)]

        ctx = {"prompt_chars": max(len(t) for t in texts), "max_tokens": 1}
        return await self._send("completions", body, check_choices(len(texts)), parse, ctx=ctx)

    # ------------------------------------------------------------------ documented fallback
    def first_token_top_logprobs(self, prompts: Sequence[Prompt], k: int = 5) -> list[dict[str, float]]:
        """The top-k log-probs of the first generated token after each prompt (greedy, max_tokens=1).

        The documented fallback for label scoring on endpoints without prompt log-probs (dln-reference §3.2):
        labels whose first token is missing from the top-k get no exact value, so this is an approximation the
        caller must choose explicitly; `score` never falls back to it."""
        if self.capabilities.top_logprobs < 1:
            raise self._needs("top log-probabilities of generated tokens", "first-token label scoring",
                              "set output_scoring = accuracy")
        k = max(1, min(k, self.capabilities.top_logprobs))
        return self._run(self._atop(list(prompts), k))

    async def _atop(self, prompts: list[Prompt], k: int) -> list[dict[str, float]]:
        async def one(p: Prompt) -> dict[str, float]:
            base = {"model": self.model, "max_tokens": 1, "temperature": 0.0}
            use_chat = isinstance(p, ChatPrompt) and (self.info is None or not self.info.completions)
            if use_chat:
                assert isinstance(p, ChatPrompt)
                if p.prefix:
                    raise self._needs("/v1/completions", "an assistant prefix", "set answer_prefix = \"\"")
                body = {**base, "messages": _messages(p), "logprobs": True, "top_logprobs": k}
                return await self._send("chat/completions", body, check_choices(1), _parse_chat_top)
            text = await self._context_text(p)
            body = {**base, "prompt": text, "logprobs": k}
            return await self._send("completions", body, check_choices(1), _parse_completion_top)

        return list(await asyncio.gather(*(one(p) for p in prompts)))
