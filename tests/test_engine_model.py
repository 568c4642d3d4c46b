"""Smoke test with the real embedded tiny model: fit graphs/dln1.dln and graphs/dln2.dln for two iterations on a
few Subj examples and check the run completes with finite scores and a recorded trace (not an accuracy claim)."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from dlc.lang.compiler import compile_file
from dlc.data.loader import load_splits
from dlc.train.evaluation import evaluate
from dlc.train.trainer import Trainer

from conftest import DATA, REPO as ROOT

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model as `dlc fit` opens it: embedded backend behind the disk cache (repeated greedy requests, e.g.
    the same batch in both iterations, are answered from the cache, as in a real run)."""
    from dlc.ir import ModelConfig
    from dlc.lm.registry import open_lm
    lm = open_lm(ModelConfig(name="default", model="tiny", n_ctx=1024), cache_dir=tmp_path_factory.mktemp("cache"))
    yield lm
    lm.close()


def small(g, max_tokens: int = 10):
    """The graph with short generations, so the smoke test stays fast on 2 busy cores."""
    layers = {n: dataclasses.replace(
        lay, generation=dataclasses.replace(lay.generation, max_tokens=min(lay.generation.max_tokens, max_tokens)),
        backward=dataclasses.replace(lay.backward, max_tokens=max_tokens)) for n, lay in g.layers.items()}
    return dataclasses.replace(g, layers=layers)


def fit(name: str, tiny, pool_size: int = 4, **kw):
    g = small(compile_file(ROOT / "graphs" / f"{name}.dln"))
    splits = load_splits(dataclasses.replace(g.data, train_size=8, dev_size=2), g.inputs, data_dir=str(DATA))
    # train on examples the model currently gets wrong, so the backward pass really runs
    pool = splits.train[:pool_size]
    res = evaluate(g, g.prompts(), {"default": tiny}, pool)
    wrong = [e for e, ok in zip(pool, res.correct) if not ok] or pool
    cfg = dataclasses.replace(g.fit, iters=2, batch_size=2, num_p_samples=2, val_freq=2, do_first_eval=False,
                              use_memory=0, seed=13, **kw)
    tr = Trainer(g, {"default": tiny}, wrong, splits.dev, cfg)
    records = tr.run()
    return g, tr, records


def check(g, tr, records):
    assert tr.finished() and len(records) == 3
    json.dumps(records)
    json.dumps(tr.state.to_json())
    trained = [r for r in records if "layers" in r]
    for r in trained:
        assert math.isfinite(r["elbo"])
        for upd in r["layers"].values():
            for u in (upd if isinstance(upd, list) else [upd]):
                assert all(math.isfinite(x) for x in u["reward"])
                assert u["chosen"] in u["candidates"]
    for r in records[:2]:
        nodes = r["forward"]["nodes"]
        assert set(nodes) == set(g.order)
        assert all(len(nodes[n]["contexts"]) == 2 and len(nodes[n]["outputs"]) == 2 for n in g.order)
    assert records[-1]["dev"] is not None and 0.0 <= records[-1]["dev"] <= 1.0
    assert set(tr.state.prompts) == set(g.order)
    return trained


def test_fit_dln1_tiny(tiny):
    g, tr, records = fit("dln1", tiny)
    trained = check(g, tr, records)
    assert trained, "the batch of wrong examples must trigger a prompt update"
    y = trained[0]["layers"]["y"]
    assert len(y["candidates"]) >= 1 and y["proposals"][0]["seed"] > 0
    assert any(t.startswith("y/") for t in tiny.usage.per_tag)


@pytest.mark.slow   # ~35 s on 2 cores
def test_fit_dln2_tiny(tiny):
    g, tr, records = fit("dln2", tiny, pool_size=2, num_h_samples=2)
    trained = check(g, tr, records)
    assert trained, "the batch of wrong examples must trigger the backward pass"
    if trained:
        hid = trained[0]["hidden"]["h"]
        assert all(len(w) == 2 and abs(sum(w) - 1) < 1e-9 for w in hid["weights"])
        assert all(math.isfinite(v) for row in hid["logits"] for v in row)
        assert {"h/posterior", "y/posterior_weight", "h/posterior_prior"} <= set(tiny.usage.per_tag)


@pytest.mark.slow   # ~40 s on 2 cores
def test_fit_dln2_tiny_with_merged_scoring(tmp_path):
    """`model { scoring = merged }` end to end: a DLN-2 fit whose scoring (labels, posterior weights, hidden texts as
    multi-token continuations) and batched generation run over one unified KV stream."""
    from dlc.ir import ModelConfig
    from dlc.lm.registry import open_lm

    lm = open_lm(ModelConfig(name="default", model="tiny", n_ctx=1024, scoring="merged"), cache_dir=tmp_path)
    try:
        assert lm.inner.exact is False
        g, tr, records = fit("dln2", lm, pool_size=2, num_h_samples=2)
        trained = check(g, tr, records)
        assert trained and {"h/posterior", "y/posterior_weight", "h/posterior_prior"} <= set(lm.usage.per_tag)
    finally:
        lm.close()
