import { describe, expect, it } from 'vitest';
import { Batcher, type DomainStream, windowStarts } from './batcher';

const streams: DomainStream[] = [
  { domain: 'x', tokens: Int32Array.from({ length: 200 }, (_, i) => i) },
  { domain: 'y', tokens: Int32Array.from({ length: 90 }, (_, i) => 1000 + i) },
];

describe('windowStarts', () => {
  it('cuts windows of S + 1 tokens overlapping by one and drops a short tail', () => {
    expect(windowStarts(10, 4)).toEqual([0, 4]);
    expect(windowStarts(9, 4)).toEqual([0, 4]);
    expect(windowStarts(8, 4)).toEqual([0]);
    expect(windowStarts(4, 4)).toEqual([]);
  });
});

describe('Batcher', () => {
  it('makes targets the inputs shifted by one', () => {
    const b = new Batcher(streams, { seqLen: 8, batchSize: 3, mode: 'mixed', seed: 1 });
    const mb = b.next();
    for (let r = 0; r < 3; r++) {
      for (let t = 0; t < 7; t++) expect(mb.targetsBS[r * 8 + t]).toBe(mb.inputsBS[r * 8 + t + 1]);
      const dom = mb.inputsBS[r * 8]! >= 1000 ? 1 : 0;
      expect(mb.domainB[r]).toBe(dom);
    }
  });

  it('draws every sequence of a micro-batch from one domain in domain mode', () => {
    const b = new Batcher(streams, { seqLen: 8, batchSize: 4, mode: 'domain', seed: 3 });
    const seen = new Set<number>();
    for (let i = 0; i < 3 * b.batchesPerEpoch; i++) {
      const mb = b.next();
      expect(new Set(mb.domainB).size).toBe(1);
      seen.add(mb.domainB[0]!);
    }
    expect(seen).toEqual(new Set([0, 1]));
  });

  it('mixes domains in mixed mode and visits every window once per epoch', () => {
    const b = new Batcher(streams, { seqLen: 8, batchSize: 1, mode: 'mixed', seed: 5 });
    const firsts = new Set<number>();
    for (let i = 0; i < b.batchesPerEpoch; i++) firsts.add(b.next().inputsBS[0]!);
    expect(firsts.size).toBe(windowStarts(200, 8).length + windowStarts(90, 8).length);
    expect(b.getState()).toEqual({ epoch: 0, index: b.batchesPerEpoch });
    b.next();
    expect(b.getState().epoch).toBe(1);
  });

  it('resumes from a saved position with the same micro-batches', () => {
    const a = new Batcher(streams, { seqLen: 8, batchSize: 2, mode: 'domain', seed: 9 });
    for (let i = 0; i < 17; i++) a.next();
    const state = a.getState();
    const expected = Array.from({ length: 12 }, () => Array.from(a.next().inputsBS));
    const b = new Batcher(streams, { seqLen: 8, batchSize: 2, mode: 'domain', seed: 9 });
    b.setState(state);
    const got = Array.from({ length: 12 }, () => Array.from(b.next().inputsBS));
    expect(got).toEqual(expected);
  });

  it('rejects data shorter than one sequence and bad options', () => {
    expect(
      () =>
        new Batcher([{ domain: 'x', tokens: new Int32Array(5) }], {
          seqLen: 8,
          batchSize: 1,
          mode: 'mixed',
          seed: 0,
        }),
    ).toThrow(/shorter than one sequence of 9 tokens/);
    expect(() => new Batcher(streams, { seqLen: 0, batchSize: 1, mode: 'mixed', seed: 0 })).toThrow(
      /`seqLen` passed to Batcher\(\)/,
    );
    const b = new Batcher(streams, { seqLen: 8, batchSize: 1, mode: 'mixed', seed: 0 });
    expect(() => b.setState({ epoch: 0, index: 10_000 })).toThrow(/state\.index/);
  });
});
