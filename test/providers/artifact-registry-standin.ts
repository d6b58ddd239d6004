import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { createVerify, generateKeyPairSync, randomBytes } from 'node:crypto';

/**
 * A local stand-in for the Artifact Registry REST API (v1, the transport of the client's `fallback`
 * mode) and for Google's OAuth2 token endpoint (`POST /token`, the JWT bearer grant). It checks each
 * request against the documented path, method and body, keeps repositories with their cleanup policies
 * and Docker tags, and records every call. Anything else gets 400 and lands in `unexpected`.
 */

export const TEST_PROJECT = 'mirror-project';
export const TEST_LOCATION = 'europe-west4';
export const TEST_REPOSITORY = 'mirror';
const REPOSITORY_NAME = `projects/${TEST_PROJECT}/locations/${TEST_LOCATION}/repositories/${TEST_REPOSITORY}`;
const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

export interface StandInCleanupPolicy {
  id?: string;
  action?: string | number;
  condition?: { tagState?: string | number; olderThan?: string };
}

export interface ArStandIn {
  origin: string;
  /** The service-account key whose assertions the token endpoint accepts, pointing at this stand-in. */
  key: { type: 'service_account'; client_email: string; private_key: string; private_key_id: string; token_uri: string };
  /** The repository, once created: its cleanup policies as sent (proto3 JSON). */
  repository: { cleanupPolicies: Record<string, StandInCleanupPolicy>; format: unknown } | undefined;
  /** Docker tags by `<package>:<tag>`, each naming the digest of its version. */
  tags: Map<string, string>;
  /** Versions by `<package>@<digest>`. */
  versions: Set<string>;
  readonly calls: string[];
  readonly unexpected: string[];
  /** Access tokens issued, newest last, and the ones the API no longer accepts. */
  readonly accessTokens: string[];
  readonly revoked: Set<string>;
  failNext(call: string, status: number, grpcStatus: string): void;
  close(): Promise<void>;
}

export async function startArStandIn(): Promise<ArStandIn> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const injected = new Map<string, { status: number; grpcStatus: string }>();

  const send = (response: ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    response.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) }).end(text);
  };
  const googleError = (response: ServerResponse, status: number, grpcStatus: string, message: string) =>
    send(response, status, { error: { code: status, message, status: grpcStatus } });

  const server = createServer(async (request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const url = new URL(request.url ?? '/', state.origin);
    const path = decodeURIComponent(url.pathname);
    const call = `${request.method} ${path}`;
    const reject = (problem: string) => {
      state.unexpected.push(`${call}: ${problem}`);
      googleError(response, 400, 'INVALID_ARGUMENT', `unexpected request: ${problem}`);
    };

    if (call === 'POST /token') {
      const form = new URLSearchParams(text);
      const assertion = form.get('assertion') ?? '';
      const [header, claims, signature] = assertion.split('.');
      const verified = header && claims && signature && createVerify('RSA-SHA256').update(`${header}.${claims}`).verify(publicKey, signature, 'base64url');
      const payload = claims ? (JSON.parse(Buffer.from(claims, 'base64url').toString('utf8')) as { aud?: string; iss?: string; scope?: string }) : {};
      if (form.get('grant_type') !== JWT_BEARER_GRANT || !verified || payload.aud !== state.key.token_uri || payload.iss !== state.key.client_email) {
        reject('invalid JWT bearer grant');
        return;
      }
      state.calls.push(call);
      const token = `ya29.${randomBytes(24).toString('base64url')}`;
      state.accessTokens.push(token);
      send(response, 200, { access_token: token, expires_in: 3599, token_type: 'Bearer' });
      return;
    }

    const bearer = /^Bearer (.+)$/.exec(String(request.headers.authorization ?? ''))?.[1];
    if (!bearer || !state.accessTokens.includes(bearer) || state.revoked.has(bearer)) {
      state.calls.push(`${call} (401)`);
      googleError(response, 401, 'UNAUTHENTICATED', 'Request had invalid authentication credentials.');
      return;
    }
    const unknownQuery = [...url.searchParams.keys()].find((key) => !['$alt', 'repositoryId', 'updateMask', 'force'].includes(key));
    if (unknownQuery) {
      reject(`query parameter ${unknownQuery}`);
      return;
    }
    state.calls.push(call);
    const failure = injected.get(call);
    if (failure) {
      injected.delete(call);
      googleError(response, failure.status, failure.grpcStatus, `${failure.grpcStatus} injected by the test`);
      return;
    }
    const body = text ? (JSON.parse(text) as Record<string, unknown>) : {};

    if (call === `GET /v1/${REPOSITORY_NAME}`) {
      if (!state.repository) googleError(response, 404, 'NOT_FOUND', 'Requested entity was not found.');
      else send(response, 200, { name: REPOSITORY_NAME, format: 'DOCKER', cleanupPolicies: state.repository.cleanupPolicies });
      return;
    }
    if (call === `POST /v1/projects/${TEST_PROJECT}/locations/${TEST_LOCATION}/repositories`) {
      if (url.searchParams.get('repositoryId') !== TEST_REPOSITORY || (body.format !== 1 && body.format !== 'DOCKER')) {
        reject('repositoryId or format');
        return;
      }
      if (state.repository) {
        googleError(response, 409, 'ALREADY_EXISTS', 'the repository already exists');
        return;
      }
      state.repository = { cleanupPolicies: (body.cleanupPolicies as Record<string, StandInCleanupPolicy>) ?? {}, format: body.format };
      send(response, 200, {
        name: `projects/${TEST_PROJECT}/locations/${TEST_LOCATION}/operations/create-1`,
        done: true,
        response: { '@type': 'type.googleapis.com/google.devtools.artifactregistry.v1.Repository', name: REPOSITORY_NAME, format: 'DOCKER' },
      });
      return;
    }
    if (call === `PATCH /v1/${REPOSITORY_NAME}`) {
      if (url.searchParams.get('updateMask') !== 'cleanup_policies' && url.searchParams.get('updateMask') !== 'cleanupPolicies') {
        reject(`updateMask ${url.searchParams.get('updateMask')}`);
        return;
      }
      if (!state.repository) {
        googleError(response, 404, 'NOT_FOUND', 'Requested entity was not found.');
        return;
      }
      state.repository.cleanupPolicies = (body.cleanupPolicies as Record<string, StandInCleanupPolicy>) ?? {};
      send(response, 200, { name: REPOSITORY_NAME, format: 'DOCKER', cleanupPolicies: state.repository.cleanupPolicies });
      return;
    }

    const tag = new RegExp(`^(GET|DELETE) /v1/${REPOSITORY_NAME}/packages/([^/]+)/tags/([^/]+)$`).exec(call);
    if (tag) {
      // Package ids are percent-encoded inside resource names (`a%2Fb` for the image path `a/b`).
      const key = `${decodeURIComponent(tag[2]!)}:${tag[3]}`;
      const digest = state.tags.get(key);
      if (!digest) googleError(response, 404, 'NOT_FOUND', 'Requested entity was not found.');
      else if (tag[1] === 'GET') send(response, 200, { name: `${REPOSITORY_NAME}/packages/${tag[2]}/tags/${tag[3]}`, version: `${REPOSITORY_NAME}/packages/${tag[2]}/versions/${digest}` });
      else {
        state.tags.delete(key);
        send(response, 200, {});
      }
      return;
    }
    const version = new RegExp(`^DELETE /v1/${REPOSITORY_NAME}/packages/([^/]+)/versions/(sha256:[0-9a-f]{64})$`).exec(call);
    if (version) {
      const packageName = decodeURIComponent(version[1]!);
      const key = `${packageName}@${version[2]}`;
      if (!state.versions.has(key)) googleError(response, 404, 'NOT_FOUND', 'Requested entity was not found.');
      else if ([...state.tags].some(([tagKey, digest]) => tagKey.startsWith(`${packageName}:`) && digest === version[2])) {
        googleError(response, 400, 'FAILED_PRECONDITION', 'the version has tags');
      } else {
        state.versions.delete(key);
        send(response, 200, {
          name: `projects/${TEST_PROJECT}/locations/${TEST_LOCATION}/operations/delete-1`,
          done: true,
          response: { '@type': 'type.googleapis.com/google.protobuf.Empty' },
        });
      }
      return;
    }
    state.calls.pop();
    reject('no such operation');
  });

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const origin = `http://127.0.0.1:${port}`;

  const state: ArStandIn = {
    origin,
    key: {
      type: 'service_account',
      client_email: 'mirrorfleet@mirror-project.iam.gserviceaccount.com',
      private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      private_key_id: 'test-key-1',
      token_uri: `${origin}/token`,
    },
    repository: undefined,
    tags: new Map(),
    versions: new Set(),
    calls: [],
    unexpected: [],
    accessTokens: [],
    revoked: new Set(),
    failNext(call, status, grpcStatus) {
      injected.set(call, { status, grpcStatus });
    },
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
  return state;
}
