"""The `dlc fit` progress display: a rich progress bar with ETA, current dev accuracy and tokens used.

On a terminal it is a live bar on stderr; when stderr is not a terminal (CI, `2> log`, tests) it prints one plain
line per iteration instead, so logs stay readable and nothing depends on cursor control.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class FitProgress:
    """Context manager: `update(iteration, dev_accuracy=..., tokens=...)` after every finished iteration."""

    def __init__(self, total: int, *, completed: int = 0, description: str = "fit",
                 stream: TextIO | None = None, live: bool | None = None) -> None:
        self.total = max(0, int(total))
        self.completed = int(completed)
        self._start = self.completed          # iterations done before this process (a resumed run)
        self.description = description
        self.stream = stream if stream is not None else sys.stderr
        self.console = Console(file=self.stream, stderr=stream is None)
        self.live = self.console.is_terminal if live is None else live
        self.dev: float | None = None
        self.best: float | None = None
        self.tokens = 0
        self._t0 = time.monotonic()
        self._progress: Progress | None = None
        self._task: Any = None

    def _fields(self) -> dict[str, str]:
        dev = "-" if self.dev is None else f"{self.dev:.3f}"
        best = "-" if self.best is None else f"{self.best:.3f}"
        return {"dev": dev, "best": best, "tokens": f"{self.tokens:,}"}

    def __enter__(self) -> "FitProgress":
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("dev {task.fields[dev]} (best {task.fields[best]})"),
                TextColumn("tokens {task.fields[tokens]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), console=self.console, transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, completed=self.completed,
                                                 **self._fields())
        return self

    def update(self, iteration: int, *, dev_accuracy: float | None = None, best_dev: float | None = None,
               tokens: int | None = None, note: str = "") -> None:
        """Record iteration `iteration` (1-based count of finished iterations) as done."""
        if dev_accuracy is not None:
            self.dev = dev_accuracy
        if best_dev is not None:
            self.best = best_dev
        if tokens is not None:
            self.tokens = tokens
        done_now = iteration - self.completed
        self.completed = iteration
        if self._progress is not None:
            self._progress.update(self._task, completed=iteration, **self._fields())
            return
        elapsed = time.monotonic() - self._t0
        f = self._fields()
        eta = ""
        if done_now > 0 and iteration < self.total:
            rate = elapsed / max(1, iteration - self._start)
            eta = f"  ETA {_hms(rate * (self.total - iteration))}"
        print(f"[{self.description}] iteration {iteration}/{self.total}  dev {f['dev']} (best {f['best']})  "
              f"tokens {f['tokens']}  elapsed {_hms(elapsed)}{eta}{('  ' + note) if note else ''}",
              file=self.stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
