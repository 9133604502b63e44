"""The package's layering, read from the source (no imports run): nothing imports upward and the
library never prints. A rule broken here is a design change to make on purpose, not by accident."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
#: what the networks may build on: each other, the errors and the label sets
NETWORK_DEPENDENCIES = ("scadm.models", "scadm.nn", "scadm.errors", "scadm.labels")


def _modules() -> dict[str, tuple[set[str], int]]:
    """module name -> (the scadm modules it imports, absolute; its print() calls)."""
    found = {}
    for path in sorted((SRC / "scadm").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[:-1]  # what `from .` means, for a package's __init__ and its modules alike
        name = ".".join(parts if parts[-1] != "__init__" else package)
        imported, prints = set(), 0
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                imported.add(".".join(base + ([node.module] if node.module else [])))
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                prints += 1
        found[name] = ({m for m in imported if m == "scadm" or m.startswith("scadm.")}, prints)
    return found


MODULES = _modules()


def test_the_relative_imports_resolve_to_modules_that_exist():
    """The resolution below is right (else every rule would pass vacuously): `from ..errors` in
    scadm/models/unet.py is scadm.errors, and each imported scadm module is one of the package's."""
    assert "scadm.errors" in MODULES["scadm.models.unet"][0]
    assert "scadm.regions" in MODULES["scadm.pipeline"][0]
    for name, (imported, _) in MODULES.items():
        assert imported <= MODULES.keys(), (name, imported - MODULES.keys())


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith(("scadm.models", "scadm.nn"))))
def test_the_networks_import_nothing_above_them(name):
    assert not [m for m in MODULES[name][0] if not m.startswith(NETWORK_DEPENDENCIES)]


def test_only_the_command_line_imports_it_and_only_it_prints():
    for name, (imported, prints) in MODULES.items():
        if name.startswith("scadm.cli") or name == "scadm.__main__":
            continue
        assert not [m for m in imported if m.startswith("scadm.cli")], name
        assert prints == 0, f"{name} prints: the library reports through return values, errors and warnings"


def test_only_the_editor_and_its_command_import_the_editor():
    for name, (imported, _) in MODULES.items():
        if not name.startswith(("scadm.serve", "scadm.cli.serve")):
            assert not [m for m in imported if m.startswith("scadm.serve")], name
