"""Start-up cost of the `scadm` command: its module imports no heavy library (each command imports
what it needs when it runs). Checked in a fresh interpreter, by module names, not by timing."""

import subprocess
import sys

HEAVY = (
    "torch",
    "diffusers",
    "gradio",
    "torchmetrics",
    "accelerate",
    "scadm.train",
    "scadm.metrics",
    "scadm.parsing.parser",
    "scadm.parsing.bisenet",
    "scadm.serve",
    "scadm.evaluate",
)


def test_the_cli_and_its_parser_import_no_heavy_library():
    """What `scadm --help` and `scadm COMMAND --help` run: import the CLI, build every parser."""
    code = (
        "import sys; from scadm.cli.main import build_parser; build_parser(); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
