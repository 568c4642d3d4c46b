"""LLM access: one interface (`dlc.lm.base.LM`), the backends — `embedded/` (llama.cpp in-process),
`openai_backend/` (OpenAI-compatible servers), `scripted` (deterministic, for tests) — opened by `registry` from a
`ModelConfig` (the only module here that imports the IR), a disk cache and usage accounting. Nothing outside this
package talks to a model."""
from dlc.lm.base import (LM, Capabilities, ChatPrompt, GenerateRequest, GenerateResult, Prompt, ScoreRequest,
                         ScoreResult, Usage)

__all__ = ["LM", "Capabilities", "ChatPrompt", "GenerateRequest", "GenerateResult", "Prompt", "ScoreRequest",
           "ScoreResult", "Usage"]
