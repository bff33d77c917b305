// The built docs site (.vitepress/dist) served on 127.0.0.1 and Debian's Chromium driven by
// playwright-core: shared by check-site.mjs (every page) and screenshots.mjs.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { extname, join, normalize, relative, sep } from 'node:path';
import { chromium } from 'playwright-core';

export const DIST = join(import.meta.dirname, '..', '.vitepress', 'dist');
export const CHROMIUM = '/usr/bin/chromium';
export const VIEWPORT = { width: 1280, height: 900 };

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.css': 'text/css',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
};

/** The file a URL path names, as VitePress's cleanUrls serve it (`/guide/trainer` -> guide/trainer.html). */
export function fileFor(urlPath) {
  const path = normalize(decodeURIComponent(urlPath.split(/[?#]/)[0])).replace(/^[/\\]+/, '');
  if (path.startsWith('..')) return undefined;
  for (const candidate of [path, `${path}.html`, join(path, 'index.html')]) {
    const abs = join(DIST, candidate);
    if (existsSync(abs) && statSync(abs).isFile()) return abs;
  }
  return undefined;
}

/** Every page of the site as a URL path (`/`, `/guide/`, `/guide/trainer`), 404.html left out. */
export function sitePages(dir = DIST) {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const abs = join(dir, name);
      if (statSync(abs).isDirectory()) return name === 'assets' ? [] : sitePages(abs);
      if (!name.endsWith('.html') || (dir === DIST && name === '404.html')) return [];
      const rel = relative(DIST, abs).split(sep).join('/');
      return [`/${rel.replace(/(^|\/)index\.html$/, '$1').replace(/\.html$/, '')}`];
    });
}

/** Serves the built site on 127.0.0.1 at a free port; resolves to its origin and a close function. */
export async function serveSite() {
  if (!existsSync(join(DIST, 'index.html'))) {
    throw new Error(`${DIST} holds no built site; run the docs build first (pnpm run docs:build)`);
  }
  const server = createServer((req, res) => {
    const file = fileFor(req.url ?? '/');
    if (!file) {
      res.writeHead(404, { 'content-type': 'text/html' });
      res.end(readFileSync(join(DIST, '404.html')));
      return;
    }
    // Hashed assets never change within a build: the browser loads each once for the whole crawl.
    const cache = req.url?.startsWith('/assets/')
      ? { 'cache-control': 'public, max-age=31536000, immutable' }
      : {};
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', ...cache });
    res.end(readFileSync(file));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** Debian's Chromium, headless, no network of its own, no download: the flags the project uses. */
export async function launchChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
