"""bench/served.py: `dlc serve` started for a bench script as a real subprocess on 127.0.0.1 (tiny model), its
address and model read back, and a server that cannot start reported as one line (no traceback)."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from conftest import bench_module

served = bench_module("served")
pytestmark = pytest.mark.model


def test_the_server_starts_answers_and_stops(tmp_path: Path) -> None:
    server = served.DlcServer("tiny", threads=1, n_ctx=256, log_path=tmp_path / "serve.log", start_timeout=120)
    try:
        url = server.start()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert server.name == "tiny" and server.start_seconds > 0
        server.check_alive()
        with urllib.request.urlopen(url + "/models", timeout=30) as r:
            assert json.load(r)["data"][0]["id"] == "tiny"
        proc = server.proc
    finally:
        server.stop()
    assert proc is not None and proc.poll() is not None          # stopped by its PID, not left running
    with pytest.raises(served.Fatal, match="dlc serve exited"):
        server.check_alive()


def test_a_server_that_cannot_start_is_one_line_with_dlc_s_error(tmp_path: Path) -> None:
    server = served.DlcServer("no-such-model", threads=1, n_ctx=256, log_path=tmp_path / "serve.log",
                              start_timeout=60)
    with pytest.raises(served.Fatal) as e:
        server.start()
    msg = str(e.value)
    assert msg.startswith("dlc serve did not start: error[E") and "no-such-model" in msg and "\n" not in msg
    assert server.proc is None
