import { expectNoLeaks } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { expectedMaxOfNormals, maxVioNoiseFloor } from './noise-floor';

describe('expectedMaxOfNormals', () => {
  it('matches the closed forms for n = 1, 2, 3 and the tabulated value for n = 10', () => {
    expect(expectedMaxOfNormals(1)).toBe(0);
    expect(expectedMaxOfNormals(2)).toBeCloseTo(1 / Math.sqrt(Math.PI), 6);
    expect(expectedMaxOfNormals(3)).toBeCloseTo(3 / (2 * Math.sqrt(Math.PI)), 6);
    expect(expectedMaxOfNormals(10)).toBeCloseTo(1.53875, 5); // Tippett (1925), Harter (1961)
  });
});

describe('maxVioNoiseFloor', () => {
  it('is exact on cases small enough to enumerate', () => {
    // one token, two experts: counts (1, 0) always, MaxVio 1
    expect(maxVioNoiseFloor({ numTokens: 1, numExperts: 2, k: 1, trials: 50 })).toBe(1);
    // two tokens, two experts: (2,0)/(0,2) w.p. 1/2 -> 1, (1,1) -> 0; expectation 0.5
    expect(maxVioNoiseFloor({ numTokens: 2, numExperts: 2, k: 1, trials: 4000 })).toBeCloseTo(0.5, 1);
    // every token uses every expert
    expect(maxVioNoiseFloor({ numTokens: 100, numExperts: 4, k: 4 })).toBe(0);
  });

  it('agrees with the normal approximation and falls as 1 / sqrt(T)', () => {
    const mc = maxVioNoiseFloor({
      numTokens: 2048,
      numExperts: 16,
      k: 2,
      method: 'monte-carlo',
      trials: 256,
    });
    const normal = maxVioNoiseFloor({ numTokens: 2048, numExperts: 16, k: 2, method: 'normal' });
    expect(Math.abs(mc / normal - 1)).toBeLessThan(0.06);
    const quarter = maxVioNoiseFloor({
      numTokens: 512,
      numExperts: 16,
      k: 2,
      method: 'monte-carlo',
      trials: 256,
    });
    expect(quarter / mc).toBeGreaterThan(1.85);
    expect(quarter / mc).toBeLessThan(2.15);
  });

  it('is seeded and picks the normal approximation for very large batches in auto mode', () => {
    const a = maxVioNoiseFloor({ numTokens: 300, numExperts: 8, k: 2, seed: 5, trials: 64 });
    expect(maxVioNoiseFloor({ numTokens: 300, numExperts: 8, k: 2, seed: 5, trials: 64 })).toBe(a);
    expect(maxVioNoiseFloor({ numTokens: 300, numExperts: 8, k: 2, seed: 6, trials: 64 })).not.toBe(a);
    const huge = { numTokens: 1 << 22, numExperts: 64, k: 8 };
    expect(maxVioNoiseFloor(huge)).toBe(maxVioNoiseFloor({ ...huge, method: 'normal' }));
  });

  it('rejects K > E with a named error and allocates no tensors', async () => {
    expect(() => maxVioNoiseFloor({ numTokens: 8, numExperts: 4, k: 5 })).toThrow(
      /`config\.k` passed to maxVioNoiseFloor\(\) must be an integer in \[1, 4\], got 5/,
    );
    await expectNoLeaks(() => maxVioNoiseFloor({ numTokens: 64, numExperts: 8, k: 2, trials: 8 }));
  });
});
