/**
 * The rank function `switchyard-train --ranks R` (and multi-node runs) starts on every rank through
 * `launch()` from @switchyard/parallel: one data-parallel training job per rank.
 */
import type { RankContext } from '@switchyard/parallel';
import type { TrainConfig } from './config/schema';
import { type TrainResult, train } from './train/trainer';

/** Launch arguments of {@link trainRank}: plain data, structured-cloned into every rank. */
export interface TrainRankArgs {
  /** The resolved configuration (ignored when resuming). */
  readonly config: TrainConfig;
  /** A run folder or checkpoint folder to continue. */
  readonly resume?: string;
  /** When resuming: parallel settings replacing the saved run's (a checkpoint resumes under any layout). */
  readonly parallel?: Partial<TrainConfig['parallel']>;
}

/**
 * Trains on one rank of a data-parallel job; rank 0 reports progress and writes the output folder.
 *
 * When to use: as the rank function of `launch()`; the CLI passes this module for `--ranks R`.
 *
 * @example
 * ```ts
 * const { results } = await launch({
 *   module: new URL('./rank.js', import.meta.url),
 *   exportName: 'trainRank',
 *   ranks: 2,
 *   args: { config: resolveConfig({ preset: 'tiny' }) },
 * });
 * ```
 */
export async function trainRank(ctx: RankContext<TrainRankArgs>): Promise<TrainResult> {
  const { config, resume, parallel } = ctx.args;
  return train({
    config,
    comm: ctx.comm,
    ...(resume !== undefined ? { resume } : {}),
    ...(parallel !== undefined ? { parallel } : {}),
  });
}

/** URL of this module as the running code sees it (TypeScript sources or the build). */
export const RANK_MODULE_URL: URL = new URL(
  `./rank.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`,
  import.meta.url,
);
