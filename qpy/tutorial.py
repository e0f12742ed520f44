"""``qpy tutorial [keyword]``: the manual, opened at the keyword, in a pager on a terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

FILES = ("users.md", "admin.md")


class TutorialError(Exception):
    pass


def manual_dir() -> Path:
    """The manual next to the source tree, or where the package installed it."""
    for candidate in (Path(__file__).resolve().parent.parent / "manual",
                      Path(sys.prefix) / "share" / "qpy" / "manual"):
        if (candidate / FILES[0]).exists():
            return candidate
    raise TutorialError("the manual is not installed (looked for manual/users.md)")


def find(lines: list[str], keyword: str) -> int:
    """Index of the first heading naming the keyword, else of its first mention."""
    low = keyword.lower()
    in_code = False
    for i, line in enumerate(lines):
        in_code ^= line.startswith("```")
        if not in_code and line.startswith("#") and low in line.lower():
            return i
    for i, line in enumerate(lines):
        if low in line.lower():
            return i
    raise TutorialError(f"{keyword!r} is not in the manual")


def show(keyword: str | None) -> None:
    folder = manual_dir()
    lines = "".join((folder / name).read_text() for name in FILES).splitlines(keepends=True)
    start = find(lines, keyword) if keyword else 0
    pager = os.environ.get("PAGER") or shutil.which("less")
    if sys.stdout.isatty() and pager:
        text = "".join(lines)
        args = [pager, f"+{start + 1}"] if Path(pager).name in ("less", "more") else [pager]
        subprocess.run(args, input=text.encode())
    else:
        sys.stdout.write("".join(lines[start:]))
