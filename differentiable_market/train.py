"""The train command: ``differentiable-market train`` (also ``python -m differentiable_market.train``).

Parses the training flags (``flags.py``) and an optional ``--config`` file into the config tree and starts a training
run (``training_run.py``): it loads and validates the data (the bundled sample when no data root exists), trains with
GRPO, and leaves a run folder: config.json, metrics.jsonl, training.png (the curves, redrawn at each evaluation),
checkpoints/latest.pt and best.pt; with --tensorboard also TensorBoard event files in tensorboard/. The last line
printed says what best.pt is (a trained policy, or the untrained one) and what to run next.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from . import console
from .checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint_name
from .config import ExperimentConfig
from .configfile import TREE, check_sections, dump, experiment_config, read_config_file, tree_sections
from .errors import CheckpointError, ConfigError, DifferentiableMarketError
# The flags and the run are re-exported here: scripts import them from this module.
from .flags import FLAG_FIELDS, RESUME_OVERRIDABLE, build_parser, config_from_args, given_flags  # noqa: F401
from .flags import with_flag_names
from .outcome import training_outcome
from .training_run import check_init_split, execution_advice, load_data, run_training  # noqa: F401

PROG = "differentiable-market train"


def resolve_resume_path(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "latest.pt"
    if not p.is_file():
        raise CheckpointError(f"Cannot resume: {p} does not exist. Pass a run folder that has checkpoints/latest.pt.")
    return p


def report_error(exc: BaseException) -> int:
    """Print a command's error (config fields named with their flags) and return the exit status 2."""
    print(f"error: {with_flag_names(str(exc))}", file=sys.stderr)
    return 2


def with_pretrained_policy(cfg: ExperimentConfig, init: Checkpoint) -> ExperimentConfig:
    """``cfg`` with the policy and feature settings of the pretrained checkpoint ``init`` (a pretrained policy has one
    shape and one feature set; the run's other settings stay as given)."""
    if (cfg.policy, cfg.features) != (init.config.policy, init.config.features):
        console.say(f"Policy and feature settings from the pretrained policy {init.path} (architecture "
                    f"{init.config.policy.architecture}, action {init.config.policy.action}).")
    return dataclasses.replace(cfg, policy=init.config.policy, features=init.config.features)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog=prog).parse_args(argv)
    with console.verbosity(console.level_of(args.quiet, args.verbose)):
        try:
            return _train(args, argv)
        except DifferentiableMarketError as exc:
            return report_error(exc)
        except KeyboardInterrupt:
            print("\nInterrupted. Continue with --resume <run folder> (checkpoints/latest.pt holds the last eval "
                  "step).", file=sys.stderr)
            return 130


def _train(args, argv: list[str]) -> int:
    progress = console.bars_enabled(not args.no_progress)
    if args.resume:
        if args.init_checkpoint:
            raise ConfigError("--resume and --init-checkpoint cannot be combined.")
        if args.config:
            raise ConfigError("--resume continues a run with its own config; drop --config.")
        extra = given_flags(args) - RESUME_OVERRIDABLE
        if extra:
            flags = ", ".join("--" + f.replace("_", "-") for f in sorted(extra))
            raise ConfigError(f"When resuming, the run's own config is used; drop {flags} (only --epochs, "
                              "--data-root, --data-glob, --device, --tensorboard and --cpu-heap may change).")
        ckpt = load_checkpoint(resolve_resume_path(args.resume))
        if ckpt.training_state is None:
            raise CheckpointError(f"{ckpt.path} holds no training state (best.pt does not); resume from the run "
                                  "folder or its checkpoints/latest.pt.")
        cfg = config_from_args(args, ckpt.config)
        if args.print_config:
            console.result(dump(tree_sections(cfg), args.print_config, f"{PROG} config (resumed run)").rstrip())
            return 0
        run_dir = run_training(cfg, resume=ckpt, progress=progress, argv=argv)
    else:
        base, from_file = None, set()
        if args.config:
            file = read_config_file(args.config)
            check_sections(file, tuple(TREE), "train")
            base = experiment_config(file)
            from_file = {k for body in file.sections.values() for k in body}
        cfg = config_from_args(args, base)
        if args.print_config:
            console.result(dump(tree_sections(cfg), args.print_config,
                                f"{PROG} config; pass it back with --config FILE").rstrip())
            return 0
        why = execution_advice(cfg, "execution" in given_flags(args) or "execution" in from_file)
        if why is not None:
            console.say(why)
        init = (load_checkpoint(resolve_checkpoint_name(args.init_checkpoint, cfg.env.include_cash))
                if args.init_checkpoint else None)
        if init is not None and init.pretraining is not None:
            cfg = with_pretrained_policy(cfg, init)
        if init is not None and init.config.env.include_cash != cfg.env.include_cash:
            raise CheckpointError(f"{init.path} was trained with include_cash={init.config.env.include_cash}; "
                                  "pass the same --include-cash setting to start from it.")
        run_dir = run_training(cfg, init=init, progress=progress, argv=argv, execution_choice=why)
    console.result(training_outcome(run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m differentiable_market.train"))
