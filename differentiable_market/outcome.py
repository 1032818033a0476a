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
    """One line on what a finished training run's best.pt is, with its validation figures, and what to run next.

    Read from the run's metrics.jsonl: the last validation row's selection-gate decision (``gate.chosen_step``,
    ``gate.chosen_is_untrained``) says what best.pt holds; rows written before the gate recorded it fall back to the
    rows marked best."""
    run_dir = Path(run_dir)
    rows = _rows(run_dir)
    header = next((r for r in rows if r.get("type") == "header"), {})
    validation = [r for r in rows if r.get("type") == "validation"]
    cfg = header.get("config", {})
    min_t = cfg.get("train", {}).get("select_min_t")
    ppy = bars_per_year_of(header.get("data", {})) or float("nan")
    root = data_root or cfg.get("data", {}).get("root", "DIR")
    backtest = f"differentiable-market backtest --checkpoint {run_dir}"
    study = f"differentiable-market study --data-root {root}"
    if not validation:
        return f"Outcome: the run ended before its first validation; nothing was kept. Run folder: {run_dir}."
    gate = validation[-1].get("gate")
    if gate is not None:
        untrained, step = gate["chosen_is_untrained"], gate["chosen_step"]
    else:  # rows written before the gate recorded its decision
        kept = [r for r in validation if r.get("best")]
        step = kept[-1]["step"] if kept else 0
        untrained = step == 0 and not header.get("init_checkpoint")
    init = header.get("init_checkpoint")
    trained = [r for r in validation if r["step"] > 0 or (init and r["step"] == 0)]

    def figures(row: dict[str, Any]) -> str:
        bars = int(row.get("bars", 0)) or 1
        t_ew = row["excess_vs_equal_weight"]["t_stat"]
        vs_u = row.get("excess_vs_untrained")
        return (f"validation {annualised_pct(row['policy']['log_growth'], bars, ppy):+.1f}%/yr vs equal weight "
                f"{annualised_pct(row['equal_weight']['log_growth'], bars, ppy):+.1f}%/yr over {bars} bars, t vs "
                f"equal weight {t_ew:+.2f}" + (f", vs the untrained policy {vs_u['t_stat']:+.2f}" if vs_u else ""))

    if untrained:
        held = _label_from_dict(cfg)
        if not trained:
            return (f"Outcome: best.pt is the untrained policy ({held}): no training step ran. Next: train with "
                    "--epochs above 0.")
        if min_t is None:
            return (f"Outcome: best.pt is the untrained policy ({held}): no trained checkpoint had a finite "
                    f"validation score. Check the data and the learning rates. Run folder: {run_dir}.")

        def evidence(r: dict[str, Any]) -> float:
            vs_u = r.get("excess_vs_untrained")
            t_ew = r["excess_vs_equal_weight"]["t_stat"]
            return min(t_ew, vs_u["t_stat"]) if vs_u else t_ew

        top = max(trained, key=evidence)
        asked = gate.get("critical_t") if gate else None
        ask = (f"a t of at least {asked:.2f} against both, corrected for {gate['looks']} evaluations"
               if asked is not None else f"a t of at least {min_t:g}")
        return (f"Outcome: best.pt is the untrained policy ({held}). No trained checkpoint beat equal weight and the "
                f"untrained policy on validation with the evidence the selection gate asks ({ask}; --select-min-t "
                f"{min_t:g}); the strongest, step {top['step']}, had {figures(top)}. Training found no evidence of an "
                f"edge here. Next: {study} judges the method over folds and seeds (checkpoints/latest.pt holds what "
                "training learned, without that evidence).")
    row = next((r for r in reversed(validation) if r["step"] == step), validation[-1])
    what = f"the starting checkpoint's policy (step 0, from {init})" if step == 0 and init else f"step {step}"
    gate_text = " (selection gate off)" if min_t is None else " (it passed the selection gate)"
    return (f"Outcome: best.pt is {what}{gate_text}: {figures(row)}. One validation path is thin evidence. Next: "
            f"{backtest} scores it on the test split; {study} judges the method.")


def _label_from_dict(cfg: dict[str, Any]) -> str:
    from .config import config_from_dict

    try:
        return untrained_holding(config_from_dict(ExperimentConfig, cfg, "config.json config"))
    except Exception:  # noqa: BLE001  an unreadable config still gets its outcome line
        return "equal weight seen through the action"
