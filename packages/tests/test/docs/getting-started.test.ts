// Runs the commands of the Getting started walk-through (docs/guide/index.md) as a user types them
// after setting up a clone: each `npx switchyard-...` line of its shell blocks, in order, in a new
// folder, through the commands `npx` finds in the repository's node_modules/.bin. The first training
// run gets small data settings added (a few texts of two genres) to stay fast; the printed results
// must have the shape the page shows. `node scripts/fresh-clone.mjs` runs the same page on a fresh
// clone, setup command included.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../../../', import.meta.url));
const page = readFileSync(join(root, 'docs/guide/index.md'), 'utf8');

/** The `npx switchyard-...` lines of the page's shell blocks, in order, without comments. */
function commands(): string[][] {
  const blocks = [...page.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
  return blocks
    .flatMap((b) => b.split('\n'))
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter((l) => l.startsWith('npx switchyard-'))
    .map((l) => [...l.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!).slice(1));
}

const SMALL = ['data.genres=[news, humor]', 'data.maxTextsPerDomain=4', 'log.progress=lines'];

// One pass is enough: the commands start their own processes on the default backend.
describe.skipIf(process.env.SWITCHYARD_BACKEND === 'cpu')('Getting started (docs/guide/index.md)', () => {
  const cwd = mkdtempSync(join(tmpdir(), 'switchyard-start-'));
  afterAll(() => rmSync(cwd, { recursive: true, force: true }));

  it('has the commands the walk-through is about', () => {
    expect(commands().map((c) => c.slice(0, 2).join(' '))).toEqual([
      'switchyard-train --preset',
      'switchyard-train generate',
      'switchyard-train --resume',
    ]);
  });

  it('runs every command of the page, each printing what the page says', () => {
    const [train, generate, resume] = commands() as [string[], string[], string[]];
    const run = (args: string[]) => {
      const [name, ...rest] = args;
      const r = spawnSync(process.execPath, [join(root, 'node_modules/.bin', name!), ...rest], {
        cwd,
        encoding: 'utf8',
        timeout: 300_000,
      });
      expect(r.status, `${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
      return r.stdout;
    };

    const trained = run([...train, ...SMALL.flatMap((s) => ['--set', s])]);
    // The two closing lines, as the page shows them (numbers and the clone's path aside).
    const shown = /```text\n(final val_loss: .*)\n(checkpoint: .*)\n```/.exec(page)!;
    const last = trained.trim().split('\n').slice(-2);
    const pattern = (line: string) =>
      new RegExp(`^${line.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/\d+\\\.\d+/g, '\\d+\\.\\d+')}$`);
    expect(last[0]).toMatch(pattern(shown[1]!));
    expect(last[1]).toBe(`checkpoint: ${join(cwd, 'runs/tiny/checkpoints/final')}`);
    expect(shown[2]).toMatch(/runs\/tiny\/checkpoints\/final$/);
    for (const file of ['report.md', 'metrics.jsonl', 'eval.jsonl', 'plots/loss.svg']) {
      expect(existsSync(join(cwd, 'runs/tiny', file)), file).toBe(true);
    }
    expect(readFileSync(join(cwd, 'runs/tiny/report.md'), 'utf8')).toContain('## Sample');

    const prompt = generate[generate.indexOf('--prompt') + 1]!;
    expect(run(generate)).toMatch(new RegExp(`^${prompt}.+\\n$`, 's'));

    expect(run(resume)).toMatch(/extending the run from 20 to 40 steps/);
    expect(readFileSync(join(cwd, 'runs/tiny/metrics.jsonl'), 'utf8').trim().split('\n')).toHaveLength(40);
  }, 600_000);
});
