#!/usr/bin/env node
// Loads every page of the built docs site in Debian's Chromium at 1280 x 900 and fails on what a
// reader would trip over: a console error or failed request, a link to a page or anchor that does not
// exist, and anything cut off: a page wider than the window, an element sticking out of it, or a
// code block or table whose content is wider than its box (hidden behind a scroll bar).
//
// Usage: node scripts/check-site.mjs [--pages /path,...]   (after the docs build)
import { parseArgs } from 'node:util';
import { fileFor, launchChromium, serveSite, sitePages, VIEWPORT } from './site.mjs';

/** Runs in the page: what sticks out or is cut off, the page's links, and its ids. */
function inspect() {
  const vw = window.innerWidth;
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > vw + 1) problems.push(`the page is ${doc.scrollWidth}px wide, the window ${vw}px`);
  const describe = (el) => {
    const text = (el.textContent ?? '').trim().replace(/\s+/g, ' ').slice(0, 70);
    return `<${el.tagName.toLowerCase()}${el.className && typeof el.className === 'string' ? ` class="${el.className.split(' ')[0]}"` : ''}> "${text}"`;
  };
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && style.visibility !== 'hidden' && style.display !== 'none';
  };
  // An element past the right edge that no ancestor clips (code and tables are checked below).
  const clipped = (el) => {
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      if (getComputedStyle(a).overflowX !== 'visible') return true;
    }
    return false;
  };
  let sticking = 0;
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.right <= vw + 1 || !visible(el) || clipped(el)) continue;
    if (sticking++ < 3)
      problems.push(`${describe(el)} reaches ${Math.round(r.right)}px, past the window's ${vw}px`);
  }
  for (const pre of document.querySelectorAll('.vp-doc pre')) {
    if (!visible(pre) || pre.scrollWidth <= pre.clientWidth + 1) continue;
    const longest = (pre.textContent ?? '').split('\n').reduce((a, b) => (b.length > a.length ? b : a), '');
    problems.push(
      `code cut off (${pre.scrollWidth}px of content in ${pre.clientWidth}px): "${longest.trim().slice(0, 90)}" (${longest.length} columns)`,
    );
  }
  // Code wraps rather than hide (the theme's CSS); a diagram (a text block drawn with arrows or box
  // characters) must fit unwrapped, or its columns no longer line up.
  for (const pre of document.querySelectorAll('.vp-doc div.language-text pre')) {
    if (!visible(pre) || !/[│├└┌┐┘▼►─]|-->/.test(pre.textContent ?? '')) continue;
    const saved = pre.style.whiteSpace;
    pre.style.whiteSpace = 'pre';
    pre.querySelector('code')?.style.setProperty('white-space', 'pre');
    const wide = pre.scrollWidth > pre.clientWidth + 1;
    const width = pre.scrollWidth;
    pre.style.whiteSpace = saved;
    pre.querySelector('code')?.style.removeProperty('white-space');
    if (!wide) continue;
    const longest = (pre.textContent ?? '').split('\n').reduce((a, b) => (b.length > a.length ? b : a), '');
    problems.push(
      `diagram wraps (${width}px of text in ${pre.clientWidth}px): "${longest.trim().slice(0, 90)}" (${longest.length} columns)`,
    );
  }
  for (const table of document.querySelectorAll('.vp-doc table')) {
    if (!visible(table) || table.scrollWidth <= table.clientWidth + 1) continue;
    problems.push(
      `table cut off (${table.scrollWidth}px of content in ${table.clientWidth}px): ${describe(table)}`,
    );
  }
  const links = [...document.querySelectorAll('a[href]')].map((a) => a.href);
  const ids = [...document.querySelectorAll('[id]')].map((el) => el.id);
  return { problems, links, ids };
}

async function main() {
  const { values } = parseArgs({ options: { pages: { type: 'string' } } });
  const pages = values.pages ? values.pages.split(',') : sitePages();
  const t0 = performance.now();
  const site = await serveSite();
  const browser = await launchChromium();
  const problems = [];
  const idsOf = new Map();
  const linksFrom = new Map();
  const external = new Set();
  try {
    const context = await browser.newContext({ viewport: VIEWPORT });
    const queue = [...pages];
    const worker = async () => {
      const tab = await context.newPage();
      let current = '';
      tab.on('console', (m) => {
        if (m.type() === 'error') problems.push(`${current}: console error: ${m.text()}`);
      });
      tab.on('pageerror', (e) => problems.push(`${current}: page error: ${e.message}`));
      tab.on('response', (r) => {
        if (r.status() >= 400 && r.url().startsWith(site.origin)) {
          problems.push(`${current}: ${r.status()} for ${r.url().slice(site.origin.length)}`);
        }
      });
      for (let path = queue.shift(); path !== undefined; path = queue.shift()) {
        current = path;
        await tab.goto(site.origin + path, { waitUntil: 'load' });
        await tab.waitForFunction(() => document.querySelector('#app')?.childElementCount > 0);
        const r = await tab.evaluate(inspect);
        for (const p of r.problems) problems.push(`${path}: ${p}`);
        idsOf.set(path, new Set(r.ids));
        linksFrom.set(path, r.links);
      }
      await tab.close();
    };
    await Promise.all([worker(), worker()]);
  } finally {
    await browser.close();
    await site.close();
  }
  // Links: every page and anchor a link names must exist.
  for (const [from, links] of linksFrom) {
    for (const href of links) {
      const url = new URL(href);
      if (url.origin !== site.origin) {
        if (url.protocol.startsWith('http')) external.add(url.href);
        continue;
      }
      const target = fileFor(url.pathname);
      if (!target) {
        problems.push(`${from}: broken link to ${url.pathname}`);
        continue;
      }
      const hash = decodeURIComponent(url.hash.slice(1));
      if (hash === '' || !target.endsWith('.html')) continue;
      const page = [...idsOf.keys()].find((p) => fileFor(p) === target);
      if (page !== undefined && !idsOf.get(page).has(hash)) {
        problems.push(`${from}: link to ${url.pathname}#${hash}, which has no such anchor`);
      }
    }
  }
  const unique = [...new Set(problems)];
  for (const p of unique) console.error(p);
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  console.log(
    `${pages.length} pages at ${VIEWPORT.width}x${VIEWPORT.height} in ${secs} s: ${unique.length} problem(s); ` +
      `${external.size} external link(s) not followed (no network)`,
  );
  process.exitCode = unique.length > 0 ? 1 : 0;
}

await main();
