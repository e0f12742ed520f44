"""The master's in-memory queue (order, shapes, jump) and the multiuser's allocator (who gets
which cores on which node). Pure: objects built directly, no daemons.
"""

from __future__ import annotations

import pytest

from qpy.model import Job
from qpy.states import QUEUE
from qpy_master.queue import MAX_SHAPES, PER_SHAPE, JobQueue
from qpy_multiuser import reported
from qpy_multiuser.allocator import Allocator
from qpy_multiuser.nodes import Node
from qpy_multiuser.rules import Extra, Rules

# -- JobQueue ------------------------------------------------------------------------------


def job(job_id: int, cores: int = 1, mem: float = 5.0, attr: str | None = None) -> Job:
    return Job(id=job_id, status=QUEUE, command="true", cwd="/tmp", n_cores=cores, mem=mem,
               attr=attr)


def queue_of(*ids: int) -> JobQueue:
    q = JobQueue()
    for i in ids:
        q.push(job(i))
    return q


def test_push_len_contains_remove():
    q = JobQueue()
    assert len(q) == 0 and 1 not in q
    assert [q.push(job(i)) for i in (10, 11, 12)] == [1, 2, 3]
    assert len(q) == 3
    assert 11 in q and 13 not in q
    assert q.get(11).id == 11 and q.get(13) is None
    removed = q.remove(11)
    assert removed is not None and removed.id == 11
    assert len(q) == 2 and 11 not in q
    assert q.ids() == [10, 12]
    assert q.remove(11) is None
    assert q.remove(999) is None
    assert len(q) == 2
    assert q.push(job(13)) == 4  # positions keep growing after a removal
    assert q.ids() == [10, 12, 13]


def test_push_at_stored_position_restores_order():
    q = JobQueue()
    q.push(job(3), 3)
    q.push(job(1), 1)
    q.push(job(2), 2)
    assert q.ids() == [1, 2, 3]
    assert q.qpos == {1: 1, 2: 2, 3: 3}
    assert q.push(job(4)) == 4
    assert q.ids() == [1, 2, 3, 4]


def test_remove_last_job_of_a_shape_forgets_the_shape():
    q = JobQueue()
    q.push(job(1, cores=4))
    q.push(job(2))
    q.remove(1)
    assert q.want() == [{"cores": 1, "mem": 5.0, "attr": None, "jobs": [2]}]
    q.remove(2)
    assert q.want() == []


def test_want_groups_by_shape_in_order_of_first_position():
    q = JobQueue()
    q.push(job(1, cores=4))
    q.push(job(2))
    q.push(job(3, cores=4))
    q.push(job(4, attr="big"))
    q.push(job(5))
    q.push(job(6, mem=10.0))
    q.push(job(7, cores=4))
    assert q.want() == [
        {"cores": 4, "mem": 5.0, "attr": None, "jobs": [1, 3, 7]},
        {"cores": 1, "mem": 5.0, "attr": None, "jobs": [2, 5]},
        {"cores": 1, "mem": 5.0, "attr": "big", "jobs": [4]},
        {"cores": 1, "mem": 10.0, "attr": None, "jobs": [6]},
    ]
    q.remove(1)  # the 4-core shape's first job is now 3, behind job 2
    assert [g["jobs"] for g in q.want()] == [[2, 5], [3, 7], [4], [6]]


def test_want_caps_jobs_per_shape():
    q = JobQueue()
    for i in range(1, PER_SHAPE + 11):
        q.push(job(i))
    q.push(job(1000, cores=2))
    want = q.want()
    assert want[0]["jobs"] == list(range(1, PER_SHAPE + 1))
    assert want[1]["jobs"] == [1000]


def test_want_caps_number_of_shapes():
    q = JobQueue()
    for i in range(1, MAX_SHAPES + 6):
        q.push(job(i, cores=i))
    want = q.want()
    assert len(want) == MAX_SHAPES
    assert [g["cores"] for g in want] == list(range(1, MAX_SHAPES + 1))


def test_jump_after_a_job_moves_only_that_job():
    q = queue_of(1, 2, 3, 4, 5, 6)
    text, (new, old) = q.jump([5], "2")
    assert text == "Queue reordered."
    assert q.ids() == [1, 2, 5, 3, 4, 6]
    assert new == [(2.5, 5)] and old == [(5.0, 5)]  # one row to store, whatever the size
    assert q.qpos == {1: 1, 2: 2, 5: 2.5, 3: 3, 4: 4, 6: 6}


def test_jump_begin_and_end():
    q = queue_of(1, 2, 3, 4, 5, 6)
    assert q.jump([4, 6], "begin")[0] == "Queue reordered."
    assert q.ids() == [4, 6, 1, 2, 3, 5]
    assert q.jump([1, 4], "end")[0] == "Queue reordered."
    assert q.ids() == [6, 2, 3, 5, 4, 1]


def test_jump_keeps_relative_queue_order_of_moved_jobs():
    q = queue_of(1, 2, 3, 4, 5, 6)
    text, _ = q.jump([6, 2], "4")  # listed out of order: moved in queue order
    assert text == "Queue reordered."
    assert q.ids() == [1, 3, 4, 2, 6, 5]


def test_jump_ignores_ids_not_queued():
    q = queue_of(1, 2, 3)
    text, _ = q.jump([3, 99], "begin")
    assert text == "Queue reordered."
    assert q.ids() == [3, 1, 2]


def test_jump_then_push_goes_to_the_end_and_want_follows_order():
    q = JobQueue()
    for i in range(1, 5):
        q.push(job(i))
    q.push(job(5, cores=4))
    q.jump([5], "begin")
    assert q.want()[0]["jobs"] == [5]
    q.push(job(7))
    assert q.ids() == [5, 1, 2, 3, 4, 7]
    assert q.want()[1]["jobs"] == [1, 2, 3, 4, 7]
    assert q.qpos[7] > max(q.qpos[i] for i in (5, 1, 2, 3, 4))


@pytest.mark.parametrize(("ids", "target", "message"), [
    ([98, 99], "1", "List does not have jobs in queue: queue not reordered."),
    ([], "begin", "List does not have jobs in queue: queue not reordered."),
    ([1, 2, 3, 4], "begin", "Queue is completely contained in list: queue not reordered."),
    ([2, 3], "3", "Position is part of list: queue not reordered."),
    ([2], "99", "Position not found: queue not reordered."),
])
def test_jump_refusals_leave_queue_alone(ids, target, message):
    q = queue_of(1, 2, 3, 4)
    before = dict(q.qpos)
    assert q.jump(ids, target) == (message, ([], []))
    assert q.ids() == [1, 2, 3, 4]
    assert q.qpos == before


# -- Allocator -----------------------------------------------------------------------------


def node(name: str, cores: int, mem: float = 100.0, attrs: tuple[str, ...] = (),
         pref: bool = False) -> Node:
    return Node(name, f"{name}.addr", cores, mem, frozenset(attrs), pref)


def alloc_of(*nodes_: Node, rules: Rules | None = None) -> Allocator:
    return Allocator({n.name: n for n in nodes_}, rules or Rules("even"))


def want(*jobs: int, cores: int = 1, mem: float = 1.0, attr: str | None = None) -> dict:
    return {"cores": cores, "mem": mem, "attr": attr, "jobs": list(jobs)}


def granted(grants: list[dict]) -> dict[int, str]:
    return {g["job"]: g["node"] for g in grants}


def check_consistent(a: Allocator) -> None:
    """Node totals equal the sum of the users' allocations on them."""
    for n in a.nodes.values():
        entries = [(u, j) for u in a.users.values() for j, e in u.jobs.items() if e[0] == n.name]
        assert n.used_cores == sum(u.jobs[j][1] for u, j in entries)
        assert n.used_mem == pytest.approx(sum(u.jobs[j][2] for u, j in entries))
        assert n.jobs == {(u.name, j) for u, j in entries}
        assert 0 <= n.used_cores <= n.cores or not n.up
    for u in a.users.values():
        assert u.used == sum(e[1] for e in u.jobs.values())


def test_idle_minimums_are_lent_while_their_owners_have_nothing_queued():
    """The issue's case: 'explicit minimum 1' for the others on a 6-core node, nothing
    queued by them: a 6-core job may use their minimums and starts at once."""
    a = alloc_of(node("n1", 6), rules=Rules("explicit", minimum=1))
    alice, bob, carol = a.user("alice"), a.user("bob"), a.user("carol")
    assert [(u.minimum, u.extra) for u in (alice, bob, carol)] == [(1, 1), (1, 1), (1, 1)]
    grants, refused = a.request(alice, [want(1, cores=6)], 1)
    assert granted(grants) == {1: "n1"} and not refused
    check_consistent(a)


def test_lent_cores_come_back_to_their_owner_first_as_they_free():
    """'Given back': nothing running is stopped, but every core that frees goes to the
    owner of the minimum first, not to the borrower's next job."""
    a = alloc_of(node("n1", 8), rules=Rules("even", minimum=2))
    alice, bob = a.user("alice"), a.user("bob")
    grants, _ = a.request(bob, [want(*range(100, 110))], 10)
    assert bob.used == 8  # alice has nothing queued: bob borrows all, her minimum too
    grants, refused = a.request(alice, [want(1, 2)], 2)
    assert grants == [] and refused and alice.waiting
    a.remove(bob, 100)
    a.remove(bob, 101)
    grants, refused = a.request(bob, [want(*range(108, 110))], 2)  # bob asks again first
    assert grants == [] and refused
    grants, _ = a.request(alice, [want(1, 2)], 2)
    assert sorted(granted(grants)) == [1, 2]
    check_consistent(a)


def test_worked_example_even_minimum_2():
    """The admin manual's worked example, step by step (10 cores; ana, ben, cleo)."""
    a = alloc_of(node("n1", 10), rules=Rules("even", minimum=2))
    ana, ben, cleo = a.user("ana"), a.user("ben"), a.user("cleo")
    assert [(u.minimum, u.extra) for u in (ana, ben, cleo)] == [(2, 2), (2, 1), (2, 1)]
    grants, refused = a.request(ana, [want(*range(1, 11))], 10)
    assert len(grants) == 10 and not refused  # ben and cleo idle: ana borrows all 10
    _, refused = a.request(ben, [want(21, 22, 23)], 3)
    assert refused and ben.used == 0  # nothing is taken back from running jobs
    for job in (1, 2, 3):  # each core ana frees goes to ben, below his share of 3
        a.remove(ana, job)
        grants, _ = a.request(ana, [want(*range(11, 14))], 3)
        assert grants == []
        grants, _ = a.request(ben, [want(21, 22, 23)], ben.queue)
        assert len(grants) == 1
    assert (ana.used, ben.used, ben.queue) == (7, 3, 0)
    a.remove(ana, 4)  # ben has nothing queued now: ana may borrow again
    grants, _ = a.request(ana, [want(11)], 1)
    assert granted(grants) == {11: "n1"}
    check_consistent(a)


def test_above_share_refused_while_another_user_waits_below_share():
    a = alloc_of(node("n1", 10))
    alice, bob = a.user("alice"), a.user("bob")
    assert alice.share == bob.share == 5
    a.set_queue(bob, 3)  # bob has jobs queued and uses nothing
    grants, refused = a.request(alice, [want(*range(1, 9))], 8)
    assert len(grants) == 5 and refused
    assert alice.used == 5 and alice.waiting


def test_above_share_borrows_idle_cores():
    a = alloc_of(node("n1", 10))
    alice, bob = a.user("alice"), a.user("bob")
    assert bob.queue == 0
    grants, refused = a.request(alice, [want(*range(1, 9))], 8)
    assert len(grants) == 8 and not refused
    assert alice.used == 8 and not alice.waiting
    # bob now asks: only the 2 free cores can be his (nothing is pre-empted)
    grants, refused = a.request(bob, [want(21, 22, 23)], 3)
    assert len(grants) == 2 and refused
    check_consistent(a)


def test_above_share_borrows_when_others_are_at_their_share():
    a = alloc_of(node("n1", 10), node("n2", 10))
    alice, bob = a.user("alice"), a.user("bob")
    grants, _ = a.request(bob, [want(*range(100, 110))], 20)  # bob: his share of 10, waiting
    assert len(grants) == 10 and bob.queue > 0 and bob.used == bob.share
    grants, refused = a.request(alice, [want(*range(1, 11))], 10)
    assert len(grants) == 10 and not refused
    check_consistent(a)


def test_memory_per_node_respected():
    a = alloc_of(node("small", 8, mem=8.0), node("big", 8, mem=16.0))
    u = a.user("u")
    grants, refused = a.request(u, [want(1, 2, 3, mem=10.0)], 3)
    assert granted(grants) == {1: "big"}  # never on the 8 GB node, and 16 GB holds only one
    assert refused
    assert a.nodes["small"].used_mem == 0 and a.nodes["big"].used_mem == 10.0
    grants, _ = a.request(u, [want(4, mem=6.0), want(5, 6, mem=3.0)], 3)
    # job 4 goes to the emptiest node; then only "big" has 3 GB left for jobs 5 and 6
    assert granted(grants) == {4: "small", 5: "big", 6: "big"}
    check_consistent(a)
    for n in a.nodes.values():
        assert n.used_mem <= n.mem


def test_memory_accumulates_on_a_node():
    a = alloc_of(node("n1", 8, mem=8.0))
    u = a.user("u")
    grants, refused = a.request(u, [want(1, 2, 3, mem=3.0)], 3)
    assert sorted(granted(grants)) == [1, 2] and refused
    assert a.nodes["n1"].used_mem == 6.0


@pytest.mark.parametrize(("attr", "expected"), [
    ("big and fast", "nbf"),
    ("big and not fast", "nb"),
    ("fast and not big", "nf"),
    ("nf", "nf"),  # node names count as attributes
    ("plain or nb", None),
])
def test_attribute_expressions_select_nodes(attr, expected):
    a = alloc_of(node("nb", 4, attrs=("big",)), node("nf", 4, attrs=("fast",)),
                 node("nbf", 4, attrs=("big", "fast")), node("plain", 4))
    u = a.user("u")
    grants, refused = a.request(u, [want(1, attr=attr)], 1)
    assert not refused
    if expected is None:
        assert granted(grants)[1] in ("plain", "nb")
    else:
        assert granted(grants) == {1: expected}


def test_attribute_with_no_matching_node_is_refused():
    a = alloc_of(node("n1", 4, attrs=("big",)))
    u = a.user("u")
    grants, refused = a.request(u, [want(1, attr="gpu"), want(2, attr="big")], 2)
    assert granted(grants) == {2: "n1"} and refused


def test_attribute_limits_jobs_to_matching_nodes_when_full():
    a = alloc_of(node("nb", 2, attrs=("big",)), node("other", 8))
    u = a.user("u")
    grants, refused = a.request(u, [want(1, 2, 3, attr="big")], 3)
    assert granted(grants) == {1: "nb", 2: "nb"} and refused


def test_single_core_jobs_avoid_pref_multicore_nodes():
    a = alloc_of(node("multi", 8, pref=True), node("ord", 2))
    u = a.user("u")
    grants, refused = a.request(u, [want(1, 2, 3)], 3)
    assert granted(grants) == {1: "ord", 2: "ord", 3: "multi"}  # multi only when ord is full
    assert not refused


def test_single_core_jobs_go_to_emptiest_ordinary_node():
    a = alloc_of(node("a", 2), node("b", 6), node("m", 16, pref=True))
    u = a.user("u")
    grants, _ = a.request(u, [want(1, 2, 3, 4)], 4)
    assert granted(grants) == {1: "b", 2: "b", 3: "b", 4: "b"}  # b always has the most free


def test_multicore_jobs_prefer_pref_multicore_nodes():
    a = alloc_of(node("ord", 8), node("multi", 8, pref=True))
    u = a.user("u")
    grants, refused = a.request(u, [want(1, 2, 3, cores=4)], 3)
    assert granted(grants) == {1: "multi", 2: "multi", 3: "ord"}
    assert not refused


def test_big_job_does_not_block_smaller_ones():
    a = alloc_of(node("n1", 4))
    u = a.user("u")
    grants, refused = a.request(u, [want(1, cores=8), want(2, 3, cores=1)], 3)
    assert granted(grants) == {2: "n1", 3: "n1"}
    assert refused


def test_big_job_that_does_not_fit_now_does_not_block_smaller_ones():
    a = alloc_of(node("n1", 4), node("n2", 4))
    u = a.user("u")
    a.request(u, [want(1, 2, 3, 4, 5)], 5)  # 5 single-core jobs: no node has 4 free
    grants, refused = a.request(u, [want(10, cores=4), want(11, 12, cores=1)], 3)
    assert sorted(granted(grants)) == [11, 12] and refused
    check_consistent(a)


def test_request_skips_jobs_already_allocated():
    a = alloc_of(node("n1", 4))
    u = a.user("u")
    a.request(u, [want(1)], 1)
    grants, _ = a.request(u, [want(1, 2)], 2)
    assert granted(grants) == {2: "n1"}
    assert u.used == 2


def test_release_frees_cores_and_memory():
    a = alloc_of(node("n1", 4, mem=8.0))
    u = a.user("u")
    grants, _ = a.request(u, [want(1, cores=2, mem=6.0), want(2, cores=2, mem=2.0)], 2)
    assert len(grants) == 2
    n1 = a.nodes["n1"]
    assert (n1.used_cores, n1.used_mem, u.used) == (4, 8.0, 4)
    assert a.remove(u, 1) is True
    assert (n1.used_cores, n1.used_mem, u.used) == (2, 2.0, 2)
    assert n1.jobs == {("u", 2)}
    assert a.remove(u, 1) is False  # twice is a no-op
    assert (n1.used_cores, n1.used_mem, u.used) == (2, 2.0, 2)
    grants, _ = a.request(u, [want(3, cores=2, mem=6.0)], 1)
    assert granted(grants) == {3: "n1"}  # the freed cores and memory are usable again
    check_consistent(a)


def test_remove_unknown_job_changes_nothing():
    a = alloc_of(node("n1", 4))
    u = a.user("u")
    a.request(u, [want(1)], 1)
    assert a.remove(u, 42) is False
    assert u.used == 1 and a.nodes["n1"].used_cores == 1


def test_reconcile_replaces_allocations_exactly():
    a = alloc_of(node("n1", 8, mem=32.0), node("n2", 8, mem=32.0))
    u, other = a.user("u"), a.user("other")
    a.request(u, [want(1, 2, cores=2, mem=4.0)], 2)
    a.request(other, [want(50, mem=1.0)], 1)
    left_out = reported.reconcile(a, u, [{"job": 7, "node": "n2", "cores": 3, "mem": 5.0},
                               {"job": 8, "node": "n1", "cores": 1, "mem": 2.5}], True)
    assert left_out == []
    assert u.jobs == {7: ("n2", 3, 5.0), 8: ("n1", 1, 2.5)}
    assert u.used == 4
    assert other.jobs == {50: (other.jobs[50][0], 1, 1.0)}  # untouched
    used = {n.name: (n.used_cores, n.used_mem) for n in a.nodes.values()}
    other_node = other.jobs[50][0]
    expected = {"n1": (1, 2.5), "n2": (3, 5.0)}
    expected[other_node] = (expected[other_node][0] + 1, expected[other_node][1] + 1.0)
    assert used == expected
    check_consistent(a)
    reported.reconcile(a, u, [], False)
    assert u.jobs == {} and u.used == 0
    check_consistent(a)


def test_reconcile_believes_only_what_was_granted():
    a = alloc_of(node("n1", 4, mem=8.0), node("n2", 2, mem=4.0))
    u = a.user("u")
    grants, _ = a.request(u, [want(1, cores=2, mem=3.0)], 1)
    where = grants[0]["node"]
    claims = [{"job": 1, "node": where, "cores": 4, "mem": 8.0},  # granted: 2 cores, 3 GB
              {"job": 1, "node": where, "cores": 1, "mem": 1.0},  # the same job again
              {"job": 2, "node": "n1", "cores": 1, "mem": 1.0},  # never granted
              {"job": 3, "node": "nowhere", "cores": 1, "mem": 1.0}]
    assert reported.reconcile(a, u, claims, False) == [1, 2, 3]
    assert u.jobs == {1: (where, 2, 3.0)} and u.used == 2
    assert set(a.nodes) == {"n1", "n2"}
    check_consistent(a)


def test_reconcile_without_a_ledger_believes_what_fits():
    """A multiuser that lost its ledger accounts reported jobs that fit on a real node,
    in report order; not one beyond a node's cores or memory, nor on an unknown node."""
    a = alloc_of(node("n1", 4, mem=8.0), node("n2", 2, mem=4.0))
    u = a.user("u")
    claims = [{"job": 1, "node": "n1", "cores": 3, "mem": 2.0},
              {"job": 2, "node": "n1", "cores": 2, "mem": 1.0},  # 5 cores > 4
              {"job": 3, "node": "n2", "cores": 1, "mem": 5.0},  # 5 GB > 4
              {"job": 4, "node": "n2", "cores": 1_000_000, "mem": 1.0},
              {"job": 5, "node": "fake", "cores": 1, "mem": 1.0},
              {"job": 6, "node": "n2", "cores": 2, "mem": 4.0}]
    assert reported.reconcile(a, u, claims, True) == [2, 3, 4, 5]
    assert u.jobs == {1: ("n1", 3, 2.0), 6: ("n2", 2, 4.0)}
    assert set(a.nodes) == {"n1", "n2"}
    check_consistent(a)


def test_restore_from_the_ledger_keeps_a_removed_node():
    a = alloc_of(node("n1", 4))
    u = a.user("u")
    reported.restore(a, u, [{"job": 3, "node": "gone", "cores": 2, "mem": 1.0},
                  {"job": 4, "node": "n1", "cores": 1, "mem": float("inf")}])
    assert u.used == 2 and u.jobs == {3: ("gone", 2, 1.0)}
    assert a.nodes["gone"].up is False
    assert a.total_cores == 4  # a down node adds no capacity
    a.remove(u, 3)
    assert "gone" not in a.nodes


def test_a_granted_job_on_a_removed_node_is_still_believed():
    a = alloc_of(node("n1", 4), node("n2", 4))
    u = a.user("u")
    a.add(u, 1, a.nodes["n2"], 2, 1.0)
    a.set_nodes({"n1": node("n1", 4)})
    claim = [{"job": 1, "node": "n2", "cores": 2, "mem": 1.0}]
    assert reported.reconcile(a, u, claim, False) == []
    assert u.jobs == {1: ("n2", 2, 1.0)} and a.nodes["n2"].up is False


def test_set_nodes_keeps_running_jobs_and_drains_removed_node():
    a = alloc_of(node("n1", 4, mem=16.0), node("n2", 4, mem=16.0))
    u = a.user("u")
    a.add(u, 1, a.nodes["n1"], 2, 3.0)
    a.add(u, 2, a.nodes["n2"], 3, 4.0)
    a.set_nodes({"n1": node("n1", 8, mem=32.0), "n3": node("n3", 2)})
    n1, n2 = a.nodes["n1"], a.nodes["n2"]
    assert (n1.cores, n1.used_cores, n1.used_mem, n1.up) == (8, 2, 3.0, True)
    assert n1.jobs == {("u", 1)}
    assert n2.up is False and (n2.used_cores, n2.used_mem) == (3, 4.0)
    assert a.total_cores == 10  # n1 + n3; the draining n2 adds nothing
    assert u.extra == 10  # shares follow the new total
    assert u.used == 5
    check_consistent(a)
    # no new job lands on the draining node
    grants, _ = a.request(u, [want(10, 11, 12, 13, 14, 15, 16)], 7)
    assert "n2" not in granted(grants).values()
    assert a.remove(u, 2) is True
    assert "n2" not in a.nodes  # drained: dropped
    assert a.remove(u, 1) is True
    assert "n1" in a.nodes  # a configured node stays when empty
    check_consistent(a)


def test_set_nodes_drops_removed_idle_node_at_once():
    a = alloc_of(node("n1", 4), node("n2", 4))
    a.user("u")
    a.set_nodes({"n1": node("n1", 4)})
    assert list(a.nodes) == ["n1"]
    assert a.total_cores == 4


def test_set_nodes_readding_a_draining_node_brings_it_back_up():
    a = alloc_of(node("n1", 4), node("n2", 4))
    u = a.user("u")
    a.add(u, 1, a.nodes["n2"], 2, 1.0)
    a.set_nodes({"n1": node("n1", 4)})
    assert a.nodes["n2"].up is False
    a.set_nodes({"n1": node("n1", 4), "n2": node("n2", 6)})
    n2 = a.nodes["n2"]
    assert n2.up and n2.cores == 6 and n2.used_cores == 2 and n2.jobs == {("u", 1)}
    assert a.total_cores == 10
    a.remove(u, 1)
    assert "n2" in a.nodes and a.nodes["n2"].used_cores == 0


def test_explicit_rules_in_allocator():
    a = alloc_of(node("n1", 20), rules=Rules("explicit", 0, {"u1": Extra(None, cores=4),
                                                             "u2": Extra(None, percent=50.0)}))
    u1, u2, u3 = a.user("u1"), a.user("u2"), a.user("u3")
    assert [(u.minimum, u.extra) for u in (u1, u2, u3)] == [(0, 6), (0, 12), (0, 2)]


def test_a_removed_user_has_no_share_and_is_forgotten_when_their_jobs_end():
    a = alloc_of(node("n1", 4), node("n2", 4))
    u, other = a.user("u"), a.user("other")
    a.request(u, [want(1, 2)], 2)
    a.leave(u)
    assert (u.minimum, u.extra, u.queue) == (0, 0, 0)
    assert other.share == 8 and u.used == 2  # its running jobs stay counted
    grants, refused = a.request(u, [want(3)], 1)
    assert grants == [] and refused  # removed: nothing new, not even idle cores
    assert reported.reconcile(a, u, [{"job": 1, "node": u.jobs[1][0], "cores": 1, "mem": 1.0}],
                       False) == []
    assert "u" in a.users and u.used == 1  # one of its jobs ended
    a.remove(u, 1)
    assert "u" not in a.users
    check_consistent(a)
    assert a.user("u").share == 4  # admitted again: a member with a share
