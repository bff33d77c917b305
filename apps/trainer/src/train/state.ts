/**
 * What a checkpoint's trainer_state.json holds, and its validation on `--resume`: the step, the
 * configuration, the data position, RNG states, balance state and optimizer step count (the
 * optimizer moments themselves are tensors in trainer_state.safetensors).
 */
import { type RngState, SwitchyardError } from '@switchyard/tensor';
import { z } from 'zod';
import { type TrainConfig, trainConfigSchema } from '../config/schema';
import type { DomainStream } from '../data/batcher';
import type { BalanceControllerState } from './balance';
import type { ExpertPlacementState } from './expert-parallel';

/** Format tag of trainer_state.json. */
export const TRAINER_STATE_FORMAT = 'switchyard-train-state';

const rngStateSchema = z.strictObject({
  algorithm: z.literal('xoshiro128**'),
  s: z.tuple([z.number(), z.number(), z.number(), z.number()]),
});

const trainerStateSchema = z.strictObject({
  format: z.literal(TRAINER_STATE_FORMAT),
  version: z.literal(1),
  step: z.int().min(0),
  config: trainConfigSchema,
  batcher: z.strictObject({ epoch: z.int().min(0), index: z.int().min(0) }),
  noiseRng: rngStateSchema,
  balance: z.looseObject({ method: z.string() }),
  optimizerSteps: z.int().min(0),
  elapsedSec: z.number().min(0),
  tokensSeen: z.int().min(0),
  /** Training tokens per domain when the run started: resuming on different data is refused. */
  dataFingerprint: z.array(z.tuple([z.string(), z.int().min(0)])),
  /** Expert parallelism: the slot placement in force and the loads counted since the last rebalance. */
  experts: z
    .strictObject({
      degree: z.int().min(1),
      physToLog: z.array(z.array(z.int().min(0))),
      window: z.array(z.array(z.number().min(0))),
      windowSteps: z.int().min(0),
    })
    .optional(),
});

/** Parsed trainer_state.json. */
export type TrainerState = Omit<
  z.output<typeof trainerStateSchema>,
  'balance' | 'config' | 'noiseRng' | 'experts'
> & {
  readonly experts?: ExpertPlacementState;
  readonly config: TrainConfig;
  readonly noiseRng: RngState;
  readonly balance: BalanceControllerState;
};

/** Validates a checkpoint's trainer state; throws CHECKPOINT_INVALID naming the first problems. */
export function parseTrainerState(raw: unknown, source: string): TrainerState {
  if (raw === undefined) {
    throw new SwitchyardError(
      'CHECKPOINT_INVALID',
      `${source} has no trainer_state.json: it is a model-only checkpoint and cannot be resumed`,
    );
  }
  const r = trainerStateSchema.safeParse(raw);
  if (!r.success) {
    const lines = r.error.issues
      .slice(0, 5)
      .map((i) => `  ${i.path.map(String).join('.') || '(top level)'}: ${i.message}`);
    throw new SwitchyardError(
      'CHECKPOINT_INVALID',
      `${source}: trainer_state.json is not valid:\n${lines.join('\n')}`,
    );
  }
  return r.data as unknown as TrainerState;
}

/** Training tokens per domain, saved as `dataFingerprint`: resuming on different data is refused. */
export function dataFingerprint(streams: readonly DomainStream[]): [string, number][] {
  return streams.map((s) => [s.domain, s.tokens.length]);
}
