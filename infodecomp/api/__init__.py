"""infodecomp's Python API: load a model, score captions, draw information maps and MMSE curves.

```python
from infodecomp import api

model = api.load("tiny-sd")              # a preset, a hub id, a folder (or api.from_pipeline(pipe))
df = api.score(model, images, ["a dog on a sofa", "a cat on a sofa"], n_samples=100)
m = api.maps(model, image, "a dog on a sofa", word="dog")
m.overlay().savefig("dog.png")           # or m.plot(), m.save(path), m["cmi"]
api.mmse_curves(model, image, ["a dog on a sofa", "a cat"]).plot()
```

Conventions (as in the paper, arXiv 2310.07972, and the command line):
- information is in nats: i^o (orthogonal, eq. 6) and i^s (standard, eq. 5) pointwise mutual
  information of an image and a caption; CMI of a word given the caption without it (eq. 11);
  every estimate comes with its standard error over the logsnr samples;
- the channel is z = sqrt(sigmoid(logsnr)) x + sqrt(sigmoid(-logsnr)) eps; logsnr samples come
  from the `estimator` config's proposal (truncated logistic, loc 1, scale 2, clip 3);
- all captions of an image share one (logsnr, eps) draw, seeded by (`run.seed`, image key).

Settings are the command line's own dataclasses (`ModelConfig`, `EstimatorConfig`, `RunConfig`,
`AdapterOptions`); the computations are the commands' own (experiments.commands.aro / experiments.maps),
so the API and `infodecomp aro | localize | visualize` agree to the last digit.
"""

from __future__ import annotations

from infodecomp.api.curves import MMSECurves, mmse_curves
from infodecomp.api.loading import MODEL_OPTIONS, Model, as_model, from_pipeline, load
from infodecomp.api.maps import METHODS, InfoMaps, delete_word, maps
from infodecomp.api.scoring import SCORE_COLUMNS, score
from infodecomp.experiments.config import EstimatorConfig, ModelConfig, RunConfig
from infodecomp.models.presets import PRESETS, AdapterOptions

__all__ = [
    "METHODS",
    "MODEL_OPTIONS",
    "PRESETS",
    "SCORE_COLUMNS",
    "AdapterOptions",
    "EstimatorConfig",
    "InfoMaps",
    "MMSECurves",
    "Model",
    "ModelConfig",
    "RunConfig",
    "as_model",
    "delete_word",
    "from_pipeline",
    "load",
    "maps",
    "mmse_curves",
    "score",
]
