import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';

/**
 * A local stand-in for the ECR API: AWS JSON 1.1 over HTTP (`POST /` with
 * `X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.<Operation>`), as the AWS SDK sends it when its
 * `endpoint` points here. It checks each request against the documented shape of its operation, keeps
 * repositories, lifecycle policies, images and push tokens, and records every call. A request for an
 * unknown operation, or one of the wrong shape, gets a 400 response and is recorded in `unexpected`.
 */

export const TEST_ACCOUNT = '123456789012';
export const TEST_ACCESS_KEY = 'AKIDMIRRORFLEETTEST';
export const TEST_SECRET_KEY = 'mirrorfleet-test-secret-access-key';
const TARGET_PREFIX = 'AmazonEC2ContainerRegistry_V20150921.';
const REPOSITORY_NAME = /^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*\/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

export interface StandInImage {
  digest: string;
  tags: string[];
  mediaType: string;
  /** Manifest JSON, for BatchGetImage. */
  manifest: string;
}

export interface StandInRepository {
  tags: { Key: string; Value: string }[];
  lifecyclePolicyText?: string;
  images: StandInImage[];
}

export interface EcrStandIn {
  /** `http://127.0.0.1:PORT`, the SDK's `endpoint`. */
  origin: string;
  repositories: Map<string, StandInRepository>;
  /** Operation names in the order they were called. */
  readonly calls: string[];
  /** Request bodies by call, in the same order as `calls`. */
  readonly bodies: Record<string, unknown>[];
  readonly unexpected: string[];
  /** Push tokens issued by GetAuthorizationToken, newest last. */
  readonly tokens: string[];
  /** Lifetime of issued push tokens, in seconds. Default 12 hours, as ECR's. */
  tokenLifetimeSeconds: number;
  /** Layer digests that BatchCheckLayerAvailability reports as available. */
  availableLayers: Set<string>;
  /** Makes the next call of `operation` fail with the AWS error `type` and HTTP `status`. */
  failNext(operation: string, type: string, status?: number): void;
  close(): Promise<void>;
}

type Body = Record<string, unknown>;
type Handler = (body: Body) => Body;

export async function startEcrStandIn(): Promise<EcrStandIn> {
  const repositories = new Map<string, StandInRepository>();
  const failures = new Map<string, { type: string; status: number }>();

  const fail = (type: string, message: string, status = 400): never => {
    throw Object.assign(new Error(message), { awsType: type, status });
  };
  const repositoryOf = (body: Body): StandInRepository => {
    const repository = repositories.get(body.repositoryName as string);
    return repository ?? fail('RepositoryNotFoundException', `The repository with name '${String(body.repositoryName)}' does not exist`);
  };

  const handlers: Record<string, { required: string[]; optional: string[]; handle: Handler }> = {
    GetAuthorizationToken: {
      required: [],
      optional: ['registryIds'],
      handle: () => {
        const token = randomBytes(24).toString('base64url');
        state.tokens.push(token);
        return {
          authorizationData: [
            {
              authorizationToken: Buffer.from(`AWS:${token}`).toString('base64'),
              expiresAt: Date.now() / 1000 + state.tokenLifetimeSeconds,
              proxyEndpoint: `https://${TEST_ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com`,
            },
          ],
        };
      },
    },
    CreateRepository: {
      required: ['repositoryName'],
      optional: ['registryId', 'tags', 'imageTagMutability', 'imageScanningConfiguration', 'encryptionConfiguration'],
      handle: (body) => {
        const name = body.repositoryName as string;
        if (name.length < 2 || name.length > 256 || !REPOSITORY_NAME.test(name)) fail('InvalidParameterException', `Invalid parameter at 'repositoryName': ${name}`);
        if (repositories.has(name)) fail('RepositoryAlreadyExistsException', `The repository with name '${name}' already exists`);
        const tags = (body.tags as { Key: string; Value: string }[] | undefined) ?? [];
        if (!tags.every((tag) => typeof tag.Key === 'string' && typeof tag.Value === 'string')) fail('InvalidTagParameterException', 'tags need Key and Value');
        repositories.set(name, { tags, images: [] });
        return { repository: { repositoryName: name, registryId: TEST_ACCOUNT, repositoryUri: `${TEST_ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/${name}` } };
      },
    },
    GetLifecyclePolicy: {
      required: ['repositoryName'],
      optional: ['registryId'],
      handle: (body) => {
        const repository = repositoryOf(body);
        if (repository.lifecyclePolicyText === undefined) fail('LifecyclePolicyNotFoundException', 'Lifecycle policy does not exist');
        return { registryId: TEST_ACCOUNT, repositoryName: body.repositoryName, lifecyclePolicyText: repository.lifecyclePolicyText };
      },
    },
    PutLifecyclePolicy: {
      required: ['repositoryName', 'lifecyclePolicyText'],
      optional: ['registryId'],
      handle: (body) => {
        const repository = repositoryOf(body);
        const text = body.lifecyclePolicyText as string;
        const rules = (JSON.parse(text) as { rules?: { rulePriority?: unknown; selection?: { tagStatus?: unknown; countType?: unknown }; action?: { type?: unknown } }[] }).rules;
        const valid =
          Array.isArray(rules) &&
          rules.length > 0 &&
          new Set(rules.map((rule) => rule.rulePriority)).size === rules.length &&
          rules.every((rule) => Number.isInteger(rule.rulePriority) && rule.action?.type === 'expire' && typeof rule.selection?.tagStatus === 'string');
        if (!valid) fail('InvalidParameterException', 'Invalid lifecycle policy');
        repository.lifecyclePolicyText = text;
        return { registryId: TEST_ACCOUNT, repositoryName: body.repositoryName, lifecyclePolicyText: text };
      },
    },
    BatchDeleteImage: {
      required: ['repositoryName', 'imageIds'],
      optional: ['registryId'],
      handle: (body) => {
        const repository = repositoryOf(body);
        const imageIds = body.imageIds as { imageTag?: string; imageDigest?: string }[];
        if (!Array.isArray(imageIds) || imageIds.length < 1 || imageIds.length > 100) fail('InvalidParameterException', 'imageIds must hold 1 to 100 entries');
        const deleted: unknown[] = [];
        const failures: unknown[] = [];
        for (const id of imageIds) {
          const image = id.imageTag !== undefined ? repository.images.find((entry) => entry.tags.includes(id.imageTag!)) : repository.images.find((entry) => entry.digest === id.imageDigest);
          if (!image) {
            failures.push({ imageId: id, failureCode: 'ImageNotFound', failureReason: 'Requested image not found' });
            continue;
          }
          if (id.imageTag !== undefined && id.imageDigest !== undefined && image.digest !== id.imageDigest) {
            failures.push({ imageId: id, failureCode: 'ImageTagDoesNotMatchDigest', failureReason: 'Invalid image digest for tag' });
            continue;
          }
          if (id.imageTag !== undefined && image.tags.length > 1) {
            image.tags = image.tags.filter((tag) => tag !== id.imageTag);
            deleted.push(id);
            continue;
          }
          const listedBy = repository.images.some((entry) => entry !== image && (JSON.parse(entry.manifest) as { manifests?: { digest: string }[] }).manifests?.some((child) => child.digest === image.digest));
          if (listedBy) {
            failures.push({ imageId: id, failureCode: 'ImageReferencedByManifestList', failureReason: 'Requested image referenced by manifest list' });
            continue;
          }
          repository.images = repository.images.filter((entry) => entry !== image);
          deleted.push({ imageDigest: image.digest, ...(id.imageTag ? { imageTag: id.imageTag } : {}) });
        }
        return { imageIds: deleted, failures };
      },
    },
    DescribeImages: {
      required: ['repositoryName'],
      optional: ['registryId', 'nextToken', 'maxResults', 'imageIds', 'filter'],
      handle: (body) => ({
        imageDetails: repositoryOf(body).images.map((image) => ({
          imageDigest: image.digest,
          imageTags: image.tags,
          imageManifestMediaType: image.mediaType,
          repositoryName: body.repositoryName,
        })),
      }),
    },
    BatchGetImage: {
      required: ['repositoryName', 'imageIds'],
      optional: ['registryId', 'acceptedMediaTypes'],
      handle: (body) => {
        const repository = repositoryOf(body);
        const ids = body.imageIds as { imageDigest?: string }[];
        const images = ids.flatMap((id) => {
          const image = repository.images.find((entry) => entry.digest === id.imageDigest);
          return image ? [{ imageId: { imageDigest: image.digest }, imageManifest: image.manifest, imageManifestMediaType: image.mediaType }] : [];
        });
        return { images, failures: [] };
      },
    },
    BatchCheckLayerAvailability: {
      required: ['repositoryName', 'layerDigests'],
      optional: ['registryId'],
      handle: (body) => {
        repositoryOf(body);
        const digests = body.layerDigests as string[];
        if (!Array.isArray(digests) || digests.length < 1 || digests.length > 100 || !digests.every((digest) => DIGEST.test(digest))) {
          fail('InvalidParameterException', 'layerDigests must hold 1 to 100 sha256 digests');
        }
        return { layers: digests.map((digest) => ({ layerDigest: digest, layerAvailability: state.availableLayers.has(digest) ? 'AVAILABLE' : 'UNAVAILABLE' })), failures: [] };
      },
    },
  };

  const reply = (response: ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    response.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'content-length': String(Buffer.byteLength(text)) }).end(text);
  };

  const server = createServer(async (request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const target = String(request.headers['x-amz-target'] ?? '');
    const operation = target.startsWith(TARGET_PREFIX) ? target.slice(TARGET_PREFIX.length) : target;
    const handler = handlers[operation];
    const authorization = String(request.headers.authorization ?? '');

    let body: Body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Body;
    } catch {
      body = {};
    }
    const keys = Object.keys(body);
    const shapeProblem =
      request.method !== 'POST' || request.url !== '/'
        ? `${request.method} ${request.url}`
        : request.headers['content-type'] !== 'application/x-amz-json-1.1'
          ? `content-type ${String(request.headers['content-type'])}`
          : !authorization.startsWith(`AWS4-HMAC-SHA256 Credential=${TEST_ACCESS_KEY}/`)
            ? 'missing SigV4 signature with the test access key'
            : !handler
              ? `operation ${operation}`
              : handler.required.find((key) => body[key] === undefined) ?? keys.find((key) => !handler.required.includes(key) && !handler.optional.includes(key));
    if (shapeProblem) {
      state.unexpected.push(`${operation}: ${shapeProblem}`);
      reply(response, 400, { __type: 'InvalidParameterException', message: `unexpected request: ${shapeProblem}` });
      return;
    }

    state.calls.push(operation);
    state.bodies.push(body);
    const injected = failures.get(operation);
    if (injected) {
      failures.delete(operation);
      reply(response, injected.status, { __type: injected.type, message: `${injected.type} injected by the test` });
      return;
    }
    try {
      reply(response, 200, handler!.handle(body));
    } catch (error) {
      const { awsType, status, message } = error as Error & { awsType?: string; status?: number };
      if (!awsType) throw error;
      reply(response, status ?? 400, { __type: awsType, message });
    }
  });

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;

  const state = {
    origin: `http://127.0.0.1:${port}`,
    repositories,
    calls: [] as string[],
    bodies: [] as Record<string, unknown>[],
    unexpected: [] as string[],
    tokens: [] as string[],
    tokenLifetimeSeconds: 12 * 3600,
    availableLayers: new Set<string>(),
    failNext(operation: string, type: string, status = 400) {
      failures.set(operation, { type, status });
    },
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
  return state;
}
