"""Build-time generators, run from the repository root and never installed.

``python -m tools.completion`` writes ``bash_completion.sh`` and ``python -m tools.manpage``
writes ``manual/qpy.1``, both from the click commands of every tier. They live outside the
runtime packages because they read all tiers at once: inside ``qpy/`` they made the shared
core import a tier and the CLI import itself back in a circle.
"""
