"""qpy: the user CLI and everything the three tiers share (wire, job model, parsing)."""

__version__ = "0.1.0"
