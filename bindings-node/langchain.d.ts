import type { StructuredToolInterface } from '@langchain/core/tools';
import type { Driver } from './index';

/** The driver's tools (or those in `names`, in that order) as LangChain tools. */
export function tools(driver: Driver, names?: string[]): StructuredToolInterface[];
