/**
 * Seeded fixtures shared by the tests and scripts/hf-parity: a tiny Mixtral-configured model with
 * weights large enough that routing, RoPE and the norm epsilon all matter, and fixed token ids.
 */
import { Rng, tf } from '@switchyard/tensor';
import { BpeTokenizer, defineModelConfig, type ModelConfig, MoETransformerLM } from '../src/index';

/** A Mixtral configuration: top-2 softmax renormalised, SwiGLU experts, GQA, untied head, large norm eps. */
export const PARITY_CONFIG: ModelConfig = defineModelConfig({
  vocabSize: 264,
  dModel: 32,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  dFF: 64,
  activation: 'swiglu',
  maxSeqLen: 32,
  ropeTheta: 10000,
  rmsNormEps: 1e-2,
  tieEmbeddings: false,
  moe: {
    every: 1,
    firstDense: 0,
    router: { type: 'topk', k: 2, initStd: 0.5 },
    experts: { numExperts: 4, dFF: 24, activation: 'swiglu' },
  },
  initStd: 0.25,
});

export const PARITY_SEED = 20240611;

/** Builds the parity model: seeded init at std 0.25, norm weights drawn from U(0.5, 1.5). */
export function buildParityModel(): MoETransformerLM {
  const model = new MoETransformerLM(PARITY_CONFIG, new Rng(PARITY_SEED));
  const rng = new Rng(PARITY_SEED).fork('norms');
  for (const [name, v] of model.namedVariables()) {
    if (/norm$/.test(name)) tf.tidy(() => v.assign(rng.uniformTensor(v.shape, 0.5, 1.5)));
  }
  return model;
}

/** Token ids [2, 16] the parity logits are computed on. */
export function parityTokens(): number[][] {
  const rng = new Rng(PARITY_SEED).fork('tokens');
  return [0, 1].map(() => Array.from({ length: 16 }, () => rng.int(PARITY_CONFIG.vocabSize)));
}

/** A small byte-level tokenizer trained on a fixed text (for checkpoints of small models). */
export function smallTokenizer(vocabSize = 264): BpeTokenizer {
  return BpeTokenizer.train(
    { texts: ['the quick brown fox jumps over the lazy dog. the dog sleeps; the fox runs.'] },
    { vocabSize },
  );
}
