"""Exact teacher-forced scoring on the embedded model: log p(continuation | prompt) per token, prompts grouped and
visited in token order so consecutive prompts share their KV prefix (`score`); the slow reference without sharing
(`score_reference`); and vLLM-style `echo` log-probs of a whole raw prompt with the top-k at each position
(`echo_logprobs`, for `dlc serve`), sharing prefixes with the last text the same way."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dlc.errors import DlcLMError
from dlc.lm.base import ScoreRequest, ScoreResult
from dlc.lm.embedded.logprobs import _lcp, _logsumexp
from dlc.lm.embedded.model import EmbeddedModel, TokenLogprob


class EmbeddedScoring(EmbeddedModel):
    """The scoring half of `EmbeddedLM` (see `dlc.lm.embedded` for the shape of every decode)."""

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Exact teacher-forced log p(continuation | prompt) per token, prompts shared within and across groups."""
        with self._lock, self._timed("score", requests[0].tag if requests else ""):
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
            keys = sorted(groups)               # token order: neighbours share long prefixes
            if self.exact:
                for key in keys:
                    self._score_group(list(key), [(i, prepared[i][1]) for i in groups[key]], logprobs)
            else:
                for pack in merge_packs(keys, {k: [len(prepared[i][1]) for i in groups[k]] for k in keys},
                                        max_seqs=self.n_seq_max - 1, max_rows=self.n_batch):
                    conts = [[(i, prepared[i][1]) for i in groups[k]] for k in pack]
                    if len(pack) == 1:
                        self._score_group(list(pack[0]), conts[0], logprobs)
                    else:
                        self._score_pack([list(k) for k in pack], conts, logprobs)
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

    def _score_pack(self, prompts: list[list[int]], conts: list[list[tuple[int, list[int]]]],
                    logprobs: list[list[float]]) -> None:
        """Merged scoring (`exact=False`, unified KV): several prompts in one llama_decode. Sequence 0 holds their
        common prefix; prompt j gets a copy of it in sequence j + 1, where its own suffix (and its one multi-token
        continuation, if any: `merge_packs` guarantees at most one) is decoded together with the other prompts'.
        The last prompt row gives every one-token continuation and the first token of the longer one."""
        c = min(_lcp_all(prompts), min(len(p) for p in prompts) - 1)
        self._load_prefix(prompts[0][:c])
        items: list[tuple[int, int, int]] = []
        wanted: dict[int, int | None] = {}
        reads: list[tuple[int, int, int | None]] = []     # (request, item index, token | None: from the logits)
        seqs = list(range(1, len(prompts) + 1))
        try:
            for seq, p, cs in zip(seqs, prompts, conts):
                self._L.llama_memory_seq_cp(self._mem, 0, seq, -1, -1)
                self._L.llama_memory_seq_rm(self._mem, seq, c, -1)
                multi = [(i, t) for i, t in cs if len(t) > 1]
                tail = multi[0][1][:-1] if multi else []
                last = len(items) + len(p) - c - 1
                wanted[last] = None
                for i, t in cs:
                    if t:
                        reads.append((i, last, t[0]))
                for j, t in enumerate(p[c:] + tail):
                    items.append((t, c + j, seq))
                if multi:
                    i, t = multi[0]
                    for j in range(1, len(t)):
                        wanted[last + j] = t[j]
                        reads.append((i, last + j, None))
            out = self._decode(items, wanted)
        finally:
            self._clear_seqs(seqs)
        lse = {idx: _logsumexp(out[idx]) for idx, target in wanted.items() if target is None}  # type: ignore[arg-type]
        for i, idx, tok in reads:
            v = out[idx]
            logprobs[i].append(float(v) if tok is None else float(v[tok] - lse[idx]))  # type: ignore[index,arg-type]

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
        return [(e.text, e.offset, e.logprob) for e in self.echo_logprobs(text)]

    def echo_logprobs(self, text: str, top_k: int = 0) -> list[TokenLogprob]:
        """`echo` with each token's id and the `top_k` most likely tokens at its position (None for the first).

        Prefix-sharing like `score`: sequence 0 keeps the KV of the last text (echoed, scored or generated from)
        and a memo of its rows, so only what differs from it is decoded (every decode >= 2 rows, see
        `dlc.lm.embedded`), and a generation from the same text right after reads its last logits without a
        decode. Consecutive texts sharing a prefix (one prompt, many continuations) cost only their suffixes."""
        with self._lock, self._timed():
            toks = self.tokenize(text, special=True)
            self._check_len(len(toks), "the prompt")
            if self._trie is not None:
                self._trie.insert(toks[:-1])
            n_bos = 1 if (toks and self._bos is not None and toks[0] == self._bos and self._add_bos
                          and not text.startswith(self._bos_text)) else 0
            rows = self._prefix_rows(toks, max(0, int(top_k))) if toks else []
            lps: list[float | None] = [None] + [r[0] for r in rows]
            tops: list[list[tuple[int, float]] | None] = [None] + [
                [(int(t), float(v)) for t, v in zip(r[1][:top_k], r[2][:top_k])] for r in rows]
            return self._token_entries(toks[n_bos:], lps[n_bos:], tops[n_bos:])

    def _prefix_rows(self, toks: list[int], top_k: int) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """Make sequence 0 hold `toks` (as `_load_prefix`, last logits kept) and return its rows 0..len-2: (log p of
        the next token, top ids, top log-probs with at least `top_k` entries), decoding only from the first row the
        memo lacks (a shared prefix whose rows have enough alternatives is not decoded again)."""
        lcp = _lcp(self._seq0, toks)
        memo = self._seq0_rows
        need = min(top_k, self.n_vocab)
        valid = 0
        while valid < min(len(memo), lcp - 1) and len(memo[valid][1]) >= need:
            valid += 1
        if valid >= len(toks) - 1 and self._seq0 == toks and self._seq0_logits is not None:
            return memo[:len(toks) - 1]
        d = min(valid, lcp, max(0, len(toks) - 2))      # >= 2 rows per decode
        if not self._L.llama_memory_seq_rm(self._mem, 0, d, -1):
            self._reset_memory()
            memo, d = self._seq0_rows, 0
        del memo[d:]
        self._seq0, self._seq0_logits = toks[:d], None
        items = [(t, d + i, 0) for i, t in enumerate(toks[d:])]
        wanted: dict[int, int | None] = {i: toks[d + i + 1] for i in range(len(items) - 1)}
        wanted[len(items) - 1] = None                     # the last logits, for a generation right after
        out = self._decode(items, wanted, top_k=need)
        for i in range(len(items) - 1):
            if need:
                lp, top = out[i]  # type: ignore[misc]
                memo.append((lp, np.array([t for t, _ in top], dtype=np.int64),
                             np.array([v for _, v in top], dtype=np.float64)))
            else:
                memo.append((float(out[i]), _NO_IDS, _NO_LPS))  # type: ignore[arg-type]
        self._seq0 = list(toks)
        self._seq0_logits = out[len(items) - 1]  # type: ignore[assignment]
        return memo[:len(toks) - 1]


_NO_IDS = np.zeros(0, dtype=np.int64)
_NO_LPS = np.zeros(0, dtype=np.float64)


def _lcp_all(prompts: Sequence[Sequence[int]]) -> int:
    """The common prefix length of prompts in token order (first vs last bounds every pair)."""
    return min(_lcp(prompts[0], p) for p in prompts)


def merge_packs(keys: Sequence[tuple[int, ...]], cont_lens: dict[tuple[int, ...], list[int]], *, max_seqs: int,
                max_rows: int, overhead: float = 1.25) -> list[list[tuple[int, ...]]]:
    """Split prompts (in token order) into packs decoded together by merged scoring.

    Scoring prompts one after another (exact mode) decodes each prompt's suffix after its predecessor; a pack
    decodes the pack's common prefix once and every member's suffix after it, in one llama_decode with as many rows
    as the suffixes have tokens. A pack ends when it would hold more than `max_seqs` prompts or `max_rows` rows, or
    when its suffixes would exceed `overhead` x the tokens the same prompts cost one after another (a pack whose
    common prefix shrinks to a template's head would re-decode each member's instruction). A prompt with two or
    more multi-token continuations is a pack of its own (`_score_group` gives each continuation its sequence)."""
    packs: list[list[tuple[int, ...]]] = []
    pack: list[tuple[int, ...]] = []
    common = seq_cost = 0

    def rows(k: tuple[int, ...], c: int) -> int:
        multi = [n for n in cont_lens[k] if n > 1]
        return len(k) - c + (multi[0] - 1 if multi else 0)

    for k in keys:
        alone = sum(1 for n in cont_lens[k] if n > 1) > 1
        if pack and not alone:
            c = min(common, _lcp(pack[-1], k), min(len(p) for p in pack + [k]) - 1)
            merged = sum(rows(p, c) for p in pack + [k])          # the pack's decode; its prefix costs c more
            seq = seq_cost + rows(k, _lcp(pack[-1], k))
            if c >= 1 and len(pack) < max_seqs and merged <= max_rows and c + merged <= overhead * seq:
                pack.append(k)
                common, seq_cost = c, seq
                continue
        if pack:
            packs.append(pack)
        pack, common, seq_cost = [k], len(k), rows(k, 0)
        if alone:
            packs.append(pack)
            pack = []
    if pack:
        packs.append(pack)
    return packs
