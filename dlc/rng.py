"""The only source of randomness in dlc: one run seed, and a child generator per (purpose, node, iteration ...) path.

The reference implementation mixes an unseeded global `np.random` with fixed RNGs (dln-reference §6.2); dlc instead
derives every random choice from sha256(seed, path), so a choice does not depend on how many others came before it,
and a resumed run makes exactly the choices an uninterrupted one makes. Never `hash()` (salted per process).
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass


def derive_seed(seed: int, *path: object) -> int:
    """A 63-bit seed that depends only on (seed, path)."""
    payload = json.dumps([seed, [str(p) for p in path]], separators=(",", ":")).encode("utf-8")
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class Rng:
    """A root seed. `derive(...)` returns an independent `random.Random` for a path."""

    seed: int

    def derive(self, *path: object) -> random.Random:
        return random.Random(derive_seed(self.seed, *path))

    def seed_for(self, *path: object) -> int:
        """An integer seed for an LLM sampling request (recorded in the request and its cache key)."""
        return derive_seed(self.seed, *path) % (2**31 - 1)
