#!/usr/bin/env node
// Regenerates the review screenshots of the built docs site in Debian's Chromium at 1280 x 900: the
// home page and one guide (above the fold), into docs/screenshots/.
//
// Usage: node scripts/screenshots.mjs   (after the docs build; pnpm --filter switchyard-docs screenshots)
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { launchChromium, serveSite, VIEWPORT } from './site.mjs';

const SHOTS = [
  { path: '/', file: 'home.png' },
  { path: '/guide/moe-layer', file: 'guide-moe-layer.png' },
];

const out = join(import.meta.dirname, '..', 'screenshots');
mkdirSync(out, { recursive: true });
const site = await serveSite();
const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: VIEWPORT });
  for (const shot of SHOTS) {
    await page.goto(site.origin + shot.path, { waitUntil: 'load' });
    await page.waitForFunction(() => document.fonts.status === 'loaded');
    await page.screenshot({ path: join(out, shot.file) });
    console.log(`${join(out, shot.file)}: ${shot.path} at ${VIEWPORT.width}x${VIEWPORT.height}`);
  }
} finally {
  await browser.close();
  await site.close();
}
