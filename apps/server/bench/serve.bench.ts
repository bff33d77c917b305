// Serving benchmark of the default model (the `small` preset the trainer uses, vocabulary 2048 like
// its default tokenizer, seeded random weights; the tokenizer is trained on this repository's docs).
// The server runs as a real `switchyard-serve` process on 127.0.0.1; this process is the load client.
//   1. load: C clients, each one streaming request at a time, for T seconds: errors, latency and
//      time-to-first-token p50/p99, requests/s and generated tokens/s;
//   2. the same load on a server with --max-batch 1 (one request at a time): the throughput ratio;
//   3. overload: a burst of requests against a small queue: how many get 429 and how fast;
//   4. in this process: decode tokens/s at batch 1 and 16 (one forwardRagged step per token, logits
//      read back, greedy pick) and the share of a decode step in attention, routing and experts.
//   pnpm --filter switchyard-serve bench   (BENCH_CLIENTS=8 BENCH_SECONDS=15 BENCH_MAX_TOKENS=32)
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  BpeTokenizer,
  defineModelConfig,
  KVCache,
  MoETransformerLM,
  presets,
  type StepProfile,
  saveCheckpoint,
} from '@switchyard/model';
import { initBackend, Rng, tf } from '@switchyard/tensor';

const backend = (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | undefined) ?? 'wasm';
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 8);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 15);
const MAX_TOKENS = Number(process.env.BENCH_MAX_TOKENS ?? 32);
const root = fileURLToPath(new URL('../../../', import.meta.url));
const info = await initBackend({ backend });

// --- the default model as a checkpoint -------------------------------------------------------
const docs = (dir: string): string[] =>
  readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? docs(p) : n.endsWith('.md') ? [p] : [];
  });
const files = [...docs(join(root, 'docs/guide')), ...docs(join(root, 'docs/concepts'))];
const tokenizer = BpeTokenizer.train({ files }, { vocabSize: 2048 });
const config = defineModelConfig({ vocabSize: tokenizer.vocabSize }, presets.small);
const work = mkdtempSync(join(tmpdir(), 'switchyard-serve-bench-'));
const ckpt = join(work, 'small-random');
{
  const model = new MoETransformerLM(config, new Rng(0));
  await saveCheckpoint(ckpt, { model, tokenizer });
  model.dispose();
}
const words = files
  .map((f) => readFileSync(f, 'utf8'))
  .join(' ')
  .split(/\s+/)
  .filter((w) => /^[A-Za-z,.;:'()-]+$/.test(w));
const promptRng = new Rng(1);
/** A prompt of 8 to 48 words from the docs, cut to leave room for max_tokens in the context. */
function prompt(): string {
  const n = 8 + promptRng.int(41);
  const at = promptRng.int(words.length - n);
  const picked = words.slice(at, at + n);
  while (picked.length > 1 && tokenizer.encode(picked.join(' ')).length > config.maxSeqLen - MAX_TOKENS)
    picked.pop();
  return picked.join(' ');
}

// --- the server process ------------------------------------------------------------------------
interface Server {
  readonly url: string;
  readonly child: ChildProcess;
}

async function startServer(flags: string[]): Promise<Server> {
  const child = spawn(
    process.execPath,
    [
      '--conditions=@switchyard/source',
      '--import',
      'tsx',
      join(root, 'apps/server/src/cli.ts'),
      '--checkpoint',
      ckpt,
      '--port',
      '0',
      '--backend',
      backend,
      '--model-name',
      'small',
      ...flags,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  while (!/at (http:\/\/\S+)/.test(out)) {
    if (child.exitCode !== null) throw new Error(`server exited: ${out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return { url: /at (http:\/\/\S+)/.exec(out)![1]!, child };
}

async function stopServer(s: Server): Promise<number | null> {
  const exited = once(s.child, 'exit');
  s.child.kill('SIGTERM');
  const [code] = await exited;
  return code as number | null;
}

// --- the load client -------------------------------------------------------------------------
interface Outcome {
  readonly status: number;
  readonly ok: boolean;
  /** Why a request that was not answered 429 failed. */
  readonly failure?: string;
  readonly latencyMs: number;
  readonly ttftMs: number | undefined;
  readonly tokens: number;
}

/** One streaming completion; `ok` when it ended with data: [DONE] and no error event. */
async function complete(url: string, seed: number, text: string = prompt()): Promise<Outcome> {
  const t0 = performance.now();
  try {
    return await streamed(url, seed, text, t0);
  } catch (e) {
    const failure = `${(e as Error).message} ${String((e as { cause?: unknown }).cause ?? '')}`;
    return { status: 0, ok: false, failure, latencyMs: performance.now() - t0, ttftMs: undefined, tokens: 0 };
  }
}

async function streamed(url: string, seed: number, text: string, t0: number): Promise<Outcome> {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'small',
      prompt: text,
      max_tokens: MAX_TOKENS,
      temperature: 0.8,
      seed,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (res.status !== 200) {
    const failure = res.status === 429 ? undefined : `HTTP ${res.status}: ${await res.text()}`;
    if (failure === undefined) await res.arrayBuffer();
    return {
      status: res.status,
      ok: false,
      ...(failure ? { failure } : {}),
      latencyMs: performance.now() - t0,
      ttftMs: undefined,
      tokens: 0,
    };
  }
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let ttftMs: number | undefined;
  let tokens = 0;
  let done = false;
  let failure: string | undefined;
  for (let r = await reader.read(); !r.done; r = await reader.read()) {
    buffer += decoder.decode(r.value, { stream: true });
    const events = buffer.split('\n\n');
    buffer = events.pop()!;
    for (const e of events) {
      if (e === 'data: [DONE]') {
        done = true;
        continue;
      }
      const chunk = JSON.parse(e.slice('data: '.length)) as {
        choices: { text: string }[];
        usage: { completion_tokens: number } | null;
        error?: { message: string };
      };
      if (chunk.error) failure = chunk.error.message;
      if (ttftMs === undefined && chunk.choices[0]?.text) ttftMs = performance.now() - t0;
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
    }
  }
  if (!done) failure ??= 'the stream ended without data: [DONE]';
  return {
    status: 200,
    ok: failure === undefined,
    ...(failure ? { failure } : {}),
    latencyMs: performance.now() - t0,
    ttftMs,
    tokens,
  };
}

interface LoadResult {
  readonly outcomes: Outcome[];
  readonly wallS: number;
}

/** C clients, each sending its next request when the previous one ends, for `seconds`. */
async function load(url: string, clients: number, seconds: number): Promise<LoadResult> {
  const outcomes: Outcome[] = [];
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  let seed = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < until) outcomes.push(await complete(url, seed++));
    }),
  );
  return { outcomes, wallS: (performance.now() - t0) / 1000 };
}

function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

function summary(name: string, r: LoadResult) {
  const good = r.outcomes.filter((o) => o.ok);
  const tokens = good.reduce((s, o) => s + o.tokens, 0);
  // Time to the first chunk with text (a request whose first tokens were all held back counts later).
  const ttfts = good.flatMap((o) => (o.ttftMs === undefined ? [] : [o.ttftMs]));
  const row = {
    name,
    requests: r.outcomes.length,
    errors: r.outcomes.length - good.length,
    latencyP50: quantile(
      good.map((o) => o.latencyMs),
      0.5,
    ),
    latencyP99: quantile(
      good.map((o) => o.latencyMs),
      0.99,
    ),
    ttftP50: quantile(ttfts, 0.5),
    ttftP99: quantile(ttfts, 0.99),
    requestsPerS: good.length / r.wallS,
    tokensPerS: tokens / r.wallS,
  };
  return row;
}

const ms = (x: number) => `${x.toFixed(0)} ms`;
const rows: ReturnType<typeof summary>[] = [];
const allOutcomes: Outcome[] = [];

console.log(
  `backend: ${info.name}; model: small preset, ${(config.vocabSize / 1000).toFixed(3)}k vocab, random weights`,
);
console.log(`load: ${CLIENTS} clients x ${SECONDS} s, max_tokens ${MAX_TOKENS}, temperature 0.8, streaming`);

// 1 + 2: continuous batching vs one request at a time, same load.
for (const [name, flags] of [
  ['continuous batching (--max-batch 16)', ['--max-batch', '16']],
  ['one at a time (--max-batch 1)', ['--max-batch', '1', '--max-waiting', String(CLIENTS)]],
] as const) {
  const server = await startServer([...flags]);
  await complete(server.url, -1); // warm-up (kernels compile, tables build)
  const r = await load(server.url, CLIENTS, SECONDS);
  allOutcomes.push(...r.outcomes);
  const code = await stopServer(server);
  rows.push(summary(name, r));
  console.log(`  ${name}: done (server exit code ${code})`);
}

// 3: overload: a burst of 64 requests against --max-batch 4 --max-waiting 8.
const burst = 64;
const over = await startServer(['--max-batch', '4', '--max-waiting', '8']);
await complete(over.url, -1);
// The floor: the same burst of GET /health (HTTP alone, no model work) against the same server.
const healthStart = performance.now();
const healthMs = await Promise.all(
  Array.from({ length: burst }, async () => {
    await (await fetch(`${over.url}/health`)).text();
    return performance.now() - healthStart;
  }),
);
const burstPrompts = Array.from({ length: burst }, () => prompt()); // made before the clock starts
const burstStart = performance.now();
const burstOutcomes = await Promise.all(
  Array.from({ length: burst }, (_, i) => complete(over.url, 1000 + i, burstPrompts[i])),
);
const burstWall = (performance.now() - burstStart) / 1000;
await stopServer(over);
const refused = burstOutcomes.filter((o) => o.status === 429);
const served = burstOutcomes.filter((o) => o.ok);

// 4: decode tokens/s at batch 1 and 16, and where a decode step goes.
const model = new MoETransformerLM(config, new Rng(0));
function decode(batch: number, steps: number, profile?: StepProfile): number {
  const caches = Array.from({ length: batch }, () => new KVCache());
  const rng = new Rng(batch);
  const first = model.forwardRagged(
    caches.map((cache) => ({ tokens: Array.from({ length: 32 }, () => rng.int(config.vocabSize)), cache })),
  );
  let last = Array.from(tf.tidy(() => first.logitsBV.argMax(-1)).dataSync());
  first.logitsBV.dispose();
  const t0 = performance.now();
  for (let s = 0; s < steps; s++) {
    const { logitsBV } = model.forwardRagged(
      caches.map((cache, b) => ({ tokens: [last[b]!], cache })),
      profile ? { profile } : {},
    );
    const V = config.vocabSize;
    const logits = logitsBV.dataSync();
    logitsBV.dispose();
    last = caches.map((_, b) => {
      let best = 0;
      for (let v = 1; v < V; v++) if (logits[b * V + v]! > logits[b * V + best]!) best = v;
      return best;
    });
  }
  const seconds = (performance.now() - t0) / 1000;
  for (const c of caches) c.dispose();
  return (batch * steps) / seconds;
}
const decodeRows = [1, 16].map((batch) => {
  decode(batch, 8); // warm-up
  const tokensPerS = decode(batch, 64);
  const profile: StepProfile = { steps: 0, totalMs: 0, attentionMs: 0, routingMs: 0, expertsMs: 0 };
  decode(batch, 32, profile);
  const share = (x: number) => `${((100 * x) / profile.totalMs).toFixed(0)}%`;
  const other = profile.totalMs - profile.attentionMs - profile.routingMs - profile.expertsMs;
  return {
    batch,
    tokensPerS,
    stepMs: profile.totalMs / profile.steps,
    attention: share(profile.attentionMs),
    routing: share(profile.routingMs),
    experts: share(profile.expertsMs),
    other: share(other),
  };
});
model.dispose();
rmSync(work, { recursive: true, force: true });

const failures = [...burstOutcomes, ...allOutcomes].filter((o) => o.failure);
for (const f of failures.slice(0, 5)) console.log(`failure: ${f.failure}`);

// --- report ------------------------------------------------------------------------------------
console.log(
  '\n| run | requests | errors | latency p50 | latency p99 | TTFT p50 | TTFT p99 | requests/s | tokens/s |',
);
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows)
  console.log(
    `| ${r.name} | ${r.requests} | ${r.errors} | ${ms(r.latencyP50)} | ${ms(r.latencyP99)} | ${ms(r.ttftP50)} | ${ms(r.ttftP99)} | ${r.requestsPerS.toFixed(2)} | ${r.tokensPerS.toFixed(1)} |`,
  );
console.log(
  `\ncontinuous batching / one at a time, generated tokens/s: ${(rows[0]!.tokensPerS / rows[1]!.tokensPerS).toFixed(2)}x`,
);
console.log(
  `\noverload: ${burst} requests at once against --max-batch 4 --max-waiting 8: ${served.length} served, ` +
    `${refused.length} answered 429 (p50 ${ms(
      quantile(
        refused.map((o) => o.latencyMs),
        0.5,
      ),
    )}, ` +
    `p99 ${ms(
      quantile(
        refused.map((o) => o.latencyMs),
        0.99,
      ),
    )}), ` +
    `${burst - served.length - refused.length} other failures; served p50 ${ms(
      quantile(
        served.map((o) => o.latencyMs),
        0.5,
      ),
    )}; burst over in ${burstWall.toFixed(1)} s`,
);
console.log(
  `the same burst of GET /health on that server: p50 ${ms(quantile(healthMs, 0.5))}, ` +
    `p99 ${ms(quantile(healthMs, 0.99))} (HTTP alone, no model work)`,
);
console.log('\n| decode batch | tokens/s | step | attention | routing | experts | other |');
console.log('|---:|---:|---:|---:|---:|---:|---:|');
for (const d of decodeRows)
  console.log(
    `| ${d.batch} | ${d.tokensPerS.toFixed(1)} | ${d.stepMs.toFixed(1)} ms | ${d.attention} | ${d.routing} | ${d.experts} | ${d.other} |`,
  );
