"""Who is at the other end of a connection, as the kernel knows it, before any key.

A daemon caps connections per peer, so it must tell peers apart before they prove
anything: a Unix socket's peer has its uid (``SO_PEERCRED``); a TCP peer on this machine
has the uid that owns its socket, which the kernel tells any user through the socket
diagnostics interface (``NETLINK_SOCK_DIAG``, what ``ss`` uses); a peer on another machine
is known only by its address. Nothing here trusts what the peer says.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NO_COOKIE = 0xFFFFFFFF
_UID_OFFSET = 16 + 4 + 48 + 12  # nlmsghdr, inet_diag_msg head, sockid, expires..wqueue


@dataclass(frozen=True)
class Peer:
    """A peer's uid if the kernel knows it (a local peer), and its address (TCP)."""

    uid: int | None
    host: str | None = None

    @property
    def key(self) -> tuple[str, object]:
        """What connections are counted by: the uid where known, else the address."""
        return ("uid", self.uid) if self.uid is not None else ("host", self.host)

    @property
    def local(self) -> bool:
        return self.uid is not None

    def __str__(self) -> str:
        return f"uid {self.uid}" if self.uid is not None else f"host {self.host}"


def identify(fileno: int) -> Peer:
    """The peer of the connected socket ``fileno``; never raises."""
    sock = socket.socket(fileno=fileno)
    try:
        if sock.family == socket.AF_UNIX:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            return Peer(struct.unpack("3i", creds)[1])
        if sock.family != socket.AF_INET:
            return Peer(None, str(sock.getpeername()[0]))
        remote, here = sock.getpeername(), sock.getsockname()
        return Peer(tcp_owner(remote, here), remote[0])
    except OSError:
        return Peer(None, "unknown")
    finally:
        sock.detach()


def tcp_owner(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The uid owning the IPv4 TCP socket on this machine whose own address is ``local``
    and whose peer is ``remote``; None if there is none here (a peer elsewhere)."""
    try:
        sockid = (struct.pack("!HH", local[1], remote[1])
                  + socket.inet_aton(local[0]) + bytes(12)
                  + socket.inet_aton(remote[0]) + bytes(12)
                  + struct.pack("=III", 0, NO_COOKIE, NO_COOKIE))
        request = struct.pack("=BBBxI", socket.AF_INET, socket.IPPROTO_TCP, 0,
                              0xFFFFFFFF) + sockid
        header = struct.pack("=IHHII", 16 + len(request), SOCK_DIAG_BY_FAMILY,
                             NLM_F_REQUEST, 1, 0)
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            nl.sendto(header + request, (0, 0))
            data = nl.recv(4096)
    except (OSError, ValueError):
        return None
    if len(data) < _UID_OFFSET + 4 or struct.unpack_from("=H", data, 4)[0] \
            != SOCK_DIAG_BY_FAMILY:
        return None  # NLMSG_ERROR: no such socket on this machine
    return struct.unpack_from("=I", data, _UID_OFFSET)[0]
