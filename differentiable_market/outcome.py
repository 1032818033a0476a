"""What a run concluded, said first and in words: whether best.pt is a trained policy or the untrained one (equal
weight seen through the action), what it earned on validation in annualised log growth, and what to run next.

Units: the headline of every command is annualised log growth in %/yr (mean log growth per bar times bars per year,
times 100); simple returns appear where a quant expects them (total return, CAGR) and are labelled as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .config import ExperimentConfig
from .metrics import SECONDS_PER_YEAR


def annualised_pct(total_log_growth: float, bars: int, bars_per_year: float) -> float:
    """Annualised log growth in %/yr of a path of ``bars`` bars whose log growth sums to ``total_log_growth``."""
    return 100.0 * total_log_growth / max(bars, 1) * bars_per_year


def bars_per_year_of(fingerprint: dict[str, Any]) -> float | None:
    """Bars per year of the data a run was trained on, from its fingerprint (as ``metrics.bars_per_year``)."""
    try:
        first, last = (np.datetime64(fingerprint[k].rstrip("Z"), "ns") for k in ("first_timestamp", "last_timestamp"))
        span = (last - first) / np.timedelta64(1, "s") / SECONDS_PER_YEAR
        return float((int(fingerprint["n_bars"]) - 1) / span) if span > 0 else None
    except (KeyError, TypeError, ValueError):
        return None


def untrained_label(cfg: ExperimentConfig) -> str:
    """The untrained policy of ``cfg`` named for what it is: "equal weight through the band (untrained policy)"."""
    return untrained_holding(cfg) + " (untrained policy)"


def untrained_holding(cfg: ExperimentConfig) -> str:
    """What the untrained policy of ``cfg`` holds: equal weight seen through the action."""
    cash_share = cfg.env.include_cash and cfg.policy.cash_target == "share"
    held = "equal weight over the assets and cash" if cash_share else "equal weight"
    through = {"band": " through the band", "partial": " through partial rebalancing", "target": ""}
    text = held + through.get(cfg.policy.action, f" through the '{cfg.policy.action}' action")
    if cfg.env.rebalance_every > 1:
        text += f", rebalanced every {cfg.env.rebalance_every} bars"
    return text


def starting_checkpoint(checkpoint_path: str | Path) -> str | None:
    """The --init-checkpoint a run started from, read from the run folder's config.json next to the checkpoint
    (``<run>/checkpoints/x.pt``); None when it started from scratch or the folder does not say."""
    p = Path(checkpoint_path)
    header = p.parent.parent / "config.json" if p.parent.name == "checkpoints" else None
    if header is None or not header.is_file():
        return None
    try:
        return json.loads(header.read_text(encoding="utf-8")).get("init_checkpoint")
    except (OSError, ValueError):
        return None


def is_untrained(step: int, checkpoint_path: str | Path | None = None) -> bool:
    """Whether a checkpoint of ``step`` is the untrained policy: step 0 of a run that did not start from another
    checkpoint (whose step 0 is that checkpoint's policy)."""
    return step == 0 and (checkpoint_path is None or starting_checkpoint(checkpoint_path) is None)


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a kill: the rows before it stand
    return rows


def training_outcome(run_dir: str | Path, data_root: str | None = None) -> str:
    """One line on what a finished training run's best.pt is, with its validation figures, and what to run next."""
    run_dir = Path(run_dir)
    rows = _rows(run_dir)
    header = next((r for r in rows if r.get("type") == "header"), {})
    validation = [r for r in rows if r.get("type") == "validation"]
    kept = [r for r in validation if r.get("best")]
    cfg = header.get("config", {})
    min_t = cfg.get("train", {}).get("select_min_t")
    ppy = bars_per_year_of(header.get("data", {})) or float("nan")
    root = data_root or cfg.get("data", {}).get("root", "DIR")
    backtest = f"differentiable-market backtest --checkpoint {run_dir}"
    study = f"differentiable-market study --data-root {root}"
    if not kept:
        return (f"Outcome: no checkpoint was kept as best.pt (no finite validation score). Check the data and the "
                f"learning rates, then train again; the run folder is {run_dir}.")
    best = kept[-1]
    step = best["step"]
    p, ew, ex = best["policy"], best["equal_weight"], best["excess_vs_equal_weight"]
    bars = int(best.get("bars", 0)) or 1
    figures = (f"validation log growth {annualised_pct(p['log_growth'], bars, ppy):+.1f}%/yr vs equal weight "
               f"{annualised_pct(ew['log_growth'], bars, ppy):+.1f}%/yr, excess t {ex['t_stat']:+.2f} over {bars} bars")
    if step == 0:
        init = header.get("init_checkpoint")
        if init:
            return (f"Outcome: best.pt is the starting policy (step 0, from {init}): no trained checkpoint beat it on "
                    f"validation ({figures}). Next: {backtest}.")
        trained = [r for r in validation if r["step"] > 0]
        if not trained:
            return (f"Outcome: best.pt is the untrained policy (step 0, no training steps ran): "
                    f"{_label_from_dict(cfg)}. Next: train with --epochs above 0.")
        top = max(trained, key=lambda r: r["excess_vs_equal_weight"]["t_stat"])
        gate = f"an excess t of at least {min_t:g} (--select-min-t)" if min_t is not None else "a finite score"
        return (f"Outcome: best.pt is the untrained policy (step 0): {_label_from_dict(cfg)}. No trained checkpoint "
                f"beat equal weight on validation with {gate}; the best reached t "
                f"{top['excess_vs_equal_weight']['t_stat']:+.2f} at step {top['step']}. Training found no evidence of "
                f"an edge here. Next: {study} judges the method over folds and seeds (checkpoints/latest.pt holds "
                "what training learned, without that evidence).")
    gate = f" (passed --select-min-t {min_t:g})" if min_t is not None else " (selection gate off)"
    return (f"Outcome: best.pt is the trained policy of step {step}{gate}: {figures}. One validation path is thin "
            f"evidence. Next: {backtest} scores it on the test split; {study} judges the method.")


def _label_from_dict(cfg: dict[str, Any]) -> str:
    from .config import config_from_dict

    try:
        return untrained_holding(config_from_dict(ExperimentConfig, cfg, "config.json config"))
    except Exception:  # noqa: BLE001  an unreadable config still gets its outcome line
        return "equal weight seen through the action"
