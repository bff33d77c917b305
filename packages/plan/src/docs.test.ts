// Runs the code example of the switchyard-plan guide (docs/guide/plan.md) as written and checks what it prints.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import * as plan from './index';

describe('switchyard-plan guide', () => {
  it('runs its code example', async () => {
    const page = readFileSync(new URL('../../../docs/guide/plan.md', import.meta.url), 'utf8');
    const code = /```ts\n([\s\S]*?)```/.exec(page)![1]!;
    const imported = /^import \{([^}]+)\} from '@switchyard\/plan';$/m.exec(code)![1]!;
    const names = imported.split(',').map((s) => s.trim());
    const values = names.map((n) => (plan as Record<string, unknown>)[n]);
    expect(values.every((v) => typeof v === 'function')).toBe(true);
    const logged: unknown[] = [];
    const run = new Function(...names, 'console', code.replace(/^import .*$/gm, ''));
    run(...values, { log: (x: unknown) => logged.push(x) });
    expect(logged[0]).toBe(6);
    expect(logged[1]).toEqual([9, 9, 9, 9, 9, 9, 9, 9]);
    expect(logged[2]).toMatch(/^rank 0: F0 F0 /);
  });
});
