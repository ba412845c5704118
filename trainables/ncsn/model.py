"""The NCSN score network: a conditional RefineNet with dilated convolutions.

Architecture as described in Song & Ermon 2019 ("Generative Modeling by Estimating Gradients of
the Data Distribution", appendix B):

- every normalisation is a conditional instance norm++ (one row of gamma, alpha, beta per noise
  level), activation ELU;
- encoder: 3x3 conv, then four stages of two conditional residual blocks (stage 2 halves the
  resolution with conv + 2x2 mean pool, stages 3 and 4 use dilation 2 and 4 instead);
- decoder: four RefineNet blocks (residual conv units, multi-resolution fusion, chained residual
  pooling, output residual conv units), widths 2ngf, 2ngf, ngf, ngf;
- head: norm, ELU, 3x3 conv back to the image channels.

With ngf=64, one channel and ten levels this has exactly 7,638,657 parameters, 216,960 of which
are the per-level norm embeddings (10 levels x 3 x 7,232 normalised channels).

``noise_conditioning="sigma"`` is NCSNv2's technique 3 (Song & Ermon 2020): the norms are
unconditional instance norm++ layers (gamma, alpha, beta learned but shared by all levels) and the
network's output is divided by the level's sigma.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainables.ncsn.arithmetic import conv_dtype

NOISE_CONDITIONINGS = ("level", "sigma")


class _InstanceStats(torch.autograd.Function):
    """Per-image, per-channel mean and 1/sqrt(var + eps) over H, W (biased variance, as
    InstanceNorm2d), with a hand-written backward.

    Why not torch.var_mean: on CPU its Welford reduction (and its autograd graph) costs several
    times more than the rest of the layer. Here the forward is an exact two-pass (mean, then
    sum of squared deviations) and the backward is one fused multiply-add over x:
        dL/dx = dL/dmu / n + dL/drstd * (-rstd^3 / n) * (x - mu).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float):
        n = x.shape[2] * x.shape[3]
        mean = x.mean(dim=(2, 3), keepdim=True)
        centred = x - mean
        # mul + sum: on CPU linalg.vector_norm's generic path is several times slower.
        sq = (centred * centred).sum(dim=(2, 3), keepdim=True)
        rstd = torch.rsqrt(sq.div_(n).add_(eps))
        ctx.save_for_backward(x, mean, rstd)
        return mean, rstd

    @staticmethod
    def backward(ctx, g_mean: torch.Tensor, g_rstd: torch.Tensor):
        x, mean, rstd = ctx.saved_tensors
        n = x.shape[2] * x.shape[3]
        g_mean = torch.zeros_like(mean) if g_mean is None else g_mean
        g_rstd = torch.zeros_like(rstd) if g_rstd is None else g_rstd
        slope = g_rstd * rstd.pow(3) * (-1.0 / n)
        offset = g_mean / n - slope * mean
        return torch.addcmul(offset, x, slope), None


def _instance_stats(x: torch.Tensor, eps: float):
    return _InstanceStats.apply(x, eps)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """fp32 for half-precision tensors, unchanged otherwise (fp64 stays fp64 for gradcheck)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _norm_plus(x: torch.Tensor, gamma, alpha, beta, eps: float) -> torch.Tensor:
    """Instance norm++ with per-row or shared gamma, alpha, beta of shape [B or 1, C, 1, 1].

    out = gamma * ((x - mu) / s + alpha * mu_std) + beta, where mu_std are the channel means
    standardised across channels (unbiased variance, as the reference). Folded into one scale
    and shift of x, so the big tensor is read once; the statistics are [B, C, 1, 1] and cheap.
    """
    # Statistics in fp32 even under autocast: bf16 keeps 8 bits, too few for a variance.
    mean, rstd = _instance_stats(_wide(x), eps)
    m_var, m_mean = torch.var_mean(mean, dim=1, keepdim=True)
    mean_std = (mean - m_mean) * torch.rsqrt(m_var + eps)
    scale = gamma * rstd
    shift = beta + gamma * alpha * mean_std - scale * mean
    return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))


class CondInstanceNormPlus(nn.Module):
    """Conditional instance norm++: gamma_i, alpha_i, beta_i looked up from the level index.

    The embedding has one row of 3 * num_features per noise level: gamma and alpha start at
    N(1, 0.02), beta at zero.
    """

    def __init__(self, num_features: int, num_levels: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.embed = nn.Embedding(num_levels, 3 * num_features)
        with torch.no_grad():
            self.embed.weight[:, : 2 * num_features].normal_(1.0, 0.02)
            self.embed.weight[:, 2 * num_features :].zero_()

    def forward(self, x: torch.Tensor, level_idx: torch.Tensor) -> torch.Tensor:
        params = _wide(self.embed(level_idx))[:, :, None, None]
        gamma, alpha, beta = params.chunk(3, dim=1)
        return _norm_plus(x, gamma, alpha, beta, self.eps)


class InstanceNormPlus(nn.Module):
    """Unconditional instance norm++ (NCSNv2): gamma, alpha, beta shared by all noise levels."""

    def __init__(self, num_features: int, num_levels: int = 0, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.gamma = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor, level_idx: torch.Tensor) -> torch.Tensor:
        view = lambda p: _wide(p)[None, :, None, None]  # noqa: E731
        return _norm_plus(x, view(self.gamma), view(self.alpha), view(self.beta), self.eps)


class _ELUFunction(torch.autograd.Function):
    """ELU as max(x, exp(min(x, 0)) - 1), with the derivative taken from the output.

    Same function as F.elu (alpha 1) to within 6e-8 absolute; on an AVX2 CPU the vectorised exp
    makes it ~1.6x faster than F.elu's expm1. d/dx = 1 for x > 0 and exp(x) = y + 1 otherwise,
    i.e. min(y, 0) + 1, so only the output is kept for the backward pass.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        # One buffer, updated in place: a fresh tensor per step costs more than the arithmetic.
        y = x.clamp(max=0.0)
        y.exp_().sub_(1.0)
        torch.maximum(x, y, out=y)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * y.clamp(max=0.0).add_(1.0)


class ELU(nn.Module):
    """The network's activation (ELU, alpha = 1): one fused kernel on CUDA, the exp form on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            return _ELUFunction.apply(x)
        return F.elu(x)


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state-dict keys) that computes in the dtype
    :func:`trainables.ncsn.arithmetic.conv_dtype` names when one is set: input, weight and bias cast
    to it, the output widened back to the input's dtype, so only the convolution itself runs in
    reduced precision (the ``fp16`` design; trainables/ncsn/arithmetic.py says why)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = conv_dtype()
        if dtype is None or x.dtype == dtype:
            return super().forward(x)
        bias = None if self.bias is None else self.bias.to(dtype)
        return self._conv_forward(x.to(dtype), self.weight.to(dtype), bias).to(x.dtype)


def _conv3x3(c_in: int, c_out: int, bias: bool, dilation: int = 1) -> Conv2d:
    return Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """Convolution (same padding) followed by 2x2 mean pooling: halves H and W."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int):
        super().__init__()
        self.conv = Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(x), 2)


class CondResidualBlock(nn.Module):
    """norm, ELU, conv, norm, ELU, conv, plus a shortcut (identity where shapes allow).

    ``down`` marks the first block of a stage that changes width; at dilation 1 it halves the
    resolution (conv + mean pool, 1x1 conv + mean pool on the shortcut), at dilation > 1 it keeps
    the resolution and its shortcut is a dilated 3x3 conv, as in the reference model.
    """

    def __init__(self, c_in, c_out, num_levels, norm_cls, down=False, dilation=1):
        super().__init__()
        self.act = ELU()
        self.norm1 = norm_cls(c_in, num_levels)
        if down and dilation == 1:
            self.conv1 = _conv3x3(c_in, c_in, bias=True)
            self.norm2 = norm_cls(c_in, num_levels)
            self.conv2 = ConvMeanPool(c_in, c_out, 3)
            self.shortcut = ConvMeanPool(c_in, c_out, 1)
        else:
            mid = c_in if down else c_out
            self.conv1 = _conv3x3(c_in, mid, bias=True, dilation=dilation)
            self.norm2 = norm_cls(mid, num_levels)
            self.conv2 = _conv3x3(mid, c_out, bias=True, dilation=dilation)
            needs_shortcut = down or c_in != c_out
            if not needs_shortcut:
                self.shortcut = None
            elif dilation > 1:
                self.shortcut = _conv3x3(c_in, c_out, bias=True, dilation=dilation)
            else:
                self.shortcut = Conv2d(c_in, c_out, 1)

    def forward(self, x, level_idx):
        h = self.conv1(self.act(self.norm1(x, level_idx)))
        h = self.conv2(self.act(self.norm2(h, level_idx)))
        skip = x if self.shortcut is None else self.shortcut(x)
        # In place into the conv output (its backward does not need it): one buffer fewer.
        return h.add_(skip)


class CondRCUBlock(nn.Module):
    """Residual conv units: n_blocks x (n_stages x (norm, ELU, bias-free 3x3 conv)) + skip."""

    def __init__(self, features, n_blocks, n_stages, num_levels, norm_cls):
        super().__init__()
        self.act = ELU()
        self.blocks = nn.ModuleList()
        for _ in range(n_blocks):
            stages = nn.ModuleList()
            for _ in range(n_stages):
                stages.append(nn.ModuleList([norm_cls(features, num_levels), _conv3x3(features, features, bias=False)]))
            self.blocks.append(stages)

    def forward(self, x, level_idx):
        for stages in self.blocks:
            residual = x
            for norm, conv in stages:
                x = conv(self.act(norm(x, level_idx)))
            x = x.add_(residual)  # x is a conv output here, free to overwrite
        return x


class CondMSFBlock(nn.Module):
    """Multi-resolution fusion: norm + 3x3 conv per input, bilinear upsampling, sum."""

    def __init__(self, in_planes: Sequence[int], features, num_levels, norm_cls):
        super().__init__()
        self.norms = nn.ModuleList([norm_cls(c, num_levels) for c in in_planes])
        self.convs = nn.ModuleList([_conv3x3(c, features, bias=True) for c in in_planes])

    def forward(self, xs, level_idx, shape):
        out = None
        for x, norm, conv in zip(xs, self.norms, self.convs):
            h = conv(norm(x, level_idx))
            if h.shape[2:] != shape:
                h = F.interpolate(h, size=shape, mode="bilinear", align_corners=True)
            out = h if out is None else out.add_(h)
        return out


class CondCRPBlock(nn.Module):
    """Chained residual pooling: ELU, then n_stages x (norm, 5x5 avg pool, 3x3 conv) added back."""

    def __init__(self, features, n_stages, num_levels, norm_cls):
        super().__init__()
        self.act = ELU()
        self.norms = nn.ModuleList([norm_cls(features, num_levels) for _ in range(n_stages)])
        self.convs = nn.ModuleList([_conv3x3(features, features, bias=False) for _ in range(n_stages)])

    def forward(self, x, level_idx):
        x = self.act(x)
        path = x
        for norm, conv in zip(self.norms, self.convs):
            path = conv(F.avg_pool2d(norm(path, level_idx), 5, stride=1, padding=2))
            x = x + path
        return x


class CondRefineBlock(nn.Module):
    """One RefineNet block: RCUs on every input, fusion (unless single input), CRP, output RCUs."""

    def __init__(self, in_planes, features, num_levels, norm_cls, start=False, end=False):
        super().__init__()
        self.adapt = nn.ModuleList([CondRCUBlock(c, 2, 2, num_levels, norm_cls) for c in in_planes])
        self.msf = None if start else CondMSFBlock(in_planes, features, num_levels, norm_cls)
        self.crp = CondCRPBlock(features, 2, num_levels, norm_cls)
        self.output = CondRCUBlock(features, 3 if end else 1, 2, num_levels, norm_cls)

    def forward(self, xs, level_idx, shape):
        hs = [rcu(x, level_idx) for rcu, x in zip(self.adapt, xs)]
        h = hs[0] if self.msf is None else self.msf(hs, level_idx, shape)
        return self.output(self.crp(h, level_idx), level_idx)


class CondRefineNetDilated(nn.Module):
    """Score network s_theta(x, i) for NCSN.

    Args:
        ngf: base width (channels of stage 1); >= 8.
        num_levels: number of noise levels L (rows of the norm embeddings).
        channels: image channels.
        image_size: H = W of the input, even (28 for MNIST, or 32 when padded). The parameter
            count does not depend on it.
        noise_conditioning: "level" (NCSN: per-level conditional norms) or "sigma" (NCSNv2
            technique 3: unconditional norms, output divided by sigma_i).
        sigmas: 1-D tensor of the L noise levels, largest first; required for "sigma", ignored
            for "level".

    forward(x, level_idx): x float [B, C, H, W] in [0, 1] (noisy data), level_idx int64 [B] with
    0 = largest sigma. Returns the score estimate, float [B, C, H, W], in 1/[0,1]-units.
    """

    def __init__(
        self,
        ngf: int = 64,
        num_levels: int = 10,
        channels: int = 1,
        image_size: int = 28,
        noise_conditioning: str = "level",
        sigmas: torch.Tensor | Sequence[float] | None = None,
    ):
        super().__init__()
        if not isinstance(ngf, int) or ngf < 8:
            raise ValueError(f"ngf must be an integer >= 8, got {ngf!r}")
        if not isinstance(num_levels, int) or num_levels < 1:
            raise ValueError(f"num_levels must be a positive integer, got {num_levels!r}")
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if not isinstance(image_size, int) or image_size < 4 or image_size % 2:
            raise ValueError(f"image_size must be an even integer >= 4, got {image_size!r}")
        if noise_conditioning not in NOISE_CONDITIONINGS:
            raise ValueError(f"noise_conditioning must be one of {NOISE_CONDITIONINGS}, got {noise_conditioning!r}")
        self.ngf, self.num_levels, self.channels, self.image_size = ngf, num_levels, channels, image_size
        self.noise_conditioning = noise_conditioning

        if noise_conditioning == "sigma":
            if sigmas is None:
                raise ValueError("noise_conditioning='sigma' needs sigmas, got None")
            sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten()
            if sigmas.numel() != num_levels or not bool((sigmas > 0).all()):
                raise ValueError(f"sigmas must be {num_levels} positive values, got {sigmas.tolist()!r}")
            norm_cls = InstanceNormPlus
        else:
            norm_cls = CondInstanceNormPlus
            sigmas = None  # the level network knows its noise by index only
        # A buffer so that it follows .to(device) and is saved with the weights.
        self.register_buffer("sigmas", None if sigmas is None else sigmas.clone())

        L, w = num_levels, 2 * ngf
        self.begin_conv = Conv2d(channels, ngf, 3, padding=1)
        self.res1 = nn.ModuleList([CondResidualBlock(ngf, ngf, L, norm_cls) for _ in range(2)])
        self.res2 = nn.ModuleList(
            [CondResidualBlock(ngf, w, L, norm_cls, down=True), CondResidualBlock(w, w, L, norm_cls)]
        )
        self.res3 = nn.ModuleList(
            [
                CondResidualBlock(w, w, L, norm_cls, down=True, dilation=2),
                CondResidualBlock(w, w, L, norm_cls, dilation=2),
            ]
        )
        self.res4 = nn.ModuleList(
            [
                CondResidualBlock(w, w, L, norm_cls, down=True, dilation=4),
                CondResidualBlock(w, w, L, norm_cls, dilation=4),
            ]
        )
        self.refine1 = CondRefineBlock([w], w, L, norm_cls, start=True)
        self.refine2 = CondRefineBlock([w, w], w, L, norm_cls)
        self.refine3 = CondRefineBlock([w, w], ngf, L, norm_cls)
        self.refine4 = CondRefineBlock([ngf, ngf], ngf, L, norm_cls, end=True)
        self.end_norm = norm_cls(ngf, L)
        self.act = ELU()
        self.end_conv = Conv2d(ngf, channels, 3, padding=1)

    @staticmethod
    def _stage(blocks, h, level_idx):
        for block in blocks:
            h = block(h, level_idx)
        return h

    def forward(self, x: torch.Tensor, level_idx: torch.Tensor) -> torch.Tensor:
        h = self.begin_conv(2.0 * x - 1.0)
        layer1 = self._stage(self.res1, h, level_idx)
        layer2 = self._stage(self.res2, layer1, level_idx)
        layer3 = self._stage(self.res3, layer2, level_idx)
        layer4 = self._stage(self.res4, layer3, level_idx)
        ref = self.refine1([layer4], level_idx, layer4.shape[2:])
        ref = self.refine2([layer3, ref], level_idx, layer3.shape[2:])
        ref = self.refine3([layer2, ref], level_idx, layer2.shape[2:])
        ref = self.refine4([layer1, ref], level_idx, layer1.shape[2:])
        out = self.end_conv(self.act(self.end_norm(ref, level_idx)))
        if self.noise_conditioning == "sigma":
            # Divide in fp32: under autocast `out` may be bf16, and 1/sigma spans 1..100+.
            out = out.float() / self.sigmas[level_idx].view(-1, *([1] * (out.dim() - 1)))
        return out


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (scalars)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def embedding_parameters(model: nn.Module) -> int:
    """Parameters in the per-level norm embeddings (zero for noise_conditioning='sigma')."""
    return sum(m.embed.weight.numel() for m in model.modules() if isinstance(m, CondInstanceNormPlus))
