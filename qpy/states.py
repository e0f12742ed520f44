"""Job statuses and the changes between them: the one table every tier reads.

Imports nothing, so the CLI, the wire checks and both daemons can all use it for free.
Statuses are plain strings because they travel in JSON and are stored as SQLite text.
"""

# In the order of the colour scheme (``qpy config coloursScheme``).
STATUSES = ("queue", "running", "done", "killed", "undone", "lost")
QUEUE, RUNNING, DONE, KILLED, UNDONE, LOST = STATUSES
LIVE = (QUEUE, RUNNING)
# LOST: its node went down while it ran (Slurm's NODE_FAIL); never reported as done.
FINISHED = (DONE, KILLED, UNDONE, LOST)

# The only status changes there are. A job goes back from running to the queue when its
# launch provably never happened, or its node failed and it asked to run again; a finished
# job goes back to the queue when the user requeues it (``qpy requeue``: same ID, a new run).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    QUEUE: (RUNNING, UNDONE),
    RUNNING: (DONE, KILLED, LOST, QUEUE),
    DONE: (QUEUE,),
    KILLED: (QUEUE,),
    UNDONE: (QUEUE,),
    LOST: (QUEUE,),
}


class TransitionError(Exception):
    """A status change the table does not allow: a bug in qpy, never user input."""


def check_transition(job_id: int, old: str, new: str) -> None:
    """Refuse a change the table does not list, before anything is written."""
    if new not in TRANSITIONS.get(old, ()):
        raise TransitionError(f"job {job_id}: {old} -> {new} is not allowed")
