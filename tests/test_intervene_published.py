"""Table 4 (`intervene`) as the published script ran it, checked on tiny-sd against short
restatements of the published procedure, each with an injected fault the check catches.

Restated from the published intervention script (read, not copied):
- ODE: Karras et al. Alg. 2 with churn 0 and order 2 on the "denoised" convention
  (x0_hat = x - sigma eps_hat at the VP point x / sqrt(1 + sigma^2), slope (x - x0_hat) / sigma),
  every step evaluating the slope at its start point and at the Euler predictor; the schedule is
  n Karras sigmas without the trailing 0; inversion runs it backwards from the clean latent
  as the point at sigma_min, generation forwards and returns the point at sigma_min.
- Swaps: 8 pairs, both ways, each also with a plural "s"; one case-insensitive regex over all
  keys (in the order the table was built) replaces every listed word by its lower-case partner.
- Swap CMI: ll_ratio(x, swapped, original): 1/2 mean of w (||eps - eps_hat(z|swap)||^2 -
  ||eps - eps_hat(z|orig)||^2), its map 1/2 mean of w ||eps_hat(z|orig) - eps_hat(z|swap)||^2.
- Attention: DAAM traced over the regeneration of the original image under its caption.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from infodecomp.data.coco import load_coco_manifest
from infodecomp.data.spec import DataSpec
from infodecomp.data.swaps import (
    PUBLISHED_SWAP_TABLE,
    SWAP_TABLE,
    swap_all_listed,
    swap_edit,
)
from infodecomp.estimators.engine import draw
from infodecomp.estimators.queries import intervene_queries
from infodecomp.experiments.commands import intervene
from infodecomp.experiments.common import engine_config
from infodecomp.experiments.config import EstimatorConfig, InterveneConfig, RunConfig
from infodecomp.experiments.maps import daam_word_map, info_maps
from infodecomp.experiments.regeneration import change_map, regenerate
from infodecomp.models.dynamics.ode import evaluations, generate, invert, karras_sigmas
from infodecomp.models.families.sd import StableDiffusionDenoiser


def _coco100() -> Path | None:
    """The published COCO100-IT manifest, when the reference folder is there (tests pass
    without it; INFODECOMP_REFERENCE names it elsewhere)."""
    env = os.environ.get("INFODECOMP_REFERENCE")
    candidates = [Path(env), Path(env) / "info-decomp"] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared/reference/info-decomp")
    return next(
        (c / "COCO100-IT.csv" for c in candidates if (c / "COCO100-IT.csv").is_file()), None
    )


# --- restatements of the published procedure ---------------------------------------------------


def _published_slope(den, x: torch.Tensor, sigma: float, cond) -> torch.Tensor:
    logsnr = -2 * math.log(sigma)
    z = x * math.sqrt(1 / (1 + math.exp(-logsnr)))  # VP point
    eps = den.eps_hat(z, torch.full((len(x),), logsnr), cond)
    denoised = x - sigma * eps
    return (x - denoised) / sigma


def _published_step(den, x, cond, s0: float, s1: float) -> torch.Tensor:
    d = _published_slope(den, x, s0, cond)
    if s1 == 0:
        return x + d * (s1 - s0)
    x2 = x + d * (s1 - s0)
    d2 = _published_slope(den, x2, s1, cond)
    return x + (d + d2) / 2 * (s1 - s0)


def _published_schedule(den, n: int) -> list[float]:
    lo, hi = den.sigma_range
    ramp = torch.linspace(0, 1, n)
    sig = (hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7
    return [float(s) for s in sig]  # the reversible schedule: no trailing 0


def _published_reverse(den, x, cond, sched: list[float]) -> torch.Tensor:
    for i in range(len(sched) - 1):
        x = _published_step(den, x, cond, sched[-(i + 1)], sched[-(i + 2)])
    return x


def _published_generate(den, x, cond, sched: list[float]) -> torch.Tensor:
    for i in range(len(sched) - 1):
        x = _published_step(den, x, cond, sched[i], sched[i + 1])
    return x


def _published_swap(caption: str) -> str:
    pairs = [
        ("dog", "cat"),
        ("zebra", "horse"),
        ("bed", "table"),
        ("bear", "elephant"),
        ("airplane", "kite"),
        ("person", "monkey"),
        ("people", "monkeys"),
        ("teddy bear", "robot"),
    ]
    table: dict[str, str] = {}
    for a, b in pairs:
        table[a], table[b], table[a + "s"], table[b + "s"] = b, a, b + "s", a + "s"
    pattern = r"\b(" + "|".join(re.escape(k) for k in table) + r")\b"
    return re.sub(pattern, lambda m: table[m.group(0).lower()], caption, flags=re.IGNORECASE)


# --- ODE ----------------------------------------------------------------------------------------


class _Counting:
    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def eps_hat(self, z, logsnr, cond):
        self.calls += 1
        return self.inner.eps_hat(z, logsnr, cond)


class _Gauss:
    def eps_hat(self, z, logsnr, cond):
        return torch.sigmoid(-logsnr).sqrt().view(-1, 1, 1, 1) * z


@pytest.mark.parametrize("ends", ["zero", "sigma-min"])
def test_heun_makes_two_evaluations_per_step(ends: str) -> None:
    sigmas = karras_sigmas(0.03, 14.6, n=10)
    x, cond = torch.randn(1, 4, 4, 4), torch.zeros(1, 1)
    calls = {}
    for solver in ("heun", "heun-reuse"):
        den = _Counting(_Gauss())
        invert(den, x, cond, sigmas, solver=solver, ends=ends)
        calls[solver] = den.calls
        assert den.calls == evaluations(10, solver, ends)
        den.calls = 0
        generate(den, x, cond, sigmas, solver=solver, ends=ends)
        assert den.calls == evaluations(10, solver, ends)
    extra = 1 if ends == "zero" else 0
    assert calls["heun"] == 2 * 9 + extra
    assert calls["heun-reuse"] == 9 + 1 + extra  # the fault: the corrected point never evaluated


def _tiny_case(tiny_sd: StableDiffusionDenoiser):
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))  # unit variance
    cond = tiny_sd.encode_conditions(["a red circle", "a blue square"])
    return x, cond


def test_ode_is_the_published_karras_heun(tiny_sd: StableDiffusionDenoiser) -> None:
    x, cond = _tiny_case(tiny_sd)
    n = 12
    sched = _published_schedule(tiny_sd, n)
    sigmas = karras_sigmas(*tiny_sd.sigma_range, n=n)
    ref_t = _published_reverse(tiny_sd, x, cond, sched)
    ref_0 = _published_generate(tiny_sd, ref_t, cond, sched)

    def close(a, b) -> bool:
        return bool((a - b).norm() / b.norm() < 1e-4)

    ours_t = invert(tiny_sd, x, cond, sigmas, solver="heun", ends="sigma-min")
    assert close(ours_t, ref_t)
    assert close(generate(tiny_sd, ref_t, cond, sigmas, solver="heun", ends="sigma-min"), ref_0)
    # injected faults: the slope reused from the predictor; a step from / to sigma 0
    assert not close(invert(tiny_sd, x, cond, sigmas, solver="heun-reuse", ends="sigma-min"), ref_t)
    assert not close(invert(tiny_sd, x, cond, sigmas, solver="heun", ends="zero"), ref_t)
    assert not close(generate(tiny_sd, ref_t, cond, sigmas, solver="heun", ends="zero"), ref_0)


def _roundtrip_rmse(den, x, cond, sigmas, solver: str, ends: str) -> float:
    back = generate(den, invert(den, x, cond, sigmas, solver=solver, ends=ends), cond, sigmas,
                    solver=solver, ends=ends)  # fmt: skip
    return float((back - x).square().mean().sqrt())


def _compare_round_trips(tiny_sd, x, cond, n: int) -> None:
    sigmas = karras_sigmas(*tiny_sd.sigma_range, n=n)
    for ends in ("zero", "sigma-min"):
        new = _roundtrip_rmse(tiny_sd, x, cond, sigmas, "heun", ends)
        old = _roundtrip_rmse(tiny_sd, x, cond, sigmas, "heun-reuse", ends)
        print(f"round-trip RMS, {n} sigmas, ends={ends}: heun {new:.3g}, heun-reuse {old:.3g}")
        assert new < 0.75 * old, (ends, new, old)


def test_heun_round_trip_beats_the_old_step(tiny_sd: StableDiffusionDenoiser) -> None:
    """invert -> generate on tiny-sd, 30 Karras sigmas, one unit-variance latent: the RMS error
    of the true Heun step is below 3/4 of the old step's (the predictor slope reused) under
    both end-point conventions (measured: 0.0216 vs 0.0426, 0.0215 vs 0.0430)."""
    x, cond = _tiny_case(tiny_sd)
    _compare_round_trips(tiny_sd, x[:1], cond[:1], 30)


@pytest.mark.slow
def test_heun_round_trip_at_the_paper_sigmas(tiny_sd: StableDiffusionDenoiser) -> None:
    """The same at the paper's 100 sigmas, two latents (numbers: docs/architecture.md,
    "Table 4 as published"; run with -m slow -s)."""
    x, cond = _tiny_case(tiny_sd)
    _compare_round_trips(tiny_sd, x, cond, 100)


# --- swaps --------------------------------------------------------------------------------------

CAPTIONS = [
    ("A dog and two cats near a teddy bear on a bed.", "dog"),
    ("Dogs chasing a Cat", "dogs"),
    ("An airplane and a kite over people", "airplane"),
    ("Two teddy bears beside a robot and a bear", "teddy bears"),
    ("A zebra and horses by an elephant", "zebra"),
    ("A person feeding monkeys at a table", "person"),
]


def _manifest_rows() -> list[tuple[str, str]]:
    rows = list(CAPTIONS)
    manifest = _coco100()
    if manifest is not None:
        with manifest.open(newline="") as f:
            rows += [(r["correct_obj+context"], r["correct_obj"]) for r in csv.DictReader(f)]
    return rows


def test_published_swaps_match_the_published_rule() -> None:
    rows = _manifest_rows()
    for caption, word in rows:
        _, swapped = swap_edit(caption, word, "published")
        assert swapped == _published_swap(caption), caption
    # injected faults: infodecomp's own table (other partners, the word only, articles fixed),
    # and one wrong partner in the published table, each change some swapped captions
    distinct = [swap_edit(c, w, "distinct")[1] for c, w in rows]
    assert sum(d != _published_swap(c) for d, (c, _) in zip(distinct, rows, strict=True)) >= 3
    wrong = {**PUBLISHED_SWAP_TABLE, "bed": "couch"}
    assert any(swap_all_listed(c, wrong) != _published_swap(c) for c, _ in rows)
    assert SWAP_TABLE["bed"] == "couch" and PUBLISHED_SWAP_TABLE["bed"] == "table"


def test_coco100_loader_applies_the_published_swaps(tmp_path: Path) -> None:
    manifest = _coco100()
    if manifest is None:
        pytest.skip("published COCO100-IT not found (set INFODECOMP_REFERENCE)")
    with manifest.open(newline="") as f:
        for r in csv.DictReader(f):
            (tmp_path / f"{int(r['Image ID']):012d}.jpg").touch()
    spec = DataSpec(manifest=str(manifest), images=str(tmp_path), swaps="published")
    items = load_coco_manifest(spec, "coco100-it").items
    assert len(items) == 100 and all(it.swap_caption for it in items)
    assert all(it.swap_caption == _published_swap(it.caption) for it in items)
    distinct = load_coco_manifest(replace(spec, swaps="distinct"), "coco100-it").items
    changed = sum(a.swap_caption != b.swap_caption for a, b in zip(items, distinct, strict=True))
    assert changed > 20, changed  # the control: the default table differs on many rows


def test_swaps_option_is_refused_off_coco100() -> None:
    from infodecomp.data.registry import load_dataset
    from infodecomp.data.spec import DataSpec

    with pytest.raises(ValueError, match="data.swaps=published chooses COCO100-IT"):
        load_dataset(DataSpec(name="shapes-intervene", size=2, swaps="published"))
    with pytest.raises(ValueError, match="data.swaps=other is not one of"):
        DataSpec(name="coco100-it", swaps="other")


# --- swap CMI and the traced regeneration, through the command's own functions -----------------


def _items(n: int = 2) -> list:
    from infodecomp.data.registry import load_dataset
    from infodecomp.data.spec import DataSpec

    ds = load_dataset(DataSpec(name="shapes-intervene", size=8))
    items = [it for it in ds.items if it.swap_caption][:n]
    assert len(items) == n
    return items, ds


def _latents(tiny_sd, items, ds) -> torch.Tensor:
    from infodecomp.experiments.runner import _for_model

    return tiny_sd.encode_images([_for_model(tiny_sd, ds.load_image(it)) for it in items])


def _published_ll_ratio(den, x, v1: str, v2: str, logsnr, weight, eps):
    """ll_ratio(x, v1, v2) at the given draws: (total, pixel map [h, w])."""
    c1 = den.encode_conditions([v1] * len(logsnr))
    c2 = den.encode_conditions([v2] * len(logsnr))
    lv = logsnr.float()
    a = torch.sigmoid(lv).sqrt().view(-1, 1, 1, 1)
    s = torch.sigmoid(-lv).sqrt().view(-1, 1, 1, 1)
    z = a * x[None] + s * eps
    e1, e2 = den.eps_hat(z, lv, c1), den.eps_hat(z, lv, c2)
    w = weight.double().view(-1)
    llr = ((eps - e1).square().sum((1, 2, 3)) - (eps - e2).square().sum((1, 2, 3))).double()
    total = float(0.5 * (w * llr).mean())
    pix = (e2 - e1).square().sum(1).double()  # [S, h, w]
    return total, (0.5 * w.view(-1, 1, 1) * pix).mean(0)


def test_swap_edit_is_scored_by_its_own_cmi(tiny_sd: StableDiffusionDenoiser) -> None:
    items, ds = _items()
    xs = _latents(tiny_sd, items, ds)
    ecfg = engine_config(EstimatorConfig(n_samples=16), RunConfig(device="cpu", seed=5))
    queries = intervene_queries(items, xs, ["omit", "swap"])
    ests = info_maps(tiny_sd, queries, ecfg)
    for q, it, e, x in zip(queries, items, ests, xs, strict=True):
        logsnr, weight, eps = draw(q, ecfg)
        total, pix = _published_ll_ratio(
            tiny_sd, x, it.swap_caption, it.caption, logsnr, weight, eps
        )
        swap = intervene.EDIT_CONTRAST["swap"]
        assert e.info_s(swap)[0] == pytest.approx(total, rel=1e-3, abs=1e-4)
        assert torch.allclose(e.io_map[swap].double(), pix, rtol=1e-3, atol=1e-6)
        # injected fault: the omit map in place of the swap map
        omit = intervene.EDIT_CONTRAST["omit"]
        assert not torch.allclose(e.io_map[omit].double(), pix, rtol=1e-2)


def test_change_maps_use_each_edits_cmi_end_to_end(tiny_sd_dir: Path, tmp_path: Path) -> None:
    """intervene.process on tiny-sd: the swap row's pixel r is with the swap CMI map."""
    from infodecomp.experiments.runner import RunContext, _for_model
    from infodecomp.reporting.metrics import pearson_r

    items, ds = _items()
    den = StableDiffusionDenoiser.from_pretrained(tiny_sd_dir, device="cpu")
    cfg = InterveneConfig(n_sigmas=4, attention_path="regeneration", save_images=False)
    cfg.estimator.n_samples, cfg.run.device = 8, "cpu"
    ctx = RunContext(cfg, tmp_path, den, ds, torch.device("cpu"), 0, 1)
    images = [_for_model(den, ds.load_image(it)) for it in items]
    rows = intervene.process(ctx, items, images)
    xs = _latents(den, items, ds)
    ests = info_maps(
        den,
        intervene_queries(items, xs, cfg.edits),
        engine_config(cfg.estimator, cfg.run),
    )
    regen, _ = regenerate(den, items, xs, 4, cfg.edits, trace=None)
    for i, it in enumerate(items):
        swap_row = next(r for r in rows if r["item_id"] == it.item_id and r["edit"] == "swap")
        flat = change_map(regen, "swap", i).flatten().numpy()
        mine = pearson_r(flat, ests[i].io_map[1].flatten().numpy())
        wrong = pearson_r(flat, ests[i].io_map[0].flatten().numpy())  # fault: the omit map
        assert swap_row["pixel_r_cmi"] == pytest.approx(mine, abs=1e-4)
        assert abs(swap_row["pixel_r_cmi"] - wrong) > 1e-3
        assert swap_row["cmi_total"] == pytest.approx(ests[i].info_o(1)[0], rel=1e-4)
        assert np.isfinite(swap_row["roundtrip_rmse"]) and swap_row["roundtrip_rmse"] > 0


def test_attention_is_daam_over_the_regeneration(tiny_sd: StableDiffusionDenoiser) -> None:
    items, ds = _items(1)
    (it,) = items
    xs = _latents(tiny_sd, items, ds)
    n = 6
    sched = _published_schedule(tiny_sd, n)
    cond = tiny_sd.encode_conditions([it.caption])
    x_t = _published_reverse(tiny_sd, xs, cond, sched)
    with tiny_sd.trace(aggregation="daam") as rec:
        _published_generate(tiny_sd, x_t, cond, sched)
    ref = tiny_sd.word_map(rec.maps()[0], it.caption, it.word)
    _, maps = regenerate(
        tiny_sd, items, xs, n, ["omit"], solver="heun", ends="sigma-min", trace="daam"
    )
    ours = tiny_sd.word_map(maps[0], it.caption, it.word)
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-7)
    # injected fault: the DDIM inversion + reconstruction path gives another map
    ddim = daam_word_map(tiny_sd, it, xs[0], 5)
    assert not torch.allclose(ddim, ref, rtol=1e-2)
    # float16 autocast (published, on the GPU) runs on the CPU too, close to float32
    _, half = regenerate(
        tiny_sd, items, xs, n, ["omit"], solver="heun", ends="sigma-min", trace="daam",
        autocast="float16",
    )  # fmt: skip
    r = np.corrcoef(tiny_sd.word_map(half[0], it.caption, it.word).flatten(), ref.flatten())[0, 1]
    assert r > 0.99


def test_intervene_options_are_checked() -> None:
    with pytest.raises(ValueError, match="ode solver='rk4' is not one of"):
        InterveneConfig(ode_solver="rk4")
    with pytest.raises(ValueError, match="applies to the traced regeneration only"):
        InterveneConfig(regeneration_autocast="float16")
    with pytest.raises(ValueError, match="leave daam_steps unset"):
        InterveneConfig(attention_path="regeneration", daam_steps=10)
    with pytest.raises(ValueError, match="attention_path=other is not one of"):
        InterveneConfig(attention_path="other")
    with pytest.raises(ValueError, match="give omit and / or swap"):
        InterveneConfig(edits=["omit", "replace"])
