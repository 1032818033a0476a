"""The console script (cli.py) and the parsers every command shares (argparsing.py): subcommands, short errors with
the closest flag, help split into common and expert flags, hidden old names, refused flags."""

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from differentiable_market import __version__, cli
from differentiable_market.argparsing import Parser, is_expert

REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = {"train", "backtest", "study", "predict", "data", "version"}


def _all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for sub in cli.subcommand_parsers(parser).values():
        yield from _all_parsers(sub)


def test_the_console_script_is_declared_and_points_at_the_dispatcher():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["differentiable-market"] == "differentiable_market.cli:main"
    module, _, function = project["project"]["scripts"]["differentiable-market"].partition(":")
    assert getattr(__import__(module, fromlist=[function]), function) is cli.main


def test_command_parsers_lists_every_subcommand_with_its_full_parser_and_has_no_side_effects(tmp_path, monkeypatch,
                                                                                             capsys):
    monkeypatch.chdir(tmp_path)
    parsers = cli.command_parsers()
    assert set(parsers) == SUBCOMMANDS | {"data check", "data demo"}
    assert capsys.readouterr() == ("", "") and list(tmp_path.iterdir()) == []  # nothing printed or written
    for name, parser in parsers.items():
        assert parser.prog == f"differentiable-market {name}"
        for p in _all_parsers(parser):
            assert p.allow_abbrev is False, p.prog
    # expert flags are in the parser (the reference lists them) but not in the short help
    train = parsers["train"]
    expert = {s for a in train._actions if is_expert(a) for s in a.option_strings}
    for flag in ("--pg-weight", "--clip-eps", "--ema-decay", "--reference", "--cpu-heap", "--updates-per-batch",
                 "--universe-sample", "--hidden-size", "--asset-hidden", "--mixing"):
        assert flag in expert, flag
        assert flag not in _listed(train.format_help()) and flag in _listed(train.format_help_all())
    for flag in ("--data-root", "--epochs", "--cost-bps", "--lookback", "--seed", "--device", "--out-dir",
                 "--config", "--print-config", "--quiet", "--verbose"):
        assert flag in _listed(train.format_help()), flag


def _listed(help_text: str) -> set[str]:
    """The flags a help text lists in its flag column."""
    import re

    return {m.group(1) for m in re.finditer(r"^\s{2}(?:-\w, )?(--[\w-]+)", help_text, re.M)}


def test_a_later_command_registers_with_one_line(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))
    cli.register("pretrain", "pretrain a policy", "differentiable_market.cli:build_version_parser",
                 "differentiable_market.cli:version_main")
    assert "pretrain" in cli.command_parsers() and "pretrain" in cli.top_help()


def test_top_level_help_fits_one_screen_and_names_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 40 and max(len(line) for line in out.splitlines()) <= 120
    for name in SUBCOMMANDS:
        assert f"\n  {name} " in out
    assert "data demo reversal" in out  # the first-run example


def test_version_flag_and_command(capsys):
    assert cli.main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"differentiable-market {__version__}"
    assert cli.main(["version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"differentiable-market {__version__}\n") and "torch " in out and "python " in out


@pytest.mark.parametrize("argv, flag, suggestion", [
    (["train", "--epoch", "5"], "--epoch", "--epochs"),
    (["train", "--epocs=5"], "--epocs", "--epochs"),
    (["backtest", "--window", "64"], "--window", "--window-length"),
    (["study", "--fold", "2"], "--fold", "--folds"),
    (["predict", "--checkpiont", "x"], "--checkpiont", "--checkpoint"),
    (["train", "--save-dri", "x"], "--save-dri", "--out-dir"),  # an old name's typo points at the current name
])
def test_an_unknown_flag_gets_a_two_line_error_naming_the_closest_flag(argv, flag, suggestion, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "usage" not in err
    assert lines[0] == f"differentiable-market {argv[0]}: error: unknown flag {flag}; did you mean {suggestion}?"


def test_an_invalid_choice_names_the_closest_one(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["backtest", "--checkpoint", "x", "--split", "tset"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice 'tset' (choose from train, validation, test, all); did you mean test?" in err
    with pytest.raises(SystemExit):
        cli.main(["train", "--action", "bandd"])
    err = capsys.readouterr().err
    assert "invalid choice 'bandd' (choose from target, partial, band); did you mean band?" in err


def test_a_misspelt_baseline_names_the_closest(tmp_path, capsys):
    from differentiable_market.baselines import registry
    from differentiable_market.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown name 'olmr' in 'core,olmr' \(did you mean 'olmar'\?\)"):
        registry.resolve("core,olmr")
    assert cli.main(["backtest", "--checkpoint", str(tmp_path), "--baselines", "olmr"]) == 2
    assert "did you mean 'olmar'?" in capsys.readouterr().err


def test_an_unknown_command_names_the_closest(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'; did you mean train?" in err and len(err.strip().splitlines()) == 2
    assert cli.main([]) == 2 and "commands:" in capsys.readouterr().out


def test_old_flag_names_keep_working_hidden_from_help():
    parsers = cli.command_parsers()
    train, backtest, study = parsers["train"], parsers["backtest"], parsers["study"]
    assert train.parse_args(["--save-dir", "a"]).save_dir == "a" == train.parse_args(["--out-dir", "a"]).save_dir
    assert backtest.parse_args(["--report-dir", "b"]).out_dir == "b"
    assert study.parse_args(["--window", "rolling"]).window == "rolling"
    assert study.parse_args(["--train-window", "rolling"]).window == "rolling"
    assert study.parse_args(["--save-dir", "s"]).save_dir == "s"
    for parser, old in ((train, "--save-dir"), (backtest, "--report-dir"), (study, "--window"), (study, "--save-dir"),
                        (train, "--no-compile")):
        assert old not in _listed(parser.format_help_all()) and old not in parser.format_help_all().replace(
            "--window-", ""), old
    # --compile is one flag; --no-compile is its old spelling of off
    assert train.parse_args([]).compile is None
    assert train.parse_args(["--compile"]).compile == "on"
    assert train.parse_args(["--compile", "off"]).compile == "off"
    assert train.parse_args(["--no-compile"]).compile == "off"
    # cash is one on/off flag in train, study and backtest
    for parser in (train, study, backtest):
        assert parser.parse_args(["--include-cash"]).include_cash is True
        assert parser.parse_args(["--no-include-cash"]).include_cash is False
    # one name for the output folder across the commands
    for name in ("train", "backtest", "study", "predict"):
        assert "--out-dir" in _listed(parsers[name].format_help()), name


def test_a_flag_the_study_would_ignore_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["study", "--test-fraction", "0.2"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--test-fraction is not a flag of this command" in err and "--oos-fraction" in err
    assert "--test-fraction" not in _listed(cli.command_parsers()["study"].format_help_all())


def test_epochs_help_says_it_counts_training_steps():
    text = " ".join(cli.command_parsers()["train"].format_help().split())
    assert "--epochs STEPS training steps, not passes over the data" in text


def test_help_texts_carry_no_measurements_or_history():
    import re

    for name, parser in cli.command_parsers().items():
        text = " ".join(parser.format_help_all().split())
        for pattern in (r"\bmeasured\b", r"\btook\b", r"\bminutes\b", r"\d+(\.\d+)? ?s per step", r"faster than",
                        r"\bearlier\b", r"\bprevious defaults?\b"):
            assert not re.search(pattern, text), (name, pattern)


def test_parser_subclass_keeps_argparse_semantics():
    p = Parser(prog="x")
    p.add_argument("--alpha", type=int)
    assert p.parse_args(["--alpha", "3"]).alpha == 3
    with pytest.raises(SystemExit):
        p.parse_args(["--alph", "3"])  # no abbreviations
    assert p.closest_flag("--alph") == "--alpha"


def test_the_old_module_entry_points_run_the_same_code():
    # one interpreter runs all four: each module's main with its own prog, as `python -m ...` does
    code = (
        "import sys, contextlib, io\n"
        "from differentiable_market import train, predict\n"
        "from differentiable_market.marketsimulator import run\n"
        "from differentiable_market.study import run as study\n"
        "for mod, prog in ((train, 'python -m differentiable_market.train'),"
        " (run, 'python -m differentiable_market.marketsimulator.run'),"
        " (study, 'python -m differentiable_market.study'), (predict, 'python -m differentiable_market.predict')):\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try:\n"
        "            mod.main(['--help'], prog=prog)\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0\n"
        "    assert buf.getvalue().startswith('usage: ' + prog), buf.getvalue()[:80]\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    # and `python -m differentiable_market` is the console script
    out = subprocess.run([sys.executable, "-m", "differentiable_market", "--version"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"differentiable-market {__version__}"


def test_the_modules_main_blocks_pass_their_own_prog():
    for path, prog in (("differentiable_market/train.py", "python -m differentiable_market.train"),
                       ("differentiable_market/marketsimulator/run.py",
                        "python -m differentiable_market.marketsimulator.run"),
                       ("differentiable_market/study/__main__.py", "python -m differentiable_market.study"),
                       ("differentiable_market/predict.py", "python -m differentiable_market.predict")):
        assert f'main(prog="{prog}")' in (REPO / path).read_text(), path
