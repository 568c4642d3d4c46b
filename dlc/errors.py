"""User-facing errors: one small hierarchy, stable codes, and a compiler-style renderer.

Every mistake a user can make is a `DlcError` with a stable code (`E2xx` syntax, `E3xx` semantic, ...). Errors that
point into a `.dln` (or template) file carry a `SourceSpan` and render as

    path:line:col: error[E301]: unknown template 'clasify'
       |
     7 |   template = clasify
       |              ^^^^^^^
    hint: did you mean 'classify'?

Anything else renders as one line with a hint. Bugs are not DlcErrors: they are asserts/RuntimeErrors and the CLI
reports them with exit status 3 (pre-commit's policy).

Code ranges:
    E1xx usage (CLI arguments, --set overrides, config)      E5xx artifacts (manifest, run directory, cache)
    E2xx syntax (.dln parse)                                 E6xx LLM backends (transport, model files, capability)
    E3xx semantics (names, types, settings); E35x templates  E7xx fitting (numerics, budget, data)
    E4xx graph structure (cycles, unreachable, no output)    E8xx data (datasets, splits, field mapping)

`REGISTRY` (at the end) holds every code with its class and its one-line meaning; the README's tables list the same.
"""
from __future__ import annotations

import difflib
import re
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence


# ------------------------------------------------------------------------------------------------ redaction
# Secrets dlc holds (API keys, URL passwords) never reach a message: every DlcError's message and hint, every warning
# and the CLI's bug traceback go through `redact`, and messages built from untrusted text (a server's error body,
# a connection error) are redacted before they are cut to length (a cut key would no longer match).
MASK = "***"
_MIN_SECRET = 6            # shorter values would mask ordinary words; no real key or password is this short
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
# scheme://userinfo@host: the whole userinfo (user:password, or a token used as user name) is masked
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@'\"<>]*@")
# an Authorization header or a bearer token echoed back by a server
_AUTH_HEADER = re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic|token)\s+)?[^\s\"',;}]+")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{12,}")
# a credential passed in a URL's query string (`?api_key=...`, `&token=...`, `sig=`): the value is masked
_QUERY_SECRET = re.compile(
    r"(?i)([?&][\w.\-]*(?:key|token|secret|passw(?:or)?d|pwd|sig|signature|auth|credential)[\w.\-]*=)"
    r"[^&#\s'\"<>]+")


def add_secret(value: str | None) -> None:
    """Register a secret dlc holds (an API key, a URL password) so that `redact` masks it wherever it appears."""
    if value and len(value) >= _MIN_SECRET:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


def add_url_secrets(url: str) -> None:
    """Register the password (and a token-like user name) of `scheme://user:password@host/...`, the Basic
    authorization value an HTTP client derives from them, and credential-named query values (`?api_key=...`)."""
    import base64
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return
    for v in (user if password is None else None, password):
        if v:
            add_secret(v)
            add_secret(unquote(v))
    if user is not None and password:
        add_secret(base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode())
    for m in _QUERY_SECRET.finditer(url):           # also once an HTTP client has re-encoded the URL elsewhere
        value = m.group(0)[len(m.group(1)):]
        add_secret(value)
        add_secret(unquote(value))


def redact(text: str) -> str:
    """`text` with URL credentials, Authorization values and every registered secret replaced by ***."""
    if not text:
        return text
    out = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    out = _AUTH_HEADER.sub(lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + MASK, out)
    out = _BEARER.sub(lambda m: m.group(1) + " " + MASK, out)
    out = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, out)
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for s in secrets:
        if s in out:
            out = out.replace(s, MASK)
    return out


@dataclass(frozen=True)
class SourceSpan:
    """A 1-based, end-inclusive-line / end-exclusive-column region of a source file."""

    path: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "col": self.col,
                "end_line": self.end_line, "end_col": self.end_col}


class DlcError(Exception):
    """Base class of every error caused by user input; the CLI prints it and exits with status 1."""

    code: str = "E000"

    def __init__(self, message: str, *, code: str | None = None, span: SourceSpan | None = None,
                 hint: str | None = None, node: str | None = None, source: str | None = None) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.span = span
        self.hint = redact(hint) if hint else hint
        self.node = node
        self.source = source  # full text of span.path when it is not readable from disk (inline/in-memory)

    def with_node(self, node: str) -> "DlcError":
        """Attach the graph node the error happened in (dbt's add_node), keeping an existing one."""
        if self.node is None:
            self.node = node
        return self

    def render(self, source_text: str | None = None) -> str:
        return render_error(self, source_text)

    def __str__(self) -> str:
        if self.span is not None:
            return f"{self.span.path}:{self.span.line}:{self.span.col}: error[{self.code}]: {self.message}"
        return f"error[{self.code}]: {self.message}"


class DlcUsageError(DlcError):
    code = "E100"


class DlcSyntaxError(DlcError):
    code = "E200"


class DlcSemanticError(DlcError):
    code = "E300"


class DlcTemplateError(DlcSemanticError):
    code = "E350"


class DlcGraphError(DlcError):
    code = "E400"


class DlcArtifactError(DlcError):
    code = "E500"


class DlcLMError(DlcError):
    code = "E600"

    def __init__(self, message: str, *, retryable: bool = False, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retryable = retryable


class DlcFitError(DlcError):
    code = "E700"


class DlcDataError(DlcError):
    code = "E800"


class CompileFailed(DlcError):
    """Several errors of one file, reported together (the compiler never stops at the first one)."""

    code = "E300"

    def __init__(self, errors: Sequence[DlcError]) -> None:
        errors = sorted(errors, key=_sort_key)
        first = errors[0] if errors else None
        super().__init__(f"{len(errors)} error(s)", code=first.code if first else "E300",
                         span=first.span if first else None)
        self.errors: list[DlcError] = list(errors)

    def render(self, source_text: str | None = None) -> str:
        parts = [render_error(e, source_text if (e.span and first_path(self) == e.span.path) else None)
                 for e in self.errors]
        n = len(self.errors)
        parts.append(f"{n} error{'s' if n != 1 else ''} found")
        return "\n".join(parts)


def first_path(err: CompileFailed) -> str | None:
    return err.errors[0].span.path if err.errors and err.errors[0].span else None


def _sort_key(e: DlcError) -> tuple[str, int, int, str]:
    if e.span is None:
        return ("~", 0, 0, e.code)
    return (e.span.path, e.span.line, e.span.col, e.code)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """`hint` text for a misspelt name, or None when nothing is close."""
    matches = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None


def render_error(err: DlcError, source_text: str | None = None) -> str:
    """Render an error as `path:line:col: error[Ennn]: message`, the source line with carets, and a hint."""
    if isinstance(err, CompileFailed):
        return err.render(source_text)
    lines = [redact(str(err))]  # (a message may have been extended after construction)
    span = err.span
    if span is not None:
        text = source_text if source_text is not None else err.source
        if text is None:
            try:
                text = Path(span.path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = None
        if text is not None:
            src_lines = text.splitlines()
            if 1 <= span.line <= len(src_lines):
                src = src_lines[span.line - 1].expandtabs(1)
                src, span = _window(src, span)
                width = 1
                if span.end_line == span.line and span.end_col is not None and span.end_col > span.col:
                    width = span.end_col - span.col
                width = max(1, min(width, max(1, len(src) - span.col + 1)))
                gutter = " " * len(str(span.line))
                lines.append(f"{gutter} |")
                lines.append(f"{span.line} | {src}")
                lines.append(f"{gutter} | {' ' * (span.col - 1)}{'^' * width}")
    if err.node:
        lines.append(f"  in node {err.node}")
    if err.hint:
        lines.append(f"hint: {redact(err.hint)}")
    return "\n".join(lines)


_LINE_SHOWN = 160     # characters of a source line an error shows (a 5 MB one-line string used to be printed whole)


def _window(src: str, span: SourceSpan) -> tuple[str, SourceSpan]:
    """At most _LINE_SHOWN characters of a long source line, around the span's column (cut ends marked ...), and
    the span moved to match."""
    if len(src) <= _LINE_SHOWN:
        return src, span
    start = max(0, min(span.col - 1 - _LINE_SHOWN // 3, len(src) - _LINE_SHOWN))
    cut = src[start:start + _LINE_SHOWN]
    head = "..." if start > 0 else ""
    tail = "..." if start + _LINE_SHOWN < len(src) else ""
    col = span.col - start + len(head)
    end_col = None if span.end_col is None else min(span.end_col - start + len(head), len(head) + len(cut) + 1)
    return head + cut + tail, replace(span, col=col, end_col=end_col)


# ------------------------------------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class ErrorCode:
    """One stable code: the class it is raised with and what it means (one line, as in the README's tables)."""

    code: str
    cls: type[DlcError]
    meaning: str


def _family(cls: type[DlcError], *rows: tuple[str, str]) -> tuple[ErrorCode, ...]:
    return tuple(ErrorCode(code, cls, meaning) for code, meaning in rows)


# Every code dlc raises, once. tests/test_errors.py fails when a raise site uses a code that is not here, when a
# code is here twice, or when the README's error tables do not list it. A new meaning gets a new code in its family.
REGISTRY: tuple[ErrorCode, ...] = (
    *_family(
        DlcUsageError,
        ("E101", "malformed `--set` (not BLOCK.KEY=VALUE)"),
        ("E102", "`--set` names an unknown block, key or layer"),
        ("E103", "`--set` on something without its .dln source (a compiled artifact whose source is gone or "
                 "changed since compile, a run without its source)"),
        ("E104", "no such file, a file of the wrong kind (a directory where a file belongs, or the reverse), or an "
                 "unreadable file"),
        ("E105", "a .dln file that is not UTF-8"),
        ("E106", "an image format needs Graphviz `dot`, which is missing or failed"),
        ("E107", "a `--set` that is not valid text (undecodable bytes, a lone UTF-16 surrogate)"),
        ("E108", "bad `dlc sweep` option (malformed, repeated or empty `--grid`, `--workers`, `--cpus-per-trial`, "
                 "`--no-ray` with `--address`)"),
        ("E109", "an output file (`--json FILE`, `-o FILE`) that cannot be written: a directory, a parent that is "
                 "a file, no permission"),
        ("E111", "bad `--seeds` (not a comma-separated list of distinct integers)"),
        ("E112", "`--resume` combined with `--run-dir`"),
        ("E113", "bad `--split` (train, dev or test)"),
        ("E114", "the split to evaluate is empty"),
        ("E115", "bad `dlc serve` option (`--port`, `--n-ctx`, `--max-logprobs`)"),
        ("E116", "`n_shots` > 0 on a network whose output layer reads a hidden layer"),
        ("E117", "`n_shots` > 0 without training examples to draw the demonstrations from"),
        ("E118", "a bad `dlc data show --field` (not INPUT=COLUMN, or an input mapped twice)"),
        ("E120", "nothing to evaluate (no network or run given)"),
        ("E122", "an input line on stdin is not a JSON object"),
        ("E123", "an input line on stdin lacks a graph input"),
        ("E124", "an input row whose text is not valid (a lone UTF-16 surrogate, bytes that are not UTF-8)"),
        ("E130", "the run directory cannot be used (exists and is not empty, or cannot be created)"),
        ("E131", "the run directory is in use by another dlc process"),
        ("E140", "plotting needs matplotlib"),
        ("E141", "experiment tracking (`--mlflow` or MLFLOW_TRACKING_URI) needs the mlflow package"),
        ("E142", "the MLflow tracking store cannot be used (unreachable, refused, bad URI)"),
        ("E143", "trials of a `dlc sweep` did not finish"),
        ("E144", "a sweep on Ray (`--address` or RAY_ADDRESS) needs the ray package"),
        ("E145", "Ray cannot be started or its cluster reached"),
    ),
    *_family(
        DlcSyntaxError,
        ("E201", "unexpected token"),
        ("E202", "unterminated string"),
        ("E203", "unbalanced bracket"),
        ("E204", "unknown statement"),
        ("E205", "missing `=`"),
        ("E206", "`:` where `=` belongs, or the reverse"),
        ("E207", "a character that starts no token (e.g. single quotes)"),
        ("E208", "the file ends inside a statement"),
        ("E209", "unknown escape sequence in a string"),
        ("E210", "`key =` without a value"),
        ("E211", "a layer without `(parents)`"),
        ("E212", "unquoted text with spaces"),
        ("E213", "a lone UTF-16 surrogate (`\\uD800`-`\\uDFFF` not in a pair) in a string"),
        ("E214", "a number literal longer than 100 characters"),
        ("E215", "lists or maps nested more than 32 deep"),
        ("E216", "a .dln source or `--set` value over the size cap (1 Mi characters)"),
    ),
    *_family(
        DlcSemanticError,
        ("E301", "unknown template"),
        ("E302", "unknown node name"),
        ("E303", "a name, block or entry declared twice"),
        ("E304", "unknown model"),
        ("E305", "a reserved name (a template variable)"),
        ("E310", "a value of the wrong type"),
        ("E311", "a value out of range"),
        ("E312", "unknown key or block"),
        ("E313", "a key or block set twice"),
        ("E314", "a value that is not one of the allowed ones (including an unknown task or output kind)"),
        ("E315", "a literal secret (key, token, URL) or an invalid name where an environment variable name belongs"),
        ("E320", "a label declared twice"),
        ("E321", "one verbalizer used by two labels"),
        ("E322", "an empty label or verbalizer, or a choice with fewer than two labels"),
        ("E323", "bad posterior mixture weights (empty, or summing to 0)"),
        ("E324", "bad parent list (none, or a parent twice)"),
        ("E325", "a choice output without labels"),
        ("E326", "an openai model without `model`"),
        ("E327", "output labels that differ from the data task's"),
        ("E328", "calibration offsets name a label the layer does not have"),
        ("E329", "calibration needs a choice output"),
        ("E330", "`n_shots` > 0 with `iters` > 0 (demonstrations are an evaluation baseline, not trained with)"),
        ("E331", "the output's `target` and the data block's `target_field` name different fields"),
        ("E355", "template file not found"),
        ("E356", "template file outside the .dln's directory tree (and $DLC_TEMPLATE_DIRS)"),
        ("E357", "template file not a regular file, or over the size cap (1 MiB)"),
    ),
    *_family(
        DlcTemplateError,
        ("E351", "template syntax error"),
        ("E352", "a template rendered without a variable it needs"),
        ("E353", "a template failed to render"),
        ("E354", "a template variable the layer cannot supply"),
        ("E358", "a template construct dlc does not allow (include/import/extends, lipsum, the random filter)"),
        ("E359", "a template went over a render bound (output size, steps, value size, recursion)"),
    ),
    *_family(
        DlcGraphError,
        ("E401", "cycle"),
        ("E402", "a layer that does not lead to the output"),
        ("E403", "no output"),
        ("E404", "the output is an input, not a layer"),
        ("E405", "several outputs"),
    ),
    *_family(
        DlcArtifactError,
        ("E501", "no run directory at the path"),
        ("E502", "a corrupt compiled network or run directory file"),
        ("E503", "cannot resume: the network changed since the run started"),
        ("E504", "cannot resume: the fit/data/model config changed since the run started"),
        ("E505", "no compiled network to fall back to (`.dlc/LAST` missing, stale or damaged)"),
        ("E506", "cannot write the compiled network"),
        ("E507", "a compiled network of an unsupported schema version"),
        ("E508", "a malformed compiled network (valid JSON, wrong shape)"),
        ("E509", "cannot resume: the dataset splits differ from the run's"),
        ("E510", "the saved training state lacks fields"),
        ("E511", "the saved training state has no prompt for a trained layer"),
        ("E512", "cannot write the HTML report (`dlc report -o FILE`)"),
        ("E530", "cannot open the LLM cache"),
        ("E531", "cannot read the LLM cache"),
        ("E532", "cannot write the LLM cache"),
    ),
    *_family(
        DlcLMError,
        ("E610", "model not installed (package, chunks or huggingface_hub missing)"),
        ("E611", "unknown model, bad Hugging Face reference, or not a GGUF file"),
        ("E612", "corrupt model file (sha256 mismatch)"),
        ("E613", "model download failed"),
        ("E614", "llama.cpp could not load the model or create its context"),
        ("E620", "backend misconfigured (unknown backend, missing or bad URL, bad limits)"),
        ("E621", "server unreachable or timed out"),
        ("E622", "server error or rate limit after retries"),
        ("E623", "context too long for the server"),
        ("E624", "credentials rejected"),
        ("E625", "model or endpoint not found on the server"),
        ("E626", "request rejected"),
        ("E627", "malformed response after retries"),
        ("E628", "the server lacks a capability the algorithm needs"),
        ("E629", "`dlc serve` cannot listen (port taken)"),
        ("E630", "the environment variable a model's `api_key_env` names is not set"),
        ("E631", "a generation request asking for fewer than 1 token or sample (refused, never sent)"),
        ("E640", "missing or failing chat template"),
        ("E641", "context too long for the embedded model"),
        ("E642", "llama_decode failed"),
        ("E643", "scoring or generating after an empty prompt"),
        ("E645", "the embedded model crashed in `dlc selftest`"),
        ("E646", "`dlc selftest` failed (timeout, child failure, wrong log-probs)"),
    ),
    *_family(
        DlcFitError,
        ("E701", "no LLM was opened for a layer's model"),
        ("E702", "a target that is not a label of the layer being scored"),
        ("E703", "an example has no value for a graph input"),
        ("E711", "`train` names a layer the graph does not have (a FitConfig built in Python)"),
        ("E720", "training is already finished"),
        ("E730", "token budget exhausted"),
    ),
    *_family(
        DlcDataError,
        ("E801", "no data directory"),
        ("E802", "a missing or unreadable data file"),
        ("E803", "unknown task"),
        ("E804", "a field mapping names a field the data does not have"),
        ("E805", "a graph input with no dataset field"),
        ("E807", "unsupported dataset file type"),
        ("E808", "the `datasets` package is not installed"),
        ("E809", "download or Hugging Face load failed"),
        ("E810", "checksum mismatch"),
        ("E811", "bad split size or size cut"),
        ("E812", "a dataset without training examples"),
        ("E814", "bad split layout"),
        ("E815", "a corrupt data file"),
        ("E816", "task files that do not match each other or the task's format"),
        ("E817", "the data block sets both task and path"),
        ("E818", "no data (neither task nor path)"),
        ("E819", "a target that is none of the output layer's labels"),
        ("E820", "a data file row without the `split` column other rows have"),
        ("E821", "a data file over the size cap (256 MiB)"),
        ("E822", "a CSV/TSV row with more or fewer values than the header has columns"),
        ("E823", "a target that is a JSON list or object, not one label"),
        ("E824", "`dlc data fetch` of a generated task (it has no files)"),
    ),
)

CODES: dict[str, ErrorCode] = {e.code: e for e in REGISTRY}


def meaning(code: str) -> str | None:
    """The registered one-line meaning of `code` (None for an unknown code)."""
    e = CODES.get(code)
    return e.meaning if e else None


__all__ = [
    "SourceSpan", "DlcError", "DlcUsageError", "DlcSyntaxError", "DlcSemanticError", "DlcTemplateError",
    "DlcGraphError", "DlcArtifactError", "DlcLMError", "DlcFitError", "DlcDataError", "CompileFailed",
    "ErrorCode", "REGISTRY", "CODES", "meaning", "did_you_mean", "render_error", "replace", "field",
    "redact", "add_secret", "add_url_secrets", "MASK",
]
