"""Campaign files: the grid, cell ids and seeds, and errors that name file, line and key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from drivers import driver_names
from simulator.campaign.spec import builtin_campaign_path, load_campaign
from simulator.errors import BadInput
from workloads.builtin import IMAGES, WORKLOADS

GRID = """
name = "grid"
seeds = [0, 1]
containers = [1, 4]

[[images]]
name = "random"
params = { layers = [2, 3], entries = 5 }

[[drivers]]
name = "overlay"

[[drivers]]
name = "overlay"
label = "overlay+metacopy"
options = { metacopy = true }

[[drivers]]
name = "vfs"

[[workloads]]
name = "random"
params = { ops = 10 }

[[workloads]]
trace = "t.jsonl"
"""


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    (tmp_path / "t.jsonl").write_text('{"op": "create", "path": "/x", "size": 10}\n')
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_is_the_product_of_every_axis(tmp_path):
    c = load_campaign(write(tmp_path, GRID))
    # 2 images (layers 2, 3) x 3 driver variants x 2 workloads x 2 container counts x 2 seeds
    assert len(c.cells) == 2 * 3 * 2 * 2 * 2 == 48
    assert len({cell.id for cell in c.cells}) == 48
    assert len({cell.digest for cell in c.cells}) == 48
    assert [d.label for d in c.drivers] == ["overlay", "overlay+metacopy", "vfs"]
    assert [i.label for i in c.images] == ["random[layers=2]", "random[layers=3]"]
    assert c.images[0].spec == "random:entries=5,layers=2"  # sorted keys, the string inputs.py loads
    first = c.cells[0]
    assert first.id == "overlay|random[entries=5,layers=2]|random[ops=10]|c1|s0"
    trace_cell = next(cell for cell in c.cells if cell.workload.name == "t.jsonl")
    assert Path(trace_cell.runner_cell().workload) == (tmp_path / "t.jsonl").resolve()
    assert "|t.jsonl|" in trace_cell.id  # the path as written, so moving the directory keeps ids


def test_ids_and_seeds_do_not_depend_on_order_or_labels(tmp_path):
    a = load_campaign(write(tmp_path, GRID))
    reordered = GRID.replace('name = "vfs"', 'name = "vfs"\nlabel = "plain copies"').replace("seeds = [0, 1]",
                                                                                            "seeds = [1, 0]")
    b = load_campaign(write(tmp_path, reordered, "d.toml"))
    assert {c.id: c.run_seed for c in a.cells} == {c.id: c.run_seed for c in b.cells}


def test_run_seed_pairs_drivers_and_container_counts_but_not_seeds(tmp_path):
    c = load_campaign(write(tmp_path, GRID))
    by_inputs: dict[tuple, set[int]] = {}
    for cell in c.cells:
        by_inputs.setdefault((cell.image.key, cell.workload.key, cell.seed), set()).add(cell.run_seed)
    assert all(len(seeds) == 1 for seeds in by_inputs.values())  # every driver/count sees the same inputs
    assert len({next(iter(s)) for s in by_inputs.values()}) == len(by_inputs)  # distinct across inputs/seeds
    assert all(0 <= cell.run_seed < 2**63 for cell in c.cells)


def test_default_options_do_not_make_a_new_variant(tmp_path):
    text = GRID.replace("options = { metacopy = true }", "options = { metacopy = false }")
    with pytest.raises(BadInput, match=r"drivers: overlay is listed twice"):
        load_campaign(write(tmp_path, text))


def test_option_lists_are_axes_and_label_the_variants(tmp_path):
    text = GRID.replace("options = { metacopy = true }", "options = { metacopy = [true, false], index = true }")
    c = load_campaign(write(tmp_path, text))
    labels = [d.label for d in c.drivers]
    assert labels == ["overlay", "overlay+metacopy[metacopy=true]", "overlay+metacopy[metacopy=false]", "vfs"]
    assert [d.key for d in c.drivers[1:3]] == ["overlay[index=true,metacopy=true]", "overlay[index=true]"]


def test_workloads_taking_containers_get_the_cells_count(tmp_path):
    c = load_campaign(write(tmp_path, GRID))
    cell = next(x for x in c.cells if x.workload.name == "random" and x.containers == 4)
    assert cell.runner_cell().workload == "random:containers=4,ops=10"
    assert "containers" not in cell.workload.key


@pytest.mark.parametrize("old, new, line, key", [
    ('name = "vfs"', 'name = "nosuch"', 19, "drivers[2].name"),
    ("options = { metacopy = true }", "options = { metacopy = 7 }", 16, "drivers[1].options.metacopy"),
    ("options = { metacopy = true }", "options = { nosuch = 1 }", 16, "drivers[1].options"),
    ("params = { ops = 10 }", "params = { ops = -1 }", 23, "workloads[0].params.ops"),
    ("params = { ops = 10 }", "params = { opz = 10 }", 23, "workloads[0].params"),
    ('trace = "t.jsonl"', 'trace = "missing.jsonl"', 26, "workloads[1].trace"),
    ("seeds = [0, 1]", "seeds = [0, -1]", 3, "seeds"),
    ("containers = [1, 4]", "containers = []", 4, "containers"),
    ('name = "grid"', 'name = "grid"\nbogus = 1', 3, "bogus"),
    ("params = { layers = [2, 3], entries = 5 }", "params = { layers = [2, 2] }", 8, "images[0].params.layers"),
])
def test_errors_name_file_line_and_key(tmp_path, old, new, line, key):
    assert old in GRID
    path = write(tmp_path, GRID.replace(old, new))
    with pytest.raises(BadInput) as err:
        load_campaign(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: {key}"), message


def test_toml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, 'name = "x"\nseeds = [0,\n[[drivers]]\n')
    with pytest.raises(BadInput, match=rf"^{path}:3: invalid TOML"):
        load_campaign(path)


def test_missing_section_and_duplicate_label(tmp_path):
    with pytest.raises(BadInput, match=r"missing \[\[workloads\]\]"):
        load_campaign(write(tmp_path, GRID.split("[[workloads]]")[0]))
    twice = GRID.replace('name = "vfs"', 'name = "vfs"\nlabel = "overlay"')
    with pytest.raises(BadInput, match="label 'overlay' names two different variants"):
        load_campaign(write(tmp_path, twice))


def test_default_campaign_covers_every_registered_driver_and_the_main_workloads():
    path = builtin_campaign_path("default")
    raw = tomllib.loads(path.read_text())
    names = [d["name"] for d in raw["drivers"]]
    assert sorted(names) == ["aufs", "btrfs", "devicemapper", "overlay", "vfs", "zfs"]  # SPEC section 2
    assert set(driver_names()) <= set(names)
    assert len(raw["images"]) == 2 and all(i["name"] in IMAGES for i in raw["images"])
    assert all(w["name"] in WORKLOADS for w in raw["workloads"])
    if set(names) <= set(driver_names()):
        c = load_campaign("default")
        assert len(c.cells) == 6 * len(raw["workloads"]) * 2 * len(raw["seeds"]) * len(raw["containers"])
