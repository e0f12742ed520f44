"""The master's queue order and gates, pure: priorities place new jobs without renumbering
the queue, narrow gaps are widened by respacing a small window, and only ready jobs
(not held, no dependency pending, within their array's %MAX) are asked for.
"""

from __future__ import annotations

import random

from qpy.model import Job
from qpy.states import DONE, KILLED, LOST, QUEUE, RUNNING
from qpy_master.gates import Gates
from qpy_master.queue import JobQueue


def job(job_id: int, priority: int = 0, **fields) -> Job:
    return Job(id=job_id, status=QUEUE, command="true", cwd="/tmp", priority=priority,
               **fields)


def placed(q: JobQueue, new: Job) -> list:
    """Queue ``new`` where its priority puts it; the rows that were respaced."""
    pos, (moved, old) = q.place(new.priority)
    assert len(moved) == len(old)
    q.push(new, pos)
    return moved


def test_priority_goes_after_the_last_job_of_equal_or_higher_priority():
    q = JobQueue()
    for i, p in enumerate([0, 0, 10, 0], 1):  # 3 was jumped behind 1 and 2, say
        q.push(job(i, p))
    placed(q, job(5, 10))
    placed(q, job(6, 0))
    placed(q, job(7, 5))
    placed(q, job(8, 20))  # nothing of 20 or more: the head
    placed(q, job(9, -10))
    assert q.ids() == [8, 1, 2, 3, 5, 7, 4, 6, 9]
    assert [q.rank(i) for i in q.ids()] == list(range(1, 10))


def test_repeated_inserts_at_one_place_respace_small_windows_only():
    q = JobQueue()
    for i in range(1, 2001):
        q.push(job(i))
    written = 0
    for i in range(2001, 4001):  # high priority: each after the previous one, before job 1
        written += len(placed(q, job(i, 10)))
    assert q.ids() == [*range(2001, 4001), *range(1, 2001)]
    assert written == 0  # a new job goes near the start of its gap: room for the next
    for i in range(4001, 4401):  # each after job 4000 (priority 10), before the 5s
        written += len(placed(q, job(i, 5)))
    assert q.ids()[2000:2400] == list(range(4001, 4401))
    assert written < 4000  # not the whole queue each time


def test_respacing_keeps_the_order_whatever_the_inserts():
    rng = random.Random(7)
    q = JobQueue()
    expected: list[int] = []
    for i in range(1, 3001):
        p = rng.choice([-10, 0, 0, 5, 10, 20])
        placed(q, job(i, p))
        last = max((k for k, j in enumerate(expected) if q.jobs[j].priority >= p),
                   default=-1)
        expected.insert(last + 1, i)
    assert q.ids() == expected
    positions = [q.qpos[i] for i in expected]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


def test_jump_into_a_narrow_gap_respaces_and_keeps_order():
    q = JobQueue()
    q.push(job(1), 1.0)
    q.push(job(2), 1.0 + 1e-9)
    for i in range(3, 10):
        q.push(job(i))
    text, (new, old) = q.jump([7, 8], "1")
    assert text == "Queue reordered."
    assert q.ids() == [1, 7, 8, 2, 3, 4, 5, 6, 9]
    assert {i for _, i in new} >= {7, 8} and len(new) < 9
    q.reposition(old)  # taking it back restores the order
    assert q.ids() == [1, 2, 3, 4, 5, 6, 7, 8, 9]


def test_only_ready_jobs_are_asked_for_and_none_block_those_behind():
    q = JobQueue()
    for i in range(1, 6):
        q.push(job(i), ready=i not in (1, 3))
    assert q.want()[0]["jobs"] == [2, 4, 5]
    q.set_ready(1, True)
    q.set_ready(4, False)
    assert q.want()[0]["jobs"] == [1, 2, 5]
    assert len(q.ready) == 3 and len(q) == 5


# -- gates ---------------------------------------------------------------------------------


def gated(*jobs: Job, running: tuple[Job, ...] = ()) -> tuple[JobQueue, Gates]:
    q = JobQueue()
    live = {j.id: j for j in running}
    gates = Gates(q, live)
    for j in jobs:
        q.push(j, ready=False)
        gates.added(j)
    return q, gates


def end(gates: Gates, q: JobQueue, j: Job, status: str, **fields) -> list:
    """A running (or queued) job ends (as ``Records.move`` tells the gates): the
    dependents that fail."""
    old = j.status
    if old == QUEUE:
        q.remove(j.id)
    else:
        gates.running.pop(j.id, None)
    j.status = status
    for name, value in fields.items():
        setattr(j, name, value)
    gates.moved(j, old)
    return gates.ended(j)


def test_dependents_wait_then_start_or_fail_with_the_reason():
    a = job(1)
    b = job(2, after=[1])
    c = job(3, afterok=[1])
    q, gates = gated(a, b, c)
    assert q.want()[0]["jobs"] == [1]
    failed = end(gates, q, a, KILLED)
    assert [(j.id, why) for j, why in failed] == [(3, "dependency 1 ended killed")]
    assert q.want()[0]["jobs"] == [2]  # 3 is for the records to undo


def test_afterok_reasons():
    for fields, why in [({"exit_code": 3}, "dependency 1 exited 3"),
                        ({"exit_code": None, "signal": 9}, "dependency 1 ended by signal 9")]:
        a = job(1)
        q, gates = gated(a, job(2, afterok=[1]))
        assert [w for _, w in end(gates, q, a, DONE, **fields)] == [why]
    a = job(1)
    q, gates = gated(a, job(2, afterok=[1]))
    assert end(gates, q, a, DONE, exit_code=0) == []
    assert 2 in q.ready
    a = job(1)  # a lost dependency has ended (after) and failed (afterok)
    q, gates = gated(a, job(2, after=[1]), job(3, afterok=[1]))
    assert [(j.id, w) for j, w in end(gates, q, a, LOST)] == [(3, "dependency 1 ended lost")]
    assert 2 in q.ready


def test_array_cap_admits_the_next_task_as_one_ends():
    tasks = [job(i, array_id=10, array_index=i - 10, array_max=2) for i in range(10, 15)]
    q, gates = gated(*tasks)
    assert sorted(q.ready) == [10, 11]
    first = tasks[0]
    q.remove(first.id)
    first.status = RUNNING
    gates.running[first.id] = first
    gates.moved(first, QUEUE)
    assert sorted(q.ready) == [11]  # 10 runs, 11 is next: the cap is full
    tasks[2].held = True
    gates.refresh(tasks[2])
    end(gates, q, first, DONE, exit_code=0)
    assert sorted(q.ready) == [11, 13]  # 12 is held: 13 takes its place
    gates.rebuild()
    assert sorted(q.ready) == [11, 13]
