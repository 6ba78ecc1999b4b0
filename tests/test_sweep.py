"""The smoke sweep runs end to end on real offline data, and a killed sweep resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from metamixer.lab.sweep import cells, load_sweep

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "sweeps" / "smoke.yaml"


def seed0_clis(spec, modality, folder, tags=None) -> dict:
    """Each seed-0 cell's command parsed by its modality's CLI (nothing trained), by cell tag."""
    import importlib

    from metamixer.lab.sweep import cell_command

    main = importlib.import_module(f"metamixer.{modality}.__main__").main
    return {cell.tag: main(cell_command(cell, spec, folder)[4:], run=False) for cell in cells(spec)
            if cell.modality == modality and cell.seed == 0 and (tags is None or cell.tag in tags)}  # fmt: skip


def test_full_sweep_declares_every_axis_for_every_modality():
    spec = load_sweep(ROOT / "experiments" / "sweeps" / "full.yaml")
    grid = cells(spec)
    assert {c.modality for c in grid} == {"vision", "timeseries", "superres", "pointcloud"}
    assert not any(
        c.modality == "pointcloud" and ("token_mixer", "attention") in c.setting for c in grid
    )
    ts_kernels = {dict(c.setting)["kernel"] for c in grid if c.modality == "timeseries"}
    assert ts_kernels == {51, 25, 13}


def test_sweep_file_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    (tmp_path / "x.yaml").write_text("{}")
    bad.with_name("p.yaml").write_text(
        "mode: product\ngrid: {act: [gelu]}\nmodalities: {vision: {config: x.yaml, metric: m, knobs: {}}}\n"
    )
    with pytest.raises(ValueError, match="no knob for axes \\['act'\\]"):
        load_sweep(bad.with_name("p.yaml"))  # the full grid needs every knob
    bad.write_text("grid: {act: [gelu]}\nmodalites: {}\n")
    with pytest.raises(ValueError, match="missing top-level key 'modalities'"):
        load_sweep(bad)


def sweep(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "metamixer.lab.sweep", str(SMOKE), "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def test_smoke_sweep_is_killed_midway_and_resumes_without_redoing_cells(tmp_path):
    assert Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").exists(), (
        "Fashion-MNIST not installed (scripts/fetch-data fashion-mnist)"
    )
    root = tmp_path / "smoke"
    first = sweep(tmp_path)
    deadline = time.time() + 600
    while not list(root.glob("*/result.json")) and time.time() < deadline and first.poll() is None:
        time.sleep(1)
    os.killpg(first.pid, signal.SIGKILL)  # the sweep and its running cells
    first.wait()
    done = {p: p.stat().st_mtime for p in root.glob("*/result.json")}
    assert done, "no cell finished before the kill"
    second = sweep(tmp_path)
    output = second.communicate(timeout=900)[0]
    assert second.returncode == 0, output[-3000:]
    assert "finished, test/" in output  # each cell's line gives its metric
    for path, mtime in done.items():
        assert path.stat().st_mtime == mtime, f"{path.parent.name} was run again"
    results = [json.loads(p.read_text()) for p in root.glob("*/result.json")]
    assert len(results) == 4 and all(r["value"] is not None for r in results)
    accuracy = [r["value"] for r in results if r["modality"] == "vision"]
    assert all(0.3 < a <= 1.0 for a in accuracy)  # learned in 80 steps (BN needs dozens)
    for name in ("results.csv", "results.md", "axis-act.png"):
        assert (root / name).stat().st_size > 100


def test_dry_run_lists_cells_and_a_failed_cell_is_recorded_and_retried(tmp_path):
    spec = {
        "grid": {"token_mixer": ["no_such_mixer"]},
        "modalities": {"timeseries": {
            "config": ["experiments/timeseries/base.yaml", "experiments/timeseries/elecdemand.yaml"],
            "metric": "test/mse", "budget": ["--trainer.max_epochs=1"],
            "knobs": {"token_mixer": "--model.arch_args.token_mixers={}"},
        }},
    }  # fmt: skip
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))

    def sweep_cmd(*extra):
        return subprocess.run(
            [sys.executable, "-m", "metamixer.lab.sweep", str(path), "--out", str(tmp_path), *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    dry = sweep_cmd("--dry-run")
    assert dry.returncode == 0 and "--model.arch_args.token_mixers=no_such_mixer" in dry.stdout
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").rglob("log.txt"))
    first = sweep_cmd()
    assert first.returncode != 0 and "1 of 1 cells failed" in first.stderr
    cell = "timeseries__baseline"  # the first value of an axis is its baseline
    assert f"started {cell}" in first.stdout  # one line per cell as it starts and ends
    assert f"[1/1] {cell} failed: exit 2: error: unknown token mixer" in first.stdout
    result = json.loads(next((tmp_path / "bad").glob("*/result.json")).read_text())
    assert result["value"] is None and "unknown token mixer 'no_such_mixer'" in result["error"]
    log = next((tmp_path / "bad").glob("*/log.txt"))
    before = log.stat().st_mtime_ns
    assert sweep_cmd().returncode != 0 and log.stat().st_mtime_ns != before  # retried
    # a dry run checks what it can without training: the imports and the metric's name
    path.write_text(yaml.safe_dump({**spec, "imports": ["no_such_module_here"]}))
    dry = sweep_cmd("--dry-run")
    assert dry.returncode != 0 and "imports: no_such_module_here does not import" in dry.stderr
    bad_metric = {**spec["modalities"]["timeseries"], "metric": "mse"}
    path.write_text(yaml.safe_dump({**spec, "modalities": {"timeseries": bad_metric}}))
    dry = sweep_cmd("--dry-run")
    assert dry.returncode != 0 and "metric 'mse' is not a logged name" in dry.stderr


def test_missing_config_is_refused_before_any_cell(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "grid: {act: [gelu]}\nmodalities: {vision: {config: nowhere.yaml, metric: m,"
        " knobs: {act: '--x={}'}}}\n"
    )
    with pytest.raises(FileNotFoundError, match=r"config files not found: \['nowhere.yaml'\]"):
        load_sweep(path)


@pytest.mark.parametrize("modality", ["vision", "timeseries", "superres", "pointcloud"])
def test_the_full_sweeps_baseline_cell_is_the_modalitys_ffnet(modality, tmp_path, monkeypatch):
    """The baseline cell's knob arguments leave each modality's configured network unchanged."""
    import importlib

    from metamixer.lab.sweep import cell_command

    monkeypatch.chdir(tmp_path)  # run folders of the parsed CLIs stay out of the checkout
    spec = load_sweep(ROOT / "experiments" / "sweeps" / "full.yaml")
    baseline = next(c for c in cells(spec) if c.modality == modality)  # the first cell
    command = cell_command(baseline, spec, tmp_path / "sweep")
    configs = [a for c in spec["modalities"][modality]["config"] for a in ("--config", c)]
    main = importlib.import_module(f"metamixer.{modality}.__main__").main

    def network(args: list[str]) -> str:
        cli = main(args, run=False)  # no subcommand: parse and build only
        return repr(cli.model.model)

    plain = network(configs)
    assert network(command[4:]) == plain, f"{modality}: {baseline.label} is not the config's FFNet"


def write_sweep(tmp_path: Path, budget: list[str] | None = None) -> Path:
    spec = {
        "grid": {"act": ["default", "relu"], "mixer": ["ffnified", "hybrid"], "kernel": [3, 5]},
        "seeds": [0, 1],
        "records": str(tmp_path / "records"),
        "modalities": {"timeseries": {
            "config": ["experiments/timeseries/base.yaml", "experiments/timeseries/elecdemand.yaml"],
            "metric": "test/mse", "goal": "min", "budget": budget or [],
            "values": {"mixer": {"hybrid": "[ffnified,attention]"}},
            "extra": {"mixer": {"hybrid": ["--model.arch_args.depth=2"]}},
            "knobs": {"act": "--model.arch_args.token_acts={}",
                      "mixer": "--model.arch_args.token_mixers={}"},
        }},
    }  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_cells_per_seed_default_values_labels_and_axes_without_a_knob(tmp_path):
    from metamixer.lab.sweep import cell_args, run_sweep

    spec = load_sweep(write_sweep(tmp_path))
    grid = cells(spec)
    assert [c.name for c in grid] == [
        f"timeseries__{tag}__seed-{s}"
        for tag in ("baseline", "act-relu", "mixer-hybrid")
        for s in (0, 1)
    ]  # kernel has no knob here: no kernel cells
    args = {c.tag: cell_args(c, spec) for c in grid if c.seed == 1}
    assert not any("token_acts" in a for a in args["baseline"])  # default: the config's own
    assert "--model.arch_args.token_acts=relu" in args["act-relu"]
    assert "--seed_everything=1" in args["baseline"]
    hybrid = args["mixer-hybrid"]
    assert "--model.arch_args.token_mixers=[ffnified,attention]" in hybrid
    assert (
        "--model.arch_args.depth=2" in hybrid
        and "--model.arch_args.depth=2" not in args["act-relu"]
    )
    with pytest.warns(UserWarning, match="timeseries has no knob for kernel"):
        run_sweep(write_sweep(tmp_path), tmp_path / "out", dry_run=True)


def test_a_cell_with_a_committed_record_is_not_run_again_unless_its_arguments_changed(tmp_path):
    """A fresh checkout resumes from the records: the recorded cell is reused, a cell whose record
    was made with other arguments (here: the budget changed) runs again; ``--rerun`` repeats a
    recorded cell and reproduces its metric."""
    from metamixer.lab import results
    from metamixer.lab.sweep import cell_args, record_path, rerun, run_cell

    spec = load_sweep(write_sweep(tmp_path))
    cell = cells(spec)[0]
    results.save_record(record_path(cell, spec, tmp_path).parent, {
        "metrics": {"timeseries test/mse": 0.25}, "cell_args": cell_args(cell, spec),
        "group": cell.group, "sweep": "s", "modality": "timeseries", "order": 0,
    })  # fmt: skip
    row = run_cell(cell, spec, tmp_path / "out", threads=1)
    assert row["value"] == 0.25 and not (tmp_path / "out").exists()  # nothing ran
    tiny = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
            "--model.arch_args.dim=8", "--model.plot_series=0"]  # fmt: skip
    spec = load_sweep(write_sweep(tmp_path, budget=tiny))
    row = run_cell(cell, spec, tmp_path / "out", threads=1)
    assert (tmp_path / "out" / "s" / cell.name / "log.txt").is_file()  # it ran
    record = json.loads(record_path(cell, spec, tmp_path).read_text())
    assert record["metrics"]["timeseries test/mse"] == row["value"] != 0.25
    assert record["cell_args"] == cell_args(cell, spec) and record["seed"] == 0
    assert record["hardware"]["threads"] == 1  # the run's; this process has one per core
    assert record["machine"]["threads"] == 1 and record["machine"]["cpu"]  # the run's machine
    again = rerun(tmp_path / "s.yaml", cell.name, tmp_path / "again", threads=1)
    assert f"recorded {row['value']:.4g}, rerun {row['value']:.4g} (difference +0" in again
    assert "1 thread, torch" in again  # the machines named, here the same one


@pytest.mark.parametrize("modality", ["vision", "timeseries", "superres", "pointcloud"])
def test_every_cell_of_the_full_sweep_builds_a_network_its_knob_changed(
    modality, tmp_path, monkeypatch
):
    """No cell fails at start, and no cell silently trains the baseline's network."""
    monkeypatch.chdir(tmp_path)
    spec = load_sweep(ROOT / "experiments" / "sweeps" / "full.yaml")
    clis = seed0_clis(spec, modality, tmp_path / "sweep")
    networks = {tag: repr(cli.model.model) for tag, cli in clis.items()}
    baseline = networks.pop("baseline")
    same = [tag for tag, net in networks.items() if net == baseline]
    assert not same, f"{modality}: cells {same} build the baseline's network"


def test_cells_selects_cells_by_tag_pattern_and_refuses_a_pattern_that_matches_none(
    tmp_path, capsys
):
    from metamixer.lab.sweep import run_sweep

    full = ROOT / "experiments/sweeps/full.yaml"
    run_sweep(full, tmp_path, dry_run=True, modalities=["timeseries"],
              only=["baseline", "kernel-*"])  # fmt: skip
    listed = [line.split(" ")[0] for line in capsys.readouterr().out.splitlines()
              if line.startswith("timeseries__")]  # fmt: skip
    assert sorted({name.split("__")[1] for name in listed}) == [
        "baseline",
        "kernel-13",
        "kernel-25",
    ]
    assert len(listed) == 3 * 3  # three seeds each
    with pytest.raises(ValueError, match=r"--cells \['kernal-\*'\] match no cell; cells: baseline"):
        run_sweep(full, tmp_path, dry_run=True, modalities=["timeseries"], only=["kernal-*"])


@pytest.mark.parametrize(
    "name,modality,budget,skipped",
    [("full-vision32", "vision", ("max_epochs=8", "max_epochs=32"), set()),
     ("full-superres120", "superres", ("max_epochs=30", "max_epochs=120"),
      {"token_mixer-attention", "token_mixer-hybrid"})],
)  # fmt: skip
def test_a_longer_sweep_is_full_yamls_grid_with_only_the_budget_changed(
    name, modality, budget, skipped, tmp_path
):
    from metamixer.lab.sweep import cell_args

    sweeps = ROOT / "experiments" / "sweeps"
    spec, parent = load_sweep(sweeps / f"{name}.yaml"), load_sweep(sweeps / "full.yaml")
    assert spec["records"].endswith(f"sweep-{name}") and list(spec["modalities"]) == [modality]
    ours = {c.name: cell_args(c, spec) for c in cells(spec)}
    theirs = {c.name: cell_args(c, parent) for c in cells(parent)
              if c.modality == modality and c.tag not in skipped}  # fmt: skip
    assert ours.keys() == theirs.keys() and len(ours) == (19 - len(skipped)) * 3
    for cell, args in theirs.items():
        assert ours[cell] == [a.replace(*budget) for a in args]
    child = tmp_path / "audio.yaml"
    child.write_text(yaml.safe_dump({"extends": str(sweeps / "full.yaml"),
                                     "modalities": {"audio": {}}}))  # fmt: skip
    with pytest.raises(ValueError, match="without modalities \\['audio'\\]"):
        load_sweep(child)


def test_an_axis_figure_shows_only_modalities_with_cells_on_that_axis(tmp_path):
    from PIL import Image

    from metamixer.lab.sweep import plot_axis

    spec = {
        "name": "s",
        "modalities": {"vision": {"metric": "acc"}, "superres": {"metric": "psnr"}},
    }
    record = {"order": 0, "metrics": {"m": 1.0}}
    records = [
        {**record, "modality": "vision", "reference": True, "group": {"axis": "baseline", "value": "FFNet"}},
        {**record, "modality": "superres", "reference": True, "group": {"axis": "baseline", "value": "FFNet"}},
        {**record, "modality": "superres", "group": {"axis": "kernel", "value": "5"}},
    ]  # fmt: skip
    kernel, act = tmp_path / "axis-kernel.png", tmp_path / "axis-act.png"
    act.write_bytes(b"stale")
    plot_axis(records, "kernel", spec, kernel)
    plot_axis(records, "act", spec, act)
    assert Image.open(kernel).size[0] < 500  # one panel (superres), not two
    assert not act.exists()  # no cells on the axis: no figure, the stale one removed


@pytest.mark.parametrize("name,lr", [("vision-lr", 0.001), ("vision-lr2e-3", 0.002)])
def test_an_lr_sweep_trains_full_yamls_token_mixer_networks_at_its_lr(
    name, lr, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    sweeps = ROOT / "experiments" / "sweeps"
    spec, parent = load_sweep(sweeps / f"{name}.yaml"), load_sweep(sweeps / "full.yaml")

    def built(sweep, tags=None):
        return {tag: (repr(cli.model.model), cli.model.hparams.lr, cli.trainer.max_epochs)
                for tag, cli in seed0_clis(sweep, "vision", tmp_path, tags).items()}  # fmt: skip

    ours = built(spec)
    theirs = built(parent, set(ours))
    assert set(ours) == {"baseline", "token_mixer-attention", "token_mixer-hybrid"}
    assert len(cells(spec)) == 3 * 3
    assert spec["records"].endswith(f"sweep-{name}")
    for tag, (network, rate, epochs) in ours.items():
        assert network == theirs[tag][0] and epochs == theirs[tag][2] == 8
        assert rate == lr and theirs[tag][1] == 0.004


def test_a_metric_the_runs_do_not_log_stops_the_sweep_naming_what_they_log(tmp_path):
    """After the first cell: every other cell would fail the same way."""
    from metamixer.lab.sweep.job import Outcome
    from metamixer.lab.sweep.run import run_cells

    spec = load_sweep(write_sweep(tmp_path))
    todo = cells(spec)

    class Ran:  # an executor whose cells all exit 0 with a record that lacks the metric
        name = "local"

        def check(self):
            pass

        def threads(self):
            return 1

        def timeout_s(self):
            return None

        def describe(self):
            return "stand-in"

        def run(self, jobs):
            for job in jobs:
                yield job, Outcome(0, run={"metrics": {"test/mae": 0.5}})

    with pytest.raises(ValueError, match=r"metric 'test/mse' is not in the run's record \(it "
                       r"logged: test/mae\).*\(no further cells run\)"):  # fmt: skip
        run_cells(todo, spec, tmp_path / "out", Ran())
    assert len(list((tmp_path / "out").rglob("result.json"))) == 1
