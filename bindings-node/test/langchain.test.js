'use strict';
// megavisor tools inside a real LangGraph.js graph: a fake chat model from @langchain/core
// (no network) asks for tool calls, LangGraph's ToolNode runs them through megavisor.

const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { AIMessage, AIMessageChunk, HumanMessage, ToolMessage } = require('@langchain/core/messages');
const { FakeStreamingChatModel, FakeListChatModel } = require('@langchain/core/utils/testing');
const { StateGraph, MessagesAnnotation, START, END } = require('@langchain/langgraph');
const { ToolNode, toolsCondition } = require('@langchain/langgraph/prebuilt');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const megavisor = require('megavisor');
const { tools } = require('megavisor/langchain');
const { startSupervisor } = require('./helpers.js');

const TOOL_CALLS = [
  { name: 'echo', args: { words: ['hello', 'graph'] }, id: 'call-echo', type: 'tool_call' },
  { name: 'wc', args: { lines: true, stdin: 'a\nb\nc\n' }, id: 'call-wc', type: 'tool_call' },
  { name: 'calc', args: { expression: '2^10 + 1' }, id: 'call-calc', type: 'tool_call' },
  { name: 'calc', args: { expression: '1 +' }, id: 'call-bad-calc', type: 'tool_call' },
];

/** agent -> tools -> agent -> END: the model asks for TOOL_CALLS, then answers "done". */
function graph(driver) {
  const caller = new FakeStreamingChatModel({ chunks: [new AIMessageChunk({ content: '', tool_calls: TOOL_CALLS })] });
  const finisher = new FakeListChatModel({ responses: ['done'] });
  const agent = async (state) => {
    const answered = state.messages.some((m) => ToolMessage.isInstance(m));
    const model = answered ? finisher : caller;
    return { messages: [await model.invoke(state.messages)] };
  };
  return new StateGraph(MessagesAnnotation)
    .addNode('agent', agent)
    .addNode('tools', new ToolNode(tools(driver)))
    .addEdge(START, 'agent')
    .addConditionalEdges('agent', toolsCondition, ['tools', END])
    .addEdge('tools', 'agent')
    .compile();
}

for (const mode of ['embedded', 'connected']) {
  describe(`LangChain.js tools, ${mode}`, () => {
    let supervisor;
    let driver;
    before(async () => {
      supervisor = await startSupervisor(megavisor.DEFAULT_BUNDLE, ['--mount-root', os.tmpdir()]);
      driver = mode === 'embedded' ? megavisor.embedded() : megavisor.connect(supervisor.socket);
    });
    after(() => supervisor.stop());

    test('tools carry the manifest description and schema', () => {
      const converted = new Map(tools(driver).map((t) => [t.name, t]));
      const manifest = new Map(driver.tools().map((t) => [t.name, t]));
      assert.deepEqual([...converted.keys()].sort(), [...manifest.keys()].sort());
      assert.equal(converted.get('calc').description, manifest.get('calc').description);
      const schema = converted.get('calc').schema;
      assert.deepEqual(schema.required, ['expression']);
      assert.equal(schema.properties.expression['x-argv'], undefined);
    });

    test('a ToolNode in a LangGraph graph runs them', async () => {
      const state = await graph(driver).invoke({ messages: [new HumanMessage('use the tools')] });
      const replies = new Map(state.messages.filter((m) => ToolMessage.isInstance(m)).map((m) => [m.tool_call_id, m]));
      assert.deepEqual([...replies.keys()].sort(), TOOL_CALLS.map((c) => c.id).sort());
      assert.equal(replies.get('call-echo').content, 'hello graph\n');
      assert.equal(replies.get('call-echo').artifact.exitCode, 0);
      assert.equal(replies.get('call-wc').content.trim(), '3');
      assert.equal(replies.get('call-calc').content.trim(), '1025');
      assert.match(replies.get('call-bad-calc').content, /calc exited with status/);
      assert.ok(AIMessage.isInstance(state.messages.at(-1)));
      assert.equal(state.messages.at(-1).content, 'done');
    });

    test('a model answers from a mounted CSV with the code tools', async () => {
      const data = fs.mkdtempSync(path.join(os.tmpdir(), 'mv-csv-'));
      fs.writeFileSync(path.join(data, 'sales.csv'), 'region,units\nnorth,12\nsouth,30\neast,7\n');
      const code = [
        'import csv',
        "rows = list(csv.DictReader(open('/data/sales.csv')))",
        "best = max(rows, key=lambda r: int(r['units']))",
        "print(best['region'], sum(int(r['units']) for r in rows))",
      ].join('\n');
      const calls = [
        { name: 'python', args: { code }, id: 'call-python', type: 'tool_call' },
        { name: 'js', args: { code: 'input.filter(r => r.units > 10).length', input: [{ units: 12 }, { units: 3 }] }, id: 'call-js', type: 'tool_call' },
      ];
      const caller = new FakeStreamingChatModel({ chunks: [new AIMessageChunk({ content: '', tool_calls: calls })] });
      const finisher = new FakeListChatModel({ responses: ['south'] });
      const agent = async (state) => {
        const model = state.messages.some((m) => ToolMessage.isInstance(m)) ? finisher : caller;
        return { messages: [await model.invoke(state.messages)] };
      };
      const app = new StateGraph(MessagesAnnotation)
        .addNode('agent', agent)
        .addNode('tools', new ToolNode(tools(driver, ['python', 'js'], { mounts: [`${data}:/data`] })))
        .addEdge(START, 'agent')
        .addConditionalEdges('agent', toolsCondition, ['tools', END])
        .addEdge('tools', 'agent')
        .compile();
      const state = await app.invoke({ messages: [new HumanMessage('best region?')] });
      const replies = new Map(state.messages.filter((m) => ToolMessage.isInstance(m)).map((m) => [m.tool_call_id, m]));
      assert.equal(replies.get('call-python').content, 'south 49\n');
      assert.equal(replies.get('call-js').content, '1\n');
      fs.rmSync(data, { recursive: true });
    });

    test('with keepState, step 2 uses a function defined in step 1', async () => {
      const [python] = tools(driver, ['python'], { keepState: true });
      const define = await python.invoke({ type: 'tool_call', name: 'python', id: 'd', args: { code: 'def twice(x):\n    return 2 * x' } });
      assert.equal(define.content, '');
      const use = await python.invoke({ type: 'tool_call', name: 'python', id: 'u', args: { code: 'print(twice(21))' } });
      assert.equal(use.content, '42\n');
    });

    test('unknown names are refused', () => {
      assert.throws(() => tools(driver, ['echo', 'nope']), /nope/);
      assert.deepEqual(tools(driver, ['wc', 'echo']).map((t) => t.name), ['wc', 'echo']);
    });
  });
}
