"""`file "path"` templates (issue 16, item 5): inside the .dln's directory tree (or $DLC_TEMPLATE_DIRS) only, regular
files only, at most 1 MiB; each refusal is a compile error with a caret, and nothing hangs or reads without bound."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from dlc.cli import main
from dlc.errors import CompileFailed
from dlc.lang.compiler import TEMPLATE_FILE_MAX, compile_file


@pytest.fixture(autouse=True)
def _guard(monkeypatch):
    """A FIFO or a device must not hang the compiler: fail the test instead of the suite."""
    monkeypatch.delenv("DLC_TEMPLATE_DIRS", raising=False)

    def timeout(*_):
        raise TimeoutError("compile hung")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _net(d: Path, ref: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    net = d / "net.dln"
    net.write_text(f'input x\nlayer y(x) {{\n  template = file "{ref}"\n}}\noutput y\n', encoding="utf-8")
    return net


def _one_error(net: Path) -> tuple[str, str]:
    with pytest.raises(CompileFailed) as ei:
        compile_file(net)
    errs = ei.value.errors
    assert len(errs) == 1 and errs[0].span is not None and (errs[0].span.line, errs[0].span.col) == (3, 19)
    rendered = ei.value.render()
    assert "^^^" in rendered and "Traceback" not in rendered
    return errs[0].code, rendered


def test_paths_leaving_the_directory_are_refused(tmp_path, monkeypatch):
    (tmp_path / "outside.j2").write_text("{{ input }} secret\n")
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "ok.j2").write_text("{{ prompt }} {{ input }}\n")
    (tmp_path / "a" / "b" / "link.j2").symlink_to(tmp_path / "outside.j2")
    assert compile_file(_net(tmp_path / "a" / "b", "ok.j2")).layers["y"].template.text.startswith("{{ prompt }}")
    for ref in ("../../outside.j2", str(tmp_path / "outside.j2"), "link.j2", "../../../../../../../../etc/passwd",
                "/etc/passwd"):
        code, rendered = _one_error(_net(tmp_path / "a" / "b", ref))
        assert code == "E356" and "outside the network's directory" in rendered and "DLC_TEMPLATE_DIRS" in rendered
    # an explicit setting allows another directory
    monkeypatch.setenv("DLC_TEMPLATE_DIRS", str(tmp_path))
    g = compile_file(_net(tmp_path / "a" / "b", "../../outside.j2"))
    assert "secret" in g.layers["y"].template.text


def test_devices_fifos_and_directories_are_refused_without_hanging(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "fifo.j2")
    (tmp_path / "dir.j2").mkdir()
    for ref in ("fifo.j2", "dir.j2"):
        code, rendered = _one_error(_net(tmp_path, ref))
        assert code == "E357" and "not a regular file" in rendered
    monkeypatch.setenv("DLC_TEMPLATE_DIRS", "/dev")
    for ref in ("/dev/zero", "/dev/urandom"):
        code, _ = _one_error(_net(tmp_path, ref))
        assert code == "E357"


def test_files_over_the_cap_are_refused(tmp_path):
    (tmp_path / "big.j2").write_bytes(b"{{ input }}" + b"x" * TEMPLATE_FILE_MAX)
    code, rendered = _one_error(_net(tmp_path, "big.j2"))
    assert code == "E357" and "larger than 1024 KiB" in rendered
    (tmp_path / "fits.j2").write_bytes(b"{{ input }}" + b"x" * (TEMPLATE_FILE_MAX - 20))
    assert len(compile_file(_net(tmp_path, "fits.j2")).layers["y"].template.text) > TEMPLATE_FILE_MAX - 20


def test_cli_compile_exits_1_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _net(tmp_path / "n", "../../../../../../../../etc/passwd")
    assert main(["compile", "n/net.dln"]) == 1
    err = capsys.readouterr().err
    assert "error[E356]" in err and "^" in err and "root:" not in err
    assert not (tmp_path / ".dlc").exists()
