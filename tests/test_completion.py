"""bash_completion.sh in a real bash: COMP_WORDS/COMP_CWORD set by hand, and typed through
tmux; job IDs from a real master; the file is what the generator writes from the CLI."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import pytest
from conftest import wait_for

from qpy import cli, config, render
from qpy.completion import ID_DEADLINE
from qpy.states import STATUSES
from qpy_multiuser import admin_cli
from tools import completion

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bash_completion.sh"
BIN = str(Path(sys.executable).parent)
BASH = shutil.which("bash")
FUNCS = {"qpy": "_qpy", "qpy-admin": "_qpy_admin", "qpy-access-multiuser.py": "_qpy_admin"}

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")

# Run the completion function as bash would, then print a marker and COMPREPLY, one a line.
DRIVER = r"""
eval "$QPY_TEST_PRELUDE"
source "$QPY_TEST_SCRIPT" || exit 9
COMP_WORDS=("$@")
COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
COMP_TYPE=$QPY_TEST_TYPE
before=$(compgen -v | grep -v -e '^COMPREPLY$' -e '^BASH_' -e '^_$' -e '^before$' -e '^after$')
"$QPY_TEST_FUNC" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
after=$(compgen -v | grep -v -e '^COMPREPLY$' -e '^BASH_' -e '^_$' -e '^before$' -e '^after$')
[[ $before == "$after" ]] || echo "variables leaked: $(diff <(echo "$before") <(echo "$after"))" >&2
printf '\n@@COMPREPLY@@\n'
(( ${#COMPREPLY[@]} == 0 )) || printf '%s\n' "${COMPREPLY[@]}"
"""


class Completion:
    def __init__(self, proc: subprocess.CompletedProcess, seconds: float) -> None:
        out, _, reply = proc.stdout.partition("\n@@COMPREPLY@@\n")
        self.printed = out
        self.words = reply.splitlines()
        self.stderr = proc.stderr
        self.seconds = seconds


def complete(*words: str, env: dict | None = None, comp_type: int = 9,
             cwd: Path | str | None = None, prelude: str = "",
             path: str | None = None) -> Completion:
    """Complete the last of ``words`` (the command line up to the cursor) in a real bash.

    ``prelude`` runs first (shell options); ``path`` replaces PATH (default: the venv's
    bin, where ``qpy`` is, first)."""
    base = env if env is not None else {**os.environ, "QPY_HOME": "/nonexistent/qpy-home"}
    env = {**base, "PATH": path or BIN + os.pathsep + base.get("PATH", ""),
           "QPY_TEST_SCRIPT": str(SCRIPT), "QPY_TEST_FUNC": FUNCS[words[0]],
           "QPY_TEST_TYPE": str(comp_type), "QPY_TEST_PRELUDE": prelude}
    start = time.monotonic()
    proc = subprocess.run([BASH, "--norc", "--noprofile", "-c", DRIVER, "bash", *words],
                          env=env, cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    return Completion(proc, seconds)


def words(*line: str, **kw) -> list[str]:
    result = complete(*line, **kw)
    assert result.printed == "", result.printed
    return result.words


def sub_ctx(group, name):
    ctx = click.Context(group, info_name="x", **group.context_settings)
    cmd = group.get_command(ctx, name)
    return cmd, click.Context(cmd, info_name=name, parent=ctx, **cmd.context_settings)


def option_names(group, name) -> list[str]:
    cmd, ctx = sub_ctx(group, name)
    return [o for p in cmd.get_params(ctx) if p.param_type_name == "option"
            for o in (*p.opts, *p.secondary_opts)]


QPY_COMMANDS = [n for n, c in cli.cli.commands.items() if not c.hidden]
ADMIN_COMMANDS = sorted(n for n, c in admin_cli.admin.commands.items() if not c.hidden)


# --- the file is generated -----------------------------------------------------------------


def test_script_is_what_the_generator_writes():
    assert SCRIPT.read_text() == completion.render(), \
        "bash_completion.sh is out of date: run python -m tools.completion"
    assert completion.main(["--check"]) == 0


def test_generator_refuses_a_command_it_cannot_complete(monkeypatch):
    @click.argument("thing")
    def extra(thing):
        """A new command."""

    monkeypatch.setitem(cli.cli.commands, "extra", click.command("extra")(extra))
    with pytest.raises(ValueError, match="extra"):
        completion.render()


def test_generator_refuses_a_config_key_without_value_completion(monkeypatch):
    monkeypatch.setattr(config, "KEYS", (*config.KEYS, "newKey"))
    monkeypatch.setitem(config.PARSERS, "newKey", lambda key, values: values)
    with pytest.raises(ValueError, match="newKey"):
        completion.render()


def test_script_is_valid_bash_and_registers_all_three_programs():
    proc = subprocess.run([BASH, "--norc", "--noprofile", "-c",
                           f"source {SCRIPT} && complete -p qpy qpy-admin "
                           "qpy-access-multiuser.py"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == [
        "complete -F _qpy qpy", "complete -F _qpy_admin qpy-admin",
        "complete -F _qpy_admin qpy-access-multiuser.py"]


# --- commands and options ---------------------------------------------------------------------


def test_first_word_is_a_command():
    assert words("qpy", "") == QPY_COMMANDS
    assert QPY_COMMANDS == ["sub", "check", "why", "kill", "hold", "release", "clean",
                            "requeue", "wait", "log", "history", "connect", "status", "config",
                            "ctrlQueue", "notes", "restart", "finish", "join", "tutorial"]
    assert words("qpy", "c") == ["check", "clean", "connect", "config", "ctrlQueue"]
    assert words("qpy", "ctrlQ") == ["ctrlQueue"]
    assert words("qpy", "-") == ["-h", "--help"]
    assert words("qpy", "_") == []  # the hidden _complete is for the script only
    assert words("qpy", "--help", "ki") == ["kill"]


@pytest.mark.parametrize("name", QPY_COMMANDS)
def test_every_option_of_every_qpy_command(name):
    expected = option_names(cli.cli, name)
    assert "--help" in expected and "-h" in expected
    assert words("qpy", name, "-") == expected
    assert words("qpy", name, "--") == [o for o in expected if o.startswith("--")]


@pytest.mark.parametrize("name", sorted(admin_cli.admin.commands))
def test_every_option_of_every_admin_command(name):
    assert words("qpy-admin", name, "-") == option_names(admin_cli.admin, name)


def test_admin_commands_under_both_names():
    for prog in ("qpy-admin", "qpy-access-multiuser.py"):
        assert words(prog, "") == ADMIN_COMMANDS
        assert words(prog, "s") == ["saveMessages", "start", "status"]
        assert words(prog, "__") == ["__remove_job", "__req_core", "__user"]
        assert words(prog, "-") == ["-h", "--help"]


def test_admin_arguments(tmp_path):
    (tmp_path / "bundles").mkdir()
    assert words("qpy-admin", "saveMessages", "") == ["true", "false"]
    assert words("qpy-admin", "saveMessages", "t") == ["true"]
    assert words("qpy-admin", "saveMessages", "true", "") == []
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    for command in ("adduser", "removeuser", "__user", "__req_core", "__remove_job"):
        assert me in words("qpy-admin", command, me[:2]), command
    assert words("qpy-admin", "adduser", "--out", "bu", cwd=tmp_path) == ["bundles"]
    assert words("qpy-admin", "adduser", "--out", "=", cwd=tmp_path) == ["bundles"]
    for command in ("start", "finish", "nodes", "distribute", "variables", "status"):
        assert words("qpy-admin", command, "") == []


# --- arguments of each qpy command -------------------------------------------------------------


def test_sub_options_then_command_then_files(tmp_path):
    (tmp_path / "run.sh").write_text("echo hi\n")
    (tmp_path / "runs").mkdir()
    sub_opts = option_names(cli.cli, "sub")
    assert words("qpy", "sub", "-") == sub_opts
    assert words("qpy", "sub", "-n", "4", "-m", "2", "--") == [
        o for o in sub_opts if o.startswith("--")]
    assert words("qpy", "sub", "-n", "") == []  # a number: nothing to offer
    assert words("qpy", "sub", "-a", "") == []
    # the first word after the options is a command, then come files
    assert "echo" in words("qpy", "sub", "ec", cwd=tmp_path)
    assert "python3" in words("qpy", "sub", "-n", "2", "--mem", "3", "pyth", cwd=tmp_path)
    assert "ls" in words("qpy", "sub", "--cores", "=", "4", "l", cwd=tmp_path)
    assert sorted(words("qpy", "sub", "./r", cwd=tmp_path)) == ["./run.sh", "./runs"]
    assert sorted(words("qpy", "sub", "bash", "", cwd=tmp_path)) == ["run.sh", "runs"]
    assert sorted(words("qpy", "sub", "bash", "run", cwd=tmp_path)) == ["run.sh", "runs"]
    # options end at the command: what follows belongs to it
    assert words("qpy", "sub", "bash", "-", cwd=tmp_path) == []


def test_connect_offers_a_command_after_gui_and_nothing_else_without(tmp_path):
    (tmp_path / "plot.py").write_text("")
    assert "echo" in words("qpy", "connect", "--gui", "ec", cwd=tmp_path)
    assert words("qpy", "connect", "--gui", "python3", "pl", cwd=tmp_path) == ["plot.py"]
    assert words("qpy", "connect", "ec", cwd=tmp_path) == []  # an ID: none without a master
    assert words("qpy", "connect", "--name", "") == []
    assert words("qpy", "connect", "--gui-attach", "x") == []


def test_check_kill_clean_offer_their_statuses(tmp_path):
    assert words("qpy", "check", "") == ["queue", "running", "done", "killed", "undone",
                                         "lost", "held"]
    assert words("qpy", "check", "done", "--json", "r") == ["running"]
    assert words("qpy", "check", "--") == ["--json", "--help"]
    assert words("qpy", "kill", "") == ["queue", "running", "held", "all"]
    assert words("qpy", "kill", "queue", "") == ["queue", "running", "held", "all"]
    assert words("qpy", "clean", "") == ["done", "killed", "undone", "lost", "all"]
    assert words("qpy", "clean", "k") == ["killed"]
    # directories select the jobs submitted there, once the word looks like a path
    (tmp_path / "batch1").mkdir()
    (tmp_path / "notes.txt").write_text("")
    for name in ("check", "kill", "clean"):
        assert words("qpy", name, "./b", cwd=tmp_path) == ["./batch1"], name
    assert "batch1" not in words("qpy", "check", "", cwd=tmp_path)


def test_requeue_wait_history_offer_their_statuses():
    assert words("qpy", "requeue", "") == ["done", "killed", "undone", "lost", "all"]
    assert words("qpy", "wait", "") == [*STATUSES, "held", "all"]
    assert words("qpy", "wait", "--") == ["--timeout", "--help"]
    assert words("qpy", "history", "") == ["running", "done", "killed", "lost", "all"]
    assert words("qpy", "history", "--s") == ["--since"]
    assert words("qpy", "log", "--") == ["--err", "--lines", "--follow", "--help"]


@pytest.mark.parametrize("name", sorted(completion.SELECTIONS))
def test_offered_statuses_are_those_the_command_accepts(name, tmp_path):
    # The CLI names the statuses it accepts when given another one, before it would
    # contact a master.
    offered, id_statuses = completion.SELECTIONS[name]
    other = next(s for s in STATUSES if s not in offered)
    env = {**os.environ, "QPY_HOME": str(tmp_path / "home")}
    proc = subprocess.run([os.path.join(BIN, "qpy"), name, other], env=env,
                          capture_output=True, text=True, timeout=60)
    allowed = proc.stderr.rsplit("allowed: ", 1)[1].strip().split(", ")
    words = [w for w in offered if w != "held"]  # held jobs: a word wherever 'queue' is
    assert [*allowed, "all"] == words and tuple(allowed) == id_statuses
    assert not (tmp_path / "home" / "master.pid").exists()


def test_config_keys_and_values(tmp_path):
    assert words("qpy", "config", "") == list(config.KEYS)
    assert words("qpy", "config", "c") == ["checkFMT", "copyScripts", "colour",
                                           "coloursScheme"]
    assert words("qpy", "config", "colour", "") == ["true", "false"]
    assert words("qpy", "config", "copyScripts", "f") == ["false"]
    assert words("qpy", "config", "colour", "true", "") == []
    colours = list(render.COLOURS)
    assert words("qpy", "config", "coloursScheme", "") == colours
    assert words("qpy", "config", "coloursScheme", "red", "blue", "g") == ["grey", "green"]
    six = ["red", "blue", "green", "grey", "cyan", "white"]
    assert words("qpy", "config", "coloursScheme", *six[:5], "") == colours
    assert words("qpy", "config", "coloursScheme", *six, "") == []
    assert words("qpy", "config", "checkFMT", "") == ["default"]
    for key in ("defaultAttr", "andAttr", "orAttr"):
        assert words("qpy", "config", key, "") == ["none"], key
    assert words("qpy", "config", "killGrace", "") == []
    (tmp_path / "modules.sh").write_text("")
    assert words("qpy", "config", "sourceTheseFiles", "", cwd=tmp_path) == [
        "modules.sh", "none"]
    assert words("qpy", "config", "sourceTheseFiles", "x", "", cwd=tmp_path) == ["modules.sh"]


def test_ctrlqueue_actions_and_jump_targets():
    assert words("qpy", "ctrlQueue", "") == ["pause", "continue", "jump"]
    assert words("qpy", "ctrlQueue", "j") == ["jump"]
    assert words("qpy", "ctrlQueue", "pause", "") == []
    assert words("qpy", "ctrlQueue", "jump", "") == []  # no master: no IDs
    assert words("qpy", "ctrlQueue", "jump", "7", "") == ["begin", "end"]
    assert words("qpy", "ctrlQueue", "jump", "7", "8", "b") == ["begin"]


def test_other_commands():
    assert words("qpy", "tutorial", "ch") == ["check", "checkFMT"]
    assert set(words("qpy", "tutorial", "")) == {*QPY_COMMANDS, *config.KEYS}
    assert words("qpy", "tutorial", "sub", "") == []
    assert words("qpy", "notes", "") == []  # only IDs, and no master runs
    assert words("qpy", "notes", "3", "") == []
    for name in ("status", "restart", "finish"):
        assert words("qpy", name, "") == [], name
    assert words("qpy", "nosuchcommand", "") == []


def test_strict_shell_options_do_not_disturb_completion(tmp_path):
    strict = "set -u; shopt -s failglob nullglob extglob dotglob"
    (tmp_path / "data").mkdir()
    assert words("qpy", "", prelude=strict) == QPY_COMMANDS
    assert words("qpy", "sub", "-n", "2", "--", prelude=strict) == [
        o for o in option_names(cli.cli, "sub") if o.startswith("--")]
    assert words("qpy", "kill", "", prelude=strict) == ["queue", "running", "held", "all"]
    assert words("qpy", "config", "coloursScheme", "", prelude=strict) == list(render.COLOURS)
    assert words("qpy", "clean", "./d", prelude=strict, cwd=tmp_path) == ["./data"]
    assert words("qpy-admin", "saveMessages", "", prelude=strict) == ["true", "false"]
    result = complete("qpy", "kill", "?", comp_type=63, prelude=strict)
    assert result.printed.startswith("\nkill: ") and result.words == ["---"]


def test_without_qpy_on_the_path_no_ids_and_no_error():
    assert words("qpy", "notes", "", path="/usr/bin:/bin") == []
    assert words("qpy", "kill", "", path="/usr/bin:/bin") == ["queue", "running", "held", "all"]


# --- `? <TAB><TAB>` -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sub", "kill", "config", "ctrlQueue", "notes", "finish"])
def test_question_mark_prints_the_commands_help(name):
    cmd, ctx = sub_ctx(cli.cli, name)
    result = complete("qpy", name, "?", comp_type=63)
    lines = result.printed.split("\n")
    assert lines[0] == ""  # the help starts below the command line
    assert lines[1] == f"{name}: {completion.description(cmd)}"
    assert lines[2] == f"usage: qpy {name} {' '.join(cmd.collect_usage_pieces(ctx))}".rstrip()
    assert lines[-1] == f"More: qpy {name} --help; qpy tutorial '{name}'"
    assert result.words == ["---"]  # listed by bash below the help, not inserted


def test_question_mark_help_details():
    printed = complete("qpy", "sub", "-n", "2", "?", comp_type=63).printed
    assert "sub: Submit COMMAND as a job. Options go before the command." in printed
    assert "-n, --cores N" in printed and "Number of cores (default 1)." in printed
    assert "--help" not in printed.split("More:")[0]
    printed = complete("qpy", "?", comp_type=63).printed
    assert printed.startswith("\nqpy: submit and control jobs")
    for name in QPY_COMMANDS:
        assert f"\n  {name} " in printed
    assert printed.endswith("Help on one command: qpy COMMAND ? <TAB><TAB>")
    printed = complete("qpy", "bogus", "?", comp_type=63).printed
    assert printed.startswith("\nqpy: no command 'bogus'\n")
    printed = complete("qpy-access-multiuser.py", "adduser", "?", comp_type=63).printed
    assert "\nadduser: Allow USER and print a one-time enrolment code" in printed
    assert "usage: qpy-access-multiuser.py adduser [OPTIONS] USER" in printed
    assert "--out TEXT" in printed
    printed = complete("qpy-admin", "__remove_job", "?", comp_type=63).printed
    assert printed.startswith("\n__remove_job: a repair command")


def test_the_manual_shows_the_real_help():
    printed = complete("qpy", "kill", "?", comp_type=63).printed
    example = f"$ qpy kill ? <TAB><TAB>{printed}\n---\n$ qpy kill ?\n"
    assert example in (ROOT / "manual" / "users.md").read_text()


def test_question_mark_first_tab_keeps_the_line():
    # The first TAB gets the word itself back: readline inserts `?` over `?` (no space),
    # so nothing changes, and the second TAB becomes the listing that shows the help.
    for type_ in (9, 33, 64):
        result = complete("qpy", "kill", "?", comp_type=type_)
        assert result.printed == "" and result.words == ["?"]


@pytest.mark.parametrize("line", [("qpy", "kill"), ("qpy", "sub", "-n", "2"), ("qpy",),
                                  ("qpy-admin", "adduser"), ("qpy-admin",)])
def test_question_mark_then_a_space_prints_the_same_help(line):
    """`qpy kill ? <TAB><TAB>`, as the manual reads, is `qpy kill ?<TAB><TAB>`; `qpy ?
    <TAB><TAB>` is the overview."""
    spaced = complete(*line, "?", "", comp_type=63)
    assert spaced.printed == complete(*line, "?", comp_type=63).printed
    assert spaced.printed.startswith("\n") and len(spaced.printed.split("\n")) > 3
    assert spaced.words == ["---"]
    first = complete(*line, "?", "", comp_type=9)  # the first TAB: nothing to insert
    assert first.printed == "" and first.words == ["---", ""]


def test_question_mark_then_a_space_on_the_overview():
    printed = complete("qpy", "?", "", comp_type=63).printed
    assert printed.startswith("\nqpy: submit and control jobs")
    assert printed.endswith("Help on one command: qpy COMMAND ? <TAB><TAB>")
    printed = complete("qpy-admin", "?", "", comp_type=63).printed
    assert printed.startswith("\nqpy-admin: Administer the qpy multiuser")


def test_a_question_mark_earlier_on_the_line_is_an_argument(tmp_path):
    (tmp_path / "data").mkdir()
    assert words("qpy", "sub", "echo", "?", "x", "", cwd=tmp_path) == ["data"]


def test_tutorial_keywords_of_the_help_exist():
    from qpy import tutorial

    lines = "".join((tutorial.manual_dir() / f).read_text()
                    for f in tutorial.FILES).splitlines()
    for prog in completion.programs():
        for name, cmd, ctx in prog.commands:
            keyword = completion.help_lines(prog, name, cmd, ctx)[-1].rsplit("tutorial ", 1)[1]
            tutorial.find(lines, keyword.strip("'"))


# --- job IDs ------------------------------------------------------------------------------------


def test_job_ids_from_the_running_master(qpy):
    done = qpy.sub("true")
    qpy.wait_status(done, "done")
    running = qpy.sub("sleep", "300")
    qpy.wait_status(running, "running")
    qpy.run("ctrlQueue", "pause")
    queued = qpy.sub("sleep", "1")
    env = qpy.env
    d, r, q = str(done), str(running), str(queued)
    assert words("qpy", "check", "", env=env) == [
        "queue", "running", "done", "killed", "undone", "lost", "held", d, r, q]
    assert words("qpy", "kill", "", env=env) == ["queue", "running", "held", "all", r, q]
    assert words("qpy", "kill", r, "", env=env) == ["queue", "running", "held", "all", q]
    assert words("qpy", "clean", "", env=env) == ["done", "killed", "undone", "lost", "all",
                                                  d]
    assert words("qpy", "notes", "", env=env) == [d, r, q]
    assert words("qpy", "notes", d, "", env=env) == []
    assert words("qpy", "ctrlQueue", "jump", "", env=env) == [q]
    assert words("qpy", "ctrlQueue", "jump", q, "", env=env) == ["begin", "end"]
    assert words("qpy", "check", q[0], env=env) == [i for i in (d, r, q) if i[0] == q[0]]
    assert words("qpy", "kill", "al", env=env) == ["all"]
    # through the hidden command itself
    ids = qpy.run("_complete", "ids", "queue", "running")
    assert ids.stdout == f"{r}\n{q}\n" and ids.stderr == ""


def test_no_master_no_ids_no_error_no_new_files(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "QPY_HOME": str(home)}
    for line in (("qpy", "kill", ""), ("qpy", "notes", ""), ("qpy", "ctrlQueue", "jump", "")):
        result = complete(*line, env=env)
        assert not [w for w in result.words if w.isdigit()], line
        assert result.seconds < 5, result.seconds
    assert not home.exists()  # nothing started, nothing created
    proc = subprocess.run([os.path.join(BIN, "qpy"), "_complete", "ids"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_stale_socket_or_broken_key_give_no_ids(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = {**os.environ, "QPY_HOME": str(home)}
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(home / "master.sock"))
    stale.close()  # the file stays, nobody listens
    (home / "master.key").write_text("k" * 64 + "\n")
    os.chmod(home / "master.key", 0o644)  # refused: readable by others
    assert words("qpy", "kill", "", env=env) == ["queue", "running", "held", "all"]
    os.chmod(home / "master.key", 0o600)
    assert words("qpy", "kill", "", env=env) == ["queue", "running", "held", "all"]
    assert not (home / "master.pid").exists()


def test_a_master_that_does_not_answer_does_not_hang_completion():
    # A short path: AF_UNIX socket paths are limited to about 100 bytes.
    home = Path(tempfile.mkdtemp(prefix="qpyc-"))
    listener = socket.socket(socket.AF_UNIX)
    try:
        os.chmod(home, 0o700)
        listener.bind(str(home / "master.sock"))
        listener.listen(8)  # connections wait in the backlog, nobody ever answers
        (home / "master.key").write_text("ab" * 32 + "\n")
        os.chmod(home / "master.key", 0o600)
        result = complete("qpy", "kill", "", env={**os.environ, "QPY_HOME": str(home)})
        assert result.words == ["queue", "running", "held", "all"]
        assert result.seconds < ID_DEADLINE + 3, result.seconds
    finally:
        listener.close()
        shutil.rmtree(home, ignore_errors=True)


# --- typed through tmux ------------------------------------------------------------------------


class Terminal:
    """An interactive bash in a detached tmux session with the script sourced."""

    PROMPT = "qpy-test$ "

    def __init__(self, root: Path, env: dict) -> None:
        self.sock = str(root / "tmux.sock")
        self.env = env
        shell_env = {"PATH": BIN + os.pathsep + env.get("PATH", ""), "TERM": "screen",
                     "PS1": self.PROMPT, "INPUTRC": "/dev/null", "HOME": str(root),
                     "QPY_HOME": env["QPY_HOME"]}
        command = ["env", "-i", *(f"{k}={v}" for k, v in shell_env.items()),
                   BASH, "--norc", "--noprofile", "-i"]
        self.tmux("new-session", "-d", "-x", "120", "-y", "50", shlex.join(command))
        self.send(f"source {SCRIPT}; clear", "Enter")
        wait_for(lambda: self.screen().strip() == self.PROMPT.strip(), 20, "the prompt")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.sock, *args], env=self.env, check=True,
                              capture_output=True, text=True, timeout=20).stdout

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p").rstrip("\n")

    def last_line(self) -> str:
        """The last line on the screen ("" while it is blank, e.g. just after a clear)."""
        lines = [line for line in self.screen().split("\n") if line.strip()]
        return lines[-1] if lines else ""

    def wait_line(self, text: str, what: str) -> None:
        wait_for(lambda: self.last_line() == (self.PROMPT + text).rstrip(), 20, what)

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True)


@pytest.fixture
def terminal(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    term = Terminal(tmp_path, {**os.environ, "QPY_HOME": str(tmp_path / "home")})
    try:
        yield term
    finally:
        term.close()


def test_typed_completion_of_a_command_and_its_argument(terminal):
    terminal.send("qpy ctrlQ", "Tab")
    terminal.wait_line("qpy ctrlQueue", "ctrlQueue to be completed")
    terminal.send("ju", "Tab")  # completes only if a space followed ctrlQueue
    terminal.wait_line("qpy ctrlQueue jump", "jump to be completed")
    terminal.send("X")
    terminal.wait_line("qpy ctrlQueue jump X", "the space after jump")
    terminal.send("C-u", "clear", "Enter")
    terminal.wait_line("", "a clear screen")
    terminal.send("qpy config colour ", "Tab", "Tab")
    wait_for(lambda: terminal.screen().count(terminal.PROMPT) == 2, 20, "the listing")
    assert terminal.screen().split("\n")[1].split() == ["false", "true"]
    assert terminal.last_line() == terminal.PROMPT + "qpy config colour"  # unchanged


def test_typed_question_mark_shows_help_and_keeps_the_line(terminal):
    terminal.send("qpy kill ?", "Tab")
    time.sleep(0.3)  # the first TAB must change nothing
    assert terminal.screen().split("\n") == [terminal.PROMPT + "qpy kill ?"]
    terminal.send("Tab")
    wait_for(lambda: terminal.screen().count(terminal.PROMPT) == 2, 20, "the help")
    lines = terminal.screen().split("\n")
    assert lines == [
        terminal.PROMPT + "qpy kill ?",
        "kill: Kill jobs: IDs, ranges, 'queue', 'running' or 'all'.",
        "usage: qpy kill [OPTIONS] [JOBS]...",
        "More: qpy kill --help; qpy tutorial 'kill'",
        "---",
        terminal.PROMPT + "qpy kill ?",
    ]
    # the line is still being edited, unchanged: replace the ? and go on completing
    terminal.send("BSpace", "ru", "Tab", "X")
    terminal.wait_line("qpy kill running X", "running to be completed")


@pytest.mark.parametrize("typed", ["qpy kill ? ", "qpy ? "])
def test_typed_question_mark_and_space_shows_help_and_keeps_the_line(terminal, typed):
    terminal.send(typed, "Tab")
    time.sleep(0.3)  # the first TAB must change nothing
    assert terminal.screen().split("\n") == [terminal.PROMPT + typed.rstrip()]
    terminal.send("Tab")
    wait_for(lambda: terminal.screen().count(terminal.PROMPT) == 2, 20, "the help")
    lines = terminal.screen().split("\n")
    first = "kill: Kill jobs" if "kill" in typed else "qpy: submit and control jobs"
    assert lines[1].startswith(first) and lines[-2] == "---", lines
    assert lines[-1] == terminal.PROMPT + typed.rstrip()
    terminal.send("X")  # the space is still there, and the cursor after it
    terminal.wait_line(typed + "X", "the line to be kept")
