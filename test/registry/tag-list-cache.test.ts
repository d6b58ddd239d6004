import { describe, expect, test } from 'vitest';
import { RegistryClient } from '../../src/registry/client.ts';
import { TagListCache } from '../../src/registry/referrers.ts';
import { loopbackTransport } from './helpers.ts';

// The cache only calls the listing function it is given, so these clients never send a request.
const transport = loopbackTransport();
const client = new RegistryClient({ registry: 'registry.test', insecure: true, transport });
const other = new RegistryClient({ registry: 'other.test', insecure: true, transport });
const FALLBACK = `sha256-${'a'.repeat(64)}`;
const COSIGN = `sha256-${'b'.repeat(64)}.sig`;

/** A listing function that counts its calls and returns `tags`. */
function counted(tags: string[] | undefined): { list: () => Promise<Set<string> | undefined>; calls: () => number } {
  let calls = 0;
  return {
    list: async () => {
      calls += 1;
      return tags === undefined ? undefined : new Set(tags);
    },
    calls: () => calls,
  };
}

describe('tag list cache', () => {
  test('keeps only referrer tags', async () => {
    const cache = new TagListCache({ maxAgeMs: 1_000, maxEntries: 10 });
    const { list } = counted(['latest', '1.0', FALLBACK, COSIGN, 'sha256-short']);

    expect(await cache.tags(client, 'app', list)).toEqual(new Set([FALLBACK, COSIGN]));
  });

  test('serves a listing younger than the age', async () => {
    let now = 0;
    const cache = new TagListCache({ maxAgeMs: 1_000, maxEntries: 10, clock: () => now });
    const { list, calls } = counted([FALLBACK]);

    await cache.tags(client, 'app', list);
    now = 999;
    await cache.tags(client, 'app', list);

    expect(calls()).toBe(1);
  });

  test('lists again at the age', async () => {
    let now = 0;
    const cache = new TagListCache({ maxAgeMs: 1_000, maxEntries: 10, clock: () => now });
    const first = counted([]);
    const second = counted([FALLBACK]);

    await cache.tags(client, 'app', first.list);
    now = 1_000;
    const tags = await cache.tags(client, 'app', second.list);

    expect(second.calls()).toBe(1);
    expect(tags).toEqual(new Set([FALLBACK]));
  });

  test('shares one listing in flight', async () => {
    const cache = new TagListCache({ maxAgeMs: 1_000, maxEntries: 10 });
    const { list, calls } = counted([FALLBACK]);

    const results = await Promise.all([cache.tags(client, 'app', list), cache.tags(client, 'app', list), cache.tags(client, 'app', list)]);

    expect(calls()).toBe(1);
    expect(results).toEqual([new Set([FALLBACK]), new Set([FALLBACK]), new Set([FALLBACK])]);
  });

  test('keeps no failed listing', async () => {
    const cache = new TagListCache({ maxAgeMs: 1_000, maxEntries: 10 });
    const failing = async (): Promise<Set<string> | undefined> => {
      throw new Error('registry unreachable');
    };
    const { list, calls } = counted([FALLBACK]);

    await expect(cache.tags(client, 'app', failing)).rejects.toThrow('registry unreachable');
    const tags = await cache.tags(client, 'app', list);

    expect(calls()).toBe(1);
    expect(tags).toEqual(new Set([FALLBACK]));
  });

  test('keeps an unlistable repository as unknown', async () => {
    const cache = new TagListCache({ maxAgeMs: 1_000, maxEntries: 10 });
    const { list, calls } = counted(undefined);

    expect(await cache.tags(client, 'app', list)).toBeUndefined();
    expect(await cache.tags(client, 'app', list)).toBeUndefined();
    expect(calls()).toBe(1);
  });

  test('separates repositories and registries', async () => {
    const cache = new TagListCache({ maxAgeMs: 1_000, maxEntries: 10 });
    const { list, calls } = counted([FALLBACK]);

    await cache.tags(client, 'app', list);
    await cache.tags(client, 'other', list);
    await cache.tags(other, 'app', list);

    expect(calls()).toBe(3);
  });

  test('drops the oldest repository beyond the maximum', async () => {
    const cache = new TagListCache({ maxAgeMs: 1_000, maxEntries: 2 });
    const { list, calls } = counted([FALLBACK]);

    await cache.tags(client, 'first', list);
    await cache.tags(client, 'second', list);
    await cache.tags(client, 'third', list);
    await cache.tags(client, 'second', list);
    await cache.tags(client, 'first', list);

    // 'first' was dropped when 'third' arrived, so it is listed again. 'second' was still kept.
    expect(calls()).toBe(4);
  });
});
