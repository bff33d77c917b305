#!/usr/bin/env node
// Entry point for the README's two commands on a fresh clone with only Node 20:
//   npm run train   -> install, build, train the default model on the built-in corpus
//   npm test        -> install, then every check and test (what CI runs)
// pnpm is bootstrapped at the version pinned in package.json#packageManager through npx, so no
// global pnpm, corepack or turbo is needed.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const pnpmVersion = String(pkg.packageManager).replace(/^pnpm@/, '');
const env = { ...process.env, TURBO_TELEMETRY_DISABLED: '1', COREPACK_ENABLE_STRICT: '0' };

function sh(cmd, extraEnv = {}) {
  process.stdout.write(`\n$ ${cmd}\n`);
  const r = spawnSync(cmd, { cwd: root, stdio: 'inherit', shell: true, env: { ...env, ...extraEnv } });
  if (r.status !== 0) {
    process.stderr.write(`\nswitchyard: step failed (exit ${r.status ?? r.signal}): ${cmd}\n`);
    process.exit(r.status ?? 1);
  }
}

function pnpmCommand() {
  const probe = spawnSync('pnpm --version', { shell: true, encoding: 'utf8', env });
  if (probe.status === 0 && probe.stdout.trim() === pnpmVersion) return 'pnpm';
  return `npx -y pnpm@${pnpmVersion}`;
}

const pnpm = pnpmCommand();
const task = process.argv[2];
const rest = process.argv.slice(3).join(' ');

sh(`${pnpm} install --frozen-lockfile --prefer-offline`);

if (task === 'test') {
  sh(`${pnpm} exec turbo run build typecheck`);
  sh(`${pnpm} run lint`);
  sh(`${pnpm} exec turbo run test`, { SWITCHYARD_BACKEND: 'wasm' });
  sh(`${pnpm} exec turbo run test`, { SWITCHYARD_BACKEND: 'cpu' });
  sh(`${pnpm} exec turbo run docs:build`);
} else if (task === 'train') {
  sh(`${pnpm} exec turbo run build`);
  sh(`${pnpm} --filter switchyard-train run train ${rest}`);
} else {
  process.stderr.write(`usage: node scripts/run.mjs <train|test> [args]\n`);
  process.exit(2);
}
