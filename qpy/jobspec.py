"""What a job asks for: options of ``qpy sub`` merged with ``#QPY`` directives.

The CLI builds the spec (it can read the user's script and give errors at once); the master
checks the same values again with ``check_resources``, because it trusts no client.
"""

from __future__ import annotations

import os
import re
import shlex

from qpy.defaults import DEFAULT_CORES, DEFAULT_MEM

DIRECTIVE = "#QPY"
SCAN_BYTES = 64 * 1024
INTERPRETERS = {"sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "python", "python3",
                "perl", "ruby", "Rscript", "julia", "env"}
KEY_ALIASES = {
    "n_cores": "n_cores", "number of cores": "n_cores",
    "mem": "mem", "memory": "mem",
    "node_attr": "attr", "node attributes": "attr",
    "cpscript": "copy", "cp_script": "copy", "copy script": "copy",
    "requeue": "requeue",
    "time": "time_limit",
}


# A first word made only of these, holding a '/', is a path the shell would run as it is;
# anything else ($HOME/x, a;b, VAR=1 x) is left for the shell to make sense of.
_PLAIN_PATH = re.compile(r"[\w./~+,:@%-]*/[\w./~+,:@%-]*")


class SpecError(ValueError):
    """A bad option or directive; the text names it."""


def parse_cores(text: object, where: str = "-n") -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise SpecError(f"{where}: number of cores must be a whole number, not {text!r}") from None
    if value < 1:
        raise SpecError(f"{where}: number of cores must be at least 1, not {value}")
    return value


def parse_mem(text: object, where: str = "-m") -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise SpecError(f"{where}: memory must be a number of GB, not {text!r}") from None
    if not value < float("inf") or value <= 0:  # also refuses nan (no math import: start-up)
        raise SpecError(f"{where}: memory must be a positive number of GB, not {text!r}")
    return value


def parse_attr(text: str | None, where: str = "-a") -> str | None:
    if text is None:
        return None
    if not text.strip():
        raise SpecError(f"{where}: the attribute expression is empty")
    from qpy import attrs  # only jobs that name attributes pay for the parser

    try:
        return attrs.normalize(text)
    except attrs.AttrError as exc:
        raise SpecError(f"{where}: {exc}") from None


def parse_bool(text: str, where: str) -> bool:
    word = text.strip().lower()
    if word in ("true", "yes", "1"):
        return True
    if word in ("false", "no", "0"):
        return False
    raise SpecError(f"{where}: expected true or false, not {text!r}")


def find_script(words: list[str], cwd: str) -> int | None:
    """Which word is the script a command runs: the first if it is a file, or the second
    after an interpreter (``bash run.sh``). Only that file is scanned or copied."""
    for i, word in enumerate(words[:2]):
        if os.path.isfile(os.path.join(cwd, os.path.expanduser(word))):
            return i
        if os.path.basename(word) not in INTERPRETERS:
            return None
    return None


def check_program(words: list[str], cwd: str) -> None:
    """Refuse a command whose program is a path that cannot run (``./missing.sh``, a
    script without the x bit, a directory): it would only fail on the node, later."""
    if not words or not _PLAIN_PATH.fullmatch(words[0]):
        return
    path = os.path.join(cwd, os.path.expanduser(words[0]))
    why = ("no such file" if not os.path.exists(path)
           else "it is a directory" if os.path.isdir(path)
           else f"not executable (chmod +x it, or run it as: bash {words[0]})"
           if not os.access(path, os.X_OK) else None)
    if why:
        raise SpecError(f"cannot run {words[0]!r}: {why}")


def read_directives(path: str) -> dict[str, object]:
    """``#QPY key=value; key = value`` lines of a script (binaries have none)."""
    try:
        with open(path, "rb") as f:
            head = f.read(SCAN_BYTES)
    except OSError as exc:
        raise SpecError(f"cannot read script {path}: {exc.strerror}") from None
    if b"\0" in head:
        return {}
    found: dict[str, object] = {}
    for number, line in enumerate(head.decode(errors="replace").splitlines(), 1):
        if line.startswith(DIRECTIVE + " ") or line.startswith(DIRECTIVE + "\t"):
            for item in line[len(DIRECTIVE):].split(";"):
                if item.strip():
                    key, value = _directive(item, f"{path}:{number}")
                    found[key] = value
    return found


def _directive(item: str, where: str) -> tuple[str, object]:
    if "=" in item:
        key, value = item.split("=", 1)
    else:
        key, _, value = item.strip().rpartition(" ")
    key = " ".join(key.split()).lower()
    value = value.strip()
    name = KEY_ALIASES.get(key)
    if name is None:
        raise SpecError(f"{where}: unknown #QPY directive {key!r} "
                        "(use n_cores, mem, node_attr, cpScript, requeue or time)")
    if not value:
        raise SpecError(f"{where}: #QPY {key} needs a value")
    where = f"{where}: #QPY {key}"
    parse = {"n_cores": parse_cores, "mem": parse_mem, "attr": parse_attr, "copy": parse_bool,
             "requeue": parse_bool, "time_limit": parse_time}
    return name, parse[name](value, where)


def parse_time(text: object, where: str = "-t") -> int | None:
    """A wall-time limit in seconds (None: none), from Slurm's formats."""
    from qpy import timetext

    try:
        return timetext.parse_limit(text, where)
    except timetext.TimeError as exc:
        raise SpecError(str(exc)) from None


def command_line(argv: list[str]) -> str:
    """Several words keep their exact argv; a single word is a shell command line."""
    if not argv or not argv[0].strip():
        raise SpecError("no command given to qpy sub")
    return argv[0] if len(argv) == 1 else shlex.join(argv)


def run_line(argv: list[str]) -> str | None:
    """What the job's shell runs when it differs from the command shown: an argv is
    ``exec``-ed, so the user's program is the job's main process (its own exit status and
    signals, and its own grace period on kill), not a shell waiting for it."""
    return "exec " + shlex.join(argv) if len(argv) > 1 else None


def build(argv: list[str], cwd: str, n_cores: str | None, mem: str | None, attr: str | None,
          copy: bool | None, requeue: bool | None = None, time: str | None = None) -> dict:
    """The ``sub`` request fields; command-line options win over directives."""
    command = command_line(argv)
    try:
        words = argv if len(argv) > 1 else shlex.split(argv[0])
    except ValueError:
        words = []
    check_program(words, cwd)
    index = find_script(words, cwd)
    script = os.path.realpath(os.path.join(cwd, os.path.expanduser(words[index]))) \
        if index is not None else None
    found = read_directives(script) if script else {}
    copyable = index is not None and (len(argv) > 1 or len(words) == 1)
    return {
        "command": command,
        "run": run_line(argv),
        "cwd": cwd,
        "n_cores": parse_cores(n_cores) if n_cores is not None else found.get(
            "n_cores", DEFAULT_CORES),
        "mem": parse_mem(mem) if mem is not None else found.get("mem", DEFAULT_MEM),
        "attr": parse_attr(attr) if attr is not None else found.get("attr"),
        "copy": copy if copy is not None else found.get("copy"),
        "requeue": requeue if requeue is not None else found.get("requeue", False),
        "time_limit": parse_time(time) if time is not None else found.get("time_limit"),
        "script": script,
        "argv": [*words[:index], script, *words[index + 1:]] if copyable else None,
        "script_index": index if copyable else None,
    }


def check_resources(n_cores: object, mem: object, attr: object) -> tuple[int, float, str | None]:
    """The master's own check of what arrived on the wire."""
    cores = parse_cores(n_cores, "n_cores")
    memory = parse_mem(mem, "mem")
    return cores, memory, parse_attr(attr if isinstance(attr, str) else None, "attr")
