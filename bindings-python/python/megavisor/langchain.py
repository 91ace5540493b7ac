"""megavisor tools as LangChain tools (``pip install 'megavisor[langchain]'``).

::

    from langgraph.prebuilt import ToolNode
    import megavisor, megavisor.langchain

    node = ToolNode(megavisor.langchain.tools(megavisor.embedded()))

Each tool carries the manifest's name, description and JSON Schema of its arguments, so a
model sees exactly what the bundle declares; the arguments it sends are rendered to argv and
stdin through that schema (never a shell). A tool's stdout is the tool message's content and
its ``megavisor.Result`` the message's artifact. A non-zero exit, or a call megavisor stopped
(timeout, memory limit, ...), becomes an error message the model can read, not an exception
that ends the graph.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from . import BadRequest, Driver, MegavisorError, Result, Session, Tool

__all__ = ["tools"]


def tools(
    driver: Driver,
    names: Optional[Sequence[str]] = None,
    *,
    mounts: Optional[Sequence[str]] = None,
    keep_state: bool = False,
) -> List[BaseTool]:
    """The driver's tools (or those in ``names``, in that order) as LangChain tools, among
    them the code-execution tools ``python`` and ``js``. Every call of a tool that may read
    files (an ``fs:`` capability) sees ``mounts`` (``"HOST:GUEST[:ro|:rw]"``), e.g. the files
    the code should read. With ``keep_state``, each code tool (``python``, ``js``: a tool
    that can have a session) keeps one session, opened at its first call, so a later step
    can use what an earlier one defined, as in a REPL."""
    available = {tool.name: tool for tool in driver.tools()}
    if names is None:
        chosen = list(available.values())
    else:
        missing = [name for name in names if name not in available]
        if missing:
            raise ValueError(f"no such megavisor tools: {', '.join(missing)}")
        chosen = [available[name] for name in names]
    return [
        _langchain_tool(driver, tool, mounts if _reads_files(tool) else None, keep_state)
        for tool in chosen
    ]


def _reads_files(tool: Tool) -> bool:
    return any(capability.startswith("fs:") for capability in tool.capabilities)


def _langchain_tool(
    driver: Driver, tool: Tool, mounts: Optional[Sequence[str]], keep_state: bool
) -> BaseTool:
    name = tool.name
    # The tool's session once opened; None for a tool that cannot have one.
    kept: List[Optional[Session]] = []

    def session_id() -> Optional[int]:
        if not keep_state:
            return None
        if not kept:
            try:
                kept.append(driver.open_session(name))
            except BadRequest:
                kept.append(None)
        session = kept[0]
        return session.id if session is not None else None

    def run(**params: Any) -> Tuple[str, Result]:
        try:
            result = driver.run(name, params=params, mounts=mounts, session=session_id())
            return _content(name, result)
        except MegavisorError as err:
            raise ToolException(f"{name}: {err} ({err.kind})") from err

    async def arun(**params: Any) -> Tuple[str, Result]:
        try:
            result = await driver.arun(
                name, params=params, mounts=mounts, session=session_id()
            )
            return _content(name, result)
        except MegavisorError as err:
            raise ToolException(f"{name}: {err} ({err.kind})") from err

    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=name,
        description=tool.description,
        args_schema=_schema_for_models(tool.schema),
        response_format="content_and_artifact",
        handle_tool_error=True,
    )


def _content(name: str, result: Result) -> Tuple[str, Result]:
    if not result.ok:
        detail = result.stderr_tail.decode("utf-8", "replace").strip()
        raise ToolException(f"{name} exited with status {result.exit_code}: {detail}")
    return result.stdout.decode("utf-8", "replace"), result


def _schema_for_models(schema: Any) -> Any:
    """The schema without megavisor's ``x-argv`` rendering hints, which mean nothing to a
    model (they stay in the manifest, where the driver renders the arguments)."""
    if isinstance(schema, dict):
        return {k: _schema_for_models(v) for k, v in schema.items() if k != "x-argv"}
    if isinstance(schema, list):
        return [_schema_for_models(item) for item in schema]
    return schema
