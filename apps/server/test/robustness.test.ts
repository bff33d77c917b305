// Bad input never crashes the server: each malformed request gets a 4xx in OpenAI's error shape
// and the server keeps serving. Also the limits (body size, max_tokens, context, queue) and client
// disconnects, which must cancel generation and free the KV cache.
import { request } from 'node:http';
import { loadCheckpoint, type MoETransformerLM } from '@switchyard/model';
import { tf } from '@switchyard/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadServable, type RunningServer, type Servable, startServer } from '../src/server';
import { type TestCheckpoint, writeTestCheckpoint } from './fixtures';

let ckpt: TestCheckpoint;
let servable: Servable;
/** The model, loaded here: this server runs its engine on the test's thread (tensors countable). */
let model: MoETransformerLM;
let server: RunningServer;
/** Live tensors once the server has answered one request (lazily built constants included). */
let baselineTensors: number;

beforeAll(async () => {
  ckpt = await writeTestCheckpoint({ maxSeqLen: 256 });
  servable = await loadServable(ckpt.dir);
  model = (await loadCheckpoint(ckpt.dir)).model;
  server = await startServer(servable, {
    model,
    port: 0,
    maxBatch: 2,
    maxWaiting: 2,
    maxBodyKb: 8,
    maxTokens: 240,
  });
  await expectServing();
  baselineTensors = tf.memory().numTensors;
});

afterAll(async () => {
  await server?.shutdown();
  model?.dispose();
  ckpt?.cleanup();
});

/** Sends raw bytes to a path; returns the status, headers and parsed JSON body. */
function send(
  path: string,
  body: string | Buffer | undefined,
  headers: Record<string, string> = { 'content-type': 'application/json' },
  method = 'POST',
): Promise<{ status: number; headers: Record<string, unknown>; json: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(`${server.url}${path}`, { method, headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        let json: unknown = text;
        try {
          json = JSON.parse(text);
        } catch {
          // not JSON: keep the text
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, json });
      });
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const post = (body: unknown, path = '/v1/completions') => send(path, JSON.stringify(body));
const base = { model: 'tiny-moe', prompt: 'the fox' };

async function expectServing(): Promise<void> {
  const r = await post({ ...base, max_tokens: 2, temperature: 0 });
  expect(r.status).toBe(200);
}

/** Expects a 4xx with OpenAI's error shape whose message matches `message`. */
function expectError(
  r: { status: number; json: unknown },
  status: number,
  message: RegExp,
  param?: string | null,
) {
  expect(r.status).toBe(status);
  const err = (r.json as { error: Record<string, unknown> }).error;
  expect(Object.keys(err).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(err.message).toMatch(message);
  if (param !== undefined) expect(err.param).toBe(param);
}

describe('malformed requests', () => {
  it('malformed JSON, a non-object body, an empty body and a missing content type', async () => {
    expectError(await send('/v1/completions', '{"model": "tiny-moe", '), 400, /not valid JSON/);
    expectError(
      await send('/v1/completions', '[1, 2]'),
      400,
      /The request body must be an object, got \[1,2\]/,
    );
    expectError(await send('/v1/completions', ''), 400, /body is empty/);
    expectError(await send('/v1/completions', JSON.stringify(base), {}), 415, /application\/json/);
    expectError(await send('/v1/chat/completions', '{"__proto__": {"x": 1}}'), 400, /not valid JSON/);
    await expectServing();
  });

  it('invalid UTF-8 in the body', async () => {
    const bytes = Buffer.concat([
      Buffer.from('{"model": "tiny-moe", "prompt": "'),
      Buffer.from([0xff, 0xfe, 0xc3]),
      Buffer.from('"}'),
    ]);
    expectError(await send('/v1/completions', bytes), 400, /not valid UTF-8/);
    await expectServing();
  });

  it('wrong types, unknown and unsupported fields, bad values', async () => {
    expectError(
      await post({ ...base, max_tokens: 'ten' }),
      400,
      /`max_tokens` must be an integer or null, got "ten"/,
      'max_tokens',
    );
    expectError(await post({ ...base, temperature: true }), 400, /`temperature` must be a number or null/);
    expectError(await post({ ...base, stream: 'yes' }), 400, /`stream` must be a boolean or null/);
    expectError(await post({ ...base, prompt: { text: 'x' } }), 400, /`prompt` must be a string or an array/);
    expectError(await post({ ...base, prompt: [1, 'a'] }), 400, /`prompt` must be a non-empty string/);
    expectError(await post({ ...base, temperature: 3 }), 400, /`temperature` must be <= 2, got 3/);
    expectError(
      await post({ ...base, stop: ['a', 'b', 'c', 'd', 'e'] }),
      400,
      /`stop` must NOT have more than 4 items/,
    );
    expectError(await post({ ...base, foo: 1 }), 400, /Unknown or unsupported field `foo`/, 'foo');
    expectError(await post({ model: 'tiny-moe' }), 400, /Missing required field `prompt`/, 'prompt');
    expectError(await post({ ...base, echo: true }), 400, /`echo` is not supported/);
    expectError(await post({ ...base, presence_penalty: 0.5 }), 400, /`presence_penalty` is not supported/);
    expectError(
      await post({ ...base, stream_options: { include_usage: true } }),
      400,
      /only allowed when `stream` is true/,
    );
    expectError(await post({ ...base, model: 'gpt-4' }), 404, /The model `gpt-4` does not exist/, 'model');
    const chat = (b: object) =>
      post({ model: 'tiny-moe', messages: [{ role: 'user', content: 'hi' }], ...b }, '/v1/chat/completions');
    expectError(await chat({ tools: [] }), 400, /Unknown or unsupported field `tools`/);
    expectError(
      await chat({ messages: [{ role: 'tool', content: 'x' }] }),
      400,
      /`messages\[0\].role` must be one of "system", "developer", "user", "assistant", got "tool"/,
    );
    expectError(
      await chat({ messages: [{ role: 'user', content: 'x', name: 'bob' }] }),
      400,
      /Unknown or unsupported field `messages\[0\].name`/,
    );
    expectError(await chat({ messages: [] }), 400, /`messages` must NOT have fewer than 1 items/);
    expectError(await chat({ top_logprobs: 2 }), 400, /needs `logprobs: true`/);
    expectError(await send('/v1/nothing', '{}'), 404, /No route POST \/v1\/nothing/);
    await expectServing();
  });

  it('huge numbers', async () => {
    const raw = (text: string) => send('/v1/completions', text);
    expectError(
      await raw('{"model":"tiny-moe","prompt":"x","max_tokens":1e400}'),
      400,
      /`max_tokens` must be an integer or null, got Infinity/,
    );
    expectError(
      await raw('{"model":"tiny-moe","prompt":"x","temperature":-1e400}'),
      400,
      /`temperature` must be a number or null/,
    );
    expectError(
      await post({ ...base, max_tokens: 1e300 }),
      400,
      /`max_tokens` must be at most 240 on this server, got 1e\+300/,
    );
    expectError(await post({ ...base, n: 1e20 }), 400, /`n` must be <= 16/);
    expectError(
      await post({ ...base, prompt: [1e20] }),
      400,
      /must be a token id below 300, got 100000000000000000000/,
    );
    const seeded = await post({ ...base, max_tokens: 2, seed: 1e300, top_k: 1e30 });
    expect(seeded.status).toBe(200);
    await expectServing();
  });

  it('an empty prompt, and prompts longer than the context', async () => {
    expectError(await post({ ...base, prompt: '' }), 400, /`prompt` must not be empty/, 'prompt');
    expectError(await post({ ...base, prompt: [] }), 400, /`prompt` must be a non-empty string/);
    expectError(await post({ ...base, prompt: ['ok', ''] }), 400, /`prompt\[1\]` must not be empty/);
    expectError(await post({ ...base, max_tokens: 250 }), 400, /`max_tokens` must be at most 240/);
    const long = 'the fox '.repeat(60); // fits the context, but not with 200 more tokens
    const r = await post({ ...base, prompt: long, max_tokens: 200 });
    expectError(
      r,
      400,
      /maximum context length is 256 tokens; prompt has \d+ tokens and 200 more were requested/,
      'max_tokens',
    );
    expect((r.json as { error: { code: string } }).error.code).toBe('context_length_exceeded');
    expectError(
      await post({ ...base, prompt: 'x'.repeat(7000) }),
      400,
      /maximum context length is 256 tokens; prompt has at least \d+ tokens/,
    );
    await expectServing();
  });
});

describe('limits and disconnects', () => {
  it('answers 413 to a body over --max-body-kb', async () => {
    expectError(await post({ ...base, prompt: 'x'.repeat(9000) }), 413, /at most 8192 bytes/);
    await expectServing();
  });

  it('answers 429 with Retry-After when the queue is full, and serves the rest', async () => {
    const results = await Promise.all(
      Array.from({ length: 8 }, () => post({ ...base, max_tokens: 100, temperature: 0 })),
    );
    const refused = results.filter((r) => r.status === 429);
    expect(refused.length).toBeGreaterThanOrEqual(1);
    expect(results.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(4);
    expect(refused.length + results.filter((r) => r.status === 200).length).toBe(8);
    for (const r of refused) {
      expect(r.headers['retry-after']).toBe('1');
      expectError(r, 429, /the queue is full/);
    }
    await expectServing();
  });

  it('cancels a generation whose client disconnects and frees its KV cache', async () => {
    const before = await finishedCount('cancelled');
    const abort = new AbortController();
    const res = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...base, max_tokens: 240, temperature: 0, stream: true }),
      signal: abort.signal,
    });
    const reader = res.body!.getReader();
    await reader.read(); // the first chunk: the sequence is running
    expect(server.engine.stats().running).toBe(1);
    abort.abort();
    await waitFor(() => server.engine.stats().running === 0);
    expect(server.engine.stats().kvUsedBytes).toBe(0);
    expect(await finishedCount('cancelled')).toBe(before + 1);

    const abort2 = new AbortController();
    const pending = fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...base, max_tokens: 240, temperature: 0 }),
      signal: abort2.signal,
    }).catch(() => undefined);
    await waitFor(() => server.engine.stats().running === 1);
    abort2.abort();
    await pending;
    await waitFor(() => server.engine.stats().running === 0);
    expect(await finishedCount('cancelled')).toBe(before + 2);
    await expectServing();
  });
});

describe('shutdown', () => {
  it('answers requests a drain timeout cancels with 503 (an error event when streaming)', async () => {
    const own = await startServer(servable, { port: 0, drainTimeoutS: 0.05 });
    const ask = (stream: boolean) =>
      fetch(`${own.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...base, max_tokens: 240, temperature: 0, stream }),
      });
    const plain = ask(false);
    const streamed = await ask(true);
    await waitFor(() => own.engine.stats().running === 2);
    const closing = own.shutdown();
    const r = await plain;
    expect(r.status).toBe(503);
    expect(await r.json()).toMatchObject({ error: { code: 'shutting_down', type: 'server_error' } });
    const text = await streamed.text();
    expect(text).toMatch(
      /data: \{"error":\{"message":"the generation was cancelled \(the server is shutting down\)"/,
    );
    expect(text.endsWith('data: [DONE]\n\n')).toBe(true);
    await closing;
  });
});

describe('memory', () => {
  it('holds no tensors beyond the model once every request above has ended', async () => {
    await waitFor(() => server.engine.stats().running === 0 && server.engine.stats().waiting === 0);
    expect(tf.memory().numTensors).toBe(baselineTensors);
  });
});

async function finishedCount(reason: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const m = new RegExp(`^switchyard_sequences_finished_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(
    text,
  );
  return m ? Number(m[1]) : 0;
}

async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(cond()).toBe(true);
}
