// The server through the real `openai` client on 127.0.0.1: completions and chat, streaming and
// not, greedy text equal to generate(), seeds, n, logprobs, stop strings, models, experts, metrics.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { END_OF_TEXT, loadCheckpoint, type MoETransformerLM } from '@switchyard/model';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineClient } from '../src/engine/client';
import { loadServable, type RunningServer, type Servable, startServer } from '../src/server';
import { renderChat } from '../src/serving/chat-template';
import { fromSources, type TestCheckpoint, writeTestCheckpoint } from './fixtures';

const KEY = 'test-key';
let ckpt: TestCheckpoint;
let servable: Servable;
/** The same checkpoint loaded in this thread, for generate() (the server's engine has its own thread). */
let model: MoETransformerLM;
let server: RunningServer;
let client: OpenAI;
/** Live tensors in the engine thread once it has answered a request. */
let baselineTensors: number;

beforeAll(async () => {
  ckpt = await writeTestCheckpoint();
  servable = await loadServable(ckpt.dir);
  model = (await loadCheckpoint(ckpt.dir)).model;
  server = await startServer(servable, { port: 0, apiKey: KEY, maxBatch: 8, prefillChunk: 16 });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: KEY, maxRetries: 0 });
  await client.completions.create({ model: 'tiny-moe', prompt: 'warm', max_tokens: 2 });
  baselineTensors = await (server.engine as EngineClient).liveTensors();
});

afterAll(async () => {
  await server?.shutdown();
  model?.dispose();
  ckpt?.cleanup();
});

/** What generate() continues `text` with, greedily, as text. */
function greedyText(text: string, maxNewTokens: number): string {
  const tok = servable.tokenizer;
  const ids = model.generate(tok.encode(text), {
    maxNewTokens,
    greedy: true,
    stopTokens: [tok.specialTokens[END_OF_TEXT]!],
  });
  return tok.decode(ids);
}

const PROMPTS = [
  'the quick',
  'a fox',
  'naïve café',
  'the dog sleeps',
  'over the lazy',
  'brown',
  'x',
  'crème',
];

describe('switchyard-serve with the openai client', () => {
  it('lists the served model', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['tiny-moe']);
    expect((await client.models.retrieve('tiny-moe')).id).toBe('tiny-moe');
  });

  it('completes greedily with the text generate() gives, alone and 8 at once, streaming or not', async () => {
    const one = await client.completions.create({
      model: 'tiny-moe',
      prompt: PROMPTS[0]!,
      max_tokens: 12,
      temperature: 0,
    });
    expect(one.choices[0]!.text).toBe(greedyText(PROMPTS[0]!, 12));
    expect(one.object).toBe('text_completion');
    expect(one.usage).toMatchObject({
      prompt_tokens: servable.tokenizer.encode(PROMPTS[0]!).length,
      completion_tokens: 12,
    });
    expect(one.choices[0]!.finish_reason).toBe('length');

    const all = await Promise.all(
      PROMPTS.map(async (prompt, i) => {
        if (i % 2 === 0) {
          const r = await client.completions.create({
            model: 'tiny-moe',
            prompt,
            max_tokens: 10 + i,
            temperature: 0,
          });
          return r.choices[0]!.text;
        }
        const stream = await client.completions.create({
          model: 'tiny-moe',
          prompt,
          max_tokens: 10 + i,
          temperature: 0,
          stream: true,
        });
        let text = '';
        for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
        return text;
      }),
    );
    all.forEach((text, i) => {
      expect(text, PROMPTS[i]).toBe(greedyText(PROMPTS[i]!, 10 + i));
    });
  });

  it('streams SSE chunks ending with data: [DONE], usage last when asked', async () => {
    const stream = await client.completions.create({
      model: 'tiny-moe',
      prompt: 'the fox',
      max_tokens: 6,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ completion_tokens: 6, total_tokens: 6 + last.usage!.prompt_tokens });
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe('length');
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);

    const raw = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny-moe', prompt: 'the fox', max_tokens: 3, stream: true }),
    });
    expect(raw.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const body = await raw.text();
    expect(body.endsWith('data: [DONE]\n\n')).toBe(true);
    expect(body.split('\n\n').filter((e) => e.startsWith('data: {')).length).toBeGreaterThanOrEqual(1);
  });

  it('chats with the plain template, streaming or not, equal to generate() on the rendered prompt', async () => {
    const messages = [
      { role: 'system' as const, content: 'Answer briefly.' },
      { role: 'user' as const, content: 'Where is the fox?' },
    ];
    const rendered = renderChat(servable.chatTemplate, messages);
    expect(rendered).toBe('System: Answer briefly.\nUser: Where is the fox?\nAssistant:');
    let want = greedyText(rendered, 16);
    for (const stop of ['\nUser:', '\nSystem:'])
      if (want.includes(stop)) want = want.slice(0, want.indexOf(stop));
    const r = await client.chat.completions.create({
      model: 'tiny-moe',
      messages,
      max_tokens: 16,
      temperature: 0,
    });
    expect(r.object).toBe('chat.completion');
    expect(r.choices[0]!.message).toMatchObject({ role: 'assistant', content: want });
    const stream = await client.chat.completions.create({
      model: 'tiny-moe',
      messages,
      max_completion_tokens: 16,
      temperature: 0,
      stream: true,
    });
    let text = '';
    let role: string | undefined;
    for await (const c of stream) {
      role ??= c.choices[0]?.delta.role;
      text += c.choices[0]?.delta.content ?? '';
    }
    expect(role).toBe('assistant');
    expect(text).toBe(want);
  });

  it('samples the same text for the same seed, n choices, stop strings and logprobs', async () => {
    const ask = (seed: number) =>
      client.completions.create({ model: 'tiny-moe', prompt: 'the', max_tokens: 12, temperature: 1, seed });
    const [a, b, c] = await Promise.all([ask(42), ask(42), ask(43)]);
    expect(a.choices[0]!.text).toBe(b.choices[0]!.text);
    expect(c.choices[0]!.text).not.toBe(a.choices[0]!.text);

    const n = await client.completions.create({
      model: 'tiny-moe',
      prompt: ['the', 'a'],
      max_tokens: 5,
      n: 2,
      seed: 42,
      temperature: 1,
    });
    expect(n.choices.map((ch) => ch.index)).toEqual([0, 1, 2, 3]);
    // Choice j of a request with seed s samples with seed s + j: choice 0 is the seed-42 text.
    const single = await client.completions.create({
      model: 'tiny-moe',
      prompt: 'the',
      max_tokens: 5,
      seed: 42,
    });
    expect(n.choices[0]!.text).toBe(single.choices[0]!.text);
    expect(a.choices[0]!.text.startsWith(single.choices[0]!.text)).toBe(true);
    expect(n.usage!.prompt_tokens).toBe(
      servable.tokenizer.encode('the').length + servable.tokenizer.encode('a').length,
    );

    const free = greedyText('the quick', 16);
    const stop = free.slice(3, 5);
    const stopped = await client.completions.create({
      model: 'tiny-moe',
      prompt: 'the quick',
      max_tokens: 16,
      temperature: 0,
      stop: [stop],
    });
    expect(stopped.choices[0]!.text).toBe(free.slice(0, free.indexOf(stop)));
    expect(stopped.choices[0]!.finish_reason).toBe('stop');

    const lp = await client.completions.create({
      model: 'tiny-moe',
      prompt: 'the quick',
      max_tokens: 4,
      temperature: 0,
      logprobs: 2,
    });
    const l = lp.choices[0]!.logprobs!;
    expect(l.tokens!.join('')).toBe(lp.choices[0]!.text);
    expect(l.token_logprobs).toHaveLength(4);
    expect(l.top_logprobs!.every((t) => Object.keys(t).length >= 1)).toBe(true);
    expect(l.text_offset).toEqual([
      0,
      ...l.tokens!.slice(0, -1).map((_, i) => l.tokens!.slice(0, i + 1).join('').length),
    ]);
    const chat = await client.chat.completions.create({
      model: 'tiny-moe',
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 3,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
    });
    const content = chat.choices[0]!.logprobs!.content!;
    expect(content).toHaveLength(3);
    for (const t of content) {
      expect(t.logprob).toBeLessThanOrEqual(0);
      expect(t.top_logprobs).toHaveLength(2);
      expect(t.top_logprobs[0]!.logprob).toBeCloseTo(t.logprob, 5); // greedy: the top one was picked
      expect(Buffer.from(t.bytes!).length).toBeGreaterThan(0);
    }
  });

  it('reports per-layer per-expert loads as JSON that switchyard-plan eplb reads, and as Prometheus counters', async () => {
    const res = await fetch(`${server.url}/v1/experts`, { headers: { authorization: `Bearer ${KEY}` } });
    const loads = (await res.json()) as number[][];
    expect(loads).toHaveLength(1); // one MoE layer in the tiny preset
    expect(loads[0]).toHaveLength(4);
    const total = loads[0]!.reduce((s, v) => s + v, 0);
    expect(total).toBeGreaterThan(0);
    expect(total % 2).toBe(0); // top-2: two assignments per token

    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    for (const name of [
      'switchyard_requests_running',
      'switchyard_requests_waiting',
      'switchyard_time_to_first_token_seconds_bucket',
      'switchyard_inter_token_latency_seconds_bucket',
      'switchyard_generated_tokens_total',
      'switchyard_kv_cache_used_bytes',
      'switchyard_kv_cache_budget_bytes',
    ])
      expect(metrics, name).toContain(name);
    const counted = [
      ...metrics.matchAll(/^switchyard_expert_routed_tokens_total\{layer="1",expert="(\d)"\} (\d+)$/gm),
    ];
    expect(counted).toHaveLength(4);
    const now = (
      (await (
        await fetch(`${server.url}/v1/experts`, { headers: { authorization: `Bearer ${KEY}` } })
      ).json()) as number[][]
    )[0]!;
    counted.forEach((m) => {
      expect(Number(m[2])).toBe(now[Number(m[1])]);
    });

    const file = join(ckpt.dir, '..', 'load.json');
    writeFileSync(file, JSON.stringify(loads));
    const plan = fileURLToPath(new URL('../../../packages/plan/src/cli.ts', import.meta.url));
    const r = spawnSync(
      process.execPath,
      fromSources(plan, [
        'eplb',
        '--load',
        file,
        '--replicas',
        '4',
        '--groups',
        '1',
        '--nodes',
        '1',
        '--gpus',
        '2',
        '--format',
        'json',
      ]),
      { encoding: 'utf8' },
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toHaveProperty('phy2log');
  });

  it('runs its engine in a worker thread that holds no tensors beyond the model after the requests', async () => {
    expect(server.engine).toBeInstanceOf(EngineClient);
    expect(server.engine.stats()).toMatchObject({ running: 0, waiting: 0, kvUsedBytes: 0 });
    expect(await (server.engine as EngineClient).liveTensors()).toBe(baselineTensors);
  });

  it('answers health, and 401 in OpenAI shape without the API key', async () => {
    expect(await (await fetch(`${server.url}/health`)).json()).toEqual({ status: 'ok' });
    const bad = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
    await expect(bad.models.list()).rejects.toMatchObject({ status: 401, code: 'invalid_api_key' });
    const res = await fetch(`${server.url}/v1/models`);
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({
      error: { type: 'invalid_request_error', code: 'invalid_api_key' },
    });
  });
});
