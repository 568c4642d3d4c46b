"""`dlc selftest`: the model is loaded in a real subprocess; a crash there becomes a clear error naming the fix."""
from __future__ import annotations

import pytest

from dlc.cli import main
from dlc.commands.selftest import CRASH_ENV


@pytest.mark.model
def test_selftest_tiny_passes(capsys):
    assert main(["selftest", "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("selftest ok: tiny (SmolLM2-135M-Instruct Q4_1, sha256 b179c9523d0e")
    assert "log p(' Paris' | 'The capital of France is') = -0.26" in out


@pytest.mark.model
@pytest.mark.parametrize("sig", ["SIGSEGV", "SIGILL"])
def test_crash_in_child_names_the_rebuild(monkeypatch, capsys, sig):
    # the child really dies by this signal right after loading, as an AMX build does at its first decode
    monkeypatch.setenv(CRASH_ENV, sig)
    assert main(["selftest"]) == 1
    err = capsys.readouterr().err
    assert f"error[E645]: the embedded model crashed with {sig} during 'decode'" in err
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF' in err and "llama-cpp-python==0.3.36" in err
    assert "Traceback" not in err


def test_unknown_model_is_reported_from_the_child(capsys):
    assert main(["selftest", "--model", "nonexistent-model"]) == 1
    err = capsys.readouterr().err
    assert "error[E611]: unknown model 'nonexistent-model'" in err and "Traceback" not in err
