/** Formats zod issues as "path.to.key: what was expected, what arrived", one per line. */
import { describeValue } from '@switchyard/tensor';
import type { z } from 'zod';

function valueAt(input: unknown, path: readonly PropertyKey[]): { found: boolean; value: unknown } {
  let v: unknown = input;
  for (const k of path) {
    if (v === null || typeof v !== 'object' || !(k in (v as object)))
      return { found: false, value: undefined };
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return { found: true, value: v };
}

export function formatZodError(error: z.ZodError, input?: unknown): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.map(String).join('.');
      if (issue.code === 'unrecognized_keys') {
        const at = path ? `${path}.` : '';
        return issue.keys.map((k) => `  ${at}${k}: unknown key (not part of the schema)`).join('\n');
      }
      let msg = issue.message.replace(/^Invalid input: /, '').replace(/^Invalid option: /, '');
      if (input !== undefined && !/received/.test(msg)) {
        const { found, value } = valueAt(input, issue.path);
        msg += found ? `, received ${describeValue(value)}` : ', received nothing';
      }
      return `  ${path || '(root)'}: ${msg}`;
    })
    .join('\n');
}
