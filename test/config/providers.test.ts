import { describe, expect, it } from 'vitest';
import { configFileSchema, findMirrorRegistry, type Config } from '../../src/config/config.ts';
import { dottedPath, problemsFromIssues } from '../../src/config/problems.ts';
import { DEFAULTS } from '../../src/config/schema.ts';

/** Parses a file's `mirrorRegistries` and returns the result, or the problems as `key: detail; expected ...` lines. */
function parse(mirrorRegistries: unknown[]): { config?: Config; problems: string[] } {
  const result = configFileSchema.safeParse({ mirrorRegistries }, { reportInput: true });
  if (result.success) return { config: result.data, problems: [] };
  const problems = problemsFromIssues(result.error.issues, dottedPath).map((problem) => `${problem.key}: ${problem.detail}; expected ${problem.expected}`);
  return { problems };
}

describe('cloud mirror registries', () => {
  it('derives the ECR registry host', () => {
    const { config } = parse([
      { name: 'eu', provider: 'ecr', account: '123456789012', region: 'eu-west-1' },
      { name: 'cn', provider: 'ecr', account: '123456789012', region: 'cn-north-1', prefix: 'mirror' },
    ]);

    expect(config?.mirrorRegistries.map((registry) => registry.host)).toEqual([
      '123456789012.dkr.ecr.eu-west-1.amazonaws.com',
      '123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn',
    ]);
    expect(config?.mirrorRegistries[0]).toMatchObject({ provider: 'ecr', prefix: '', retentionSeconds: DEFAULTS.retentionSeconds });
  });

  it('puts project and repository before the Artifact Registry prefix', () => {
    const { config } = parse([
      { name: 'gcp', provider: 'artifact-registry', project: 'my-project', location: 'europe-west4', repository: 'mirror', prefix: 'team' },
      { name: 'scoped', provider: 'artifact-registry', project: 'example.com:my-project', location: 'us', repository: 'mirror' },
    ]);

    expect(config?.mirrorRegistries.map((registry) => [registry.host, registry.prefix])).toEqual([
      ['europe-west4-docker.pkg.dev', 'my-project/mirror/team'],
      ['us-docker.pkg.dev', 'example.com/my-project/mirror'],
    ]);
    expect(findMirrorRegistry(config!, 'europe-west4-docker.pkg.dev/my-project/mirror/team')?.name).toBe('gcp');
  });

  it('reads the Scaleway secret key from SCW_SECRET_KEY by default', () => {
    const { config } = parse([{ name: 'scw', provider: 'scaleway', region: 'fr-par', projectId: 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee' }]);

    expect(config?.mirrorRegistries[0]).toMatchObject({ host: 'rg.fr-par.scw.cloud', secretKey: { env: 'SCW_SECRET_KEY' } });
  });

  it('keeps an explicit host and API endpoint', () => {
    const { config } = parse([{ name: 'eu', provider: 'ecr', account: '123456789012', region: 'eu-west-1', host: '127.0.0.1:5000', apiEndpoint: 'http://127.0.0.1:4566' }]);

    expect(config?.mirrorRegistries[0]).toMatchObject({ host: '127.0.0.1:5000', apiEndpoint: 'http://127.0.0.1:4566' });
  });

  // Each case: entry, key, and the accepted values as the problem states them.
  const cases: [string, Record<string, unknown>, string, string][] = [
    ['ECR account', { name: 'a', provider: 'ecr', account: '1234', region: 'eu-west-1' }, 'mirrorRegistries.0.account', 'a 12-digit AWS account id'],
    ['ECR region', { name: 'a', provider: 'ecr', account: '123456789012', region: 'Europe' }, 'mirrorRegistries.0.region', 'an AWS region such as eu-west-1'],
    ['API endpoint with a path', { name: 'a', provider: 'ecr', account: '123456789012', region: 'eu-west-1', apiEndpoint: 'https://api.example/v1' }, 'mirrorRegistries.0.apiEndpoint', 'an http:// or https:// URL without a path'],
    ['project id', { name: 'a', provider: 'artifact-registry', project: 'P', location: 'us', repository: 'mirror' }, 'mirrorRegistries.0.project', 'a Google Cloud project id'],
    ['repository id', { name: 'a', provider: 'artifact-registry', project: 'my-project', location: 'us', repository: '9mirror' }, 'mirrorRegistries.0.repository', 'an Artifact Registry repository id'],
    ['Scaleway project id', { name: 'a', provider: 'scaleway', region: 'fr-par', projectId: 'my-project' }, 'mirrorRegistries.0.projectId', 'a Scaleway project id (a lowercase UUID)'],
    ['Scaleway key source', { name: 'a', provider: 'scaleway', region: 'fr-par', projectId: 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee', secretKey: 'plain' }, 'mirrorRegistries.0.secretKey', 'an object {"env": "NAME"} or {"file": "PATH"}'],
    ['generic keys on ECR', { name: 'a', provider: 'ecr', account: '123456789012', region: 'eu-west-1', project: 'x' }, 'mirrorRegistries.0.project', 'one of the keys name, provider, account, region'],
  ];

  it.each(cases)('rejects %s', (_case, entry, key, expected) => {
    const { problems } = parse([entry]);

    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(new RegExp(`^${key.replaceAll('.', '\\.')}: `));
    expect(problems[0]).toContain(`expected ${expected}`);
  });

  it('never shows the secret key source value', () => {
    const { problems } = parse([{ name: 'a', provider: 'scaleway', region: 'fr-par', projectId: 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee', secretKey: 'e7d1f0a2-plain-secret' }]);

    expect(problems.join('\n')).not.toContain('e7d1f0a2-plain-secret');
  });
});
