/**
 * Log-probabilities of the model's next-token distribution (log-softmax of the raw logits, before
 * temperature, top-k or top-p) on the host.
 *
 * Shape letters: V vocabulary.
 */

/** One candidate token and its log-probability. */
export interface TokenLogprob {
  readonly token: number;
  readonly logprob: number;
}

/** log(sum(exp(logitsV))), computed stably in float64. */
export function logSumExp(logitsV: Float32Array): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logitsV.length; i++) if (logitsV[i]! > max) max = logitsV[i]!;
  let sum = 0;
  for (let i = 0; i < logitsV.length; i++) sum += Math.exp(logitsV[i]! - max);
  return max + Math.log(sum);
}

/**
 * The `n` most likely tokens, most likely first (ties: lower id first), with their log-probabilities
 * given `lse` = logSumExp(logitsV). A bounded insertion keeps it O(V * n) without sorting V.
 */
export function topLogprobs(logitsV: Float32Array, n: number, lse: number): TokenLogprob[] {
  const ids: number[] = [];
  for (let i = 0; i < logitsV.length && n > 0; i++) {
    const v = logitsV[i]!;
    if (ids.length === n && v <= logitsV[ids[n - 1]!]!) continue;
    let at = ids.length === n ? n - 1 : ids.length;
    if (ids.length < n) ids.push(i);
    while (at > 0 && logitsV[ids[at - 1]!]! < v) {
      ids[at] = ids[at - 1]!;
      at--;
    }
    ids[at] = i;
  }
  return ids.map((token) => ({ token, logprob: logitsV[token]! - lse }));
}
