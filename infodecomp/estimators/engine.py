"""The batched engine: one (logsnr, eps) draw per item and sample, shared by all its conditions.

All (item, sample, condition) evaluations of a call go through the denoiser in chunks of at most
`max_batch` rows. Each item's draws come from a generator seeded by (seed, item key), so results
do not depend on the chunk size, on which other items share the call, or on resuming a run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace

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
        logsnr_key: None (the default: `key` seeds both draws), or a key that seeds the logsnr
            draw alone, `key` then seeding eps: queries with one logsnr_key share their logsnr
            values and keep their own noise (the published localisation maps share one set of
            logsnr values per batch of 10 images).
    """

    x: torch.Tensor
    conditions: tuple[Hashable, ...]
    contrasts: tuple[tuple[int, int], ...] = ()
    key: Hashable = 0
    logsnr_key: Hashable | None = None

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
    # sample counts < n_samples whose pixel maps are kept too (ItemEstimate.prefix): estimates
    # at several budgets from one draw; only for iid draws, whose prefixes are iid draws
    prefixes: tuple[int, ...] = ()


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
    # sample count -> (io_map, is_map) of the first samples only (EngineConfig.prefixes)
    prefix_maps: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def prefix(self, n: int) -> ItemEstimate:
        """The estimate from the first n samples of this one (nested budgets from one draw).

        Only iid draws: the first n of a stratified, antithetic or quadrature draw cover part
        of the proposal's range, so they are not a sample of it.
        """
        s_count = self.logsnr.shape[0]
        if n == s_count:
            return self
        if self.sampler.mode != "iid":
            raise ValueError(
                f"a prefix of {self.sampler.mode} draws is not a sample of the proposal; "
                "nested budgets need estimator.mode=iid"
            )
        if not 1 <= n < s_count:
            raise ValueError(f"prefix of {n} samples out of {s_count}")
        maps = self.prefix_maps.get(n) if self.io_map is not None else (None, None)
        if maps is None:
            raise ValueError(
                f"no pixel maps kept for the first {n} samples (EngineConfig.prefixes)"
            )
        return replace(
            self,
            logsnr=self.logsnr[:n],
            weight=self.weight[:n],
            mse=self.mse[:, :n],
            mse_gauss=self.mse_gauss[:n],
            io=self.io[:, :n],
            is_=self.is_[:, :n],
            io_map=maps[0],
            is_map=maps[1],
            prefix_maps={},
        )

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


def _draw_logsnr(
    query: Query, cfg: EngineConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """The item's logsnr [S] and weight [S] (float64), and the generator its eps come from:
    one stream seeded by `key`, or (with `logsnr_key`) logsnr from a stream of its own."""
    gen = item_generator(cfg.seed, query.key)
    if query.logsnr_key is None:
        return (*cfg.sampler.sample(cfg.n_samples, gen), gen)
    shared = item_generator(cfg.seed, ("logsnr", query.logsnr_key))
    return (*cfg.sampler.sample(cfg.n_samples, shared), gen)


def draw(query: Query, cfg: EngineConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The item's shared draws: logsnr [S], weight [S] (float64) and eps [S, C, H, W] (float32)."""
    logsnr, weight, gen = _draw_logsnr(query, cfg)
    eps = torch.randn((cfg.n_samples, *query.x.shape), generator=gen, dtype=torch.float32)
    return logsnr, weight, eps


def estimate(denoiser: Denoiser, queries: Sequence[Query], cfg: EngineConfig) -> list[ItemEstimate]:
    """Runs every condition of every query at the query's shared (logsnr, eps) draws.

    Returns one ItemEstimate per query, in order. Condition encodings are requested once per
    distinct key for the whole call; the unconditional pass is one condition among the others
    and is therefore computed once per sample and reused by every contrast that needs it. A
    condition a query lists twice (e.g. two caption options that coincide) is evaluated once
    per sample and its predictions serve both entries.

    Memory is bounded by `cfg.max_batch`, not by `cfg.n_samples`: the (item, sample, condition)
    rows are walked in chunks of at most `max_batch` rows, each item's noise is drawn in blocks
    of samples as the walk reaches them, and each chunk's predictions are reduced at once into
    the item's per-sample errors (a few numbers per sample) and running pixel-map sums. Only a
    sample whose conditions straddle two chunks is held over, so no tensor of predictions or
    noise ever spans all samples.
    """
    if not queries:
        return []
    if cfg.max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {cfg.max_batch}")
    if cfg.n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {cfg.n_samples}")
    if any(not 1 <= m <= cfg.n_samples for m in cfg.prefixes):
        raise ValueError(f"prefixes {cfg.prefixes} must lie in 1..n_samples={cfg.n_samples}")
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
    table_device = conditions_device(table)

    s_count = cfg.n_samples
    acc = [_ItemAccumulator(q, cfg, [keys[c] for c in q.conditions], device) for q in queries]
    spans = [s_count * a.k for a in acc]  # rows of each item, ordered (sample, condition)
    item, row = 0, 0  # where the walk over the flat (item, sample, condition) rows stands
    shape = (-1,) + (1,) * queries[0].x.dim()
    while item < len(acc):
        # One chunk: up to max_batch consecutive rows, possibly spanning several items.
        segments = []  # (item, first row, end row) within that item
        room = cfg.max_batch
        while room and item < len(acc):
            take = min(room, spans[item] - row)
            segments.append((item, row, row + take))
            room -= take
            row += take
            if row == spans[item]:
                item, row = item + 1, 0
        zs, eps_rows, logsnr_rows, cond_rows = [], [], [], []
        for i, r0, r1 in segments:
            a = acc[i]
            rows = torch.arange(r0, r1)
            samples = rows // a.k  # [n]
            eps = a.noise(int(samples[0]), int(samples[-1]) + 1)[samples - int(samples[0])]
            eps = eps.to(device)  # [n, C, H, W]
            sd = samples.to(device)
            zs.append(a.alpha[sd].view(shape) * a.x + a.sigma[sd].view(shape) * eps)
            eps_rows.append(eps)
            logsnr_rows.append(a.logsnr.float()[samples])
            cond_rows.append(a.cond_rows[rows % a.k])
        z = torch.cat(zs)  # [B, C, H, W]
        cond = select_rows(table, torch.cat(cond_rows).to(table_device))
        pred = denoiser.eps_hat(z, torch.cat(logsnr_rows), cond).float()  # [B, C, H, W]
        start = 0
        for (i, r0, r1), eps in zip(segments, eps_rows, strict=True):
            acc[i].add(r0, pred[start : start + r1 - r0], eps)
            start += r1 - r0
    return [a.result() for a in acc]


class _NoiseStream:
    """An item's eps draws [S, C, H, W], generated block by block from its generator.

    CPU `torch.randn` fills a tensor from the generator's stream in groups of 16 values, and
    redraws the last 16 when the size is not a multiple of 16. Blocks whose sizes are multiples
    of 16 values, and a last block of at least 16 values, therefore consume the stream exactly
    as one call for all samples does: the draws equal `draw`'s, bit for bit.
    """

    def __init__(self, gen: torch.Generator, n_samples: int, shape: tuple, block: int) -> None:
        self.gen, self.n_samples, self.shape = gen, n_samples, tuple(shape)
        dim = math.prod(self.shape)
        unit = 16 // math.gcd(dim, 16)  # samples per whole number of 16-value groups
        self.block = max(unit, -(-block // unit) * unit)
        self.dim = dim
        self.buf = torch.empty((0, *self.shape))
        self.first = 0  # sample index of buf[0]

    def _next_block(self, start: int) -> torch.Tensor:
        n = min(self.block, self.n_samples - start)
        if (self.n_samples - start - n) * self.dim < 16:  # too small a tail: draw it now
            n = self.n_samples - start
        return torch.randn((n, *self.shape), generator=self.gen, dtype=torch.float32)

    def get(self, lo: int, hi: int) -> torch.Tensor:
        """Draws of samples lo..hi-1 [hi - lo, C, H, W]; lo never decreases between calls."""
        end = self.first + self.buf.shape[0]
        if hi > end:
            parts = [self.buf[lo - self.first :]] if lo < end else []
            while end < hi:
                block = self._next_block(end)
                parts.append(block)
                end += block.shape[0]
            self.buf = torch.cat(parts) if len(parts) > 1 else parts[0]
            self.first = end - self.buf.shape[0]
        return self.buf[lo - self.first : hi - self.first]


class _ItemAccumulator:
    """One item's draws and the running reduction of its predictions (see `estimate`)."""

    def __init__(
        self, q: Query, cfg: EngineConfig, cond_rows: list[int], device: torch.device
    ) -> None:
        # a condition repeated inside the query is evaluated once per sample: k rows per sample
        # (its distinct conditions), expanded back to the query's conditions after the call
        distinct = list(dict.fromkeys(q.conditions))
        self.q, self.cfg, self.k = q, cfg, len(distinct)
        self.expand = (
            torch.tensor([distinct.index(c) for c in q.conditions])
            if len(distinct) < len(q.conditions)
            else None
        )  # [K] row of each condition among the distinct ones
        cond_rows = [cond_rows[q.conditions.index(c)] for c in distinct]
        self.logsnr, self.weight, gen = _draw_logsnr(q, cfg)  # [S] float64
        block = -(-cfg.max_batch // self.k) + 1  # samples one chunk can touch
        self._eps = _NoiseStream(gen, cfg.n_samples, tuple(q.x.shape), block)
        self.cond_rows = torch.tensor(cond_rows)  # [K] rows of the encoding table
        self.x = q.x.float().to(device)  # [C, H, W]
        self.alpha, self.sigma = (t.float().to(device) for t in alpha_sigma(self.logsnr))  # [S]
        s, p = cfg.n_samples, len(q.contrasts)
        self.with_idx = [a for a, _ in q.contrasts]
        self.without_idx = [b for _, b in q.contrasts]
        self.mse = torch.empty((len(q.conditions), s), dtype=torch.float64)
        self.mse_gauss = torch.empty(s, dtype=torch.float64)
        self.io = torch.empty((p, s), dtype=torch.float64)
        self.is_ = torch.empty((p, s), dtype=torch.float64)
        self.maps = cfg.pixel_maps and p > 0
        hw = tuple(q.x.shape[1:])
        self.io_sum = (
            torch.zeros((p, *hw), dtype=torch.float64, device=device) if self.maps else None
        )
        self.is_sum = (
            torch.zeros((p, *hw), dtype=torch.float64, device=device) if self.maps else None
        )
        self.prefix_sums: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._held: tuple[int, torch.Tensor, torch.Tensor] | None = None  # a straddling sample
        self._done = 0  # samples reduced so far

    def noise(self, lo: int, hi: int) -> torch.Tensor:
        return self._eps.get(lo, hi)

    def add(self, r0: int, pred: torch.Tensor, eps: torch.Tensor) -> None:
        """Predictions [n, C, H, W] of rows r0.. (and their eps [n, C, H, W]) of this item."""
        if self._held is not None:
            h0, hpred, heps = self._held
            r0, pred, eps = h0, torch.cat([hpred, pred]), torch.cat([heps, eps])
            self._held = None
        assert r0 % self.k == 0, "an item's rows must arrive in order"
        whole = (pred.shape[0] // self.k) * self.k
        if whole < pred.shape[0]:  # the last sample's other conditions come with the next chunk
            self._held = (r0 + whole, pred[whole:].clone(), eps[whole:].clone())
        if whole:
            n = whole // self.k
            s0 = r0 // self.k
            rows = pred[:whole].view(n, self.k, *pred.shape[1:])  # [n, k, C, H, W]
            if self.expand is not None:
                rows = rows[:, self.expand.to(rows.device)]  # [n, K, C, H, W]
            self._reduce(s0, rows, eps[: whole : self.k])  # eps [n, C, H, W]

    def _reduce(self, s0: int, pred: torch.Tensor, eps: torch.Tensor) -> None:
        """Per-sample errors and pixel-map sums of samples s0..s0+n-1 from pred [n, K, C, H, W]."""
        n = pred.shape[0]
        sl = slice(s0, s0 + n)
        x = self.x
        bshape = (-1,) + (1,) * x.dim()
        err = (eps.unsqueeze(1) - pred).square()  # [n, K, C, H, W]
        mse = err.flatten(2).sum(-1).double().T  # [K, n]
        a, s = self.alpha[sl], self.sigma[sl]
        z = a.view(bshape) * x + s.view(bshape) * eps  # [n, C, H, W]
        self.mse[:, sl] = mse.cpu()
        self.mse_gauss[sl] = (eps - s.view(bshape) * z).square().flatten(1).sum(-1).double().cpu()
        if self.with_idx:
            diff_sq = (
                pred[:, self.with_idx] - pred[:, self.without_idx]
            ).square()  # [n, P, C, H, W]
            self.io[:, sl] = diff_sq.flatten(2).sum(-1).double().T.cpu()
            self.is_[:, sl] = (mse[self.without_idx] - mse[self.with_idx]).cpu()
            if self.maps:
                w = (0.5 * self.weight[sl]).to(pred.device, torch.float32).view(bshape)
                io_px = (w * diff_sq.sum(2)).double()  # [n, P, H, W]
                err_px = err.sum(2)  # [n, K, H, W]
                is_px = (w * (err_px[:, self.without_idx] - err_px[:, self.with_idx])).double()
                for m in self.cfg.prefixes:  # a kept budget ends inside this chunk: snapshot
                    if s0 < m <= s0 + n:
                        self.prefix_sums[m] = (
                            self.io_sum + io_px[: m - s0].sum(0),
                            self.is_sum + is_px[: m - s0].sum(0),
                        )
                self.io_sum += io_px.sum(0)  # [P, H, W]
                self.is_sum += is_px.sum(0)
        self._done += n

    def result(self) -> ItemEstimate:
        q, s_count = self.q, self.cfg.n_samples
        assert self._done == s_count and self._held is None, "an item's rows were not all reduced"
        io_map = is_map = None
        prefix_maps = {}
        if self.maps:
            io_map = (self.io_sum / s_count).float().cpu()  # [P, H, W]
            is_map = (self.is_sum / s_count).float().cpu()
            prefix_maps = {
                m: ((a / m).float().cpu(), (b / m).float().cpu())
                for m, (a, b) in self.prefix_sums.items()
            }
        return ItemEstimate(
            key=q.key,
            conditions=q.conditions,
            contrasts=q.contrasts,
            sampler=self.cfg.sampler,
            logsnr=self.logsnr,
            weight=self.weight,
            mse=self.mse,
            mse_gauss=self.mse_gauss,
            io=self.io,
            is_=self.is_,
            dim=self.x.numel(),
            x_sqnorm=float(self.x.double().square().sum()),
            io_map=io_map,
            is_map=is_map,
            prefix_maps=prefix_maps,
        )
