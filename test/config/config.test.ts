import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configFileSchema, loadConfig, type Config } from '../../src/config/config.ts';
import { redact } from '../../src/log/redact.ts';
import { loadConfigError, setUpConfigDirectory } from './helpers.ts';

const configDirectory = setUpConfigDirectory('config');
const { writeConfigFile } = configDirectory;

/** Runs loadConfig, expects a ConfigError with code INVALID_CONFIG and returns its message. */
function configErrorMessage(env: NodeJS.ProcessEnv): string {
  const error = loadConfigError(env);
  expect(error.code).toBe('INVALID_CONFIG');
  return error.message;
}

/** Splits a ConfigError message into one line per problem. */
function problemLines(message: string): string[] {
  if (message.includes('\n')) {
    return message
      .split('\n')
      .slice(1)
      .map((line) => line.replace(/^- /, ''));
  }
  const single = /^invalid configuration(?: \(file "[^"]*"\))?: (.*)$/s.exec(message);
  return single?.[1] === undefined ? [] : [single[1]];
}

/** Returns the one problem line that starts with `key: `. */
function problemFor(message: string, key: string): string {
  const lines = problemLines(message).filter((line) => line.startsWith(`${key}: `));
  expect(lines, `problems for ${key} in:\n${message}`).toHaveLength(1);
  return lines[0] ?? '';
}

const DEFAULT_CONFIG: Config = {
  redis: { url: 'redis://127.0.0.1:6379', keyPrefix: 'mirrorfleet' },
  mirrorRegistries: [],
  registries: [],
  allowNetworks: [],
  copy: { monolithicMaxBytes: 128 * 1024 * 1024, chunkBytes: 16 * 1024 * 1024, blobConcurrency: 4 },
  worker: { concurrency: 4, metricsPort: 9464, shutdownGraceSeconds: 30 },
  limits: { jobTimeoutSeconds: 1800, requestTimeoutSeconds: 60 },
  build: { builder: 'auto', concurrency: 1, timeoutSeconds: 3600, cacheRetentionSeconds: 30 * 86_400 },
  api: { port: 8080, tokens: [] },
  cleanup: { sweepIntervalSeconds: 0, auditMaxEntries: 100_000 },
  logLevel: 'info',
};

describe('loadConfig defaults', () => {
  it('uses defaults without file or variables', () => {
    expect(loadConfig({})).toEqual(DEFAULT_CONFIG);
  });

  it('uses defaults for an empty file', () => {
    expect(loadConfig({ MIRRORFLEET_CONFIG: writeConfigFile({}) })).toEqual(DEFAULT_CONFIG);
  });

  it('omits dockerConfigPath by default', () => {
    expect('dockerConfigPath' in loadConfig({})).toBe(false);
  });

  it('fills defaults inside partial objects', () => {
    const path = writeConfigFile({
      redis: { keyPrefix: 'fleet' },
      mirrorRegistries: [{ name: 'local', provider: 'generic', host: '127.0.0.1:5001' }],
      registries: [{ host: 'registry.example' }],
      copy: { blobConcurrency: 8 },
      worker: { metricsPort: 0 },
    });
    const config = loadConfig({ MIRRORFLEET_CONFIG: path });

    expect(config.redis).toEqual({ url: 'redis://127.0.0.1:6379', keyPrefix: 'fleet' });
    expect(config.mirrorRegistries).toEqual([
      {
        name: 'local',
        provider: 'generic',
        host: '127.0.0.1:5001',
        prefix: '',
        retentionSeconds: 365 * 86_400,
        previousImageRetentionSeconds: 86_400,
        maxDeletePercent: 50,
      },
    ]);
    expect(config.registries).toEqual([{ host: 'registry.example', insecure: false }]);
    expect(config.copy).toEqual({ monolithicMaxBytes: 128 * 1024 * 1024, chunkBytes: 16 * 1024 * 1024, blobConcurrency: 8 });
    expect(config.worker).toEqual({ concurrency: 4, metricsPort: 0, shutdownGraceSeconds: 30 });
  });

  it('ignores unrelated MIRRORFLEET variables', () => {
    expect(loadConfig({ MIRRORFLEET_SOAK: '1', MIRRORFLEET_SOMETHING_ELSE: 'x' })).toEqual(DEFAULT_CONFIG);
  });

  it('reads process.env without an argument', () => {
    const saved = process.env['MIRRORFLEET_KEY_PREFIX'];
    process.env['MIRRORFLEET_KEY_PREFIX'] = 'from-process-env';
    try {
      expect(loadConfig().redis.keyPrefix).toBe('from-process-env');
    } finally {
      if (saved === undefined) delete process.env['MIRRORFLEET_KEY_PREFIX'];
      else process.env['MIRRORFLEET_KEY_PREFIX'] = saved;
    }
  });
});

describe('loadConfig file', () => {
  const fullFile = {
    redis: { url: 'rediss://redis.internal:6380/2', keyPrefix: '{fleet}' },
    mirrorRegistries: [
      {
        name: 'local',
        provider: 'generic',
        host: 'Registry.Example:443',
        prefix: 'team/mirror',
        retentionSeconds: 3600,
        previousImageRetentionSeconds: 600,
        maxDeletePercent: 20,
      },
    ],
    registries: [{ host: '127.0.0.1:5001', insecure: true, username: 'pusher', password: 'push-secret' }],
    allowNetworks: ['10.0.0.0/8', 'fd00::/8'],
    dockerConfigPath: '/home/app/.docker/config.json',
    copy: { monolithicMaxBytes: 0, chunkBytes: 8 * 1024 * 1024, blobConcurrency: 2 },
    worker: { concurrency: 16, metricsPort: 9100, shutdownGraceSeconds: 120 },
    limits: { jobTimeoutSeconds: 600, requestTimeoutSeconds: 30 },
    api: { port: 9080, tokens: [{ token: 'file-token-0123456789', scopes: ['enqueue', 'admin'] }] },
    cleanup: { sweepIntervalSeconds: 3600, auditMaxEntries: 5000 },
    build: { builder: 'buildah', concurrency: 2, timeoutSeconds: 900, cacheRetentionSeconds: 86_400 },
    secretKey: Buffer.alloc(32, 1).toString('base64'),
    secretKeyPrevious: Buffer.alloc(32, 2).toString('base64'),
    logLevel: 'debug',
  };

  it('reads every key', () => {
    const config = loadConfig({ MIRRORFLEET_CONFIG: writeConfigFile(fullFile) });

    expect(config).toEqual({
      ...fullFile,
      mirrorRegistries: [{ ...fullFile.mirrorRegistries[0], host: 'registry.example' }],
    });
  });

  it('normalises registry hosts', () => {
    const path = writeConfigFile({ registries: [{ host: 'A.Example:443' }, { host: 'B.example:5000' }] });
    const hosts = loadConfig({ MIRRORFLEET_CONFIG: path }).registries.map((entry) => entry.host);

    expect(hosts).toEqual(['a.example', 'b.example:5000']);
  });

  it('accepts a byte order mark', () => {
    const path = writeConfigFile(`\uFEFF${JSON.stringify({ logLevel: 'warn' })}`);

    expect(loadConfig({ MIRRORFLEET_CONFIG: path }).logLevel).toBe('warn');
  });

  it('matches the exported schema', () => {
    expect(configFileSchema.parse(fullFile).worker.concurrency).toBe(16);
  });
});

describe('loadConfig precedence', () => {
  const file = {
    redis: { url: 'redis://file.internal:6379', keyPrefix: 'file-prefix' },
    mirrorRegistries: [{ name: 'from-file', provider: 'generic', host: 'file.example' }],
    registries: [{ host: 'file.example', insecure: true, username: 'file-user', password: 'file-password' }],
    allowNetworks: ['10.0.0.0/8'],
    dockerConfigPath: '/file/config.json',
    copy: { blobConcurrency: 3 },
    worker: { concurrency: 2, metricsPort: 9001, shutdownGraceSeconds: 10 },
    logLevel: 'warn',
  };

  it('keeps file values without variables', () => {
    const config = loadConfig({ MIRRORFLEET_CONFIG: writeConfigFile(file) });

    expect(config.redis).toEqual(file.redis);
    expect(config.worker).toEqual(file.worker);
    expect(config.logLevel).toBe('warn');
    expect(config.dockerConfigPath).toBe('/file/config.json');
  });

  it('lets variables override file values', () => {
    const config = loadConfig({
      MIRRORFLEET_CONFIG: writeConfigFile(file),
      MIRRORFLEET_REDIS_URL: 'redis://env.internal:6379',
      MIRRORFLEET_KEY_PREFIX: 'env-prefix',
      MIRRORFLEET_LOG_LEVEL: 'trace',
      MIRRORFLEET_CONCURRENCY: '12',
      MIRRORFLEET_METRICS_PORT: '0',
      MIRRORFLEET_DOCKER_CONFIG: '/env/config.json',
      MIRRORFLEET_MIRROR_REGISTRIES: 'from-env=env.example/mirror',
      MIRRORFLEET_ALLOW_NETWORKS: '192.168.0.0/16',
    });

    expect(config.redis).toEqual({ url: 'redis://env.internal:6379', keyPrefix: 'env-prefix' });
    expect(config.logLevel).toBe('trace');
    expect(config.worker.concurrency).toBe(12);
    expect(config.worker.metricsPort).toBe(0);
    expect(config.dockerConfigPath).toBe('/env/config.json');
    expect(config.mirrorRegistries.map((registry) => registry.name)).toEqual(['from-env']);
    expect(config.allowNetworks).toEqual(['192.168.0.0/16']);
  });

  it('keeps file values that no variable sets', () => {
    const config = loadConfig({ MIRRORFLEET_CONFIG: writeConfigFile(file), MIRRORFLEET_CONCURRENCY: '12' });

    expect(config.worker.shutdownGraceSeconds).toBe(10);
    expect(config.worker.metricsPort).toBe(9001);
    expect(config.copy.blobConcurrency).toBe(3);
    expect(config.registries).toEqual(file.registries);
  });

  it('merges credentials over file credentials', () => {
    const config = loadConfig({
      MIRRORFLEET_CONFIG: writeConfigFile(file),
      MIRRORFLEET_REGISTRY_CREDENTIALS: JSON.stringify({ 'FILE.example': { username: 'env-user', password: 'env-password' } }),
    });

    expect(config.registries).toEqual([
      { host: 'file.example', insecure: true, username: 'env-user', password: 'env-password' },
    ]);
  });
});

describe('loadConfig file errors', () => {
  it('names a missing file', () => {
    const path = join(configDirectory.path, 'absent.json');
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path });

    expect(problemFor(message, 'MIRRORFLEET_CONFIG')).toBe(
      `MIRRORFLEET_CONFIG: file ${JSON.stringify(path)} not found; expected a path to a readable JSON configuration file`,
    );
  });

  it('names an unreadable path', () => {
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: configDirectory.path });

    expect(problemFor(message, 'MIRRORFLEET_CONFIG')).toContain(`cannot read file ${JSON.stringify(configDirectory.path)} (EISDIR)`);
  });

  it('rejects an empty MIRRORFLEET_CONFIG', () => {
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: '' });

    expect(problemFor(message, 'MIRRORFLEET_CONFIG')).toBe(
      'MIRRORFLEET_CONFIG: invalid value ""; expected a path to a readable JSON configuration file',
    );
  });

  it('names an unparsable file with position', () => {
    const path = writeConfigFile('{\n  "logLevel": "info"\n  "redis": {}\n}');
    const line = problemFor(configErrorMessage({ MIRRORFLEET_CONFIG: path }), 'MIRRORFLEET_CONFIG');

    expect(line).toContain(`file ${JSON.stringify(path)} is not valid JSON at line 3, column 3`);
    expect(line).toContain('expected a JSON object (YAML is not supported yet)');
  });

  it('names a YAML file as not JSON', () => {
    const path = writeConfigFile('logLevel: info\n', 'config.yaml');
    const line = problemFor(configErrorMessage({ MIRRORFLEET_CONFIG: path }), 'MIRRORFLEET_CONFIG');

    expect(line).toContain(`file ${JSON.stringify(path)} is not valid JSON`);
    expect(line).toContain('YAML is not supported yet');
  });

  it('rejects a file that is not an object', () => {
    const path = writeConfigFile('[1, 2]');
    const line = problemFor(configErrorMessage({ MIRRORFLEET_CONFIG: path }), 'MIRRORFLEET_CONFIG');

    expect(line).toContain('invalid value an array');
    expect(line).toContain('expected an object with the keys redis, mirrorRegistries');
  });

  it('names the file when keys in it are invalid', () => {
    const path = writeConfigFile({ logLevel: 'loud' });
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path });

    expect(message.startsWith(`invalid configuration (file ${JSON.stringify(path)}): logLevel: `)).toBe(true);
  });

  // Each case: file content, key, value as shown, and the accepted values as shown.
  const cases: [string, unknown, string, string, string][] = [
    ['unknown top-level key', { logLevl: 'info' }, 'logLevl', 'unknown key', 'one of the keys redis, mirrorRegistries, registries, allowNetworks, dockerConfigPath, copy, worker, limits'],
    ['unknown nested key', { redis: { URL: 'redis://x' } }, 'redis.URL', 'unknown key', 'one of the keys url, keyPrefix'],
    ['redis URL scheme', { redis: { url: 'http://127.0.0.1:6379' } }, 'redis.url', '"http://127.0.0.1:6379"', 'a URL starting with redis:// or rediss://'],
    ['redis URL without host', { redis: { url: 'redis://' } }, 'redis.url', '"redis://"', 'a URL starting with redis:// or rediss://'],
    ['key prefix characters', { redis: { keyPrefix: 'has space' } }, 'redis.keyPrefix', '"has space"', '1 to 64 characters from A-Z, a-z, 0-9 and _ . : { } -'],
    ['mirror registry name', { mirrorRegistries: [{ name: 'Local', provider: 'generic', host: 'r.example' }] }, 'mirrorRegistries.0.name', '"Local"', 'a name matching [a-z0-9][a-z0-9-]{0,62}'],
    ['mirror registry provider', { mirrorRegistries: [{ name: 'a', provider: 'quay', host: 'r.example' }] }, 'mirrorRegistries.0.provider', '"quay"', 'one of the providers "generic", "ecr", "artifact-registry", "scaleway"'],
    ['missing provider', { mirrorRegistries: [{ name: 'a', host: 'r.example' }] }, 'mirrorRegistries.0.provider', 'missing', 'one of the providers "generic"'],
    ['missing host', { mirrorRegistries: [{ name: 'a', provider: 'generic' }] }, 'mirrorRegistries.0.host', 'missing', 'a registry host as HOST or HOST:PORT'],
    ['host with scheme', { mirrorRegistries: [{ name: 'a', provider: 'generic', host: 'https://r.example' }] }, 'mirrorRegistries.0.host', '"https://r.example"', 'a registry host as HOST or HOST:PORT without scheme or path'],
    ['prefix with slash', { mirrorRegistries: [{ name: 'a', provider: 'generic', host: 'r.example', prefix: 'mirror/' }] }, 'mirrorRegistries.0.prefix', '"mirror/"', "'' or lowercase repository path components separated by '/', such as mirror or team/mirror, without a leading or trailing '/'"],
    ['prefix uppercase', { mirrorRegistries: [{ name: 'a', provider: 'generic', host: 'r.example', prefix: 'Mirror' }] }, 'mirrorRegistries.0.prefix', '"Mirror"', "'' or lowercase repository path components"],
    ['retention in milliseconds', { mirrorRegistries: [{ name: 'a', provider: 'generic', host: 'r.example', retentionSeconds: 604_800_000 }] }, 'mirrorRegistries.0.retentionSeconds', '604800000', 'an integer from 0 to 315360000 (seconds)'],
    ['duplicate mirror registry name', { mirrorRegistries: [{ name: 'a', provider: 'generic', host: 'r.example' }, { name: 'a', provider: 'generic', host: 's.example' }] }, 'mirrorRegistries.1.name', '"a"', 'a name not already used by mirrorRegistries.0'],
    ['duplicate mirror registry location', { mirrorRegistries: [{ name: 'a', provider: 'generic', host: 'r.example' }, { name: 'b', provider: 'generic', host: 'R.example:443' }] }, 'mirrorRegistries.1.host', '"r.example"', 'a host and prefix not already used by mirrorRegistries.0'],
    ['registries not an array', { registries: 'r.example' }, 'registries', '"r.example"', 'an array of registry access settings'],
    ['insecure not boolean', { registries: [{ host: 'r.example', insecure: 'yes' }] }, 'registries.0.insecure', '"yes"', 'true or false'],
    ['username without password', { registries: [{ host: 'r.example', username: 'u' }] }, 'registries.0.password', 'missing', 'a password with the username'],
    ['password without username', { registries: [{ host: 'r.example', password: 'p4ssword' }] }, 'registries.0.username', 'missing', 'a username with the password'],
    ['duplicate registry host', { registries: [{ host: 'r.example' }, { host: 'R.EXAMPLE' }] }, 'registries.1.host', '"r.example"', 'a host not already configured by registries.0'],
    ['CIDR prefix length', { allowNetworks: ['10.0.0.0/33'] }, 'allowNetworks.0', '"10.0.0.0/33"', 'an IPv4 or IPv6 CIDR block such as 10.0.0.0/8 or fd00::/8'],
    ['CIDR without length', { allowNetworks: ['10.0.0.1'] }, 'allowNetworks.0', '"10.0.0.1"', 'an IPv4 or IPv6 CIDR block'],
    ['empty docker config path', { dockerConfigPath: '' }, 'dockerConfigPath', '""', 'a non-empty path to a docker config.json file'],
    ['copy not an object', { copy: 5 }, 'copy', '5', 'an object with the keys monolithicMaxBytes, chunkBytes, blobConcurrency'],
    ['chunk size below range', { copy: { chunkBytes: 1024 } }, 'copy.chunkBytes', '1024', 'an integer from 1048576 to 1073741824 (bytes)'],
    ['blob concurrency zero', { copy: { blobConcurrency: 0 } }, 'copy.blobConcurrency', '0', 'an integer from 1 to 64'],
    ['concurrency fraction', { worker: { concurrency: 1.5 } }, 'worker.concurrency', '1.5', 'an integer from 1 to 256'],
    ['concurrency as string', { worker: { concurrency: '4' } }, 'worker.concurrency', '"4"', 'an integer from 1 to 256'],
    ['metrics port range', { worker: { metricsPort: 65_536 } }, 'worker.metricsPort', '65536', 'an integer from 0 to 65535 (0 turns the metrics endpoint off)'],
    ['shutdown grace negative', { worker: { shutdownGraceSeconds: -1 } }, 'worker.shutdownGraceSeconds', '-1', 'an integer from 0 to 3600 (seconds)'],
    ['log level case', { logLevel: 'INFO' }, 'logLevel', '"INFO"', 'one of fatal, error, warn, info, debug, trace'],
  ];

  for (const [label, content, key, shownValue, expected] of cases) {
    it(`reports ${label}`, () => {
      const line = problemFor(configErrorMessage({ MIRRORFLEET_CONFIG: writeConfigFile(content) }), key);

      expect(line.startsWith(`${key}: `)).toBe(true);
      if (shownValue === 'missing' || shownValue === 'unknown key') expect(line).toContain(`: ${shownValue}; `);
      else expect(line).toContain(`invalid value ${shownValue};`);
      expect(line).toContain(`expected ${expected}`);
    });
  }

  it('lists every problem in one message', () => {
    const path = writeConfigFile({
      redis: { url: 'http://x' },
      worker: { concurrency: 0 },
      allowNetworks: ['nope'],
      typo: true,
    });
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_METRICS_PORT: 'abc' });

    expect(message).toMatch(/^invalid configuration \(file "[^"]+"\), 5 problems:\n/);
    expect(problemLines(message).map((line) => line.split(': ')[0]).sort()).toEqual([
      'MIRRORFLEET_METRICS_PORT',
      'allowNetworks.0',
      'redis.url',
      'typo',
      'worker.concurrency',
    ]);
  });

  it('reports variable problems with an unreadable file', () => {
    const message = configErrorMessage({
      MIRRORFLEET_CONFIG: join(configDirectory.path, 'absent.json'),
      MIRRORFLEET_CONCURRENCY: 'many',
    });

    expect(problemLines(message)).toHaveLength(2);
    expect(problemFor(message, 'MIRRORFLEET_CONCURRENCY')).toContain('"many"');
  });

  it('reports file problems that a variable overrides', () => {
    const path = writeConfigFile({ redis: { url: 'http://x' } });
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_REDIS_URL: 'redis://127.0.0.1:6379' });

    expect(problemFor(message, 'redis.url')).toContain('"http://x"');
  });
});

describe('loadConfig secrets', () => {
  it('redacts an invalid password', () => {
    const path = writeConfigFile({ registries: [{ host: 'r.example', username: 'u', password: 987_654_321 }] });
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path });

    expect(problemFor(message, 'registries.0.password')).toContain('invalid value <redacted>;');
    expect(message).not.toContain('987654321');
  });

  it('hides values of unknown keys', () => {
    const path = writeConfigFile({ registries: [{ host: 'r.example', username: 'u', pasword: 'typo-secret-1' }] });
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path });

    expect(problemFor(message, 'registries.0.pasword')).toContain('unknown key');
    expect(message).not.toContain('typo-secret-1');
  });

  it('hides the password beside another error', () => {
    const path = writeConfigFile({ registries: [{ host: 'bad host', username: 'u', password: 'beside-secret-1' }] });
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path });

    expect(problemFor(message, 'registries.0.host')).toContain('"bad host"');
    expect(message).not.toContain('beside-secret-1');
  });

  it('hides objects and arrays whole', () => {
    const path = writeConfigFile({ registries: { host: 'r.example', password: 'object-secret-1' } });
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path });

    expect(problemFor(message, 'registries')).toContain('invalid value an object;');
    expect(message).not.toContain('object-secret-1');
  });

  it('hides file text around a JSON syntax error', () => {
    const path = writeConfigFile('{"registries": [{"host": "r.example", "password": bare-secret-1}]}');
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path });

    expect(problemFor(message, 'MIRRORFLEET_CONFIG')).toContain('is not valid JSON');
    expect(message).not.toContain('bare-secret-1');
  });

  it('hides the Redis URL password in the file', () => {
    const path = writeConfigFile({ redis: { url: 'http://user:url-secret-1@redis.internal:6379' } });
    const line = problemFor(configErrorMessage({ MIRRORFLEET_CONFIG: path }), 'redis.url');

    expect(line).toContain('"http://<redacted>@redis.internal:6379"');
    expect(line).not.toContain('url-secret-1');
  });

  it('registers passwords with the redactor', () => {
    const path = writeConfigFile({
      redis: { url: 'redis://:redis%40secret-1@127.0.0.1:6379' },
      registries: [{ host: 'r.example', username: 'u', password: 'registry-secret-1' }],
    });
    loadConfig({
      MIRRORFLEET_CONFIG: path,
      MIRRORFLEET_REGISTRY_CREDENTIALS: JSON.stringify({ 's.example': { username: 'u', password: 'env-secret-1' } }),
    });

    expect(redact('a registry-secret-1 b')).toBe('a <redacted> b');
    expect(redact('a env-secret-1 b')).toBe('a <redacted> b');
    expect(redact('a redis@secret-1 b')).toBe('a <redacted> b');
    expect(redact('a redis%40secret-1 b')).toBe('a <redacted> b');
  });
});
