#!/usr/bin/env node
// The Getting started walk-through (docs/guide/index.md) on a fresh clone of this repository's
// current commit, as a new user runs it: the setup command (`npm run train`, with the tiny preset and
// a few texts so it takes minutes, not five), then each `npx switchyard-...` line of the page, through
// npx itself, from the clone's root. Prints each command, its time and its first lines, and checks
// that the setup printed at most a few lines before training started. Slow (install and a full build):
// a release check, not part of `npm test` (which runs the page's commands in the working tree).
//
// Usage: node scripts/fresh-clone.mjs [--keep]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const keep = process.argv.includes('--keep');
const SMALL = ['--set', 'data.genres=[news, humor]', '--set', 'data.maxTextsPerDomain=4'];

/** Runs a command; returns its stdout and stderr (stderr holds only the setup's build lines and warnings). */
function run(label, cmd, args, cwd) {
  process.stdout.write(`\n$ ${label}\n`);
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, CI: '' } });
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  process.stdout.write(
    `${out.trimEnd().split('\n').slice(0, 12).join('\n')}\n[exit ${r.status} in ${secs} s]\n`,
  );
  if (r.status !== 0) {
    process.stderr.write(`${out}\nfresh clone: "${label}" failed\n`);
    process.exit(1);
  }
  return { out, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

const sha = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8' }).stdout.trim();
const dir = mkdtempSync(join(tmpdir(), 'switchyard-clone-'));
const clone = join(dir, 'switchyard');
try {
  run(`git clone (commit ${sha.slice(0, 12)})`, 'git', ['clone', '--quiet', root, clone], dir);
  run('git checkout', 'git', ['checkout', '--quiet', sha], clone);
  const setup = run(
    'npm run train -- --preset tiny --out runs/setup (small data)',
    'npm',
    ['run', 'train', '--', '--preset', 'tiny', '--out', 'runs/setup', ...SMALL],
    clone,
  );
  // What the user sees before training starts: npm's own two lines, the install line, the build
  // lines (stderr), then the run's header.
  const header = setup.stdout.split('\n').findIndex((l) => l.startsWith('switchyard-train: run '));
  const before =
    header +
    setup.stderr
      .trim()
      .split('\n')
      .filter((l) => l !== '').length;
  process.stdout.write(`\n${before} line(s) before the run started\n`);
  if (header < 0 || before > 8) {
    process.stderr.write('fresh clone: the setup printed more than a few lines before training\n');
    process.exit(1);
  }
  const page = readFileSync(join(clone, 'docs/guide/index.md'), 'utf8');
  const lines = [...page.matchAll(/```sh\n([\s\S]*?)```/g)]
    .flatMap((m) => m[1].split('\n'))
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter((l) => l.startsWith('npx switchyard-'));
  for (const [i, line] of lines.entries()) {
    const args = [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]);
    run(line, 'npx', [...args.slice(1), ...(i === 0 ? SMALL : [])], clone);
  }
  process.stdout.write(`\nfresh clone: every command of the walk-through ran in ${clone}\n`);
} finally {
  if (!keep) rmSync(dir, { recursive: true, force: true });
}
