"""The order of queued jobs, kept in memory so no operation scans the whole store.

Every queued job has a position (a float); the queue is its jobs sorted by (position, ID).
A new job takes a position between two neighbours, so putting one in the middle (a higher
priority, a jump) writes one row, never the whole queue: a gap that grew too narrow is
widened by respacing the few jobs of a window around it (those rows are returned to be
stored too).

Queued jobs that may be asked for now (``ready``: not held, no dependency pending, within
their array's %MAX) are also indexed by *shape* (cores, memory, attributes, whole node):
the master asks the multiuser for the first few ready jobs of each shape, in queue order,
so a big job that does not fit never hides smaller ones behind it, a job that may not start
is never asked for, and the request stays small with 100,000 jobs queued.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort

from qpy.model import Job

PER_SHAPE = 64
MAX_SHAPES = 64
NARROWEST = 1e-6  # a gap narrower than this is widened before a job goes into it,
PRECISION = 2.0 ** -32  # or narrower than this part of its positions (floats round)
SPREAD = 1 / 64  # the spacing a respaced window gets, at least
NEAR = 1 / 1024  # a new job goes this far into its gap: the next one behind it finds room

Key = tuple[float, int]  # (position, ID): the sort key of a queued job
Pairs = list[tuple[float, int]]  # (position, ID) of jobs whose position is to be stored
Moves = tuple[Pairs, Pairs]  # jobs given new positions, and their old ones (to take back)


def _narrow(lo: float, hi: float, count: int) -> bool:
    """Whether ``count`` jobs need more room than the gap between ``lo`` and ``hi``."""
    return (hi - lo) / (count + 1) < max(NARROWEST, abs(lo) * PRECISION, abs(hi) * PRECISION)


def _add(keys: list[Key], key: Key) -> None:
    """Insert in order; appending (the usual case) skips the search."""
    if not keys or keys[-1] < key:
        keys.append(key)
    else:
        insort(keys, key)


def _discard(keys: list[Key], key: Key) -> None:
    index = bisect_left(keys, key)
    if index < len(keys) and keys[index] == key:
        del keys[index]


class JobQueue:
    """Queued jobs in run order: lookup in O(1), insert and remove in O(log n) (plus a
    memmove), the ready ones indexed by shape."""

    def __init__(self) -> None:
        self.jobs: dict[int, Job] = {}
        self.qpos: dict[int, float] = {}
        self.order: list[Key] = []
        self.by_priority: dict[int, list[Key]] = {}
        self.shapes: dict[tuple, list[Key]] = {}  # ready jobs only
        self.ready: set[int] = set()

    def __len__(self) -> int:
        return len(self.jobs)

    def __contains__(self, job_id: int) -> bool:
        return job_id in self.jobs

    def get(self, job_id: int) -> Job | None:
        return self.jobs.get(job_id)

    def ids(self) -> list[int]:
        """Queued job IDs in the order they will start."""
        return [job_id for _, job_id in self.order]

    def ordered(self) -> list[Job]:
        return [self.jobs[job_id] for _, job_id in self.order]

    def rank(self, job_id: int) -> int:
        """A queued job's place in the queue: 1 starts next."""
        return bisect_left(self.order, (self.qpos[job_id], job_id)) + 1

    # -- adding and removing ---------------------------------------------------------------

    def push(self, job: Job, pos: float | None = None, ready: bool = True) -> float:
        """Queue a job at ``pos`` (its stored position; last if None) and return it."""
        if pos is None:
            pos = self.order[-1][0] + 1 if self.order else 1.0
        self.jobs[job.id] = job
        self._attach(job, pos, ready)
        return pos

    def remove(self, job_id: int) -> Job | None:
        job = self.jobs.get(job_id)
        if job is not None:
            self._detach(job)
            del self.jobs[job_id]
        return job

    def _attach(self, job: Job, pos: float, ready: bool) -> None:
        key = (pos, job.id)
        self.qpos[job.id] = pos
        _add(self.order, key)
        _add(self.by_priority.setdefault(job.priority, []), key)
        if ready:
            self.ready.add(job.id)
            _add(self.shapes.setdefault(job.shape, []), key)

    def _detach(self, job: Job) -> bool:
        """Take a job out of every index (not out of ``jobs``); whether it was ready."""
        key = (self.qpos.pop(job.id), job.id)
        _discard(self.order, key)
        self._drop(self.by_priority, job.priority, key)
        ready = job.id in self.ready
        if ready:
            self.ready.discard(job.id)
            self._drop(self.shapes, job.shape, key)
        return ready

    @staticmethod
    def _drop(index: dict, name: object, key: Key) -> None:
        keys = index[name]
        _discard(keys, key)
        if not keys:
            del index[name]

    def set_ready(self, job_id: int, ready: bool) -> bool:
        """Let a queued job be asked for, or not; whether that changed anything."""
        job = self.jobs.get(job_id)
        if job is None or (job_id in self.ready) == ready:
            return False
        key = (self.qpos[job_id], job_id)
        if ready:
            self.ready.add(job_id)
            _add(self.shapes.setdefault(job.shape, []), key)
        else:
            self.ready.discard(job_id)
            self._drop(self.shapes, job.shape, key)
        return True

    def clear_ready(self) -> None:
        """No job is ready any more (the gates then say again which are)."""
        self.shapes, self.ready = {}, set()

    # -- what to ask the multiuser for -----------------------------------------------------

    def first_ready(self) -> Job | None:
        """The ready job that starts next: the one a freed slot goes to first."""
        heads = [keys[0] for keys in self.shapes.values()]
        return self.jobs[min(heads)[1]] if heads else None

    def want(self) -> list[dict]:
        """The first ready jobs of each shape, shapes ordered by their first job's place."""
        heads = sorted((keys[0], shape, [job_id for _, job_id in keys[:PER_SHAPE]])
                       for shape, keys in self.shapes.items())
        return [{"cores": s[0], "mem": s[1], "attr": s[2], "jobs": ids,
                 **({"exclusive": True} if s[3] else {}),
                 **({"nodes": s[4]} if s[4] > 1 else {})}
                for _, s, ids in heads[:MAX_SHAPES]]

    # -- positions -------------------------------------------------------------------------

    def head(self) -> float:
        """The position of a job that goes back to the head of the queue."""
        return self.order[0][0] - 1 if self.order else 1.0

    def place(self, priority: int) -> tuple[float, Moves]:
        """Where a new job of ``priority`` goes: right after the last queued job of equal
        or higher priority, else at the head. Returns its position and the jobs respaced
        to make room."""
        tails = [keys[-1] for p, keys in self.by_priority.items() if p >= priority]
        index = bisect_right(self.order, max(tails)) if tails else 0
        respaced = self._room(index, 1)
        lo, hi = self._bounds(index)
        if hi is None:
            return (lo + 1 if lo is not None else 1.0), respaced
        if lo is None:
            return hi - 1, respaced
        return lo + (hi - lo) * NEAR, respaced

    def _bounds(self, index: int) -> tuple[float | None, float | None]:
        """The positions on either side of the gap before ``order[index]``."""
        lo = self.order[index - 1][0] if index > 0 else None
        hi = self.order[index][0] if index < len(self.order) else None
        return lo, hi

    def _room(self, index: int, count: int) -> Moves:
        """Make the gap before ``order[index]`` wide enough for ``count`` jobs, respacing
        a window around it that grows until it has room (or reaches an end, which has
        room without bound); returns the jobs moved."""
        lo, hi = self._bounds(index)
        if lo is None or hi is None or not _narrow(lo, hi, count):
            return [], []
        radius = 1
        while True:
            first, last = max(0, index - radius), min(len(self.order), index + radius)
            lo, hi = self._bounds(first)[0], self._bounds(last)[1]
            slots = last - first + count + 1  # gaps: the window's jobs plus the new ones
            if lo is None or hi is None or (hi - lo) / slots >= SPREAD:
                break
            radius *= 2
        step = SPREAD if lo is None or hi is None else (hi - lo) / slots
        start = lo if lo is not None else (hi if hi is not None else 0.0) - slots * step
        pairs = []
        for offset, (_, job_id) in enumerate(self.order[first:last]):
            slot = offset + 1 + (count if first + offset >= index else 0)
            pairs.append((start + slot * step, job_id))
        return pairs, self.reposition(pairs)

    def reposition(self, pairs: Pairs) -> Pairs:
        """Give queued jobs new positions (respacing, jumps, and taking those back);
        returns their old ones."""
        jobs = [self.jobs[job_id] for _, job_id in pairs]
        old = [(self.qpos[job.id], job.id) for job in jobs]
        ready = [self._detach(job) for job in jobs]
        for (pos, _), job, was_ready in zip(pairs, jobs, ready, strict=True):
            self._attach(job, pos, was_ready)
        return old

    # -- ctrlQueue jump --------------------------------------------------------------------

    def _no_jump(self, moving: list[Key], target: str) -> str | None:
        """Why the queued jobs ``moving`` cannot jump to ``target``, or None."""
        if not moving:
            return "List does not have jobs in queue"
        if len(moving) == len(self.order):
            return "Queue is completely contained in list"
        if target in ("begin", "end"):
            return None
        if int(target) in {i for _, i in moving}:
            return "Position is part of list"
        return None if int(target) in self.jobs else "Position not found"

    def jump(self, ids: list[int], target: str) -> tuple[str, Moves]:
        """Move ``ids`` (in their queue order) to run right after ``target`` (an ID,
        ``begin`` or ``end``). Returns the message and the jobs given new positions: the
        moved ones and any respaced to make room."""
        moving = sorted((self.qpos[i], i) for i in set(ids) if i in self.jobs)
        refusal = self._no_jump(moving, target)
        if refusal is not None:
            return f"{refusal}: queue not reordered.", ([], [])
        jobs = [self.jobs[i] for _, i in moving]
        ready = [self._detach(job) for job in jobs]
        if target == "begin":
            index = 0
        elif target == "end":
            index = len(self.order)
        else:
            index = bisect_right(self.order, (self.qpos[int(target)], int(target)))
        pairs, old = self._room(index, len(jobs))
        old += moving
        lo, hi = self._bounds(index)
        if lo is None and hi is None:
            lo, step = 0.0, 1.0
        elif hi is None:
            step = 1.0
        elif lo is None:
            lo, step = hi - len(jobs) - 1, 1.0
        else:
            step = (hi - lo) / (len(jobs) + 1)
        for n, (job, was_ready) in enumerate(zip(jobs, ready, strict=True), 1):
            self._attach(job, lo + n * step, was_ready)
            pairs.append((lo + n * step, job.id))
        return "Queue reordered.", (pairs, old)
