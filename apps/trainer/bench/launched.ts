// Runs of the default preset (`small` on the Brown corpus) for the benches: its configuration
// shortened to a few steps without evaluation or plots, and a run through launch() on R worker ranks
// whose measured steps (after a warm-up) and per-phase medians come back.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MoETransformerLM } from '@switchyard/model';
import { launch } from '@switchyard/parallel';
import { Rng } from '@switchyard/tensor';
import { resolveConfig } from '../src/config/load';
import { prepareData } from '../src/data/prepare';
import { RANK_MODULE_URL, type TrainRankArgs } from '../src/rank';
import type { StepPhases, StepRecord } from '../src/report/records';
import { median } from '../src/report/report';
import { buildModelConfig } from '../src/train/setup';
import type { TrainResult } from '../src/train/trainer';

/** The phases of a step the trainer times. */
export const PHASES = [
  'compute',
  'sync',
  'clip',
  'optimizer',
] as const satisfies readonly (keyof StepPhases)[];

/** The `small` preset for `runSteps` optimizer steps on `backend`, without evaluation or plots, writing under `dir`. */
export function benchConfig(dir: string, backend: string, runSteps: number, extra: readonly string[] = []) {
  return resolveConfig({
    preset: 'small',
    sets: [
      `train.steps=${runSteps}`,
      'eval.every=0',
      'eval.tokensPerDomain=128',
      'log.plots=false',
      ...extra,
      `backend=${backend}`,
      `out=${join(dir, 'run')}`,
    ],
  });
}

/** A run launched on worker ranks: rank 0's measured steps and the median of each phase over them (ms). */
export interface LaunchedRun {
  readonly measured: readonly StepRecord[];
  readonly phases: Record<keyof StepPhases, number>;
}

/**
 * Trains the bench configuration on `ranks` worker ranks for `runSteps` steps and returns rank 0's
 * steps `warmup + 1 .. measuredSteps` (the first `warmup` steps compile JavaScript's hot loops).
 */
export async function launchRun(options: {
  readonly ranks: number;
  readonly backend: 'wasm' | 'cpu';
  readonly runSteps: number;
  readonly measuredSteps: number;
  readonly warmup: number;
  readonly sets?: readonly string[];
}): Promise<LaunchedRun> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-bench-'));
  const cfg = benchConfig(dir, options.backend, options.runSteps, [
    'log.progress=quiet',
    ...(options.sets ?? []),
  ]);
  try {
    const res = await launch<TrainRankArgs, TrainResult>({
      module: RANK_MODULE_URL,
      exportName: 'trainRank',
      ranks: options.ranks,
      inProcess: false,
      backend: options.backend,
      args: { config: cfg },
      timeoutMs: 600_000,
    });
    const measured = res.results[0]!.steps.slice(options.warmup, options.measuredSteps);
    const phaseOf = (k: keyof StepPhases): number =>
      median(measured.map((s) => s.phaseMs?.[k] ?? Number.NaN));
    return {
      measured,
      phases: Object.fromEntries(PHASES.map((k) => [k, phaseOf(k)])) as LaunchedRun['phases'],
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The default run's configuration (without evaluation or plots) and its model, built as the trainer
 * builds them (the tokenizer fixes the vocabulary), with weights from seed 1.
 */
export async function defaultRunModel(backend: string) {
  const config = resolveConfig({
    preset: 'small',
    sets: ['eval.every=0', 'log.plots=false', `backend=${backend}`],
  });
  const data = await prepareData(config);
  const modelConfig = buildModelConfig(config, data.tokenizer.vocabSize);
  return { config, data, modelConfig, model: new MoETransformerLM(modelConfig, new Rng(1)) };
}
