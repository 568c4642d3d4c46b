"""Built-in generated tasks: seeded, exact labels, no files — so the quickstart runs offline.

* `gen:navigate`  — BBH-navigate-style move sequences; the label (do you return to the start?) is computed by
  simulating the moves; each split holds as many `yes` as `no` examples (the wanted label is drawn first).
* `gen:arithmetic` — multi-step integer arithmetic (2-4 operations); the target is the exact value.
* `gen:sort` — a list of distinct words; the target is the list sorted alphabetically.

Randomness comes from `dlc.rng` only. dev and test are drawn from the fixed data seed 42 (like the paper's splits, so
evaluations across run seeds compare on the same examples); train is drawn from the run seed. Splits are disjoint:
test is generated first, dev skips test items, train skips both.
"""
from __future__ import annotations

import random
from typing import Callable

from dlc.data.splits import RawSplits, Record
from dlc.data.tasks import TASKS
from dlc.errors import DlcDataError
from dlc.rng import Rng

DATA_SEED = 42
MAX_GENERATED = 100_000

_NAV_Q = "If you follow these instructions, do you return to the starting point? "
_NAV_OPTIONS = "\nOptions:\n- Yes\n- No"
_DIRS = {"forward": (0, 1), "backward": (0, -1), "left": (-1, 0), "right": (1, 0)}
_INVERSE = {"forward": "backward", "backward": "forward", "left": "right", "right": "left"}


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def _face_forward(moves: list[tuple[str, int]]) -> tuple[str, bool]:
    """'Always face forward.' instructions and whether they end at the origin."""
    x = y = 0
    for d, n in moves:
        x, y = x + _DIRS[d][0] * n, y + _DIRS[d][1] * n
    text = "Always face forward. " + " ".join(f"Take {_steps(n)} {d}." for d, n in moves)
    return text, (x, y) == (0, 0)


def _with_turns(actions: list[tuple[str, int]]) -> tuple[str, bool]:
    """Instructions with turns ('Take 2 steps.', 'Turn left.') simulated exactly; whether they end at the origin."""
    x = y = 0
    hx, hy = 0, 1
    parts = []
    for act, n in actions:
        if act == "step":
            x, y = x + hx * n, y + hy * n
            parts.append(f"Take {_steps(n)}.")
        elif act == "left":
            hx, hy = -hy, hx
            parts.append("Turn left.")
        elif act == "right":
            hx, hy = hy, -hx
            parts.append("Turn right.")
        else:
            hx, hy = -hx, -hy
            parts.append("Turn around.")
    return " ".join(parts), (x, y) == (0, 0)


def _navigate(rng: random.Random, want: bool) -> Record:
    text = ""
    if rng.random() < 0.5:
        for _ in range(5000):  # rejection sampling: the label is whatever the simulation says
            k = rng.randint(3, 7)
            actions = [("step", rng.randint(1, 9)) if rng.random() < 0.6 else
                       (rng.choice(["left", "right", "around"]), 0) for _ in range(k)]
            text, back = _with_turns(actions)
            if back == want and any(a == "step" for a, _ in actions):
                break
        else:
            text = ""
    if not text:
        if want:
            half = [(rng.choice(list(_DIRS)), rng.randint(1, 9)) for _ in range(rng.randint(1, 3))]
            moves = half + [(_INVERSE[d], n) for d, n in half]
            rng.shuffle(moves)
        else:
            while True:
                moves = [(rng.choice(list(_DIRS)), rng.randint(1, 9)) for _ in range(rng.randint(2, 6))]
                if not _face_forward(moves)[1]:
                    break
        text, back = _face_forward(moves)
        assert back == want
    raw = "Yes" if want else "No"
    return {"input": _NAV_Q + text + _NAV_OPTIONS, "label": raw.lower(), "raw_label": raw, "instructions": text}


def _expr(rng: random.Random, n_ops: int) -> tuple[str, int]:
    """A random fully parenthesised expression with `n_ops` operations over -9..9, and its exact value."""
    if n_ops == 0:
        v = rng.randint(-9, 9)
        return str(v), v
    left_ops = rng.randint(0, n_ops - 1)
    ls, lv = _expr(rng, left_ops)
    rs, rv = _expr(rng, n_ops - 1 - left_ops)
    op = rng.choice("+-*")
    value = lv + rv if op == "+" else lv - rv if op == "-" else lv * rv
    return f"({ls} {op} {rs})", value


def _arithmetic(rng: random.Random, want: bool) -> Record:
    text, value = _expr(rng, rng.randint(2, 4))
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]  # the outermost parentheses add nothing
    return {"input": f"{text} =", "label": str(value), "raw_label": str(value), "expression": text}


_WORDS = tuple("""
acorn anchor apple arrow autumn badge bakery bamboo banner barrel basket beacon berry blanket blossom bottle breeze
bridge bucket butter cabin cactus camera candle canyon carpet castle cellar chalk cherry circus cloud clover cobalt
comet copper cotton crayon cricket crystal cushion daisy desert dolphin dragon drum eagle echo elbow ember engine
falcon feather fiddle forest fossil fountain garden garlic ginger glacier goblet granite guitar hammer harbor hazel
helmet honey island ivory jacket jasmine jelly jungle kettle kitten ladder lantern lemon lizard lobster magnet
maple marble meadow mirror monkey mosaic nectar needle noodle oasis ocean olive orbit orchid otter paddle palace
panda pepper pebble pencil pillow planet pocket pony puzzle quartz quill rabbit radish raven ribbon river rocket
saddle salmon sandal satin scarf shadow silver sketch sparrow spider spoon summit sunset tablet teapot thistle
thunder tiger timber tomato tulip tunnel turtle umbrella valley velvet violin wagon walnut whistle willow window
winter wizard yarn yogurt zebra zephyr
""".split())


def _sort(rng: random.Random, want: bool) -> Record:
    words = rng.sample(_WORDS, rng.randint(3, 7))
    listed = " ".join(words)
    return {"input": f"Sort the following words alphabetically: List: {listed}", "label": " ".join(sorted(words)),
            "raw_label": " ".join(sorted(words)), "words": listed}


GENERATORS: dict[str, Callable[[random.Random, bool], Record]] = {
    "gen:navigate": _navigate, "gen:arithmetic": _arithmetic, "gen:sort": _sort,
}
FIELDS: dict[str, tuple[str, ...]] = {
    "gen:navigate": ("input", "label", "raw_label", "instructions"),
    "gen:arithmetic": ("input", "label", "raw_label", "expression"),
    "gen:sort": ("input", "label", "raw_label", "words"),
}


def generate(task: str, n: int, rng: random.Random, exclude: set[str]) -> list[Record]:
    """`n` distinct examples whose inputs are not in `exclude` (which is extended with them)."""
    if n > MAX_GENERATED:
        raise DlcDataError(f"{task}: cannot generate {n} examples (at most {MAX_GENERATED} per split)",
                           code="E811", hint="use a smaller train_size / dev_size / test_size")
    make = GENERATORS[task]
    # Exact class balance for classification tasks: a shuffled quota of wanted labels, one per example.
    wants = [i % 2 == 0 for i in range(n)]
    rng.shuffle(wants)
    out: list[Record] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise DlcDataError(f"{task}: only {len(out)} distinct examples could be generated, {n} requested",
                               code="E811", hint="use smaller split sizes")
        rec = make(rng, wants[len(out)])
        if rec["input"] in exclude:
            continue
        exclude.add(rec["input"])
        out.append(rec)
    return out


def load(task: str, sizes: tuple[int, int, int], seed: int) -> RawSplits:
    """train/dev/test of a generated task; a size of -1 means the task's default size (TaskInfo.sizes)."""
    if task not in GENERATORS:
        raise DlcDataError(f"unknown generated task '{task}'", code="E803")
    defaults = TASKS[task].sizes or (300, 100, 200)
    n_train, n_dev, n_test = (d if s < 0 else s for s, d in zip(sizes, defaults))
    seen: set[str] = set()
    test = generate(task, n_test, Rng(DATA_SEED).derive("data", task, "test"), seen)
    dev = generate(task, n_dev, Rng(DATA_SEED).derive("data", task, "dev"), seen)
    train = generate(task, n_train, Rng(seed).derive("data", task, "train"), seen)
    return RawSplits(train, dev, test, fields=FIELDS[task])
