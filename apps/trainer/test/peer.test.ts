import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkTorch, parsePeerOutput, runPeer } from '../bench/peer';

const dir = mkdtempSync(join(tmpdir(), 'switchyard-peer-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A stand-in for the Python peer: a Node script that prints what the peer prints (or fails). */
function fakePeer(body: string): string {
  const path = join(dir, `peer-${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(path, body);
  return path;
}

describe('the PyTorch peer of the trainer bench', () => {
  it('reports an interpreter that cannot be run, and one without torch, with the reason', () => {
    const missing = checkTorch(join(dir, 'no-such-python'));
    expect(missing.ok).toBe(false);
    expect(!missing.ok && missing.reason).toMatch(/could not be run/);
    // Node rejects the Python import line: an interpreter that exists but cannot import torch.
    const node = checkTorch(process.execPath);
    expect(node.ok).toBe(false);
    expect(!node.ok && node.reason).toMatch(/cannot import torch/);
  });

  it('reads the peer report from its last output line and passes it the steps and vocabulary', () => {
    const script = fakePeer(
      `const a = process.argv.slice(2);
       console.log('training tokens/s: 4321');
       console.log(JSON.stringify({ torch: '1.13', threads: 1, params: 3609728, tokensPerSec: 4321, stepSeconds: [0.2], losses: [7.6], args: a }));`,
    );
    const r = runPeer(process.execPath, { steps: 6, warmup: 2, vocab: 2048, script });
    expect(r.tokensPerSec).toBe(4321);
    expect(r.params).toBe(3609728);
    expect((r as unknown as { args: string[] }).args).toEqual([
      '--steps=6',
      '--warmup=2',
      '--vocab=2048',
      '--threads=1',
      '--json',
    ]);
  });

  it('fails clearly when the peer fails or prints no report', () => {
    const failing = fakePeer(`console.error('RuntimeError: out of memory'); process.exit(3);`);
    expect(() => runPeer(process.execPath, { steps: 6, warmup: 2, vocab: 2048, script: failing })).toThrow(
      /exited with 3: RuntimeError: out of memory/,
    );
    expect(() => parsePeerOutput('training tokens/s: 10\n')).toThrow(
      /last output line should be its JSON report/,
    );
    expect(() => parsePeerOutput('{"tokensPerSec": "fast"}')).toThrow(/numeric tokensPerSec and params/);
  });
});
