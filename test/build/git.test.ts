import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, mkdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { checkGitHost, createGit, normaliseCommit, parseGitUrl } from '../../src/build/git.ts';
import { AddressRejectedError, InvalidInputError } from '../../src/errors.ts';
import { NetworkPolicy } from '../../src/net/policy.ts';

describe('git source url', () => {
  test('accepted forms', () => {
    expect(parseGitUrl('/srv/git/app')).toEqual({ kind: 'local', path: '/srv/git/app' });
    expect(parseGitUrl('file:///srv/git/app')).toEqual({ kind: 'local', path: '/srv/git/app' });
    expect(parseGitUrl('https://git.example/org/app.git')).toEqual({ kind: 'remote', url: 'https://git.example/org/app.git', host: 'git.example' });
    expect(parseGitUrl('ssh://git@git.example:2222/org/app.git')).toMatchObject({ kind: 'remote', host: 'git.example' });
    expect(parseGitUrl('git@github.com:org/app.git')).toMatchObject({ kind: 'remote', host: 'github.com' });
    expect(parseGitUrl('https://[::1]:8443/app.git')).toMatchObject({ kind: 'remote', host: '::1' });
  });

  test('remote helper and option forms are rejected', () => {
    expect(() => parseGitUrl('ext::sh -c touch% /tmp/pwned')).toThrow(InvalidInputError);
    expect(() => parseGitUrl('fd::17')).toThrow(/remote helper/);
    expect(() => parseGitUrl('--upload-pack=touch')).toThrow(/must not start with "-"/);
    expect(() => parseGitUrl('-oProxyCommand=x')).toThrow(InvalidInputError);
    expect(() => parseGitUrl('relative/path')).toThrow(/expected an absolute local path/);
  });

  test('URL credentials rejected, not shown', () => {
    const attempt = () => parseGitUrl('https://user:hunter22@git.example/app.git');

    expect(attempt).toThrow(/credential helper/);
    expect(attempt).not.toThrow(/hunter22/);
    expect(() => parseGitUrl('https://ghp_token@git.example/app.git')).toThrow(/credentials/);
    expect(() => parseGitUrl('ssh://git:pw@git.example/app.git')).toThrow(/credentials/);
  });

  test('other schemes are rejected', () => {
    expect(() => parseGitUrl('ftp://git.example/app.git')).toThrow(/scheme ftp is not accepted/);
  });

  test('commit must be a full id', () => {
    expect(normaliseCommit('A'.repeat(40))).toBe('a'.repeat(40));
    expect(() => normaliseCommit('abc1234')).toThrow(/full commit id/);
    expect(() => normaliseCommit('main')).toThrow(InvalidInputError);
  });
});

describe('git source host', () => {
  const policy = new NetworkPolicy([]);
  const resolver = (addresses: string[]) => async () => addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));

  test('metadata address is rejected', async () => {
    await expect(checkGitHost(parseGitUrl('http://169.254.169.254/repo.git'), policy, resolver([]))).rejects.toThrow(AddressRejectedError);
  });

  test('loopback rejected unless allowed', async () => {
    const location = parseGitUrl('https://git.internal/app.git');

    await expect(checkGitHost(location, policy, resolver(['127.0.0.1']))).rejects.toThrow(/git source host git.internal is not allowed/);
    await expect(checkGitHost(location, new NetworkPolicy(['127.0.0.0/8']), resolver(['127.0.0.1']))).resolves.toBeUndefined();
  });

  test('local path needs no lookup', async () => {
    await expect(checkGitHost(parseGitUrl('/srv/git/app'), policy, async () => { throw new Error('no lookup expected'); })).resolves.toBeUndefined();
  });
});

describe('git operations', () => {
  let directory: string;
  let source: string;
  let first: string;
  let second: string;
  const git = createGit({ timeoutMs: 30_000 });
  const run = (args: string[]) => execa('git', ['-C', source, ...args]);

  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), 'mirrorfleet-git-test-'));
    source = join(directory, 'source repo');
    await mkdir(join(source, 'app', 'docker'), { recursive: true });
    await run(['init', '--quiet']);
    await run(['config', 'user.email', 'test@example.invalid']);
    await run(['config', 'user.name', 'test']);
    await writeFile(join(source, 'app', 'docker', 'Dockerfile'), 'FROM scratch\n');
    await symlink('docker/Dockerfile', join(source, 'app', 'Dockerfile'));
    await symlink('../../outside', join(source, 'app', 'escape'));
    await run(['add', '-A']);
    await run(['commit', '--quiet', '-m', 'first']);
    first = (await run(['rev-parse', 'HEAD'])).stdout;
    await writeFile(join(source, 'app', 'later.txt'), 'later\n');
    await run(['add', '-A']);
    await run(['commit', '--quiet', '-m', 'second']);
    second = (await run(['rev-parse', 'HEAD'])).stdout;
  });

  afterAll(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  test('fetches older commit, follows symlink', async () => {
    const gitDir = join(directory, 'fetch-old');
    await git.fetch(source, first, gitDir);

    expect((await git.readFile(gitDir, first, 'app/Dockerfile'))?.toString()).toBe('FROM scratch\n');
    expect(await git.readFile(gitDir, first, 'app/missing')).toBeUndefined();
    await expect(git.readFile(gitDir, first, 'app/escape')).rejects.toThrow(/points outside the git repository/);
  });

  test('checks out into separate folder', async () => {
    const gitDir = join(directory, 'fetch-new');
    const tree = join(directory, 'tree');
    await mkdir(tree);
    await git.fetch(source, second, gitDir);
    await git.checkout(gitDir, second, tree);

    expect(await readFile(join(tree, 'app', 'later.txt'), 'utf8')).toBe('later\n');
    expect(await readlink(join(tree, 'app', 'Dockerfile'))).toBe('docker/Dockerfile');
    await expect(readFile(join(tree, '.git', 'HEAD')), 'no .git in the build context').rejects.toThrow();
  });

  test('unknown commit fails as invalid input', async () => {
    await expect(git.fetch(source, 'f'.repeat(40), join(directory, 'fetch-unknown'))).rejects.toThrow(InvalidInputError);
  });

  test('missing repository fails as invalid input', async () => {
    await expect(git.fetch(join(directory, 'nothing here'), first, join(directory, 'fetch-missing'))).rejects.toThrow(/does not appear to be a git repository/);
  });
});
