"""The generator of ``bash_completion.sh``.

``python -m tools.completion`` (from the repository root) writes ``bash_completion.sh``
from the click command trees of ``qpy`` and ``qpy-admin`` (commands, options, which
options take a value, click choices, the help texts) and from the config keys and their
value kinds; ``--check`` only reports whether the committed file is current. A command
the generator does not know how to complete is an error, so a new command or config key
cannot silently go without completion.

The generated script asks ``qpy _complete ids [STATUS...]`` (a hidden command, served by
``qpy/completion.py`` at run time) for the user's job IDs.
"""

from __future__ import annotations

import os
import re
import sys

from qpy.commands.runs import RUN_STATUSES
from qpy.states import FINISHED, STATUSES

SCRIPT_NAME = "bash_completion.sh"
INTERNAL = ("_complete",)  # commands for the script itself: neither completed nor helped

# --- what the generator needs to know beyond the click trees ---------------------------

# Selections (see qpy/commands/): the words each command accepts besides IDs, ranges and
# directories, and which jobs' IDs are worth offering.
SELECTIONS = {
    "kill": (("queue", "running", "held", "all"), ("queue", "running")),
    "clean": ((*FINISHED, "all"), FINISHED),
    "hold": (("queue", "all"), ("queue",)),
    "release": (("held", "queue", "all"), ("queue",)),
    "requeue": ((*FINISHED, "all"), FINISHED),
}
# Selections that offer every job's ID, with the words each accepts ('held' wherever
# 'queue' is).
ANY_JOB = {"check": (*STATUSES, "held"), "wait": (*STATUSES, "held", "all"),
           "history": (*RUN_STATUSES, "all")}

# Bash snippets for positional arguments that click's types cannot describe. They run in
# __qpy_complete with ``cur`` (the word at the cursor), ``args`` (the arguments before
# it) and ``n`` (their number); the helpers append to COMPREPLY. Commands whose arguments
# are all click choices, or that take none, are derived from the tree.
QPY_ARGS = {
    "sub": "if (( n == 0 )); then __qpy_command; else __qpy_files; fi",
    "notes": "if (( n == 0 )); then __qpy_ids; fi",
    "log": "if (( n == 0 )); then __qpy_ids; fi",
    "ctrlQueue": "if (( n == 0 )); then __qpy_words {actions}\n"
                 "elif [[ ${{args[0]}} == jump ]]; then\n"
                 "    __qpy_ids queue\n"
                 "    if (( n >= 2 )); then __qpy_words {targets}; fi\n"
                 "fi",
    "tutorial": "if (( n == 0 )); then __qpy_words {keywords}; fi",
    "why": "if (( n == 0 )); then __qpy_ids queue; fi",
    # a session's ID; with --gui, the program to run and its arguments
    "connect": "if [[ \" ${{COMP_WORDS[*]:0:COMP_CWORD}} \" == *' --gui '* ]]; then\n"
               "    if (( n == 0 )); then __qpy_command; else __qpy_files; fi\n"
               "elif (( n == 0 )); then __qpy_ids queue running; fi",
    "join": ":  # the enrolment code: nothing to offer",
}
ADMIN_ARGS = {name: "if (( n == 0 )); then __qpy_users; fi"
              for name in ("adduser", "removeuser", "__user", "__req_core", "__remove_job")}
ADMIN_ARGS.update({name: "__qpy_nodes" for name in ("drain", "resume")})

# Values of options that take one, by (command, option name); others complete nothing.
OPTION_VALUES = {
    ("adduser", "out_dir"): "__qpy_files -d",
    ("sub", "priority"): "__qpy_words 'low normal high'",
    ("sub", "after"): "__qpy_ids",
    ("sub", "afterok"): "__qpy_ids",
    ("sub", "file"): "__qpy_files",
    ("sub", "mail"): "__qpy_words 'end fail end,fail none'",
    ("connect", "gui_attach"): "__qpy_ids running",
}

JUMP_TARGETS = ("begin", "end")


def _q(text: str) -> str:
    """``text`` as one bash word: single-quoted pieces joined by escaped quotes."""
    return "\\'".join(f"'{piece}'" if piece else "" for piece in text.split("'")) or "''"


def _words(words) -> str:
    return _q(" ".join(words))


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


def _config_snippet() -> str:
    """``qpy config KEY VALUE...``: keys, then the values each key's parser accepts."""
    from qpy import config, render

    kinds = {
        config._bool: f"if (( n == 1 )); then __qpy_words {_words(config.BOOL_WORDS)}; fi",
        config._scheme: f"if (( n <= {len(render.DEFAULT_SCHEME)} )); then "
                        f"__qpy_words {_words(render.COLOURS)}; fi",
        config._fmt: "if (( n == 1 )); then __qpy_words default; fi",
        config._attr: "if (( n == 1 )); then __qpy_words none; fi",
        config._files: "__qpy_files\nif (( n == 1 )); then __qpy_words none; fi",
        config._grace: ":",
        config._command: "if (( n == 1 )); then __qpy_command; __qpy_words none; fi",
    }
    by_kind: dict[str, list[str]] = {}
    for key in config.KEYS:
        parser = config.PARSERS[key]
        if parser not in kinds:
            raise ValueError(f"config key {key}: no completion for its values "
                             f"({parser.__name__}); add one to tools/completion.py")
        by_kind.setdefault(kinds[parser], []).append(key)
    cases = "\n".join(f"{'|'.join(keys)})\n{_indent(snippet, 4)}\n    ;;"
                      for snippet, keys in by_kind.items())
    return (f"if (( n == 0 )); then __qpy_words {_words(config.KEYS)}; "
            f"else\n    case ${{args[0]}} in\n{_indent(cases, 4)}\n    esac\nfi")


# --- reading the click trees ------------------------------------------------------------


class Program:
    """One click group as the script sees it."""

    def __init__(self, key: str, name: str, group, snippets: dict[str, str]) -> None:
        import click

        self.key, self.name, self.group = key, name, group
        self.ctx = click.Context(group, info_name=name, **group.context_settings)
        self.commands = []  # (name, command, context) in the order of the group
        for cmd_name in group.list_commands(self.ctx):
            if cmd_name in INTERNAL:
                continue
            cmd = group.get_command(self.ctx, cmd_name)
            sub_ctx = click.Context(cmd, info_name=cmd_name, parent=self.ctx,
                                    **cmd.context_settings)
            self.commands.append((cmd_name, cmd, sub_ctx))
        self.snippets = snippets
        unknown = set(snippets) - {name for name, _, _ in self.commands}
        if unknown:
            raise ValueError(f"{name}: completion for unknown commands {sorted(unknown)}")

    def visible(self) -> list[str]:
        return [name for name, cmd, _ in self.commands if not cmd.hidden]

    def hidden(self) -> list[str]:
        return [name for name, cmd, _ in self.commands if cmd.hidden]


def _options(cmd, ctx) -> tuple[list[str], list[str]]:
    """All option names of a command, and those that take a value."""
    names, with_value = [], []
    for param in cmd.get_params(ctx):
        if param.param_type_name != "option":
            continue
        opts = [*param.opts, *param.secondary_opts]
        names += opts
        if not param.is_flag and not param.count:
            with_value += param.opts
    return names, with_value


def _derived_args(prog: Program, name: str, cmd) -> str:
    """Positional completion from click: choices by position; nothing for no arguments."""
    import click

    arguments = [p for p in cmd.params if p.param_type_name == "argument"]
    if not arguments:
        return ":"
    lines = []
    for index, param in enumerate(arguments):
        if not isinstance(param.type, click.Choice) or param.nargs != 1:
            raise ValueError(f"{prog.name} {name}: no completion for argument {param.name}; "
                             "add a snippet to tools/completion.py")
        lines.append(f"if (( n == {index} )); then __qpy_words {_words(param.type.choices)}; fi")
    return "\n".join(lines)


def _qpy_snippets() -> dict[str, str]:
    from qpy import cli, config

    ctrl = cli.cli.commands["ctrlQueue"].params[0]
    if "jump" not in ctrl.type.choices:
        raise ValueError("ctrlQueue has no 'jump' action any more; update tools/completion.py")
    commands = [name for name, cmd in cli.cli.commands.items() if not cmd.hidden]
    snippets = {name: text.format(actions=_words(ctrl.type.choices),
                                  targets=_words(JUMP_TARGETS),
                                  keywords=_words([*commands, *config.KEYS]))
                for name, text in QPY_ARGS.items()}
    snippets["config"] = _config_snippet()
    for name, (words, id_statuses) in {**{n: (w, ()) for n, w in ANY_JOB.items()},
                                       **SELECTIONS}.items():
        snippets[name] = (f"__qpy_words {_words(words)}\n__qpy_ids {' '.join(id_statuses)}"
                          .rstrip() + "\n__qpy_dirs")
    return snippets


def programs() -> list[Program]:
    from qpy import cli
    from qpy_multiuser import admin_cli

    return [Program("qpy", "qpy", cli.cli, _qpy_snippets()),
            Program("admin", "qpy-admin", admin_cli.admin, dict(ADMIN_ARGS))]


# --- help texts for ``CMD ? <TAB><TAB>`` -------------------------------------------------


def description(cmd) -> str:
    """The first paragraph of a command's help, on one line."""
    import inspect

    text = " ".join(inspect.cleandoc(cmd.help or "").split("\n\n")[0].split())
    if not text and cmd.hidden:
        return "a repair command for the allocator's bookkeeping; see the manual first."
    return text or "(no description; see the manual)"


def help_lines(prog: Program, name: str, cmd, ctx) -> list[str]:
    """The short help for one command: description, usage, options, where to read more."""
    import click

    lines = [f"{name}: {description(cmd)}",
             f"usage: {{prog}} {name} {' '.join(cmd.collect_usage_pieces(ctx))}".rstrip()]
    help_option = cmd.get_help_option(ctx)
    records = [rec for param in cmd.get_params(ctx)
               if param.param_type_name == "option" and param is not help_option
               for rec in [param.get_help_record(ctx)] if rec]
    if records:
        formatter = click.HelpFormatter(width=78)
        with formatter.indentation():
            formatter.write_dl(records)
        lines += formatter.getvalue().rstrip("\n").split("\n")
    keyword = (name if prog.key == "qpy" else "repair commands" if cmd.hidden
               else f"{prog.name} {name}")
    lines.append(f"More: {{prog}} {name} --help; qpy tutorial '{keyword}'")
    return lines


def overview_lines(prog: Program) -> list[str]:
    import click

    formatter = click.HelpFormatter(width=78)
    with formatter.indentation():
        formatter.write_dl([(name, cmd.get_short_help_str(60))
                            for name, cmd, _ in prog.commands if not cmd.hidden])
    text = description(prog.group)
    if not text.startswith(f"{prog.name}:"):
        text = f"{{prog}}: {text}"
    return [text, "usage: {prog} COMMAND [ARGS]...",
            *formatter.getvalue().rstrip("\n").split("\n"),
            "Help on one command: {prog} COMMAND ? <TAB><TAB>"]


def _say(lines: list[str]) -> str:
    """A __qpy_say call printing ``lines``; ``{prog}`` becomes the program's name as typed
    and ``{cmd}`` the command word."""
    words = []
    for line in lines:
        parts = re.split(r"(\{prog\}|\{cmd\})", line)
        word = "".join({"{prog}": '"$2"', "{cmd}": '"$1"'}.get(part) or (_q(part) if part else "")
                       for part in parts)
        words.append(word or "''")
    return "__qpy_say " + " \\\n    ".join(words)


# --- the script ---------------------------------------------------------------------------

HEADER = """\
# Bash completion for qpy, qpy-admin and qpy-access-multiuser.py.
#
# Enable it with `source /path/to/bash_completion.sh`, e.g. in ~/.bashrc.
# `qpy COMMAND ? <TAB><TAB>` (or `?<TAB><TAB>`) prints a short help and leaves the line
# as it is; `qpy ? <TAB><TAB>` lists the commands.
#
# GENERATED from the click commands by `python -m tools.completion`: do not edit by hand.
# tests/test_completion.py fails when this file differs from what the generator writes.
"""

ENGINE = r"""
# --- helpers: each appends candidates for the word at the cursor ($cur) to COMPREPLY ---

__qpy_words() {  # WORDS: the words (one string, separated by spaces) that start with $cur
    local w
    for w in $1; do
        [[ $w == "$cur"* ]] && COMPREPLY+=("$w")
    done
    return 0
}

__qpy_files() {  # [-d]: files and directories, or directories only
    compopt -o filenames 2>/dev/null
    local f
    while IFS= read -r f; do
        COMPREPLY+=("$f")
    done < <(compgen "${1:--f}" -- "$cur" 2>/dev/null)
}

__qpy_dirs() {  # directories, but only once the word looks like a path
    if [[ $cur == [./~]* || $cur == */* ]]; then __qpy_files -d; fi
}

__qpy_command() {  # a command name, or a file once the word holds a slash
    if [[ $cur == */* ]]; then
        __qpy_files
        return
    fi
    local c
    while IFS= read -r c; do
        COMPREPLY+=("$c")
    done < <(compgen -c -- "$cur" 2>/dev/null | LC_ALL=C sort -u)
}

__qpy_users() {  # user names
    local u
    while IFS= read -r u; do
        COMPREPLY+=("$u")
    done < <(compgen -u -- "$cur" 2>/dev/null)
}

__qpy_nodes() {  # node names, from the nodes file in the admin home
    local file=${QPY_ADMIN_HOME:-$HOME/.qpy-multiuser}/nodes name rest
    [[ -r $file ]] || return 0
    while read -r name rest; do
        [[ -z $name || $name == \#* ]] && continue
        [[ $name == "$cur"* ]] && COMPREPLY+=("$name")
    done < "$file"
    return 0
}

__qpy_ids() {  # [STATUS...]: the user's job IDs (those with STATUS), not yet on the line
    [[ $cur == *[!0-9]* ]] && return 0
    local qpy=${COMP_WORDS[0]} id word ids
    [[ $qpy == */* && -x $qpy ]] || qpy=qpy
    ids=$("$qpy" _complete ids "$@" </dev/null 2>/dev/null) || return 0
    for id in $ids; do
        [[ $id == "$cur"* ]] || continue
        for word in "${args[@]}"; do
            [[ $word == "$id" ]] && continue 2
        done
        COMPREPLY+=("$id")
    done
    return 0
}

__qpy_say() {  # LINE...: print the lines, without a newline after the last one
    local IFS=$'\n'
    printf '%s' "$*"
}

__qpy_help() {  # PROG COMMAND [spaced]: the help for `?<TAB><TAB>` or `? <TAB><TAB>`,
    # keeping the line unchanged
    case ${COMP_TYPE:-}:${3:-} in
        63:* | 33:spaced | 64:spaced) ;;  # a listing: the help is printed
        *:spaced)
            # First TAB after `? `: two words with nothing in common insert nothing,
            # and the next TAB lists.
            COMPREPLY=('---' '')
            return 0
            ;;
        *)
            # First TAB on `?`: the word itself, so nothing changes and the next TAB lists.
            COMPREPLY=('?')
            compopt -o nospace 2>/dev/null
            return 0
            ;;
    esac
    printf '\n'
    "__qpy_help_$1" "$2" "${COMP_WORDS[0]##*/}"
    if [[ ${COMP_TYPE:-} == 63 ]]; then COMPREPLY=('---'); else COMPREPLY=('---' ''); fi
}

# --- the engine, shared by qpy and qpy-admin ---

__qpy_complete() {  # PROG: complete COMP_WORDS[COMP_CWORD] for program PROG
    local prog=$1 cur=${COMP_WORDS[COMP_CWORD]}
    local commands='' hidden='' opts='' valopts='' interspersed=''
    local cmd='' word='' valueof='' options_end='' n i=1
    local -a args=()
    COMPREPLY=()
    "__qpy_spec_$prog" ''
    while (( i < COMP_CWORD )); do
        if [[ ${COMP_WORDS[i]} != -* ]]; then
            cmd=${COMP_WORDS[i]}
            break
        fi
        (( i++ ))
    done
    [[ $cmd == '?' ]] && cmd=''  # `qpy ? <TAB><TAB>`: the overview
    if [[ $cur == '?' ]]; then
        __qpy_help "$prog" "$cmd"
        return 0
    fi
    if [[ -z $cur ]] && (( COMP_CWORD > 1 )) && [[ ${COMP_WORDS[COMP_CWORD-1]} == '?' ]]; then
        __qpy_help "$prog" "$cmd" spaced
        return 0
    fi
    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            __qpy_words "$opts"
        elif [[ $cur == _* ]]; then
            __qpy_words "$commands $hidden"
        else
            __qpy_words "$commands"
        fi
        return 0
    fi
    "__qpy_spec_$prog" "$cmd" || return 0
    for (( i++; i < COMP_CWORD; i++ )); do
        word=${COMP_WORDS[i]}
        if [[ -z $options_end && $word == -?* ]]; then
            if [[ $word == -- ]]; then
                options_end=1
            elif [[ " $valopts " == *" $word "* ]]; then
                # the value follows; bash splits --opt=value into --opt, =, value
                if (( i + 2 < COMP_CWORD )) && [[ ${COMP_WORDS[i+1]} == = ]]; then (( i++ )); fi
                if (( i + 1 == COMP_CWORD )); then valueof=$word; fi
                (( i++ ))
            fi
            continue
        fi
        args+=("$word")
        [[ -n $interspersed ]] || options_end=1
    done
    if [[ -n $valueof ]]; then
        [[ $cur == = ]] && cur=''
        "__qpy_value_$prog" "$cmd" "$valueof"
        return 0
    fi
    if [[ -z $options_end && $cur == -* ]]; then
        __qpy_words "$opts"
        return 0
    fi
    n=${#args[@]}
    "__qpy_args_$prog" "$cmd"
    return 0
}
"""

FOOTER = """

_qpy() { __qpy_complete qpy; }
_qpy_admin() { __qpy_complete admin; }
complete -F _qpy qpy
complete -F _qpy_admin qpy-admin qpy-access-multiuser.py
"""


def _case(entries: list[tuple[str, str]], default: str | None = None) -> str:
    """A bash ``case $1`` over (pattern, body) pairs."""
    out = ["    case $1 in"]
    for pattern, body in [*entries, *([("*", default)] if default else [])]:
        out.append(f"        {pattern})")
        out.append(_indent(body, 12))
        out.append("            ;;")
    out.append("    esac")
    return "\n".join(out)


def _program_functions(prog: Program) -> str:
    key = prog.key
    group_opts, _ = _options(prog.group, prog.ctx)
    spec = [("''", f"commands={_words(prog.visible())}\nhidden={_words(prog.hidden())}\n"
                   f"opts={_words(group_opts)}")]
    args, values, helps = [], [], [("''", _say(overview_lines(prog)))]
    for name, cmd, ctx in prog.commands:
        opts, with_value = _options(cmd, ctx)
        interspersed = "1" if ctx.allow_interspersed_args else "''"
        spec.append((_q(name), f"opts={_words(opts)}\nvalopts={_words(with_value)}\n"
                               f"interspersed={interspersed}"))
        args.append((_q(name), prog.snippets.get(name) or _derived_args(prog, name, cmd)))
        cases = [f'{"|".join(param.opts)}) {OPTION_VALUES[name, param.name]} ;;'
                 for param in cmd.params
                 if param.param_type_name == "option" and (name, param.name) in OPTION_VALUES]
        if cases:
            values.append((_q(name), "case $2 in\n" + _indent("\n".join(cases), 4) + "\nesac"))
        helps.append((_q(name), _say(help_lines(prog, name, cmd, ctx))))
    unknown = _say(["{prog}: no command '{cmd}'", *overview_lines(prog)[2:]])
    return "\n".join([
        f"\n\n# --- {prog.name}: generated from the click commands ---\n",
        f"__qpy_spec_{key}() {{  # COMMAND ('' for the group): set the words to offer",
        _case(spec, "return 1"), "}\n",
        f"__qpy_args_{key}() {{  # COMMAND: complete its argument number $n",
        _case(args), "    return 0\n}\n",
        f"__qpy_value_{key}() {{  # COMMAND OPTION: complete the option's value",
        _case(values) if values else "    :", "    return 0\n}\n",
        f"__qpy_help_{key}() {{  # COMMAND NAME: print the help, NAME being the program",
        _case(helps, unknown), "}",
    ])


def render() -> str:
    """The text of bash_completion.sh."""
    return HEADER + ENGINE + "".join(_program_functions(p) for p in programs()) + FOOTER


def script_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        SCRIPT_NAME)


def write_or_check(path: str, text: str, module: str, args: list[str]) -> int:
    """Write a generated file, or with --check report whether the committed one is current
    (shared by the completion script and the man page)."""
    if "--check" in args:
        try:
            with open(path) as f:
                current = f.read()
        except OSError:
            current = None
        if current != text:
            print(f"{path} is out of date: run python -m {module}", file=sys.stderr)
            return 1
        return 0
    with open(path, "w") as f:
        f.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Write bash_completion.sh, or with --check report whether it is up to date."""
    args = sys.argv[1:] if argv is None else argv
    return write_or_check(script_path(), render(), "tools.completion", args)


if __name__ == "__main__":
    sys.exit(main())
