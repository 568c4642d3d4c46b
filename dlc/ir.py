"""The resolved, frozen intermediate representation of a compiled network: what the engine executes.

The compiler (`dlc.lang.compiler`) lowers a `.dln` syntax tree into a `Graph`; `dlc.artifacts.manifest` serialises it to the JSON
artifact and back (the JSON is the only persisted form, never a pickle). Everything here is immutable; updates go
through `dataclasses.replace`.

Template variable contract (checked statically by the compiler, supplied by the engine):

forward templates (`templates/forward/*.j2`) receive
    prompt   the layer's (learnable) prompt text
    input    the text of the layer's first parent
    hidden   the texts of the other parents, joined by a blank line ("" for a single-parent layer)
    inputs   the list of all parent texts, in declaration order
    parents  the same as {name, text, input} records (input: the parent is a graph input), for templates that
             present each parent by name (the `named` default of a layer with several inputs)
    <name>   each parent's text under its own name (e.g. `x`, `h1`)
posterior templates (`templates/backward/hidden_*.j2`) receive the forward variables of the hidden layer plus
    forward      the layer's fully rendered forward context (so q_pri can be `{{ forward }}` for any layer)
    output       the layer's current forward output (h-hat)
    target       the target of the layer's child (y for the output layer's parent), joined over children
    next_prompt  the child's prompt (joined over children)
    message      a meta-instruction drawn from the template's own pool (may be "")
prompt-proposal templates (`templates/backward/prompt_*.j2`) receive
    prompt       the base prompt being improved (current or from memory)
    successes    list of {input, output, target} the layer got right
    errors       list of {input, output, target} the layer got wrong
    message      the meta-instruction for this proposal
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

SCHEMA_VERSION = "dlc/manifest/v1"

OutputKind = Literal["text", "choice", "number"]
Metric = Literal["accuracy", "exact_match", "number_presence", "final_answer"]
PromptFormat = Literal["chat", "raw"]
ScoringFunction = Literal["logprobs", "accuracy"]
LogpReduction = Literal["mean", "sum"]
LabelAgg = Literal["logsumexp", "max"]
Calibration = Literal["none", "fit", "batch"]
Backend = Literal["embedded", "openai", "scripted"]   # dlc.lm.registry.open_backend opens each
Validation = Literal["accuracy", "loglik"]
Acceptance = Literal["best", "paired"]
Racing = Literal["off", "halving"]
CalibrationKeep = Literal["accuracy", "selection"]
Range = tuple[float | None, float | None, bool]      # (lo, hi, lo exclusive); None: unbounded


def setting(default: Any = MISSING, *, key: str | None = None, kind: str | None = None, lo: float | None = None,
            hi: float | None = None, lo_open: bool = False, custom: bool = False) -> Any:
    """A field a `.dln` block sets: the one declaration of its key, type, default and range, from which
    `dlc.lang.schema` derives the block's checks (`dlc.lang.check`), the compiler's defaults and lowering, and the
    manifest codec. `key`: the .dln key when it is not the field name; `kind`: the coercer when the type does not
    say it (name, names, env, raw: kept as syntax); `lo`/`hi`: the range of a number, `lo_open` excluding lo (E311
    outside); `custom`: lowered by the compiler with context (templates, labels, model names, paths), not copied from
    the checked value."""
    rng = (lo, hi, lo_open) if lo is not None or hi is not None else None
    meta = {"dln": True, "key": key, "kind": kind, "range": rng, "custom": custom}
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


@dataclass(frozen=True)
class TemplateRef:
    """A resolved Jinja template. `kind` says where the text came from; `text` is the exact source rendered."""

    name: str                      # builtin name, file path as written, or "<inline:layer.key>"
    kind: Literal["builtin", "file", "inline"]
    text: str
    sha256: str
    path: str | None = None        # resolved file path for builtin/file templates


@dataclass(frozen=True)
class Label:
    """One class of a `choice` output: its canonical name and the strings that verbalise it."""

    name: str
    verbalizers: tuple[str, ...]


@dataclass(frozen=True)
class Output:
    kind: OutputKind = "text"
    labels: tuple[Label, ...] = ()

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(lab.name for lab in self.labels)


@dataclass(frozen=True)
class Generation:
    """Forward generation settings of a layer (used for greedy outputs of text/number layers)."""

    max_tokens: int = setting(256, lo=1, hi=32768)
    temperature: float = setting(0.0, lo=0, hi=2)
    top_p: float = setting(1.0, lo=0, hi=1, lo_open=True)
    stop: tuple[str, ...] = setting(())


@dataclass(frozen=True)
class PosteriorComponent:
    """One template of the hidden-text posterior mixture q(h | ...) and its mixing weight (paper §3, q_pri/q_pri+)."""

    template: TemplateRef
    weight: float


@dataclass(frozen=True)
class Backward:
    """How a layer is trained: its prompt-proposal template B_pi and its posterior mixture B_h."""

    prompt_template: TemplateRef = setting(key="prompt", kind="raw", custom=True)
    posterior: tuple[PosteriorComponent, ...] = setting(kind="raw", custom=True)
    max_tokens: int = setting(512, lo=1, hi=32768)   # prompt proposals are capped
    stop: tuple[str, ...] = setting(("[END]",))    # prompt_proposal.j2 asks to end the new instruction with [END]
    # posterior samples h~ are texts of this layer: 0 caps them at the layer's own max_tokens, the longest h its
    # forward pass can give, so the child is trained on hidden texts shaped like the ones it reads at test time
    posterior_max_tokens: int = setting(0, lo=0, hi=32768)
    # a posterior sample ends at `stop` above and, with this, at the layer's own generation stop strings too (a
    # forward text of the layer ends at those, so a sample standing for one does too)
    posterior_layer_stop: bool = setting(True)


@dataclass(frozen=True, kw_only=True)
class Layer:
    """One LLM call: parents -> template(prompt, parents) -> output. The keys of a `layer` block are the fields made
    with `setting` (the Generation's included); its `backward { }` block sets the Backward."""

    name: str
    parents: tuple[str, ...]
    template: TemplateRef = setting(kind="raw", custom=True)
    prompt: str = setting("")
    trainable: bool = setting(True, key="fixed", custom=True)    # `fixed = true`: not trained
    output: Output = setting(Output(), kind="raw", custom=True)
    generation: Generation = field(default_factory=Generation, metadata={"flatten": True})
    backward: Backward = field(metadata={"nested": "backward"})
    model: str = setting("default", kind="name")            # name of a ModelConfig (forward)
    backward_model: str = setting("default", kind="name")   # name of a ModelConfig (prompt and hidden proposals)
    format: PromptFormat = setting("chat")        # render through the model's chat template, or as raw text
    system: str | None = setting(None)            # system message for chat format (None: the model's default)
    answer_prefix: str = setting("")              # the assistant reply starts with this before labels are scored
    calibration: Calibration = setting("none", custom=True)   # choice layers: "fit" learns a per-label log-offset
                                                  # from labels, "batch" from unlabelled inputs (engine/calibration);
                                                  # the output layer's default is "fit"
    offsets: tuple[tuple[str, float], ...] = setting((), kind="raw", custom=True)
                                                  # (label, b_label): p(label | ctx) ∝ p_LM(label | ctx)·exp(b)
    span: dict[str, Any] | None = None     # SourceSpan.to_json() of the layer declaration

    def offset_vector(self) -> list[float] | None:
        """The offsets in label order (0 for an unlisted label), or None when the layer has none."""
        if self.output.kind != "choice" or not self.offsets:
            return None
        d = dict(self.offsets)
        return [float(d.get(n, 0.0)) for n in self.output.label_names]

    def posterior_max_tokens(self) -> int:
        """The cap of a posterior sample h~ ~ q(h | x, y) (paper Eq. 4-5): `backward.posterior_max_tokens`, or by
        default the layer's own `max_tokens`. h~ stands for a hidden text of this layer, so it is held to the length
        the forward pass can produce: the child's prompts are scored and chosen on h~ (the ELBO, Eq. 5) and then read
        forward texts at test time; a longer h~ would train them on complete reasoning the forward pass cuts off (the
        reference implementation's `strip_options_for_hidden` bug is the same kind of train/test mismatch)."""
        return max(1, self.backward.posterior_max_tokens or self.generation.max_tokens)

    def posterior_stop(self) -> tuple[str, ...]:
        """Where a posterior sample h~ ends: the backward stop strings and (`backward.posterior_layer_stop`, the
        default) the layer's own `stop`, for the reason of `posterior_max_tokens` (a forward text of the layer ends
        at its `stop`, so a sample standing for one does too)."""
        back = self.backward
        return tuple(dict.fromkeys((*back.stop, *(self.generation.stop if back.posterior_layer_stop else ()))))


@dataclass(frozen=True)
class ModelConfig:
    """A named LLM. `embedded`: llama.cpp in-process (`model` = tiny|small|default|GGUF path|hf:repo/file).
    `openai`: any OpenAI-compatible server; URL and key are read from the *named* environment variables at run
    time and never stored. `scripted`: dlc's deterministic in-memory LM for tests (no model file; answers are a
    function of the request)."""

    name: str
    backend: Backend = setting("embedded")
    model: str = setting("default")
    base_url_env: str | None = setting(None, kind="env")   # e.g. "OPENAI_BASE_URL" (several URLs, comma-separated)
    api_key_env: str | None = setting(None, kind="env")    # e.g. "OPENAI_API_KEY"
    n_ctx: int = setting(4096, lo=128, hi=1 << 20)
    # embedded only: generation rows (samples of all requests of one call) decoded together; 16 from the measured
    # step-cost curve (bench/BATCHING.md: 16 rows ~4x the tokens/s of one, 32 rows barely more)
    batch_rows: int = setting(16, lo=1, hi=63)
    # embedded only: `exact` scores prompts one after another, so a score never depends on what else was asked;
    # `merged` decodes the suffixes of several prompts (and several continuations) in one llama_decode over a
    # unified KV stream: measured no faster on an AVX2 CPU, scores moved by up to 0.48 nats (bench/SCORING.md)
    scoring: Literal["exact", "merged"] = setting("exact")
    max_concurrency: int = setting(8, lo=1, hi=1024)
    timeout: float = setting(120.0, lo=0, lo_open=True)
    max_retries: int = setting(6, lo=0, hi=100)   # openai only: retries of one request (429, 5xx, timeouts, garbage)
    delay: float = setting(0.0, lo=0, hi=60)   # scripted backend only: seconds slept per batch call
                                                        # (lets a test interrupt a fit inside an iteration)


@dataclass(frozen=True)
class DataConfig:
    """Where examples come from. A built-in `task` (paper task or generated task) or a `path` (JSONL/CSV)."""

    task: str | None = setting(None, custom=True)              # a name in dlc.data.tasks.TASKS
    path: str | None = setting(None, custom=True)              # relative to the .dln file
    fields: tuple[tuple[str, str], ...] = setting((), kind="raw", custom=True)   # (graph input, dataset field)
    target_field: str = setting("label")
    train_size: int = setting(-1, lo=-1)     # -1: the whole split
    dev_size: int = setting(-1, lo=-1)
    test_size: int = setting(-1, lo=-1)
    data_dir: str | None = setting(None, custom=True)          # relative to the .dln file
    cut: Literal["first", "balanced"] = setting("first")  # how *_size cuts a split: its first n, or the paper's
                                                 # class-balanced draw (with replacement; dlc.data.splits.balanced_cut)


@dataclass(frozen=True)
class FitConfig:
    """Every training option (dln-reference §1.6). Defaults follow the paper's reported settings (§5.1, App. I)."""

    iters: int = setting(20, lo=0)  # paper: 20 iterations
    batch_size: int = setting(20, lo=1)  # paper: B = 20
    num_p_samples: int = setting(20, lo=1)  # N prompt candidates per step (N-1 new + current); paper: 20
    num_h_samples: int = setting(5, lo=1)  # K posterior samples per example; paper: 5
    # the run seed: every random choice is derived from it (dlc.rng); numpy's RandomState (the data cut) takes 32 bits
    seed: int = setting(42, lo=0, hi=2**32 - 1)
    fwd_temp: float = setting(0.0, lo=0, hi=2)  # training forward temperature (dev/test are always greedy)
    bwd_temp: float = setting(0.7, lo=0, hi=2)  # prompt and hidden proposals
    val_freq: int = setting(2, lo=1)  # validate on dev every k iterations (paper: 2)
    do_first_eval: bool = setting(True)    # validate the initial prompts, so training can never end worse on dev
    tolerance: int = setting(2, lo=-1)  # backtrack to the best prompts after this many non-improving vals (-1 off)
    use_memory: int = setting(2, lo=0)  # M best prompt sets re-proposed as bases (paper DLN-2: 2)
    held_out_prompt_ranking: bool = setting(True)  # each proposal sees a random half of the batch (paper: True)
    balance_batch: bool = setting(False)   # class-balanced training batches
    logp_penalty: float = setting(0.5, lo=0)  # exploration reward lambda on hidden layers (paper DLN-2: 0.5)
    decay_logp_penalty: bool = setting(True)  # lambda decays linearly to 0 over training
    trust_factor: float = setting(0.0, lo=0)  # KL trust region on output layers (0 off)
    posterior_temp: float = setting(1.0, lo=0, lo_open=True)  # temperature of the importance weights (>= 100: uniform)
    output_scoring: ScoringFunction = setting("logprobs")
    hidden_scoring: ScoringFunction = setting("logprobs")
    include_prior: bool = setting(True)    # posterior logits add log p(h | parents, pi)
    correct_weighting: bool = setting(False)  # posterior logits subtract log q(h) (proper importance weights)
    mi_regularization: bool = setting(False)  # posterior logits subtract log p(y | h) without x
    use_h_argmax: bool = setting(False)    # keep only the best posterior sample per example
    rewrite_loss_only: bool = setting(False)  # resample hidden texts only for misclassified examples
    strip_options_for_hidden: bool = setting(False)  # hidden layers see the input cut before "Options:" (scoring too)
    n_shots: int = setting(0, lo=0)  # in-context examples prepended to the output layer's input (baseline)
    hidden_logp: LogpReduction = setting("mean")  # log p(h | .) per token: keeps long and short h on one scale (paper)
    output_logp: LogpReduction = setting("sum")  # log p(y | .) of a whole label/answer
    use_nce: bool = setting(False)         # pi_0 score = log-softmax over the K samples
    num_p1_steps: int = setting(1, lo=1)  # local-search steps per iteration for hidden layers
    train: tuple[str, ...] = setting((), kind="names", custom=True)  # layers to train ((): every trainable layer)
    budget_tokens: int = setting(0, lo=0)  # stop cleanly once this many tokens were spent (0: no cap)
    max_dev: int = setting(-1, lo=-1)  # cap on dev examples used for validation (-1: all)
    label_agg: LabelAgg = setting("logsumexp")  # verbalizers -> label score: "logsumexp" (label mass) | "max"
    calibration_sigma: float = setting(1.0, lo=0, lo_open=True)  # prior std of a calibrated layer's offsets
                                           # (MAP shrinkage towards 0)
    calibration_size: int = setting(64, lo=-1)  # train examples the offsets are fitted on at each validation (-1: all)
    calibration_keep: CalibrationKeep = setting("accuracy")  # offsets are kept if they raise dev accuracy ("selection":
                                           # by the validation/accept rule of prompts) — bench/CALIBRATION.md
    validation: Validation = setting("loglik")  # dev score that selects prompts: mean log p(target), or accuracy
    accept: Acceptance = setting("paired") # a new set must beat the best on the same dev examples (t-test)
    accept_level: float = setting(0.1, lo=0, hi=0.5, lo_open=True)  # one-sided paired t-test level of accept = "paired"
    max_prompt_words: int = setting(150, lo=0)  # a proposal longer than this is rejected (0: no cap)
    copy_ngram: int = setting(8, lo=0)  # a proposal sharing this many consecutive words with a shown input
                                           # is rejected as a copy (0: off)
    racing: Racing = setting("off")  # candidate scoring by successive halving (bench/RACING.md: agreement and
                                     # tokens saved, measured on replayed bench traces)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class Example:
    """One dataset example: a text per graph input, and the output layer's target (a label name or a string)."""

    inputs: dict[str, str]
    target: str
    id: str = ""


@dataclass(frozen=True)
class Graph:
    """A compiled network. `order` is a deterministic (lexicographic) topological order of the layers."""

    name: str
    inputs: tuple[str, ...]
    layers: dict[str, Layer]
    order: tuple[str, ...]
    output: str                            # the output layer
    target: str = setting("label", custom=True)   # dataset field holding the target of the output layer
    metric: Metric = setting("accuracy", custom=True)   # (`output y { target = ..., metric = ... }`; the
                                                         # compiler's defaults follow the data and the output kind)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    source_path: str | None = None
    source_sha256: str | None = None

    def parents(self, layer: str) -> tuple[str, ...]:
        return self.layers[layer].parents

    def children(self, node: str) -> tuple[str, ...]:
        """Layers that read `node` (an input or a layer), in topological order."""
        return tuple(n for n in self.order if node in self.layers[n].parents)

    def hidden_layers(self) -> tuple[str, ...]:
        return tuple(n for n in self.order if n != self.output)

    def prompts(self) -> dict[str, str]:
        return {n: self.layers[n].prompt for n in self.order}
