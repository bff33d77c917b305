// Every workspace command runs from the repository's node_modules/.bin (what `npx NAME` finds) in
// the user's own folder: `--version` prints `NAME VERSION` and nothing else, and relative paths are
// resolved against the folder the command was started in.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../../../', import.meta.url));
const { workspaceBins } = (await import(new URL('scripts/bins.mjs', `file://${root}`).href)) as {
  workspaceBins: () => { name: string; dir: string }[];
};
const cwd = mkdtempSync(join(tmpdir(), 'switchyard-cwd-'));
afterAll(() => rmSync(cwd, { recursive: true, force: true }));

function run(name: string, args: readonly string[]) {
  const launcher = join(root, 'node_modules', '.bin', name);
  expect(existsSync(launcher), `${launcher} (written by pnpm install)`).toBe(true);
  return spawnSync(process.execPath, [launcher, ...args], { cwd, encoding: 'utf8', timeout: 300_000 });
}

// The commands do not depend on the tensor backend: checked once, in the wasm pass.
describe.skipIf(process.env.SWITCHYARD_BACKEND === 'cpu')(
  'workspace commands from the repository root',
  () => {
    it.each(workspaceBins().map((b) => [b.name, b.dir] as const))('%s --version', (name, dir) => {
      const { version } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string };
      const r = run(name, ['--version']);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe(`${name} ${version}\n`);
    });

    it('resolves relative paths against the folder the command runs in', () => {
      const r = run(
        'switchyard-plan',
        'schedule --kind 1f1b --stages 2 --micro-batches 4 --format svg --out plan.svg'.split(' '),
      );
      expect(r.status, r.stderr).toBe(0);
      expect(readFileSync(join(cwd, 'plan.svg'), 'utf8')).toMatch(/^<svg/);
    });
  },
);
