import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { optionsTable } from './config/help';

const guide = fileURLToPath(new URL('../../../docs/guide/trainer.md', import.meta.url));

describe.skipIf(!existsSync(guide))('docs/guide/trainer.md', () => {
  it('lists every option with the type, default and description --help prints', () => {
    const text = readFileSync(guide, 'utf8');
    const start = text.indexOf('| key | type | default | description |');
    expect(start, 'the options table').toBeGreaterThan(0);
    const end = text.indexOf('\n\n', start);
    const table = text.slice(start, end < 0 ? undefined : end).trimEnd();
    // On a mismatch, replace the guide's table with optionsTable() from src/config/help.ts.
    expect(table).toBe(optionsTable());
  });
});
