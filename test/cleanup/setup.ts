import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { loadConfig, type Config, type MirrorRegistryConfig } from '../../src/config/config.ts';
import type { CleanupContext } from '../../src/cleanup/context.ts';
import { runReconcile } from '../../src/cleanup/reconcile.ts';
import { runRelease } from '../../src/cleanup/release.ts';
import type { SweepScheduler } from '../../src/cleanup/schedule.ts';
import { runSweep } from '../../src/cleanup/sweep.ts';
import { RegistryClients } from '../../src/mirror/clients.ts';
import { mirrorImage } from '../../src/mirror/mirror-image.ts';
import { NetworkPolicy } from '../../src/net/policy.ts';
import { ACCEPTED_MANIFEST_TYPES } from '../../src/registry/media-types.ts';
import { HttpTransport } from '../../src/registry/http.ts';
import { parseCleanupRequest, type CleanupRequestInput, type CleanupResult } from '../../queues/cleanup.ts';
import { parseMirrorRequest, type MirrorResult } from '../../queues/mirror.ts';
import { FIXTURES } from '../harness/fixtures.ts';
import { skopeoCopy } from '../harness/skopeo.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';

/**
 * Shared pieces of the cleanup tests: a Redis, a source registry seeded with real images, and a mirror
 * registry with deletion enabled. Mirror, release, sweep and reconcile jobs run in this process, through
 * the same functions the workers run, without the queue around them.
 *
 * Source images (all in PROVENANCE.md):
 *   library/hello-world:latest and :alias  the 9-platform hello-world index (two tags, one digest)
 *   library/hello-world:arm64             its arm64 child alone, so the mirror holds it tagged and listed
 *   library/busybox:amd64, :arm64         two single-platform images
 *   library/sidecar:1                     a single-platform image in a repository of its own
 */

export const HELLO_WORLD_LIST = 'sha256:00e1ee7c898a2c393ea2fe7680938f8dcbe55e51fbf08032cf37326a677f92ed';
export const HELLO_WORLD_ARM64 = 'sha256:432f982638b3aefab73cc58ab28f5c16e96fdb504e8c134fc58dff4bae8bf338';
export const BUSYBOX_AMD64 = 'sha256:47d0f2af0b7be8073ec4470ddc8011159aa3ba7c92c4a87f4156fa59dbb50dec';
export const BUSYBOX_ARM64 = 'sha256:d2b92b49226bc76d2654cf54e181f687d91c9f56c91780c4161f33f8f0abfa60';

export interface CleanupServices {
  redis: TestRedis;
  source: TestRegistry;
  mirror: TestRegistry;
  connection: Redis;
  stop(): Promise<void>;
}

export async function startCleanupServices(): Promise<CleanupServices> {
  const [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  const copy = (layout: string, target: string) => skopeoCopy(`oci:${join(FIXTURES, layout)}`, `${source.host}/${target}`);
  await copy('hello-world-manifest-list', 'library/hello-world:latest');
  await Promise.all([
    copy('hello-world-manifest-list', 'library/hello-world:alias'),
    copy('hello-world-arm64-docker-v2', 'library/hello-world:arm64'),
    copy('busybox-1.38.0-uclibc-amd64', 'library/busybox:amd64'),
    copy('busybox-1.38.0-uclibc-arm64v8', 'library/busybox:arm64'),
    copy('busybox-1.38.0-uclibc-arm64v8', 'library/sidecar:1'),
  ]);
  const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  return {
    redis,
    source,
    mirror,
    connection,
    stop: async () => {
      connection.disconnect();
      await Promise.all([redis.stop(), source.stop(), mirror.stop()]);
    },
  };
}

/** Returns a configuration with one mirror registry `local` on the mirror registry, under a fresh key prefix. */
export async function testConfig(services: CleanupServices, registry: Partial<MirrorRegistryConfig> = {}): Promise<Config> {
  const directory = await mkdtemp(join(tmpdir(), 'mirrorfleet-cleanup-'));
  const path = join(directory, 'config.json');
  await writeFile(
    path,
    JSON.stringify({
      redis: { url: services.redis.url, keyPrefix: `test-${randomBytes(4).toString('hex')}` },
      mirrorRegistries: [{ name: 'local', provider: 'generic', host: services.mirror.host, ...registry }],
      registries: [
        { host: services.source.host, insecure: true },
        { host: services.mirror.host, insecure: true },
      ],
      allowNetworks: ['127.0.0.0/8'],
    }),
  );
  try {
    return loadConfig({ MIRRORFLEET_CONFIG: path });
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

/** Records the sweeps that jobs ask for, instead of enqueueing them. */
export class RecordingScheduler implements SweepScheduler {
  readonly calls: Array<{ registry: string; dueAt: number }> = [];

  async scheduleSweep(registry: string, dueAt: number): Promise<void> {
    this.calls.push({ registry, dueAt });
  }
}

/** Mirror, release, sweep and reconcile jobs against the services, run in this process. */
export class InProcessFleet {
  readonly config: Config;
  readonly connection: Redis;
  readonly clients: RegistryClients;
  readonly scheduler = new RecordingScheduler();
  private readonly source: TestRegistry;
  private readonly transport: HttpTransport;
  private jobs = 0;

  constructor(services: CleanupServices, config: Config) {
    this.config = config;
    this.connection = services.connection;
    this.source = services.source;
    this.transport = new HttpTransport({ policy: new NetworkPolicy(['127.0.0.0/8']) });
    this.clients = new RegistryClients(config, this.transport);
  }

  /** Mirrors `library/<image>` of the source registry for a service. */
  async mirror(image: string, user: { cluster?: string; service?: string; mode?: 'service' | 'cluster'; platforms?: string[] }): Promise<MirrorResult> {
    const request = parseMirrorRequest({
      v: 1,
      source: `${this.source.host}/library/${image}`,
      registry: 'local',
      mode: user.mode ?? 'cluster',
      cluster: user.cluster ?? 'prod',
      ...(user.service === undefined ? {} : { service: user.service }),
      ...(user.platforms === undefined ? {} : { platforms: user.platforms }),
    });
    return mirrorImage(request, { config: this.config, redis: this.connection, clients: this.clients, sweeps: this.scheduler }, { jobId: this.nextJobId('mirror') });
  }

  async cleanup(input: CleanupRequestInput, options: Partial<CleanupContext> = {}): Promise<CleanupResult> {
    const request = parseCleanupRequest(input);
    const context: CleanupContext = {
      config: this.config,
      redis: this.connection,
      clients: this.clients,
      jobId: this.nextJobId(request.kind),
      scheduler: this.scheduler,
      ...options,
    };
    switch (request.kind) {
      case 'release':
        return runRelease(request, context);
      case 'sweep':
        return runSweep(request, context);
      case 'reconcile':
        return runReconcile(request, context);
    }
  }

  release(cluster: string, service: string, options: Partial<CleanupContext> = {}): Promise<CleanupResult> {
    return this.cleanup({ v: 1, kind: 'release', cluster, service }, options);
  }

  sweep(options: Partial<CleanupContext> & { dryRun?: boolean; maxDeletePercent?: number } = {}): Promise<CleanupResult> {
    const { dryRun, maxDeletePercent, ...context } = options;
    return this.cleanup({ v: 1, kind: 'sweep', dryRun: dryRun ?? false, ...(maxDeletePercent === undefined ? {} : { maxDeletePercent }) }, context);
  }

  async close(): Promise<void> {
    await this.transport.close();
  }

  private nextJobId(kind: string): string {
    this.jobs += 1;
    return `${kind}-${this.jobs}`;
  }
}

/** Returns the status of a GET of a manifest by tag or digest in `registry`: 200 when present, 404 when gone. */
export async function manifestStatus(registry: TestRegistry, repository: string, reference: string): Promise<number> {
  const response = await fetch(`${registry.url}/v2/${repository}/manifests/${reference}`, { headers: { accept: ACCEPTED_MANIFEST_TYPES.join(', ') } });
  await response.arrayBuffer();
  return response.status;
}

/** Returns the children an index lists, read from the registry. */
export async function childrenOf(registry: TestRegistry, repository: string, digest: string): Promise<string[]> {
  const response = await fetch(`${registry.url}/v2/${repository}/manifests/${digest}`, { headers: { accept: ACCEPTED_MANIFEST_TYPES.join(', ') } });
  const body = (await response.json()) as { manifests?: Array<{ digest: string }> };
  return (body.manifests ?? []).map((child) => child.digest);
}

/** Returns the target repository of a source image: cluster mode without `service`, service mode with it. */
export function targetRepository(services: CleanupServices, image: string, location: { cluster?: string; service?: string }): string {
  const host = services.source.host.replace(':', '_');
  const cluster = location.cluster ?? 'prod';
  const scope = location.service === undefined ? 'shared' : `services/${location.service}`;
  return `${cluster}/${scope}/${host}/library/${image}`;
}
