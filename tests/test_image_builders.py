"""The built-in image builders: determinism, parameters, and what each promises to build."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from simulator.cli import main
from simulator.errors import BadInput
from simulator.image import image_from_dict
from simulator.imagetree import ImageDir, ImageFile, ImageTree
from simulator.inputs import load_image
from workloads import images
from workloads.builtin import IMAGES
from workloads.layout import DPKG_STATUS, DPKG_STATUS_BYTES, SYSTEM_DIRS


def build(name: str, seed: int = 0, **params):
    builtin = IMAGES[name]
    return builtin.build(np.random.default_rng(seed), **builtin.parse_params(params, name))


@pytest.mark.parametrize("name", ["synthetic", "dockerhub", "deep"])
def test_same_seed_same_image_other_seed_other_image(name: str) -> None:
    a, b, c = build(name, 0, files=500), build(name, 0, files=500), build(name, 1, files=500)
    assert a == b
    assert a != c


@pytest.mark.parametrize("name", ["synthetic", "dockerhub", "deep"])
def test_bulk_built_images_pass_full_validation(name: str) -> None:
    """The builders skip per-entry validation; the JSON loader's checks must still pass."""
    image = build(name, 3, files=400)
    again = image_from_dict(json.loads(json.dumps(image.to_dict())), "roundtrip")
    assert again == image


def test_synthetic_counts_follow_the_parameters() -> None:
    files, layers, logs = 2000, 6, 5
    image = build("synthetic", 0, files=files, layers=layers, overwrite=0.1, delete=0.05, logs=logs,
                  symlinks=0.02, depth=4)
    assert len(image.layers) == layers
    tree = ImageTree.build(image)
    # 2000 created, 5% = 100 deleted by a whiteout above; plus the logs and dpkg's status.
    assert tree.stats.files == files - 100 + logs + 1
    assert tree.stats.symlinks == 40  # 2% of 2000
    whiteouts = sum(e.type == "whiteout" for layer in image.layers for e in layer.entries)
    assert whiteouts == 100
    first_layer: dict[str, int] = {}
    rewritten = 0
    for k, layer in enumerate(image.layers):
        for e in layer.entries:
            if e.type == "file":
                if e.path in first_layer:
                    assert first_layer[e.path] < k  # an overwrite lies above the file it replaces
                    rewritten += 1
                else:
                    first_layer[e.path] = k
    assert rewritten == 200  # 10% of 2000
    generated = [p for p, n in tree.walk() if isinstance(n, ImageDir) and p not in SYSTEM_DIRS]
    assert max(p.count("/") for p in generated) <= 4
    status = tree.resolve_dir("/var/lib/dpkg").children["status"]
    assert isinstance(status, ImageFile) and status.size == DPKG_STATUS_BYTES
    assert sum(name.endswith(".log") for name in tree.resolve_dir("/var/log").children) == logs


def test_synthetic_with_one_layer_has_no_churn() -> None:
    image = build("synthetic", 0, files=300, layers=1)
    assert all(e.type != "whiteout" for e in image.layers[0].entries)
    assert ImageTree.build(image).stats.files == 300 + 8 + 1


def test_dockerhub_honours_given_layers_and_files() -> None:
    image = build("dockerhub", 0, layers=20, files=5000, overwrite=0.0, delete=0.0, logs=0)
    assert len(image.layers) == 20
    assert ImageTree.build(image).stats.files == 5000 + 1  # plus dpkg's status


def test_dockerhub_layer_counts_match_the_published_quantiles() -> None:
    """Zhao et al.: half of images have < 8 layers, 90% < 18, at most 120."""
    rng = np.random.default_rng(12345)
    counts = np.array([images.hub_layer_count(rng) for _ in range(4000)])
    assert abs(np.mean(counts < 8) - 0.5) < 0.03
    assert abs(np.mean(counts < 18) - 0.9) < 0.02
    assert counts.min() >= 1 and counts.max() <= 120


def test_dockerhub_file_counts_and_mean_size_match_the_median_image() -> None:
    rng = np.random.default_rng(7)
    counts = np.array([images.hub_file_count(rng) for _ in range(4000)])
    assert abs(np.median(counts) / 1090 - 1) < 0.1
    image = build("dockerhub", 1, layers=8, files=20_000, overwrite=0.0, delete=0.0, logs=0)
    sizes = [e.size for layer in image.layers for e in layer.entries if e.type == "file" and e.path != DPKG_STATUS]
    # the fitted mean: 94 MB / 1,090 files = 86,239 bytes (a lognormal of sigma 2 is heavy-tailed)
    assert abs(np.mean(sizes) / images.HUB_MEAN_FILE_BYTES - 1) < 0.25
    assert abs(np.median(sizes) / (images.HUB_MEAN_FILE_BYTES * math.exp(-2.0)) - 1) < 0.1


def test_dockerhub_sampled_when_zero() -> None:
    image = build("dockerhub", 5)
    assert 1 <= len(image.layers) <= 120


def test_deep_puts_every_layer_in_every_directory_stack() -> None:
    layers, dirs, files = 12, 3, 2
    image = build("deep", 0, layers=layers, dirs=dirs, depth=3, files=files, logs=0)
    tree = ImageTree.build(image)
    for j in range(dirs):
        d = tree.resolve_dir(f"/deep/s0/d{j}")
        assert d.stack == tuple(range(layers - 1, -1, -1))
        assert len(d.children) == layers * files
        assert d.lookup_probes("f0.so") == layers  # file 0 lies in the bottom layer: all 12 probed
        assert d.lookup_probes("missing") == layers
    assert tree.stats.files == layers * dirs * files + 1


def test_deep_depth_one_puts_directories_at_the_root() -> None:
    tree = ImageTree.build(build("deep", 0, layers=2, dirs=2, depth=1, files=1))
    assert tree.resolve_dir("/d0") is not None and tree.resolve_dir("/d1") is not None


@pytest.mark.parametrize("spec", ["synthetic:layers=0", "synthetic:files=-1", "synthetic:overwrite=1.5",
                                  "synthetic:size_sigma=x", "synthetic:bogus=1", "dockerhub:layers=501",
                                  "deep:dirs=0", "deep:layers=2.5"])
def test_bad_parameters_are_bad_input(spec: str) -> None:
    with pytest.raises(BadInput):
        load_image(spec)


def test_images_command_lists_the_builders(capsys) -> None:
    assert main(["images", "--json"]) == 0
    listed = {item["name"]: item for item in json.loads(capsys.readouterr().out)}
    assert {"synthetic", "dockerhub", "deep"} <= set(listed)
    params = {p["name"]: p for p in listed["synthetic"]["params"]}
    assert params["layers"]["default"] == 8 and params["layers"]["minimum"] == 1
    assert {"files", "depth", "size_median", "size_sigma", "overwrite", "delete"} <= set(params)


@pytest.mark.parametrize("spec", ["synthetic:layers=6,files=3000", "dockerhub", "deep"])
def test_columnar_footprint_equals_the_entries_loop(spec: str) -> None:
    """``LayerColumns.footprint`` (no Entry objects) gives what the loop over the entries
    gives, for every layer and block size."""
    from drivers.base import _footprint
    from simulator.image import Layer

    checked = 0
    for layer in load_image(spec, 3).layers:
        columns = layer.columns()
        if columns is None:
            continue
        plain = Layer(layer.id, layer.entries)
        for block in (512, 4096, 65536):
            assert columns.footprint(block) == _footprint(plain, block)
            checked += 1
    assert checked
