/** One text of a corpus with the domain it belongs to (for the Brown corpus, its genre). */
export interface TextSample {
  /** Stable identifier (file name, or file name and line). */
  readonly id: string;
  /** Domain label: per-domain evaluation and domain-homogeneous batching group by it. */
  readonly domain: string;
  readonly text: string;
}

/** Texts split into training and validation sets, by whole text. */
export interface CorpusSplit {
  readonly train: readonly TextSample[];
  readonly val: readonly TextSample[];
  /** Every domain, sorted. */
  readonly domains: readonly string[];
}
