"""shoprec: train, evaluate, register and serve an online shop's search and recommendation models."""

__version__ = "0.1.0"
