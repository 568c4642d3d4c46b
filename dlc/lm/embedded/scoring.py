"""Exact teacher-forced scoring on the embedded model: log p(continuation | prompt) per token, prompts grouped and
visited in token order so consecutive prompts share their KV prefix (`score`); the slow reference without sharing
(`score_reference`); and vLLM-style `echo` log-probs of a whole raw prompt (for `dlc serve`)."""
from __future__ import annotations

from typing import Sequence

from dlc.errors import DlcLMError
from dlc.lm.base import ScoreRequest, ScoreResult
from dlc.lm.embedded.model import EmbeddedModel, _logsumexp


class EmbeddedScoring(EmbeddedModel):
    """The scoring half of `EmbeddedLM` (see `dlc.lm.embedded` for the shape of every decode)."""

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
