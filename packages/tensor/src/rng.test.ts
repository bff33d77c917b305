import { describe, expect, it } from 'vitest';
import { expectNoLeaks } from './memory';
import { Rng } from './rng';

describe('Rng', () => {
  it('is deterministic for a seed and differs across seeds', () => {
    const a = Array.from(
      { length: 5 },
      (
        (r) => () =>
          r.nextUint32()
      )(new Rng(1)),
    );
    const b = Array.from(
      { length: 5 },
      (
        (r) => () =>
          r.nextUint32()
      )(new Rng(1)),
    );
    const c = Array.from(
      { length: 5 },
      (
        (r) => () =>
          r.nextUint32()
      )(new Rng(2)),
    );
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    expect(new Rng('abc').float()).toBe(new Rng('abc').float());
  });

  it('gives uniform floats with the right moments', () => {
    const r = new Rng(3);
    let s = 0;
    let s2 = 0;
    const n = 20000;
    for (let i = 0; i < n; i++) {
      const u = r.float();
      expect(u).toBeGreaterThanOrEqual(0);
      expect(u).toBeLessThan(1);
      s += u;
      s2 += u * u;
    }
    expect(s / n).toBeCloseTo(0.5, 1);
    expect(s2 / n - (s / n) ** 2).toBeCloseTo(1 / 12, 2);
  });

  it('gives normals with mean 0 and std 1, and truncation holds', () => {
    const r = new Rng(4);
    const xs = Array.from({ length: 20000 }, () => r.normal());
    const m = xs.reduce((a, b) => a + b, 0) / xs.length;
    const v = xs.reduce((a, b) => a + (b - m) ** 2, 0) / xs.length;
    expect(Math.abs(m)).toBeLessThan(0.03);
    expect(Math.abs(v - 1)).toBeLessThan(0.05);
    for (let i = 0; i < 1000; i++) expect(Math.abs(r.truncatedNormal(0, 1, 2))).toBeLessThanOrEqual(2);
  });

  it('int() is unbiased over a small range', () => {
    const r = new Rng(5);
    const counts = [0, 0, 0];
    for (let i = 0; i < 30000; i++) counts[r.int(3)]!++;
    for (const c of counts) expect(Math.abs(c - 10000)).toBeLessThan(400);
  });

  it('permutation contains every index once', () => {
    const p = Array.from(new Rng(6).permutation(100));
    expect([...p].sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(p).not.toEqual(Array.from({ length: 100 }, (_, i) => i));
  });

  it('fork does not advance the parent and is keyed; split advances it', () => {
    const r = new Rng(7);
    const state = r.getState();
    const f1 = r.fork('init').nextUint32();
    const f2 = r.fork('init').nextUint32();
    const f3 = r.fork('data').nextUint32();
    expect(f1).toBe(f2);
    expect(f1).not.toBe(f3);
    expect(r.getState()).toEqual(state);
    const child = r.split();
    expect(r.getState()).not.toEqual(state);
    expect(child.nextUint32()).not.toBe(r.nextUint32());
  });

  it('state round-trips through JSON', () => {
    const r = new Rng(8);
    r.nextUint32();
    const saved = JSON.parse(JSON.stringify(r.getState()));
    const next = r.float();
    expect(Rng.fromState(saved).float()).toBe(next);
    expect(() => Rng.fromState({ algorithm: 'mt', s: [1] } as never)).toThrow(
      /`state` passed to Rng.fromState\(\) must be an RngState/,
    );
  });

  it('fills tensors identically for the same seed, without leaks', async () => {
    const a = new Rng(9).normalTensor([3, 4], 0, 0.02);
    const b = new Rng(9).normalTensor([3, 4], 0, 0.02);
    expect(Array.from(a.dataSync())).toEqual(Array.from(b.dataSync()));
    expect(a.dtype).toBe('float32');
    a.dispose();
    b.dispose();
    const r = new Rng(10);
    await expectNoLeaks(() => r.uniformTensor([5], -1, 1));
    await expectNoLeaks(() => r.truncatedNormalTensor([2, 2], 0, 1));
  });

  it('rejects bad seeds and sizes', () => {
    expect(() => new Rng(1.5)).toThrow(/`seed` passed to Rng\(\) must be an integer or a string, got 1.5/);
    expect(() => new Rng(1).int(0)).toThrow(/`n` passed to Rng.int\(\) must be an integer/);
    expect(() => new Rng(1).normalTensor([2, -1])).toThrow(/non-negative integer dims/);
  });
});
