import type { StructuredToolInterface } from '@langchain/core/tools';
import type { Driver } from './index';

/** Options of `tools`. */
export interface ToolsOptions {
  /** Host directories every call of a tool that may read files sees, each `HOST:GUEST[:ro|:rw]`. */
  mounts?: string[];
  /** Each code tool keeps one session, so a later step can use what an earlier one defined. */
  keepState?: boolean;
}

/**
 * The driver's tools (or those in `names`, in that order) as LangChain tools, among them the
 * code-execution tools `python` and `js`.
 */
export function tools(driver: Driver, names?: string[], options?: ToolsOptions): StructuredToolInterface[];
