// Where the operands of a step's kernels are when the kernel reads them: a trace of the kernels the
// engine runs (names, the buffers they read and write, their sizes) and, for every read, its LRU
// stack distance (the distinct bytes touched since that buffer was last touched), compared with
// this machine's cache sizes. A read whose buffer, and everything touched since, fits a cache level
// finds its operand there.
import { readdirSync, readFileSync } from 'node:fs';
import { tf } from '@switchyard/tensor';

/** A cache level a read can be served from, smallest first; `dram` is main memory. */
export type Tier = 'l2' | 'l3' | 'dram';
export const TIERS: readonly Tier[] = ['l2', 'l3', 'dram'];

/** Bytes of the per-core L2 and the last-level L3 of cpu0, as Linux's sysfs lists them. */
export interface CacheSizes {
  readonly l2: number;
  readonly l3: number;
}

/** This machine's L2 and L3 sizes from /sys/devices/system/cpu/cpu0/cache; undefined where unknown. */
export function cacheSizes(): CacheSizes | undefined {
  const dir = '/sys/devices/system/cpu/cpu0/cache';
  const sizes = new Map<number, number>();
  try {
    for (const entry of readdirSync(dir)) {
      if (!entry.startsWith('index')) continue;
      const read = (f: string) => readFileSync(`${dir}/${entry}/${f}`, 'utf8').trim();
      if (read('type') === 'Instruction') continue;
      const m = /^(\d+)([KMG]?)$/.exec(read('size'));
      if (!m) continue;
      const unit = { '': 1, K: 1 << 10, M: 1 << 20, G: 1 << 30 }[m[2] as '' | 'K' | 'M' | 'G'];
      sizes.set(Number(read('level')), Number(m[1]) * unit);
    }
  } catch {
    return undefined;
  }
  const l2 = sizes.get(2);
  const l3 = sizes.get(3);
  return l2 !== undefined && l3 !== undefined ? { l2, l3 } : undefined;
}

/** One kernel the engine ran: its name and the buffers (data ids) it read and wrote, in bytes. */
export interface KernelAccess {
  readonly name: string;
  readonly reads: readonly { readonly id: object; readonly bytes: number }[];
  readonly writes: readonly { readonly id: object; readonly bytes: number }[];
}

const bytesOf = (t: tf.Tensor) => t.size * tf.util.bytesPerElement(t.dtype);

/**
 * Runs `fn` with the engine's `runKernel` wrapped, and returns every kernel it ran (gradients
 * included), in order. Custom-gradient scopes are not kernels and do not appear.
 */
export function traceKernels(fn: () => void): KernelAccess[] {
  const engine = tf.engine() as unknown as {
    runKernel: (name: string, inputs: Record<string, tf.Tensor>, attrs: object) => tf.Tensor | tf.Tensor[];
  };
  const original = engine.runKernel;
  const trace: KernelAccess[] = [];
  engine.runKernel = function (name, inputs, attrs) {
    const out = original.call(this, name, inputs, attrs);
    const outs = Array.isArray(out) ? out : [out];
    trace.push({
      name,
      reads: Object.values(inputs)
        .filter((t): t is tf.Tensor => t != null)
        .map((t) => ({ id: t.dataId, bytes: bytesOf(t) })),
      writes: outs.map((t) => ({ id: t.dataId, bytes: bytesOf(t) })),
    });
    return out;
  };
  try {
    fn();
  } finally {
    engine.runKernel = original;
  }
  return trace;
}

/** A Fenwick tree of byte counts over access positions. */
class Fenwick {
  private readonly tree: Float64Array;
  constructor(n: number) {
    this.tree = new Float64Array(n + 1);
  }
  add(i: number, v: number): void {
    for (let j = i + 1; j < this.tree.length; j += j & -j) this.tree[j]! += v;
  }
  /** Sum over positions [0, i). */
  prefix(i: number): number {
    let s = 0;
    for (let j = i; j > 0; j -= j & -j) s += this.tree[j]!;
    return s;
  }
}

/**
 * For each kernel of `trace` (kept where `keep` says), the share of its read bytes served from each
 * tier: a read whose stack distance plus its own size fits the L2 is `l2`, the L3 `l3`, otherwise
 * (or first touched in the trace) `dram`. Every read and write of every kernel moves the buffers'
 * positions, kept or not (a GEMM's operands evict too).
 */
export function readTiers(
  trace: readonly KernelAccess[],
  caches: CacheSizes,
  keep: (name: string) => boolean,
): { name: string; share: Record<Tier, number> }[] {
  const accesses = trace.reduce((a, k) => a + k.reads.length + k.writes.length, 0);
  const fen = new Fenwick(accesses);
  const last = new Map<object, { pos: number; bytes: number }>();
  let pos = 0;
  const touch = (id: object, bytes: number): number | undefined => {
    const prev = last.get(id);
    let distance: number | undefined;
    if (prev) {
      distance = fen.prefix(pos) - fen.prefix(prev.pos + 1);
      fen.add(prev.pos, -prev.bytes);
    }
    fen.add(pos, bytes);
    last.set(id, { pos, bytes });
    pos++;
    return distance;
  };
  const out: { name: string; share: Record<Tier, number> }[] = [];
  for (const k of trace) {
    const share: Record<Tier, number> = { l2: 0, l3: 0, dram: 0 };
    let total = 0;
    for (const r of k.reads) {
      const d = touch(r.id, r.bytes);
      const tier: Tier =
        d === undefined ? 'dram' : d + r.bytes <= caches.l2 ? 'l2' : d + r.bytes <= caches.l3 ? 'l3' : 'dram';
      share[tier] += r.bytes;
      total += r.bytes;
    }
    for (const w of k.writes) touch(w.id, w.bytes);
    if (!keep(k.name)) continue;
    for (const t of TIERS) share[t] = total > 0 ? share[t] / total : t === 'dram' ? 1 : 0;
    out.push({ name: k.name, share });
  }
  return out;
}
