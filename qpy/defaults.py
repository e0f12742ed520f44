"""Defaults every tier agrees on, in one place that imports nothing."""

DEFAULT_CORES = 1
DEFAULT_MEM = 5.0  # GB, as the manual says
DEFAULT_UMASK = 0o022  # a job whose client did not say (an older qpy) runs with this
