/**
 * A BullMQ worker process whose jobs do nothing: the reference rate of the queue machinery itself on
 * the same Redis, for the already-mirrored throughput scenario.
 *
 *   node bench/noop-worker.ts REDIS_URL PREFIX QUEUE CONCURRENCY
 *
 * Prints `ready` once it takes jobs, and exits on SIGTERM after closing the worker.
 */
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';

const [redisUrl, prefix, queueName, concurrencyText] = process.argv.slice(2);
if (!redisUrl || !prefix || !queueName || !concurrencyText || !/^[1-9][0-9]*$/.test(concurrencyText)) {
  process.stderr.write('usage: node bench/noop-worker.ts REDIS_URL PREFIX QUEUE CONCURRENCY (a positive integer)\n');
  process.exit(2);
}

const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
const worker = new Worker(queueName, async () => undefined, { connection, prefix, concurrency: Number(concurrencyText) });
worker.on('error', (error) => process.stderr.write(`no-op worker error: ${error.message}\n`));
await worker.waitUntilReady();
process.stdout.write('ready\n');

process.once('SIGTERM', () => {
  void worker.close().finally(() => {
    connection.disconnect();
    process.exit(0);
  });
});
