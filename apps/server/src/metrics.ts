/**
 * Operator metrics in Prometheus format (prom-client), one registry per server: requests running
 * and waiting, time to first token and inter-token latency, tokens, KV-cache use, and per layer per
 * expert the routed-token counts of live traffic (also kept as the L x E load matrix that
 * `switchyard-plan eplb --load` reads).
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineObserver, EngineStats, StepInfo } from './engine/engine';
import type { FinishReason } from './engine/sequence';

const TTFT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const ITL_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const STEP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];

export class ServerMetrics implements EngineObserver {
  readonly registry = new Registry();
  /** Routed assignments since start, [MoE layer][expert]. */
  private readonly loadsLE: number[][];
  private readonly ttft: Histogram;
  private readonly itl: Histogram;
  private readonly stepSeconds: Histogram;
  private readonly batchSize: Histogram;
  private readonly generated: Counter;
  private readonly prompt: Counter;
  private readonly finishedTotal: Counter;
  private readonly httpRequests: Counter;

  /**
   * @param layers block index of each MoE layer, in order
   * @param E experts per MoE layer
   * @param stats the engine's state, read at each scrape
   */
  constructor(layers: readonly number[], E: number, stats: () => EngineStats) {
    const r = this.registry;
    this.loadsLE = layers.map(() => new Array<number>(E).fill(0));
    const loads = this.loadsLE;
    collectDefaultMetrics({ register: r, prefix: 'switchyard_process_' });
    const gauge = (name: string, help: string, read: (s: EngineStats) => number) =>
      new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          this.set(read(stats()));
        },
      });
    gauge(
      'switchyard_requests_running',
      'Sequences in the running batch (a request with n choices counts n)',
      (s) => s.running,
    );
    gauge('switchyard_requests_waiting', 'Sequences waiting to join the batch', (s) => s.waiting);
    gauge('switchyard_kv_cache_used_bytes', 'KV cache held by running sequences', (s) => s.kvUsedBytes);
    gauge(
      'switchyard_kv_cache_reserved_bytes',
      'KV cache reserved by running sequences (prompt + max tokens each)',
      (s) => s.kvReservedBytes,
    );
    gauge('switchyard_kv_cache_budget_bytes', 'KV cache budget (--kv-budget-mb)', (s) => s.kvBudgetBytes);
    gauge('switchyard_kv_cache_usage_ratio', 'Reserved KV cache over the budget', (s) =>
      s.kvBudgetBytes > 0 ? s.kvReservedBytes / s.kvBudgetBytes : 0,
    );
    this.ttft = new Histogram({
      name: 'switchyard_time_to_first_token_seconds',
      help: 'From a sequence joining the queue to its first generated token',
      buckets: TTFT_BUCKETS,
      registers: [r],
    });
    this.itl = new Histogram({
      name: 'switchyard_inter_token_latency_seconds',
      help: 'Between consecutive generated tokens of a sequence',
      buckets: ITL_BUCKETS,
      registers: [r],
    });
    this.stepSeconds = new Histogram({
      name: 'switchyard_step_seconds',
      help: 'Duration of one engine step (one forward over the running batch, sampling included)',
      buckets: STEP_BUCKETS,
      registers: [r],
    });
    this.batchSize = new Histogram({
      name: 'switchyard_step_sequences',
      help: 'Sequences in one engine step',
      buckets: BATCH_BUCKETS,
      registers: [r],
    });
    this.generated = new Counter({
      name: 'switchyard_generated_tokens_total',
      help: 'Tokens generated',
      registers: [r],
    });
    this.prompt = new Counter({
      name: 'switchyard_prompt_tokens_total',
      help: 'Prompt tokens prefilled',
      registers: [r],
    });
    this.finishedTotal = new Counter({
      name: 'switchyard_sequences_finished_total',
      help: 'Sequences ended, by reason (stop, length, cancelled, error)',
      labelNames: ['reason'],
      registers: [r],
    });
    this.httpRequests = new Counter({
      name: 'switchyard_http_requests_total',
      help: 'HTTP requests answered, by route and status code',
      labelNames: ['route', 'status'],
      registers: [r],
    });
    new Counter({
      name: 'switchyard_expert_routed_tokens_total',
      help: 'Token assignments routed to each expert of each MoE layer (layer = block index), live traffic',
      labelNames: ['layer', 'expert'],
      registers: [r],
      collect() {
        this.reset();
        loads.forEach((row, i) => {
          row.forEach((n, e) => {
            this.inc({ layer: String(layers[i]), expert: String(e) }, n);
          });
        });
      },
    });
  }

  firstToken(seconds: number): void {
    this.ttft.observe(seconds);
  }

  interToken(seconds: number): void {
    this.itl.observe(seconds);
  }

  step(info: StepInfo): void {
    this.stepSeconds.observe(info.seconds);
    this.batchSize.observe(info.sequences);
    if (info.generatedTokens > 0) this.generated.inc(info.generatedTokens);
    if (info.prefillTokens > 0) this.prompt.inc(info.prefillTokens);
    info.expertCounts.forEach((countsE, l) => {
      const row = this.loadsLE[l]!;
      for (let e = 0; e < row.length; e++) row[e]! += countsE[e]!;
    });
  }

  finished(reason: FinishReason): void {
    this.finishedTotal.inc({ reason });
  }

  /** Counts an answered HTTP request. */
  request(route: string, status: number): void {
    this.httpRequests.inc({ route, status: String(status) });
  }

  /** Routed assignments since start, [MoE layer][expert] (a copy). */
  expertLoads(): number[][] {
    return this.loadsLE.map((row) => [...row]);
  }
}
