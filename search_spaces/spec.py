"""Search-space files: load, validate, and turn into an Optuna space and Tune settings.

The file format is a contract (shared/docs/DESIGN.md, "The search-space file"):

    name: sigmas                  # experiment name; results go to <storage>/<name>
    dataset: mnist
    metric: kid                   # a metric of trainables.quality
    mode: min                     # optional: the metric implies it
    searcher:  {algorithm: tpe, seed: 0}                                # tpe | random
    scheduler: {name: asha, grace_period: 1000, reduction_factor: 3}    # in training iterations
    budget: {num_trials: 24, max_concurrent: 4, iterations: 30000, eval_every: 2500,
             eval_samples: 1000}
    preview: {num_trials: 6, iterations: 400, ngf: 16}   # applied on a machine without a GPU
    params:                       # searched
      sigma_begin: {loguniform: [1.0, 30.0]}
      num_levels:  {int: [8, 128], log: true}
      batch_size:  {choice: [32, 64, 128]}
    fixed: {lr: 0.001, ngf: 64}   # not searched
    resources: {cpu: 1, gpu: 0.25}   # per trial

Parameter forms: ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{int: [lo, hi], log: bool}``
and ``{choice: [...]}``. ``preview`` may override budget keys, the scheduler's ``grace_period``
and ``reduction_factor`` (a full-size grace period rarely fits a preview's iterations), and names
already in ``fixed``.

An optional ``sampler_search`` section sizes the sampler-only search on frozen checkpoints
(``run_search.py --checkpoint``, :mod:`search_spaces.sampler_search`):

    sampler_search:
      num_trials: 24
      max_concurrent: 4
      samples: [250, 1000, 4000]   # ASHA's looks, in samples scored; one whole growth factor
      params:                      # searched on top of the sampler keys of ``params``
        skip_levels:  {int: [0, 3]}    # truncated ladder: the largest levels skipped
        level_stride: {choice: [1, 2]} # sub-sampled ladder: every k-th level, ending at sigma_L
      preview: {num_trials: 8, samples: [64, 256], params: {n_steps_each: {int: [1, 10]}}}

Everything is checked before Ray starts; each problem raises :class:`SpecError`, a ValueError
whose message is one line naming the file (and line), the dotted key, the value and the fix.
Nothing here imports Ray. The metric check reads trainables.quality (one source of metric names
and directions; it brings torch, a few seconds on a busy machine), warm starts read
trainables.recommend, and Optuna is imported only where an Optuna object is built.

Run ``python -m search_spaces.spec check FILE...`` to validate files from a shell (exit 2 on error).
"""

from __future__ import annotations

import copy
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

SPACES_DIR = Path(__file__).resolve().parent
DATASETS = ("mnist",)
SEARCHERS = ("tpe", "random")
SCHEDULERS = ("asha",)
# The trainable reports training progress under this name; ASHA's time_attr.
TIME_ATTR = "iterations"


# --------------------------------------------------------------------------------------------
# The parameters a trial understands: one table, shared by validation, the space and defaults.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownParam:
    """What the trainable accepts for one config key.

    kind is the Python type of a value (float, int, bool, str). low/high bound numeric values
    (inclusive unless the matching *_open is set); values, where given, lists every allowed value.
    default is the 2019 NCSN MNIST setting (shared/docs/NCSN.md) where it has one.
    """

    kind: type
    default: Any
    meaning: str
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    values: tuple | None = None

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (already of the right kind) is not allowed, or None when it is."""
        if self.values is not None and value not in self.values:
            return f"must be one of {_fmt(list(self.values))}"
        if self.low is not None:
            if value < self.low or (self.low_open and value == self.low):
                return f"must be {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            if value > self.high or (self.high_open and value == self.high):
                return f"must be {'<' if self.high_open else '<='} {self.high:g}"
        return None


PARAMS: dict[str, KnownParam] = {
    "sigma_begin": KnownParam(float, 1.0, "largest noise level sigma_1, in [0, 1] pixel units",
                              low=0.0, low_open=True),
    "sigma_end": KnownParam(float, 0.01, "smallest noise level sigma_L, in [0, 1] pixel units",
                            low=0.0, low_open=True),
    "num_levels": KnownParam(int, 10, "number L of geometric noise levels", low=2),
    "step_lr": KnownParam(float, 2e-5, "Langevin step eps, code convention: "
                          "alpha_i = eps * (sigma_i / sigma_L)^2", low=0.0, low_open=True),
    "n_steps_each": KnownParam(int, 100, "Langevin steps T per noise level", low=1),
    "batch_size": KnownParam(int, 128, "training images per step", low=1),
    "lr": KnownParam(float, 1e-3, "Adam learning rate", low=0.0, low_open=True),
    "ngf": KnownParam(int, 64, "base width of the score network", low=8),
    "ema": KnownParam(float, 0.0, "EMA momentum of the weights used for sampling; 0 = off",
                      low=0.0, high=1.0, high_open=True),
    "denoise": KnownParam(bool, False, "final denoising step x + sigma_L^2 s(x, L-1)"),
    "anneal_power": KnownParam(float, 2.0, "loss weight sigma_i^p; 2 weights levels equally",
                               low=0.0),
    "noise_conditioning": KnownParam(str, "level", "'level': conditional norms (NCSN); "
                                     "'sigma': output / sigma_i (NCSNv2)",
                                     values=("level", "sigma")),
    "image_size": KnownParam(int, 28, "H = W of the network input (32 pads MNIST)",
                             values=(28, 32)),
    "beta1": KnownParam(float, 0.9, "Adam beta1", low=0.0, high=1.0, high_open=True),
}

# The sampler-only search (issue 7): the keys of PARAMS that change only sampling, and the
# ladder keys that exist only there (a trained network knows every level of its ladder; the
# sampler may visit fewer of them).
SAMPLER_KEYS = ("step_lr", "n_steps_each", "denoise")
LADDER_PARAMS: dict[str, KnownParam] = {
    "skip_levels": KnownParam(int, 0, "largest noise levels the sampler skips (truncated ladder)",
                              low=0),
    "level_stride": KnownParam(int, 1, "the sampler visits every k-th level, always ending at "
                               "sigma_L (sub-sampled ladder)", low=1),
}
SAMPLER_SECTION_KEYS = ("num_trials", "max_concurrent", "samples", "params", "preview")
SAMPLER_PREVIEW_KEYS = ("num_trials", "max_concurrent", "samples", "params")
# quality.evaluate needs more samples than its k-NN neighbourhoods
MIN_SAMPLES = 6

BUDGET_KEYS = ("num_trials", "max_concurrent", "iterations", "eval_every", "eval_samples")
SCHEDULER_PREVIEW_KEYS = ("grace_period", "reduction_factor")
FORMS = ("uniform", "loguniform", "int", "choice")
_TOP_KEYS = ("name", "dataset", "metric", "mode", "searcher", "scheduler", "budget", "preview",
             "params", "fixed", "resources", "sampler_search")
_REQUIRED_TOP = ("name", "metric", "budget", "params")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# PyYAML (YAML 1.1) reads 1e-3 as a string; recognise it to say so.
_LAST_PART_RE = re.compile(r"(\.[^.\[]+|\[\d+\])$")
_NUMBER_TEXT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def default_config() -> dict:
    """Every known parameter's default value, {name: value} (the 2019 NCSN MNIST setting)."""
    return {name: known.default for name, known in PARAMS.items()}


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

_NO_VALUE = object()


class SpecError(ValueError):
    """A search-space file is invalid. ``str(err)`` is one line: file[:line]: key: problem.

    Attributes: file, line (or None), key (dotted path such as params.sigma_end.loguniform),
    problem, value, fix.
    """

    def __init__(self, file: str, key: str, problem: str, value: Any = _NO_VALUE,
                 fix: str = "", line: int | None = None):
        self.file, self.key, self.problem, self.value, self.fix, self.line = (
            file, key, problem, value, fix, line)
        where = f"{file}:{line}" if line else file
        text = f"{where}: {key}: {problem}"
        if value is not _NO_VALUE:
            text += f", got {_fmt(value)}"
        if fix:
            text += f"; {fix}"
        super().__init__(" ".join(text.split()))


def _fmt(value: Any, limit: int = 80) -> str:
    """A short, YAML-like rendering of a value for an error line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_fmt(v, limit) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {_fmt(v, limit)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Ctx:
    """The file being parsed: its display name and the line of every dotted key."""

    def __init__(self, file: str, lines: dict[str, int] | None = None):
        self.file = file
        self.lines = lines or {}

    def error(self, key: str, problem: str, value: Any = _NO_VALUE, fix: str = "") -> SpecError:
        # The line of the key, or of its nearest parent that is in the file.
        probe, line = key, None
        while probe and line is None:
            line = self.lines.get(probe)
            parent = _LAST_PART_RE.sub("", probe)
            probe = parent if parent != probe else ""
        return SpecError(self.file, key, problem, value, fix, line)


# --------------------------------------------------------------------------------------------
# The validated spec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: form is uniform | loguniform | int | choice.

    low/high are the inclusive bounds of a range form (floats, or ints for ``int``); log is True
    for loguniform and for ``int`` with ``log: true``; choices is the tuple of a choice form.
    """

    name: str
    form: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """Draw this parameter from an ``optuna.Trial`` (or anything with its suggest_* API)."""
        if self.form == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.form == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        """Whether the space can propose ``value`` (same kind, inside the range or choices)."""
        if self.form == "choice":
            return any(type(c) is type(value) and c == value for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.form == "int" and value != int(value):
            return False
        return self.low <= value <= self.high

    def bounds(self) -> tuple[Any, Any]:
        """(smallest, largest) value the space can propose (choices must be ordered values)."""
        if self.form == "choice":
            return min(self.choices), max(self.choices)
        return self.low, self.high

    def to_dict(self) -> dict:
        """The file form, e.g. {"loguniform": [0.005, 0.1]}."""
        if self.form == "choice":
            return {"choice": list(self.choices)}
        if self.form == "int":
            return {"int": [self.low, self.high], "log": self.log}
        return {self.form: [self.low, self.high]}


@dataclass(frozen=True)
class SearcherSpec:
    algorithm: str = "tpe"
    seed: int = 0


@dataclass(frozen=True)
class SchedulerSpec:
    """ASHA over training iterations; grace_period in iterations."""

    name: str
    grace_period: int
    reduction_factor: float


@dataclass(frozen=True)
class Budget:
    """num_trials, max_concurrent; per trial: iterations (ASHA's max_t), eval_every (iterations
    between sample-quality evaluations), eval_samples (images sampled and scored per evaluation)."""

    num_trials: int
    max_concurrent: int
    iterations: int
    eval_every: int
    eval_samples: int


@dataclass(frozen=True)
class Resources:
    """Per trial: CPUs and (possibly fractional) GPUs."""

    cpu: float = 1
    gpu: float = 0


@dataclass(frozen=True)
class SamplerSearchSpec:
    """The sampler-only search on frozen checkpoints (optional ``sampler_search`` section).

    num_trials, max_concurrent: as in the budget. samples: ASHA's looks, the number of samples
    scored at each (strictly increasing, one whole growth factor, e.g. (250, 1000, 4000)).
    params: name -> ParamSpec searched on top of (or replacing) the spec's sampler params.
    preview: the overrides :meth:`SearchSpec.with_preview` applies here.
    """

    num_trials: int
    max_concurrent: int
    samples: tuple[int, ...]
    params: dict = field(default_factory=dict)
    preview: dict = field(default_factory=dict)

    @property
    def reduction_factor(self) -> int:
        """Growth factor between looks (ASHA's reduction factor); 1 with a single look."""
        return self.samples[1] // self.samples[0] if len(self.samples) > 1 else 1

    def to_dict(self) -> dict:
        out = {"num_trials": self.num_trials, "max_concurrent": self.max_concurrent,
               "samples": list(self.samples)}
        if self.params:
            out["params"] = {name: p.to_dict() for name, p in self.params.items()}
        if self.preview:
            out["preview"] = copy.deepcopy(self.preview)
        return out


@dataclass(frozen=True)
class SearchSpec:
    """A validated search-space file. Build with :func:`load_spec` or :func:`parse_spec`.

    params maps name -> ParamSpec in file order; fixed maps name -> value (not searched);
    preview holds the overrides :meth:`with_preview` applies; previewed says they were applied.
    source is the file path (or None). raw is the file's mapping, used to re-validate variants.
    """

    name: str
    dataset: str
    metric: str
    mode: str
    searcher: SearcherSpec
    scheduler: SchedulerSpec
    budget: Budget
    preview: dict
    params: dict
    fixed: dict
    resources: Resources
    sampler_search: SamplerSearchSpec | None = None
    source: str | None = field(default=None, compare=False)
    previewed: bool = False
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def file(self) -> str:
        return self.source or f"<{self.name}>"

    def with_preview(self) -> SearchSpec:
        """This spec with the preview overrides applied to budget, scheduler and fixed.

        The result has no preview section and ``previewed=True`` (also when there was nothing to
        apply); the combination was validated when the file was loaded.
        """
        if self.previewed:
            return self
        return _parse(_apply_preview(self.raw), _Ctx(self.file), self.source, previewed=True)

    def override(self, budget: Mapping | None = None, fixed: Mapping | None = None,
                 scheduler: Mapping | None = None, **changes: Any) -> SearchSpec:
        """A re-validated copy with command-line overrides; None values are ignored.

        budget: {budget key: value}; fixed: {parameter: value} (not a searched one); scheduler:
        {grace_period, reduction_factor}; keywords: name, seed and any budget key
        (``override(num_trials=3)`` equals ``override(budget={"num_trials": 3})``).
        A bad value raises SpecError naming its key (e.g. budget.num_trials); a keyword that is
        none of these raises TypeError.
        """
        raw = copy.deepcopy(self.raw)
        budget = dict(budget or {})
        for key, value in changes.items():
            if key in BUDGET_KEYS:
                budget[key] = value
            elif key not in ("name", "seed"):
                raise TypeError(f"override() got an unexpected keyword argument {key!r}")
        sections = (("budget", budget), ("fixed", fixed or {}), ("scheduler", scheduler or {}),
                    ("searcher", {"seed": changes.get("seed")}))
        for section, values in sections:
            values = {k: v for k, v in values.items() if v is not None}
            if values:
                raw[section] = dict(raw.get(section) or {}, **values)
        if changes.get("name") is not None:
            raw["name"] = changes["name"]
        return _parse(raw, _Ctx(f"{self.file} (with overrides)"), self.source,
                      previewed=self.previewed)

    def to_dict(self) -> dict:
        """The spec in file form with every default filled in (loads back to an equal spec)."""
        out = {
            "name": self.name,
            "dataset": self.dataset,
            "metric": self.metric,
            "mode": self.mode,
            "searcher": {"algorithm": self.searcher.algorithm, "seed": self.searcher.seed},
            "scheduler": {"name": self.scheduler.name,
                          "grace_period": self.scheduler.grace_period,
                          "reduction_factor": self.scheduler.reduction_factor},
            "budget": {k: getattr(self.budget, k) for k in BUDGET_KEYS},
            "params": {name: p.to_dict() for name, p in self.params.items()},
            "fixed": dict(self.fixed),
            "resources": {"cpu": self.resources.cpu, "gpu": self.resources.gpu},
        }
        if self.preview:
            out["preview"] = dict(self.preview)
        if self.sampler_search is not None:
            out["sampler_search"] = self.sampler_search.to_dict()
        return out


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def shipped_spaces() -> list[str]:
    """File names of the search spaces shipped in this package, sorted."""
    return sorted(p.name for p in SPACES_DIR.glob("*.yaml"))


def resolve_spec_path(name_or_path: str | Path) -> Path:
    """An existing path as given, else a shipped space by name (``sigmas`` or ``sigmas.yaml``).

    Raises SpecError when neither exists.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.name == str(name_or_path):  # a bare name, no directory part
        for candidate in (SPACES_DIR / path.name, SPACES_DIR / f"{path.name}.yaml"):
            if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
                return candidate
    raise SpecError(str(name_or_path), "(file)", "no such file or shipped search space",
                    fix=f"give a path or one of {', '.join(shipped_spaces())}")


def load_spec(name_or_path: str | Path) -> SearchSpec:
    """Load and validate a search-space file: a path, or a shipped name like ``sigmas.yaml``.

    Raises SpecError (a ValueError) with a one-line message naming the file, key and value.
    """
    path = resolve_spec_path(name_or_path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(file, "(file)", f"cannot read: {err}") from None
    return parse_spec_text(text, file=file, source=str(path.resolve()))


def parse_spec_text(text: str, file: str = "<string>", source: str | None = None) -> SearchSpec:
    """Validate a search-space document given as YAML text (see :func:`load_spec`)."""
    ctx = _Ctx(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(file, "(yaml)", f"not valid YAML: {problem}", line=line) from None
    if node is not None:
        _index_lines(node, "", ctx)
    return _parse(raw, ctx, source)


def parse_spec(raw: Any, file: str = "<dict>", source: str | None = None) -> SearchSpec:
    """Validate a search-space document already read into Python objects."""
    return _parse(raw, _Ctx(file), source)


def _index_lines(node: yaml.Node, prefix: str, ctx: _Ctx) -> None:
    """Record the line of every key and list item; reject keys that appear twice.

    yaml.safe_load silently keeps the last of two equal keys, which would hide a typo'd file.
    """
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            path = f"{prefix}.{key}" if prefix else key
            line = key_node.start_mark.line + 1
            if key in seen:
                raise SpecError(ctx.file, path, f"key appears twice (lines {seen[key]} and {line})",
                                fix="keep one", line=line)
            seen[key] = line
            ctx.lines[path] = line
            _index_lines(value_node, path, ctx)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            ctx.lines[path] = item.start_mark.line + 1
            _index_lines(item, path, ctx)


def _apply_preview(raw: Mapping) -> dict:
    """The raw document with its preview overrides moved into budget, scheduler and fixed."""
    out = copy.deepcopy(dict(raw))
    preview = out.pop("preview", None) or {}
    for key, value in preview.items():
        if key in BUDGET_KEYS:
            out.setdefault("budget", {})[key] = value
        elif key in SCHEDULER_PREVIEW_KEYS:
            out["scheduler"] = dict(out.get("scheduler") or {}, **{key: value})
        else:
            out.setdefault("fixed", {})[key] = value
    section = out.get("sampler_search")
    if isinstance(section, dict) and "preview" in section:
        section = dict(section)
        preview = dict(section.pop("preview") or {})
        if isinstance(preview.get("params"), dict):  # per name: the preview narrows some ranges
            preview["params"] = {**(section.get("params") or {}), **preview["params"]}
        out["sampler_search"] = {**section, **preview}
    return out


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _parse(raw: Any, ctx: _Ctx, source: str | None, previewed: bool = False) -> SearchSpec:
    if raw is None:
        raise ctx.error("(document)", "the file is empty", fix="see DESIGN.md for the format")
    if not isinstance(raw, dict):
        raise ctx.error("(document)", "must be a mapping of keys", raw)
    _check_keys(ctx, "", raw, _TOP_KEYS)
    for key in _REQUIRED_TOP:
        if key not in raw:
            raise ctx.error(key, "missing required key")

    name = raw["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ctx.error("name", "must be a folder name of letters, digits, '_', '.', '-'", name)
    dataset = raw.get("dataset", "mnist")
    if dataset not in DATASETS:
        raise ctx.error("dataset", f"unknown dataset (known: {', '.join(DATASETS)})", dataset)
    metric, mode = _parse_metric(ctx, raw)
    budget = _parse_budget(ctx, raw["budget"])
    searcher = _parse_searcher(ctx, raw.get("searcher"))
    scheduler = _parse_scheduler(ctx, raw.get("scheduler"), budget)
    params = _parse_params(ctx, raw["params"])
    fixed = _parse_fixed(ctx, raw.get("fixed"), params)
    resources = _parse_resources(ctx, raw.get("resources"))
    _check_sigma_order(ctx, params, fixed)
    sampler_search = _parse_sampler_search(ctx, raw.get("sampler_search"), params, previewed)
    preview = {}
    if not previewed:
        preview = _parse_preview(ctx, raw.get("preview"), fixed)

    spec = SearchSpec(name=name, dataset=dataset, metric=metric, mode=mode, searcher=searcher,
                      scheduler=scheduler, budget=budget, preview=preview, params=params,
                      fixed=fixed, resources=resources, sampler_search=sampler_search,
                      source=source, previewed=previewed,
                      raw=copy.deepcopy(raw))
    if preview:
        _check_preview_applies(ctx, spec)
    return spec


def _check_keys(ctx: _Ctx, prefix: str, mapping: dict, allowed) -> None:
    for key in mapping:
        if key not in allowed:
            path = f"{prefix}.{key}" if prefix else str(key)
            near = _near(str(key), allowed)
            raise ctx.error(path, "unknown key",
                            fix=f"did you mean {near!r}?" if near else
                            f"allowed: {', '.join(map(str, allowed))}")


def _near(word: str, options) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.7)
    return found[0] if found else None


def _mapping(ctx: _Ctx, key: str, value: Any, example: str) -> dict:
    if not isinstance(value, dict):
        raise ctx.error(key, "must be a mapping", value, fix=f"write e.g. {key}: {example}")
    return value


def _number(ctx: _Ctx, key: str, value: Any, kind: type = float) -> Any:
    """value as int (kind=int) or float; YAML's 1e-3-as-text and bools are rejected."""
    if isinstance(value, str) and _NUMBER_TEXT_RE.match(value.strip()):
        raise ctx.error(key, "is text, not a number", value,
                        fix="YAML reads 1e-3 as text: write 1.0e-3")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.error(key, "must be an integer", value)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ctx.error(key, "must be a finite number", value)
    return float(value)


def _positive_int(ctx: _Ctx, key: str, value: Any) -> int:
    value = _number(ctx, key, value, int)
    if value < 1:
        raise ctx.error(key, "must be a positive integer", value)
    return value


def _metric_modes() -> dict[str, str]:
    """{metric name: 'min' | 'max'} from the quality module, the one source of metric names."""
    # Imported here, not at the top: it brings torch, which plain validation does not need.
    from trainables.quality import METRICS, metric_mode

    return {name: metric_mode(name) for name in METRICS}


def _parse_metric(ctx: _Ctx, raw: dict) -> tuple[str, str]:
    modes = _metric_modes()
    metric = raw["metric"]
    if metric not in modes:
        raise ctx.error("metric", "unknown metric", metric, fix=f"one of {', '.join(modes)}")
    mode = raw.get("mode", modes[metric])
    if mode not in ("min", "max"):
        raise ctx.error("mode", "must be min or max", mode)
    if mode != modes[metric]:
        better = "lower" if modes[metric] == "min" else "higher"
        raise ctx.error("mode", f"{metric} is better when {better}", mode,
                        fix=f"write mode: {modes[metric]} or leave mode out")
    return metric, mode


def _parse_budget(ctx: _Ctx, raw: Any) -> Budget:
    raw = _mapping(ctx, "budget", raw, "{num_trials: 24, max_concurrent: 4, iterations: 30000, "
                   "eval_every: 2500, eval_samples: 1000}")
    _check_keys(ctx, "budget", raw, BUDGET_KEYS)
    for key in BUDGET_KEYS:
        if key not in raw:
            raise ctx.error(f"budget.{key}", "missing required key")
    values = {key: _positive_int(ctx, f"budget.{key}", raw[key]) for key in BUDGET_KEYS}
    if values["eval_every"] > values["iterations"]:
        raise ctx.error("budget.eval_every", "is larger than budget.iterations "
                        f"({values['iterations']}): no trial would ever be scored",
                        values["eval_every"], fix="make eval_every <= iterations")
    return Budget(**values)


def _parse_searcher(ctx: _Ctx, raw: Any) -> SearcherSpec:
    if raw is None:
        return SearcherSpec()
    raw = _mapping(ctx, "searcher", raw, "{algorithm: tpe, seed: 0}")
    _check_keys(ctx, "searcher", raw, ("algorithm", "seed"))
    algorithm = raw.get("algorithm", "tpe")
    if algorithm not in SEARCHERS:
        raise ctx.error("searcher.algorithm", "unknown algorithm", algorithm,
                        fix=f"one of {', '.join(SEARCHERS)}")
    seed = _number(ctx, "searcher.seed", raw.get("seed", 0), int)
    if seed < 0:
        raise ctx.error("searcher.seed", "must be >= 0", seed)
    return SearcherSpec(algorithm, seed)


def _parse_scheduler(ctx: _Ctx, raw: Any, budget: Budget) -> SchedulerSpec:
    raw = {} if raw is None else _mapping(
        ctx, "scheduler", raw, "{name: asha, grace_period: 1000, reduction_factor: 3}")
    _check_keys(ctx, "scheduler", raw, ("name", "grace_period", "reduction_factor"))
    name = raw.get("name", "asha")
    if name not in SCHEDULERS:
        raise ctx.error("scheduler.name", "unknown scheduler", name,
                        fix=f"one of {', '.join(SCHEDULERS)}")
    # Without a grace period, a trial is first compared at its first evaluation.
    grace = _positive_int(ctx, "scheduler.grace_period", raw.get("grace_period", budget.eval_every))
    if grace > budget.iterations:
        raise ctx.error("scheduler.grace_period", "is larger than budget.iterations "
                        f"({budget.iterations}): ASHA could never stop a trial", grace,
                        fix="make grace_period <= iterations")
    factor = _number(ctx, "scheduler.reduction_factor", raw.get("reduction_factor", 3))
    if factor <= 1:
        raise ctx.error("scheduler.reduction_factor", "must be > 1", factor)
    if factor == int(factor):
        factor = int(factor)
    return SchedulerSpec(name, grace, factor)


def _parse_resources(ctx: _Ctx, raw: Any) -> Resources:
    if raw is None:
        return Resources()
    raw = _mapping(ctx, "resources", raw, "{cpu: 1, gpu: 0.25}")
    _check_keys(ctx, "resources", raw, ("cpu", "gpu"))
    values = {}
    for key, default in (("cpu", 1), ("gpu", 0)):
        value = _number(ctx, f"resources.{key}", raw.get(key, default))
        if value < 0:
            raise ctx.error(f"resources.{key}", "must be >= 0", raw[key])
        values[key] = int(value) if value == int(value) else value
    if values["gpu"] > 1 and values["gpu"] != int(values["gpu"]):
        raise ctx.error("resources.gpu", "a share above one GPU must be a whole number",
                        values["gpu"], fix="use a fraction below 1 or a whole number")
    if values["cpu"] == 0 and values["gpu"] == 0:
        raise ctx.error("resources", "a trial needs some CPU or GPU", raw)
    return Resources(**values)


def _value(ctx: _Ctx, key: str, name: str, value: Any) -> Any:
    """A value for known parameter ``name``, type-checked, coerced (int -> float) and bounded."""
    known = PARAMS[name] if name in PARAMS else LADDER_PARAMS[name]
    if known.kind is bool:
        if not isinstance(value, bool):
            raise ctx.error(key, f"{name} must be true or false", value)
    elif known.kind is str:
        if not isinstance(value, str):
            raise ctx.error(key, f"{name} must be text", value)
    elif known.kind is int:
        value = _number(ctx, key, value, int)
    else:
        value = _number(ctx, key, value, float)
    problem = known.problem(value)
    if problem:
        raise ctx.error(key, f"{name} {problem} ({known.meaning})", value)
    return value


def _check_name(ctx: _Ctx, key: str, name: Any, known, problem: str, listing: str) -> None:
    """Refuse a parameter name outside ``known``, suggesting the nearest known one."""
    if name not in known:
        near = _near(str(name), known)
        raise ctx.error(key, problem, fix=f"did you mean {near!r}?" if near else
                        f"{listing}: {', '.join(known)}")


def _parse_params(ctx: _Ctx, raw: Any) -> dict[str, ParamSpec]:
    raw = _mapping(ctx, "params", raw, "{sigma_end: {loguniform: [0.005, 0.1]}}")
    if not raw:
        raise ctx.error("params", "no searched parameter",
                        fix="search at least one, e.g. sigma_end: {loguniform: [0.005, 0.1]}")
    params = {}
    for name, form in raw.items():
        key = f"params.{name}"
        _check_name(ctx, key, name, PARAMS, "unknown parameter", "known")
        params[name] = _parse_form(ctx, key, name, form)
    return params


def _parse_form(ctx: _Ctx, key: str, name: str, raw: Any) -> ParamSpec:
    known = PARAMS[name] if name in PARAMS else LADDER_PARAMS[name]
    example = "{choice: [...]}" if known.kind in (bool, str) or known.values else (
        "{int: [lo, hi], log: false}" if known.kind is int else "{loguniform: [lo, hi]}")
    raw = _mapping(ctx, key, raw, example)
    forms = [f for f in FORMS if f in raw]
    if len(forms) != 1:
        raise ctx.error(key, f"needs exactly one of {', '.join(FORMS)}", raw,
                        fix=f"write e.g. {name}: {example}")
    form = forms[0]
    _check_keys(ctx, key, raw, (form, "log") if form == "int" else (form,))
    if form == "choice":
        return _parse_choice(ctx, f"{key}.choice", name, raw["choice"])

    fkey = f"{key}.{form}"
    if known.values is not None or known.kind in (bool, str):
        raise ctx.error(fkey, f"{name} takes listed values, not a range", fix=f"write {example}")
    if (form == "int") != (known.kind is int):
        raise ctx.error(fkey, f"{name} is {'an integer' if known.kind is int else 'a real number'}"
                        f" and cannot use {form}", fix=f"write e.g. {name}: {example}")
    bounds = raw[form]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ctx.error(fkey, "must be a list [lo, hi]", bounds)
    lo, hi = (_number(ctx, f"{fkey}[{i}]", b, known.kind) for i, b in enumerate(bounds))
    if lo >= hi:
        raise ctx.error(fkey, "empty or inverted range (needs lo < hi)", bounds,
                        fix=f"write [{_fmt(min(lo, hi))}, {_fmt(max(lo, hi))}]" if lo != hi else
                        f"move {name} to fixed")
    log = form == "loguniform"
    if form == "loguniform" and lo <= 0:
        raise ctx.error(fkey, "loguniform needs lo > 0", bounds)
    if form == "int":
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise ctx.error(f"{key}.log", "must be true or false", log)
        if log and lo < 1:
            raise ctx.error(fkey, "a log int range needs lo >= 1", bounds)
    for i, bound in enumerate((lo, hi)):
        problem = known.problem(bound)
        if problem:
            raise ctx.error(f"{fkey}[{i}]", f"{name} {problem} ({known.meaning})", bound)
    return ParamSpec(name, form, lo, hi, log)


def _parse_choice(ctx: _Ctx, key: str, name: str, raw: Any) -> ParamSpec:
    if not isinstance(raw, list) or len(raw) < 2:
        raise ctx.error(key, "must be a list of at least two values", raw,
                        fix=f"or move {name} to fixed")
    values = []
    for i, item in enumerate(raw):
        value = _value(ctx, f"{key}[{i}]", name, item)
        if any(type(v) is type(value) and v == value for v in values):
            raise ctx.error(f"{key}[{i}]", "repeats an earlier choice", item)
        values.append(value)
    return ParamSpec(name, "choice", choices=tuple(values))


def _parse_fixed(ctx: _Ctx, raw: Any, params: dict) -> dict:
    if raw is None:
        return {}
    raw = _mapping(ctx, "fixed", raw, "{lr: 0.001, ngf: 64}")
    fixed = {}
    for name, value in raw.items():
        key = f"fixed.{name}"
        _check_name(ctx, key, name, PARAMS, "unknown parameter", "known")
        if name in params:
            raise ctx.error(key, f"{name} is also in params", value,
                            fix="keep it in params (searched) or in fixed, not both")
        fixed[name] = _value(ctx, key, name, value)
    return fixed


def _sigma_bounds(params: dict, fixed: dict, name: str) -> tuple[float, float, str]:
    """(lowest, highest) value a trial can get for sigma_begin/sigma_end, and the key that sets it."""
    if name in params:
        lo, hi = params[name].bounds()
        return lo, hi, f"params.{name}"
    value = fixed.get(name, PARAMS[name].default)
    return value, value, f"fixed.{name}" if name in fixed else f"(default) {name}"


def _check_sigma_order(ctx: _Ctx, params: dict, fixed: dict) -> None:
    """Reject a space that could launch sigma_begin <= sigma_end.

    Ranges are checked statically (sigma_begin's lowest > sigma_end's highest) rather than by a
    dynamic range drawn inside the space: a static space keeps TPE's per-parameter model honest
    and lets warm starts be checked against fixed bounds.
    """
    b_lo, b_hi, b_key = _sigma_bounds(params, fixed, "sigma_begin")
    e_lo, e_hi, e_key = _sigma_bounds(params, fixed, "sigma_end")
    if b_lo > e_hi:
        return
    key = b_key if b_key.startswith("params.") else e_key if e_key.startswith("params.") else b_key
    shown = lambda lo, hi: _fmt(lo) if lo == hi else f"[{_fmt(lo)}, {_fmt(hi)}]"  # noqa: E731
    raise ctx.error(key, f"could launch sigma_begin <= sigma_end: sigma_begin {shown(b_lo, b_hi)} "
                    f"({b_key}) vs sigma_end {shown(e_lo, e_hi)} ({e_key})",
                    fix="make every sigma_begin larger than every sigma_end")


def _parse_preview(ctx: _Ctx, raw: Any, fixed: dict) -> dict:
    if raw is None:
        return {}
    raw = _mapping(ctx, "preview", raw, "{num_trials: 6, iterations: 400}")
    allowed = BUDGET_KEYS + SCHEDULER_PREVIEW_KEYS + tuple(fixed)
    for key in raw:
        if key not in allowed:
            fix = (f"add {key} to fixed first" if key in PARAMS else
                   f"allowed: budget keys, {', '.join(SCHEDULER_PREVIEW_KEYS)} and names in fixed")
            raise ctx.error(f"preview.{key}", "is not a budget, scheduler or fixed key", fix=fix)
    return dict(raw)


def _check_preview_applies(ctx: _Ctx, spec: SearchSpec) -> None:
    """Validate the previewed spec now, naming the preview key that breaks it."""
    try:
        _parse(_apply_preview(spec.raw), _Ctx(ctx.file), spec.source, previewed=True)
    except SpecError as err:
        leaf = re.split(r"[.\[]", err.key.split(".", 1)[-1])[0]
        # The preview caused it: name the overriding key, or the preview as a whole when the
        # clash is with a key it left alone (e.g. the full eval_every above its iterations).
        key, fix = (f"preview.{leaf}", err.fix) if leaf in spec.preview else (
            "preview", f"{err.fix}; override {leaf} in preview too" if err.fix else
            f"override {leaf} in preview too")
        raise SpecError(ctx.file, key, f"with the preview applied, {err.key} {err.problem}",
                        err.value, fix, ctx.lines.get(key)) from None


def _parse_sampler_search(ctx: _Ctx, raw: Any, params: dict,
                          previewed: bool) -> SamplerSearchSpec | None:
    """The optional sampler_search section; its preview is checked applied, naming its own key."""
    if raw is None:
        return None
    raw = _mapping(ctx, "sampler_search", raw, "{num_trials: 24, max_concurrent: 4, "
                   "samples: [250, 1000, 4000]}")
    _check_keys(ctx, "sampler_search", raw, SAMPLER_SECTION_KEYS)
    for key in ("num_trials", "max_concurrent", "samples"):
        if key not in raw:
            raise ctx.error(f"sampler_search.{key}", "missing required key")
    values = {key: _positive_int(ctx, f"sampler_search.{key}", raw[key])
              for key in ("num_trials", "max_concurrent")}
    samples = _parse_samples(ctx, "sampler_search.samples", raw["samples"])
    searched = _parse_sampler_params(ctx, raw.get("params"), params)
    preview = {}
    if not previewed and raw.get("preview") is not None:
        preview = _mapping(ctx, "sampler_search.preview", raw["preview"], "{num_trials: 8, samples: [64, 256]}")
        _check_keys(ctx, "sampler_search.preview", preview, SAMPLER_PREVIEW_KEYS)
        for key, value in preview.items():
            pkey = f"sampler_search.preview.{key}"
            if key == "samples":
                _parse_samples(ctx, pkey, value)
            elif key == "params":
                _parse_sampler_params(ctx, value, params, pkey)
            else:
                _positive_int(ctx, pkey, value)
        preview = dict(preview)
    return SamplerSearchSpec(samples=samples, params=searched, preview=preview, **values)


def _parse_samples(ctx: _Ctx, key: str, raw: Any) -> tuple[int, ...]:
    """ASHA's looks in samples scored: increasing, and geometric with one whole factor, so that
    every look falls on one of ASHA's rungs (grace * factor^k)."""
    if not isinstance(raw, list) or not raw:
        raise ctx.error(key, "must be a non-empty list of sample counts", raw,
                        fix="write e.g. [250, 1000, 4000]")
    samples = tuple(_number(ctx, f"{key}[{i}]", v, int) for i, v in enumerate(raw))
    if samples[0] < MIN_SAMPLES:
        raise ctx.error(f"{key}[0]", f"must be at least {MIN_SAMPLES} (the k-NN quality metrics "
                        f"need more samples than neighbours)", samples[0])
    factor = samples[1] // samples[0] if len(samples) > 1 else 1
    if len(samples) > 1 and (factor < 2 or any(b != a * factor for a, b in zip(samples, samples[1:]))):
        raise ctx.error(key, "must grow by one whole factor >= 2 from look to look (ASHA's rungs)",
                        raw, fix="write e.g. [250, 1000, 4000]")
    return samples


def _parse_sampler_params(ctx: _Ctx, raw: Any, params: dict,
                          prefix: str = "sampler_search.params") -> dict[str, ParamSpec]:
    """Searched sampler and ladder params of the section; at least one sampler key overall."""
    raw = {} if raw is None else _mapping(ctx, prefix, raw, "{skip_levels: {int: [0, 3]}}")
    allowed = SAMPLER_KEYS + tuple(LADDER_PARAMS)
    searched = {}
    for name, form in raw.items():
        key = f"{prefix}.{name}"
        _check_name(ctx, key, name, allowed, "is not a sampler parameter", "allowed")
        searched[name] = _parse_form(ctx, key, name, form)
    if not searched and not any(name in params for name in SAMPLER_KEYS):
        raise ctx.error("sampler_search", "searches nothing: params holds none of "
                        f"{', '.join(SAMPLER_KEYS)} and sampler_search.params is empty",
                        fix="search e.g. sampler_search.params.step_lr")
    return searched


# --------------------------------------------------------------------------------------------
# Optuna space, warm starts and Tune settings
# --------------------------------------------------------------------------------------------


class OptunaSpace:
    """A picklable define-by-run space for Optuna / Ray's OptunaSearch(space=...).

    Calling it with an ``optuna.Trial`` suggests every searched parameter and returns the full
    trial config: {**searched values, **fixed, **constants}. It holds only plain data, so Ray
    can pickle the searcher state (a closure or lambda could not be restored).
    """

    def __init__(self, params: tuple[ParamSpec, ...], constants: dict):
        self.params = tuple(params)
        self.constants = dict(constants)

    def __call__(self, trial) -> dict:
        config = {p.name: p.suggest(trial) for p in self.params}
        config.update(self.constants)
        return config

    def __repr__(self) -> str:
        return f"OptunaSpace({[p.name for p in self.params]}, constants={sorted(self.constants)})"


def make_space_fn(spec: SearchSpec, constants: Mapping | None = None,
                  with_defaults: bool = False) -> OptunaSpace:
    """The define-by-run space of ``spec``: searched params, then fixed values and ``constants``.

    constants are extra config entries for every trial (e.g. the budget's eval_every); a
    constant may not shadow a searched parameter. with_defaults adds every known parameter the
    file leaves out, at its :data:`PARAMS` default, so each trial's config is complete.
    """
    constants = dict(constants or {})
    clash = sorted(set(constants) & set(spec.params))
    if clash:
        raise ValueError(f"constants {clash} would shadow searched parameters")
    base = {k: v for k, v in default_config().items() if k not in spec.params} if with_defaults else {}
    return OptunaSpace(tuple(spec.params.values()), {**base, **spec.fixed, **constants})


def make_sampler(spec: SearchSpec):
    """The Optuna sampler named by spec.searcher, seeded (TPESampler or RandomSampler)."""
    import optuna

    if spec.searcher.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=spec.searcher.seed)
    return optuna.samplers.TPESampler(seed=spec.searcher.seed)


@dataclass(frozen=True)
class WarmStart:
    """A published setting as a first trial.

    label: short name; setting: the full published setting; point: its values of the searched
    parameters (what Optuna enqueues); inside: whether every searched value lies in the space
    (only then is it proposed); reason: why not, or ""; differs: the spec's fixed values that
    differ from the setting, {name: (fixed value, setting's value)}: where non-empty, the trial
    reproduces the setting only in its searched parameters.
    """

    label: str
    setting: dict
    point: dict
    inside: bool
    reason: str = ""
    differs: dict = field(default_factory=dict)


def warm_starts(spec: SearchSpec) -> list[WarmStart]:
    """The 2019 NCSN MNIST setting and the NCSNv2 recommended setting, checked against spec.

    The NCSNv2 step size (technique 4) is computed for the spec's fixed n_steps_each where it
    fixes one (else for the trainable's default when absent, or the recommendation's own T when
    searched). A searched parameter the setting does not define is left to the sampler.
    """
    from trainables.recommend import NCSN_2019_MNIST, ncsnv2_mnist_setting

    if "n_steps_each" in spec.params:
        ncsnv2 = ncsnv2_mnist_setting()
    else:
        steps = spec.fixed.get("n_steps_each", PARAMS["n_steps_each"].default)
        ncsnv2 = ncsnv2_mnist_setting(n_steps_each=steps)
    return [_warm_start(spec, "ncsn_2019_mnist", dict(NCSN_2019_MNIST)),
            _warm_start(spec, "ncsnv2_mnist", dict(ncsnv2))]


def warm_start_points(spec: SearchSpec) -> list[tuple[str, dict]]:
    """(label, point) of each warm start inside the space, in order; the points are
    OptunaSearch's points_to_evaluate. :func:`warm_starts` also lists those left out and why."""
    return [(w.label, w.point) for w in warm_starts(spec) if w.inside]


def _warm_start(spec: SearchSpec, label: str, setting: dict) -> WarmStart:
    point, outside = {}, []
    for name, param in spec.params.items():
        if name not in setting:
            continue
        value = _as_kind(name, setting[name])
        point[name] = value
        if not param.contains(value):
            outside.append(f"{name}={_fmt(value)} outside {_fmt(param.to_dict())}")
    differs = {name: (value, setting[name]) for name, value in spec.fixed.items()
               if name in setting and _as_kind(name, setting[name]) != value}
    return WarmStart(label, setting, point, not outside, "; ".join(outside), differs)


def _as_kind(name: str, value: Any) -> Any:
    """A setting's value in the parameter's kind (1 -> 1.0 for a float, 101.0 -> 101 for an int)."""
    kind = PARAMS[name].kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value == int(value):
        return int(value)
    return value


def tune_settings(spec: SearchSpec, gpu_available: bool = True) -> dict:
    """What the Tuner needs, as plain data.

    Returns {"metric", "mode", "asha": ASHAScheduler kwargs (time_attr, max_t, grace_period,
    reduction_factor; metric and mode go in TuneConfig only), "num_trials", "max_concurrent",
    "resources": {"cpu": n, "gpu": share} (gpu dropped when gpu_available is False),
    "searcher": {"algorithm", "seed"}, "iterations", "eval_every", "eval_samples"}.
    """
    resources = {"cpu": spec.resources.cpu}
    if gpu_available and spec.resources.gpu:
        resources["gpu"] = spec.resources.gpu
    return {
        "metric": spec.metric,
        "mode": spec.mode,
        "asha": {
            "time_attr": TIME_ATTR,
            "max_t": spec.budget.iterations,
            "grace_period": spec.scheduler.grace_period,
            "reduction_factor": spec.scheduler.reduction_factor,
        },
        "num_trials": spec.budget.num_trials,
        "max_concurrent": spec.budget.max_concurrent,
        "resources": resources,
        "searcher": {"algorithm": spec.searcher.algorithm, "seed": spec.searcher.seed},
        "iterations": spec.budget.iterations,
        "eval_every": spec.budget.eval_every,
        "eval_samples": spec.budget.eval_samples,
    }


# --------------------------------------------------------------------------------------------
# Command line: python -m search_spaces.spec check FILE...
# --------------------------------------------------------------------------------------------


def _summary(spec: SearchSpec) -> str:
    b = spec.budget
    searched = ", ".join(spec.params)
    text = (f"{spec.name}: {spec.metric} ({spec.mode}), {spec.searcher.algorithm} seed "
            f"{spec.searcher.seed}, searching {searched}; {b.num_trials} trials x "
            f"{b.iterations} iterations, {b.max_concurrent} at a time")
    if spec.preview:
        p = spec.with_preview().budget
        text += f"; preview {p.num_trials} trials x {p.iterations} iterations"
    if spec.sampler_search is not None:
        s = spec.sampler_search
        text += (f"; sampler search (--checkpoint) {s.num_trials} trials scoring "
                 f"{'/'.join(map(str, s.samples))} samples")
    return text


def main(argv: list[str] | None = None) -> int:
    """``check FILE...``: print OK and a summary per file, or one error line and exit 2."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m search_spaces.spec",
                                     description="Validate search-space files.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate files (paths or shipped names)")
    check.add_argument("files", nargs="+")
    sub.add_parser("list", help="list the shipped search spaces")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in shipped_spaces():
            print(name)
        return 0
    status = 0
    for file in args.files:
        try:
            spec = load_spec(file)
        except SpecError as err:
            print(err, file=sys.stderr)
            status = 2
            continue
        print(f"OK {file}: {_summary(spec)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
