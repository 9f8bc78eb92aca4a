"""A faithful re-implementation of the published ARO scoring procedure, for the speed benchmark.

Per image and per condition (the empty prompt first, then each caption) one pass over all logsnr
samples in fixed UNet batches of 150: the prompt is tokenised and encoded again for every
condition (no cache), the VAE encodes the image again for every item, logsnr maps to the nearest
integer timestep, everything runs in float32. The unconditional predictions are kept to form
i^o = ||eps_hat(z|y) - eps_hat(z)||^2, as the published code does. It returns the same
per-sample quantities as the engine so the two can be checked against each other.
"""

from __future__ import annotations

import torch

from infodecomp.estimators.channel import noisy_channel
from infodecomp.estimators.samplers import LogsnrSampler


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
    t = model.schedule.timestep(logsnr, "nearest").to(model.device, torch.float32)  # [S]
    evals = 0

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

    uncond = predict("")
    w = (0.5 * weight).to(model.device, torch.float32)
    io, mmse = [], []
    for caption in options:
        cond = predict(caption)
        io.append((w * (cond - uncond).square().flatten(1).sum(-1)).mean())
        mmse.append((w * (eps - cond).square().flatten(1).sum(-1)).mean())
    return {
        "io": torch.stack(io).cpu(),
        "mmse": torch.stack(mmse).cpu(),
        "evals": torch.tensor(evals),
    }
