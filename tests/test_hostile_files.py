"""Files that are not what dlc expects (issue 16): bytes that are not UTF-8 in a .dln rewritten after compile, in
`.dlc/LAST`, in a compiled artifact or in a run's source.dln; a directory where a file belongs. Each is one clear
`error[Ennn]` (exit 1, no traceback) or, where nothing is lost, handled. Scripted LM, generated data, no network."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dlc.cli import main

from conftest import REPO

NET = (REPO / "graphs" / "navigate.dln").read_text(encoding="utf-8")
SMALL = {"data.task": "gen:navigate", "data.train_size": "8", "data.dev_size": "4", "data.test_size": "4",
         "fit.iters": "1", "fit.batch_size": "2", "fit.num_p_samples": "2", "model.default.backend": "scripted"}
SETS = [a for k, v in SMALL.items() for a in ("--set", f"{k}={v}")]


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "bug in dlc" not in err, err
    return err


@pytest.fixture()
def compiled(tmp_path: Path, monkeypatch) -> Path:
    """A directory where `dlc compile net.dln` ran (net.dln, .dlc/navigate.json, .dlc/LAST)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.dln").write_text(NET, encoding="utf-8")
    assert main(["compile", "net.dln", *SETS]) == 0
    return tmp_path


@pytest.fixture()
def run(compiled: Path, capsys) -> Path:
    """A finished scripted run of net.dln."""
    assert main(["fit", "net.dln", *SETS, "--run-dir", "run", "--no-progress"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return compiled / "run"


# ------------------------------------------------------------------------------------------------ not UTF-8

def test_a_dln_rewritten_with_bytes_that_are_not_utf8_after_compile(compiled: Path, capsys) -> None:
    """The artifact no longer has its source (as when the source changed): the fit goes on from the artifact, and
    naming the .dln itself is E105."""
    with open(compiled / "net.dln", "ab") as f:
        f.write(b"# caf\xe9\n")
    assert main(["fit", "--dry-run"]) == 0
    _err(capsys)
    assert main(["fit", ".dlc/navigate.json", "--dry-run"]) == 0
    _err(capsys)
    assert main(["fit", "net.dln", "--dry-run"]) == 1
    assert "error[E105]" in _err(capsys)
    # --set on the artifact recompiles its source, which is no longer what it was compiled from (was a
    # UnicodeDecodeError traceback)
    for cmd in ("fit", "eval"):
        assert main([cmd, ".dlc/navigate.json", "--dry-run" if cmd == "fit" else "--split=dev",
                     "--set", "fit.iters=1"]) == 1
        assert _err(capsys).startswith("error[E103]: --set needs the .dln source of .dlc/navigate.json, and net.dln "
                                       "changed since it was compiled")


def test_last_pointer_that_is_not_utf8(compiled: Path, capsys) -> None:
    (compiled / ".dlc" / "LAST").write_bytes(b"/tmp/\xff\xfe.json\n")
    assert main(["fit", "--dry-run"]) == 1
    err = _err(capsys)
    assert err.startswith("error[E505]") and "LAST" in err and "dlc compile" in err


def test_compiled_artifact_that_is_not_utf8(compiled: Path, capsys) -> None:
    with open(compiled / ".dlc" / "navigate.json", "ab") as f:
        f.write(b"\xff")
    for cmd in (["show", ".dlc/navigate.json"], ["fit", "--dry-run"], ["eval", ".dlc/navigate.json"]):
        assert main(cmd) == 1, cmd
        assert "error[E502]" in _err(capsys)


def test_a_runs_source_that_is_not_utf8_is_a_damaged_run(run: Path, capsys) -> None:
    with open(run / "source.dln", "ab") as f:
        f.write(b"# \xff\xfe\n")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir() if p.is_file()}
    for cmd in (["fit", "--resume", str(run)], ["eval", str(run), "--split", "dev"], ["fit", str(run), "--dry-run"]):
        assert main(cmd) == 1, cmd
        err = _err(capsys)
        assert err.startswith("error[E502]") and "source.dln" in err, err
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir() if p.is_file()}
    assert after == before


# ------------------------------------------------------------------------------------------------ path kinds

def test_eval_json_into_a_directory_is_refused_before_evaluating(run: Path, capsys, monkeypatch) -> None:
    """Used to evaluate, then die in the write with IsADirectoryError (a traceback, the evaluation lost)."""
    import dlc.app as api

    (run.parent / "adir").mkdir()
    (run.parent / "afile").write_text("")
    calls = []
    real = api.evaluate_targets
    monkeypatch.setattr(api, "evaluate_targets", lambda *a, **k: calls.append(1) or real(*a, **k))
    for where, why in (("adir", "is a directory"), ("afile/r.json", "afile is not a directory")):
        assert main(["eval", str(run), "--split", "dev", "--json", where]) == 1
        err = _err(capsys)
        assert err.startswith(f"error[E109]: --json {where} ") and why in err, err
    assert calls == []                                    # refused before anything was evaluated
    assert main(["eval", str(run), "--split", "dev", "--json", "new/r.json"]) == 0
    assert (run.parent / "new" / "r.json").read_text().startswith("{")


def test_show_output_into_a_directory(run: Path, capsys) -> None:
    (run.parent / "adir").mkdir()
    for target in ("net.dln", str(run)):
        assert main(["show", target, "-o", "adir"]) == 1
        assert _err(capsys).startswith("error[E109]: -o adir is a directory")
    assert list((run.parent / "adir").iterdir()) == []


def test_show_run_output_of_a_kind_it_cannot_draw(run: Path, capsys) -> None:
    """`-o report.txt`: was matplotlib's ValueError traceback after the summary was printed; now E109 first. The
    kinds it can draw are written whole (atomically), in the format their suffix names."""
    pytest.importorskip("matplotlib")
    assert main(["show", str(run), "-o", "report.txt"]) == 1
    err = _err(capsys)
    assert err.startswith("error[E109]: -o report.txt: a run's learning curve is written as one of "), err
    assert ".png" in err and ".jpg" in err and ".txt" not in err.split("one of", 1)[1]
    assert not (run.parent / "report.txt").exists()
    for name, head in (("c.svg", b"<?xml"), ("c.pdf", b"%PDF"), ("c.png", b"\x89PNG"), ("c", b"\x89PNG"),
                       ("c.jpg", b"\xff\xd8")):
        assert main(["show", str(run), "-o", name]) == 0, _err(capsys)
        assert (run.parent / name).read_bytes().startswith(head), name
    assert not [p for p in run.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_file_where_a_directory_belongs(compiled: Path, capsys) -> None:
    (compiled / "afile").write_text("")
    assert main(["fit", "net.dln", *SETS, "--run-dir", "afile", "--no-progress"]) == 1
    assert _err(capsys).startswith("error[E130]: --run-dir afile is a file")
    # under a file, or --runs-root a file or under one: E130 with a hint, before any model is opened (the message
    # used to come after the plan, without a hint)
    for opt, where, why in (("--run-dir", "afile/run", "cannot be created: "), ("--runs-root", "afile",
                            "is a file, not a directory"), ("--runs-root", "afile/runs", "cannot be created: ")):
        assert main(["fit", "net.dln", *SETS, opt, where, "--no-progress"]) == 1
        out, err = capsys.readouterr()
        assert err.startswith(f"error[E130]: {opt} {where} {why}") and "\nhint: give " in err, err
        assert "Traceback" not in err
    assert main(["runs", "afile"]) == 1
    assert _err(capsys).startswith("error[E104]: afile is a file")
    assert (compiled / "afile").read_text() == ""


# ------------------------------------------------------------------------------------------------ nothing half-written

def _runs(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "runs").iterdir()) if (root / "runs").exists() else []


def test_a_cache_of_another_layout_is_refused_before_the_run_directory(compiled: Path, capsys) -> None:
    """Used to create the run directory, then fail at the first lookup (E531 'no such column: value')."""
    import sqlite3

    for name, sql in (("cols", ["CREATE TABLE entries (k TEXT)"]),
                      ("version", ["CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
                                   "INSERT INTO meta VALUES ('schema', '7')"])):
        (compiled / name).mkdir()
        con = sqlite3.connect(compiled / name / "lm-cache.sqlite3")
        for q in sql:
            con.execute(q)
        con.commit()
        con.close()
        assert main(["fit", "net.dln", *SETS, "--cache-dir", name, "--no-progress"]) == 1
        err = _err(capsys)
        assert "error[E531]" in err and ("lacks column" in err or "schema version '7'" in err), err
        assert _runs(compiled) == []


def test_targets_outside_the_labels_are_refused_before_the_run_directory(compiled: Path, capsys) -> None:
    import json

    rows = [{"input": f"t{i}", "label": ["yes", "no"][i % 2]} for i in range(20)]
    rows[-1]["label"] = "maybe"             # in the carved test split: used to fail after the whole fit
    (compiled / "lab.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = next(line for line in NET.splitlines() if line.startswith("data {"))
    (compiled / "lab.dln").write_text(NET.replace(data, 'data { path = "lab.jsonl" }'))
    sets = [a for k, v in SMALL.items() if not k.startswith("data.") for a in ("--set", f"{k}={v}")]
    assert main(["fit", "lab.dln", *sets, "--no-progress"]) == 1
    err = _err(capsys)
    assert "error[E819]" in err and "'maybe'" in err, err
    assert _runs(compiled) == []


def test_a_template_that_fails_to_render_is_refused_before_the_run_directory(compiled: Path, capsys) -> None:
    src = NET.replace("template = residual", 'template = """{{ input.__class__ }}{{ input }} {{ h }} {{ prompt }}"""')
    assert src != NET
    (compiled / "bad.dln").write_text(src)
    assert main(["fit", "bad.dln", *SETS, "--no-progress"]) == 1
    err = _err(capsys)
    assert "error[E353]" in err and "in node y" in err, err
    assert _runs(compiled) == []


class _ChatOnly:
    """A chat-only OpenAI-compatible server on 127.0.0.1 (no /v1/completions: no prompt log-probabilities)."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class H(BaseHTTPRequestHandler):
            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, {"data": [{"id": "m"}]}) if self.path.endswith("/models") else \
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path.endswith("/chat/completions"):
                    self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "yes"},
                                                  "finish_reason": "stop"}],
                                     "usage": {"prompt_tokens": 5, "completion_tokens": 1}})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def log_message(self, *a: object) -> None:
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/v1"

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def test_a_missing_capability_is_refused_before_the_run_directory(compiled: Path, capsys, monkeypatch) -> None:
    """A chat-only server cannot score labels: E628 used to come at the first scoring, inside the run directory."""
    srv = _ChatOnly()
    monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
    try:
        sets = [a for k, v in {**SMALL, "model.default.backend": "openai", "model.default.model": "m"}.items()
                for a in ("--set", f"{k}={v}")]
        assert main(["fit", "net.dln", *sets, "--no-progress", "--no-cache"]) == 1
        err = _err(capsys)
        assert "error[E628]" in err and "log-probabilities" in err, err
        assert _runs(compiled) == []
    finally:
        srv.close()


# ------------------------------------------------------------------------------------------------ sizes

def test_a_source_over_the_cap_is_e216_and_the_error_line_is_short(tmp_path: Path, monkeypatch, capsys) -> None:
    """A 5 MB string used to take 1.7 GB and an unterminated one printed a 5 MB error line."""
    monkeypatch.chdir(tmp_path)
    big = NET.replace('prompt = "Track', 'prompt = "' + "x" * (1 << 20) + ' Track')
    (tmp_path / "big.dln").write_text(big)
    assert main(["compile", "big.dln"]) == 1
    err = _err(capsys)
    assert "error[E216]" in err and len(err) < 2000, err[:500]
    unterminated = NET.replace('prompt = "Track', 'prompt = "' + "y" * 500_000)
    unterminated = unterminated[:unterminated.index("y" * 500_000) + 500_000]        # the file ends in the string
    (tmp_path / "open.dln").write_text(unterminated)
    assert main(["compile", "open.dln"]) == 1
    err = _err(capsys)
    assert "error[E202]" in err and len(err) < 2000, err[:500]


def test_a_set_value_over_the_cap_is_e216(tmp_path: Path) -> None:
    from dlc.errors import DlcError
    from dlc.lang.compiler import compile_source

    with pytest.raises(DlcError) as e:
        compile_source(NET, "net.dln", {"layer.y.prompt": '"' + "z" * (1 << 20) + '"'})
    assert "E216" in str(e.value) or any(x.code == "E216" for x in getattr(e.value, "errors", []))


def test_a_fifo_as_the_network_is_refused_not_waited_on(tmp_path: Path, monkeypatch, capsys) -> None:
    import os

    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "net.dln")
    assert main(["compile", "net.dln"]) == 1
    assert _err(capsys).startswith("error[E104]: net.dln is not a regular file")


# ------------------------------------------------------------------------------------------------ JSON past the parser

LONG_INT = "1" * 5000                 # Python refuses integer strings over 4300 digits (a ValueError, not a decode error)
DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError in the parser


def test_data_files_with_a_number_too_long_or_nesting_too_deep(tmp_path: Path, capsys) -> None:
    """Were tracebacks: the readers caught only JSONDecodeError."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"input": "a", "label": "yes"}\n{"input": "b", "label": ' + LONG_INT + "}\n", encoding="utf-8")
    assert main(["data", "show", str(rows)]) == 1
    err = _err(capsys)
    assert err.startswith(f"error[E815]: {rows}:2: not a JSON object (a number too long to read"), err
    doc = tmp_path / "rows.json"
    for text in ('[{"input": "a", "label": ' + LONG_INT + "}]", DEEP):
        doc.write_text(text, encoding="utf-8")
        assert main(["data", "show", str(doc)]) == 1
        err = _err(capsys)
        assert err.startswith(f"error[E815]: {doc} is not valid JSON ("), err
    # a .json file saved with a byte-order mark reads like the .jsonl and .csv files that have one
    doc.write_text('\ufeff[{"input": "a", "label": "yes"}]', encoding="utf-8")
    assert main(["data", "show", str(doc)]) == 0, _err(capsys)


def test_run_files_and_artifacts_with_a_number_too_long(run: Path, capsys) -> None:
    """A checkpoint or trace line with a 5000-digit number, an artifact nested past the parser: E502, nothing
    changed (were tracebacks in show, report and --resume)."""
    ck = run / "checkpoint.json"
    ck.write_text(ck.read_text(encoding="utf-8").replace('"iteration": 1', '"iteration": ' + LONG_INT, 1),
                  encoding="utf-8")
    assert LONG_INT in ck.read_text(encoding="utf-8")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir() if p.is_file()}
    for cmd in (["show", str(run)], ["report", str(run)], ["fit", "--resume", str(run)]):
        assert main(cmd) == 1, cmd
        err = _err(capsys)
        assert err.startswith("error[E502]: corrupted run directory: ") and "a number too long" in err, err
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir() if p.is_file()}
    assert after == before
    art = run.parent / "deep.json"
    art.write_text(DEEP, encoding="utf-8")
    assert main(["show", str(art)]) == 1
    assert _err(capsys).startswith(f"error[E502]: {art} is not valid JSON (lists or objects nested too deeply)")


def test_run_stdin_with_a_number_too_long(compiled: Path, capsys, monkeypatch) -> None:
    import io

    for line in ('{"input": ' + LONG_INT + "}", DEEP):
        monkeypatch.setattr("sys.stdin", io.StringIO(line + "\n"))
        assert main(["run", ".dlc/navigate.json"]) == 1
        assert _err(capsys).startswith("error[E122]: stdin line 1 is not JSON ("), line[:20]
