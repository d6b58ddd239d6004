import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { tmpdir } from 'node:os';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ConfigError, RegistryError } from '../../src/errors.ts';
import { redact } from '../../src/log/redact.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { resolveCredentials } from '../../src/registry/credentials.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { BASIC_HTPASSWD, BASIC_USER, FAST_RETRY, loopbackTransport } from './helpers.ts';

let dir: string;
let helperLog: string;
let basic: TestRegistry;
const originalPath = process.env.PATH;
const transport = loopbackTransport();

/**
 * Writes `docker-credential-<name>`, a helper that records each requested server and replies with the
 * shell commands of `answers` for it. Other servers get the helpers' not-found reply.
 */
async function writeHelper(name: string, answers: Record<string, string>): Promise<void> {
  const cases = Object.entries(answers)
    .map(([server, commands]) => `  '${server}') ${commands} ;;`)
    .join('\n');
  const script = `#!/bin/sh
[ "$1" = get ] || exit 9
server=$(cat)
printf '%s %s\\n' '${name}' "$server" >> '${helperLog}'
case "$server" in
${cases}
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac
`;
  const path = join(dir, `docker-credential-${name}`);
  await writeFile(path, script);
  await chmod(path, 0o755);
}

function reply(username: string, secret: string): string {
  return `printf '{"ServerURL":"%s","Username":"${username}","Secret":"${secret}"}' "$server"`;
}

async function dockerConfig(name: string, config: unknown): Promise<string> {
  const path = join(dir, `${name}.json`);
  await writeFile(path, typeof config === 'string' ? config : JSON.stringify(config));
  return path;
}

function base64(text: string): string {
  return Buffer.from(text).toString('base64');
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mirrorfleet-credentials-'));
  helperLog = join(dir, 'helper.log');
  basic = await startRegistry({ htpasswd: BASIC_HTPASSWD });
  await writeHelper('mfhelper', {
    'registry.example:5000': reply('helper-user', 'helper-secret-4b1d9e'),
    'https://index.docker.io/v1/': reply('hub-user', 'hub-secret-7c3a0f'),
    [basic.host]: reply(BASIC_USER.username, BASIC_USER.password),
    'token.example': reply('<token>', 'identity-token-2e8f61'),
    'broken.example': `echo 'keychain is locked' >&2; exit 3`,
  });
  await writeHelper('mfstore', { 'store.example': reply('store-user', 'store-secret-6a2c8d'), 'registry.example:5000': reply('store-user', 'store-secret-6a2c8d') });
  process.env.PATH = `${dir}${delimiter}${originalPath ?? ''}`;
});

afterAll(async () => {
  process.env.PATH = originalPath;
  await transport.close();
  await basic?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function helperCalls(): Promise<string[]> {
  const text = await readFile(helperLog, 'utf8').catch(() => '');
  await writeFile(helperLog, '');
  return text.split('\n').filter((line) => line !== '');
}

describe('resolveCredentials', () => {
  test('configured credentials come first', async () => {
    const path = await dockerConfig('configured', { auths: { 'registry.example:5000': { auth: base64('file-user:file-secret-93d1') } } });

    const credentials = await resolveCredentials('registry.example:5000', { configured: { username: 'config-user', password: 'config-secret-55e0' }, dockerConfigPath: path });

    expect(credentials).toEqual({ username: 'config-user', password: 'config-secret-55e0' });
  });

  test('reads a base64 auth entry of config.json', async () => {
    const path = await dockerConfig('auth', { auths: { 'registry.example:5000': { auth: base64('file-user:file-secret:with-colon-81af') } } });

    expect(await resolveCredentials('registry.example:5000', { dockerConfigPath: path })).toEqual({ username: 'file-user', password: 'file-secret:with-colon-81af' });
  });

  test('reads a username and password entry of config.json', async () => {
    const path = await dockerConfig('plain', { auths: { 'registry.example:5000': { username: 'plain-user', password: 'plain-secret-0b7e' } } });

    expect(await resolveCredentials('registry.example:5000', { dockerConfigPath: path })).toEqual({ username: 'plain-user', password: 'plain-secret-0b7e' });
  });

  test('matches keys written with a scheme and a path', async () => {
    const path = await dockerConfig('keys', {
      auths: {
        'https://index.docker.io/v1/': { auth: base64('hub-file-user:hub-file-secret-2d6c') },
        'http://REGISTRY.example:5000/v2/': { auth: base64('upper-user:upper-secret-c4f9') },
      },
    });

    expect(await resolveCredentials('docker.io', { dockerConfigPath: path })).toEqual({ username: 'hub-file-user', password: 'hub-file-secret-2d6c' });
    expect(await resolveCredentials('registry.example:5000', { dockerConfigPath: path })).toEqual({ username: 'upper-user', password: 'upper-secret-c4f9' });
  });

  test('runs the credHelpers helper with the server on stdin', async () => {
    const path = await dockerConfig('helpers', { credHelpers: { 'registry.example:5000': 'mfhelper', 'docker.io': 'mfhelper' } });
    await helperCalls();

    expect(await resolveCredentials('registry.example:5000', { dockerConfigPath: path })).toEqual({ username: 'helper-user', password: 'helper-secret-4b1d9e' });
    expect(await resolveCredentials('docker.io', { dockerConfigPath: path })).toEqual({ username: 'hub-user', password: 'hub-secret-7c3a0f' });
    expect(await helperCalls()).toEqual(['mfhelper registry.example:5000', 'mfhelper https://index.docker.io/v1/']);
  });

  test('a credHelpers entry wins over credsStore, which wins over auths', async () => {
    const path = await dockerConfig('store', {
      credsStore: 'mfstore',
      credHelpers: { 'registry.example:5000': 'mfhelper' },
      auths: { 'store.example': { auth: base64('ignored-user:ignored-secret-77aa') } },
    });

    expect((await resolveCredentials('registry.example:5000', { dockerConfigPath: path }))?.username).toBe('helper-user');
    expect((await resolveCredentials('store.example', { dockerConfigPath: path }))?.username).toBe('store-user');
  });

  test('anonymous when no source has credentials', async () => {
    const path = await dockerConfig('none', { auths: { 'other.example': { auth: base64('other-user:other-secret-1e5b') } }, credHelpers: { 'helper.example': 'mfhelper' } });

    expect(await resolveCredentials('registry.example:5000', {})).toBeUndefined();
    expect(await resolveCredentials('registry.example:5000', { dockerConfigPath: path })).toBeUndefined();
    expect(await resolveCredentials('helper.example', { dockerConfigPath: path }), 'the helper has nothing for this server').toBeUndefined();
  });

  test('a failing helper is denied access with its exit code', async () => {
    const path = await dockerConfig('broken', { credHelpers: { 'broken.example': 'mfhelper', 'missing.example': 'not-installed' } });

    const failure = resolveCredentials('broken.example', { dockerConfigPath: path });
    await expect(failure).rejects.toBeInstanceOf(RegistryError);
    await expect(failure).rejects.toThrow('cannot read the credentials for broken.example: docker-credential-mfhelper get exited with code 3 (keychain is locked)');
    await expect(resolveCredentials('missing.example', { dockerConfigPath: path })).rejects.toThrow('docker-credential-not-installed get could not run: the program is not on PATH');
  });

  test('an identity token from a helper is rejected with advice', async () => {
    const path = await dockerConfig('identity', { credHelpers: { 'token.example': 'mfhelper' } });

    const failure = resolveCredentials('token.example', { dockerConfigPath: path });

    await expect(failure).rejects.toThrow('returned an identity token, which mirrorfleet cannot use; store a username and password or an access token in the helper');
    await expect(failure).rejects.not.toThrow('identity-token-2e8f61');
  });

  test('an unreadable or invalid config file is a ConfigError that quotes no content', async () => {
    const broken = await dockerConfig('invalid', '{"auths": {"registry.example:5000": {"auth": "c2VjcmV0LXBhc3N3b3Jk"');
    const badAuth = await dockerConfig('bad-auth', { auths: { 'registry.example:5000': { auth: base64('no-colon-secret-3f0d') } } });

    await expect(resolveCredentials('registry.example:5000', { dockerConfigPath: join(dir, 'absent.json') })).rejects.toThrow(
      `cannot read the docker config file "${join(dir, 'absent.json')}" (ENOENT)`,
    );
    const invalid = resolveCredentials('registry.example:5000', { dockerConfigPath: broken });
    await expect(invalid).rejects.toBeInstanceOf(ConfigError);
    await expect(invalid).rejects.toThrow(`the docker config file "${broken}" is not valid JSON`);
    await expect(invalid).rejects.not.toThrow('c2VjcmV0');
    await expect(resolveCredentials('registry.example:5000', { dockerConfigPath: badAuth })).rejects.toThrow(
      `the "auth" value of the entry for registry.example:5000 in the docker config file "${badAuth}" is invalid; expected base64 of username:password`,
    );
  });

  test('registers every secret it reads for redaction', async () => {
    const path = await dockerConfig('redaction', {
      auths: { 'auth.example': { auth: base64('redact-user:redact-secret-8c2e') }, 'pair.example': { username: 'pair-user', password: 'pair-secret-d15a' } },
      credHelpers: { 'registry.example:5000': 'mfhelper' },
    });

    await resolveCredentials('auth.example', { dockerConfigPath: path });
    await resolveCredentials('pair.example', { dockerConfigPath: path });
    await resolveCredentials('registry.example:5000', { dockerConfigPath: path });
    await resolveCredentials('configured.example', { configured: { username: 'c', password: 'configured-secret-a0e4' } });

    for (const secret of ['redact-secret-8c2e', base64('redact-user:redact-secret-8c2e'), 'pair-secret-d15a', 'helper-secret-4b1d9e', 'configured-secret-a0e4']) {
      expect(redact(`value ${secret}`)).toBe('value <redacted>');
    }
  });

  test('credentials from a helper log in to a basic-auth registry', async () => {
    const path = await dockerConfig('login', { credHelpers: { [basic.host]: 'mfhelper' } });
    const credentials = await resolveCredentials(basic.host, { dockerConfigPath: path });
    const anonymous = new RegistryClient({ registry: basic.host, insecure: true, transport, retry: FAST_RETRY });
    const loggedIn = new RegistryClient({ registry: basic.host, insecure: true, transport, retry: FAST_RETRY, ...(credentials ? { credentials } : {}) });

    await expect(anonymous.headManifest('app', 'absent')).rejects.toMatchObject({ code: 'REGISTRY_DENIED' });
    expect(await loggedIn.headManifest('app', 'absent')).toBeUndefined();
  });
});
