"""The admin's files, parsed strictly: ``nodes``, ``allowed_users`` and ``distribution_rules``,
and how ``rules.shares`` turns the rules into each user's (minimum, extra) cores.

Pure: no daemons, only files in a temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qpy_multiuser import nodes, probe, rules
from qpy_multiuser.nodes import FileError
from qpy_multiuser.rules import Extra, ShareError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_error_at(exc: pytest.ExceptionInfo, path: Path | str, line: int, *words: str) -> None:
    """The error text starts with ``file:line:`` and names the problem."""
    text = str(exc.value)
    assert text.startswith(f"{path}:{line}: "), text
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"


# -- nodes ---------------------------------------------------------------------------------


def test_nodes_key_value_form(tmp_path):
    path = write(tmp_path, "nodes",
                 "node1 address=host1.example cores=4 memory=16 attributes=big,fast "
                 "attributes=gpu pref_multicore=true\n"
                 "node2 address=10.0.0.2 cores=8 mem=32.5 attribute=slow pref_multicore=false\n")
    found = nodes.load(path)
    assert list(found) == ["node1", "node2"]
    one, two = found["node1"], found["node2"]
    assert (one.name, one.address, one.cores, one.mem) == ("node1", "host1.example", 4, 16.0)
    assert one.attrs == frozenset({"big", "fast", "gpu"})
    assert one.pref_multicore is True
    assert (two.address, two.cores, two.mem) == ("10.0.0.2", 8, 32.5)
    assert two.attrs == frozenset({"slow"})
    assert two.pref_multicore is False
    assert isinstance(one.cores, int)
    for node in (one, two):
        assert node.up and node.used_cores == 0 and node.used_mem == 0 and not node.jobs


def test_nodes_address_defaults_to_name(tmp_path):
    found = nodes.load(write(tmp_path, "nodes", "compute-7 cores=2 memory=4\n"))
    assert found["compute-7"].address == "compute-7"


def test_nodes_short_form(tmp_path):
    found = nodes.load(write(tmp_path, "nodes", "node1 4\nnode2 12 M\n"))
    assert (found["node1"].cores, found["node1"].pref_multicore) == (4, False)
    assert (found["node2"].cores, found["node2"].pref_multicore) == (12, True)
    assert found["node1"].address == "node1"
    assert found["node1"].attrs == frozenset()


def test_nodes_comments_and_blank_lines(tmp_path):
    path = write(tmp_path, "nodes",
                 "# the cluster\n\n   \nnode1 4   # four cores\n\t\n# node9 99\nnode2 cores=2\n")
    found = nodes.load(path)
    assert list(found) == ["node1", "node2"]
    assert found["node1"].cores == 4


def test_nodes_local_node_is_detected(tmp_path):
    found = nodes.load(write(tmp_path, "nodes", "localhost\n"))
    local = found["localhost"]
    assert local.address == "localhost"
    assert local.cores == len(os.sched_getaffinity(0)) >= 1
    assert local.mem == probe.memory()[0] > 0


def test_nodes_local_node_given_values_win(tmp_path):
    found = nodes.load(write(tmp_path, "nodes", "here address=127.0.0.1 cores=3 memory=2\n"))
    assert (found["here"].cores, found["here"].mem) == (3, 2.0)


def test_nodes_pref_multicore_spellings(tmp_path):
    found = nodes.load(write(tmp_path, "nodes",
                             "a 1 \nb cores=1 pref_multicore=True\nc cores=1 pref_multicore=no\n"))
    assert [n.pref_multicore for n in found.values()] == [False, True, False]


def test_nodes_enforcement_settings(tmp_path):
    found = nodes.load(write(tmp_path, "nodes", "a cores=1 cgroup=/sys/fs/cgroup/memory/qpy/%u "
                             "rlimit_as=yes cpu_lock=/var/lib/qpy/cpus\nb cores=1 cgroup=systemd\n"
                             "c cores=1 cgroup=off rlimit_as=false\nd 1\n"))
    assert [(n.cgroup, n.rlimit_as, n.cpu_lock) for n in found.values()] == [
        ("/sys/fs/cgroup/memory/qpy/%u", True, "/var/lib/qpy/cpus"), ("systemd", False, None),
        ("off", False, None), (None, False, None)]
    assert found["a"].public()["cgroup"] == "/sys/fs/cgroup/memory/qpy/%u"


@pytest.mark.parametrize(("line", "words"), [
    ("node1 cores=4 colour=red", ["unknown key", "colour"]),
    ("node1 cores=x", ["cores", "'x'"]),
    ("node1 cores=0", ["cores", "positive"]),
    ("node1 cores=-1", ["cores", "positive"]),
    ("node1 cores=2.5", ["cores", "'2.5'"]),
    ("node1 cores=4 memory=lots", ["memory", "'lots'"]),
    ("node1 cores=4 memory=0", ["memory", "positive"]),
    ("node1 cores=4 memory=-3", ["memory", "positive"]),
    ("node1 cores=4 memory=nan", ["memory"]),
    ("node1 cores=4 memory=inf", ["memory"]),
    ("node1 cores=4 pref_multicore=maybe", ["pref_multicore", "maybe"]),
    ("node1 cores=4 cgroup=qpy/%u", ["cgroup", "absolute path or systemd or off", "qpy/%u"]),
    ("node1 cores=4 cgroup=on", ["cgroup", "'on'"]),
    ("node1 cores=4 rlimit_as=sometimes", ["rlimit_as", "true or false", "sometimes"]),
    ("node1 cores=4 cpu_lock=cpus.lock", ["cpu_lock", "absolute path", "cpus.lock"]),
    ("node1 4 X", ["short form"]),
    ("node1 4 M extra", ["short form"]),
    ("node1 x", ["cores", "'x'"]),
    ("node1 0", ["cores"]),
    ("node1 cores=4 attributes=big,fa$t", ["attribute", "fa$t"]),
    ("node1 cores=4 attributes=and", ["attribute", "and"]),
    ("node1 cores=4 attributes=a,,b", ["attribute"]),
    ("node1 cores=4 cores", ["key=value"]),
    ("node1 cores=", ["key=value"]),
    ("bad/name 4", ["node name"]),
    ("or 4", ["node name"]),
])
def test_nodes_errors_name_file_and_line(tmp_path, line, words):
    path = write(tmp_path, "nodes", f"# header\nokay 2\n\n{line}\nlater 2\n")
    with pytest.raises(FileError) as exc:
        nodes.load(path)
    assert_error_at(exc, path, 4, *words)


def test_remote_nodes_without_cores_or_memory_are_detected_later(tmp_path):
    found = nodes.load(write(tmp_path, "nodes", "remote9\nremote8 memory=8 cores=2\n"
                             "remote7 address=10.0.0.7 cores=3\n"))
    assert (found["remote9"].cores, found["remote9"].mem) == (0, 0.0)
    assert found["remote9"].detect == {"cores", "mem"}
    assert found["remote8"].detect == frozenset()
    assert found["remote7"].detect == {"mem"}


def test_nodes_duplicate(tmp_path):
    path = write(tmp_path, "nodes", "node1 4\nnode2 4\nnode1 cores=8\n")
    with pytest.raises(FileError) as exc:
        nodes.load(path)
    assert_error_at(exc, path, 3, "node1", "twice")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   # another\n"])
def test_nodes_empty_file(tmp_path, text):
    path = write(tmp_path, "nodes", text)
    with pytest.raises(FileError) as exc:
        nodes.load(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert "no nodes" in str(exc.value)


def test_nodes_missing_file(tmp_path):
    with pytest.raises(FileError) as exc:
        nodes.load(tmp_path / "absent")
    assert "cannot read" in str(exc.value)


# -- allowed_users -------------------------------------------------------------------------


def test_allowed_users(tmp_path):
    path = write(tmp_path, "allowed_users",
                 "# who may use the cluster\nalice\n\n  bob   # comment\nmachine$\n"
                 "alice\nc_d.e-f\n")
    assert nodes.load_users(path) == ["alice", "bob", "machine$", "c_d.e-f"]


def test_allowed_users_may_be_empty(tmp_path):
    assert nodes.load_users(write(tmp_path, "allowed_users", "# nobody yet\n")) == []


@pytest.mark.parametrize("line", ["alice bob", "bad/name", "9lives", "@admin", "a$b", "ali:ce"])
def test_allowed_users_errors(tmp_path, line):
    path = write(tmp_path, "allowed_users", f"alice\n# x\n{line}\n")
    with pytest.raises(FileError) as exc:
        nodes.load_users(path)
    assert_error_at(exc, path, 3, "invalid user name")


def test_allowed_users_missing_file(tmp_path):
    with pytest.raises(FileError, match="cannot read"):
        nodes.load_users(tmp_path / "absent")


# -- distribution_rules --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind", "minimum"), [
    ("even\n", "even", 0),
    ("even minimum 2\n", "even", 2),
    ("explicit\n", "explicit", 0),
    ("explicit minimum 2\n", "explicit", 2),
    ("# first a comment\n\n  even   minimum   3  # trailing\n", "even", 3),
])
def test_rules_first_line(tmp_path, text, kind, minimum):
    parsed = rules.load(write(tmp_path, "distribution_rules", text))
    assert (parsed.kind, parsed.minimum, parsed.explicit) == (kind, minimum, {})


def test_rules_explicit_lines(tmp_path):
    text = ("explicit minimum 1\n"
            "# per user\n"
            "a=4\n"
            "b=50%\n"
            "c=4+50%\n"
            "d=0+10\n"
            "e 4\n"
            "\n"
            "f = 2   # spaces around =\n"
            "g=12.5%\n")
    parsed = rules.load(write(tmp_path, "distribution_rules", text))
    assert parsed.kind == "explicit" and parsed.minimum == 1
    assert parsed.explicit == {
        "a": Extra(None, cores=4),
        "b": Extra(None, percent=50.0),
        "c": Extra(4, percent=50.0),
        "d": Extra(0, cores=10),
        "e": Extra(None, cores=4),
        "f": Extra(None, cores=2),
        "g": Extra(None, percent=12.5),
    }
    assert list(parsed.explicit) == ["a", "b", "c", "d", "e", "f", "g"]


@pytest.mark.parametrize(("text", "line", "words"), [
    ("fair\n", 1, ["unknown distribution", "fair"]),
    ("# c\n\nround-robin minimum 2\n", 3, ["unknown distribution"]),
    ("even\nalice=4\n", 2, ["explicit"]),
    ("even minimum 1\n# c\nalice 4\n", 3, ["explicit"]),
    ("explicit\nalice=150%\n", 2, ["150%"]),
    ("explicit\nalice=-5%\n", 2, ["-5%"]),
    ("explicit\nalice=x%\n", 2, ["x%"]),
    ("explicit\nalice=nan%\n", 2, ["nan%"]),
    ("explicit\nalice=4\nbob=2\nalice=1\n", 4, ["alice", "twice"]),
    ("explicit\nalice=a\n", 2, ["'a'"]),
    ("explicit\nalice=-2\n", 2, ["'-2'"]),
    ("explicit\nalice=2.5\n", 2, ["'2.5'"]),
    ("explicit\nalice=x+50%\n", 2, ["'x'"]),
    ("explicit\nalice=\n", 2, []),
    ("explicit\nalice 4 5\n", 2, ["user=N"]),
    ("explicit\nal/ice=4\n", 2, ["invalid user name"]),
    ("even minimum x\n", 1, ["'x'"]),
    ("even minimum -1\n", 1, ["'-1'"]),
    ("even minimum\n", 1, ["even [minimum N]"]),
    ("even 2\n", 1, ["even [minimum N]"]),
    ("explicit maximum 2\n", 1, ["explicit [minimum N]"]),
])
def test_rules_errors_name_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path, "distribution_rules", text)
    with pytest.raises(FileError) as exc:
        rules.load(path)
    assert_error_at(exc, path, line, *words)


@pytest.mark.parametrize("text", ["", "# nothing\n\n"])
def test_rules_empty_file(tmp_path, text):
    path = write(tmp_path, "distribution_rules", text)
    with pytest.raises(FileError) as exc:
        rules.load(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert "even" in str(exc.value) and "explicit" in str(exc.value)


def test_rules_missing_file(tmp_path):
    with pytest.raises(FileError, match="cannot read"):
        rules.load(tmp_path / "absent")


# -- shares --------------------------------------------------------------------------------


def check_totals(result: dict[str, tuple[int, int]], total: int) -> None:
    assert sum(m + e for m, e in result.values()) == total
    assert all(m >= 0 and e >= 0 for m, e in result.values())


def test_shares_even():
    result = rules.shares(rules.parse("even\n"), ["u1", "u2", "u3"], 10)
    assert result == {"u1": (0, 4), "u2": (0, 3), "u3": (0, 3)}
    check_totals(result, 10)


def test_shares_even_remainder_goes_to_first_users():
    result = rules.shares(rules.parse("even\n"), ["u1", "u2", "u3", "u4"], 10)
    assert result == {"u1": (0, 3), "u2": (0, 3), "u3": (0, 2), "u4": (0, 2)}


def test_shares_even_minimum():
    result = rules.shares(rules.parse("even minimum 2\n"), ["u1", "u2", "u3"], 10)
    assert result == {"u1": (2, 2), "u2": (2, 1), "u3": (2, 1)}
    check_totals(result, 10)


def test_shares_even_minimum_exactly_fits():
    result = rules.shares(rules.parse("even minimum 5\n"), ["u1", "u2"], 10)
    assert result == {"u1": (5, 0), "u2": (5, 0)}


def test_shares_minimum_too_big():
    with pytest.raises(ShareError, match="12"):
        rules.shares(rules.parse("even minimum 4\n"), ["u1", "u2", "u3"], 10)


def test_shares_no_users():
    assert rules.shares(rules.parse("even minimum 4\n"), [], 10) == {}


def test_shares_explicit_leftover_spread_over_all_users():
    parsed = rules.parse("explicit\nu1=4\nu2=50%\n")
    result = rules.shares(parsed, ["u1", "u2", "u3"], 20)
    # u1: 4, u2: 50% of 20 = 10; the 6 left go 2 to each of the three users.
    assert result == {"u1": (0, 6), "u2": (0, 12), "u3": (0, 2)}
    check_totals(result, 20)


def test_shares_explicit_minimum_override():
    parsed = rules.parse("explicit minimum 2\nu2=4+50%\n")
    result = rules.shares(parsed, ["u1", "u2", "u3"], 20)
    # minimums 2+4+2 = 8; 12 left; u2 gets 50% of 12 = 6; 6 left spread 2/2/2.
    assert result == {"u1": (2, 2), "u2": (4, 8), "u3": (2, 2)}
    check_totals(result, 20)


def test_shares_explicit_zero_minimum_override():
    parsed = rules.parse("explicit minimum 3\nu1=0+10\n")
    result = rules.shares(parsed, ["u1", "u2"], 20)
    # minimums 0+3; 17 left; u1 gets 10; 7 left spread 4/3.
    assert result == {"u1": (0, 14), "u2": (3, 3)}
    check_totals(result, 20)


def test_shares_explicit_rule_for_absent_user_is_ignored():
    parsed = rules.parse("explicit\nghost=10\nu1=2\n")
    result = rules.shares(parsed, ["u1", "u2"], 10)
    assert result == {"u1": (0, 6), "u2": (0, 4)}
    check_totals(result, 10)


def test_shares_explicit_over_allocation():
    with pytest.raises(ShareError):
        rules.shares(rules.parse("explicit\nu1=15\nu2=15\n"), ["u1", "u2"], 20)


def test_shares_explicit_percentages_over_100():
    with pytest.raises(ShareError):
        rules.shares(rules.parse("explicit\nu1=60%\nu2=60%\n"), ["u1", "u2"], 20)


def test_shares_explicit_minimums_over_allocation():
    with pytest.raises(ShareError):
        rules.shares(rules.parse("explicit\nu1=15+0\nu2=15+0\n"), ["u1", "u2"], 20)


@pytest.mark.parametrize("text", [
    "even\n", "even minimum 1\n", "explicit\n", "explicit\nu1=3\nu3=25%\n",
    "explicit minimum 1\nu2=2+33%\nu4=1\n", "explicit\nu1=100%\n", "explicit\nu2=0+0\n",
])
@pytest.mark.parametrize("total", [7, 10, 13, 64])
def test_shares_always_hand_out_every_core(text, total):
    users = ["u1", "u2", "u3", "u4"]
    result = rules.shares(rules.parse(text), users, total)
    assert list(result) == users
    check_totals(result, total)



# The worked examples of the reference's §3.1, with the documented (fixed) semantics: what
# explicit lines do not hand out goes to ALL users round-robin, never only to listed ones.
WORKED = [
    ("explicit\nuser1=4\nuser2=50%\n", 20,
     {"user1": (0, 6), "user2": (0, 12), "user3": (0, 2)}),
    ("explicit minimum 2\nuser1=30%\nuser2=4+50%\n", 20,
     {"user1": (2, 4), "user2": (4, 7), "user3": (2, 1)}),
    ("explicit minimum 2\nuser1=0+10\nuser2=4+10\n", 30,
     {"user1": (0, 12), "user2": (4, 11), "user3": (2, 1)}),
    ("explicit\nuser1=2+0\nuser2=3+0\n", 10,
     {"user1": (2, 2), "user2": (3, 2), "user3": (0, 1)}),
    ("even minimum 2\n", 10, {"user1": (2, 2), "user2": (2, 1), "user3": (2, 1)}),
    ("even\n", 10, {"user1": (0, 4), "user2": (0, 3), "user3": (0, 3)}),
]


@pytest.mark.parametrize(("text", "total", "expected"), WORKED)
def test_reference_worked_examples(text: str, total: int, expected: dict) -> None:
    got = rules.shares(rules.parse(text), ["user1", "user2", "user3"], total)
    assert got == expected
    assert sum(m + e for m, e in got.values()) == total
