/**
 * The experiments `switchyard-train experiment <name>` runs: each is a shared base configuration
 * plus one override set per arm, and the claims from the literature its report checks, each with
 * its check of the arms' results.
 */
import type { ConfigObject } from '../config/load';
import { fmt } from '../report/report';
import {
  type ArmLookup,
  type ArmResult,
  type Claim,
  LOSS_MARGIN,
  lossBelow,
  signedDiff,
  vioAbove,
} from './claims';

/** One arm of an experiment. */
export interface ExperimentArm {
  /** Folder name and label. */
  readonly id: string;
  /** What the arm does, one line. */
  readonly label: string;
  /** Config overrides merged over the experiment's base. */
  readonly overrides: ConfigObject;
}

/** An experiment: a base configuration and its arms. */
export interface ExperimentDefinition {
  readonly name: string;
  /** What question the experiment asks. */
  readonly title: string;
  readonly description: string;
  /** Overrides of the trainer defaults shared by every arm. */
  readonly base: ConfigObject;
  readonly arms: readonly ExperimentArm[];
  /**
   * What the literature reports (SPEC section 2), each with its check against this experiment's arms;
   * the report shows them once every arm has a result.
   */
  readonly claims: readonly Claim[];
}

/**
 * A model shaped for experiments: the `small` preset narrowed to width 96 and 3 blocks, 8 experts
 * of width 192 (1.6M parameters), so one arm trains about a million tokens in a quarter of an hour
 * of one wasm thread and an experiment of four arms takes about an hour.
 */
const EXPERIMENT_MODEL: ConfigObject = {
  preset: 'small',
  dModel: 96,
  numLayers: 3,
  numHeads: 4,
  numKvHeads: 2,
  moe: { experts: { numExperts: 8, dFF: 192 } },
};

const EXPERIMENT_BASE: ConfigObject = {
  tokenizer: { vocabSize: 2048 },
  model: EXPERIMENT_MODEL,
  train: { seqLen: 64, microBatchSize: 16, gradAccum: 2, steps: 600, warmupSteps: 40, lr: 3e-3 },
  eval: { every: 150, tokensPerDomain: 2048, batchSize: 16 },
  log: { progress: 'lines', every: 25 },
  // An interrupted experiment resumes each arm from its last checkpoint.
  checkpoint: { every: 100, keep: 1 },
};

/**
 * Global-batch vs micro-batch balancing under domain-homogeneous micro-batches (Qiu et al. 2025).
 */
const balanceScope: ExperimentDefinition = {
  name: 'balance-scope',
  title: 'Balance scope: micro-batch vs global-batch balancing loss',
  description:
    'Every micro-batch is drawn from one Brown genre and 8 micro-batches are accumulated per optimizer step. ' +
    'The micro-batch loss balances each single-genre micro-batch; the global-batch loss balances the counts pooled ' +
    'over the whole step; the shuffled loss takes its frequencies from a random micro-batch-sized subset of the ' +
    "step's selections; global+local adds a micro-batch term at 1% of alpha.",
  base: {
    ...EXPERIMENT_BASE,
    data: { batching: 'domain' },
    train: { seqLen: 64, microBatchSize: 8, gradAccum: 8, steps: 240, warmupSteps: 24, lr: 3e-3 },
    eval: { every: 60, tokensPerDomain: 2048, batchSize: 16 },
  },
  arms: [
    {
      id: 'micro',
      label: 'micro-batch aux loss (alpha 1e-2)',
      overrides: { balance: { method: 'micro', alpha: 1e-2 } },
    },
    {
      id: 'global',
      label: 'global-batch aux loss (alpha 1e-2)',
      overrides: { balance: { method: 'global', alpha: 1e-2 } },
    },
    {
      id: 'shuffled',
      label: 'shuffled-batch aux loss (alpha 1e-2)',
      overrides: { balance: { method: 'shuffled', alpha: 1e-2 } },
    },
    {
      id: 'global-local',
      label: 'global + 1% micro-batch loss (alpha 1e-2)',
      overrides: { balance: { method: 'global+local', alpha: 1e-2, localRatio: 0.01 } },
    },
  ],
  claims: [
    {
      text: 'Global-batch balancing reaches a lower evaluation loss than micro-batch balancing (Qwen: PPL 8.167 -> 8.038 at 3.4B parameters).',
      check: (arm) => {
        const [micro, global] = [arm('micro'), arm('global')];
        return {
          holds: lossBelow(global.finalValLoss, micro.finalValLoss),
          observed: `val loss global ${fmt(global.finalValLoss)} vs micro ${fmt(micro.finalValLoss)} (${signedDiff(global.finalValLoss, micro.finalValLoss)})`,
        };
      },
    },
    {
      text: 'Under global balancing, per-domain selection frequencies peak at 2-3x or more of the uniform K/E (experts specialise by domain).',
      check: (arm) => {
        const [micro, global] = [arm('micro'), arm('global')];
        const uniform = global.k / global.numExperts;
        return {
          holds: global.specializationPeak >= 2 && global.topKShare > micro.topKShare,
          observed: `max F/(K/E): global ${fmt(global.specializationPeak, 3)}, micro ${fmt(micro.specializationPeak, 3)}; top-K share global ${fmt(global.topKShare, 3)}, micro ${fmt(micro.topKShare, 3)} (uniform ${fmt(uniform, 3)})`,
        };
      },
    },
    {
      text: 'The shuffled-batch loss performs close to the global-batch loss.',
      check: (arm) => {
        const [micro, global, shuffled] = [arm('micro'), arm('global'), arm('shuffled')];
        return {
          holds:
            lossBelow(shuffled.finalValLoss, micro.finalValLoss) &&
            Math.abs(shuffled.finalValLoss - global.finalValLoss) <
              Math.abs(micro.finalValLoss - global.finalValLoss),
          observed: `val loss shuffled ${fmt(shuffled.finalValLoss)}, global ${fmt(global.finalValLoss)}, micro ${fmt(micro.finalValLoss)}`,
        };
      },
    },
    {
      text: 'Per-micro-batch MaxVio is worse under global balancing and partly restored by the 1% local term.',
      check: (arm) => {
        const [micro, global, gl] = [arm('micro'), arm('global'), arm('global-local')];
        return {
          holds:
            vioAbove(global.maxVioMicro, micro.maxVioMicro) && vioAbove(global.maxVioMicro, gl.maxVioMicro),
          observed: `per-micro-batch MaxVio: micro ${fmt(micro.maxVioMicro, 3)}, global ${fmt(global.maxVioMicro, 3)}, global+local ${fmt(gl.maxVioMicro, 3)}`,
        };
      },
    },
  ],
};

/** Loss-free bias balancing vs auxiliary losses (Wang et al. 2024). */
const lossFree: ExperimentDefinition = {
  name: 'loss-free',
  title: 'Loss-free balancing: sigmoid router with a selection bias vs auxiliary losses',
  description:
    'All arms use the sigmoid router (DeepSeek-V3 gate) with top-2 of 8 experts and mixed micro-batches. ' +
    'The loss-free arm adds no loss and moves a per-expert selection bias by u = 1e-3 after each optimizer step; ' +
    'two arms use the micro-batch auxiliary loss at alpha 1e-2 and 1e-3; one arm has no balancing at all.',
  base: {
    ...EXPERIMENT_BASE,
    model: {
      ...EXPERIMENT_MODEL,
      moe: { ...(EXPERIMENT_MODEL.moe as ConfigObject), router: { type: 'sigmoid', k: 2 } },
    },
  },
  arms: [
    {
      id: 'loss-free',
      label: 'loss-free bias, u = 1e-3, no aux loss',
      overrides: { balance: { method: 'loss-free', biasUpdateRate: 1e-3 } },
    },
    {
      id: 'aux-1e-2',
      label: 'aux loss alpha 1e-2',
      overrides: { balance: { method: 'micro', alpha: 1e-2 } },
    },
    {
      id: 'aux-1e-3',
      label: 'aux loss alpha 1e-3',
      overrides: { balance: { method: 'micro', alpha: 1e-3 } },
    },
    { id: 'none', label: 'no balancing', overrides: { balance: { method: 'none' } } },
  ],
  claims: [
    {
      text: 'Loss-free balancing reaches MaxVio_global < 0.1 (paper, 1B model: 0.72 -> 0.04) ...',
      check: (arm) => {
        const [lf, a2, a3] = [arm('loss-free'), arm('aux-1e-2'), arm('aux-1e-3')];
        return {
          holds: lf.maxVioGlobal < 0.1,
          observed: `MaxVio_global loss-free ${fmt(lf.maxVioGlobal, 3)}, aux 1e-2 ${fmt(a2.maxVioGlobal, 3)}, aux 1e-3 ${fmt(a3.maxVioGlobal, 3)}`,
        };
      },
    },
    {
      text: '... with an evaluation loss no worse than the aux-loss run (paper: PPL 9.56 -> 9.50).',
      check: (arm) => {
        const [lf, a2] = [arm('loss-free'), arm('aux-1e-2')];
        return {
          holds: lf.finalValLoss <= a2.finalValLoss + LOSS_MARGIN,
          observed: `val loss loss-free ${fmt(lf.finalValLoss)} vs aux 1e-2 ${fmt(a2.finalValLoss)} (${signedDiff(lf.finalValLoss, a2.finalValLoss)})`,
        };
      },
    },
    {
      text: 'Without any balancing, load collapses onto few experts (MaxVio >> 1).',
      check: (arm) => {
        const none = arm('none');
        return {
          holds: none.maxVioGlobal > 1,
          observed: `MaxVio_global without balancing ${fmt(none.maxVioGlobal, 3)}`,
        };
      },
    },
    {
      text: 'A smaller aux coefficient balances less but interferes less with the language-model loss.',
      check: (arm) => {
        const [a2, a3] = [arm('aux-1e-2'), arm('aux-1e-3')];
        return {
          holds:
            vioAbove(a3.maxVioGlobal, a2.maxVioGlobal) && a3.finalValLoss <= a2.finalValLoss + LOSS_MARGIN,
          observed: `aux 1e-3: MaxVio_global ${fmt(a3.maxVioGlobal, 3)}, val loss ${fmt(a3.finalValLoss)}; aux 1e-2: ${fmt(a2.maxVioGlobal, 3)}, ${fmt(a2.finalValLoss)}`,
        };
      },
    },
  ],
};

/** The capacity experiment's arms, lowest capacity first. */
const capacityArms = (arm: ArmLookup): [ArmResult, ArmResult, ArmResult, ArmResult] => [
  arm('cf-1.0'),
  arm('cf-1.25'),
  arm('cf-2.0'),
  arm('dropless'),
];

/** Switch top-1 at several capacity factors (Fedus et al. 2021). */
const capacity: ExperimentDefinition = {
  name: 'capacity',
  title: 'Capacity factor: Switch top-1 at 1.0, 1.25, 2.0 and dropless',
  description:
    'All arms use the Switch router (softmax, top-1, raw probability as the combine weight) with the micro-batch ' +
    'aux loss at alpha 1e-2 and mixed micro-batches; training and evaluation use the same capacity factor, as in ' +
    'the Switch Transformer. An assignment over capacity is dropped: the token passes through the residual only.',
  base: {
    ...EXPERIMENT_BASE,
    model: {
      ...EXPERIMENT_MODEL,
      moe: { ...(EXPERIMENT_MODEL.moe as ConfigObject), router: { type: 'switch' } },
    },
    train: { seqLen: 64, microBatchSize: 16, gradAccum: 2, steps: 800, warmupSteps: 40, lr: 3e-3 },
    eval: { every: 200, tokensPerDomain: 2048, batchSize: 16 },
    balance: { method: 'micro', alpha: 1e-2 },
  },
  arms: [
    {
      id: 'cf-1.0',
      label: 'capacity factor 1.0',
      overrides: { model: { moe: { router: { capacityFactor: 1.0, evalCapacityFactor: 1.0 } } } },
    },
    {
      id: 'cf-1.25',
      label: 'capacity factor 1.25',
      overrides: { model: { moe: { router: { capacityFactor: 1.25, evalCapacityFactor: 1.25 } } } },
    },
    {
      id: 'cf-2.0',
      label: 'capacity factor 2.0',
      overrides: { model: { moe: { router: { capacityFactor: 2.0, evalCapacityFactor: 2.0 } } } },
    },
    {
      id: 'dropless',
      label: 'dropless (no capacity limit)',
      overrides: { model: { moe: { router: { capacityFactor: 0, evalCapacityFactor: 0 } } } },
    },
  ],
  claims: [
    {
      text: 'Lower capacity factors drop more tokens (Switch: capacity 1.0 drops a few percent with the aux loss on).',
      check: (arm) => {
        const [c1, c125, c2, dl] = capacityArms(arm);
        return {
          holds:
            c1.trainDropRate >= c125.trainDropRate &&
            c125.trainDropRate >= c2.trainDropRate &&
            dl.trainDropRate === 0,
          observed: `training drop rate 1.0: ${fmt(c1.trainDropRate, 3)}, 1.25: ${fmt(c125.trainDropRate, 3)}, 2.0: ${fmt(c2.trainDropRate, 3)}, dropless: ${fmt(dl.trainDropRate, 3)}`,
        };
      },
    },
    {
      text: 'Dropping hurts quality: higher capacity (or dropless) gives a lower loss per step, at a higher compute and memory cost.',
      check: (arm) => {
        const [c1, c125, c2, dl] = capacityArms(arm);
        return {
          holds: lossBelow(dl.finalValLoss, c1.finalValLoss) && lossBelow(c2.finalValLoss, c1.finalValLoss),
          observed: `val loss 1.0: ${fmt(c1.finalValLoss)}, 1.25: ${fmt(c125.finalValLoss)}, 2.0: ${fmt(c2.finalValLoss)}, dropless: ${fmt(dl.finalValLoss)}`,
        };
      },
    },
    {
      text: 'Switch Transformer found 1.0-1.25 a good trade-off in speed per quality at scale.',
      check: (arm) => {
        const [c1, c125, c2, dl] = capacityArms(arm);
        return {
          holds: null,
          observed: `tokens/s 1.0: ${fmt(c1.tokensPerSec)}, 1.25: ${fmt(c125.tokensPerSec)}, 2.0: ${fmt(c2.tokensPerSec)}, dropless: ${fmt(dl.tokensPerSec)}`,
        };
      },
    },
  ],
};

/** Every experiment by name. */
export const EXPERIMENTS: Readonly<Record<string, ExperimentDefinition>> = {
  'balance-scope': balanceScope,
  'loss-free': lossFree,
  capacity,
};
