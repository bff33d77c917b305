import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { defineConfig } from 'vitepress';

const root = join(import.meta.dirname, '..');

/** Title of a page: its first `# heading`, else its file name. */
function titleOf(file: string): string {
  const m = /^#\s+(.+)$/m.exec(readFileSync(file, 'utf8'));
  return m ? m[1]!.replace(/`/g, '') : file.split('/').pop()!.replace(/\.md$/, '');
}

interface Item {
  text: string;
  link?: string;
  items?: Item[];
  collapsed?: boolean;
}

/** The link of a page under docs/ (`guide/routing/index.md` -> `/guide/routing/`). */
function linkOf(page: string): string {
  return `/${page.replace(/(index)?\.md$/, '')}`;
}

/** Every page under a folder of docs/, as paths relative to docs/. */
function pagesUnder(dir: string): string[] {
  const abs = join(root, dir);
  if (!existsSync(abs)) return [];
  return readdirSync(abs)
    .sort()
    .flatMap((name) =>
      statSync(join(abs, name)).isDirectory()
        ? pagesUnder(`${dir}/${name}`)
        : name.endsWith('.md')
          ? [`${dir}/${name}`]
          : [],
    );
}

/** A page entry; an index page whose title is its section's name reads "Overview". */
function page(path: string, section?: string): Item {
  const title = titleOf(join(root, path));
  return { text: title === section ? 'Overview' : title, link: linkOf(path) };
}

/**
 * The guides in learning order: first steps, the building blocks bottom-up, then scaling out. A guide
 * page not listed here appears under "More guides", so a new page is never hidden.
 */
const GUIDE_SECTIONS: { text: string; pages: string[] }[] = [
  { text: 'Introduction', pages: ['guide/index.md', 'guide/trainer.md', 'guide/generate.md'] },
  {
    text: 'Building blocks',
    pages: [
      'guide/tensor.md',
      'guide/routing/',
      'guide/balance/index.md',
      'guide/moe-layer.md',
      'guide/model-configuration.md',
      'guide/model-tokenizer.md',
    ],
  },
  { text: 'Scaling out', pages: ['guide/parallelism.md', 'guide/plan.md', 'guide/plan-simulator.md'] },
];

/** The order of a folder's pages where it matters; the rest follow alphabetically. */
const FIRST: Record<string, string[]> = {
  'guide/routing': ['index.md', 'topk.md', 'switch.md', 'gshard.md', 'sigmoid.md', 'group-limited.md'],
  concepts: ['index.md', 'backends.md', 'errors.md', 'checkpoint-format.md', 'balance-normalisation.md'],
  experiments: [
    'index.md',
    'balance-scope.md',
    'loss-free.md',
    'capacity.md',
    'z-loss.md',
    'expert-choice.md',
  ],
};

function ordered(dir: string): string[] {
  const all = pagesUnder(dir).filter((p) => !p.slice(dir.length + 1).includes('/'));
  const first = (FIRST[dir] ?? ['index.md']).map((n) => `${dir}/${n}`).filter((p) => all.includes(p));
  return [...first, ...all.filter((p) => !first.includes(p))];
}

function guideSidebar(): Item[] {
  const listed = new Set<string>();
  const sections = GUIDE_SECTIONS.map(({ text, pages }) => ({
    text,
    items: pages.flatMap((p): Item[] => {
      if (p.endsWith('/')) {
        const dir = p.slice(0, -1);
        const sub = ordered(dir);
        for (const s of sub) listed.add(s);
        if (sub.length === 0) return [];
        const title = titleOf(join(root, sub[0]!));
        return [{ text: title, collapsed: true, items: sub.map((s) => page(s, title)) }];
      }
      if (!existsSync(join(root, p))) return [];
      listed.add(p);
      return [page(p)];
    }),
  }));
  const more = pagesUnder('guide').filter((p) => !listed.has(p));
  return more.length > 0 ? [...sections, { text: 'More guides', items: more.map((p) => page(p)) }] : sections;
}

/** A section of one folder: its index page as "Overview", then the others. */
function folderSection(dir: string, text: string): Item[] {
  const pages = ordered(dir);
  return pages.length > 0 ? [{ text, items: pages.map((p) => page(p, text)) }] : [];
}

/** The generated API reference: one entry per package. */
function apiSection(): Item[] {
  const abs = join(root, 'api', '@switchyard');
  if (!existsSync(abs)) return [];
  const pkgs = readdirSync(abs).filter((n) => statSync(join(abs, n)).isDirectory());
  return [
    {
      text: 'API reference',
      collapsed: true,
      items: [
        { text: 'Packages', link: '/api/' },
        ...pkgs.map((p) => ({ text: `@switchyard/${p}`, link: `/api/@switchyard/${p}/` })),
      ],
    },
  ];
}

export default defineConfig({
  title: 'Switchyard',
  description: 'Mixture-of-Experts for TypeScript on TensorFlow.js',
  cleanUrls: true,
  head: [['link', { rel: 'icon', type: 'image/svg+xml', href: '/favicon.svg' }]],
  ignoreDeadLinks: [/^\/api\//],
  vite: {
    // The one chunk above Vite's 500 kB warning is the local search index (about 1.1 MB with the
    // API reference), which the browser fetches only when the search box opens.
    build: { chunkSizeWarningLimit: 2048 },
  },
  themeConfig: {
    nav: [
      { text: 'Guide', link: '/guide/' },
      { text: 'Concepts', link: '/concepts/' },
      { text: 'Experiments', link: '/experiments/' },
      { text: 'API', link: '/api/' },
    ],
    sidebar: [
      ...guideSidebar(),
      ...folderSection('concepts', 'Concepts'),
      ...folderSection('experiments', 'Experiments'),
      ...folderSection('decisions', 'Decisions'),
      ...apiSection(),
    ],
    outline: { level: [2, 3], label: 'On this page' },
    search: { provider: 'local' },
  },
});
