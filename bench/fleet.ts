import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { MirrorfleetProducer } from '../queues/producer.ts';
import { MIRROR_QUEUE, type MirrorRequestInput, type MirrorResult } from '../queues/mirror.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../test/harness/workers.ts';

/**
 * A mirrorfleet fleet for one measurement: worker processes (`mirrorfleet worker`, as in production)
 * with a key prefix of their own, and a producer on the same Redis. A fresh prefix starts with no blob
 * location records, so no earlier measurement lets a fleet mount instead of copying.
 */

export interface FleetOptions {
  redisUrl: string;
  sourceHost: string;
  /** The mirror registry, declared to the workers under the name `bench`. */
  mirrorHost: string;
  workers: number;
  /** Jobs at once per worker process. */
  concurrency: number;
  /** Key prefix; a fresh one when absent. Pass an existing one to add workers to another fleet's queue. */
  keyPrefix?: string;
  /** Folder where each worker writes a `node --cpu-prof` profile when it exits; no profiling when absent. */
  cpuProfileDir?: string;
  /** Node.js options of the worker processes (`NODE_OPTIONS`), such as a deployment sets; inherited when absent. */
  nodeOptions?: string;
  /** Path of the `mirrorfleet` command the workers run; the checkout's bin/mirrorfleet.js when absent. */
  cli?: string;
  /**
   * Gives the source and mirror registries the largest request budget the configuration accepts, as an
   * operator lists a registry on the local network. When false, the workers keep their built-in budget
   * for such hosts (100 requests per second, fleet-wide, per host).
   */
  liftRateLimits: boolean;
  /** More environment variables of the workers, such as `MIRRORFLEET_CONFIG` to try another configuration. */
  environment?: Record<string, string>;
}

function workerNodeOptions(options: FleetOptions): { NODE_OPTIONS?: string } {
  const parts = [options.nodeOptions, options.cpuProfileDir ? `--cpu-prof --cpu-prof-dir=${options.cpuProfileDir}` : undefined];
  const joined = parts.filter((part) => part !== undefined && part !== '').join(' ');
  return joined === '' ? {} : { NODE_OPTIONS: joined };
}

// The upper bounds of a host's request budget in the configuration schema.
const LIFTED_BUDGET = { requestsPerSecond: 100_000, burst: 1_000_000, maxConcurrent: 4096 };

export class Fleet {
  readonly keyPrefix: string;
  readonly producer: MirrorfleetProducer;
  readonly queue: Queue;
  readonly workers: WorkerProcess[] = [];
  private readonly options: FleetOptions;
  private readonly env: NodeJS.ProcessEnv;
  private readonly connection: Redis;
  private readonly duplicates: Redis[] = [];

  private constructor(options: FleetOptions) {
    this.options = options;
    this.keyPrefix = options.keyPrefix ?? `bench-${randomBytes(4).toString('hex')}`;
    this.env = fleetEnv({
      redisUrl: options.redisUrl,
      keyPrefix: this.keyPrefix,
      mirrorRegistries: [`bench=${options.mirrorHost}`],
      insecureRegistries: [options.sourceHost, options.mirrorHost],
      extra: {
        ...workerNodeOptions(options),
        ...(options.liftRateLimits
          ? { MIRRORFLEET_RATE_LIMITS: JSON.stringify({ [options.sourceHost]: LIFTED_BUDGET, [options.mirrorHost]: LIFTED_BUDGET }) }
          : {}),
        ...options.environment,
      },
    });
    this.connection = new Redis(options.redisUrl, { maxRetriesPerRequest: null });
    // NOTE: MirrorfleetProducer.close() leaves open the connection it duplicates for its QueueEvents, which
    // then reconnects forever once Redis stops. The fleet records duplicates and disconnects them itself.
    const duplicate = this.connection.duplicate.bind(this.connection);
    this.connection.duplicate = (...args: Parameters<Redis['duplicate']>) => {
      const copy = duplicate(...args);
      this.duplicates.push(copy);
      return copy;
    };
    this.producer = new MirrorfleetProducer({ connection: this.connection, prefix: this.keyPrefix });
    this.queue = new Queue(MIRROR_QUEUE, { connection: this.connection, prefix: this.keyPrefix });
    // Each pending mirrorAndWait listens on the producer's queue, and the benchmark waits for hundreds at once.
    this.producer.bullQueue.setMaxListeners(0);
  }

  /** Starts the worker processes and opens the producer's event stream, so no timed job pays for either. */
  static async start(options: FleetOptions): Promise<Fleet> {
    const fleet = new Fleet(options);
    try {
      for (let i = 0; i < options.workers; i += 1) await fleet.addWorker();
      // A wait on a job that does not exist opens the QueueEvents connection, then fails; that failure is expected.
      await fleet.producer.wait('bench-no-such-job', { timeoutMs: 1_000 }).catch(() => undefined);
    } catch (error) {
      await fleet.close();
      throw error;
    }
    return fleet;
  }

  async addWorker(): Promise<WorkerProcess> {
    const worker = await startWorker(this.env, ['--concurrency', String(this.options.concurrency)], this.options.cli);
    this.workers.push(worker);
    return worker;
  }

  /** Stops one worker with SIGTERM and waits for it to exit (a profiled worker writes its profile then). */
  async stopWorker(worker: WorkerProcess): Promise<void> {
    const index = this.workers.indexOf(worker);
    if (index >= 0) this.workers.splice(index, 1);
    const code = await worker.stop();
    if (code !== 0) throw new Error(`worker ${worker.child.pid} exited with ${code} after SIGTERM:\n${worker.output().slice(-2000)}`);
  }

  /** Builds a service-mode request for `source` in cluster `bench`. */
  request(source: string, service: string, overrides: Partial<MirrorRequestInput> = {}): MirrorRequestInput {
    return { v: 1, source, registry: 'bench', cluster: 'bench', service, ...overrides };
  }

  async mirrorAndWait(request: MirrorRequestInput, timeoutMs = 600_000): Promise<MirrorResult> {
    return this.producer.mirrorAndWait(request, { timeoutMs });
  }

  /**
   * Enqueues `requests` in one round trip and waits until the queue has nothing waiting or active.
   * Throws when a job failed meanwhile.
   */
  async mirrorBulkAndDrain(requests: MirrorRequestInput[], timeoutMs = 600_000): Promise<void> {
    const failedBefore = await this.queue.getFailedCount();
    await this.producer.mirrorBulk(requests);
    await drain(this.queue, timeoutMs);
    const failedAfter = await this.queue.getFailedCount();
    if (failedAfter > failedBefore) {
      const [failed] = await this.queue.getFailed(0, 0);
      throw new Error(`${failedAfter - failedBefore} mirror jobs failed; the latest: ${failed?.failedReason ?? 'no reason recorded'}`);
    }
  }

  /** Results of the `count` most recently completed jobs. */
  async recentResults(count: number): Promise<MirrorResult[]> {
    const jobs = await this.queue.getJobs(['completed'], 0, count - 1);
    return jobs.map((job) => job.returnvalue as MirrorResult);
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.workers.splice(0).map((worker) => worker.stop()));
    await this.producer.close();
    await this.queue.close();
    for (const copy of this.duplicates) copy.disconnect();
    this.connection.disconnect();
  }
}

/** Polls until `queue` has no waiting, prioritized, delayed or active job. */
export async function drain(queue: Queue, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const counts = await queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active');
    if (Object.values(counts).every((count) => count === 0)) return;
    if (Date.now() > deadline) throw new Error(`queue ${queue.name} still had jobs after ${Math.round(timeoutMs / 1000)} s: ${JSON.stringify(counts)}`);
    await sleep(5);
  }
}

/** Reads a process's peak resident set size (VmHWM in /proc/PID/status), in bytes. */
export async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  if (!match) throw new Error(`/proc/${pid}/status has no VmHWM line`);
  return Number(match[1]) * 1024;
}
