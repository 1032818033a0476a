"""The pretrained policies shipped with the package and their model card (``MODEL_CARD.md`` in this folder).

``cross-v1.pt`` holds the cross-sectional policy pretrained without a cash asset, ``cross-cash-v1.pt`` the one with
cash; ``python -m differentiable_market.pretrain`` reproduces them (the card gives the command). Each is an ordinary
checkpoint, read with ``checkpoint.load_checkpoint`` (plain tensors and data only), whose ``pretraining`` record
holds its corpus, dates and hashes.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError

VERSION = "v1"
FOLDER = Path(__file__).resolve().parent


def shipped_path(include_cash: bool = False) -> Path:
    """The shipped pretrained checkpoint for runs without (or with) a cash asset."""
    path = FOLDER / f"cross{'-cash' if include_cash else ''}-{VERSION}.pt"
    if not path.exists():
        raise CheckpointError(f"This installation has no pretrained policy {'with' if include_cash else 'without'} "
                              f"cash ({path.name} is missing from {FOLDER}); pretrain one with python -m "
                              "differentiable_market.pretrain and pass its best.pt path instead of 'pretrained'.")
    return path
