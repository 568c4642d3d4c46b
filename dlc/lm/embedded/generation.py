"""Generation on the embedded model, batched across requests (issue 15).

Every sample of every request of one `generate` call is a *row*. Rows are cut, in request order, into groups of at
most `n_seq_max - 1` (the row budget, `ModelConfig.batch_rows`); a group decodes together, one token per row per
llama_decode, so 16 rows cost ~3.8 one-row steps on the default model instead of 16 (bench/BATCHING.md). In a
group, sequence 0 holds the longest prefix shared by the group's prompts (kept across calls, as scoring does), each
request's first row gets a copy and decodes the rest of its prompt (all requests' remainders in one batch), and the
request's other rows copy that. Samples are drawn in numpy with a `random.Random` seeded from
dlc.rng.derive_seed(seed, "sample", i), so sample i of a request is reproducible and independent of how many samples
were asked for before it.

Determinism: the groups depend only on the request list, so the same call gives the same batches and the same texts
on every run. What a batch does change is the floating-point path: llama.cpp's kernels differ with the batch shape
(~0.2 nats at most on Qwen2.5 Q4_K_M, see `dlc.lm.embedded`), so a greedy text can differ from the one the same
request gives alone, where two tokens are nearly tied. A rerun, a resume and a cache hit are still identical:
the cache stores every request's texts, and a rerun sends the same lists.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from dlc.errors import DlcLMError
from dlc.lm.base import GenerateRequest, GenerateResult
from dlc.lm.embedded.model import EmbeddedModel, TokenLogprob, _logsumexp, _top_logprobs
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
        width = self.n_seq_max - 1
        done: list[list[_Sample]] = [[] for _ in reqs]
        for start in range(0, len(rows), width):
            for smp in self._run_group(rows[start:start + width], reqs, prompts, budgets, top_k):
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

    def _run_group(self, group: list[tuple[int, int]], reqs: list[GenerateRequest], prompts: list[list[int]],
                   budgets: list[int], top_k: int | None) -> list[_Sample]:
        """Decode one group of rows to the end: load the shared prefix, fan it out, decode each request's rest of
        prompt in one batch, then sample all rows side by side."""
        order = list(dict.fromkeys(j for j, _ in group))           # the group's requests, in request order
        common = _common_prefix([prompts[j] for j in order])
        # keep >= 2 rows in every prompt decode (a 1-row decode takes another kernel, see dlc.lm.embedded): a
        # request whose prompt is the shared prefix reads sequence 0's last logits
        shared = common if len(order) == 1 or len(common) >= 2 else []
        last0 = self._load_prefix(shared) if shared else None
        samples: list[_Sample] = []
        heads: dict[int, int] = {}
        for k, (j, i) in enumerate(group):
            smp = _Sample(j, i, k + 1, random.Random(derive_seed(reqs[j].seed, "sample", i)), [], bytearray())
            samples.append(smp)
            heads.setdefault(j, smp.seq)
        try:
            items: list[tuple[int, int, int]] = []
            wanted: dict[int, int | None] = {}
            rest_of: dict[int, int] = {}
            for j in order:
                head = heads[j]
                if shared:
                    self._L.llama_memory_seq_cp(self._mem, 0, head, -1, -1)
                rest = prompts[j][len(shared):]
                if rest:
                    base = len(prompts[j]) - len(rest)
                    items += [(t, base + q, head) for q, t in enumerate(rest)]
                    wanted[len(items) - 1] = None
                    rest_of[j] = len(items) - 1
            got = self._decode(items, wanted) if items else {}
            last = {j: (got[rest_of[j]] if j in rest_of else last0) for j in order}
            for smp in samples:
                if smp.seq != heads[smp.req]:
                    self._L.llama_memory_seq_cp(self._mem, heads[smp.req], smp.seq, -1, -1)
            self._sample_rows(samples, last, reqs, prompts, budgets, top_k)  # type: ignore[arg-type]
        finally:
            self._clear_seqs([s.seq for s in samples])
        return samples

    def _sample_rows(self, samples: list[_Sample], last: dict[int, np.ndarray], reqs: list[GenerateRequest],
                     prompts: list[list[int]], budgets: list[int], top_k: int | None = None) -> None:
        """Sample every row to the end, one token per row per decode. With `top_k` not None, record each sampled
        token's log-prob and the top_k most likely tokens from the very logits it is sampled from."""
        logits = {s.seq: last[s.req] for s in samples}
        active = list(samples)
        while active:
            for s in active:
                req = reqs[s.req]
                row = logits[s.seq]
                tok = _sample(row, req.temperature, req.top_p, s.rng)
                s.tokens.append(tok)
                if top_k is not None:
                    lse = _logsumexp(row)
                    s.logprobs.append(float(row[tok] - lse))
                    s.tops.append(_top_logprobs(row, top_k, lse) if top_k > 0 else [])
                if self._L.llama_vocab_is_eog(self._vocab, tok):
                    s.finish = "stop"
                    s.text = s.data.decode("utf-8", errors="replace")
                    continue
                s.data += self._piece(tok, False)
                s.text = s.data.decode("utf-8", errors="ignore")
                cut = _find_stop(s.text, req.stop)
                if cut is not None:
                    s.text, s.finish = s.text[:cut], "stop"
                elif len(s.tokens) >= budgets[s.req]:
                    s.text, s.finish = s.data.decode("utf-8", errors="replace"), "length"
            active = [s for s in active if not s.finish]
            if not active:
                break
            items = [(s.tokens[-1], len(prompts[s.req]) + len(s.tokens) - 1, s.seq) for s in active]
            out = self._decode(items, {k: None for k in range(len(items))})
            logits = {s.seq: out[k] for k, s in enumerate(active)}  # type: ignore[misc]


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
