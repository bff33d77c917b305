// A tiny seeded model for unit tests of the training step and evaluation: one dense block, then one
// MoE block of 4 experts of width 16 (model width 16), with the given router and trainer settings.
import { type ModelConfig, MoETransformerLM } from '@switchyard/model';
import { Rng } from '@switchyard/tensor';
import { parseConfig } from '../src/config/load';
import type { TrainConfig } from '../src/config/schema';
import type { EvalModelInfo } from '../src/eval/evaluate';
import { buildModelConfig, routingShape } from '../src/train/setup';

/** The tiny model's vocabulary size. */
export const TINY_VOCAB = 64;

/** A tiny model with `router` settings, seeded by `seed`, with the trainer config around it. */
export function tinyModel(
  router: Record<string, unknown>,
  seed: number,
  rest: Record<string, unknown> = {},
): { config: TrainConfig; modelConfig: ModelConfig; model: MoETransformerLM; shape: EvalModelInfo } {
  const config = parseConfig({
    model: {
      preset: 'tiny',
      dModel: 16,
      numLayers: 2,
      numHeads: 2,
      numKvHeads: 1,
      moe: { router, experts: { numExperts: 4, dFF: 16 } },
    },
    train: { seqLen: 8 },
    ...rest,
  });
  const modelConfig = buildModelConfig(config, TINY_VOCAB);
  const model = new MoETransformerLM(modelConfig, new Rng(seed).fork('init'));
  const { k, numExperts } = routingShape(modelConfig);
  return { config, modelConfig, model, shape: { numMoELayers: model.moeLayerIndices.length, numExperts, k } };
}
