"""The SQLite (WAL) LLM cache: canonical keys, hits and misses, persistence, concurrent processes."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3

from dlc.lm.cache import CACHE_FILE, DiskCache, canonical_json, request_key


def test_key_is_canonical_and_covers_every_field():
    base = {"kind": "generate", "model": "embedded:tiny@abc", "prompt": {"raw": "Hi"}, "temperature": 0.7,
            "top_p": 1.0, "max_tokens": 16, "stop": ["\n"], "n": 2, "seed": 3}
    k = request_key(base)
    assert k == request_key(dict(reversed(list(base.items()))))     # key order does not matter
    assert len(k) == 64
    variants = [("model", "embedded:tiny@abd"), ("prompt", {"raw": "Hi "}), ("temperature", 0.70001),
                ("top_p", 0.9), ("max_tokens", 17), ("stop", []), ("n", 3), ("seed", 4), ("kind", "score")]
    keys = {request_key({**base, f: v}) for f, v in variants}
    assert len(keys) == len(variants) and k not in keys
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


def test_hits_misses_and_persistence(tmp_path):
    c = DiskCache(tmp_path)
    assert c.get("k1") is None and len(c) == 0
    c.put("k1", {"logprobs": [-0.1234567890123, -2.5], "tokens": ["a", "b"]}, kind="score", model="m")
    assert c.get("k1") == {"logprobs": [-0.1234567890123, -2.5], "tokens": ["a", "b"]}   # floats round-trip
    c.close()
    c2 = DiskCache(tmp_path)
    assert c2.get("k1")["tokens"] == ["a", "b"] and len(c2) == 1
    c2.put("k1", {"x": 1})
    assert c2.get("k1") == {"x": 1} and len(c2) == 1
    mode = sqlite3.connect(tmp_path / CACHE_FILE).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_default_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "here"))
    c = DiskCache()
    assert c.path == tmp_path / "here" / CACHE_FILE and c.path.exists()


def _writer(directory: str, who: int, n: int) -> None:
    c = DiskCache(directory)
    for i in range(n):
        c.put(f"{who}-{i}", {"who": who, "i": i})
        c.get(f"{1 - who}-{i}")
    c.close()


def test_concurrent_processes_share_the_cache(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 60)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    c = DiskCache(tmp_path)
    assert len(c) == 120 and c.get("1-59") == {"who": 1, "i": 59}


def _open_at_once(directory: str, barrier, errors) -> None:
    barrier.wait()
    try:
        DiskCache(directory).put("k", {"ok": True})
    except Exception as e:          # noqa: BLE001 - the test reports whatever an opener raised
        errors.put(str(e))


def test_many_processes_opening_a_new_cache_at_once_all_succeed(tmp_path):
    """A sweep's trials open one new cache at the same instant: the WAL switch and the table creation answered
    'database is locked' at once (CI, stop 22; 4 of 40 trials of this test before the retry loop)."""
    ctx = mp.get_context("fork")
    errors = ctx.Queue()
    for trial in range(25):
        barrier = ctx.Barrier(6)
        directory = str(tmp_path / f"t{trial}")
        procs = [ctx.Process(target=_open_at_once, args=(directory, barrier, errors)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    assert errors.empty(), errors.get()
