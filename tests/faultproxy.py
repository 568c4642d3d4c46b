"""Loopback test helpers: a fault-injecting HTTP proxy, and a scripted model to run `dlc.server.app` over in-process.

`FaultProxy(upstream, faults)` forwards HTTP/1.1 requests to `upstream` (e.g. a `dlc serve` URL root). The n-th
attempt (0-based) of each distinct request (method, path, body) gets `faults[n]`, later attempts pass through, so
the outcome is deterministic whatever the concurrency. Faults: "500", "429", "slow" (answers after `slow_s`
seconds, past the client's timeout), "drop" (closes the connection without answering), "garbage" (200 with a body
that is not JSON), "truncated" (200 with the upstream's JSON cut in half), "empty" (200 `{"choices": []}`).
"""
from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections import Counter
from typing import Sequence

import httpx

from dlc.lm.base import ChatPrompt, GenerateRequest, GenerateResult, Prompt


class FaultProxy:
    def __init__(self, upstream: str, faults: Sequence[str] = (), *, slow_s: float = 3.0,
                 only_paths: Sequence[str] = ()) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = list(faults)
        self.slow_s = slow_s
        self.only_paths = tuple(only_paths)
        self.attempts: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.inflight = 0
        self.max_inflight = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result()
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._client = httpx.AsyncClient(timeout=60)

    def close(self) -> None:
        async def _stop() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._client.aclose()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _fault_for(self, method: str, path: str, body: bytes) -> str:
        if self.only_paths and not any(path.endswith(p) for p in self.only_paths):
            return "ok"
        key = hashlib.sha256(method.encode() + path.encode() + body).hexdigest()
        n = self.attempts[key]
        self.attempts[key] += 1
        return self.faults[n] if n < len(self.faults) else "ok"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                fault = self._fault_for(method, path, body)
                self.served[fault] += 1
                if fault == "drop":
                    writer.transport.abort()
                    return
                self.inflight += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
                try:
                    if fault == "slow":
                        await asyncio.sleep(self.slow_s)
                finally:
                    self.inflight -= 1
                if fault in ("500", "429"):
                    status, ctype, data = int(fault), "application/json", b'{"error": {"message": "injected"}}'
                elif fault == "garbage":
                    status, ctype, data = 200, "application/json", b"<html>not json{{"
                elif fault == "empty":
                    status, ctype, data = 200, "application/json", b'{"object": "text_completion", "choices": []}'
                else:
                    fwd = {k: v for k, v in headers.items() if k in ("content-type", "authorization", "accept")}
                    r = await self._client.request(method, self.upstream + path, content=body, headers=fwd)
                    status, ctype, data = r.status_code, r.headers.get("content-type", "application/json"), r.content
                    if fault == "truncated":
                        status, data = 200, data[: len(data) // 2]
                extra = b"Retry-After: 0\r\n" if status == 429 else b""
                writer.write(b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
                             % (status, ctype.encode(), len(data), extra) + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


class ScriptedServable:
    """A deterministic stand-in model for `dlc.server.app.create_app` (word tokens, hash log-probs), so transport tests
    run in milliseconds. Real behaviour is tested against `dlc serve --model tiny`."""

    model_id = "scripted:1"
    n_ctx = 256

    def tokenize(self, text: str) -> list[int]:
        return [len(t) for t in re.findall(r"\s*\S+|\s+", text)]

    def render(self, prompt: ChatPrompt) -> str:
        sys = f"<|system|>{prompt.system}\n" if prompt.system is not None else ""
        return f"{sys}<|user|>{prompt.user}\n<|assistant|>{prompt.prefix}"

    def echo(self, text: str) -> list[tuple[str, int, float | None]]:
        out: list[tuple[str, int, float | None]] = []
        for m in re.finditer(r"\s*\S+|\s+", text):
            h = int(hashlib.sha256((text[:m.start()][-20:] + m.group()).encode()).hexdigest()[:6], 16)
            out.append((m.group(), m.start(), None if not out else -(h % 1000) / 100.0))
        return out

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        res = []
        for r in requests:
            text = self.render(r.prompt) if isinstance(r.prompt, ChatPrompt) else r.prompt
            outs = []
            for i in range(r.n):
                key = f"{text}|{r.seed}|{i if r.temperature > 0 else 0}|{r.temperature}"
                h = hashlib.sha256(key.encode()).hexdigest()
                words = [h[k:k + 4] for k in range(0, 4 * r.max_tokens, 4)][: r.max_tokens]
                out = " " + " ".join(words)
                for s in r.stop:
                    if s in out:
                        out = out[: out.index(s)]
                outs.append(out)
            res.append(GenerateResult(texts=tuple(outs), prompt_tokens=len(self.tokenize(text)),
                                      completion_tokens=r.max_tokens * r.n, finish_reasons=("length",) * r.n))
        return res


def prompt_text(p: Prompt) -> str:
    return p if isinstance(p, str) else p.user
