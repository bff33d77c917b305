/**
 * The rank function `switchyard-train --ranks R` (and multi-node runs) starts on every rank through
 * `launch()` from @switchyard/parallel: one data-parallel training job per rank.
 */
import type { RankContext } from '@switchyard/parallel';
import type { TrainConfig } from './config/schema';
import { StopRequest } from './run/interrupt';
import { type InterruptedRun, RunInterrupted, type TrainResult, train } from './train/trainer';

/** Launch arguments of {@link trainRank}: plain data, structured-cloned into every rank. */
export interface TrainRankArgs {
  /** The resolved configuration (ignored when resuming). */
  readonly config: TrainConfig;
  /** A run folder or checkpoint folder to continue. */
  readonly resume?: string;
  /** When resuming: parallel settings replacing the saved run's (a checkpoint resumes under any layout). */
  readonly parallel?: Partial<TrainConfig['parallel']>;
  /** With `resume`: a new `train.steps`. */
  readonly extendSteps?: number;
  /** The stop flag of a {@link StopRequest} (shared with every rank of this node). */
  readonly stopFlag?: SharedArrayBuffer;
}

/** What a rank returns: the run's result, or where an interrupted run stopped. */
export type TrainRankResult = TrainResult | { readonly interrupted: InterruptedRun };

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
export async function trainRank(ctx: RankContext<TrainRankArgs>): Promise<TrainRankResult> {
  const { config, resume, parallel, extendSteps, stopFlag } = ctx.args;
  try {
    return await train({
      config,
      comm: ctx.comm,
      ...(resume !== undefined ? { resume } : {}),
      ...(parallel !== undefined ? { parallel } : {}),
      ...(extendSteps !== undefined ? { extendSteps } : {}),
      ...(stopFlag !== undefined ? { stop: StopRequest.view(stopFlag) } : {}),
    });
  } catch (e) {
    // An Error does not cross threads as itself: say where the run stopped as plain data.
    if (e instanceof RunInterrupted) return { interrupted: e.run };
    throw e;
  }
}

/** URL of this module as the running code sees it (TypeScript sources or the build). */
export const RANK_MODULE_URL: URL = new URL(
  `./rank.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`,
  import.meta.url,
);
