"""Each checkout has its own environment layer over the shared cached packages: two clones with
different code, set up one after the other, each import their own."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_checkouts_set_up_in_turn_each_import_their_own_code(tmp_path):
    clones = {}
    for name in ("first", "second"):
        clones[name] = tmp_path / name
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clones[name])], check=True)
    core = Path("packages/core/src/metamixer/core/__init__.py")
    with open(clones["second"] / core, "a") as f:
        f.write('\nCHECKOUT = "second"\n')
    for name in ("first", "second"):  # the second set-up must not re-point the first
        subprocess.run([str(clones[name] / "scripts/setup-env")], check=True, capture_output=True)
    probe = "import metamixer.core as c; print(c.__file__, getattr(c, 'CHECKOUT', None))"
    for name, marker in (("first", "None"), ("second", "second")):
        out = subprocess.run(
            [str(clones[name] / ".venv/bin/python"), "-c", probe],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        ).stdout.split()
        assert out == [str(clones[name] / core), marker]
