"""Config files (configfile.py): --config FILE with flags overriding it, --print-config, and replay from a run's
config.json, a study's study.json and a backtest's report.json."""

import dataclasses
import json
import tomllib

import pytest

from differentiable_market import cli
from differentiable_market.config import (DataConfig, ExperimentConfig, PolicyConfig, TrainConfig, config_from_dict,
                                          config_to_dict)
from differentiable_market.configfile import dump_toml, experiment_config, read_config_file, tree_sections
from differentiable_market.errors import ConfigError
from differentiable_market.flags import config_from_args
from differentiable_market.study.report import StudySettings

CUSTOM = ExperimentConfig(
    data=DataConfig(root="my data", include=("A", "B"), max_assets=None, val_fraction=0.2, embargo_bars=7),
    policy=PolicyConfig(architecture="flat", action="partial", hidden_size=12),
    train=TrainConfig(epochs=33, lookback=24, select_min_t=None, lr=1.5e-05, microbatch_windows=None, seed=4,
                      save_dir="elsewhere"),
)


def _train_config(argv):
    parser = cli.command_parsers()["train"]
    args = parser.parse_args(argv)
    base = experiment_config(read_config_file(args.config)) if args.config else None
    return config_from_args(args, base)


def test_toml_round_trips_every_field_including_unset_ones(tmp_path):
    text = dump_toml(tree_sections(CUSTOM), "a header")
    doc = tomllib.loads(text)  # valid TOML
    assert doc["train"]["select_min_t"] == "none" and doc["data"]["include"] == ["A", "B"]
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert experiment_config(read_config_file(path)) == CUSTOM


def test_print_config_output_is_a_config_file_that_replays_the_run(tmp_path, capsys):
    assert cli.main(["train", "--epochs", "9", "--select-min-t", "off", "--include", "X,Y", "--print-config"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "run.toml").write_text(text)
    cfg = _train_config(["--config", str(tmp_path / "run.toml")])
    assert cfg.train.epochs == 9 and cfg.train.select_min_t is None and cfg.data.include == ("X", "Y")
    assert cfg == _train_config(["--epochs", "9", "--select-min-t", "off", "--include", "X,Y"])
    assert cli.main(["train", "--config", str(tmp_path / "run.toml"), "--print-config", "json"]) == 0
    assert config_from_dict(ExperimentConfig, json.loads(capsys.readouterr().out)) == cfg


def test_flags_override_the_file_and_the_file_overrides_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\nepochs = 40\nlookback = 20\n\n[env]\ncost_bps = 3.5\n')
    cfg = _train_config(["--config", str(path), "--epochs", "7"])
    assert (cfg.train.epochs, cfg.train.lookback, cfg.env.cost_bps) == (7, 20, 3.5)
    assert cfg.train.batch_windows == TrainConfig().batch_windows  # untouched keys keep their defaults


def test_a_run_folders_config_json_replays_it(tmp_path):
    run = tmp_path / "runs" / "20260101-000000"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"type": "header", "config": config_to_dict(CUSTOM), "data": {}}))
    assert _train_config(["--config", str(run)]) == CUSTOM  # the folder, or
    assert _train_config(["--config", str(run / "config.json")]) == CUSTOM  # the file
    assert _train_config(["--config", str(run), "--seed", "9"]).train.seed == 9


def test_unknown_keys_and_sections_are_errors_naming_file_section_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nepoch = 5\n")
    with pytest.raises(ConfigError, match=r"bad.toml \[train\]: unknown key 'epoch' \(did you mean 'epochs'\?\)"):
        experiment_config(read_config_file(path))
    path.write_text("[trian]\nepochs = 5\n")
    assert cli.main(["train", "--config", str(path)]) == 2
    path.write_text("[train]\nlookback = 'long'\n")
    with pytest.raises(ConfigError, match=r"bad.toml \[train\].lookback: expected an integer"):
        experiment_config(read_config_file(path))
    path.write_text("[train\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        read_config_file(path)
    with pytest.raises(ConfigError, match="no such file"):
        read_config_file(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="holds none of config.json, study.json, report.json"):
        read_config_file(tmp_path)


def test_a_section_the_command_does_not_read_is_an_error(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[study]\nfolds = 2\n")
    assert cli.main(["train", "--config", str(path)]) == 2
    assert "section [study] is not read by train" in capsys.readouterr().err
    path.write_text("[train]\nepochs = 2\n")
    assert cli.main(["backtest", "--config", str(path)]) == 2
    assert "section [train] is not read by backtest, which reads [backtest]" in capsys.readouterr().err


def _study_json(folder, cfg, settings):
    folder.mkdir(parents=True)
    state = {"format": "differentiable_market.study", "format_version": 1, "config": config_to_dict(cfg),
             "settings": dataclasses.asdict(settings), "jobs": []}
    (folder / "study.json").write_text(json.dumps(state))
    return folder


def test_a_study_replays_from_its_study_json_with_flags_on_top(tmp_path, capsys):
    from differentiable_market.study.run import build_study_parser, resolve_study

    cfg = dataclasses.replace(CUSTOM, data=dataclasses.replace(CUSTOM.data, universe_through="2001-01-01T00:00:00"),
                              train=dataclasses.replace(CUSTOM.train, save_dir=str(tmp_path / "studies")))
    folder = _study_json(tmp_path / "studies" / "s1", cfg, StudySettings(folds=3, seeds=2, bootstrap_reps=300))
    args = build_study_parser().parse_args(["--config", str(folder), "--seeds", "5"])
    got_cfg, settings, _ = resolve_study(args)
    assert (settings.folds, settings.seeds, settings.bootstrap_reps) == (3, 5, 300)
    # the universe date the study derived is derived again by the replay
    assert got_cfg == dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, universe_through=None))
    assert cli.main(["study", "--config", str(folder), "--print-config"]) == 0
    doc = tomllib.loads(capsys.readouterr().out)
    assert doc["study"]["folds"] == 3 and doc["train"]["epochs"] == 33 and doc["data"]["universe_through"] == "none"
    # train reads a study.json's training config (not its study settings)
    assert _train_config(["--config", str(folder / "study.json")]).train.epochs == 33


def test_a_study_without_a_config_goes_to_studies_and_keeps_its_defaults():
    from differentiable_market.study.run import build_study_parser, resolve_study

    cfg, settings, _ = resolve_study(build_study_parser().parse_args([]))
    assert cfg.train.save_dir == "studies" and settings == StudySettings()


def test_backtest_options_come_from_report_json_with_flags_on_top(tmp_path, capsys):
    from differentiable_market.marketsimulator.run import build_parser, resolve_options

    report = tmp_path / "backtests" / "r1"
    report.mkdir(parents=True)
    options = {"checkpoint": "runs/x", "window_length": 64, "stride": None, "split": "validation", "data_root": None,
               "data_glob": None, "cost_bps": 5.0, "include_cash": None, "trades": False,
               "transfer_universe": False, "olmar_window": 5, "olmar_eps": 10.0, "vol_lookback": 63,
               "baselines": "core,eg", "out_dir": str(tmp_path / "backtests")}
    (report / "report.json").write_text(json.dumps({"format": "differentiable_market.backtest", "options": options}))
    opts, out_dir = resolve_options(build_parser().parse_args(["--config", str(report), "--cost-bps", "2"]))
    assert (opts.checkpoint, opts.window_length, opts.split, opts.cost_bps, opts.trades, opts.baselines) == \
        ("runs/x", 64, "validation", 2.0, False, "core,eg")
    assert out_dir == str(tmp_path / "backtests")
    assert cli.main(["backtest", "--config", str(report), "--print-config"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["backtest"]["window_length"] == 64
    with pytest.raises(ConfigError, match="--checkpoint is required"):
        resolve_options(build_parser().parse_args([]))


def test_predict_options_from_a_config_file(tmp_path):
    from differentiable_market.predict import build_parser, resolve_options

    path = tmp_path / "p.toml"
    path.write_text('[predict]\ncheckpoint = "runs/x"\nholdings = "none"\nout_dir = "preds"\n')
    opts = resolve_options(build_parser().parse_args(["--config", str(path), "--data-root", "d"]))
    assert (opts.checkpoint, opts.holdings, opts.out_dir, opts.data_root) == ("runs/x", None, "preds", "d")
