"""`dlc data list|show|fetch` through the real CLI entry point; fetch downloads from a real HTTP server on
127.0.0.1 that mirrors the shared data (no network needed, nothing mocked)."""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

from dlc.cli import main
from dlc.data import TASKS, fingerprint, load_task
from dlc.data.fetch import SHA256, url_for

from conftest import DATA
needs_data = pytest.mark.skipif(not (DATA / "README.md").is_file(),
                                reason=f"the shared offline data ({DATA}) is not available on this machine")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _serve(root: Path) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mirror() -> Iterator[str]:
    with _serve(DATA) as url:
        yield url


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_public_urls_are_pinned() -> None:
    assert url_for("BIG-Bench-Hard/bbh/navigate.json") == (
        "https://raw.githubusercontent.com/suzgunmirac/BIG-Bench-Hard/9ee07bd481feebf959a6b59d61ea57bdcf30964d/"
        "bbh/navigate.json")
    assert url_for("BIG-bench/bigbench/benchmark_tasks/navigate/task.json").startswith(
        "https://raw.githubusercontent.com/google/BIG-bench/main/bigbench/benchmark_tasks/")
    assert url_for("x/y.json", "http://h:1/m/") == "http://h:1/m/x/y.json"
    for t in TASKS.values():
        for f in t.files:
            url_for(f)  # every file has a source


@needs_data
def test_sha256_pins_match_shared_sums() -> None:
    sums = {line.split()[1].removeprefix("./"): line.split()[0]
            for line in (DATA / "SHA256SUMS").read_text().splitlines() if line.strip()}
    for rel, digest in SHA256.items():
        assert sums[rel] == digest, rel


@needs_data
def test_fetch_from_mirror_then_load(tmp_path: Path, mirror: str, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DLC_DATA_MIRROR", mirror)
    dest = tmp_path / "cache" / "data"
    assert main(["data", "fetch", "navigate", "--data-dir", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "2 file(s) written" in out
    assert _tree(dest) == sorted(["BIG-Bench-Hard", "BIG-Bench-Hard/bbh", "BIG-Bench-Hard/bbh/navigate.json",
                                  "BIG-bench", "BIG-bench/bigbench", "BIG-bench/bigbench/benchmark_tasks",
                                  "BIG-bench/bigbench/benchmark_tasks/navigate",
                                  "BIG-bench/bigbench/benchmark_tasks/navigate/task.json"])
    raw = load_task("navigate", root=dest)
    assert fingerprint([r["input"] for r in raw.train]) == "c6451bce2a40"
    assert main(["data", "fetch", "navigate", "--data-dir", str(dest)]) == 0
    assert "already present" in capsys.readouterr().out
    monkeypatch.setenv("DLC_DATA_DIR", str(dest))  # the env var is the data dir when --data-dir is absent
    assert main(["data", "show", "navigate", "-n", "1"]) == 0
    assert "[navigate/train/0] target: no" in capsys.readouterr().out


@needs_data
def test_fetch_rejects_a_corrupt_download_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "mirror"
    for rel in TASKS["mpqa"].files:
        (bad / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / rel, bad / rel)
    with open(bad / TASKS["mpqa"].files[2], "a", encoding="utf-8") as f:  # tamper with the last file
        f.write('{"sentence": "tampered", "label": "0"}\n')
    dest = tmp_path / "data"
    with _serve(bad) as url:
        monkeypatch.setenv("DLC_DATA_MIRROR", url)
        assert main(["data", "fetch", "mpqa", "--data-dir", str(dest)]) == 1
    err = capsys.readouterr().err
    assert "error[E810]: checksum mismatch" in err
    assert not dest.exists()  # the first two files were fine, but nothing is left half-fetched


def test_fetch_offline_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DLC_DATA_MIRROR", f"http://127.0.0.1:{port}")
    existing = tmp_path / "data"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    for dest in (tmp_path / "new" / "data", existing):
        assert main(["data", "fetch", "trec", "--data-dir", str(dest)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-2].startswith("error[E809]: cannot download http://127.0.0.1:")
        assert err[-1].startswith("hint: check your internet connection")
    assert not (tmp_path / "new").exists()
    assert _tree(existing) == ["keep.txt"]


def test_fetch_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["data", "fetch", "gen:sort", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error[E824]: 'gen:sort' is generated") and "no files to fetch" in err  # known: not E803
    assert main(["data", "fetch", "trek", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error[E803]") and "did you mean 'trec'?" in err
    assert _tree(tmp_path) == []


def test_fetch_into_a_data_dir_that_cannot_be_one(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A regular file, or a path under one: were FileExistsError / NotADirectoryError tracebacks; nothing is
    created (checked before any download: the mirror is a port nobody listens on)."""
    monkeypatch.setenv("DLC_DATA_MIRROR", "http://127.0.0.1:9")
    (tmp_path / "afile").write_text("mine")
    for dest, why in (("afile", "is not a directory"), ("afile/data", "cannot be written (Not a directory)")):
        assert main(["data", "fetch", "navigate", "--data-dir", str(tmp_path / dest)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error[E801]: data directory {tmp_path / dest} {why}"), err
        assert "hint: pass --data-dir a writable directory" in err
    assert main(["data", "show", "navigate", "--data-dir", str(tmp_path / "afile")]) == 1
    assert "afile (from --data-dir) is not a directory" in capsys.readouterr().err
    assert _tree(tmp_path) == ["afile"] and (tmp_path / "afile").read_text() == "mine"


def test_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in TASKS:
        assert name in out
    assert "missing (dlc data fetch navigate)" in out and "none needed" in out
    if (DATA / "README.md").is_file():
        assert main(["data", "list", "--data-dir", str(DATA)]) == 0
        assert "missing" not in capsys.readouterr().out.split("data dir:")[0]


def test_show(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["data", "show", "gen:sort", "-n", "2", "--split", "test", "--format", "jsonl"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and lines[0]["id"] == "gen:sort/test/0"
    assert lines[0]["target"].split() == sorted(lines[0]["input"].split("List: ")[1].split())
    path = tmp_path / "mine.jsonl"
    path.write_text('{"input": "hello", "label": "greeting"}\n', encoding="utf-8")
    assert main(["data", "show", str(path)]) == 0
    assert "target: greeting" in capsys.readouterr().out
    assert main(["data", "show", "navigate", "--data-dir", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "error[E801]" in err and "Traceback" not in err
    assert main(["data", "show", "navigat"]) == 1
    assert "did you mean 'navigate'?" in capsys.readouterr().err
    if (DATA / "README.md").is_file():
        assert main(["data", "show", "trec", "--split", "dev", "-n", "1", "--data-dir", str(DATA)]) == 0
        out = capsys.readouterr().out
        assert "classes: description ('description' | 'Description')" in out and "train/dev/test: 1000/256/250" in out


def test_data_show_maps_the_fields_of_a_custom_file(tmp_path, capsys, monkeypatch):
    """`dlc data show my.jsonl --field q=question --target-field answer`: a file whose columns are not `input`/
    `label` is shown through the same mapping a data block's `fields` gives (issue 17: it could not be)."""
    monkeypatch.chdir(tmp_path)
    Path("qa.jsonl").write_text('{"question": "What is 2+2?", "context": "math", "answer": "4"}\n'
                                '{"question": "Capital of France?", "context": "geo", "answer": "Paris"}\n')
    assert main(["data", "show", "qa.jsonl", "--field", "q=question", "--field", "c=context",
                 "--target-field", "answer", "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "[qa/train/1] target: Paris\n  q:\n  | Capital of France?\n  c:\n  | geo" in out
    assert main(["data", "show", "qa.jsonl", "--field", "q=question", "--target-field", "answer", "--format",
                 "jsonl", "-n", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": "qa/train/0", "q": "What is 2+2?", "target": "4"}
    for bad in (["--field", "question"], ["--field", "q=question", "--field", "q=context"]):
        assert main(["data", "show", "qa.jsonl", *bad]) == 1
        assert "error[E118]" in capsys.readouterr().err
    assert main(["data", "show", "qa.jsonl"]) == 1                      # unmapped: the loader's own error
    # (the default target field `label` is missing too, and named first: the input's E805 came before)
    assert "error[E804]: data.target_field names field 'label'" in capsys.readouterr().err
    assert main(["data", "show", "qa.jsonl", "--target-field", "answer"]) == 1
    assert "error[E805]" in capsys.readouterr().err


def test_show_seed_out_of_range_is_a_usage_error(capsys) -> None:
    """Was a ValueError traceback from numpy's RandomState; now argparse's usage error (exit 2), as a non-integer."""
    for bad in ("-1", str(2**32)):
        with pytest.raises(SystemExit) as ei:
            main(["data", "show", "gen:navigate", "--seed", bad])
        assert ei.value.code == 2
        err = capsys.readouterr().err
        assert f"argument --seed: {bad} is out of range: a seed is 0 to 4294967295" in err and "Traceback" not in err
