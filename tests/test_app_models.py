"""dlc.app.models: what a run spent, summed over its LMs and over the processes of a resumed run."""
from __future__ import annotations

from dataclasses import dataclass, field

from dlc.app.models import usage_totals
from dlc.lm.base import BackendWork, Usage


@dataclass
class _Local:
    """An LM with a local backend's `work()` (what llama.cpp decoded), the only part usage_totals reads besides usage."""

    model_id: str
    shapes: dict
    usage: Usage = field(default_factory=Usage)

    def work(self) -> BackendWork:
        return BackendWork(decoded_tokens=100, seconds=2.0, decode_seconds=1.5, decode_shapes=self.shapes)


NEW = {"generate:forward": {"many:16": {"tokens": 64, "seconds": 1.0, "calls": 4, "logits": 64, "context": 6400},
                            "one:128": {"tokens": 100, "seconds": 0.5, "calls": 1, "logits": 1, "context": 4950}}}


def test_decode_shapes_are_summed_over_the_processes_of_a_resumed_run() -> None:
    base = {"backend": {"decoded_tokens": 50, "seconds": 1.0, "decode_seconds": 0.5, "decode_shapes": {
        "generate:forward": {"many:16": {"tokens": 32, "seconds": 0.5, "calls": 2, "logits": 32, "context": 3200}}}}}
    shapes = usage_totals({"default": _Local("m", NEW)}, base)["backend"]["decode_shapes"]["generate:forward"]
    assert shapes["many:16"] == {"tokens": 96, "seconds": 1.5, "calls": 6, "logits": 96, "context": 9600}
    assert shapes["one:128"] == {"tokens": 100, "seconds": 0.5, "calls": 1, "logits": 1, "context": 4950}


def test_a_shape_booked_by_an_earlier_dlc_without_logits_or_context_leaves_them_out() -> None:
    """A run started before `logits`/`context` were booked and resumed after: the summed shape has no such keys,
    rather than a part of the rows posing as all of them (bench/batching.py then uses its shape-blind rule)."""
    base = {"backend": {"decoded_tokens": 50, "seconds": 1.0, "decode_seconds": 0.5, "decode_shapes": {
        "generate:forward": {"many:16": {"tokens": 32, "seconds": 0.5, "calls": 2}}}}}
    shapes = usage_totals({"default": _Local("m", NEW)}, base)["backend"]["decode_shapes"]["generate:forward"]
    assert shapes["many:16"] == {"tokens": 96, "seconds": 1.5, "calls": 6}
    assert shapes["one:128"]["logits"] == 1 and shapes["one:128"]["context"] == 4950
