#!/usr/bin/env node
// Fails when a changeset would stop `changeset version` / `changeset publish`: a package that is not
// in the workspace, a bump other than major, minor or patch, or one file naming both private
// packages (apps, which changesets leaves unversioned) and published ones (changesets refuses such
// "mixed" files). Run by `pnpm run lint`.
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { workspacePackages } from './bins.mjs';

/** The packages and bumps a changeset's front matter names. */
export function changesetReleases(text) {
  const front = /^---\n([\s\S]*?)\n---/.exec(text)?.[1] ?? '';
  return front
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const m = /^\s*["']?([^"':]+)["']?\s*:\s*(\S+)\s*$/.exec(l);
      return m ? { name: m[1], bump: m[2] } : { name: l.trim(), bump: '(unreadable line)' };
    });
}

/** Problems of every changeset under `<root>/.changeset`, as sentences. */
export function checkChangesets(root) {
  const packages = workspacePackages(root);
  const dir = join(root, '.changeset');
  const problems = [];
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith('.md') && f !== 'README.md')
    .sort()) {
    const releases = changesetReleases(readFileSync(join(dir, file), 'utf8'));
    if (releases.length === 0) problems.push(`${file}: names no package`);
    for (const { name, bump } of releases) {
      if (!packages.has(name)) problems.push(`${file}: ${name} is not a workspace package`);
      if (!['major', 'minor', 'patch'].includes(bump)) {
        problems.push(`${file}: ${name}: expected major, minor or patch, got ${bump}`);
      }
    }
    const isPrivate = (r) => packages.get(r.name)?.pkg.private === true;
    if (releases.some(isPrivate) && releases.some((r) => packages.has(r.name) && !isPrivate(r))) {
      problems.push(
        `${file}: names private (${releases
          .filter(isPrivate)
          .map((r) => r.name)
          .join(', ')}) and published packages; split it in two`,
      );
    }
  }
  return problems;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const root = resolve(process.argv[2] ?? fileURLToPath(new URL('..', import.meta.url)));
  const problems = checkChangesets(root);
  for (const p of problems) console.error(`changeset: ${p}`);
  if (problems.length > 0) process.exit(1);
  console.log('changesets are ready for changeset version');
}
