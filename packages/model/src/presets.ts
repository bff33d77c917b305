/**
 * Named model presets (src/presets/*.json, validated on load) with their sizes and costs.
 */
import { type ModelConfig, modelCost, validateModelConfig } from './config';
import small from './presets/small.json';
import tiny from './presets/tiny.json';

/** Names of the built-in presets. */
export type PresetName = 'tiny' | 'small';

/** A preset's purpose and cost, computed from its config. */
export interface PresetInfo {
  /** What the preset is for. */
  readonly description: string;
  /** Trainable parameters. */
  readonly numParams: number;
  /** Parameters used per token. */
  readonly activeParamsPerToken: number;
  /** Forward FLOPs per token at maxSeqLen. */
  readonly flopsPerToken: number;
  /** Training (forward + backward) FLOPs per token at maxSeqLen. */
  readonly trainFlopsPerToken: number;
}

const files = { tiny, small } as const;

/**
 * Built-in model configs: `tiny` (tests; milliseconds per step on any backend) and `small` (the
 * default training run: trains on the Brown corpus in minutes on one wasm thread).
 *
 * When to use: as a starting point; override fields with `defineModelConfig(overrides, presets.small)`.
 *
 * @example
 * ```ts
 * const model = new MoETransformerLM(presets.tiny, new Rng(0));
 * ```
 */
export const presets: Readonly<Record<PresetName, ModelConfig>> = Object.freeze({
  tiny: validateModelConfig(files.tiny.config, 'presets/tiny.json'),
  small: validateModelConfig(files.small.config, 'presets/small.json'),
});

/**
 * Each preset's description, parameter count, active parameters and FLOPs per token.
 *
 * @example
 * ```ts
 * presetInfo.small.trainFlopsPerToken; // training FLOPs per token at seqLen 128
 * ```
 */
export const presetInfo: Readonly<Record<PresetName, PresetInfo>> = Object.freeze(
  Object.fromEntries(
    (Object.keys(files) as PresetName[]).map((name) => {
      const cost = modelCost(presets[name]);
      return [
        name,
        {
          description: files[name].description,
          numParams: cost.numParams,
          activeParamsPerToken: cost.activeParamsPerToken,
          flopsPerToken: cost.flopsPerToken,
          trainFlopsPerToken: cost.trainFlopsPerToken,
        },
      ];
    }),
  ) as Record<PresetName, PresetInfo>,
);
