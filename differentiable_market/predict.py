"""The allocation for the next bar: ``python -m differentiable_market.predict --checkpoint RUN [--holdings FILE]``.

Loads the data up to their last bar T-1 with the checkpoint's universe rule, features and train-fitted normaliser (as
the backtester does), and runs the deterministic policy over the window of ``lookback`` decision bars that ends at
T-1, started the way training and backtest windows are: a cold encoder at the window's first bar, all cash shown
there, each next decision shown the previous target drifted to the close of its bar (``env.observed_growth``). The
last decision, made after bar T-1 closes, is the one a researcher trades: filled at the open of the next bar
("open" execution) or at the close of T-1 ("close").

For that decision the policy is shown the current holdings: a CSV file of ``symbol,weight`` (``--holdings``), or,
without one, its own previous target drifted to the last close, which is what the window's path implies. The target
is printed and written as JSON with the expected turnover and fee of trading to it from those holdings.

On a union calendar (``--calendar union``) every decision of the window holds only the assets tradeable at its bar
(the market's causal mask, as the backtester): the target puts exactly 0 on the assets not tradeable at the last
bar, as known at it, and is renormalised over the others (+ cash); ``Prediction.excluded`` names them with the
reason (not yet listed, or no print for more than ``max_fill_bars`` bars: delisted or halted).

No price after the last bar is needed: the growth a decision earns (``decision_growth``) is never used, and the
holdings shown at a decision need only the bars up to it. Given the same window and holdings, the weights equal
the backtester's for that decision bar (a test checks it), since the features are causal.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, console
from .argparsing import Parser
from .atomic import atomic_write_new, json_safe
from .checkpoint import (Checkpoint, build_policy, check_market_matches, checkpoint_notes, feature_spec_for,
                         load_checkpoint, resolve_checkpoint_name)
from .config import DataConfig, Execution
from .configfile import check_sections, dump, read_config_file, section_values
from .data import MarketData, execution_note, load_market, resolve_data_root
from .env import account, decision_growth, execution_horizon, growth_where_tradeable, observed_growth, tradeable_columns
from .errors import CheckpointError, DataError, DifferentiableMarketError
from .features import compute_features
from .flags import add_config_flags, add_output_flags
from .marketsimulator.report import iso
from .policy import Policy
from .rollout import generate_paths
from .splits import through_cutoff, train_end_cutoff
from .trainer import market_mask

FORMAT = "differentiable_market.prediction"
FORMAT_VERSION = 1
CASH = "CASH"
SUM_TOLERANCE = 1e-6  # how far the weights of a holdings file may sum from 1


@dataclass(frozen=True)
class Holdings:
    """Weights held before the decision, [A (+1 cash)] float64 on the simplex, and where they come from."""

    weights: np.ndarray
    source: str  # "file" or "policy"
    detail: str  # the file's path, or what the policy's own holdings are


@dataclass(frozen=True)
class Prediction:
    """The target for the next fill and what it is based on. Weight arrays are float64 [A (+1 cash)]."""

    checkpoint: Checkpoint
    names: tuple[str, ...]  # the symbols, then CASH when the policy trades cash
    decision_bar: str  # ISO timestamp of the last bar: the decision is made after it closes
    execution: Execution
    target: np.ndarray
    holdings: Holdings
    turnover: float  # sum of |target - holdings| over non-cash assets, fraction of wealth
    fee: float  # cost_rate * turnover, fraction of wealth
    cost_bps: float
    window_bars: tuple[int, int]  # first and last decision bar of the window (indices into the data)
    window_weights: np.ndarray  # [L, A (+1)] the path's targets; the last row is shown the policy's own holdings
    market: MarketData
    data: dict[str, Any]
    notes: tuple[str, ...]
    excluded: dict[str, str] = dataclasses.field(default_factory=dict)  # symbol -> why it is not tradeable (weight 0)

    @property
    def fill(self) -> str:
        if self.execution == "open":
            return f"at the open of the bar after {self.decision_bar}"
        return f"at the close of {self.decision_bar}"

    def to_dict(self) -> dict[str, Any]:
        """Content of the JSON file."""
        ts, ck = self.market.timestamps, self.checkpoint
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "decision_bar": self.decision_bar,
            "execution": self.execution,
            "fill": self.fill,
            "target_weights": dict(zip(self.names, self.target.tolist())),
            "holdings": dict(zip(self.names, self.holdings.weights.tolist())),
            "excluded": dict(self.excluded),
            "holdings_source": self.holdings.source,
            "holdings_detail": self.holdings.detail,
            "expected_turnover": self.turnover,
            "expected_fee": self.fee,
            "cost_bps": self.cost_bps,
            "checkpoint": {"path": str(Path(ck.path).resolve()), "sha256": ck.sha256, "step": ck.step,
                           "trained_through": ck.trained_through, "validated_through": ck.validated_through},
            "window": {"first_decision": iso(ts[self.window_bars[0]]), "last_decision": iso(ts[self.window_bars[1]]),
                       "decision_bars": self.window_bars[1] - self.window_bars[0] + 1,
                       "start": "cold encoder and all cash at the first decision, as training and backtest windows"},
            "data": self.data,
            "notes": list(self.notes),
            "conventions": (
                "Weights are fractions of wealth. target_weights is the mean (deterministic) action for the decision "
                "made after decision_bar closes, filled as 'fill' says. expected_turnover = sum over non-cash assets "
                "of |target - holdings|; expected_fee = cost_bps * 1e-4 * expected_turnover, a fraction of wealth. "
                "holdings 'policy': the policy's previous target drifted to the close of decision_bar. excluded: "
                "the assets not tradeable at decision_bar as known at it (union calendar), each with the reason; "
                "their target weight is exactly 0."),
        }


def read_holdings(path: str | Path, names: tuple[str, ...], include_cash: bool) -> np.ndarray:
    """Weights [A (+1)] from a CSV of ``symbol,weight`` rows under that header; unlisted symbols hold 0.

    Refuses (DataError naming the file, the row and the fix) unknown or repeated symbols, CASH when the policy does
    not trade cash, weights that are not non-negative numbers, and weights whose sum is not 1 within 1e-6.
    """
    path = Path(path)
    symbols = names[:-1] if include_cash else names
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [(n, row) for n, row in enumerate(csv.reader(fh), start=1) if any(c.strip() for c in row)]
    except OSError as exc:
        raise DataError(f"Cannot read holdings file {path}: {exc.strerror or exc}.") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Holdings file {path} is not a text CSV file: {exc}.") from None
    if not rows or [c.strip().lower() for c in rows[0][1]] != ["symbol", "weight"]:
        raise DataError(f"Holdings file {path}: the first row must be the header 'symbol,weight', then one row per "
                        f"held asset, e.g. '{symbols[0]},0.25'.")
    out = np.zeros(len(names))
    seen: dict[str, int] = {}
    for n, row in rows[1:]:
        where = f"Holdings file {path}, row {n}"
        if len(row) != 2:
            raise DataError(f"{where}: expected 2 fields (symbol,weight), got {len(row)}: {','.join(row)!r}.")
        symbol, text = row[0].strip(), row[1].strip()
        if symbol == CASH and not include_cash:
            raise DataError(f"{where}: this policy was trained without a cash asset (no --include-cash), so it "
                            f"cannot be shown a cash holding. Give weights over {list(symbols)} only, summing to 1.")
        if symbol not in names:
            raise DataError(f"{where}: unknown symbol {symbol!r}; the policy trades {list(names)}.")
        if symbol in seen:
            raise DataError(f"{where}: {symbol} is listed again (first at row {seen[symbol]}); give each symbol once.")
        seen[symbol] = n
        try:
            weight = float(text)
        except ValueError:
            raise DataError(f"{where}: weight {text!r} of {symbol} is not a number.") from None
        if not math.isfinite(weight) or weight < 0:
            raise DataError(f"{where}: weight {text} of {symbol} must be a non-negative fraction of wealth (the "
                            "policy is long-only).")
        out[names.index(symbol)] = weight
    total = float(out.sum())
    if abs(total - 1.0) > SUM_TOLERANCE:
        rest = " (put what is held in cash on a CASH row)" if include_cash else ""
        raise DataError(f"Holdings file {path}: the weights sum to {total:.9g}, not 1 (within {SUM_TOLERANCE:g}). "
                        f"Give fractions of wealth that add up to 1{rest}.")
    return out / total


def untradeable_at_last_bar(market: MarketData, max_fill_bars: int, min_listed: int | None = None) -> dict[str, str]:
    """Symbol -> why, for every asset not tradeable at the market's last bar (``MarketData.tradeable``, causal), in
    symbol order: not yet listed (no print at or before that bar), or its last print more than ``max_fill_bars``
    bars old (delisted or halted: the two look the same until prints resume, if they do). Empty on a common
    calendar. With ``min_listed`` (the calendar starts late) an asset without a print on it may also have stopped
    printing before its first bar, and the reason says so."""
    out: dict[str, str] = {}
    last = market.n_bars - 1
    if market.tradeable is None:  # tradeable everywhere (the class's default)
        return out
    for i in np.flatnonzero(~market.tradeable[-1]):
        printed = np.flatnonzero(~market.filled[:, i])
        if printed.size == 0:
            why = f"not yet listed: no print on the calendar up to {iso(market.timestamps[last])}"
            if min_listed is not None:
                why += (f" (or gone before the calendar's first bar, {iso(market.timestamps[0])}, where --min-listed "
                        f"{min_listed} starts it)")
        else:
            at = int(printed[-1])
            why = (f"delisted or halted: last print {iso(market.timestamps[at])}, {last - at} bars before the last "
                   f"bar, more than --max-fill-bars {max_fill_bars}")
        out[market.symbols[i]] = why
    return out


def held_growth(open_ta: torch.Tensor, close_ta: torch.Tensor, execution: Execution,
                include_cash: bool) -> torch.Tensor:
    """``env.observed_growth`` rows 0..T-2 of prices [T, A] -> [T-1, A (+1)]: the drift of decision t's position to
    the close of bar t+1, which needs bars up to t+1 only. ``observed_growth`` stops where ``decision_growth`` does
    (T - horizon rows), so in "open" mode one phantom bar is appended; its rows never read it (checked: NaN there
    stays out)."""
    horizon = execution_horizon(execution)
    pad = horizon - 1
    if pad:
        nan = torch.full((pad, open_ta.shape[1]), math.nan, dtype=open_ta.dtype)
        open_ta, close_ta = torch.cat([open_ta, nan]), torch.cat([close_ta, nan])
    g = observed_growth(open_ta, close_ta, execution, include_cash)[: open_ta.shape[0] - pad - 1]
    assert bool(torch.isfinite(g).all()), "held_growth read the phantom bar after the last one"
    return g


@torch.no_grad()
def decide(policy: Policy, features: torch.Tensor, held: torch.Tensor, holdings: torch.Tensor | None,
           fill: torch.Tensor | None = None, rebalance_every: int = 1, tradeable: torch.Tensor | None = None,
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Roll the deterministic policy over one window and decide its last bar.

    features: [N, A, F] of the bars up to the decision, the window being the last L (``held`` has L - 1 rows; the
    encoder reads the earlier bars too when the policy's context is "history"); held: [L-1, A_out] drift of each decision's position up to
    the next decision (``held_growth``); fill: [L-1, A_out] its drift to the next fill where it differs (the
    accounting growth of "open" execution; its last row, which needs the next open, is ``held``'s). Returns the
    path's weights [L, A_out] (the arithmetic of ``rollout.deterministic_weights``: float32, cold start, all cash
    shown first, ``rebalance_every`` counted from the window's first bar), the holdings the path shows its last
    decision [A_out], and the weights the last decision asks to hold after its fill [A_out]: its target, or for a
    cost-aware action the holdings moved toward it by the action, shown ``holdings`` (the path's own when None). The
    last decision always trades, whatever ``rebalance_every`` says of its position in the window.

    ``tradeable``: the market's causal mask laid out as ``features`` ([N, A] bool; None: every asset everywhere). Each
    decision of the window, the last one included, holds only the assets tradeable at its bar (exactly 0 on the
    others, the rest renormalised, as ``rollout.deterministic_weights`` does in the backtester).
    """
    n, length = features.shape[0], held.shape[0] + 1
    state_proj = policy.window_projection(features, torch.arange(n - length, n)[None], None, tradeable)  # [1, L, K]
    observed = torch.cat([held, torch.ones_like(held[:1])])  # the last row would drift past the decision: unused
    growth = None if fill is None else torch.cat([fill, torch.ones_like(fill[:1])])[None]
    cols = None if tradeable is None else tradeable_columns(tradeable[n - length:], policy.include_cash)[None]
    path = generate_paths(policy, state_proj, observed[None], 0, True, None, growth=growth,
                          rebalance_every=rebalance_every, tradeable=cols)
    weights, own = path.weights[0, 0], path.held[0, 0, -1]
    shown = own if holdings is None else holdings.to(torch.float32)
    last = generate_paths(policy, state_proj[:, -1:], observed[None, -1:], 0, True, None, shown[None],
                          tradeable=None if cols is None else cols[:, -1:])
    return weights, own, last.weights[0, 0, 0]


def predict(checkpoint: str, holdings_file: str | None = None, data_root: str | None = None,
            data_glob: str | None = None, log: Any = print) -> Prediction:
    """Load the checkpoint and its data up to the last bar, and decide the next fill (see the module docstring)."""
    ckpt = load_checkpoint(resolve_checkpoint_name(checkpoint))
    cfg = ckpt.config
    pretrained = ckpt.pretraining is not None  # learned from a corpus: runs on the data's symbols, whatever they are
    default_root = DataConfig().root if pretrained else cfg.data.root
    data_cfg = dataclasses.replace(cfg.data, root=data_root or default_root, glob=data_glob or cfg.data.glob)
    include_cash, lookback = cfg.env.include_cash, cfg.train.lookback
    # The universe is decided on the checkpoint's training bars only, as in the backtester (a pretrained policy's
    # on the training split of these data).
    cutoff = (through_cutoff(ckpt.trained_through)
              if ckpt.trained_through and data_cfg.universe_through is None and not pretrained
              else train_end_cutoff(data_cfg, lookback))
    market = load_market(data_cfg, min_bars=lookback, universe_cutoff=cutoff)
    if not pretrained:
        check_market_matches(ckpt, market.symbols, ckpt.feature_spec)
    policy = build_policy(ckpt, n_assets=market.n_assets)
    last = str(market.timestamps[-1])[:19]
    if ckpt.trained_through is not None and last < ckpt.trained_through:
        raise DataError(
            f"The data in {data_cfg.root} end at {iso(market.timestamps[-1])}, before the last bar checkpoint "
            f"{ckpt.path} was trained on ({ckpt.trained_through}): they are older than the policy, so a decision on "
            "them is not a forecast. Update the files, or point --data-root at data up to date."
        )
    fills = execution_note(market, cfg.env.execution)  # "the next open" is the next close for assets without one
    notes = list(market.notes) + ([fills] if fills else []) + checkpoint_notes(ckpt, market)
    if ckpt.trained_through is None:
        notes.append(f"{ckpt.path} does not record its last training bar, so the data's age cannot be checked.")
    mask = market_mask(market, include_cash)  # [T, A] or None (every asset tradeable at every bar)
    excluded = untradeable_at_last_bar(market, data_cfg.max_fill_bars, data_cfg.min_listed)
    # a tradeable asset without a print at the last bar; an untradeable one is listed in ``excluded`` instead
    now = np.ones(market.n_assets, dtype=bool) if market.tradeable is None else market.tradeable[-1]
    stale = [s for s, f, ok in zip(market.symbols, market.filled[-1], now) if f and ok]
    if stale:
        notes.append(f"WARNING: the last bar of {stale} is forward-filled (no bar at {iso(market.timestamps[-1])} in "
                     "their files): the decision sees their previous close as current.")
    for note in notes:
        log(note)

    names = market.symbols + ((CASH,) if include_cash else ())
    n_bars = market.n_bars
    first = n_bars - lookback
    history = 0 if cfg.policy.context == "history" else first  # what the encoder reads
    # a pretrained policy's normaliser is fitted on every bar of these data: all of them lie before the decision
    spec = feature_spec_for(ckpt, market, market.n_bars)
    if pretrained:
        notes.append("Pretrained policy: its feature normaliser is fitted on every bar of these data (all before the "
                     "decision), as it was on every market it learned from.")
        log(notes[-1])
    features = torch.as_tensor(compute_features(market, spec)[history:])
    if features.shape[-1] != ckpt.n_features:
        raise CheckpointError(f"The features have {features.shape[-1]} columns; {ckpt.path} expects {ckpt.n_features}.")
    window_prices = torch.tensor(market.open[first:]), torch.tensor(market.close[first:])
    held = held_growth(*window_prices, cfg.env.execution, include_cash).to(torch.float32)
    fill = None
    if cfg.env.execution == "open" and (cfg.policy.action != "target" or cfg.env.rebalance_every > 1):
        # the path's fills drift with the open-to-open growth, known for every decision but the last two
        fill = held.clone()
        fill[:-1] = decision_growth(*window_prices, "open", include_cash).to(torch.float32)
    if mask is not None:  # 1 off the mask, as in the backtester (the weight there is 0)
        cols = tradeable_columns(mask[first:-1], include_cash)
        held = growth_where_tradeable(held, cols)
        fill = None if fill is None else growth_where_tradeable(fill, cols)
    given = None if holdings_file is None else read_holdings(holdings_file, names, include_cash)
    weights, own, target32 = decide(policy, features, held, None if given is None else torch.as_tensor(given), fill,
                                    cfg.env.rebalance_every, None if mask is None else mask[history:])
    if cfg.policy.action != "target":
        notes.append(f"Action '{cfg.policy.action}': the target is what to hold after this trade, the holdings moved "
                     "toward the policy's aim by its learned rate or band, not the aim itself.")
    if cfg.env.rebalance_every > 1:
        notes.append(f"The run rebalances every {cfg.env.rebalance_every} bars: trade this target on your "
                     "rebalancing bars only.")
    if given is None:
        own64 = own.to(torch.float64)
        holdings = Holdings((own64 / own64.sum()).numpy(), "policy",
                            f"the policy's own previous target (decided after {iso(market.timestamps[-2])}) drifted "
                            f"to the close of {iso(market.timestamps[-1])}")
    else:
        holdings = Holdings(given, "file", str(Path(str(holdings_file)).resolve()))
    target = target32.to(torch.float64)
    target = target / target.sum()  # as the backtester normalises its float32 weights
    if excluded:
        notes.append(f"{len(excluded)} of {market.n_assets} assets are not tradeable at the last bar, as known at it "
                     f"(union calendar): the target holds exactly 0 in them and is renormalised over the others"
                     f"{' and cash' if include_cash else ''}: {', '.join(excluded)}.")
        held_out = [sym for sym in excluded if holdings.weights[names.index(sym)] > 0]
        if held_out:
            notes.append(f"The holdings include {', '.join(held_out)}, not tradeable now: trading to the target sells "
                         "them (the expected turnover and fee count that sale at their last close).")
    # The fee of trading from the holdings to the target: the env's accounting (growth not needed for it).
    acc = account(target[None], torch.ones_like(target)[None], torch.as_tensor(holdings.weights), cfg.env.cost_rate,
                  include_cash, smooth_eps=None)
    root, bundled = resolve_data_root(data_cfg.root)
    fingerprint = market.fingerprint()
    return Prediction(
        checkpoint=ckpt, names=names, decision_bar=iso(market.timestamps[-1]), execution=cfg.env.execution,
        target=target.numpy(), holdings=holdings, turnover=float(acc.turnover[0]), fee=float(acc.cost[0]),
        cost_bps=cfg.env.cost_bps, window_bars=(first, n_bars - 1), window_weights=weights.to(torch.float64).numpy(),
        market=market,
        data={"root": str(root), "bundled_sample": bundled, "glob": data_cfg.glob, "n_bars": n_bars,
              "first_bar": iso(market.timestamps[0]), "last_bar": iso(market.timestamps[-1]),
              "symbols": list(market.symbols), "ohlc_sha256": fingerprint.get("ohlc_sha256"),
              "forward_filled_at_last_bar": stale, "calendar": market.calendar},
        notes=tuple(notes),
        excluded=excluded,
    )


DEFAULT_OUT_DIR = "predictions"


def default_output(prediction: Prediction, out_dir: str | Path = DEFAULT_OUT_DIR) -> Path:
    """``<out_dir>/<decision bar>.json`` (a numbered name when it exists: ``atomic_write_new``)."""
    return Path(out_dir) / f"{prediction.decision_bar.replace(':', '')}.json"


def summary(prediction: Prediction) -> str:
    """Console view: the targets next to the holdings, and the expected trade."""
    p, ck = prediction, prediction.checkpoint
    width = max(len(n) for n in p.names + ("symbol",))
    lines = [f"Decision after the close of {p.decision_bar}, filled {p.fill}.",
             f"Checkpoint {ck.path} (step {ck.step}, trained through {ck.trained_through}); window of "
             f"{p.window_bars[1] - p.window_bars[0] + 1} bars from {iso(p.market.timestamps[p.window_bars[0]])}.",
             "", f"{'symbol':<{width}}  {'target':>8}  {'holding':>8}  {'trade':>8}"]
    for name, w, h in zip(p.names, p.target, p.holdings.weights):
        trade = 100 * (w - h)
        trade_text = f"{trade:+7.2f}%" if round(trade, 2) != 0 else f"{0:7.2f}%"  # no "-0.00%"
        lines.append(f"{name:<{width}}  {100 * w:7.2f}%  {100 * h:7.2f}%  {trade_text}")
    if p.excluded:
        lines += ["", f"Not tradeable after {p.decision_bar} (target 0):"]
        lines += [f"  {sym}: {why}" for sym, why in p.excluded.items()]
    lines += ["", f"Holdings: {'file ' if p.holdings.source == 'file' else ''}{p.holdings.detail}.",
              f"Expected turnover {100 * p.turnover:.2f}% of wealth, fee {100 * p.fee:.4f}% of wealth "
              f"({p.cost_bps:g} bps one-way)."]
    return "\n".join(lines)


PROG = "differentiable-market predict"


@dataclass(frozen=True)
class PredictOptions:
    """What the predict command is asked (the [predict] section of a config file)."""

    checkpoint: str = ""
    holdings: str | None = None
    data_root: str | None = None
    data_glob: str | None = None
    out_dir: str = DEFAULT_OUT_DIR


def build_parser(prog: str = PROG) -> Parser:
    ap = Parser(
        prog=prog,
        usage="%(prog)s --checkpoint RUN [--holdings FILE] [options]",
        description="Target weights for the next fill: run a checkpoint's policy over the window that ends at the "
                    "data's last bar, shown the current holdings; print them with the trade and its fee, and write "
                    "them as JSON.",
        examples=("differentiable-market predict --checkpoint runs/20260101-120000",
                  "differentiable-market predict --checkpoint runs/20260101-120000 --holdings holdings.csv "
                  "--data-root latest-data"),
    )
    g = ap.add_argument_group("what to predict")
    g.add_argument("--checkpoint", metavar="RUN", help="run folder (uses checkpoints/best.pt) or a .pt file")
    g.add_argument("--holdings", metavar="FILE", help="CSV with header 'symbol,weight': what is held now, as "
                   "fractions of wealth summing to 1 (CASH allowed when the policy trades cash; unlisted symbols "
                   "hold 0) (default: the policy's own previous target drifted to the last close)")
    g.add_argument("--data-root", metavar="DIR", help="data folder, updated to the latest bar (default: the "
                   "checkpoint's)")
    g.add_argument("--data-glob", metavar="PATTERN", help="file pattern in the data folder (default: the "
                   "checkpoint's)")
    g = ap.add_argument_group("output")
    g.add_argument("--out-dir", metavar="DIR", help="folder of prediction files, <out-dir>/<last bar>.json; an "
                   f"existing file is never replaced, a numbered name is used instead (default: {DEFAULT_OUT_DIR})")
    g.add_argument("--out", metavar="FILE", help=argparse.SUPPRESS)  # the old flag: this exact file name
    add_config_flags(ap, "the prediction's options")
    add_output_flags(ap, progress=False)
    return ap


def resolve_options(args: argparse.Namespace) -> PredictOptions:
    """Defaults, then the --config file's [predict] section, then the flags."""
    values: dict[str, Any] = {}
    if args.config:
        file = read_config_file(args.config)
        check_sections(file, ("predict",), "predict")
        values = section_values(file, "predict", PredictOptions)
    for name in ("checkpoint", "holdings", "data_root", "data_glob", "out_dir"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if not values.get("checkpoint"):
        raise CheckpointError("--checkpoint is required: a run folder (its checkpoints/best.pt) or a .pt file (or a "
                              "[predict] checkpoint in --config).")
    return PredictOptions(**values)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    with console.verbosity(console.level_of(args.quiet, args.verbose)):
        try:
            options = resolve_options(args)
            if args.print_config:
                console.result(dump({"predict": dataclasses.asdict(options)}, args.print_config,
                                    f"{PROG} options; pass them back with --config FILE").rstrip())
                return 0
            prediction = predict(options.checkpoint, options.holdings, options.data_root, options.data_glob,
                                 log=_log)
            out = Path(args.out) if args.out else default_output(prediction, options.out_dir)
            text = json.dumps(json_safe(prediction.to_dict()), indent=2, allow_nan=False) + "\n"
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                written = atomic_write_new(out, text.encode("utf-8"))
            except OSError as exc:
                raise DataError(f"Cannot write {out}: {exc.strerror or exc}. Pass --out-dir with a writable "
                                "folder.") from None
        except DifferentiableMarketError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        console.say(summary(prediction))
        console.result(f"Wrote {written}")
    return 0


def _log(line: str) -> None:
    """Notes go to standard error (standard output holds the table): warnings always, the rest unless --quiet."""
    if console.level() >= console.NORMAL or line.lower().startswith("warning"):
        print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(prog="python -m differentiable_market.predict"))
