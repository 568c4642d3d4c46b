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


def check_env(cfg: ModelConfig) -> None:
    """Fail before anything is opened or written when an openai model's environment is not usable: a variable name
    that is not one (or is a key or URL: a ModelConfig built in Python skips the compiler's E315), the URL variable
    unset (E620), or an `api_key_env` that names an unset or empty variable (E630). Without `api_key_env` the key is
    optional ($OPENAI_API_KEY if set: local servers need none)."""
    if cfg.backend != "openai":
        return
    from dlc.errors import DlcSemanticError
    from dlc.lang.check import ENV_NAME_MAX, ENV_NAME_RE, looks_like_secret

    for key in ("base_url_env", "api_key_env"):
        name = getattr(cfg, key)
        if name is not None and (not ENV_NAME_RE.match(name) or len(name) > ENV_NAME_MAX or looks_like_secret(name)):
            raise DlcSemanticError(f"model '{cfg.name}': '{key}' must name an environment variable, not hold its "
                                   "value", code="E315",
                                   hint=f"set {key} to a variable name such as "
                                        f"{DEFAULT_BASE_URL_ENV if key == 'base_url_env' else DEFAULT_API_KEY_ENV}")
    url_env = cfg.base_url_env or DEFAULT_BASE_URL_ENV
    if not [u for u in os.environ.get(url_env, "").split(",") if u.strip()]:
        raise DlcLMError(f"model '{cfg.name}' needs a server URL in ${url_env}, which is not set", code="E620",
                         hint=f"export {url_env}=http://127.0.0.1:8000/v1 (several replicas: comma-separated)")
    if cfg.api_key_env is not None and not os.environ.get(cfg.api_key_env, "").strip():
        raise DlcLMError(f"model '{cfg.name}' needs an API key in ${cfg.api_key_env} (its api_key_env), which is "
                         "not set", code="E630",
                         hint=f"export {cfg.api_key_env}=... before the run, or remove api_key_env if the server "
                              "needs no key")


def open_backend(cfg: ModelConfig) -> LM:
    """The raw backend (no cache, no accounting wrapper)."""
    check_env(cfg)
    if cfg.backend == "embedded":
        from dlc.lm.embedded import EmbeddedLM

        return EmbeddedLM(cfg.model, n_ctx=cfg.n_ctx, n_seq_max=cfg.batch_rows + 1, exact=cfg.scoring == "exact")
    if cfg.backend == "openai":
        from dlc.lm.openai_backend import OpenAILM

        url_env = cfg.base_url_env or DEFAULT_BASE_URL_ENV
        key_env = cfg.api_key_env or DEFAULT_API_KEY_ENV
        urls = [u.strip() for u in os.environ.get(url_env, "").split(",") if u.strip()]   # check_env: not empty
        try:
            return OpenAILM(cfg.model, urls, os.environ.get(key_env), max_concurrency=cfg.max_concurrency,
                            timeout=cfg.timeout, max_retries=cfg.max_retries)
        except DlcLMError as e:
            if e.code == "E624":        # the probe's 401/403: say where the key came from (the name, never the key)
                e.hint = _auth_hint(cfg, key_env)
            raise
    if cfg.backend == "scripted":
        from dlc.lm.scripted import ScriptedLM

        return ScriptedLM(model_id=f"scripted:{cfg.model}", delay=float(cfg.delay))
    raise DlcLMError(f"unknown backend '{cfg.backend}' for model '{cfg.name}'", code="E620",
                     hint="use backend = embedded, openai or scripted")


def _auth_hint(cfg: ModelConfig, key_env: str) -> str:
    """What to fix when a server rejects the credentials of model `cfg`: the variable the key was read from."""
    if not os.environ.get(key_env, "").strip():
        return (f"no API key was sent: ${key_env} is not set; export it, or set api_key_env in model "
                f"'{cfg.name}' to the variable that holds the key")
    source = "its api_key_env" if cfg.api_key_env else f"the default: model '{cfg.name}' sets no api_key_env"
    return (f"the key of model '{cfg.name}' comes from ${key_env} ({source}): check that it holds a valid key for "
            "this server")


def open_lm(cfg: ModelConfig, *, cache_dir: Path | str | None = None, no_cache: bool = False,
            budget: Budget | None = None) -> CachedLM:
    """The LM for one model config: backend + disk cache (unless `no_cache`) + accounting (+ optional budget).

    `cache_dir` holds `lm-cache.sqlite3` (default: $DLC_CACHE_DIR or the user cache dir + dlc)."""
    # the cache first: a cache that cannot be used (E530/E531) is found in milliseconds, not after loading a model
    cache = None if no_cache else DiskCache(Path(cache_dir) if cache_dir is not None else None)
    try:
        inner = open_backend(cfg)
    except BaseException:
        if cache is not None:
            cache.close()
        raise
    return CachedLM(inner, cache, budget=budget)
