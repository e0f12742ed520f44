import re

import pytest

from qpy import attrs
from qpy.attrs import AttrError, combine, compile_expr, normalize, parse


def match(text: str, node_attrs: set[str], node: str = "nodeX") -> bool:
    return parse(text).matches(frozenset(node_attrs), node)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("big", "big"),
        ("a or b and c", "(a or (b and c))"),
        ("a and b or c", "((a and b) or c)"),
        ("(a or b) and c", "((a or b) and c)"),
        ("not a and b", "(not a and b)"),
        ("not (a and b)", "not (a and b)"),
        ("big and (fast or not gpu)", "(big and (fast or not gpu))"),
        ("(big)and(fast)", "(big and fast)"),
        ("not(big)", "not big"),
        ("((a)or(b))and(not(c))", "((a or b) and not c)"),
        ("a and b and c", "(a and b and c)"),
        ("a and (b and c)", "(a and (b and c))"),
        ("not not a", "not not a"),
        ("  x86_64:v2 and mem+ and node-1.a  ", "(x86_64:v2 and mem+ and node-1.a)"),
        ("AND or Not", "(AND or Not)"),
    ],
)
def test_canonical_form(text: str, canonical: str) -> None:
    assert str(parse(text)) == canonical


@pytest.mark.parametrize(
    "text", ["a or b and c", "not (a or b) and c", "big and (fast or not gpu)", "not not x"]
)
def test_canonical_form_reparses_to_same_tree(text: str) -> None:
    expr = parse(text)
    assert parse(str(expr)) == expr
    assert str(parse(str(expr))) == str(expr)


def test_and_binds_tighter_than_or() -> None:
    # "a or (b and c)" is true with only a; "(a or b) and c" would be false.
    assert match("a or b and c", {"a"})
    assert not match("a and b or c", {"a"})
    assert match("a and b or c", {"c"})


def test_not_binds_tighter_than_and() -> None:
    assert match("not a and b", {"b"})
    assert not match("not a and b", {"a", "b"})
    assert match("not (a and b)", {"a"})


@pytest.mark.parametrize(
    ("node_attrs", "expected"),
    [
        ({"big", "fast"}, True),
        ({"big", "fast", "gpu"}, True),
        ({"big"}, True),
        ({"big", "gpu"}, False),
        ({"fast"}, False),
        (set(), False),
    ],
)
def test_nested_expression(node_attrs: set[str], expected: bool) -> None:
    assert match("big and (fast or not gpu)", node_attrs) is expected


def test_node_name_counts_as_attribute() -> None:
    assert match("node3", set(), node="node3")
    assert not match("node3", set(), node="node4")
    assert match("node3 or big", {"big"}, node="node4")
    assert not match("not node3", {"big"}, node="node3")


def test_attributes_are_case_sensitive() -> None:
    assert not match("Big", {"big"})
    assert match("AND", {"AND"})


def test_matches_accepts_plain_set() -> None:
    assert parse("a and b").matches({"a", "b"}, "n")


def test_expr_is_immutable_and_hashable() -> None:
    expr = parse("a and b")
    with pytest.raises(AttributeError):
        expr.operands = ()  # type: ignore[misc]
    assert hash(expr) == hash(parse("(a)and(b)"))
    assert parse("a and b") != parse("a or b")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("big or", "expected an attribute after 'or'"),
        ("big and", "expected an attribute after 'and'"),
        ("not", "expected an attribute after 'not'"),
        ("big and or fast", "expected an attribute after 'and', got 'or'"),
        ("and big", "expected an attribute before 'and'"),
        ("(big", "unbalanced parenthesis"),
        ("((big) and fast", "unbalanced parenthesis"),
        ("big)", "unexpected ')'"),
        (")", "unexpected ')'"),
        ("()", "expected an attribute after '(', got ')'"),
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("big fast", "unexpected 'fast'"),
        ("(big fast)", "unexpected 'fast'"),
        ("big & fast", "unexpected character '&'"),
        ("big || fast", "unexpected character '|'"),
    ],
)
def test_errors_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(AttrError) as info:
        parse(text)
    assert str(info.value) == f"invalid attribute expression {text!r}: {problem}"


def test_error_message_is_one_line() -> None:
    with pytest.raises(AttrError) as info:
        parse("big\nor")
    assert "\n" not in str(info.value)


def test_attr_error_is_value_error() -> None:
    assert issubclass(AttrError, ValueError)


def test_deep_nesting_is_an_attr_error_not_a_crash() -> None:
    depth = attrs.MAX_DEPTH
    assert str(parse("(" * depth + "a" + ")" * depth)) == "a"
    with pytest.raises(AttrError, match="nested more than"):
        parse("(" * (depth + 1) + "a" + ")" * (depth + 1))
    with pytest.raises(AttrError, match="nested more than"):
        parse("not " * (depth + 1) + "a")


def test_long_flat_chain_does_not_recurse() -> None:
    expr = parse(" and ".join(f"a{i}" for i in range(5000)))
    names = {f"a{i}" for i in range(5000)}
    assert expr.matches(names, "n")
    assert not expr.matches(names - {"a4999"}, "n")
    assert len(str(expr)) > 5000


def test_compile_expr_caches() -> None:
    compile_expr.cache_clear()
    first = compile_expr("big and (fast or not gpu)")
    second = compile_expr("big and (fast or not gpu)")
    assert first is second
    assert first == parse("big and (fast or not gpu)")
    assert compile_expr.cache_info().hits == 1


def test_compile_expr_does_not_cache_errors() -> None:
    with pytest.raises(AttrError):
        compile_expr("big or")
    with pytest.raises(AttrError):
        compile_expr("big or")


@pytest.mark.parametrize("text", [None, "", "  \t"])
def test_normalize_blank_is_none(text: str | None) -> None:
    assert normalize(text) is None


def test_normalize_canonicalises_and_validates() -> None:
    assert normalize(" (big)and(fast) ") == "(big and fast)"
    with pytest.raises(AttrError, match="unbalanced"):
        normalize("(big")


@pytest.mark.parametrize(
    ("job", "default", "and_attr", "or_attr", "expected"),
    [
        (None, None, None, None, None),
        ("j", None, None, None, "j"),
        (None, "d", None, None, "d"),
        ("j", "d", None, None, "j"),
        ("  ", "d", None, None, "d"),
        (None, None, None, "o", "o"),
        ("j", None, None, "o", "(o or j)"),
        (None, "d", None, "o", "(o or d)"),
        (None, None, "x", None, "x"),
        ("j", None, "x", None, "(x and j)"),
        (None, "d", "x", None, "(x and d)"),
        (None, None, "x", "o", "(x and o)"),
        ("j", None, "x", "o", "(x and (o or j))"),
        ("j or k", "d", "x and y", "o", "((x and y) and (o or (j or k)))"),
        ("j", "", "", "", "j"),
    ],
)
def test_combine(
    job: str | None,
    default: str | None,
    and_attr: str | None,
    or_attr: str | None,
    expected: str | None,
) -> None:
    assert combine(job, default, and_attr, or_attr) == expected


def test_combine_result_is_canonical() -> None:
    result = combine("(j)", None, "x", None)
    assert result == normalize(result)


def test_combine_rejects_a_bad_part_naming_it() -> None:
    with pytest.raises(AttrError, match="'o or'"):
        combine("j", None, None, "o or")
    with pytest.raises(AttrError, match=re.escape("'j)'")):
        combine("j)", None, "x", None)
