/**
 * Where the worker runtime lives, and the TypeScript loader workers need when they run sources.
 *
 * From sources (`src/comm/internal/*.ts`, tests and tsx runs) the runtime is `./rank-runtime.ts` and workers
 * load it through tsx with the `@switchyard/source` condition; from the build (`dist/*.js`) it is
 * `./rank-runtime.js`, a separate entry of the bundle.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

/** True when this package runs from its TypeScript sources. */
export const FROM_SOURCES = import.meta.url.endsWith('.ts');

/** URL of the module a worker rank imports first. */
export function runtimeUrl(): string {
  return new URL(`./rank-runtime.${FROM_SOURCES ? 'ts' : 'js'}`, import.meta.url).href;
}

/** URL of tsx's ESM API (its `register()` installs the TypeScript loader hooks), or undefined when tsx cannot be found. */
export function typescriptLoaderUrl(): string | undefined {
  const bases = [import.meta.url, pathToFileURL(`${process.cwd()}/`).href];
  for (const base of bases) {
    try {
      const pkgJson = createRequire(base).resolve('tsx/package.json');
      const pkg = JSON.parse(readFileSync(pkgJson, 'utf8')) as {
        exports?: Record<string, { import?: { default?: string } | string }>;
      };
      const entry = pkg.exports?.['./esm/api']?.import;
      const rel = typeof entry === 'string' ? entry : entry?.default;
      if (rel !== undefined) return new URL(rel, pathToFileURL(pkgJson)).href;
    } catch {
      // try the next base
    }
  }
  return undefined;
}

/** True when a module URL names a TypeScript file. */
export function isTypeScript(url: string): boolean {
  return /\.[cm]?tsx?$/.test(new URL(url).pathname);
}
