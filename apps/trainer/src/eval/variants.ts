/**
 * The final model scored under other router settings (`eval.routingVariants`): for each variant, a
 * model built from the run's configuration with the variant's router settings, holding the trained
 * weights and selection biases, scored on the same validation set by {@link evaluateModel}. ST-MoE
 * trains at capacity factor 1.25 and evaluates at 2.0; a causal language model trained with expert
 * choice must be scored with causal routing.
 */
import { type ModelConfig, MoETransformerLM } from '@switchyard/model';
import { Rng, SwitchyardError } from '@switchyard/tensor';
import type { TrainConfig } from '../config/schema';
import type { RoutingVariantEval } from '../report/records';
import { type EvalModelInfo, type EvalSet, type EvalShard, evaluateModel } from './evaluate';

/** The router settings a variant overrides (see `eval.routingVariants`). */
export type RoutingVariant = TrainConfig['eval']['routingVariants'][string];

/**
 * Scores `model` under every variant's router settings; the variants' models are released before
 * returning. `model` is left untouched.
 *
 * When to use: once, after the final evaluation of a run with `eval.routingVariants`.
 *
 * @example
 * ```ts
 * const out = evaluateRoutingVariants(model, modelConfig, { dropless: { evalCapacityFactor: 0 } }, evalSet, shape, 500);
 * out.dropless.valLoss;
 * ```
 */
export function evaluateRoutingVariants(
  model: MoETransformerLM,
  modelConfig: ModelConfig,
  variants: Readonly<Record<string, RoutingVariant>>,
  set: EvalSet,
  info: EvalModelInfo,
  step: number,
  shard?: EvalShard,
): Record<string, RoutingVariantEval> {
  const out: Record<string, RoutingVariantEval> = {};
  const trained = model.namedVariables();
  for (const [id, overrides] of Object.entries(variants)) {
    const given = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
    const config = {
      ...modelConfig,
      moe: { ...modelConfig.moe, router: { ...modelConfig.moe.router, ...given } },
    } as ModelConfig;
    let variant: MoETransformerLM;
    try {
      variant = new MoETransformerLM(config, new Rng(0));
    } catch (e) {
      throw new SwitchyardError(
        'CONFIG_INVALID',
        `eval.routingVariants.${id}: the router refuses these settings (${e instanceof Error ? e.message : String(e)})`,
        { cause: e },
      );
    }
    try {
      for (const [name, v] of variant.namedVariables()) {
        const source = trained.get(name);
        if (!source) {
          throw new SwitchyardError(
            'STATE_INVALID',
            `evaluateRoutingVariants(): the model has no variable ${name} for variant ${id}`,
          );
        }
        v.assign(source);
      }
      for (let l = 0; l < info.numMoELayers; l++) variant.setSelectionBias(l, model.getSelectionBias(l));
      const rec = evaluateModel(variant, set, info, step, shard);
      out[id] = {
        valLoss: rec.valLoss,
        perDomainLoss: rec.perDomainLoss,
        dropRate: rec.dropRate,
        maxVioGlobal: rec.maxVioGlobal,
      };
    } finally {
      variant.dispose();
    }
  }
  return out;
}
