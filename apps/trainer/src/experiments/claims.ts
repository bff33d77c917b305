/**
 * Claims from the literature that an experiment's report tests: each claim is its text and a check
 * of the arms' results, with the margins below which a difference does not count as an effect.
 * Every experiment definition carries its own claims (see `definitions.ts`).
 */

/** One arm's numbers in the comparison. */
export interface ArmResult {
  readonly id: string;
  readonly label: string;
  readonly steps: number;
  readonly finalValLoss: number;
  readonly unigramValLoss: number;
  readonly maxVioGlobal: number;
  /** Mean over the last 10% of steps of the optimizer-step batch MaxVio. */
  readonly maxVioBatch: number;
  /** Mean over the last 10% of steps of the per-micro-batch MaxVio. */
  readonly maxVioMicro: number;
  readonly specializationPeak: number;
  /** Mean over layers and domains of the share of a domain's selections that go to its K most used experts (uniform K/E, 1 fully specialised). */
  readonly topKShare: number;
  readonly trainDropRate: number;
  readonly evalDropRate: number;
  readonly tokensPerSec: number;
  readonly wallSec: number;
  readonly k: number;
  readonly numExperts: number;
}

/** The result of the arm with a given id; a claim is checked only once every arm has one. */
export type ArmLookup = (id: string) => ArmResult;

/** What a claim's check finds in one run. */
export interface ClaimVerdict {
  /** true: the effect appears; false: it does not; null: not decidable from these numbers. */
  readonly holds: boolean | null;
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
  /** true: the effect appears; false: it does not; null: not decidable from these numbers. */
  readonly holds: boolean | null;
}

/**
 * Smallest validation-loss difference (nats/token) counted as an effect. Each arm is one seed, so
 * smaller differences are not told apart from run-to-run variation.
 */
export const LOSS_MARGIN = 0.01;
/** Smallest relative MaxVio difference counted as an effect. */
export const VIO_MARGIN = 0.05;

/** a is lower than b by more than the loss margin. */
export const lossBelow = (a: number, b: number): boolean => a < b - LOSS_MARGIN;
/** a is higher than b by more than the relative MaxVio margin. */
export const vioAbove = (a: number, b: number): boolean => a > b * (1 + VIO_MARGIN);
/** a - b with its sign, to 4 decimals (`+0.0123`, `-0.0500`). */
export const signedDiff = (a: number, b: number): string => `${a >= b ? '+' : ''}${(a - b).toFixed(4)}`;
