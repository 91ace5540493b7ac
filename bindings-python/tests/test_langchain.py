"""megavisor tools inside a real LangGraph graph: a fake chat model (langchain-core, no
network) asks for tool calls, LangGraph's ToolNode runs them through megavisor."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import pytest

pytest.importorskip("langgraph", reason="pip install -r bindings-python/tests/requirements.txt")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import ToolNode, tools_condition  # noqa: E402

import megavisor  # noqa: E402
import megavisor.langchain  # noqa: E402
from conftest import Supervisor  # noqa: E402

TOOL_CALLS: List[Dict[str, Any]] = [
    {"name": "echo", "args": {"words": ["hello", "graph"]}, "id": "call-echo"},
    {"name": "wc", "args": {"lines": True, "stdin": "a\nb\nc\n"}, "id": "call-wc"},
    {"name": "calc", "args": {"expression": "2^10 + 1"}, "id": "call-calc"},
    {"name": "calc", "args": {"expression": "1 +"}, "id": "call-bad-calc"},
    {"name": "echo", "args": {"bogus": 1}, "id": "call-bad-args"},
]


def graph(driver: megavisor.Driver) -> Any:
    """agent -> tools -> agent -> END, with a model that asks for TOOL_CALLS once."""
    model = GenericFakeChatModel(
        messages=iter([AIMessage(content="", tool_calls=TOOL_CALLS), AIMessage(content="done")])
    )
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    builder.add_node("tools", ToolNode(megavisor.langchain.tools(driver)))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile()


def check(messages: List[Any]) -> None:
    replies = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    assert replies.keys() == {call["id"] for call in TOOL_CALLS}
    assert replies["call-echo"].content == "hello graph\n"
    assert replies["call-echo"].status == "success"
    assert isinstance(replies["call-echo"].artifact, megavisor.Result)
    assert replies["call-wc"].content.strip() == "3"
    assert replies["call-calc"].content.strip() == "1025"
    assert replies["call-bad-calc"].status == "error"
    assert "calc exited with status" in replies["call-bad-calc"].content
    assert replies["call-bad-args"].status == "error"
    assert "bad_request" in replies["call-bad-args"].content
    assert messages[-1].content == "done"


@pytest.fixture(params=["embedded", "connected"])
def driver(request: pytest.FixtureRequest, supervisor: Supervisor) -> megavisor.Driver:
    if request.param == "embedded":
        return megavisor.embedded()
    return megavisor.connect(supervisor.socket)


def test_tools_carry_the_manifest_description_and_schema(driver: megavisor.Driver) -> None:
    tools = {tool.name: tool for tool in megavisor.langchain.tools(driver)}
    manifest = {tool.name: tool for tool in driver.tools()}
    assert tools.keys() == manifest.keys()
    assert tools["calc"].description == manifest["calc"].description
    schema = tools["calc"].args
    assert "expression" in schema and "x-argv" not in schema["expression"]


def test_tool_node_in_a_graph(driver: megavisor.Driver) -> None:
    state = graph(driver).invoke({"messages": [HumanMessage(content="use the tools")]})
    check(state["messages"])


def test_tool_node_in_a_graph_async(driver: megavisor.Driver) -> None:
    async def main() -> Any:
        return await graph(driver).ainvoke({"messages": [HumanMessage(content="go")]})

    check(asyncio.run(main())["messages"])


def test_unknown_names_are_refused(driver: megavisor.Driver) -> None:
    with pytest.raises(ValueError, match="nope"):
        megavisor.langchain.tools(driver, ["echo", "nope"])
    assert [t.name for t in megavisor.langchain.tools(driver, ["wc", "echo"])] == ["wc", "echo"]


CODE = """import csv
rows = list(csv.DictReader(open('/data/sales.csv')))
best = max(rows, key=lambda r: int(r['units']))
print(best['region'], sum(int(r['units']) for r in rows))
"""


def test_a_model_answers_from_a_mounted_csv_with_the_python_tool(
    driver: megavisor.Driver, tmp_path: Any
) -> None:
    (tmp_path / "sales.csv").write_text("region,units\nnorth,12\nsouth,30\neast,7\n")
    calls = [
        {"name": "python", "args": {"code": CODE}, "id": "call-python"},
        {"name": "js", "args": {"code": "input.map(r => r.units).reduce((a, b) => a + b)",
                                "input": [{"units": 12}, {"units": 30}]}, "id": "call-js"},
    ]
    model = GenericFakeChatModel(
        messages=iter([AIMessage(content="", tool_calls=calls), AIMessage(content="south")])
    )
    tools = megavisor.langchain.tools(driver, ["python", "js"], mounts=[f"{tmp_path}:/data"])
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    state = builder.compile().invoke({"messages": [HumanMessage(content="best region?")]})
    replies = {m.tool_call_id: m for m in state["messages"] if isinstance(m, ToolMessage)}
    assert replies["call-python"].status == "success", replies["call-python"].content
    assert replies["call-python"].content == "south 49\n"
    assert replies["call-js"].content == "42\n"


def test_code_that_fails_is_an_error_message_the_model_can_read(driver: megavisor.Driver) -> None:
    (python,) = megavisor.langchain.tools(driver, ["python"])
    message = python.invoke(
        {"type": "tool_call", "name": "python", "id": "c1", "args": {"code": "1/0"}}
    )
    assert message.status == "error"
    assert "ZeroDivisionError: division by zero" in message.content


def test_with_keep_state_step_2_uses_a_function_defined_in_step_1(
    driver: megavisor.Driver,
) -> None:
    steps = iter(
        [
            AIMessage(content="", tool_calls=[{"name": "python", "id": "define", "args": {
                "code": "def fahrenheit(c):\n    return c * 9 / 5 + 32\nprint('defined')"}}]),
            AIMessage(content="", tool_calls=[{"name": "python", "id": "use", "args": {
                "code": "print(fahrenheit(100))"}}]),
            AIMessage(content="212"),
        ]
    )
    model = GenericFakeChatModel(messages=steps)
    tools = megavisor.langchain.tools(driver, ["python", "wc"], keep_state=True)
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    state = builder.compile().invoke({"messages": [HumanMessage(content="100 C in F?")]})
    replies = {m.tool_call_id: m for m in state["messages"] if isinstance(m, ToolMessage)}
    assert replies["define"].content == "defined\n"
    assert replies["use"].status == "success", replies["use"].content
    assert replies["use"].content == "212.0\n"
    # A tool that cannot keep state still runs, statelessly.
    wc = tools[1].invoke({"type": "tool_call", "name": "wc", "id": "w", "args": {"lines": True, "stdin": "a\n"}})
    assert wc.content.strip() == "1"
