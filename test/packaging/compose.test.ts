/**
 * docker-compose.yml, checked without Docker: every service's image, command, port, variable and
 * dependency must refer to something that exists. Redis and the distribution registry run here for real
 * with the settings the file gives them.
 */

import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { DEFAULTS } from '../../src/config/schema.ts';
import { parseReference } from '../../src/image-ref/reference.ts';
import { WORKER_QUEUES } from '../../workers/run.ts';
import { freePort, spawn, stopProcess, waitFor } from '../harness/processes.ts';
import {
  cliUsage,
  environmentVariablesInSource,
  interpolate,
  optionValue,
  PROJECT_ROOT,
  readDockerfile,
  readYaml,
  unknownCliParts,
} from './helpers.ts';

interface ComposeService {
  image?: string;
  build?: { context: string; target?: string; args?: Record<string, string> };
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  restart?: string;
  deploy?: { replicas?: number };
  stop_grace_period?: string;
  profiles?: string[];
  volumes?: string[];
}

interface ComposeFile {
  services: Record<string, ComposeService>;
  networks?: Record<string, { ipam?: { config?: { subnet: string }[] } }>;
  volumes?: Record<string, unknown>;
}

// Only the required variable gets a value, so every other variable takes the file's default.
const COMPOSE_ENV = { MIRRORFLEET_API_TOKENS: 'compose-test-token-0123456789:enqueue' };
const MIRRORFLEET_SERVICES = ['api', 'worker', 'build-worker'];
// Distribution listens on 5000 and Redis on 6379 unless configured otherwise.
const REGISTRY_PORT = 5000;
const REDIS_PORT = 6379;

let compose: ComposeFile;
let usage: Map<string, string>;

beforeAll(() => {
  compose = interpolate(readYaml(join(PROJECT_ROOT, 'docker-compose.yml')) as ComposeFile, COMPOSE_ENV);
  usage = cliUsage();
});

function service(name: string): ComposeService {
  const found = compose.services[name];
  if (found === undefined) throw new Error(`docker-compose.yml has no service ${name}`);
  return found;
}

/** Parses Compose durations such as `45s`, `1m30s` into seconds. */
function durationSeconds(text: string): number {
  const match = /^(?:(\d+)m)?(?:(\d+)s)?$/.exec(text);
  if (match === null || text === '') throw new Error(`unsupported duration ${JSON.stringify(text)}`);
  return Number(match[1] ?? 0) * 60 + Number(match[2] ?? 0);
}

/** Returns the URL that a `node -e "fetch('http://127.0.0.1:PORT/...')"` health check requests. */
function healthCheckUrl(check: ComposeService['healthcheck']): URL {
  const script = check?.test.join(' ') ?? '';
  const match = /fetch\('([^']+)'\)/.exec(script);
  if (match === null) throw new Error(`health check ${script} fetches no URL`);
  return new URL(match[1]!);
}

describe('compose services', () => {
  it('include the whole stack', () => {
    expect(Object.keys(compose.services)).toEqual(expect.arrayContaining(['redis', 'registry', 'api', 'worker']));
  });

  it('build mirrorfleet from a Dockerfile target', () => {
    const dockerfile = readDockerfile(join(PROJECT_ROOT, 'Dockerfile'));
    const stages = dockerfile.stages.map((stage) => stage.name);
    for (const name of MIRRORFLEET_SERVICES) {
      const build = service(name).build;
      expect(build, name).toBeDefined();
      expect(existsSync(join(PROJECT_ROOT, build!.context, 'Dockerfile')), `${name} build context`).toBe(true);
      expect(stages, `${name} build target`).toContain(build!.target);
      for (const argument of Object.keys(build!.args ?? {})) expect(dockerfile.globalArgs.has(argument), `${name} build argument ${argument}`).toBe(true);
    }
  });

  it('pin external images to a tag', () => {
    for (const [name, entry] of Object.entries(compose.services)) {
      if (entry.build !== undefined) continue;
      // parseReference gives a reference without a tag the tag `latest`.
      const reference = parseReference(entry.image ?? '');
      expect(reference.tag, `${name} image tag`).not.toBe('latest');
    }
  });

  it('run known commands and options', () => {
    for (const name of MIRRORFLEET_SERVICES) {
      const command = service(name).command ?? [];
      expect(unknownCliParts(command, usage), name).toEqual([]);
      const queues = optionValue(command, 'queues')?.split(',') ?? [];
      for (const queue of queues) expect(WORKER_QUEUES, `${name} queue`).toContain(queue);
    }
  });

  it('set only variables the code reads', () => {
    const known = environmentVariablesInSource();
    for (const name of MIRRORFLEET_SERVICES) {
      for (const variable of Object.keys(service(name).environment ?? {})) {
        expect(known.has(variable), `${name} variable ${variable}`).toBe(true);
      }
    }
  });

  it('give mirrorfleet a valid configuration', () => {
    for (const name of MIRRORFLEET_SERVICES) {
      const config = loadConfig(service(name).environment ?? {});
      expect(config.redis.url, name).toBe(`redis://redis:${REDIS_PORT}`);
      expect(config.mirrorRegistries.map((registry) => registry.host), name).toEqual([`registry:${REGISTRY_PORT}`]);
      expect(config.registries.find((entry) => entry.host === `registry:${REGISTRY_PORT}`)?.insecure, name).toBe(true);
    }
  });

  it('allow exactly the compose network', () => {
    const subnets = compose.networks?.default?.ipam?.config?.map((entry) => entry.subnet) ?? [];
    expect(subnets).toHaveLength(1);
    for (const name of MIRRORFLEET_SERVICES) {
      expect(loadConfig(service(name).environment ?? {}).allowNetworks, name).toEqual(subnets);
    }
  });

  it('require an API token', () => {
    expect(() => interpolate(readYaml(join(PROJECT_ROOT, 'docker-compose.yml')), {})).toThrow(/MIRRORFLEET_API_TOKENS/);
  });

  it('publish the listening ports', () => {
    const api = service('api');
    const apiPort = Number(optionValue(api.command ?? [], 'port') ?? DEFAULTS.apiPort);
    expect(api.ports).toEqual([`127.0.0.1:${apiPort}:${apiPort}`]);
    expect(healthCheckUrl(api.healthcheck).port).toBe(String(apiPort));
    expect(service('registry').ports).toEqual([`127.0.0.1:${REGISTRY_PORT}:${REGISTRY_PORT}`]);

    for (const name of ['worker', 'build-worker']) {
      const entry = service(name);
      const metricsPort = optionValue(entry.command ?? [], 'metrics-port') ?? entry.environment?.MIRRORFLEET_METRICS_PORT ?? String(DEFAULTS.metricsPort);
      expect(healthCheckUrl(entry.healthcheck).port, name).toBe(metricsPort);
      // Replicas cannot share a host port, so workers publish none.
      expect(entry.ports, name).toBeUndefined();
    }
  });

  it('depend on services with health checks', () => {
    for (const [name, entry] of Object.entries(compose.services)) {
      for (const [dependency, { condition }] of Object.entries(entry.depends_on ?? {})) {
        expect(compose.services[dependency], `${name} depends on ${dependency}`).toBeDefined();
        if (condition === 'service_healthy') expect(compose.services[dependency]!.healthcheck, `${dependency} health check`).toBeDefined();
      }
    }
    for (const name of MIRRORFLEET_SERVICES) expect(Object.keys(service(name).depends_on ?? {}), name).toContain('redis');
    for (const name of ['worker', 'build-worker']) expect(Object.keys(service(name).depends_on ?? {}), name).toContain('registry');
  });

  it('restart and health-check every service', () => {
    for (const [name, entry] of Object.entries(compose.services)) {
      expect(entry.restart, name).toBe('unless-stopped');
      expect(entry.healthcheck?.test.length, `${name} health check`).toBeGreaterThan(0);
    }
  });

  it('declare the named volumes they mount', () => {
    for (const [name, entry] of Object.entries(compose.services)) {
      for (const mount of entry.volumes ?? []) {
        const source = mount.split(':')[0]!;
        if (!source.startsWith('.') && !source.startsWith('/')) expect(compose.volumes, `${name} volume ${source}`).toHaveProperty(source);
      }
    }
  });

  it('give workers replicas and stop grace', () => {
    const worker = service('worker');
    expect(worker.deploy?.replicas).toBeGreaterThanOrEqual(2);
    for (const name of ['worker', 'build-worker']) {
      const grace = loadConfig(service(name).environment ?? {}).worker.shutdownGraceSeconds;
      expect(grace, name).toBe(DEFAULTS.shutdownGraceSeconds);
      expect(durationSeconds(service(name).stop_grace_period ?? '10s'), name).toBeGreaterThanOrEqual(grace + 10);
    }
  });

  it('start build worker only by profile', () => {
    const buildWorker = service('build-worker');
    expect(buildWorker.profiles).toEqual(['build']);
    expect(buildWorker.build?.target).toBe('build-worker');
    expect(optionValue(buildWorker.command ?? [], 'queues')).toBe('build');
  });
});

describe('compose Redis', () => {
  let directory: string;
  let child: ReturnType<typeof spawn> | undefined;
  let client: Redis | undefined;

  beforeAll(async () => {
    directory = mkdtempSync(join(tmpdir(), 'mirrorfleet-compose-redis-'));
    const [program, ...args] = service('redis').command ?? [];
    const port = await freePort();
    child = spawn(program!, [...args, '--port', String(port), '--bind', '127.0.0.1', '--dir', directory], { stdio: 'ignore' });
    client = new Redis(`redis://127.0.0.1:${port}`, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => undefined);
    await waitFor(`redis-server on port ${port}`, async () => {
      if (client!.status !== 'ready') await client!.connect();
      return (await client!.ping()) === 'PONG';
    });
  });

  afterAll(async () => {
    client?.disconnect();
    if (child) await stopProcess(child);
    rmSync(directory, { recursive: true, force: true });
  });

  it('persists with an append-only file', async () => {
    expect(await client!.config('GET', 'appendonly')).toEqual(['appendonly', 'yes']);
  });

  it('never evicts keys', async () => {
    expect(await client!.config('GET', 'maxmemory-policy')).toEqual(['maxmemory-policy', 'noeviction']);
  });
});

describe('compose registry', () => {
  it('accepts manifest deletion', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'mirrorfleet-compose-registry-'));
    const port = await freePort();
    // A configuration without `delete`, so that only the service's environment can turn deletion on.
    writeFileSync(
      join(directory, 'config.yml'),
      `version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${join(directory, 'data')}\nhttp:\n  addr: 127.0.0.1:${port}\n`,
    );
    const log = openSync(join(directory, 'registry.log'), 'a');
    const child = spawn('docker-registry', ['serve', join(directory, 'config.yml')], {
      stdio: ['ignore', log, log],
      env: { ...process.env, ...service('registry').environment },
    });
    closeSync(log);
    try {
      const url = `http://127.0.0.1:${port}`;
      await waitFor(`docker-registry on port ${port}`, async () => (await fetch(`${url}/v2/`)).status === 200);
      const digest = `sha256:${'0'.repeat(64)}`;
      // With deletion off the registry returns 405 UNSUPPORTED, and with it on, 404 for an unknown manifest.
      const response = await fetch(`${url}/v2/probe/manifests/${digest}`, { method: 'DELETE' });
      expect(response.status).toBe(404);
    } finally {
      await stopProcess(child);
      rmSync(directory, { recursive: true, force: true });
    }
  });
});
