import { describe, expect, it } from 'vitest';
import {
  defaultModelConfig,
  defineModelConfig,
  isMoELayer,
  type ModelConfig,
  modelCost,
  validateModelConfig,
} from './config';
import { fromHfConfig, mixtralIncompatibilities, toHfConfig } from './hfconfig';
import { presetInfo, presets } from './presets';

describe('model config', () => {
  it('the default config is the small preset', () => {
    expect(presets.small).toEqual(defaultModelConfig);
  });

  it('defineModelConfig merges nested fields over the defaults and validates', () => {
    const c = defineModelConfig({
      numLayers: 2,
      moe: { experts: { numExperts: 4 }, router: { k: 1, normTopK: true } },
    });
    expect(c.numLayers).toBe(2);
    expect(c.moe.experts).toEqual({ numExperts: 4, dFF: 256, activation: 'swiglu' });
    expect(c.moe.router).toEqual({ type: 'topk', k: 1, normTopK: true });
    const sig = defineModelConfig({ moe: { router: { type: 'sigmoid', routeScale: 2.5 } } });
    expect(sig.moe.router).toEqual({ type: 'sigmoid', routeScale: 2.5 });
  });

  it('reports every problem as "path: expected ..., received ..."', () => {
    const bad = {
      ...defaultModelConfig,
      dModel: 130.5,
      moe: {
        ...defaultModelConfig.moe,
        experts: { ...defaultModelConfig.moe.experts, activation: 'tanh' },
        extra: 1,
      },
    };
    let msg = '';
    try {
      validateModelConfig(bad, 'run.json');
    } catch (e) {
      msg = (e as Error).message;
      expect((e as { code: string }).code).toBe('CONFIG_INVALID');
    }
    expect(msg).toMatch(/^run\.json is not a valid model config:/);
    expect(msg).toMatch(/dModel: expected int, received number/);
    expect(msg).toMatch(
      /moe\.experts\.activation: expected one of "swiglu"\|"gelu"\|"relu", received "tanh"/,
    );
    expect(msg).toMatch(/moe\.extra: unknown key/);
  });

  it('checks cross-field rules', () => {
    expect(() => defineModelConfig({ numHeads: 3 })).toThrow(
      /numHeads: expected a divisor of dModel \(128\), received 3/,
    );
    expect(() => defineModelConfig({ dModel: 12, numHeads: 4, numKvHeads: 4 })).toThrow(/even head width/);
    expect(() => defineModelConfig({ numKvHeads: 3 })).toThrow(
      /numKvHeads: expected a divisor of numHeads \(4\)/,
    );
    expect(() => defineModelConfig({ moe: { firstDense: 9 } })).toThrow(
      /moe\.firstDense: expected an integer in \[0, numLayers=4\]/,
    );
    expect(() => defineModelConfig({ moe: { router: { k: 9 } } })).toThrow(
      /moe\.router: `k` passed to createRouter\(\)/,
    );
  });

  it('places MoE layers after firstDense, every k-th layer', () => {
    const c = defineModelConfig({ numLayers: 6, moe: { firstDense: 1, every: 2 } });
    expect([0, 1, 2, 3, 4, 5].map((l) => isMoELayer(c, l))).toEqual([false, true, false, true, false, true]);
    const dense = defineModelConfig({ moe: { firstDense: 4 } });
    expect(modelCost(dense).numMoELayers).toBe(0);
  });

  it('counts parameters, active parameters and FLOPs by hand for the tiny preset', () => {
    const c = presets.tiny; // V 512, D 32, 2 layers (dense, MoE), H 4, G 2, F 64, 4 experts of 32, K 2, tied
    const attn = 32 * 32 * 2 + 32 * 16 * 2;
    const norms = 2 * 32;
    const dense = 3 * 32 * 64;
    const expert = 3 * 32 * 32;
    const router = 32 * 4;
    const embed = 512 * 32;
    const cost = modelCost(c);
    expect(cost.numParams).toBe(embed + 32 + 2 * (attn + norms) + dense + router + 4 * expert);
    expect(cost.activeParamsPerToken).toBe(embed + 32 + 2 * (attn + norms) + dense + router + 2 * expert);
    const attnScores = 4 * 4 * 8 * 64;
    expect(cost.flopsPerToken).toBe(
      2 * embed + 2 * (2 * attn + attnScores) + 2 * dense + 2 * (router + 2 * expert),
    );
    expect(cost.trainFlopsPerToken).toBe(3 * cost.flopsPerToken);
    expect(presetInfo.tiny.numParams).toBe(cost.numParams);
    expect(presetInfo.small.description).toMatch(/default training run/);
  });
});

describe('config.json', () => {
  const roundTrip = (c: ModelConfig) =>
    fromHfConfig(JSON.parse(JSON.stringify(toHfConfig(c, { hasSelectionBias: false, eosTokenId: 0 }))));

  it('uses Mixtral field names and round-trips the config', () => {
    const j = toHfConfig(presets.small, { hasSelectionBias: false, eosTokenId: 0 });
    expect(j).toMatchObject({
      architectures: ['MixtralForCausalLM'],
      model_type: 'mixtral',
      hidden_size: 128,
      intermediate_size: 256,
      num_hidden_layers: 4,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      num_local_experts: 8,
      num_experts_per_tok: 2,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      vocab_size: 4096,
      tie_word_embeddings: true,
      hidden_act: 'silu',
    });
    expect(roundTrip(presets.small)).toEqual(presets.small);
    const custom = defineModelConfig({
      moe: {
        firstDense: 1,
        every: 2,
        shared: { count: 2, dFF: 64, gate: true },
        router: { type: 'sigmoid', k: 3 },
        computeMode: 'padded',
      },
    });
    expect(roundTrip(custom)).toEqual(custom);
  });

  it('marks configs Mixtral cannot express', () => {
    expect(mixtralIncompatibilities(presets.small)).toEqual([]);
    const other = defineModelConfig({
      moe: { firstDense: 1, router: { capacityFactor: 1.25 }, shared: { count: 1, dFF: 64, gate: false } },
    });
    expect(mixtralIncompatibilities(other)).toEqual([
      'a capacity factor (Mixtral is dropless)',
      'shared experts',
      'dense layers (Mixtral has an MoE layer in every block)',
    ]);
    expect(toHfConfig(other, { hasSelectionBias: false, eosTokenId: null }).model_type).toBe(
      'switchyard_moe',
    );
    expect(toHfConfig(presets.small, { hasSelectionBias: true, eosTokenId: null }).architectures).toEqual([
      'SwitchyardMoEForCausalLM',
    ]);
  });

  it('rejects unknown keys and inconsistent Mixtral fields', () => {
    const j = toHfConfig(presets.small, { hasSelectionBias: false, eosTokenId: 0 });
    expect(() => fromHfConfig({ ...j, num_experts: 8 })).toThrow(/num_experts: unknown key/);
    expect(() => fromHfConfig({ ...j, num_experts_per_tok: 3 })).toThrow(
      /num_experts_per_tok: expected 2 \(derived from the other fields\), received 3/,
    );
    expect(() => fromHfConfig({ ...j, hidden_size: 126 })).toThrow(
      /numHeads: expected a divisor of dModel \(126\)/,
    );
  });
});
