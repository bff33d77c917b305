#!/usr/bin/env node
// Fails on import cycles: between source files (dependency-cruiser, following workspace packages
// into their sources) and between workspace packages (their package.json dependency graph).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const dirs = ['packages', 'apps']
  .flatMap((d) => (existsSync(join(root, d)) ? readdirSync(join(root, d)).map((n) => join(d, n)) : []))
  .filter((d) => existsSync(join(root, d, 'package.json')));

// 1. Package graph.
const pkgs = new Map();
for (const d of dirs) {
  const p = JSON.parse(readFileSync(join(root, d, 'package.json'), 'utf8'));
  const deps = Object.keys({ ...p.dependencies, ...p.devDependencies, ...p.peerDependencies });
  pkgs.set(p.name, { dir: d, deps });
}
const state = new Map();
const stack = [];
let failed = false;
function visit(name) {
  if (state.get(name) === 'done') return;
  if (state.get(name) === 'active') {
    const cycle = stack.slice(stack.indexOf(name)).concat(name);
    console.error(`package cycle: ${cycle.join(' -> ')}`);
    failed = true;
    return;
  }
  state.set(name, 'active');
  stack.push(name);
  for (const dep of pkgs.get(name).deps) if (pkgs.has(dep)) visit(dep);
  stack.pop();
  state.set(name, 'done');
}
for (const name of pkgs.keys()) visit(name);

// 2. File graph.
const srcDirs = dirs.map((d) => join(d, 'src')).filter((d) => existsSync(join(root, d)));
const r = spawnSync(
  'depcruise',
  ['--config', '.dependency-cruiser.cjs', '--output-type', 'err', ...srcDirs],
  {
    cwd: root,
    stdio: 'inherit',
    shell: process.platform === 'win32',
  },
);
if (r.error) console.error(`could not run depcruise: ${r.error.message} (run through \`pnpm lint\`)`);
if (r.status !== 0) failed = true;
if (failed) process.exit(1);
console.log(`no import cycles (${pkgs.size} packages, ${srcDirs.length} source folders)`);
