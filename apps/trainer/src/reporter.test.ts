import { describe, expect, it } from 'vitest';
import { createReporter, formatDuration, formatRate, type ProgressInfo } from './reporter';

function sink(isTTY: boolean): {
  write: (s: string) => boolean;
  isTTY: boolean;
  columns: number;
  text: () => string;
} {
  let buf = '';
  return {
    isTTY,
    columns: 200,
    write: (s: string) => {
      buf += s;
      return true;
    },
    text: () => buf,
  };
}

const p = (step: number): ProgressInfo => ({
  step,
  totalSteps: 20,
  loss: 3.21,
  lr: 1e-3,
  tokensPerSec: 2500,
  maxVioBatch: 0.25,
  elapsedSec: step,
  stepsThisRun: step,
});

describe('reporter', () => {
  it('prints plain lines every N steps when stdout is not a terminal', () => {
    const out = sink(false);
    const r = createReporter({ mode: 'auto', every: 10, stdout: out, stderr: sink(false) });
    for (let s = 1; s <= 20; s++) r.progress(p(s));
    r.info('hello');
    const lines = out.text().trim().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toBe('step 1/20 | loss 3.2100 | lr 1.00e-3 | 2.5k tok/s | MaxVio 0.250'); // no estimate yet
    expect(lines[1]).toMatch(/^step 10\/20 .*ETA 10s$/);
    expect(out.text()).not.toContain('\r');
  });

  it('estimates the time left from the steps after the first (which warms the backend up)', () => {
    const out = sink(false);
    const r = createReporter({ mode: 'lines', every: 1, stdout: out, stderr: sink(false) });
    // A 30 s first step, then 2 s per step: the time left is 2 s per remaining step.
    r.progress({ ...p(1), elapsedSec: 30, stepsThisRun: 1 });
    r.progress({ ...p(2), elapsedSec: 32, stepsThisRun: 2 });
    r.progress({ ...p(3), elapsedSec: 34, stepsThisRun: 3 });
    const lines = out.text().trim().split('\n');
    expect(lines[0]).not.toContain('ETA');
    expect(lines[1]).toMatch(/ETA 36s$/);
    expect(lines[2]).toMatch(/ETA 34s$/);
    // A resumed run (first step of this process is step 11) starts its estimate there.
    r.progress({ ...p(11), elapsedSec: 5, stepsThisRun: 1 });
    r.progress({ ...p(12), elapsedSec: 8, stepsThisRun: 2 });
    expect(out.text().trim().split('\n').pop()).toMatch(/^step 12\/20 .*ETA 24s$/);
  });

  it('draws one live bar on a terminal and keeps log lines above it', () => {
    const out = sink(true);
    const r = createReporter({ mode: 'auto', stdout: out, stderr: sink(true) });
    r.progress({ ...p(4), stepsThisRun: 1 });
    r.progress(p(5));
    r.info('eval done');
    r.progress(p(6));
    r.close();
    const t = out.text();
    expect(t).toContain('\r\x1b[2K[###.........] 5/20 loss 3.2100 lr 1.0e-3 2.5k tok/s MaxVio 0.250 ETA 15s');
    // The first step's bar has no ETA yet.
    expect(t).toContain('[##..........] 4/20 loss 3.2100 lr 1.0e-3 2.5k tok/s MaxVio 0.250\r');
    expect(t).toContain('eval done\n');
    expect(t).toMatch(/6\/20 loss 3\.2100 .* ETA 14s\n$/);
    for (const l of t.split(/[\r\n]/)) expect(l.replace('\x1b[2K', '').length).toBeLessThanOrEqual(80);
  });

  it('is silent in quiet mode except for results', () => {
    const out = sink(false);
    const r = createReporter({ mode: 'quiet', stdout: out, stderr: sink(false) });
    r.progress(p(1));
    r.info('x');
    r.result('final');
    expect(out.text()).toBe('final\n');
  });

  it('formats durations and rates', () => {
    expect(formatDuration(3725)).toBe('1h02m');
    expect(formatDuration(125)).toBe('2m05s');
    expect(formatDuration(Number.NaN)).toBe('?');
    expect(formatRate(12345)).toBe('12.3k');
    expect(formatRate(999)).toBe('999');
  });
});
