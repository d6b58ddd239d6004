import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Credentials } from '../../src/registry/auth.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { copyImage } from '../../src/registry/copy.ts';
import { pushLayoutOverHttp, seedDockerArchive, seedLayout } from '../harness/fixtures.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { inspectRaw } from '../harness/skopeo.ts';
import { startTokenServer, type TokenServer } from '../harness/token-server.ts';
import { BASIC_HTPASSWD, BASIC_USER, inspectRawWithCredentials, loopbackTransport, sha256Of } from './helpers.ts';

/**
 * The fixture images of copy.test.ts, copied through both authenticated registries: from a plain
 * registry into the basic-auth one, from there into the bearer-token one, and from there back into a
 * plain registry. skopeo, logging in on its own, judges every stop.
 */

const TOKEN_USER: Credentials = { username: 'mirror', password: 'token-pw-92f1c4a8e0' };

const IMAGES = [
  { name: 'hello-world 9-platform Docker manifest list', repository: 'library/hello-world', tag: 'list' },
  { name: 'hello-world list with cosign signature tags', repository: 'signed/hello-world', tag: 'list' },
  { name: 'hello-world arm64 Docker v2 manifest', repository: 'library/hello-world', tag: 'arm64' },
  { name: 'busybox amd64 OCI manifest', repository: 'library/busybox', tag: 'amd64' },
  { name: 'busybox arm64 OCI manifest', repository: 'library/busybox', tag: 'arm64' },
  { name: 'alpine 3.10 from a docker-archive', repository: 'library/alpine', tag: '3.10' },
] as const;

let source: TestRegistry;
let basic: TestRegistry;
let token: TestRegistry;
let back: TestRegistry;
let tokens: TokenServer;
const transport = loopbackTransport();

beforeAll(async () => {
  tokens = await startTokenServer({ users: { mirror: TOKEN_USER.password }, grants: [{ user: 'mirror', repository: '*', actions: ['pull', 'push'] }] });
  [source, basic, token, back] = await Promise.all([
    startRegistry(),
    startRegistry({ htpasswd: BASIC_HTPASSWD }),
    startRegistry({ token: tokens.registryAuth('fixture-token-registry') }),
    startRegistry(),
  ]);
  await seedLayout(source.host, 'hello-world-manifest-list', 'library/hello-world', 'list');
  await seedLayout(source.host, 'hello-world-arm64-docker-v2', 'library/hello-world', 'arm64');
  await seedLayout(source.host, 'busybox-1.38.0-uclibc-amd64', 'library/busybox', 'amd64');
  await seedLayout(source.host, 'busybox-1.38.0-uclibc-arm64v8', 'library/busybox', 'arm64');
  await seedDockerArchive(source.host, 'alpine-3.10-docker-archive/alpine-310.tar', 'library/alpine', '3.10');
  await pushLayoutOverHttp(source.url, 'signed/hello-world', 'hello-world-manifest-list-cosign', 'list');
});

afterAll(async () => {
  await transport.close();
  await Promise.all([source?.stop(), basic?.stop(), token?.stop(), back?.stop(), tokens?.stop()]);
});

function client(registry: TestRegistry, credentials?: Credentials): RegistryClient {
  return new RegistryClient({ registry: registry.host, insecure: true, transport, ...(credentials ? { credentials } : {}) });
}

describe('fixture copies through authenticated registries', () => {
  test.each(IMAGES)('$name passes both auth registries unchanged', async ({ repository, tag }) => {
    const sourceBytes = await inspectRaw(`${source.host}/${repository}:${tag}`);
    const copied = `via/${repository}-${tag}`;
    const hops = [
      { from: client(source), fromRepository: repository, to: client(basic, BASIC_USER) },
      { from: client(basic, BASIC_USER), fromRepository: copied, to: client(token, TOKEN_USER) },
      { from: client(token, TOKEN_USER), fromRepository: copied, to: client(back) },
    ];

    for (const hop of hops) {
      const result = await copyImage({ client: hop.from, repository: hop.fromRepository, tag }, { client: hop.to, repository: copied, tag });
      expect(result.sourceDigest).toBe(sha256Of(sourceBytes));
      expect(result.targetDigest).toBe(result.sourceDigest);
      expect(result.manifests.copied).toBeGreaterThan(0);
      expect(result.blobs.copied).toBeGreaterThan(0);
    }

    const viaBasic = await inspectRawWithCredentials(`${basic.host}/${copied}:${tag}`, BASIC_USER);
    const viaToken = await inspectRawWithCredentials(`${token.host}/${copied}:${tag}`, TOKEN_USER);
    const backHome = await inspectRaw(`${back.host}/${copied}:${tag}`);
    expect(viaBasic.equals(sourceBytes), 'the basic-auth registry serves the source bytes').toBe(true);
    expect(viaToken.equals(sourceBytes), 'the bearer-token registry serves the source bytes').toBe(true);
    expect(backHome.equals(sourceBytes), 'the copy out of both serves the source bytes').toBe(true);
  });
});
