"""The ``qpy`` command line: the click group, and running one command to its exit status.

The commands live in ``qpy/commands/``; this module puts them in the manual's order and
turns every failure into one line on stderr starting with ``qpy:`` and an exit status
that says what kind of failure it was (``qpy.wire.EXIT_STATUS``), whether it comes from
click, from parsing, or from the master. ``execute`` runs a command in the ``qpy``
process or, for the command server, inside the master.
"""

from __future__ import annotations

import sys

import click

from qpy.commands import cluster, connect, daemons, help, jobs, queue, runs, settings
from qpy.commands.common import CONTEXT
from qpy.errors import ClientError, told
from qpy.invocation import Invocation, RunLocally, using


class QpyGroup(click.Group):
    """Commands in the manual's order."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=QpyGroup, context_settings=CONTEXT)
def cli() -> None:
    """qpy: submit and control jobs on a cluster's nodes (see 'qpy tutorial')."""


for _command in (jobs.sub, jobs.check, queue.why, jobs.kill, queue.hold, queue.release,
                 jobs.clean, runs.requeue, runs.wait, runs.log, runs.history, connect.connect,
                 daemons.status,
                 settings.config, queue.ctrl_queue, settings.notes, daemons.restart,
                 daemons.finish, cluster.join, help.tutorial, help.complete):
    cli.add_command(_command)


def _run(argv: list[str], err) -> int:
    """Run one command line; every failure becomes one line on ``err`` and a status."""
    try:  # a command's click.exceptions.Exit(N) comes back as N, not raised
        code = cli.main(args=argv, prog_name="qpy", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except ClientError as exc:
        return told(exc, err)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        err.write(f"qpy: {' '.join(exc.format_message().split())}\n")
        return exc.exit_code
    except click.Abort:
        err.write("qpy: aborted\n")
        return 1
    except (BrokenPipeError, KeyboardInterrupt):
        return 1


def execute(argv: list[str], inv: Invocation) -> int:
    """Run one command line in ``inv``; RunLocally goes on to the command server."""
    with using(inv):
        return _run(argv, inv.err)


def run(argv: list[str] | None = None) -> int:
    """Run a command line in this process (the default invocation)."""
    from qpy.invocation import local

    try:
        return execute(sys.argv[1:] if argv is None else argv, local())
    except RunLocally:  # cannot happen outside the master; keep the promise anyway
        return 1


def main() -> None:
    """The full command line in this process (``python -m qpy.cli``)."""
    from qpy.quick_exit import exit_now

    exit_now(run())


if __name__ == "__main__":
    main()
