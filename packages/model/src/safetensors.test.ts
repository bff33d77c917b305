import { describe, expect, it } from 'vitest';
import { decodeSafetensors, encodeSafetensors } from './safetensors';

function withHeader(header: object, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

describe('safetensors', () => {
  it('round-trips float32 and int32 tensors with metadata, header padded to 8 bytes', () => {
    const bytes = encodeSafetensors(
      {
        a: { shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, -6.5]) },
        b: { shape: [2], data: new Int32Array([7, -8]) },
        empty: { shape: [0, 4], data: new Float32Array(0) },
      },
      { format: 'pt' },
    );
    const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect((8 + headerLen) % 8).toBe(0);
    const { tensors, metadata } = decodeSafetensors(bytes);
    expect(metadata).toEqual({ format: 'pt' });
    expect([...tensors.keys()]).toEqual(['a', 'b', 'empty']);
    expect(tensors.get('a')).toEqual({
      dtype: 'F32',
      shape: [2, 3],
      data: new Float32Array([1, 2, 3, 4, 5, -6.5]),
    });
    expect(tensors.get('b')).toEqual({ dtype: 'I32', shape: [2], data: new Int32Array([7, -8]) });
    expect(tensors.get('empty')!.shape).toEqual([0, 4]);
  });

  it('widens F16 and BF16 to float32 and reads I64', () => {
    const f16 = new Uint8Array(new Uint16Array([0x3c00, 0xc000, 0x3555]).buffer); // 1, -2, ~0.333
    const bf16 = new Uint8Array(new Uint16Array([0x3f80, 0x4049]).buffer); // 1, ~3.14
    const i64 = new Uint8Array(new BigInt64Array([5n, -3n]).buffer);
    const data = new Uint8Array([...f16, ...bf16, ...i64]);
    const file = withHeader(
      {
        h: { dtype: 'F16', shape: [3], data_offsets: [0, 6] },
        b: { dtype: 'BF16', shape: [2], data_offsets: [6, 10] },
        l: { dtype: 'I64', shape: [2], data_offsets: [10, 26] },
      },
      data,
    );
    const { tensors } = decodeSafetensors(file);
    const h = tensors.get('h')!.data as Float32Array;
    expect(h[0]).toBe(1);
    expect(h[1]).toBe(-2);
    expect(h[2]).toBeCloseTo(1 / 3, 3);
    const b = tensors.get('b')!.data as Float32Array;
    expect(b[0]).toBe(1);
    expect(b[1]).toBeCloseTo(3.140625, 6);
    expect(Array.from(tensors.get('l')!.data)).toEqual([5, -3]);
  });

  it('rejects malformed files with messages naming the tensor', () => {
    const good = encodeSafetensors({ w: { shape: [4], data: new Float32Array(4) } });
    expect(() => decodeSafetensors(good.slice(0, 5), 'x.safetensors')).toThrow(
      /x\.safetensors: file is 5 bytes/,
    );
    expect(() => decodeSafetensors(good.slice(0, good.length - 4), 'x')).toThrow(
      /tensor `w` ends at byte 16 of the data buffer, which has 12 bytes \(file truncated\)/,
    );
    expect(() => decodeSafetensors(good.slice(0, 20), 'x')).toThrow(/header length \d+ exceeds/);
    expect(() =>
      decodeSafetensors(
        withHeader({ w: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8)),
      ),
    ).toThrow(/tensor `w` has dtype "F64"/);
    expect(() =>
      decodeSafetensors(
        withHeader({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
      ),
    ).toThrow(/tensor `w` spans 8 bytes; shape \[3\] of F32 needs 12/);
    expect(() =>
      decodeSafetensors(
        withHeader(
          {
            a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
            b: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
          },
          new Uint8Array(4),
        ),
      ),
    ).toThrow(/starts at byte 0, expected 4/);
    expect(() =>
      decodeSafetensors(
        withHeader({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(8)),
      ),
    ).toThrow(/cover 4 of 8 data bytes/);
    const garbled = good.slice();
    garbled[8] = 0x78; // 'x' instead of the opening brace
    expect(() => decodeSafetensors(garbled)).toThrow(/header is not valid JSON/);
    expect(() => encodeSafetensors({ w: { shape: [3], data: new Float32Array(2) } })).toThrow(
      /has shape \[3\] \(3 values\) but 2 values/,
    );
  });
});
