import { describe, expect, it } from 'vitest';
import { describeValue, ERROR_CODES, invalidArgument, isSwitchyardError, SwitchyardError } from './errors';
import { tf } from './index';
import { disposeAll, expectNoLeaks, liveTensors, scoped } from './memory';
import { checkDtype, checkFinite, checkInt, checkNumber, checkOneOf, checkShape } from './validate';

describe('SwitchyardError', () => {
  it('has a stable code, a name and keeps its cause', () => {
    const cause = new Error('disk');
    const e = new SwitchyardError('IO_ERROR', 'could not write', { cause });
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('SwitchyardError');
    expect(e.code).toBe('IO_ERROR');
    expect(e.cause).toBe(cause);
    expect(isSwitchyardError(e, 'IO_ERROR')).toBe(true);
    expect(isSwitchyardError(e, 'TIMEOUT')).toBe(false);
    expect(Object.keys(ERROR_CODES)).toContain('INVALID_ARGUMENT');
  });
  it('formats invalid arguments as fn, arg, expectation and value', () => {
    expect(invalidArgument('topKRouter', 'k', 'an integer in [1, 8]', 9).message).toBe(
      '`k` passed to topKRouter() must be an integer in [1, 8], got 9',
    );
    expect(describeValue('x'.repeat(100))).toHaveLength(62);
    expect(describeValue([1, 2, 3, 4, 5, 6, 7, 8, 9])).toBe('[1, 2, 3, 4, 5, 6, 7, 8, ...]');
  });
});

describe('validation helpers', () => {
  it('check numbers and integers with ranges', () => {
    expect(checkInt('f', 'n', 3, { min: 1, max: 4 })).toBe(3);
    expect(() => checkInt('f', 'n', 5, { min: 1, max: 4 })).toThrow(
      '`n` passed to f() must be an integer in [1, 4], got 5',
    );
    expect(() => checkInt('f', 'n', 0, { min: 0, minExclusive: true })).toThrow(
      'must be an integer > 0, got 0',
    );
    expect(() => checkNumber('f', 'x', Number.NaN)).toThrow('must be a finite number, got NaN');
    expect(() => checkNumber('f', 'x', -1, { min: 0 })).toThrow('must be a finite number >= 0, got -1');
    expect(() => checkOneOf('f', 'mode', 'z', ['a', 'b'])).toThrow('must be one of "a", "b", got "z"');
  });
  it('check tensor shapes, dtypes and finiteness', () => {
    const x = tf.tensor2d([[1, Number.POSITIVE_INFINITY]]);
    expect(() => checkShape('f', 'xTD', x, [null, 3], 'TD')).toThrow(
      '`xTD` passed to f() must have shape [T, D=3], got [1, 2]',
    );
    expect(() => checkDtype('f', 'x', x, ['int32'])).toThrow('must have dtype int32, got float32');
    expect(() => checkFinite('f', 'x', x)).toThrow(/must be finite, got Infinity at flat index 1/);
    x.dispose();
  });
});

describe('memory helpers', () => {
  it('expectNoLeaks detects a leak', async () => {
    let leaked: tf.Tensor | undefined;
    await expect(
      expectNoLeaks(() => {
        leaked = tf.ones([2]);
        return tf.zeros([1]);
      }),
    ).rejects.toThrow(/leaked 1 tensor/);
    leaked?.dispose();
  });
  it('scoped keeps tensors in nested results and frees the rest', () => {
    const before = liveTensors();
    const out = scoped(() => {
      const a = tf.ones([2]);
      const b = tf.add(a, 1);
      return { b, nested: [tf.mul(b, 2)], n: 3 };
    });
    expect(liveTensors()).toBe(before + 2);
    expect(Array.from(out.nested[0]!.dataSync())).toEqual([4, 4]);
    disposeAll(out);
    expect(liveTensors()).toBe(before);
  });
});

describe('scoped inside an outer tidy', () => {
  it('hands its results to the enclosing scope, which releases them', () => {
    const before = liveTensors();
    const total = tf.tidy(() => {
      const inner = scoped(() => ({ a: tf.ones([3]), b: [tf.zeros([2])] }));
      return tf.add(inner.a.sum(), inner.b[0]!.sum());
    });
    expect(total.dataSync()[0]).toBe(3);
    total.dispose();
    expect(liveTensors()).toBe(before);
  });
});
