/**
 * ZeroMQ between node agents (processes, possibly on different hosts).
 *
 * Rendezvous: node 0 binds a ROUTER socket at the master address; every other node connects a
 * DEALER, registers (node rank, number of ranks, data endpoint) and receives the table of all nodes.
 * Data: each node binds one PULL socket and connects one PUSH socket to every other node's PULL.
 * Frames: a JSON header, then the payload bytes. Liveness: heartbeats every `heartbeatIntervalMs`; a
 * node silent for `heartbeatTimeoutMs`, or whose connection closes without a goodbye, is lost, and
 * every rank on it is marked failed.
 */
import { networkInterfaces } from 'node:os';
import { SwitchyardError } from '@switchyard/tensor';
import type * as Zmq from 'zeromq';
import type { HostBuffer } from '../types';
import type { Fabric, FabricHandlers } from './agent';
import type { WireMessage, WireOp } from './engine';

/** One node in the rendezvous table. */
export interface NodeEntry {
  readonly nodeRank: number;
  /** Ranks the node runs. */
  readonly count: number;
  /** Global rank of the node's first rank. */
  readonly rankOffset: number;
  /** Address the node advertised. */
  readonly host: string;
  /** ZeroMQ endpoint of its PULL socket. */
  readonly endpoint: string;
}

/** Options of {@link connectFabric}. */
export interface FabricOptions {
  readonly nnodes: number;
  readonly nodeRank: number;
  readonly localCount: number;
  readonly masterHost: string;
  readonly masterPort: number;
  /** Address to advertise; defaults to 127.0.0.1 for a loopback master, else the first external IPv4. */
  readonly host: string | undefined;
  readonly rendezvousTimeoutMs: number;
  readonly heartbeatIntervalMs: number;
  readonly heartbeatTimeoutMs: number;
}

type Header =
  | {
      readonly k: 'd';
      readonly n: number;
      readonly dst: number;
      readonly src: number;
      readonly seq: number;
      readonly op: WireOp;
      readonly g?: string;
      readonly phase: number;
      readonly dt: 0 | 1;
      readonly meta: readonly number[];
    }
  | {
      readonly k: 's';
      readonly n: number;
      readonly rank: number;
      readonly state: number;
      readonly reason?: string;
    }
  | { readonly k: 'hb'; readonly n: number }
  | { readonly k: 'bye'; readonly n: number };

interface Registration {
  readonly nodeRank: number;
  readonly nnodes: number;
  readonly count: number;
  readonly host: string;
  readonly endpoint: string;
}

const LINGER_MS = 2000;
/** After a connection to a node closes, how long a goodbye may still arrive before the node is lost. */
const DISCONNECT_GRACE_MS = 1000;

function isLoopback(host: string): boolean {
  return host === 'localhost' || host.startsWith('127.') || host === '::1';
}

function externalIPv4(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

function hostForEndpoint(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

function portOf(endpoint: string): number {
  const m = /:(\d+)$/.exec(endpoint);
  if (!m) throw new SwitchyardError('IO_ERROR', `cannot read the port of ZeroMQ endpoint ${endpoint}`);
  return Number(m[1]);
}

async function loadZmq(): Promise<typeof Zmq> {
  try {
    return (await import('zeromq')) as typeof Zmq;
  } catch (e) {
    throw new SwitchyardError(
      'IO_ERROR',
      `multi-node launch needs the zeromq package, which failed to load: ${e instanceof Error ? e.message : String(e)}`,
      { cause: e },
    );
  }
}

function nodeList(nodes: readonly number[]): string {
  return nodes.length === 1 ? `node ${nodes[0]}` : `nodes ${nodes.join(', ')}`;
}

/** Runs the rendezvous and opens the data sockets; resolves once every node is known. */
export async function connectFabric(options: FabricOptions): Promise<ZmqFabric> {
  const zmq = await loadZmq();
  const loopback = isLoopback(options.masterHost);
  const advertise = options.host ?? (loopback ? '127.0.0.1' : externalIPv4());
  const bindHost = loopback ? '127.0.0.1' : '0.0.0.0';
  const pull = new zmq.Pull();
  pull.linger = 0;
  try {
    await pull.bind(`tcp://${bindHost}:*`);
  } catch (e) {
    pull.close();
    throw new SwitchyardError('IO_ERROR', `cannot bind a data socket on ${bindHost}: ${String(e)}`, {
      cause: e,
    });
  }
  const endpoint = `tcp://${hostForEndpoint(advertise)}:${portOf(pull.lastEndpoint ?? '')}`;
  const me: Registration = {
    nodeRank: options.nodeRank,
    nnodes: options.nnodes,
    count: options.localCount,
    host: advertise,
    endpoint,
  };
  let table: NodeEntry[];
  try {
    table =
      options.nodeRank === 0
        ? await hostRendezvous(zmq, options, me)
        : await joinRendezvous(zmq, options, me);
  } catch (e) {
    pull.close();
    throw e;
  }
  return new ZmqFabric(zmq, options, table, pull);
}

function buildTable(regs: readonly Registration[]): NodeEntry[] {
  const sorted = [...regs].sort((a, b) => a.nodeRank - b.nodeRank);
  let offset = 0;
  return sorted.map((r) => {
    const entry = {
      nodeRank: r.nodeRank,
      count: r.count,
      rankOffset: offset,
      host: r.host,
      endpoint: r.endpoint,
    };
    offset += r.count;
    return entry;
  });
}

async function hostRendezvous(
  zmq: typeof Zmq,
  options: FabricOptions,
  me: Registration,
): Promise<NodeEntry[]> {
  const master = `${options.masterHost}:${options.masterPort}`;
  const router = new zmq.Router();
  router.linger = LINGER_MS;
  const bindHost = isLoopback(options.masterHost) ? options.masterHost : '0.0.0.0';
  try {
    await router.bind(`tcp://${hostForEndpoint(bindHost)}:${options.masterPort}`);
  } catch (e) {
    router.close();
    throw new SwitchyardError(
      'IO_ERROR',
      `node 0 cannot listen on the master address ${master}: ${e instanceof Error ? e.message : String(e)}`,
      { cause: e },
    );
  }
  const regs = new Map<number, { reg: Registration; id: Buffer }>();
  const deadline = Date.now() + options.rendezvousTimeoutMs;
  let problem: string | undefined;
  try {
    while (regs.size < options.nnodes - 1 && problem === undefined) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      router.receiveTimeout = left;
      let frames: Buffer[];
      try {
        frames = await router.receive();
      } catch {
        break; // receive timeout
      }
      const [id, body] = frames;
      if (id === undefined || body === undefined) continue;
      let reg: Registration;
      try {
        reg = JSON.parse(body.toString()) as Registration;
      } catch {
        continue;
      }
      if (reg.nnodes !== options.nnodes) {
        problem = `node ${reg.nodeRank} was started with --nnodes ${reg.nnodes}, node 0 with --nnodes ${options.nnodes}`;
      } else if (!Number.isInteger(reg.nodeRank) || reg.nodeRank < 1 || reg.nodeRank >= options.nnodes) {
        problem = `a node registered with --node-rank ${reg.nodeRank}, expected an integer in [1, ${options.nnodes - 1}]`;
      } else if (regs.has(reg.nodeRank)) {
        problem = `two nodes registered with --node-rank ${reg.nodeRank}`;
      }
      regs.set(reg.nodeRank, { reg, id });
      if (problem !== undefined) {
        for (const { id: to } of regs.values()) await router.send([to, JSON.stringify({ error: problem })]);
      }
    }
    if (problem !== undefined)
      throw new SwitchyardError('CONFIG_INVALID', `rendezvous at ${master} failed: ${problem}`);
    if (regs.size < options.nnodes - 1) {
      const missing: number[] = [];
      for (let r = 1; r < options.nnodes; r++) if (!regs.has(r)) missing.push(r);
      const error = `rendezvous at ${master} timed out after ${options.rendezvousTimeoutMs} ms: ${nodeList(missing)} did not register`;
      for (const { id } of regs.values()) await router.send([id, JSON.stringify({ error })]);
      throw new SwitchyardError('TIMEOUT', error, { details: { missing } });
    }
    const table = buildTable([me, ...[...regs.values()].map((v) => v.reg)]);
    for (const { id } of regs.values()) await router.send([id, JSON.stringify({ table })]);
    return table;
  } finally {
    router.close();
  }
}

async function joinRendezvous(
  zmq: typeof Zmq,
  options: FabricOptions,
  me: Registration,
): Promise<NodeEntry[]> {
  const master = `${options.masterHost}:${options.masterPort}`;
  const dealer = new zmq.Dealer();
  dealer.linger = 0;
  dealer.receiveTimeout = options.rendezvousTimeoutMs;
  try {
    dealer.connect(`tcp://${hostForEndpoint(options.masterHost)}:${options.masterPort}`);
    await dealer.send(JSON.stringify(me));
    let frames: Buffer[];
    try {
      frames = await dealer.receive();
    } catch {
      throw new SwitchyardError(
        'TIMEOUT',
        `node ${options.nodeRank}: rendezvous with the master ${master} timed out after ${options.rendezvousTimeoutMs} ms (is node 0 running with --master ${master}?)`,
        { details: { missing: [0] } },
      );
    }
    const reply = JSON.parse(frames[frames.length - 1]!.toString()) as {
      table?: NodeEntry[];
      error?: string;
    };
    if (reply.error !== undefined || reply.table === undefined) {
      throw new SwitchyardError(
        'CONFIG_INVALID',
        `node ${options.nodeRank}: ${reply.error ?? 'rendezvous failed'}`,
      );
    }
    return reply.table;
  } finally {
    dealer.close();
  }
}

/** Point-to-point ZeroMQ links from this node to every other node. */
export class ZmqFabric implements Fabric {
  readonly nodes: readonly NodeEntry[];
  readonly worldSize: number;
  private readonly pushes = new Map<number, Zmq.Push>();
  private readonly queues = new Map<number, Promise<void>>();
  private readonly lastSeen = new Map<number, number>();
  private readonly departed = new Set<number>();
  private readonly lost = new Set<number>();
  private handlers: FabricHandlers | undefined;
  private readonly early: (() => void)[] = [];
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  private peersSettled: (() => void) | undefined;

  constructor(
    zmq: typeof Zmq,
    private readonly options: FabricOptions,
    table: readonly NodeEntry[],
    private readonly pull: Zmq.Pull,
  ) {
    this.nodes = table;
    this.worldSize = table.reduce((s, e) => s + e.count, 0);
    const now = Date.now();
    for (const node of table) {
      if (node.nodeRank === options.nodeRank) continue;
      const push = new zmq.Push();
      push.linger = LINGER_MS;
      push.events.on('disconnect', () => {
        setTimeout(() => {
          if (!this.departed.has(node.nodeRank)) this.nodeLost(node.nodeRank, 'its connection closed');
        }, DISCONNECT_GRACE_MS).unref();
      });
      push.connect(node.endpoint);
      this.pushes.set(node.nodeRank, push);
      this.queues.set(node.nodeRank, Promise.resolve());
      this.lastSeen.set(node.nodeRank, now);
    }
    this.timer = setInterval(() => this.tick(), options.heartbeatIntervalMs);
    void this.receiveLoop();
  }

  /** The node a global rank runs on. */
  nodeOf(rank: number): NodeEntry {
    const node = this.nodes.find((e) => rank >= e.rankOffset && rank < e.rankOffset + e.count);
    if (!node) throw new SwitchyardError('STATE_INVALID', `rank ${rank} is on no node`);
    return node;
  }

  listen(handlers: FabricHandlers): void {
    this.handlers = handlers;
    for (const f of this.early.splice(0)) f();
  }

  sendData(dst: number, msg: WireMessage): void {
    const header: Header = {
      k: 'd',
      n: this.options.nodeRank,
      dst,
      src: msg.src,
      seq: msg.seq,
      op: msg.op,
      ...(msg.group === undefined ? {} : { g: msg.group }),
      phase: msg.phase,
      dt: msg.data instanceof Float32Array ? 0 : 1,
      meta: msg.meta,
    };
    const payload = Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength);
    this.post(this.nodeOf(dst).nodeRank, header, payload);
  }

  sendStatus(rank: number, state: number, reason: string | undefined): void {
    const header: Header = {
      k: 's',
      n: this.options.nodeRank,
      rank,
      state,
      ...(reason === undefined ? {} : { reason }),
    };
    for (const node of this.pushes.keys()) this.post(node, header);
  }

  async finish(waitForPeers: boolean): Promise<void> {
    for (const node of this.pushes.keys()) this.post(node, { k: 'bye', n: this.options.nodeRank });
    if (waitForPeers && !this.allPeersSettled()) {
      await new Promise<void>((resolve) => {
        this.peersSettled = resolve;
      });
    }
    await Promise.all(this.queues.values());
    this.close();
  }

  /** Closes every socket and stops the heartbeat. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const push of this.pushes.values()) push.close();
    this.pull.close();
  }

  private post(node: number, header: Header, payload?: Buffer): void {
    if (this.closed || this.lost.has(node)) return;
    const push = this.pushes.get(node);
    if (!push) return;
    const frames = payload === undefined ? [JSON.stringify(header)] : [JSON.stringify(header), payload];
    const prev = this.queues.get(node) ?? Promise.resolve();
    this.queues.set(
      node,
      prev.then(() => (this.closed || this.lost.has(node) ? undefined : push.send(frames))).catch(() => {}),
    );
  }

  private tick(): void {
    const now = Date.now();
    for (const node of this.pushes.keys()) {
      if (this.departed.has(node) || this.lost.has(node)) continue;
      this.post(node, { k: 'hb', n: this.options.nodeRank });
      const silent = now - (this.lastSeen.get(node) ?? now);
      if (silent > this.options.heartbeatTimeoutMs) {
        this.nodeLost(
          node,
          `node ${node} sent nothing for ${silent} ms (heartbeat timeout ${this.options.heartbeatTimeoutMs} ms)`,
        );
      }
    }
  }

  private nodeLost(node: number, reason: string): void {
    if (this.closed || this.departed.has(node) || this.lost.has(node)) return;
    this.lost.add(node);
    const entry = this.nodes.find((e) => e.nodeRank === node)!;
    const ranks = Array.from({ length: entry.count }, (_, i) => entry.rankOffset + i);
    const why = reason.startsWith('node ') ? reason : `node ${node} (${entry.host}) was lost: ${reason}`;
    this.dispatch((h) => h.nodeLost(node, ranks, why));
    this.checkPeersSettled();
  }

  private dispatch(f: (h: FabricHandlers) => void): void {
    const h = this.handlers;
    if (h) f(h);
    else this.early.push(() => f(this.handlers!));
  }

  private allPeersSettled(): boolean {
    for (const node of this.pushes.keys()) if (!this.departed.has(node) && !this.lost.has(node)) return false;
    return true;
  }

  private checkPeersSettled(): void {
    if (this.peersSettled && this.allPeersSettled()) {
      const done = this.peersSettled;
      this.peersSettled = undefined;
      done();
    }
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const frames of this.pull) this.receive(frames);
    } catch {
      // the socket was closed
    }
  }

  private receive(frames: Buffer[]): void {
    const [head, body] = frames;
    let header: Header;
    try {
      header = JSON.parse(head?.toString() ?? '') as Header;
    } catch {
      return; // not one of ours
    }
    this.lastSeen.set(header.n, Date.now());
    if (header.k === 'd') {
      const bytes = new ArrayBuffer(body?.byteLength ?? 0);
      if (body) new Uint8Array(bytes).set(body);
      const data: HostBuffer = header.dt === 0 ? new Float32Array(bytes) : new Int32Array(bytes);
      const msg: WireMessage = {
        src: header.src,
        seq: header.seq,
        op: header.op,
        ...(header.g === undefined ? {} : { group: header.g }),
        phase: header.phase,
        data,
        meta: header.meta,
      };
      this.dispatch((h) => h.data(header.dst, msg));
    } else if (header.k === 's') {
      this.dispatch((h) => h.status(header.rank, header.state, header.reason));
    } else if (header.k === 'bye') {
      this.departed.add(header.n);
      this.checkPeersSettled();
    }
  }
}
