import { describe, expect, it } from 'vitest';
import { hasHashTag, parseRedisUrl } from '../../src/redis/url.ts';

describe('parseRedisUrl', () => {
  it('keeps a single-instance URL whole', () => {
    expect(parseRedisUrl('rediss://app:p%40ss@redis.internal:6380/2')).toEqual({
      kind: 'single',
      url: 'rediss://app:p%40ss@redis.internal:6380/2',
      username: 'app',
      password: 'p@ss',
    });
  });

  it('reads Sentinel hosts and master name', () => {
    expect(parseRedisUrl('redis+sentinel://:s%3Acret@10.0.0.1:26380,sentinel-b,[::1]:26381/my%2Dmaster')).toEqual({
      kind: 'sentinel',
      sentinels: [
        { host: '10.0.0.1', port: 26380 },
        { host: 'sentinel-b', port: 26379 },
        { host: '::1', port: 26381 },
      ],
      masterName: 'my-master',
      password: 's:cret',
    });
  });

  it('reads Cluster seed nodes', () => {
    expect(parseRedisUrl('redis+cluster://ops@10.0.0.1:7000,10.0.0.2')).toEqual({
      kind: 'cluster',
      nodes: [
        { host: '10.0.0.1', port: 7000 },
        { host: '10.0.0.2', port: 6379 },
      ],
      username: 'ops',
    });
  });

  it.each([
    ['another scheme', 'http://127.0.0.1:6379'],
    ['a URL without host', 'redis://'],
    ['Sentinel without master name', 'redis+sentinel://10.0.0.1:26379/'],
    ['Sentinel with two path segments', 'redis+sentinel://10.0.0.1:26379/a/b'],
    ['Cluster with a query', 'redis+cluster://10.0.0.1:7000?tls=1'],
    ['a port above 65535', 'redis+cluster://10.0.0.1:70000'],
    ['a broken percent-encoding', 'redis+cluster://:%zz@10.0.0.1:7000'],
  ])('rejects %s', (_case, url) => {
    expect(parseRedisUrl(url)).toBeUndefined();
  });
});

describe('hasHashTag', () => {
  it.each([
    ['{mirrorfleet}', true],
    ['prod:{fleet}:a', true],
    ['mirrorfleet', false],
    ['{}fleet', false],
    ['fleet}{', false],
    ['{fleet', false],
  ])('%s is %s', (prefix, expected) => {
    expect(hasHashTag(prefix)).toBe(expected);
  });
});
