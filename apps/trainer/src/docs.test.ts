import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { configOptions } from './config/help';

const guide = fileURLToPath(new URL('../../../docs/guide/trainer.md', import.meta.url));

describe.skipIf(!existsSync(guide))('docs/guide/trainer.md', () => {
  it('lists every option with its current default', () => {
    const text = readFileSync(guide, 'utf8');
    for (const o of configOptions()) {
      const row = text.split('\n').find((l) => l.startsWith(`| \`${o.key}\` |`));
      expect(row, o.key).toBeDefined();
      const shown = row!.split(' | ')[2]!.replace(/`/g, '');
      expect(shown, o.key).toBe(o.default);
    }
  });
});
