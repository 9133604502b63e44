"""Start-up cost of the `scadm` command: its module imports no heavy library (each command imports
what it needs when it runs). Checked in a fresh interpreter, by module names, not by timing."""

import subprocess
import sys

HEAVY = ("torch", "diffusers", "gradio", "torchmetrics", "accelerate", "scadm.train", "scadm.metrics",
         "scadm.parsing", "scadm.serve", "scadm.evaluate")


def test_importing_the_cli_imports_no_heavy_library():
    code = f"import sys, scadm.cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
