"""Semantic checks: the broken-file corpus (each file names its expected errors in a `# expect:` header) and
checks that need more than one file."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from dlc.cli import main
from dlc.lang.compiler import compile_file, compile_source
from dlc.errors import CompileFailed, DlcError

from conftest import BROKEN as BROKEN_DIR

BROKEN = sorted(BROKEN_DIR.glob("*.dln"))
EXPECT_RE = re.compile(r"(E\d{3}) (\d+):(\d+)")


def expected(path: Path) -> list[tuple[str, int, int]]:
    head = path.read_text(encoding="utf-8").splitlines()[0]
    assert head.startswith("# expect:"), f"{path.name} has no '# expect:' header"
    return sorted((c, int(l), int(k)) for c, l, k in EXPECT_RE.findall(head))


def test_corpus_is_large_enough() -> None:
    assert len(BROKEN) >= 30
    codes = {c for p in BROKEN for c, _, _ in expected(p)}
    assert len(codes) >= 30, sorted(codes)


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_file(path: Path) -> None:
    with pytest.raises(CompileFailed) as ei:
        compile_file(path)
    got = sorted((e.code, e.span.line, e.span.col) for e in ei.value.errors if e.span is not None)
    assert got == expected(path)
    rendered = ei.value.render()
    first = ei.value.errors[0]
    assert f"{path}:{first.span.line}:{first.span.col}: error[{first.code}]" in rendered
    assert "Traceback" not in rendered


@pytest.mark.parametrize("path", BROKEN[:6], ids=[p.stem for p in BROKEN[:6]])
def test_cli_exit_status_and_rendering(path: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["compile", str(path)]) == 1
    err = capsys.readouterr().err
    assert re.search(r":\d+:\d+: error\[E\d{3}\]: ", err)
    assert "error found" in err or "errors found" in err
    assert not (tmp_path / ".dlc").exists()


def test_all_errors_in_one_run() -> None:
    src = ('input x\n'
           'layer h(x) { template = step_by_stp  temperature = 9 }\n'
           'layer y(x, h) { model = nope  output = choice { a: "a", b: "a" } }\n'
           'output y\n'
           'fit { iters = -3 }\n')
    with pytest.raises(CompileFailed) as ei:
        compile_source(src, "many.dln")
    codes = [e.code for e in ei.value.errors]
    assert codes == ["E301", "E311", "E304", "E321", "E311"]
    text = ei.value.render()
    assert text.count("error[") == 5 and text.endswith("5 errors found")
    assert "did you mean 'step_by_step'?" in text


def test_template_file_syntax_error_points_into_the_template(tmp_path: Path) -> None:
    (tmp_path / "fwd.j2").write_text("{{ prompt }}\n\n{{ input }\nAnswer:\n", encoding="utf-8")
    net = tmp_path / "net.dln"
    net.write_text('input x\nlayer y(x) { template = file "fwd.j2" }\noutput y\n', encoding="utf-8")
    with pytest.raises(CompileFailed) as ei:
        compile_file(net)
    (err,) = ei.value.errors
    assert err.code == "E351"
    assert err.span.path.endswith("fwd.j2") and err.span.line == 3
    assert "{{ input }" in err.render()


def test_template_file_variables_are_checked(tmp_path: Path) -> None:
    (tmp_path / "fwd.j2").write_text("{{ prompt }}\n{{ x }} / {{ h }} / {{ other }}\n", encoding="utf-8")
    net = tmp_path / "net.dln"
    net.write_text('input x\nlayer h(x) {}\nlayer y(x, h) { template = file "fwd.j2" }\noutput y\n',
                   encoding="utf-8")
    with pytest.raises(CompileFailed) as ei:
        compile_file(net)
    (err,) = ei.value.errors
    assert err.code == "E354" and "'other'" in err.message and err.span.line == 3


def test_posterior_and_prompt_templates_get_their_own_variables() -> None:
    ok = ('input x\nlayer h(x) { backward { prompt = """{{ prompt }}{% for e in errors %}{{ e.input }}{% endfor %}'
          '{{ message }}"""  posterior = { prior: 1 } } }\nlayer y(x, h) {}\noutput y\n')
    compile_source(ok)
    bad = 'input x\nlayer h(x) { backward { prompt = """{{ forward }}""" } }\nlayer y(x, h) {}\noutput y\n'
    with pytest.raises(CompileFailed) as ei:
        compile_source(bad)
    assert [e.code for e in ei.value.errors] == ["E354"]


def test_errors_are_dlc_errors_with_codes() -> None:
    for path in BROKEN:
        try:
            compile_file(path)
        except CompileFailed as e:
            assert all(isinstance(x, DlcError) and re.fullmatch(r"E\d{3}", x.code) and x.hint is not None
                       or x.code in ("E311", "E310") for x in e.errors), path
