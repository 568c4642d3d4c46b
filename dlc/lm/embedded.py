"""The embedded backend: a llama.cpp model in-process (llama-cpp-python 0.3.36, low-level API), offline by default.

Why low level. DLN needs the *exact* log-probability of given continuations, log p(y | x, pi) for labels and
log p(h | x, pi) for whole hidden texts (paper Eq. 2-3), and it asks for many of them at once: N prompts x B examples x
labels. llama-cpp-python's `echo=True` + `logprobs` is misaligned for models without a BOS token (issue 3: -8.45
instead of -0.264 for log p(" Paris" | "The capital of France is") on SmolLM2) and slow, so `score` does its own
teacher forcing:

1. requests are grouped by their prompt's tokens; groups are visited in token order so that consecutive prompts share
   a long prefix, and sequence 0 keeps the KV cache (and last logits) of the last prompt: only the differing suffix
   is decoded;
2. a one-token continuation reads the prompt's last logits;
3. a longer continuation gets a copy of the prompt's KV in its own sequence, where the last prompt token and all
   but the last continuation token are decoded in one batch; row j gives continuation token j.

Why exactly this shape (measured on this build, SmolLM2 and Qwen-0.5B): flash attention off and one KV stream per
sequence (a *unified* KV cache moved scores by up to 0.1 nats with the batch's other sequences); every decode has at
least two rows (a one-row decode takes another kernel: ~0.01 nats); and, with `exact=True` (default), one
continuation per decode (several sequences in one decode moved scores by up to 0.19 nats). So configured, SmolLM2's
scores equal a plain one-sequence evaluation of prompt + continuation bit for bit. On Qwen2.5 Q4_K_M a difference of
up to ~0.2 nats between *any* two batch shapes remains (also with CPU_REPACK off): that is llama.cpp's kernels, and
the plain evaluation is just another batch shape. Prefix sharing is what makes scoring fast (bench/README.md).

Generation samples in numpy with a `random.Random` seeded from dlc.rng.derive_seed(seed, "sample", i), so sample i of
a request is reproducible and independent of how many samples were asked for before it.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from dlc.errors import DlcLMError
from dlc.lm.base import (BackendWork, Capabilities, ChatPrompt, GenerateRequest, GenerateResult, PrefixTrie,
                         Prompt, ScoreRequest, ScoreResult, Usage)
from dlc.lm.models import ResolvedModel, resolve_model
from dlc.rng import derive_seed

_BACKEND_LOCK = threading.Lock()
_BACKEND_READY = False


def _llama():  # imported lazily: `dlc compile` must not pay for loading the shared library
    import llama_cpp
    import llama_cpp._logger as llama_logger

    llama_logger.logger.setLevel(logging.ERROR)  # llama.cpp prints every tensor at load time otherwise
    global _BACKEND_READY
    with _BACKEND_LOCK:
        if not _BACKEND_READY:
            llama_cpp.llama_backend_init()
            _BACKEND_READY = True
    return llama_cpp


def default_threads() -> int:
    """`$DLC_THREADS`, else the cores not already busy (+1 for ourselves), at least 1.

    llama.cpp's worker threads spin while they wait for each other, so on a loaded machine a thread per core is
    several times *slower* than one thread (measured on 2 cores at load 9.6: 300-token prompt 22.6 s with 2 threads,
    6.0 s with 1); on an idle machine every core helps."""
    env = os.environ.get("DLC_THREADS")
    if env:
        return max(1, int(env))
    n = max(1, os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return n
    return max(1, min(n, int(round(n - load + 1))))


@dataclass
class _Sample:
    """One generation in flight."""

    index: int
    seq: int
    rng: random.Random
    tokens: list[int]
    data: bytearray
    text: str = ""
    finish: str = ""


class EmbeddedLM:
    """A local GGUF model behind the `dlc.lm.base.LM` interface. Thread-safe (one lock around the context)."""

    def __init__(self, model: str | ResolvedModel = "default", *, n_ctx: int = 4096, n_seq_max: int = 8,
                 n_batch: int = 512, n_threads: int | None = None, cache_dir: Path | None = None,
                 exact: bool = True, track_prefixes: bool | None = None) -> None:
        self.resolved = model if isinstance(model, ResolvedModel) else resolve_model(model, cache_dir=cache_dir)
        self.model_id = self.resolved.model_id
        self.usage = Usage()
        # what was really computed (bench/ cost columns); the prefix trie is opt-in ($DLC_TRACK_PREFIXES=1): it grows
        # with every distinct token a long-lived process (dlc serve) ever sees
        if track_prefixes is None:
            track_prefixes = os.environ.get("DLC_TRACK_PREFIXES") == "1"
        self._trie = PrefixTrie() if track_prefixes else None
        self._work = BackendWork(unique_tokens=0 if track_prefixes else None)
        self.n_ctx = int(n_ctx)                    # per sequence: the longest prompt + continuation/generation
        self.n_seq_max = max(2, int(n_seq_max))    # sequence 0 holds the prompt; 1.. hold continuations/samples
        self.n_batch = int(n_batch)
        # exact: one continuation per llama_decode (the prompt is still decoded once and shared). Several sequences
        # in one decode are faster but, measured on this build, move log-probs by up to 0.16 nats.
        self.exact = bool(exact)
        self._lock = threading.RLock()
        L = self._L = _llama()
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        model_p = L.llama_model_load_from_file(str(self.resolved.path).encode("utf-8"), mp)
        if not model_p:
            raise DlcLMError(f"llama.cpp could not load {self.resolved.path}", code="E614",
                             hint="check that the file is a complete GGUF model supported by llama.cpp")
        self._model = model_p
        self._vocab = L.llama_model_get_vocab(model_p)
        self.n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        cp = L.llama_context_default_params()
        cp.n_ctx = self.n_ctx * self.n_seq_max     # non-unified KV: llama.cpp gives each sequence n_ctx / n_seq_max
        cp.n_batch = cp.n_ubatch = self.n_batch
        cp.n_seq_max = self.n_seq_max
        threads = n_threads or default_threads()
        cp.n_threads = cp.n_threads_batch = threads
        cp.flash_attn_type = 0                     # LLAMA_FLASH_ATTN_TYPE_DISABLED: batch-shape independent scores
        cp.kv_unified = False                      # see the module docstring: exact scores need per-seq streams
        cp.no_perf = True
        ctx = L.llama_init_from_model(model_p, cp)
        if not ctx:
            L.llama_model_free(model_p)
            raise DlcLMError(f"llama.cpp could not create a context of {cp.n_ctx} tokens for {self.resolved.name}",
                             code="E614", hint="lower n_ctx in the model settings")
        self._ctx = ctx
        self._mem = L.llama_get_memory(ctx)
        self._batch = L.llama_batch_init(self.n_batch, 0, 1)
        self._seq0: list[int] = []                 # tokens whose KV sits in sequence 0 (prefix reuse across calls)
        self._seq0_logits: np.ndarray | None = None  # logits after them (a 1-row re-decode would differ slightly)
        bos = int(L.llama_vocab_bos(self._vocab))
        self._bos = bos if bos >= 0 else None
        self._add_bos = bool(L.llama_vocab_get_add_bos(self._vocab)) and self._bos is not None
        self._bos_text = self._token_text(bos) if self._bos is not None else ""
        eos = int(L.llama_vocab_eos(self._vocab))
        self._eos_text = self._token_text(eos) if eos >= 0 else ""
        self.chat_template = self._meta("tokenizer.chat_template")
        self.capabilities = Capabilities(prompt_logprobs=True, top_logprobs=0, n_per_request=True,
                                         batch_prompts=True, chat=self.chat_template is not None, seed=True)
        self._closed = False

    # ---------------------------------------------------------------- metadata, tokens, rendering
    def _meta(self, key: str) -> str | None:
        L = self._L
        size = 1 << 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = L.llama_model_meta_val_str(self._model, key.encode("utf-8"), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    def _token_text(self, token: int) -> str:
        return (self._L.llama_vocab_get_text(self._vocab, token) or b"").decode("utf-8", errors="replace")

    def _piece(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._L.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._L.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def tokenize(self, text: str, *, special: bool = True, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`. Prompts parse special tokens (`<|im_start|>` ...: without this, measured, SmolLM2's
        sentiment accuracy drops 0.90 -> 0.50); the BOS token is added when the vocabulary asks for it."""
        if add_bos is None:
            add_bos = self._add_bos and not (self._bos_text and text.startswith(self._bos_text))
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (self._L.llama_token * cap)()
        n = self._L.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos, special)
        if n < 0:
            cap = -n
            buf = (self._L.llama_token * cap)()
            n = self._L.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos, special)
        if n < 0:
            raise RuntimeError(f"llama_tokenize failed ({n})")
        return list(buf[:n])

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        return b"".join(self._piece(t, special) for t in tokens).decode("utf-8", errors="replace")

    def render(self, prompt: Prompt) -> str:
        """The exact text the model sees: a raw string verbatim, or a ChatPrompt through the GGUF's own chat
        template (system omitted -> the template's default system message) followed by the reply prefix."""
        if isinstance(prompt, str):
            return prompt
        if self.chat_template is None:
            raise DlcLMError(f"model {self.resolved.name} has no chat template in its GGUF metadata", code="E640",
                             hint="set `format = raw` on the layer (raw completion prompts need no template)")
        messages = ([] if prompt.system is None else [{"role": "system", "content": prompt.system}])
        messages.append({"role": "user", "content": prompt.user})
        return render_chat_template(self.chat_template, messages, bos_token=self._bos_text,
                                    eos_token=self._eos_text) + prompt.prefix

    def _prompt_tokens(self, prompt: Prompt) -> list[int]:
        return self.tokenize(self.render(prompt), special=True)

    def _check_len(self, n: int, what: str) -> None:
        if n > self.n_ctx:
            raise DlcLMError(f"{what} needs {n} tokens but the context holds {self.n_ctx}", code="E641",
                             hint="raise n_ctx in the model settings or shorten the prompt/inputs")

    # ---------------------------------------------------------------- decoding primitives
    def _decode(self, items: Sequence[tuple[int, int, int]], wanted: dict[int, int | None]) -> dict[int, object]:
        """Decode (token, pos, seq) items in chunks of n_batch. For each item index in `wanted`, return the
        log-prob of the given target token, or (target None) a float64 copy of the logits row."""
        L = self._L
        out: dict[int, object] = {}
        b = self._batch
        for start in range(0, len(items), self.n_batch):
            chunk = items[start:start + self.n_batch]
            b.n_tokens = len(chunk)
            for i, (tok, pos, seq) in enumerate(chunk):
                b.token[i] = tok
                b.pos[i] = pos
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq
                b.logits[i] = (start + i) in wanted
            t0 = time.perf_counter()
            rc = L.llama_decode(self._ctx, b)
            self._work.decode_seconds += time.perf_counter() - t0
            self._work.decoded_tokens += len(chunk)
            if rc != 0:
                self._reset_memory()
                raise DlcLMError(f"llama_decode failed with status {rc} ({len(chunk)} tokens)", code="E642",
                                 hint="the KV cache is full: lower n_seq_max or the prompt length, or raise n_ctx")
            for i in range(len(chunk)):
                k = start + i
                if k not in wanted:
                    continue
                row = np.ctypeslib.as_array(L.llama_get_logits_ith(self._ctx, i), shape=(self.n_vocab,))
                target = wanted[k]
                if target is None:
                    out[k] = row.astype(np.float64)
                else:
                    out[k] = _logprob(row, target)
        return out

    def _reset_memory(self) -> None:
        self._L.llama_memory_clear(self._mem, True)
        self._seq0 = []
        self._seq0_logits = None

    def _clear_seqs(self, seqs: Sequence[int]) -> None:
        for s in seqs:
            self._L.llama_memory_seq_rm(self._mem, s, -1, -1)

    def _load_prefix(self, tokens: list[int]) -> np.ndarray:
        """Make sequence 0 hold exactly `tokens`, decoding only what differs from what it holds; return the
        logits (float64) after the last token. At least the last token is always re-decoded to get its logits."""
        assert tokens, "empty prompt"
        if self._seq0 == tokens and self._seq0_logits is not None:
            return self._seq0_logits
        lcp = 0
        for a, b in zip(self._seq0, tokens):
            if a != b:
                break
            lcp += 1
        lcp = min(lcp, max(0, len(tokens) - 2))  # >= 2 rows: a 1-row decode takes another kernel (~0.01 nats)
        if not self._L.llama_memory_seq_rm(self._mem, 0, lcp, -1):
            self._reset_memory()
            lcp = 0
        self._seq0, self._seq0_logits = tokens[:lcp], None
        items = [(t, lcp + i, 0) for i, t in enumerate(tokens[lcp:])]
        out = self._decode(items, {len(items) - 1: None})
        self._seq0 = list(tokens)
        self._seq0_logits = out[len(items) - 1]  # type: ignore[assignment]
        return self._seq0_logits  # type: ignore[return-value]

    # ---------------------------------------------------------------- scoring
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Exact teacher-forced log p(continuation | prompt) per token, prompts shared within and across groups."""
        with self._lock, self._timed():
            prepared = [(self._prompt_tokens(r.prompt), self.tokenize(r.continuation, special=False, add_bos=False))
                        for r in requests]
            if self._trie is not None:
                for p, c in prepared:
                    self._trie.insert(p + c[:-1])
            for (p, c), r in zip(prepared, requests):
                if not p:
                    raise DlcLMError("cannot score after an empty prompt", code="E643",
                                     hint="give the layer a non-empty prompt or template")
                self._check_len(len(p) + len(c), "a score request")
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, (p, _) in enumerate(prepared):
                groups.setdefault(tuple(p), []).append(i)
            logprobs: list[list[float]] = [[] for _ in requests]
            for key in sorted(groups):          # token order: neighbours share long prefixes
                self._score_group(list(key), [(i, prepared[i][1]) for i in groups[key]], logprobs)
            results = []
            for (p, c), r, lps in zip(prepared, requests, logprobs):
                results.append(ScoreResult(logprobs=tuple(lps), tokens=tuple(self.detokenize([t]) for t in c),
                                           prompt_tokens=len(p)))
                self.usage.add(r.tag, calls=1, prompt_tokens=len(p) + len(c))
            return results

    def _score_group(self, prompt: list[int], conts: list[tuple[int, list[int]]],
                     logprobs: list[list[float]]) -> None:
        """One-token continuations read the prompt's last logits. Longer ones re-decode the last prompt token in
        their own sequence followed by all but their last token, so every decode has >= 2 rows and each row's
        logits come from the same kernels as a plain full-sequence evaluation."""
        last = self._load_prefix(prompt)
        lse = _logsumexp(last)
        for i, c in conts:
            if len(c) == 1:
                logprobs[i].append(float(last[c[0]] - lse))
        multi = [(i, c) for i, c in conts if len(c) > 1]
        n0 = len(prompt) - 1
        k = 0
        while k < len(multi):
            wave: list[tuple[int, list[int], int]] = []
            n_tokens = 0
            while k < len(multi) and len(wave) < (1 if self.exact else self.n_seq_max - 1):
                i, c = multi[k]
                if wave and n_tokens + len(c) > self.n_batch:
                    break
                wave.append((i, c, len(wave) + 1))
                n_tokens += len(c)
                k += 1
            items: list[tuple[int, int, int]] = []
            wanted: dict[int, int | None] = {}
            where: list[tuple[int, int]] = []
            for i, c, seq in wave:
                self._L.llama_memory_seq_cp(self._mem, 0, seq, -1, -1)
                self._L.llama_memory_seq_rm(self._mem, seq, n0, -1)
                for j, t in enumerate([prompt[-1]] + c[:-1]):
                    wanted[len(items)] = c[j]
                    where.append((i, len(items)))
                    items.append((t, n0 + j, seq))
            try:
                out = self._decode(items, wanted)
            finally:
                self._clear_seqs([seq for _, _, seq in wave])
            for i, idx in where:
                logprobs[i].append(float(out[idx]))  # type: ignore[arg-type]

    def score_reference(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """The slow reference: each request alone, prompt + continuation decoded as one fresh sequence, no prefix
        reuse. For tests and the benchmark (scoring without prefix sharing)."""
        with self._lock:
            results = []
            for r in requests:
                p = self._prompt_tokens(r.prompt)
                c = self.tokenize(r.continuation, special=False, add_bos=False)
                self._check_len(len(p) + len(c), "a score request")
                self._reset_memory()
                seq = p + c
                wanted = {len(p) - 1 + j: t for j, t in enumerate(c)}
                out = self._decode([(t, pos, 0) for pos, t in enumerate(seq)], wanted)
                self._reset_memory()
                results.append(ScoreResult(logprobs=tuple(float(out[len(p) - 1 + j]) for j in range(len(c))),  # type: ignore[arg-type]
                                           tokens=tuple(self.detokenize([t]) for t in c), prompt_tokens=len(p)))
            return results

    def echo(self, text: str) -> list[tuple[str, int, float | None]]:
        """(token text, char offset in `text`, teacher-forced log-prob) for every token of a raw prompt, as vLLM's
        `echo` + `logprobs` returns them; the first token has no context and gets None. A BOS token, when the
        vocabulary adds one, is context only and not listed."""
        with self._lock:
            toks = self.tokenize(text, special=True)
            self._check_len(len(toks), "the prompt")
            n_bos = 1 if (toks and self._bos is not None and toks[0] == self._bos and self._add_bos
                          and not text.startswith(self._bos_text)) else 0
            lps: dict[int, object] = {}
            if len(toks) > 1:
                self._reset_memory()
                wanted = {j - 1: toks[j] for j in range(max(1, n_bos), len(toks))}
                lps = self._decode([(t, pos, 0) for pos, t in enumerate(toks)], wanted)
                self._reset_memory()
            entries: list[tuple[str, int, float | None]] = []
            data = b""
            prev = ""
            for j in range(n_bos, len(toks)):
                data += self._piece(toks[j], True)
                now = data.decode("utf-8", errors="ignore")
                lp = lps.get(j - 1) if j >= 1 else None
                entries.append((now[len(prev):], len(prev), None if lp is None else float(lp)))  # type: ignore[arg-type]
                prev = now
            return entries

    # ---------------------------------------------------------------- generation
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        with self._lock, self._timed():
            results = [self._generate_one(r) for r in requests]
            for r, res in zip(requests, results):
                self.usage.add(r.tag, calls=1, prompt_tokens=res.prompt_tokens,
                               completion_tokens=res.completion_tokens)
            return results

    def _generate_one(self, req: GenerateRequest) -> GenerateResult:
        prompt = self._prompt_tokens(req.prompt)
        if not prompt:
            raise DlcLMError("cannot generate from an empty prompt", code="E643",
                             hint="give the layer a non-empty prompt or template")
        self._check_len(len(prompt) + 1, "the prompt")
        # max_tokens >= 1 always (llama.cpp reads <= 0 as "fill the context"); never past the context
        budget = max(1, min(int(req.max_tokens), self.n_ctx - len(prompt)))
        last = self._load_prefix(prompt)
        samples: list[_Sample] = []
        for wave_start in range(0, max(1, req.n), self.n_seq_max - 1):
            idxs = range(wave_start, min(max(1, req.n), wave_start + self.n_seq_max - 1))
            wave = [_Sample(i, s + 1, random.Random(derive_seed(req.seed, "sample", i)), [], bytearray())
                    for s, i in enumerate(idxs)]
            for smp in wave:
                self._L.llama_memory_seq_cp(self._mem, 0, smp.seq, -1, -1)
            try:
                self._run_wave(wave, last, len(prompt), budget, req)
            finally:
                self._clear_seqs([smp.seq for smp in wave])
            samples.extend(wave)
        if self._trie is not None:
            for smp in samples:
                self._trie.insert(prompt + smp.tokens[:-1])
        return GenerateResult(texts=tuple(s.text for s in samples), prompt_tokens=len(prompt),
                              completion_tokens=sum(len(s.tokens) for s in samples),
                              finish_reasons=tuple(s.finish for s in samples))

    def _run_wave(self, wave: list[_Sample], last: np.ndarray, n_prompt: int, budget: int,
                  req: GenerateRequest) -> None:
        logits = {s.seq: last for s in wave}
        active = list(wave)
        while active:
            for s in active:
                tok = _sample(logits[s.seq], req.temperature, req.top_p, s.rng)
                s.tokens.append(tok)
                if self._L.llama_vocab_is_eog(self._vocab, tok):
                    s.finish = "stop"
                    s.text = s.data.decode("utf-8", errors="replace")
                    continue
                s.data += self._piece(tok, False)
                s.text = s.data.decode("utf-8", errors="ignore")
                cut = _find_stop(s.text, req.stop)
                if cut is not None:
                    s.text, s.finish = s.text[:cut], "stop"
                elif len(s.tokens) >= budget:
                    s.text, s.finish = s.data.decode("utf-8", errors="replace"), "length"
            active = [s for s in active if not s.finish]
            if not active:
                break
            items = [(s.tokens[-1], n_prompt + len(s.tokens) - 1, s.seq) for s in active]
            out = self._decode(items, {k: None for k in range(len(items))})
            logits = {s.seq: out[k] for k, s in enumerate(active)}  # type: ignore[misc]

    # ---------------------------------------------------------------- accounting
    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._work.seconds += time.perf_counter() - t0

    def work(self) -> BackendWork:
        """A snapshot of what this backend really computed (see `BackendWork`)."""
        with self._lock:
            unique = len(self._trie) if self._trie is not None else None
            return BackendWork(self._work.decoded_tokens, unique, self._work.seconds, self._work.decode_seconds)

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        with self._lock:
            if getattr(self, "_closed", True):
                return
            self._closed = True
            L = self._L
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            L.llama_model_free(self._model)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "EmbeddedLM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -------------------------------------------------------------------- pure helpers
def _logsumexp(row: np.ndarray) -> float:
    a = np.asarray(row, dtype=np.float64)
    m = float(a.max())
    return m + float(np.log(np.exp(a - m).sum()))


def _logprob(row: np.ndarray, target: int) -> float:
    a = row.astype(np.float64)
    return float(a[target] - _logsumexp(a))


def _sample(logits: np.ndarray, temperature: float, top_p: float, rng: random.Random) -> int:
    """Greedy at temperature <= 0; else softmax(logits / T) restricted to the top-p nucleus, drawn with `rng`."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits / float(temperature)
    z = np.exp(z - z.max())
    if top_p < 1.0:
        order = np.argsort(-z, kind="stable")
        p = z[order] / z.sum()
        keep = int(np.searchsorted(np.cumsum(p), top_p)) + 1
        ids, probs = order[:keep], p[:keep]
    else:
        ids, probs = np.arange(len(z)), z
    cdf = np.cumsum(probs)
    u = rng.random() * float(cdf[-1])
    k = min(int(np.searchsorted(cdf, u, side="right")), len(ids) - 1)
    return int(ids[k])


def _find_stop(text: str, stops: Sequence[str]) -> int | None:
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(cuts) if cuts else None


@functools.lru_cache(maxsize=8)
def _chat_template(template: str) -> Any:
    """The compiled template. Compiling is the expensive part (measured ~1.7 ms per render on SmolLM2's template
    when recompiled each time, i.e. seconds per fit across thousands of requests), so each template compiles once."""
    import datetime

    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(template)


def render_chat_template(template: str, messages: list[dict[str, str]], *, bos_token: str = "",
                         eos_token: str = "", add_generation_prompt: bool = True) -> str:
    """Render a Hugging Face chat template (the GGUF's `tokenizer.chat_template`) as transformers does: sandboxed
    Jinja with trim_blocks/lstrip_blocks, `raise_exception` and `strftime_now`."""
    import jinja2

    try:
        return _chat_template(template).render(messages=messages, bos_token=bos_token, eos_token=eos_token,
                                               add_generation_prompt=add_generation_prompt)
    except jinja2.TemplateError as e:
        raise DlcLMError(f"the model's chat template failed: {e}", code="E640",
                         hint="set `format = raw` on the layer, or use another model") from e
