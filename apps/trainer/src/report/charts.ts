/**
 * Vega-Lite chart specifications for run and experiment reports. Each builder takes plain records
 * and returns a spec for {@link renderChart}.
 */
import type { EvalRecord, StepRecord } from './records';
import type { VegaLiteSpec } from './render';

const WIDTH = 560;
const HEIGHT = 260;

/** One point of a line chart. */
export interface SeriesPoint {
  readonly x: number;
  readonly y: number;
  readonly series: string;
}

/** Options of {@link lineChart}. */
export interface LineChartOptions {
  readonly title: string;
  readonly xTitle: string;
  readonly yTitle: string;
  readonly logY?: boolean;
  /** Horizontal reference lines, e.g. a baseline loss. */
  readonly rules?: readonly { readonly y: number; readonly label: string }[];
  /**
   * Draw a marker at every point of every series. Without it, only sparse series (at most
   * {@link SPARSE_POINTS} points, such as evaluations) get markers, so a short series never
   * shows as a bare line or, with one point, not at all.
   */
  readonly points?: boolean;
  readonly zeroY?: boolean;
}

/** Series with at most this many points are drawn with a marker at each point. */
export const SPARSE_POINTS = 40;

/**
 * The colour scale of `n` series: Vega's ten categorical colours while they suffice, else twenty
 * (tableau20), so no two series share a colour.
 */
export function seriesColors(n: number): { readonly scheme: string } {
  return { scheme: n <= 10 ? 'tableau10' : 'tableau20' };
}

/** Legend below the plot, every label whole (Vega cuts labels at 160 px by default). */
const LEGEND = { orient: 'bottom', direction: 'horizontal', labelLimit: 0, title: null } as const;

/**
 * A multi-series line chart; sparse series get markers, and the legend sits below the plot.
 *
 * @example
 * ```ts
 * lineChart([{ x: 1, y: 5, series: 'train' }], { title: 'Loss', xTitle: 'step', yTitle: 'nats' });
 * ```
 */
export function lineChart(points: readonly SeriesPoint[], o: LineChartOptions): VegaLiteSpec {
  const finite = points.filter((p) => Number.isFinite(p.y));
  const counts = new Map<string, number>();
  for (const p of finite) counts.set(p.series, (counts.get(p.series) ?? 0) + 1);
  const series = [...new Set(points.map((p) => p.series))];
  const marked = finite.filter((p) => o.points === true || (counts.get(p.series) ?? 0) <= SPARSE_POINTS);
  const scale = o.logY ? { type: 'log' as const } : { zero: o.zeroY ?? false };
  const color = {
    field: 'series',
    type: 'nominal',
    scale: { ...seriesColors(series.length), domain: series },
    legend: LEGEND,
  };
  const x = { field: 'x', type: 'quantitative', title: o.xTitle };
  const y = { field: 'y', type: 'quantitative', title: o.yTitle, scale };
  const layers: unknown[] = [
    { data: { values: finite }, mark: { type: 'line', strokeWidth: 1.8 }, encoding: { x, y, color } },
  ];
  if (marked.length > 0) {
    layers.push({
      data: { values: marked },
      mark: { type: 'point', filled: true, size: 36, opacity: 1 },
      encoding: { x, y, color },
    });
  }
  if (o.rules && o.rules.length > 0) {
    layers.push({
      data: { values: o.rules.map((r) => ({ y: r.y, label: r.label })) },
      layer: [
        {
          mark: { type: 'rule', strokeDash: [5, 4], color: '#888' },
          encoding: { y: { field: 'y', type: 'quantitative' } },
        },
        {
          mark: { type: 'text', align: 'right', dy: -6, color: '#555', x: 'width' },
          encoding: { y: { field: 'y', type: 'quantitative' }, text: { field: 'label' } },
        },
      ],
    });
  }
  return { title: o.title, width: WIDTH, height: HEIGHT, layer: layers } as VegaLiteSpec;
}

/** One cell of a heatmap. */
export interface HeatCell {
  readonly x: string | number;
  readonly y: string;
  readonly value: number;
  /** Facet (e.g. MoE layer), when the heatmap is faceted. */
  readonly facet?: string;
}

/** Options of {@link heatmap}. */
export interface HeatmapOptions {
  readonly title: string;
  readonly xTitle: string;
  readonly yTitle: string;
  readonly valueTitle: string;
  /** `quantitative` x (binned steps) or `ordinal` x (experts). */
  readonly xType: 'quantitative' | 'ordinal';
  /** Value at the colour scale's midpoint (a diverging scale around it), e.g. 1 for load / uniform. */
  readonly midpoint?: number;
  readonly facetTitle?: string;
  readonly cellWidth?: number;
  readonly cellHeight?: number;
}

/**
 * A heatmap (rect marks), optionally faceted into columns.
 *
 * @example
 * ```ts
 * heatmap([{ x: 0, y: 'news', value: 1.3 }], { title: 'F', xTitle: 'expert', yTitle: 'domain', valueTitle: 'F', xType: 'ordinal' });
 * ```
 */
export function heatmap(cells: readonly HeatCell[], o: HeatmapOptions): VegaLiteSpec {
  const color =
    o.midpoint !== undefined
      ? {
          field: 'value',
          type: 'quantitative',
          title: o.valueTitle,
          aggregate: 'mean',
          scale: { scheme: 'redblue', reverse: true, domainMid: o.midpoint },
        }
      : {
          field: 'value',
          type: 'quantitative',
          title: o.valueTitle,
          aggregate: 'mean',
          scale: { scheme: 'viridis' },
        };
  const x =
    o.xType === 'quantitative'
      ? { field: 'x', type: 'quantitative', title: o.xTitle, bin: { maxbins: 60 } }
      : { field: 'x', type: 'ordinal', title: o.xTitle };
  const base = {
    mark: { type: 'rect' },
    encoding: { x, y: { field: 'y', type: 'ordinal', title: o.yTitle, sort: null }, color },
  };
  const hasFacet = cells.some((c) => c.facet !== undefined);
  const size =
    o.xType === 'quantitative'
      ? { width: WIDTH, height: { step: o.cellHeight ?? 16 } }
      : { width: { step: o.cellWidth ?? 18 }, height: { step: o.cellHeight ?? 16 } };
  if (!hasFacet) return { title: o.title, data: { values: [...cells] }, ...size, ...base } as VegaLiteSpec;
  return {
    title: o.title,
    data: { values: [...cells] },
    facet: { column: { field: 'facet', type: 'ordinal', title: o.facetTitle ?? null, sort: null } },
    spec: { ...size, ...base },
    resolve: { scale: { color: 'shared' } },
  } as VegaLiteSpec;
}

/** One bar. */
export interface Bar {
  readonly label: string;
  readonly value: number;
  /** Optional grouping (colour). */
  readonly group?: string;
}

/**
 * A horizontal bar chart.
 *
 * @example
 * ```ts
 * barChart([{ label: 'global', value: 4.2 }], { title: 'Final validation loss', valueTitle: 'nats' });
 * ```
 */
export function barChart(
  bars: readonly Bar[],
  o: { readonly title: string; readonly valueTitle: string; readonly zero?: boolean },
): VegaLiteSpec {
  const values = bars.filter((b) => Number.isFinite(b.value));
  const hasGroup = values.some((b) => b.group !== undefined);
  return {
    title: o.title,
    data: { values },
    width: WIDTH - 120,
    height: { step: 22 },
    layer: [
      {
        mark: { type: 'bar' },
        encoding: {
          y: { field: 'label', type: 'nominal', title: null, sort: null },
          x: { field: 'value', type: 'quantitative', title: o.valueTitle, scale: { zero: o.zero ?? true } },
          ...(hasGroup ? { color: { field: 'group', type: 'nominal', title: null } } : {}),
        },
      },
      {
        mark: { type: 'text', align: 'left', dx: 3 },
        encoding: {
          y: { field: 'label', type: 'nominal', sort: null },
          x: { field: 'value', type: 'quantitative' },
          text: { field: 'value', type: 'quantitative', format: '.4~g' },
        },
      },
    ],
  } as VegaLiteSpec;
}

/** Exponential moving average of a series (for readable training-loss curves). */
export function ema(values: readonly number[], beta = 0.9): number[] {
  const out: number[] = [];
  let m = Number.NaN;
  for (const v of values) {
    if (!Number.isFinite(v)) {
      out.push(Number.NaN);
      continue;
    }
    m = Number.isNaN(m) ? v : beta * m + (1 - beta) * v;
    out.push(m);
  }
  return out;
}

/** Training loss (raw and smoothed) and validation loss over steps, with the unigram baseline. */
export function runLossChart(
  steps: readonly StepRecord[],
  evals: readonly EvalRecord[],
  unigram?: number,
): VegaLiteSpec {
  const smooth = ema(steps.map((s) => s.loss));
  const points: SeriesPoint[] = [
    ...steps.map((s) => ({ x: s.step, y: s.loss, series: 'train' })),
    ...steps.map((s, i) => ({ x: s.step, y: smooth[i]!, series: 'train (EMA 0.9)' })),
    ...evals.map((e) => ({ x: e.step, y: e.valLoss, series: 'validation' })),
  ];
  return lineChart(points, {
    title: 'Loss',
    xTitle: 'optimizer step',
    yTitle: 'cross-entropy (nats/token)',
    ...(unigram !== undefined && Number.isFinite(unigram)
      ? { rules: [{ y: unigram, label: 'unigram baseline' }] }
      : {}),
  });
}

/**
 * Validation loss per domain over steps, as small multiples: one panel per domain (five to a row,
 * one y scale), each with the mean over all domains for reference, so any number of domains
 * stays readable.
 */
export function domainLossChart(evals: readonly EvalRecord[]): VegaLiteSpec {
  const domains = [...new Set(evals.flatMap((e) => Object.keys(e.perDomainLoss)))];
  const MEAN = 'mean of all domains';
  const rows = evals.flatMap((e) => {
    const losses = Object.values(e.perDomainLoss).filter(Number.isFinite);
    const meanLoss = losses.reduce((a, b) => a + b, 0) / Math.max(1, losses.length);
    return domains.flatMap((d) => [
      ...(Number.isFinite(e.perDomainLoss[d])
        ? [{ x: e.step, y: e.perDomainLoss[d], domain: d, kind: d }]
        : []),
      ...(losses.length > 0 ? [{ x: e.step, y: meanLoss, domain: d, kind: MEAN }] : []),
    ]);
  });
  const columns = Math.min(5, Math.max(1, domains.length));
  const x = { field: 'x', type: 'quantitative', title: 'optimizer step', axis: { tickCount: 4 } };
  const y = { field: 'y', type: 'quantitative', title: 'nats/token', scale: { zero: false } };
  const isMean = { field: 'kind', equal: MEAN };
  return {
    title: 'Validation loss per domain (grey: mean of all domains)',
    data: { values: rows },
    columns,
    facet: { field: 'domain', type: 'nominal', title: null, sort: domains, header: { labelFontSize: 12 } },
    spec: {
      width: Math.floor((WIDTH + 120) / columns) - 24,
      height: 90,
      layer: [
        {
          transform: [{ filter: isMean }],
          mark: { type: 'line', color: '#aaa', strokeDash: [4, 3], strokeWidth: 1.4 },
          encoding: { x, y },
        },
        {
          transform: [{ filter: { not: isMean } }],
          mark: { type: 'line', color: '#1f77b4', strokeWidth: 1.8, point: { filled: true, size: 30 } },
          encoding: { x, y },
        },
      ],
    },
    resolve: { scale: { y: 'shared', x: 'shared' } },
  } as VegaLiteSpec;
}

/** MaxVio of each step's batch and of each evaluation set, over steps. */
export function maxVioChart(steps: readonly StepRecord[], evals: readonly EvalRecord[]): VegaLiteSpec {
  const points: SeriesPoint[] = [
    ...steps.map((s) => ({ x: s.step, y: s.maxVioBatch, series: 'MaxVio_batch (step)' })),
    ...(steps.some((s) => s.maxVioMicro !== s.maxVioBatch)
      ? steps.map((s) => ({ x: s.step, y: s.maxVioMicro, series: 'MaxVio (micro-batch mean)' }))
      : []),
    ...evals.map((e) => ({ x: e.step, y: e.maxVioGlobal, series: 'MaxVio_global (validation)' })),
  ];
  return lineChart(points, {
    title: 'Load imbalance',
    xTitle: 'optimizer step',
    yTitle: 'MaxVio',
    zeroY: true,
  });
}

/** Expert load over steps for one MoE layer: load share times E (1 = uniform). */
export function expertLoadHeatmap(steps: readonly StepRecord[], layer: number): VegaLiteSpec {
  const cells: HeatCell[] = [];
  for (const s of steps) {
    const loads = s.expertLoad[layer];
    if (!loads) continue;
    const E = loads.length;
    loads.forEach((v, e) => {
      cells.push({ x: s.step, y: `expert ${String(e).padStart(2, '0')}`, value: v * E });
    });
  }
  return heatmap(cells, {
    title: `Expert load over training, MoE layer ${layer} (1 = uniform)`,
    xTitle: 'optimizer step',
    yTitle: 'expert',
    valueTitle: 'load x E',
    xType: 'quantitative',
    midpoint: 1,
  });
}

/** Domain x expert selection frequency divided by K/E (1 = no specialisation), one column per MoE layer. */
export function specializationHeatmap(e: EvalRecord, uniform: number): VegaLiteSpec {
  const cells: HeatCell[] = [];
  e.specialization.forEach((rows, l) => {
    rows.forEach((row, d) => {
      row.forEach((f, x) => {
        cells.push({ x, y: e.domains[d]!, value: f / uniform, facet: `layer ${l}` });
      });
    });
  });
  return heatmap(cells, {
    title: `Domain x expert selection frequency / (K/E), step ${e.step}`,
    xTitle: 'expert',
    yTitle: 'domain',
    valueTitle: 'F / (K/E)',
    xType: 'ordinal',
    midpoint: 1,
    cellWidth: 14,
    cellHeight: 14,
  });
}
