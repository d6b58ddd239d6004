import { describe, expect, it } from 'vitest';
import { findMirrorRegistry, loadConfig, registryAccess, requireMirrorRegistry } from '../../src/config/config.ts';
import { InvalidInputError } from '../../src/errors.ts';

const config = loadConfig({
  MIRRORFLEET_MIRROR_REGISTRIES: [
    'local=127.0.0.1:5001/mirror',
    'team=registry.example/team/mirror',
    'root=root.example',
    'other-port=registry.example:5000/mirror',
    'localhost=named.example',
    'by-host=localhost',
  ].join(','),
  MIRRORFLEET_INSECURE_REGISTRIES: '127.0.0.1:5001',
  MIRRORFLEET_REGISTRY_CREDENTIALS: JSON.stringify({ 'Private.Example:443': { username: 'u', password: 'p4ssword' } }),
});

function nameOf(nameOrLocation: string): string | undefined {
  return findMirrorRegistry(config, nameOrLocation)?.name;
}

describe('findMirrorRegistry', () => {
  it('finds by name', () => {
    expect(nameOf('local')).toBe('local');
    expect(nameOf('other-port')).toBe('other-port');
  });

  it('finds by exact location', () => {
    expect(nameOf('127.0.0.1:5001/mirror')).toBe('local');
    expect(nameOf('registry.example/team/mirror')).toBe('team');
  });

  it('compares hosts case-insensitively', () => {
    expect(nameOf('Registry.EXAMPLE/team/mirror')).toBe('team');
  });

  it('ignores port 443', () => {
    expect(nameOf('registry.example:443/team/mirror')).toBe('team');
    expect(nameOf('ROOT.example:443')).toBe('root');
  });

  it('matches the host at another port only there', () => {
    expect(nameOf('registry.example:5000/mirror')).toBe('other-port');
    expect(nameOf('registry.example:5000/team/mirror')).toBeUndefined();
    expect(nameOf('127.0.0.1/mirror')).toBeUndefined();
  });

  it('requires the exact prefix', () => {
    expect(nameOf('registry.example/team')).toBeUndefined();
    expect(nameOf('registry.example/team/mirror/sub')).toBeUndefined();
    expect(nameOf('registry.example/team/Mirror')).toBeUndefined();
  });

  it('matches a bare host to its only registry', () => {
    expect(nameOf('registry.example')).toBe('team');
    expect(nameOf('127.0.0.1:5001')).toBe('local');
    expect(nameOf('REGISTRY.example:443')).toBe('team');
    expect(nameOf('127.0.0.1')).toBeUndefined();
  });

  it('matches no prefix only without prefix', () => {
    expect(nameOf('root.example')).toBe('root');
    expect(nameOf('root.example/')).toBeUndefined();
    expect(nameOf('root.example/mirror')).toBeUndefined();
  });

  it('prefers a name over a host', () => {
    expect(nameOf('localhost')).toBe('localhost');
    expect(nameOf('localhost:443')).toBe('by-host');
    expect(nameOf('named.example')).toBe('localhost');
  });

  it('returns undefined for unknown input', () => {
    expect(nameOf('absent')).toBeUndefined();
    expect(nameOf('https://127.0.0.1:5001/mirror')).toBeUndefined();
    expect(nameOf('')).toBeUndefined();
  });

  it('returns the declared object', () => {
    expect(findMirrorRegistry(config, '127.0.0.1:5001/mirror')).toBe(config.mirrorRegistries[0]);
  });
});

describe('requireMirrorRegistry', () => {
  const shared = loadConfig({ MIRRORFLEET_MIRROR_REGISTRIES: 'team-a=shared.example/a,team-b=shared.example/b,root=root.example,sub=root.example/sub' });

  it('matches a bare host to the registry without prefix', () => {
    expect(requireMirrorRegistry(shared, 'root.example').name).toBe('root');
  });

  it('rejects a bare host of several registries', () => {
    expect(() => requireMirrorRegistry(shared, 'shared.example')).toThrow(InvalidInputError);
    expect(() => requireMirrorRegistry(shared, 'shared.example')).toThrow(
      'registry "shared.example" matches 2 declared mirror registries on that host: team-a (shared.example/a), team-b (shared.example/b); give the name or the whole HOST[:PORT]/PREFIX of one of them',
    );
    expect(findMirrorRegistry(shared, 'shared.example')).toBeUndefined();
  });

  it('rejects an undeclared registry listing the declared ones', () => {
    expect(() => requireMirrorRegistry(shared, 'other.example')).toThrow(
      'registry "other.example" is not a declared mirror registry; declared: team-a (shared.example/a), team-b (shared.example/b), root (root.example), sub (root.example/sub)',
    );
  });

  it('masks credentials in the rejected value', () => {
    expect(() => requireMirrorRegistry(shared, 'user:s3cret@other.example')).toThrow(/registry "<redacted>@other\.example"/);
    expect(() => requireMirrorRegistry(shared, 'user:s3cret@other.example')).not.toThrow(/s3cret/);
  });
});

describe('registryAccess', () => {
  it('returns the entry for a host', () => {
    expect(registryAccess(config, '127.0.0.1:5001')).toEqual({ host: '127.0.0.1:5001', insecure: true });
  });

  it('compares hosts case-insensitively', () => {
    expect(registryAccess(config, 'PRIVATE.example')).toEqual({
      host: 'private.example',
      insecure: false,
      username: 'u',
      password: 'p4ssword',
    });
  });

  it('ignores port 443', () => {
    expect(registryAccess(config, 'private.example:443').username).toBe('u');
  });

  it('keeps other ports distinct', () => {
    expect(registryAccess(config, 'private.example:5000')).toEqual({ host: 'private.example:5000', insecure: false });
  });

  it('defaults unknown hosts to HTTPS without credentials', () => {
    expect(registryAccess(config, 'Unknown.Example')).toEqual({ host: 'unknown.example', insecure: false });
  });
});
