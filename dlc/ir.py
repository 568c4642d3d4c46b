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

from dataclasses import dataclass, field, fields
from typing import Any, Literal

SCHEMA_VERSION = "dlc/manifest/v1"

OutputKind = Literal["text", "choice", "number"]
Metric = Literal["accuracy", "exact_match", "number_presence", "final_answer"]
PromptFormat = Literal["chat", "raw"]
ScoringFunction = Literal["logprobs", "accuracy"]
LogpReduction = Literal["mean", "sum"]
LabelAgg = Literal["logsumexp", "max"]
Calibration = Literal["none", "fit"]
Backend = Literal["embedded", "openai", "scripted"]   # dlc.lm.registry.open_backend opens each
Validation = Literal["accuracy", "loglik"]
Acceptance = Literal["best", "paired"]
CalibrationKeep = Literal["accuracy", "selection"]


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

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class PosteriorComponent:
    """One template of the hidden-text posterior mixture q(h | ...) and its mixing weight (paper §3, q_pri/q_pri+)."""

    template: TemplateRef
    weight: float


@dataclass(frozen=True)
class Backward:
    """How a layer is trained: its prompt-proposal template B_pi and its posterior mixture B_h."""

    prompt_template: TemplateRef
    posterior: tuple[PosteriorComponent, ...]
    max_tokens: int = 512          # proposals (prompts and hidden texts) are capped at this length
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layer:
    """One LLM call: parents -> template(prompt, parents) -> output."""

    name: str
    parents: tuple[str, ...]
    template: TemplateRef
    prompt: str
    trainable: bool
    output: Output
    generation: Generation
    backward: Backward
    model: str = "default"                 # name of a ModelConfig (forward)
    backward_model: str = "default"        # name of a ModelConfig (prompt and hidden proposals)
    format: PromptFormat = "chat"          # render through the model's chat template, or as raw text
    system: str | None = None              # system message for chat format (None: the model's default)
    answer_prefix: str = ""                # the assistant reply starts with this before labels are scored
    calibration: Calibration = "none"      # choice layers: "fit" learns a per-label log-offset (engine/calibration)
    offsets: tuple[tuple[str, float], ...] = ()   # (label, b_label): p(label | ctx) ∝ p_LM(label | ctx)·exp(b)
    span: dict[str, Any] | None = None     # SourceSpan.to_json() of the layer declaration

    def offset_vector(self) -> list[float] | None:
        """The offsets in label order (0 for an unlisted label), or None when the layer has none."""
        if self.output.kind != "choice" or not self.offsets:
            return None
        d = dict(self.offsets)
        return [float(d.get(n, 0.0)) for n in self.output.label_names]


@dataclass(frozen=True)
class ModelConfig:
    """A named LLM. `embedded`: llama.cpp in-process (`model` = tiny|small|default|GGUF path|hf:repo/file).
    `openai`: any OpenAI-compatible server; URL and key are read from the *named* environment variables at run
    time and never stored. `scripted`: dlc's deterministic in-memory LM for tests (no model file; answers are a
    function of the request)."""

    name: str
    backend: Backend = "embedded"
    model: str = "default"
    base_url_env: str | None = None        # e.g. "OPENAI_BASE_URL" (several URLs separated by commas)
    api_key_env: str | None = None         # e.g. "OPENAI_API_KEY"
    n_ctx: int = 4096
    max_concurrency: int = 8
    timeout: float = 120.0
    delay: float = 0.0                     # scripted backend only: seconds slept per batch call (lets a test
                                           # interrupt a fit inside an iteration)


@dataclass(frozen=True)
class DataConfig:
    """Where examples come from. A built-in `task` (paper task or generated task) or a `path` (JSONL/CSV)."""

    task: str | None = None
    path: str | None = None
    fields: tuple[tuple[str, str], ...] = ()   # (graph input name, dataset field)
    target_field: str = "label"
    train_size: int = -1                       # -1: the whole split
    dev_size: int = -1
    test_size: int = -1
    data_dir: str | None = None
    cut: Literal["first", "balanced"] = "first"  # how *_size cuts a split: its first n, or the paper's class-
                                                 # balanced draw (with replacement; dlc.data.splits.balanced_cut)


@dataclass(frozen=True)
class FitConfig:
    """Every training option (dln-reference §1.6). Defaults follow the paper's reported settings (§5.1, App. I)."""

    iters: int = 20                        # paper: 20 iterations
    batch_size: int = 20                   # paper: B = 20
    num_p_samples: int = 20                # N prompt candidates per step (N-1 new + current); paper: 20
    num_h_samples: int = 5                 # K posterior samples per example; paper: 5
    seed: int = 42                         # the run seed: every random choice is derived from it (dlc.rng)
    fwd_temp: float = 0.0                  # training forward temperature (dev/test are always greedy)
    bwd_temp: float = 0.7                  # prompt and hidden proposals
    val_freq: int = 2                      # validate on dev every k iterations (paper: 2)
    do_first_eval: bool = True             # validate the initial prompts, so training can never end worse on dev
    tolerance: int = 2                     # backtrack to the best prompts after this many non-improving vals (-1 off)
    use_memory: int = 2                    # M best prompt sets re-proposed as bases (paper DLN-2: 2)
    held_out_prompt_ranking: bool = True   # each proposal sees a random half of the batch (paper: True)
    balance_batch: bool = False            # class-balanced training batches
    logp_penalty: float = 0.5              # exploration reward lambda on hidden layers (paper DLN-2: 0.5)
    decay_logp_penalty: bool = True        # lambda decays linearly to 0 over training
    trust_factor: float = 0.0              # KL trust region on output layers (0 off)
    posterior_temp: float = 1.0            # temperature of the importance weights (>= 100: uniform)
    output_scoring: ScoringFunction = "logprobs"
    hidden_scoring: ScoringFunction = "logprobs"
    include_prior: bool = True             # posterior logits add log p(h | parents, pi)
    correct_weighting: bool = False        # posterior logits subtract log q(h) (proper importance weights)
    mi_regularization: bool = False        # posterior logits subtract log p(y | h) without x
    use_h_argmax: bool = False             # keep only the best posterior sample per example
    rewrite_loss_only: bool = False        # resample hidden texts only for misclassified examples
    strip_options_for_hidden: bool = False  # hidden layers see the input cut before "Options:" (scoring too)
    n_shots: int = 0                       # in-context examples prepended to the output layer's input (baseline)
    hidden_logp: LogpReduction = "mean"    # log p(h | .) per token: keeps long and short h on one scale (paper)
    output_logp: LogpReduction = "sum"     # log p(y | .) of a whole label/answer
    use_nce: bool = False                  # pi_0 score = log-softmax over the K samples
    num_p1_steps: int = 1                  # local-search steps per iteration for hidden layers
    train: tuple[str, ...] = ()            # layers to train ((): every trainable layer)
    budget_tokens: int = 0                 # stop cleanly once this many tokens were spent (0: no cap)
    max_dev: int = -1                      # cap on dev examples used for validation (-1: all)
    label_agg: LabelAgg = "logsumexp"         # verbalizers -> label score: "logsumexp" (label mass) | "max"
    calibration_sigma: float = 1.0         # prior std of a calibrated layer's offsets (MAP shrinkage towards 0)
    calibration_size: int = 64             # train examples the offsets are fitted on at each validation (-1: all)
    calibration_keep: CalibrationKeep = "accuracy"   # offsets are kept if they raise dev accuracy ("selection":
                                           # by the validation/accept rule of prompts) — bench/CALIBRATION.md
    validation: Validation = "loglik"      # dev score that selects prompts: mean log p(target), or accuracy
    accept: Acceptance = "paired"          # a new set must beat the best on the same dev examples (t-test)
    accept_level: float = 0.1              # one-sided paired t-test level of accept = "paired"
    max_prompt_words: int = 150            # a proposal longer than this is rejected (0: no cap)
    copy_ngram: int = 8                    # a proposal sharing this many consecutive words with a shown input
                                           # is rejected as a copy (0: off)

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
    target: str = "label"                  # dataset field holding the target of the output layer
    metric: Metric = "accuracy"
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
