import { describeUser } from '../../cleanup/plan.ts';
import { loadConfig } from '../../config/config.ts';
import { cleanupRequestSchema, type CleanupRequestInput, type CleanupResult, type ReleaseRequestInput } from '../../../queues/cleanup.ts';
import { UsageError, checkMirrorRegistry, countOf, parse, parseTimeoutSeconds, connectProducer } from '../common.ts';
import { printOutcome, waitForOutcome } from '../wait.ts';
import { CLEANUP_FLAGS, checkRequest } from '../request-errors.ts';

/** `mirrorfleet sweep`: enqueues a sweep of one mirror registry, or of every one, and optionally waits. */
export async function runSweepCommand(args: string[]): Promise<number> {
  const { values } = parse(
    args,
    {
      registry: { type: 'string' },
      'dry-run': { type: 'boolean' },
      'max-delete-percent': { type: 'string' },
      wait: { type: 'boolean' },
      json: { type: 'boolean' },
      timeout: { type: 'string' },
    },
    false,
  );
  const percent = values['max-delete-percent'] as string | undefined;
  if (percent !== undefined && (!/^\d+$/.test(percent) || Number(percent) > 100)) {
    throw new UsageError(`invalid --max-delete-percent "${percent}": expected a whole number from 0 to 100`);
  }
  const request: CleanupRequestInput = {
    v: 1,
    kind: 'sweep',
    dryRun: Boolean(values['dry-run']),
    ...(values.registry ? { registry: values.registry as string } : {}),
    ...(percent === undefined ? {} : { maxDeletePercent: Number(percent) }),
  };
  return submitCleanup(request, values);
}

/**
 * Enqueues a cleanup job; with `--wait`, waits and prints its result (JSON with `--json`). Returns the
 * exit code: 0 success, 1 the job failed, 3 the wait ended while the job was still waiting or running.
 */
export async function submitCleanup(request: CleanupRequestInput, values: Record<string, unknown>): Promise<number> {
  const json = Boolean(values.json);
  // Parsed before anything is enqueued, so that an invalid --timeout leaves no job behind.
  const timeoutSeconds = parseTimeoutSeconds(values.timeout as string | undefined);
  const config = loadConfig();
  // Validated before connecting, so that invalid input is reported as such even when Redis is down.
  checkRequest(cleanupRequestSchema, request, CLEANUP_FLAGS);
  checkMirrorRegistry(config, request.registry);
  const producer = await connectProducer(config);
  try {
    const job = await producer.cleanup(request);
    if (!values.wait) {
      const state = await job.getState();
      process.stdout.write(json ? `${JSON.stringify({ jobId: job.id, state })}\n` : `enqueued ${request.kind} job ${job.id} (${state})\n`);
      return 0;
    }
    const outcome = await waitForOutcome(producer.bullCleanupQueue, job.id!, timeoutSeconds * 1000, (timeoutMs) => producer.waitForCleanup(job.id!, { timeoutMs }));
    return printOutcome(outcome, { json, timeoutSeconds, label: 'job', describe: (result) => describeCleanup(result, request) });
  } finally {
    await producer.close();
  }
}

/**
 * Formats a finished cleanup job for people: one line per deleted, forgotten, released and kept image. A
 * release that found no use gets a sentence of its own, because a mistyped cluster or service also ends that way.
 */
export function describeCleanup(result: CleanupResult, request?: CleanupRequestInput): string {
  if (request?.kind === 'release' && result.released.length === 0) return `${describeEmptyRelease(request)}\n`;
  const lines: string[] = [];
  const verb = result.dryRun ? 'would delete' : 'deleted';
  // A dry run changes nothing, so its releases are worded as what would happen.
  const releaseVerb = result.dryRun ? 'would release' : 'released';
  const released = result.dryRun ? `would release ${countOf(result.released.length, 'use')}` : `${countOf(result.released.length, 'use')} released`;
  lines.push(
    `${result.kind}${result.dryRun ? ' (dry run)' : ''}: ${result.deleted.length} ${verb}, ${result.kept.length} kept` +
      (result.released.length > 0 ? `, ${released}` : '') +
      (result.recorded.length > 0 ? `, ${countOf(result.recorded.length, 'use')} recorded` : '') +
      ` in ${result.durationMs} ms`,
  );
  for (const entry of result.deleted) lines.push(`  ${verb.padEnd(12)} ${entry.registry}/${entry.repository}@${entry.digest} by ${entry.method}${entry.result === 'absent' ? ' (already gone)' : ''}: ${entry.reason}`);
  for (const entry of result.forgotten) lines.push(`  ${'forgot'.padEnd(12)} ${entry.image}: ${entry.reason}`);
  for (const entry of result.released) lines.push(`  ${releaseVerb.padEnd(12)} ${entry.image} by ${describeUser(entry.user)}, ${countOf(entry.usesLeft, 'use')} left`);
  for (const entry of result.kept) lines.push(`  ${'kept'.padEnd(12)} ${entry.image}: ${entry.reason}: ${entry.detail}`);
  for (const reference of result.missing) lines.push(`  ${'missing'.padEnd(12)} ${reference}: the mirror registry does not have it`);
  for (const reference of result.ignored) lines.push(`  ${'ignored'.padEnd(12)} ${reference}: outside the selected mirror registries`);
  for (const limit of result.limits) if (limit.message) lines.push(`  limit: ${limit.message}`);
  return `${lines.join('\n')}\n`;
}

/** Describes a release that dropped no use: which service and cluster, and on which registry. */
function describeEmptyRelease(request: ReleaseRequestInput): string {
  const user = request.allServices ? `any service in cluster ${request.cluster}` : `service ${request.service} in cluster ${request.cluster}`;
  const registry = request.registry === undefined ? '' : ` on registry ${request.registry}`;
  const dryRun = request.dryRun ? ' (dry run)' : '';
  return `release${dryRun}: no uses recorded for ${user}${registry}; nothing released`;
}
