import json
import subprocess
import sys

HEAVY = ["lightning", "pytorch_lightning", "timm", "spconv", "gluonts", "basicsr", "torchvision"]


def test_core_imports_torch_only():
    code = (
        "import json, sys, metamixer.core; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_metamixer_is_a_namespace_package():
    import metamixer

    assert getattr(metamixer, "__file__", None) is None, "metamixer/__init__.py must not exist"
    assert len(list(metamixer.__path__)) >= 1
