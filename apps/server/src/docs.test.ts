import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { GENERATE_FLAGS, SERVE_FLAGS } from './flags';
import { ServerMetrics } from './metrics';

const guide = fileURLToPath(new URL('../../../docs/guide/serving.md', import.meta.url));

describe.skipIf(!existsSync(guide))('docs/guide/serving.md', () => {
  const text = existsSync(guide) ? readFileSync(guide, 'utf8') : '';

  it('lists every flag with its current default', () => {
    const [serveTable, generateTable] = text.split('`generate` (`switchyard-serve generate');
    for (const [table, flags] of [
      [serveTable!, SERVE_FLAGS],
      [generateTable!, GENERATE_FLAGS],
    ] as const) {
      for (const f of flags) {
        const row = table.split('\n').find((l) => l.startsWith(`| \`--${f.flag}\` |`));
        expect(row, f.flag).toBeDefined();
        const [, value, shown] = row!.split(' | ');
        expect(value, f.flag).toBe(f.value);
        expect(shown, f.flag).toBe(f.default);
      }
    }
  });

  it('describes every metric the server exports', async () => {
    const metrics = new ServerMetrics([1], 4, () => ({
      running: 0,
      waiting: 0,
      kvUsedBytes: 0,
      kvReservedBytes: 0,
      kvBudgetBytes: 1,
      draining: false,
    }));
    const names = metrics.registry
      .getMetricsAsArray()
      .map((m) => m.name)
      .filter((n) => !n.startsWith('switchyard_process_'));
    expect(names.length).toBeGreaterThan(10);
    for (const name of names) expect(text, name).toContain(`| \`${name}\` |`);
  });
});
