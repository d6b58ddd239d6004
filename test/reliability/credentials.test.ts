import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { execa } from 'execa';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import { MIRROR_QUEUE } from '../../queues/mirror.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { FIXTURES } from '../harness/fixtures.ts';
import { freePort } from '../harness/processes.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { fleetEnv, runCli, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { waitForJobs } from './helpers.ts';
import { startPersistentRedis, type PersistentRedis } from './persistent-redis.ts';
import { dumpRedis } from './redis-dump.ts';

/**
 * Mirror jobs run against registries that require basic auth and a Redis that requires a password, all
 * with distinctive fake credentials. Successes and failures (a missing image, a wrong password at the
 * source, a wrong password at the target) go through a worker process and through the CLI. Then every
 * place a credential could end up is searched: worker log lines, CLI output, job errors, every Redis key
 * and value, and the Prometheus metrics text.
 */

const SOURCE = { username: 'mf-src-user-7Qv', password: 'SrcCanary-9d4e1f7a2b' };
const TARGET = { username: 'mf-dst-user-3Kx', password: 'DstCanary-5c8b0e6f13' };
const DENIED = { username: 'mf-deny-user-8Jp', password: 'WrongCanary-2f6d8a4c91' };
const REDIS_PASSWORD = 'RedisCanary-71a9c3e0';

// bcrypt hashes of SOURCE.password, TARGET.password and "RightCanary-0a7c2e9d55" (the password that the
// denied registry expects), made once with libxcrypt's crypt(3) through Perl, because the htpasswd tool
// (apache2-utils) is not installed here: perl -e 'print crypt($ARGV[0], q($2y$05$).SALT)' PASSWORD
const SOURCE_HASH = '$2y$05$qP3ZgU9jtOSFoUPCh8m6Q.z7/Uq2rJKYWqQXtKQFpZKXMBt6NKYj2';
const TARGET_HASH = '$2y$05$1Rls57SL2K.LnMKYEbuTtOqOZsu2tigZXGEbdLR/PD3s0y6g9IB4i';
const DENIED_HASH = '$2y$05$rvnrzY22tGrBGDt75N2QiOhLar9El9h5PpQDCKy/VpvaoajkqI4Hm';

/** Every form in which a credential could leak: as written, and as a basic-auth token. */
const NEEDLES = [SOURCE, TARGET, DENIED].flatMap((credentials) => [
  credentials.username,
  credentials.password,
  Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64'),
]).concat([REDIS_PASSWORD, encodeURIComponent(REDIS_PASSWORD)]);

let redis: PersistentRedis;
let source: TestRegistry;
let target: TestRegistry;
let denied: TestRegistry;
let worker: WorkerProcess;
let env: NodeJS.ProcessEnv;
let connection: Redis;
let metricsUrl: string;
const keyPrefix = `creds-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  [redis, source, target, denied] = await Promise.all([
    startPersistentRedis({ password: REDIS_PASSWORD, appendOnly: false }),
    startRegistry({ htpasswd: `${SOURCE.username}:${SOURCE_HASH}\n` }),
    startRegistry({ htpasswd: `${TARGET.username}:${TARGET_HASH}\n` }),
    startRegistry({ htpasswd: `${DENIED.username}:${DENIED_HASH}\n` }),
  ]);
  await seed(`oci:${join(FIXTURES, 'busybox-1.38.0-uclibc-amd64')}`, `${source.host}/library/busybox:1.38`);
  await seed(`oci:${join(FIXTURES, 'hello-world-manifest-list')}`, `${source.host}/library/hello-world:latest`);
  const metricsPort = await freePort();
  metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  env = fleetEnv({
    redisUrl: redis.url,
    keyPrefix,
    mirrorRegistries: [`local=${target.host}`, `locked=${denied.host}`],
    insecureRegistries: [source.host, target.host, denied.host],
    extra: {
      MIRRORFLEET_LOG_LEVEL: 'trace',
      MIRRORFLEET_METRICS_HOST: '127.0.0.1',
      MIRRORFLEET_METRICS_PORT: String(metricsPort),
      MIRRORFLEET_REGISTRY_CREDENTIALS: JSON.stringify({ [source.host]: SOURCE, [target.host]: TARGET, [denied.host]: DENIED }),
    },
  });
  worker = await startWorker(env, ['--concurrency', '2']);
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
});

afterAll(async () => {
  connection?.disconnect();
  await worker?.kill();
  await Promise.all([redis?.stop(), source?.stop(), target?.stop(), denied?.stop()]);
});

/** Pushes an image with skopeo, which authenticates with the source credentials. */
async function seed(from: string, to: string): Promise<void> {
  await execa('skopeo', ['copy', '--all', '--preserve-digests', '--quiet', '--dest-tls-verify=false', '--dest-creds', `${SOURCE.username}:${SOURCE.password}`, from, `docker://${to}`]);
}

/** Returns the requests of a run: two copies, a repeat, a missing image, and a wrong password at each end. */
function jobRequests() {
  const base = { v: 1 as const, registry: 'local', cluster: 'creds' };
  return {
    succeeding: [
      { ...base, source: `${source.host}/library/busybox:1.38`, service: 'web' },
      { ...base, source: `${source.host}/library/hello-world:latest`, service: 'web', platforms: ['linux/arm64'] },
      { ...base, source: `${source.host}/library/busybox:1.38`, service: 'web' },
    ],
    failing: [
      { ...base, source: `${source.host}/library/no-such-image:1`, service: 'web' },
      { ...base, source: `${denied.host}/library/busybox:1.38`, service: 'web' },
      { ...base, source: `${source.host}/library/busybox:1.38`, service: 'web', registry: 'locked' },
    ],
  };
}

/** Runs the requests through `producer` and returns the results and error messages as text. */
async function runJobs(producer: MirrorfleetProducer): Promise<{ outputs: string[]; failures: string[] }> {
  const { succeeding, failing } = jobRequests();
  const outputs: string[] = [];
  for (const request of succeeding) outputs.push(JSON.stringify(await producer.mirrorAndWait(request, { timeoutMs: 60_000 })));
  const failures: string[] = [];
  for (const request of failing) {
    const error = await producer.mirrorAndWait(request, { timeoutMs: 60_000 }).then(
      () => undefined,
      (caught: unknown) => caught as Error,
    );
    expect(error, `${request.source} to ${request.registry} fails`).toBeInstanceOf(Error);
    failures.push(`${(error as { code?: string }).code}: ${error!.message}`);
  }
  return { outputs, failures };
}

function leaks(text: string): string[] {
  return NEEDLES.filter((needle) => text.includes(needle));
}

test('credentials appear nowhere', async () => {
  const producer = new MirrorfleetProducer({ connection, prefix: keyPrefix });
  try {
    const processRun = await runJobs(producer);
    const cliCopy = await runCli(['mirror', `${source.host}/library/busybox:1.38`, '--registry', 'local', '--cluster', 'cli', '--service', 'web', '--json', '--wait'], env);
    const cliFailure = await runCli(['mirror', `${denied.host}/library/busybox:1.38`, '--registry', 'local', '--cluster', 'cli', '--service', 'web', '--json', '--wait'], env);
    const jobId = (JSON.parse(cliCopy.stdout) as { jobId: string }).jobId;
    const cliJob = await runCli(['job', jobId, '--json'], env);
    const metricsText = await (await fetch(metricsUrl)).text();
    const redisDump = await dumpRedis(connection);

    expect(cliCopy.code, cliCopy.stderr).toBe(0);
    expect(cliFailure.code, 'the CLI reports the denied source').toBe(1);
    expect(processRun.failures.join('\n')).toContain('REGISTRY_DENIED');
    expect(metricsText, 'the metrics saw the registries').toContain(source.host);
    expect(worker.output(), 'the worker logged the failures').toContain('mirror job failed');
    expect(redisDump, 'Redis holds the job records').toContain('failedReason');

    expect(leaks(worker.output()), 'worker process log').toEqual([]);
    expect(leaks(processRun.outputs.join('\n')), 'job results').toEqual([]);
    expect(leaks(processRun.failures.join('\n')), 'job errors').toEqual([]);
    expect(leaks([cliCopy, cliFailure, cliJob].map((run) => run.stdout + run.stderr).join('\n')), 'CLI output').toEqual([]);
    expect(leaks(redisDump), 'Redis keys and values').toEqual([]);
    expect(leaks(metricsText), 'metrics').toEqual([]);
  } finally {
    await producer.close();
  }
});

test('inline request credentials never shown', async () => {
  const inlineSource = `${SOURCE.username}:${SOURCE.password}@${source.host}/library/busybox:1.38`;
  const inlineRegistry = `${TARGET.username}:${TARGET.password}@${target.host}`;
  const producer = new MirrorfleetProducer({ connection, prefix: keyPrefix });
  const queue = new Queue(MIRROR_QUEUE, { connection, prefix: keyPrefix });
  const logBefore = worker.output().length;
  try {
    const rejected = await producer.mirror({ v: 1, source: inlineSource, registry: 'local', cluster: 'creds', service: 'inline' }).then(
      () => new Error('the producer enqueued a request with credentials in its source'),
      (error: unknown) => error as Error,
    );
    // A producer in another language can enqueue around the schema check; the worker checks again.
    const sourceJob = await queue.add(MIRROR_QUEUE, { v: 1, source: inlineSource, registry: 'local', cluster: 'creds', service: 'inline' }, { attempts: 1 });
    const registryJob = await queue.add(
      MIRROR_QUEUE,
      { v: 1, source: `${source.host}/library/busybox:1.38`, registry: inlineRegistry, cluster: 'creds', service: 'inline' },
      { attempts: 1 },
    );
    const jobs = await waitForJobs(queue, [sourceJob.id!, registryJob.id!], 60_000);

    expect(rejected).toBeInstanceOf(InvalidInputError);
    expect(leaks(rejected.message), 'producer error').toEqual([]);
    for (const job of jobs) {
      expect(job.state).toBe('failed');
      expect(leaks(job.failedReason), `failedReason of job ${job.id}`).toEqual([]);
    }
    expect(leaks(worker.output().slice(logBefore)), 'worker process log').toEqual([]);
  } finally {
    await producer.close();
    await queue.close();
  }
});
