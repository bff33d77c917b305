// The workspace commands' launchers (bins.mjs) and the arguments `npm run train` passes (run.mjs).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { linkBins, staleBuilds, workspaceBins } from './bins.mjs';
import { checkChangesets } from './check-changesets.mjs';
import { trainArgs } from './run.mjs';

/** A workspace of two packages: `app` (bin `hello`, depends on `lib`) and `lib` (no bin). */
function fakeWorkspace() {
  const root = mkdtempSync(join(tmpdir(), 'switchyard-bins-'));
  const write = (path, text) => {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), text);
  };
  write('pnpm-workspace.yaml', 'packages:\n  - packages/*\n  - apps/*\n\nautoInstallPeers: false\n');
  write(
    'packages/lib/package.json',
    JSON.stringify({ name: '@x/lib', scripts: { build: 'tsup' }, dependencies: {} }),
  );
  write('packages/lib/src/index.ts', 'export const a = 1;\n');
  write('packages/lib/src/index.test.ts', 'test\n');
  write(
    'apps/app/package.json',
    JSON.stringify({
      name: 'app',
      bin: { hello: './dist/cli.js' },
      scripts: { build: 'tsup' },
      dependencies: { '@x/lib': 'workspace:*', zod: '^4' },
    }),
  );
  write('apps/app/src/cli.ts', 'console.log(1);\n');
  return root;
}

/** Sets a file's modification time to `sec` seconds after the epoch. */
function age(root, path, sec) {
  utimesSync(join(root, path), sec, sec);
}

describe('workspace commands', () => {
  const roots = [];
  after(() => {
    for (const r of roots) rmSync(r, { recursive: true, force: true });
  });

  it('lists every bin of every workspace package, switchyard-train and switchyard-plan among them', () => {
    const names = workspaceBins().map((b) => b.name);
    assert.ok(names.includes('switchyard-train'), names.join(', '));
    assert.ok(names.includes('switchyard-plan'), names.join(', '));
    const root = fakeWorkspace();
    roots.push(root);
    assert.deepEqual(
      workspaceBins(root).map((b) => [b.name, b.packageName]),
      [['hello', 'app']],
    );
  });

  it('writes a launcher per command into node_modules/.bin', () => {
    const root = fakeWorkspace();
    roots.push(root);
    assert.deepEqual(linkBins(root), ['hello']);
    const launcher = readFileSync(join(root, 'node_modules/.bin/hello'), 'utf8');
    assert.match(launcher, /^#!\/usr\/bin\/env node\n/);
    assert.match(launcher, /runBin\("hello"\)/);
  });

  it('rebuilds only when a source file is newer than the build, dependencies first', () => {
    const root = fakeWorkspace();
    roots.push(root);
    assert.deepEqual(staleBuilds('app', root), ['@x/lib', 'app'], 'nothing built yet');
    for (const dir of ['packages/lib', 'apps/app']) {
      mkdirSync(join(root, dir, 'dist'), { recursive: true });
      writeFileSync(join(root, dir, 'dist/index.js'), '');
      age(root, `${dir}/dist/index.js`, 2000);
      age(root, `${dir}/package.json`, 1000);
    }
    age(root, 'packages/lib/src/index.ts', 1000);
    age(root, 'packages/lib/src/index.test.ts', 3000);
    age(root, 'apps/app/src/cli.ts', 1000);
    assert.deepEqual(
      staleBuilds('app', root),
      [],
      'built after every source; a newer test file is no source',
    );
    age(root, 'packages/lib/src/index.ts', 3000);
    assert.deepEqual(staleBuilds('app', root), ['@x/lib'], 'a dependency changed');
    assert.deepEqual(staleBuilds('@x/lib', root), ['@x/lib']);
  });
});

describe('npm run train -- ARGS', () => {
  it('adds --preset small only to a new training run that names no preset, config or run', () => {
    assert.deepEqual(trainArgs([]), ['--preset', 'small']);
    assert.deepEqual(trainArgs(['--set', 'train.steps=5']), ['--preset', 'small', '--set', 'train.steps=5']);
    assert.deepEqual(trainArgs(['train', '--out', 'x']), ['--preset', 'small', 'train', '--out', 'x']);
    for (const args of [
      ['--preset', 'tiny'],
      ['--preset=tiny'],
      ['--config', 'my.yaml'],
      ['--resume', 'runs/x'],
      ['--version'],
      ['-h'],
      ['--out', 'x', 'experiment', 'capacity'],
      ['generate', '--checkpoint', 'c', '--prompt', 'p'],
      ['eval', '--checkpoint', 'c', '--text', 't'],
    ]) {
      assert.deepEqual(trainArgs(args), args, args.join(' '));
    }
  });
});

describe('changesets', () => {
  it('finds packages outside the workspace, bad bumps and files mixing private and published packages', () => {
    const root = fakeWorkspace();
    mkdirSync(join(root, '.changeset'));
    const write = (name, front) =>
      writeFileSync(join(root, '.changeset', name), `---\n${front}\n---\n\nText.\n`);
    write('good.md', '"@x/lib": minor');
    write('mixed.md', '"@x/lib": minor\n"app": patch');
    write('unknown.md', '"@x/nope": patch\n"@x/lib": huge');
    writeFileSync(join(root, 'apps/app/package.json'), JSON.stringify({ name: 'app', private: true }));
    assert.deepEqual(checkChangesets(root), [
      'mixed.md: names private (app) and published packages; split it in two',
      'unknown.md: @x/nope is not a workspace package',
      'unknown.md: @x/lib: expected major, minor or patch, got huge',
    ]);
    rmSync(root, { recursive: true, force: true });
  });

  it('passes on this repository', () => {
    assert.deepEqual(checkChangesets(join(import.meta.dirname, '..')), []);
  });
});
