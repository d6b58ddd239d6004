import { loadConfig } from '../../config/config.ts';
import { MirrorfleetError } from '../../errors.ts';
import { redact } from '../../log/redact.ts';
import type { CleanupRequestInput, CleanupResult } from '../../../queues/cleanup.ts';
import { UsageError, parse, positiveInteger, producerFor } from '../common.ts';

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
 * exit code: 0 success, 1 the job failed.
 */
export async function submitCleanup(request: CleanupRequestInput, values: Record<string, unknown>): Promise<number> {
  const json = Boolean(values.json);
  const config = loadConfig();
  const producer = producerFor(config);
  try {
    const job = await producer.cleanup(request);
    if (!values.wait) {
      const state = await job.getState();
      process.stdout.write(json ? `${JSON.stringify({ jobId: job.id, state })}\n` : `enqueued ${request.kind} job ${job.id} (${state})\n`);
      return 0;
    }
    const timeoutMs = positiveInteger('timeout', values.timeout as string | undefined, 3600) * 1000;
    try {
      const result = await producer.waitForCleanup(job.id!, { timeoutMs });
      process.stdout.write(json ? `${JSON.stringify(result)}\n` : describeCleanup(result));
      return 0;
    } catch (error) {
      const failure = error instanceof MirrorfleetError ? error : new MirrorfleetError('INTERNAL', String(error));
      if (json) process.stdout.write(`${JSON.stringify({ jobId: job.id, state: 'failed', error: { code: failure.code, message: redact(failure.message) } })}\n`);
      else process.stderr.write(`job ${job.id} failed: ${failure.code}: ${redact(failure.message)}\n`);
      return 1;
    }
  } finally {
    await producer.close();
  }
}

/** Formats a finished cleanup job for people: one line per deleted, forgotten, released and kept image. */
export function describeCleanup(result: CleanupResult): string {
  const lines: string[] = [];
  const verb = result.dryRun ? 'would delete' : 'deleted';
  lines.push(
    `${result.kind}${result.dryRun ? ' (dry run)' : ''}: ${result.deleted.length} ${verb}, ${result.kept.length} kept` +
      (result.released.length > 0 ? `, ${result.released.length} uses released` : '') +
      (result.recorded.length > 0 ? `, ${result.recorded.length} uses recorded` : '') +
      ` in ${result.durationMs} ms`,
  );
  for (const entry of result.deleted) lines.push(`  ${verb.padEnd(12)} ${entry.registry}/${entry.repository}@${entry.digest} by ${entry.method}${entry.result === 'absent' ? ' (already gone)' : ''}: ${entry.reason}`);
  for (const entry of result.forgotten) lines.push(`  ${'forgot'.padEnd(12)} ${entry.image}: ${entry.reason}`);
  for (const entry of result.released) lines.push(`  ${'released'.padEnd(12)} ${entry.image} by ${entry.user}, ${entry.usesLeft} uses left`);
  for (const entry of result.kept) lines.push(`  ${'kept'.padEnd(12)} ${entry.image}: ${entry.reason}: ${entry.detail}`);
  for (const reference of result.missing) lines.push(`  ${'missing'.padEnd(12)} ${reference}: the mirror registry does not have it`);
  for (const reference of result.ignored) lines.push(`  ${'ignored'.padEnd(12)} ${reference}: outside the selected mirror registries`);
  for (const limit of result.limits) if (limit.message) lines.push(`  limit: ${limit.message}`);
  return `${lines.join('\n')}\n`;
}
