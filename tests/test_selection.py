import os
from pathlib import Path

import pytest

from qpy.selection import STATUSES, SelectionError, is_empty, matches, parse, validate

FINISHED = ("done", "killed", "undone")
EMPTY = {"ids": [], "ranges": [], "statuses": [], "dirs": [], "all": False}


def sel(args: list[str], cwd: str = "/", **kwargs: object) -> dict:
    options = {"statuses": STATUSES, "allow_all": True, "allow_dirs": True} | kwargs
    return parse(args, options["statuses"], options["allow_all"], options["allow_dirs"], cwd)


def test_single_id() -> None:
    assert sel(["137"]) == EMPTY | {"ids": [137]}


def test_range_is_inclusive_and_not_expanded() -> None:
    result = sel(["100-120", "1-1000000"])
    assert result["ranges"] == [[1, 1000000], [100, 120]]
    assert result["ids"] == []


def test_single_id_range_becomes_an_id() -> None:
    assert sel(["5-5"]) == EMPTY | {"ids": [5]}


def test_comma_list_mixes_ids_and_ranges() -> None:
    assert sel(["130-135,137", "9,3,9"]) == EMPTY | {"ids": [3, 9, 137], "ranges": [[130, 135]]}


def test_duplicates_are_removed() -> None:
    result = sel(["4", "4", "1-3", "1-3", "done", "done"])
    assert result["ids"] == [4]
    assert result["ranges"] == [[1, 3]]
    assert result["statuses"] == ["done"]


def test_leading_zeros_are_accepted() -> None:
    assert sel(["007"])["ids"] == [7]


def test_statuses_keep_canonical_order() -> None:
    assert sel(["undone", "queue", "running"])["statuses"] == ["queue", "running", "undone"]


def test_all() -> None:
    assert sel(["all"]) == EMPTY | {"all": True}


def test_directories_become_real_absolute_paths(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    cwd = str(tmp_path / "a")
    real = os.path.realpath(tmp_path)
    result = sel([".", "..", "b", "../a/b/", str(tmp_path)], cwd=cwd)
    assert result["dirs"] == sorted({real, f"{real}/a", f"{real}/a/b"})


def test_symlinked_directory_is_resolved(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert sel(["link"], cwd=str(tmp_path))["dirs"] == [os.path.realpath(tmp_path / "real")]


def test_numeric_directory_name_is_still_an_id(tmp_path: Path) -> None:
    (tmp_path / "12").mkdir()
    assert sel(["12"], cwd=str(tmp_path)) == EMPTY | {"ids": [12]}


def test_everything_together(tmp_path: Path) -> None:
    result = sel(["1", "2-4", "running", ".", "all"], cwd=str(tmp_path))
    assert result == {
        "ids": [1],
        "ranges": [[2, 4]],
        "statuses": ["running"],
        "dirs": [os.path.realpath(tmp_path)],
        "all": True,
    }


def test_empty_args() -> None:
    assert sel([]) == EMPTY
    assert is_empty(sel([]))


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("abc", "invalid job selection 'abc': not an ID, range, status, 'all' or directory"),
        ("9-3", "invalid range '9-3': start is after end"),
        ("1,9-3", "invalid range '9-3' in '1,9-3': start is after end"),
        ("0", "invalid job ID '0': IDs start at 1"),
        ("0-4", "invalid job ID '0' in '0-4': IDs start at 1"),
        ("-3", "invalid job selection '-3': not an ID or range"),
        ("1.5", "invalid job selection '1.5': not an ID or range"),
        ("2,1.5", "invalid job selection '1.5' in '2,1.5': not an ID or range"),
        ("1-", "invalid job selection '1-': not an ID or range"),
        ("1-2-3", "invalid job selection '1-2-3': not an ID or range"),
        ("+4", "invalid job selection '+4': not an ID or range"),
        ("1,,2", "invalid job selection '1,,2': empty item in list"),
        ("3,", "invalid job selection '3,': empty item in list"),
        ("-", "invalid job selection '-': not an ID, range, status, 'all' or directory"),
        (",", "invalid job selection ',': not an ID, range, status, 'all' or directory"),
        ("", "invalid job selection '': not an ID, range, status, 'all' or directory"),
        ("Done", "invalid job selection 'Done': not an ID, range, status, 'all' or directory"),
        ("9223372036854775808", "invalid job ID '9223372036854775808': IDs go up to "
                                "9223372036854775807"),
        ("1-99999999999999999999", "invalid job ID '99999999999999999999' in "
                                   "'1-99999999999999999999': IDs go up to 9223372036854775807"),
    ],
)
def test_bad_arguments(arg: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(SelectionError) as info:
        sel([arg], cwd=str(tmp_path))
    assert str(info.value) == message


def test_status_not_allowed_for_command() -> None:
    with pytest.raises(SelectionError, match="'running' cannot be used here"):
        sel(["running"], statuses=FINISHED)


def test_all_not_allowed() -> None:
    with pytest.raises(SelectionError, match="'all' cannot be used here"):
        sel(["all"], allow_all=False)


def test_directory_not_allowed(tmp_path: Path) -> None:
    with pytest.raises(SelectionError, match=r"'\.': not an ID, range or status$"):
        sel(["."], cwd=str(tmp_path), allow_all=False, allow_dirs=False, statuses=STATUSES)
    with pytest.raises(SelectionError, match=r"'\.': not an ID, range, status or 'all'$"):
        sel(["."], cwd=str(tmp_path), allow_dirs=False)


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SelectionError, match="'nope'"):
        sel(["nope"], cwd=str(tmp_path))


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(SelectionError, match="'f'"):
        sel(["f"], cwd=str(tmp_path))


def test_error_stops_at_first_bad_word() -> None:
    with pytest.raises(SelectionError, match="'x'"):
        sel(["1", "x", "y"])


@pytest.mark.parametrize("key", ["ids", "ranges", "statuses", "dirs"])
def test_is_empty_false_for_each_list(key: str) -> None:
    assert not is_empty(EMPTY | {key: [1]})


def test_is_empty_false_for_all() -> None:
    assert not is_empty(EMPTY | {"all": True})
    assert is_empty({})


def test_matches_each_criterion() -> None:
    selection = sel(["5", "10-12", "killed"]) | {"dirs": ["/w"]}
    assert matches(selection, 5, "queue", "/x")
    assert matches(selection, 10, "queue", "/x")
    assert matches(selection, 12, "queue", "/x")
    assert matches(selection, 99, "killed", "/x")
    assert matches(selection, 99, "queue", "/w")
    assert not matches(selection, 9, "queue", "/x")
    assert not matches(selection, 13, "done", "/x")


def test_matches_is_or_not_and() -> None:
    selection = sel(["5", "done"])
    assert matches(selection, 5, "queue", "/")
    assert matches(selection, 6, "done", "/")
    assert not matches(selection, 6, "queue", "/")


def test_all_matches_everything() -> None:
    selection = sel(["all"])
    assert matches(selection, 1, "queue", "/a")
    assert matches(selection, 10**9, "undone", "/b")


def test_empty_selection_matches_nothing() -> None:
    assert not matches(sel([]), 1, "queue", "/")


def test_directory_match_is_exact() -> None:
    selection = EMPTY | {"dirs": ["/home/u/run"]}
    assert matches(selection, 1, "done", "/home/u/run")
    assert matches(selection, 1, "done", "/home/u/run/")
    assert not matches(selection, 1, "done", "/home/u/run/sub")
    assert not matches(selection, 1, "done", "/home/u")
    assert not matches(selection, 1, "done", "/home/u/runner")
    assert not matches(selection, 1, "done", "")


def test_validate_round_trips_parse_output(tmp_path: Path) -> None:
    selection = sel(["3", "1-2", "running", "."], cwd=str(tmp_path))
    assert validate(selection) == selection


def test_validate_fills_defaults_and_cleans() -> None:
    assert validate({}) == EMPTY
    cleaned = validate({"ids": [3, 1, 3], "ranges": [[4, 6], [1, 2], [4, 6]]})
    assert cleaned["ids"] == [1, 3]
    assert cleaned["ranges"] == [[1, 2], [4, 6]]


def test_validate_accepts_single_id_range() -> None:
    assert validate({"ranges": [[5, 5]]})["ranges"] == [[5, 5]]


@pytest.mark.parametrize(
    ("bad", "token"),
    [
        ([], "list"),
        ("all", "str"),
        (None, "NoneType"),
        ({"ids": [1], "extra": 1}, "'extra'"),
        ({"ids": 5}, "5"),
        ({"ids": [True]}, "True"),
        ({"ids": [0]}, "0"),
        ({"ids": [-3]}, "-3"),
        ({"ids": [1.0]}, "1.0"),
        ({"ids": ["1"]}, "'1'"),
        ({"ranges": [[1]]}, "[1]"),
        ({"ranges": [[1, 2, 3]]}, "[1, 2, 3]"),
        ({"ranges": [[3, 2]]}, "[3, 2]"),
        ({"ranges": [[0, 2]]}, "[0, 2]"),
        ({"ranges": [[1, 2 ** 63]]}, str(2 ** 63)),
        ({"ids": [2 ** 63]}, str(2 ** 63)),
        ({"ranges": [[1, False]]}, "[1, False]"),
        ({"ranges": [(1, 2)]}, "(1, 2)"),
        ({"ranges": [[1, "2"]]}, "[1, '2']"),
        ({"statuses": ["bogus"]}, "'bogus'"),
        ({"statuses": "done"}, "'done'"),
        ({"statuses": [1]}, "1"),
        ({"dirs": ["relative/path"]}, "'relative/path'"),
        ({"dirs": ["."]}, "'.'"),
        ({"dirs": [None]}, "None"),
        ({"all": 1}, "1"),
        ({"all": "yes"}, "'yes'"),
    ],
)
def test_validate_rejects(bad: object, token: str) -> None:
    with pytest.raises(SelectionError) as info:
        validate(bad)
    message = str(info.value)
    assert token in message
    assert "\n" not in message


def test_selection_error_is_value_error() -> None:
    assert issubclass(SelectionError, ValueError)
