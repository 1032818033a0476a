"""Differentiable market: train portfolio policies through a differentiable OHLC simulator."""
__version__ = "0.1.0"
