"""Notifications at a job's end: ``qpy config notify COMMAND`` and ``qpy sub --mail``.

The master runs the notify command once per end of a job (done, killed, undone, lost),
as a child of its own, with the job's end in the environment; failures go to its log.
Mail goes through the local ``sendmail``: this machine has none, so a test puts a fake
one (a script that keeps what it is given) on the PATH the master starts with.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from conftest import NODE, assert_one_line_error, wait_for

ENDS = 'echo "$QPY_JOB_ID $QPY_STATUS $QPY_EXIT $QPY_SIGNAL $QPY_NODE" >> ends.txt'


def ends(qpy, count: int) -> list[str]:
    """The lines the notify command wrote, once there are ``count`` of them."""
    path = qpy.work / "ends.txt"

    def lines():
        text = path.read_text() if path.exists() else ""
        return text.splitlines() if text.count("\n") >= count else None

    return wait_for(lines, what=f"{count} notifications")


def test_notify_runs_once_per_job_end_with_the_end_in_its_environment(qpy):
    out = qpy.run("config", "notify", ENDS).stdout
    assert out == f"notify set to {ENDS}.\n"
    assert f"notify: {ENDS}" in qpy.run("config").stdout.splitlines()
    failing = qpy.sub("sh", "-c", "exit 3")
    qpy.wait_status(failing)
    running = qpy.sub("sh", "-c", "touch up; sleep 600")
    qpy.run("ctrlQueue", "pause")
    queued = qpy.sub("true")
    wait_for((qpy.work / "up").exists, what="the sleeping job to start")
    qpy.run("kill", str(running), str(queued))
    qpy.run("ctrlQueue", "continue")
    qpy.wait_status(running)
    last = qpy.sub("sh", "-c", "touch up2; while [ ! -e go ]; do sleep 0.05; done")
    wait_for((qpy.work / "up2").exists, what="the gated job to start")
    qpy.run("finish")
    (qpy.work / "go").touch()  # it ends while no master runs: the next one records it
    qpy.wait_status(last)
    lines = sorted(ends(qpy, 4), key=lambda line: int(line.split()[0]))
    assert lines == [f"{failing} done 3  {NODE}", f"{running} killed  15 {NODE}",
                     f"{queued} undone   ", f"{last} done 0  {NODE}"], lines
    assert qpy.run("config", "notify", "none").stdout == "notify set to none.\n"
    quiet = qpy.sub("true")
    qpy.wait_status(quiet)
    qpy.run("config", "notify", ENDS)
    after = qpy.sub("true")
    qpy.wait_status(after)
    lines = ends(qpy, 5)
    assert lines[4:] == [f"{after} done 0  {NODE}"], lines


def test_a_failing_notify_command_is_logged_and_jobs_go_on(qpy):
    qpy.run("config", "notify", "echo cannot notify >&2; exit 4")
    log = qpy.home / "master.log"
    job = qpy.sub("true")
    assert qpy.wait_status(job)["status"] == "done"
    wait_for(lambda: f"notify command for job {job} failed (exit status 4): cannot notify"
             in log.read_text(), what="the failure in master.log")
    assert qpy.run("config", "notify", check=False).returncode == 2


def test_mail_without_sendmail_is_said_at_submission(qpy):
    qpy.env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    proc = qpy.run("sub", "--mail", "end,fail", "true")
    job = int(proc.stdout.split()[1])
    assert proc.stdout == f"Job {job} received.\n"
    assert proc.stderr == (f"qpy: job {job} will send no mail: this host has no sendmail "
                           "(looked on the PATH and in /usr/sbin, /usr/lib, /sbin, /usr/bin); "
                           "ask your administrator for one\n")
    assert qpy.job(job)["mail"] == "end,fail"
    assert_one_line_error(qpy.run("sub", "--mail", "always", "true", check=False),
                          "--mail: takes end, fail or end,fail (or none), not 'always'")


def fake_sendmail(root: Path) -> Path:
    """A ``sendmail`` that keeps each message it is given in ``mails/``."""
    bin_dir = root / "fakebin"
    bin_dir.mkdir()
    mails = root / "mails"
    mails.mkdir()
    script = bin_dir / "sendmail"
    script.write_text(f'#!/bin/sh\n[ "$*" = "-oi -t" ] || exit 9\n'
                      f'cat > "{mails}/mail.$$.tmp" && mv "{mails}/mail.$$.tmp" '
                      f'"{mails}/mail.$$"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return mails


def test_mail_goes_through_sendmail_at_end_or_failure(qpy):
    mails = fake_sendmail(qpy.root)
    qpy.env["PATH"] = f"{mails.parent / 'fakebin'}:{os.environ['PATH']}"
    proc = qpy.run("sub", "--mail", "fail", "true")
    assert proc.stderr == ""  # sendmail is there
    ok = int(proc.stdout.split()[1])
    failing = qpy.sub("--mail", "fail", "sh", "-c", "exit 2")
    ended = qpy.sub("--mail", "end", "true")
    script = qpy.work / "directive.sh"
    script.write_text("#!/bin/sh\n#QPY mail=end\nexit 0\n")
    script.chmod(0o755)
    directive = qpy.sub("./directive.sh")
    for job in (ok, failing, ended, directive):
        qpy.wait_status(job)
    got = wait_for(lambda: len(list(mails.glob("mail.[0-9]*"))) >= 3
                   and [p.read_text() for p in mails.glob("mail.[0-9]*")],
                   what="three mails")
    subjects = sorted(next(x for x in m.splitlines() if x.startswith("Subject: "))
                      for m in got)
    assert subjects == sorted([f"Subject: qpy job {failing} done (exit code 2)",
                               f"Subject: qpy job {ended} done (exit code 0)",
                               f"Subject: qpy job {directive} done (exit code 0)"])
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    assert all(m.startswith(f"To: {user}\n") for m in got)
    mail = next(m for m in got if f"job {failing} " in m)
    assert f"Directory: {qpy.work}\n" in mail and f"Node:      {NODE}\n" in mail
