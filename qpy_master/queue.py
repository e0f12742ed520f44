"""The order of queued jobs, kept in memory so no operation scans the whole store.

Queued jobs are also indexed by *shape* (cores, memory, attributes, whole node): the master
asks the multiuser for the first few jobs of each shape, in queue order, so a big job that
does not fit never hides smaller ones behind it, and the request stays small with 100,000
jobs queued.
"""

from __future__ import annotations

from qpy.model import Job

PER_SHAPE = 64
MAX_SHAPES = 64


class JobQueue:
    """Queued jobs in run order with O(1) push, remove and lookup."""

    def __init__(self) -> None:
        self.jobs: dict[int, Job] = {}
        self.qpos: dict[int, int] = {}
        self.shapes: dict[tuple, dict[int, None]] = {}
        self.next_pos = 1

    def __len__(self) -> int:
        return len(self.jobs)

    def __contains__(self, job_id: int) -> bool:
        return job_id in self.jobs

    def get(self, job_id: int) -> Job | None:
        return self.jobs.get(job_id)

    def ids(self) -> list[int]:
        return list(self.jobs)

    def push(self, job: Job, qpos: int | None = None) -> int:
        """Append a job (or re-insert it at its stored position) and return its position."""
        pos = self.next_pos if qpos is None else qpos
        self.next_pos = max(self.next_pos, pos + 1)
        if self.jobs and pos < self.qpos[next(reversed(self.jobs))]:
            self._rebuild(sorted([*self.jobs, job.id],
                                 key=lambda i: pos if i == job.id else self.qpos[i]),
                          {**self.jobs, job.id: job})
            self.qpos[job.id] = pos
            return pos
        self.jobs[job.id] = job
        self.qpos[job.id] = pos
        self.shapes.setdefault(job.shape, {})[job.id] = None
        return pos

    def remove(self, job_id: int) -> Job | None:
        job = self.jobs.pop(job_id, None)
        if job is not None:
            del self.qpos[job_id]
            same = self.shapes[job.shape]
            del same[job_id]
            if not same:
                del self.shapes[job.shape]
        return job

    def want(self) -> list[dict]:
        """The first jobs of each shape, shapes ordered by their first job's position."""
        heads = []
        for shape, ids in self.shapes.items():
            first = []
            for job_id in ids:
                first.append(job_id)
                if len(first) == PER_SHAPE:
                    break
            heads.append((self.qpos[first[0]], shape, first))
        heads.sort()
        return [{"cores": s[0], "mem": s[1], "attr": s[2], "jobs": ids,
                 **({"exclusive": True} if s[3] else {})}
                for _, s, ids in heads[:MAX_SHAPES]]

    def _rebuild(self, order: list[int], jobs: dict[int, Job]) -> None:
        self.jobs, self.shapes = {}, {}
        old = self.qpos
        self.qpos = {}
        for job_id in order:
            job = jobs[job_id]
            self.jobs[job_id] = job
            self.qpos[job_id] = old.get(job_id, 0)
            self.shapes.setdefault(job.shape, {})[job_id] = None

    def jump(self, ids: list[int], target: str) -> tuple[str, list[tuple[int, int]]]:
        """Move ``ids`` (in their queue order) to run right after ``target`` (an ID, ``begin``
        or ``end``). Returns the message and the new (qpos, id) pairs to store."""
        order = list(self.jobs)
        moving = [i for i in order if i in set(ids)]
        if not moving:
            return "List does not have jobs in queue: queue not reordered.", []
        if len(moving) == len(order):
            return "Queue is completely contained in list: queue not reordered.", []
        rest = [i for i in order if i not in set(moving)]
        if target == "begin":
            new = moving + rest
        elif target == "end":
            new = rest + moving
        else:
            tid = int(target)
            if tid in moving:
                return "Position is part of list: queue not reordered.", []
            if tid not in self.jobs:
                return "Position not found: queue not reordered.", []
            at = rest.index(tid) + 1
            new = rest[:at] + moving + rest[at:]
        jobs = dict(self.jobs)
        self._rebuild(new, jobs)
        pairs = [(pos, job_id) for pos, job_id in enumerate(new, 1)]
        self.qpos = {job_id: pos for pos, job_id in pairs}
        self.next_pos = len(new) + 1
        return "Queue reordered.", pairs
