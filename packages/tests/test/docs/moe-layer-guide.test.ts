// Runs the example of the MoE layer guide (docs/guide/moe-layer.md) as written, and checks that it
// releases every tensor it creates.
import { readFileSync } from 'node:fs';
import * as balance from '@switchyard/balance';
import * as experts from '@switchyard/experts';
import * as routing from '@switchyard/routing';
import * as tensor from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';

const modules: Record<string, Record<string, unknown>> = {
  '@switchyard/balance': balance,
  '@switchyard/experts': experts,
  '@switchyard/routing': routing,
  '@switchyard/tensor': tensor,
};

describe('MoE layer guide', () => {
  it('runs its example', async () => {
    const page = readFileSync(new URL('../../../../docs/guide/moe-layer.md', import.meta.url), 'utf8');
    const code = /```ts\n([\s\S]*?)```/.exec(page)![1]!;
    const names: string[] = [];
    const values: unknown[] = [];
    for (const m of code.matchAll(/^import \{([^}]+)\} from '([^']+)';$/gm)) {
      for (const name of m[1]!.split(',').map((s) => s.trim())) {
        expect(modules[m[2]!]?.[name], `${name} from ${m[2]}`).toBeDefined();
        names.push(name);
        values.push(modules[m[2]!]![name]);
      }
    }
    const logged: unknown[][] = [];
    const body = code.replace(/^import .*$/gm, '');
    const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor as new (
      ...args: string[]
    ) => (...a: unknown[]) => Promise<void>;
    const run = new AsyncFunction(...names, 'console', body);
    await tensor.expectNoLeaks(
      () => run(...values, { log: (...a: unknown[]) => logged.push(a) }),
      'the guide example',
    );
    expect(logged[0]).toEqual([
      64 * 8 + 8 * 3 * 64 * 128 + 3 * 64 * 128 + 64,
      64 * 8 + 2 * 3 * 64 * 128 + 3 * 64 * 128 + 64,
      2 * (64 * 8 + 2 * 3 * 64 * 128 + 3 * 64 * 128 + 64),
    ]);
    expect(logged[1]![0]).toMatchObject({ dropRate: expect.any(Number), maxVio: expect.any(Number) });
  });
});
