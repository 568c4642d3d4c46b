"""`dlc run` as a function: a network's prompts applied to JSONL examples, streamed in batches."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TextIO

from dlc import jsonread
from dlc.app.models import close_lms, open_lms
from dlc.app.targets import load_network
from dlc.data import files
from dlc.engine import forward as engine
from dlc.errors import DlcUsageError
from dlc.textcheck import bad_char
from dlc.ir import Example, Graph
from dlc.lm.base import LM


def run_inference(target: str, stdin: TextIO, stdout: TextIO, *, no_cache: bool = False,
                  cache_dir: str | None = None, batch: int = 16, hidden: bool = True,
                  overrides: Mapping[str, str] | None = None, err: TextIO | None = None) -> int:
    """`dlc run`: read JSONL examples (keys = graph input names, or the data block's dataset field names), write
    one JSON line per example: {"output": prediction, "layers": {layer: text}} plus the example's "id" if any.
    Lines are processed in batches of `batch` so output streams. Returns the number of examples. `overrides`
    (`--set`) change the network; on a run they apply on top of the run's own settings, and what they changed is
    written to `err`."""
    net = load_network(target, overrides)
    graph = net.graph
    if overrides and err is not None and Path(target).is_dir():
        print(f"{target}: the run's own settings, with --set changing "
              + ("; ".join(net.differs) if net.differs else "nothing"), file=err)
    lms = open_lms(graph, no_cache=no_cache, cache_dir=cache_dir)
    n = 0
    pending: list[tuple[Example, dict[str, Any]]] = []

    def flush() -> None:
        if not pending:
            return
        for o in _outputs(graph, lms, pending, hidden):
            stdout.write(json.dumps(o, ensure_ascii=False) + "\n")
        stdout.flush()
        pending.clear()

    try:
        for lineno, line in enumerate(stdin, 1):
            if not line.strip():
                continue
            try:
                row = jsonread.loads(line)
            except jsonread.BadJSON as e:
                raise DlcUsageError(f"stdin line {lineno} is not JSON ({e.msg})", code="E122",
                                    hint='one object per line, e.g. {"x": "text"}') from None
            if not isinstance(row, dict):
                raise DlcUsageError(f"stdin line {lineno} is not a JSON object", code="E122")
            pending.append((_example(graph, row, lineno, f"stdin line {lineno}"), row))
            n += 1
            if len(pending) >= batch:
                flush()
        flush()
    except UnicodeDecodeError as e:        # stdin opened strict (a UTF-8 locale) and fed other bytes
        raise DlcUsageError(f"stdin is not UTF-8 text ({e.reason} after {n} input line(s))", code="E124",
                            hint="send UTF-8 text") from None
    finally:
        close_lms(lms)
    return n



def predict(target: str, rows: Iterable[Mapping[str, Any]], *, no_cache: bool = False, cache_dir: str | None = None,
            batch: int = 16, hidden: bool = True, overrides: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The Python form of `dlc run`: each row (a mapping with the network's inputs, by input name or dataset field
    name, and an optional "id") -> {"id"?, "output", "layers"?}, in order, with the target's learned parameters
    (`overrides` as `dlc run --set`)."""
    graph = load_network(target, overrides).graph
    lms = open_lms(graph, no_cache=no_cache, cache_dir=cache_dir)
    out: list[dict[str, Any]] = []
    try:
        items = [(_example(graph, row, i, f"row {i}"), row) for i, row in enumerate(rows, 1)]
        for s in range(0, len(items), max(1, batch)):
            out += _outputs(graph, lms, items[s:s + batch], hidden)
    finally:
        close_lms(lms)
    return out


def _example(graph: Graph, row: Mapping[str, Any], index: int, where: str) -> Example:
    field_of = dict(graph.data.fields)          # input name -> dataset field
    inputs = {}
    for name in graph.inputs:
        key = name if name in row else field_of.get(name)
        if key is None or key not in row:
            raise DlcUsageError(f"{where} has no field '{name}'", code="E123",
                                hint=f"the network's inputs are: {', '.join(graph.inputs)}")
        # as a data file's field reads (null "", true "true", 2.0 "2", a list as JSON): a network is run on the
        # text it was trained on, not on Python's str() ("None", "True", "['a']")
        inputs[name] = files.text(row[key])
        if bad_char(inputs[name]) is not None:     # a "\ud800" escape, or stdin bytes that are not UTF-8
            raise DlcUsageError(f"{where}: field '{key}' is not valid text (a lone UTF-16 surrogate, or bytes that "
                                "are not UTF-8)", code="E124", hint="send UTF-8 text; escape only whole "
                                "characters (\\ud83d\\ude00 pairs are fine)")
    return Example(inputs=inputs, target="", id=str(row.get("id", index)))


def _outputs(graph: Graph, lms: Mapping[str, LM], items: Sequence[tuple[Example, Mapping[str, Any]]],
             hidden: bool) -> list[dict[str, Any]]:
    """One forward pass over a batch (the graph's prompts and calibration offsets) -> one output object per row."""
    tr = engine.forward(graph, graph.prompts(), lms, [e for e, _ in items])
    outs = []
    for i, (_e, row) in enumerate(items):
        o: dict[str, Any] = {}
        if "id" in row:
            o["id"] = row["id"]
        o["output"] = tr.predictions[i]
        if hidden:
            o["layers"] = {name: tr.texts[name][i] for name in graph.order}
        outs.append(o)
    return outs
