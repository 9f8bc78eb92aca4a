"""The batched engine: one (logsnr, eps) draw per item and sample, shared by all its conditions.

All (item, sample, condition) evaluations of a call go through the denoiser in chunks of at most
`max_batch` rows. Each item's draws come from a generator seeded by (seed, item key), so results
do not depend on the chunk size, on which other items share the call, or on resuming a run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from infodecomp.estimators.channel import alpha_sigma
from infodecomp.estimators.protocol import Denoiser, conditions_device, select_rows
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.scores import get_score


@dataclass(frozen=True)
class Query:
    """One item: its encoded image, the conditions to evaluate and the contrasts to report.

    Args:
        x: encoded image [C, H, W] (the denoiser's data space).
        conditions: condition keys; include the unconditional ("") where a contrast needs it.
        contrasts: (with, without) index pairs into `conditions`; each gives
            i(x; with | without), e.g. (caption, "") is the MI and (caption, context) the CMI.
        key: a stable identifier of the item; it seeds the item's (logsnr, eps) draws.
    """

    x: torch.Tensor
    conditions: tuple[Hashable, ...]
    contrasts: tuple[tuple[int, int], ...] = ()
    key: Hashable = 0

    def __post_init__(self) -> None:
        if len(self.conditions) == 0:
            raise ValueError(f"query {self.key!r} has no conditions")
        k = len(self.conditions)
        for a, b in self.contrasts:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(
                    f"query {self.key!r}: contrast {(a, b)} indexes outside its {k} conditions"
                )


@dataclass(frozen=True)
class EngineConfig:
    """Estimator settings: samples per item, proposal, chunk bound, pixel maps, seed."""

    n_samples: int = 100
    sampler: LogsnrSampler = field(default_factory=LogsnrSampler)
    max_batch: int = 64
    pixel_maps: bool = False
    seed: int = 0


@dataclass
class ItemEstimate:
    """Per-sample denoising errors of one item and the estimates derived from them.

    Shapes: S samples, K conditions, P contrasts, H x W pixels. All per-sample arrays are float64.
    """

    key: Hashable
    conditions: tuple[Hashable, ...]
    contrasts: tuple[tuple[int, int], ...]
    sampler: LogsnrSampler
    logsnr: torch.Tensor  # [S]
    weight: torch.Tensor  # [S]
    mse: torch.Tensor  # [K, S] ||eps - eps_hat(z | c_k)||^2
    mse_gauss: torch.Tensor  # [S] same for the N(0, I) reference denoiser s * z
    io: torch.Tensor  # [P, S] ||eps_hat(z | with) - eps_hat(z | without)||^2
    is_: torch.Tensor  # [P, S] mse(without) - mse(with)
    dim: int
    x_sqnorm: float
    io_map: torch.Tensor | None = None  # [P, H, W] pixel-wise i^o, channels summed
    is_map: torch.Tensor | None = None  # [P, H, W] pixel-wise i^s, channels summed

    def _integral(self, values: torch.Tensor) -> tuple[float, float]:
        mean, se = self.sampler.mean_and_stderr(0.5 * self.weight * values)
        return float(mean), float(se)

    def info_o(self, p: int = 0) -> tuple[float, float]:
        """i^o(x; with | without) in nats and its standard error (paper eq. 6 / 11)."""
        return self._integral(self.io[p])

    def info_s(self, p: int = 0) -> tuple[float, float]:
        """i^s(x; with | without) in nats and its standard error (paper eq. 5 / 10)."""
        return self._integral(self.is_[p])

    def log_likelihood(self, k: int = 0) -> tuple[float, float]:
        """log p(x | c_k) in nats, relative to the N(0, I) reference denoiser (eq. 3).

        log p(x|c) = log N(x; 0, I) + 1/2 int E[mse_gauss - mse_c] dlogsnr; the reference uses the
        same eps draws, so it acts as a control variate. Exact only when the proposal covers the
        logsnr range where the two error curves differ.
        """
        log_gauss = -0.5 * self.dim * math.log(2 * math.pi) - 0.5 * self.x_sqnorm
        mean, se = self._integral(self.mse_gauss - self.mse[k])
        return log_gauss + mean, se

    def bits_per_dim(self, k: int = 0) -> tuple[float, float]:
        """Negative log-likelihood in bits per dimension and its standard error."""
        ll, se = self.log_likelihood(k)
        scale = 1.0 / (self.dim * math.log(2))
        return -ll * scale, se * scale

    def score(self, name: str, option: int = 0) -> tuple[float, float]:
        """A score of the score table (infodecomp.scores) for option `option`: (value, stderr).

        The value is in the score's own units and sign (i^o, i^s in nats; the denoising loss
        as its integral); `Score.sign` turns it into "higher is a better match".
        """
        sc = get_score(name)
        return self._integral(getattr(self, sc.samples)[option])

    def ranking_samples(self, name: str, n_options: int) -> torch.Tensor:
        """Per-sample weighted terms [n_options, S] whose mean is sign x score of each option."""
        sc = get_score(name)
        return sc.sign * 0.5 * self.weight * getattr(self, sc.samples)[:n_options]

    def mmse_curve(self, k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(logsnr sorted [S], ||eps - eps_hat||^2 per sample [S]) for plotting."""
        order = torch.argsort(self.logsnr)
        return self.logsnr[order], self.mse[k, order]


def item_generator(seed: int, key: Hashable) -> torch.Generator:
    """A CPU generator seeded from (seed, key) only, so an item's draws are reproducible anywhere."""
    digest = hashlib.blake2b(repr((int(seed), key)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


def draw(query: Query, cfg: EngineConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The item's shared draws: logsnr [S], weight [S] (float64) and eps [S, C, H, W] (float32)."""
    gen = item_generator(cfg.seed, query.key)
    logsnr, weight = cfg.sampler.sample(cfg.n_samples, gen)
    eps = torch.randn((cfg.n_samples, *query.x.shape), generator=gen, dtype=torch.float32)
    return logsnr, weight, eps


def estimate(denoiser: Denoiser, queries: Sequence[Query], cfg: EngineConfig) -> list[ItemEstimate]:
    """Runs every condition of every query at the query's shared (logsnr, eps) draws.

    Returns one ItemEstimate per query, in order. Condition encodings are requested once per
    distinct key for the whole call; the unconditional pass is one condition among the others
    and is therefore computed once per sample and reused by every contrast that needs it.
    """
    if not queries:
        return []
    if cfg.max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {cfg.max_batch}")
    shapes = {tuple(q.x.shape) for q in queries}
    if len(shapes) != 1:
        raise ValueError(
            f"all queries of one call must share the image shape, got {sorted(shapes)}"
        )
    device = denoiser.device
    keys: dict[Hashable, int] = {}
    for q in queries:
        for c in q.conditions:
            keys.setdefault(c, len(keys))
    table = denoiser.encode_conditions(list(keys))  # [U, ...] (every field)

    _n, s_count = len(queries), cfg.n_samples
    draws = [draw(q, cfg) for q in queries]
    x = torch.stack([q.x.float() for q in queries]).to(device)  # [N, C, H, W]
    eps = torch.stack([d[2] for d in draws]).to(device)  # [N, S, C, H, W]
    logsnr = torch.stack([d[0] for d in draws])  # [N, S] float64, CPU

    # Flat job list ordered (item, sample, condition).
    item_idx, sample_idx, cond_idx, offsets = [], [], [], [0]
    for i, q in enumerate(queries):
        rows = torch.tensor([keys[c] for c in q.conditions])
        k = len(rows)
        item_idx.append(torch.full((s_count * k,), i))
        sample_idx.append(torch.arange(s_count).repeat_interleave(k))
        cond_idx.append(rows.repeat(s_count))
        offsets.append(offsets[-1] + s_count * k)
    item_idx_t, sample_idx_t, cond_idx_t = (torch.cat(t) for t in (item_idx, sample_idx, cond_idx))
    a_all, s_all = (t.float().to(device) for t in alpha_sigma(logsnr))  # [N, S]
    # Index tensors live on the device once; the per-row logsnr stay on the host (the adapters
    # map them to timesteps there), so the chunk loop issues no device-to-host copies.
    ii_all, ss_all = item_idx_t.to(device), sample_idx_t.to(device)  # [J]
    rows_all = cond_idx_t.to(conditions_device(table))  # [J]
    logsnr_rows = logsnr.float()[item_idx_t, sample_idx_t]  # [J] host
    if device.type == "cuda":
        logsnr_rows = logsnr_rows.pin_memory()
    shape = (-1,) + (1,) * (x.dim() - 1)

    out = torch.empty((offsets[-1], *x.shape[1:]), dtype=torch.float32, device=device)
    for start in range(0, offsets[-1], cfg.max_batch):
        stop = min(start + cfg.max_batch, offsets[-1])
        ii, ss = ii_all[start:stop], ss_all[start:stop]
        z = (
            a_all[ii, ss].view(shape) * x[ii] + s_all[ii, ss].view(shape) * eps[ii, ss]
        )  # [B, C, H, W]
        cond = select_rows(table, rows_all[start:stop])
        out[start:stop] = denoiser.eps_hat(z, logsnr_rows[start:stop], cond).float()

    results = []
    for i, q in enumerate(queries):
        k = len(q.conditions)
        pred = out[offsets[i] : offsets[i + 1]].view(s_count, k, *x.shape[1:])  # [S, K, C, H, W]
        results.append(_reduce(q, cfg, draws[i], pred, eps[i], x[i], a_all[i], s_all[i]))
    return results


def _reduce(
    q: Query,
    cfg: EngineConfig,
    d: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    pred: torch.Tensor,
    eps: torch.Tensor,
    x: torch.Tensor,
    a: torch.Tensor,
    s: torch.Tensor,
) -> ItemEstimate:
    """Per-sample errors and pixel maps of one item from its predictions [S, K, C, H, W]."""
    logsnr, weight, _ = d
    bshape = (-1,) + (1,) * x.dim()
    err = (eps.unsqueeze(1) - pred).square()  # [S, K, C, H, W]
    mse = err.flatten(2).sum(-1).double().T  # [K, S]
    z = a.view(bshape) * x + s.view(bshape) * eps  # [S, C, H, W]
    mse_gauss = (eps - s.view(bshape) * z).square().flatten(1).sum(-1).double()  # [S]
    with_idx = [a_ for a_, _ in q.contrasts]
    without_idx = [b_ for _, b_ in q.contrasts]
    diff_sq = (pred[:, with_idx] - pred[:, without_idx]).square()  # [S, P, C, H, W]
    io = diff_sq.flatten(2).sum(-1).double().T  # [P, S]
    is_ = mse[without_idx] - mse[with_idx]  # [P, S]
    io_map = is_map = None
    if cfg.pixel_maps and q.contrasts:
        w = (0.5 * weight).to(pred.device, torch.float32).view(-1, 1, 1, 1)  # [S, 1, 1, 1]
        io_map = (w * diff_sq.sum(2)).mean(0).cpu()  # [P, H, W]
        err_px = err.sum(2)  # [S, K, H, W]
        is_map = (w * (err_px[:, without_idx] - err_px[:, with_idx])).mean(0).cpu()  # [P, H, W]
    return ItemEstimate(
        key=q.key,
        conditions=q.conditions,
        contrasts=q.contrasts,
        sampler=cfg.sampler,
        logsnr=logsnr,
        weight=weight,
        mse=mse.cpu(),
        mse_gauss=mse_gauss.cpu(),
        io=io.cpu(),
        is_=is_.cpu(),
        dim=x.numel(),
        x_sqnorm=float(x.double().square().sum()),
        io_map=io_map,
        is_map=is_map,
    )
