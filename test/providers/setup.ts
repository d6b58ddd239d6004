import { ECRClient } from '@aws-sdk/client-ecr';
import type { EcrMirrorRegistry } from '../../src/config/config.ts';
import { NetworkPolicy } from '../../src/net/policy.ts';
import { TransportRequestHandler } from '../../src/providers/sdk-http.ts';
import { HttpTransport } from '../../src/registry/http.ts';
import { TEST_ACCESS_KEY, TEST_ACCOUNT, TEST_SECRET_KEY } from './ecr-standin.ts';

/**
 * Shared pieces of the provider tests. Every endpoint points at a local server, credentials are explicit,
 * and the transport's network policy allows loopback only, so nothing can reach a cloud or a metadata
 * address. The loopback guard (test/net/loopback-guard.ts) records any socket that tries.
 */

/** Creates a transport that may connect to 127.0.0.0/8 and the public internet; tests send to loopback only. */
export function loopbackTransport(): HttpTransport {
  return new HttpTransport({ policy: new NetworkPolicy(['127.0.0.0/8']) });
}

/** Creates an ECR API client with fake credentials and no retries, sending to `endpoint` through `transport`. */
export function testEcrClient(endpoint: string, transport: HttpTransport): ECRClient {
  return new ECRClient({
    region: 'eu-west-1',
    endpoint,
    credentials: { accessKeyId: TEST_ACCESS_KEY, secretAccessKey: TEST_SECRET_KEY },
    requestHandler: new TransportRequestHandler(transport, 'ecr-api'),
    maxAttempts: 1,
  });
}

export function ecrRegistry(overrides: Partial<EcrMirrorRegistry> = {}): EcrMirrorRegistry {
  return {
    name: 'aws',
    provider: 'ecr',
    account: TEST_ACCOUNT,
    region: 'eu-west-1',
    host: `${TEST_ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com`,
    prefix: 'mirror',
    retentionSeconds: 7 * 86_400,
    ...overrides,
  };
}
