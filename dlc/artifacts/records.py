"""The typed files of a run directory: each type's `to_json()` / `from_json()` is the one writer and reader of its file
(`dlc.artifacts.rundir.RunDir` puts them on disk; nothing else parses them).

    RunConfig        config.json       what the run trains with: resolved blocks, identities, provenance
    Checkpoint       checkpoint.json   the trainer state after the last finished iteration, usage so far
    IterationRecord  trace.jsonl       one finished iteration: a typed core + the engine's details as written
    FitResult        result.json       the final evaluation (the contract scripts rely on), with its parts
                                       Baseline, ClassReport (dev/test) and SplitPredictions

Every type is frozen and versioned (`SCHEMA`, written as the file's "schema" key where the file has one). The JSON
keys are the ones dlc has always written, so older run directories read: a key added later is optional with a
default, and a key this version does not know is kept in `extra` (IterationRecord: `details`) and written back, so a
read-write round trip loses nothing. A missing required key, a wrong type or another schema raises E502
("corrupted run directory: ..."), like a file that is not JSON at all.

`null` in these files means "not measured": an accuracy on an empty split, a dev score on an iteration that did not
validate, a per-class accuracy of a class without examples (written as NaN in memory, null on disk).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from dlc.errors import DlcArtifactError

CONFIG_SCHEMA = "dlc/run-config/v1"
CHECKPOINT_SCHEMA = "dlc/checkpoint/v1"
RESULT_SCHEMA = "dlc/result/v1"

_MISSING: Any = object()


def corrupted(message: str, hint: str | None = "start a new run with `dlc fit`") -> DlcArtifactError:
    return DlcArtifactError(f"corrupted run directory: {message}", code="E502", hint=hint)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_KINDS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": _is_num,
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "str map": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
    "vector map": lambda v: isinstance(v, dict) and all(isinstance(x, list) and all(_is_num(y) for y in x)
                                                        for x in v.values()),
    "offset map": lambda v: isinstance(v, dict) and all(isinstance(x, dict) and all(_is_num(y) for y in x.values())
                                                        for x in v.values()),
}


class _Fields:
    """Typed access to one JSON object of a run file; every problem is an E502 naming the file and the key."""

    def __init__(self, obj: Any, source: str) -> None:
        if not isinstance(obj, Mapping):
            raise corrupted(f"{source} is not a JSON object")
        self.obj, self.source, self.seen = obj, source, set()  # type: Mapping[str, Any], str, set[str]

    def __call__(self, key: str, kind: str, *, default: Any = _MISSING, null: bool = False) -> Any:
        """The value of `key`, checked against `kind`; `default` makes the key optional, `null` allows None."""
        self.seen.add(key)
        if key not in self.obj:
            if default is _MISSING:
                raise corrupted(f"{self.source} lacks '{key}'")
            return default
        v = self.obj[key]
        if v is None and null:
            return None
        if not _KINDS[kind](v):
            raise corrupted(f"{self.source}: '{key}' is not {'an' if kind[0] in 'aeiou' else 'a'} {kind}"
                            f"{' or null' if null else ''} (got {_json_type(v)})")
        return v

    def schema(self, expected: str) -> str:
        got = self("schema", "str")
        if got != expected:
            raise corrupted(f"{self.source} has schema {got!r}, this dlc reads {expected!r}",
                            hint="a run directory of another dlc version; start a new run with `dlc fit`")
        return got

    def rest(self) -> dict[str, Any]:
        """The keys not read so far (kept as they are, so a round trip loses nothing)."""
        return {k: v for k, v in self.obj.items() if k not in self.seen}


def _json_type(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object", type(None): "null"}.get(type(v), type(v).__name__)


def _nan_if_null(x: Any) -> float:
    return float("nan") if x is None else float(x)


# ------------------------------------------------------------------------------------------------ config.json

@dataclass(frozen=True)
class RunConfig:
    """config.json: the resolved fit/data/models blocks, the overrides and seed, and the identities a resume
    compares (graph, config and data splits), plus provenance (source, argv, dlc version, creation time)."""

    SCHEMA: ClassVar[str] = CONFIG_SCHEMA

    net: str                                     # the net's name: runs/<net>-<timestamp>, <net>.fit.dln
    graph_sha256: str                            # dlc.artifacts.identity.graph_identity of graph.json
    config_sha256: str                           # ... .config_identity of the fit/data/models blocks
    seed: int | None = None
    fit: Mapping[str, Any] = field(default_factory=dict)      # dlc.ir.FitConfig as JSON
    data: Mapping[str, Any] = field(default_factory=dict)     # dlc.ir.DataConfig as JSON (data_dir excluded)
    models: Mapping[str, Any] = field(default_factory=dict)   # model name -> dlc.ir.ModelConfig as JSON
    overrides: Mapping[str, str] = field(default_factory=dict)   # the --set values the run was started with
    data_identity: Mapping[str, Any] | None = None            # {split: {n, sha256}}
    data_dir: str | None = None
    task: str | None = None
    graph_name: str | None = None
    source_path: str | None = None
    artifact_path: str | None = None
    dlc_version: str | None = None
    created: str | None = None                                # ISO 8601, UTC
    argv: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)    # keys of a newer dlc, kept as they are

    @property
    def iters(self) -> int | None:
        v = self.fit.get("iters")
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "schema": self.SCHEMA, "net": self.net, "graph_sha256": self.graph_sha256,
                "config_sha256": self.config_sha256, "seed": self.seed, "fit": dict(self.fit),
                "data": dict(self.data), "models": dict(self.models), "overrides": dict(self.overrides),
                "data_identity": None if self.data_identity is None else dict(self.data_identity),
                "data_dir": self.data_dir, "task": self.task, "graph_name": self.graph_name,
                "source_path": self.source_path, "artifact_path": self.artifact_path,
                "dlc_version": self.dlc_version, "created": self.created, "argv": list(self.argv)}

    @classmethod
    def from_json(cls, obj: Any, *, source: str = "config.json") -> "RunConfig":
        f = _Fields(obj, source)
        f.schema(CONFIG_SCHEMA)
        return cls(net=f("net", "str"), graph_sha256=f("graph_sha256", "str"), config_sha256=f("config_sha256", "str"),
                   seed=f("seed", "int", default=None, null=True), fit=f("fit", "object", default={}),
                   data=f("data", "object", default={}), models=f("models", "object", default={}),
                   overrides=f("overrides", "str map", default={}),
                   data_identity=f("data_identity", "object", default=None, null=True),
                   data_dir=f("data_dir", "str", default=None, null=True),
                   task=f("task", "str", default=None, null=True),
                   graph_name=f("graph_name", "str", default=None, null=True),
                   source_path=f("source_path", "str", default=None, null=True),
                   artifact_path=f("artifact_path", "str", default=None, null=True),
                   dlc_version=f("dlc_version", "str", default=None, null=True),
                   created=f("created", "str", default=None, null=True),
                   argv=tuple(str(a) for a in f("argv", "list", default=[])), extra=f.rest())


# ------------------------------------------------------------------------------------------------ checkpoint.json

def total_tokens(usage: Mapping[str, Any]) -> int:
    """Prompt + completion tokens of a usage record (dlc.app.models.usage_totals)."""
    return int(usage.get("prompt_tokens", 0) or 0) + int(usage.get("completion_tokens", 0) or 0)


@dataclass(frozen=True)
class Checkpoint:
    """checkpoint.json: the trainer's state after the last finished iteration (`state` is
    `dlc.train.trainer.TrainState.to_json()`, decoded by `TrainState.from_json`), the usage so far, how many trace
    records it counts, and the identities of the graph and config it belongs to."""

    SCHEMA: ClassVar[str] = CHECKPOINT_SCHEMA

    iteration: int
    state: Mapping[str, Any]
    trace_records: int
    graph_sha256: str
    config_sha256: str
    usage: Mapping[str, Any] = field(default_factory=dict)
    written_at: float | None = None               # time.time() of the write
    extra: Mapping[str, Any] = field(default_factory=dict)

    # the parts of the state a reader outside the trainer needs (checked by from_json)
    @property
    def best_prompts(self) -> dict[str, str] | None:
        """The best prompts so far (None when the state has none yet)."""
        p = self.state.get("best_prompts")
        return dict(p) if p else None

    @property
    def best_offsets(self) -> dict[str, list[float]]:
        """Calibration offsets of the best set, {layer: [b in label order]} ([] or absent: none)."""
        return {k: [float(x) for x in v] for k, v in (self.state.get("best_offsets") or {}).items()}

    @property
    def best_dev(self) -> float | None:
        v = self.state.get("best_dev")
        return None if v is None else float(v)

    @property
    def done(self) -> bool:
        return bool(self.state.get("done", False))

    @property
    def tokens(self) -> int:
        return total_tokens(self.usage)

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "schema": self.SCHEMA, "iteration": self.iteration, "state": dict(self.state),
                "usage": dict(self.usage), "trace_records": self.trace_records, "graph_sha256": self.graph_sha256,
                "config_sha256": self.config_sha256, "written_at": self.written_at}

    @classmethod
    def from_json(cls, obj: Any, *, source: str = "checkpoint.json") -> "Checkpoint":
        f = _Fields(obj, source)
        f.schema(CHECKPOINT_SCHEMA)
        state = f("state", "object")
        s = _Fields(state, f"{source} state")
        s("best_prompts", "str map", default=None, null=True)
        s("best_offsets", "vector map", default=None, null=True)
        s("best_dev", "number", default=None, null=True)
        s("done", "bool", default=False)
        s("history", "list", default=None)
        iteration, trace_records = f("iteration", "int"), f("trace_records", "int")
        if iteration < 0 or trace_records < 0:
            raise corrupted(f"{source}: a negative count (iteration {iteration}, trace_records {trace_records})")
        s("iteration", "int", default=None)   # equal to `iteration` in a run's checkpoint (rundir.check_progress)
        return cls(iteration=iteration, state=state, trace_records=trace_records,
                   graph_sha256=f("graph_sha256", "str"), config_sha256=f("config_sha256", "str"),
                   usage=f("usage", "object", default={}), written_at=f("written_at", "number", default=None,
                                                                         null=True), extra=f.rest())


# ------------------------------------------------------------------------------------------------ trace.jsonl

@dataclass(frozen=True)
class IterationRecord:
    """One line of trace.jsonl: what dlc.train.trainer.Trainer.step() reported for an iteration.

    The typed core is what readers use (progress, `dlc show`, learning curves, resume); everything else the engine
    records (batch, forward, hidden, layers, calibration, comparison, logp_penalty, ...) is kept in `details` as
    written. Keys appear on disk only where they apply, as the trainer writes them: `dev_score` on validated
    iterations, `train_acc` and `elbo` on trained ones (`elbo` null when the batch had no errors, see `skipped`),
    `baseline` / `backtracked` only when true, `improved` on validations after the first, `offsets` for calibrated
    layers."""

    iteration: int
    dev: float | None = None              # dev accuracy when the iteration validated
    best_dev: float | None = None         # dev accuracy of the best parameter set so far
    tokens: int | None = None             # prompt + completion tokens spent by the run so far
    prompts: Mapping[str, str] = field(default_factory=dict)            # the prompts after the iteration
    dev_score: float | None = None        # mean validation score (accuracy or log-likelihood)
    offsets: Mapping[str, list[float]] = field(default_factory=dict)    # calibrated layers: b in label order
    train_acc: float | None = None        # accuracy of the forward pass on the training batch
    elbo: float | None = None             # ELBO of the selected prompts (summed over updated layers)
    skipped: str | None = None            # why no update was made (e.g. no errors in the batch)
    stopped: str | None = None            # why training stopped early (token budget)
    backtracked: bool = False             # the parameters went back to the best set (patience exhausted)
    baseline: bool = False                # the first validation: it sets the bar
    improved: bool | None = None          # a later validation: did it beat the best set
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def validated(self) -> bool:
        return self.dev is not None

    @property
    def layers(self) -> Mapping[str, Any]:
        """Per trained layer, the update record(s) of dlc.engine.prompts (a list when num_p1_steps > 1)."""
        v = self.details.get("layers")
        return v if isinstance(v, dict) else {}

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {**self.details, "iteration": self.iteration, "dev": self.dev, "best_dev": self.best_dev,
                             "tokens": self.tokens, "prompts": dict(self.prompts)}
        if self.dev_score is not None:
            d["dev_score"] = self.dev_score
        if self.offsets:
            d["offsets"] = {k: list(v) for k, v in self.offsets.items()}
        if self.train_acc is not None:
            d["train_acc"] = self.train_acc
        if self.elbo is not None or self.train_acc is not None:   # a trained iteration; null when skipped
            d["elbo"] = self.elbo
        for k in ("skipped", "stopped", "improved"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        for k in ("backtracked", "baseline"):
            if getattr(self, k):
                d[k] = True
        return d

    @classmethod
    def from_json(cls, obj: Any, *, source: str = "trace.jsonl") -> "IterationRecord":
        f = _Fields(obj, source)
        return cls(iteration=f("iteration", "int"), dev=f("dev", "number", default=None, null=True),
                   best_dev=f("best_dev", "number", default=None, null=True),
                   tokens=f("tokens", "int", default=None, null=True), prompts=f("prompts", "str map", default={}),
                   dev_score=f("dev_score", "number", default=None, null=True),
                   offsets=f("offsets", "vector map", default={}),
                   train_acc=f("train_acc", "number", default=None, null=True),
                   elbo=f("elbo", "number", default=None, null=True),
                   skipped=f("skipped", "str", default=None, null=True),
                   stopped=f("stopped", "str", default=None, null=True),
                   backtracked=f("backtracked", "bool", default=False),
                   baseline=f("baseline", "bool", default=False),
                   improved=f("improved", "bool", default=None, null=True), details=f.rest())


# ------------------------------------------------------------------------------------------------ result.json

@dataclass(frozen=True)
class ClassReport:
    """Accuracy, per-class accuracy (recall of each true class) and a confusion matrix confusion[true][pred], rows
    and columns in the graph's label order (dlc.report.stats builds one; result.json holds one per split)."""

    accuracy: float
    n: int
    labels: tuple[str, ...]
    per_class: Mapping[str, Mapping[str, float]] = field(default_factory=dict)   # label -> {accuracy, n}
    confusion: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "n": self.n, "labels": list(self.labels),
                "per_class": {k: dict(v) for k, v in self.per_class.items()},
                "confusion": {k: dict(v) for k, v in self.confusion.items()}}

    @classmethod
    def from_json(cls, obj: Any, *, source: str = "classification report") -> "ClassReport":
        f = _Fields(obj, source)
        per_class = f("per_class", "object", default={})
        for lab, d in per_class.items():
            _Fields(d, f"{source} per_class[{lab!r}]")("accuracy", "number", null=True)
        return cls(accuracy=_nan_if_null(f("accuracy", "number", null=True)), n=f("n", "int"),
                   labels=tuple(str(x) for x in f("labels", "list")),
                   per_class={k: {**v, "accuracy": _nan_if_null(v["accuracy"])} for k, v in per_class.items()},
                   confusion=f("confusion", "object", default={}))


@dataclass(frozen=True)
class Baseline:
    """The network before training: its prompts and their accuracies (the gain is measured against these)."""

    dev_accuracy: float | None
    test_accuracy: float | None
    prompts: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"dev_accuracy": self.dev_accuracy, "test_accuracy": self.test_accuracy, "prompts": dict(self.prompts)}

    @classmethod
    def from_json(cls, obj: Any, *, source: str = "result.json baseline") -> "Baseline":
        f = _Fields(obj, source)
        return cls(dev_accuracy=f("dev_accuracy", "number", null=True),
                   test_accuracy=f("test_accuracy", "number", null=True),
                   prompts=f("prompts", "str map", default={}))


@dataclass(frozen=True)
class SplitPredictions:
    """Per example of a split, the prediction before and after training (a paired comparison needs both)."""

    ids: tuple[Any, ...]
    targets: tuple[str, ...]
    baseline: tuple[str, ...]
    final: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "targets": list(self.targets), "baseline": list(self.baseline),
                "final": list(self.final)}

    @classmethod
    def from_json(cls, obj: Any, *, source: str = "result.json predictions") -> "SplitPredictions":
        f = _Fields(obj, source)
        cols = {k: tuple(f(k, "list")) for k in ("ids", "targets", "baseline", "final")}
        if len({len(v) for v in cols.values()}) > 1:
            raise corrupted(f"{source}: ids, targets, baseline and final differ in length")
        return cls(**cols)


@dataclass(frozen=True)
class FitResult:
    """result.json: the final evaluation of a run with its best parameters, against the initial ones."""

    SCHEMA: ClassVar[str] = RESULT_SCHEMA

    net: str
    dev_accuracy: float | None                    # null: the split is empty
    test_accuracy: float | None
    baseline: Baseline
    prompts: Mapping[str, str]                    # the learned (best) prompts
    iterations: int                               # training iterations done
    usage: Mapping[str, Any]                      # dlc.app.models.usage_totals, with wall_seconds
    seed: int | None = None
    offsets: Mapping[str, Mapping[str, float]] = field(default_factory=dict)   # {layer: {label: b}}
    best_dev_during_training: float | None = None
    dev: ClassReport | None = None                # per-class accuracy and confusion, learned prompts
    test: ClassReport | None = None
    predictions: Mapping[str, SplitPredictions | None] = field(default_factory=dict)   # "dev", "test"
    fit_dln: str | None = None                    # the learned network's path
    finished_at: str | None = None                # ISO 8601, UTC
    stopped: str | None = None                    # why training stopped before fit.iters (token budget); absent
                                                  # from the file when it ran all its iterations
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return total_tokens(self.usage)

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "schema": self.SCHEMA, "net": self.net, "seed": self.seed,
                "dev_accuracy": self.dev_accuracy, "test_accuracy": self.test_accuracy,
                "baseline": self.baseline.to_json(), "prompts": dict(self.prompts),
                "offsets": {k: dict(v) for k, v in self.offsets.items()}, "iterations": self.iterations,
                "best_dev_during_training": self.best_dev_during_training, "usage": dict(self.usage),
                "dev": None if self.dev is None else self.dev.to_json(),
                "test": None if self.test is None else self.test.to_json(),
                "predictions": {k: None if v is None else v.to_json() for k, v in self.predictions.items()},
                "fit_dln": self.fit_dln, "finished_at": self.finished_at,
                **({} if self.stopped is None else {"stopped": self.stopped})}

    @classmethod
    def from_json(cls, obj: Any, *, source: str = "result.json") -> "FitResult":
        f = _Fields(obj, source)
        f.schema(RESULT_SCHEMA)
        reports = {}
        for split in ("dev", "test"):
            r = f(split, "object", default=None, null=True)
            reports[split] = None if r is None else ClassReport.from_json(r, source=f"{source} {split}")
        preds = f("predictions", "object", default={})
        return cls(net=f("net", "str"), dev_accuracy=f("dev_accuracy", "number", null=True),
                   test_accuracy=f("test_accuracy", "number", null=True),
                   baseline=Baseline.from_json(f("baseline", "object"), source=f"{source} baseline"),
                   prompts=f("prompts", "str map"), iterations=f("iterations", "int"), usage=f("usage", "object"),
                   seed=f("seed", "int", default=None, null=True), offsets=f("offsets", "offset map", default={}),
                   best_dev_during_training=f("best_dev_during_training", "number", default=None, null=True),
                   dev=reports["dev"], test=reports["test"],
                   predictions={k: None if v is None else
                                SplitPredictions.from_json(v, source=f"{source} predictions.{k}")
                                for k, v in preds.items()},
                   fit_dln=f("fit_dln", "str", default=None, null=True),
                   finished_at=f("finished_at", "str", default=None, null=True),
                   stopped=f("stopped", "str", default=None, null=True), extra=f.rest())
