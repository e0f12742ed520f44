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
    "after": "after", "afterok": "afterok", "priority": "priority",
    "mail": "mail",
    "exclusive": "exclusive",
    "nodes": "n_nodes",
}
PRIORITY_WORDS = {"low": -10, "normal": 0, "high": 10}
PRIORITY_LIMIT = 1_000_000
MAX_IDS = 100_000  # job IDs one --after or --afterok may name, ranges expanded
MAX_TASKS = 100_000  # tasks one --array may make


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


def parse_priority(text: object, where: str = "--priority") -> int:
    """An integer, or low/normal/high (-10/0/10)."""
    word = str(text).strip().lower()
    if word in PRIORITY_WORDS:
        return PRIORITY_WORDS[word]
    try:
        value = int(word)
    except ValueError:
        raise SpecError(f"{where}: priority must be a whole number or low, normal or high, "
                        f"not {text!r}") from None
    if abs(value) > PRIORITY_LIMIT:
        raise SpecError(f"{where}: priority must be between -{PRIORITY_LIMIT:,} and "
                        f"{PRIORITY_LIMIT:,}, not {value}")
    return value


def parse_ids(text: object, where: str) -> list[int]:
    """Job IDs as a selection writes them (``5``, ``3-7``, ``3-7,9``), ranges expanded."""
    from qpy import selection

    try:
        ids = selection.id_list(str(text).strip(), MAX_IDS)
    except selection.SelectionError as exc:
        raise SpecError(f"{where}: {exc}") from None
    if not ids:
        raise SpecError(f"{where}: no job IDs given")
    return ids


_ARRAY = re.compile(r"([0-9]+)-([0-9]+)(?::([0-9]+))?(?:%([0-9]+))?")


def parse_array(text: str, where: str = "--array") -> tuple[int, int, int, int | None]:
    """``FIRST-LAST[:STEP][%MAX]``: the indices and the cap on tasks running at once."""
    match = _ARRAY.fullmatch(text.strip())
    if match is None:
        raise SpecError(f"{where}: expected FIRST-LAST[:STEP][%MAX] (e.g. 1-100, 0-99:2%10), "
                        f"not {text!r}")
    first, last = int(match.group(1)), int(match.group(2))
    step = int(match.group(3)) if match.group(3) is not None else 1
    cap = int(match.group(4)) if match.group(4) is not None else None
    if last < first:
        raise SpecError(f"{where}: {text!r} ends before it starts")
    if step < 1 or cap == 0:
        raise SpecError(f"{where}: {'STEP' if step < 1 else '%MAX'} must be at least 1 in "
                        f"{text!r}")
    if len(range(first, last + 1, step)) > MAX_TASKS:
        raise SpecError(f"{where}: {text!r} makes more than {MAX_TASKS:,} tasks")
    if last >= 2 ** 31:
        raise SpecError(f"{where}: indices must stay below {2 ** 31}, not {last}")
    return first, last, step, cap


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
        raise SpecError(f"{where}: unknown #QPY directive {key!r} (use n_cores, mem, "
                        "node_attr, cpScript, requeue, time, after, afterok, priority, mail, "
                        "exclusive or nodes)")
    if not value:
        raise SpecError(f"{where}: #QPY {key} needs a value")
    where = f"{where}: #QPY {key}"
    parse = {"n_cores": parse_cores, "mem": parse_mem, "attr": parse_attr, "copy": parse_bool,
             "requeue": parse_bool, "time_limit": parse_time, "after": parse_ids,
             "afterok": parse_ids, "priority": parse_priority, "mail": parse_mail,
             "exclusive": parse_bool, "n_nodes": parse_nodes}
    return name, parse[name](value, where)


MAX_NODES = 100_000  # whole nodes one job may take (-N)


def parse_nodes(text: object, where: str = "-N") -> int:
    """The number of whole nodes a job takes (``-N K``): an integer from 1."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise SpecError(f"{where}: number of nodes must be a whole number, not {text!r}") \
            from None
    if not 1 <= value <= MAX_NODES:
        raise SpecError(f"{where}: number of nodes must be 1 to {MAX_NODES:,}, not {value}")
    return value


def parse_time(text: object, where: str = "-t") -> int | None:
    """A wall-time limit in seconds (None: none), from Slurm's formats."""
    from qpy import timetext

    try:
        return timetext.parse_limit(text, where)
    except timetext.TimeError as exc:
        raise SpecError(str(exc)) from None


PLAIN = frozenset("\"'\\")  # a line without these splits on white space as the shell does
_WORD = re.compile(r"[^ \t\r\n]+")  # shlex's white space, not str.split's Unicode one


def split(line: str, comments: bool = False) -> list[str]:
    """Words as the shell splits them (shlex, which is slow: a plain line skips it);
    ValueError for an unclosed quote."""
    if PLAIN.isdisjoint(line) and not (comments and "#" in line):
        return _WORD.findall(line)
    return shlex.split(line, comments=comments)
MAIL_WORDS = ("end", "fail")


def parse_mail(text: object, where: str = "--mail") -> str | None:
    """When the job sends its user a mail: ``end`` (every end), ``fail`` (an end that is
    not done with exit 0), both as ``end,fail``; ``none``: never."""
    words = [w.strip().lower() for w in str(text).split(",")]
    if words == ["none"]:
        return None
    if not all(w in MAIL_WORDS for w in words):
        raise SpecError(f"{where}: takes end, fail or end,fail (or none), not {text!r}")
    return ",".join(w for w in MAIL_WORDS if w in words)


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
          copy: bool | None, requeue: bool | None = None, time: str | None = None,
          mail: str | None = None, exclusive: bool | None = None, *,
          after: str | None = None, afterok: str | None = None,
          priority: str | None = None, nodes: str | None = None) -> dict:
    """The ``sub`` request fields; command-line options win over directives. ``-N K``
    (``nodes``) takes K whole nodes; ``--exclusive`` is one."""
    command = command_line(argv)
    try:
        words = argv if len(argv) > 1 else split(argv[0])
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
        "mail": parse_mail(mail) if mail is not None else found.get("mail"),
        **_whole(found, exclusive, nodes),
        "script": script,
        "argv": [*words[:index], script, *words[index + 1:]] if copyable else None,
        "script_index": index if copyable else None,
        **_queue_fields(found, after, afterok, priority),
    }


def _whole(found: dict, exclusive: bool | None, nodes: str | None) -> dict:
    """Whole nodes: ``exclusive``, and ``n_nodes`` only when more than one is asked for
    (options win over directives; either implies whole nodes)."""
    count = parse_nodes(nodes) if nodes is not None else found.get("n_nodes", 1)
    whole = exclusive if exclusive is not None else found.get("exclusive", False)
    asked = nodes is not None or "n_nodes" in found
    return {"exclusive": bool(whole or asked),
            **({"n_nodes": count} if count > 1 else {})}


def _queue_fields(found: dict, after: str | None, afterok: str | None,
                  priority: str | None) -> dict:
    """Dependencies and priority: options win over directives; absent ones are left out
    of the request."""
    fields = {
        "after": parse_ids(after, "--after") if after is not None else found.get("after"),
        "afterok": parse_ids(afterok, "--afterok") if afterok is not None
        else found.get("afterok"),
        "priority": parse_priority(priority) if priority is not None
        else found.get("priority"),
    }
    return {name: value for name, value in fields.items() if value}


def check_resources(n_cores: object, mem: object, attr: object) -> tuple[int, float, str | None]:
    """The master's own check of what arrived on the wire."""
    cores = parse_cores(n_cores, "n_cores")
    memory = parse_mem(mem, "mem")
    return cores, memory, parse_attr(attr if isinstance(attr, str) else None, "attr")
