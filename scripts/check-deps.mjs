#!/usr/bin/env node
// Fails when a workspace package's package.json does not list exactly what its code imports.
//
// For every package under packages/ and apps/:
// - with a src/ folder: each package that src/ imports (test files excluded) must be in
//   `dependencies` or `peerDependencies`, and each `dependencies` entry must be imported by src/;
// - without one (packages/tests): the same for its test/ files, against `dependencies` and
//   `devDependencies` together.
// Imports are read with TypeScript's own scanner (comments and strings are skipped): static and
// type-only imports, `export ... from`, dynamic `import()`, `require()`. A lookup with
// `require.resolve('x')`, `createRequire(...).resolve('x')` or `import.meta.resolve('x')` counts as
// a use of a declared x (a package read as data files), but an undeclared one is no error: such
// lookups probe for optional tools (tsx, when running from sources). Node builtins (`node:fs`,
// `fs`) and the package's own name are ignored.
//
// Usage: node scripts/check-deps.mjs [workspace root]   (the root defaults to this repository)
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';

const CODE = /\.[cm]?[jt]sx?$/;
const TEST = /\.(test|spec)\.[cm]?[jt]sx?$/;
const RESOLVE = /(?:\brequire|\bimport\.meta|\bcreateRequire\([^()]*\))\.resolve\(\s*(['"])([^'"]+)\1/g;
const BUILTINS = new Set(builtinModules);

/** The package a bare specifier names (`@a/b/c` -> `@a/b`, `a/b` -> `a`), or undefined for relative paths, builtins and subpath imports. */
export function packageOf(specifier) {
  if (/^(\.|\/|#|[a-z]+:)/i.test(specifier)) return undefined; // relative, absolute, #imports, node:/data:/...
  const parts = specifier.split('/');
  const name = specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
  return BUILTINS.has(name) || BUILTINS.has(specifier) ? undefined : name;
}

/** The specifiers a source text imports, and those it only looks up with a resolve() call. */
export function importsOf(text, fileName = 'file.ts') {
  const imports = ts.preProcessFile(text, true, true).importedFiles.map((f) => f.fileName);
  const scanned = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, false);
  // resolve() calls are matched on the text with comments removed, so a commented-out call is no use.
  const lookups = [...stripComments(scanned, text).matchAll(RESOLVE)].map((m) => m[2]);
  return { imports, lookups };
}

function stripComments(sourceFile, text) {
  let out = '';
  let at = 0;
  const scanner = ts.createScanner(ts.ScriptTarget.Latest, false, sourceFile.languageVariant, text);
  for (let kind = scanner.scan(); kind !== ts.SyntaxKind.EndOfFileToken; kind = scanner.scan()) {
    if (kind === ts.SyntaxKind.SingleLineCommentTrivia || kind === ts.SyntaxKind.MultiLineCommentTrivia) {
      out += text.slice(at, scanner.getTokenStart());
      at = scanner.getTokenEnd();
    }
  }
  return out + text.slice(at);
}

function filesUnder(dir, keep) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' || e.name === 'dist' ? [] : filesUnder(path, keep);
    return keep(e.name) ? [path] : [];
  });
}

/**
 * Checks one workspace package folder; returns its problems as sentences (empty when it is in step).
 */
export function checkPackage(dir) {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const hasSrc = existsSync(join(dir, 'src'));
  const files = hasSrc
    ? filesUnder(join(dir, 'src'), (n) => CODE.test(n) && !TEST.test(n))
    : filesUnder(join(dir, 'test'), (n) => CODE.test(n));
  const what = hasSrc ? 'src/' : 'test/';
  const declared = hasSrc
    ? { ...pkg.dependencies, ...pkg.peerDependencies }
    : { ...pkg.dependencies, ...pkg.devDependencies };
  const declaredIn = hasSrc ? 'dependencies or peerDependencies' : 'dependencies or devDependencies';
  const mustUse = Object.keys(hasSrc ? (pkg.dependencies ?? {}) : declared);

  const firstImporter = new Map(); // package -> first file importing it
  const lookedUp = new Set();
  for (const file of files.sort()) {
    const { imports, lookups } = importsOf(readFileSync(file, 'utf8'), file);
    for (const name of imports.map(packageOf)) {
      if (name !== undefined && name !== pkg.name && !firstImporter.has(name)) {
        firstImporter.set(name, relative(dir, file));
      }
    }
    for (const name of lookups.map(packageOf)) if (name !== undefined) lookedUp.add(name);
  }
  const problems = [];
  for (const [name, file] of [...firstImporter].sort(([a], [b]) => a.localeCompare(b))) {
    if (!(name in declared)) problems.push(`${file} imports ${name}, which is not in ${declaredIn}`);
  }
  for (const name of mustUse.sort()) {
    if (!firstImporter.has(name) && !lookedUp.has(name)) {
      const field = pkg.dependencies && name in pkg.dependencies ? 'dependencies' : 'devDependencies';
      problems.push(`${field} lists ${name}, but no file in ${what} imports it`);
    }
  }
  return problems;
}

/** Checks every package under packages/ and apps/ of a workspace; returns [folder, problems] pairs. */
export function checkWorkspace(root) {
  return ['packages', 'apps']
    .flatMap((d) => (existsSync(join(root, d)) ? readdirSync(join(root, d)).map((n) => join(d, n)) : []))
    .filter((d) => existsSync(join(root, d, 'package.json')))
    .sort()
    .map((d) => [d, checkPackage(join(root, d))]);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const root = resolve(process.argv[2] ?? fileURLToPath(new URL('..', import.meta.url)));
  const results = checkWorkspace(root);
  const failing = results.filter(([, problems]) => problems.length > 0);
  for (const [dir, problems] of failing) {
    const { name } = JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8'));
    console.error(`${dir} (${name}): package.json does not match its imports`);
    for (const p of problems) console.error(`  - ${p}`);
  }
  if (failing.length > 0) {
    console.error(
      `\n${failing.length} of ${results.length} packages list dependencies that differ from their imports`,
    );
    process.exit(1);
  }
  console.log(`dependencies match imports (${results.length} packages)`);
}
