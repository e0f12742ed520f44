#!/usr/bin/env python3
"""qpy-rsh: the rsh agent of multi-node jobs (``qpy sub -N K``). Standard library only.

``qpy-rsh [SSH-OPTIONS] HOST COMMAND...`` runs COMMAND on HOST over ``ssh`` (with the
user's own ssh configuration, and ``BatchMode=yes``: nobody is there to type a password),
with the job's marker, ``QPY_JOB_ID`` and ``QPY_RUN_TAG``, set and exported for COMMAND.
The marker is how qpy finds what a job started on its other nodes, where nothing of it is
a child of qpy's supervisor: when the job ends or is killed, each of its nodes' launchers
ends this user's processes there whose environment holds the marker (launcher op
``reap``).

The master copies this file into the user's qpy home (``hosts/qpy-rsh``: home
directories are shared with the nodes, and nodes have ``python3`` but nothing of qpy) and
points ``QPY_RSH``, ``OMPI_MCA_plm_rsh_agent`` (Open MPI) and ``HYDRA_LAUNCHER_EXEC``
(MPICH, Intel MPI) at it. MPI launchers put options such as ``-x`` before the host; those
go to ssh. The remote command is run by the node's login shell, which must read sh syntax
(``NAME=value; export NAME; COMMAND``), as MPI launchers also assume.
"""

from __future__ import annotations

import os
import shlex
import sys

MARKS = ("QPY_JOB_ID", "QPY_RUN_TAG")
WITH_VALUE = frozenset("BbcDEeFIiJLlmOoPpQRSWw")  # ssh options that take an argument


def split(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """(ssh options, host, command words) of an agent's command line."""
    options: list[str] = []
    i = 0
    while i < len(argv) and argv[i].startswith("-") and len(argv[i]) > 1:
        options.append(argv[i])
        if len(argv[i]) == 2 and argv[i][1] in WITH_VALUE and i + 1 < len(argv):
            options.append(argv[i + 1])
            i += 1
        i += 1
    host = argv[i] if i < len(argv) else None
    return options, host, argv[i + 1:]


def remote_command(words: list[str], env: dict[str, str]) -> str:
    """What the remote shell runs: the marker set and exported, then the command (its
    words joined as ssh itself joins them)."""
    names = [name for name in MARKS if env.get(name)]
    if not names:
        return " ".join(words)
    marks = " ".join(f"{name}={shlex.quote(env[name])}" for name in names)
    return f"{marks}; export {' '.join(names)}; {' '.join(words)}"


def main(argv: list[str] | None = None) -> None:
    options, host, words = split(sys.argv[1:] if argv is None else argv)
    if host is None or not words:
        sys.stderr.write("qpy-rsh: usage: qpy-rsh [SSH-OPTIONS] HOST COMMAND...\n")
        sys.exit(2)
    argv = ["ssh", "-o", "BatchMode=yes", *options, host, remote_command(words, os.environ)]
    try:
        os.execvp("ssh", argv)
    except OSError as exc:
        sys.stderr.write(f"qpy-rsh: cannot run ssh: {exc.strerror}\n")
        sys.exit(127)


if __name__ == "__main__":
    main()
