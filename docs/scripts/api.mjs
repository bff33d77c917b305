// Generates the API reference (docs/api) with typedoc for every library package that has a
// public surface (packages/*/src/index.ts), so a new package appears without editing config.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const docs = join(import.meta.dirname, '..');
const pkgsDir = join(docs, '..', 'packages');
const entryPoints = readdirSync(pkgsDir)
  .filter((n) => existsSync(join(pkgsDir, n, 'src/index.ts')))
  .filter((n) => !JSON.parse(readFileSync(join(pkgsDir, n, 'package.json'), 'utf8')).private)
  .map((n) => `../packages/${n}`);
const options = JSON.parse(readFileSync(join(docs, 'typedoc.json'), 'utf8'));
options.entryPoints = entryPoints;
const generated = join(docs, 'typedoc.generated.json');
rmSync(join(docs, 'api'), { recursive: true, force: true });
writeFileSync(generated, JSON.stringify(options, null, 2));
const r = spawnSync('typedoc', ['--options', generated], {
  cwd: docs,
  stdio: 'inherit',
  shell: process.platform === 'win32',
});
process.exit(r.status ?? 1);
