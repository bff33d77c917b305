import { expectNoLeaks, isSwitchyardError, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { createRouter, defaultRouterConfig, type RouterConfig, resolveRouterConfig } from './index';

const bad = (config: unknown) => () => createRouter(config as RouterConfig);

describe('config validation names the argument, the expected range and the value', () => {
  it('k out of range', () => {
    expect(bad({ type: 'topk', numExperts: 8, dModel: 4, k: 9 })).toThrow(
      /^`k` passed to createRouter\(\) must be an integer in \[1, 8\], got 9$/,
    );
    expect(bad({ type: 'topk', numExperts: 8, dModel: 4, k: 0 })).toThrow(
      /`k` passed to createRouter\(\) must be an integer in \[1, 8\], got 0/,
    );
    expect(bad({ type: 'sigmoid', numExperts: 8, dModel: 4, k: 1.5 })).toThrow(
      /`k` .* an integer in \[1, 8\], got 1\.5/,
    );
    expect(bad({ type: 'switch', numExperts: 8, dModel: 4, k: 2 })).toThrow(
      /`k` passed to createRouter\(\) must be 1 for a Switch router, got 2/,
    );
    expect(bad({ type: 'gshard', numExperts: 8, dModel: 4, k: 1 })).toThrow(
      /`k` .* must be 2 for a GShard router, got 1/,
    );
    expect(bad({ type: 'gshard', numExperts: 1, dModel: 4 })).toThrow(
      /`numExperts` .* >= 2 for a GShard router, got 1/,
    );
  });

  it('capacity factors below 0', () => {
    expect(bad({ type: 'topk', numExperts: 8, dModel: 4, capacityFactor: -1 })).toThrow(
      /`capacityFactor` passed to createRouter\(\) must be a finite number >= 0, got -1/,
    );
    expect(bad({ type: 'topk', numExperts: 8, dModel: 4, evalCapacityFactor: -0.5 })).toThrow(
      /`evalCapacityFactor` passed to createRouter\(\) must be a finite number >= 0, got -0\.5/,
    );
    expect(bad({ type: 'topk', numExperts: 8, dModel: 4, capacityFactor: Number.NaN })).toThrow(
      /`capacityFactor` .* got NaN/,
    );
  });

  it('group-limited: groupTopK > numGroups, E not divisible by numGroups, K too large for the kept groups', () => {
    expect(
      bad({ type: 'topk', numExperts: 8, dModel: 4, groupLimited: { numGroups: 4, groupTopK: 5 } }),
    ).toThrow(/`groupLimited\.groupTopK` passed to createRouter\(\) must be an integer in \[1, 4\], got 5/);
    expect(
      bad({ type: 'sigmoid', numExperts: 8, dModel: 4, groupLimited: { numGroups: 3, groupTopK: 1 } }),
    ).toThrow(
      /`groupLimited\.numGroups` passed to createRouter\(\) must be a divisor of numExperts \(8\), got 3/,
    );
    expect(
      bad({ type: 'topk', numExperts: 8, dModel: 4, k: 3, groupLimited: { numGroups: 4, groupTopK: 1 } }),
    ).toThrow(/`k` passed to createRouter\(\) must be <= groupTopK \* numExperts \/ numGroups \(2\).*got 3/);
    expect(
      bad({ type: 'topk', numExperts: 8, dModel: 4, groupLimited: { numGroups: 0, groupTopK: 1 } }),
    ).toThrow(/`groupLimited\.numGroups` .* must be an integer in \[1, 8\], got 0/);
  });

  it('hierarchical: numGroups must divide E, groupK within [1, G]', () => {
    expect(bad({ type: 'hierarchical', numExperts: 10, numGroups: 4, dModel: 4 })).toThrow(
      /`numGroups` passed to createRouter\(\) must be a divisor of numExperts \(10\), got 4/,
    );
    expect(bad({ type: 'hierarchical', numExperts: 8, numGroups: 4, groupK: 5, dModel: 4 })).toThrow(
      /`groupK` .* an integer in \[1, 4\], got 5/,
    );
    expect(bad({ type: 'hierarchical', numExperts: 8, numGroups: 4, k: 3, dModel: 4 })).toThrow(
      /`k` .* <= groupK \* numExperts \/ numGroups \(2\), got 3/,
    );
  });

  it('other fields', () => {
    expect(bad({ type: 'moe', numExperts: 8, dModel: 4 })).toThrow(
      /`type` passed to createRouter\(\) must be one of "topk", .*, got "moe"/,
    );
    expect(bad({ type: 'topk', numExperts: 0, dModel: 4 })).toThrow(/`numExperts` .* an integer >= 1, got 0/);
    expect(bad({ type: 'topk', numExperts: 4, dModel: -2 })).toThrow(/`dModel` .* an integer >= 1, got -2/);
    expect(bad({ type: 'topk', numExperts: 4, dModel: 2, dropPolicy: 'random' })).toThrow(
      /`dropPolicy` .* one of "position", "probs", got "random"/,
    );
    expect(bad({ type: 'topk', numExperts: 4, dModel: 2, jitterEps: 1.5 })).toThrow(
      /`jitterEps` .* in \[0, 0\.999\], got 1\.5/,
    );
    expect(bad({ type: 'topk', numExperts: 4, dModel: 2, randomRoutingWarmup: 2 })).toThrow(
      /`randomRoutingWarmup` .* in \[0, 1\], got 2/,
    );
    expect(bad({ type: 'topk', numExperts: 4, dModel: 2, routeScale: 0 })).toThrow(
      /`routeScale` .* > 0, got 0/,
    );
    expect(bad({ type: 'topk', numExperts: 4, dModel: 2, init: 'xavier' })).toThrow(
      /`init` .* one of "normal", "switch", "zeros"/,
    );
    expect(bad({ type: 'balanced', numExperts: 4, dModel: 2, assignment: 'random' })).toThrow(
      /`assignment` .* "round-robin", "hash"/,
    );
    expect(bad({ type: 'gshard', numExperts: 4, dModel: 2, evalSecondExpertThreshold: 0.7 })).toThrow(
      /`evalSecondExpertThreshold` .* in \[0, 0\.5\], got 0\.7/,
    );
    expect(bad(null)).toThrow(/`config` passed to createRouter\(\) must be a RouterConfig object, got null/);
  });

  it('errors are SwitchyardErrors with code INVALID_ARGUMENT and structured details', () => {
    try {
      createRouter({ type: 'topk', numExperts: 8, dModel: 4, k: 9 });
      expect.unreachable();
    } catch (e) {
      expect(isSwitchyardError(e, 'INVALID_ARGUMENT')).toBe(true);
      expect((e as { details: Record<string, unknown> }).details).toMatchObject({ arg: 'k', received: '9' });
    }
  });
});

describe('defaults', () => {
  it('fills per-type defaults', () => {
    const topk = resolveRouterConfig({ type: 'topk', numExperts: 8, dModel: 4 });
    expect(topk).toMatchObject({
      k: defaultRouterConfig.k,
      capacityFactor: null,
      evalCapacityFactor: null,
      dropPolicy: 'position',
      init: 'normal',
      normTopK: true,
      routeScale: 1,
      jitterEps: 0,
    });
    expect(resolveRouterConfig({ type: 'topk', numExperts: 8, dModel: 4, k: 1 }).normTopK).toBe(false);
    expect(resolveRouterConfig({ type: 'switch', numExperts: 8, dModel: 4 })).toMatchObject({
      k: 1,
      init: 'switch',
      normTopK: false,
    });
    expect(resolveRouterConfig({ type: 'gshard', numExperts: 8, dModel: 4 })).toMatchObject({
      k: 2,
      normTopK: true,
    });
    expect(resolveRouterConfig({ type: 'expert-choice', numExperts: 8, dModel: 4 })).toMatchObject({
      k: 8,
      capacityFactor: 2,
      evalCapacityFactor: 2,
    });
    expect(
      resolveRouterConfig({
        type: 'topk',
        numExperts: 8,
        dModel: 4,
        capacityFactor: 1.25,
        evalCapacityFactor: 2,
      }),
    ).toMatchObject({
      capacityFactor: 1.25,
      evalCapacityFactor: 2,
    });
    expect(
      resolveRouterConfig({ type: 'topk', numExperts: 8, dModel: 4, capacityFactor: 1.25 })
        .evalCapacityFactor,
    ).toBe(1.25);
  });

  it('a rejected config allocates nothing', async () => {
    await expectNoLeaks(() => {
      expect(bad({ type: 'topk', numExperts: 8, dModel: 4, k: 9 })).toThrow();
    });
    const before = tf.memory().numTensors;
    const r = createRouter({ type: 'topk', numExperts: 8, dModel: 4 });
    expect(tf.memory().numTensors).toBe(before + 1);
    r.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
