import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  domainLossChart,
  ema,
  expertLoadHeatmap,
  lineChart,
  maxVioChart,
  runLossChart,
  SPARSE_POINTS,
  specializationHeatmap,
} from './charts';
import type { EvalRecord, StepRecord } from './records';
import { chartToSvg, renderChart } from './render';
import { writeRunReport } from './report';

const steps: StepRecord[] = Array.from({ length: 30 }, (_, i) => ({
  step: i + 1,
  loss: 6 - i * 0.05,
  auxLoss: 0.01,
  lr: 1e-3,
  gradNorm: 1,
  tokensPerSec: 1000,
  tokens: (i + 1) * 100,
  maxVioBatch: 0.5,
  maxVioMicro: 0.7,
  dropRate: 0,
  expertLoad: [[0.4, 0.2, 0.2, 0.2]],
  time: i,
}));
const evals: EvalRecord[] = [10, 30].map((step) => ({
  step,
  valLoss: 5.5 - step / 100,
  perDomainLoss: { news: 5.4, humor: 5.6 },
  maxVioGlobal: 0.3,
  maxVioGlobalPerLayer: [0.3],
  tokens: 200,
  dropRate: 0,
  domains: ['humor', 'news'],
  specialization: [
    [
      [0.9, 0.5, 0.3, 0.3],
      [0.2, 0.6, 0.6, 0.6],
    ],
  ],
  specializationPeak: 1.8,
}));

describe('charts', () => {
  it('renders loss curves to SVG with the plotted series', async () => {
    const svg = await chartToSvg(runLossChart(steps, evals, 6.2));
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('unigram baseline');
    expect(svg).toContain('validation');
  });

  it('writes SVG and PNG files', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sy-chart-'));
    const out = await renderChart(expertLoadHeatmap(steps, 0), join(dir, 'load'));
    expect(readFileSync(out.svg, 'utf8')).toContain('expert 00');
    expect(Array.from(readFileSync(out.png).subarray(0, 4))).toEqual([0x89, 0x50, 0x4e, 0x47]);
    const spec = await chartToSvg(specializationHeatmap(evals[1]!, 0.5));
    expect(spec).toContain('news');
  });

  it('writes a report linking every plot with a summary table', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sy-report-'));
    const path = await writeRunReport(dir, steps, evals, {
      name: 't',
      description: 'test run',
      setup: [['model', 'tiny']],
      unigramValLoss: 6.2,
      finalCheckpoint: '/x/final',
      uniformFrequency: 0.5,
      numMoELayers: 1,
    });
    const md = readFileSync(path, 'utf8');
    expect(md).toContain('| final validation loss | 5.200 |');
    expect(md).toContain('| unigram validation loss (same tokens) | 6.200 |');
    for (const p of ['loss', 'domain-loss', 'maxvio', 'expert-load-layer0', 'specialization']) {
      expect(md).toContain(`(plots/${p}.png)`);
      expect(readFileSync(join(dir, 'plots', `${p}.svg`), 'utf8').startsWith('<svg')).toBe(true);
    }
  });

  it('marks the points of sparse series only, and gives every series its own colour', () => {
    const dense = Array.from({ length: SPARSE_POINTS + 1 }, (_, i) => ({ x: i, y: i, series: 'train' }));
    const sparse = [10, 20].map((x) => ({ x, y: 1, series: 'validation' }));
    const spec = lineChart([...dense, ...sparse], { title: 't', xTitle: 'x', yTitle: 'y' }) as unknown as {
      layer: { mark: { type: string }; data: { values: { series: string }[] } }[];
    };
    const pointLayer = spec.layer.find((l) => l.mark.type === 'point')!;
    expect(new Set(pointLayer.data.values.map((p) => p.series))).toEqual(new Set(['validation']));
    const fifteen = Array.from({ length: 15 }, (_, i) => ({ x: 1, y: i, series: `domain ${i}` }));
    const colorScale = (
      lineChart(fifteen, { title: 't', xTitle: 'x', yTitle: 'y' }) as unknown as {
        layer: { encoding: { color: { scale: { scheme: string } } } }[];
      }
    ).layer[0]!.encoding.color.scale;
    expect(colorScale.scheme).toBe('tableau20'); // 20 distinct colours
  });

  it('draws whole legend labels and one panel per domain', async () => {
    const svg = await chartToSvg(maxVioChart(steps, evals));
    for (const label of ['MaxVio_batch (step)', 'MaxVio (micro-batch mean)', 'MaxVio_global (validation)']) {
      expect(svg).toContain(label);
    }
    expect(svg).not.toContain('…');
    const domains = Array.from({ length: 15 }, (_, i) => `genre${String(i).padStart(2, '0')}`);
    const many = evals.map((e) => ({
      ...e,
      perDomainLoss: Object.fromEntries(domains.map((d, i) => [d, 5 + i / 10])),
    }));
    const panels = await chartToSvg(domainLossChart(many));
    for (const d of domains) expect(panels).toContain(`>${d}<`);
  });

  it('writes no validation rows (and no dash or NaN) for a run without a validation set', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sy-report-'));
    const md = readFileSync(
      await writeRunReport(dir, steps, [], {
        name: 't',
        description: 'no validation',
        setup: [['model', 'tiny']],
        unigramValLoss: undefined,
        finalCheckpoint: '/x/final',
        uniformFrequency: 0.5,
        numMoELayers: 1,
      }),
      'utf8',
    );
    expect(md).toContain('| validation | no validation set (data.valFraction = 0) |');
    expect(md).not.toMatch(/NaN|n\/a|–/);
  });

  it('smooths with an exponential moving average that skips gaps', () => {
    expect(ema([1, 3, Number.NaN, 3], 0.5)).toEqual([1, 2, Number.NaN, 2.5]);
  });
});
