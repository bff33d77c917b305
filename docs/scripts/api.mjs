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
if (r.status !== 0) process.exit(r.status ?? 1);

// The landing page: typedoc titles it "Documentation"; this one names each package and what it holds.
const rows = entryPoints.map((dir) => {
  const pkg = JSON.parse(readFileSync(join(docs, dir, 'package.json'), 'utf8'));
  const short = pkg.name.replace(/^@switchyard\//, '');
  return `| [\`${pkg.name}\`](./@switchyard/${short}/) | ${String(pkg.description ?? '').replace(/\|/g, '\\|')} |`;
});
writeFileSync(
  join(docs, 'api', 'index.md'),
  [
    '# API reference',
    '',
    "Generated from the TSDoc comments of each package's public surface (`src/index.ts`). The guides",
    'show how the pieces fit together; see [Getting started](/guide/).',
    '',
    '| Package | What it holds |',
    '|---|---|',
    ...rows,
    '',
  ].join('\n'),
);
