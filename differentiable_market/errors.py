"""Exception types the CLIs turn into a one-paragraph message and a non-zero exit (no traceback)."""

from __future__ import annotations


class DifferentiableMarketError(Exception):
    """Base class for user-facing errors: bad input, bad configuration, bad checkpoint."""


class DataError(DifferentiableMarketError):
    """A data file or folder cannot be used. The message names the file, the row or timestamp, and the fix."""


class ConfigError(DifferentiableMarketError):
    """A configuration (CLI flags, config.json, checkpoint config) is invalid or inconsistent."""


class CheckpointError(DifferentiableMarketError):
    """A checkpoint cannot be loaded safely, or does not match the data it is used with."""


class TrainingError(DifferentiableMarketError):
    """Training cannot go on (for example, repeated non-finite losses)."""
