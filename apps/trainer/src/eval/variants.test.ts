import { type ModelConfig, MoETransformerLM } from '@switchyard/model';
import { expectNoLeaks, Rng } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { tinyModel, TINY_VOCAB as V } from '../../test/tiny-model';
import { parseConfig } from '../config/load';
import { checkRanks } from '../train/setup';
import { buildEvalSet, evaluateModel } from './evaluate';
import { evaluateRoutingVariants } from './variants';

const streams = [0, 1].map((d) => ({
  domain: `d${d}`,
  tokens: Int32Array.from({ length: 300 }, (_, i) => (d * 31 + ((i * 5 + d) % 23)) % V),
}));

/** A tiny model with the given router settings and its evaluation shape. */
const tiny = (router: Record<string, unknown>) => tinyModel(router, 3);

/** `model`'s weights in a model built from `config`. */
function copyInto(model: MoETransformerLM, config: ModelConfig): MoETransformerLM {
  const other = new MoETransformerLM(config, new Rng(0));
  const src = model.namedVariables();
  for (const [name, v] of other.namedVariables()) v.assign(src.get(name)!);
  return other;
}

describe('evaluateRoutingVariants', () => {
  const set = buildEvalSet(streams, 8, 64, 4);

  it('scores the trained weights under other router settings, as a model built with them does', async () => {
    const { modelConfig, model, shape } = tiny({ type: 'switch', capacityFactor: 0.5 });
    const own = evaluateModel(model, set, shape, 1);
    expect(own.dropRate).toBeGreaterThan(0);
    const variants = { dropless: { evalCapacityFactor: 0 } };
    const out = evaluateRoutingVariants(model, modelConfig, variants, set, shape, 1);
    expect(out.dropless!.dropRate).toBe(0);
    const direct = copyInto(model, {
      ...modelConfig,
      moe: { ...modelConfig.moe, router: { ...modelConfig.moe.router, evalCapacityFactor: 0 } },
    });
    const want = evaluateModel(direct, set, shape, 1);
    expect(out.dropless!.valLoss).toBeCloseTo(want.valLoss, 6);
    expect(out.dropless!.perDomainLoss).toEqual(want.perDomainLoss);
    // The model itself still evaluates at its own factor.
    expect(evaluateModel(model, set, shape, 1).valLoss).toBeCloseTo(own.valLoss, 6);
    await expectNoLeaks(() => {
      evaluateRoutingVariants(model, modelConfig, variants, set, shape, 1);
    }, 'evaluateRoutingVariants');
    direct.dispose();
    model.dispose();
  });

  it('causal routing changes expert choice and leaves token choice as it is', () => {
    const ec = tiny({ type: 'expert-choice', capacityFactor: 2 });
    const causal = { causal: { evalRouting: 'causal' as const } };
    const batch = evaluateModel(ec.model, set, ec.shape, 1);
    const out = evaluateRoutingVariants(ec.model, ec.modelConfig, causal, set, ec.shape, 1);
    expect(out.causal!.valLoss).not.toBeCloseTo(batch.valLoss, 6);
    ec.model.dispose();
    const tc = tiny({ type: 'topk', k: 2 });
    const tcOut = evaluateRoutingVariants(tc.model, tc.modelConfig, causal, set, tc.shape, 1);
    expect(tcOut.causal!.valLoss).toBeCloseTo(evaluateModel(tc.model, set, tc.shape, 1).valLoss, 6);
    tc.model.dispose();
  });

  it('names the variant whose settings the router refuses', () => {
    const { modelConfig, model, shape } = tiny({ type: 'topk', k: 2 });
    expect(() =>
      evaluateRoutingVariants(model, modelConfig, { odd: { evalCapacityFactor: -1 } }, set, shape, 1),
    ).toThrow(/eval\.routingVariants\.odd: the router refuses these settings/);
    model.dispose();
  });

  it('is refused where the model is not a single-device copy, as the full-step pool is under a pipeline', () => {
    const variants = { eval: { routingVariants: { dropless: { evalCapacityFactor: 0 } } } };
    expect(() => checkRanks(parseConfig({ ...variants, parallel: { expertParallel: 2 } }), 2)).toThrow(
      /eval\.routingVariants: expected none with parallel\.expertParallel > 1 .*got dropless/,
    );
    expect(() => checkRanks(parseConfig({ ...variants, compress: { rank: 4 } }), 1)).toThrow(
      /eval\.routingVariants: expected none with compress\.rank > 0/,
    );
    expect(() =>
      checkRanks(
        parseConfig({ balance: { method: 'global', globalPool: 'step' }, parallel: { pipeline: 2 } }),
        2,
      ),
    ).toThrow(/balance\.globalPool: expected 'cumulative' with parallel\.pipeline > 1/);
    expect(() => checkRanks(parseConfig(variants), 1)).not.toThrow();
  });
});
