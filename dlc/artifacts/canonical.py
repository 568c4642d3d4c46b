"""The one canonical JSON form dlc hashes and writes.

Hashes (graph, config, data and model identities, LLM cache keys) use `canonical_json`: sorted keys, no whitespace,
UTF-8, and no NaN/Infinity (strict JSON: a non-finite number is a bug upstream, not something to hash). Files meant
for people (`result.json`, `config.json`, ...) use `pretty_json`, which writes non-finite floats as `null`.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any


def strict(obj: Any) -> Any:
    """A copy of a JSON value with every non-finite float replaced by None (JSON's `null`)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def canonical_json(obj: Any) -> str:
    return json.dumps(strict(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_sha256(obj: Any) -> str:
    """sha256 of a JSON value in canonical form: the identity of a graph, a config, a split or a request."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def pretty_json(obj: Any) -> str:
    """Strict, sorted, indented JSON with a final newline (files people read and tools parse)."""
    return json.dumps(strict(obj), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def json_line(obj: Any) -> str:
    """One strict JSON line without the newline (trace.jsonl, JSONL outputs)."""
    return json.dumps(strict(obj), sort_keys=True, ensure_ascii=False, allow_nan=False)
