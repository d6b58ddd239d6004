import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { configErrorMessage, setUpConfigDirectory } from './helpers.ts';

const { writeConfigFile } = setUpConfigDirectory('env');

/** Runs loadConfig, expects a ConfigError with exactly one problem and returns that problem's line. */
function singleProblem(env: NodeJS.ProcessEnv): string {
  const message = configErrorMessage(env);
  expect(message, message).not.toContain('\n');
  return message.replace(/^invalid configuration: /, '');
}

const CLEANUP_DEFAULTS = { retentionSeconds: 365 * 86_400, previousImageRetentionSeconds: 86_400, maxDeletePercent: 50 };

describe('MIRRORFLEET_MIRROR_REGISTRIES', () => {
  it('parses names, hosts and prefixes', () => {
    const config = loadConfig({ MIRRORFLEET_MIRROR_REGISTRIES: 'local=127.0.0.1:5001/mirror,other=registry.example' });

    expect(config.mirrorRegistries).toEqual([
      { name: 'local', provider: 'generic', host: '127.0.0.1:5001', prefix: 'mirror', ...CLEANUP_DEFAULTS },
      { name: 'other', provider: 'generic', host: 'registry.example', prefix: '', ...CLEANUP_DEFAULTS },
    ]);
  });

  it('normalises the host and keeps a nested prefix', () => {
    const [registry] = loadConfig({ MIRRORFLEET_MIRROR_REGISTRIES: 'eu=Registry.Example:443/team/mirror' }).mirrorRegistries;

    expect(registry?.host).toBe('registry.example');
    expect(registry?.prefix).toBe('team/mirror');
  });

  it('accepts a bracketed IPv6 host', () => {
    const [registry] = loadConfig({ MIRRORFLEET_MIRROR_REGISTRIES: 'v6=[::1]:5001/m' }).mirrorRegistries;

    expect(registry?.host).toBe('[::1]:5001');
  });

  it('trims spaces around entries', () => {
    const config = loadConfig({ MIRRORFLEET_MIRROR_REGISTRIES: ' a=r.example , b=s.example ' });

    expect(config.mirrorRegistries.map((registry) => registry.name)).toEqual(['a', 'b']);
  });

  it('replaces the file list', () => {
    const path = writeConfigFile({ mirrorRegistries: [{ name: 'from-file', provider: 'generic', host: 'f.example' }] });
    const config = loadConfig({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_MIRROR_REGISTRIES: 'from-env=e.example' });

    expect(config.mirrorRegistries.map((registry) => registry.name)).toEqual(['from-env']);
  });

  it('empties the list when empty', () => {
    const path = writeConfigFile({ mirrorRegistries: [{ name: 'from-file', provider: 'generic', host: 'f.example' }] });

    expect(loadConfig({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_MIRROR_REGISTRIES: '' }).mirrorRegistries).toEqual([]);
  });

  it('rejects a duplicate name', () => {
    expect(singleProblem({ MIRRORFLEET_MIRROR_REGISTRIES: 'local=a.example,local=b.example' })).toBe(
      'MIRRORFLEET_MIRROR_REGISTRIES: duplicate name "local" in entry "local=b.example"; expected each name once',
    );
  });

  it('rejects a duplicate location', () => {
    const line = singleProblem({ MIRRORFLEET_MIRROR_REGISTRIES: 'a=r.example/m,b=R.example:443/m' });

    expect(line).toContain('MIRRORFLEET_MIRROR_REGISTRIES: duplicate location in entry "b=R.example:443/m"');
    expect(line).toContain('expected each HOST[:PORT][/PREFIX] once');
  });

  it('rejects an entry without =', () => {
    expect(singleProblem({ MIRRORFLEET_MIRROR_REGISTRIES: 'registry.example' })).toBe(
      'MIRRORFLEET_MIRROR_REGISTRIES: invalid entry "registry.example"; expected NAME=HOST[:PORT][/PREFIX], such as local=127.0.0.1:5001/mirror',
    );
  });

  it('rejects an invalid name', () => {
    expect(singleProblem({ MIRRORFLEET_MIRROR_REGISTRIES: 'Local=r.example' })).toBe(
      'MIRRORFLEET_MIRROR_REGISTRIES: invalid name "Local" in entry "Local=r.example"; expected a name matching [a-z0-9][a-z0-9-]{0,62}',
    );
  });

  it('rejects an invalid host', () => {
    const line = singleProblem({ MIRRORFLEET_MIRROR_REGISTRIES: 'a=r.example:99999' });

    expect(line).toContain('MIRRORFLEET_MIRROR_REGISTRIES: invalid host "r.example:99999" in entry "a=r.example:99999"');
    expect(line).toContain('expected a registry host as HOST or HOST:PORT');
  });

  it('rejects an invalid prefix', () => {
    const line = singleProblem({ MIRRORFLEET_MIRROR_REGISTRIES: 'a=r.example/Team//m' });

    expect(line).toContain('MIRRORFLEET_MIRROR_REGISTRIES: invalid prefix "Team//m" in entry "a=r.example/Team//m"');
    expect(line).toContain('expected lowercase repository path components');
  });

  it('rejects a trailing slash', () => {
    expect(singleProblem({ MIRRORFLEET_MIRROR_REGISTRIES: 'a=r.example/' })).toContain('invalid prefix "" in entry "a=r.example/"');
  });

  it('rejects an empty entry', () => {
    expect(singleProblem({ MIRRORFLEET_MIRROR_REGISTRIES: 'a=r.example,' })).toContain('invalid entry ""');
  });
});

describe('MIRRORFLEET_INSECURE_REGISTRIES', () => {
  it('adds entries for new hosts', () => {
    const config = loadConfig({ MIRRORFLEET_INSECURE_REGISTRIES: '127.0.0.1:5001,Registry.Local' });

    expect(config.registries).toEqual([
      { host: '127.0.0.1:5001', insecure: true },
      { host: 'registry.local', insecure: true },
    ]);
  });

  it('sets insecure on file entries', () => {
    const path = writeConfigFile({ registries: [{ host: 'r.example:5000', username: 'u', password: 'p4ssword' }] });
    const config = loadConfig({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_INSECURE_REGISTRIES: 'R.EXAMPLE:5000' });

    expect(config.registries).toEqual([{ host: 'r.example:5000', insecure: true, username: 'u', password: 'p4ssword' }]);
  });

  it('keeps other file entries secure', () => {
    const path = writeConfigFile({ registries: [{ host: 'secure.example' }] });
    const config = loadConfig({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_INSECURE_REGISTRIES: 'plain.example' });

    expect(config.registries).toEqual([
      { host: 'secure.example', insecure: false },
      { host: 'plain.example', insecure: true },
    ]);
  });

  it('adds a repeated host once', () => {
    expect(loadConfig({ MIRRORFLEET_INSECURE_REGISTRIES: 'a.example,A.example' }).registries).toHaveLength(1);
  });

  it('rejects a host with scheme', () => {
    const line = singleProblem({ MIRRORFLEET_INSECURE_REGISTRIES: 'http://r.example' });

    expect(line).toContain('MIRRORFLEET_INSECURE_REGISTRIES: invalid entry "http://r.example"');
    expect(line).toContain('expected a registry host as HOST or HOST:PORT without scheme or path');
  });
});

describe('MIRRORFLEET_ALLOW_NETWORKS', () => {
  it('parses IPv4 and IPv6 blocks', () => {
    const config = loadConfig({ MIRRORFLEET_ALLOW_NETWORKS: '10.0.0.0/8, 192.168.1.0/24,fd00::/8' });

    expect(config.allowNetworks).toEqual(['10.0.0.0/8', '192.168.1.0/24', 'fd00::/8']);
  });

  it('replaces the file list', () => {
    const path = writeConfigFile({ allowNetworks: ['10.0.0.0/8'] });

    expect(loadConfig({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_ALLOW_NETWORKS: '172.16.0.0/12' }).allowNetworks).toEqual([
      '172.16.0.0/12',
    ]);
  });

  it('empties the list when empty', () => {
    const path = writeConfigFile({ allowNetworks: ['10.0.0.0/8'] });

    expect(loadConfig({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_ALLOW_NETWORKS: '' }).allowNetworks).toEqual([]);
  });

  it('rejects an invalid block', () => {
    expect(singleProblem({ MIRRORFLEET_ALLOW_NETWORKS: '10.0.0.0/8,fd00::/129' })).toBe(
      'MIRRORFLEET_ALLOW_NETWORKS: invalid entry "fd00::/129"; expected an IPv4 or IPv6 CIDR block such as 10.0.0.0/8 or fd00::/8',
    );
  });
});

describe('MIRRORFLEET_REGISTRY_CREDENTIALS', () => {
  const credentials = (value: unknown): string => JSON.stringify(value);

  it('adds entries for new hosts', () => {
    const config = loadConfig({
      MIRRORFLEET_REGISTRY_CREDENTIALS: credentials({ 'Registry.Example:443': { username: 'u', password: 'p4ssword' } }),
    });

    expect(config.registries).toEqual([{ host: 'registry.example', insecure: false, username: 'u', password: 'p4ssword' }]);
  });

  it('keeps insecure from the file', () => {
    const path = writeConfigFile({ registries: [{ host: '127.0.0.1:5001', insecure: true }] });
    const config = loadConfig({
      MIRRORFLEET_CONFIG: path,
      MIRRORFLEET_REGISTRY_CREDENTIALS: credentials({ '127.0.0.1:5001': { username: 'u', password: 'p4ssword' } }),
    });

    expect(config.registries).toEqual([{ host: '127.0.0.1:5001', insecure: true, username: 'u', password: 'p4ssword' }]);
  });

  it('combines with insecure registries', () => {
    const config = loadConfig({
      MIRRORFLEET_REGISTRY_CREDENTIALS: credentials({ 'r.example': { username: 'u', password: 'p4ssword' } }),
      MIRRORFLEET_INSECURE_REGISTRIES: 'r.example',
    });

    expect(config.registries).toEqual([{ host: 'r.example', insecure: true, username: 'u', password: 'p4ssword' }]);
  });

  it('rejects invalid JSON without showing it', () => {
    const line = singleProblem({ MIRRORFLEET_REGISTRY_CREDENTIALS: '{"r.example": {"username": "u", "password": json-secret-1}}' });

    expect(line).toContain('MIRRORFLEET_REGISTRY_CREDENTIALS: invalid JSON <redacted>;');
    expect(line).toContain('expected a JSON object of credentials by registry host');
    expect(line).not.toContain('json-secret-1');
  });

  it('rejects an array without showing it', () => {
    const line = singleProblem({ MIRRORFLEET_REGISTRY_CREDENTIALS: '["array-secret-1"]' });

    expect(line).toContain('MIRRORFLEET_REGISTRY_CREDENTIALS: invalid value <redacted>;');
    expect(line).not.toContain('array-secret-1');
  });

  it('rejects a string per host without showing it', () => {
    const line = singleProblem({ MIRRORFLEET_REGISTRY_CREDENTIALS: credentials({ 'r.example': 'string-secret-1' }) });

    expect(line).toBe(
      'MIRRORFLEET_REGISTRY_CREDENTIALS["r.example"]: invalid value <redacted>; expected an object with the keys username, password',
    );
  });

  it('rejects a missing password', () => {
    expect(singleProblem({ MIRRORFLEET_REGISTRY_CREDENTIALS: credentials({ 'r.example': { username: 'u' } }) })).toBe(
      'MIRRORFLEET_REGISTRY_CREDENTIALS["r.example"].password: missing; expected a non-empty string',
    );
  });

  it('redacts an invalid password', () => {
    const line = singleProblem({
      MIRRORFLEET_REGISTRY_CREDENTIALS: credentials({ 'r.example': { username: 'u', password: 123_456_789 } }),
    });

    expect(line).toBe('MIRRORFLEET_REGISTRY_CREDENTIALS["r.example"].password: invalid value <redacted>; expected a non-empty string');
  });

  it('hides the value of an unknown key', () => {
    const line = singleProblem({
      MIRRORFLEET_REGISTRY_CREDENTIALS: credentials({ 'r.example': { username: 'u', password: 'p4ssword', token: 'token-secret-1' } }),
    });

    expect(line).toBe(
      'MIRRORFLEET_REGISTRY_CREDENTIALS["r.example"].token: unknown key; expected one of the keys username, password',
    );
  });

  it('rejects an invalid host', () => {
    const line = singleProblem({
      MIRRORFLEET_REGISTRY_CREDENTIALS: credentials({ 'https://r.example': { username: 'u', password: 'p4ssword' } }),
    });

    expect(line).toContain('MIRRORFLEET_REGISTRY_CREDENTIALS["https://r.example"]: invalid host "https://r.example"');
    expect(line).toContain('expected a registry host as HOST or HOST:PORT');
  });

  it('rejects hosts equal after normalising', () => {
    const line = singleProblem({
      MIRRORFLEET_REGISTRY_CREDENTIALS: credentials({
        'r.example': { username: 'u', password: 'p4ssword' },
        'R.example:443': { username: 'v', password: 'p4ssword' },
      }),
    });

    expect(line).toContain('MIRRORFLEET_REGISTRY_CREDENTIALS["R.example:443"]: duplicate host "r.example"');
  });
});

describe('scalar variables', () => {
  it('accepts rediss URLs', () => {
    expect(loadConfig({ MIRRORFLEET_REDIS_URL: 'rediss://redis.internal:6380/1' }).redis.url).toBe(
      'rediss://redis.internal:6380/1',
    );
  });

  it('rejects other URL schemes', () => {
    expect(singleProblem({ MIRRORFLEET_REDIS_URL: 'http://127.0.0.1:6379' })).toBe(
      'MIRRORFLEET_REDIS_URL: invalid value "http://127.0.0.1:6379"; expected a URL starting with redis:// or rediss://, such as redis://127.0.0.1:6379, or a Sentinel or Cluster URL such as redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster or redis+cluster://10.0.0.1:6379,10.0.0.2:6379',
    );
  });

  it('accepts Sentinel and Cluster URLs', () => {
    const sentinel = 'redis+sentinel://:pw-sentinel-1@10.0.0.1:26379,10.0.0.2:26379/mymaster';
    const cluster = 'redis+cluster://10.0.0.1:7000,10.0.0.2:7001';

    expect(loadConfig({ MIRRORFLEET_REDIS_URL: sentinel }).redis.url).toBe(sentinel);
    expect(loadConfig({ MIRRORFLEET_REDIS_URL: cluster, MIRRORFLEET_KEY_PREFIX: '{fleet}' }).redis.url).toBe(cluster);
  });

  it('hides the Sentinel URL password', () => {
    const line = singleProblem({ MIRRORFLEET_REDIS_URL: 'redis+sentinel://:redis-secret-2@10.0.0.1:26379' });

    expect(line).toContain('invalid value "redis+sentinel://<redacted>@10.0.0.1:26379"');
    expect(line).not.toContain('redis-secret-2');
  });

  it('hides the Redis password', () => {
    const line = singleProblem({ MIRRORFLEET_REDIS_URL: 'tcp://default:redis-secret-1@127.0.0.1:6379' });

    expect(line).toContain('invalid value "tcp://<redacted>@127.0.0.1:6379"');
    expect(line).not.toContain('redis-secret-1');
  });

  it('accepts a hash-tag key prefix', () => {
    expect(loadConfig({ MIRRORFLEET_KEY_PREFIX: '{fleet}' }).redis.keyPrefix).toBe('{fleet}');
  });

  it('rejects an empty key prefix', () => {
    expect(singleProblem({ MIRRORFLEET_KEY_PREFIX: '' })).toBe(
      'MIRRORFLEET_KEY_PREFIX: invalid value ""; expected 1 to 64 characters from A-Z, a-z, 0-9 and _ . : { } -',
    );
  });

  it('accepts each log level', () => {
    for (const level of ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const) {
      expect(loadConfig({ MIRRORFLEET_LOG_LEVEL: level }).logLevel).toBe(level);
    }
  });

  it('rejects an unknown log level', () => {
    expect(singleProblem({ MIRRORFLEET_LOG_LEVEL: 'verbose' })).toBe(
      'MIRRORFLEET_LOG_LEVEL: invalid value "verbose"; expected one of fatal, error, warn, info, debug, trace',
    );
  });

  it('sets the docker config path', () => {
    expect(loadConfig({ MIRRORFLEET_DOCKER_CONFIG: '/run/docker/config.json' }).dockerConfigPath).toBe(
      '/run/docker/config.json',
    );
  });

  it('rejects an empty docker config path', () => {
    expect(singleProblem({ MIRRORFLEET_DOCKER_CONFIG: '' })).toBe(
      'MIRRORFLEET_DOCKER_CONFIG: invalid value ""; expected a non-empty path to a docker config.json file',
    );
  });

  it('parses concurrency', () => {
    expect(loadConfig({ MIRRORFLEET_CONCURRENCY: '256' }).worker.concurrency).toBe(256);
  });

  it('parses metrics port 0', () => {
    expect(loadConfig({ MIRRORFLEET_METRICS_PORT: '0' }).worker.metricsPort).toBe(0);
  });

  const concurrencyExpected = 'expected an integer from 1 to 256 (jobs at once per worker process)';
  for (const raw of ['12abc', ' 12', '12 ', '1e3', '0x10', '-1', '1.5', '', '0', '257', '99999999999999999999']) {
    it(`rejects concurrency ${JSON.stringify(raw)}`, () => {
      expect(singleProblem({ MIRRORFLEET_CONCURRENCY: raw })).toBe(
        `MIRRORFLEET_CONCURRENCY: invalid value ${JSON.stringify(raw)}; ${concurrencyExpected}`,
      );
    });
  }

  it('rejects metrics port 65536', () => {
    expect(singleProblem({ MIRRORFLEET_METRICS_PORT: '65536' })).toBe(
      'MIRRORFLEET_METRICS_PORT: invalid value "65536"; expected an integer from 0 to 65535 (0 turns the metrics endpoint off)',
    );
  });
});
