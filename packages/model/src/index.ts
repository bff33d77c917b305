/**
 * @switchyard/model: a decoder-only MoE transformer language model (Mixtral-compatible when
 * configured as Mixtral), a byte-level BPE tokenizer, safetensors checkpoints and generation.
 *
 * @packageDocumentation
 */
export type { CheckpointManifest, LoadedCheckpoint, SaveCheckpointOptions } from './checkpoint';
export {
  CHECKPOINT_FILES,
  checkpointTensorNames,
  loadCheckpoint,
  saveCheckpoint,
  selectionBiasTensorName,
} from './checkpoint';
export type {
  FFNActivation,
  ModelConfig,
  ModelConfigInput,
  ModelCost,
  ModelExpertsConfig,
  ModelMoEConfig,
  ModelRouterConfig,
  ModelSharedExpertsConfig,
} from './config';
export {
  defaultModelConfig,
  defineModelConfig,
  isMoELayer,
  modelConfigSchema,
  modelCost,
  validateModelConfig,
} from './config';
export { CHECKPOINT_FORMAT_VERSION, fromHfConfig, mixtralIncompatibilities, toHfConfig } from './hfconfig';
export type { LayerKV } from './internal/layers';
export type { GenerateOptions, SamplingOptions } from './internal/sampling';
export { TokenSampler } from './internal/sampling';
export type {
  BlockRangeOptions,
  BlockRangeResult,
  ForwardOptions,
  ForwardResult,
  LossResult,
  RaggedOptions,
  RaggedResult,
  RaggedSequence,
  StepProfile,
} from './model';
export { KVCache, MoETransformerLM } from './model';
export type { PresetInfo, PresetName } from './presets';
export { presetInfo, presets } from './presets';
export type { SafetensorsDtype, SafetensorsEntry, SafetensorsFile, SafetensorsTensor } from './safetensors';
export { decodeSafetensors, encodeSafetensors } from './safetensors';
export type { AddedTokenJson, BpeTrainOptions, TokenizerJson, TokenizerTrainingInput } from './tokenizer';
export { BpeTokenizer, END_OF_TEXT } from './tokenizer';
