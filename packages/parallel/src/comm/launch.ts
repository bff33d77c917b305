/**
 * The launcher: runs a rank function on R worker-thread ranks of this machine, or on every node of a
 * multi-node job (one launcher per node, in the manner of torchrun), and returns the ranks' results.
 */
import { resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  type BackendName,
  checkInt,
  checkNumber,
  initBackend,
  invalidArgument,
  SwitchyardError,
} from '@switchyard/tensor';
import type { LaunchEvent, RankOutcome } from './internal/agent';
import { runNode } from './internal/agent';
import { FROM_SOURCES, isTypeScript, runtimeUrl, typescriptLoaderUrl } from './internal/locate';
import { createLocalCommunicator, DEFAULT_COLLECTIVE_TIMEOUT_MS } from './local';
import type { PeerInfo, RankContext, RankFunction } from './types';

export type { LaunchEvent } from './internal/agent';

/** How ranks are started, connected and supervised. */
export interface LaunchConfig {
  /** Ranks on this node (`--ranks`); with several nodes, the ranks of each node. */
  readonly ranks: number;
  /** Number of nodes (`--nnodes`); each node runs its own launcher. */
  readonly nnodes: number;
  /** This node's index in [0, nnodes) (`--node-rank`); node 0 hosts the rendezvous. */
  readonly nodeRank: number;
  /** Rendezvous address `host:port` of node 0 (`--master`); required when nnodes > 1. */
  readonly master: string | undefined;
  /** Address this node advertises to the others (`--host`); default 127.0.0.1 for a loopback master, else the first external IPv4. */
  readonly host: string | undefined;
  /** Milliseconds a collective waits for its peers before failing with TIMEOUT. */
  readonly timeoutMs: number;
  /** Milliseconds node 0 waits for every node to register, and the others wait for its answer. */
  readonly rendezvousTimeoutMs: number;
  /** Milliseconds between heartbeats sent to every other node. */
  readonly heartbeatIntervalMs: number;
  /** A node silent for this many milliseconds is lost and its ranks fail. */
  readonly heartbeatTimeoutMs: number;
  /** Milliseconds ranks may keep running after another rank failed before they are terminated. */
  readonly shutdownGraceMs: number;
  /** Backend every rank initialises (in-process: the calling thread's); undefined follows SWITCHYARD_BACKEND, else the fastest that loads. */
  readonly backend: BackendName | 'auto' | undefined;
  /** Run a world of one rank in the calling thread instead of a worker thread. */
  readonly inProcess: boolean;
  /** Extra Node.js flags for the rank threads. */
  readonly execArgv: readonly string[];
}

/** Defaults of {@link LaunchConfig}: one rank in the calling thread, 60 s collective timeout. */
export const defaultLaunchConfig: LaunchConfig = {
  ranks: 1,
  nnodes: 1,
  nodeRank: 0,
  master: undefined,
  host: undefined,
  timeoutMs: DEFAULT_COLLECTIVE_TIMEOUT_MS,
  rendezvousTimeoutMs: 120_000,
  heartbeatIntervalMs: 500,
  heartbeatTimeoutMs: 10_000,
  shutdownGraceMs: 5_000,
  backend: undefined,
  inProcess: true,
  execArgv: [],
};

/** Arguments of {@link launch}: the rank module, its arguments, and any {@link LaunchConfig} fields. */
export interface LaunchOptions<A = unknown> extends Partial<LaunchConfig> {
  /** Module whose export is the rank function: a URL, or a path (absolute or relative to the working directory). */
  readonly module: string | URL;
  /** Name of the export holding the rank function (default `default`). */
  readonly exportName?: string;
  /** Passed to every rank as `ctx.args` (structured-cloned into each worker). */
  readonly args?: A;
  /** Receives progress and failure events. */
  readonly onEvent?: (event: LaunchEvent) => void;
}

/** What {@link launch} returns on this node. */
export interface LaunchResult<R = unknown> {
  /** The rank functions' results of this node's ranks, in rank order. */
  readonly results: R[];
  /** Global ranks that ran on this node. */
  readonly ranks: readonly number[];
  readonly worldSize: number;
  readonly nodeRank: number;
  /** Wall time of the launch, milliseconds. */
  readonly elapsedMs: number;
}

/** A parsed `host:port`. */
export interface MasterAddress {
  readonly host: string;
  readonly port: number;
}

/**
 * Parses a rendezvous address `host:port` (IPv6 hosts in brackets: `[::1]:29500`).
 *
 * @example
 * ```ts
 * parseMaster('10.0.0.1:29500'); // { host: '10.0.0.1', port: 29500 }
 * ```
 */
export function parseMaster(master: string): MasterAddress {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(master) ?? /^([^:]+):(\d+)$/.exec(master);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || !(port >= 1 && port <= 65535)) {
    throw invalidArgument('launch', 'master', 'an address host:port with a port in [1, 65535]', master);
  }
  return { host: m[1]!, port };
}

function resolveConfig(options: Partial<LaunchConfig>): LaunchConfig {
  const c: LaunchConfig = { ...defaultLaunchConfig };
  for (const [k, v] of Object.entries(options)) {
    if (v !== undefined && k in defaultLaunchConfig) (c as unknown as Record<string, unknown>)[k] = v;
  }
  checkInt('launch', 'ranks', c.ranks, { min: 1, max: 1024 });
  checkInt('launch', 'nnodes', c.nnodes, { min: 1, max: 4096 });
  checkInt('launch', 'nodeRank', c.nodeRank, { min: 0, max: c.nnodes - 1 });
  for (const k of [
    'timeoutMs',
    'rendezvousTimeoutMs',
    'heartbeatIntervalMs',
    'heartbeatTimeoutMs',
    'shutdownGraceMs',
  ] as const) {
    checkNumber('launch', k, c[k], { min: 0, minExclusive: true });
  }
  if (c.nnodes > 1 && c.master === undefined) {
    throw invalidArgument('launch', 'master', 'a rendezvous address host:port when nnodes > 1', c.master);
  }
  if (c.master !== undefined) parseMaster(c.master);
  return c;
}

function moduleHref(module: string | URL): string {
  if (module instanceof URL) return module.href;
  if (typeof module !== 'string' || module.length === 0)
    throw invalidArgument('launch', 'module', 'a module URL or path', module);
  if (/^(file|data):/.test(module)) return module;
  return pathToFileURL(resolvePath(module)).href;
}

function failureSummary(outcomes: readonly RankOutcome[], nodeRank: number, nnodes: number): SwitchyardError {
  const failed = outcomes.filter((o): o is Extract<RankOutcome, { ok: false }> => !o.ok);
  // Root causes first (errors that are not just "a peer failed"), then in the order they happened.
  failed.sort(
    (a, b) => Number(a.error.consequence ?? false) - Number(b.error.consequence ?? false) || a.at - b.at,
  );
  const where = nnodes > 1 ? ` on node ${nodeRank}` : '';
  const lines = failed.map(
    (o) => `  rank ${o.rank}: ${o.error.code ? `[${o.error.code}] ` : ''}${o.error.message}`,
  );
  return new SwitchyardError(
    'RANK_FAILED',
    `${failed.length} of ${outcomes.length} rank(s)${where} failed:\n${lines.join('\n')}`,
    {
      details: {
        failures: failed.map((o) => ({ rank: o.rank, code: o.error.code, message: o.error.message })),
        failedRanks: failed.map((o) => o.rank),
      },
    },
  );
}

/**
 * Runs a rank function on `ranks` ranks of this machine (worker threads, one TensorFlow.js instance
 * each), or, with `nnodes > 1`, on this node's share of a multi-node job connected by ZeroMQ.
 * Resolves with this node's results; rejects with RANK_FAILED listing every failed rank (root
 * causes first) when any rank fails, after terminating the ranks that are still running.
 *
 * When to use: the entry point of data/expert-parallel training (`switchyard-train --ranks R`), and
 * of anything that should use every core: wasm runs one thread per TensorFlow.js instance.
 *
 * @example
 * ```ts
 * // rank.ts: export default (ctx: RankContext) => ctx.comm.allReduce(new Float32Array([ctx.rank]))[0];
 * const { results } = await launch({ module: new URL('./rank.ts', import.meta.url), ranks: 2 });
 * // results: [1, 1]
 * ```
 */
export async function launch<A = unknown, R = unknown>(options: LaunchOptions<A>): Promise<LaunchResult<R>> {
  const t0 = Date.now();
  const { module, exportName = 'default', args, onEvent, ...rest } = options;
  const config = resolveConfig(rest);
  const href = moduleHref(module);

  if (config.nnodes === 1 && config.ranks === 1 && config.inProcess) {
    return runInProcess<A, R>(href, exportName, args as A, config, t0);
  }

  const runtime = runtimeUrl();
  const needsLoader = FROM_SOURCES || isTypeScript(href);
  const loaderUrl = needsLoader ? typescriptLoaderUrl() : undefined;
  if (needsLoader && loaderUrl === undefined) {
    throw invalidArgument(
      'launch',
      'module',
      'a JavaScript module (TypeScript rank modules need tsx installed)',
      href,
    );
  }
  const execArgv = [...(FROM_SOURCES ? ['--conditions=@switchyard/source'] : []), ...config.execArgv];

  let rankOffset = 0;
  let worldSize = config.ranks;
  let peers: PeerInfo[] = Array.from({ length: config.ranks }, (_, i) => ({
    rank: i,
    nodeRank: 0,
    localRank: i,
    host: '127.0.0.1',
  }));
  let fabric: import('./internal/fabric').ZmqFabric | undefined;
  if (config.nnodes > 1) {
    const { connectFabric } = await import('./internal/fabric');
    const master = parseMaster(config.master!);
    fabric = await connectFabric({
      nnodes: config.nnodes,
      nodeRank: config.nodeRank,
      localCount: config.ranks,
      masterHost: master.host,
      masterPort: master.port,
      host: config.host,
      rendezvousTimeoutMs: config.rendezvousTimeoutMs,
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      heartbeatTimeoutMs: config.heartbeatTimeoutMs,
    });
    worldSize = fabric.worldSize;
    rankOffset = fabric.nodes.find((e) => e.nodeRank === config.nodeRank)!.rankOffset;
    peers = fabric.nodes.flatMap((e) =>
      Array.from({ length: e.count }, (_, i) => ({
        rank: e.rankOffset + i,
        nodeRank: e.nodeRank,
        localRank: i,
        host: e.host,
      })),
    );
  }

  const outcomes = await runNode({
    moduleUrl: href,
    exportName,
    args,
    timeoutMs: config.timeoutMs,
    backend: config.backend,
    rankOffset,
    localCount: config.ranks,
    worldSize,
    nodeRank: config.nodeRank,
    nnodes: config.nnodes,
    peers,
    transport: config.nnodes > 1 ? 'zmq' : 'worker',
    shutdownGraceMs: config.shutdownGraceMs,
    runtimeUrl: runtime,
    loaderUrl,
    execArgv,
    fabric,
    onEvent,
  });
  if (outcomes.some((o) => !o.ok)) throw failureSummary(outcomes, config.nodeRank, config.nnodes);
  return {
    results: outcomes.map((o) => (o as Extract<RankOutcome, { ok: true }>).result as R),
    ranks: outcomes.map((o) => o.rank),
    worldSize,
    nodeRank: config.nodeRank,
    elapsedMs: Date.now() - t0,
  };
}

async function runInProcess<A, R>(
  href: string,
  exportName: string,
  args: A,
  config: LaunchConfig,
  t0: number,
): Promise<LaunchResult<R>> {
  const backend = await initBackend(config.backend === undefined ? {} : { backend: config.backend });
  const mod = (await import(/* @vite-ignore */ href)) as Record<string, unknown>;
  const fn = mod[exportName];
  if (typeof fn !== 'function') {
    throw invalidArgument(
      'launch',
      'module',
      `a module whose export \`${exportName}\` is a rank function`,
      `${href} (export ${exportName}: ${typeof fn})`,
    );
  }
  const ctx: RankContext<A> = {
    rank: 0,
    worldSize: 1,
    localRank: 0,
    localWorldSize: 1,
    nodeRank: 0,
    nnodes: 1,
    peers: [{ rank: 0, nodeRank: 0, localRank: 0, host: '127.0.0.1' }],
    comm: createLocalCommunicator({ timeoutMs: config.timeoutMs }),
    args,
    backend,
  };
  const result = (await (fn as RankFunction<A, R>)(ctx)) as R;
  return { results: [result], ranks: [0], worldSize: 1, nodeRank: 0, elapsedMs: Date.now() - t0 };
}

/** Command-line flags {@link parseLaunchArgs} understands, with the {@link LaunchConfig} field each sets. */
export const LAUNCH_FLAGS = {
  '--ranks': 'ranks',
  '--nnodes': 'nnodes',
  '--node-rank': 'nodeRank',
  '--master': 'master',
  '--host': 'host',
  '--collective-timeout': 'timeoutMs',
  '--rendezvous-timeout': 'rendezvousTimeoutMs',
  '--heartbeat-timeout': 'heartbeatTimeoutMs',
} as const satisfies Record<string, keyof LaunchConfig>;

/**
 * Takes the launcher flags (`--ranks R`, `--nnodes N`, `--node-rank K`, `--master host:port`,
 * `--host H`, `--collective-timeout MS`, `--rendezvous-timeout MS`, `--heartbeat-timeout MS`; both
 * `--flag v` and `--flag=v`) out of an argument list; returns them as config and the other arguments.
 *
 * When to use: in a CLI that offers torchrun-style launching, before parsing its own flags.
 *
 * @example
 * ```ts
 * const { config, rest } = parseLaunchArgs(['--ranks', '2', '--preset', 'small']);
 * // config: { ranks: 2 }, rest: ['--preset', 'small']
 * ```
 */
export function parseLaunchArgs(argv: readonly string[]): { config: Partial<LaunchConfig>; rest: string[] } {
  const config: Record<string, unknown> = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    if (!(flag in LAUNCH_FLAGS)) {
      rest.push(a);
      continue;
    }
    const key = LAUNCH_FLAGS[flag as keyof typeof LAUNCH_FLAGS];
    const value = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (value === undefined) throw invalidArgument('parseLaunchArgs', flag, 'followed by a value', undefined);
    if (key === 'master' || key === 'host') {
      if (key === 'master') parseMaster(value);
      config[key] = value;
      continue;
    }
    const n = value.trim() === '' ? Number.NaN : Number(value);
    const isMs = key === 'timeoutMs' || key === 'rendezvousTimeoutMs' || key === 'heartbeatTimeoutMs';
    const min = key === 'nodeRank' ? 0 : 1;
    const ok = isMs ? Number.isFinite(n) && n > 0 : Number.isInteger(n) && n >= min;
    if (!ok) {
      throw invalidArgument(
        'parseLaunchArgs',
        flag,
        isMs ? 'a number of milliseconds > 0' : `an integer >= ${min}`,
        value,
      );
    }
    config[key] = n;
  }
  return { config: config as Partial<LaunchConfig>, rest };
}
