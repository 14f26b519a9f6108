"""Tepat: eligibility lookup over immutable DTSEN snapshots."""

__version__ = "0.1.0"
