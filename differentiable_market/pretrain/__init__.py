"""Pretraining: one cross-sectional policy learned from a corpus of markets (``corpus``, ``trainer``, ``run``), its
model card (``card``), and the command ``python -m differentiable_market.pretrain`` (``cli``)."""
