#!/usr/bin/env node
// The commands of every workspace package (its package.json `bin`), runnable from the repository
// root once dependencies are installed: `npx switchyard-train ...`, `pnpm exec switchyard-plan ...`.
//
// `node scripts/bins.mjs` (the root `postinstall`) writes one small launcher per command into the
// root `node_modules/.bin`, where npx and pnpm exec look first. A launcher runs the command in the
// user's own directory (relative paths mean what the user expects) from the package's built files,
// building the package and its workspace dependencies first only when a source file is newer than
// the build (the build log goes to node_modules/.cache/switchyard/, shown when the build fails).
// New packages with a `bin` get their launchers at the next install, with no change here.
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { delimiter, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Folders of the workspace packages, from pnpm-workspace.yaml (`dir/*` and plain `dir` entries). */
export function workspaceDirs(root = ROOT) {
  const yaml = readFileSync(join(root, 'pnpm-workspace.yaml'), 'utf8');
  const block = /^packages:\s*\n((?:\s+-.*\n?)+)/m.exec(yaml)?.[1] ?? '';
  const dirs = [];
  for (const m of block.matchAll(/^\s+-\s*['"]?([^'"\n]+?)['"]?\s*$/gm)) {
    const pattern = m[1];
    if (pattern.endsWith('/*')) {
      const parent = join(root, pattern.slice(0, -2));
      if (!existsSync(parent)) continue;
      for (const name of readdirSync(parent).sort()) {
        if (existsSync(join(parent, name, 'package.json'))) dirs.push(join(parent, name));
      }
    } else if (existsSync(join(root, pattern, 'package.json'))) {
      dirs.push(join(root, pattern));
    }
  }
  return dirs;
}

/** Every workspace package: name -> { dir, pkg }. */
export function workspacePackages(root = ROOT) {
  const out = new Map();
  for (const dir of workspaceDirs(root)) {
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    if (typeof pkg.name === 'string') out.set(pkg.name, { dir, pkg });
  }
  return out;
}

/** The commands the workspace declares: [{ name, packageName, dir, target }]. */
export function workspaceBins(root = ROOT) {
  const bins = [];
  for (const [packageName, { dir, pkg }] of workspacePackages(root)) {
    const entries =
      typeof pkg.bin === 'string'
        ? [[packageName.replace(/^@[^/]+\//, ''), pkg.bin]]
        : Object.entries(pkg.bin ?? {});
    for (const [name, target] of entries) bins.push({ name, packageName, dir, target: join(dir, target) });
  }
  return bins;
}

/** Writes a launcher per workspace command into `<root>/node_modules/.bin`; returns their names. */
export function linkBins(root = ROOT) {
  const binDir = join(root, 'node_modules', '.bin');
  mkdirSync(binDir, { recursive: true });
  const names = [];
  for (const bin of workspaceBins(root)) {
    const launcher = join(binDir, bin.name);
    // CommonJS (node_modules/.bin is outside the root package's "type": "module").
    writeFileSync(
      launcher,
      [
        '#!/usr/bin/env node',
        `// ${bin.name} from ${relative(root, bin.dir)}; written by scripts/bins.mjs at install.`,
        "const { join } = require('node:path');",
        "const { pathToFileURL } = require('node:url');",
        "import(pathToFileURL(join(__dirname, '..', '..', 'scripts', 'bins.mjs')).href).then(",
        `  (m) => m.runBin(${JSON.stringify(bin.name)}),`,
        '  (e) => {',
        `    process.stderr.write(\`${bin.name}: cannot start: \${e.message}\\n\`);`,
        '    process.exitCode = 1;',
        '  },',
        ');',
        '',
      ].join('\n'),
    );
    chmodSync(launcher, 0o755);
    // Windows shells look for NAME.cmd.
    writeFileSync(`${launcher}.cmd`, `@node "%~dp0\\${bin.name}" %*\r\n`);
    names.push(bin.name);
  }
  return names;
}

/** Newest modification time (ms) of the files under `path` (a file or a folder), skipping `skip` names. */
function newestMtime(path, skip = new Set()) {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = 0;
  for (const name of readdirSync(path)) {
    if (skip.has(name) || name.endsWith('.test.ts')) continue;
    newest = Math.max(newest, newestMtime(join(path, name), skip));
  }
  return newest;
}

/** The package and the workspace packages it depends on at run time, transitively, dependencies first. */
function runtimeClosure(packageName, packages) {
  const seen = new Set();
  const order = [];
  const visit = (name) => {
    if (seen.has(name) || !packages.has(name)) return;
    seen.add(name);
    const { pkg } = packages.get(name);
    for (const dep of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) visit(dep);
    order.push(name);
  };
  visit(packageName);
  return order;
}

/**
 * Names of the packages (of `packageName` and its workspace dependencies, dependencies first) whose
 * build is missing or older than a source file (the inputs of turbo's `build` task).
 */
export function staleBuilds(packageName, root = ROOT) {
  const packages = workspacePackages(root);
  const shared = Math.max(
    newestMtime(join(root, 'tsconfig.base.json')),
    newestMtime(join(root, 'tsup.shared.ts')),
  );
  return runtimeClosure(packageName, packages).filter((name) => {
    const { dir, pkg } = packages.get(name);
    if (!pkg.scripts?.build) return false;
    const built = newestMtime(join(dir, 'dist'));
    const sources = Math.max(
      shared,
      newestMtime(join(dir, 'src')),
      ...['package.json', 'tsconfig.json', 'tsup.config.ts'].map((f) => newestMtime(join(dir, f))),
    );
    return built === 0 || sources > built;
  });
}

/** `path` as the user would type it from the working folder. */
function shown(path) {
  const rel = relative(process.cwd(), path);
  return rel === '' || rel.startsWith('..') ? path : rel;
}

/**
 * A PATH on which `pnpm` is the version package.json pins: the one installed, else a small script
 * running it through npx (the way `npm run train` and `npm test` fetch it), for turbo and publint.
 */
function pathWithPnpm(root, cacheDir) {
  const version = String(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).packageManager)
    .replace(/^pnpm@/, '')
    .split('+')[0];
  const probe = spawnSync('pnpm', ['--version'], { encoding: 'utf8', shell: process.platform === 'win32' });
  if (probe.status === 0 && probe.stdout.trim() === version) return process.env.PATH;
  const dir = join(cacheDir, 'pnpm-bin');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'pnpm'), `#!/bin/sh\nexec npx -y pnpm@${version} "$@"\n`);
  chmodSync(join(dir, 'pnpm'), 0o755);
  writeFileSync(join(dir, 'pnpm.cmd'), `@npx -y pnpm@${version} %*\r\n`);
  return `${dir}${delimiter}${process.env.PATH ?? ''}`;
}

/** Builds the command's package and its dependencies with turbo (cached), output to a log file shown on failure. */
function build(bin, stale, root) {
  const packages = workspacePackages(root);
  const why = stale.some((name) => !existsSync(join(packages.get(name).dir, 'dist')))
    ? 'not built yet'
    : 'sources changed since the last build';
  const cacheDir = join(root, 'node_modules', '.cache', 'switchyard');
  mkdirSync(cacheDir, { recursive: true });
  const log = join(cacheDir, `build-${bin.name}.log`);
  process.stderr.write(`${bin.name}: building ${stale.join(', ')} (${why}; log: ${shown(log)})\n`);
  const t0 = performance.now();
  const turbo = join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'turbo.cmd' : 'turbo');
  const r = spawnSync(turbo, ['run', 'build', `--filter=${bin.packageName}...`], {
    cwd: root,
    encoding: 'utf8',
    env: {
      ...process.env,
      PATH: pathWithPnpm(root, cacheDir),
      TURBO_TELEMETRY_DISABLED: '1',
      FORCE_COLOR: '0',
      NO_COLOR: '1',
    },
    shell: process.platform === 'win32',
    maxBuffer: 64 * 1024 * 1024,
  });
  writeFileSync(log, `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}`);
  if (r.status !== 0) {
    const tail = readFileSync(log, 'utf8').trimEnd().split('\n').slice(-40).join('\n');
    process.stderr.write(`${tail}\n${bin.name}: the build failed (full log: ${log})\n`);
    process.exit(1);
  }
  process.stderr.write(`${bin.name}: built in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
}

/**
 * Runs the workspace command `name` in this process, with the user's arguments, after building its
 * package when the build is missing or stale. Called by the launchers `linkBins` writes.
 */
export async function runBin(name, root = ROOT) {
  const bin = workspaceBins(root).find((b) => b.name === name);
  if (!bin) {
    process.stderr.write(`${name}: no workspace package declares this command any more; run pnpm install\n`);
    process.exit(1);
  }
  const stale = staleBuilds(bin.packageName, root);
  if (stale.length > 0) build(bin, stale, root);
  // The command sees itself as the program node started (as when installed from the registry).
  process.argv[1] = bin.target;
  await import(pathToFileURL(bin.target).href);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const names = linkBins();
  if (process.argv.includes('--verbose')) process.stdout.write(`linked: ${names.join(', ')}\n`);
}
