import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { createRedisConnection } from '../redis/connection.ts';
import type { Config } from '../config/config.ts';
import { hideUrlCredentials } from '../config/formats.ts';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import type { MirrorResult } from '../../queues/mirror.ts';

/** Wrong usage of the command line: printed with a pointer to the help, exit code 2. */
export class UsageError extends Error {}

/** A service the command needs cannot be reached: printed as it is, exit code 1. */
export class UnreachableError extends Error {}

/**
 * Checks once, within 5 s, that Redis responds, so that a command fails with one clear line instead of
 * retrying forever against a wrong MIRRORFLEET_REDIS_URL.
 */
export async function ensureRedisReachable(config: Config): Promise<void> {
  const probe = createRedisConnection(config.redis, { lazyConnect: true, connectTimeout: 5_000, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
  probe.on('error', () => undefined);
  try {
    await probe.connect();
    await probe.ping();
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new UnreachableError(`cannot reach Redis at ${hideUrlCredentials(config.redis.url)}: ${reason}; check MIRRORFLEET_REDIS_URL`);
  } finally {
    probe.disconnect();
  }
}

type OptionValues = Record<string, string | boolean | string[] | undefined>;

export function parse(args: string[], options: ParseArgsOptionsConfig, allowPositionals: boolean): { values: OptionValues; positionals: string[] } {
  const result = parseArgs({ args, options, allowPositionals, strict: true });
  return { values: result.values as OptionValues, positionals: result.positionals };
}

export function positiveInteger(name: string, value: string | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < min) throw new UsageError(`invalid --${name} "${value}": expected a whole number of at least ${min}`);
  return Number(value);
}

export function producerFor(config: Config): MirrorfleetProducer {
  const connection = createRedisConnection(config.redis, { maxRetriesPerRequest: null });
  return new MirrorfleetProducer({ connection, prefix: config.redis.keyPrefix });
}

/** Formats a short human summary of a finished mirror job. */
export function describeResult(result: MirrorResult): string {
  const moved =
    result.action === 'skipped' || result.action === 'not-needed'
      ? 'nothing moved'
      : `${result.manifests.copied} manifests and ${result.blobs.copied} blobs copied, ${result.blobs.mounted} mounted, ${result.blobs.present} already there; ` +
        `${formatBytes(result.bytes.pulled)} pulled, ${formatBytes(result.bytes.pushed)} pushed`;
  return (
    `${result.action}: ${result.source}\n` +
    `  target  ${result.target}\n` +
    `  pinned  ${result.pinned}\n` +
    `  ${moved} in ${result.durationMs} ms\n`
  );
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
