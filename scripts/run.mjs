#!/usr/bin/env node
// Entry point for the README's two commands on a fresh clone with only Node 20:
//   npm run train [-- ARGS]  -> install (when needed), then `switchyard-train ARGS` in the folder the
//                               user stands in (`--preset small` unless ARGS name a preset, a config,
//                               a run to resume or another command); the command builds what changed
//   npm test                 -> install, then every check and test (what CI runs)
// pnpm is bootstrapped at the version pinned in package.json#packageManager through npx, so no
// global pnpm, corepack or turbo is needed. Install and build output goes to log files under
// node_modules/.cache/switchyard/, shown when a step fails.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const pnpmVersion = String(pkg.packageManager).replace(/^pnpm@/, '');
const env = { ...process.env, TURBO_TELEMETRY_DISABLED: '1', COREPACK_ENABLE_STRICT: '0' };
const logDir = join(root, 'node_modules', '.cache', 'switchyard');
/** Where the user typed the command (npm runs scripts from the package root). */
// biome-ignore lint/suspicious/noUndeclaredEnvVars: read by this script, never by a turbo task
const userCwd = process.env.INIT_CWD ?? process.cwd();

function fail(message, status) {
  process.stderr.write(`\nswitchyard: ${message}\n`);
  process.exit(status ?? 1);
}

/** Runs a command with its output on the terminal (the tests). */
function sh(cmd, extraEnv = {}) {
  process.stdout.write(`\n$ ${cmd}\n`);
  const r = spawnSync(cmd, { cwd: root, stdio: 'inherit', shell: true, env: { ...env, ...extraEnv } });
  if (r.status !== 0) fail(`step failed (exit ${r.status ?? r.signal}): ${cmd}`, r.status);
}

/** Runs a setup command with its output in a log file: one line when it works, the log's tail when not. */
function quiet(label, cmd, logName) {
  const t0 = performance.now();
  const r = spawnSync(cmd, {
    cwd: root,
    shell: true,
    encoding: 'utf8',
    env: { ...env, FORCE_COLOR: '0' },
    maxBuffer: 256 * 1024 * 1024,
  });
  mkdirSync(logDir, { recursive: true });
  const log = join(logDir, logName);
  writeFileSync(log, `$ ${cmd}\n${r.stdout ?? ''}${r.stderr ?? ''}`);
  const shownLog = relative(userCwd, log).startsWith('..') ? log : relative(userCwd, log);
  if (r.status !== 0) {
    const tail = readFileSync(log, 'utf8').trimEnd().split('\n').slice(-40).join('\n');
    process.stderr.write(`${tail}\n`);
    fail(`${label} failed (exit ${r.status ?? r.signal}): ${cmd}; full log: ${shownLog}`, r.status);
  }
  process.stdout.write(
    `switchyard: ${label} in ${((performance.now() - t0) / 1000).toFixed(1)} s (log: ${shownLog})\n`,
  );
}

function pnpmCommand() {
  const probe = spawnSync('pnpm --version', { shell: true, encoding: 'utf8', env });
  if (probe.status === 0 && probe.stdout.trim() === pnpmVersion) return 'pnpm';
  return `npx -y pnpm@${pnpmVersion}`;
}

/** True when node_modules matches the lockfile and the workspace commands are linked. */
function installed() {
  const current = join(root, 'node_modules', '.pnpm', 'lock.yaml');
  if (!existsSync(current) || !existsSync(join(root, 'node_modules', '.bin', 'switchyard-train')))
    return false;
  return readFileSync(current, 'utf8') === readFileSync(join(root, 'pnpm-lock.yaml'), 'utf8');
}

/** Flags of switchyard-train that take no value (every other `--flag` is followed by its value). */
const BOOLEAN_FLAGS = new Set(['--help', '-h', '--version', '--no-report']);

/** The arguments `npm run train` passes: the user's, plus `--preset small` for a new training run without one. */
export function trainArgs(args) {
  let command;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--') break;
    if (a.startsWith('-')) {
      if (!a.includes('=') && !BOOLEAN_FLAGS.has(a)) i++;
      continue;
    }
    command = a;
    break;
  }
  const named = args.some((a) =>
    ['--preset', '--config', '--resume', ...BOOLEAN_FLAGS].includes(a.split('=')[0]),
  );
  return (command === undefined || command === 'train') && !named ? ['--preset', 'small', ...args] : args;
}

function main() {
  const pnpm = pnpmCommand();
  const task = process.argv[2];
  const rest = process.argv.slice(3);

  if (task === 'test') {
    quiet('dependencies installed', `${pnpm} install --frozen-lockfile --prefer-offline`, 'install.log');
    sh(`${pnpm} exec turbo run build typecheck --output-logs=errors-only`);
    sh(`${pnpm} run lint`);
    sh(`${pnpm} exec turbo run test`, { SWITCHYARD_BACKEND: 'wasm' });
    sh(`${pnpm} exec turbo run test`, { SWITCHYARD_BACKEND: 'cpu' });
    sh(`${pnpm} exec turbo run docs:build`);
    // The built site in Debian's Chromium (.ci/run installs it): every page at 1280 x 900.
    if (existsSync('/usr/bin/chromium')) {
      sh(`${pnpm} --filter switchyard-docs run check`);
    } else if (process.env.CI) {
      fail('the docs site check needs /usr/bin/chromium (apt-get install chromium)');
    } else {
      process.stdout.write(
        '\nswitchyard: skipping the docs site check: /usr/bin/chromium is missing (apt-get install chromium)\n',
      );
    }
  } else if (task === 'train') {
    if (!installed()) {
      quiet('dependencies installed', `${pnpm} install --frozen-lockfile --prefer-offline`, 'install.log');
    }
    // The launcher builds what changed since the last build, then trains where the user stands.
    const child = spawn(
      process.execPath,
      [join(root, 'node_modules', '.bin', 'switchyard-train'), ...trainArgs(rest)],
      { cwd: userCwd, stdio: 'inherit', env },
    );
    // Ctrl-C reaches the trainer from the terminal; it saves and says how to resume, then exits.
    process.on('SIGINT', () => {});
    child.on('exit', (code, signal) => process.exit(code ?? (signal === 'SIGINT' ? 130 : 1)));
  } else {
    process.stderr.write('usage: node scripts/run.mjs <train|test> [args]\n');
    process.exit(2);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
