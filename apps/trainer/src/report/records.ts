/**
 * The records a run writes: one `StepRecord` per optimizer step in `metrics.jsonl`, one `EvalRecord`
 * per evaluation in `eval.jsonl`. Matrices are indexed [MoE layer][...]: layer `l` is the model's
 * `l`-th MoE block.
 */
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { SwitchyardError } from '@switchyard/tensor';

/** One optimizer step. */
export interface StepRecord {
  /** Optimizer steps done (1-based). */
  readonly step: number;
  /** Mean next-token cross-entropy over the step's tokens (nats), without balance terms. */
  readonly loss: number;
  /** Balance and z-loss terms added to the objective, averaged over micro-batches. */
  readonly auxLoss: number;
  readonly lr: number;
  /** Gradient global norm before clipping. */
  readonly gradNorm: number;
  /** Training tokens per second over this step. */
  readonly tokensPerSec: number;
  /** Training tokens seen so far. */
  readonly tokens: number;
  /** MaxVio of the step's whole (global) batch, averaged over MoE layers. */
  readonly maxVioBatch: number;
  /** MaxVio of each micro-batch, averaged over micro-batches and MoE layers. */
  readonly maxVioMicro: number;
  /** MaxVio of each sequence, averaged over sequences, micro-batches and MoE layers (this rank's sequences). */
  readonly maxVioSeq?: number;
  /** Dropped assignments / all assignments over the step, averaged over MoE layers. */
  readonly dropRate: number;
  /** Share of the step's assignments each expert received, [layer][expert]. */
  readonly expertLoad: readonly (readonly number[])[];
  /**
   * Expert parallelism: mean over MoE layers of the balancedness (mean / max load over the ranks of
   * a group) of this step's loads under the placement that served them; absent otherwise.
   */
  readonly expertBalance?: number;
  /**
   * Expert parallelism: the rebalance that ended this step: mean balancedness of the window's loads
   * under the placement before and after, whether experts moved, and the migration milliseconds.
   */
  readonly rebalance?: {
    readonly before: number;
    readonly after: number;
    readonly migrated: boolean;
    readonly migrationMs: number;
  };
  /** Seconds since the run started (summed over resumed segments). */
  readonly time: number;
  /**
   * Where this step's time went, in milliseconds (rank 0's under data parallelism); absent in
   * records written by versions before it was added.
   */
  readonly phaseMs?: StepPhases;
  /** Steps where the experts were clustered (`compress.clusterEvery`): the groups and their stability. */
  readonly clustering?: ClusteringRecord;
}

/** One online clustering of the experts of every MoE layer. */
export interface ClusteringRecord {
  /** Mean over MoE layers of the Jaccard stability against the previous clustering; null the first time. */
  readonly jaccard: number | null;
  /** Jaccard stability per MoE layer (empty the first time). */
  readonly jaccardPerLayer: readonly number[];
  /** The group of each expert, [layer][expert]. */
  readonly groupOf: readonly (readonly number[])[];
}

/** Wall time of the parts of one optimizer step, in milliseconds. */
export interface StepPhases {
  /** Data, forward and backward passes of every micro-batch, and gradient accumulation. */
  readonly compute: number;
  /** Data parallelism: the all-reduces of the step's metrics and of the gradients (0 on one rank). */
  readonly sync: number;
  /** Gradient norm and clipping factor. */
  readonly clip: number;
  /** The AdamW update and the balance controller's end-of-step work (loss-free bias, buffers). */
  readonly optimizer: number;
  /** Expert parallelism: moving experts and their moments to a new placement (only in steps that rebalance). */
  readonly migrate?: number;
}

/** One evaluation on the validation set. */
export interface EvalRecord {
  readonly step: number;
  /** Mean next-token loss over all scored validation tokens. */
  readonly valLoss: number;
  /** Mean loss per domain. */
  readonly perDomainLoss: Readonly<Record<string, number>>;
  /** MaxVio of the loads summed over the whole evaluation set, averaged over MoE layers. */
  readonly maxVioGlobal: number;
  /** MaxVio_global of each MoE layer. */
  readonly maxVioGlobalPerLayer: readonly number[];
  /** Validation tokens scored. */
  readonly tokens: number;
  /** Dropped / all assignments at evaluation capacity, averaged over MoE layers. */
  readonly dropRate: number;
  /** Domain names, the row order of `specialization`. */
  readonly domains: readonly string[];
  /** F[layer][domain][expert]: share of the domain's tokens whose top-K includes the expert. */
  readonly specialization: readonly (readonly (readonly number[])[])[];
  /** Max over layers, domains and experts of F divided by the uniform value K/E. */
  readonly specializationPeak: number;
  /**
   * Mutual information between a token's domain and its selected experts, per MoE layer (nats; 0: no
   * specialisation, log G: disjoint experts per domain). Absent in records of earlier versions.
   */
  readonly domainExpertMI?: readonly number[];
  /** Max over layers, domains and experts of F[d][e] / mean_d F[d][e] (1: every domain routes alike). */
  readonly liftPeak?: number;
  /** Mean over batches and MoE layers of the router LSE^2 (squared logsumexp of the logits). */
  readonly routerLse2?: number;
  /**
   * The final evaluation only: the same model and tokens scored under each of `eval.routingVariants`'
   * router settings, by name.
   */
  readonly routingVariants?: Readonly<Record<string, RoutingVariantEval>>;
}

/** One evaluation of the final model under other router settings (`eval.routingVariants`). */
export interface RoutingVariantEval {
  readonly valLoss: number;
  readonly perDomainLoss: Readonly<Record<string, number>>;
  /** Dropped / all assignments under the variant's settings. */
  readonly dropRate: number;
  readonly maxVioGlobal: number;
}

/** Appends one JSON line to a file. */
export function appendJsonl(path: string, record: object): void {
  appendFileSync(path, `${JSON.stringify(record)}\n`);
}

/** Reads a JSONL file (empty array when absent); throws IO_ERROR naming the line of a bad record. */
export function readJsonl<T>(path: string): T[] {
  if (!existsSync(path)) return [];
  const out: T[] = [];
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (line.trim() === '') return;
      try {
        out.push(JSON.parse(line) as T);
      } catch (e) {
        throw new SwitchyardError('IO_ERROR', `${path}:${i + 1} is not valid JSON`, { cause: e });
      }
    });
  return out;
}

/** Keeps only the records of steps up to `step` (resuming after a crash past the checkpoint). */
export function truncateJsonl(path: string, step: number): void {
  if (!existsSync(path)) return;
  const kept = readJsonl<{ step: number }>(path).filter((r) => r.step <= step);
  writeFileSync(path, kept.map((r) => `${JSON.stringify(r)}\n`).join(''));
}
