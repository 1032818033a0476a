"""The user documentation's executable parts: the README's front door and quickstart, the generated CLI reference,
and the Python API example (examples/train_and_backtest.py)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TEST_COMMAND = "uv run pytest tests/differentiable_market -q"
RUNS = "runs"  # where training writes run folders by default, relative to the current folder


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- README ------------------------------------------------------------------------------------------------------


def test_readme_is_a_front_door_with_the_ci_test_command():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert TEST_COMMAND in text
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text(encoding="utf-8")  # CI runs what the README says


def quickstart_commands() -> list[str]:
    """The shell commands of the README's quickstart, in order (lines of its bash blocks that start with uv run)."""
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- quickstart:begin -->", 1)[1].split("<!-- quickstart:end -->", 1)[0]
    commands = []
    for fence in re.findall(r"```bash\n(.*?)```", block, flags=re.S):
        commands += [line.strip() for line in fence.splitlines() if line.strip().startswith("uv run ")]
    return commands


def test_readme_quickstart_commands_are_found():
    commands = quickstart_commands()
    # a demo market, then train/backtest/predict on it, then train/backtest on the sample, then a study
    assert len(commands) >= 7
    assert any("reversal_market" in c or "data demo" in c for c in commands)
    assert sum("<run folder>" in c for c in commands) >= 3


def _argv(command: str) -> list[str]:
    """A quickstart command as argv for this interpreter: `uv run python ...` -> sys.executable ...;
    `uv run differentiable-market ...` -> the console script beside this interpreter."""
    words = shlex.split(command)
    assert words[:2] == ["uv", "run"], command
    words = words[2:]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    script = Path(sys.executable).parent / words[0]
    assert script.exists(), f"{words[0]} is not installed beside {sys.executable}"
    return [str(script), *words[1:]]


def _newest_run(cwd: Path) -> str:
    runs = sorted((cwd / RUNS).iterdir())
    return str(runs[-1].relative_to(cwd))


def _is(argv: list[str], *names: str) -> bool:
    return any(n in argv for n in names) or any(f"differentiable_market.{n}" in argv for n in names)


SMALL_TRAIN = ["--lookback", "16", "--batch-windows", "4", "--epochs", "2", "--eval-interval", "2"]
SMALL_STUDY = [*SMALL_TRAIN, "--folds", "2", "--seeds", "1", "--bootstrap-reps", "100"]


def _quickstart_argvs(cwd: Path, small: bool):
    """Each README quickstart command as argv (see ``_argv``), its run folder filled in; with ``small``, training and
    the study get tiny flags appended (argparse keeps the last value of a flag)."""
    for command in quickstart_commands():
        if "<run folder>" in command:
            command = command.replace(f"{RUNS}/<run folder>", _newest_run(cwd))
        argv = _argv(command)
        if small and _is(argv, "train"):
            argv += SMALL_TRAIN
        if small and _is(argv, "study"):
            argv += SMALL_STUDY
        yield command, argv


def run_quickstart(cwd: Path, small: bool) -> list[str]:
    """Run the README's quickstart commands in ``cwd``, each in a process of its own, as a user would. Returns each
    command's output."""
    outputs = []
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for command, argv in _quickstart_argvs(cwd, small):
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{command}\n{output}"
        outputs.append(output)
    return outputs


def _run_module(module: str, args: list[str]) -> int | None:
    """``python -m module args`` in this process: runpy with sys.argv set, the exit status from SystemExit."""
    saved = sys.argv
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code
    finally:
        sys.argv = saved
    return 0


def run_quickstart_in_process(cwd: Path, capsys) -> list[str]:
    """The same commands called in this process (``python -c CODE`` executed, ``python -m MODULE`` through the
    module's ``main(argv)``, the console script through ``differentiable_market.cli.main``): what they run is the
    same code, without paying a fresh interpreter and torch import per command."""
    outputs = []
    for command, argv in _quickstart_argvs(cwd, small=True):
        words = argv[1:] if argv[0] == sys.executable else [Path(argv[0]).name, *argv[1:]]
        if words[0] == "-c":
            exec(compile(words[1], "<quickstart>", "exec"), {"__name__": "__main__"})
            rc = 0
        elif words[0] == "-m":
            rc = _run_module(words[1], words[2:])
        else:
            rc = importlib.import_module("differentiable_market.cli").main(words[1:])
        captured = capsys.readouterr()
        output = captured.out + captured.err
        assert rc in (0, None), f"{command}\n{output}"
        outputs.append(output)
    return outputs


def _best_step(run: Path) -> tuple[int, float]:
    """(step, excess t) of the last validation row that saved best.pt."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = [r for r in rows if r.get("type") == "validation" and r.get("best")][-1]
    return best["step"], best["excess_vs_equal_weight"]["t_stat"]


def test_readme_quickstart_runs_end_to_end_with_small_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    outputs = run_quickstart_in_process(tmp_path, capsys)
    runs = sorted((tmp_path / RUNS).iterdir())
    assert len(runs) == 2  # the demo market's run, then the sample's
    assert json.loads((runs[0] / "config.json").read_text())["config"]["data"]["root"] == "demo"
    for run in runs:
        assert (run / "checkpoints" / "best.pt").is_file()
    reports = sorted((tmp_path / "backtests").iterdir())
    assert len(reports) == 2 and all((r / "report.json").is_file() for r in reports)
    predictions = list((tmp_path / "predictions").glob("*.json"))
    assert len(predictions) == 1
    target = json.loads(predictions[0].read_text())["target_weights"]
    assert len(target) == 32 and math.isclose(sum(target.values()), 1.0, abs_tol=1e-9)
    study = next((tmp_path / "studies").iterdir())
    verdict = json.loads((study / "study.json").read_text())["results"]["verdict"]
    assert verdict in outputs[-1] and "equal weight" in verdict


@pytest.mark.slow
def test_readme_quickstart_as_written(tmp_path):
    """The README's flags exactly: on the demo market training learns (best.pt past step 0, excess t >= 2); on the
    bundled sample the gate keeps the untrained policy, and the backtest says so."""
    outputs = run_quickstart(tmp_path, small=False)
    demo, sample = sorted((tmp_path / RUNS).iterdir())
    step, t = _best_step(demo)
    assert step > 0 and t >= 2.0
    assert _best_step(sample)[0] == 0
    assert any("This checkpoint is the untrained policy" in out for out in outputs)


# --- the generated CLI reference ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hook():
    return _load(ROOT / "docs" / "_hooks" / "cli_reference.py", "cli_reference_hook")


def test_cli_reference_covers_every_flag_of_every_command(hook):
    parsers = hook.command_parsers()
    assert {"train", "backtest", "study", "predict"} <= set(parsers)
    page = hook.on_page_markdown(f"# CLI\n\n{hook.MARKER}\n", None, None, None)
    assert hook.MARKER not in page and "%(" not in page
    for name, parser in parsers.items():
        assert f"## `{name}`" in page
        section = page.split(f"## `{name}`", 1)[1].split("\n## `", 1)[0]
        for action in parser._actions:
            if not hook.documented(action):
                continue  # help switches, hidden and refused flags, the subcommand selector
            for flag in hook._shown(action):
                assert f"`{flag}`" in section, f"{name}: {flag} missing from the reference"


def test_cli_reference_row_format(hook):
    ap = argparse.ArgumentParser(prog="demo", description="A   demo\ncommand.")
    g = ap.add_argument_group("things")
    g.add_argument("--mode", choices=["a", "b"], default="a", help="pick one (default: %(default)s)")
    g.add_argument("--path", required=True, metavar="FILE", help="a | piped <text>")
    g.add_argument("--flag", action="store_true", help="a switch")
    g.add_argument("--hidden", help=argparse.SUPPRESS)
    g.add_argument("--size", type=int, help="how big (default: the lookback (in bars)), or 0")
    text = hook.render_parser("demo", ap)
    rows = [line for line in text.splitlines() if line.startswith("| `--")]
    assert rows == [
        "| `--mode` | `a` \\| `b` | `a` | pick one |",
        "| `--path` | `FILE` | required | a \\| piped &lt;text&gt; |",
        "| `--flag` |  |  | a switch |",
        "| `--size` | `SIZE` | the lookback (in bars) | how big, or 0 |",
    ]
    assert "### demo: things" in text and "`--hidden`" not in text and "`-h`" not in text
    assert "demo --path FILE [flags]" in text and "A demo command." in text


def test_shape_brackets_are_escaped_outside_code():
    shapes = _load(ROOT / "docs" / "_hooks" / "griffe_shapes.py", "griffe_shapes_hook")
    assert shapes.escape_shapes("bool [T, A] and [a](url) and ``x[T]``") == \
        "bool \\[T, A\\] and [a](url) and ``x[T]``"


# --- the Python API example -----------------------------------------------------------------------------------


def _equal_weight_returns(market_dir: Path, decision_dates: pd.DatetimeIndex, cost_bps: float) -> np.ndarray:
    """Equal weight rebalanced every decision, from cash, open execution, by share counting from the CSV files:
    the decision after bar t fills at O[t+1] and is held to O[t+2]; the fee is cost x traded fraction of wealth."""
    frames = {p.stem: pd.read_csv(p, parse_dates=["timestamp"]).set_index("timestamp")
              for p in sorted(market_dir.glob("*.csv"))}
    opens = pd.DataFrame({s: f["open"] for s, f in frames.items()})
    opens.index = opens.index.tz_localize(None)
    pos = opens.index.get_indexer(decision_dates.tz_localize(None) if decision_dates.tz else decision_dates)
    assert (pos >= 0).all() and (pos + 2 < len(opens)).all()
    o = opens.to_numpy()
    n = o.shape[1]
    held = np.zeros(n)  # weights before the first fill: all cash
    out = []
    for t in pos:
        g = o[t + 2] / o[t + 1]
        w = np.full(n, 1.0 / n)
        cost = cost_bps * 1e-4 * np.abs(w - held).sum()
        growth = (1.0 - cost) * (w @ g)
        out.append(growth - 1.0)
        held = w * g / (w @ g)
    return np.asarray(out)


def test_example_script_end_to_end(tmp_path, capsys):
    example = _load(ROOT / "examples" / "train_and_backtest.py", "train_and_backtest_example")
    out = tmp_path / "demo-run"
    summary = example.main(["--out", str(out), "--assets", "6", "--bars", "500", "--epochs", "2", "--lookback", "16",
                            "--batch-windows", "4", "--eval-interval", "2"])
    printed = capsys.readouterr().out
    assert "One path proves nothing either way" in printed

    run, report = Path(summary["run"]), Path(summary["report"])
    assert summary["best_step"] == _best_step(run)[0]
    assert summary["untrained"] == (summary["best_step"] == 0)

    # The example's annualised log growth is the report's geometric annualised return in log form.
    strategies = json.loads((report / "report.json").read_text())["strategies"]
    for name, lg in summary["log_growth_per_year"].items():
        assert lg == pytest.approx(math.log1p(strategies[name]["mean"]["annualised_return"]), rel=1e-9, abs=1e-12)

    # Equal weight's returns, recomputed from the written CSV files by share counting, match the backtest's.
    # returns.csv is indexed by the bar at whose open each return is realised, two bars after its decision bar.
    returns = pd.read_csv(report / "returns.csv", index_col="realised", parse_dates=["realised", "decided"])
    decided = pd.DatetimeIndex(returns["decided"])
    expected = _equal_weight_returns(out / "market", decided, cost_bps=10.0)
    np.testing.assert_allclose(returns["equal_weight"].to_numpy(), expected, rtol=0, atol=1e-12)
    calendar = pd.DatetimeIndex(pd.read_csv(out / "market" / "S000.csv", parse_dates=["timestamp"])["timestamp"])
    calendar = calendar.tz_localize(None) if calendar.tz else calendar
    realised = returns.index.tz_localize(None) if returns.index.tz else returns.index
    decided = decided.tz_localize(None) if decided.tz else decided
    np.testing.assert_array_equal(calendar.get_indexer(realised), calendar.get_indexer(decided) + 2)
