"""The ``qpy`` command: parse, make one request to the user's master, print, exit.

Start-up time is what users feel, so beyond click and the wire nothing is imported until a
command needs it. Every error is one line on stderr starting with ``qpy:`` and a non-zero
exit status, whether it comes from click, from parsing, or from the master.
"""

from __future__ import annotations

import os
import sys

import click

from qpy.client import ClientError, request
from qpy.selection import FINISHED, STATUSES

CONTEXT = {"help_option_names": ["-h", "--help"]}


class QpyGroup(click.Group):
    """Commands in the manual's order."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=QpyGroup, context_settings=CONTEXT)
def cli() -> None:
    """qpy: submit and control jobs on a cluster's nodes (see 'qpy tutorial')."""


def fail(text: str) -> None:
    """Refuse bad input from the command line (exit status 2, as click's usage errors)."""
    raise ClientError(text, "bad_request")


def say(reply: dict) -> None:
    sys.stdout.write(reply.get("text", ""))


def parse_selection(args: tuple[str, ...], statuses: tuple[str, ...], what: str,
                    allow_dirs: bool = True) -> dict:
    if not args:
        fail(f"{what} needs job IDs, ranges, a status or 'all'")
    from qpy import selection

    try:
        return selection.parse(list(args), statuses, allow_all=True, allow_dirs=allow_dirs,
                               cwd=os.getcwd())
    except selection.SelectionError as exc:
        fail(str(exc))


@cli.command(context_settings={**CONTEXT, "allow_interspersed_args": False,
                               "ignore_unknown_options": False})
@click.option("-n", "--cores", "n_cores", metavar="N", help="Number of cores (default 1).")
@click.option("-m", "--mem", "--memory", "mem", metavar="GB", help="Memory in GB (default 5).")
@click.option("-a", "--node_attr", "--attributes", "attr", metavar="EXPR",
              help="Node attributes: names with and/or/not and parentheses.")
@click.option("-c", "--copyScript", "copy_flag", is_flag=True,
              help="Run a copy of the script taken now.")
@click.option("-o", "--originalScript", "original_flag", is_flag=True,
              help="Run the original script even if copyScripts is on.")
@click.option("--requeue", "requeue", is_flag=True, default=None,
              help="Queue the job again if its node fails while it runs (else: lost).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def sub(n_cores: str | None, mem: str | None, attr: str | None, copy_flag: bool,
        original_flag: bool, requeue: bool | None, command: tuple[str, ...]) -> None:
    """Submit COMMAND as a job. Options go before the command."""
    from qpy import jobspec

    if copy_flag and original_flag:
        fail("-c (copy the script) and -o (run the original) cannot be used together")
    copy = True if copy_flag else False if original_flag else None
    try:
        spec = jobspec.build(list(command), os.getcwd(), n_cores, mem, attr, copy, requeue)
    except jobspec.SpecError as exc:
        fail(str(exc))
    say(request({"type": "sub", **spec, "env": dict(os.environ)}))


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@click.argument("jobs", nargs=-1)
def check(as_json: bool, jobs: tuple[str, ...]) -> None:
    """List jobs: all, or those matching statuses, IDs, ranges or directories."""
    import time

    sel = parse_selection(jobs, STATUSES, "check") if jobs else {}
    reply = request({"type": "check", "select": sel})
    if as_json:
        import json

        print(json.dumps(reply["jobs"], indent=1))
        return
    from qpy import render

    scheme = reply["scheme"] if reply.get("colour") and sys.stdout.isatty() else None
    sys.stdout.write(render.render_jobs(reply["jobs"], reply["fmt"], scheme, time.time()))
    if reply.get("paused"):
        sys.stdout.write("Job submission is paused.\n")


@cli.command(context_settings=CONTEXT)
@click.argument("jobs", nargs=-1)
def kill(jobs: tuple[str, ...]) -> None:
    """Kill jobs: IDs, ranges, 'queue', 'running' or 'all'."""
    say(request({"type": "kill", "select": parse_selection(jobs, ("queue", "running"), "kill")}))


@cli.command(context_settings=CONTEXT)
@click.argument("jobs", nargs=-1)
def clean(jobs: tuple[str, ...]) -> None:
    """Forget finished jobs: IDs, ranges, done, killed, undone, lost, directories or 'all'."""
    sel = parse_selection(jobs, FINISHED, "clean")
    say(request({"type": "clean", "select": sel}))


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> None:
    """Show users, nodes and cores of the multiuser."""
    reply = request({"type": "status"})
    if as_json:
        import json

        print(json.dumps({"users": reply["users"], "nodes": reply["nodes"]}, indent=1))
        return
    from qpy import status_view

    sys.stdout.write(status_view.render(reply["users"], reply["nodes"]))


@cli.command(context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.argument("key", required=False)
@click.argument("values", nargs=-1, type=click.UNPROCESSED)
def config(key: str | None, values: tuple[str, ...]) -> None:
    """Show the settings, or set KEY to VALUES."""
    say(request({"type": "config", "key": key, "values": list(values)}))


@cli.command(name="ctrlQueue", context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.argument("action", type=click.Choice(["pause", "continue", "jump"]))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ctrl_queue(action: str, args: tuple[str, ...]) -> None:
    """Pause or continue the queue, or jump jobs to run after TARGET (ID, begin, end)."""
    if action != "jump":
        if args:
            fail(f"ctrlQueue {action} takes no arguments")
        say(request({"type": "ctrl", "action": action}))
        return
    if len(args) < 2:
        fail("ctrlQueue jump needs job IDs and a target: a job ID, begin or end")
    target = args[-1]
    if target not in ("begin", "end") and not target.isdigit():
        fail(f"jump target must be a job ID, begin or end, not {target!r}")
    sel = parse_selection(args[:-1], (), "jump", allow_dirs=False)
    say(request({"type": "ctrl", "action": "jump", "select": sel, "target": target}))


@cli.command(context_settings=CONTEXT)
@click.argument("job", required=False)
@click.argument("text", nargs=-1)
def notes(job: str | None, text: tuple[str, ...]) -> None:
    """List jobs with notes, show a job's notes, or add TEXT as a note."""
    if job is not None and not job.isdigit():
        fail(f"notes takes a job ID, not {job!r}")
    say(request({"type": "notes", "job": int(job) if job else None,
                 "text": " ".join(text) if text else None}))


def _stop_master() -> bool:
    """Ask a running master to stop and wait until its lock is free; False if none ran."""
    import fcntl

    from qpy import paths

    try:
        say(request({"type": "finish"}, start=False))
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    with open(os.path.join(paths.qpy_home(), "master.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the old master has exited
    return True


@cli.command(context_settings=CONTEXT)
def restart() -> None:
    """Stop the master if it runs and start a new one; running jobs are kept."""
    _stop_master()
    from qpy import client, paths

    client.start_master(paths.ensure_private_dir(paths.qpy_home()))
    print("qpy-master started.")


@cli.command(context_settings=CONTEXT)
def finish() -> None:
    """Stop the master; running jobs go on and are found again at the next start."""
    if not _stop_master():
        print("qpy-master is not running.")


@cli.command(context_settings=CONTEXT)
@click.argument("keyword", required=False)
def tutorial(keyword: str | None) -> None:
    """Show the manual, at the first place KEYWORD appears."""
    from qpy import tutorial as tutorial_module

    try:
        tutorial_module.show(keyword)
    except tutorial_module.TutorialError as exc:
        raise ClientError(str(exc), "not_found") from None


@cli.command(name="_complete", hidden=True, context_settings=CONTEXT)
@click.argument("what")
@click.argument("args", nargs=-1)
def complete(what: str, args: tuple[str, ...]) -> None:
    """For bash_completion.sh: 'ids [STATUS...]' prints the job IDs of a running master."""
    from qpy import completion

    completion.print_candidates(what, args)


def run() -> int:
    """Run the CLI; every failure becomes one line on stderr and a non-zero status."""
    try:
        cli.main(prog_name="qpy", standalone_mode=False)
        return 0
    except ClientError as exc:
        from qpy.wire import EXIT_STATUS

        sys.stderr.write(f"qpy: {exc}\n")
        return EXIT_STATUS.get(exc.code, 1)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        sys.stderr.write(f"qpy: {' '.join(exc.format_message().split())}\n")
        return exc.exit_code
    except click.Abort:
        sys.stderr.write("qpy: aborted\n")
        return 1
    except (BrokenPipeError, KeyboardInterrupt):
        return 1


def main() -> None:
    """Exit without the interpreter's slow tear-down: the CLI holds nothing to clean up."""
    code = run()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or 1
    os._exit(code)


if __name__ == "__main__":
    main()
