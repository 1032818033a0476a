"""Pretraining CLI: ``python -m differentiable_market.pretrain`` (and ``differentiable-market pretrain``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DifferentiableMarketError
from .run import PretrainSettings, run_pretraining


def build_parser() -> argparse.ArgumentParser:
    s = PretrainSettings()
    ap = argparse.ArgumentParser(
        prog="python -m differentiable_market.pretrain", allow_abbrev=False,
        description="Pretrain one cross-sectional policy on a corpus of markets (synthetic families with varied "
                    "universes, volatilities and fees, NYSE 1962-1973, and any folders you add), chosen on held-out "
                    "markets of the corpus. Use the result with --init PATH in train, study, backtest and predict.",
        epilog="examples:\n  python -m differentiable_market.pretrain --steps 3000\n"
               "  python -m differentiable_market.pretrain --add-folder mydata --folders-through 2015-12-31\n"
               "  python -m differentiable_market.pretrain --resume pretrained/20261208-120000",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("corpus")
    g.add_argument("--add-folder", action="append", default=[], metavar="DIR", help="a data folder (one file per "
                   "symbol, as train reads) added as a training market; repeat for several")
    g.add_argument("--folders-through", metavar="DATE", help="last date of the added folders to learn from (later "
                   "bars stay unseen, so you can evaluate on them); default: all")
    g.add_argument("--no-nyse", dest="nyse", action="store_false", help="leave NYSE 1962-1973 out of the corpus "
                   "(it needs the crosscheck dependency group: uv sync --group crosscheck)")
    g.add_argument("--train-markets", type=int, default=s.train_markets, help="synthetic training markets "
                   f"(default: {s.train_markets})")
    g.add_argument("--validation-markets", type=int, default=s.validation_markets, help="synthetic validation "
                   f"markets that choose best.pt (default: {s.validation_markets})")
    g.add_argument("--corpus-seed", type=int, default=s.corpus_seed, help="seed of the synthetic markets' parameters "
                   f"(default: {s.corpus_seed})")
    g.add_argument("--include-cash", action="store_true", help="pretrain a policy that also holds cash")
    g.add_argument("--init", metavar="CKPT", help="start from a pretrained checkpoint (for example the policy without "
                   "cash, continued with --include-cash: its cash token starts fresh)")
    g.add_argument("--autocorr-windows", type=lambda t: tuple(int(x) for x in t.split(",") if x.strip()),
                   default=s.autocorr_windows, metavar="W[,W...]", help="trailing windows of the autocorrelation "
                   f"features (default: {','.join(map(str, s.autocorr_windows))})")
    g = ap.add_argument_group("training")
    g.add_argument("--steps", type=int, default=s.steps, help=f"optimizer steps (default: {s.steps})")
    g.add_argument("--eval-interval", type=int, default=s.eval_interval, help="steps between validations and "
                   f"checkpoints (default: {s.eval_interval})")
    g.add_argument("--markets-per-step", type=int, default=s.markets_per_step, help="training markets averaged by "
                   f"one step (default: {s.markets_per_step})")
    g.add_argument("--windows-per-market", type=int, default=s.windows_per_market, help="windows drawn from each "
                   f"(default: {s.windows_per_market})")
    g.add_argument("--lookback", type=int, default=s.lookback, help=f"bars per window (default: {s.lookback})")
    g.add_argument("--lr", type=float, default=s.lr, help=f"AdamW learning rate (default: {s.lr})")
    g.add_argument("--muon-lr", type=float, default=s.muon_lr, help=f"Muon learning rate (default: {s.muon_lr})")
    g.add_argument("--seed", type=int, default=s.seed, help=f"seed of initialisation and sampling (default: {s.seed})")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=s.device, help="default: auto")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default=s.dtype, help="default: auto")
    g = ap.add_argument_group("output")
    g.add_argument("--save-dir", default=s.save_dir, help=f"parent of pretraining folders (default: ./{s.save_dir})")
    g.add_argument("--resume", metavar="DIR", help="continue a pretraining folder from its latest.pt (--steps may "
                   "grow; other flags are the folder's)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = PretrainSettings(
            steps=args.steps, eval_interval=args.eval_interval, markets_per_step=args.markets_per_step,
            windows_per_market=args.windows_per_market, lookback=args.lookback, include_cash=args.include_cash,
            seed=args.seed, corpus_seed=args.corpus_seed, train_markets=args.train_markets,
            validation_markets=args.validation_markets, nyse=args.nyse, folders=tuple(args.add_folder),
            folders_through=args.folders_through, lr=args.lr, muon_lr=args.muon_lr, device=args.device,
            dtype=args.dtype, save_dir=args.save_dir, init=args.init, autocorr_windows=args.autocorr_windows)
        run_pretraining(settings, Path(args.resume) if args.resume else None)
    except DifferentiableMarketError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted. Continue with --resume <pretraining folder>.", file=sys.stderr)
        return 130
    return 0
