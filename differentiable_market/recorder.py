"""What one training run records at each evaluation: the validation score, the selection gate's decision
(``gate.py``), the metrics row, the console line and the checkpoints (latest.pt to resume from, best.pt as chosen).

``RunRecorder`` is per run, whatever trains the policy: ``training_run.run_training`` calls it for a single run, and a
study training several members at once calls one per member, so every run folder is written by the same code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import save_checkpoint
from .config import ExperimentConfig
from .errors import TrainingError
from .features import FeatureSpec
from .gate import Decision, Look, SelectionGate, hac_t
from .policy import Policy
from .trainer import MarketTensors, SplitScore, score_split

GATE_SEED_OFFSET = 7919  # the gate's bootstrap seed is the run's seed plus this (any fixed number: reproducible)


@dataclass(frozen=True)
class RunMeta:
    """What every checkpoint of a run records besides its weights (``checkpoint.save_checkpoint``'s arguments)."""

    config: ExperimentConfig
    symbols: tuple[str, ...]
    feature_spec: FeatureSpec
    data_fingerprint: dict[str, Any]
    splits: dict[str, Any]
    trained_through: str
    validated_through: str


def _state(policy: Policy) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}


class RunRecorder:
    """One run's evaluations. ``untrained`` is the benchmark policy best.pt falls back to: None when the run's own
    step-0 policy is it (a run from scratch); a freshly initialised policy when the run starts from another
    checkpoint (``--init``), whose step 0 is then a candidate like any trained checkpoint.

    ``record(row)`` writes a metrics row, ``echo(line)`` prints a console line."""

    def __init__(self, meta: RunMeta, run_dir: Path, tensors: MarketTensors, record: Callable[[dict[str, Any]], None],
                 echo: Callable[[str], None], untrained: Policy | None = None) -> None:
        self.meta, self.run_dir, self.tensors = meta, run_dir, tensors
        self.record, self.echo = record, echo
        tc = meta.config.train
        self.gate = SelectionGate(tc.select_min_t, tc.seed + GATE_SEED_OFFSET)
        self.states: dict[int, dict[str, torch.Tensor]] = {}  # the weights of every look, by step
        self.untrained_state = None if untrained is None else _state(untrained)
        self.untrained_path: np.ndarray | None = None  # per-bar validation log growth of the untrained policy
        self.untrained_objective: float | None = None
        self.best: int | None = -1  # the look best.pt holds (None: the untrained policy; -1: not written yet)
        # early stopping: the best validation objective so far (untrained policy included) and the evaluations since
        self.best_objective: float | None = None
        self.stale = 0
        self.stopped_at: int | None = None  # the step at which the run stopped early, if it did
        if untrained is not None:
            score = score_split(untrained, tensors, meta.config, "validation")
            self.untrained_path, self.untrained_objective = score.policy, score.summary["policy"]["objective"]

    @property
    def best_score(self) -> float | None:
        if self.best == -1:
            return None
        if self.best is None:
            return self.untrained_objective
        return next(lk.objective for lk in self.gate.looks if lk.step == self.best)

    # --- resume ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"gate": self.gate.state_dict(), "states": {str(k): v for k, v in self.states.items()},
                "untrained_path": None if self.untrained_path is None else self.untrained_path.tolist(),
                "untrained_objective": self.untrained_objective,
                "untrained_state": self.untrained_state, "best": self.best, "best_objective": self.best_objective,
                "stale": self.stale, "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state:  # a checkpoint written before the gate kept its looks: later looks start a new record
            self.echo("note: the checkpoint holds no record of earlier evaluations; the selection gate counts the "
                      "evaluations from here on.")
            return
        self.gate.load_state_dict(state["gate"])
        self.states = {int(k): v for k, v in state["states"].items()}
        if state["untrained_path"] is not None:
            self.untrained_path = np.asarray(state["untrained_path"], dtype=np.float64)
        self.untrained_objective = state["untrained_objective"]
        self.untrained_state = state["untrained_state"]
        self.best = state["best"]
        self.best_objective, self.stale = state.get("best_objective"), state.get("stale", 0)
        self.stopped_at = state.get("stopped_at")

    # --- one evaluation --------------------------------------------------------------------------------------------
    def evaluate(self, step: int, policy: Policy, training_state: Callable[[], dict[str, Any]] | None,
                 is_untrained: bool) -> tuple[dict[str, Any], bool]:
        """Score ``policy`` (at ``step``) on validation, let the gate decide, count the evaluations without progress
        (``--patience``: ``stopped_at`` is set where the run should stop), write best.pt if the gate's choice changed
        and latest.pt when ``training_state`` is given (it returns the trainer's state; the recorder adds its own), record
        the row and print the line. ``is_untrained``: this is the run's own untrained policy (step 0 from scratch),
        the benchmark rather than a candidate. Returns the row and whether this look is now best.pt."""
        cfg = self.meta.config
        score = score_split(policy, self.tensors, cfg, "validation")
        objective = score.summary["policy"]["objective"]
        if self.best_objective is None or objective > self.best_objective:
            self.best_objective, self.stale = objective, 0
        else:
            self.stale += 1
        patience = cfg.train.patience
        if patience is not None and self.stale >= patience and step < cfg.train.epochs:
            self.stopped_at = step  # early stopping: recorded in latest.pt, so a resumed run does not go on
        if is_untrained:
            self.untrained_path, self.untrained_objective = score.policy, objective
            self.untrained_state = _state(policy)
            decision = self.gate.decide()
        else:
            if self.untrained_path is None:
                raise TrainingError("the untrained policy was not scored before the first trained evaluation")
            self.states[step] = _state(policy)
            decision = self.gate.add(Look(step, objective, score.policy - score.equal_weight,
                                          score.policy - self.untrained_path))
        chosen = decision.step
        changed = chosen != self.best
        if changed:
            self._write_best(chosen)
        if training_state is not None:
            self._save("latest.pt", policy, step, {**training_state(), "recorder": self.state_dict()})
        row = self._row(step, score, decision, is_untrained)
        self.record(row)
        self.echo(self._line(step, row, decision, is_untrained, changed))
        if self.stopped_at == step:
            self.record({"type": "stopped", "step": step, "patience": patience,
                         "best_objective": self.best_objective})
            self.echo(f"step {step:>6}  stopped early: {patience} evaluations without a better validation objective "
                      "(--patience)")
        return row, (chosen is None and is_untrained) or chosen == step

    def _write_best(self, chosen: int | None) -> None:
        if chosen is None:
            state, step = self.untrained_state, 0
        else:
            state, step = self.states[chosen], chosen
        assert state is not None
        self.best = chosen
        self._save("best.pt", state, step, None, untrained=chosen is None)

    def _save(self, name: str, policy: Policy | dict[str, torch.Tensor], step: int,
              training_state: dict[str, Any] | None, untrained: bool | None = None) -> None:
        path = self.run_dir / "checkpoints" / name
        m = self.meta
        try:
            save_checkpoint(path, config=m.config, symbols=m.symbols, feature_spec=m.feature_spec, policy=policy,
                            step=step, data_fingerprint=m.data_fingerprint, splits=m.splits,
                            best_score=self.best_score, trained_through=m.trained_through,
                            validated_through=m.validated_through, training_state=training_state, untrained=untrained)
        except OSError as exc:
            raise TrainingError(
                f"Could not write {path} at step {step}: {exc.strerror or exc}. The previous checkpoint there is "
                f"intact (writes are atomic); free some space and continue with --resume {self.run_dir}."
            ) from None

    def _row(self, step: int, score: SplitScore, decision: Decision, is_untrained: bool) -> dict[str, Any]:
        summary = score.summary
        versus = None
        if self.untrained_path is not None and not is_untrained:
            excess = score.policy - self.untrained_path
            versus = {"log_growth": float(excess.sum()), "t_stat": hac_t(excess)}
        return {
            "type": "validation", "step": step, "score": summary["policy"]["objective"],
            "best": decision.step == step and not is_untrained or (is_untrained and decision.step is None),
            "eligible": is_untrained or decision.passed(step) or self.gate.min_t is None,
            **summary,
            "excess_vs_untrained": versus,
            "gate": {"chosen_step": 0 if decision.step is None else decision.step,
                     "chosen_is_untrained": decision.step is None, "critical_t": _finite_or_none(decision.critical_t),
                     "alpha": decision.alpha, "looks": decision.looks,
                     "evidence": None if is_untrained else decision.evidence.get(step)},
        }

    def _line(self, step: int, row: dict[str, Any], decision: Decision, is_untrained: bool, changed: bool) -> str:
        p, ew = row["policy"], row["equal_weight"]
        ppy = self.tensors.bars_per_year
        bars = row["bars"]

        def per_year(lg: float) -> str:
            return f"{100 * lg / bars * ppy:+.1f}%/yr"

        text = (f"step {step:>6}  val {per_year(p['log_growth'])} (equal weight {per_year(ew['log_growth'])})  "
                f"turnover {p['turnover']:.4f}")
        if is_untrained:
            return text + "  (the untrained policy: best.pt until a trained checkpoint passes the gate)"
        vs_u = row["excess_vs_untrained"]["t_stat"] if row["excess_vs_untrained"] else float("nan")
        text += f"  t vs EW {row['excess_vs_equal_weight']['t_stat']:+.2f}, vs untrained {vs_u:+.2f}"
        if self.gate.min_t is None:
            return text + ("  * best" if decision.step == step else "")
        text += f"  (gate {decision.critical_t:.2f} over {decision.looks} looks)"
        if decision.step == step:
            text += "  * best"
        elif changed:
            text += ("  best.pt: back to the untrained policy" if decision.step is None
                     else f"  best.pt: step {decision.step}")
        return text


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
