import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { defineConfig } from 'vitepress';

const root = join(import.meta.dirname, '..');

/** Title of a page: its first `# heading`, else its file name. */
function titleOf(file: string): string {
  const m = /^#\s+(.+)$/m.exec(readFileSync(file, 'utf8'));
  return m ? m[1]!.replace(/`/g, '') : file.split('/').pop()!.replace(/\.md$/, '');
}

/** Sidebar entries for every page in a folder (index.md first), so new pages appear without editing this file. */
function section(dir: string, text: string) {
  const abs = join(root, dir);
  if (!existsSync(abs)) return [];
  const items: { text: string; link: string; items?: unknown[]; collapsed?: boolean }[] = [];
  const entries = readdirSync(abs).sort((a, b) =>
    a === 'index.md' ? -1 : b === 'index.md' ? 1 : a.localeCompare(b),
  );
  for (const name of entries) {
    const p = join(abs, name);
    if (statSync(p).isDirectory()) {
      const sub = section(join(dir, name), name);
      if (sub.length) items.push(...sub.map((s) => ({ ...s, collapsed: true })));
    } else if (name.endsWith('.md')) {
      items.push({ text: titleOf(p), link: `/${dir}/${name.replace(/(index)?\.md$/, '')}` });
    }
  }
  return items.length ? [{ text, items }] : [];
}

function apiSection() {
  const abs = join(root, 'api');
  if (!existsSync(abs)) return [];
  const pkgs = readdirSync(abs).filter((n) => statSync(join(abs, n)).isDirectory());
  return [
    {
      text: 'API reference',
      collapsed: true,
      items: pkgs.map((p) => ({ text: p.replace(/^@?switchyard\.?/, '@switchyard/'), link: `/api/${p}/` })),
    },
  ];
}

export default defineConfig({
  title: 'Switchyard',
  description: 'Mixture-of-Experts for TypeScript on TensorFlow.js',
  cleanUrls: true,
  ignoreDeadLinks: [/^\/api\//],
  themeConfig: {
    nav: [
      { text: 'Guide', link: '/guide/' },
      { text: 'Concepts', link: '/concepts/' },
      { text: 'API', link: '/api/' },
    ],
    sidebar: [
      ...section('guide', 'Guide'),
      ...section('concepts', 'Concepts'),
      ...section('experiments', 'Experiments'),
      ...section('decisions', 'Decisions'),
      ...apiSection(),
    ],
    search: { provider: 'local' },
  },
});
