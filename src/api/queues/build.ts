import { z } from 'zod';
import {
  BUILD_JOB_OPTIONS,
  BUILD_QUEUE,
  buildDedupeId,
  buildPayloadSchema,
  buildRequestSchema,
  encryptBuildRequest,
  normaliseBuildRequest,
  parseBuildPayload,
  type BuildProgress,
  type BuildResult,
} from '../../../queues/build.ts';
import { parseSecretKey, type SecretKey } from '../../build/secret-key.ts';
import type { Config } from '../../config/config.ts';
import { checkDeclaredRegistry, defineQueueRoute } from './route.ts';

/**
 * The `build` queue in the HTTP API. Requests carry build variable values in clear. They are encrypted
 * with `MIRRORFLEET_SECRET_KEY` before the job reaches Redis, exactly as `MirrorfleetProducer.build` does,
 * and error messages never show them.
 */

const count = z.int().min(0);

// NOTE: queues/build.ts declares BuildResult and BuildProgress as TypeScript interfaces, not schemas, so
// their schemas live here, and the type checks below fail to compile when the two drift apart.
export const buildResultSchema = z.object({
  jobId: z.string(),
  action: z.enum(['built', 'skipped']).meta({ description: 'built: the builder built and pushed; skipped: the tag was already in the repository.' }),
  tag: z.string().meta({ description: 'The build tag: SHA-256 of the build context, 64 hex characters.' }),
  target: z.string().meta({ description: '`host/repository:tag` in the mirror registry.' }),
  pinned: z.string().meta({ description: '`host/repository@sha256:...`: what a deployment should run.' }),
  digest: z.string(),
  durationMs: count,
  cacheHit: z.boolean().optional().meta({ description: 'Whether the builder took at least one step from the layer cache.' }),
});

export const buildProgressSchema = z.object({ stage: z.enum(['fetching', 'checking', 'building', 'verifying']) });

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const resultMatches: Same<z.output<typeof buildResultSchema>, BuildResult> = true;
const progressMatches: Same<z.output<typeof buildProgressSchema>, BuildProgress> = true;
void resultMatches;
void progressMatches;

const keys = new WeakMap<Config, SecretKey | undefined>();

function secretKeyOf(config: Config): SecretKey | undefined {
  if (!keys.has(config)) keys.set(config, config.secretKey === undefined ? undefined : parseSecretKey(config.secretKey));
  return keys.get(config);
}

export const buildRoute = defineQueueRoute({
  queue: BUILD_QUEUE,
  scope: 'enqueue',
  title: 'Build',
  summary: 'A build job builds an application image from a git commit and pushes it, unless an image of the same build context is there already.',
  requestSchema: buildRequestSchema,
  dataSchema: buildPayloadSchema,
  resultSchema: buildResultSchema,
  progressSchema: buildProgressSchema,
  jobOptions: BUILD_JOB_OPTIONS,
  toJob: (request, { config }) => {
    checkDeclaredRegistry(config, request.registry);
    const key = secretKeyOf(config);
    const normal = normaliseBuildRequest(request);
    return { name: BUILD_QUEUE, data: parseBuildPayload(encryptBuildRequest(normal, key)), deduplicationId: buildDedupeId(normal, key) };
  },
  example: {
    v: 1,
    git: { url: 'https://git.example/team/shop.git', commit: '0123456789abcdef0123456789abcdef01234567', root: '.', dockerfile: 'Dockerfile' },
    registry: 'local',
    cluster: 'prod-eu-1',
    service: 'shop',
    variables: [{ name: 'NODE_ENV', value: 'production' }],
  },
  sensitiveFields: ['variables'],
  fieldDescriptions: {
    v: 'Payload version; 1 is the only one.',
    git: 'Where the build context is: repository URL or absolute local path, full commit id, root path and Dockerfile path.',
    registry: 'Mirror registry, by its configured name or by its location HOST[:PORT][/PREFIX].',
    cluster: 'Cluster id, such as prod-eu-1.',
    service: 'Service id.',
    platforms: "Target platforms, such as linux/amd64; the worker's own platform when absent.",
    force: 'Build even when the tag exists, such as after a base image changed.',
    variables:
      'Build variables. Values are encrypted before they reach Redis; a secret one goes to the builder as a build secret, not a build argument.',
  },
});
