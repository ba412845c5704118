"""What a training step or a sampler evaluation asks of the device, counted on any machine: the
guards that catch a GPU-speed regression where no GPU is at hand.

- ``ops``: kernel-level (ATen) operations dispatched, views and other metadata-only operations
  left out. Eager on a GPU each is at least one kernel launch; the count is what a CUDA graph
  or inductor has to absorb, and what doubles when a batch is split by precision.
- ``host_syncs``: operations that read a device value back to the host (``.item()``, a
  data-dependent shape, ``torch.equal``): each stalls a GPU step and breaks CUDA-graph capture.
- ``flops`` by compute dtype, as ``torch.utils.flop_counter`` counts them (convolutions and
  matrix products, forward and backward): ``fp32_share`` is the part outside tensor-core
  precisions (fp16, bf16). On CUDA a ``tf32`` design computes fp32 tensors on TF32 tensor cores,
  which a dtype cannot show; the census is meant for the default design.

:func:`graph_breaks` traces a function with dynamo alone (no inductor: seconds on a CPU) and
returns its graph count and break reasons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ATen operations that copy a device value to the host, or whose output shape depends on data.
SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",
        "item",
        "is_nonzero",
        "equal",
        "nonzero",
        "masked_select",
        "unique",
        "_unique",
        "_unique2",
        "unique_consecutive",
        "unique_dim",
        "repeat_interleave",
        "allclose",
    }
)
TENSOR_CORE_DTYPES = (torch.float16, torch.bfloat16)


@dataclass
class Census:
    """Counts of one run under :class:`count_ops`."""

    ops: int = 0
    by_op: Counter = field(default_factory=Counter)
    host_syncs: Counter = field(default_factory=Counter)
    flops: Counter = field(default_factory=Counter)

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())

    @property
    def fp32_share(self) -> float:
        """Share of the FLOPs computed in a dtype without tensor cores (fp32, fp64)."""
        total = self.total_flops
        reduced = sum(v for k, v in self.flops.items() if k in {str(d) for d in TENSOR_CORE_DTYPES})
        return (total - reduced) / total if total else 0.0

    def record(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "host_syncs": sum(self.host_syncs.values()),
            "host_sync_ops": dict(self.host_syncs),
            "gflop": self.total_flops / 1e9,
            "gflop_by_dtype": {k: v / 1e9 for k, v in self.flops.items()},
            "fp32_flop_share": self.fp32_share,
            "top_ops": dict(self.by_op.most_common(8)),
        }


def _compute_dtype(func, args) -> str:
    """The dtype a FLOP-counted operation multiplies in: its first floating tensor argument's."""
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return str(a.dtype)
    return "unknown"


class count_ops(TorchDispatchMode):
    """``with count_ops() as census: ...`` fills ``census.census`` (a :class:`Census`)."""

    def __init__(self):
        super().__init__()
        from torch.utils.flop_counter import flop_registry

        self.census = Census()
        self._flop_registry = flop_registry

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        name = packet.__name__
        if name in SYNC_OPS:
            self.census.host_syncs[name] += 1
        if _is_view(func):
            return out
        self.census.ops += 1
        self.census.by_op[name] += 1
        formula = self._flop_registry.get(packet)
        if formula is not None:
            self.census.flops[_compute_dtype(func, args)] += int(formula(*args, **kwargs, out_val=out))
        return out


def _is_view(func) -> bool:
    """Whether ``func`` returns a view of an input (no kernel: ``view``, ``detach``, slicing);
    in-place operations alias their input too, but write it."""
    return any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)


def census_of(fn: Callable[[], Any]) -> Census:
    """The :class:`Census` of one call of ``fn``."""
    mode = count_ops()
    with mode:
        fn()
    return mode.census


def graph_breaks(fn: Callable, *args: Any) -> dict[str, Any]:
    """Dynamo's view of ``fn(*args)`` without compiling it: graphs, graph breaks and their reasons."""
    import torch._dynamo

    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args)
    return {
        "graphs": explained.graph_count,
        "graph_breaks": explained.graph_break_count,
        "reasons": [str(getattr(r, "reason", r))[:200] for r in explained.break_reasons],
        "ops": explained.op_count,
    }


# The designs the guards compare: what a GPU trial runs (fp16 at every level, one forward pass),
# the earlier GPU default (bf16 above sigma 0.1, IEEE fp32 below: a split batch) and fp32 (CPUs).
GUARD_DESIGNS = {"gpu default (fp16)": {"amp": "fp16"}, "bf16>=0.1 split": {"amp": "bf16"}, "fp32": {"amp": "off"}}


def step_guards(ngf: int = 16, batch: int = 8, num_levels: int = 10, sample_batch: int = 8) -> dict[str, Any]:
    """The guards on this machine's CPU, per design of :data:`GUARD_DESIGNS`: the census of one
    steady training step (the device work a captured step replays) and of one sampler network
    evaluation at the smallest level, and dynamo's graphs and breaks of the training forward
    under the GPU default's precision (what ``torch.compile(fullgraph=True)`` compiles)."""
    from trainables.ncsn.arithmetic import computing
    from trainables.ncsn.train import TrainConfig, Trainer

    images = torch.zeros(batch, 1, 28, 28, dtype=torch.uint8)
    out: dict[str, Any] = {"sizes": {"ngf": ngf, "batch": batch, "num_levels": num_levels}}
    for name, runtime in GUARD_DESIGNS.items():
        cfg = TrainConfig(ngf=ngf, batch_size=batch, num_levels=num_levels, sigma_end=0.005, device="cpu", **runtime)
        trainer = Trainer(cfg, images)
        trainer.train(1)  # lazily created state (Adam's moments, the loss scale) exists from here
        train = census_of(trainer._step_kernels).record()
        score = trainer.score_fn()
        x = torch.rand(sample_batch, 1, 28, 28)
        idx = torch.full((sample_batch,), num_levels - 1, dtype=torch.long)
        # no_grad, not the sampler's inference_mode: under inference_mode the dispatch mode sees
        # composite operations (conv2d, not convolution), which neither counts like the kernels
        # nor has a FLOP formula; the kernels launched are the same.
        with torch.no_grad():
            sample = census_of(lambda s=score, x=x, i=idx: s.at_level(num_levels - 1)(x, i)).record()
        out[name] = {"train_step": train, "sampler_eval": sample, "forward_passes": 1 if trainer._split is None else 2}
        if name.startswith("gpu default"):
            precision = trainer.runtime.precision

            def forward(x, level_idx, model=trainer.model, precision=precision):
                with computing(precision, "cpu"):
                    return model(x, level_idx)

            out["graph_breaks"] = graph_breaks(forward, x, idx)
    return out


def format_guards(guards: dict[str, Any]) -> str:
    """The guards as a table: per design, eager ops, host syncs and fp32 FLOP share of a training
    step and of a sampler evaluation, and the training forward's graph breaks."""
    sz = guards["sizes"]
    lines = [
        f"guards (CPU census, ngf {sz['ngf']}, batch {sz['batch']}, L {sz['num_levels']}): per training step | "
        f"per sampler evaluation",
        f"{'design':22s} {'fwd':>3s} {'ops':>6s} {'syncs':>5s} {'fp32 FLOPs':>10s} | {'ops':>6s} {'syncs':>5s} "
        f"{'fp32 FLOPs':>10s}",
    ]
    for name in GUARD_DESIGNS:
        g = guards[name]
        t, e = g["train_step"], g["sampler_eval"]
        lines.append(
            f"{name:22s} {g['forward_passes']:3d} {t['ops']:6d} {t['host_syncs']:5d} {t['fp32_flop_share']:10.0%} | "
            f"{e['ops']:6d} {e['host_syncs']:5d} {e['fp32_flop_share']:10.0%}"
        )
    b = guards["graph_breaks"]
    lines.append(f"training forward under dynamo: {b['graphs']} graph(s), {b['graph_breaks']} break(s), {b['ops']} ops")
    return "\n".join(lines)
