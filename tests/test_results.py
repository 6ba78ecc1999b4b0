"""Every tested run writes a record; records collect into one table, older code versions marked."""

import hashlib
import json
from pathlib import Path

from metamixer.core.results import main as results

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
    assert (
        record["data"]["class"].endswith("TSLibDataModule") and len(record["data"]["sha256"]) == 64
    )
    results(["collect", "runs"])
    table = capsys.readouterr().out
    assert (
        f"{record['metrics']['test/mse']:.4f}" in table
        and "| timeseries | elecdemand | fit |" in table
    )
    record["code"]["commit"] = "0" * 40
    (run / "record.json").write_text(json.dumps(record))
    results(["collect", "runs"])
    assert "00000000 *" in capsys.readouterr().out


def test_readme_tables_are_generated_from_the_committed_records(tmp_path):
    """Every ``results:NAME`` table of the README equals what ``results/records/NAME`` gives; a
    hand-edited cell is named."""
    import pytest

    from metamixer.core.results import update_readme

    root = EXP.parent
    names = update_readme(root / "README.md", root / "results" / "records", check=True)
    assert "defaults" in names
    readme = (root / "README.md").read_text()
    block = readme[readme.index("<!-- results:defaults -->") :]
    row = next(line for line in block.splitlines() if line.startswith("| vision"))
    edited = tmp_path / "README.md"
    edited.write_text(readme.replace(row, row.replace("test/acc1 ", "test/acc1 1")))
    with pytest.raises(ValueError, match=r"README table 'defaults', row \d+, column 'metrics'"):
        update_readme(edited, root / "results" / "records", check=True)
    assert edited.read_text() != readme  # --check wrote nothing back
