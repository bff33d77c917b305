// Runs the examples of the MoE layer guide (docs/guide/moe-layer.md) as written, and checks that they
// release every tensor they create.
import { readFileSync } from 'node:fs';
import * as balance from '@switchyard/balance';
import * as experts from '@switchyard/experts';
import * as routing from '@switchyard/routing';
import * as tensor from '@switchyard/tensor';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const modules: Record<string, Record<string, unknown>> = {
  '@switchyard/balance': balance,
  '@switchyard/experts': experts,
  '@switchyard/routing': routing,
  '@switchyard/tensor': tensor,
};

/** The page's ```ts blocks, in order. */
function examples(): string[] {
  const page = readFileSync(new URL('../../../../docs/guide/moe-layer.md', import.meta.url), 'utf8');
  return [...page.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

/**
 * Runs one example as written (TypeScript types stripped), with its imports bound to the packages
 * and `console.log` collected; checks that it releases every tensor it creates.
 */
async function runExample(code: string, label: string): Promise<unknown[][]> {
  const names: string[] = [];
  const values: unknown[] = [];
  for (const m of code.matchAll(/^import \{([^}]+)\} from '([^']+)';$/gm)) {
    for (const name of m[1]!.split(',').map((s) => s.trim())) {
      if (name.startsWith('type ')) continue;
      expect(modules[m[2]!]?.[name], `${name} from ${m[2]}`).toBeDefined();
      names.push(name);
      values.push(modules[m[2]!]![name]);
    }
  }
  const js = ts.transpileModule(code, {
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
  }).outputText;
  const body = js.replace(/^import .*$/gm, '').replace(/^export \{\};$/gm, '');
  const logged: unknown[][] = [];
  const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor as new (
    ...args: string[]
  ) => (...a: unknown[]) => Promise<void>;
  const run = new AsyncFunction(...names, 'console', body);
  await tensor.expectNoLeaks(() => run(...values, { log: (...a: unknown[]) => logged.push(a) }), label);
  return logged;
}

describe('MoE layer guide', () => {
  it('runs its example', async () => {
    const logged = await runExample(examples()[0]!, 'the guide example');
    expect(logged[0]).toEqual([
      64 * 8 + 8 * 3 * 64 * 128 + 3 * 64 * 128 + 64,
      64 * 8 + 2 * 3 * 64 * 128 + 3 * 64 * 128 + 64,
      2 * (64 * 8 + 2 * 3 * 64 * 128 + 3 * 64 * 128 + 64),
    ]);
    expect(logged[1]![0]).toMatchObject({ dropRate: expect.any(Number), maxVio: expect.any(Number) });
  });

  it('runs its expert-bank example: a bank of your own sees every kept row', async () => {
    const logged = await runExample(examples()[1]!, 'the expert-bank example');
    expect(logged).toEqual([[20]]);
  });
});
