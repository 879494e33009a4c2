"""Capsule: freeze an ML experiment, replay it anywhere, and get a verdict with evidence."""

__version__ = "0.1.0"
