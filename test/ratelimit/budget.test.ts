import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { budgetKeys, SharedBudget, type BudgetDecision, type HostLimits } from '../../src/ratelimit/budget.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';

// The scripts on their own, against a real Redis, with a fake clock passed in ARGV: every check counts
// grants and refusals at chosen times, so no result depends on how fast the machine is.

const REGISTRY = 'registry.test:5000';
const TIMINGS = { leaseTtlMs: 10_000, quotaProbeIntervalMs: 1_000, pauseAfter429Ms: 2_000, maxPauseMs: 60_000 };

let server: TestRedis;
let redis: Redis;
let prefix: string;
let clock: number;

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
});

afterAll(async () => {
  redis?.disconnect();
  await server?.stop();
});

beforeEach(() => {
  prefix = `test-${randomBytes(4).toString('hex')}`;
  clock = 1_000_000;
});

/** A budget as one worker process holds it; two of them on the same prefix act as two processes. */
function budget(limits: Partial<HostLimits> = {}): SharedBudget {
  return new SharedBudget({
    redis,
    keyPrefix: prefix,
    registry: REGISTRY,
    limits: { requestsPerSecond: 10, burst: 10, maxConcurrent: 100, pullQuotaFloor: 0, ...limits },
    timings: TIMINGS,
    clock: () => clock,
  });
}

let leases = 0;
function lease(): string {
  leases += 1;
  return `lease-${leases}`;
}

function refusal(decision: BudgetDecision): { reason: string; waitMs: number } | undefined {
  return decision.granted ? undefined : { reason: decision.reason, waitMs: decision.waitMs };
}

describe('request rate', () => {
  test('burst is granted, then refused with the wait', async () => {
    const first = budget({ requestsPerSecond: 4, burst: 3 });

    const decisions = [];
    for (let index = 0; index < 4; index += 1) decisions.push(await first.acquire('manifest-read', lease(), false));

    expect(decisions.map((decision) => decision.granted)).toEqual([true, true, true, false]);
    // At 4 per second, the next token is 250 ms away.
    expect(refusal(decisions[3]!)).toEqual({ reason: 'rate', waitMs: 250 });
  });

  test('two processes together keep the rate over 10 s', async () => {
    const processes = [budget({ requestsPerSecond: 5, burst: 5 }), budget({ requestsPerSecond: 5, burst: 5 })];
    const grants = [0, 0];

    // Each process asks every 10 ms for 10 s, far more often than the rate allows.
    for (let step = 0; step <= 1000; step += 1) {
      for (const [index, process] of processes.entries()) {
        const id = lease();
        const decision = await process.acquire('blob-read', id, false);
        if (decision.granted) {
          grants[index]! += 1;
          await process.release('blob-read', id);
        }
      }
      clock += 10;
    }

    const total = grants[0]! + grants[1]!;
    // The bucket starts full (5 tokens) and refills 5 per second over 10 s: at most 55 grants.
    expect(total).toBeLessThanOrEqual(55);
    expect(total).toBeGreaterThanOrEqual(50);
    expect(grants[0]).toBeGreaterThan(0);
    expect(grants[1]).toBeGreaterThan(0);
  });

  test('bucket refills to burst, no further', async () => {
    const only = budget({ requestsPerSecond: 10, burst: 4 });
    for (let index = 0; index < 4; index += 1) await only.acquire('upload', lease(), false);

    clock += 60_000;
    const decisions = [];
    for (let index = 0; index < 5; index += 1) decisions.push((await only.acquire('upload', lease(), false)).granted);

    expect(decisions).toEqual([true, true, true, true, false]);
  });
});

describe('requests in flight', () => {
  test('two processes share the concurrency limit', async () => {
    const [first, second] = [budget({ maxConcurrent: 3 }), budget({ maxConcurrent: 3 })];

    const granted = [
      (await first.acquire('blob-read', 'a1', false)).granted,
      (await second.acquire('blob-read', 'b1', false)).granted,
      (await first.acquire('blob-read', 'a2', false)).granted,
    ];
    const fourth = await second.acquire('blob-read', 'b2', false);

    expect(granted).toEqual([true, true, true]);
    expect(refusal(fourth)?.reason).toBe('concurrency');
    expect(await first.inFlight('blob-read')).toBe(3);
  });

  test('release frees a place for the other process', async () => {
    const [first, second] = [budget({ maxConcurrent: 1 }), budget({ maxConcurrent: 1 })];
    await first.acquire('blob-read', 'a1', false);
    const refused = await second.acquire('blob-read', 'b1', false);

    await first.release('blob-read', 'a1');
    const retried = await second.acquire('blob-read', 'b1', false);

    expect(refused.granted).toBe(false);
    expect(retried.granted).toBe(true);
  });

  test('each kind has its own limit', async () => {
    const only = budget({ maxConcurrent: 1 });

    const kinds = [
      (await only.acquire('blob-read', lease(), false)).granted,
      (await only.acquire('upload', lease(), false)).granted,
      (await only.acquire('manifest-read', lease(), false)).granted,
      (await only.acquire('blob-read', lease(), false)).granted,
    ];

    expect(kinds).toEqual([true, true, true, false]);
  });

  test("dead process's lease expires", async () => {
    const [dead, alive] = [budget({ maxConcurrent: 1 }), budget({ maxConcurrent: 1 })];
    await dead.acquire('blob-read', 'dead-1', false);

    clock += TIMINGS.leaseTtlMs - 1;
    const beforeExpiry = await alive.acquire('blob-read', 'alive-1', false);
    clock += 1;
    const atExpiry = await alive.acquire('blob-read', 'alive-1', false);

    expect(refusal(beforeExpiry)).toEqual({ reason: 'concurrency', waitMs: 1 });
    expect(atExpiry.granted).toBe(true);
  });

  test('renewal keeps a lease past its lifetime', async () => {
    const [holder, other] = [budget({ maxConcurrent: 1 }), budget({ maxConcurrent: 1 })];
    await holder.acquire('blob-read', 'held', false);

    clock += TIMINGS.leaseTtlMs - 100;
    const renewed = await holder.renew('blob-read', ['held']);
    clock += 5_000;
    const refused = await other.acquire('blob-read', 'other', false);

    expect(renewed).toBe(1);
    expect(refusal(refused)?.reason).toBe('concurrency');
  });

  test('renewal skips a lease already dropped', async () => {
    const [holder, other] = [budget({ maxConcurrent: 1 }), budget({ maxConcurrent: 1 })];
    await holder.acquire('blob-read', 'late', false);
    clock += TIMINGS.leaseTtlMs;
    await other.acquire('blob-read', 'other', false);

    const renewed = await holder.renew('blob-read', ['late']);

    expect(renewed).toBe(0);
    expect(await redis.zrange(budgetKeys(prefix, REGISTRY).inFlight('blob-read'), 0, -1)).toEqual(['other']);
  });
});

describe('not before', () => {
  test('429 with Retry-After pauses every process', async () => {
    const [first, second] = [budget(), budget()];

    const report = await first.report({ kind: 'manifest-read', status: 429, retryAfterMs: 3_000, quotaRemaining: undefined });
    const during = await second.acquire('blob-read', lease(), false);
    clock += 3_000;
    const after = await second.acquire('blob-read', lease(), false);

    expect(report.notBefore).toBe(1_003_000);
    expect(refusal(during)).toEqual({ reason: 'not-before', waitMs: 3_000 });
    expect(after.granted).toBe(true);
  });

  test('429 without Retry-After pauses for the default', async () => {
    const only = budget();

    const report = await only.report({ kind: 'blob-read', status: 429, retryAfterMs: undefined, quotaRemaining: undefined });

    expect(report.notBefore).toBe(clock + TIMINGS.pauseAfter429Ms);
  });

  test('503 pauses only with Retry-After', async () => {
    const only = budget();

    const without = await only.report({ kind: 'upload', status: 503, retryAfterMs: undefined, quotaRemaining: undefined });
    const withRetryAfter = await only.report({ kind: 'upload', status: 503, retryAfterMs: 1_500, quotaRemaining: undefined });

    expect(without.notBefore).toBe(0);
    expect(withRetryAfter.notBefore).toBe(clock + 1_500);
  });

  test('pause only moves later, up to the cap', async () => {
    const only = budget();

    await only.report({ kind: 'manifest-read', status: 429, retryAfterMs: 10_000, quotaRemaining: undefined });
    const shorter = await only.report({ kind: 'manifest-read', status: 429, retryAfterMs: 1_000, quotaRemaining: undefined });
    const capped = await only.report({ kind: 'manifest-read', status: 429, retryAfterMs: 3_600_000, quotaRemaining: undefined });

    expect(shorter.notBefore).toBe(clock + 10_000);
    expect(capped.notBefore).toBe(clock + TIMINGS.maxPauseMs);
  });

  test('other statuses leave the host alone', async () => {
    const only = budget();

    for (const status of [200, 404, 500, 0]) await only.report({ kind: 'manifest-read', status, retryAfterMs: 5_000, quotaRemaining: undefined });

    expect((await only.acquire('manifest-read', lease(), false)).granted).toBe(true);
  });
});

describe('shared request rate', () => {
  /** Reports one response and returns the shared rate after it. */
  async function rateAfter(holder: SharedBudget, status: number, retryAfterMs?: number): Promise<number> {
    return (await holder.report({ kind: 'blob-read', status, retryAfterMs, quotaRemaining: undefined })).requestsPerSecond;
  }

  test('429 halves the rate of every process', async () => {
    const [first, second] = [budget({ requestsPerSecond: 10, burst: 10 }), budget({ requestsPerSecond: 10, burst: 10 })];

    expect(await rateAfter(first, 429, 1_000)).toBe(5);
    clock += 1_000;
    let grants = 0;
    // The second process requests a place every 10 ms for 10 s after the pause, and no healthy response raises the rate.
    for (let step = 0; step < 1000; step += 1) {
      const id = lease();
      if ((await second.acquire('blob-read', id, false)).granted) {
        grants += 1;
        await second.release('blob-read', id);
      }
      clock += 10;
    }

    // The bucket shrank with the rate to 5 tokens and refills 5 per second: at most 55 grants, not 110.
    expect(grants).toBeLessThanOrEqual(55);
    expect(grants).toBeGreaterThanOrEqual(50);
  });

  test('429s within the cooldown cut once', async () => {
    const [first, second] = [budget(), budget()];

    const burst = [await rateAfter(first, 429, 0), await rateAfter(second, 429, 0), await rateAfter(first, 429, 0)];
    clock += 1_000;
    const later = await rateAfter(second, 429, 0);

    expect(burst).toEqual([5, 5, 5]);
    expect(later).toBe(2.5);
  });

  test('cuts stop at the minimum rate', async () => {
    const only = budget({ requestsPerSecond: 10, minRequestsPerSecond: 3 });

    const rates = [];
    for (let cut = 0; cut < 4; cut += 1) {
      rates.push(await rateAfter(only, 429, 0));
      clock += 1_000;
    }

    expect(rates).toEqual([5, 3, 3, 3]);
  });

  test('healthy responses raise the rate up to the configured one', async () => {
    const only = budget({ requestsPerSecond: 10, rateRecoveryPerSecond: 1 });
    await rateAfter(only, 429, 0);

    clock += 2_000;
    const raised = await rateAfter(only, 200);
    clock += 1_000;
    const afterNotFound = await rateAfter(only, 404);
    clock += 60_000;
    const capped = await rateAfter(only, 200);

    expect(raised).toBe(7);
    expect(afterNotFound).toBe(8);
    expect(capped).toBe(10);
  });

  test('5xx and network errors do not raise the rate', async () => {
    const only = budget({ requestsPerSecond: 10, rateRecoveryPerSecond: 1 });
    await rateAfter(only, 429, 0);

    clock += 2_000;
    const afterServerError = await rateAfter(only, 503);
    const afterNetworkError = await rateAfter(only, 0);

    expect(afterServerError).toBe(5);
    expect(afterNetworkError).toBe(5);
  });

  test('recovery starts when the pause ends', async () => {
    const only = budget({ requestsPerSecond: 10, rateRecoveryPerSecond: 1 });
    await rateAfter(only, 429, 3_000);

    clock += 2_000;
    const duringPause = await rateAfter(only, 200);
    clock += 2_000;
    const afterPause = await rateAfter(only, 200);

    expect(duringPause).toBe(5);
    // One second of healthy time after the 3-second pause.
    expect(afterPause).toBe(6);
  });
});

describe('congestion count', () => {
  test('429 and 503 count per kind', async () => {
    const [first, second] = [budget(), budget()];

    await first.report({ kind: 'blob-read', status: 429, retryAfterMs: 0, quotaRemaining: undefined });
    await first.report({ kind: 'blob-read', status: 503, retryAfterMs: undefined, quotaRemaining: undefined });
    await first.report({ kind: 'blob-read', status: 500, retryAfterMs: undefined, quotaRemaining: undefined });
    const blobs = await second.acquire('blob-read', lease(), false);
    const manifests = await second.acquire('manifest-read', lease(), false);

    expect(blobs.congestion).toBe(2);
    expect(manifests.congestion).toBe(0);
  });
});

describe('pull quota floor', () => {
  test('below the floor, one pull probes and the rest wait', async () => {
    const [first, second] = [budget({ pullQuotaFloor: 10 }), budget({ pullQuotaFloor: 10 })];
    await first.report({ kind: 'manifest-read', status: 200, retryAfterMs: undefined, quotaRemaining: 9 });

    const probing = await first.acquire('manifest-read', lease(), true);
    const waiting = await second.acquire('manifest-read', lease(), true);
    const head = await second.acquire('manifest-read', lease(), false);
    const blob = await second.acquire('blob-read', lease(), false);

    expect(refusal(probing)).toEqual({ reason: 'probe', waitMs: 0 });
    expect(refusal(waiting)).toEqual({ reason: 'quota', waitMs: TIMINGS.quotaProbeIntervalMs });
    expect(head.granted).toBe(true);
    expect(blob.granted).toBe(true);
  });

  test('next probe after the probe interval', async () => {
    const only = budget({ pullQuotaFloor: 10 });
    await only.report({ kind: 'manifest-read', status: 200, retryAfterMs: undefined, quotaRemaining: 3 });
    await only.acquire('manifest-read', lease(), true);

    clock += TIMINGS.quotaProbeIntervalMs - 1;
    const early = await only.acquire('manifest-read', lease(), true);
    clock += 1;
    const due = await only.acquire('manifest-read', lease(), true);

    expect(refusal(early)).toEqual({ reason: 'quota', waitMs: 1 });
    expect(refusal(due)).toEqual({ reason: 'probe', waitMs: 0 });
  });

  test('reading at the floor lets pulls go', async () => {
    const only = budget({ pullQuotaFloor: 10 });
    await only.report({ kind: 'manifest-read', status: 200, retryAfterMs: undefined, quotaRemaining: 2 });
    await only.report({ kind: 'manifest-read', status: 200, retryAfterMs: undefined, quotaRemaining: 10 });

    expect((await only.acquire('manifest-read', lease(), true)).granted).toBe(true);
  });

  test('floor 0 never pauses', async () => {
    const only = budget({ pullQuotaFloor: 0 });
    await only.report({ kind: 'manifest-read', status: 200, retryAfterMs: undefined, quotaRemaining: 0 });

    expect((await only.acquire('manifest-read', lease(), true)).granted).toBe(true);
  });
});

describe('server clock', () => {
  test('without a clock the scripts read Redis time', async () => {
    const real = new SharedBudget({
      redis,
      keyPrefix: prefix,
      registry: REGISTRY,
      limits: { requestsPerSecond: 1, burst: 1, maxConcurrent: 1, pullQuotaFloor: 0 },
    });

    const decision = await real.acquire('manifest-read', lease(), false);
    const [seconds, microseconds] = await redis.time();
    const serverNow = Number(seconds) * 1000 + Math.floor(Number(microseconds) / 1000);

    expect(decision.granted).toBe(true);
    // Milliseconds of the server clock, read before the TIME above: not seconds, not a fake value.
    expect(decision.now).toBeLessThanOrEqual(serverNow);
    expect(decision.now).toBeGreaterThan(serverNow - 60_000);
  });
});
