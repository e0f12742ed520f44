"""``qpy config`` through the real CLI: the listing, every key's replies and effects, every
checkFMT placeholder, and refusals that leave the setting as it was."""

from __future__ import annotations

import datetime
import os
import re
import time
from pathlib import Path

import pytest
from conftest import NODE, on_tty, wait_for

DEFAULT_FMT_SHOWN = "%j (%s%o):%c (on %n; wd: %d)\\n"
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
KEYS = ("copyScripts", "colour", "coloursScheme", "defaultAttr", "andAttr", "orAttr",
        "killGrace", "sourceTheseFiles")


def settings(qpy) -> str:
    proc = qpy.run("config")
    assert proc.stderr == ""
    return proc.stdout


def setting(qpy, key: str) -> str:
    """The value shown for KEY by ``qpy config``."""
    for line in settings(qpy).splitlines():
        if line.startswith(f"{key}: "):
            return line[len(key) + 2:]
    raise AssertionError(f"{key} not in qpy config output")


def finished(qpy, *args: str, cwd: Path | None = None) -> tuple[int, dict]:
    job = qpy.sub(*args, cwd=cwd)
    return job, qpy.wait_status(job)


def out(qpy, job: int, where: Path | None = None) -> str:
    return ((where or qpy.work) / f"job_{job}.out").read_text()


def stamp(t: str) -> str:
    """A time of ``check --json`` (ISO 8601 in UTC) as checkFMT shows it (local)."""
    moment = datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment.timestamp()))


# --- listing ------------------------------------------------------------------------------


def test_no_arguments_prints_every_setting_with_defaults(qpy):
    text = settings(qpy)
    assert f"Check pattern: '{DEFAULT_FMT_SHOWN}'" in text.splitlines()
    for key in KEYS:
        assert sum(line.startswith(f"{key}: ") for line in text.splitlines()) == 1, key
    assert setting(qpy, "copyScripts") == "false"
    assert setting(qpy, "colour") == "true"
    assert setting(qpy, "coloursScheme") == "yellow blue green red grey magenta"
    assert setting(qpy, "defaultAttr") == "none"
    assert setting(qpy, "andAttr") == "none"
    assert setting(qpy, "orAttr") == "none"
    assert float(setting(qpy, "killGrace")) == 10
    assert setting(qpy, "sourceTheseFiles") == "none"
    assert "paused" not in text


def test_listing_mentions_pause(qpy):
    qpy.run("ctrlQueue", "pause")
    assert settings(qpy).endswith("Job submission is paused.\n")


def test_settings_survive_a_master_restart(qpy):
    qpy.run("config", "killGrace", "7")
    qpy.run("config", "checkFMT", "%j=%s\\n")
    qpy.run("restart")
    assert float(setting(qpy, "killGrace")) == 7
    assert "Check pattern: '%j=%s\\n'" in settings(qpy)


# --- checkFMT -----------------------------------------------------------------------------


def test_check_fmt_set_and_used(qpy):
    job, _ = finished(qpy, "true")
    proc = qpy.run("config", "checkFMT", "%j: %s\\n")
    assert proc.stdout == "Check pattern modified to '%j: %s\\n'\n"
    assert proc.stderr == ""
    assert qpy.run("check").stdout == f"{job}: done\n"
    assert "Check pattern: '%j: %s\\n'" in settings(qpy)


def test_check_fmt_default_restores(qpy):
    job, _ = finished(qpy, "true")
    qpy.run("config", "checkFMT", "%j\\n")
    proc = qpy.run("config", "checkFMT", "default")
    assert proc.stdout == ("Check pattern restored to the default value: "
                           f"'{DEFAULT_FMT_SHOWN}'.\n")
    work = os.path.realpath(qpy.work)
    assert qpy.run("check").stdout == f"{job} (done):true (on {NODE}; wd: {work})\n"


def test_check_fmt_tab_and_several_lines(qpy):
    job, _ = finished(qpy, "true")
    qpy.run("config", "checkFMT", "job %j is %s\\n\\tcores: %N\\n")
    assert qpy.run("check").stdout == f"job {job} is done\n\tcores: 1\n"


def _fields(qpy, job: int, placeholders: str) -> list[str]:
    qpy.run("config", "checkFMT", "|".join(placeholders.split()) + "\\n")
    text = qpy.run("check", str(job)).stdout
    lines = [line for line in text.splitlines() if line != "Job submission is paused."]
    assert len(lines) == 1, text
    return lines[0].split("|")


ALL = "%j %s %c %d %n %N %m %a %A %R %Q %S %E %e %o %r %%"


def test_every_placeholder_for_a_finished_job(qpy):
    job, record = finished(qpy, "-n", "2", "-m", "1.5", "-a", "localhost",
                           "sh", "-c", "exit 3")
    values = dict(zip(ALL.split(), _fields(qpy, job, ALL), strict=True))
    assert values["%j"] == str(job)
    assert values["%s"] == "done"
    assert values["%c"] == "sh -c 'exit 3'"
    assert values["%d"] == os.path.realpath(qpy.work)
    assert values["%n"] == NODE
    assert values["%N"] == "2"
    assert values["%m"] == "1.5"
    assert values["%a"] == "localhost"
    assert values["%A"] == NODE
    assert re.fullmatch(r"\d+:\d\d:\d\d", values["%R"])
    assert values["%Q"] == stamp(record["t_queue"])
    assert values["%S"] == stamp(record["t_start"])
    assert values["%E"] == stamp(record["t_end"])
    for key in ("%Q", "%S", "%E"):
        assert STAMP.fullmatch(values[key]), values[key]
    assert values["%e"] == "3"
    assert values["%o"] == ", exit 3"
    assert values["%r"] == "-"
    assert values["%%"] == "%"


def test_placeholders_for_a_queued_job(qpy):
    qpy.run("ctrlQueue", "pause")
    job = qpy.sub("-a", "localhost", "true")
    values = dict(zip(ALL.split(), _fields(qpy, job, ALL), strict=True))
    assert values["%s"] == "queue"
    assert values["%n"] == "-"
    assert values["%A"] == "[localhost]"
    assert values["%S"] == "-"
    assert values["%E"] == "-"
    assert values["%e"] == "-"
    assert values["%o"] == ""
    assert values["%r"] == "-"
    assert re.fullmatch(r"\d+:\d\d:\d\d", values["%R"])


def test_memory_placeholder_of_whole_gigabytes(qpy):
    job, _ = finished(qpy, "-m", "2", "true")
    assert _fields(qpy, job, "%m %N") == ["2", "1"]


def test_exit_placeholder_for_signal(qpy):
    job, _ = finished(qpy, "kill -9 $$")
    assert _fields(qpy, job, "%e %s") == ["sig9", "done"]


def test_exit_placeholder_for_killed_job(qpy):
    job = qpy.sub("sleep", "60")
    qpy.wait_status(job, "running")
    qpy.run("kill", str(job))
    qpy.wait_status(job, "killed")
    assert _fields(qpy, job, "%s %e") == ["killed", "sig15"]


def test_notes_placeholder(qpy):
    job, _ = finished(qpy, "true")
    other, _ = finished(qpy, "true")
    qpy.run("config", "checkFMT", "<%j>%K\\n")
    assert qpy.run("check", str(job)).stdout == f"<{job}>\n"
    assert qpy.run("notes", str(job), "remember", "this").stdout == "Note stored.\n"
    text = qpy.run("check").stdout
    mine, theirs = text.split(f"<{other}>", 1)
    assert mine.startswith(f"<{job}>\n")
    assert "remember this" in mine
    assert theirs == "\n"


def test_percent_in_command_is_not_expanded(qpy):
    job, _ = finished(qpy, "echo", "%d")
    assert out(qpy, job) == "%d\n"
    proc = qpy.run("config", "checkFMT", "%c")
    assert proc.stdout == "Check pattern modified to '%c'\n"
    assert qpy.run("check").stdout == "echo %d"


def test_percent_placeholders_in_command_and_dir_not_expanded(qpy):
    weird = qpy.work / "dir%j%s"
    weird.mkdir()
    job = qpy.sub("echo", "%j %s %%", cwd=weird)
    qpy.wait_status(job)
    qpy.run("config", "checkFMT", "%c|%d\\n")
    assert qpy.run("check").stdout == f"echo '%j %s %%'|{os.path.realpath(weird)}\n"


# --- booleans -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["copyScripts", "colour"])
def test_boolean_settings(qpy, key):
    for value in ("true", "false", "true"):
        proc = qpy.run("config", key, value)
        assert proc.stdout == f"{key} set to {value}.\n"
        assert setting(qpy, key) == value


def test_copy_scripts_true_runs_a_copy_and_false_the_original(qpy):
    path = qpy.work / "job.sh"

    def run(expect: str) -> None:
        path.write_text("#!/bin/sh\necho original\n")
        path.chmod(0o755)
        qpy.run("ctrlQueue", "pause")
        job = qpy.sub("./job.sh")
        path.write_text("#!/bin/sh\necho modified\n")
        qpy.run("ctrlQueue", "continue")
        qpy.wait_status(job)
        assert out(qpy, job) == expect

    qpy.run("config", "copyScripts", "true")
    run("original\n")
    qpy.run("config", "copyScripts", "false")
    run("modified\n")


def test_colour_on_terminal_follows_setting(qpy):
    finished(qpy, "true")
    qpy.run("config", "colour", "true")
    coloured = on_tty(qpy, "check")
    assert "\x1b[" in coloured
    qpy.run("config", "colour", "false")
    plain = on_tty(qpy, "check")
    assert "\x1b" not in plain
    assert plain == qpy.run("check").stdout
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain


def test_colours_scheme(qpy):
    proc = qpy.run("config", "coloursScheme", "white", "cyan", "magenta", "red", "grey")
    assert proc.stdout == "coloursScheme set to white cyan magenta red grey.\n"
    assert setting(qpy, "coloursScheme") == "white cyan magenta red grey"
    finished(qpy, "true")
    assert "\x1b[35m" in on_tty(qpy, "check")  # done is the third colour: magenta
    qpy.run("config", "coloursScheme", "white", "cyan", "blue", "red", "grey")
    assert "\x1b[34m" in on_tty(qpy, "check")


# --- attributes ---------------------------------------------------------------------------


def test_default_attr_only_when_job_has_none(qpy):
    proc = qpy.run("config", "defaultAttr", "localhost")
    assert proc.stdout == "defaultAttr set to localhost.\n"
    assert setting(qpy, "defaultAttr") == "localhost"
    _, plain = finished(qpy, "true")
    assert plain["attr"] == "localhost"
    _, explicit = finished(qpy, "-a", "not big", "true")
    assert explicit["attr"] == "not big"


def test_default_attr_none_unsets(qpy):
    qpy.run("config", "defaultAttr", "localhost")
    proc = qpy.run("config", "defaultAttr", "none")
    assert proc.stdout == "defaultAttr set to none.\n"
    assert setting(qpy, "defaultAttr") == "none"
    _, record = finished(qpy, "true")
    assert record["attr"] is None


def test_default_attr_with_spaces(qpy):
    qpy.run("config", "defaultAttr", "localhost or big")
    shown = setting(qpy, "defaultAttr")
    _, record = finished(qpy, "true")
    assert record["attr"] == shown
    assert set(re.findall(r"\w+", shown)) == {"localhost", "or", "big"}


def _same_expression(qpy, text: str) -> str:
    """How the master writes TEXT: set it as defaultAttr and read it back."""
    qpy.run("config", "defaultAttr", text)
    shown = setting(qpy, "defaultAttr")
    qpy.run("config", "defaultAttr", "none")
    return shown


def test_or_and_attr_combine_as_documented(qpy):
    qpy.run("config", "andAttr", "not reserved")
    qpy.run("config", "orAttr", "localhost")
    assert setting(qpy, "andAttr") == "not reserved"
    assert setting(qpy, "orAttr") == "localhost"
    _, with_a = finished(qpy, "-a", "big", "true")
    _, without = finished(qpy, "true")
    assert with_a["attr"] == _same_expression(qpy, "(not reserved) and ((localhost) or (big))")
    assert without["attr"] == _same_expression(qpy, "(not reserved) and (localhost)")


def test_and_attr_restricts_every_job(qpy):
    qpy.run("config", "andAttr", "localhost")
    _, record = finished(qpy, "-a", "not big", "true")
    assert record["attr"] == _same_expression(qpy, "localhost and (not big)")
    qpy.run("config", "andAttr", "none")
    assert setting(qpy, "andAttr") == "none"
    _, record = finished(qpy, "-a", "not big", "true")
    assert record["attr"] == "not big"


def test_or_attr_none_unsets(qpy):
    qpy.run("config", "orAttr", "big")
    assert qpy.run("config", "orAttr", "none").stdout == "orAttr set to none.\n"
    _, record = finished(qpy, "-a", "localhost", "true")
    assert record["attr"] == "localhost"


# --- killGrace and sourceTheseFiles -------------------------------------------------------


def test_kill_grace(qpy):
    proc = qpy.run("config", "killGrace", "0.2")
    assert proc.stdout == "killGrace set to 0.2.\n"
    assert float(setting(qpy, "killGrace")) == 0.2
    # A job that ignores SIGTERM is ended with SIGKILL once the grace is over.
    job = qpy.sub("trap '' TERM; echo ready; sleep 60")
    qpy.wait_status(job, "running")
    wait_for(lambda: (qpy.work / f"job_{job}.out").exists()
             and out(qpy, job) == "ready\n", what="the job to install its trap")
    qpy.run("kill", str(job))
    record = qpy.wait_status(job, "killed")
    assert record["signal"] == 9


def test_kill_grace_zero_allowed(qpy):
    assert qpy.run("config", "killGrace", "0").stdout == "killGrace set to 0.0.\n"
    assert float(setting(qpy, "killGrace")) == 0


def test_kill_grace_up_to_a_day(qpy):
    assert qpy.run("config", "killGrace", "86400").stdout == "killGrace set to 86400.0.\n"
    proc = qpy.run("config", "killGrace", "1e12", check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == ("qpy: killGrace must be at most 86400 seconds (one day), "
                           "not '1e12'\n")
    assert float(setting(qpy, "killGrace")) == 86400


def test_source_these_files(qpy):
    first = qpy.work / "first.sh"
    second = qpy.work / "second.sh"
    first.write_text("export SRC_VAR=from-first\nexport OTHER=first\n")
    second.write_text("export OTHER=second\n")
    proc = qpy.run("config", "sourceTheseFiles", str(first), str(second))
    assert proc.stdout == f"sourceTheseFiles set to {first} {second}.\n"
    assert setting(qpy, "sourceTheseFiles") == f"{first} {second}"
    job, _ = finished(qpy, "sh", "-c", 'echo "$SRC_VAR $OTHER"')
    assert out(qpy, job) == "from-first second\n"  # sourced in the given order

    assert qpy.run("config", "sourceTheseFiles", "none").stdout == \
        "sourceTheseFiles set to none.\n"
    job, _ = finished(qpy, "sh", "-c", 'echo "[${SRC_VAR-unset}]"')
    assert out(qpy, job) == "[unset]\n"


def test_source_these_files_are_stored_absolute_and_must_exist(qpy):
    env_dir = qpy.work / "env"
    env_dir.mkdir()
    (env_dir / "modules.sh").write_text("export SRC_VAR=relative\n")
    proc = qpy.run("config", "sourceTheseFiles", "env/modules.sh")
    stored = os.path.realpath(env_dir / "modules.sh")
    assert proc.stdout == f"sourceTheseFiles set to {stored}.\n"
    job, _ = finished(qpy, "sh", "-c", 'echo "$SRC_VAR"', cwd=qpy.work / "env")
    assert out(qpy, job, qpy.work / "env") == "relative\n"  # found from another directory
    for bad, why in (("/does/not/exist", "no such file"), (str(env_dir), "not a file")):
        proc = qpy.run("config", "sourceTheseFiles", str(env_dir / "modules.sh"), bad,
                       check=False)
        assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
        assert proc.stderr == f"qpy: sourceTheseFiles: {why}: {bad!r}\n"
    assert setting(qpy, "sourceTheseFiles") == stored


def test_source_these_files_with_shell_line(qpy):
    env_file = qpy.work / "env.sh"
    env_file.write_text("export SRC_VAR=sourced\n")
    qpy.run("config", "sourceTheseFiles", str(env_file))
    job, record = finished(qpy, "echo $SRC_VAR | tr a-z A-Z")
    assert record["exit_code"] == 0
    assert out(qpy, job) == "SOURCED\n"


# --- refusals -----------------------------------------------------------------------------


NON_DEFAULTS = [
    ("checkFMT", "%j|%s\\n"), ("copyScripts", "true"), ("colour", "false"),
    ("coloursScheme", "white cyan green red magenta"), ("defaultAttr", "localhost"),
    ("andAttr", "not reserved"), ("orAttr", "localhost"), ("killGrace", "7"),
]

BAD = [
    ["bogusKey", "1"],
    ["colour", "maybe"],
    ["colour"],
    ["colour", "true", "false"],
    ["coloursScheme", "red", "blue"],
    ["coloursScheme", "red", "blue", "green", "yellow", "pink"],
    ["coloursScheme", "red", "blue", "green", "yellow", "grey", "white", "cyan"],
    ["checkFMT", "%x"],
    ["checkFMT", "%j %"],
    ["checkFMT"],
    ["checkFMT", ""],
    ["killGrace", "-1"],
    ["killGrace", "abc"],
    ["killGrace", "nan"],
    ["killGrace"],
    ["killGrace", "1e12"],
    ["killGrace", "86400.5"],
    ["defaultAttr", "a and"],
    ["defaultAttr", ""],
    ["andAttr", "(a"],
    ["orAttr", "or"],
    ["copyScripts"],
    ["copyScripts", "maybe"],
    ["sourceTheseFiles"],
    ["sourceTheseFiles", "/does/not/exist"],
    ["sleepTimeSubCtrl", "1"],
    ["sleepTimeCheckRun", "1"],
]

NAMES = {"bogusKey": "bogusKey", "sleepTimeSubCtrl": "sleepTimeSubCtrl",
         "sleepTimeCheckRun": "sleepTimeCheckRun"}


@pytest.mark.parametrize("args", BAD, ids=[" ".join(a) or "empty" for a in BAD])
def test_bad_value_refused_and_setting_unchanged(qpy, args):
    for key, value in NON_DEFAULTS:
        qpy.run("config", key, *value.split())
    (qpy.work / "a.sh").write_text("")
    qpy.run("config", "sourceTheseFiles", str(qpy.work / "a.sh"))
    before = settings(qpy)
    proc = qpy.run("config", *args, check=False)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.endswith("\n"), proc.stderr
    assert proc.stderr.startswith("qpy:")
    assert NAMES.get(args[0], args[0]) in proc.stderr  # the error names the key
    if len(args) == 2 and args[0] in ("checkFMT", "killGrace", "sourceTheseFiles"):
        assert repr(args[1]) in proc.stderr  # and the value
    assert settings(qpy) == before
    qpy.run("restart")
    assert settings(qpy) == before

