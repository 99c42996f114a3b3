"""Who is calling: taken from the kernel once per connection, never from the request."""

from __future__ import annotations

from dataclasses import dataclass, field

# WSGI environ key under which the transport layer stores the Caller.
# Header-derived keys are always HTTP_*, so a request cannot forge it.
ENVIRON_KEY = "zeusd.caller"
# ...and a callable telling whether the client has hung up (for long responses: streams).
PEER_CLOSED_KEY = "zeusd.peer_closed"
# ...and, for a Unix peer, a callable that pins the calling process for a lease (a pidfd).
PIN_OWNER_KEY = "zeusd.pin_owner"
# ...and a callable taking a function to run on the request's thread once the response has
# been handed to the socket (a non-blocking write runs there without a thread hand-off).
AFTER_RESPONSE_KEY = "zeusd.after_response"


@dataclass(frozen=True)
class Caller:
    """The peer of one connection.

    transport "unix": pid/uid/gid from SO_PEERCRED at accept time, groups from
    SO_PEERGROUPS (supplementary + primary), start_time_ticks pins the pid
    (field 22 of /proc/PID/stat) so a recycled pid is never taken for it.
    transport "tcp": no Unix identity; token_subject/token_scopes when a valid
    bearer token came with the request, otherwise the caller is anonymous.
    ``known`` is False when the kernel could not tell us who it is: deny.
    """

    transport: str
    pid: int | None = None
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()
    start_time_ticks: int | None = None
    token_subject: str | None = None
    token_scopes: tuple[str, ...] = ()
    known: bool = True
    error: str | None = field(default=None, compare=False)

    @property
    def is_root(self) -> bool:
        return self.transport == "unix" and self.known and self.uid == 0

    @property
    def is_anonymous(self) -> bool:
        return self.transport != "unix" and self.token_subject is None

    def describe(self) -> str:
        """Short text for logs and messages: 'uid 1001 pid 4242' or 'token alice'."""
        if self.transport == "unix":
            if not self.known:
                return "unknown unix peer"
            return f"uid {self.uid} pid {self.pid}"
        if self.token_subject is not None:
            return f"token subject '{self.token_subject}'"
        return "anonymous tcp peer"


UNKNOWN_UNIX = Caller(transport="unix", known=False, error="no peer credentials")
