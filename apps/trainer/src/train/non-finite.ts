/**
 * When a training step meets NaN or Infinity: where it first shows (a weight, a router's input or
 * logits, the output head), the NON_FINITE error naming it, and the `debug.nanAtStep` switch that
 * plants one to test the guard.
 */
import type { MoETransformerLM } from '@switchyard/model';
import { isSwitchyardError, SwitchyardError, scoped, tf } from '@switchyard/tensor';
import type { MicroBatch } from '../data/batcher';

/** Where a non-finite value was found: the block, and what in it. */
export interface NonFiniteSite {
  readonly layer: string;
  readonly detail: string;
}

/** The block a model variable belongs to, as an error names it (`layer 3`, `the token embedding`). */
export function blockOf(name: string): string {
  const m = /^layers\.(\d+)\./.exec(name);
  if (m) return `layer ${m[1]}`;
  if (name === 'embed_tokens') return 'the token embedding';
  return `the output head (${name})`;
}

function allFinite(t: tf.Tensor): boolean {
  return tf.tidy(() => t.isFinite().all().dataSync()[0] === 1);
}

/**
 * Finds where non-finite values first show: the first variable holding NaN or Infinity, else the
 * first MoE layer whose router input or logits are non-finite in an inference-mode forward of the
 * batch, else the output head.
 */
export function locateNonFinite(model: MoETransformerLM, mb: MicroBatch): NonFiniteSite {
  for (const [name, v] of model.namedVariables()) {
    if (!allFinite(v)) return { layer: blockOf(name), detail: `weights of ${name} hold NaN or Infinity` };
  }
  let reached = -1;
  const track = (l: number): undefined => {
    reached = l;
    return undefined;
  };
  try {
    return scoped((): NonFiniteSite => {
      const x = tf.tensor2d(mb.inputsBS, [mb.batchSize, mb.seqLen], 'int32');
      const { logitsBSV, plans } = model.forward(x, { training: false, selectionBias: track });
      for (let l = 0; l < plans.length; l++) {
        if (!allFinite(plans[l]!.logitsTE)) return routerSite(model, l, 'router logits');
      }
      if (!allFinite(logitsBSV)) return { layer: 'the output head', detail: 'the logits are non-finite' };
      return {
        layer: 'an unknown layer',
        detail:
          'an inference-mode forward of the same batch is finite: the overflow happens in training mode only',
      };
    });
  } catch (e) {
    if (isSwitchyardError(e, 'NON_FINITE') && reached >= 0) return routerSite(model, reached, 'router input');
    throw e;
  }
}

function routerSite(model: MoETransformerLM, moeLayer: number, what: string): NonFiniteSite {
  const block = model.moeLayerIndices[moeLayer]!;
  return { layer: `layer ${block}`, detail: `${what} of MoE layer ${moeLayer} (block ${block}) non-finite` };
}

/**
 * The NON_FINITE error that stops a run: what was non-finite, at which step (1-based), where it
 * first shows, and whether a good checkpoint is left to resume from.
 */
export function nonFiniteError(
  what: string,
  step: number,
  site: NonFiniteSite,
  lastCheckpoint: string | undefined,
): SwitchyardError {
  const keep = lastCheckpoint
    ? `the last good checkpoint ${lastCheckpoint} is intact`
    : 'no checkpoint had been written yet';
  return new SwitchyardError(
    'NON_FINITE',
    `${what} at step ${step}, first appearing in ${site.layer} (${site.detail}); training stopped, ${keep}`,
    { details: { step, layer: site.layer } },
  );
}

/** Writes a NaN into one weight of a block (the `debug.nanAtStep` switch). */
export function poisonWeight(model: MoETransformerLM, block: number): void {
  const name = `layers.${block}.attn.q`;
  const v = model.namedVariables().get(name);
  if (!v) throw new SwitchyardError('CONFIG_INVALID', `debug.nanLayer: the model has no block ${block}`);
  const values = v.dataSync().slice() as Float32Array;
  values[0] = Number.NaN;
  tf.tidy(() => v.assign(tf.tensor(values, v.shape, 'float32')));
}
