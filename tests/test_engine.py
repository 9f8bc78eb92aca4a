"""The batched engine: invariances, seeds, per-sample identities, encoding counts, likelihood, ranking."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import pytest
import torch

from infodecomp.data.registry import load_dataset
from infodecomp.data.spec import DataSpec
from infodecomp.estimators.adaptive import estimate_ranking
from infodecomp.estimators.engine import EngineConfig, ItemEstimate, Query, estimate
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.models.oracles.exact import GaussianOracle, ShapesOracle

WIDE = LogsnrSampler(kind="uniform", low=-12.0, high=20.0, mode="stratified")
CAPTION = "a red circle above a blue square"


@pytest.fixture(scope="module")
def shapes() -> ShapesOracle:
    return ShapesOracle()


@pytest.fixture(scope="module")
def gauss() -> GaussianOracle:
    return GaussianOracle(seed=1)


def _shape_queries(oracle: ShapesOracle, n: int = 3) -> list[Query]:
    gen = torch.Generator().manual_seed(0)
    qs = []
    for i, k in enumerate((5, 300, 611)[:n]):
        x = oracle.sample_scene(k, gen)
        qs.append(Query(x, (CAPTION, "a red circle", ""), ((0, 2), (1, 2), (0, 1)), key=f"s{i}"))
    return qs


def _gauss_queries(oracle: GaussianOracle, n: int = 3) -> list[Query]:
    x, y = oracle.sample(n, torch.Generator().manual_seed(0))
    return [
        Query(x[i].float(), (tuple(y[i].tolist()), ""), ((0, 1),), key=("g", i)) for i in range(n)
    ]


def _assert_same(a: ItemEstimate, b: ItemEstimate, rtol: float = 1e-6) -> None:
    for name in ("logsnr", "weight", "mse", "mse_gauss", "io", "is_"):
        torch.testing.assert_close(
            getattr(a, name), getattr(b, name), rtol=rtol, atol=1e-9, msg=name
        )


class Counting:
    """Wraps a denoiser and records what the engine asks of it."""

    def __init__(self, inner: ShapesOracle) -> None:
        self.inner = inner
        self.device = inner.device
        self.encode_calls: list[list] = []
        self.rows: Counter = Counter()  # condition key -> rows passed to eps_hat
        self.calls = 0
        self._keys: list = []

    def encode_images(self, images):
        return self.inner.encode_images(images)

    def encode_conditions(self, conditions):
        self.encode_calls.append(list(conditions))
        self._keys = list(conditions)
        return torch.arange(len(conditions))  # rows index this call's key list

    def eps_hat(self, z, logsnr, cond):
        self.calls += 1
        assert z.shape[0] == logsnr.shape[0] == cond.shape[0]
        self.rows.update(self._keys[int(i)] for i in cond)
        return self.inner.eps_hat(
            z, logsnr, self.inner.encode_conditions([self._keys[int(i)] for i in cond])
        )


@pytest.mark.parametrize("which", ["shapes", "gauss"])
def test_chunk_size_invariance(which: str, shapes: ShapesOracle, gauss: GaussianOracle) -> None:
    oracle, qs = (
        (shapes, _shape_queries(shapes)) if which == "shapes" else (gauss, _gauss_queries(gauss))
    )
    cfg = EngineConfig(n_samples=12, sampler=WIDE, seed=3)
    r1 = estimate(oracle, qs, replace(cfg, max_batch=1))
    r64 = estimate(oracle, qs, replace(cfg, max_batch=64))
    r7 = estimate(oracle, qs, replace(cfg, max_batch=7))  # chunks that straddle items
    for a, b, c in zip(r1, r64, r7, strict=True):
        _assert_same(a, b)
        _assert_same(a, c)


def test_item_results_do_not_depend_on_the_other_items(shapes: ShapesOracle) -> None:
    q0, q1, q2 = _shape_queries(shapes)
    cfg = EngineConfig(n_samples=10, sampler=WIDE, max_batch=16, seed=0)
    (alone,) = estimate(shapes, [q1], cfg)
    together = estimate(shapes, [q0, q1], cfg)
    reordered = estimate(shapes, [q2, q1, q0], cfg)
    _assert_same(alone, together[1])
    _assert_same(alone, reordered[1])
    assert together[1].key == "s1"


def test_seeds(shapes: ShapesOracle) -> None:
    qs = _shape_queries(shapes, 2)
    cfg = EngineConfig(n_samples=8, sampler=LogsnrSampler(), seed=5)
    a, b = estimate(shapes, qs, cfg), estimate(shapes, qs, cfg)
    c = estimate(shapes, qs, replace(cfg, seed=6))
    for x, y, z in zip(a, b, c, strict=True):
        assert torch.equal(x.mse, y.mse) and torch.equal(x.logsnr, y.logsnr)
        assert not torch.equal(x.logsnr, z.logsnr) and not torch.allclose(x.mse, z.mse)
    assert not torch.equal(a[0].logsnr, a[1].logsnr)  # items get their own draws


def test_per_sample_identities_and_pixel_maps(shapes: ShapesOracle) -> None:
    qs = _shape_queries(shapes)
    ests = estimate(shapes, qs, EngineConfig(n_samples=16, sampler=WIDE, seed=1, pixel_maps=True))
    for q, e in zip(qs, ests, strict=True):
        assert e.mse.shape == (3, 16) and e.io.shape == e.is_.shape == (3, 16)
        assert e.io_map.shape == e.is_map.shape == (3, 16, 16)
        assert bool((e.io >= 0).all())
        for p, (w, wo) in enumerate(q.contrasts):
            torch.testing.assert_close(e.is_[p], e.mse[wo] - e.mse[w])
            io, _ = e.info_o(p)
            is_, _ = e.info_s(p)
            assert float(e.io_map[p].double().sum()) == pytest.approx(io, rel=1e-5, abs=1e-6)
            assert float(e.is_map[p].double().sum()) == pytest.approx(is_, rel=1e-5, abs=1e-6)
            assert io == pytest.approx(float((0.5 * e.weight * e.io[p]).mean()))
        assert e.dim == 3 * 16 * 16


def test_io_is_the_squared_difference_of_the_two_predictions(shapes: ShapesOracle) -> None:
    (q,) = _shape_queries(shapes, 1)
    (e,) = estimate(shapes, [q], EngineConfig(n_samples=6, sampler=WIDE, seed=2))
    # rebuild the draws by hand from the recorded logsnr and the engine's generator
    from infodecomp.estimators.engine import draw

    logsnr, _, eps = draw(q, EngineConfig(n_samples=6, sampler=WIDE, seed=2))
    torch.testing.assert_close(logsnr, e.logsnr)
    a, s = torch.sigmoid(logsnr).sqrt().float(), torch.sigmoid(-logsnr).sqrt().float()
    z = a.view(-1, 1, 1, 1) * q.x + s.view(-1, 1, 1, 1) * eps
    preds = [
        shapes.eps_hat(z, logsnr.float(), shapes.encode_conditions([c] * 6)) for c in q.conditions
    ]
    torch.testing.assert_close(
        e.io[0], (preds[0] - preds[2]).double().square().flatten(1).sum(-1), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        e.mse[1], (eps - preds[1]).double().square().flatten(1).sum(-1), rtol=1e-5, atol=1e-6
    )


def test_unconditional_is_encoded_and_evaluated_once(shapes: ShapesOracle) -> None:
    fake = Counting(shapes)
    gen = torch.Generator().manual_seed(0)
    xs = [shapes.sample_scene(k, gen) for k in (1, 2, 3)]
    qs = [
        Query(xs[0], ("a red circle", "a blue square", ""), ((0, 2), (1, 2), (0, 1)), key=0),
        Query(xs[1], ("a red circle", ""), ((0, 1),), key=1),
        Query(
            xs[2],
            ("a green triangle", "a red circle and a green triangle", ""),
            ((0, 2), (1, 2), (1, 0)),
            key=2,
        ),
    ]
    n = 5
    estimate(fake, qs, EngineConfig(n_samples=n, sampler=WIDE, max_batch=4))
    assert len(fake.encode_calls) == 1  # one encoding request per call ...
    (keys,) = fake.encode_calls
    # ... each distinct key once
    assert sorted(keys) == sorted({c for q in qs for c in q.conditions})
    assert keys.count("") == 1
    assert sum(fake.rows.values()) == n * sum(len(set(q.conditions)) for q in qs)
    assert fake.rows[""] == n * len(qs)  # one unconditional pass per item and sample
    assert fake.rows["a red circle"] == n * 2
    assert fake.calls == math.ceil(n * 8 / 4)  # chunks of max_batch rows


def test_repeated_conditions_are_evaluated_once(shapes: ShapesOracle) -> None:
    """A condition listed twice in a query costs one row per sample and gives its entries the
    very numbers the query without the repeat gives."""
    gen = torch.Generator().manual_seed(0)
    x = shapes.sample_scene(7, gen)
    plain = Query(x, ("a red circle", "a blue square", ""), ((0, 2), (1, 2)), key="d")
    repeated = Query(
        x,
        ("a red circle", "a blue square", "a red circle", "", ""),
        ((0, 3), (1, 4), (2, 3), (0, 2)),
        key="d",
    )
    cfg = EngineConfig(n_samples=6, sampler=WIDE, max_batch=5)
    fake = Counting(shapes)
    (a,) = estimate(shapes, [plain], cfg)
    (b,) = estimate(fake, [repeated], cfg)
    assert sum(fake.rows.values()) == 6 * 3  # 3 distinct conditions, not 5
    torch.testing.assert_close(b.mse, a.mse[[0, 1, 0, 2, 2]], rtol=0, atol=0)
    torch.testing.assert_close(b.io[:3], a.io[[0, 1, 0]], rtol=0, atol=0)
    assert (b.io[3] == 0).all() and (b.is_[3] == 0).all()  # a condition against itself
    torch.testing.assert_close(b.mse_gauss, a.mse_gauss, rtol=0, atol=0)


@pytest.mark.parametrize("max_batch", [7, 1000])
def test_prefix_estimates_are_the_first_samples(shapes: ShapesOracle, max_batch: int) -> None:
    """Nested budgets from one iid draw: prefix(m) holds the first m samples' values and pixel
    maps (a map's pixel sum is its i^o total), whatever the chunking; a map snapshot taken one
    sample off would not match."""
    (q,) = _shape_queries(shapes, 1)
    iid = replace(WIDE, mode="iid")
    cfg = EngineConfig(n_samples=20, sampler=iid, max_batch=max_batch, pixel_maps=True)
    (e,) = estimate(shapes, [q], replace(cfg, prefixes=(5, 12, 20)))
    (plain,) = estimate(shapes, [q], cfg)
    _assert_same(e, plain)
    torch.testing.assert_close(e.io_map, plain.io_map)
    assert e.prefix(20) is e
    for m in (5, 12):
        p = e.prefix(m)
        assert p.logsnr.shape == (m,) and p.io.shape == (3, m)
        torch.testing.assert_close(p.io, e.io[:, :m], rtol=0, atol=0)
        for c in range(3):
            total = p.info_o(c)[0]
            assert p.io_map[c].double().sum().item() == pytest.approx(total, rel=1e-5)
            off = 0.5 * float((e.weight[: m + 1] * e.io[c, : m + 1]).mean())
            assert p.io_map[c].double().sum().item() != pytest.approx(off, rel=1e-5)
            is_total = p.info_s(c)[0]
            assert p.is_map[c].double().sum().item() == pytest.approx(is_total, rel=1e-4, abs=1e-4)
    with pytest.raises(ValueError, match="no pixel maps kept"):
        e.prefix(7)
    (strat,) = estimate(shapes, [q], replace(cfg, sampler=WIDE, prefixes=(5,)))
    with pytest.raises(ValueError, match="not a sample of the proposal"):
        strat.prefix(5)
    with pytest.raises(ValueError, match="prefixes"):
        estimate(shapes, [q], replace(cfg, prefixes=(21,)))


def test_log_likelihood_and_bits_per_dim(gauss: GaussianOracle) -> None:
    x, y = gauss.sample(3, torch.Generator().manual_seed(7))
    qs = [
        Query(x[i].float(), (tuple(y[i].tolist()), ""), ((0, 1),), key=("ll", i)) for i in range(3)
    ]
    sampler = LogsnrSampler(kind="logistic", loc=0.7, scale=2.0, clip=6.0, mode="stratified")
    ests = estimate(gauss, qs, EngineConfig(n_samples=2000, sampler=sampler, seed=0))
    exact_cond = gauss.log_prob(x, y)
    exact_marg = gauss.log_prob(x)
    for i, e in enumerate(ests):
        for k, exact in ((0, exact_cond[i]), (1, exact_marg[i])):
            ll, se = e.log_likelihood(k)
            assert 0 < se < 0.5
            assert abs(ll - float(exact)) < 4 * se + 0.02, (i, k, ll, float(exact), se)
            bpd, bpd_se = e.bits_per_dim(k)
            assert bpd == pytest.approx(-ll / (e.dim * math.log(2)))
            assert bpd_se == pytest.approx(se / (e.dim * math.log(2)))
        # i^s of the contrast is the log-likelihood ratio on the same draws
        assert e.info_s(0)[0] == pytest.approx(
            e.log_likelihood(0)[0] - e.log_likelihood(1)[0], abs=1e-9
        )


def test_bad_queries_raise(shapes: ShapesOracle) -> None:
    x = torch.zeros(3, 16, 16)
    with pytest.raises(ValueError, match=r"contrast \(0, 2\) indexes outside its 2 conditions"):
        Query(x, ("a", ""), ((0, 2),), key="q")
    with pytest.raises(ValueError, match="outside"):
        Query(x, ("a", ""), ((-1, 0),))
    with pytest.raises(ValueError, match="has no conditions"):
        Query(x, (), key="q")
    qs = [Query(x, ("",), key=0), Query(torch.zeros(3, 8, 8), ("",), key=1)]
    with pytest.raises(ValueError, match="share the image shape"):
        estimate(shapes, qs, EngineConfig(n_samples=2))
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        estimate(shapes, qs[:1], EngineConfig(n_samples=2, max_batch=0))
    assert estimate(shapes, [], EngineConfig()) == []


# ----------------------------------------------------------------------------- adaptive ranking


@pytest.fixture(scope="module")
def relation_items(shapes: ShapesOracle):
    ds = load_dataset(DataSpec(name="shapes-relation", size=6, seed=2))
    queries = [
        Query(
            it.image,
            (*it.options, ""),
            tuple((j, len(it.options)) for j in range(len(it.options))),
            key=it.item_id,
        )
        for it in ds.items
    ]
    return ds.items, queries


@pytest.mark.parametrize("score", ["io", "is", "mmse"])
def test_adaptive_budget_and_floor(score: str, shapes: ShapesOracle, relation_items) -> None:
    items, qs = relation_items
    n_opt = [len(it.options) for it in items]
    cfg = EngineConfig(n_samples=45, sampler=WIDE, seed=0)
    res = estimate_ranking(
        shapes, qs, n_opt, cfg, scores=(score,), margin=1e9, round_samples=10, report_samples=0
    )
    assert [r.n_decision for r in res] == [45] * len(qs)  # never decided: the whole budget
    assert not any(r.decisions[score].decided for r in res)
    res = estimate_ranking(shapes, qs, n_opt, cfg, scores=(score,), round_samples=10)
    assert [r.key for r in res] == [q.key for q in qs]
    for r in res:  # the floor: no decision before 30 samples; an easy item decides right there
        assert r.n_decision >= 30 and r.n_decision in (30, 40, 45)
        assert r.report is not None and r.report.logsnr.numel() == r.n_report == 30


@pytest.mark.parametrize("score", ["io", "is"])
def test_adaptive_decisions_match_fixed_budget(
    score: str, shapes: ShapesOracle, relation_items
) -> None:
    items, qs = relation_items
    n_opt = [len(it.options) for it in items]
    cfg = EngineConfig(n_samples=60, sampler=WIDE, seed=0)
    fixed = estimate(shapes, qs, cfg)
    res = estimate_ranking(shapes, qs, n_opt, cfg, scores=(score, "mmse"), round_samples=10)
    pick = (lambda e, j: e.info_o(j)[0]) if score == "io" else (lambda e, j: e.info_s(j)[0])
    for it, f, r in zip(items, fixed, res, strict=True):
        assert r.n_decision <= cfg.n_samples
        assert max(range(2), key=lambda j: pick(f, j)) == r.decisions[score].pick
        if score == "is":  # i^s (and the denoising loss) rank the true caption first here
            assert r.decisions[score].pick == it.label == r.decisions["mmse"].pick
        # the reported values come from the fresh report draws, not from the decision
        assert r.report.score(score, 0)[0] != r.decisions[score].mean[0]
    assert min(r.n_decision for r in res) < cfg.n_samples  # easy items stop early


def test_adaptive_refuses_dishonest_settings(shapes: ShapesOracle, relation_items) -> None:
    _, qs = relation_items
    cfg = EngineConfig(n_samples=40, sampler=WIDE)
    with pytest.raises(ValueError, match="round_samples must be >= 2"):
        estimate_ranking(shapes, qs, [2] * len(qs), cfg, round_samples=1)
    with pytest.raises(ValueError, match="score 'bogus'"):
        estimate_ranking(shapes, qs[:1], [2], cfg, scores=("bogus",))
    with pytest.raises(ValueError, match="margin 2 < 3"):
        estimate_ranking(shapes, qs[:1], [2], cfg, margin=2.0)
    with pytest.raises(ValueError, match="min_samples 20 < 30"):
        estimate_ranking(shapes, qs[:1], [2], cfg, min_samples=20)
    quad = EngineConfig(n_samples=40, sampler=replace(WIDE, mode="quadrature"))
    with pytest.raises(ValueError, match="mode=quadrature"):
        estimate_ranking(shapes, qs[:1], [2], quad)


@pytest.mark.parametrize("mode", ["iid", "stratified", "antithetic"])
def test_adaptive_modes_pool_rounds_correctly(
    mode: str, shapes: ShapesOracle, relation_items
) -> None:
    """Every accepted mode keeps its own structure within each round: the decision draws are
    rounds of the mode, each independent of the others."""
    items, qs = relation_items
    cfg = EngineConfig(n_samples=50, sampler=replace(WIDE, mode=mode), seed=3)
    res = estimate_ranking(
        shapes, qs[:2], [2, 2], cfg, scores=("is",), margin=1e9, report_samples=0
    )
    for r in res:
        d = r.decisions["is"]
        assert r.n_decision == 50 and len(d.mean) == 2 and all(s > 0 for s in d.stderr)


# ----------------------------------------------------------------------------- bounded memory


class _LargestTensor:
    """Records the element count of the largest tensor any torch op produces inside the block."""

    def __enter__(self) -> _LargestTensor:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        record = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        record.largest = max(record.largest, t.numel())
                return out

        self.largest = 0
        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


class _Linear:
    """A cheap denoiser (eps_hat = z / 2 + a per-condition offset), so the engine's own tensors
    are the largest ones created."""

    device = torch.device("cpu")

    def encode_conditions(self, conditions):
        return torch.arange(len(conditions), dtype=torch.float32)

    def eps_hat(self, z, logsnr, cond):
        return 0.5 * z + cond.view(-1, 1, 1, 1)


@pytest.mark.parametrize("pixel_maps", [False, True])
def test_memory_does_not_grow_with_n_samples(shapes: ShapesOracle, pixel_maps: bool) -> None:
    qs = _shape_queries(shapes, 2)  # 3 conditions, 3 contrasts, images 3 x 16 x 16
    dim, max_batch = qs[0].x.numel(), 16
    largest = {}
    for n in (64, 2048):
        cfg = EngineConfig(
            n_samples=n, sampler=WIDE, max_batch=max_batch, seed=0, pixel_maps=pixel_maps
        )
        with _LargestTensor() as probe:
            ests = estimate(_Linear(), qs, cfg)
        largest[n] = probe.largest
        assert ests[0].mse.shape == (3, n)
    # 32x the samples, the same largest tensor: nothing the engine holds spans all samples
    assert largest[2048] == largest[64], largest
    assert largest[2048] <= 3 * max_batch * dim, (largest, max_batch * dim)


def test_the_probe_sees_a_tensor_that_spans_all_samples(shapes: ShapesOracle) -> None:
    (q,) = _shape_queries(shapes, 1)
    from infodecomp.estimators.engine import draw

    with _LargestTensor() as probe:
        draw(q, EngineConfig(n_samples=512, sampler=WIDE))  # eps [512, 3, 16, 16] at once
    assert probe.largest >= 512 * q.x.numel()


@pytest.mark.parametrize("shape", [(1,), (3,), (5,), (3, 5, 5), (3, 16, 16), (4, 8, 8)])
@pytest.mark.parametrize("max_batch", [1, 3, 16, 100])
def test_noise_blocks_equal_one_draw(shape: tuple, max_batch: int) -> None:
    """The engine's block-wise noise is `draw`'s noise, bit for bit, for any chunk size."""
    from infodecomp.estimators.engine import _NoiseStream, draw, item_generator

    for n in (1, 2, 7, 33):
        cfg = EngineConfig(n_samples=n, sampler=WIDE, max_batch=max_batch, seed=4)
        q = Query(torch.zeros(shape), ("a", ""), key=("k", n))
        _, _, eps = draw(q, cfg)
        gen = item_generator(cfg.seed, q.key)
        cfg.sampler.sample(n, gen)
        stream = _NoiseStream(gen, n, shape, -(-max_batch // 2) + 1)
        got, lo = [], 0
        while lo < n:  # walk like the engine: overlapping, non-decreasing windows
            hi = min(n, lo + max(1, max_batch // 2))
            got.append(stream.get(lo, hi).clone())
            lo = hi
        assert torch.equal(torch.cat(got), eps), (shape, max_batch, n)
