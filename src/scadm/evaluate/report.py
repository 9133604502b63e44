"""An evaluation's record: JSON (every number and setting) and a Markdown report with figures.

Each protocol returns a `ProtocolResult`; `write_report` puts OUT/<protocol>.json,
OUT/<protocol>.md and OUT/figures/<protocol>-*.png side by side, with the exact command, the
device and the versions, so a committed report says how to regenerate itself.
"""

from __future__ import annotations

import json
import math
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from scadm import __version__
from scadm.errors import InputError


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list]
    note: str = ""

    def markdown(self) -> str:
        lines = [
            f"**{self.title}**",
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join(" --- " for _ in self.columns) + "|",
        ]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines + ([f"\n{self.note}"] if self.note else []))


@dataclass
class ProtocolResult:
    protocol: str
    title: str
    summary: str
    metrics: dict
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name in figures/, caption)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\N{EN DASH}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def device_name(device: str | torch.device) -> str:
    """The GPU's name, or the CPU model (platform.processor() is empty on most Linux systems)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({torch.get_num_threads()} torch threads)"
    except OSError:
        pass
    return (platform.processor() or platform.machine()) + f" ({torch.get_num_threads()} torch threads)"


def environment(device: str, command: str) -> dict:
    return {
        "command": command,
        "device": device_name(device),
        "scadm": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_report(result: ProtocolResult, out: Path, context: dict, env: dict) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    record = {"protocol": result.protocol, "environment": env, **context, "metrics": result.metrics}
    json_path = out / f"{result.protocol}.json"
    json_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    lines = [
        f"# {result.title}",
        "",
        result.summary,
        "",
        f"- Command: `{env['command']}`",
        f"- Device: {env['device']}; scadm {env['scadm']}, torch {env['torch']}; {env['date']}",
        f"- Data: {context['data_title']}",
        "- Models: " + ", ".join(f"`{n}` ({m['path']}, {m['fingerprint']})" for n, m in context["models"].items()),
        f"- Every number: [{json_path.name}]({json_path.name})",
        "",
    ]
    for table in result.tables:
        lines += [table.markdown(), ""]
    for name, caption in result.figures:
        lines += [f"![{caption}](figures/{name})", "", f"*{caption}*", ""]
    md_path = out / f"{result.protocol}.md"
    md_path.write_text("\n".join(lines))
    return json_path, md_path


def line_plot(
    path: Path, x: list, series: dict[str, list], xlabel: str, ylabel: str, title: str, logx: bool = False
) -> None:
    """One line per series over `x` (the paper's Fig. 8 style), saved as PNG."""
    try:
        import matplotlib
    except ImportError:
        raise InputError('report figures need matplotlib: pip install "scadm[metrics]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    for name, ys in series.items():
        ax.plot(x, [float("nan") if y is None else y for y in ys], marker="o", label=name)
    if logx:
        ax.set_xscale("log")
        ax.set_xticks(x, [str(v) for v in x])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
