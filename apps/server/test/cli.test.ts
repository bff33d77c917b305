// The command line: --help, --version, generate, usage errors, serving until stopped, and SIGTERM
// draining a real process (in-flight stream finished, new requests refused, exit code 0).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CompressedExperts,
  compressModel,
  loadCompressedCheckpoint,
  saveCompressedCheckpoint,
} from '@switchyard/compress';
import { END_OF_TEXT, loadCheckpoint } from '@switchyard/model';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadServingCheckpoint } from '../src/checkpoint';
import { GENERATE_FLAGS, SERVE_FLAGS } from '../src/flags';
import { main } from '../src/main';
import { fromSources, type TestCheckpoint, writeTestCheckpoint } from './fixtures';

let ckpt: TestCheckpoint;
beforeAll(async () => {
  ckpt = await writeTestCheckpoint();
});
afterAll(() => ckpt?.cleanup());

function collector() {
  const out = { stdout: '', stderr: '' };
  return {
    out,
    io: {
      stdout: { write: (s: string) => (out.stdout += s) },
      stderr: { write: (s: string) => (out.stderr += s) },
    },
  };
}

describe('switchyard-serve command line', () => {
  it('prints help with every flag, and the version', async () => {
    const { out, io } = collector();
    expect(await main(['--help'], io)).toBe(0);
    for (const f of [...SERVE_FLAGS, ...GENERATE_FLAGS])
      expect(out.stdout).toContain(`--${f.flag} ${f.value}`);
    const v = collector();
    expect(await main(['--version'], v.io)).toBe(0);
    expect(v.out.stdout).toBe('switchyard-serve 0.1.0\n');
  });

  it('generates once: the text generate() gives', async () => {
    const { out, io } = collector();
    const code = await main(
      [
        'generate',
        '--checkpoint',
        ckpt.dir,
        '--prompt',
        'the quick',
        '--temperature',
        '0',
        '--max-tokens',
        '9',
      ],
      io,
    );
    expect(out.stderr).toBe('');
    expect(code).toBe(0);
    const { model, tokenizer } = await loadCheckpoint(ckpt.dir);
    const ids = model.generate(tokenizer.encode('the quick'), {
      maxNewTokens: 9,
      greedy: true,
      stopTokens: [tokenizer.specialTokens[END_OF_TEXT]!],
    });
    model.dispose();
    expect(out.stdout).toBe(`${tokenizer.decode(ids)}\n`);
  });

  it('generates from a compressed checkpoint with its factored experts: the text the compressed model gives', async () => {
    const dir = join(ckpt.dir, '..', 'compressed');
    const plain = await loadCheckpoint(ckpt.dir);
    // rank 2 of 4: far from the original experts, so the text is the compressed model's own
    compressModel(plain.model, { numGroups: 2, rank: 2, lambda: 1 });
    await saveCompressedCheckpoint(dir, { model: plain.model, tokenizer: plain.tokenizer });
    plain.model.dispose();
    const { out, io } = collector();
    const args = ['generate', '--checkpoint', dir, '--prompt', 'the quick', '--temperature', '0'];
    expect(await main([...args, '--max-tokens', '9'], io), out.stderr).toBe(0);
    const { model, tokenizer } = await loadCompressedCheckpoint(dir);
    const ids = model.generate(tokenizer.encode('the quick'), {
      maxNewTokens: 9,
      greedy: true,
      stopTokens: [tokenizer.specialTokens[END_OF_TEXT]!],
    });
    model.dispose();
    expect(out.stdout).toBe(`${tokenizer.decode(ids)}\n`);
    // the server and `generate` load the factored banks, a plain checkpoint its full experts
    const served = await loadServingCheckpoint(dir);
    expect(served.compressed).toBe(true);
    expect(served.model.moeLayers().every((l) => l.experts instanceof CompressedExperts)).toBe(true);
    served.model.dispose();
    const full = await loadServingCheckpoint(ckpt.dir);
    expect(full.compressed).toBe(false);
    expect(full.model.moeLayers()[0]!.experts).not.toBeInstanceOf(CompressedExperts);
    full.model.dispose();
  });

  it('reports usage errors in one line with exit code 2, other failures with 1', async () => {
    const cases: [string[], RegExp, number][] = [
      [[], /--checkpoint is required/, 2],
      [['--checkpoint', ckpt.dir, '--port', 'abc'], /--port: expected an integer >= 0, got "abc"/, 2],
      [['--checkpoint', ckpt.dir, '--max-batch', '0'], /--max-batch: expected an integer >= 1, got "0"/, 2],
      [['--checkpoint', ckpt.dir, '--bogus'], /Unknown option '--bogus'/, 2],
      [
        ['--checkpoint', ckpt.dir, '--backend', 'gpu'],
        /--backend: expected one of tensorflow, wasm, cpu, got "gpu"/,
        2,
      ],
      [['generate', '--checkpoint', ckpt.dir], /--prompt is required/, 2],
      [
        ['generate', '--checkpoint', ckpt.dir, '--prompt', 'x', '--top-p', '2'],
        /--top-p: expected a number in \(0, 1\]/,
        2,
      ],
      [['generate', '--checkpoint', `${ckpt.dir}-missing`, '--prompt', 'x'], /cannot read manifest.json/, 1],
    ];
    for (const [argv, message, code] of cases) {
      const { out, io } = collector();
      expect(await main(argv, io), argv.join(' ')).toBe(code);
      expect(out.stderr).toMatch(message);
      expect(out.stderr.trim().split('\n')).toHaveLength(1);
    }
  });

  it("fails with the engine thread's error (exit code 1) when the weights do not verify", async () => {
    const bad = await writeTestCheckpoint({}, 'corrupt');
    try {
      const weights = join(bad.dir, 'model.safetensors');
      const bytes = readFileSync(weights);
      bytes[bytes.length - 1] = bytes.at(-1)! ^ 0xff;
      writeFileSync(weights, bytes);
      const { out, io } = collector();
      expect(await main(['--checkpoint', bad.dir, '--port', '0'], io)).toBe(1);
      expect(out.stderr).toMatch(
        /model.safetensors is corrupted: its sha256 is [0-9a-f]{64}, the manifest records/,
      );
      expect(out.stdout).toBe('');
    } finally {
      bad.cleanup();
    }
  });

  it('serves until stopped, then drains and returns 0', async () => {
    const { out, io } = collector();
    let stop!: () => void;
    const stopSignal = new Promise<void>((r) => {
      stop = r;
    });
    const running = main(['--checkpoint', ckpt.dir, '--port', '0', '--model-name', 'm'], io, { stopSignal });
    while (!out.stdout.includes('serving')) await new Promise((r) => setTimeout(r, 10));
    const url = /at (http:\/\/\S+)/.exec(out.stdout)![1]!;
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', prompt: 'the', max_tokens: 3 }),
    });
    expect(res.status).toBe(200);
    stop();
    expect(await running).toBe(0);
    expect(out.stdout).toMatch(/draining\n.*stopped\n$/s);
  });

  it('drains on SIGTERM: the running stream finishes, new requests are refused, exit code 0', async () => {
    const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
    const child = spawn(
      process.execPath,
      fromSources(cli, [
        '--checkpoint',
        ckpt.dir,
        '--port',
        '0',
        '--backend',
        process.env.SWITCHYARD_BACKEND ?? 'wasm',
      ]),
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    try {
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
      });
      const exited = once(child, 'exit');
      while (!stdout.includes('serving')) {
        if (child.exitCode !== null) throw new Error(`server exited early: ${stdout}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const url = /at (http:\/\/\S+)/.exec(stdout)![1]!;
      const res = await fetch(`${url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'tiny-moe',
          prompt: 'the',
          max_tokens: 50,
          temperature: 0,
          stream: true,
        }),
      });
      const reader = res.body!.getReader();
      const decoder = new TextDecoder();
      let body = decoder.decode((await reader.read()).value);
      child.kill('SIGTERM');
      while (!stdout.includes('draining')) await new Promise((r) => setTimeout(r, 5));
      const refused = await fetch(`${url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'tiny-moe', prompt: 'the', max_tokens: 2 }),
      }).then(
        (r) => r.status,
        () => 'connection refused',
      );
      expect([503, 'connection refused']).toContain(refused);
      for (let r = await reader.read(); !r.done; r = await reader.read()) body += decoder.decode(r.value);
      expect(body.endsWith('data: [DONE]\n\n')).toBe(true);
      expect(body).toContain('"finish_reason":"length"');
      const [code] = await exited;
      expect(code).toBe(0);
      expect(stdout).toMatch(/stopped\n$/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
