"""The manual covers the CLIs (every command and option of ``qpy`` and ``qpy-admin``, the
config keys, checkFMT placeholders and #QPY directives), and the man page qpy(1) built
from it is current and renders."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from qpy import cli, config, jobspec, render
from qpy.states import STATUSES
from qpy_multiuser import admin_cli
from tools import manpage

ROOT = Path(__file__).resolve().parent.parent
MANUAL = ROOT / "manual"
USERS = (MANUAL / "users.md").read_text()
ADMIN = (MANUAL / "admin.md").read_text()
EVERYTHING = "\n".join(p.read_text() for p in sorted(MANUAL.glob("*.md")))


def sections(text: str, level: int) -> dict[str, str]:
    """Heading -> its text up to the next heading of the same or a higher level."""
    found: dict[str, str] = {}
    heading, body, in_code = None, [], False
    for line in text.split("\n"):
        in_code ^= line.startswith("```")
        match = None if in_code else re.match(r"(#+) (.*)", line)
        if match and len(match.group(1)) <= level:
            if heading is not None:
                found[heading] = "\n".join(body)
            heading, body = (match.group(2), []) if len(match.group(1)) == level else (None, [])
            continue
        body.append(line)
    if heading is not None:
        found[heading] = "\n".join(body)
    return found


def mentions(text: str, word: str) -> bool:
    """``word`` as a whole token: ``-n`` is not found in ``-name`` or ``--n``."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def commands(group) -> list[tuple[str, click.Command, list[str]]]:
    """(name, command, option names but the help option's) of a click group."""
    ctx = click.Context(group, info_name="x", **group.context_settings)
    result = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        sub = click.Context(cmd, info_name=name, parent=ctx, **cmd.context_settings)
        help_option = cmd.get_help_option(sub)
        opts = [o for p in cmd.get_params(sub)
                if p.param_type_name == "option" and p is not help_option
                for o in (*p.opts, *p.secondary_opts)]
        result.append((name, cmd, opts))
    return result


QPY = commands(cli.cli)
ADMIN_CMDS = commands(admin_cli.admin)
USER_SECTIONS = sections(USERS, 2)
ADMIN_SECTIONS = sections(ADMIN, 3)


@pytest.mark.parametrize("name,cmd,opts", QPY, ids=[c[0] for c in QPY])
def test_every_qpy_command_and_option_is_in_the_manual(name, cmd, opts):
    if cmd.hidden:  # the script's helper: mentioned, no section of its own
        assert f"qpy {name}" in EVERYTHING
        return
    assert name in USER_SECTIONS, f"users.md has no section '## {name}'"
    for opt in opts:
        assert mentions(USER_SECTIONS[name], opt), f"{opt} of qpy {name} is not in '## {name}'"


def admin_section(name: str, hidden: bool) -> str:
    for heading, text in ADMIN_SECTIONS.items():
        if not heading.startswith("qpy-admin "):
            continue
        if hidden and f"`{name}" in text or not hidden and name in heading.split():
            return text
    raise AssertionError(f"admin.md has no 'qpy-admin' section for {name}")


@pytest.mark.parametrize("name,cmd,opts", ADMIN_CMDS, ids=[c[0] for c in ADMIN_CMDS])
def test_every_admin_command_and_option_is_in_the_manual(name, cmd, opts):
    text = admin_section(name, cmd.hidden)
    for opt in opts:
        assert mentions(text, opt), f"{opt} of qpy-admin {name} is not in its section"


def test_help_options_are_in_both_parts():
    for text in (USERS, ADMIN):
        assert mentions(text, "-h") and mentions(text, "--help")


def test_both_admin_command_names():
    assert "`qpy-access-multiuser.py`" in ADMIN and "`qpy-admin`" in ADMIN


def test_config_keys_and_values():
    table = USER_SECTIONS["config"]
    for key in config.KEYS:
        assert f"| `{key}`" in table, key
        assert any(mentions(h, key) for h in sections(USERS, 3) if h.startswith("config ")), key
    for word in [*config.BOOL_WORDS, *render.COLOURS, "default", "none"]:
        assert f"`{word}`" in table, word


def test_checkfmt_placeholders():
    text = sections(USERS, 3)["config checkFMT"]
    for letter in render._FIELDS:
        assert f"| `%{letter}`" in text, letter
    shown = config.show_fmt(render.DEFAULT_FMT)
    assert f"`{shown}`" in text


def test_directives():
    text = sections(USERS, 3)["sub: #QPY directives"]
    for key in jobspec.KEY_ALIASES:
        assert key in text.lower(), key


def test_statuses_and_selection_words():
    for status in STATUSES:
        assert f"`{status}`" in USER_SECTIONS["Basics"], status
    for name in ("kill", "clean"):
        assert "`all`" in USER_SECTIONS[name]


def test_files_environment_install_and_troubleshooting():
    for text in ("QPY_HOME", "QPY_ADMIN_HOME", "nodes", "allowed_users", "distribution_rules",
                 "bash_completion.sh", "qpy.1"):
        assert text in EVERYTHING, text
    for heading in ("Installing qpy on a cluster", "Troubleshooting",
                    "Files in the admin home", "How cores are shared"):
        assert heading in sections(ADMIN, 2), heading
    assert "On a single machine" in sections(USERS, 3)
    assert "Tab completion" in USER_SECTIONS


# --- the man page ---------------------------------------------------------------------------


def test_man_page_is_what_the_generator_writes():
    assert (MANUAL / "qpy.1").read_text() == manpage.render(), \
        "manual/qpy.1 is out of date: run python -m tools.manpage"
    assert manpage.main(["--check"]) == 0


def test_man_page_structure():
    text = (MANUAL / "qpy.1").read_text()
    lines = text.split("\n")
    assert lines[0].startswith("'\\\" t")  # run through tbl
    assert any(line.startswith(".TH QPY 1 ") for line in lines)
    heads = [line for line in lines if line.startswith(".SH ")]
    assert heads[:3] == [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION"]
    for head in (".SH COMMANDS", ".SH ADMINISTRATION COMMANDS", ".SH SEE ALSO"):
        assert head in heads
    # text never starts with . or ' (roff would take it for a request), and only
    # requests of the man macros and a few basic ones are used
    requests = {"TH", "SH", "SS", "PP", "TP", "IP", "RS", "RE", "PD", "TS", "TE", "nf", "fi",
                "br", "sp", "ne", "nh", "hy", "ad", '\\"'}
    for line in lines[1:]:
        if line[:1] in (".", "'"):
            assert line[1:].split(" ")[0] in requests, line


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_renders_without_warnings():
    proc = subprocess.run(["groff", "-t", "-man", "-Tutf8", "-ww", str(MANUAL / "qpy.1")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    page = " ".join(re.sub(r".\x08", "", proc.stdout).split())
    assert "qpy - submit and control jobs" in page
    for name, cmd, opts in QPY + ADMIN_CMDS:
        assert cmd.hidden and name == "_complete" or name in page, name
        for opt in opts:
            assert opt in page, opt
    assert "Worked example: explicit rules" in page
    assert "%j (%s%o):%c (on %n; wd: %d)\\n" in page


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
@pytest.mark.parametrize("columns", [60, 80, 120])
def test_man_l_shows_the_page(columns):
    env = {"PATH": "/usr/bin:/bin", "MANPAGER": "cat", "MANWIDTH": str(columns),
           "LANG": "C.UTF-8"}
    proc = subprocess.run(["man", "--warnings", "-l", str(MANUAL / "qpy.1")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    page = re.sub(r".\x08", "", proc.stdout)
    assert "qpy sub [OPTIONS] COMMAND..." in page  # tables too wide would have warned
