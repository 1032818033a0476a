"""Checkpoints: plain tensors and JSON-able data, written atomically, read with ``weights_only=True`` only.

A checkpoint holds everything needed to rebuild the policy and the env exactly (config tree, symbols, feature spec
with its train-fitted normaliser, cost settings). ``latest.pt`` also holds the training state used by ``--resume``.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .atomic import atomic_write_bytes
from .config import ExperimentConfig, config_from_dict, config_to_dict
from .data import MarketData
from .errors import CheckpointError, ConfigError
from .features import FeatureSpec
from .policy import Policy, make_policy

FORMAT = "differentiable_market.checkpoint"
FORMAT_VERSION = 1
TORCH_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container (the default since torch 1.6)
PICKLE_PROTOCOL_2_PLUS = b"\x80"  # a bare pickle (torch.save's legacy format, or pickle.dump)


@dataclass(frozen=True)
class Checkpoint:
    config: ExperimentConfig
    symbols: tuple[str, ...]
    feature_spec: FeatureSpec
    policy_state: dict[str, torch.Tensor]
    step: int
    data_fingerprint: dict[str, Any]
    splits: dict[str, Any]
    best_score: float | None
    training_state: dict[str, Any] | None
    trained_through: str | None  # ISO timestamp of the last bar of the training split (prices the weights saw)
    # ISO timestamp of the last bar of the validation split (the bars that chose best.pt); None when the checkpoint
    # predates this field: ``validation_end`` recovers it from ``splits`` on the training data.
    validated_through: str | None
    path: str
    sha256: str
    # whether this is a run's untrained policy (best.pt where no trained checkpoint passed the selection gate);
    # None in checkpoints written before it was recorded: ``is_untrained`` infers it from the step
    untrained: bool | None = None
    # a pretrained policy's record (``pretrain.run``): the corpus, its hashes and dates, the last real date it
    # learned from, its validation; None for a checkpoint of an ordinary run
    pretraining: dict[str, Any] | None = None

    @property
    def refits_normaliser(self) -> bool:
        """Whether the features of a market this policy is applied to are normalised by a normaliser fitted on that
        market's own training bars (a pretrained policy, which learned each corpus market that way) rather than by
        the checkpoint's."""
        return self.pretraining is not None

    @property
    def is_untrained(self) -> bool:
        """The untrained policy (equal weight seen through the action), not a trained or pretrained one."""
        return self.step == 0 if self.untrained is None else self.untrained

    @property
    def n_features(self) -> int:
        return len(self.feature_spec.names)

    def validation_end(self, timestamps: np.ndarray, same_data: bool) -> str | None:
        """ISO timestamp of the validation split's last bar: stored, or (older checkpoints) the stored split's end
        looked up in ``timestamps`` [T] when these are the data it was trained on (``same_data``); else None."""
        if self.validated_through is not None:
            return self.validated_through
        validation = self.splits.get("validation") if isinstance(self.splits, dict) else None
        if not same_data or not validation or not 0 < int(validation[1]) <= len(timestamps):
            return None
        return str(timestamps[int(validation[1]) - 1])[:19]


def save_checkpoint(
    path: str | Path,
    *,
    config: ExperimentConfig,
    symbols: tuple[str, ...],
    feature_spec: FeatureSpec,
    policy: Policy | dict[str, torch.Tensor],
    step: int,
    data_fingerprint: dict[str, Any],
    splits: dict[str, Any],
    best_score: float | None,
    trained_through: str | None,
    training_state: dict[str, Any] | None = None,
    validated_through: str | None = None,
    untrained: bool | None = None,
    pretraining: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically. Pass the uncompiled policy, or its state dict. ``trained_through`` and
    ``validated_through`` are ISO timestamps (``YYYY-MM-DDTHH:MM:SS``, UTC) of the last training and the last
    validation bar; ``untrained`` marks a run's untrained policy (best.pt without a trained checkpoint that passed the
    gate)."""
    state = policy if isinstance(policy, dict) else policy.state_dict()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "torch_version": str(torch.__version__),
        "config": config_to_dict(config),
        "symbols": list(symbols),
        "feature_spec": feature_spec.to_dict(),
        "policy": {k: v.detach().cpu().clone() for k, v in state.items()},
        "step": int(step),
        "data_fingerprint": data_fingerprint,
        "splits": splits,
        "best_score": None if best_score is None else float(best_score),
        "trained_through": trained_through,
        "validated_through": validated_through,
        "training_state": training_state,
        "untrained": untrained,
        "pretraining": pretraining,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint safely; refuses any file whose pickle would construct arbitrary objects."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "checkpoints" / "best.pt"
        if not candidate.exists():
            raise CheckpointError(f"{path} is a folder without checkpoints/best.pt; pass a .pt file or a run folder.")
        path = candidate
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist; pass a run folder or a path to a .pt file.")
    data = path.read_bytes()
    fix = "Pass a run folder, or the checkpoints/best.pt or latest.pt a training run wrote."
    if not data.startswith((TORCH_ZIP_MAGIC, PICKLE_PROTOCOL_2_PLUS)):
        raise CheckpointError(f"{path} is not a differentiable_market checkpoint: it is not a file that torch.save "
                              f"writes. {fix}")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _unsafe_global(exc)
        raise CheckpointError(
            f"{path} is not a differentiable_market checkpoint: it holds pickled Python objects other than tensors "
            f"and plain data{f' ({found})' if found else ''}, which could run code when loaded, so it was not "
            f"loaded. {fix}"
        ) from None
    except (RuntimeError, EOFError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise CheckpointError(
            f"Cannot read {path} as a checkpoint: it is truncated or damaged ({_first_line(exc)}). {fix}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a differentiable_market checkpoint (no '{FORMAT}' marker).")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('format_version')}; this version of "
            f"differentiable_market reads version {FORMAT_VERSION}."
        )
    try:
        config = config_from_dict(ExperimentConfig, _with_legacy_defaults(payload["config"]), "checkpoint.config")
        spec = FeatureSpec.from_dict(payload["feature_spec"])
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has an invalid config or feature spec: {exc}") from None
    return Checkpoint(
        config=config,
        symbols=tuple(payload["symbols"]),
        feature_spec=spec,
        policy_state=payload["policy"],
        step=int(payload["step"]),
        data_fingerprint=payload["data_fingerprint"],
        splits=payload["splits"],
        best_score=payload["best_score"],
        training_state=payload.get("training_state"),
        trained_through=payload.get("trained_through"),
        validated_through=payload.get("validated_through"),  # absent before it was recorded: unknown
        path=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        untrained=payload.get("untrained"),
        pretraining=payload.get("pretraining"),
    )


def _with_legacy_defaults(config: dict) -> dict:
    """Config keys added after a checkpoint was written take the value that reproduces what it was trained with."""
    policy = config.get("policy") if isinstance(config, dict) else None
    if not isinstance(policy, dict):
        return config
    if "encoder" not in policy:  # written before encoders were selectable: nn.GRU
        policy = {**policy, "encoder": "gru"}
    if "architecture" not in policy:  # written before the cross-sectional policy: flat
        policy = {**policy, "architecture": "flat"}
    if "action" not in policy:  # written before action designs: full targets
        policy = {**policy, "action": "target"}
    # written before the encoder context and the affine head: cold windows, the mlp head
    policy = {"context": "window", "asset_head": "mlp", **policy}
    policy = {"cash_target": "share", **policy}  # written before the excess cash target: the Dirichlet's share
    env = config.get("env")
    if isinstance(env, dict):  # written before the training fee and the rebalancing schedule
        env = {"train_cost_bps": None, "rebalance_every": 1, **env}
        config = {**config, "env": env}
    train = config.get("train")
    if isinstance(train, dict):  # written before the selection gate: best.pt was the best validation objective
        config = {**config, "train": {"select_min_t": None, **train}}
    features = config.get("features")
    if isinstance(features, dict):  # written before the moving-average and cross-sectional features
        # (and before the autocorrelation features)
        config = {**config, "features": {"ma_windows": [], "cross_sectional": False, "autocorr_windows": [],
                                         **features}}
    return {**config, "policy": policy}


PRETRAINED = "pretrained"  # the name that --init / --checkpoint accept for the shipped pretrained policy


def resolve_checkpoint_name(text: str | Path, include_cash: bool = False) -> Path:
    """A checkpoint argument as a path: ``pretrained`` is the policy shipped with the package (its cash variant when
    ``include_cash``); anything else is taken as a path (a .pt file or a run folder)."""
    if str(text) == PRETRAINED:
        from .pretrained import shipped_path

        return shipped_path(include_cash)
    return Path(text)


def pretraining_cutoff(ckpt: Checkpoint) -> str | None:
    """The last timestamp of real data a pretrained policy learned from (None: not pretrained, or synthetic only)."""
    return None if ckpt.pretraining is None else ckpt.pretraining.get("last_real_date")


def check_after_pretraining(ckpt: Checkpoint, first_scored: str, what: str) -> None:
    """Refuse to score a pretrained policy on bars from before the end of the real data it learned from: markets move
    together, so its weights may have learned those very days' moves. ``first_scored`` is the ISO timestamp of the
    first bar scored (a validation split's first bar, a study's first evidence bar); ``what`` names it."""
    cutoff = pretraining_cutoff(ckpt)
    if cutoff is not None and first_scored[:19] <= cutoff[:19]:
        raise CheckpointError(
            f"{ckpt.path} is a pretrained policy that learned from real prices up to {cutoff[:10]}, and {what} starts "
            f"at {first_scored[:10]}: it would be scored on days whose market moves it may have learned. Use data "
            f"whose {what} starts after {cutoff[:10]} (later dates, or larger --val-fraction/--test-fraction or "
            "--oos-fraction), or pretrain your own policy on an earlier corpus (python -m differentiable_market."
            "pretrain --folders-through DATE)."
        )


def feature_spec_for(ckpt: Checkpoint, market: MarketData, fit_end: int) -> FeatureSpec:
    """The feature spec that computes ``ckpt``'s inputs on ``market``: its own, or, for a pretrained policy (which
    learned every market with a normaliser fitted on that market's own past), one fitted on bars [0, fit_end) of
    ``market`` with the checkpoint's feature config."""
    if not ckpt.refits_normaliser:
        return ckpt.feature_spec
    from .features import fit_feature_spec

    spec = fit_feature_spec(market, ckpt.config.features, fit_end)
    if spec.names != ckpt.feature_spec.names:
        raise CheckpointError(f"{ckpt.path} expects the features {list(ckpt.feature_spec.names)}; these data give "
                              f"{list(spec.names)}.")
    return spec


def build_policy(ckpt: Checkpoint, include_cash: bool | None = None, n_assets: int | None = None) -> Policy:
    """The checkpoint's policy in eval mode. ``include_cash`` must match what it was trained with. ``n_assets``
    (default: the checkpoint's symbol count) builds a cross-sectional policy for another universe; a flat policy's
    layers are sized by its symbols, so it only runs on them."""
    trained_cash = ckpt.config.env.include_cash
    if include_cash is not None and include_cash != trained_cash:
        raise CheckpointError(
            f"{ckpt.path} was trained with include_cash={trained_cash}; its policy emits "
            f"{len(ckpt.symbols) + int(trained_cash)} weights and cannot be run with include_cash={include_cash}. "
            "Drop the --include-cash/--no-include-cash override."
        )
    if n_assets is None:
        n_assets = len(ckpt.symbols)
    elif n_assets != len(ckpt.symbols) and not transferable(ckpt):
        raise CheckpointError(
            f"{ckpt.path} holds a flat policy, whose layers are sized by the {len(ckpt.symbols)} symbols it was "
            f"trained on; it cannot run on {n_assets} assets. Only a cross-sectional policy (--architecture cross) "
            "moves to another universe."
        )
    policy = make_policy(ckpt.config.policy, n_assets, ckpt.n_features, trained_cash)
    try:
        policy.load_state_dict(ckpt.policy_state)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt.path}: policy weights do not fit the policy its config describes: {exc}") from None
    return policy.eval()


def transferable(ckpt: Checkpoint) -> bool:
    """Whether the checkpoint's policy runs on other symbols (the cross-sectional one: no weight is per asset)."""
    return ckpt.config.policy.architecture == "cross"


def universe_difference(trained: tuple[str, ...], used: tuple[str, ...]) -> dict[str, Any]:
    """What a transferred policy trades compared with what it was trained on (for reports and logs)."""
    return {"checkpoint": list(trained), "used": list(used), "shared": [s for s in used if s in trained],
            "new": [s for s in used if s not in trained], "not_in_data": [s for s in trained if s not in used]}


def check_market_matches(ckpt: Checkpoint, symbols: tuple[str, ...] | None, feature_spec: FeatureSpec | None = None,
                         hint: str = "") -> None:
    """Raise CheckpointError naming the difference when data or features do not match the checkpoint. ``symbols``
    None checks the features only (a transferred cross-sectional policy); ``hint`` ends the symbols message."""
    if symbols is not None and tuple(symbols) != ckpt.symbols:
        missing = [s for s in ckpt.symbols if s not in symbols]
        extra = [s for s in symbols if s not in ckpt.symbols]
        detail = []
        if missing:
            detail.append(f"missing from the data: {missing}")
        if extra:
            detail.append(f"not in the checkpoint: {extra}")
        if not missing and not extra:
            detail.append(f"same symbols in a different order: data {list(symbols)} vs checkpoint {list(ckpt.symbols)}")
        raise CheckpointError(
            f"The data's symbols do not match checkpoint {ckpt.path} ({len(symbols)} vs {len(ckpt.symbols)} assets; "
            + "; ".join(detail)
            + "). Point --data-root/--data-glob at the data it was trained on" + (hint or ".")
        )
    if feature_spec is not None and feature_spec.names != ckpt.feature_spec.names:
        raise CheckpointError(
            f"Feature spec differs from checkpoint {ckpt.path}: data gives {list(feature_spec.names)}, checkpoint "
            f"expects {list(ckpt.feature_spec.names)}."
        )


def untrained_notes(ckpt: Checkpoint) -> list[str]:
    """A note when the checkpoint is a run's untrained policy: no trained checkpoint passed the selection gate on
    validation, so best.pt is the benchmark."""
    min_t = ckpt.config.train.select_min_t
    if not ckpt.is_untrained or min_t is None:
        return []
    return [f"This checkpoint is the untrained policy: no trained checkpoint of the run beat both equal weight and the "
            f"untrained policy on validation with the evidence the selection gate asks (--select-min-t {min_t:g}, "
            f"corrected for the number of evaluations), so best.pt is equal weight seen through the "
            f"'{ckpt.config.policy.action}' action. The run's latest.pt holds what training learned, without that "
            "evidence."]


def checkpoint_notes(ckpt: Checkpoint, market: MarketData) -> list[str]:
    """What a user of the checkpoint on ``market`` should be told about the checkpoint itself (the backtester and
    predict print them): ``missing_prices_notes`` and ``untrained_notes``."""
    return missing_prices_notes(ckpt, market) + untrained_notes(ckpt)


def missing_prices_notes(ckpt: Checkpoint, market: MarketData) -> list[str]:
    """A warning when assets' files lack other price columns than in the data the checkpoint's features were fitted
    on: their range, body or gap features are 0 on one side and not on the other, which the policy never saw."""
    trained = dict(ckpt.feature_spec.missing_prices)
    here = {s: tuple(c) for s, c in market.missing_prices().items()}
    changed = [s for s in market.symbols if s in ckpt.symbols and trained.get(s, ()) != here.get(s, ())]
    if not changed:
        return []
    detail = "; ".join(f"{s}: lacked {list(trained.get(s, ())) or 'nothing'} in training, lacks "
                       f"{list(here.get(s, ())) or 'nothing'} here" for s in changed[:10])
    return [f"Warning: {len(changed)} asset(s) lack other price columns than in the checkpoint's training data "
            f"({detail}); their bar-range, body or overnight-gap features differ in kind from what the policy saw."]


def _unsafe_global(exc: BaseException) -> str:
    """The object a refused pickle names ("Unsupported global: GLOBAL builtins.print"), or "" when torch's message
    names none; torch's advice around it (to load with weights_only=False) is never repeated."""
    for line in str(exc).splitlines():
        if "Unsupported global" in line:
            return line.strip().split(" was not")[0].replace("WeightsUnpickler error: ", "")
    return ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
