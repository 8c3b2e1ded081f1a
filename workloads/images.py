"""Built-in image builders: ``synthetic``, ``dockerhub`` and ``deep``.

Each is ``(rng, **params) -> Image`` and builds its entries in bulk (``workloads.layout``):
a 100,000-file image is one pass over numpy arrays, with no per-entry validation, because
the layout is consistent by construction.

``dockerhub`` samples from distributions fitted to the published Docker Hub quantiles of
Zhao et al., "Large-Scale Analysis of the Docker Hub Dataset", CLUSTER '19 (quoted in
DRIVERS.md section 8.2).  What is published and what is ours:

* published: median image 94 MB uncompressed and 1,090 files, p90 image 1.3 GB; layers per
  image: half < 8, p90 < 18, max 120; about half of layers < 4 MB, 90 % < 177 MB.
* fitted by us (lognormals through two published quantiles, ``sigma = ln(q90/q50) / z90``
  with ``z90 = 1.2816``, the standard normal's 90th percentile):
  - layers per image = ceil(X), X lognormal with P(X <= 7) = 0.5 and P(X <= 17) = 0.9 (that
    is, P(layers < 8) = 0.5 and P(layers < 18) = 0.9): median 7, sigma = ln(17/7)/z90 = 0.692;
    clipped to [1, 120] (the published maximum);
  - layer size: median 4 MB, p90 177 MB: sigma = ln(177/4)/z90 = 2.957.  Used only as the
    *weights* that share an image's files among its layers;
  - files per image: median 1,090; the paper gives no file-count p90, so we *assume* the
    file count spreads like the image size (p90/median 1.3 GB / 94 MB):
    sigma = ln(1300/94)/z90 = 2.049; clipped to [1, 250,000].
* assumed (no published figure; DRIVERS.md marks the file-size CDF unverified): file sizes
  lognormal with sigma 2.0 and a mean equal to the median image's mean file size,
  94 MB / 1,090 = 86,239 bytes, so mu = ln(86,239) - sigma^2 / 2 (median ~11.7 KB); later
  layers overwrite 2 % and delete 1 % of the files below them.
"""

from __future__ import annotations

import math

import numpy as np

from simulator.image import Image

from .layout import Plan, assemble, churn, lognormal_sizes, make_dirs

FILES_PER_DIR = 16  # synthetic default density: files per directory when ``dirs`` is 0
Z90 = 1.2815515655446004  # standard normal quantile at 0.9

# Zhao et al. CLUSTER '19 (DRIVERS.md 8.2): published quantiles.
HUB_MEDIAN_IMAGE_BYTES = 94e6
HUB_P90_IMAGE_BYTES = 1.3e9
HUB_MEDIAN_FILES = 1090
HUB_LAYERS_BELOW_HALF = 8  # half of images have < 8 layers
HUB_LAYERS_BELOW_P90 = 18  # 90 % have < 18
HUB_MAX_LAYERS = 120
HUB_MEDIAN_LAYER_BYTES = 4e6
HUB_P90_LAYER_BYTES = 177e6
# Fitted by us from those quantiles (see the module docstring).
HUB_LAYERS_MEDIAN = HUB_LAYERS_BELOW_HALF - 1
HUB_LAYERS_SIGMA = math.log((HUB_LAYERS_BELOW_P90 - 1) / HUB_LAYERS_MEDIAN) / Z90  # 0.692
HUB_LAYER_BYTES_SIGMA = math.log(HUB_P90_LAYER_BYTES / HUB_MEDIAN_LAYER_BYTES) / Z90  # 2.957
HUB_FILES_SIGMA = math.log(HUB_P90_IMAGE_BYTES / HUB_MEDIAN_IMAGE_BYTES) / Z90  # 2.049 (assumed shape)
HUB_MAX_SAMPLED_FILES = 250_000
# Assumed: file-size spread; its mean is fixed by the published median image.
HUB_FILE_SIZE_SIGMA = 2.0
HUB_MEAN_FILE_BYTES = HUB_MEDIAN_IMAGE_BYTES / HUB_MEDIAN_FILES  # 86,239
HUB_OVERWRITE = 0.02
HUB_DELETE = 0.01


def synthetic(rng: np.random.Generator, layers: int, files: int, dirs: int, depth: int, size_median: int,
              size_sigma: float, overwrite: float, delete: float, symlinks: float, logs: int) -> Image:
    """Files spread uniformly over layers and directories, lognormal sizes, and a fraction of
    them overwritten or deleted by a later layer."""
    ndirs = dirs or max(1, files // FILES_PER_DIR)
    dir_paths = make_dirs(rng, ndirs, depth)
    layer = rng.integers(layers, size=files)
    plan = _plan("synthetic", rng, layers, dir_paths, layer, lognormal_sizes(rng, size_median, size_sigma, files),
                 overwrite, delete, size_median, size_sigma)
    plan.symlinks = int(round(symlinks * files))
    plan.logs = logs
    return assemble(rng, plan)


def _plan(name: str, rng: np.random.Generator, layers: int, dir_paths: list[str], layer: np.ndarray,
          sizes: np.ndarray, overwrite: float, delete: float, size_median: float, size_sigma: float) -> Plan:
    files = len(layer)
    when, kind = churn(rng, layer, layers, overwrite, delete)
    return Plan(name, layers, dir_paths, layer, rng.integers(len(dir_paths), size=files), sizes, when, kind,
                lognormal_sizes(rng, size_median, size_sigma, files))


def hub_layer_count(rng: np.random.Generator) -> int:
    x = rng.lognormal(math.log(HUB_LAYERS_MEDIAN), HUB_LAYERS_SIGMA)
    return int(min(HUB_MAX_LAYERS, max(1, math.ceil(x))))


def hub_file_count(rng: np.random.Generator) -> int:
    x = rng.lognormal(math.log(HUB_MEDIAN_FILES), HUB_FILES_SIGMA)
    return int(min(HUB_MAX_SAMPLED_FILES, max(1, round(x))))


def dockerhub(rng: np.random.Generator, layers: int, files: int, depth: int, overwrite: float, delete: float,
              logs: int) -> Image:
    """An image drawn from the Docker Hub distributions; ``layers``/``files`` 0 = sampled."""
    layers = layers or hub_layer_count(rng)
    files = files or hub_file_count(rng)
    weights = rng.lognormal(math.log(HUB_MEDIAN_LAYER_BYTES), HUB_LAYER_BYTES_SIGMA, size=layers)
    counts = rng.multinomial(files, weights / weights.sum())
    layer = np.repeat(np.arange(layers), counts)
    size_median = HUB_MEAN_FILE_BYTES * math.exp(-HUB_FILE_SIZE_SIGMA ** 2 / 2)  # mean -> median
    sizes = lognormal_sizes(rng, size_median, HUB_FILE_SIZE_SIGMA, files)
    dir_paths = make_dirs(rng, max(1, files // FILES_PER_DIR), depth)
    plan = _plan("dockerhub", rng, layers, dir_paths, layer, sizes, overwrite, delete, size_median,
                 HUB_FILE_SIZE_SIGMA)
    plan.logs = logs
    return assemble(rng, plan)


def deep(rng: np.random.Generator, layers: int, dirs: int, depth: int, files: int, size: int,
         logs: int) -> Image:
    """``layers`` layers, each adding ``files`` files to every one of the same ``dirs``
    directories (each ``depth`` levels deep), so every layer is in every directory's stack."""
    above = (["deep"] + [f"s{t}" for t in range(depth - 2)])[: depth - 1]
    dir_paths = sorted("".join(f"/{c}" for c in above) + f"/d{j}" for j in range(dirs))
    per_layer = files * dirs
    layer = np.repeat(np.arange(layers), per_layer)
    dir_index = np.tile(np.repeat(np.arange(dirs), files), layers)
    n = len(layer)
    plan = Plan("deep", layers, dir_paths, layer, dir_index, np.full(n, size, dtype=np.int64),
                np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.int64),
                logs=logs)
    return assemble(rng, plan)
