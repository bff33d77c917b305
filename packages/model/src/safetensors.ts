/**
 * The safetensors file format: an 8-byte little-endian header length N, N bytes of JSON mapping each
 * tensor name to `{ dtype, shape, data_offsets: [begin, end] }` (offsets into the byte buffer that
 * follows; an optional `__metadata__` maps strings to strings), then the little-endian tensor bytes.
 */
import { SwitchyardError } from '@switchyard/tensor';

/** Element types this reader understands (16-bit floats are widened to float32 on read). */
export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64' | 'U8';

const BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8, U8: 1 };

/** One tensor to write: float32 or int32 data, row-major. */
export interface SafetensorsEntry {
  readonly shape: readonly number[];
  readonly data: Float32Array | Int32Array;
}

/** One tensor read from a file. F16/BF16 arrive as Float32Array, I64 as Float64Array (exact below 2^53). */
export interface SafetensorsTensor {
  /** The dtype stored in the file. */
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  readonly data: Float32Array | Int32Array | Float64Array | Uint8Array;
}

/** A parsed safetensors file. */
export interface SafetensorsFile {
  /** Tensors in file order (order of their data offsets). */
  readonly tensors: ReadonlyMap<string, SafetensorsTensor>;
  /** The `__metadata__` strings, or an empty object. */
  readonly metadata: Readonly<Record<string, string>>;
}

function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * Serialises tensors to the safetensors format (F32 for Float32Array, I32 for Int32Array), in the
 * order given; the header is padded with spaces to a multiple of 8 bytes.
 *
 * When to use: to write weights or optimizer state that Python's `safetensors` can read.
 *
 * @example
 * ```ts
 * const bytes = encodeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } });
 * ```
 */
export function encodeSafetensors(
  tensors: Readonly<Record<string, SafetensorsEntry>> | ReadonlyMap<string, SafetensorsEntry>,
  metadata: Readonly<Record<string, string>> = {},
): Uint8Array {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of entries) {
    if (name === '__metadata__') {
      throw new SwitchyardError(
        'INVALID_ARGUMENT',
        'encodeSafetensors(): `__metadata__` is reserved and cannot name a tensor',
      );
    }
    if (numel(t.shape) !== t.data.length) {
      throw new SwitchyardError(
        'SHAPE_MISMATCH',
        `encodeSafetensors(): tensor \`${name}\` has shape [${t.shape.join(', ')}] (${numel(t.shape)} values) but ${t.data.length} values`,
      );
    }
    const dtype = t.data instanceof Int32Array ? 'I32' : 'F32';
    header[name] = { dtype, shape: [...t.shape], data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  const jsonBytesLen = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - ((8 + jsonBytesLen) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = new Uint8Array(8 + headerBytes.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const [, t] of entries) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    at += t.data.byteLength;
  }
  return out;
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/**
 * Parses a safetensors file, validating the header (length, JSON, dtypes, shapes, offsets that
 * cover the data buffer exactly once). Errors are CHECKPOINT_INVALID and name `label` and the tensor.
 *
 * When to use: to read model.safetensors or any safetensors file written by Python tools.
 *
 * @example
 * ```ts
 * const { tensors } = decodeSafetensors(readFileSync('model.safetensors'), 'model.safetensors');
 * ```
 */
export function decodeSafetensors(bytes: Uint8Array, label = 'safetensors file'): SafetensorsFile {
  const fail = (msg: string): never => {
    throw new SwitchyardError('CHECKPOINT_INVALID', `${label}: ${msg}`);
  };
  if (bytes.length < 8) fail(`file is ${bytes.length} bytes, too short for the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n64 = view.getBigUint64(0, true);
  if (n64 > BigInt(bytes.length - 8)) {
    fail(
      `header length ${n64} exceeds the ${bytes.length - 8} bytes after it (file truncated or not safetensors)`,
    );
  }
  const n = Number(n64);
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 8, n).toString('utf8'));
  } catch (e) {
    return fail(`header is not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header))
    fail('header is not a JSON object');
  const dataStart = 8 + n;
  const dataLen = bytes.length - dataStart;
  let metadata: Record<string, string> = {};
  const spans: { name: string; begin: number; end: number; dtype: SafetensorsDtype; shape: number[] }[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Object.values(raw).some((v) => typeof v !== 'string')) {
        fail('`__metadata__` must map strings to strings');
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (e === null || typeof e !== 'object')
      fail(`tensor \`${name}\` has no { dtype, shape, data_offsets } entry`);
    if (typeof e.dtype !== 'string' || !(e.dtype in BYTES)) {
      fail(
        `tensor \`${name}\` has dtype ${JSON.stringify(e.dtype)}; supported: ${Object.keys(BYTES).join(', ')}`,
      );
    }
    const dtype = e.dtype as SafetensorsDtype;
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      fail(
        `tensor \`${name}\` has shape ${JSON.stringify(e.shape)}; expected an array of non-negative integers`,
      );
    }
    const off = e.data_offsets;
    if (
      !Array.isArray(off) ||
      off.length !== 2 ||
      !off.every((d) => Number.isInteger(d) && d >= 0) ||
      off[0] > off[1]
    ) {
      fail(
        `tensor \`${name}\` has data_offsets ${JSON.stringify(off)}; expected [begin, end] with 0 <= begin <= end`,
      );
    }
    const [begin, end] = off as [number, number];
    const shape = e.shape as number[];
    if (end > dataLen) {
      fail(
        `tensor \`${name}\` ends at byte ${end} of the data buffer, which has ${dataLen} bytes (file truncated)`,
      );
    }
    if (end - begin !== numel(shape) * BYTES[dtype]) {
      fail(
        `tensor \`${name}\` spans ${end - begin} bytes; shape [${shape.join(', ')}] of ${dtype} needs ${numel(shape) * BYTES[dtype]}`,
      );
    }
    spans.push({ name, begin, end, dtype, shape });
  }
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const s of spans) {
    if (s.begin !== cursor) {
      fail(
        `tensor \`${s.name}\` starts at byte ${s.begin}, expected ${cursor} (tensors must cover the data buffer without gaps or overlaps)`,
      );
    }
    cursor = s.end;
  }
  if (cursor !== dataLen) fail(`tensors cover ${cursor} of ${dataLen} data bytes (trailing bytes)`);

  const tensors = new Map<string, SafetensorsTensor>();
  for (const s of spans) {
    const count = numel(s.shape);
    // An aligned copy (Buffer#slice would return a view into a shared pool).
    const copy = new Uint8Array(s.end - s.begin);
    copy.set(bytes.subarray(dataStart + s.begin, dataStart + s.end));
    const dv = new DataView(copy.buffer);
    let data: SafetensorsTensor['data'];
    switch (s.dtype) {
      case 'F32':
        data = new Float32Array(copy.buffer, 0, count);
        break;
      case 'I32':
        data = new Int32Array(copy.buffer, 0, count);
        break;
      case 'U8':
        data = copy;
        break;
      case 'I64': {
        const d = new Float64Array(count);
        for (let i = 0; i < count; i++) d[i] = Number(dv.getBigInt64(8 * i, true));
        data = d;
        break;
      }
      case 'F16': {
        const d = new Float32Array(count);
        for (let i = 0; i < count; i++) d[i] = f16ToF32(dv.getUint16(2 * i, true));
        data = d;
        break;
      }
      case 'BF16': {
        const d = new Float32Array(count);
        const u = new Uint32Array(d.buffer);
        for (let i = 0; i < count; i++) u[i] = dv.getUint16(2 * i, true) << 16;
        data = d;
        break;
      }
    }
    tensors.set(s.name, { dtype: s.dtype, shape: s.shape, data });
  }
  return { tensors, metadata };
}
