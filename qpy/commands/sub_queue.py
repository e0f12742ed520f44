"""The queue's side of ``qpy sub``: dependencies, priority, arrays, bulk files, --json.

``queue_options`` adds the options to the ``sub`` command. A bulk file (``--file``) is
read here: each line is split as the shell splits words and parsed by the ``sub`` command
itself, so a line takes exactly the options ``sub`` takes; the options given with
``--file`` are every line's defaults. All lines go to the master in one ``bulk`` request,
which stores all of them or none.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import click

from qpy.commands.common import echo, fail
from qpy.invocation import current

# Options that make no sense on a line of a bulk file.
NOT_ON_A_LINE = {"file": "--file", "array": "--array", "as_json": "--json"}
MAX_LINES = 100_000


def queue_options(fn: Callable) -> Callable:
    """The ``sub`` options of issue 13 (innermost first, as click stacks them)."""
    for decorator in reversed([
        click.option("--after", metavar="IDS",
                     help="Start once the jobs IDS (e.g. 5, 3-7,9) have ended."),
        click.option("--afterok", metavar="IDS",
                     help="Start once the jobs IDS have ended done with exit 0; if one does "
                          "not, this job is undone."),
        click.option("--priority", metavar="N",
                     help="An integer, or low, normal, high (-10, 0, 10): goes after the "
                          "last queued job of equal or higher priority (default 0)."),
        click.option("--array", metavar="FIRST-LAST[:STEP][%MAX]",
                     help="One job per index, with QPY_ARRAY_INDEX and QPY_ARRAY_JOB_ID; "
                          "at most MAX of them run at once."),
        click.option("--file", "file", metavar="FILE",
                     help="One job per line of FILE ('-': standard input); the options "
                          "given here are every line's defaults."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print the new jobs' records as JSON."),
    ]):
        fn = decorator(fn)
    return fn


def request_fields(params: dict) -> dict:
    """What the options add to a ``sub`` request besides the job's spec."""
    fields: dict = {"records": bool(params.get("as_json"))}
    if params.get("array") is not None:
        from qpy import jobspec

        try:
            first, last, step, cap = jobspec.parse_array(params["array"])
        except jobspec.SpecError as exc:
            fail(str(exc))
        fields.update(array=[first, last, step], array_max=cap)
    return fields


def show(reply: dict, as_json: bool) -> None:
    """The reply to a submission: its text, or with --json the new jobs' records."""
    if as_json:
        from qpy import jsonout

        echo(jsonout.document(jobs=[jsonout.job(j) for j in reply.get("jobs", [])]))
    else:
        echo(reply.get("text", ""))
    if reply.get("warning"):  # e.g. --mail on a host without sendmail
        current().err.write(f"qpy: {reply['warning']}\n")


# -- bulk files ------------------------------------------------------------------------------


def read_file(name: str) -> tuple[str, str]:
    """The text of ``--file NAME`` and how errors call it ('-' is standard input, which
    only this process has: a command served by the master is handed back to it)."""
    inv = current()
    if name == "-":
        inv.local_only()
        return inv.stdin.read(), "<stdin>"
    path = os.path.join(inv.cwd, os.path.expanduser(name))
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read(), name
    except OSError as exc:
        fail(f"--file: cannot read {name}: {exc.strerror}")
    except UnicodeError as exc:
        fail(f"--file: cannot read {name}: {exc}")


def words_of(line: str, where: str) -> list[str]:
    """A line split as the shell splits words (a ``#`` word starts a comment)."""
    from qpy import jobspec

    try:
        return jobspec.split(line, comments=True)
    except ValueError as exc:
        fail(f"{where}: {exc}")


def line_params(ctx: click.Context, words: list[str], where: str) -> dict:
    """A line's options, parsed by the ``sub`` command itself; those it does not give
    are taken from the options given with ``--file``."""
    outer = ctx.params
    if not words[0].startswith("-"):  # no options: nothing to parse
        return {**outer, "command": tuple(words)}
    try:
        with ctx.command.make_context(ctx.info_name, list(words), parent=ctx.parent) as sub:
            given = {name for name in sub.params
                     if sub.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
            params = dict(sub.params)
    except click.ClickException as exc:
        fail(f"{where}: {' '.join(exc.format_message().split())}")
    for name, option in NOT_ON_A_LINE.items():
        if name in given:
            fail(f"{where}: {option} cannot be used on a line of a bulk file")
    copy = {"copy_flag", "original_flag"}
    keep = given | copy if given & copy else given
    return {**outer, **{name: params[name] for name in keep}, "command": params["command"]}


def bulk_specs(ctx: click.Context, text: str, name: str,
               spec_of: Callable[[dict, str], dict]) -> list[dict]:
    """The jobs of a bulk file, one per line that is not blank or a ``#`` comment; a bad
    line refuses the whole file, naming its number."""
    specs = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{name}:{number}"
        words = words_of(stripped, where)
        if not words:
            continue
        params = line_params(ctx, words, where)
        if not params["command"]:
            fail(f"{where}: no command")
        spec = spec_of(params, where)
        spec["where"] = where
        specs.append(_lean(spec))
        if len(specs) > MAX_LINES:
            fail(f"{name} has more than {MAX_LINES:,} jobs: split it")
    if not specs:
        fail(f"{name} has no jobs: every line is blank or a comment")
    return specs


def _lean(spec: dict) -> dict:
    """A spec without the optional fields that say nothing, so a file of 10,000 lines
    makes a small request."""
    from qpy.wire import SPEC

    return {key: value for key, value in spec.items() if key in SPEC and (
        not SPEC[key].endswith("=") or not (value is None or value is False or value == []))}
