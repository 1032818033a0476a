"""Data layer at intraday scale: write a realistic 1-minute Parquet data set, then time and measure every stage of
the chain that training runs before its first step.

Run: uv run python benchmarks/data_scale.py [--assets 100 --bars 500000] [--out DIR] [--train-steps 20]

The data set (seeded, written with no Python loop over rows): ``--assets`` symbols on one UTC calendar of ``--bars``
one-minute bars starting 2023-01-01, geometric random walks with per-asset volatility, overnight-style open gaps,
consistent high/low and lognormal volume, one Parquet file per symbol (timestamp, open, high, low, close, volume).
Some bars are missing: each asset misses about ``--missing-rate`` of its bars, in runs of 1 to 3 (short enough to
be forward-filled), and two assets have a 30-bar outage, one early in the data (inside the training split, so the
loader drops that asset) and one late (inside the test split, so the asset is kept and the gap listed). A share
``--late-share`` of the assets list late, at a uniformly drawn bar in the first ``--late-window`` of the calendar,
and ``--delist-share`` delist early, in the last ``--delist-window`` of it.

The chain, in one process, as ``differentiable_market.train`` runs it before its first optimizer step:

- ``read``: read and validate every file (``data._read_series``, called by ``load_market`` per file);
- ``align``: the common calendar, gap policy and the [T, A] price blocks (``data._align``);
- ``fingerprint``: the SHA-256 of the price blocks stored with every checkpoint (``MarketData.fingerprint``);
- ``prepare_market``: splits, the train-only feature normaliser, the features and the growth tensors the trainer
  samples windows from (``trainer.prepare_market``), with its parts ``fit normaliser`` and ``features`` shown
  indented (``trainer.fit_feature_spec`` and ``trainer.compute_features``, timed in place, not run twice).

Peak RSS per stage: Linux lets a process reset its resident-set high-water mark (``VmHWM``) by writing 5 to
``/proc/self/clear_refs``; the meter reads ``VmHWM`` and resets it at every stage boundary, so a stage's peak is
the largest resident set the process had while that stage ran (the data of earlier stages that are still alive
included), exact rather than sampled. Where that file cannot be written, a thread samples ``VmRSS`` every 2 ms
instead, and the output says so.

``--calendar union`` loads the folder on the union calendar instead (every asset over its own life, with the causal
tradeable mask; ``align`` is then ``data._align_union``).

``--train-steps N`` then trains N optimizer steps on the same folder with the training CLI in a subprocess (small
settings, ``--train-args`` to change them; on the chain's ``--calendar``) and reports the time to the first finished
step, the time per step, the validation pass at the end, and the child's resident set: before the steps, the peak
during steps 2..N (so how much one step adds on top of the data), during validation, and the peak of the whole run.
It reads the child's ``/proc/<pid>/status`` and ``metrics.jsonl`` (rows are flushed per step with
``--log-interval 1``) as the run goes.

Prints the machine, a table, and one JSON line. The written data set lives in a temporary folder that is deleted
at the end, unless ``--out`` names a folder to keep it in (an existing data set there with the same parameters is
reused).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

START = np.datetime64("2023-01-01T00:00", "ns")
MINUTE_NS = 60_000_000_000
GENERATOR_VERSION = 1  # bump when the data set a spec gives changes, so an --out folder is not reused
OUTAGE_BARS = 30  # longer than the default --max-fill-bars (3), so the loader must act on it
DEFAULT_TRAIN_ARGS = ("--batch-windows", "16", "--lookback", "64", "--rollout-groups", "4")


# ---------------------------------------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class DataSpec:
    assets: int
    bars: int
    seed: int
    missing_rate: float
    late_share: float
    late_window: float
    delist_share: float
    delist_window: float


def asset_plan(spec: DataSpec) -> list[dict[str, Any]]:
    """Per asset: symbol, first and last bar (inclusive), and the outage (start bar) if it has one."""
    rng = np.random.default_rng(spec.seed)
    n, a = spec.bars, spec.assets
    order = rng.permutation(a)
    n_late = int(round(spec.late_share * a))
    n_delist = int(round(spec.delist_share * a))
    late, delist = set(order[:n_late].tolist()), set(order[n_late:n_late + n_delist].tolist())
    rest = order[n_late + n_delist:].tolist()
    # Early: inside the training split of the shared calendar, so the asset is dropped. Late: inside the test split,
    # so it is kept and the gap listed.
    outage = {rest[0]: int(0.3 * n), rest[1]: int(0.93 * n)} if len(rest) >= 2 and n >= 40 * OUTAGE_BARS else {}
    plan = []
    for i in range(a):
        first = int(rng.integers(1, max(2, int(spec.late_window * n)))) if i in late else 0
        last = int(rng.integers(int((1 - spec.delist_window) * n), n - 1)) if i in delist else n - 1
        plan.append({"symbol": f"C{i:03d}USD", "first": first, "last": last, "outage": outage.get(i)})
    return plan


def asset_bars(spec: DataSpec, i: int, first: int, last: int, outage: int | None) -> dict[str, np.ndarray]:
    """The rows of one asset: timestamp (int64 ns UTC) and float64 open, high, low, close, volume. Vectorised."""
    rng = np.random.default_rng([spec.seed, i])
    n = last - first + 1
    keep = np.ones(n, dtype=bool)
    # Missing runs of 1-3 bars: a run starts at a bar with probability rate / 2 (mean run length 2). A run that
    # would touch an earlier one is left out, so no gap is longer than 3 bars (the loader fills those).
    starts = np.flatnonzero(rng.random(n) < spec.missing_rate / 2)
    lengths = rng.integers(1, 4, size=starts.size)
    ends = np.maximum.accumulate(starts + lengths)  # one past the last missing bar of this run or any before it
    apart = starts > np.concatenate(([-1], ends[:-1]))
    starts, lengths = starts[apart], lengths[apart]
    for k in range(3):  # at most 3 bars per run: three vectorised passes, not a loop over rows
        idx = starts[lengths > k] + k
        keep[idx[idx < n]] = False
    keep[0] = keep[-1] = True  # the listing and delisting bars exist
    if outage is not None and first <= outage and outage + OUTAGE_BARS < last:
        keep[outage - first: outage - first + OUTAGE_BARS] = False
    sigma = rng.uniform(0.0005, 0.002)
    body = rng.normal(0.0, sigma, n)
    gap = rng.normal(0.0, sigma * 0.1, n)
    log_open = np.log(rng.uniform(1.0, 1000.0)) + np.cumsum(gap + body) - body
    o = np.exp(log_open)
    c = np.exp(log_open + body)
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0.0, sigma * 0.5, n)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0.0, sigma * 0.5, n)))
    v = np.round(np.exp(rng.normal(8.0, 1.0, n)), 4)
    ts = START.view(np.int64) + (first + np.arange(n, dtype=np.int64)) * MINUTE_NS
    return {"timestamp": ts[keep], "open": o[keep], "high": h[keep], "low": lo[keep], "close": c[keep],
            "volume": v[keep]}


def write_dataset(spec: DataSpec, folder: Path) -> dict[str, Any]:
    """Write one Parquet file per asset into ``folder``; returns the manifest (also written as manifest.json)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    plan = asset_plan(spec)
    rows = 0
    for i, p in enumerate(plan):
        bars = asset_bars(spec, i, p["first"], p["last"], p["outage"])
        rows += len(bars["timestamp"])
        table = pa.table({"timestamp": pa.array(bars.pop("timestamp"), type=pa.timestamp("ns", tz="UTC")),
                          **{k: pa.array(v) for k, v in bars.items()}})
        pq.write_table(table, folder / f"{p['symbol']}.parquet")
    manifest = {"generator": GENERATOR_VERSION, "spec": dataclasses.asdict(spec), "rows": rows, "plan": plan}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def expected_survivors(spec: DataSpec, plan: list[dict[str, Any]]) -> dict[str, Any]:
    """What the loader's rules predict: the calendar runs from the latest listing to the earliest delisting."""
    first = max(p["first"] for p in plan)
    last = min(p["last"] for p in plan)
    return {"calendar_first_bar": first, "calendar_last_bar": last, "calendar_bars": last - first + 1}


# --------------------------------------------------------------------------------------------------- measurement


def gb(kib: int) -> float:
    return kib * 1024 / 1e9


def _status_kib(pid: int | str, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_hwm(pid: int | str) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@dataclasses.dataclass
class StageRecord:
    name: str
    depth: int
    wall_s: float = 0.0
    start_rss: int = 0  # KiB
    peak_rss: int = 0
    end_rss: int = 0
    calls: int = 0


class Meter:
    """Wall time and peak resident set of nested, possibly repeated stages of this process (see the docstring)."""

    def __init__(self) -> None:
        self.records: dict[str, StageRecord] = {}
        self._open: list[StageRecord] = []
        self.exact = _reset_hwm("self")
        self._sampled = 0
        if not self.exact:
            self._stop = threading.Event()
            threading.Thread(target=self._sample, daemon=True).start()
        self.method = ("VmHWM reset at every stage boundary (/proc/self/clear_refs), exact" if self.exact else
                       "VmRSS sampled every 2 ms by a thread (/proc/self/clear_refs not writable here)")

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._sampled = max(self._sampled, _status_kib("self", "VmRSS"))

    def _fold(self) -> int:
        """Fold the high-water mark since the last boundary into every open stage, then reset it; returns VmRSS."""
        if self.exact:
            hwm = _status_kib("self", "VmHWM")
            _reset_hwm("self")
        else:
            hwm, self._sampled = self._sampled, 0
        rss = _status_kib("self", "VmRSS")
        for rec in self._open:
            rec.peak_rss = max(rec.peak_rss, hwm, rss)
        return rss

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        rss = self._fold()
        rec = self.records.get(name)
        if rec is None:
            rec = self.records[name] = StageRecord(name, len(self._open), start_rss=rss)
        self._open.append(rec)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            rec.wall_s += time.perf_counter() - t0
            rec.end_rss = self._fold()
            rec.calls += 1
            self._open.remove(rec)

    @contextlib.contextmanager
    def wrapped(self, module: Any, attr: str, name: str) -> Iterator[None]:
        """Within the block, time every call of ``module.attr`` as stage ``name`` (the function runs once, in
        place); the original is restored after."""
        fn = getattr(module, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return fn(*args, **kwargs)

        setattr(module, attr, timed)
        try:
            yield
        finally:
            setattr(module, attr, fn)


def run_chain(folder: Path, lookback: int, calendar: str = "intersection") -> tuple[Meter, dict[str, Any]]:
    """load_market -> fingerprint -> prepare_market on ``folder``, as training runs them, measured per stage.

    ``calendar="union"`` loads every asset over its own life with the tradeable mask (``data._align_union``, timed
    as ``align``); ``prepare_market`` then also builds the mask and sets the growth off it to 1."""
    import torch

    from differentiable_market import data, trainer
    from differentiable_market.config import DataConfig, ExperimentConfig, TrainConfig
    from differentiable_market.env import execution_horizon
    from differentiable_market.splits import train_end_cutoff

    meter = Meter()
    cfg = ExperimentConfig(data=DataConfig(root=str(folder), glob="*.parquet", calendar=calendar),
                           train=TrainConfig(lookback=lookback, device="cpu"))
    align = "_align_union" if calendar == "union" else "_align"
    min_bars = lookback + execution_horizon(cfg.env.execution) + 1
    with contextlib.ExitStack() as stack:
        for module, attr, name in ((data, "_read_series", "read"), (data, align, "align"),
                                   (trainer, "fit_feature_spec", "fit normaliser"),
                                   (trainer, "compute_features", "features")):
            stack.enter_context(meter.wrapped(module, attr, name))
        with meter.stage("chain"):
            market = data.load_market(cfg.data, min_bars=min_bars,
                                      universe_cutoff=train_end_cutoff(cfg.data, cfg.train.lookback))
            with meter.stage("fingerprint"):
                market.fingerprint()
            with meter.stage("prepare_market"):
                tensors, _ = trainer.prepare_market(cfg, market, torch.device("cpu"))
    info = {
        "assets_kept": market.n_assets,
        "bars_kept": market.n_bars,
        "first_bar": str(market.timestamps[0]),
        "last_bar": str(market.timestamps[-1]),
        "dropped": [s for s, _ in market.dropped],
        "late_gaps": [s for s, _ in market.late_gaps],
        "filled_bars": int(market.filled.sum()),
        "calendar": market.calendar,
        "tradeable_share": float(market.tradeable.mean()),
        "splits": tensors.splits.to_dict(),
        "features_shape": list(tensors.features.shape),
        "features_gb": tensors.features.numel() * tensors.features.element_size() / 1e9,
        "price_block_gb": market.open.nbytes / 1e9,
    }
    return meter, info


# ------------------------------------------------------------------------------------------------------ training


class ChildMemory:
    """Resident set of a child process by phase: the peak of each phase (its VmHWM, reset at every boundary from
    here, or VmRSS sampled at every poll where the child's clear_refs cannot be written) and its VmRSS at the end."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exact = _reset_hwm(pid)
        self.sampled = 0
        self.phases: dict[str, dict[str, int]] = {}

    def kib(self, key: str) -> int:
        try:
            return _status_kib(self.pid, key)
        except (OSError, KeyError):  # the child has exited
            return 0

    def poll(self) -> None:
        if not self.exact:
            self.sampled = max(self.sampled, self.kib("VmRSS"))

    def end_phase(self, name: str) -> None:
        rss = self.kib("VmRSS")
        peak = self.kib("VmHWM") if self.exact else self.sampled
        self.phases[name] = {"peak": max(peak, rss), "end": rss}
        self.sampled = 0
        if self.exact:
            _reset_hwm(self.pid)


def training_command(folder: Path, steps: int, extra: list[str], save_dir: Path,
                     calendar: str = "intersection") -> list[str]:
    """The training CLI's command line for ``run_training``: ``steps`` steps on ``folder`` on the loader's
    ``calendar``, validated once at the end, every step logged."""
    return [sys.executable, "-m", "differentiable_market.train", "--data-root", str(folder), "--data-glob",
            "*.parquet", "--calendar", calendar, "--epochs", str(steps), "--eval-interval", str(steps),
            "--log-interval", "1", "--save-dir", str(save_dir), "--no-progress", "--device", "cpu",
            *DEFAULT_TRAIN_ARGS, *extra]


def run_training(folder: Path, steps: int, extra: list[str], workdir: Path,
                 calendar: str = "intersection") -> dict[str, Any]:
    """Train ``steps`` optimizer steps with the CLI in a subprocess and watch it (see the module docstring)."""
    import resource

    save_dir = workdir / "runs"
    cmd = training_command(folder, steps, extra, save_dir, calendar)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    memory = ChildMemory(proc.pid)
    step_done: dict[int, float] = {}
    validation_done = None
    metrics, offset = None, 0
    while proc.poll() is None:
        time.sleep(0.01)
        memory.poll()
        if metrics is None:
            found = list(save_dir.glob("*/metrics.jsonl")) if save_dir.exists() else []
            metrics = found[0] if found else None
            continue
        with open(metrics, "rb") as fh:  # rows are flushed whole; a partial last line waits for the next poll
            fh.seek(offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        offset += len(complete)
        for line in complete.splitlines():
            row = json.loads(line)
            now = time.perf_counter() - t0
            if row.get("type") == "train":
                step_done[row["step"]] = now
                if row["step"] == 1:
                    memory.end_phase("until_step1")  # start-up, data, tensors and the first step
                if row["step"] == steps:
                    memory.end_phase("steps")  # steps 2..N
            elif row.get("type") == "validation":
                validation_done = now
                memory.end_phase("validation")
    wall = time.perf_counter() - t0
    reader.join(timeout=5)
    if proc.returncode != 0:
        sys.exit(f"training failed (exit {proc.returncode}):\n{''.join(lines[-40:])}")
    # The child's own high-water mark at exit covers what followed the last boundary (checkpoints, training.png).
    memory.phases["after_validation"] = {"peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "end": 0}
    first, last = step_done.get(1), step_done.get(steps)
    phases = memory.phases
    return {
        "command": " ".join(cmd[1:]),
        "steps": steps,
        "wall_s": wall,
        "first_step_done_s": first,
        "s_per_step_after_first": (last - first) / (steps - 1) if first and last and steps > 1 else None,
        "validation_s": validation_done - last if validation_done and last else None,
        "rss_after_step1_gb": gb(phases.get("until_step1", {}).get("end", 0)),
        "peak_until_step1_gb": gb(phases.get("until_step1", {}).get("peak", 0)),
        "peak_steps_gb": gb(phases.get("steps", {}).get("peak", 0)),
        "peak_validation_gb": gb(phases.get("validation", {}).get("peak", 0)),
        "peak_run_gb": gb(max(p["peak"] for p in phases.values())),
        "rss_method": ("child VmHWM reset at each phase boundary" if memory.exact
                       else "child VmRSS sampled every 10 ms"),
        "log": [ln.rstrip() for ln in lines if ln.startswith(("data: calendar", "dtype", "step", "Done"))],
    }


# ---------------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=int, default=100)
    ap.add_argument("--bars", type=int, default=500_000, help="one-minute bars of the full calendar")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--missing-rate", type=float, default=0.002, help="share of each asset's bars left out")
    ap.add_argument("--late-share", type=float, default=0.1, help="share of assets that list late")
    ap.add_argument("--late-window", type=float, default=0.2, help="late listings fall in this first share of bars")
    ap.add_argument("--delist-share", type=float, default=0.02, help="share of assets that delist early")
    ap.add_argument("--delist-window", type=float, default=0.05, help="delistings fall in this last share of bars")
    ap.add_argument("--lookback", type=int, default=64, help="the training lookback the chain prepares for")
    ap.add_argument("--calendar", choices=["intersection", "union"], default="intersection", help="the loader's "
                    "calendar: the span every asset is listed in, or every asset over its own life with the "
                    "tradeable mask (the chain and, with --train-steps, the training run)")
    ap.add_argument("--out", type=Path, help="keep the data set in this folder (reused when it matches)")
    ap.add_argument("--train-steps", type=int, default=0, help="also train this many steps on the data (CLI)")
    ap.add_argument("--train-args", default="", help=f"extra training flags (default ones: "
                    f"{' '.join(DEFAULT_TRAIN_ARGS)}, plus --epochs/--eval-interval N --log-interval 1)")
    args = ap.parse_args()
    if args.train_steps == 1 or args.train_steps < 0:
        ap.error("--train-steps must be 0 (no training) or at least 2 (the time per step is taken after step 1)")
    fixed = {"--save-dir", "--data-root", "--data-glob", "--calendar", "--epochs", "--eval-interval",
             "--log-interval"}
    clash = sorted(fixed & {a.split("=")[0] for a in args.train_args.split()})
    if clash:
        ap.error(f"--train-args cannot set {', '.join(clash)}: the benchmark sets them and reads the run it makes")
    spec = DataSpec(args.assets, args.bars, args.seed, args.missing_rate, args.late_share, args.late_window,
                    args.delist_share, args.delist_window)

    from differentiable_market.hardware import machine_info

    print(f"machine: {machine_info().describe()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="data_scale-"))
    folder = args.out or workdir / "data"
    try:
        manifest_path = folder / "manifest.json"
        t0 = time.perf_counter()
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        reused = manifest.get("generator") == GENERATOR_VERSION and manifest.get("spec") == dataclasses.asdict(spec)
        if not reused:
            if manifest:  # a data set this script wrote before, with other parameters: replace its files
                for p in manifest.get("plan", []):
                    (folder / f"{p['symbol']}.parquet").unlink(missing_ok=True)
            elif folder.exists() and any(folder.iterdir()):
                sys.exit(f"--out {folder} holds files this script did not write; name an empty or new folder.")
            manifest = write_dataset(spec, folder)
        write_s = time.perf_counter() - t0
        disk = sum(p.stat().st_size for p in folder.glob("*.parquet"))
        print(f"data: {spec.assets} assets x {spec.bars:,} one-minute bars, {manifest['rows']:,} rows, "
              f"{disk / 1e9:.2f} GB of Parquet in {folder} ({'reused' if reused else f'written in {write_s:.1f} s'})",
              flush=True)
        expected = expected_survivors(spec, manifest["plan"])

        with contextlib.redirect_stdout(io.StringIO()):
            meter, info = run_chain(folder, args.lookback, args.calendar)
        print(f"peak RSS method: {meter.method}")
        print(f"{'stage':<22}{'wall s':>8}{'calls':>7}{'RSS start GB':>14}{'peak GB':>9}{'RSS end GB':>12}")
        order = ["read", "align", "fingerprint", "prepare_market", "fit normaliser", "features", "chain"]
        for name in order:
            r = meter.records[name]
            label = ("  " if name in ("fit normaliser", "features") else "") + ("whole chain" if name == "chain"
                                                                                 else name)
            print(f"{label:<22}{r.wall_s:>8.2f}{r.calls:>7}{gb(r.start_rss):>14.2f}{gb(r.peak_rss):>9.2f}"
                  f"{gb(r.end_rss):>12.2f}")
        chain = meter.records["chain"]
        ok = chain.wall_s < 60 and gb(chain.peak_rss) < 8
        print(f"target (whole chain < 60 s and < 8 GB peak): {'met' if ok else 'MISSED'}")
        if info["calendar"] == "union":
            print(f"kept: {info['assets_kept']} of {spec.assets} assets x {info['bars_kept']:,} of {spec.bars:,} "
                  f"bars ({info['first_bar'][:16]} .. {info['last_bar'][:16]}) on the union calendar, every asset "
                  f"over its own life; {info['tradeable_share']:.2%} of the asset-bars tradeable; "
                  f"{info['filled_bars']:,} asset-bars without a print (placeholders and fills)")
        else:
            print(f"kept: {info['assets_kept']} of {spec.assets} assets x {info['bars_kept']:,} of {spec.bars:,} bars "
                  f"({info['first_bar'][:16]} .. {info['last_bar'][:16]}); the calendar runs from the latest listing "
                  f"(bar {expected['calendar_first_bar']:,}) to the earliest delisting (bar "
                  f"{expected['calendar_last_bar']:,}); dropped: {info['dropped'] or 'none'}; late gaps kept: "
                  f"{info['late_gaps'] or 'none'}; {info['filled_bars']:,} bars forward-filled")
        print(f"tensors: features {info['features_shape']} float32 ({info['features_gb']:.2f} GB); one float64 price "
              f"block {info['price_block_gb']:.2f} GB; splits {info['splits']}")
        result: dict[str, Any] = {
            "benchmark": "data_scale", "machine": dataclasses.asdict(machine_info()), "spec": dataclasses.asdict(spec),
            "rows": manifest["rows"], "parquet_gb": disk / 1e9, "rss_method": meter.method,
            "stages": {n: {**dataclasses.asdict(r), "start_rss_gb": gb(r.start_rss), "peak_rss_gb": gb(r.peak_rss),
                           "end_rss_gb": gb(r.end_rss)} for n, r in meter.records.items()},
            "kept": info, "expected": expected, "target_met": ok,
        }
        if args.train_steps:
            train = run_training(folder, args.train_steps, args.train_args.split(), workdir, args.calendar)
            result["training"] = train
            print(f"training: {train['command']}")
            print(f"  first step done after {train['first_step_done_s']:.1f} s (process start to the end of step 1); "
                  f"{train['s_per_step_after_first']:.2f} s per step after it; validation pass "
                  f"{train['validation_s']:.1f} s; wall {train['wall_s']:.1f} s")
            added = train["peak_steps_gb"] - train["rss_after_step1_gb"]
            print(f"  RSS: peak until step 1 {train['peak_until_step1_gb']:.2f} GB, after step 1 "
                  f"{train['rss_after_step1_gb']:.2f} GB, peak during steps 2..{args.train_steps} "
                  f"{train['peak_steps_gb']:.2f} GB ({added:+.3f} GB), during validation "
                  f"{train['peak_validation_gb']:.2f} GB; whole run {train['peak_run_gb']:.2f} GB "
                  f"({train['rss_method']})")
        print(json.dumps(result))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
