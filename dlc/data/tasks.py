"""The built-in task registry: the paper's nine tasks, GSM8K, and dlc's generated tasks.

Each task carries what the rest of dlc needs to train on it without reading the files: its classes (canonical label
names and the strings that verbalise them, so the output layer can score `log p(y | x, pi)` over the label set, paper
Eq. 1), the initial instruction pi_0 (dln-reference §4, "init prompt"), and the metric used on dev/test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dlc.ir import Label, OutputKind

TaskKind = Literal["paper", "generated"]
TaskMetric = Literal["accuracy", "exact_match", "number_presence", "final_answer"]


@dataclass(frozen=True)
class TaskInfo:
    """What dlc knows about a built-in task before reading any data file.

    `labels` is empty for free-text tasks (GSM8K, gen:arithmetic, gen:sort); `raw_labels` maps a raw label as stored
    in the source files ("0", "Relevant", "(B)", "Yes") to its canonical name — the fingerprints in
    shared/data/README.md are computed on the raw labels, the examples dlc hands out carry the canonical names.
    """

    name: str
    labels: tuple[Label, ...]
    instruction: str
    metric: TaskMetric
    kind: TaskKind
    output: OutputKind = "choice"
    description: str = ""
    source: str = ""                                  # loader family: bbh | ordered_prompt | leopard | gsm8k | gen
    raw_labels: tuple[tuple[str, str], ...] = ()      # (raw label, canonical name)
    sizes: tuple[int, int, int] | None = None          # reference (train, dev, test) sizes with no size cut
    files: tuple[str, ...] = field(default=())         # files (relative to the data dir) the task reads

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(lab.name for lab in self.labels)

    def canonical(self, raw: str) -> str:
        """The canonical label name of a raw label (identity for tasks without a mapping)."""
        return dict(self.raw_labels).get(raw, raw)


def _words(*names: str) -> tuple[Label, ...]:
    """Text classes verbalised in lower case and Capitalised ("yes" | "Yes")."""
    return tuple(Label(n, (n, n.capitalize())) for n in names)


def _letters(n: int) -> tuple[Label, ...]:
    """BBH multiple-choice classes: canonical "A", verbalised "A" or "(A)"."""
    return tuple(Label(c, (c, f"({c})")) for c in "ABCDEFG"[:n])


def _letter_map(n: int) -> tuple[tuple[str, str], ...]:
    return tuple((f"({c})", c) for c in "ABCDEFG"[:n])


BBH = "BIG-Bench-Hard/bbh"
BIGBENCH = "BIG-bench/bigbench/benchmark_tasks"
ORDERED_PROMPT = "Ordered-Prompt/data"
LEOPARD = "leopard/data/json"
GSM8K = "grade-school-math/grade_school_math/data"

# BIG-bench directory of each BBH task (logical_deduction keeps its sub-tasks in sub-directories).
BIGBENCH_DIRS = {
    "hyperbaton": "hyperbaton",
    "navigate": "navigate",
    "date_understanding": "date_understanding",
    "logical_deduction_seven_objects": "logical_deduction/seven_objects",
}


def _bbh_files(task: str) -> tuple[str, ...]:
    return (f"{BBH}/{task}.json", f"{BIGBENCH}/{BIGBENCH_DIRS[task]}/task.json")


def _op_files(task: str) -> tuple[str, ...]:
    return tuple(f"{ORDERED_PROMPT}/{task}/{s}.jsonl" for s in ("train", "dev_subsample", "test"))


_PAPER: tuple[TaskInfo, ...] = (
    TaskInfo("hyperbaton", _letters(2), "Which sentence has the correct adjective order:", "accuracy", "paper",
             description="BBH: pick the sentence with the correct English adjective order",
             source="bbh", raw_labels=_letter_map(2), sizes=(1000, 300, 250), files=_bbh_files("hyperbaton")),
    TaskInfo("navigate", _words("yes", "no"),
             "Read the following sentence, then determine whether you return to the starting point.",
             "accuracy", "paper", description="BBH: do these moves return you to the starting point?",
             source="bbh", raw_labels=(("Yes", "yes"), ("No", "no")), sizes=(375, 375, 250),
             files=_bbh_files("navigate")),
    TaskInfo("date_understanding", _letters(6), "Infer the date from context.", "accuracy", "paper",
             description="BBH: compute a date (MM/DD/YYYY) from a short context", source="bbh",
             raw_labels=_letter_map(6), sizes=(59, 119, 250), files=_bbh_files("date_understanding")),
    TaskInfo("logical_deduction_seven_objects", _letters(7),
             "A seven-object logical deduction task which requires deducing the order of a sequence of objects.",
             "accuracy", "paper", description="BBH: deduce the order of seven objects from constraints",
             source="bbh", raw_labels=_letter_map(7), sizes=(225, 225, 250),
             files=_bbh_files("logical_deduction_seven_objects")),
    TaskInfo("mpqa", _words("negative", "positive"),
             "Read the following review, then choose whether it is negative or positive.", "accuracy", "paper",
             description="Ordered-Prompt: polarity of a short opinion phrase", source="ordered_prompt",
             raw_labels=(("0", "negative"), ("1", "positive")), sizes=(1000, 256, 250), files=_op_files("mpqa")),
    TaskInfo("trec", _words("description", "entity", "expression", "human", "location", "number"),
             "Read the following question, then choose whether it is about a description, entity, expression, "
             "human, location or number.", "accuracy", "paper",
             description="Ordered-Prompt: answer type of a question", source="ordered_prompt",
             raw_labels=tuple((str(i), n) for i, n in enumerate(
                 ("description", "entity", "expression", "human", "location", "number"))),
             sizes=(1000, 256, 250), files=_op_files("trec")),
    TaskInfo("subj", _words("subjective", "objective"),
             "Read the following sentence, then choose whether it is subjective or objective.", "accuracy", "paper",
             description="Ordered-Prompt: is a movie-review sentence subjective or objective", source="ordered_prompt",
             raw_labels=(("0", "subjective"), ("1", "objective")), sizes=(1000, 256, 250), files=_op_files("subj")),
    TaskInfo("disaster", _words("no", "yes"),
             "Read the following sentence, then choose whether it is relevant to a disaster.", "accuracy", "paper",
             description="Leopard: is a tweet about a real disaster", source="leopard",
             raw_labels=(("Not Relevant", "no"), ("Relevant", "yes")), sizes=(1000, 250, 250),
             files=(f"{LEOPARD}/disaster/disaster_eval.json",)),
    TaskInfo("airline", _words("positive", "negative", "neutral"),
             "Read the following sentence, then choose whether it is positive, negative, or neutral.", "accuracy",
             "paper", description="Leopard: sentiment of a tweet to an airline", source="leopard",
             raw_labels=(("positive", "positive"), ("negative", "negative"), ("neutral", "neutral")),
             sizes=(1000, 250, 250), files=(f"{LEOPARD}/airline/airline_eval.json",)),
    # Not in the paper's tables; the reference's gsm8k.sh starts from this instruction (dln-reference §4).
    TaskInfo("gsm8k", (), "Solve the math word problem.", "number_presence", "paper", output="number",
             description="GSM8K: grade-school math word problems, the answer is a number", source="gsm8k",
             sizes=(3736, 3737, 1319), files=(f"{GSM8K}/train.jsonl", f"{GSM8K}/test.jsonl")),
)

_GENERATED: tuple[TaskInfo, ...] = (
    TaskInfo("gen:navigate", _words("yes", "no"),
             "Read the following instructions, then determine whether you return to the starting point.",
             "accuracy", "generated", description="generated: do these moves return you to the start (exact labels)",
             source="gen", raw_labels=(("Yes", "yes"), ("No", "no")), sizes=(300, 100, 200)),
    TaskInfo("gen:arithmetic", (), "Compute the value of the arithmetic expression.", "number_presence",
             "generated", output="number", description="generated: multi-step integer arithmetic",
             source="gen", sizes=(300, 100, 200)),
    TaskInfo("gen:sort", (), "Sort the words alphabetically and write them separated by spaces.", "exact_match",
             "generated", output="text", description="generated: sort a list of words alphabetically",
             source="gen", sizes=(300, 100, 200)),
)

TASKS: dict[str, TaskInfo] = {t.name: t for t in _PAPER + _GENERATED}
"""Every built-in task by name. Paper tasks read files from the data dir; `gen:*` tasks need no files."""

PAPER_TASKS: tuple[str, ...] = tuple(t.name for t in _PAPER)
GENERATED_TASKS: tuple[str, ...] = tuple(t.name for t in _GENERATED)
