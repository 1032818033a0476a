"""Training curves of a run: ``training.png`` in the run folder and, optionally, TensorBoard event files.

Both show the same scalars, read from the rows of ``metrics.jsonl`` (see ``CURVES``):

- ``train/reward_mean``: mean rollout objective of the training batch (the GRPO reward), per logged step;
- ``train/kl``: KL(policy || EMA reference) per logged step;
- ``validation/policy_log_growth`` and ``validation/equal_weight_log_growth``: total net log growth over the
  validation split of the deterministic policy and of equal weight, after costs;
- ``validation/excess_t_stat``: t-statistic of the policy's per-bar excess log growth over equal weight;
- ``validation/policy_turnover`` and ``validation/equal_weight_turnover``: mean turnover per bar on validation.

matplotlib (Agg) and TensorBoard are imported inside the functions that use them, so importing the package stays
light; TensorBoard is an optional extra (``uv sync --extra tensorboard``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes
from .errors import ConfigError

# tag -> (row type, path of keys into the row); the order is the panel order of training.png.
CURVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "train/reward_mean": ("train", ("reward_mean",)),
    "validation/policy_log_growth": ("validation", ("policy", "log_growth")),
    "validation/equal_weight_log_growth": ("validation", ("equal_weight", "log_growth")),
    "validation/excess_t_stat": ("validation", ("excess_vs_equal_weight", "t_stat")),
    "validation/policy_turnover": ("validation", ("policy", "turnover")),
    "validation/equal_weight_turnover": ("validation", ("equal_weight", "turnover")),
    "train/kl": ("train", ("kl",)),
}
TENSORBOARD_DIR = "tensorboard"  # event files go to <run folder>/tensorboard
INSTALL_HINT = "uv sync --extra tensorboard (or: pip install tensorboard)"


@dataclass(frozen=True)
class Curve:
    """One scalar over optimizer steps: steps int64 [N], values float64 [N] (NaN where the log holds null)."""

    steps: np.ndarray
    values: np.ndarray


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl``; a line torn by a killed process is skipped."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _lookup(row: dict[str, Any], keys: tuple[str, ...]) -> float:
    value: Any = row
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def row_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The ``CURVES`` scalars one ``train`` or ``validation`` row holds (tag -> value; NaN for null)."""
    return {tag: _lookup(row, keys) for tag, (kind, keys) in CURVES.items() if row.get("type") == kind}


def extract_curves(rows: list[dict[str, Any]]) -> dict[str, Curve]:
    """Every ``CURVES`` series from metrics rows, in step order. A step logged twice keeps its last row (a resumed
    run drops the rows after its checkpoint before it replays them, so this only guards a hand-edited log)."""
    by_tag: dict[str, dict[int, float]] = {tag: {} for tag in CURVES}
    for row in rows:
        if not isinstance(row.get("step"), int):
            continue
        for tag, value in row_scalars(row).items():
            by_tag[tag][row["step"]] = value
    out = {}
    for tag, points in by_tag.items():
        steps = np.array(sorted(points), dtype=np.int64)
        out[tag] = Curve(steps, np.array([points[s] for s in steps.tolist()], dtype=np.float64))
    return out


def best_steps(rows: list[dict[str, Any]]) -> list[int]:
    """Steps at which a new best.pt was saved (validation rows with ``best`` true)."""
    return [r["step"] for r in rows if r.get("type") == "validation" and r.get("best") is True]


def training_png(curves: dict[str, Curve], best: list[int] | None = None, title: str = "") -> bytes:
    """PNG of the curves: five panels over optimizer steps; ``best`` steps (new best.pt) are marked with dotted
    lines on the validation panels."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [
        ("training reward (mean rollout objective)", [("train/reward_mean", "reward_mean", "C0")]),
        ("validation log growth (after costs)", [("validation/policy_log_growth", "policy", "black"),
                                                 ("validation/equal_weight_log_growth", "equal weight", "C1")]),
        ("validation excess t-stat vs equal weight", [("validation/excess_t_stat", "t-stat", "C2")]),
        ("validation turnover per bar", [("validation/policy_turnover", "policy", "black"),
                                         ("validation/equal_weight_turnover", "equal weight", "C1")]),
        ("KL(policy || EMA reference)", [("train/kl", "kl", "C3")]),
    ]
    fig = Figure(figsize=(9, 11))  # a fixed layout: constrained layout doubles the drawing time
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True)
    for ax, (name, series) in zip(axes, panels):
        for tag, label, color in series:
            c = curves[tag]
            marker = "o" if c.steps.size < 30 else None
            ax.plot(c.steps, c.values, label=label, color=color, lw=1.4, marker=marker, ms=3)
        if series[0][0].startswith("validation/"):
            for step in best or []:
                ax.axvline(step, color="0.75", lw=0.8, ls=":")
        if series[0][0] == "validation/excess_t_stat":
            for level in (-2.0, 0.0, 2.0):
                ax.axhline(level, color="0.6", lw=0.7, ls="--" if level else "-")
        # Not set_title: placing a title measures the tick labels of every axis again, a third of the drawing time.
        ax.text(0.0, 1.02, name, transform=ax.transAxes, fontsize=10, va="bottom")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8, loc="upper left")
    axes[-1].set_xlabel("optimizer step" + ("  (dotted: new best.pt)" if best else ""))
    fig.subplots_adjust(left=0.09, right=0.98, top=0.95 if title else 0.97, bottom=0.05, hspace=0.32)
    if title:
        fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def write_training_png(run_dir: str | Path) -> Path:
    """Regenerate ``<run_dir>/training.png`` from ``<run_dir>/metrics.jsonl``, atomically; returns its path."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    path = run_dir / "training.png"
    atomic_write_bytes(path, training_png(extract_curves(rows), best_steps(rows), title=run_dir.name))
    return path


def _flat_hparams(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dict flattened to ``section.key`` -> bool/int/float/str, as TensorBoard's hparams accept."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:  # None, lists (tuples of symbols, windows)
            out[name] = json.dumps(value)
    return out


class TensorBoardLog:
    """The ``CURVES`` scalars and the run's hyperparameters as TensorBoard event files in ``<run>/tensorboard``.

    ``purge_step`` (the step a resumed run continues from, plus one) hides events a killed run wrote after its last
    checkpoint, as ``metrics.jsonl`` drops those rows. When the folder is new (a fresh run, or a resumed one that
    had no TensorBoard files) the hyperparameters are written once and the rows already in ``metrics.jsonl`` are
    replayed, so the event files cover the whole run.
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], purge_step: int | None = None) -> None:
        writer_cls, hparams = _tensorboard()
        folder = run_dir / TENSORBOARD_DIR
        new = not folder.exists()
        self.writer = writer_cls(log_dir=str(folder), purge_step=None if new else purge_step)
        if new:
            # The hparams plugin links these hyperparameters to the scalar tags of the same folder.
            for summary in hparams(_flat_hparams(config), {tag: 0.0 for tag in CURVES}):
                self.writer.file_writer.add_summary(summary)
            metrics = run_dir / "metrics.jsonl"
            for row in read_metrics(metrics) if metrics.exists() else []:
                self.write(row)

    def write(self, row: dict[str, Any]) -> None:
        """Add the scalars of a ``train`` or ``validation`` metrics row (other rows are ignored)."""
        for tag, value in row_scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=row["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def check_tensorboard() -> None:
    """Raise ConfigError, with the install command, when the tensorboard package is missing."""
    _tensorboard()


def _tensorboard() -> tuple[Any, Any]:
    try:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams
    except ImportError:
        raise ConfigError(f"--tensorboard needs the tensorboard package, which is not installed. Install it with "
                          f"{INSTALL_HINT}, or train without --tensorboard.") from None
    return SummaryWriter, hparams
