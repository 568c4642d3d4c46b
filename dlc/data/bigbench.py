"""BIG-Bench-Hard tasks: BIG-bench minus BBH (decontamination), then the reference's train/dev/test splits.

The BBH files are the test sets; train and dev come from the original BIG-bench task, re-formatted into BBH's text
format, with every BBH test item removed first (shared/data/README.md, steps 1-2). All split randomness comes from a
single local `numpy.random.RandomState(42)`, consumed in the reference's order (shuffle, then one option permutation
per train/dev example), so the splits match the reference byte for byte.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dlc.data.splits import RawSplits, Record
from dlc.data.store import read_json, require_files
from dlc.data.tasks import TASKS
from dlc.errors import DlcDataError

_HYPERBATON_Q = "Which sentence has the correct adjective order:"
_NAVIGATE_Q = "If you follow these instructions, do you return to the starting point? "
_LOGIC7_PREAMBLE = ("The following paragraphs each describe a set of seven objects arranged in a fixed order. "
                    "The statements are logically consistent within each paragraph. ")
_LETTERS = "ABCDEFG"
_OPTION_RE = re.compile(r"\([A-Z]\)\s(.*)")
_BBH_REMOVED = 250


def _lettered(options: list[str]) -> str:
    return "\n".join(f"({_LETTERS[i]}) {text}" for i, text in enumerate(options))


def _format_bigbench(task: str, ex: dict) -> dict[str, str]:
    """One BIG-bench example in BBH's text format (step 1 of the README)."""
    scores: dict[str, int] = ex["target_scores"]
    keys = list(scores)
    correct = next(i for i, k in enumerate(keys) if scores[k] == 1)
    text: str = ex["input"]
    if task == "navigate":
        # BIG-bench always orders the keys True, False.
        return {"input": _NAVIGATE_Q + text + "\nOptions:\n- Yes\n- No",
                "target": "Yes" if scores.get("True") == 1 else "No"}
    if task == "hyperbaton":
        rest = text.split(_HYPERBATON_Q, 1)[1].strip()
        pieces = rest.split('"')
        options = [pieces[1].strip(), pieces[3].strip()]
        body = _HYPERBATON_Q
    elif task == "date_understanding":
        options = keys
        body = text
    elif task == "logical_deduction_seven_objects":
        options = [k[:-1] if k.endswith(".") else k for k in keys]
        body = _LOGIC7_PREAMBLE + text
    else:  # pragma: no cover - the registry only routes these four here
        raise AssertionError(task)
    return {"input": body + "\nOptions:\n" + _lettered(options), "target": f"({_LETTERS[correct]})"}


def bb_minus_bbh(task: str, root: Path) -> list[dict[str, str]]:
    """BIG-bench `task` in BBH format with the 250 BBH test items removed, in BIG-bench file order."""
    info = TASKS[task]
    require_files(task, root, info.files)
    bbh_path, bb_path = (root / f for f in info.files)
    bbh = [ex["input"] for ex in read_json(bbh_path)["examples"]]
    bb = read_json(bb_path)["examples"]
    if task == "date_understanding":
        # Matched on the question alone: BBH's options differ from BIG-bench's.
        seen = {s.split("\n", 1)[0] for s in bbh}
        kept = [_format_bigbench(task, ex) for ex in bb if ex["input"] not in seen]
    else:
        seen = set(bbh)
        kept = [f for f in (_format_bigbench(task, ex) for ex in bb) if f["input"] not in seen]
    removed = len(bb) - len(kept)
    if removed != _BBH_REMOVED:
        raise DlcDataError(f"{bb_path} does not match {bbh_path}: {removed} BBH test items found in BIG-bench, "
                           f"expected {_BBH_REMOVED}", code="E816",
                           hint=f"the files are from different versions; run `dlc data fetch {task}` again")
    return kept


def option_shuffle(ex: dict[str, str], rng: np.random.RandomState) -> dict[str, str]:
    """Permute the lettered options of `ex` and move its target letter with them (README step 2.3)."""
    head, sep, options = ex["input"].partition("\nOptions:\n")
    if not sep:
        raise DlcDataError(f"example has no options to shuffle: {ex['input'][:60]!r}", code="E816")
    lines = options.strip().split("\n")
    texts = [_OPTION_RE.findall(line)[-1] for line in lines]
    perm = rng.permutation(len(lines))
    old = _LETTERS.index(ex["target"].strip("()"))
    new_target = int(np.flatnonzero(perm == old)[0])
    new_options = "\n".join(f"({_LETTERS[j]}) {texts[p]}" for j, p in enumerate(perm))
    return {"input": f"{head}\nOptions:\n{new_options}", "target": f"({_LETTERS[new_target]})"}


def _record(ex: dict[str, str], task: str) -> Record:
    info = TASKS[task]
    question, _, options = ex["input"].partition("\nOptions:\n")
    return {"input": ex["input"], "label": info.canonical(ex["target"]), "raw_label": ex["target"],
            "question": question, "options": options}


def load(task: str, root: Path) -> RawSplits:
    """train/dev/test of a BBH task exactly as the reference builds them (README step 2)."""
    pool = bb_minus_bbh(task, root)
    rng = np.random.RandomState(42)
    n = len(pool)
    train_size, dev_size = min(n // 2, 1000), min(n - n // 2, 1000)
    rng.shuffle(pool)  # type: ignore[arg-type]
    train: list[Record] = []
    dev: list[Record] = []
    for i in range(train_size + dev_size):
        ex = pool[i] if task == "navigate" else option_shuffle(pool[i], rng)
        rec = _record(ex, task)
        if i < train_size:
            train.append(rec)
            if task == "date_understanding":
                dev.append(dict(rec))  # the reference grows date's tiny dev set with the train examples
        else:
            dev.append(rec)
    if task == "hyperbaton":
        dev = dev[:300]
    test = [_record(ex, task) for ex in read_json(root / TASKS[task].files[0])["examples"]]
    return RawSplits(train, dev, test, fields=("input", "label", "raw_label", "question", "options"))
