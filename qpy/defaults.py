"""Defaults every tier agrees on, in one place that imports nothing."""

DEFAULT_CORES = 1
DEFAULT_MEM = 5.0  # GB, as the manual says
