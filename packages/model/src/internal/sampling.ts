/**
 * Next-token selection from a logits vector [V] on the host: greedy, or sampling after temperature,
 * top-k and top-p (nucleus) filtering, in that order (as Hugging Face's generation does).
 */
import { checkInt, checkNumber, invalidArgument, Rng } from '@switchyard/tensor';

/** How the next token is picked from logits (see {@link TokenSampler}). */
export interface SamplingOptions {
  /** Softmax temperature (> 0); 0 means greedy. Default 1. */
  readonly temperature?: number;
  /** Sample only among the k most likely tokens (0 or undefined: no limit). */
  readonly topK?: number;
  /** Sample only from the smallest set of tokens whose probability reaches p, in (0, 1]. Default 1. */
  readonly topP?: number;
  /** Seed of the sampling generator. Default 0 (the same prompt and options give the same tokens). */
  readonly seed?: number;
  /** Always pick the most likely token (argmax); ties go to the lower id. */
  readonly greedy?: boolean;
}

/** Options of {@link MoETransformerLM.generate}. */
export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate. */
  readonly maxNewTokens: number;
  /** Token ids that end generation (the stop token is not returned). */
  readonly stopTokens?: readonly number[];
}

export interface ResolvedGenerateOptions {
  readonly maxNewTokens: number;
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly stopTokens: readonly number[];
  readonly greedy: boolean;
  readonly rng: Rng;
}

export function validateGenerateOptions(fn: string, o: GenerateOptions): ResolvedGenerateOptions {
  if (o === null || typeof o !== 'object') throw invalidArgument(fn, 'opts', 'an options object', o);
  const maxNewTokens = checkInt(fn, 'maxNewTokens', o.maxNewTokens, { min: 0 });
  const temperature = checkNumber(fn, 'temperature', o.temperature ?? 1, { min: 0 });
  const topK = checkInt(fn, 'topK', o.topK ?? 0, { min: 0 });
  const topP = checkNumber(fn, 'topP', o.topP ?? 1, { min: 0, minExclusive: true, max: 1 });
  const stopTokens = o.stopTokens ?? [];
  if (!Array.isArray(stopTokens))
    throw invalidArgument(fn, 'stopTokens', 'an array of token ids', stopTokens);
  stopTokens.forEach((t, i) => {
    checkInt(fn, `stopTokens[${i}]`, t, { min: 0 });
  });
  const seed = checkInt(fn, 'seed', o.seed ?? 0);
  if (o.greedy !== undefined && typeof o.greedy !== 'boolean')
    throw invalidArgument(fn, 'greedy', 'a boolean', o.greedy);
  return {
    maxNewTokens,
    temperature,
    topK,
    topP,
    stopTokens,
    greedy: o.greedy === true || temperature === 0,
    rng: new Rng(seed),
  };
}

/** Index of the largest value; ties go to the lower index. */
export function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** The probabilities (summing to 1) sampling would draw from, after temperature, top-k and top-p. */
export function samplingDistribution(
  logitsV: Float32Array,
  o: Omit<ResolvedGenerateOptions, 'rng'>,
): Float64Array {
  const V = logitsV.length;
  const probs = new Float64Array(V);
  if (o.greedy) {
    probs[argmax(logitsV)] = 1;
    return probs;
  }
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < V; i++) max = Math.max(max, logitsV[i]!);
  let sum = 0;
  for (let i = 0; i < V; i++) {
    const p = Math.exp((logitsV[i]! - max) / o.temperature);
    probs[i] = p;
    sum += p;
  }
  for (let i = 0; i < V; i++) probs[i]! /= sum;
  // Candidates by decreasing probability (ties: lower id first).
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => probs[b]! - probs[a]! || a - b);
  let keep = o.topK > 0 ? Math.min(o.topK, V) : V;
  if (o.topP < 1) {
    let kept = 0;
    let cum = 0;
    let total = 0;
    for (let j = 0; j < keep; j++) total += probs[order[j]!]!;
    while (kept < keep) {
      cum += probs[order[kept]!]!;
      kept++;
      if (cum >= o.topP * total) break;
    }
    keep = kept;
  }
  const out = new Float64Array(V);
  let kept = 0;
  for (let j = 0; j < keep; j++) kept += probs[order[j]!]!;
  for (let j = 0; j < keep; j++) out[order[j]!] = probs[order[j]!]! / kept;
  return out;
}

/** Picks the next token. */
export function sampleNext(logitsV: Float32Array, o: ResolvedGenerateOptions): number {
  if (o.greedy) return argmax(logitsV);
  const probs = samplingDistribution(logitsV, o);
  const u = o.rng.float();
  let cum = 0;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i]! > 0) {
      cum += probs[i]!;
      last = i;
      if (u < cum) return i;
    }
  }
  return last;
}

/**
 * Picks one sequence's next tokens from logits: greedy (temperature 0 or `greedy`), or a draw from
 * the distribution after temperature, top-k and top-p, in that order, with its own generator seeded
 * from `seed`. Two samplers with the same options pick the same tokens from the same logits; this is
 * what {@link MoETransformerLM.generate} uses.
 *
 * When to use: decoding loops outside `generate`, e.g. a server stepping many sequences at once,
 * each with its own sampler.
 *
 * @example
 * ```ts
 * const sampler = new TokenSampler({ temperature: 0.8, topP: 0.95, seed: 7 });
 * const next = sampler.next(logitsV); // logitsV: Float32Array [V]
 * ```
 */
export class TokenSampler {
  private readonly o: ResolvedGenerateOptions;

  constructor(options: SamplingOptions = {}, fn = 'TokenSampler') {
    this.o = validateGenerateOptions(fn, { ...options, maxNewTokens: 0 });
  }

  /** True when the sampler always takes the argmax. */
  get greedy(): boolean {
    return this.o.greedy;
  }

  /** The next token for logits [V]. */
  next(logitsV: Float32Array): number {
    return sampleNext(logitsV, this.o);
  }
}
