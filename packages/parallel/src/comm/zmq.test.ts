// Two separate processes, one rank each, connected over ZeroMQ on 127.0.0.1.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expectNoLeaks } from '@switchyard/tensor';
import { afterEach, describe, expect, it } from 'vitest';
import { pattern } from '../../test/fixtures/collectives.rank';
import { freePort } from '../../test/fixtures/net';

const nodeScript = fileURLToPath(new URL('../../test/fixtures/node.ts', import.meta.url));
const packageDir = fileURLToPath(new URL('../..', import.meta.url));
const children: ChildProcess[] = [];
/** Hard limit on each child process (startup on a loaded 2-core machine can take tens of seconds). */
const LIMIT_MS = 100_000;

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

interface Node {
  readonly proc: ChildProcess;
  readonly lines: string[];
  readonly exited: Promise<number | null>;
  /** Resolves with the first stdout line starting with `prefix`. */
  line(prefix: string): Promise<string>;
}

/** Starts one node process; it is killed after `hardLimitMs` whatever happens. */
function startNode(nodeRank: number, port: number, extra: string[], hardLimitMs: number): Node {
  const proc = spawn(
    process.execPath,
    [
      '--conditions=@switchyard/source',
      '--import',
      'tsx',
      nodeScript,
      '--nnodes',
      '2',
      '--node-rank',
      String(nodeRank),
      '--master',
      `127.0.0.1:${port}`,
      '--ranks',
      '1',
      ...extra,
    ],
    { cwd: packageDir, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.push(proc);
  const kill = setTimeout(() => proc.kill('SIGKILL'), hardLimitMs);
  const lines: string[] = [];
  const waiters: { prefix: string; resolve: (l: string) => void }[] = [];
  let buf = '';
  proc.stdout!.on('data', (chunk: Buffer) => {
    buf += chunk.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(l);
      for (const w of waiters.filter((w) => l.startsWith(w.prefix))) w.resolve(l);
    }
  });
  let stderr = '';
  proc.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exited = new Promise<number | null>((resolve) =>
    proc.on('exit', (code) => {
      clearTimeout(kill);
      lines.push(`EXIT ${code} STDERR ${stderr}`);
      resolve(code);
    }),
  );
  return {
    proc,
    lines,
    exited,
    line: (prefix) =>
      new Promise((resolve, reject) => {
        const seen = lines.find((l) => l.startsWith(prefix));
        if (seen) return resolve(seen);
        waiters.push({ prefix, resolve });
        void exited.then(() =>
          setTimeout(
            () => reject(new Error(`node ${nodeRank} exited without "${prefix}": ${lines.join('\n')}`)),
            100,
          ),
        );
      }),
  };
}

function digest(buf: Float32Array): number[] {
  let s = 0;
  for (const v of buf) s += v;
  return [buf.length, s, ...Array.from(buf.subarray(0, 4))];
}

describe('ZeroMQ between two processes', () => {
  it('runs the collectives and both processes exit cleanly', async () => {
    const port = await freePort();
    const nodes = [0, 1].map((k) => startNode(k, port, [], LIMIT_MS));
    const codes = await Promise.all(nodes.map((n) => n.exited));
    const results = nodes.map((n) => {
      const l = n.lines.find((x) => x.startsWith('RESULT '));
      expect(l, n.lines.join('\n')).toBeDefined();
      return JSON.parse(l!.slice(7)) as {
        ranks: number[];
        worldSize: number;
        results: Record<string, unknown>[];
      };
    });
    expect(codes).toEqual([0, 0]);
    expect(results.map((r) => r.ranks)).toEqual([[0], [1]]);
    const n = 70_001;
    const other = pattern(1, n, 1);
    const sum = pattern(0, n, 1).map((v, i) => v + other[i]!);
    results.forEach((r, rank) => {
      const out = r.results[0]!;
      expect(r.worldSize).toBe(2);
      expect(out.transport).toBe('zmq');
      expect(out[`sum${n}`]).toEqual(digest(sum));
      expect(out.gather).toEqual([[0], [100, 101]]);
      expect(out.a2a).toEqual([0, 1].map((i) => Array(i + rank).fill(i * 10 + rank)));
      expect(out.bcast).toEqual([
        [0.25, 7],
        [1.25, 7],
      ]);
      expect(out.ring).toEqual(digest(pattern(1 - rank, 70_001, 3)));
      expect(out.pair).toEqual(digest(pattern(0, 5, 2).map((v, i) => v + pattern(1, 5, 2)[i]!)));
    });
  }, 120_000);

  it('makes the surviving process fail with an error naming the killed rank', async () => {
    const port = await freePort();
    const nodes = [0, 1].map((k) => startNode(k, port, ['--loop-steps', '100000'], LIMIT_MS));
    await Promise.all(nodes.map((n) => n.line('READY ')));
    const t0 = Date.now();
    nodes[1]!.proc.kill('SIGKILL');
    const code = await nodes[0]!.exited;
    const elapsed = Date.now() - t0;
    expect(code).toBe(1);
    const err = JSON.parse(nodes[0]!.lines.find((l) => l.startsWith('ERROR '))!.slice(6)) as {
      code: string;
      message: string;
    };
    expect(err.code).toBe('RANK_FAILED');
    expect(err.message).toMatch(
      /rank 0: \[RANK_FAILED\] allReduce #\d+ on rank 0 cannot complete: rank 1 failed \(node 1 \(127\.0\.0\.1\) was lost: its connection closed\)/,
    );
    expect(elapsed).toBeLessThan(10_000); // bounded by the disconnect grace and the heartbeat timeout
  }, 120_000);

  it('leaves no tensors behind in the test process', async () => {
    await expectNoLeaks(() => freePort());
  });
});
