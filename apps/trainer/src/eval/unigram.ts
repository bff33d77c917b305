/**
 * The unigram baseline: token frequencies over the training tokens with add-one smoothing, scored on
 * validation tokens. A language model that has learned anything beats it.
 *
 * Shape letters: V vocabulary size.
 */
import { invalidArgument } from '@switchyard/tensor';

/**
 * A unigram model: log-probabilities over the vocabulary.
 *
 * When to use: as the reference loss printed next to the model's validation loss.
 *
 * @example
 * ```ts
 * const uni = UnigramModel.fit([trainTokens], vocabSize);
 * uni.crossEntropy(valTargets); // nats per token
 * ```
 */
export class UnigramModel {
  readonly logProbV: Float64Array;

  private constructor(logProbV: Float64Array) {
    this.logProbV = logProbV;
  }

  /** Counts tokens (add-one smoothing over all `vocabSize` ids). */
  static fit(streams: readonly ArrayLike<number>[], vocabSize: number): UnigramModel {
    if (!Number.isInteger(vocabSize) || vocabSize < 1)
      throw invalidArgument('UnigramModel.fit', 'vocabSize', 'an integer >= 1', vocabSize);
    const countV = new Float64Array(vocabSize).fill(1);
    let total = vocabSize;
    for (const s of streams) {
      for (let i = 0; i < s.length; i++) {
        const id = s[i]!;
        if (!(id >= 0 && id < vocabSize))
          throw invalidArgument('UnigramModel.fit', 'token id', `in [0, ${vocabSize})`, id);
        countV[id]! += 1;
        total += 1;
      }
    }
    const logProbV = new Float64Array(vocabSize);
    for (let v = 0; v < vocabSize; v++) logProbV[v] = Math.log(countV[v]! / total);
    return new UnigramModel(logProbV);
  }

  /** Mean negative log-likelihood (nats per token) of the given target tokens. */
  crossEntropy(targets: ArrayLike<number>): number {
    if (targets.length === 0) return Number.NaN;
    let nll = 0;
    for (let i = 0; i < targets.length; i++) nll -= this.logProbV[targets[i]!]!;
    return nll / targets.length;
  }
}
