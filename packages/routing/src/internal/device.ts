/**
 * Routing decisions as tensor ops, with no read to the host (`decideOn: 'device'`): top-k (with an
 * optional group limit), GShard's random second expert, each assignment's position in its expert
 * and the capacity drops, then a plan whose host arrays are read on first access only.
 *
 * The rules are the host path's (select.ts, capacity.ts): top-k descending with ties to the lower
 * expert; `position` drops take assignments in token order (GShard: every first choice before any
 * second), `probs` drops in descending gate order with ties to the earlier assignment.
 *
 * Shape letters: T tokens, E experts, K slots per token, G groups, P experts per group, N = T * K
 * assignments (row-major: assignment t * K + j is slot j of token t).
 */
import {
  customGrad,
  type GradSave,
  oneHot,
  type Tensor2D,
  takeAlongLastAxis,
  tf,
  topK,
} from '@switchyard/tensor';
import { positionsInExperts } from '../capacity';
import type { DropPolicy, GroupLimitedConfig } from '../config';
import type { RoutingPlan } from '../types';
import { countSelections, type RoutingPlanTensors } from './common';

/** What the device decision needs besides the scores: the host path's inputs, uploaded once. */
export interface DeviceDecisionSpec {
  readonly numExperts: number;
  readonly k: number;
  readonly groupLimited: GroupLimitedConfig | null;
  /** Selection-only bias [E] (loss-free balancing). */
  readonly selectionBiasE?: Float32Array;
  /** Random-routing warm-up: i.i.d. uniform selection scores [T * E] that replace the scores. */
  readonly randomSelection?: Float64Array;
  /** GShard: the second expert is used when 2 * g2 / (g1 + g2) > u[t] (training), one u per token. */
  readonly gshardUniform?: Float32Array;
  /** GShard at evaluation: the second expert is used when g2 / (g1 + g2) >= this. */
  readonly gshardThreshold?: number;
  readonly capacity: number | null;
  readonly dropPolicy: DropPolicy;
  /** `slot`: every token's first choice takes capacity before any second choice (GShard). */
  readonly order: 'token' | 'slot';
}

/** The decision tensors: selected experts (int32), kept and used masks (float32), all [T, K]. */
export interface DeviceDecision {
  readonly topkIdxTK: Tensor2D;
  readonly keptMaskTK: Tensor2D;
  readonly activeMaskTK: Tensor2D;
}

/**
 * Decides on the device from the scores probsTE [T, E]. The decision is integer work and stays off
 * the gradient tape: its kernels run inside a custom-gradient op (whose own kernels are not
 * recorded), and its results come out as copies with no path back to the scores.
 */
export function decideOnDevice(probsTE: Tensor2D, spec: DeviceDecisionSpec): DeviceDecision {
  const [T] = probsTE.shape;
  const K = spec.k;
  let packed: Tensor2D | undefined;
  const decide = customGrad((scoresTE: Tensor2D, _save: GradSave) => {
    packed = tf.keep(tf.tidy(() => packedDecision(scoresTE, spec)));
    return { value: tf.zeros([]), gradFunc: () => tf.zerosLike(scoresTE) };
  });
  tf.dispose(decide(probsTE));
  const packedTK3 = packed!; // [T, 3K]: experts (as float), kept, used
  try {
    return tf.tidy(() => {
      const [idx, kept, active] = tf.split(packedTK3.clone(), 3, 1) as [Tensor2D, Tensor2D, Tensor2D];
      return {
        topkIdxTK: idx.toInt() as Tensor2D,
        keptMaskTK: kept.reshape([T, K]) as Tensor2D,
        activeMaskTK: active.reshape([T, K]) as Tensor2D,
      };
    });
  } finally {
    packedTK3.dispose();
  }
}

function packedDecision(probsTE: Tensor2D, spec: DeviceDecisionSpec): Tensor2D {
  const [T, E] = probsTE.shape;
  const K = spec.k;
  let selTE: Tensor2D = probsTE;
  if (spec.randomSelection !== undefined)
    selTE = tf.tensor2d(Float32Array.from(spec.randomSelection), [T, E]);
  else if (spec.selectionBiasE !== undefined)
    selTE = tf.add(probsTE, tf.tensor1d(spec.selectionBiasE)) as Tensor2D;
  if (spec.groupLimited !== null) selTE = groupLimited(selTE, spec.groupLimited);
  const idxTK = topK(selTE, K).indices as Tensor2D;
  const gateTK = takeAlongLastAxis(probsTE, idxTK);

  let activeTK: Tensor2D = tf.onesLike(gateTK);
  if (spec.gshardUniform !== undefined || spec.gshardThreshold !== undefined) {
    const [g1T1, g2T1] = tf.split(gateTK, 2, 1) as [Tensor2D, Tensor2D];
    const g2nT1 = tf.div(g2T1, tf.add(g1T1, g2T1));
    const useT1 =
      spec.gshardUniform !== undefined
        ? tf.greater(tf.mul(g2nT1, 2), tf.tensor2d(spec.gshardUniform, [T, 1]))
        : tf.greaterEqual(g2nT1, spec.gshardThreshold!);
    activeTK = tf.concat([tf.onesLike(g1T1), useT1.toFloat()], 1) as Tensor2D;
  }
  const keptTK =
    spec.capacity === null
      ? activeTK
      : tf.mul(activeTK, tf.less(positions(idxTK, activeTK, gateTK, E, spec), spec.capacity).toFloat());
  return tf.concat([idxTK.toFloat(), keptTK, activeTK], 1) as Tensor2D;
}

/**
 * DeepSeek-V3's group limit: a group's score is the sum of its top-2 scores (top-1 for groups of
 * one), the `groupTopK` best groups stay (ties to the lower group), the others' scores become -inf.
 */
function groupLimited(selTE: Tensor2D, g: GroupLimitedConfig): Tensor2D {
  const [T, E] = selTE.shape;
  const G = g.numGroups;
  const P = E / G;
  const selTGP = selTE.reshape([T, G, P]);
  const groupTG = P > 1 ? tf.sum(topK(selTGP, 2).values, 2) : selTGP.reshape([T, G]);
  const keptTG = tf.sum(oneHot(topK(groupTG, g.groupTopK).indices, G), 1); // [T, gk, G] -> [T, G]
  const keptTE = tf.tile(keptTG.reshape([T, G, 1]), [1, 1, P]).reshape([T, E]);
  return tf.where(tf.greater(keptTE, 0), selTE, tf.fill([T, E], Number.NEGATIVE_INFINITY)) as Tensor2D;
}

/**
 * Each used assignment's position among its expert's used assignments in the policy's order
 * (0 for the first), [T, K]: an exclusive cumulative sum of one-hot selections over that order.
 */
function positions(
  idxTK: Tensor2D,
  activeTK: Tensor2D,
  gateTK: Tensor2D,
  E: number,
  spec: DeviceDecisionSpec,
): Tensor2D {
  const [T, K] = idxTK.shape;
  const N = T * K;
  if (spec.dropPolicy === 'probs') {
    // Descending gate, ties to the earlier assignment: topK's order over all N.
    const permN = topK(gateTK.reshape([N]), N).indices as tf.Tensor1D;
    const posSortedN = positionsInExperts(
      tf.gather(idxTK.reshape([N]), permN),
      tf.gather(activeTK.reshape([N]), permN),
      E,
    );
    // The inverse permutation: where each assignment sits in the sorted order.
    const inverseN = topK(tf.neg(permN.toFloat()), N).indices as tf.Tensor1D;
    return tf.gather(posSortedN, inverseN).reshape([T, K]);
  }
  if (spec.order === 'slot') {
    const posKT = positionsInExperts(idxTK.transpose().reshape([N]), activeTK.transpose().reshape([N]), E);
    return posKT.reshape([K, T]).transpose();
  }
  return positionsInExperts(idxTK.reshape([N]), activeTK.reshape([N]), E).reshape([T, K]);
}

type HostFields = Pick<
  RoutingPlan,
  'expertIdx' | 'kept' | 'countsE' | 'keptCountsE' | 'dropRate' | 'skipped'
>;
const HOST_FIELDS = ['expertIdx', 'kept', 'countsE', 'keptCountsE', 'dropRate', 'skipped'] as const;

/**
 * A plan decided on the device. Its host arrays (`expertIdx`, `kept`, `countsE`, `keptCountsE`,
 * `dropRate`, `skipped`) are getters that read the decision tensors once, on first access. They are
 * not enumerable, so disposing the plan (which walks its values) reads nothing.
 */
export function makeDevicePlan(
  router: string,
  tensors: RoutingPlanTensors & { readonly activeMaskTK?: Tensor2D },
  T: number,
  E: number,
  K: number,
  capacity: number | null,
  extra: { readonly randomRouted: boolean; readonly capacityFactor: number | null },
): RoutingPlan {
  let host: HostFields | undefined;
  const read = (): HostFields => {
    if (host !== undefined) return host;
    const N = T * K;
    const expertIdx = Int32Array.from(tensors.topkIdxTK.dataSync());
    const keptF = tensors.keptMaskTK.dataSync();
    const activeF = tensors.activeMaskTK?.dataSync();
    const kept = new Uint8Array(N);
    const keptCountsE = new Int32Array(E);
    let used = 0;
    for (let a = 0; a < N; a++) {
      if (activeF === undefined || activeF[a]! > 0) used++;
      if (keptF[a]! > 0) {
        kept[a] = 1;
        keptCountsE[expertIdx[a]!]! += 1;
      }
    }
    const keptTotal = keptCountsE.reduce((sum, c) => sum + c, 0);
    host = {
      expertIdx,
      kept,
      countsE: countSelections(expertIdx, E),
      keptCountsE,
      dropRate: N === 0 ? 0 : (used - keptTotal) / N,
      skipped: N - used,
    };
    return host;
  };
  const plan: RoutingPlan = {
    ...tensors,
    capacity,
    numTokens: T,
    numExperts: E,
    k: K,
    router,
    decidedOn: 'device',
    ...extra,
    get expertIdx() {
      return read().expertIdx;
    },
    get kept() {
      return read().kept;
    },
    get countsE() {
      return read().countsE;
    },
    get keptCountsE() {
      return read().keptCountsE;
    },
    get dropRate() {
      return read().dropRate;
    },
    get skipped() {
      return read().skipped ?? 0;
    },
  };
  for (const key of HOST_FIELDS) Object.defineProperty(plan, key, { enumerable: false });
  return plan;
}
