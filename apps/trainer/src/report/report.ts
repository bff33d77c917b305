/**
 * A run's report: the plots under `plots/` (SVG and PNG) and `report.md` linking them with a summary
 * table and the per-domain validation losses.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Sample } from '../eval/generate';
import {
  domainLossChart,
  ema,
  expertLoadHeatmap,
  maxVioChart,
  runLossChart,
  specializationHeatmap,
} from './charts';
import type { EvalRecord, StepRecord } from './records';
import { renderChart } from './render';

/** Facts about a run shown in its report. */
export interface RunSummary {
  readonly name: string;
  readonly description: string;
  /** Lines of `key: value` describing the configuration (model, data, balance). */
  readonly setup: readonly (readonly [string, string])[];
  /** The unigram baseline's validation loss; undefined without a validation set. */
  readonly unigramValLoss: number | undefined;
  readonly finalCheckpoint: string;
  /** K / E of the model's routers (uniform selection frequency). */
  readonly uniformFrequency: number;
  readonly numMoELayers: number;
  /** Text from the final model, with the command that writes it again from the checkpoint. */
  readonly sample?: { readonly command: string; readonly sample: Sample };
}

/** Formats a number for a markdown table (a dash where there is no number). */
export function fmt(x: number | undefined, digits = 4): string {
  if (x === undefined || x === null || !Number.isFinite(x)) return '–';
  return Math.abs(x) >= 1000 ? x.toFixed(0) : x.toPrecision(digits);
}

/** Median of the finite values (NaN when there are none). */
export function median(xs: readonly number[]): number {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** Mean of the finite values (NaN when there are none). */
export function mean(xs: readonly number[]): number {
  const s = xs.filter(Number.isFinite);
  return s.length ? s.reduce((a, b) => a + b, 0) / s.length : Number.NaN;
}

/** Renders every plot of a run into `<outDir>/plots`; returns the base names written. */
export async function renderRunPlots(
  outDir: string,
  steps: readonly StepRecord[],
  evals: readonly EvalRecord[],
  summary: Pick<RunSummary, 'unigramValLoss' | 'uniformFrequency' | 'numMoELayers'>,
): Promise<string[]> {
  const dir = join(outDir, 'plots');
  const names: string[] = [];
  const write = async (name: string, spec: Parameters<typeof renderChart>[0]): Promise<void> => {
    await renderChart(spec, join(dir, name));
    names.push(name);
  };
  await write('loss', runLossChart(steps, evals, summary.unigramValLoss));
  if (evals.length > 0) await write('domain-loss', domainLossChart(evals));
  if (summary.numMoELayers > 0) {
    await write('maxvio', maxVioChart(steps, evals));
    for (let l = 0; l < summary.numMoELayers; l++)
      await write(`expert-load-layer${l}`, expertLoadHeatmap(steps, l));
    const last = evals[evals.length - 1];
    if (last && last.specialization.length > 0)
      await write('specialization', specializationHeatmap(last, summary.uniformFrequency));
  }
  return names;
}

/**
 * Writes `report.md` (and the plots it links) for a finished run.
 *
 * When to use: at the end of training; `switchyard-train` does it unless `log.plots` is false.
 *
 * @example
 * ```ts
 * await writeRunReport('runs/small-1', steps, evals, summary);
 * ```
 */
export async function writeRunReport(
  outDir: string,
  steps: readonly StepRecord[],
  evals: readonly EvalRecord[],
  summary: RunSummary,
): Promise<string> {
  const plots = await renderRunPlots(outDir, steps, evals, summary);
  const last = evals[evals.length - 1];
  const tail = steps.slice(Math.floor(steps.length * 0.9));
  const smoothed = ema(steps.map((s) => s.loss));
  const moe = summary.numMoELayers > 0;
  const rows: [string, string][] = [
    ['optimizer steps', String(steps[steps.length - 1]?.step ?? 0)],
    ['training tokens', String(steps[steps.length - 1]?.tokens ?? 0)],
    ['final training loss (EMA 0.9)', fmt(smoothed[smoothed.length - 1])],
  ];
  if (!last) rows.push(['validation', 'no validation set (data.valFraction = 0)']);
  else {
    rows.push(
      ['final validation loss', fmt(last.valLoss)],
      ['unigram validation loss (same tokens)', fmt(summary.unigramValLoss)],
    );
    if (moe) {
      rows.push(
        ['MaxVio_global (validation, mean over layers)', fmt(last.maxVioGlobal, 3)],
        ['specialisation peak, max F / (K/E)', fmt(last.specializationPeak, 3)],
        ['drop rate (validation)', fmt(last.dropRate, 3)],
      );
    }
  }
  if (moe)
    rows.push([
      'MaxVio_batch (mean over the last 10% of steps)',
      fmt(mean(tail.map((s) => s.maxVioBatch)), 3),
    ]);
  rows.push(
    ['training tokens/s (median)', fmt(median(steps.map((s) => s.tokensPerSec)), 4)],
    ['wall time (s)', fmt(steps[steps.length - 1]?.time, 4)],
  );
  const lines: string[] = [
    `# Run report: ${summary.name}`,
    '',
    summary.description,
    '',
    '## Summary',
    '',
    '| metric | value |',
    '|---|---|',
    ...rows.map(([k, v]) => `| ${k} | ${v} |`),
    '',
    `Final checkpoint: \`${summary.finalCheckpoint}\``,
    '',
    '## Setup',
    '',
    '| setting | value |',
    '|---|---|',
    ...summary.setup.map(([k, v]) => `| ${k} | ${v} |`),
    '',
  ];
  if (summary.sample) lines.push(...sampleSection(summary.sample.command, summary.sample.sample));
  if (last) {
    lines.push(
      `## Validation loss per domain (step ${last.step})`,
      '',
      '| domain | loss |',
      '|---|---|',
      ...Object.entries(last.perDomainLoss).map(([d, v]) => `| ${d} | ${fmt(v)} |`),
      '',
    );
  }
  lines.push('## Plots', '');
  const captions: Record<string, string> = {
    loss: 'Training loss per step and validation loss per evaluation, with the unigram baseline.',
    'domain-loss': 'Validation loss of each domain over training.',
    maxvio: "Load imbalance: MaxVio of each step's batch and MaxVio_global of each evaluation.",
    specialization: "Share of each domain's tokens routed to each expert, divided by the uniform share K/E.",
  };
  for (const name of plots) {
    const caption =
      captions[name] ??
      (name.startsWith('expert-load-layer')
        ? `Expert load over training in MoE layer ${name.slice('expert-load-layer'.length)} (load x E; 1 is uniform).`
        : name);
    lines.push(
      `### ${name}`,
      '',
      caption,
      '',
      `![${name}](plots/${name}.png)`,
      '',
      `[SVG](plots/${name}.svg)`,
      '',
    );
  }
  const path = join(outDir, 'report.md');
  writeFileSync(path, lines.join('\n'));
  return path;
}

/** The report's sample: the command, then the prompt and continuation as written. */
function sampleSection(command: string, s: Sample): string[] {
  const ending =
    s.end === 'end-of-text'
      ? ' It stopped at the end-of-text token.'
      : s.end === 'context'
        ? " It stopped at the model's context length."
        : '';
  return [
    '## Sample',
    '',
    `The final model continues the prompt \`${s.prompt.replace(/`/g, "'")}\` with ${s.newTokens} tokens.${ending} The same text again, from the checkpoint:`,
    '',
    '```sh',
    command,
    '```',
    '',
    '````text',
    `${s.prompt}${s.continuation}`,
    '````',
    '',
  ];
}
