"""The exceptions megavisor raises: one class per error kind, all under MegavisorError.

Each carries ``kind`` (the stable snake-case name, as in every megavisor binding) and
``partial``: what the tool wrote before it was stopped (for ``Timeout``, ``MemoryLimit``
and ``Trap``), else ``None``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Type

if TYPE_CHECKING:
    from ._native import Result

__all__ = [
    "MegavisorError",
    "HashMismatch",
    "BadSignature",
    "ToolNotFound",
    "NotAllowed",
    "Timeout",
    "MemoryLimit",
    "Trap",
    "BadRequest",
    "Internal",
    "Busy",
    "ShuttingDown",
    "Cancelled",
    "SessionGone",
    "ConnectionLost",
    "Protocol",
]


class MegavisorError(Exception):
    """A call that did not run to an exit, or a driver that could not be opened."""

    kind: str = "internal"
    partial: Optional["Result"]

    def __init__(
        self, message: str, kind: Optional[str] = None, partial: Optional["Result"] = None
    ) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind
        self.partial = partial

    @property
    def message(self) -> str:
        """The explanation: which file, which digest, which limit."""
        return str(self.args[0]) if self.args else ""


class HashMismatch(MegavisorError):
    """A bundle file's content does not match its signed manifest."""

    kind = "hash_mismatch"


class BadSignature(MegavisorError):
    """The manifest's signature is missing, malformed or from an untrusted key."""

    kind = "bad_signature"


class ToolNotFound(MegavisorError, LookupError):
    """No tool of that name (the message lists those that exist)."""

    kind = "tool_not_found"


class NotAllowed(MegavisorError, PermissionError):
    """Policy refused the call (capability, mount, environment) or the connection."""

    kind = "not_allowed"


class Timeout(MegavisorError, TimeoutError):
    """The tool ran past its time limit."""

    kind = "timeout"


class MemoryLimit(MegavisorError):
    """The tool tried to grow its memory past its limit."""

    kind = "memory_limit"


class Trap(MegavisorError):
    """The tool trapped (a WebAssembly fault: unreachable, out-of-bounds access, ...)."""

    kind = "trap"


class BadRequest(MegavisorError, ValueError):
    """The call is malformed, too large, or a limit is out of range."""

    kind = "bad_request"


class Internal(MegavisorError):
    """megavisor failed internally (I/O or engine), naming the file concerned."""

    kind = "internal"


class Busy(MegavisorError):
    """The supervisor's concurrency limit and queue are full: retry later."""

    kind = "busy"


class ShuttingDown(MegavisorError):
    """The supervisor is draining and takes no new calls."""

    kind = "shutting_down"


class Cancelled(MegavisorError):
    """The call was given up on (its task cancelled, its connection closed) and stopped."""

    kind = "cancelled"


class SessionGone(MegavisorError):
    """The session is gone: closed, past its idle time, ended by a call that failed, or
    opened by someone else; or no session could be kept. Open a new one."""

    kind = "session_gone"


class ConnectionLost(MegavisorError, ConnectionError):
    """No supervisor at the socket, or it went away."""

    kind = "connection_lost"


class Protocol(MegavisorError):
    """The supervisor said something this client does not understand."""

    kind = "protocol"


BY_KIND: Dict[str, Type[MegavisorError]] = {
    cls.kind: cls for cls in MegavisorError.__subclasses__()
}
"""The exception class of each error kind (what the native module raises)."""
