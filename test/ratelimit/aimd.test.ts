import { describe, expect, test } from 'vitest';
import { AimdController, ConcurrencyWindow, DEFAULT_LATENCY_SIGNAL } from '../../src/ratelimit/aimd.ts';

// Unit tests with a fake clock: `now` is a number the test moves, never the wall clock.

const NO_LATENCY = { latency: false as const };

describe('additive increase', () => {
  test('grows by one per window of healthy responses', () => {
    const aimd = new AimdController({ initial: 4, max: 32, ...NO_LATENCY });
    const limits: number[] = [];

    // 4 responses at window 4, then 5 at window 5, then 6 at window 6.
    for (let index = 0; index < 15; index += 1) {
      aimd.onResponse(200, 10, 0);
      limits.push(aimd.limit);
    }

    expect(limits).toEqual([4, 4, 4, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 7]);
  });

  test('stops at max', () => {
    const aimd = new AimdController({ initial: 2, max: 3, ...NO_LATENCY });

    for (let index = 0; index < 100; index += 1) aimd.onResponse(200, 10, 0);

    expect(aimd.limit).toBe(3);
    expect(aimd.window).toBe(3);
  });

  test('statuses but 429 and 503 are healthy', () => {
    const aimd = new AimdController({ initial: 1, max: 8, ...NO_LATENCY });

    for (const status of [200, 201, 202, 204, 206, 307, 401, 404, 500, 502]) aimd.onResponse(status, 10, 0);

    expect(aimd.limit).toBeGreaterThan(1);
  });

  test('failures without response change nothing', () => {
    const aimd = new AimdController({ initial: 4, ...NO_LATENCY });

    const changes = [0, 1, 2].map((step) => aimd.onResponse(undefined, 10, step * 10_000));

    expect(changes).toEqual(['unchanged', 'unchanged', 'unchanged']);
    expect(aimd.window).toBe(4);
  });
});

describe('multiplicative decrease', () => {
  test.each([429, 503])('%i halves the window', (status) => {
    const aimd = new AimdController({ initial: 8, max: 16, ...NO_LATENCY });

    const change = aimd.onResponse(status, 10, 5_000);

    expect(change).toBe('decreased');
    expect(aimd.limit).toBe(4);
  });

  test('burst of 429s cuts once per cooldown', () => {
    const aimd = new AimdController({ initial: 16, max: 16, cooldownMs: 1_000, ...NO_LATENCY });

    const burst = [0, 100, 500, 999].map((now) => aimd.onResponse(429, 10, now));
    const later = aimd.onResponse(429, 10, 1_000);

    expect(burst).toEqual(['decreased', 'unchanged', 'unchanged', 'unchanged']);
    expect(later).toBe('decreased');
    expect(aimd.limit).toBe(4);
  });

  test('never below min', () => {
    const aimd = new AimdController({ initial: 4, min: 2, cooldownMs: 0, ...NO_LATENCY });

    for (let now = 0; now < 10; now += 1) aimd.onCongestion(now);

    expect(aimd.limit).toBe(2);
  });

  test('grows again after a cut', () => {
    const aimd = new AimdController({ initial: 8, max: 8, ...NO_LATENCY });
    aimd.onResponse(429, 10, 0);

    for (let index = 0; index < 4; index += 1) aimd.onResponse(200, 10, 10);

    expect(aimd.limit).toBe(5);
    expect(aimd.window).toBe(5);
  });

  test('rejects decrease outside 0 to 1', () => {
    expect(() => new AimdController({ decrease: 1 })).toThrow('invalid AIMD decrease 1; expected a factor between 0 and 1');
  });
});

describe('latency signal', () => {
  const signal = { ...DEFAULT_LATENCY_SIGNAL, minSamples: 5, consecutive: 3, factor: 2, minExtraMs: 100 };

  function warmed(): AimdController {
    const aimd = new AimdController({ initial: 8, max: 8, latency: signal });
    for (let index = 0; index < 10; index += 1) aimd.onResponse(200, 100, 0);
    return aimd;
  }

  test('three slow responses in a row cut', () => {
    const aimd = warmed();

    const changes = [1, 2, 3].map((step) => aimd.onResponse(200, 500, step));

    expect(changes).toEqual(['unchanged', 'unchanged', 'decreased']);
    expect(aimd.limit).toBe(4);
  });

  test('one slow response does not cut', () => {
    const aimd = warmed();

    const changes = [500, 100, 500, 100, 500].map((latency, step) => aimd.onResponse(200, latency, step));

    expect(changes).not.toContain('decreased');
    expect(aimd.limit).toBe(8);
  });

  test('small absolute rise is no signal', () => {
    const aimd = new AimdController({ initial: 8, max: 8, latency: signal });
    for (let index = 0; index < 10; index += 1) aimd.onResponse(200, 2, 0);

    const changes = [1, 2, 3, 4].map((step) => aimd.onResponse(200, 20, step));

    expect(changes).not.toContain('decreased');
  });

  test('no cut before the baseline has samples', () => {
    const aimd = new AimdController({ initial: 8, max: 8, latency: signal });
    aimd.onResponse(200, 10, 0);

    const changes = [1, 2, 3].map((step) => aimd.onResponse(200, 1_000, step));

    expect(changes).not.toContain('decreased');
  });

  test('latency off: slow responses still grow', () => {
    const aimd = new AimdController({ initial: 2, max: 8, ...NO_LATENCY });
    for (let index = 0; index < 10; index += 1) aimd.onResponse(200, 100, 0);

    for (let step = 0; step < 5; step += 1) aimd.onResponse(200, 10_000, step);

    expect(aimd.limit).toBeGreaterThan(2);
  });
});

describe('concurrency window', () => {
  const timeout = () => new Error('timed out');

  test('holds requests to the limit', async () => {
    const window = new ConcurrencyWindow(new AimdController({ initial: 2, max: 4, ...NO_LATENCY }));
    const order: string[] = [];

    await window.take(1_000, timeout);
    await window.take(1_000, timeout);
    const third = window.take(1_000, timeout).then(() => order.push('third'));
    await Promise.resolve();
    order.push('before give');
    window.give();
    await third;

    expect(order).toEqual(['before give', 'third']);
    expect(window.active).toBe(2);
  });

  test('growth lets waiters in', async () => {
    const controller = new AimdController({ initial: 1, max: 4, ...NO_LATENCY });
    const window = new ConcurrencyWindow(controller);
    await window.take(1_000, timeout);
    let admitted = false;
    const waiter = window.take(1_000, timeout).then(() => (admitted = true));

    controller.onResponse(200, 10, 0);
    window.admit();
    await waiter;

    expect(admitted).toBe(true);
    expect(window.active).toBe(2);
  });

  test('full window times out', async () => {
    const window = new ConcurrencyWindow(new AimdController({ initial: 1, max: 1, ...NO_LATENCY }));
    await window.take(1_000, timeout);

    await expect(window.take(1, timeout)).rejects.toThrow('timed out');
    window.give();

    expect(window.tryTake()).toBe(true);
  });
});
