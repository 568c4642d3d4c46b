"""The embedded backend's model: loading a GGUF into a llama.cpp context, tokens and chat rendering, the decoding
primitives that scoring and generation share (`_decode`, `_load_prefix`: sequence 0 keeps the last prompt's KV cache),
accounting of what was really computed, and the lifecycle. See `dlc.lm.embedded` for why the API is the low-level
one and why the context is configured exactly so.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from dlc.errors import DlcLMError
from dlc.lm.base import BackendWork, Cancelled, Capabilities, ChatPrompt, ModelText, PrefixTrie, Prompt, Usage
from dlc.lm.embedded.chat_template import render_chat_template
from dlc.lm.embedded.logprobs import _lcp, _logprob, _logsumexp, _top_logprobs
from dlc.lm.models import ResolvedModel, resolve_model

_BACKEND_LOCK = threading.Lock()
_BACKEND_READY = False

# llama.cpp's log levels (ggml.h enum ggml_log_level). llama-cpp-python 0.3.x's own callback maps them with an older
# numbering (WARN read as ERROR), so its ERROR filter lets warnings through, e.g. "control-looking token ... probably a
# bug in the model" on every load of the default model: dlc installs its own callback (_llama_log).
GGML_LOG_DEBUG, GGML_LOG_INFO, GGML_LOG_WARN, GGML_LOG_ERROR, GGML_LOG_CONT = 1, 2, 3, 4, 5
LOG_ENV = "DLC_LLAMA_LOG"        # unset/error: llama.cpp's errors only; warn: and its warnings; all: everything
_LOG_LEVELS = {"": GGML_LOG_ERROR, "error": GGML_LOG_ERROR, "warn": GGML_LOG_WARN, "warning": GGML_LOG_WARN,
               "info": GGML_LOG_INFO, "all": GGML_LOG_DEBUG, "debug": GGML_LOG_DEBUG, "1": GGML_LOG_DEBUG}
_log_last = GGML_LOG_INFO        # the level a GGML_LOG_CONT line continues
_log_callback = None             # the ctypes callback, kept alive while llama.cpp holds it


def _llama_log(level: int, text: bytes) -> None:
    """llama.cpp's log line: written to stderr when its level reaches $DLC_LLAMA_LOG's (errors by default)."""
    global _log_last
    if level == GGML_LOG_CONT:
        level = _log_last
    else:
        _log_last = level
    threshold = _LOG_LEVELS.get(os.environ.get(LOG_ENV, "").strip().lower(), GGML_LOG_ERROR)
    if level >= threshold or level == 0:
        import sys
        print(text.decode("utf-8", errors="replace"), end="", flush=True, file=sys.stderr)


def _llama():  # imported lazily: `dlc compile` must not pay for loading the shared library
    import llama_cpp
    import llama_cpp._logger as llama_logger

    llama_logger.logger.setLevel(logging.ERROR)  # llama.cpp prints every tensor at load time otherwise
    global _BACKEND_READY, _log_callback
    with _BACKEND_LOCK:
        if _log_callback is None:
            _log_callback = llama_cpp.llama_log_callback(lambda level, text, _user: _llama_log(level, text or b""))
            llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
        if not _BACKEND_READY:
            llama_cpp.llama_backend_init()
            _BACKEND_READY = True
    return llama_cpp


class TokenLogprob(NamedTuple):
    """One token with its log-prob as `dlc serve` reports it (`echo_logprobs`, `generate_logprobs`)."""

    text: str                   # its share of the text: the texts concatenate to the decoded text
    offset: int                 # character offset of `text` (from the start of the text it belongs to)
    logprob: float | None       # None for the first token of a text (no context)
    id: int
    display: str                # `token_display`: the key of this token among `top`
    piece: bytes                # its bytes
    top: tuple[tuple[str, bytes, float], ...] | None   # the k most likely tokens here (display, bytes, log-prob)
    # the vocabulary's own strings of the token and of `top` (GPT-2 BPE `Ġword`, SentencePiece `▁word`), as
    # Hugging Face's convert_ids_to_tokens spells them: `dlc serve --logprob-tokens vocab` reports these
    vocab: str = ""
    top_vocab: tuple[str, ...] | None = None


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


class EmbeddedModel:
    """A loaded GGUF model and its llama.cpp context: tokens, rendering, decoding, accounting, lifecycle. Thread-safe
    (one lock around the context). `EmbeddedLM` adds scoring and generation on top."""

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
        self._phase = ""                     # the phase of the call in progress (`_timed`), for decode shapes
        self.n_ctx = int(n_ctx)                    # per sequence: the longest prompt + continuation/generation
        self.n_seq_max = max(2, int(n_seq_max))    # sequence 0 holds the prompt; 1.. hold continuations/samples
        self.n_batch = int(n_batch)
        # exact: one continuation per llama_decode (the prompt is still decoded once and shared), one KV stream per
        # sequence. False (model setting scoring = merged): several prompts and continuations per decode, one
        # unified KV stream: log-probs move by up to 0.48 nats (bench/SCORING.md: not faster on an AVX2 CPU, so
        # not the default).
        self.exact = bool(exact)
        self._lock = threading.RLock()
        self._cancel = threading.local()           # .event: the calling thread's cancel event (`cancelled_by`)
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
        # exact: one KV stream per sequence (see the module docstring: exact scores need them). merged: one unified
        # stream, because with several streams llama.cpp cuts a batch into micro-batches taking equally many tokens
        # of every sequence (split_equal), so prompts of different lengths decoded together gain nothing
        # (bench/SCORING.md); sequences then share their copied prefix's cells instead of copying them
        cp.kv_unified = not self.exact
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
        # echo memo (EmbeddedScoring.echo_logprobs): entry j = the row after _seq0[:j + 1] as (log-prob of
        # _seq0[j + 1], top-k ids, top-k log-probs); always a prefix of what _seq0 holds
        self._seq0_rows: list[tuple[float, np.ndarray, np.ndarray]] = []
        self._displays: dict[int, tuple[str, bytes]] = {}   # token_display, memoized (at most the vocabulary)
        self._vocab_texts: dict[int, str] = {}               # vocab_text, memoized (at most the vocabulary)
        bos = int(L.llama_vocab_bos(self._vocab))
        self._bos = bos if bos >= 0 else None
        self._add_bos = bool(L.llama_vocab_get_add_bos(self._vocab)) and self._bos is not None
        self._bos_text = self._token_text(bos) if self._bos is not None else ""
        eos = int(L.llama_vocab_eos(self._vocab))
        self._eos_text = self._token_text(eos) if eos >= 0 else ""
        self.chat_template = self._meta("tokenizer.chat_template")
        self._special_re: re.Pattern[str] | None | bool = False   # computed on first use (_special_pattern)
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
        """Token ids of `text`; `special`: special-token text (`<|im_start|>` ...) becomes control tokens (the chat
        template's markup needs it: without, measured, SmolLM2's sentiment accuracy drops 0.90 -> 0.50; prompts go
        through `_prompt_tokens`, which keeps user text plain); the BOS token is added when the vocabulary asks for
        it."""
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

    def token_display(self, token: int) -> tuple[str, bytes]:
        """(text, bytes) of one token as OpenAI lists alternatives: its text (special tokens spelled out), or
        `bytes:\\xNN...` when its bytes are not whole UTF-8 characters (a piece of a multi-byte character)."""
        got = self._displays.get(token)
        if got is None:
            data = self._piece(token, True)
            try:
                got = data.decode("utf-8"), data
            except UnicodeDecodeError:
                got = "bytes:" + "".join(f"\\x{b:02x}" for b in data), data
            self._displays[token] = got
        return got

    def vocab_text(self, token: int) -> str:
        """The vocabulary's string of one token (`Ġword`, `▁word`, `<0x0A>`, `<|im_end|>`), memoized: what
        Hugging Face's convert_ids_to_tokens returns for the same tokenizer, and what vLLM's early OpenAI server put
        in `tokens` / `top_logprobs` (clients such as the DLN implementation map these back to text)."""
        got = self._vocab_texts.get(token)
        if got is None:
            got = self._vocab_texts[token] = self._token_text(token)
        return got

    def _token_entries(self, tokens: Sequence[int], logprobs: Sequence[float | None],
                       tops: Sequence[Sequence[tuple[int, float]] | None]) -> list[TokenLogprob]:
        """TokenLogprob of each token of a text that starts with `tokens[0]`: the token's share of the decoded text
        (a piece of a multi-byte character gets "" and the token completing it the character), its character
        offset, its log-prob and the top alternatives as `token_display` texts."""
        entries: list[TokenLogprob] = []
        data = b""
        prev = ""
        for tok, lp, top in zip(tokens, logprobs, tops):
            piece = self._piece(tok, True)
            data += piece
            now = data.decode("utf-8", errors="ignore")
            alts = None if top is None else tuple((*self.token_display(t), v) for t, v in top)
            entries.append(TokenLogprob(now[len(prev):], len(prev), lp, tok, self.token_display(tok)[0], piece,
                                        alts, self.vocab_text(tok),
                                        None if top is None else tuple(self.vocab_text(t) for t, _ in top)))
            prev = now
        return entries

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

    def _special_pattern(self) -> re.Pattern[str] | None:
        """A regex of the texts of the control (and unknown) tokens: the ones llama.cpp turns into special tokens
        only when asked to parse them. None when the vocabulary has none."""
        if self._special_re is False:
            L = self._L
            mask = int(L.LLAMA_TOKEN_ATTR_CONTROL) | int(L.LLAMA_TOKEN_ATTR_UNKNOWN)
            texts = {self._token_text(t) for t in range(self.n_vocab)
                     if int(L.llama_vocab_get_attr(self._vocab, t)) & mask}
            texts.discard("")
            self._special_re = (re.compile("|".join(re.escape(t) for t in sorted(texts, key=len, reverse=True)))
                                if texts else None)
        return self._special_re  # type: ignore[return-value]

    def _prompt_tokens(self, prompt: Prompt) -> list[int]:
        """The prompt's token ids. Only a chat template's own markup produces special tokens: a raw string and the
        text of a ChatPrompt (system, user, prefix) are tokenized as plain text, so data spelling `<|im_start|>`
        cannot forge a turn. `ModelText` (dlc serve's completion prompts) is the model's own format."""
        if isinstance(prompt, ModelText):
            return self.tokenize(prompt, special=True)
        if isinstance(prompt, str):
            return self.tokenize(prompt, special=False, add_bos=self._add_bos)
        return self._chat_tokens(prompt)

    def _chat_tokens(self, prompt: ChatPrompt) -> list[int]:
        pat = self._special_pattern()
        parts = [prompt.system or "", prompt.user, prompt.prefix]
        if pat is None or not any(pat.search(p) for p in parts):
            return self.tokenize(self.render(prompt), special=True)   # the common case: one call, as ever
        # Hide each special-token text of the message text behind a marker the data cannot contain (a random
        # nonce), render, then tokenize the template's text with special tokens parsed and each hidden one as text.
        nonce = secrets.token_hex(8)
        hidden: list[str] = []

        def hide(text: str) -> str:
            def sub(m: re.Match[str]) -> str:
                hidden.append(m.group(0))
                return f"\U000F0000{nonce}:{len(hidden) - 1}\U000F0001"
            return pat.sub(sub, text)

        masked = dataclasses.replace(prompt, user=hide(prompt.user), prefix=hide(prompt.prefix),
                                     system=None if prompt.system is None else hide(prompt.system))
        text = self.render(masked)
        marker = re.compile(f"\U000F0000{nonce}:(\\d+)\U000F0001")
        found = [int(m.group(1)) for m in marker.finditer(text)]
        if sorted(found) != list(range(len(hidden))):
            raise DlcLMError(f"the chat template of {self.resolved.name} alters the message text, so text that spells "
                             "a special token cannot be kept plain", code="E640",
                             hint="remove special-token text (e.g. <|im_start|>) from the inputs, or use format = raw")
        tokens: list[int] = []
        pos = 0
        for m in [*marker.finditer(text), None]:
            piece = text[pos:m.start() if m else len(text)]
            if piece:
                tokens += self.tokenize(piece, special=True, add_bos=None if not tokens else False)
            if m is not None:
                tokens += self.tokenize(hidden[int(m.group(1))], special=False,
                                        add_bos=self._add_bos if not tokens else False)
                pos = m.end()
        return tokens

    def _check_len(self, n: int, what: str) -> None:
        if n > self.n_ctx:
            raise DlcLMError(f"{what} needs {n} tokens but the context holds {self.n_ctx}", code="E641",
                             hint="raise n_ctx in the model settings or shorten the prompt/inputs")

    # ---------------------------------------------------------------- decoding primitives
    def _decode(self, items: Sequence[tuple[int, int, int]], wanted: dict[int, int | None], *,
                top_k: int = 0) -> dict[int, object]:
        """Decode (token, pos, seq) items in chunks of n_batch. For each item index in `wanted`, return the
        log-prob of the given target token, or (target None) a float64 copy of the logits row. With `top_k` > 0 a
        target's entry is (log-prob, the row's top-k [(token, log-prob)], most likely first: `_top_logprobs`)."""
        L = self._L
        out: dict[int, object] = {}
        b = self._batch
        cancel: threading.Event | None = getattr(self._cancel, "event", None)
        for start in range(0, len(items), self.n_batch):
            if cancel is not None and cancel.is_set():
                raise Cancelled("the request was cancelled")
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
            dt = time.perf_counter() - t0
            self._work.decode_seconds += dt
            self._work.decoded_tokens += len(chunk)
            if self._phase:
                self._work.add_decode(self._phase, len(chunk), len({seq for _, _, seq in chunk}), dt,
                                      sum(1 for i in range(len(chunk)) if start + i in wanted),
                                      sum(pos for _, pos, _ in chunk))
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
                elif top_k > 0:
                    a = row.astype(np.float64)
                    lse = _logsumexp(a)
                    out[k] = (float(a[target] - lse), _top_logprobs(a, top_k, lse))
                else:
                    out[k] = _logprob(row, target)
        return out

    def _reset_memory(self) -> None:
        self._L.llama_memory_clear(self._mem, True)
        self._seq0 = []
        self._seq0_logits = None
        self._seq0_rows = []

    def _clear_seqs(self, seqs: Sequence[int]) -> None:
        for s in seqs:
            self._L.llama_memory_seq_rm(self._mem, s, -1, -1)

    def _load_prefix(self, tokens: list[int]) -> np.ndarray:
        """Make sequence 0 hold exactly `tokens`, decoding only what differs from what it holds; return the
        logits (float64) after the last token. At least the last token is always re-decoded to get its logits."""
        assert tokens, "empty prompt"
        if self._seq0 == tokens and self._seq0_logits is not None:
            return self._seq0_logits
        lcp = _lcp(self._seq0, tokens)
        del self._seq0_rows[max(0, lcp - 1):]   # a row stays valid while the token it predicts is shared
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

    @contextlib.contextmanager
    def cancelled_by(self, event: threading.Event) -> Iterator[None]:
        """Calls made by this thread inside the block raise `Cancelled` before their next llama_decode once `event`
        is set (`dlc serve` sets it when the client disconnects). Every caller of `_decode` leaves the KV cache
        consistent when it raises: generation and scoring free their sequences in `finally`, and sequence 0 is
        recorded as holding only the prefix it held before the decode (the rest is removed on its next use).
        Per thread, so a cancelled request never stops another thread's call."""
        prev = getattr(self._cancel, "event", None)
        self._cancel.event = event
        try:
            yield
        finally:
            self._cancel.event = prev

    # ---------------------------------------------------------------- accounting
    @contextlib.contextmanager
    def _timed(self, kind: str = "", tag: str = "") -> Iterator[list[int]]:
        """Time a call; with `kind`, also book it under its phase (kind + the purpose part of the tag). The caller
        appends the completion tokens it produced to the yielded list."""
        t0 = time.perf_counter()
        d0 = self._work.decoded_tokens
        completion: list[int] = []
        phase = f"{kind}:{(tag or '-').rsplit('/', 1)[-1]}" if kind else ""
        outer = self._phase                  # a call timed inside another stays in the outer call's phase
        self._phase = phase or outer         # _decode books its calls' shapes under it (calls hold self._lock)
        try:
            yield completion
        finally:
            self._phase = outer
            dt = time.perf_counter() - t0
            self._work.seconds += dt
            if kind:
                self._work.add_phase(phase, dt, self._work.decoded_tokens - d0, sum(completion))

    def work(self) -> BackendWork:
        """A snapshot of what this backend really computed (see `BackendWork`)."""
        with self._lock:
            unique = len(self._trie) if self._trie is not None else None
            return BackendWork(self._work.decoded_tokens, unique, self._work.seconds, self._work.decode_seconds,
                               {k: dict(v) for k, v in self._work.phases.items()},
                               {p: {k: dict(r) for k, r in t.items()} for p, t in self._work.decode_shapes.items()})

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
