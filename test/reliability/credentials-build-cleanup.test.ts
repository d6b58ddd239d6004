import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { execa } from 'execa';
import { BUILD_QUEUE, type BuildResult } from '../../queues/build.ts';
import { FIXTURES } from '../harness/fixtures.ts';
import { freePort } from '../harness/processes.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { fleetEnv, runCli, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { startApiProcess, type ApiProcess } from '../api/helpers.ts';
import { startPersistentRedis, type PersistentRedis } from './persistent-redis.ts';
import { dumpRedis } from './redis-dump.ts';

/**
 * Build and cleanup jobs, and the HTTP API, run with distinctive fake credentials. Two mirror registries
 * use basic auth, and the second is configured with a wrong password. Redis has a password, builds a
 * secret key, a secret and a plain build variable, and the API has tokens. Builds, releases, sweeps and a
 * reconcile go through the CLI and the API, and some of them fail. Then every place a credential could
 * end up is searched: worker, API and CLI output, HTTP responses (the dashboard included), every Redis
 * key and value (build job logs included), both /metrics texts, and the built image's config and history.
 */

const TARGET = { username: 'mf-build-user-6Wd', password: 'BuildDstCanary-4e8a1c6f02' };
const LOCKED = { username: 'mf-locked-user-2Hs', password: 'WrongBuildCanary-7b3d9e0a15' };
const REDIS_PASSWORD = 'RedisBuildCanary-93c1e7b4';
const SECRET_KEY = Buffer.from('SecretKeyCanary-0f3a9c2e7d5b81a6').toString('base64');
const SECRET_VALUE = 'BuildSecretCanary-5e1b7f9c3a';
const PLAIN_VALUE = 'PlainValueCanary-8d2a6c4e0f';
const ENQUEUE_TOKEN = 'enqueue-canary-token-1f7c3a9e5b2d';
const ADMIN_TOKEN = 'admin-canary-token-6b0e4d8a2c7f';
const UNKNOWN_TOKEN = 'unknown-canary-token-3c9a5e1f7b0d';

// bcrypt hashes of TARGET.password and "RightBuildCanary-2c5f8a1e67" (the password that the locked
// registry expects), made with libxcrypt's crypt(3) through Perl because htpasswd is not installed here:
// perl -e 'print crypt($ARGV[0], q($2y$05$).SALT)' PASSWORD
const TARGET_HASH = '$2y$05$abcdefghijklmnopqrstuucIRPNAwOGda4Ed6OivnHn10S.BotY0u';
const LOCKED_HASH = '$2y$05$abcdefghijklmnopqrstuumh2OHC/j3Ql7yT2c6CeR6sy5jF1aBF.';

/** Every form in which a credential could leak: as written, as a basic-auth token, URL-encoded and lowercased. */
const NEEDLES = [TARGET, LOCKED]
  .flatMap((credentials) => [credentials.username, credentials.password, Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')])
  .concat([REDIS_PASSWORD, encodeURIComponent(REDIS_PASSWORD), SECRET_KEY, SECRET_VALUE, ENQUEUE_TOKEN, ADMIN_TOKEN, UNKNOWN_TOKEN])
  .concat([ADMIN_TOKEN, UNKNOWN_TOKEN].map((token) => Buffer.from(`admin:${token}`).toString('base64')))
  // Registry locations are lowercased when a request is normalised, so a credential inside one would be too.
  .flatMap((needle) => [needle, needle.toLowerCase()]);

const asEnqueuer = { authorization: `Bearer ${ENQUEUE_TOKEN}` };
const asAdmin = { authorization: `Bearer ${ADMIN_TOKEN}` };

let redis: PersistentRedis;
let mirror: TestRegistry;
let locked: TestRegistry;
let worker: WorkerProcess;
let api: ApiProcess;
let env: NodeJS.ProcessEnv;
let connection: Redis;
let workerMetricsUrl: string;
let directory: string;
let repository: string;
let commitId: string;
const keyPrefix = `creds-build-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  [redis, mirror, locked] = await Promise.all([
    startPersistentRedis({ password: REDIS_PASSWORD, appendOnly: false }),
    startRegistry({ htpasswd: `${TARGET.username}:${TARGET_HASH}\n` }),
    startRegistry({ htpasswd: `${LOCKED.username}:${LOCKED_HASH}\n` }),
  ]);
  await execa('skopeo', [
    'copy',
    '--quiet',
    '--dest-tls-verify=false',
    '--dest-creds',
    `${TARGET.username}:${TARGET.password}`,
    `oci:${join(FIXTURES, 'busybox-1.38.0-uclibc-amd64')}`,
    `docker://${mirror.host}/library/busybox:1.38`,
  ]);

  directory = await mkdtemp(join(tmpdir(), 'mirrorfleet-credentials-build-'));
  repository = join(directory, 'shop');
  commitId = await commitDockerfile(
    repository,
    `FROM ${mirror.host}/library/busybox:1.38\nRUN --mount=type=secret,id=API_TOKEN test -s /run/secrets/API_TOKEN\nARG GREETING=hello\nRUN echo "$GREETING" > /greeting\n`,
  );
  const configPath = join(directory, 'config.json');
  await writeFile(
    configPath,
    JSON.stringify({
      mirrorRegistries: [
        { name: 'local', provider: 'generic', host: mirror.host, retentionSeconds: 0, previousImageRetentionSeconds: 0, maxDeletePercent: 100 },
        { name: 'locked', provider: 'generic', host: locked.host, retentionSeconds: 0, previousImageRetentionSeconds: 0, maxDeletePercent: 100 },
      ],
    }),
  );

  const [metricsPort, apiPort] = [await freePort(), await freePort()];
  workerMetricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  env = fleetEnv({
    redisUrl: redis.url,
    keyPrefix,
    mirrorRegistries: [],
    insecureRegistries: [mirror.host, locked.host],
    extra: {
      MIRRORFLEET_CONFIG: configPath,
      MIRRORFLEET_LOG_LEVEL: 'trace',
      MIRRORFLEET_METRICS_HOST: '127.0.0.1',
      MIRRORFLEET_SECRET_KEY: SECRET_KEY,
      MIRRORFLEET_BUILDER: 'buildah',
      MIRRORFLEET_SWEEP_INTERVAL_SECONDS: '3600',
      MIRRORFLEET_API_TOKENS: `${ENQUEUE_TOKEN}:enqueue,${ADMIN_TOKEN}:admin`,
      MIRRORFLEET_REGISTRY_CREDENTIALS: JSON.stringify({ [mirror.host]: TARGET, [locked.host]: LOCKED }),
    },
  });
  // The registries come from the file: an empty MIRRORFLEET_MIRROR_REGISTRIES would replace them.
  delete env.MIRRORFLEET_MIRROR_REGISTRIES;
  [worker, api] = await Promise.all([
    startWorker(env, ['--queues', 'build,cleanup', '--concurrency', '2', '--metrics-port', String(metricsPort)]),
    startApiProcess(env, apiPort),
  ]);
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
}, 120_000);

afterAll(async () => {
  connection?.disconnect();
  await Promise.all([worker?.kill(), api?.stop()]);
  await Promise.all([redis?.stop(), mirror?.stop(), locked?.stop()]);
  if (directory) await rm(directory, { recursive: true, force: true });
});

async function commitDockerfile(path: string, content: string): Promise<string> {
  await mkdir(path, { recursive: true });
  const git = (args: string[]) => execa('git', ['-C', path, ...args]);
  await git(['init', '--quiet']);
  await git(['config', 'user.email', 'test@example.invalid']);
  await git(['config', 'user.name', 'test']);
  await writeFile(join(path, 'Dockerfile'), content);
  await git(['add', '-A']);
  await git(['commit', '--quiet', '-m', 'dockerfile']);
  return (await git(['rev-parse', 'HEAD'])).stdout;
}

/** An HTTP response of the API, with its headers and body kept as text for the search. */
interface Exchange {
  status: number;
  text: string;
}

async function call(method: string, path: string, headers: Record<string, string>, body?: unknown): Promise<Exchange> {
  const response = await fetch(`${api.url}${path}`, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, text: `${JSON.stringify([...response.headers])}\n${await response.text()}` };
}

/** Long-polls a job through the API until it finishes, and returns every response. */
async function waitOverApi(queue: string, jobId: string, headers: Record<string, string>): Promise<Exchange[]> {
  const answers: Exchange[] = [];
  for (let poll = 0; poll < 8; poll += 1) {
    const answer = await call('GET', `/v1/queues/${queue}/jobs/${jobId}/wait?timeoutSeconds=20`, headers);
    answers.push(answer);
    if (answer.status !== 202) return answers;
  }
  throw new Error(`${queue} job ${jobId} did not finish within 160 s`);
}

function jobIdOf(answer: Exchange): string {
  expect(answer.status, answer.text).toBe(202);
  return (JSON.parse(answer.text.slice(answer.text.indexOf('\n') + 1)) as { jobId: string }).jobId;
}

function buildBody(overrides: Record<string, unknown> = {}) {
  return {
    v: 1,
    git: { url: repository, commit: commitId },
    variables: [
      { name: 'GREETING', value: PLAIN_VALUE },
      { name: 'API_TOKEN', value: SECRET_VALUE, secret: true },
    ],
    registry: 'local',
    cluster: 'creds',
    service: 'api-svc',
    ...overrides,
  };
}

/** Reads the config of an image (which contains its history) with skopeo, authenticated as the mirror registry's user. */
async function imageConfig(reference: string): Promise<string> {
  const result = await execa('skopeo', ['inspect', '--config', '--tls-verify=false', '--creds', `${TARGET.username}:${TARGET.password}`, `docker://${reference}`]);
  return result.stdout;
}

/** Returns the tags of the repository of `reference` in the mirror registry, authenticated. */
async function tagsOf(reference: string): Promise<string[]> {
  const name = reference.slice(mirror.host.length + 1).split(':')[0];
  const authorization = `Basic ${Buffer.from(`${TARGET.username}:${TARGET.password}`).toString('base64')}`;
  const response = await fetch(`${mirror.url}/v2/${name}/tags/list`, { headers: { authorization } });
  if (response.status === 404) return [];
  return ((await response.json()) as { tags: string[] | null }).tags ?? [];
}

function leaks(text: string): string[] {
  return [...new Set(NEEDLES.filter((needle) => text.includes(needle)))];
}

test('build and cleanup credentials appear nowhere', { timeout: 300_000 }, async () => {
  const exchanges: Exchange[] = [];
  const record = (exchange: Exchange) => {
    exchanges.push(exchange);
    return exchange;
  };

  // Builds: through the CLI, through the API, a body the API rejects, and a build to a registry that denies the credentials.
  const cliBuild = await runCli(
    ['build', '--git', repository, '--commit', commitId, '--build-env', 'GREETING', '--secret-env', 'API_TOKEN', '--cluster', 'creds', '--service', 'web', '--registry', 'local', '--json', '--wait'],
    { ...env, GREETING: PLAIN_VALUE, API_TOKEN: SECRET_VALUE },
  );
  expect(cliBuild.code, cliBuild.stderr).toBe(0);
  const built = JSON.parse(cliBuild.stdout) as BuildResult;
  expect(built.action).toBe('built');

  const cliJob = await runCli(['job', built.jobId, '--queue', 'build', '--json'], env);

  const apiBuildId = jobIdOf(record(await call('POST', '/v1/queues/build/jobs', asEnqueuer, buildBody())));
  const apiBuild = (await waitOverApi('build', apiBuildId, asEnqueuer)).map(record);
  const deniedBuildId = jobIdOf(record(await call('POST', '/v1/queues/build/jobs', asEnqueuer, buildBody({ registry: 'locked' }))));
  const deniedBuild = (await waitOverApi('build', deniedBuildId, asEnqueuer)).map(record);
  const rejectedBuild = record(
    await call('POST', '/v1/queues/build/jobs', asEnqueuer, buildBody({ variables: [{ name: 'API_TOKEN', value: SECRET_VALUE, secret: 'yes' }, { name: 'bad name', value: SECRET_VALUE }] })),
  );
  const history = await imageConfig(built.target);
  const buildQueue = new Queue(BUILD_QUEUE, { connection, prefix: keyPrefix });
  const { logs: buildLog } = await buildQueue.getJobLogs(built.jobId);
  await buildQueue.close();

  // Cleanup: releases through the CLI and the API, sweeps through the CLI, a reconcile through the API.
  const cliRelease = await runCli(['release', '--cluster', 'creds', '--service', 'web', '--json', '--wait', '--timeout', '60'], env);
  const apiReleaseId = jobIdOf(record(await call('POST', '/v1/queues/cleanup/jobs', asAdmin, { v: 1, kind: 'release', cluster: 'creds', service: 'api-svc' })));
  const apiRelease = (await waitOverApi('cleanup', apiReleaseId, asAdmin)).map(record);
  const cliSweep = await runCli(['sweep', '--registry', 'local', '--json', '--wait', '--timeout', '60'], env);
  const lockedSweep = await runCli(['sweep', '--registry', 'locked', '--json', '--wait', '--timeout', '60'], env);
  const reconcileId = jobIdOf(
    record(await call('POST', '/v1/queues/cleanup/jobs', asAdmin, { v: 1, kind: 'reconcile', cluster: 'creds', images: [{ reference: built.pinned, service: 'web' }] })),
  );
  const reconcile = (await waitOverApi('cleanup', reconcileId, asAdmin)).map(record);
  const inlineReconcile = record(
    await call('POST', '/v1/queues/cleanup/jobs', asAdmin, { v: 1, kind: 'reconcile', cluster: 'creds', images: [{ reference: `${TARGET.username}:${TARGET.password}@${mirror.host}/x:1` }] }),
  );

  // Credentials written into a source reference, which the API rejects without echoing them.
  const inlineMirror = record(
    await call('POST', '/v1/queues/mirror/jobs', asEnqueuer, { v: 1, source: `${TARGET.username}:${TARGET.password}@${mirror.host}/library/busybox:1.38`, registry: 'local', cluster: 'creds', service: 'web' }),
  );
  // A registry location with credentials in it is refused at the API, so they never reach Redis.
  const inlineRegistry = record(
    await call('POST', '/v1/queues/mirror/jobs', asEnqueuer, { v: 1, source: `${mirror.host}/library/busybox:1.38`, registry: `${TARGET.username}:${TARGET.password}@${mirror.host}`, cluster: 'creds', service: 'web' }),
  );


  // Refused and allowed requests that carry tokens: an unknown token, an enqueue token on an admin route, the dashboard with Basic auth.
  record(await call('POST', '/v1/queues/build/jobs', { authorization: `Bearer ${UNKNOWN_TOKEN}` }, buildBody()));
  record(await call('POST', '/v1/queues/cleanup/jobs', asEnqueuer, { v: 1, kind: 'sweep' }));
  record(await call('GET', '/admin/queues/api/queues?activeQueue=build&status=completed&page=1', { authorization: `Basic ${Buffer.from(`admin:${UNKNOWN_TOKEN}`).toString('base64')}` }));
  const dashboard = record(
    await call('GET', '/admin/queues/api/queues?activeQueue=build&status=completed&page=1', { authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` }),
  );

  const workerMetrics = await (await fetch(workerMetricsUrl)).text();
  const apiMetrics = record(await call('GET', '/metrics', {}));
  const redisDump = await dumpRedis(connection);
  const cliText = [cliBuild, cliJob, cliRelease, cliSweep, lockedSweep].map((run) => `${run.stdout}\n${run.stderr}`).join('\n');
  const responses = exchanges.map((exchange) => exchange.text).join('\n');

  // The runs did what they are meant to, so the search below covers real output.
  expect(apiBuild.at(-1)!.text).toContain('"state":"completed"');
  expect(deniedBuild.at(-1)!.text).toContain('"state":"failed"');
  expect(deniedBuild.at(-1)!.text).toContain('REGISTRY_DENIED');
  expect(rejectedBuild.status, rejectedBuild.text).toBe(400);
  expect(rejectedBuild.text).toContain('variables.0.secret');
  expect(inlineReconcile.status, inlineReconcile.text).toBe(400);
  expect(cliJob.code, cliJob.stderr).toBe(0);
  expect(cliJob.stdout, 'the CLI shows the build job').toContain(built.digest);
  expect(inlineMirror.status, inlineMirror.text).toBe(400);
  expect(inlineRegistry.status, inlineRegistry.text).toBe(400);
  expect(inlineRegistry.text).toContain('without credentials');
  expect(cliRelease.code, cliRelease.stderr).toBe(0);
  expect(apiRelease.at(-1)!.text).toContain('"state":"completed"');
  expect(cliSweep.code, cliSweep.stderr).toBe(0);
  expect(await tagsOf(built.target), 'the sweep after the last release deleted the built image').toEqual([]);
  expect(reconcile.at(-1)!.text).toContain('"finished":true');
  expect(dashboard.status, dashboard.text).toBe(200);
  expect(dashboard.text, 'the dashboard lists the build jobs').toContain(built.jobId);
  expect(buildLog.some((line) => line.startsWith('STEP 1/4: FROM')), 'the build job log').toBe(true);
  expect(history, 'a plain build variable is a build argument, visible in the history').toContain(PLAIN_VALUE);
  expect(workerMetrics).toContain('mirrorfleet_jobs_total{queue="build"');
  expect(apiMetrics.text).toContain('mirrorfleet_api_requests_total');

  expect(leaks(worker.output()), 'worker process log').toEqual([]);
  expect(leaks(api.output()), 'API process log').toEqual([]);
  expect(leaks(cliText), 'CLI output').toEqual([]);
  expect(leaks(responses), 'API responses').toEqual([]);
  expect(leaks(buildLog.join('\n')), 'build job log').toEqual([]);
  expect(leaks(history), 'image config and history').toEqual([]);
  expect(leaks(redisDump), 'Redis keys and values').toEqual([]);
  expect(redisDump.includes(PLAIN_VALUE), 'plain build variables are encrypted in Redis too').toBe(false);
  expect(leaks(workerMetrics), 'worker metrics').toEqual([]);
  expect(leaks(apiMetrics.text), 'API metrics').toEqual([]);
});
