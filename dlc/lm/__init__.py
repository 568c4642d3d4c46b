"""LLM access: one interface (`dlc.lm.base.LM`), an embedded llama.cpp backend, an OpenAI-compatible backend,
a disk cache and usage accounting. Nothing outside this package talks to a model."""
from dlc.lm.base import (LM, Capabilities, ChatPrompt, GenerateRequest, GenerateResult, Prompt, ScoreRequest,
                         ScoreResult, Usage)

__all__ = ["LM", "Capabilities", "ChatPrompt", "GenerateRequest", "GenerateResult", "Prompt", "ScoreRequest",
           "ScoreResult", "Usage"]
