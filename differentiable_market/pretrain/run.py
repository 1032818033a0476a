"""Pretraining: one cross-sectional policy learned from a corpus of markets (``corpus.py``), chosen on held-out
markets of the corpus, written as an ordinary checkpoint with a record of what it learned from.

A pretraining folder holds ``pretrain.json`` (settings, the corpus with each market's dates and price hash, the last
real date trained on), ``metrics.jsonl`` (training and validation rows), ``MODEL_CARD.md`` and
``checkpoints/latest.pt`` (to resume from) and ``checkpoints/best.pt`` (the best validation score). The checkpoint's
``pretraining`` record carries the corpus, so applying the policy later can check that the data it is scored on
starts after the last real date it learned from.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_json, atomic_write_text
from ..checkpoint import save_checkpoint
from ..config import (DataConfig, DTypeName, DeviceName, EnvConfig, ExperimentConfig, FeatureConfig, PolicyConfig,
                      TrainConfig, config_from_dict, config_to_dict)
from ..errors import ConfigError
from ..features import fit_feature_spec
from ..hardware import machine_info
from ..runlog import MetricsLog, environment_record, new_timestamped_dir
from ..trainer import TRAIN_STATS, resolve_device
from .corpus import MarketSpec, build_market, corpus_hash, default_corpus, last_real_date, market_record
from .trainer import CorpusTrainer, PreparedMarket, prepare

FORMAT = "differentiable_market.pretraining"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PretrainSettings:
    """What a pretraining run does besides the policy's and the features' configs (which are the defaults)."""

    steps: int = 3000  # optimizer steps
    eval_interval: int = 100  # steps between validations and checkpoints
    markets_per_step: int = 4  # training markets whose losses one step averages
    windows_per_market: int = 32  # windows drawn from each of them
    lookback: int = 64  # bars per training window
    include_cash: bool = False
    seed: int = 0
    corpus_seed: int = 0  # seeds the default corpus's parameters
    train_markets: int = 36  # synthetic training markets of the default corpus
    validation_markets: int = 12  # synthetic validation markets
    nyse: bool = True  # NYSE 1962-1973 in the corpus (needs the crosscheck group)
    folders: tuple[str, ...] = ()  # users' data folders added as training markets
    folders_through: str | None = None  # last date of the added folders to use (None: all)
    lr: float = 2e-3
    muon_lr: float = 2e-3
    device: DeviceName = "auto"
    dtype: DTypeName = "auto"
    save_dir: str = "pretrained"
    # a pretrained checkpoint to start from (e.g. the policy without cash, continued with --include-cash: its cash
    # token starts fresh); None: a fresh policy
    init: str | None = None
    # trailing windows (bars) of the autocorrelation features the policy reads (FeatureConfig.autocorr_windows); a long
    # one lets it tell a market whose returns revert or persist from one where they do not
    autocorr_windows: tuple[int, ...] = FeatureConfig().autocorr_windows

    def __post_init__(self) -> None:
        for name in ("steps", "eval_interval", "markets_per_step", "windows_per_market", "train_markets",
                     "validation_markets"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}.")
        if self.lookback < 8:
            raise ConfigError(f"--lookback must be >= 8 bars, got {self.lookback}.")

    def train_config(self) -> TrainConfig:
        return TrainConfig(lookback=self.lookback, batch_windows=self.windows_per_market, epochs=self.steps,
                           eval_interval=self.eval_interval, lr=self.lr, muon_lr=self.muon_lr, seed=self.seed,
                           device=self.device, dtype=self.dtype, reference="weights", save_dir=self.save_dir)

    def corpus(self) -> list[MarketSpec]:
        specs = default_corpus(self.corpus_seed, self.train_markets, self.validation_markets, self.nyse)
        for i, folder in enumerate(self.folders):
            specs.append(MarketSpec(f"folder-{i:02d}-{Path(folder).name}", "folder", "train", folder=str(folder),
                                    through=self.folders_through))
        return specs


@dataclass
class Corpus:
    train: list[PreparedMarket] = field(default_factory=list)
    validation: list[PreparedMarket] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)


def load_corpus(specs: list[MarketSpec], policy_cfg: PolicyConfig, features: FeatureConfig, train: TrainConfig,
                include_cash: bool, trainer: CorpusTrainer | None, device: torch.device, log=print) -> Corpus:
    """Build and prepare every market of the corpus (training markets get a loss on ``trainer``'s policy)."""
    out = Corpus()
    for spec in specs:
        try:
            market = build_market(spec)
        except ImportError:
            raise ConfigError(f"Corpus market {spec.name} needs the universal-portfolios package: uv sync --group "
                              "crosscheck (or pass --no-nyse).") from None
        pm = prepare(spec, market, policy_cfg, features, train, include_cash,
                     None if trainer is None else trainer.policy, device)
        (out.train if spec.role == "train" else out.validation).append(pm)
        out.records.append(market_record(spec, market))
        log(f"corpus: {spec.name:<28} {spec.role:<10} {market.n_assets:>3} assets x {market.n_bars:>5} bars  "
            f"{spec.cost_bps:g} bps  {str(market.timestamps[0])[:10]}..{str(market.timestamps[-1])[:10]}")
    if not out.train or not out.validation:
        raise ConfigError("A pretraining corpus needs at least one training and one validation market.")
    return out


def run_pretraining(settings: PretrainSettings, resume: Path | None = None, log=print,
                    specs: list[MarketSpec] | None = None) -> Path:
    """Pretrain (or continue the pretraining folder ``resume``) and return the folder. ``specs`` replaces the corpus
    the settings describe (tests, experiments); a resumed folder must be given the same."""
    device = resolve_device(settings.device)
    if resume is not None:
        saved = json.loads((resume / "pretrain.json").read_text(encoding="utf-8"))
        settings = config_from_dict(PretrainSettings, {**saved["settings"], "device": settings.device,
                                                       "steps": max(settings.steps, saved["settings"]["steps"])},
                                    "pretrain.json settings")
    policy_cfg, train = PolicyConfig(), settings.train_config()
    features = FeatureConfig(autocorr_windows=tuple(settings.autocorr_windows))
    if policy_cfg.architecture != "cross":
        raise ConfigError("Pretraining needs the cross-sectional policy (it runs on any universe).")
    specs = settings.corpus() if specs is None else specs
    first = prepare(specs[0], build_market(specs[0]), policy_cfg, features, train, settings.include_cash, None, device)
    n_features = first.tensors.features.shape[-1]
    trainer = CorpusTrainer(policy_cfg, features, train, settings.include_cash, n_features, device,
                            settings.markets_per_step, settings.windows_per_market)
    corpus = load_corpus(specs, policy_cfg, features, train, settings.include_cash, trainer, device, log)
    cfg = ExperimentConfig(data=DataConfig(root="pretraining corpus"), features=features,
                           env=EnvConfig(include_cash=settings.include_cash), policy=policy_cfg, train=train)
    spec = fit_feature_spec(first.market, features, first.tensors.splits.train[1])
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "settings": dataclasses.asdict(settings),
              "corpus": corpus.records, "corpus_sha256": corpus_hash(corpus.records),
              "last_real_date": last_real_date(corpus.records)}
    if resume is None and settings.init:
        _start_from(trainer, settings.init, log)
    if resume is None:
        folder = new_timestamped_dir(settings.save_dir)
        (folder / "checkpoints").mkdir()
        atomic_write_json(folder / "pretrain.json", {**record, "config": config_to_dict(cfg),
                                                     "environment": environment_record(device)})
    else:
        folder = resume
        if json.loads((folder / "pretrain.json").read_text(encoding="utf-8"))["corpus_sha256"] != record[
                "corpus_sha256"]:
            raise ConfigError(f"{folder}: the corpus built here differs from the one the pretraining started on "
                              "(another version of the package or of the NYSE data?); start a new pretraining.")
        from ..checkpoint import load_checkpoint

        latest = load_checkpoint(folder / "checkpoints" / "latest.pt")
        trainer.load_state_dict(latest.policy_state, latest.training_state, latest.step, latest.best_score)
        MetricsLog.truncate_after(folder / "metrics.jsonl", latest.step)
    log(f"Pretraining folder: {folder}")
    log(f"Machine: {machine_info(device).describe()}; dtype {trainer.autocast_reason}")
    log(f"{len(corpus.train)} training and {len(corpus.validation)} validation markets; {settings.steps} steps of "
        f"{settings.markets_per_step} markets x {settings.windows_per_market} windows x {settings.lookback} bars")
    untrained = trainer.untrained_paths(corpus.validation)
    metrics = MetricsLog(folder / "metrics.jsonl")
    if resume is None:
        metrics.write({"type": "header", **record, "config": config_to_dict(cfg)})
    history: list[dict[str, Any]] = []

    def save(name: str, with_state: bool, validation: dict[str, Any] | None) -> None:
        pre = {**record, "steps": trainer.step_count, "validation": validation}
        save_checkpoint(folder / "checkpoints" / name, config=cfg, symbols=(), feature_spec=spec,
                        policy=trainer.policy, step=trainer.step_count,
                        data_fingerprint={"corpus_sha256": record["corpus_sha256"], "source": "pretraining corpus"},
                        splits={}, best_score=trainer.best_score, trained_through=record["last_real_date"],
                        validated_through=None, training_state=trainer.state_dict() if with_state else None,
                        pretraining=pre)

    t0, pending = time.perf_counter(), []
    try:
        while trainer.step_count < settings.steps:
            stats = trainer.step(corpus.train)
            if stats is not None:
                pending.append(stats)
            step = trainer.step_count
            if step % settings.eval_interval == 0 or step == settings.steps:
                row = dict(zip(TRAIN_STATS, torch.stack(pending).mean(0).tolist())) if pending else {}
                pending.clear()
                metrics.write({"type": "train", "step": step, **row, "seconds": time.perf_counter() - t0,
                               "nonfinite_steps": trainer.nonfinite_total})
                val = trainer.validate(corpus.validation, untrained)
                improved = trainer.best_score is None or val["score"] > trainer.best_score
                if improved:
                    trainer.best_score = val["score"]
                metrics.write({"type": "validation", "step": step, "best": improved, **val})
                history.append({"step": step, **val})
                save("latest.pt", True, val)
                if improved:
                    save("best.pt", False, val)
                fams = "  ".join(f"{f} {100 * v:+.1f}" for f, v in sorted(val["by_family"].items()))
                log(f"step {step:>6}  validation excess over equal weight {100 * val['score']:+.2f}%/yr  ({fams})"
                    f"  {time.perf_counter() - t0:.0f} s" + ("  * best" if improved else ""))
    finally:
        metrics.close()
    atomic_write_text(folder / "MODEL_CARD.md", model_card_from_folder(folder))
    log(f"Done: {folder / 'checkpoints' / 'best.pt'} (best validation score {100 * (trainer.best_score or 0):+.2f}%/yr)")
    return folder


def model_card_from_folder(folder: Path) -> str:
    from ..checkpoint import load_checkpoint
    from .card import model_card

    return model_card(load_checkpoint(folder / "checkpoints" / "best.pt"))


def _start_from(trainer: CorpusTrainer, path: str, log) -> None:
    """Load a pretrained checkpoint's weights into the trainer's policy and reference. A policy pretrained without
    cash starts one with cash: every weight but the cash token (which keeps its fresh initialisation) is loaded."""
    from ..checkpoint import load_checkpoint

    start = load_checkpoint(path)
    if start.pretraining is None:
        raise ConfigError(f"{path} is not a pretrained checkpoint; --init continues a pretraining's best.pt.")
    own = trainer.policy.state_dict()
    missing = sorted(set(own) - set(start.policy_state))
    unexpected = sorted(set(start.policy_state) - set(own))
    if unexpected or any(m != "cash_token" for m in missing):
        raise ConfigError(f"{path} holds another policy shape (missing {missing}, extra {unexpected}).")
    trainer.policy.load_state_dict({**own, **start.policy_state})
    trainer.reference.load_state_dict(trainer.policy.state_dict())
    log(f"Starting from {path}" + (" (the cash token starts fresh)" if missing else ""))

