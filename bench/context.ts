import type { TestRedis } from '../test/harness/redis.ts';
import { startRegistry, type TestRegistry } from '../test/harness/registry.ts';
import { Fleet, type FleetOptions } from './fleet.ts';
import { pushSeededImage, type BenchImage, type LayerSpec } from './images.ts';
import type { ResultTable } from './report.ts';
import type { Settings } from './settings.ts';

/**
 * Shared state of the scenarios: the settings, the Redis and source registry of the whole run, the images
 * in the source (made on first use), the result table, and the list of what to stop at the end.
 */
export class BenchContext {
  readonly settings: Settings;
  readonly redis: TestRedis;
  readonly source: TestRegistry;
  readonly table: ResultTable;
  /** Size of every blob the benchmark pushed, by digest, for counting bytes from access logs. */
  readonly blobSizes = new Map<string, number>();
  /** Free-text observations per scenario, printed under the table. */
  readonly notes: Array<{ scenario: string; text: string }> = [];
  private readonly images = new Map<string, Promise<BenchImage>>();
  private readonly fixtures = new Map<string, Promise<unknown>>();
  /** Services still running, each with its stop function. */
  private readonly running = new Map<object, () => Promise<unknown>>();

  constructor(settings: Settings, redis: TestRedis, source: TestRegistry, table: ResultTable) {
    this.settings = settings;
    this.redis = redis;
    this.source = source;
    this.table = table;
  }

  /** Returns the source image `name`, pushing it on first use. */
  image(name: string, layers: LayerSpec[]): Promise<BenchImage> {
    let image = this.images.get(name);
    if (!image) {
      image = pushSeededImage(this.source.url, `bench/${name}`, 'v1', layers).then((pushed) => {
        for (const blob of pushed.blobs) this.blobSizes.set(blob.digest, blob.size);
        return pushed;
      });
      this.images.set(name, image);
    }
    return image;
  }

  /** Returns the ~200 MB image of four incompressible layers that scenarios 1, 3 and 5 copy. */
  coldImage(): Promise<BenchImage> {
    return this.image('cold', this.settings.coldLayers.map((size, index) => ({ seed: `cold-${index}`, size })));
  }

  /** Returns the fixture `key`, made by `create` on first use and shared by the scenarios after. */
  fixture<T>(key: string, create: () => Promise<T>): Promise<T> {
    let fixture = this.fixtures.get(key);
    if (!fixture) {
      fixture = create();
      this.fixtures.set(key, fixture);
    }
    return fixture as Promise<T>;
  }

  /** Source reference `host/repository:tag` of an image. */
  reference(image: BenchImage): string {
    return `${this.source.host}/${image.repository}:${image.tag}`;
  }

  /** Starts an empty mirror registry, stopped with `release` or at the end of the run. */
  async startMirror(): Promise<TestRegistry> {
    const registry = await startRegistry();
    this.running.set(registry, () => registry.stop());
    return registry;
  }

  async startFleet(mirror: TestRegistry, options: Partial<FleetOptions> & { workers: number }): Promise<Fleet> {
    const fleet = await Fleet.start({
      redisUrl: this.redis.url,
      sourceHost: this.source.host,
      mirrorHost: mirror.host,
      concurrency: this.settings.concurrency,
      liftRateLimits: this.settings.liftRateLimits,
      ...(this.settings.workerNodeOptions !== undefined ? { nodeOptions: this.settings.workerNodeOptions } : {}),
      ...options,
    });
    this.running.set(fleet, () => fleet.close());
    return fleet;
  }

  /** Stops what `startMirror` or `startFleet` started, before the end of the run. */
  async release(...services: Array<TestRegistry | Fleet>): Promise<void> {
    for (const service of services) {
      const stop = this.running.get(service);
      this.running.delete(service);
      await stop?.();
    }
  }

  note(scenario: string, text: string): void {
    this.notes.push({ scenario, text });
  }

  /** Stops everything still running, in reverse order of start. */
  async stopAll(): Promise<void> {
    for (const stop of [...this.running.values()].reverse()) await stop().catch(() => undefined);
    this.running.clear();
  }
}
