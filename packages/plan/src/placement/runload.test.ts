// parseRunLoads: the TSDoc example, a resumed run's repeated steps, --steps, a committed run's
// metrics, and what it refuses.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseRunLoads } from './runload';

const line = (step: number, tokens: number, expertLoad: number[][]) =>
  JSON.stringify({ step, tokens, expertLoad, loss: 1 });

describe('parseRunLoads', () => {
  it('runs the TSDoc example: shares x step tokens x K, summed', () => {
    const text = [line(1, 1000, [[0.75, 0.25]]), line(2, 3000, [[0.5, 0.5]])].join('\n');
    expect(parseRunLoads(text, { topK: 2 })).toEqual({
      load: [[3500, 2500]],
      steps: 2,
      firstStep: 1,
      lastStep: 2,
    });
    expect(parseRunLoads(text, { steps: 1 }).load).toEqual([[1000, 1000]]);
  });

  it('counts a step logged twice (a resumed run) once, its last line, and skips lines without loads', () => {
    const text = [
      line(1, 100, [[1, 0]]),
      line(2, 200, [[1, 0]]),
      line(2, 200, [[0, 1]]),
      JSON.stringify({ step: 3, tokens: 300 }),
      '',
    ].join('\n');
    expect(parseRunLoads(text).load).toEqual([[100, 100]]);
  });

  it("reads a committed training run's metrics (3 MoE layers x 8 experts, top-2)", () => {
    const text = readFileSync(
      new URL('../../../../experiments/loss-free/none/metrics.jsonl', import.meta.url),
      'utf8',
    );
    const r = parseRunLoads(text, { topK: 2, steps: 50 });
    expect(r.steps).toBe(50);
    expect(r.load).toHaveLength(3);
    expect(r.load.every((row) => row.length === 8)).toBe(true);
    // 50 steps of 2048 tokens, 2 assignments each, per layer (shares rounded to 5 digits)
    for (const row of r.load) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(50 * 2048 * 2, -2);
  });

  it('refuses text that is not a run, naming the line or step', () => {
    expect(() => parseRunLoads('{"step":1,"tokens":1,"expertLoad":[[1]]}\nnot json')).toThrow(
      /metrics.jsonl line 2 .* is not JSON/,
    );
    expect(() => parseRunLoads('{"tokens":1}')).toThrow(
      /line 1 .* must have an integer "step" and a number "tokens"/,
    );
    expect(() => parseRunLoads('{"step":1,"tokens":1}')).toThrow(/has no step with "expertLoad"/);
    expect(() => parseRunLoads([line(1, 1, [[1, 0]]), line(2, 2, [[1]])].join('\n'))).toThrow(
      /step 2 .* another shape than step 1 \(\[1\]\[2\]; rows must not be ragged\)/,
    );
    expect(() => parseRunLoads(line(1, 1, [[1, -1]]))).toThrow(
      /expertLoad\[0\]\[1\] must be a share >= 0, got -1/,
    );
  });
});
