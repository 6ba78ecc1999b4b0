"""Cross-modality ablation sweeps over MetaMixer sub-operations.

    metamixer sweep experiments/sweeps/full.yaml [--modalities vision] [--dry-run]
    metamixer sweep experiments/sweeps/full.yaml --report   # tables + figures only

A sweep file declares the ``grid`` (axis -> values; the first value of every axis is the baseline)
and, per modality, the experiment config(s), a budget, the ``metric`` and its ``goal`` (max/min),
how each axis maps to that modality's command-line arguments (``knobs``: one argument or a list),
optionally its own values of some axes (``grid``), what a value label means there (``values``:
label -> argument text, e.g. ``hybrid: "[ffnified,attention]"``), arguments a value needs
besides its knob (``extra``: label -> list) and values to ``skip``.  The
value ``default`` passes no argument (the config's own choice, e.g. each mixer's own coefficient
activation).  An axis a modality has no knob for is skipped there with a warning.  ``seeds`` runs
every cell once per seed; ``imports`` lists modules every cell imports first (``--import``), e.g.
one that registers a new mixer (the sweep file's folder is on the cells' ``PYTHONPATH``).
``mode: one-at-a-time`` varies one axis at a time from the baseline, ``product`` runs the grid.

Every cell and seed is one ``python -m metamixer.<modality> fit`` run in its own folder under
``--out``; when it succeeds, its record (metric, resolved config, code version, data checksum,
seed, wall time, machine, the cell's arguments) is saved under ``records`` (``results/records/<name>`` for
a committed study).  A cell whose record exists with the same arguments is done: a killed sweep,
or one started on a fresh checkout holding the committed records, continues where it stopped.  A
failed cell is reported with its error's last line and run again next time.  ``--rerun CELL``
runs one recorded cell again and compares its metric with the record and the cell's seed spread.  Reports, written to
``report`` (default: the run folder): ``results.csv`` (one row per run), ``results.md`` (the study
report of ``metamixer.lab.study_text``: positive controls and cells with fewer than two seeds
first, then per modality Δ against the baseline with Welch's 95 % interval, p and Holm-corrected
p, bold where the corrected test rejects, the minimal detectable effect, mixed machines or code
versions flagged, and the conclusions per claim of the paper) and one figure per axis.  Parallel cells share the cores (threads = cores /
parallel).  Paths in the sweep file are read relative to its folder, the repository root two
levels up, or the current folder.

Cells run as subprocesses, so this module imports no modality package.  Where they run is the
executor's business (``--executor local|slurm|submitit-local|ray``, options from the file's
``executor:`` section or ``--slurm.KEY VALUE`` / ``--ray.KEY VALUE``; see
:mod:`metamixer.lab.sweep.executors` and docs/sweeps-on-clusters.md): it only runs the cells, the
records are written here as they end.  One driver runs a sweep at a time (``sweep.lock`` in its
run folder).
"""

from metamixer.lab.sweep.command import main
from metamixer.lab.sweep.report import plot_axis, write_reports
from metamixer.lab.sweep.run import rerun, run_cell, run_sweep
from metamixer.lab.sweep.spec import (
    Cell,
    cell_args,
    cell_command,
    cells,
    finished,
    load_sweep,
    read_sweep,
    record_path,
    records_root,
)

__all__ = [
    "Cell",
    "cell_args",
    "cell_command",
    "cells",
    "finished",
    "load_sweep",
    "main",
    "plot_axis",
    "read_sweep",
    "record_path",
    "records_root",
    "rerun",
    "run_cell",
    "run_sweep",
    "write_reports",
]
