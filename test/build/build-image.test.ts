import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { Redis } from 'ioredis';
import { encryptBuildRequest, normaliseBuildRequest, parseBuildPayload, parseBuildRequest, type BuildRequestInput } from '../../queues/build.ts';
import { buildImage, type BuildContext } from '../../src/build/build-image.ts';
import { BuildahBuilder } from '../../src/build/buildah.ts';
import type { Builder, BuildSpec } from '../../src/build/builder.ts';
import { createGit, type GitOperations } from '../../src/build/git.ts';
import { cacheBuildsKey, cacheRepositoriesBuiltBefore } from '../../src/build/records.ts';
import { shortClusterId } from '../../src/build/repository.ts';
import { parseSecretKey } from '../../src/build/secret-key.ts';
import { loadConfig, type Config } from '../../src/config/config.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { RegistryClients } from '../../src/mirror/clients.ts';
import { ReferenceStore } from '../../src/refcounts/store.ts';
import { NetworkPolicy } from '../../src/net/policy.ts';
import { HttpTransport } from '../../src/registry/http.ts';
import { seedLayout } from '../harness/fixtures.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { inspectDigest } from '../harness/skopeo.ts';

/**
 * Build jobs against real services: Redis, a distribution registry that holds the base image and
 * receives the builds, git repositories made by the test, and buildah. Every build gets a fresh buildah
 * storage, so layers reused across builds come from the cache repository in the registry.
 */

const SECRET_KEY = Buffer.alloc(32, 5).toString('base64');
const SECRET_VALUE = `tok-${randomBytes(12).toString('hex')}`;

let redis: TestRedis;
let registry: TestRegistry;
let connection: Redis;
let transport: HttpTransport;
let config: Config;
let context: BuildContext;
let directory: string;
let repository: string;
const calls = { fetch: 0, checkout: 0, build: 0 };
const specs: BuildSpec[] = [];
const output: string[] = [];
const sweeps: string[] = [];

beforeAll(async () => {
  [redis, registry] = await Promise.all([startRedis(), startRegistry()]);
  await seedLayout(registry.host, 'busybox-1.38.0-uclibc-amd64', 'library/busybox', '1.38');
  config = loadConfig({
    MIRRORFLEET_REDIS_URL: redis.url,
    MIRRORFLEET_KEY_PREFIX: `test-${randomBytes(4).toString('hex')}`,
    MIRRORFLEET_MIRROR_REGISTRIES: `local=${registry.host}`,
    MIRRORFLEET_INSECURE_REGISTRIES: registry.host,
    MIRRORFLEET_ALLOW_NETWORKS: '127.0.0.0/8',
    MIRRORFLEET_SECRET_KEY: SECRET_KEY,
  });
  connection = new Redis(redis.url);
  transport = new HttpTransport({ policy: new NetworkPolicy(config.allowNetworks) });

  // Real git and buildah, counted, so that tests can tell a skip from a build.
  const git = createGit({ timeoutMs: 60_000 });
  const countedGit: GitOperations = {
    fetch: (...args) => ((calls.fetch += 1), git.fetch(...args)),
    readFile: (...args) => git.readFile(...args),
    checkout: (...args) => ((calls.checkout += 1), git.checkout(...args)),
  };
  const buildah = new BuildahBuilder();
  const countedBuilder: Builder = {
    name: 'buildah',
    build: (spec, onLine) => {
      calls.build += 1;
      specs.push(spec);
      return buildah.build(spec, onLine);
    },
  };
  context = {
    config,
    redis: connection,
    clients: new RegistryClients(config, transport),
    git: countedGit,
    builder: countedBuilder,
    sweeps: { scheduleSweep: async (registryName) => void sweeps.push(registryName) },
  };

  directory = await mkdtemp(join(tmpdir(), 'mirrorfleet-build-test-'));
  repository = join(directory, 'app');
  await mkdir(repository);
  await git_(repository, ['init', '--quiet']);
  await git_(repository, ['config', 'user.email', 'test@example.invalid']);
  await git_(repository, ['config', 'user.name', 'test']);
});

afterAll(async () => {
  connection?.disconnect();
  await transport?.close();
  await Promise.all([redis?.stop(), registry?.stop()]);
  if (directory) await rm(directory, { recursive: true, force: true });
});

function git_(cwd: string, args: string[]) {
  return execa('git', ['-C', cwd, ...args]);
}

/** Writes `files` into the git repository at `path`, commits them and returns the commit id. */
async function commit(path: string, files: Record<string, string>): Promise<string> {
  for (const [name, content] of Object.entries(files)) {
    await mkdir(dirname(join(path, name)), { recursive: true });
    await writeFile(join(path, name), content);
  }
  await git_(path, ['add', '-A']);
  await git_(path, ['commit', '--quiet', '--allow-empty', '-m', 'change']);
  return (await git_(path, ['rev-parse', 'HEAD'])).stdout;
}

/** The test Dockerfile: the secret step first, so that buildah 1.28 can take it from the remote cache. */
function dockerfile(extra = ''): string {
  return (
    `FROM ${registry.host}/library/busybox:1.38\n` +
    'RUN --mount=type=secret,id=API_TOKEN test -s /run/secrets/API_TOKEN && wc -c < /run/secrets/API_TOKEN > /token-length\n' +
    'ARG GREETING=hello\n' +
    'RUN echo "$GREETING" > /greeting\n' +
    'COPY app.txt /app.txt\n' +
    extra
  );
}

function request(commitId: string, overrides: Partial<BuildRequestInput> = {}, greeting = 'bonjour', undeclared = 'one'): BuildRequestInput {
  return {
    v: 1,
    git: { url: repository, commit: commitId },
    variables: [
      { name: 'GREETING', value: greeting },
      { name: 'UNDECLARED', value: undeclared },
      { name: 'API_TOKEN', value: SECRET_VALUE, secret: true },
    ],
    registry: 'local',
    cluster: 'prod',
    service: 'web',
    ...overrides,
  };
}

async function build(input: BuildRequestInput, jobId = 'test-job') {
  const payload = parseBuildPayload(encryptBuildRequest(normaliseBuildRequest(parseBuildRequest(input)), parseSecretKey(SECRET_KEY)));
  return buildImage(payload, context, { jobId, onLine: (line) => output.push(line) });
}

async function imageConfig(reference: string): Promise<{ text: string; history: { created_by?: string }[] }> {
  const { stdout } = await execa('skopeo', ['inspect', '--config', '--tls-verify=false', `docker://${reference}`]);
  return { text: stdout, history: (JSON.parse(stdout) as { history: { created_by?: string }[] }).history };
}

describe('build job', () => {
  let first: string;
  let firstTag: string;

  test('builds a local commit', async () => {
    first = await commit(repository, { Dockerfile: dockerfile(), 'app.txt': 'version 1\n' });

    const result = await build(request(first));

    expect(result.action).toBe('built');
    expect(result.tag).toMatch(/^[0-9a-f]{64}$/);
    expect(result.target).toBe(`${registry.host}/z${shortClusterId('prod')}-app:${result.tag}`);
    expect(result.pinned).toBe(`${registry.host}/z${shortClusterId('prod')}-app@${result.digest}`);
    expect(await inspectDigest(result.target), 'skopeo reads the pushed image').toBe(result.digest);
    expect(calls).toMatchObject({ checkout: 1, build: 1 });
    expect(output.some((line) => line.startsWith('STEP 1/5: FROM'))).toBe(true);
    firstTag = result.tag;
  });

  test('records use and cache build', async () => {
    const store = new ReferenceStore(connection, { prefix: config.redis.keyPrefix });
    const digest = await inspectDigest(`${registry.host}/z${shortClusterId('prod')}-app:${firstTag}`);
    const users = await store.usersOf(registry.host, { repository: `z${shortClusterId('prod')}-app`, tag: firstTag, digest });
    const caches = await connection.zrange(cacheBuildsKey({ prefix: config.redis.keyPrefix }), 0, -1);

    expect(users).toEqual(['prod/web']);
    expect(caches).toEqual([`${registry.host}/z${shortClusterId('prod')}-app-cache`]);
    expect(await cacheRepositoriesBuiltBefore(connection, { prefix: config.redis.keyPrefix }, Date.now() + 1)).toEqual(caches);
    expect(await cacheRepositoriesBuiltBefore(connection, { prefix: config.redis.keyPrefix }, Date.now() - 3_600_000)).toEqual([]);
  });

  test('removes scratch folder and secrets', async () => {
    const scratch = dirname(specs[0]!.workDir);

    expect(specs[0]!.secrets).toHaveLength(1);
    expect(existsSync(specs[0]!.secrets[0]!.file)).toBe(false);
    expect(existsSync(scratch)).toBe(false);
  });

  test('secret stays out of history', async () => {
    const { text, history } = await imageConfig(`${registry.host}/z${shortClusterId('prod')}-app:${firstTag}`);
    const manifest = (await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/z${shortClusterId('prod')}-app:${firstTag}`])).stdout;

    expect(text).not.toContain(SECRET_VALUE);
    expect(manifest).not.toContain(SECRET_VALUE);
    expect(output.join('\n')).not.toContain(SECRET_VALUE);
    expect(history.some((entry) => entry.created_by?.includes('GREETING=bonjour')), 'plain build arguments do show in the history').toBe(true);
    expect(history.some((entry) => entry.created_by?.includes('API_TOKEN=')), 'the secret is no build argument').toBe(false);
  });

  test('repeat request skips without checkout or build', async () => {
    const before = { ...calls };

    const result = await build(request(first, { service: 'api' }));

    expect(result.action).toBe('skipped');
    expect(result.tag).toBe(firstTag);
    expect(calls.checkout).toBe(before.checkout);
    expect(calls.build).toBe(before.build);
    expect(result.cacheHit).toBeUndefined();
  });

  test('undeclared variable changes nothing', async () => {
    const result = await build(request(first, {}, 'bonjour', 'two'));

    expect(result.action).toBe('skipped');
    expect(result.tag).toBe(firstTag);
  });

  test('changed ARG value builds a new tag', async () => {
    const result = await build(request(first, {}, 'hola'));

    expect(result.action).toBe('built');
    expect(result.tag).not.toBe(firstTag);
    const { history } = await imageConfig(result.target);
    expect(history.some((entry) => entry.created_by?.includes('GREETING=hola'))).toBe(true);
  });

  test('changed Dockerfile builds a new tag', async () => {
    const changed = await commit(repository, { Dockerfile: dockerfile('LABEL stage=two\n') });

    const result = await build(request(changed));

    expect(result.action).toBe('built');
    expect(result.tag).not.toBe(firstTag);
  });

  test('new build releases previous image', async () => {
    const store = new ReferenceStore(connection, { prefix: config.redis.keyPrefix });
    const repositoryName = `z${shortClusterId('prod')}-app`;
    const digest = await inspectDigest(`${registry.host}/${repositoryName}:${firstTag}`);

    // web moved on to later builds; api, which skipped onto the first image, still uses it.
    expect(await store.usersOf(registry.host, { repository: repositoryName, tag: firstTag, digest })).toEqual(['prod/api']);
    expect(sweeps, 'the image only web used got no use left, so a sweep is due').toContain('local');
  });

  test('one-line source change reuses cached layers', async () => {
    const changed = await commit(repository, { 'app.txt': 'version 2\n' });
    output.length = 0;

    const result = await build(request(changed));

    expect(result.action).toBe('built');
    expect(result.cacheHit).toBe(true);
    expect(output.some((line) => line.startsWith('--> Cache pulled from remote'))).toBe(true);
    expect(output.some((line) => line.startsWith('--> Using cache'))).toBe(true);
  });

  test('identical requests at once build once', async () => {
    const changed = await commit(repository, { 'app.txt': 'version 3\n' });
    const before = calls.build;

    const results = await Promise.all([build(request(changed, { service: 'one' }), 'job-1'), build(request(changed, { service: 'two' }), 'job-2')]);

    expect(results.map((result) => result.action).sort()).toEqual(['built', 'skipped']);
    expect(results[0]!.digest).toBe(results[1]!.digest);
    expect(calls.build - before).toBe(1);
  });

  test('forced request builds again', async () => {
    const before = calls.build;

    const result = await build(request(first, { force: true }));

    expect(result.action).toBe('built');
    expect(result.tag).toBe(firstTag);
    expect(calls.build - before).toBe(1);
  });

  test('metacharacters reach git and buildah verbatim', async () => {
    const canary = `canary-${randomBytes(4).toString('hex')}`;
    const injection = `$(touch ${canary}); \`touch ${canary}\` && touch ${canary} | "q" 'q' > ${canary}.out`;
    const odd = join(directory, `odd app;$(touch ${canary})`);
    await mkdir(odd);
    await git_(odd, ['init', '--quiet']);
    await git_(odd, ['config', 'user.email', 'test@example.invalid']);
    await git_(odd, ['config', 'user.name', 'test']);
    const root = `src dir;$(touch ${canary})`;
    const dockerfilePath = `docker files/Build;|&.Dockerfile`;
    const commitId = await commit(odd, {
      [`${root}/${dockerfilePath}`]: `FROM ${registry.host}/library/busybox:1.38\nARG GREETING\nRUN echo "$GREETING" > /greeting\n`,
    });

    const result = await build({ ...request(commitId, {}, injection), git: { url: odd, commit: commitId, root, dockerfile: dockerfilePath } });

    expect(result.action).toBe('built');
    expect(result.target).toMatch(new RegExp(`/z${shortClusterId('prod')}-odd-app-touch-canary-[0-9a-f]{8}-[0-9a-f]{6}:`));
    const { history } = await imageConfig(result.target);
    expect(history.some((entry) => entry.created_by?.includes(`GREETING=${injection}`)), 'the value arrives whole').toBe(true);
    for (const place of [process.cwd(), directory, odd, tmpdir()]) {
      expect(existsSync(join(place, canary)), `no ${canary} in ${place}`).toBe(false);
    }
  });

  test('several platforms push one index', async () => {
    const scratch = join(directory, 'scratch');
    await mkdir(scratch);
    await git_(scratch, ['init', '--quiet']);
    await git_(scratch, ['config', 'user.email', 'test@example.invalid']);
    await git_(scratch, ['config', 'user.name', 'test']);
    const commitId = await commit(scratch, { Dockerfile: 'FROM scratch\nCOPY app.txt /app.txt\n', 'app.txt': 'same on every platform\n' });

    const result = await build({ ...request(commitId, { platforms: ['linux/arm64', 'linux/amd64'] }), git: { url: scratch, commit: commitId } });

    const index = JSON.parse((await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${result.target}`])).stdout) as {
      manifests: { platform: { os: string; architecture: string } }[];
    };
    expect(result.action).toBe('built');
    expect(index.manifests.map((entry) => `${entry.platform.os}/${entry.platform.architecture}`).sort()).toEqual(['linux/amd64', 'linux/arm64']);
    expect(await inspectDigest(result.target)).toBe(result.digest);
  });

  test('wrong Dockerfile fails as invalid input', async () => {
    const broken = await commit(repository, { Dockerfile: `FROM ${registry.host}/library/busybox:1.38\nFROBNICATE now\n` });

    const attempt = build(request(broken));

    await expect(attempt).rejects.toThrow(InvalidInputError);
    await expect(attempt).rejects.toThrow(/Unknown instruction: "FROBNICATE"/);
  });

  test('missing Dockerfile fails naming the path', async () => {
    const commitId = await commit(repository, {});

    await expect(build({ ...request(commitId), git: { url: repository, commit: commitId, dockerfile: 'nope/Dockerfile' } })).rejects.toThrow(
      `the Dockerfile nope/Dockerfile does not exist in commit ${commitId}`,
    );
  });

  test('undeclared mirror registry is rejected', async () => {
    await expect(build(request(first, { registry: 'elsewhere' }))).rejects.toThrow(/not a declared mirror registry/);
  });
});
