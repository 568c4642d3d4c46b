"""Generation on the embedded model, batched across requests (issue 15).

Every sample of every request of one `generate` call is a *row*. At most `n_seq_max - 1` rows (the row budget,
`ModelConfig.batch_rows`) are in flight, one token per row per llama_decode, so 16 rows cost ~3.6 one-row steps on the
default model instead of 16 (bench/BATCHING.md). Rows are admitted in request order, and a row that finishes frees
its sequence for the next row at the next step (continuous batching: a long row never holds up the rows behind it);
the new rows' prompt remainders are decoded in the same llama_decode as the running rows' next tokens. Sequence 0
holds the longest prefix shared by the call's prompts (kept across calls, as scoring does), each request's first
admitted row gets a copy and decodes the rest of its prompt, and the request's other rows admitted with it copy
that. Samples are drawn in numpy with a `random.Random` seeded from dlc.rng.derive_seed(seed, "sample", i), so
sample i of a request is reproducible and independent of how many samples were asked for before it.

Determinism: which rows share a decode depends only on the request list (and the tokens it samples), so the same
call gives the same batches and the same texts on every run. What a batch does change is the floating-point path:
llama.cpp's kernels differ with the batch shape (~0.2 nats at most on Qwen2.5 Q4_K_M, see `dlc.lm.embedded`), so a
greedy text can differ from the one the same request gives alone, where two tokens are nearly tied. A rerun, a resume and a cache hit are still identical:
the cache stores every request's texts, and a rerun sends the same lists.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from dlc.errors import DlcLMError
from dlc.lm.base import GenerateRequest, GenerateResult
from dlc.lm.embedded.logprobs import _logsumexp, _top_logprobs
from dlc.lm.embedded.model import EmbeddedModel, TokenLogprob
from dlc.rng import derive_seed


@dataclass
class _Sample:
    """One generation in flight: sample `index` of request `req` in KV sequence `seq`."""

    req: int
    index: int
    seq: int
    rng: random.Random
    tokens: list[int]
    data: bytearray
    text: str = ""
    finish: str = ""
    logprobs: list[float] = field(default_factory=list)        # of each sampled token (when recorded)
    tops: list[list[tuple[int, float]]] = field(default_factory=list)   # the top-k at each step (when recorded)


class EmbeddedGeneration(EmbeddedModel):
    """The generation half of `EmbeddedLM`."""

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        with self._lock, self._timed("generate", requests[0].tag if requests else "") as completion:
            results = [res for res, _ in self._generate_many(list(requests))]
            completion.append(sum(r.completion_tokens for r in results))
            for r, res in zip(requests, results):
                self.usage.add(r.tag, calls=1, prompt_tokens=res.prompt_tokens,
                               completion_tokens=res.completion_tokens)
            return results

    def generate_logprobs(self, request: GenerateRequest,
                          top_k: int) -> tuple[GenerateResult, list[list[TokenLogprob]]]:
        """`generate` one request and report, for each sample, every generated token (its own id, as sampled, also
        the end-of-generation token and the one that completed a stop string) with its log-prob under the model
        (temperature 1, as vLLM and OpenAI report them) and the `top_k` most likely tokens at its position, all
        read from the logits the token was sampled from: nothing is re-decoded. Offsets count from the start of
        the completion text."""
        with self._lock, self._timed():
            res, samples = self._generate_many([request], top_k=max(0, int(top_k)))[0]
            self.usage.add(request.tag, calls=1, prompt_tokens=res.prompt_tokens,
                           completion_tokens=res.completion_tokens)
            return res, [self._token_entries(s.tokens, s.logprobs, s.tops) for s in samples]

    def _generate_many(self, reqs: list[GenerateRequest],
                       top_k: int | None = None) -> list[tuple[GenerateResult, list[_Sample]]]:
        prompts: list[list[int]] = []
        for r in reqs:
            p = self._prompt_tokens(r.prompt)
            if not p:
                raise DlcLMError("cannot generate from an empty prompt", code="E643",
                                 hint="give the layer a non-empty prompt or template")
            self._check_len(len(p) + 1, "the prompt")
            prompts.append(p)
        # max_tokens >= 1 always (llama.cpp reads <= 0 as "fill the context"); never past the context
        budgets = [max(1, min(int(r.max_tokens), self.n_ctx - len(p))) for r, p in zip(reqs, prompts)]
        rows = [(j, i) for j, r in enumerate(reqs) for i in range(max(1, r.n))]
        done: list[list[_Sample]] = [[] for _ in reqs]
        for smp in sorted(self._run_rows(rows, reqs, prompts, budgets, top_k), key=lambda x: (x.req, x.index)):
            done[smp.req].append(smp)
        out = []
        for j, samples in enumerate(done):
            if self._trie is not None:
                for smp in samples:
                    self._trie.insert(prompts[j] + smp.tokens[:-1])
            out.append((GenerateResult(texts=tuple(s.text for s in samples), prompt_tokens=len(prompts[j]),
                                       completion_tokens=sum(len(s.tokens) for s in samples),
                                       finish_reasons=tuple(s.finish for s in samples)), samples))
        return out

    def _run_rows(self, rows: list[tuple[int, int]], reqs: list[GenerateRequest], prompts: list[list[int]],
                  budgets: list[int], top_k: int | None) -> list[_Sample]:
        """Decode every row to the end with at most `n_seq_max - 1` rows in flight (continuous batching): a row
        that finishes frees its sequence, and the next rows, in request order, take it at the next step, their
        prompt remainders decoded in the same llama_decode as the running rows' next tokens. Sequence 0 holds the
        prefix shared by all prompts; a request's first admitted row copies it and decodes the rest of its prompt,
        the request's other rows admitted with it copy that row. Which rows share a decode depends only on the
        request list and the sampled tokens, so the same call decodes the same batches on every run."""
        width = self.n_seq_max - 1
        common = _common_prefix(prompts)
        # keep >= 2 rows in every prompt decode (a 1-row decode takes another kernel, see dlc.lm.embedded): a
        # request whose prompt is the shared prefix reads sequence 0's last logits
        shared = common if len(prompts) == 1 or len(common) >= 2 else []
        last0 = self._load_prefix(shared) if shared else None
        pending = list(reversed(rows))                      # pop() takes rows in request order
        free = list(range(width, 0, -1))                    # pop() takes sequence 1 first
        live: list[_Sample] = []
        new: list[_Sample] = []
        finished: list[_Sample] = []
        try:
            while pending or live:
                items: list[tuple[int, int, int]] = []
                wanted: dict[int, int | None] = {}
                # the running rows' last sampled tokens
                at: dict[int, int] = {}
                for smp in live:
                    at[smp.seq] = len(items)
                    wanted[len(items)] = None
                    items.append((smp.tokens[-1], len(prompts[smp.req]) + len(smp.tokens) - 1, smp.seq))
                # new rows in the free sequences
                new = []
                while pending and free:
                    j, i = pending.pop()
                    new.append(_Sample(j, i, free.pop(), random.Random(derive_seed(reqs[j].seed, "sample", i)),
                                       [], bytearray()))
                heads: dict[int, int] = {}
                rest_at: dict[int, int] = {}
                for smp in new:
                    if smp.req in heads:
                        continue
                    heads[smp.req] = smp.seq
                    if shared:
                        self._L.llama_memory_seq_cp(self._mem, 0, smp.seq, -1, -1)
                    rest = prompts[smp.req][len(shared):]
                    if rest:
                        base = len(prompts[smp.req]) - len(rest)
                        items += [(t, base + q, smp.seq) for q, t in enumerate(rest)]
                        wanted[len(items) - 1] = None
                        rest_at[smp.req] = len(items) - 1
                got = self._decode(items, wanted) if items else {}
                logits: dict[int, np.ndarray] = {s.seq: got[at[s.seq]] for s in live}  # type: ignore[misc]
                for smp in new:
                    if smp.seq != heads[smp.req]:
                        self._L.llama_memory_seq_cp(self._mem, heads[smp.req], smp.seq, -1, -1)
                    logits[smp.seq] = got[rest_at[smp.req]] if smp.req in rest_at else last0  # type: ignore
                live += new
                new = []
                for smp in live:
                    self._sample_one(smp, logits[smp.seq], reqs[smp.req], budgets[smp.req], top_k)
                for smp in live:
                    if smp.finish:
                        self._clear_seqs([smp.seq])
                        free.append(smp.seq)
                        finished.append(smp)
                free.sort(reverse=True)                         # the lowest free sequence first, as at the start
                live = [s for s in live if not s.finish]
        finally:
            # an error or a cancellation (`cancelled_by`) during a step: free the running rows and the rows admitted
            # at that step (not yet in `live` when the decode raised)
            self._clear_seqs([s.seq for s in live + new])
        return finished

    def _sample_one(self, s: _Sample, row: np.ndarray, req: GenerateRequest, budget: int,
                    top_k: int | None) -> None:
        """Draw row s's next token from `row`; mark it finished at an end token, a stop string or its budget. With
        `top_k` not None, record the token's log-prob and the top_k most likely tokens of the very same logits."""
        tok = _sample(row, req.temperature, req.top_p, s.rng)
        s.tokens.append(tok)
        if top_k is not None:
            lse = _logsumexp(row)
            s.logprobs.append(float(row[tok] - lse))
            s.tops.append(_top_logprobs(row, top_k, lse) if top_k > 0 else [])
        if self._L.llama_vocab_is_eog(self._vocab, tok):
            s.finish = "stop"
            s.text = s.data.decode("utf-8", errors="replace")
            return
        s.data += self._piece(tok, False)
        s.text = s.data.decode("utf-8", errors="ignore")
        cut = _find_stop(s.text, req.stop)
        if cut is not None:
            s.text, s.finish = s.text[:cut], "stop"
        elif len(s.tokens) >= budget:
            s.text, s.finish = s.data.decode("utf-8", errors="replace"), "length"


# -------------------------------------------------------------------- pure helpers
def _common_prefix(seqs: Sequence[Sequence[int]]) -> list[int]:
    first = list(seqs[0])
    n = len(first)
    for s in seqs[1:]:
        k = 0
        for a, b in zip(first[:n], s):
            if a != b:
                break
            k += 1
        n = k
    return first[:n]


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
