/**
 * How to start this command line again in a child process (used by `experiment --jobs`): the
 * built `cli.js`, or `cli.ts` through the tsx loader with the source condition when running from
 * the TypeScript sources.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { SwitchyardError } from '@switchyard/tensor';

const FROM_SOURCES = import.meta.url.endsWith('.ts');

/** URL of the CLI entry as the running code sees it. */
export const CLI_URL: URL = new URL(`./cli.${FROM_SOURCES ? 'ts' : 'js'}`, import.meta.url);

/** URL of tsx's ESM loader (what `node --import tsx` loads), searched from here and the working folder. */
function tsxLoaderUrl(): string | undefined {
  for (const base of [import.meta.url, pathToFileURL(`${process.cwd()}/`).href]) {
    try {
      const pkgJson = createRequire(base).resolve('tsx/package.json');
      const pkg = JSON.parse(readFileSync(pkgJson, 'utf8')) as {
        exports?: Record<string, { import?: string | { default?: string } } | string>;
      };
      const root = pkg.exports?.['.'];
      const entry = typeof root === 'string' ? root : root?.import;
      const rel = typeof entry === 'string' ? entry : entry?.default;
      if (rel !== undefined) return new URL(rel, pathToFileURL(pkgJson)).href;
    } catch {
      // try the next base
    }
  }
  return undefined;
}

/** Node arguments (before the command's own) that run the CLI: loader flags, then the entry path. */
export function cliInvocation(): string[] {
  if (!FROM_SOURCES) return [fileURLToPath(CLI_URL)];
  const loader = tsxLoaderUrl();
  if (loader === undefined) {
    throw new SwitchyardError(
      'STATE_INVALID',
      'running switchyard-train from its TypeScript sources needs the tsx package to start child processes; install tsx or use the built dist/cli.js',
    );
  }
  return ['--conditions=@switchyard/source', '--import', loader, fileURLToPath(CLI_URL)];
}
