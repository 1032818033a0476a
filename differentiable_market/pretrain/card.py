"""The model card of a pretrained policy: what it learned from, up to which date, how it was chosen, how it did on
markets it never saw, and what it must not be used for. Built from the checkpoint's ``pretraining`` record (and an
evaluation table when one is given), so the card cannot say something the checkpoint does not."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..checkpoint import Checkpoint


def _range(values: list[int]) -> str:
    return f"{min(values)}-{max(values)}" if min(values) != max(values) else str(values[0])


def corpus_table(records: list[dict[str, Any]]) -> str:
    """One row per (role, family): markets, assets, bars, fees, dates."""
    rows = ["| role | family | markets | assets | bars | fees (bps) | dates |", "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["role"], r["family"]), []).append(r)
    for (role, family), rs in sorted(groups.items()):
        fees = ", ".join(f"{k:g}" for k in sorted({r["cost_bps"] for r in rs}))
        synthetic = family not in ("nyse", "folder")
        dates = ("synthetic (calendar only)" if synthetic else
                 f"{min(r['first_timestamp'] for r in rs)[:10]} .. {max(r['last_timestamp'] for r in rs)[:10]}")
        rows.append(f"| {role} | {family} | {len(rs)} | {_range([r['n_assets'] for r in rs])} | "
                    f"{_range([r['n_bars'] for r in rs])} | {fees} | {dates} |")
    return "\n".join(rows)


def model_card(ckpt: Checkpoint, evaluation: str | None = None, name: str = "pretrained policy") -> str:
    """Markdown model card of a pretrained checkpoint; ``evaluation`` is a markdown section of out-of-sample results
    (``benchmarks/compare_init.py`` writes one) placed under "How it did"."""
    pre = ckpt.pretraining
    if pre is None:
        raise ValueError(f"{ckpt.path} is not a pretrained checkpoint (it has no pretraining record).")
    records = pre["corpus"]
    settings = pre["settings"]
    n_params = sum(v.numel() for v in ckpt.policy_state.values())
    p = ckpt.config.policy
    families = Counter(r["family"] for r in records if r["role"] == "train")
    val = pre.get("validation") or {}
    last = pre.get("last_real_date")
    lines = [
        f"# Model card: {name}",
        "",
        f"- Checkpoint: `{ckpt.path.rsplit('/', 1)[-1]}`, sha256 `{ckpt.sha256[:16]}...`, {n_params:,} parameters.",
        f"- Policy: `{p.architecture}` (one network shared by every asset, so it runs on any universe), encoder "
        f"`{p.encoder}` ({p.asset_hidden} units), mixing `{p.mixing}`, head `{p.asset_head}`, action `{p.action}`, "
        f"context `{p.context}`; {'with' if ckpt.config.env.include_cash else 'without'} a cash asset.",
        f"- Features: {', '.join(ckpt.feature_spec.names)}; normalised on each market by a normaliser fitted on that "
        "market's own training bars (so a market it is applied to is normalised the same way).",
        f"- Trained for {pre.get('steps', ckpt.step)} steps of {settings['markets_per_step']} markets x "
        f"{settings['windows_per_market']} windows x {settings['lookback']} bars; best.pt is step {ckpt.step}, chosen "
        "on held-out validation markets of the corpus (never on a market it is later evaluated on).",
        "",
        "## What it learned from",
        "",
        f"{sum(families.values())} training markets ({', '.join(f'{k} {v}' for k, v in sorted(families.items()))}) "
        f"and {sum(r['role'] == 'validation' for r in records)} validation markets. Corpus hash "
        f"`{pre['corpus_sha256'][:16]}...`; every market's parameters, seed, dates and price hash are in the "
        "checkpoint's `pretraining.corpus` record.",
        "",
        corpus_table(records),
        "",
        f"**Last date of real data it learned from: {last[:10] if last else 'none (synthetic markets only)'}.** "
        + ("Applying it to a market whose validation or test bars start on or before that date is refused (train, "
           "study) or flagged (backtest, predict): its weights may have learned from those days' prices."
           if last else "It saw no real prices, so no date of a user's data overlaps its training."),
        "",
        "## How it was chosen",
        "",
        f"Validation score at the chosen step: {100 * val.get('score', float('nan')):+.2f}%/yr mean annualised excess "
        "log growth over equal weight across the validation markets, after each market's fees"
        + (": " + ", ".join(f"{f} {100 * v:+.1f}" for f, v in sorted(val.get("by_family", {}).items())) + " %/yr by "
           "family." if val.get("by_family") else "."),
        "",
        "## How it did on markets it never saw",
        "",
        evaluation or "No out-of-sample evaluation is attached to this card.",
        "",
        "## Use and limits",
        "",
        "- Daily bars of liquid assets; fees 5-20 bps one way in the corpus. Other bar sizes or fee levels are outside "
        "what it learned: fine-tune it (`--init pretrained` with training steps) or check it with the study first.",
        "- It is one candidate, not a verdict: the study's gate keeps it only where validation evidence says it "
        "beats equal weight and the untrained policy on your market; otherwise the run keeps equal weight.",
        "- Past edges of synthetic families and of NYSE 1962-1973 need not exist in your market.",
    ]
    return "\n".join(lines) + "\n"
