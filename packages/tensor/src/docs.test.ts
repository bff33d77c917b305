// Keeps the documented error table (docs/concepts/errors.md) in step with ERROR_CODES.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from './errors';

describe('error code documentation', () => {
  it('lists every code with its meaning, and nothing else', () => {
    const page = readFileSync(new URL('../../../docs/concepts/errors.md', import.meta.url), 'utf8');
    const rows = [...page.matchAll(/^\| `([A-Z_]+)` \| (.+) \|$/gm)].map((m) => [
      m[1],
      m[2]!.replace(/`/g, ''),
    ]);
    expect(Object.fromEntries(rows)).toEqual(ERROR_CODES);
  });
});
