"""Type stubs of megavisor's native module (pyo3)."""

from os import PathLike
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

from .errors import MegavisorError

_Path = Union[str, PathLike[str]]

class Timings:
    """Where a call's time went, in microseconds."""

    @property
    def queue_us(self) -> int: ...
    @property
    def instantiate_us(self) -> int: ...
    @property
    def run_us(self) -> int: ...
    @property
    def total_us(self) -> int: ...

class Usage:
    """The resources a native tool used."""

    @property
    def peak_memory_bytes(self) -> int: ...
    @property
    def user_us(self) -> int: ...
    @property
    def system_us(self) -> int: ...
    @property
    def limits_hit(self) -> List[str]:
        """``memory_limit``, ``timeout``, ``pids_limit``: the limits the call ran into."""
    @property
    def cgroup(self) -> Optional[str]:
        """``v1`` or ``v2``: the cgroup hierarchy that limited and counted it."""

class Result:
    """The outcome of a call that ran to an exit (a non-zero exit code is still a result)."""

    @property
    def tool(self) -> str: ...
    @property
    def exit_code(self) -> int: ...
    @property
    def ok(self) -> bool:
        """True when the tool exited 0."""
    @property
    def stdout(self) -> bytes: ...
    @property
    def stderr(self) -> bytes: ...
    @property
    def stdout_tail(self) -> bytes:
        """The last 8 KiB of stdout."""
    @property
    def stderr_tail(self) -> bytes: ...
    @property
    def stdout_total(self) -> int:
        """Bytes written in all (more than ``len(stdout)`` when cut at the limit)."""
    @property
    def stderr_total(self) -> int: ...
    @property
    def artifacts(self) -> Dict[str, str]: ...
    @property
    def timings(self) -> Timings: ...
    @property
    def execution_id(self) -> Optional[str]: ...
    @property
    def cached(self) -> bool:
        """True when replayed from the idempotency cache."""
    @property
    def usage(self) -> Optional[Usage]:
        """What a native tool used (``None`` for the bundle's tools)."""

class Tool:
    """A tool of the bundle: name, description, argument schema, capabilities, limits."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def schema_json(self) -> str:
        """JSON Schema of the arguments, with megavisor's ``x-argv`` rendering hints."""
    @property
    def schema(self) -> Dict[str, Any]:
        """The same schema as a dict."""
    @property
    def capabilities(self) -> List[str]: ...
    @property
    def memory_bytes(self) -> int: ...
    @property
    def timeout_ms(self) -> int: ...

class Pending:
    """A call running in the background (what ``Driver.submit`` returns)."""

    def cancel(self) -> None:
        """Gives up on the call: it stops within a few milliseconds."""

class Completions:
    """Results of background calls for one event loop (used by ``Driver.arun``)."""

    def __init__(self) -> None: ...
    def fileno(self) -> int: ...
    def drain(self) -> List[Tuple[int, Optional[Result], Optional[MegavisorError]]]: ...

class Driver:
    """An embedded or connected driver; use ``megavisor.embedded()`` / ``megavisor.connect()``."""

    def __init__(
        self,
        mode: Literal["embedded", "connected"],
        path: Optional[_Path] = None,
        trusted_key: Optional[_Path] = None,
        *,
        default_bundle: Optional[_Path] = None,
        default_key: Optional[_Path] = None,
        max_concurrency: Optional[int] = None,
        allow_binaries: Optional[List[_Path]] = None,
        allowlist: Optional[_Path] = None,
        allow_digests: Optional[List[str]] = None,
        native_env: Optional[List[str]] = None,
        policy_path: Optional[_Path] = None,
        policy_json: Optional[str] = None,
    ) -> None: ...
    @property
    def mode(self) -> Literal["embedded", "connected"]: ...
    def run(
        self,
        tool: str,
        args: Sequence[str] = (),
        *,
        stdin: Optional[bytes] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        memory: Optional[int] = None,
        execution_id: Optional[str] = None,
        params: Optional[Mapping[str, Any]] = None,
        mounts: Optional[Sequence[str]] = None,
        session: Optional[int] = None,
    ) -> Result:
        """Runs a tool and waits for it with the GIL released.

        ``timeout`` is in seconds (millisecond resolution), ``memory`` in bytes; ``params`` (instead of ``args``) is
        rendered to argv and stdin through the tool's argument schema; ``mounts`` are host
        directories the tool sees, each ``"HOST:GUEST[:ro|:rw]"`` (read-only without a mode);
        ``session`` runs it in that session's instance (``open_session_id``).
        Raises a subclass of ``MegavisorError`` when the call did not run to an exit.
        """
    def submit(
        self,
        completions: Completions,
        token: int,
        tool: str,
        args: Sequence[str] = (),
        *,
        stdin: Optional[bytes] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        memory: Optional[int] = None,
        execution_id: Optional[str] = None,
        params: Optional[Mapping[str, Any]] = None,
        mounts: Optional[Sequence[str]] = None,
        session: Optional[int] = None,
    ) -> Pending: ...
    def open_session_id(self, tool: str) -> int:
        """Opens a session of ``tool``; returns its id."""
    def close_session(self, session: int) -> None:
        """Closes a session; raises ``SessionGone`` when it is not there."""
    def tools(self) -> List[Tool]: ...

def error_kinds() -> List[Dict[str, Any]]:
    """The one table of error kinds: name, python_class, exit_code, grpc_code, c_status."""
    ...
