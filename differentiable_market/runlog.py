"""Run folders and ``metrics.jsonl``: one JSON object per line, flushed per line; the first says config and versions."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .atomic import atomic_write_text, json_safe
from .errors import ConfigError
from .hardware import cpu_model, machine_info


def environment_record(device: torch.device) -> dict[str, Any]:
    """Versions, device and what the machine can do fast (``hardware.MachineInfo`` under "machine")."""
    return {
        "package_version": __version__,
        "torch_version": str(torch.__version__),
        "python_version": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "machine": dataclasses.asdict(machine_info(device)),
    }


def check_writable(folder: Path) -> None:
    """Fail before training if the save folder cannot be created or written (read-only, not a folder, full disk)."""
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 65536)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise ConfigError(
            f"Cannot write to save directory {folder}: {exc.strerror or exc}. Choose a writable folder (--save-dir, or --report-dir for backtests) "
            "or free some disk space."
        ) from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself could not be made; nothing was left behind


def new_timestamped_dir(parent: str | Path) -> Path:
    """A new folder ``<parent>/<UTC timestamp>[-n]``; never reuses an existing one, even within one second."""
    root = Path(parent)
    check_writable(root)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        folder = root / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise ConfigError(f"Could not create a new folder under {root}: too many started at {stamp}.")


def create_run_dir(save_dir: str | Path) -> Path:
    """A new run folder ``<save_dir>/<UTC timestamp>[-n]`` with its ``checkpoints`` subfolder."""
    run_dir = new_timestamped_dir(save_dir)
    (run_dir / "checkpoints").mkdir()
    return run_dir


class MetricsLog:
    """Append-only JSON-lines log; each record is flushed when written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    @staticmethod
    def truncate_after(path: Path, step: int) -> int:
        """Drop rows logged after ``step`` (a resumed run replays those steps); returns how many were dropped."""
        if not path.exists():
            return 0
        kept, dropped = [], 0
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1  # a line torn by the interruption
                continue
            if row.get("type") in ("train", "validation") and row.get("step", 0) > step:
                dropped += 1
                continue
            kept.append(line)
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        return dropped
