"""The arithmetic a network evaluation runs in: one of :data:`PRECISIONS`, chosen per noise level.

- ``fp32``: IEEE fp32 everywhere (TF32 off on CUDA).
- ``fp16``: every convolution in fp16 on tensor cores (inputs and weights rounded to fp16,
  fp32 accumulation, the output rounded to fp16 and widened back); the instance norms, ELUs,
  pooling, upsampling and the residual sums stay in fp32. Training under it scales the loss
  (:class:`torch.amp.GradScaler`): the DSM gradients of the small levels (~sigma / batch per
  pixel) are below fp16's normal range.
- ``bf16``: bf16 autocast (every op autocast lists in bf16: convolutions and their outputs, and
  the elementwise work on those outputs).
- ``tf32``: fp32 tensors, convolutions on TF32 tensor cores (CUDA: cuDNN's TF32 mode for the
  call). A CPU has no TF32; ``emulate_tf32`` rounds each convolution's input and weight to TF32's
  10 mantissa bits and convolves in fp32 (what the tensor core multiplies, accumulated in fp32),
  which is how the precision table predicts TF32 on a CPU.

Why the default is ``fp16`` at every level: :mod:`trainables.tools.precision` measures each design's
score error relative to the network's response to the noise, per level down to sigma 0.005.
bf16 rounds activations to 8 significant bits and its error grows as 1/sigma (63% at 0.005);
plain fp16 autocast (11 bits, but the residual stream and the norms' outputs rounded too) ends
just outside the 10% bound at ngf 64; fp16 convolutions with fp32 elementwise work, and TF32,
stay inside it at every level. Of those two, fp16 runs at twice TF32's tensor-core rate and moves
half the bytes per activation, so it is the default, and one precision for the whole ladder
means one forward pass per training step.

The model reads the convolution dtype through :func:`conv_dtype` (trainables/ncsn/model.py,
``Conv2d``); everything else here is a context manager around a network call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
# The precisions that run every convolution on tensor cores (on a GPU that has them).
TENSOR_CORE = ("tf32", "fp16", "bf16")
# The smallest sigma each reduced precision holds the accuracy bounds at by default
# (trainables.tools.precision's table): bf16 needs fp32 below 0.1; fp16 and TF32 hold to 0.005.
DEFAULT_MIN_SIGMA = {"bf16": 0.1, "fp16": 0.0, "tf32": 0.0}

_conv_dtype: torch.dtype | None = None


def conv_dtype() -> torch.dtype | None:
    """The dtype convolutions compute in now (None: their inputs' own)."""
    return _conv_dtype


@contextlib.contextmanager
def _convolutions_in(dtype: torch.dtype | None) -> Iterator[None]:
    global _conv_dtype
    before, _conv_dtype = _conv_dtype, dtype
    try:
        yield
    finally:
        _conv_dtype = before


def round_to_tf32(t: torch.Tensor, truncate: bool = False) -> torch.Tensor:
    """fp32 ``t`` with its mantissa cut to TF32's 10 bits: rounded to nearest (ties away from
    zero, as CUDA's ``cvt.rna.tf32.f32``) or, with ``truncate``, towards zero (a tensor core fed
    raw fp32 registers ignores the low 13 bits). Other dtypes are returned unchanged."""
    if t.dtype != torch.float32:
        return t
    bits = t.contiguous().view(torch.int32)
    if not truncate:
        bits = bits + 0x1000  # half of the lowest kept bit: round the magnitude half up
    return (bits & -0x2000).view(torch.float32).view(t.shape)


class _EmulatedTF32(TorchFunctionMode):
    """Rounds every convolution's input and weight to TF32, then convolves in fp32."""

    def __init__(self, truncate: bool = False):
        super().__init__()
        self.truncate = truncate

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.conv2d, F.conv2d) and len(args) >= 2:
            args = (round_to_tf32(args[0], self.truncate), round_to_tf32(args[1], self.truncate), *args[2:])
        return func(*args, **kwargs)


@contextlib.contextmanager
def _cuda_tf32() -> Iterator[None]:
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        before = conv.fp32_precision
        conv.fp32_precision = "tf32"
        try:
            yield
        finally:
            conv.fp32_precision = before
    else:
        before = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = before


def computing(
    precision: str,
    device_type: str,
    emulate_tf32: bool = False,
    truncate_tf32: bool = False,
    cache_enabled: bool | None = None,
) -> contextlib.AbstractContextManager:
    """The context a network call runs in to compute in ``precision`` on ``device_type``.
    ``cache_enabled``: autocast's weight-cast cache (off under CUDA-graph capture)."""
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    if precision == "fp16":
        return _convolutions_in(torch.float16)
    if precision == "tf32":
        if emulate_tf32:
            return _EmulatedTF32(truncate_tf32)
        return _cuda_tf32() if device_type == "cuda" else contextlib.nullcontext()
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"precision={precision!r}: must be one of {', '.join(PRECISIONS)}")


def needs_grad_scaler(precision: str) -> bool:
    """Whether training in ``precision`` scales the loss (fp16's narrow exponent range)."""
    return precision == "fp16"
