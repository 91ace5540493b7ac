"""megavisor: run WebAssembly tools in microseconds, each call in a fresh sandbox.

Two drivers with the same methods, results and exceptions::

    import megavisor

    eng = megavisor.embedded()     # the engine in this process, on the bundle shipped here
    cli = megavisor.connect()      # a running `megavisor serve`, through its shared-memory ring

    r = eng.run("echo", ["hello"])            # r.exit_code, r.stdout, r.ok, r.timings, ...
    r = await cli.arun("wc", ["-l"], stdin=b"a\\nb\\n")
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import weakref
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from . import errors
from ._native import Completions as _Completions
from ._native import Driver as _NativeDriver
from ._native import Result, Timings, Tool, Usage
from .errors import (
    BadRequest,
    BadSignature,
    Busy,
    Cancelled,
    ConnectionLost,
    HashMismatch,
    Internal,
    MegavisorError,
    MemoryLimit,
    NotAllowed,
    Protocol,
    SessionGone,
    ShuttingDown,
    Timeout,
    ToolNotFound,
    Trap,
)

__all__ = [
    "Driver",
    "Session",
    "Result",
    "Timings",
    "Tool",
    "Usage",
    "embedded",
    "connect",
    "DEFAULT_BUNDLE",
    "DEFAULT_TRUSTED_KEY",
    "errors",
    *errors.__all__,
]

_PACKAGE = Path(__file__).resolve().parent
DEFAULT_BUNDLE = _PACKAGE / "bundle"
"""The bundle shipped in this package (``$MEGAVISOR_BUNDLE`` overrides it)."""
# Beside the bundle, not in it: a key inside the bundle it verifies is never trusted.
DEFAULT_TRUSTED_KEY = _PACKAGE / "bundle.pub"
"""The key that signed it (``$MEGAVISOR_TRUSTED_KEY`` overrides it)."""

PathLike = Union[str, "os.PathLike[str]"]


class Driver(_NativeDriver):
    """An embedded or connected megavisor. Safe to share between threads.

    ``run`` waits for the tool on the calling thread with the GIL released; ``arun`` is its
    coroutine twin, which leaves the event loop free while the tool runs. Both raise a subclass of
    ``MegavisorError`` when a call does not run to an exit; a tool exiting non-zero is a
    ``Result`` with ``ok == False``.
    """

    async def arun(
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
        """Runs a tool without waiting for it on the event loop (see ``run``).

        Connected, sending waits while the connection already has its maximum of calls in
        flight (32 by default). Cancelling the awaiting task (``task.cancel()``,
        ``asyncio.wait_for`` running out) gives up on the call: the tool is stopped within a
        few milliseconds and its place freed.
        """
        loop = asyncio.get_running_loop()
        completions = _completions_of(loop)
        future: asyncio.Future[Result] = loop.create_future()
        token = completions.add(future)
        try:
            pending = self.submit(
                completions.native,
                token,
                tool,
                list(args),
                stdin=stdin,
                env=dict(env) if env is not None else None,
                timeout=timeout,
                memory=memory,
                execution_id=execution_id,
                params=params,
                mounts=list(mounts) if mounts is not None else None,
                session=session,
            )
        except BaseException:
            completions.discard(token)
            raise
        try:
            return await future
        except asyncio.CancelledError:
            completions.discard(token)
            pending.cancel()
            raise

    def open_session(self, tool: str) -> "Session":
        """Opens a session of ``tool`` (an entry like ``python`` or ``js``): one instance
        kept alive across the session's calls, so what one call defines is there in the next.

        A session holds one of the pool's places until it is closed, idle too long, or ended
        by a call that failed other than by exiting (a timeout, the memory limit, a trap);
        a call on it after that raises ``SessionGone``. Use it as a context manager to
        close it at the end.
        """
        return Session(self, tool, self.open_session_id(tool))

    def __repr__(self) -> str:
        return f"<megavisor.Driver {self.mode}>"


class Session:
    """One instance of a tool kept alive across calls (``Driver.open_session``). Its calls
    run one at a time; each takes the same arguments as ``Driver.run``."""

    def __init__(self, driver: Driver, tool: str, session_id: int) -> None:
        self.driver = driver
        self.tool = tool
        self.id = session_id

    def run(self, args: Sequence[str] = (), **options: Any) -> Result:
        """Runs the session's tool in its instance (see ``Driver.run``)."""
        return self.driver.run(self.tool, args, session=self.id, **options)

    async def arun(self, args: Sequence[str] = (), **options: Any) -> Result:
        """Runs the session's tool in its instance without blocking the event loop."""
        return await self.driver.arun(self.tool, args, session=self.id, **options)

    def close(self) -> None:
        """Ends the session (``SessionGone`` when it already has ended)."""
        self.driver.close_session(self.id)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.close()
        except SessionGone:
            pass

    def __repr__(self) -> str:
        return f"<megavisor.Session {self.tool} {self.id:016x}>"


def embedded(
    bundle: Optional[PathLike] = None,
    *,
    trusted_key: Optional[PathLike] = None,
    max_concurrency: Optional[int] = None,
    allow_binaries: Optional[Sequence[PathLike]] = None,
    allowlist: Optional[PathLike] = None,
    allow_digests: Optional[Sequence[str]] = None,
    native_env: Optional[Sequence[str]] = None,
    policy: Optional[Union[PathLike, Mapping[str, Any]]] = None,
) -> Driver:
    """Verifies a bundle and loads it into this process.

    ``bundle`` defaults to ``$MEGAVISOR_BUNDLE``, else the bundle shipped in this package;
    ``trusted_key`` to ``$MEGAVISOR_TRUSTED_KEY``, else the key that signed it. Raises
    ``HashMismatch`` or ``BadSignature`` (naming the file, digests or key) if it fails
    verification.

    Native tools (a tool named by absolute path) run only if allowed: by path
    (``allow_binaries``), by an allowlist file (``allowlist``) or by SHA-256/BLAKE3 digest
    (``allow_digests``); ``native_env`` names the variables (or ``PREFIX*``) a call may
    pass them. Embedded, they run as plain processes unless the policy enables the sandbox
    (which needs root).

    ``policy`` is the operator's policy: the path of a TOML file (the format of
    ``docs/policy.example.toml``), or the same structure as a dict, e.g.
    ``{"limits": {"max_timeout": "5s"}, "native": {"binaries": ["/usr/bin/wc"]}}``. The
    keyword arguments above override single keys of it. A malformed policy raises
    ``BadRequest`` naming the file (or ``<inline>``) and the key.
    """
    policy_path: Optional[PathLike] = None
    policy_json: Optional[str] = None
    if isinstance(policy, Mapping):
        policy_json = json.dumps(policy)
    elif policy is not None:
        policy_path = policy
    return Driver(
        "embedded",
        bundle,
        trusted_key,
        default_bundle=DEFAULT_BUNDLE,
        default_key=DEFAULT_TRUSTED_KEY,
        max_concurrency=max_concurrency,
        allow_binaries=list(allow_binaries) if allow_binaries is not None else None,
        allowlist=allowlist,
        allow_digests=list(allow_digests) if allow_digests is not None else None,
        native_env=list(native_env) if native_env is not None else None,
        policy_path=policy_path,
        policy_json=policy_json,
    )


def connect(socket: Optional[PathLike] = None) -> Driver:
    """Connects to a running ``megavisor serve`` through its shared-memory ring.

    ``socket`` defaults to ``$MEGAVISOR_SOCKET``, else the supervisor's default socket.
    Raises ``ConnectionLost`` when nobody serves there, ``NotAllowed`` when the supervisor
    refuses this uid.
    """
    return Driver("connected", socket)


class _LoopCompletions:
    """The futures of one event loop's background calls, resolved on the loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.native = _Completions()
        self._futures: Dict[int, asyncio.Future[Result]] = {}
        self._tokens = itertools.count()
        loop.add_reader(self.native.fileno(), self._drain)

    def add(self, future: asyncio.Future[Result]) -> int:
        token = next(self._tokens)
        self._futures[token] = future
        return token

    def discard(self, token: int) -> None:
        self._futures.pop(token, None)

    def _drain(self) -> None:
        for token, result, error in self.native.drain():
            future = self._futures.pop(token, None)
            if future is None or future.done():
                continue  # cancelled by its caller
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


_LOOPS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopCompletions]" = (
    weakref.WeakKeyDictionary()
)


def _completions_of(loop: asyncio.AbstractEventLoop) -> _LoopCompletions:
    completions = _LOOPS.get(loop)
    if completions is None:
        completions = _LOOPS[loop] = _LoopCompletions(loop)
    return completions
