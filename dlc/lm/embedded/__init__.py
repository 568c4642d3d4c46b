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
`exact=False` (model setting `scoring = merged`) decodes the suffixes of several prompts together over one unified KV
stream (`EmbeddedScoring._score_pack`, `merge_packs`); measured on an AVX2 CPU it was not faster and moved scores by
up to 0.48 nats (bench/SCORING.md), so it is opt-in.

Generation samples in numpy with a `random.Random` seeded from dlc.rng.derive_seed(seed, "sample", i), so sample i of
a request is reproducible and independent of how many samples were asked for before it.

Layout: `model` (loading, tokens, rendering, the shared decoding primitives, accounting), `logprobs` (the
arithmetic on a logits row), `chat_template`,
`scoring` (score, score_reference, echo, echo_logprobs) and `generation` (generate, generate_logprobs: log-probs and
top-k read while sampling); `EmbeddedLM` is the three together.
"""
from __future__ import annotations

from dlc.lm.embedded.chat_template import render_chat_template
from dlc.lm.embedded.generation import EmbeddedGeneration
from dlc.lm.embedded.model import EmbeddedModel, default_threads
from dlc.lm.embedded.scoring import EmbeddedScoring


class EmbeddedLM(EmbeddedScoring, EmbeddedGeneration):
    """A local GGUF model behind the `dlc.lm.base.LM` interface. Thread-safe (one lock around the context)."""

    def __enter__(self) -> "EmbeddedLM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["EmbeddedLM", "EmbeddedModel", "default_threads", "render_chat_template"]
