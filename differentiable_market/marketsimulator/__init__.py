"""Backtester: replay a checkpoint over rolling windows of a split next to simple baselines, and report.

Entry point: ``python -m differentiable_market.marketsimulator.run --checkpoint <run folder or .pt>``.
"""
