import { describe, expect, test } from 'vitest';
import { createHash } from 'node:crypto';
import { buildRepositories, gitRepositoryName, shortClusterId } from '../../src/build/repository.ts';
import { InvalidInputError } from '../../src/errors.ts';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
const names = (gitUrl: string, options: { cluster?: string; prefix?: string; maxLength?: number } = {}) =>
  buildRepositories({ cluster: options.cluster ?? 'prod', gitUrl, prefix: options.prefix ?? '', maxLength: options.maxLength ?? 255 });

describe('short cluster id', () => {
  test('UUID gives its first 8 hex characters', () => {
    expect(shortClusterId('3f2a9c1e-77b0-4d2e-9a1f-0c5e8d7b6a43')).toBe('3f2a9c1e');
  });

  test('other ids use their SHA-256', () => {
    expect(shortClusterId('prod')).toBe(sha256('prod').slice(0, 8));
    expect(shortClusterId('prod')).toMatch(/^[0-9a-f]{8}$/);
  });
});

describe('git repository name', () => {
  test('last path component without .git', () => {
    expect(gitRepositoryName('https://git.example/org/My_App.git')).toBe('My_App');
    expect(gitRepositoryName('git@github.com:org/app.git')).toBe('app');
    expect(gitRepositoryName('ssh://git@git.example:2222/org/app/')).toBe('app');
    expect(gitRepositoryName('/srv/git/tools.git/')).toBe('tools');
    expect(gitRepositoryName('file:///srv/git/my%20app')).toBe('my app');
  });

  test('path without a name is rejected', () => {
    expect(() => gitRepositoryName('https://git.example/')).toThrow(InvalidInputError);
  });
});

describe('build repository names', () => {
  const head = `z${sha256('prod').slice(0, 8)}-`;

  test('clean name is kept', () => {
    expect(names('https://git.example/org/my-app.git')).toEqual({ repository: `${head}my-app`, cacheRepository: `${head}my-app-cache` });
  });

  test('sanitised names get a hash', () => {
    const underscore = names('/srv/my_app').repository;
    const dot = names('/srv/my.app').repository;
    const clean = names('/srv/my-app').repository;

    expect(underscore).toBe(`${head}my-app-${sha256('my_app').slice(0, 6)}`);
    expect(dot).toBe(`${head}my-app-${sha256('my.app').slice(0, 6)}`);
    expect(new Set([underscore, dot, clean]).size).toBe(3);
  });

  test('symbol runs become one separator', () => {
    expect(names('/srv/__My  App!!v2__').repository).toBe(`${head}my-app-v2-${sha256('__My  App!!v2__').slice(0, 6)}`);
  });

  test('name of symbols only keeps the hash', () => {
    expect(names('/srv/___').repository).toBe(`${head}${sha256('___').slice(0, 6)}`);
  });

  test('long name is cut to fit', () => {
    const long = `app-${'x'.repeat(300)}`;
    const { repository, cacheRepository } = names(`/srv/${long}`, { prefix: 'team/mirror', maxLength: 100 });

    expect(cacheRepository.length).toBeLessThanOrEqual(100);
    expect(cacheRepository.length).toBe(100);
    expect(repository.startsWith(`team/mirror/${head}app-x`)).toBe(true);
    expect(repository.endsWith(`-${sha256(long).slice(0, 6)}`)).toBe(true);
  });

  test('cut leaves no trailing separator', () => {
    // head is 10 characters and the hash takes 7, so with 100 - 6 for "-cache" the cut keeps 77 characters.
    const name = `${'a'.repeat(76)}-${'b'.repeat(20)}`;
    const { repository } = names(`/srv/${name}`, { maxLength: 100 });

    expect(repository).not.toMatch(/--/);
    expect(repository).toBe(`${head}${'a'.repeat(76)}-${sha256(name).slice(0, 6)}`);
  });

  test('services share, clusters do not', () => {
    expect(names('/srv/app', { cluster: 'prod' })).toEqual(names('/srv/app', { cluster: 'prod' }));
    expect(names('/srv/app', { cluster: 'staging' }).repository).not.toBe(names('/srv/app', { cluster: 'prod' }).repository);
  });

  test('too long prefix is rejected', () => {
    expect(() => names('/srv/app', { prefix: 'p'.repeat(90), maxLength: 100 })).toThrow(/leaves no room/);
  });
});
