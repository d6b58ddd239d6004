import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../src/metrics/metrics.ts';
import { startQueueSampler } from '../../src/metrics/queue-sampler.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { parseSamples, valueOf } from './prometheus-text.ts';

let redis: TestRedis;
let connection: Redis;

beforeAll(async () => {
  redis = await startRedis();
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
});

afterAll(async () => {
  connection?.disconnect();
  await redis?.stop();
});

async function samplesOf(metrics: Metrics) {
  return parseSamples(await metrics.registry.metrics());
}

// A long interval, so that only the first sample and the test's own calls run.
const HOUR_MS = 3_600_000;

describe('startQueueSampler', () => {
  it('reports depth and oldest waiting age', async () => {
    const prefix = `sampler-${randomBytes(4).toString('hex')}`;
    const queue = new Queue('mirror', { connection, prefix });
    const now = Date.now();
    await queue.add('mirror', { n: 1 }, { timestamp: now - 300_000 });
    await queue.add('mirror', { n: 2 }, { timestamp: now - 60_000 });
    await queue.add('mirror', { n: 3 }, { delay: HOUR_MS });
    const metrics = new Metrics({ defaultMetrics: false });
    const sampler = startQueueSampler({ connection, prefix, queues: ['mirror', 'build'], metrics, intervalMs: HOUR_MS });
    try {
      expect(await sampler.sample()).toBe(true);
      const samples = await samplesOf(metrics);

      expect(valueOf(samples, 'mirrorfleet_queue_jobs', { queue: 'mirror', state: 'waiting' })).toBe(2);
      expect(valueOf(samples, 'mirrorfleet_queue_jobs', { queue: 'mirror', state: 'delayed' })).toBe(1);
      expect(valueOf(samples, 'mirrorfleet_queue_oldest_waiting_job_age_seconds', { queue: 'mirror' })).toBeGreaterThanOrEqual(300);
      expect(samples.get('mirrorfleet_queue_oldest_waiting_job_age_seconds{queue="build"}'), 'an empty queue reports 0').toBe(0);
    } finally {
      await sampler.stop();
      await queue.close();
    }
  });

  it('lets one process of the fleet report', async () => {
    const prefix = `sampler-${randomBytes(4).toString('hex')}`;
    const [first, second] = [new Metrics({ defaultMetrics: false }), new Metrics({ defaultMetrics: false })];
    const samplers = [
      startQueueSampler({ connection, prefix, queues: ['mirror'], metrics: first, intervalMs: HOUR_MS }),
      startQueueSampler({ connection, prefix, queues: ['mirror'], metrics: second, intervalMs: HOUR_MS }),
    ];
    try {
      const held = [await samplers[0]!.sample(), await samplers[1]!.sample()];
      expect(held.filter(Boolean)).toHaveLength(1);

      const holder = held[0] ? 0 : 1;
      const other = 1 - holder;
      const reporting = await Promise.all([first, second].map(async (metrics) => (await samplesOf(metrics)).has('mirrorfleet_queue_jobs{queue="mirror",state="waiting"}')));
      expect(reporting[holder]).toBe(true);
      expect(reporting[other], 'the other process leaves the gauge empty').toBe(false);

      await samplers[holder]!.stop();
      expect(await samplers[other]!.sample(), 'the lease is released on stop, so another process takes over').toBe(true);
    } finally {
      await Promise.all(samplers.map((sampler) => sampler.stop()));
    }
    expect(await connection.exists(`${prefix}:metrics-sampler`), 'the last holder released the lease').toBe(0);
  });
});
