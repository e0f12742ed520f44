"""What the multiuser writes to its log about its decisions, for the admin to follow
(``qpy-admin log -f``): each grant, and each refusal with the reason the user waits.

Grant lines are never held back by the log's rate limit (``qpy.lograte.ALWAYS``): the
admin must be able to find every one. Refusals repeat (a waiting master asks again at
every wake), so they are held back per user like other repeated lines.
"""

from __future__ import annotations

import logging

from qpy.lograte import ALWAYS
from qpy.words import plural
from qpy_multiuser.allocator import Allocator, User, limit_reason

log = logging.getLogger("qpy.multiuser.decisions")


def refusal(alloc: Allocator, user: User) -> str | None:
    """Why the first job ``user`` was refused in the last decision waits (under the
    multiuser's lock, right after the decision), in the order the allocator decides:
    a user limit, the user's share, then room on the nodes."""
    if user.refused is None:
        return None
    job, cores, mem, attr, whole = user.refused  # whole: the whole nodes asked for
    why = limit_reason(user, cores, mem)
    if why is None and not alloc._may_grow(user, cores):
        why = (f"at their share ({user.used} of {user.share} cores in use) while others "
               "wait below theirs" if user.used + cores > user.share
               else f"the {max(alloc.free_cores, 0)} free cores are held for other users' "
                    "minimums")
    if why is None:
        where = f" with {attr}" if attr else ""
        why = (f"no node{where} with {cores}+ cores and {mem:g}+ GB is empty (whole node)"
               if whole == 1 else
               f"fewer than {whole} nodes{where} are empty (whole nodes)" if whole else
               f"no node{where} has {plural(cores, 'free core')} and {mem:g} GB")
    return f"job {job} ({plural(cores, 'core')}, {mem:g} GB): {why}"


def decided(user: str, granted: list[tuple], why: str | None) -> None:
    """Log one slot decision: ``granted`` as (job, node, cores, mem); ``why`` a refusal."""
    if granted:
        log.info("granted %s: %s", user, ", ".join(
            f"job {job} on {node} ({plural(cores, 'core')}, {mem:g} GB)"
            for job, node, cores, mem, *_ in granted), extra={"rate_key": ALWAYS})
    if why is not None:
        log.info("%s waits: %s", user, why, extra={"rate_key": user})
