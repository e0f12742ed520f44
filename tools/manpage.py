"""The man page qpy(1), built from the manual (manual/users.md, manual/admin.md) and the
click commands of ``qpy`` and ``qpy-admin``.

``python -m tools.manpage`` (from the repository root) writes ``manual/qpy.1``;
``--check`` only reports whether it is current. The page has NAME, SYNOPSIS and
DESCRIPTION, a summary of every command and option taken from click, then the whole
manual converted from Markdown: headings, paragraphs, lists, tables (for tbl) and code
blocks, with `code`, **bold** and *italic*. Only that subset of Markdown is understood,
which is all the manual uses.
"""

from __future__ import annotations

import os
import re
import sys

NAME = "qpy"
SECTION = "1"
MANUAL_FILES = ("users.md", "admin.md")
DESCRIPTION_SECTION = "What qpy is"  # of users.md: the man page's DESCRIPTION
TABLE_WIDTH = 71  # characters of a table on an 80-column terminal (man indents by 7)


# --- roff text -------------------------------------------------------------------------------

def _escape(text: str) -> str:
    """Plain text for roff: backslashes and hyphens escaped."""
    return text.replace("\\", "\\e").replace("-", "\\-")


def _escape_code(text: str) -> str:
    """Literal text: also quotes, tildes and carets as the ASCII characters, for copying."""
    return (_escape(text).replace("'", "\\(aq").replace("`", "\\(ga")
            .replace("~", "\\(ti").replace("^", "\\(ha"))


_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])")


def inline(text: str, font: str = "R") -> str:
    """Markdown inline markup to roff fonts; ``font`` is the font to return to."""
    out, pos = [], 0
    for match in _INLINE.finditer(text):
        out.append(_escape(text[pos:match.start()]))
        code, bold, italic = match.groups()
        if code is not None:
            out.append(f"\\fB\\%{_escape_code(code)}\\f{font}")  # \\%: no hyphenation
        elif bold is not None:
            out.append(f"\\fB{inline(bold, 'B')}\\f{font}")
        else:
            out.append(f"\\fI{inline(italic, 'I')}\\f{font}")
        pos = match.end()
    out.append(_escape(text[pos:]))
    return "".join(out)


def _line(text: str) -> str:
    """A text line that roff cannot take for a request."""
    return "\\&" + text if text[:1] in (".", "'") else text


def _quote(text: str) -> str:
    """A macro argument."""
    return '"' + text.replace('"', '\\(dq') + '"'


# --- Markdown blocks ----------------------------------------------------------------------------


def _dedent(lines: list[str], width: int) -> list[str]:
    return [line[width:] if line[:width].strip() == "" else line.lstrip() for line in lines]


def blocks(lines: list[str]) -> list[tuple]:
    """Split Markdown lines into ("heading", level, text), ("code", lines),
    ("table", rows), ("list", ordered, items) and ("para", text) blocks."""
    out: list[tuple] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
        elif stripped.startswith("```"):
            indent = len(line) - len(line.lstrip())
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith("```"):
                end += 1
            out.append(("code", _dedent(lines[i + 1:end], indent)))
            i = end + 1
        elif re.match(r"#{1,6} ", line):
            marks, text = line.split(" ", 1)
            out.append(("heading", len(marks), text.strip()))
            i += 1
        elif stripped.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            out.append(("table", rows))
        elif re.match(r"(- |\d+\. )", line):
            ordered = line[0].isdigit()
            items = []
            while i < len(lines) and re.match(r"(- |\d+\. )", lines[i]):
                marker = re.match(r"(- |\d+\. )", lines[i]).group(1)
                body = [lines[i][len(marker):]]
                i += 1
                while i < len(lines):
                    nxt = lines[i]
                    if nxt.startswith("  ") or (not nxt.strip() and i + 1 < len(lines)
                                                and lines[i + 1].startswith("  ")):
                        body.append(nxt)
                        i += 1
                    else:
                        break
                width = 3 if ordered else 2
                items.append(blocks([body[0], *_dedent(body[1:], width)]))
                while i < len(lines) and not lines[i].strip() and i + 1 < len(lines) \
                        and re.match(r"(- |\d+\. )", lines[i + 1]):
                    i += 1
            out.append(("list", ordered, items))
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(
                    r"(#{1,6} |```|\||- |\d+\. )", lines[i].strip()):
                para.append(lines[i].strip())
                i += 1
            out.append(("para", " ".join(para)))
    return out


def _code(lines: list[str]) -> list[str]:
    return [".RS 4", ".nf", *(_line(_escape_code(x)) if x else "" for x in lines),
            ".fi", ".RE"]


def _plain(text: str) -> str:
    return text.replace("`", "").replace("**", "")


def _table(rows: list[list[str]]) -> list[str]:
    """A tbl table whose widest column wraps: its cells are text blocks in an expanding
    column, so the table fits any terminal width. ``.ne`` keeps a table on one page (tbl
    warns when a text block meets a page break)."""
    width = len(rows[0])
    for row in rows:
        if len(row) != width:
            raise ValueError(f"table row with {len(row)} cells instead of {width}: {row}")
    cols = [max(len(_plain(row[col])) for row in rows) for col in range(width)]
    wrap = cols.index(max(cols))
    room = max(TABLE_WIDTH - sum(cols) + cols[wrap] - 3 * (width - 1), 10)
    out = [" ".join("lbx" if col == wrap else "lb" for col in range(width)),
           " ".join("lx" if col == wrap else "l" for col in range(width)) + "."]
    lines = 2
    for n, row in enumerate(rows):
        cells = [_line(inline(c)) for c in row]
        if n == 0:
            out += ["\t".join(cells), "_"]
            continue
        lines += -(-len(_plain(row[wrap])) // room)
        out += ["\t".join(cells[:wrap] + ["T{"]), cells[wrap],
                "\t".join(["T}", *cells[wrap + 1:]])]
    return [".PP", f".ne {lines}v", ".TS", *out, ".TE"]


def _list(ordered: bool, items: list[list[tuple]], depth: int = 0) -> list[str]:
    out = []
    indent = 4 if ordered else 2
    for n, item in enumerate(items, 1):
        tag = f"{n}." if ordered else "\\(bu"
        first = True
        for block in item:
            if block[0] == "para":
                out += [f".IP {tag if first else _quote('')} {indent}", _line(inline(block[1]))]
            elif block[0] == "code":
                if first:
                    out.append(f".IP {tag} {indent}")
                out += [".RS", ".sp", *_code(block[1]), ".RE"]
            elif block[0] == "list":
                out += [".RS", *_list(block[1], block[2], depth + 1), ".RE"]
            else:
                raise ValueError(f"unsupported block in a list item: {block[0]}")
            first = False
    return out


def render_blocks(items: list[tuple], heading=None) -> list[str]:
    """roff for Markdown blocks; ``heading(level, text)`` gives the roff of a heading."""
    out: list[str] = []
    for block in items:
        kind = block[0]
        if kind == "heading":
            out += heading(block[1], block[2]) if heading else []
        elif kind == "para":
            out += [".PP", _line(inline(block[1]))]
        elif kind == "code":
            out += [".PP", *_code(block[1])]
        elif kind == "table":
            out += _table(block[1])
        elif kind == "list":
            out += _list(block[1], block[2])
    return out


# --- the page ---------------------------------------------------------------------------------


def manual_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "manual")


def _read(name: str) -> list[str]:
    with open(os.path.join(manual_dir(), name)) as f:
        return f.read().split("\n")


def _split_intro(lines: list[str]) -> tuple[list[str], list[str]]:
    """The lines before the first ``##`` heading (title dropped), and the rest."""
    first = next(i for i, line in enumerate(lines) if line.startswith("## "))
    intro = [line for line in lines[:first] if not line.startswith("# ")]
    return intro, lines[first:]


def _heading_for(command_names: set[str]):
    def heading(level: int, text: str) -> list[str]:
        plain = text.replace("`", "")
        if level <= 2:
            title = f"qpy {plain}" if plain in command_names else plain.upper()
            return [f".SH {_quote(_escape(title))}"]
        return [f".SS {_quote(_escape(plain))}"]
    return heading


def _usage(prog: str, name: str, cmd, ctx) -> str:
    pieces = " ".join(cmd.collect_usage_pieces(ctx))
    return f"\\fB{_escape(prog)} {_escape(name)}\\fR {_escape(pieces)}".rstrip()


def _command_summary(prog, hidden_note: str) -> list[str]:
    """One .TP per command: usage, description and options, from click."""
    from tools.completion import description

    out = []
    for name, cmd, ctx in sorted(prog.commands, key=lambda c: c[1].hidden):
        text = hidden_note if cmd.hidden and not cmd.help else description(cmd)
        out += [".TP", _usage(prog.name, name, cmd, ctx), _line(_escape(text))]
        help_option = cmd.get_help_option(ctx)
        for param in cmd.get_params(ctx):
            if param.param_type_name != "option" or param is help_option:
                continue
            names, text = param.get_help_record(ctx)
            out += [".RS", ".TP", f"\\fB{_escape(names)}\\fR", _line(_escape(text)), ".RE"]
    return out


def render() -> str:
    """The text of manual/qpy.1."""
    from qpy import __version__ as version
    from tools.completion import programs

    qpy_prog, admin_prog = programs()
    _, users_lines = _split_intro(_read(MANUAL_FILES[0]))  # the intro is about the guide
    users = blocks(users_lines)
    start = users.index(("heading", 3, DESCRIPTION_SECTION))
    end = next(i for i in range(start + 1, len(users)) if users[i][0] == "heading")
    description, users = users[start + 1:end], users[:start] + users[end:]
    admin_intro, admin = _split_intro(_read(MANUAL_FILES[1]))
    heading = _heading_for({name for name, _, _ in qpy_prog.commands})
    synopsis = []
    for prog in (qpy_prog, admin_prog):
        for name, cmd, ctx in prog.commands:
            if not cmd.hidden:
                synopsis += [_usage(prog.name, name, cmd, ctx), ".br"]
    out = [
        "'\\\" t",
        ".\\\" qpy(1). GENERATED by `python -m tools.manpage` from manual/*.md and the click",
        ".\\\" commands: do not edit by hand; tests/test_manual.py checks that it is current.",
        f'.TH QPY {SECTION} "" "qpy {version}" "qpy manual"',
        ".ad l",  # ragged right: code words are not hyphenated, so justifying leaves gaps
        ".SH NAME",
        "qpy \\- submit and control jobs on a cluster's nodes; qpy\\-admin \\- administer them",
        ".SH SYNOPSIS",
        ".nh",
        *synopsis[:-1],
        ".PP",
        "\\fBqpy\\-access\\-multiuser.py\\fR is another name of \\fBqpy\\-admin\\fR.",
        ".hy",
        ".SH DESCRIPTION",
        *render_blocks(description),
        ".PP",
        "This page holds the whole manual: the command summaries, the users' guide, then the",
        "administrators' guide. \\fBqpy tutorial\\fR [\\fIKEYWORD\\fR] shows the same text in",
        "the terminal. \\fBqpy\\fR \\fICOMMAND\\fR \\fB?\\fR followed by two TABs prints a",
        "short help when the bash completion is loaded (see TAB COMPLETION).",
        ".SH COMMANDS",
        *_command_summary(qpy_prog, ""),
        ".SH ADMINISTRATION COMMANDS",
        "Run by the qpy admin account; see ADMINISTRATION.",
        *_command_summary(admin_prog, "A repair command; see \"qpy-admin repair commands\"."),
        *render_blocks(users, heading),
        ".SH ADMINISTRATION",
        *render_blocks(blocks(admin_intro)),
        *render_blocks(blocks(admin), heading),
        ".SH SEE ALSO",
        "\\fBssh\\fR(1), \\fBbash\\fR(1); \\fBqpy tutorial\\fR.",
    ]
    return "\n".join(out) + "\n"


def page_path() -> str:
    return os.path.join(manual_dir(), f"{NAME}.{SECTION}")


def main(argv: list[str] | None = None) -> int:
    """Write manual/qpy.1, or with --check report whether it is up to date."""
    args = sys.argv[1:] if argv is None else argv
    from tools.completion import write_or_check

    return write_or_check(page_path(), render(), "tools.manpage", args)

if __name__ == "__main__":
    sys.exit(main())
