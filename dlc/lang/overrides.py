"""`--set BLOCK.KEY=VALUE` arguments, read one way by every command (compile, show, fit, eval).

The value is kept exactly as typed (the compiler parses it as a `.dln` value, so `--set layer.h.prompt="  Think.  "`
is the same prompt, and the same graph hash, under every command); the key is stripped of surrounding blanks. A later
`--set` of the same key wins, like repeated command-line flags. Typing and range checks happen in the compiler.
"""
from __future__ import annotations

from typing import Iterable

from dlc.errors import DlcUsageError


def parse_sets(items: Iterable[str] | None) -> dict[str, str]:
    """`["fit.iters=4", ...]` -> {"fit.iters": "4"}; E101 when an item is not BLOCK.KEY=VALUE."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DlcUsageError(f"--set '{item}' is not BLOCK.KEY=VALUE", code="E101",
                                hint="e.g. --set fit.iters=4 --set data.task=navigate")
        if "." not in key or key.startswith(".") or key.endswith("."):
            raise DlcUsageError(f"--set '{item}': the key must be a dotted path BLOCK.KEY", code="E101",
                                hint="e.g. fit.iters, fit.batch_size, data.task, data.train_size")
        out[key] = value
    return out
