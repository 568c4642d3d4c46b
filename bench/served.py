"""`dlc serve` as a subprocess for the bench scripts (bench/dspy_baseline.py): started on 127.0.0.1 with a port the
server picks, its address read from its first line, its model from GET /v1/models, and a failure reported as one line
(the server's own `error[Ennn]` line and hint when it wrote one) instead of a traceback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Fatal(Exception):
    """An error reported as one line, without a traceback."""


# ---------------------------------------------------------------------------------------------------- the server


class DlcServer:
    """`dlc serve` as a subprocess on 127.0.0.1 (port picked by the server); stopped by `stop()` or on exit."""

    def __init__(self, model: str, *, threads: int, n_ctx: int, log_path: Path, start_timeout: float) -> None:
        self.model, self.threads, self.n_ctx = model, threads, n_ctx
        self.log_path, self.start_timeout = log_path, start_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.name = ""
        self.model_id = ""
        self.start_seconds = 0.0

    def start(self) -> str:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DLC_THREADS": str(self.threads)}
        cmd = [sys.executable, "-m", "dlc", "serve", "--model", self.model, "--host", "127.0.0.1", "--port", "0",
               "--n-ctx", str(self.n_ctx)]
        t0 = time.monotonic()
        with open(self.log_path, "w") as log:
            # own session: a Ctrl-C in the terminal reaches only us, and we stop the server ourselves
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                         text=True, env=env, cwd=REPO, start_new_session=True)
        line = self._first_line()
        if not line.startswith("listening on "):
            self.stop()
            raise Fatal(f"dlc serve did not start: {self._last_log_line() or line or 'no output'} "
                        f"(log: {self.log_path})")
        self.url = line.split("listening on ", 1)[1].strip()
        try:
            with urllib.request.urlopen(self.url + "/models", timeout=30) as r:
                entry = json.load(r)["data"][0]
        except Exception as e:  # noqa: BLE001 - any failure here means the server is unusable
            self.stop()
            raise Fatal(f"dlc serve started but GET /v1/models failed: {e}") from None
        self.name, self.model_id = str(entry["id"]), str(entry.get("root", ""))
        self.start_seconds = time.monotonic() - t0
        return self.url

    def _first_line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(self.start_timeout)
        if reader.is_alive():
            return f"no 'listening on' line within {self.start_timeout:.0f} s"
        return out[0].strip() if out else ""

    def _last_log_line(self) -> str:
        try:
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        errors = [i for i, ln in enumerate(lines) if ln.lower().startswith("error")]
        if errors:   # dlc's errors: "error[E611]: ..." then "hint: ..."
            return "; ".join(lines[errors[-1]:errors[-1] + 2])
        return lines[-1] if lines else ""

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise Fatal(f"dlc serve exited (status {self.proc.returncode if self.proc else '?'}): "
                        f"{self._last_log_line()} (log: {self.log_path})")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
