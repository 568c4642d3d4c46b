"""`load_splits`: a DataConfig and the graph's inputs -> train/dev/test lists of `ir.Example`.

Sources: a built-in task (paper task read from the data dir, or `gen:*`), a custom file (`cfg.path`), or a Hugging
Face dataset (`hf:name[:config]`). Sizes: -1 keeps the whole split, n keeps the first n examples (or, with
`cut = "balanced"`, the paper's class-balanced draw of n with replacement: `RandomState(seed)` for train and a
separate `RandomState(42)` each for dev and test, shared/data/README.md "Optional size cut").
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from dlc import ir
from dlc.data import bigbench, files, generated, gsm8k, leopard, ordered_prompt
from dlc.data.splits import SPLITS, RawSplits, Record, balanced_cut
from dlc.data.store import data_dir as _data_dir
from dlc.data.tasks import TASKS, TaskInfo
from dlc.errors import DlcDataError, did_you_mean

_LOADERS = {"bbh": bigbench.load, "ordered_prompt": ordered_prompt.load, "leopard": leopard.load,
            "gsm8k": gsm8k.load}


@dataclass(frozen=True)
class Splits:
    """The examples a run trains (`train`), validates (`dev`) and reports (`test`) on; `info` for built-in tasks."""

    train: list[ir.Example]
    dev: list[ir.Example]
    test: list[ir.Example]
    info: TaskInfo | None

    def split(self, name: str) -> list[ir.Example]:
        return {"train": self.train, "dev": self.dev, "test": self.test}[name]


@lru_cache(maxsize=16)
def _load_paper(task: str, root: str, mtimes: tuple[float, ...]) -> RawSplits:
    """Paper tasks are cached per process (keyed on the files' mtimes): hyperbaton parses 50k BIG-bench items.

    The loaders read the published files' layout directly (`ex["target_scores"]`, `row["sentence"]`); a file that
    is valid JSON of another shape (damaged, replaced, another release) is E816 naming the task and what was
    missing, never the KeyError or TypeError it raises inside the loader."""
    try:
        return _LOADERS[TASKS[task].source](task, Path(root))
    except (KeyError, IndexError, TypeError, AttributeError, StopIteration) as e:
        what = f"no {e.args[0]!r} where it was expected" if isinstance(e, KeyError) and e.args else \
            f"{type(e).__name__}: {str(e)[:120]}" if str(e) else type(e).__name__
        files = ", ".join(TASKS[task].files)
        raise DlcDataError(f"the files of task '{task}' are not in the format it is published in ({what})",
                           code="E816", hint=f"delete them ({files} under {root}) and run "
                                             f"`dlc data fetch {task}` again") from None


def load_task(task: str, *, root: Path | None = None, sizes: tuple[int, int, int] = (-1, -1, -1),
              seed: int = 42) -> RawSplits:
    """The raw (uncut) splits of a built-in task. `root` is the data dir (paper tasks only)."""
    info = TASKS.get(task)
    if info is None:
        raise unknown_task(task)
    if info.kind == "generated":
        return generated.load(task, sizes, seed)
    root = root if root is not None else _data_dir()
    if not root.is_dir():
        _data_dir(str(root))  # raises E801
    mtimes = tuple((root / f).stat().st_mtime if (root / f).is_file() else -1.0 for f in info.files)
    return _load_paper(task, str(root.resolve()), mtimes)


def unknown_task(task: str) -> DlcDataError:
    hint = did_you_mean(task, TASKS)
    if hint is None:
        looks_like_file = any(task.endswith(s) for s in files.SUFFIXES) or os.sep in task
        hint = ("a file goes in `path = \"...\"`, not `task`" if looks_like_file else
                f"built-in tasks: {', '.join(TASKS)}; see `dlc data list`")
    return DlcDataError(f"unknown task '{task}'", code="E803", hint=hint)


def _cut(records: list[Record], n: int, how: str, rng: np.random.RandomState, target: str
         ) -> list[tuple[int, Record]]:
    indexed = list(enumerate(records))
    if n < 0:
        return indexed
    if how == "balanced":
        return [indexed[i] for i in balanced_cut([r.get(target, "") for r in records], n, rng)]
    return indexed[:n]


def _check_field(name: str, available: Sequence[str], role: str, source: str) -> None:
    if name not in available:
        hint = did_you_mean(name, available)
        listing = f"available fields: {', '.join(available)}" if available else "the dataset has no fields"
        raise DlcDataError(f"{role} names field '{name}', which {source} does not have", code="E804",
                           hint=f"{hint} ({listing})" if hint else listing)


def _input_fields(inputs: Sequence[str], cfg: ir.DataConfig, available: Sequence[str], source: str
                  ) -> dict[str, str]:
    """graph input -> dataset field: cfg.fields, else same-named fields, else the single input gets `input`."""
    mapping = dict(cfg.fields)
    for graph_input, field in mapping.items():
        _check_field(field, available, f"data.fields.{graph_input}", source)
    unmapped = [i for i in inputs if i not in mapping]
    for name in unmapped:
        if name in available:
            mapping[name] = name
        elif len(inputs) == 1 and "input" in available:
            mapping[name] = "input"
        elif len(inputs) == 1 and len([f for f in available if f != cfg.target_field]) == 1:
            mapping[name] = next(f for f in available if f != cfg.target_field)
        else:
            raise DlcDataError(f"graph input '{name}' has no dataset field: {source} has no field '{name}'",
                               code="E805", hint=f"map it in the data block, e.g. fields = {{ {name}: \"FIELD\" }} "
                               f"(available fields: {', '.join(available)})")
    return {i: mapping[i] for i in inputs}


def load_splits(cfg: ir.DataConfig, inputs: tuple[str, ...], *, seed: int = 42,
                data_dir: str | os.PathLike[str] | None = None, cut: str | None = None) -> Splits:
    """Load the train/dev/test examples `cfg` describes, as `ir.Example`s keyed by the graph's `inputs`.

    `seed` is the run seed: it only affects generated train sets and the balanced train cut (split randomness is
    fixed at 42, as in the paper). `data_dir` (--data-dir) wins over `cfg.data_dir`, then $DLC_DATA_DIR, then the
    user cache dir. `cut` overrides `cfg.cut` ("first" | "balanced"). `cfg.path` must already be resolved against
    the .dln's directory (the compiler does this); a relative path is taken relative to the current directory.
    """
    how = cut or getattr(cfg, "cut", "first")
    if how not in ("first", "balanced"):
        raise DlcDataError(f"unknown size cut '{how}'", code="E811", hint="use cut = first or cut = balanced")
    sizes = (cfg.train_size, cfg.dev_size, cfg.test_size)
    for key, n in zip(("train_size", "dev_size", "test_size"), sizes):
        if n < -1:
            raise DlcDataError(f"data.{key} = {n} is not a size", code="E811",
                               hint="use -1 for the whole split, or a number of examples >= 0")
    task = cfg.task
    info: TaskInfo | None = None
    hf = files.hf_spec(task) or files.hf_spec(cfg.path)
    if task and cfg.path and hf is None:
        raise DlcDataError(f"the data block sets both task '{task}' and path '{cfg.path}'", code="E817",
                           hint="keep one: a built-in task, or a path to your own dataset")
    if hf is not None:
        raw, name = files.load_hf(hf, cfg.dev_size, cfg.test_size), f"hf:{hf}"
    elif task:
        info = TASKS.get(task)
        if info is None:
            raise unknown_task(task)
        root = None
        if info.kind == "paper":
            root = _data_dir(data_dir or cfg.data_dir)
        raw, name = load_task(task, root=root, sizes=sizes, seed=seed), task
    elif cfg.path:
        raw, name = files.load_path(cfg.path, cfg.dev_size, cfg.test_size), Path(cfg.path).stem
    else:
        raise DlcDataError("the network has no data: the data block sets neither task nor path", code="E818",
                           hint="add e.g. data { task = \"gen:navigate\" } or data { path = \"train.jsonl\" }")
    source = f"task '{name}'" if (task or hf) else f"dataset {cfg.path}"
    available = raw.fields or (tuple(raw.train[0]) if raw.train else ())
    available = tuple(f for f in available if not f.startswith("_"))
    # the target first: a wrong target field also leaves one input with two candidate fields, and E805 about the
    # input would send the user after the wrong setting
    _check_field(cfg.target_field, available, "data.target_field", source)
    fields = _input_fields(inputs, cfg, available, source)
    if not raw.train:
        raise DlcDataError(f"{source} has no training examples", code="E812",
                           hint="check the file, or the split sizes")

    out: dict[str, list[ir.Example]] = {}
    for split, n in zip(SPLITS, sizes):
        if info is not None and info.kind == "generated":
            n = -1  # generated splits are made at the requested size
        rng = np.random.RandomState(seed if split == "train" else 42)
        examples: list[ir.Example] = []
        seen: dict[int, int] = {}
        for pos, rec in _cut(raw.split(split), n, how, rng, cfg.target_field):
            missing = [f for f in (*fields.values(), cfg.target_field) if f not in rec]
            if missing:
                raise DlcDataError(f"{source}, {split} example {pos + 1} has no field '{missing[0]}'",
                                   code="E804", hint="every row needs every mapped field")
            if cfg.target_field in rec.get(files.STRUCTURED, "").split(","):
                raise DlcDataError(f"{source}, {split} example {pos + 1}: target field '{cfg.target_field}' holds "
                                   f"{rec[cfg.target_field][:60]}, a JSON list or object, not a label", code="E823",
                                   hint="give each row one target as text (or a number)")
            k = seen.get(pos, 0)
            seen[pos] = k + 1
            ex_id = f"{name}/{split}/{pos}" + (f"#{k}" if k else "")
            examples.append(ir.Example(inputs={i: rec[f] for i, f in fields.items()},
                                       target=rec[cfg.target_field], id=ex_id))
        out[split] = examples
    return Splits(out["train"], out["dev"], out["test"], info)


def align_targets(splits: Splits, output: ir.Output, *, layer: str = "output") -> Splits:
    """Map every target onto the output layer's class names, for `choice` outputs.

    A target that is a class name stays; one that equals a verbaliser (or a name/verbaliser up to case and
    surrounding spaces, e.g. "Yes" for class `yes`) becomes that class's name. Anything else is E819 naming the
    example and the classes — found before training rather than as a silent 0% accuracy.
    """
    if output.kind != "choice" or not output.labels:
        return splits
    lookup: dict[str, str] = {}
    for lab in output.labels:
        for v in (lab.name, *lab.verbalizers):
            lookup.setdefault(v.strip().casefold(), lab.name)
    names = {lab.name for lab in output.labels}

    def fix(examples: list[ir.Example]) -> list[ir.Example]:
        out = []
        for ex in examples:
            if ex.target in names:
                out.append(ex)
                continue
            name = lookup.get(ex.target.strip().casefold())
            if name is None:
                raise DlcDataError(f"example {ex.id} has target '{ex.target}', which is not a class of layer "
                                   f"'{layer}' ({', '.join(lab.name for lab in output.labels)})", code="E819",
                                   hint="make the layer's choice labels match the dataset, or fix target_field")
            out.append(ir.Example(ex.inputs, name, ex.id))
        return out

    return Splits(fix(splits.train), fix(splits.dev), fix(splits.test), splits.info)
