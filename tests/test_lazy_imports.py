"""The package root is lazy: the int8 and pruning tools do not pull in the Trainer, datasets or the CLI.
(yaml is not in the list: transformers' modeling code imports it.)"""

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("transformers.trainer", "datasets", "distilkit.trainer", "distilkit.config", "distilkit.cli",
         "distilkit.serialization.load", "onnx", "onnxruntime")


@pytest.mark.slow
@pytest.mark.parametrize("statement", [
    "import distilkit.quantization as q; q.quantize_int8, q.Int8Linear, q.select_modules",
    "import distilkit.pruning as p; p.prune_heads, p.kept_heads, p.removed_heads",
    "import distilkit.export as e; e.to_onnx, e.MissingExtraError",
    "from distilkit import losses",
    "import distilkit",
])
def test_light_imports_stay_light(statement):
    script = f"import sys\n{statement}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_public_names_resolve_and_are_listed():
    import distilkit
    import distilkit.export
    import distilkit.pruning
    import distilkit.quantization

    for package in (distilkit, distilkit.export, distilkit.pruning, distilkit.quantization):
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)
            assert name in dir(package)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        distilkit.nope
