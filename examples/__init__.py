"""Runnable examples of microcall (``python -m examples.NAME...`` from the repository root)."""
