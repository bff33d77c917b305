/**
 * Training with compressed experts from the start (`compress.rank` > 0, the paper's variant that
 * learns bases and factors instead of initialising them from trained experts): every MoE layer's
 * bank is replaced before the first step by a CompressedExperts bank with random bases and left
 * factors and zero right factors, experts grouped by index. Its checkpoints are compressed
 * checkpoints (full experts materialised in model.safetensors, the factors beside them), and a run
 * resumes from the factors.
 *
 * Shape letters: E experts, G groups, M = E / G experts per group.
 */
import {
  COMPRESSION_FILES,
  CompressedExperts,
  compressModel,
  groupingFromAssignment,
  loadCompressedCheckpoint,
  saveCompressedCheckpoint,
} from '@switchyard/compress';
import {
  type LoadedCheckpoint,
  loadCheckpoint,
  type MoETransformerLM,
  type SaveCheckpointOptions,
  saveCheckpoint,
} from '@switchyard/model';
import { SwitchyardError, tf } from '@switchyard/tensor';
import type { TrainConfig } from '../config/schema';

/** Whether the model's MoE layers hold compressed experts. */
export function holdsCompressedExperts(model: MoETransformerLM): boolean {
  return model.moeLayers().some((l) => l.experts instanceof CompressedExperts);
}

/**
 * A new model as the run trains it: unchanged with `compress.rank` 0, else with every MoE layer's
 * experts compressed from scratch into `compress.groups` contiguous groups of rank `compress.rank`.
 *
 * @example
 * ```ts
 * const model = startCompressed(new MoETransformerLM(mc, rng), config);
 * ```
 */
export function startCompressed(model: MoETransformerLM, config: TrainConfig): MoETransformerLM {
  const { rank, groups: G, clusterEvery } = config.compress;
  if (rank === 0 || model.moeLayers().length === 0) return model;
  if (clusterEvery > 0) {
    model.dispose();
    throw new SwitchyardError(
      'CONFIG_INVALID',
      'compress.clusterEvery: expected 0 with compress.rank > 0 (online clustering reads full experts; a compressed run keeps its groups), got ' +
        clusterEvery,
    );
  }
  const E = model.config.moe.experts.numExperts;
  if (E % G !== 0) {
    model.dispose();
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `compress.groups: expected a divisor of the ${E} experts (compress.rank > 0 groups experts by index), got ${G}`,
    );
  }
  const grouping = groupingFromAssignment(Array.from({ length: E }, (_, e) => Math.floor(e / (E / G))));
  try {
    compressModel(model, {
      numGroups: G,
      rank,
      groupings: model.moeLayers().map(() => grouping),
      init: 'scratch',
      seed: config.seed,
    });
  } catch (e) {
    model.dispose();
    if (e instanceof SwitchyardError && e.code === 'INVALID_ARGUMENT')
      throw new SwitchyardError('CONFIG_INVALID', `compress.rank: ${e.message}`, { cause: e });
    throw e;
  }
  return model;
}

/** saveCheckpoint, or saveCompressedCheckpoint when the model holds compressed experts. */
export async function saveRunCheckpoint(dir: string, options: SaveCheckpointOptions): Promise<void> {
  if (!holdsCompressedExperts(options.model)) return saveCheckpoint(dir, options);
  const { model, tokenizer, trainerState, extraTensors } = options;
  await saveCompressedCheckpoint(dir, {
    model,
    tokenizer,
    ...(trainerState !== undefined ? { trainerState } : {}),
    ...(extraTensors !== undefined ? { extraTensors } : {}),
    made: { init: 'scratch', trained: true },
  });
}

/** loadCheckpoint, or loadCompressedCheckpoint for a checkpoint with compression.json. */
export async function loadRunCheckpoint(dir: string): Promise<LoadedCheckpoint> {
  const plain = await loadCheckpoint(dir);
  if (!plain.extraFiles?.[COMPRESSION_FILES.record]) return plain;
  plain.model.dispose();
  tf.dispose(Object.values(plain.extraTensors ?? {}));
  return loadCompressedCheckpoint(dir);
}
