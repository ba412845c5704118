"""How a trial runs: its device (from Ray's assignment), the precision policy per noise level, torch.compile
and CUDA graphs, with the per-device meaning of the runtime settings' ``"auto"`` values.

The settings themselves (names, kinds, allowed values) are in :data:`trainables.contract.params.SETTINGS`
(scope ``runtime``); this module turns a :class:`trainables.ncsn.train.TrainConfig` into a resolved
:class:`Runtime` and provides the pieces the trainer and the sampler call.

Defaults (``"auto"``) per device, and why:

- **CUDA.** ``amp`` = ``fp16`` where the GPU has fp16 tensor cores (compute capability 7.0 and
  up), fp32 elsewhere; ``amp_min_sigma`` = the precision's own floor (fp16 and TF32: every level;
  bf16: sigma >= 0.1, fp32 below). Which arithmetic each precision means, and the measurements
  behind the choice, are in :mod:`trainables.ncsn.arithmetic` and ``python -m trainables.tools.precision``:
  fp16 convolutions with fp32 elementwise work keep the score error within the bound at every
  level down to sigma 0.005, so the whole ladder runs on tensor cores and a training step is one
  forward pass. ``cuda_graphs`` = on: the steady training step (forward, backward, gradient
  scaling and clipping, Adam, EMA, loss accumulators) is captured once and replayed as one CUDA
  graph, and each sampler network evaluation too, so the ~5,700 small kernels of an eager step
  cost no launch each. ``compile`` = off: the one measurement of inductor on an H200 was a
  383 s first warm-up (training and sampling graphs), and a search pays a compile per new ladder
  length and batch size, where a captured eager step warms up in seconds; ``compile: default``
  (inductor fuses the norms' elementwise work; the captured step then replays the compiled
  kernels) stays an option, and the GPU check measures both. ``channels_last`` = on (NHWC is the
  layout cuDNN's tensor-core convolutions use).
- **CPU.** ``amp`` = off: reduced precision changes the numbers, and CPUs without AVX512-BF16/AMX
  emulate it, tens of times slower (with native bf16, measured on this project's 2-core
  AVX512-BF16 machine at ngf 32, batch 64: the old per-level bf16 design 1.16x the fp32 step).
  ``compile`` = off: inductor took 5.3 minutes to compile that training step on the shared 2
  cores, for steps 1.23x faster afterwards (CPU time), while a CPU preview trial trains for a
  minute or two; set ``compile: default`` for long CPU trials. ``cuda_graphs`` = off (CUDA only).
  ``channels_last`` = on: the whole step 1.2x (CPU time) to 1.6x (wall) faster at ngf 32, batch
  64 (``platform/benchmark.py --variants``).

A design with a floor above the smallest sigma (``amp: bf16``, or any ``amp_min_sigma`` the user
sets) runs the levels below it in IEEE fp32: in training the batch is split by level into a
reduced-precision part and an fp32 part of fixed sizes (two forward passes), in sampling the
precision is chosen per level.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from trainables.ncsn.arithmetic import DEFAULT_MIN_SIGMA, computing
from trainables.ncsn.timing import synchronize

# Environment variable inductor reads for its on-disk caches (FX graphs, AOTAutograd, kernels).
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
# Compile modes that capture CUDA graphs themselves, and their graph-free twins: the sampler
# replays its own graphs (CudaGraphForward) around a graph-free compilation.
_GRAPH_FREE = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}
# Dynamo's per-function limit on specialisations: the sampling entry holds (model, EMA) x
# (amp, fp32) x batch sizes; past the limit dynamo silently falls back to eager.
_RECOMPILE_LIMIT = 64

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------ devices
def cuda_problem() -> str | None:
    """Why CUDA cannot be used in this process, in the driver's own words; None when it can."""
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    try:
        torch.cuda.init()  # raises with the reason: no driver, a driver too old for this wheel, ...
    except Exception as err:  # any failure here means: not usable, and this is why
        return f"{type(err).__name__}: {' '.join(str(err).split())}"
    if torch.cuda.device_count() < 1:
        return "no CUDA device is visible"
    return None


def trial_device(
    requested: str,
    gpu_ids: Sequence[Any],
    problem: Callable[[], str | None] = cuda_problem,
    count: Callable[[], int] = torch.cuda.device_count,
) -> str:
    """The device of a Ray trial that asked for ``requested`` and was assigned ``gpu_ids``
    (``ray.get_gpu_ids()``).

    With GPUs assigned, the trial uses exactly those (Ray sets CUDA_VISIBLE_DEVICES to them, so
    they are ``cuda:0`` .. ``cuda:n-1`` here) and fails at once, naming the ids and the reason,
    when CUDA is not usable in this process (``problem`` says why, ``count`` gives the visible
    devices; both replaceable in tests). With none assigned it runs on the CPU and never
    touches CUDA, even on a GPU node (Ray does not hide the GPUs from a task that asked for none).
    ``RuntimeError`` for an assignment that cannot run; ``ValueError`` for a request that
    contradicts it.
    """
    ids = [str(i) for i in gpu_ids]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not ids:
        if requested.startswith("cuda"):
            raise ValueError(
                f"device={requested!r}: this trial was given no GPU; give trials a GPU "
                f"(resources.gpu or resources.trials_per_gpu) or use device: auto"
            )
        return "cpu"
    if requested == "cpu":
        raise ValueError(f"device='cpu': Ray assigned GPU(s) {ids} to this trial; use device: auto or resources.gpu: 0")
    reason = problem()
    if reason is not None:
        raise RuntimeError(
            f"Ray assigned GPU(s) {ids} to this trial (CUDA_VISIBLE_DEVICES={visible!r}) but CUDA is not usable "
            f"in this process: {reason}. Refusing to train on the CPU instead; fix the node's driver/torch build "
            f"or run the search without GPUs"
        )
    index = 0 if requested in ("auto", "cuda") else int(requested.split(":", 1)[1])
    usable = min(len(ids), count())
    if index >= usable:
        raise ValueError(
            f"device={requested!r}: this trial holds GPU(s) {ids}, visible here as cuda:0..cuda:{usable - 1}"
        )
    return f"cuda:{index}"


def local_device(requested: str) -> torch.device:
    """The device outside Ray: 'auto' is CUDA when usable, else the CPU; 'cuda...' without
    usable CUDA is a ValueError giving the reason."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda"):
        reason = cuda_problem()
        if reason is not None:
            raise ValueError(f"TrainConfig.device={requested!r}: CUDA is not usable on this machine ({reason})")
    return torch.device(requested)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA: compute capability >= 8.0)."""
    if device.type != "cuda":
        return False
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def fp16_tensor_cores(device: torch.device) -> bool:
    """Whether ``device`` has fp16 tensor cores (CUDA compute capability >= 7.0)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (7, 0)


def tf32_tensor_cores(device: torch.device) -> bool:
    """Whether ``device`` has TF32 tensor cores (CUDA compute capability >= 8.0)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


# ----------------------------------------------------------------------------- the settings
@dataclass(frozen=True)
class Runtime:
    """The runtime settings resolved for one device: ``amp`` (the reduced precision of the levels
    with sigma >= ``amp_min_sigma``: "bf16", "fp16" or "tf32" of trainables.ncsn.arithmetic, or "off"),
    the torch.compile modes of training and sampling (None: eager), ``channels_last`` and
    ``cuda_graphs`` (the captured training step and the sampler's graph replay)."""

    device: str
    amp: str
    amp_min_sigma: float
    compile_train: str | None
    compile_sample: str | None
    channels_last: bool
    cuda_graphs: bool

    @property
    def captured_training(self) -> bool:
        """Whether the steady training step is one CUDA graph of ours (not where the training
        compile mode captures its own: reduce-overhead, max-autotune)."""
        return self.cuda_graphs and self.compile_train not in _GRAPH_FREE

    @property
    def precision(self) -> str:
        """The amp levels' precision in trainables.ncsn.arithmetic.PRECISIONS ("fp32" for amp off)."""
        return "fp32" if self.amp == "off" else self.amp

    def record(self) -> dict[str, Any]:
        """Plain values for metrics.json and the report (``"off"`` for an eager path)."""
        out = asdict(self)
        out["compile_train"] = self.compile_train or "off"
        out["compile_sample"] = self.compile_sample or "off"
        out["cuda_graphs"] = "on" if self.cuda_graphs else "off"
        return out


def protocol_precision(runtime: Runtime, amp_levels: int) -> dict | None:
    """What :func:`trainables.scoring.quality.point_metrics` records in the protocol about the samples'
    arithmetic: None for fp32 (nothing changes), else the amp design (which precision, above
    which sigma)."""
    if runtime.amp == "off" or amp_levels == 0:
        return None
    return {"amp": runtime.amp, "amp_min_sigma": runtime.amp_min_sigma}


def resolve(config: Any, device: torch.device) -> Runtime:
    """``config``'s runtime settings (a TrainConfig) for ``device``: the ``"auto"`` values
    replaced by the device's defaults (module docstring). ``ValueError`` ``name=value: why`` for
    a setting the device cannot honour."""
    on_cuda = device.type == "cuda"
    amp = config.amp
    if amp == "auto":
        amp = "fp16" if fp16_tensor_cores(device) else "off"
    elif on_cuda and amp == "bf16" and not native_bf16(device):
        raise ValueError(
            f"amp='bf16': {torch.cuda.get_device_name(device)} has no native bf16 (emulated bf16 is slower "
            f"than fp32); use amp: fp16, off or auto"
        )
    elif on_cuda and amp == "tf32" and not tf32_tensor_cores(device):
        raise ValueError(
            f"amp='tf32': {torch.cuda.get_device_name(device)} has no TF32 tensor cores (compute capability "
            f"8.0 and up); use amp: fp16, off or auto"
        )
    min_sigma = config.amp_min_sigma
    if min_sigma is None:
        min_sigma = DEFAULT_MIN_SIGMA.get(amp, 0.0)
    mode = config.compile
    if mode == "auto":
        mode = "off"  # on CUDA too: the captured eager step needs no compile (module docstring)
    if config.cuda_graphs == "on" and not on_cuda:
        raise ValueError(f"cuda_graphs='on': needs a CUDA device, this trial runs on {device}; use auto or off")
    graphs = on_cuda and config.cuda_graphs in ("auto", "on")
    train_mode = None if mode == "off" else mode
    # The sampler never uses inductor's own CUDA graphs: where graphs are on it replays its own
    # (CudaGraphForward); their outputs would be overwritten under the chain otherwise.
    sample_mode = _GRAPH_FREE.get(train_mode, train_mode) if train_mode else None
    return Runtime(str(device), amp, float(min_sigma), train_mode, sample_mode, config.channels_last, graphs)


def set_fp32_precision(device: torch.device) -> None:
    """On CUDA: fp32 convolutions and matmuls in true fp32 (TF32 only where a level's precision
    is tf32, inside :func:`trainables.ncsn.arithmetic.computing`), and cuDNN's autotuner on (fixed
    shapes)."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


# -------------------------------------------------------------------------- precision policy
def amp_levels(sigmas: Sequence[float], amp: str, amp_min_sigma: float) -> int:
    """How many of the largest levels (a prefix of the ladder, largest first) run in the reduced
    precision ``amp`` ("off": none)."""
    if amp == "off":
        return 0
    return sum(1 for s in sigmas if s >= amp_min_sigma)


@dataclass(frozen=True)
class BatchSplit:
    """A training batch under amp with both precisions in the ladder: its first ``n_amp``
    examples draw their level from the amp levels ``0..k-1``, the rest from the fp32 levels,
    and the per-example weights make the batch loss the uniform-level mean it estimates without
    the split (stratified sampling: the same expectation, a smaller variance).

    Fixed sizes keep every step free of host syncs and of shape changes (static compilation)."""

    n_amp: int
    k: int
    num_levels: int
    batch: int

    @property
    def weights(self) -> tuple[float, float]:
        """(weight of an amp-part example, of an fp32-part example): level share / batch share."""
        n_fp32, k_fp32 = self.batch - self.n_amp, self.num_levels - self.k
        return (self.k / self.num_levels) * self.batch / self.n_amp, (k_fp32 / self.num_levels) * self.batch / n_fp32


def batch_split(batch: int, k: int, num_levels: int) -> BatchSplit | None:
    """The split of a batch of ``batch`` examples when ``k`` of ``num_levels`` levels are amp;
    None when one precision serves every level (k = 0 or k = L) or the batch has one example
    (it then runs in fp32 whatever its level)."""
    if k <= 0 or k >= num_levels or batch < 2:
        return None
    n = min(batch - 1, max(1, round(batch * k / num_levels)))
    return BatchSplit(n, k, num_levels, batch)


# ------------------------------------------------------------------------------- compilation
def use_compile_cache(folder: str | os.PathLike | None) -> None:
    """Point inductor's on-disk caches at ``folder`` (shared by every trial of a search, so the
    second trial loads what the first compiled); call before the first compilation."""
    if folder is None:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    os.environ[INDUCTOR_CACHE_ENV] = str(Path(folder).resolve())


def _dynamo_limits() -> None:
    import torch._dynamo.config as dynamo_config

    if dynamo_config.recompile_limit < _RECOMPILE_LIMIT:
        dynamo_config.recompile_limit = _RECOMPILE_LIMIT


def compile_for_training(module: torch.nn.Module, mode: str) -> Callable:
    """``module`` compiled for training, static shapes, one graph (``fullgraph``: a graph break is
    an error, not a silent fall back to eager between graphs). Its own entry function, so its
    dynamo cache is not the sampler's (one shared cache turned shapes dynamic and filled the
    limit)."""
    _dynamo_limits()

    def training_forward(x, level_idx):
        return module(x, level_idx)

    return torch.compile(training_forward, mode=None if mode == "default" else mode, dynamic=False, fullgraph=True)


def compile_for_sampling(module: torch.nn.Module, mode: str) -> Callable:
    """``module`` compiled for sampling, static shapes, with its own dynamo cache."""
    _dynamo_limits()

    def sampling_forward(x, level_idx):
        return module(x, level_idx)

    return torch.compile(sampling_forward, mode=None if mode == "default" else mode, dynamic=False, fullgraph=True)


def compile_counters() -> dict[str, int]:
    """Inductor's FX-graph and AOTAutograd cache hits and misses so far in this process."""
    from torch._dynamo.utils import counters

    keys = ("fxgraph_cache_hit", "fxgraph_cache_miss")
    out = {k: int(counters["inductor"][k]) for k in keys}
    out.update({f"autograd_{k}": int(v) for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")})
    return out


# ------------------------------------------------------------------------------- the forward
class PrecisionForward:
    """One network call at one precision (trainables.ncsn.arithmetic.PRECISIONS): channels_last
    input, the precision's context around the call, fp32 output. ``cache_enabled`` is off under
    CUDA-graph capture (autocast's weight cast cache must not outlive a capture)."""

    def __init__(self, fn: Callable, device: torch.device, precision: str, channels_last: bool, graphed: bool = False):
        self.fn, self.device_type, self.precision, self.channels_last = fn, device.type, precision, channels_last
        self.cache_enabled = False if graphed else None

    def __call__(self, x: torch.Tensor, level_idx: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with computing(self.precision, self.device_type, cache_enabled=self.cache_enabled):
            return self.fn(x, level_idx).float()


class CudaGraphForward:
    """Replays ``fn(x, level_idx)`` as a CUDA graph, one per input shape: after a warm-up on a
    side stream, the call is captured with static input buffers; later calls copy the inputs in,
    replay, and return a copy of the static output (the next replay overwrites it). Graphs of one
    instance share a memory pool (they never run at the same time)."""

    def __init__(self, fn: Callable, pool: Any = None, warmup: int = 3):
        self.fn, self.pool, self.warmup = fn, pool, warmup
        self.graphs: dict[tuple, tuple] = {}

    def __call__(self, x: torch.Tensor, level_idx: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype, tuple(level_idx.shape))
        with torch.inference_mode():
            if key not in self.graphs:
                self.graphs[key] = self._capture(x, level_idx)
            graph, static_x, static_idx, out = self.graphs[key]
            static_x.copy_(x)
            static_idx.copy_(level_idx)
            graph.replay()
            return out.clone()

    def _capture(self, x: torch.Tensor, level_idx: torch.Tensor) -> tuple:
        static_x, static_idx = x.clone(), level_idx.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):  # cuDNN autotuning and lazy inits happen outside the capture
                self.fn(static_x, static_idx)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self.fn(static_x, static_idx)
        self.pool = graph.pool()
        return graph, static_x, static_idx, out


class LevelScore:
    """The sampler's score s(x, i) with the precision chosen per level: the amp precision for
    the ``k`` largest levels (``amp``), fp32 for the rest (``fp32``).

    ``at_level(i)`` returns the callable for level i without reading anything back from the
    device (:func:`trainables.ncsn.langevin.anneal_langevin` uses it: a chain visits one level at a
    time); calling the object itself with mixed levels computes both precisions and picks per
    example (correct for any batch, twice the work, for tests and one-off calls).
    """

    def __init__(self, amp: ScoreFn, fp32: ScoreFn, k: int, num_levels: int, needs_warmup: bool = False):
        self.amp, self.fp32, self.k, self.num_levels = amp, fp32, k, num_levels
        self.needs_warmup = needs_warmup
        self._warm: set[tuple] = set()

    def warm(self, x: torch.Tensor) -> float:
        """Compile / capture / autotune for batches shaped like ``x`` (each precision the ladder
        uses, once per shape) so that timed sampling leaves it out; returns the seconds spent
        (0 when there is nothing to warm: eager on a CPU, or a shape seen before)."""
        key = tuple(x.shape)
        if not self.needs_warmup or key in self._warm:
            return 0.0
        import time

        start = time.perf_counter()
        with torch.inference_mode():
            for level in sorted({0, self.num_levels - 1}):
                self.at_level(level)(x, torch.full((x.shape[0],), level, dtype=torch.long, device=x.device))
        synchronize(x.device)
        self._warm.add(key)
        return time.perf_counter() - start

    def at_level(self, i: int) -> ScoreFn:
        return self.amp if i < self.k else self.fp32

    def __call__(self, x: torch.Tensor, level_idx: torch.Tensor) -> torch.Tensor:
        if self.k <= 0:
            return self.fp32(x, level_idx)
        if self.k >= self.num_levels:
            return self.amp(x, level_idx)
        pick = (level_idx < self.k).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(pick, self.amp(x, level_idx), self.fp32(x, level_idx))


def sampler_score(module: torch.nn.Module, runtime: Runtime, k: int, num_levels: int) -> LevelScore:
    """The sampler's :class:`LevelScore` for ``module`` under ``runtime``: compiled with the
    sampling mode where compile is on, each precision the ladder uses replayed as a CUDA graph
    where ``cuda_graphs`` is on (sharing one memory pool)."""
    device = torch.device(runtime.device)
    fn = module if runtime.compile_sample is None else compile_for_sampling(module, runtime.compile_sample)
    pool = torch.cuda.graph_pool_handle() if runtime.cuda_graphs else None

    def part(precision: str) -> ScoreFn:
        forward = PrecisionForward(fn, device, precision, runtime.channels_last, graphed=runtime.cuda_graphs)
        return CudaGraphForward(forward, pool=pool) if runtime.cuda_graphs else forward

    amp = part(runtime.precision) if k > 0 else None
    fp32 = part("fp32") if k < num_levels else amp
    needs_warmup = runtime.compile_sample is not None or runtime.cuda_graphs or device.type == "cuda"
    return LevelScore(amp if amp is not None else fp32, fp32, k, num_levels, needs_warmup)


@contextlib.contextmanager
def sync_debug(mode: str) -> Any:
    """``torch.cuda.set_sync_debug_mode(mode)`` inside the block ("error": a host sync raises)."""
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)
