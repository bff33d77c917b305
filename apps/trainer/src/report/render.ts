/**
 * Chart rendering: a Vega-Lite spec is compiled to Vega, rendered to SVG by Vega's headless view, and
 * rasterised to PNG by resvg.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import * as vl from 'vega-lite';

/** A Vega-Lite specification (top-level JSON object). */
export type VegaLiteSpec = vl.TopLevelSpec;

const FONT = 'DejaVu Sans, Helvetica, Arial, sans-serif';

/** House look: white background, sans-serif text, readable sizes. */
const BASE_CONFIG = {
  background: 'white',
  font: FONT,
  axis: { labelFontSize: 11, titleFontSize: 12 },
  legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 0 },
  title: { fontSize: 14 },
  view: { stroke: null },
} as const;

/**
 * Renders a Vega-Lite spec to an SVG string.
 *
 * When to use: to get a chart as text (tests, embedding); {@link renderChart} also writes files.
 *
 * @example
 * ```ts
 * const svg = await chartToSvg({ data: { values: [{ x: 1, y: 2 }] }, mark: 'point',
 *   encoding: { x: { field: 'x', type: 'quantitative' }, y: { field: 'y', type: 'quantitative' } } });
 * ```
 */
export async function chartToSvg(spec: VegaLiteSpec): Promise<string> {
  const withConfig = { ...spec, config: { ...BASE_CONFIG, ...(spec.config ?? {}) } } as VegaLiteSpec;
  const compiled = vl.compile(withConfig).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Rasterises an SVG string to PNG bytes at `scale` times its size. */
export function svgToPng(svg: string, scale = 2): Uint8Array {
  const resvg = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: scale },
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' },
    background: 'white',
  });
  return resvg.render().asPng();
}

/**
 * Renders a chart to `<basePath>.svg` and `<basePath>.png`; returns both paths.
 *
 * When to use: writing a run's or an experiment's plots.
 *
 * @example
 * ```ts
 * await renderChart(lossChart(metrics, evals), 'runs/x/plots/loss');
 * ```
 */
export async function renderChart(
  spec: VegaLiteSpec,
  basePath: string,
): Promise<{ svg: string; png: string }> {
  const svg = await chartToSvg(spec);
  mkdirSync(dirname(basePath), { recursive: true });
  writeFileSync(`${basePath}.svg`, svg);
  writeFileSync(`${basePath}.png`, svgToPng(svg));
  return { svg: `${basePath}.svg`, png: `${basePath}.png` };
}
