"""The models that ship inside scadm, by short name: the one table from a `--model` name to its folder.

Every command that takes `--model` (demo, sample, edit, evaluate, serve) resolves it here, so a name,
its folder and its licence are written once. A value that is not a known name is a pipeline folder,
as before; to use a folder that happens to be called like a model, write it as a path (./demo).
No heavy imports: the `scadm` command builds its help from this table without importing torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from scadm.errors import InputError

#: the face domains a model can be trained on: the demo and the editor's examples follow the model's
DOMAINS = ("procedural", "photos")
#: where the shipped pipeline folders live (tests point it elsewhere)
ASSETS = Path(__file__).parent / "assets"


@dataclass(frozen=True)
class ShippedModel:
    name: str
    folder: str  # under ASSETS
    summary: str  # what it renders and under which terms, for --help and reports
    domain: str  # the faces it was trained on, one of DOMAINS: what `scadm demo` and `scadm serve` show it

    @property
    def path(self) -> Path:
        return ASSETS / self.folder

    @property
    def installed(self) -> bool:
        return (self.path / "model_index.json").is_file()


SHIPPED = {
    m.name: m
    for m in (
        ShippedModel("demo", "demo-procedural-64", "64 px procedural cartoon faces (Apache-2.0)", "procedural"),
        ShippedModel(
            "realistic",
            "realistic-64",
            "64 px photo-realistic faces; NON-COMMERCIAL research only: trained on MobileStyleGAN faces "
            "(from NVIDIA's StyleGAN2-FFHQ, licence NC; FFHQ, CC BY-NC-SA 4.0) masked by BiSeNet "
            "(weights trained on CelebAMask-HQ, non-commercial)",
            "photos",
        ),
    )
}
#: the model a command uses without --model
DEFAULT_MODEL = "demo"
#: the default model's folder (what `scadm.demo.DEMO_MODEL` names)
DEMO_MODEL = SHIPPED["demo"].path


def known_names() -> str:
    return ", ".join(f"{name}{'' if m.installed else ' (not installed)'}" for name, m in SHIPPED.items())


def model_help(default: str | None = DEFAULT_MODEL) -> str:
    """The --model help: a name from the table or a pipeline folder, each name's summary."""
    names = "; ".join(f"'{name}': {m.summary}" for name, m in SHIPPED.items())
    tail = f" (default: {default})" if default else ""
    return f"a shipped model's name or a pipeline folder (from `scadm convert` or training){tail}. Names: {names}"


def shipped_name(folder: str | os.PathLike) -> str | None:
    """The short name of a shipped model's folder, None for any other folder: commands that a
    program writes for later (the web editor's replay line) name a shipped model so, not by its
    path inside this installation."""
    folder = Path(folder).resolve()
    return next((name for name, m in SHIPPED.items() if m.path.resolve() == folder), None)


def model_domain(folder: str | os.PathLike) -> str:
    """The domain of a pipeline folder: a shipped model's from the table; "procedural" for any other.
    A folder records its networks, not the faces they were trained on (procedural faces use
    CelebAMask-HQ's 19 classes too, so the labels cannot tell), and procedural faces need no extra
    package; a photo model of one's own edits photos with `scadm edit --mask auto` or
    scripts/realistic_photos.py --model DIR."""
    name = shipped_name(folder)
    return "procedural" if name is None else SHIPPED[name].domain


def resolve_model(model: str | os.PathLike | None, flag: str = "--model") -> Path:
    """The pipeline folder of a shipped model's name, of None (the default model), or `model` itself
    when it is not a name (a folder: its loader reports what is wrong with it)."""
    name = DEFAULT_MODEL if model is None else os.fspath(model)
    shipped = SHIPPED.get(name)
    if shipped is not None:
        if not shipped.installed:
            raise InputError(
                f"{flag} {name}: the {name} model is not installed (no {shipped.path / 'model_index.json'}); "
                f"known names: {known_names()}"
            )
        return shipped.path
    path = Path(name)
    if not path.exists():
        raise InputError(f"{flag} {name}: neither a known model name ({known_names()}) nor an existing folder")
    return path
