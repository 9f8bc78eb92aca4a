"""Quickstart: infodecomp's Python API, offline, on the ShapesWorld oracle and on tiny-sd.

    python examples/quickstart.py [--out outputs/quickstart] [--n-samples 100]

1. ShapesWorld: the exact denoiser of a synthetic world of two coloured shapes (its images are
   [3, 16, 16] tensors from infodecomp.data). Score caption options, draw the CMI / MI maps of
   a word and the MMSE curves.
2. tiny-sd: a random-weight Stable Diffusion pipeline built offline. The same calls run on
   sd-2.1-base (`api.load("sd-2.1-base", device="cuda", dtype="float16")`) or on a diffusers
   pipeline already in memory (`api.from_pipeline(pipe)`, shown here on tiny-sd); with
   cross-attention, the maps add the DAAM and Attention+Information baselines.

Its numbers show the machinery, not a trained model's knowledge: tiny-sd's weights are random.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from infodecomp import api
from infodecomp.data.registry import load_dataset
from infodecomp.data.spec import DataSpec


def shapes_world(out: Path, n_samples: int) -> None:
    oracle = api.load("shapes-oracle")
    print(oracle)

    # Caption ranking: each image against its true caption and the objects-swapped one.
    relation = load_dataset(DataSpec(name="shapes-relation", size=4), None)
    scores = api.score(
        oracle,
        [it.image for it in relation.items],
        [list(it.options) for it in relation.items],
        n_samples=n_samples,
    )
    columns = ["image", "caption", "io", "io_se", "is", "is_se", "mmse", "n_samples"]
    print(scores[columns].to_string(index=False, float_format="%.2f"))
    truth = {i: it.options[it.label] for i, it in enumerate(relation.items)}
    for name, best in (("is", "idxmax"), ("io", "idxmax"), ("mmse", "idxmin")):
        picked = scores.loc[getattr(scores.groupby("image")[name], best)()]
        right = sum(picked["caption"].tolist()[i] == truth[i] for i in range(len(truth)))
        print(f"ranking by {name}: {right} of {len(truth)} images get their true caption")

    # Where in the image is one word informative? CMI given the rest of the caption, MI alone.
    word = load_dataset(DataSpec(name="shapes-localize", size=1), None).items[0]
    maps = api.maps(oracle, word.image, word.caption, word=word.word, n_samples=n_samples)
    for method, (value, se) in maps.totals.items():
        print(f"{maps.labels[method]}: {value:.3f} ± {se:.3f} nats")
    print("saved", maps.save(out / "shapes-maps.png"))
    curves = api.mmse_curves(
        oracle, word.image, [word.caption, word.context], n_samples=2 * n_samples
    )
    print("saved", curves.save(out / "shapes-mmse.png", title=word.caption))


def tiny_sd(out: Path, n_samples: int, daam_steps: int) -> None:
    model = api.load("tiny-sd", device="cpu")
    print(model)
    word = load_dataset(DataSpec(name="shapes-localize", size=1), None).items[0]
    image = word.image.clamp(-1, 1)  # image models take RGB in [-1, 1] (or PIL images, files)
    maps = api.maps(
        model, image, word.caption, word=word.word, n_samples=n_samples, daam_steps=daam_steps
    )
    print("maps:", ", ".join(maps.labels.values()))
    print("saved", maps.save(out / "tiny-sd-maps.png"))

    # A diffusers pipeline that is already loaded works the same way.
    from diffusers import StableDiffusionPipeline

    from infodecomp.models.tiny.sd import tiny_sd_path

    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_sd_path(), safety_checker=None, requires_safety_checker=False
    )
    wrapped = api.from_pipeline(pipe)
    df = api.score(wrapped, image, [word.caption, word.context], n_samples=n_samples)
    print(df[["caption", "io", "is", "mmse"]].to_string(index=False, float_format="%.2f"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/quickstart", help="folder for the figures")
    parser.add_argument("--n-samples", type=int, default=100, help="logsnr samples per estimate")
    parser.add_argument("--daam-steps", type=int, default=50, help="DDIM steps of DAAM")
    args = parser.parse_args(argv)
    out = Path(args.out)
    shapes_world(out, args.n_samples)
    tiny_sd(out, args.n_samples, args.daam_steps)


if __name__ == "__main__":
    main()
