"""The published ARO scoring procedure, batched as the published code batches it (bench reference).

What the published ARO path does per batch of `items_per_batch` images (10 for VG, whose items
have 2 caption options; 5 for COCO/Flickr-Order, 5 options; /work/shared/reference section 6):

- every distinct prompt of the batch (all options of all its images and "") is tokenised and
  encoded once for the batch, not cached across batches;
- every image's VAE latent is a posterior sample (mean + std x N(0, I)), scaled;
- the logsnr samples are spent `draws_per_call` (5) replicate draws at a time: one UNet call takes
  all options plus "" of every image of the batch for 5 (logsnr, eps) draws each
  (VG: 3 conditions x 10 images x 5 draws = 150 rows), with one logsnr and one eps per
  (image, draw) shared by all that image's conditions; 100 samples -> 20 calls per batch;
- logsnr is drawn from the truncated logistic loc 1, scale 2 at clip 4 (the `--clip` option never
  reaches the sampler on that path), maps to the nearest integer timestep, z uses the continuous
  logsnr, all in float32;
- i^o = 1/2 mean_s w_s ||eps_hat(z|y) - eps_hat(z|"")||^2 per option; the denoising loss
  1/2 mean_s w_s ||eps - eps_hat(z|y)||^2 beside it.

So an item costs n_samples x (options + 1) rows: 300 for VG, 600 for COCO/Flickr-Order at 100
samples. `reference_scores` returns the UNet calls and rows it made so tests can hold it to that.
Given the same draws (`ReferenceDraws`), its scores equal the engine's (tests/test_bench.py).

The published code exists for Stable Diffusion only (epsilon prediction: the UNet is called
directly with the nearest timestep); on other families (SDXL, SD 3.x, Flux.1, PixArt, v-prediction
SD) the same batching runs through the adapter's eps_hat with the family's own encoders, time
variable and target conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from infodecomp.estimators.channel import alpha_sigma
from infodecomp.estimators.protocol import conditions_device, select_rows
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.models.families.preprocess import to_model_input
from infodecomp.models.families.sd import StableDiffusionDenoiser

DRAWS_PER_CALL = 5  # replicate (logsnr, eps) draws of every image in one UNet call
# logistic loc 1, scale 2, iid, at clip 4: the published ARO path never passes its `--clip`
# option to the sampler, whose default is 4 (reference section 7)
PAPER_SAMPLER = LogsnrSampler(clip=4.0)
DITM_BATCH = 4  # DiffusionITM's default image batch


def items_per_batch(n_options: int) -> int:
    """The published image batch: 10 for VG (2 options), 5 for the Order tasks (5 options)."""
    return 10 if n_options <= 2 else 5


def conditions_of(options: Sequence[str]) -> tuple[str, ...]:
    """The conditions the published code evaluates for one image: its options, then ""."""
    return (*options, "")


@dataclass(frozen=True)
class ReferenceDraws:
    """The random inputs of a batch: latents [N, C, h, w] (float32), logsnr [N, S] (float64),
    eps [N, S, C, h, w] (float32). Given these, the procedure is deterministic."""

    latents: torch.Tensor
    logsnr: torch.Tensor
    eps: torch.Tensor


@torch.no_grad()
def sampled_latents(model, images: Sequence, gen: torch.Generator) -> torch.Tensor:
    """VAE posterior samples of the images, scaled as the model's latents: [N, C, h, w] float32."""
    px = torch.stack(
        [to_model_input(im, model.image_size, model.resize, model.resample) for im in images]
    )
    dist = model.vae.encode(px.to(model.device, model.vae_dtype)).latent_dist
    noise = torch.randn(dist.mean.shape, generator=gen).to(model.device)
    lat = dist.mean.float() + dist.std.float() * noise
    return ((lat - model._vae_shift) * model.vae.config.scaling_factor).float().cpu()


def sample_draws(
    model, images: Sequence, n_samples: int, gen: torch.Generator, sampler: LogsnrSampler
) -> ReferenceDraws:
    """The published draws of one batch: sampled latents, then iid logsnr and eps per image."""
    latents = sampled_latents(model, images, gen)
    n = latents.shape[0]
    logsnr, _ = sampler.sample(n * n_samples, gen)
    eps = torch.randn((n, n_samples, *latents.shape[1:]), generator=gen)
    return ReferenceDraws(latents, logsnr.view(n, n_samples), eps)


@torch.no_grad()
def reference_scores(
    model,
    images: Sequence,
    options: Sequence[Sequence[str]],
    n_samples: int = 100,
    *,
    draws_per_call: int = DRAWS_PER_CALL,
    batch_items: int | None = None,
    seed: int = 0,
    draws: ReferenceDraws | None = None,
    sampler: LogsnrSampler = PAPER_SAMPLER,
) -> dict:
    """Scores of ARO items by the published procedure, batched as published (module docstring).

    Args:
        images: the items' images; options: the caption options of each image.
        batch_items: images per batch (default: `items_per_batch` of the first item's options).
        draws: the batch's random inputs (all images, all samples); default: drawn from
            torch.Generator(seed) as `sample_draws` does, batch by batch.
        sampler: the logsnr proposal (its weights; its draws when `draws` is None).

    Returns a dict with io [N, O] and mmse [N, O] (float64; O = the largest option count, NaN
    where an item has fewer), calls (UNet calls), rows (rows per call, a list), evals (rows in
    all), prompt_encodes (prompts encoded, summed over batches).
    """
    if len(images) != len(options):
        raise ValueError(f"{len(images)} images but {len(options)} option lists")
    n = len(images)
    bsz = batch_items or items_per_batch(len(options[0]))
    gen = torch.Generator().manual_seed(seed)
    o_max = max(len(o) for o in options)
    io = torch.full((n, o_max), float("nan"), dtype=torch.float64)
    mmse = torch.full((n, o_max), float("nan"), dtype=torch.float64)
    rows, encodes = [], 0
    for b0 in range(0, n, bsz):
        idx = list(range(b0, min(n, b0 + bsz)))
        if draws is None:
            d = sample_draws(model, [images[i] for i in idx], n_samples, gen, sampler)
        else:
            d = ReferenceDraws(draws.latents[idx], draws.logsnr[idx], draws.eps[idx])
        conds = [conditions_of(options[i]) for i in idx]
        prompts = list(dict.fromkeys(p for c in conds for p in c))  # distinct, once per batch
        table = model._encode_prompts(prompts)  # [U, ...] encoded anew for this batch
        encodes += len(prompts)
        cond_idx = [[prompts.index(p) for p in c] for c in conds]
        sums = _batch(model, d, cond_idx, table, draws_per_call, sampler, rows)
        for j, i in enumerate(idx):
            k = len(sums[j][0])  # the options: every condition but the last ("")
            io[i, :k], mmse[i, :k] = sums[j]
    return {
        "io": io,
        "mmse": mmse,
        "calls": len(rows),
        "rows": rows,
        "evals": sum(rows),
        "prompt_encodes": encodes,
    }


def _batch(model, d: ReferenceDraws, cond_idx, table, draws_per_call, sampler, rows) -> list:
    """The UNet calls of one batch; returns per image (io [O], mmse [O]) and appends call sizes."""
    n_img, n_samples = d.logsnr.shape
    device = model.device
    direct = (
        isinstance(model, StableDiffusionDenoiser) and model.schedule.prediction_type == "epsilon"
    )
    weight = sampler.weight(d.logsnr)  # [N, S] float64
    a, s = (t.float() for t in alpha_sigma(d.logsnr))  # [N, S]
    io_sum = [torch.zeros(len(c) - 1, dtype=torch.float64) for c in cond_idx]
    mmse_sum = [torch.zeros(len(c) - 1, dtype=torch.float64) for c in cond_idx]
    x = d.latents.float()
    for r0 in range(0, n_samples, draws_per_call):
        r1 = min(n_samples, r0 + draws_per_call)
        # rows ordered (image, draw, condition): every condition of an image shares its draw
        img, smp, cnd = [], [], []
        for i, ci in enumerate(cond_idx):
            for r in range(r0, r1):
                img += [i] * len(ci)
                smp += [r] * len(ci)
                cnd += ci
        img_t, smp_t = torch.tensor(img), torch.tensor(smp)
        eps = d.eps[img_t, smp_t]  # [B, C, h, w]
        shape = (-1,) + (1,) * (eps.dim() - 1)
        z = a[img_t, smp_t].view(shape) * x[img_t] + s[img_t, smp_t].view(shape) * eps
        cond = select_rows(table, torch.tensor(cnd).to(conditions_device(table)))
        logsnr = d.logsnr[img_t, smp_t]
        if direct:  # the published call: UNet, nearest integer timestep, float32
            t = model.schedule.timestep(logsnr, "nearest").to(device, torch.float32)
            pred = model.unet(z.to(device), t, encoder_hidden_states=cond).sample.float()
        else:
            pred = model.eps_hat(z.to(device), logsnr.float().to(device), cond).float()
        rows.append(len(img))
        start = 0
        for i, ci in enumerate(cond_idx):  # squared norms on the device, sums in float64
            k, m = len(ci), r1 - r0
            p = pred[start : start + k * m].view(m, k, *pred.shape[1:])  # [m, K, C, h, w]
            e = d.eps[i, r0:r1].to(device)  # [m, C, h, w]
            w = 0.5 * weight[i, r0:r1, None]  # [m, 1]
            io_rows = (p[:, :-1] - p[:, -1:]).square().flatten(2).sum(-1)  # [m, O]
            mmse_rows = (e[:, None] - p[:, :-1]).square().flatten(2).sum(-1)  # [m, O]
            io_sum[i] += (w * io_rows.double().cpu()).sum(0)
            mmse_sum[i] += (w * mmse_rows.double().cpu()).sum(0)
            start += k * m
    return [(io_sum[i] / n_samples, mmse_sum[i] / n_samples) for i in range(n_img)]


def published_problems(out: dict, n_items: int, n_options: int, n_samples: int, sampler) -> list:
    """How a reference run (`reference_scores`' output and its sampler) differs from the
    published procedure: proposal (loc 1, scale 2, clip 4, iid), UNet calls of every option and
    "" for 5 draws of each image of a batch (10 VG items / 5 Order items), prompts encoded once
    per batch. Empty: faithful."""
    problems = []
    for key, want in (("kind", "logistic"), ("loc", 1.0), ("scale", 2.0), ("clip", 4.0)):
        if getattr(sampler, key) != want:
            problems.append(f"sampler {key}={getattr(sampler, key)!r}, published {want!r}")
    if sampler.mode != "iid":
        problems.append(f"sampler mode {sampler.mode}, published iid")
    bsz = items_per_batch(n_options)
    rows = []
    for b0 in range(0, n_items, bsz):
        m = min(bsz, n_items - b0)
        for r0 in range(0, n_samples, DRAWS_PER_CALL):
            rows.append(m * (n_options + 1) * (min(n_samples, r0 + DRAWS_PER_CALL) - r0))
    if out["rows"] != rows:
        problems.append(
            f"UNet rows per call {sorted(set(out['rows']))}, published {sorted(set(rows))}"
        )
    batches = -(-n_items // bsz)
    if out["prompt_encodes"] != n_items * n_options + batches:
        problems.append(
            f"{out['prompt_encodes']} prompt encodes, published {n_items * n_options + batches}"
        )
    return problems


@torch.no_grad()
def diffusionitm_losses(
    model,
    latents: torch.Tensor,
    options: Sequence[Sequence[str]],
    steps: int = 10,
    batch_items: int = DITM_BATCH,
    seed: int = 0,
    bank: torch.Tensor | None = None,
) -> dict:
    """The denoising loss batched as DiffusionITM runs it (bench timing reference of `dl`).

    Per caption position j and batch of `batch_items` images: the captions are encoded, then
    one network call per timestep of `steps` evenly spaced over [0, 999] takes the batch's
    images noised at that timestep with the noise bank's tensor of that timestep (one bank,
    shared by every image and caption), conditioned on each image's caption j; the error is
    averaged over the elements, then over the timesteps. `bank` [steps, C, h, w]: the noise bank
    (default: drawn from torch.Generator(seed)). Returns loss [N, O] (float64; lower wins),
    calls, rows, evals.
    """
    from infodecomp.experiments.study_samplers import FixedTimesteps

    nodes = FixedTimesteps().sample(steps)[0]  # [T] logsnr at the fixed timesteps
    if bank is None:
        gen = torch.Generator().manual_seed(seed)
        bank = torch.randn((steps, *latents.shape[1:]), generator=gen)  # [T, C, h, w]
    a, s = (t.float() for t in alpha_sigma(nodes))
    n, o_max = latents.shape[0], max(len(o) for o in options)
    loss = torch.full((n, o_max), float("nan"), dtype=torch.float64)
    rows = []
    for j in range(o_max):
        for b0 in range(0, n, batch_items):
            idx = [i for i in range(b0, min(n, b0 + batch_items)) if j < len(options[i])]
            if not idx:
                continue
            cond = model._encode_prompts([options[i][j] for i in idx])
            x = latents[idx].float()
            errs = torch.zeros(len(idx), dtype=torch.float64)
            for t in range(steps):
                eps = bank[t].expand(len(idx), *bank.shape[1:])
                z = a[t] * x + s[t] * eps
                ls = nodes[t].float().expand(len(idx))
                pred = model.eps_hat(z.to(model.device), ls.to(model.device), cond).float().cpu()
                errs += (pred - eps).square().flatten(1).mean(-1).double()
                rows.append(len(idx))
            loss[idx, j] = errs / steps
    return {"loss": loss, "calls": len(rows), "rows": rows, "evals": sum(rows)}
