"""Every tested run writes a record; records collect into one table, older code versions marked."""

import hashlib
import json
from pathlib import Path

from metamixer.lab.results import main as results

EXP = Path(__file__).resolve().parents[1] / "experiments"


def test_a_tested_run_writes_a_record_and_records_collect_into_a_table(
    tmp_path, monkeypatch, capsys
):
    from metamixer.timeseries.__main__ import main

    monkeypatch.chdir(tmp_path)
    csv = EXP.parent / "data/timeseries/elecdemand.csv"
    fit = main(["fit", "--config", str(EXP / "timeseries/base.yaml"), "--config",
                str(EXP / "timeseries/elecdemand.yaml"), f"--data.root={csv.parent}",
                "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
                "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
                "--model.arch_args.dim=8", "--trainer.enable_progress_bar=false"])  # fmt: skip
    run = Path(fit.trainer.log_dir)
    record = json.loads((run / "record.json").read_text())
    assert record["metrics"] == json.loads((run / "metrics.json").read_text())
    assert record["config_sha256"] == hashlib.sha256((run / "config.yaml").read_bytes()).hexdigest()
    assert (record["modality"], record["experiment"], record["seed"]) == (
        "timeseries",
        "elecdemand",
        2021,
    )
    assert len(record["code"]["commit"]) == 40 and record["hardware"]["cpus"] >= 1
    assert record["hardware"]["cpu"]  # the model: CPU float results differ across models
    # the machine a study compares cells by: CPU model, torch's threads, torch version
    import torch

    assert record["machine"] == {"cpu": record["hardware"]["cpu"],
                                 "threads": torch.get_num_threads(), "torch": torch.__version__}  # fmt: skip
    assert (
        record["data"]["class"].endswith("TSLibDataModule") and len(record["data"]["sha256"]) == 64
    )
    results(["collect", "runs"])
    table = capsys.readouterr().out
    assert (
        f"{record['metrics']['test/mse']:.4f}" in table
        and "| timeseries | elecdemand | fit |" in table
        and f"| {run} |" in table
    )
    record["code"]["commit"] = "0" * 40
    (run / "record.json").write_text(json.dumps(record))
    results(["collect", "runs"])
    assert "00000000 *" in capsys.readouterr().out


def test_readme_and_docs_tables_are_generated_from_the_committed_records(tmp_path):
    """Every ``results:NAME`` table of the README and of every docs page equals what
    ``results/records/NAME`` gives; a hand-edited cell is named with its page."""
    import pytest

    from metamixer.lab.results import update_docs, update_readme

    root = EXP.parent
    records = root / "results" / "records"
    found = update_docs(root / "README.md", records, check=True)
    assert "defaults" in found[root / "README.md"]
    assert "cpu/vision" in found[root / "docs" / "vision.md"]  # the docs pages are checked too
    readme = (root / "README.md").read_text()
    block = readme[readme.index("<!-- results:defaults -->") :]
    row = next(line for line in block.splitlines() if line.startswith("| vision"))
    edited = tmp_path / "README.md"
    edited.write_text(readme.replace(row, row.replace("test/acc1 ", "test/acc1 1")))
    with pytest.raises(
        ValueError, match=r"README\.md, table 'defaults', row \d+, column 'metrics'"
    ):
        update_readme(edited, records, check=True)
    assert edited.read_text() != readme  # --check wrote nothing back


def test_a_hand_edited_docs_table_fails_the_check_and_is_regenerated(tmp_path, capsys):
    """``readme`` covers every page under ``docs/`` (nested folders too): ``--check`` names the
    edited page and changes nothing; without it the page's table is rewritten from the records."""
    import pytest

    root = EXP.parent
    records = root / "results" / "records"
    readme = (root / "README.md").read_text()
    block = readme[readme.index("<!-- results:defaults -->") :]
    table = block[: block.index("<!-- /results:defaults -->") + len("<!-- /results:defaults -->")]
    row = next(line for line in table.splitlines() if line.startswith("| vision"))
    (tmp_path / "README.md").write_text("# r\n")
    page = tmp_path / "docs" / "modality" / "page.md"
    page.parent.mkdir(parents=True)
    page.write_text(f"# page\n\n{table.replace(row, row.replace('| 0 |', '| 7 |'))}\nafter\n")
    edited = page.read_text()
    with pytest.raises(
        SystemExit, match=r"docs/modality/page\.md, table 'defaults', row 1, column 'seed'"
    ):
        results(["readme", str(tmp_path / "README.md"), str(records), "--check"])
    assert page.read_text() == edited
    results(["readme", str(tmp_path / "README.md"), str(records)])
    assert page.read_text() == f"# page\n\n{table}\nafter\n"
    assert "wrote 1 tables on 1 pages: defaults" in capsys.readouterr().out
    results(["readme", str(tmp_path / "README.md"), str(records), "--check"])
    with pytest.raises(SystemExit, match="no documentation folder"):
        results(
            ["readme", str(tmp_path / "README.md"), str(records), "--docs", str(tmp_path / "no")]
        )


def test_every_committed_record_is_shown_on_some_page():
    """No records folder drops out of the README and the docs: each ``record.json`` under
    ``results/records`` and each table spec lies under a table that some page shows."""
    from metamixer.lab.results import update_docs

    root = EXP.parent
    records = root / "results" / "records"
    shown = {
        n for names in update_docs(root / "README.md", records, check=True).values() for n in names
    }
    unshown = [
        path.relative_to(records).as_posix()
        for path in sorted([*records.rglob("record.json"), *records.glob("*.yaml")])
        if not any(
            path.relative_to(records).as_posix().startswith(f"{name}/") or path.stem == name
            for name in shown
        )
    ]
    assert not unshown, f"records shown on no page: {unshown[:5]}"


def test_grouped_records_give_mean_std_and_the_difference_to_the_reference():
    from metamixer.lab.results import grouped_table

    def record(axis, value, metric, result, reference=False, order=0):
        return {"group": {"axis": axis, "value": value}, "metrics": {metric: result},
                "reference": reference, "order": order, "code": {"commit": "abc" * 14}}  # fmt: skip

    records = [record("baseline", "FFNet", "v test/acc1", a, True) for a in (0.90, 0.91, 0.92)]
    records += [record("act", "relu", "v test/acc1", a, order=1) for a in (0.80, 0.81, 0.82)]
    records += [record("act", "tanh", "v test/acc1", a, order=2) for a in (0.905, 0.915, 0.92)]
    records += [record("act", "relu", "t test/mse", 0.5, order=1)]
    header, base, relu, tanh = grouped_table(records)
    assert header == ["axis", "value", "v test/acc1", "t test/mse", "code"]
    assert base[:4] == ["baseline", "FFNet", "91.0 ± 1.0 (3)", "—"]
    # untested differences, never bold: a study's tests are the study report's (test_study.py)
    assert relu[2] == "81.0 ± 1.0 (3), Δ -10.0"
    assert tanh[2] == "91.33 ± 0.76 (3), Δ +0.33"
    assert relu[3] == "0.5 (1)"  # no reference for this metric, a single run


def test_seeds_of_one_experiment_give_one_row_with_mean_and_std():
    from metamixer.lab.results import readme_table

    def record(experiment, seed, psnr, wall):
        return {"modality": "superres", "experiment": experiment, "seed": seed,
                "metrics": {"test/psnr": psnr}, "wall_seconds": wall,
                "code": {"commit": "abc" * 14}}  # fmt: skip

    seeds = [record("x2", s, p, w) for s, p, w in ((1, 34.6, 60), (0, 34.5, 70), (2, 34.7, 80))]
    header, row, single = readme_table([*seeds, record("x4", 0, 30.25, 61)])
    assert header == ["modality", "experiment", "metrics", "seed", "wall time", "code"]
    assert row == ["superres", "x2", "test/psnr 34.60 ± 0.10 (3)", "0, 1, 2", "1 min 10 s",
                   "abcabcab"]  # fmt: skip
    assert single[2:4] == ["test/psnr 30.25", "0"]  # a single run: its value, no spread


def test_identical_runs_show_three_significant_digits_however_small():
    from metamixer.lab.results import mean_std

    assert mean_std("max abs diff", [2.22e-16] * 3) == "2.22e-16 ± 0 (3)"
    assert mean_std("loss", [0.00925] * 3) == "0.00925 ± 0 (3)"
    assert mean_std("images/s", [5891.0] * 2) == "5891 ± 0 (2)"


def test_a_single_run_shows_its_difference_at_the_precision_of_its_value():
    from metamixer.lab.results import mean_std

    assert mean_std("test/acc1", [0.9279], [0.9285, 0.9291, 0.9274]) == "92.79 (1), Δ -0.04"


def test_a_stated_code_version_labels_records_of_a_copy_of_the_tree(monkeypatch, tmp_path):
    from metamixer.lab.results import code_version, save_record

    commit = "0123456789" * 4
    monkeypatch.setenv("METAMIXER_CODE_VERSION", f"{commit}-dirty")
    assert code_version() == {"commit": commit, "dirty": True}
    monkeypatch.setenv("METAMIXER_CODE_VERSION", commit)
    record = json.loads(save_record(tmp_path, {"metrics": {}}).read_text())
    assert record["code"] == {"commit": commit, "dirty": False}
    monkeypatch.delenv("METAMIXER_CODE_VERSION")
    assert code_version()["commit"] != commit  # this checkout's own commit again


def test_the_reproduction_table_refuses_a_config_that_does_not_exist(tmp_path):
    import pytest
    import yaml

    from metamixer.lab.results import spec_table

    root = EXP.parent
    spec = yaml.safe_load((root / "results/records/reproduction.yaml").read_text())
    rows = spec_table(root / "results/records/reproduction.yaml", root / "results/records", root)
    assert len(rows) == len(spec["rows"]) + 1 and "offline stand-in Fashion-MNIST" in rows[1][3]
    spec["rows"][0]["config"] = "experiments/vision/gone.yaml"
    (tmp_path / "reproduction.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match=r"config experiments/vision/gone\.yaml does not exist"):
        spec_table(tmp_path / "reproduction.yaml", root / "results/records", root)


def test_collect_lists_sweep_and_benchmark_records_too(capsys):
    """Records without a run's experiment name (sweep cells, peer benchmarks) collect by group."""
    results(["collect", str(EXP.parent / "results" / "records")])
    table = capsys.readouterr().out
    assert "| timeseries | axis=baseline, value=FFNet | sweep |" in table
    assert "series=Demand, model=FFNet" in table
    # where each run is and, for a sweep's cell, what it ran with
    assert "| results/records/sweep-full/superres/token_act-identity/seed-0 |" in table.replace(
        str(EXP.parent) + "/", ""
    )
    assert "--model.arch_args.token_acts=identity --model.arch_args.token_mixers=ffnified" in table


def test_only_code_changes_make_a_record_dirty_not_results_or_docs(tmp_path):
    import subprocess

    from metamixer.lab.results import code_version

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                       check=True, capture_output=True)  # fmt: skip

    (tmp_path / "results").mkdir()
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    for name in ("code.py", "README.md", "results/table.md", "docs/page.md", "docs/figures/a.png",
                 "mkdocs.yml"):  # fmt: skip
        (tmp_path / name).write_text("0\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "start")
    (tmp_path / "README.md").write_text("regenerated table\n")
    (tmp_path / "results/table.md").write_text("a sweep's report\n")
    (tmp_path / "docs/page.md").write_text("a regenerated docs table\n")
    (tmp_path / "docs/figures/a.png").write_text("an analysis figure\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: x\n")
    assert code_version(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("1\n")
    assert code_version(tmp_path)["dirty"] is True


def test_tables_and_figures_show_a_fraction_metric_in_the_same_unit():
    from metamixer.lab.results import display_scale, mean_std

    assert display_scale("test/acc1", [0.91, 0.92]) == 100.0  # recorded as fractions: in %
    assert display_scale("test/acc1", [91.0]) == 1.0  # already in %
    assert display_scale("test/mse", [0.4, 0.6]) == 1.0
    assert mean_std("test/acc1", [0.91, 0.93]).startswith("92.0")
