// Self-test of check-deps.mjs on a small workspace written to a temporary folder: every kind of
// import it must see, the ones it must skip, and both kinds of mismatch. Run by `pnpm lint`.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkPackage, checkWorkspace, packageOf } from './check-deps.mjs';

const script = fileURLToPath(new URL('./check-deps.mjs', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'check-deps-'));
after(() => rmSync(root, { recursive: true, force: true }));

function write(path, text) {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  writeFileSync(join(root, path), typeof text === 'string' ? text : JSON.stringify(text));
}

write('packages/lib/package.json', {
  name: '@w/lib',
  dependencies: { 'typed-only': '1', '@scope/re': '1', 'data-pkg': '1', dyn: '1', 'unused-dep': '1' },
  peerDependencies: { peer: '1', 'optional-peer': '1' },
});
write(
  'packages/lib/src/index.ts',
  `import type { T } from 'typed-only';
export { y } from '@scope/re/sub/path';
import { readFileSync } from 'fs';
import { join } from 'node:path';
import { self } from '@w/lib';
import { own } from './own';
// import { gone } from 'commented-out';
const s = "import { w } from 'in-a-string'";
export const load = () => import('dyn');
export const at = createRequire(import.meta.url).resolve('data-pkg/package.json');
// require.resolve('unused-dep');
export const tool = require.resolve('undeclared-tool');
`,
);
write('packages/lib/src/deep/peer.ts', `export type { P } from 'peer';\n`);
write('packages/lib/src/other.ts', `import missing from 'missing';\n`);
write('packages/lib/src/index.test.ts', `import { it } from 'test-only';\n`);
write('packages/lib/test/helpers.ts', `import 'test-only-too';\n`);

write('packages/tests/package.json', {
  name: 'w-tests',
  dependencies: { '@w/lib': 'workspace:*', extra: '1' },
  devDependencies: { vitest: '1' },
});
write(
  'packages/tests/test/a/b.test.ts',
  `import { it } from 'vitest';\nimport { x } from '@w/lib';\nimport 'undeclared';\n`,
);

write('apps/clean/package.json', {
  name: 'clean',
  dependencies: { zod: '1' },
  devDependencies: { unused: '1' },
});
write('apps/clean/src/main.ts', `import { z } from 'zod';\n`);

describe('check-deps', () => {
  it('maps specifiers to package names', () => {
    assert.equal(packageOf('@a/b/c/d'), '@a/b');
    assert.equal(packageOf('a/b'), 'a');
    assert.equal(packageOf('fs/promises'), undefined);
    assert.equal(packageOf('node:fs'), undefined);
    assert.equal(packageOf('./x'), undefined);
    assert.equal(packageOf('#internal'), undefined);
  });

  it('reports undeclared imports and unused dependencies of a package with src/, nothing else', () => {
    assert.deepEqual(checkPackage(join(root, 'packages/lib')), [
      'src/other.ts imports missing, which is not in dependencies or peerDependencies',
      'dependencies lists unused-dep, but no file in src/ imports it',
    ]);
  });

  it('checks a package without src/ on its test files, against dependencies and devDependencies', () => {
    assert.deepEqual(checkPackage(join(root, 'packages/tests')), [
      'test/a/b.test.ts imports undeclared, which is not in dependencies or devDependencies',
      'dependencies lists extra, but no file in test/ imports it',
    ]);
  });

  it('passes a package in step (devDependencies of a src/ package are not its business)', () => {
    assert.deepEqual(checkPackage(join(root, 'apps/clean')), []);
    assert.deepEqual(
      checkWorkspace(root).map(([d, p]) => [d, p.length]),
      [
        ['apps/clean', 0],
        ['packages/lib', 2],
        ['packages/tests', 2],
      ],
    );
  });

  it('exits 1 naming each failing package, 0 when all are in step', () => {
    const failing = spawnSync(process.execPath, [script, root], { encoding: 'utf8' });
    assert.equal(failing.status, 1);
    assert.match(failing.stderr, /^packages\/lib \(@w\/lib\): package\.json does not match its imports$/m);
    assert.match(failing.stderr, /^ {2}- dependencies lists extra, but no file in test\/ imports it$/m);
    assert.doesNotMatch(failing.stderr, /apps\/clean/);
    rmSync(join(root, 'packages'), { recursive: true });
    const passing = spawnSync(process.execPath, [script, root], { encoding: 'utf8' });
    assert.equal(passing.status, 0, passing.stderr);
    assert.match(passing.stdout, /dependencies match imports \(1 packages\)/);
  });
});
