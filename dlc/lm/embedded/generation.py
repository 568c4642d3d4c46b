"""Generation on the embedded model: samples drawn in numpy with a `random.Random` seeded from
dlc.rng.derive_seed(seed, "sample", i), so sample i of a request is reproducible and independent of how many samples
were asked for before it; up to n_seq_max - 1 samples decode side by side, each in its own copy of the prompt's KV."""
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
    """One generation in flight."""

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
        with self._lock, self._timed():
            results = [self._generate_one(r)[0] for r in requests]
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
            res, samples = self._generate_one(request, top_k=max(0, int(top_k)))
            self.usage.add(request.tag, calls=1, prompt_tokens=res.prompt_tokens,
                           completion_tokens=res.completion_tokens)
            return res, [self._token_entries(s.tokens, s.logprobs, s.tops) for s in samples]

    def _generate_one(self, req: GenerateRequest, top_k: int | None = None) -> tuple[GenerateResult, list[_Sample]]:
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
                self._run_wave(wave, last, len(prompt), budget, req, top_k)
            finally:
                self._clear_seqs([smp.seq for smp in wave])
            samples.extend(wave)
        if self._trie is not None:
            for smp in samples:
                self._trie.insert(prompt + smp.tokens[:-1])
        return GenerateResult(texts=tuple(s.text for s in samples), prompt_tokens=len(prompt),
                              completion_tokens=sum(len(s.tokens) for s in samples),
                              finish_reasons=tuple(s.finish for s in samples)), samples

    def _run_wave(self, wave: list[_Sample], last: np.ndarray, n_prompt: int, budget: int,
                  req: GenerateRequest, top_k: int | None = None) -> None:
        """Sample the wave to the end. With `top_k` not None, record each sampled token's log-prob and the top_k
        most likely tokens from the very logits it is sampled from."""
        logits = {s.seq: last for s in wave}
        active = list(wave)
        while active:
            for s in active:
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
                elif len(s.tokens) >= budget:
                    s.text, s.finish = s.data.decode("utf-8", errors="replace"), "length"
            active = [s for s in active if not s.finish]
            if not active:
                break
            items = [(s.tokens[-1], n_prompt + len(s.tokens) - 1, s.seq) for s in active]
            out = self._decode(items, {k: None for k in range(len(items))})
            logits = {s.seq: out[k] for k, s in enumerate(active)}  # type: ignore[misc]


# -------------------------------------------------------------------- pure helpers
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
