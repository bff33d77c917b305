/**
 * Claims from the literature that an experiment's report tests: each claim is its text and a check
 * of the arms' results, which gives a verdict (reproduced, not detected, contradicted).
 *
 * An arm may run with several seeds. A loss effect counts only when the gap between two arms' mean
 * losses exceeds twice the larger of their seed spreads (max - min over the arm's seeds); with one
 * seed per arm there is no spread to compare against, and loss claims say so instead of deciding.
 * Every experiment definition carries its own claims (see `definitions.ts`).
 */
import { SwitchyardError } from '@switchyard/tensor';

/** One training run's numbers (one arm, one seed). */
export interface ArmResult {
  readonly id: string;
  readonly label: string;
  /** The training seed of this run. */
  readonly seed: number;
  readonly steps: number;
  readonly finalValLoss: number;
  /** Mean training LM loss over the last 10% of steps. */
  readonly finalTrainLoss: number;
  readonly unigramValLoss: number;
  readonly maxVioGlobal: number;
  /** Mean over the last 10% of steps of the optimizer-step batch MaxVio. */
  readonly maxVioBatch: number;
  /** Mean over the last 10% of steps of the per-micro-batch MaxVio. */
  readonly maxVioMicro: number;
  /** Mean over the last 10% of steps of the per-sequence MaxVio. */
  readonly maxVioSeq: number;
  /** MaxVio of uniform random routing at a micro-batch's token count (the noise floor of `maxVioMicro`). */
  readonly maxVioMicroFloor: number;
  /** Same at a sequence's token count. */
  readonly maxVioSeqFloor: number;
  readonly specializationPeak: number;
  /** Mean over layers and domains of the share of a domain's selections that go to its K most used experts (uniform K/E, 1 fully specialised). */
  readonly topKShare: number;
  /** Mean over MoE layers of the mutual information between domain and selected expert (nats). */
  readonly domainExpertMI: number;
  /** Max over layers, domains and experts of F[d][e] / mean_d F[d][e]. */
  readonly liftPeak: number;
  /** Mean router LSE^2 (squared logsumexp of the router logits) on the validation set. */
  readonly routerLse2: number;
  readonly trainDropRate: number;
  readonly evalDropRate: number;
  readonly tokensPerSec: number;
  readonly wallSec: number;
  readonly k: number;
  readonly numExperts: number;
  /** Extra evaluations of the final checkpoint under other routing settings, by id (e.g. `dropless`). */
  readonly extraEvals?: Readonly<Record<string, { readonly valLoss: number; readonly dropRate: number }>>;
}

/** The numeric fields of {@link ArmResult}. */
export type ArmField = Exclude<
  {
    [K in keyof ArmResult]-?: ArmResult[K] extends number ? K : never;
  }[keyof ArmResult],
  undefined
>;

/** A value over an arm's seeds. */
export interface SeedStat {
  readonly mean: number;
  readonly min: number;
  readonly max: number;
  /** Seeds with a finite value. */
  readonly n: number;
}

/**
 * An arm over its seeds: every numeric field of {@link ArmResult} is the mean over the seeds, `runs`
 * keeps each seed's result and `stat` gives a field's mean, min and max.
 */
export interface ArmSummary extends ArmResult {
  readonly seeds: readonly number[];
  readonly runs: readonly ArmResult[];
  stat(field: ArmField): SeedStat;
  /** An extra evaluation's value over the seeds. */
  extra(id: string, field: 'valLoss' | 'dropRate'): SeedStat;
}

/** Statistics of values over seeds (NaNs ignored). */
export function seedStat(values: readonly number[]): SeedStat {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length === 0) return { mean: Number.NaN, min: Number.NaN, max: Number.NaN, n: 0 };
  return {
    mean: v.reduce((a, b) => a + b, 0) / v.length,
    min: Math.min(...v),
    max: Math.max(...v),
    n: v.length,
  };
}

/** The summary of one arm's runs (one per seed, at least one). */
export function summariseSeeds(runs: readonly ArmResult[]): ArmSummary {
  const first = runs[0];
  if (!first)
    throw new SwitchyardError('INVALID_ARGUMENT', 'summariseSeeds(): expected at least one run, got none');
  const stat = (field: ArmField): SeedStat => seedStat(runs.map((r) => r[field]));
  const means: Record<string, unknown> = { ...first };
  for (const [key, value] of Object.entries(first)) {
    if (typeof value === 'number' && key !== 'seed') means[key] = stat(key as ArmField).mean;
  }
  const extraIds = new Set(runs.flatMap((r) => Object.keys(r.extraEvals ?? {})));
  const extraEvals = Object.fromEntries(
    [...extraIds].map((id) => [
      id,
      {
        valLoss: seedStat(runs.map((r) => r.extraEvals?.[id]?.valLoss ?? Number.NaN)).mean,
        dropRate: seedStat(runs.map((r) => r.extraEvals?.[id]?.dropRate ?? Number.NaN)).mean,
      },
    ]),
  );
  return {
    ...(means as unknown as ArmResult),
    ...(extraIds.size > 0 ? { extraEvals } : {}),
    seeds: runs.map((r) => r.seed),
    runs,
    stat,
    extra: (id, field) => seedStat(runs.map((r) => r.extraEvals?.[id]?.[field] ?? Number.NaN)),
  };
}

/** The summary of the arm with a given id; a claim is checked only once every arm has one. */
export type ArmLookup = (id: string) => ArmSummary;

/** A claim's verdict in one experiment. */
export type Verdict = 'reproduced' | 'not detected' | 'contradicted';

/** What a claim's check finds. */
export interface ClaimVerdict {
  readonly verdict: Verdict;
  /** Why, when the verdict needs it (e.g. "one seed, no spread"). */
  readonly note?: string;
  /** The numbers behind the verdict, one line for the report. */
  readonly observed: string;
}

/** A claim from the literature and the check of it against an experiment's arms. */
export interface Claim {
  /** What the literature reports (SPEC section 2), shown next to this run's numbers. */
  readonly text: string;
  readonly check: (arm: ArmLookup) => ClaimVerdict;
}

/** A claim from the literature and what this run shows. */
export interface ClaimCheck {
  readonly claim: string;
  readonly observed: string;
  readonly verdict: Verdict;
  readonly note?: string;
}

/** Smallest relative MaxVio difference counted as an effect. */
export const VIO_MARGIN = 0.05;
/** How many seed spreads a loss gap must exceed to count. */
export const SPREAD_FACTOR = 2;
/** The note of a loss comparison without any seed spread. */
export const NO_SPREAD = 'one seed, no spread';

/** How arm a's loss compares with arm b's, counting only gaps beyond twice the seed spread. */
export interface LossComparison {
  /** below: a < b by more than the threshold; above: a > b by more; none: within it; unknown: no spread. */
  readonly direction: 'below' | 'above' | 'none' | 'unknown';
  /** mean(a) - mean(b). */
  readonly gap: number;
  /** SPREAD_FACTOR times the larger max - min over the seeds of a and of b (NaN without spread). */
  readonly threshold: number;
}

/**
 * Compares a field (a loss) of two arms: the gap counts only when it exceeds twice the larger
 * same-arm seed spread; with one seed in both arms the comparison is `unknown`.
 */
export function compareLoss(
  a: ArmSummary,
  b: ArmSummary,
  field: ArmField | { readonly extra: string } = 'finalValLoss',
  fieldB: ArmField | { readonly extra: string } = field,
): LossComparison {
  const get = (s: ArmSummary, f: ArmField | { readonly extra: string }): SeedStat =>
    typeof f === 'string' ? s.stat(f) : s.extra(f.extra, 'valLoss');
  const sa = get(a, field);
  const sb = get(b, fieldB);
  const gap = sa.mean - sb.mean;
  const spreads = [sa, sb].filter((s) => s.n > 1).map((s) => s.max - s.min);
  if (spreads.length === 0 || !Number.isFinite(gap))
    return { direction: 'unknown', gap, threshold: Number.NaN };
  const threshold = SPREAD_FACTOR * Math.max(...spreads);
  return { direction: gap < -threshold ? 'below' : gap > threshold ? 'above' : 'none', gap, threshold };
}

/** The verdict of a claim "a's loss is lower than b's". */
export function lowerLossVerdict(c: LossComparison): Pick<ClaimVerdict, 'verdict' | 'note'> {
  if (c.direction === 'unknown') return { verdict: 'not detected', note: NO_SPREAD };
  if (c.direction === 'below') return { verdict: 'reproduced' };
  return c.direction === 'above' ? { verdict: 'contradicted' } : { verdict: 'not detected' };
}

/** The verdict of a claim "a's loss is no worse than b's" (equal within the spread counts). */
export function noWorseLossVerdict(c: LossComparison): Pick<ClaimVerdict, 'verdict' | 'note'> {
  if (c.direction === 'unknown') return { verdict: 'not detected', note: NO_SPREAD };
  return c.direction === 'above' ? { verdict: 'contradicted' } : { verdict: 'reproduced' };
}

/** The verdict of a claim that holds, or is contradicted, by a non-loss measurement. */
export const byCheck = (holds: boolean): Verdict => (holds ? 'reproduced' : 'contradicted');

/** a is higher than b by more than the relative MaxVio margin. */
export const vioAbove = (a: number, b: number): boolean => a > b * (1 + VIO_MARGIN);

/** A loss comparison for the report: `-0.0123 (threshold 0.0040)` or `-0.0123 (one seed, no spread)`. */
export function describeGap(c: LossComparison): string {
  const g = `${c.gap >= 0 ? '+' : ''}${c.gap.toFixed(4)}`;
  return Number.isFinite(c.threshold)
    ? `${g}, threshold 2 x spread = ${c.threshold.toFixed(4)}`
    : `${g}, ${NO_SPREAD}`;
}

/** A value over seeds: `4.1234` for one seed, `4.1234 [4.1100-4.1400]` (min-max) for several. */
export function fmtStat(s: SeedStat, digits = 4): string {
  if (s.n === 0) return 'n/a';
  const f = (x: number): string => x.toFixed(digits);
  return s.n > 1 ? `${f(s.mean)} [${f(s.min)}-${f(s.max)}]` : f(s.mean);
}
