"""UNet evaluations per second of a diffusers checkpoint, per dtype.

Usage: python scripts/unet_throughput.py [--model PATH_OR_HUB_ID] [--device auto] [--batch 64]
Without --model it measures the offline tiny-sd pipeline.
"""

from __future__ import annotations

import argparse
import time

import torch

from infodecomp.models.families.sd import StableDiffusionDenoiser
from infodecomp.models.tiny.sd import tiny_sd_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    source = args.model or str(tiny_sd_path())
    for dtype in args.dtypes.split(","):
        model = StableDiffusionDenoiser.from_pretrained(source, device=args.device, dtype=dtype)
        cond = model.encode_conditions(["a red circle above a blue square"]).expand(
            args.batch, -1, -1
        )
        z = torch.randn(args.batch, 4, *model.latent_size)
        logsnr = torch.rand(args.batch) * 12 - 5
        for _ in range(2):  # warm-up
            model.eps_hat(z, logsnr, cond)
        best = 0.0
        for _ in range(3):
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(5):
                model.eps_hat(z, logsnr, cond)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, 5 * args.batch / (time.perf_counter() - start))
        print(
            f"{dtype}: {best:.1f} UNet evaluations/s (batch {args.batch}, {model.device}, {torch.get_num_threads()} threads)"
        )


if __name__ == "__main__":
    main()
