"""Permissions to chain: a master may start its user's next job in the slot an ended job
frees, and tell the multiuser afterwards (``slots``' ``chained``), while that slot would
go to the same user anyway: nobody else has jobs queued and no limit holds the user back.

A permission is the epoch it was given in. Taking the permissions back (another user
queues a job; a master comes or goes; the nodes, rules or limits change) raises the
epoch and sends it in an ``unchain`` event, so a reply that gave a permission before,
arriving after the event, counts for nothing (``qpy_master/scheduler.py``).
"""

from __future__ import annotations

from collections.abc import Callable


class Chains:
    """Who may chain now, and the epoch of the last taking back."""

    def __init__(self, post_to: Callable[[str, dict], None]) -> None:
        self.post_to = post_to  # queues an event for a user's master
        self.epoch = 0
        self.holders: set[str] = set()

    def permit(self, user: str, allowed: bool) -> int | None:
        """The permission for ``user``'s master (None: ask for every slot)."""
        if not allowed:
            return None
        self.holders.add(user)
        return self.epoch

    def take_back(self, skip: str | None = None) -> None:
        """Take back every permission but ``skip``'s."""
        holders = self.holders - {skip}
        if not holders:
            return
        self.epoch += 1
        self.holders -= holders
        for name in holders:
            self.post_to(name, {"type": "unchain", "epoch": self.epoch})
