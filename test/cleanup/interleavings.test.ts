import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomInt } from 'node:crypto';
import type { MirrorResult } from '../../queues/mirror.ts';
import { InProcessFleet, childrenOf, manifestStatus, startCleanupServices, testConfig, type CleanupServices } from './setup.ts';

/**
 * Random interleavings of mirror, release and sweep jobs on a handful of images and services, run
 * concurrently in this process against a real registry and a real Redis, with retention zero. The
 * registry is the judge:
 * - after every round, every manifest that a service uses (and every child of a used index) is there;
 * - after a final sweep, every manifest that no service uses is gone.
 *
 * Rounds: MIRRORFLEET_INTERLEAVINGS, else 10000 under MIRRORFLEET_SOAK, else 1000. A failure prints
 * its seed; MIRRORFLEET_RANDOM_SEED replays it (the interleaving within a round still varies).
 */

const ROUNDS = Number(process.env.MIRRORFLEET_INTERLEAVINGS ?? (process.env.MIRRORFLEET_SOAK ? 10_000 : 1000));
const SEED = Number(process.env.MIRRORFLEET_RANDOM_SEED ?? randomInt(2 ** 31));

/** What a service can mirror: a source image, and a platform filter that makes a small index. */
interface CatalogImage {
  source: string;
  platforms?: string[];
}

// Two tags for one filtered index (same digest), its arm64 child on a tag of its own, two images that
// share a repository, and one in a repository of its own.
const CATALOG: CatalogImage[] = [
  { source: 'hello-world:latest', platforms: ['linux/arm64', 'linux/amd64'] },
  { source: 'hello-world:alias', platforms: ['linux/arm64', 'linux/amd64'] },
  { source: 'hello-world:arm64' },
  { source: 'busybox:amd64' },
  { source: 'busybox:arm64' },
  { source: 'sidecar:1' },
];

interface Service {
  name: string;
  mode: 'cluster' | 'service';
}

const SERVICES: Service[] = [
  { name: 'c0', mode: 'cluster' },
  { name: 'c1', mode: 'cluster' },
  { name: 'c2', mode: 'cluster' },
  { name: 's0', mode: 'service' },
  { name: 's1', mode: 'service' },
];

type Operation = { kind: 'mirror'; service: Service; image: CatalogImage } | { kind: 'release'; service: Service } | { kind: 'sweep' };

/** mulberry32: a small seeded generator, so that a failing sequence of rounds can be replayed. */
function generator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** A mirrored image in the model: its repository, tag and digest. */
interface Placed {
  repository: string;
  tag: string;
  digest: string;
}

let services: CleanupServices;
let fleet: InProcessFleet;

beforeAll(async () => {
  services = await startCleanupServices();
  fleet = new InProcessFleet(services, await testConfig(services, { retentionSeconds: 0, previousImageRetentionSeconds: 0, maxDeletePercent: 100 }));
});

afterAll(async () => {
  await fleet?.close();
  await services?.stop();
});

describe('interleavings of mirror, release and sweep', () => {
  test(`${ROUNDS} rounds never lose a used image`, { timeout: Math.max(120_000, ROUNDS * 200) }, async () => {
    const random = generator(SEED);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const context = `seed ${SEED}`;

    // The model: which placed images each service uses, and every manifest ever pushed.
    const uses = new Map<string, Map<string, Placed>>(SERVICES.map((service) => [service.name, new Map()]));
    const everPushed = new Map<string, Placed>();
    const childrenByDigest = new Map<string, string[]>();

    const needed = (): Set<string> => {
      const manifests = new Set<string>();
      for (const placedByKey of uses.values()) {
        for (const placed of placedByKey.values()) {
          manifests.add(`${placed.repository}@${placed.digest}`);
          for (const child of childrenByDigest.get(placed.digest) ?? []) manifests.add(`${placed.repository}@${child}`);
        }
      }
      return manifests;
    };

    const apply = async (operation: Operation, result: MirrorResult | undefined) => {
      if (operation.kind === 'release') uses.get(operation.service.name)!.clear();
      if (operation.kind !== 'mirror' || !result) return;
      const [repositoryWithHost, tag] = [result.target.slice(0, result.target.lastIndexOf(':')), result.target.slice(result.target.lastIndexOf(':') + 1)];
      const repository = repositoryWithHost.slice(services.mirror.host.length + 1);
      const placed = { repository, tag, digest: result.digest };
      const own = uses.get(operation.service.name)!;
      // Service mode: a newer image of the same repository replaces the service's previous one.
      if (operation.service.mode === 'service') for (const [key, other] of own) if (other.repository === repository) own.delete(key);
      own.set(`${repository}:${tag}`, placed);
      everPushed.set(`${repository}:${tag}`, placed);
      if (!childrenByDigest.has(result.digest)) childrenByDigest.set(result.digest, await childrenOf(services.mirror, repository, result.digest));
    };

    const checkNeeded = async (round: number) => {
      const missing: string[] = [];
      await Promise.all(
        [...needed()].map(async (manifest) => {
          const [repository, digest] = manifest.split('@') as [string, string];
          if ((await manifestStatus(services.mirror, repository, digest)) !== 200) missing.push(manifest);
        }),
      );
      expect(missing, `${context}, round ${round}: manifests in use are missing`).toEqual([]);
    };

    for (let round = 1; round <= ROUNDS; round += 1) {
      // Each service takes part in at most one operation per round, so the model needs no order.
      const operations: Operation[] = [];
      const busy = new Set<string>();
      const count = 1 + Math.floor(random() * 3);
      for (let i = 0; i < count; i += 1) {
        const service = pick(SERVICES);
        if (busy.has(service.name)) continue;
        busy.add(service.name);
        operations.push(random() < 0.8 ? { kind: 'mirror', service, image: pick(CATALOG) } : { kind: 'release', service });
      }
      // Sweeps of one registry run one at a time (a lock), so two in a round mostly wait for each other.
      const draw = random();
      let sweeps = 0;
      if (draw < 0.05) sweeps = 2;
      else if (draw < 0.45) sweeps = 1;
      for (let i = 0; i < sweeps; i += 1) operations.push({ kind: 'sweep' });

      let deletions = 0;
      const results = await Promise.all(
        operations.map(async (operation): Promise<MirrorResult | undefined> => {
          if (operation.kind === 'mirror') {
            return fleet.mirror(operation.image.source, {
              cluster: 'mixed',
              service: operation.service.name,
              mode: operation.service.mode,
              ...(operation.image.platforms ? { platforms: operation.image.platforms } : {}),
            });
          }
          if (operation.kind === 'release') await fleet.release('mixed', operation.service.name);
          else deletions += (await fleet.sweep()).deleted.length;
          return undefined;
        }),
      );
      for (const [index, operation] of operations.entries()) await apply(operation, results[index]);
      // Only a deletion can make a manifest go missing.
      if (deletions > 0 || round === ROUNDS) await checkNeeded(round);
    }

    // Final sweep: what no service uses goes, what a service uses stays.
    await fleet.sweep();
    await checkNeeded(ROUNDS + 1);
    const keep = needed();
    const survivors: string[] = [];
    for (const placed of everPushed.values()) {
      for (const digest of [placed.digest, ...(childrenByDigest.get(placed.digest) ?? [])]) {
        const manifest = `${placed.repository}@${digest}`;
        if (!keep.has(manifest) && (await manifestStatus(services.mirror, placed.repository, digest)) !== 404) survivors.push(manifest);
      }
    }
    expect(survivors, `${context}: unused manifests survived the final sweep`).toEqual([]);
    expect(everPushed.size, `${context}: the rounds mirrored several images`).toBeGreaterThan(5);
  });
});
