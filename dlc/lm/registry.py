"""Open the LM a `ModelConfig` names: the embedded llama.cpp model, an OpenAI-compatible server or the deterministic
scripted LM (tests), wrapped in the disk cache and usage accounting (`CachedLM`). This is the only place that reads
base URLs and API keys from the environment (by the variable names the config gives); they go to the HTTP client
only, never into a cache key.
"""
from __future__ import annotations

import os
from pathlib import Path

from dlc.errors import DlcLMError
from dlc.ir import ModelConfig
from dlc.lm.base import LM
from dlc.lm.cache import DiskCache
from dlc.lm.cached import Budget, CachedLM

DEFAULT_BASE_URL_ENV = "OPENAI_BASE_URL"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"


def open_backend(cfg: ModelConfig) -> LM:
    """The raw backend (no cache, no accounting wrapper)."""
    if cfg.backend == "embedded":
        from dlc.lm.embedded import EmbeddedLM

        return EmbeddedLM(cfg.model, n_ctx=cfg.n_ctx)
    if cfg.backend == "openai":
        from dlc.lm.openai_backend import OpenAILM

        url_env = cfg.base_url_env or DEFAULT_BASE_URL_ENV
        key_env = cfg.api_key_env or DEFAULT_API_KEY_ENV
        raw = os.environ.get(url_env, "")
        urls = [u.strip() for u in raw.split(",") if u.strip()]
        if not urls:
            raise DlcLMError(f"model '{cfg.name}' needs a server URL in ${url_env}, which is not set", code="E620",
                             hint=f"export {url_env}=http://127.0.0.1:8000/v1 (several replicas: comma-separated)")
        return OpenAILM(cfg.model, urls, os.environ.get(key_env), max_concurrency=cfg.max_concurrency,
                        timeout=cfg.timeout)
    if cfg.backend == "scripted":
        from dlc.lm.scripted import ScriptedLM

        return ScriptedLM(model_id=f"scripted:{cfg.model}", delay=float(cfg.delay))
    raise DlcLMError(f"unknown backend '{cfg.backend}' for model '{cfg.name}'", code="E620",
                     hint="use backend = embedded, openai or scripted")


def open_lm(cfg: ModelConfig, *, cache_dir: Path | str | None = None, no_cache: bool = False,
            budget: Budget | None = None) -> CachedLM:
    """The LM for one model config: backend + disk cache (unless `no_cache`) + accounting (+ optional budget).

    `cache_dir` holds `lm-cache.sqlite3` (default: $DLC_CACHE_DIR or the user cache dir + dlc)."""
    inner = open_backend(cfg)
    try:
        cache = None if no_cache else DiskCache(Path(cache_dir) if cache_dir is not None else None)
    except BaseException:
        inner.close()
        raise
    return CachedLM(inner, cache, budget=budget)
