"""A faithful re-implementation of the published ARO scoring procedure, for the speed benchmark.

Per image and per condition (the empty prompt first, then each caption) one pass over all logsnr
samples in fixed UNet batches of 150: the prompt is tokenised and encoded again for every
condition (no cache), the VAE encodes the image again for every item, logsnr maps to the nearest
integer timestep, everything runs in float32. The unconditional predictions are kept to form
i^o = ||eps_hat(z|y) - eps_hat(z)||^2, as the published code does. It returns the same
per-sample quantities as the engine so the two can be checked against each other.

The published code exists for Stable Diffusion only; on the other families (SDXL, SD 3.x,
Flux.1, PixArt) the same procedure (prompt encoded anew per condition with the family's own
encoders, one condition per pass, fixed batches, float32) runs through the adapter's eps_hat,
i.e. with the family's own time variable and target conversion.
"""

from __future__ import annotations

import torch

from infodecomp.estimators.channel import noisy_channel
from infodecomp.estimators.protocol import repeat_rows
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.models.sd import StableDiffusionDenoiser


@torch.no_grad()
def _encode_prompt(model, prompt: str) -> torch.Tensor:
    tok = model.tokenizer(
        [prompt],
        padding="max_length",
        max_length=model.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return model.text_encoder(tok.input_ids.to(model.device))[0]  # [1, 77, D]


@torch.no_grad()
def reference_scores(
    model, image, options: tuple[str, ...], n_samples: int = 100, batch: int = 150, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Scores of one ARO item by the published procedure.

    Returns io [O] and mmse [O] (1/2 mean of weight x per-sample value), and the number of UNet
    evaluations made.
    """
    gen = torch.Generator().manual_seed(seed)
    x = model.encode_images([image])[0].to(
        model.device, torch.float32
    )  # [4, h, w], no latent cache
    logsnr, weight = LogsnrSampler().sample(n_samples, gen)  # paper proposal, iid
    eps = torch.randn((n_samples, *x.shape), generator=gen).to(model.device)  # [S, 4, h, w]
    z = noisy_channel(x.expand_as(eps), logsnr.float().to(model.device), eps)  # [S, 4, h, w]
    evals = 0
    if not isinstance(model, StableDiffusionDenoiser):  # another family: its own encoders
        lv = logsnr.float().to(model.device)

        def predict(prompt: str) -> torch.Tensor:
            nonlocal evals
            cond = model._encode_prompts([prompt])  # encoded anew for every condition
            out = []
            for start in range(0, n_samples, batch):
                zb = z[start : start + batch]
                out.append(model.eps_hat(zb, lv[start : start + batch], repeat_rows(cond, len(zb))))
                evals += len(zb)
            return torch.cat(out).float()  # [S, C, h, w]

        return _scores(predict, options, eps, weight, model.device, evals_of=lambda: evals)
    t = model.schedule.timestep(logsnr, "nearest").to(model.device, torch.float32)  # [S]

    def predict(prompt: str) -> torch.Tensor:
        nonlocal evals
        cond = _encode_prompt(model, prompt)  # encoded anew for every condition
        out = []
        for start in range(0, n_samples, batch):
            zb = z[start : start + batch]
            out.append(
                model.unet(
                    zb, t[start : start + batch], encoder_hidden_states=cond.expand(len(zb), -1, -1)
                ).sample
            )
            evals += len(zb)
        return torch.cat(out).float()  # [S, 4, h, w]

    return _scores(predict, options, eps, weight, model.device, evals_of=lambda: evals)


def _scores(predict, options, eps, weight, device, evals_of) -> dict[str, torch.Tensor]:
    uncond = predict("")
    w = (0.5 * weight).to(device, torch.float32)
    io, mmse = [], []
    for caption in options:
        cond = predict(caption)
        io.append((w * (cond - uncond).square().flatten(1).sum(-1)).mean())
        mmse.append((w * (eps - cond).square().flatten(1).sum(-1)).mean())
    return {
        "io": torch.stack(io).cpu(),
        "mmse": torch.stack(mmse).cpu(),
        "evals": torch.tensor(evals_of()),
    }
