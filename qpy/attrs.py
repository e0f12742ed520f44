"""Node-attribute expressions such as ``big and (fast or not gpu)``.

Users pass these with ``qpy submit -a``; the multiuser allocator evaluates them for every
(job, node) pair, so parsing is done once per distinct text (see ``compile_expr``) and
evaluation is a plain tree walk. Expressions are parsed by hand rather than with ``eval``
because they arrive from untrusted users over the wire.
"""

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

_KEYWORDS = frozenset({"and", "or", "not"})
MAX_DEPTH = 100
N = TypeVar("N")  # a node, of whichever kind ``matching`` is given

# One token per match: a parenthesis, an attribute/keyword word, or any other single
# character (reported as invalid). Whitespace is skipped so "(big)and(fast)" works.
_TOKEN_RE = re.compile(r"\s*(?:([()])|([A-Za-z0-9_.:+-]+)|(\S))")


class AttrError(ValueError):
    """A malformed attribute expression; the message is one line, fit for the user."""


class Expr:
    """Immutable node of a parsed expression.

    Instances are shared through the ``compile_expr`` cache, so mutation would leak between
    unrelated jobs; ``__setattr__`` therefore refuses after construction.
    """

    __slots__ = ()

    def matches(self, attrs: frozenset[str] | set[str], node_name: str) -> bool:
        raise NotImplementedError

    def _key(self) -> tuple:
        raise NotImplementedError

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"


class Attr(Expr):
    """A bare name; node names count so that ``-a node3`` can pin a job to one node."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def matches(self, attrs: frozenset[str] | set[str], node_name: str) -> bool:
        return self.name == node_name or self.name in attrs

    def _key(self) -> tuple:
        return (self.name,)

    def __str__(self) -> str:
        return self.name


class Not(Expr):
    __slots__ = ("operand",)

    def __init__(self, operand: Expr) -> None:
        object.__setattr__(self, "operand", operand)

    def matches(self, attrs: frozenset[str] | set[str], node_name: str) -> bool:
        return not self.operand.matches(attrs, node_name)

    def _key(self) -> tuple:
        return (self.operand,)

    def __str__(self) -> str:
        return f"not {self.operand}"


class _Chain(Expr):
    """``a and b and c`` as one flat node, so long chains cannot exhaust the stack."""

    __slots__ = ("operands",)
    _word = ""

    def __init__(self, operands: tuple[Expr, ...]) -> None:
        object.__setattr__(self, "operands", operands)

    def _key(self) -> tuple:
        return self.operands

    def __str__(self) -> str:
        # Always parenthesised so the text re-parses to the same tree whatever the context.
        return "(" + f" {self._word} ".join(map(str, self.operands)) + ")"


class And(_Chain):
    __slots__ = ()
    _word = "and"

    def matches(self, attrs: frozenset[str] | set[str], node_name: str) -> bool:
        return all(operand.matches(attrs, node_name) for operand in self.operands)


class Or(_Chain):
    __slots__ = ()
    _word = "or"

    def matches(self, attrs: frozenset[str] | set[str], node_name: str) -> bool:
        return any(operand.matches(attrs, node_name) for operand in self.operands)


def _error(text: str, problem: str) -> AttrError:
    # repr() keeps the message on one line even if the user's text contains a newline.
    return AttrError(f"invalid attribute expression {text!r}: {problem}")


def _tokenize(text: str) -> list[str]:
    tokens = []
    for match in _TOKEN_RE.finditer(text):
        paren, word, other = match.groups()
        if other is not None:
            raise _error(text, f"unexpected character {other!r}")
        if paren or word:
            tokens.append(paren or word)
    return tokens


class _Parser:
    """Recursive descent: or_expr := and_expr ('or' and_expr)*, and so on down to atoms.

    Consecutive same operators become one flat And/Or node rather than a left-deep tree.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    def error(self, problem: str) -> AttrError:
        return _error(self.text, problem)

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> Expr:
        if not self.tokens:
            raise self.error("empty expression")
        expr = self.or_expr()
        token = self.peek()
        if token is not None:
            raise self.error(f"unexpected {token!r}")
        return expr

    def or_expr(self) -> Expr:
        return self.chain("or", self.and_expr, Or)

    def and_expr(self) -> Expr:
        return self.chain("and", self.not_expr, And)

    def chain(self, word: str, operand: Callable[[], Expr], node: type) -> Expr:
        """``operand (word operand)*``: one operand alone, else their ``node``."""
        operands = [operand()]
        while self.peek() == word:
            self.take()
            operands.append(operand())
        return operands[0] if len(operands) == 1 else node(tuple(operands))

    def not_expr(self) -> Expr:
        if self.peek() == "not":
            self.take()
            return Not(self.nested(self.not_expr))
        return self.atom()

    def nested(self, parse_inner: Callable[[], Expr]) -> Expr:
        # Bounded so that hostile input raises AttrError rather than RecursionError.
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep")
        expr = parse_inner()
        self.depth -= 1
        return expr

    def atom(self) -> Expr:
        token = self.peek()
        if token == "(":
            self.take()
            expr = self.nested(self.or_expr)
            if self.peek() is None:
                raise self.error("unbalanced parenthesis")
            if self.peek() != ")":
                raise self.error(f"unexpected {self.peek()!r}")
            self.take()
            return expr
        if token is None or token == ")" or token in _KEYWORDS:
            raise self.error(self._missing_attribute(token))
        return Attr(self.take())

    def _missing_attribute(self, token: str | None) -> str:
        previous = self.tokens[self.pos - 1] if self.pos else None
        if previous is None:
            return "unexpected ')'" if token == ")" else f"expected an attribute before {token!r}"
        problem = f"expected an attribute after {previous!r}"
        return problem if token is None else f"{problem}, got {token!r}"


def parse(text: str) -> Expr:
    """Parse ``text``; raises AttrError so the CLI can reject bad input before submission."""
    return _Parser(text).parse()


@functools.lru_cache(maxsize=4096)
def compile_expr(text: str) -> Expr:
    """Cached ``parse``: the allocator re-evaluates the same few texts for every node."""
    return parse(text)


def matching(nodes: Iterable[N], attr: str | None) -> list[N]:
    """The nodes ``attr`` selects (all of them when it is None or empty): the multiuser's
    nodes (``name`` and ``attrs``), or their records as masters get them (dicts with
    "name" and "attrs"). The one filter ``qpy sub``'s checks, ``qpy connect`` and ``qpy
    why`` use; the allocator's placement keeps its own, merged into its search."""
    if not attr:
        return list(nodes)
    expr = compile_expr(attr)
    return [n for n in nodes if expr.matches(*_labels(n))]


def _labels(node: Any) -> tuple[frozenset[str], str]:
    """A node's attributes and name, from either kind of node ``matching`` takes."""
    if isinstance(node, dict):
        return frozenset(node.get("attrs", ())), node["name"]
    return node.attrs, node.name


def normalize(text: str | None) -> str | None:
    """Canonical text for storage, so equal expressions compare and cache as equal."""
    if text is None or not text.strip():
        return None
    return str(parse(text))


def _parsed(text: str | None) -> Expr | None:
    # Each part is parsed on its own so an error names the part the user actually wrote.
    return None if text is None or not text.strip() else parse(text)


def combine(
    job: str | None, default: str | None, and_attr: str | None, or_attr: str | None
) -> str | None:
    """Apply the master's configured default/and/or attributes to a submitted job's one.

    ``default`` only fills a gap; ``or_attr`` widens where the job may run; ``and_attr`` is
    applied last so it restricts every job, including ones widened by ``or_attr``.
    """
    expr = _parsed(job) or _parsed(default)
    or_expr = _parsed(or_attr)
    if or_expr is not None:
        expr = or_expr if expr is None else Or((or_expr, expr))
    and_expr = _parsed(and_attr)
    if and_expr is not None:
        expr = and_expr if expr is None else And((and_expr, expr))
    return None if expr is None else str(expr)
