"""The name rules the admin's files and the wire share, written once.

A user name is checked in ``allowed_users``, in ``distribution_rules`` and in the admin's
``adduser``/``removeuser``; a node or attribute name in ``nodes``, in a master's ``hello``
and in attribute expressions. One rule each, so a name one place accepts is never refused
by another. Imports only ``re``: the CLI, both daemons and the tests load it cheaply.
"""

from __future__ import annotations

import re

# Unix user names as useradd and Samba machine accounts make them: a letter or ``_``
# first, then letters, digits, ``_``, ``.``, ``-``, and an optional trailing ``$``.
USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")

# Node and attribute names: also what an attribute expression reads as one word.
NODE_NAME = re.compile(r"[A-Za-z0-9_.:+-]+")

# The words of attribute expressions, which cannot name a node or an attribute.
OPERATORS = frozenset({"and", "or", "not"})


def is_user_name(text: object) -> bool:
    """Whether ``text`` is a user name (the whole of it: no trailing newline slips by)."""
    return isinstance(text, str) and USER_NAME.fullmatch(text) is not None


def is_node_name(text: object) -> bool:
    """Whether ``text`` may name a node or an attribute in the ``nodes`` file."""
    return (isinstance(text, str) and NODE_NAME.fullmatch(text) is not None
            and text not in OPERATORS)
