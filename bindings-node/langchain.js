'use strict';
/**
 * megavisor tools as LangChain.js tools (needs `@langchain/core`).
 *
 *   const { ToolNode } = require('@langchain/langgraph/prebuilt');
 *   const node = new ToolNode(require('megavisor/langchain').tools(embedded()));
 *
 * Each tool carries the manifest's name, description and JSON Schema of its arguments; the
 * arguments a model sends are rendered to argv and stdin through that schema (never a shell).
 * A tool's stdout is the tool message's content and its megavisor result the message's
 * artifact. A non-zero exit or a call megavisor stopped becomes an error message the model
 * can read, not an exception that ends the graph.
 */

const { tool: langchainTool } = require('@langchain/core/tools');
const { MegavisorError } = require('./index.js');

/** The schema without megavisor's `x-argv` rendering hints, which mean nothing to a model. */
function schemaForModels(schema) {
  if (Array.isArray(schema)) return schema.map(schemaForModels);
  if (schema === null || typeof schema !== 'object') return schema;
  return Object.fromEntries(
    Object.entries(schema).filter(([key]) => key !== 'x-argv').map(([key, value]) => [key, schemaForModels(value)]),
  );
}

function asLangchainTool(driver, info, mounts, keepState) {
  // The tool's session once opened (null for a tool that cannot have one).
  let kept;
  const session = () => {
    if (!keepState) return undefined;
    if (kept === undefined) {
      try {
        kept = driver.openSession(info.name);
      } catch (err) {
        if (!(err instanceof MegavisorError && err.code === 'BAD_REQUEST')) throw err;
        kept = null;
      }
    }
    return kept?.id;
  };
  return langchainTool(
    async (params) => {
      let result;
      try {
        result = await driver.run(info.name, [], { params, mounts, session: session() });
      } catch (err) {
        if (err instanceof MegavisorError) {
          return [`Error: ${info.name}: ${err.message} (${err.kind})`, err.partial];
        }
        throw err;
      }
      if (!result.ok) {
        const detail = result.stderrTail.toString('utf8').trim();
        return [`Error: ${info.name} exited with status ${result.exitCode}: ${detail}`, result];
      }
      return [result.stdout.toString('utf8'), result];
    },
    {
      name: info.name,
      description: info.description,
      schema: schemaForModels(info.schema),
      responseFormat: 'content_and_artifact',
    },
  );
}

/**
 * The driver's tools (or those in `names`, in that order) as LangChain tools; every call of
 * a tool that may read files (an `fs:` capability) sees `options.mounts`
 * (`HOST:GUEST[:ro|:rw]`), e.g. the files the `python` code tool should read. With
 * `options.keepState`, each code tool (`python`, `js`: one that can have a session) keeps one
 * session, opened at its first call, so a later step can use what an earlier one defined.
 */
function tools(driver, names, options = {}) {
  const { mounts, keepState } = options;
  const available = new Map(driver.tools().map((info) => [info.name, info]));
  const chosen = names === undefined ? [...available.keys()] : names;
  const missing = chosen.filter((name) => !available.has(name));
  if (missing.length > 0) throw new Error(`no such megavisor tools: ${missing.join(', ')}`);
  return chosen.map((name) => {
    const info = available.get(name);
    const readsFiles = info.capabilities.some((capability) => capability.startsWith('fs:'));
    return asLangchainTool(driver, info, readsFiles ? mounts : undefined, keepState);
  });
}

module.exports = { tools };
