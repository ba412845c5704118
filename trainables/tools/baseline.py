"""The seed-style reference implementation: the yardstick of :mod:`trainables.tools.benchmark`.

The same network as :class:`trainables.ncsn.model.CondRefineNetDilated` (same architecture, same
parameters, so the same weights load into both), computed and fed the way the seed code (the
reference NCSN implementation this project started from) wrote it:

- the conditional instance norm++ as InstanceNorm2d plus the channel means standardised with
  ``torch.mean`` / ``torch.var`` (:class:`SeedCondInstanceNormPlus`), the activation ``nn.ELU``
  (:class:`SeedELU`);
- fp32 eager, contiguous tensors;
- a torchvision-style Dataset (PIL image + ``ToTensor`` per item) behind a DataLoader with two
  workers, dequantised per batch, a ``.item()`` log line per training step;
- the loss as the seed's ``anneal_dsm_score_estimation`` (:func:`seed_dsm_loss`), sampling as its
  ``anneal_Langevin_dynamics`` under ``torch.no_grad`` with per-step ``.item()`` logging.

Mathematically it computes what :mod:`trainables.ncsn.model`, :mod:`trainables.ncsn.loss` and
:mod:`trainables.ncsn.langevin` compute (tests/trainables/test_baseline.py checks that on shared
weights, batches and noise); only the speed differs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from trainables.ncsn.model import ELU, CondInstanceNormPlus, CondRefineNetDilated
from trainables.ncsn.train import TrainConfig

__all__ = [
    "SeedCondInstanceNormPlus",
    "SeedELU",
    "SeedLoop",
    "SeedStyleMNIST",
    "score_rel_diff",
    "seed_dequantize",
    "seed_dsm_loss",
    "seed_network",
    "seed_sigmas",
]

# The seed's DataLoader: two worker processes.
SEED_LOADER_WORKERS = 2


class SeedCondInstanceNormPlus(CondInstanceNormPlus):
    """The seed's conditional instance norm++: InstanceNorm2d, then the channel means
    standardised with torch.mean / torch.var, then gamma, beta. Same parameters as ours."""

    def forward(self, x, y):
        means = torch.mean(x, dim=(2, 3))
        m = torch.mean(means, dim=-1, keepdim=True)
        v = torch.var(means, dim=-1, keepdim=True)
        means = (means - m) / torch.sqrt(v + 1e-5)
        h = F.instance_norm(x, eps=1e-5)
        gamma, alpha, beta = self.embed(y).chunk(3, dim=-1)
        h = h + means[..., None, None] * alpha[..., None, None]
        return gamma.view(-1, self.num_features, 1, 1) * h + beta.view(-1, self.num_features, 1, 1)


class SeedELU(ELU):
    """The seed's activation: nn.ELU."""

    def forward(self, x):
        return F.elu(x)


def seed_network(ngf: int, num_levels: int, image_size: int) -> CondRefineNetDilated:
    """The same architecture and parameters, computed the seed's way (its norm and ELU)."""
    model = CondRefineNetDilated(ngf, num_levels, 1, image_size)
    for module in model.modules():
        if type(module) is CondInstanceNormPlus:
            module.__class__ = SeedCondInstanceNormPlus
        elif type(module) is ELU:
            module.__class__ = SeedELU
    return model


def seed_sigmas(sigma_begin: float, sigma_end: float, num_levels: int) -> torch.Tensor:
    """The seed's noise ladder: exp(linspace(log sigma_1, log sigma_L, L)) in float32."""
    return torch.exp(torch.linspace(math.log(sigma_begin), math.log(sigma_end), num_levels))


class SeedStyleMNIST(torch.utils.data.Dataset):
    """What torchvision.datasets.MNIST hands out: a PIL image through ToTensor, per item.

    Built over the uint8 tensor [N, 1, H, W] from load_mnist (torchvision cannot download here).
    ``image_size`` 32 resizes each image first, as the seed did (``transforms.Resize(32)``).
    """

    def __init__(self, images: torch.Tensor, image_size: int = 28):
        import torchvision.transforms as T

        self.images = images[:, 0].numpy()
        steps = [T.Resize(image_size)] if image_size != images.shape[-1] else []
        self.transform = T.Compose([*steps, T.ToTensor()])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), 0  # a 2-D uint8 array is mode "L"


def seed_dequantize(x: torch.Tensor) -> torch.Tensor:
    """The seed's dequantisation of ToTensor images k/255: x / 256 * 255 + U(0, 1/256), global RNG."""
    return x / 256.0 * 255.0 + torch.rand_like(x) / 256.0


def seed_dsm_loss(model, x, sigmas, labels, anneal_power=2.0):
    """The seed's anneal_dsm_score_estimation: target -(x~ - x) / sigma^2, weighted by sigma^p.
    The noise comes from the global RNG."""
    used = sigmas[labels].view(x.shape[0], *([1] * (x.dim() - 1)))
    perturbed = x + torch.randn_like(x) * used
    target = -1 / (used**2) * (perturbed - x)
    scores = model(perturbed, labels)
    loss = 1 / 2.0 * ((scores - target) ** 2).sum(dim=(1, 2, 3)) * used.squeeze() ** anneal_power
    return loss.mean()


class SeedLoop:
    """The seed's loop: DataLoader (2 workers), dequantisation per batch, .item() every step,
    fp32 eager, contiguous tensors; sampling under torch.no_grad with .item() logging.

    Reads lr, beta1, beta2, sigma_begin, sigma_end, num_levels, batch_size and anneal_power of
    ``cfg``; appends its log lines to ``log``. ``workers`` is the DataLoader's worker count (the
    seed's 2; 0 loads in this process).
    """

    def __init__(
        self,
        model,
        cfg: TrainConfig,
        images: torch.Tensor,
        device: torch.device,
        log: list,
        workers: int = SEED_LOADER_WORKERS,
    ):
        self.model = model.to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.sigmas = seed_sigmas(cfg.sigma_begin, cfg.sigma_end, cfg.num_levels).to(device)
        self.loader = torch.utils.data.DataLoader(
            SeedStyleMNIST(images, cfg.image_size),
            batch_size=cfg.batch_size,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
        )
        self.batches = iter(self.loader)
        self.cfg, self.device, self.log, self.step = cfg, device, log, 0

    def _next(self):
        try:
            return next(self.batches)[0]
        except StopIteration:  # a new epoch, new worker processes, as in the seed
            self.batches = iter(self.loader)
            return next(self.batches)[0]

    def train(self, n_iters: int) -> None:
        for _ in range(n_iters):
            x = seed_dequantize(self._next().to(self.device))
            labels = torch.randint(0, len(self.sigmas), (x.shape[0],), device=self.device)
            loss = seed_dsm_loss(self.model, x, self.sigmas, labels, self.cfg.anneal_power)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.step += 1
            self.log.append(f"step: {self.step}, loss: {loss.item()}")

    def sample(self, x, step_lr, n_steps_each, levels=None):
        """The seed's anneal_Langevin_dynamics over the first ``levels`` levels (default all);
        the noise comes from the global RNG."""
        sigmas = self.sigmas if levels is None else self.sigmas[:levels]
        with torch.no_grad():
            for c, sigma in enumerate(sigmas):
                labels = torch.ones(x.shape[0], device=x.device, dtype=torch.long) * c
                step_size = step_lr * (sigma / self.sigmas[-1]) ** 2
                for _ in range(n_steps_each):
                    noise = torch.randn_like(x) * torch.sqrt(step_size * 2)
                    grad = self.model(x, labels)
                    x = x + step_size * grad + noise
                    self.log.append(
                        f"level: {c}, step_size: {step_size.item()}, grad_norm: {grad.norm().item()}, "
                        f"image_norm: {x.norm().item()}"
                    )
        return x


ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def score_rel_diff(reference: ScoreFn, other: ScoreFn, x: torch.Tensor, levels: torch.Tensor) -> float:
    """Relative L2 difference ||a - b|| / ||a|| of two score functions on one batch, a the
    reference's scores (how the benchmark reports that both sides compute the same network)."""
    with torch.inference_mode():
        a = reference(x, levels).float()
        b = other(x, levels).float()
    return float((a - b).norm() / a.norm())
