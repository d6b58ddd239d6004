import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { createRedisConnection } from '../redis/connection.ts';
import { requireMirrorRegistry, type Config } from '../config/config.ts';
import { hideUrlCredentials } from '../config/formats.ts';
import { referenceForMessage } from '../image-ref/message-value.ts';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import type { MirrorResult } from '../../queues/mirror.ts';

/** Exit codes of the `mirrorfleet` command, as the usage text documents them. */
export const EXIT = {
  success: 0,
  /** A job failed, or Redis cannot be reached. */
  failed: 1,
  /** Invalid usage or input; nothing was enqueued. */
  usage: 2,
  /** `--wait` ended at `--timeout` while the job was still waiting or running; the job keeps going. */
  stillRunning: 3,
} as const;

/** Maximum length of a line or value that the CLI repeats back in a message. */
export const MAX_ECHO_CHARS = 80;

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

/** Parses the whole number given as `--name`, from `min` up, and at most `max` when given; `fallback` when absent. */
export function positiveInteger(name: string, value: string | undefined, fallback: number, min = 1, max?: number): number {
  if (value === undefined) return fallback;
  const number = Number(value);
  if (!/^\d+$/.test(value) || number < min || (max !== undefined && number > max)) {
    const expected = max === undefined ? `a whole number of at least ${min}` : `a whole number from ${min} to ${max}`;
    throw new UsageError(`invalid --${name} ${JSON.stringify(cutText(value))}: expected ${expected}`);
  }
  return number;
}

/** Checks that Redis responds, then returns a producer on it. */
export async function connectProducer(config: Config): Promise<MirrorfleetProducer> {
  await ensureRedisReachable(config);
  const connection = createRedisConnection(config.redis, { maxRetriesPerRequest: null });
  return new MirrorfleetProducer({ connection, prefix: config.redis.keyPrefix });
}

/** Formats a short human summary of a finished mirror job. */
export function describeResult(result: MirrorResult): string {
  const moved =
    result.action === 'skipped' || result.action === 'not-needed'
      ? 'nothing moved'
      : `${countOf(result.manifests.copied, 'manifest')} and ${countOf(result.blobs.copied, 'blob')} copied, ${result.blobs.mounted} mounted, ${result.blobs.present} already there; ` +
        `${formatBytes(result.bytes.pulled)} pulled, ${formatBytes(result.bytes.pushed)} pushed`;
  return (
    `${result.action}: ${result.source}\n` +
    `  target  ${result.target}\n` +
    `  pinned  ${result.pinned}\n` +
    `  ${moved} in ${result.durationMs} ms\n`
  );
}

/** Formats `count` with the noun in singular or plural: "1 manifest", "2 manifests". */
export function countOf(count: number, noun: string, pluralNoun = `${noun}s`): string {
  return `${count} ${count === 1 ? noun : pluralNoun}`;
}

/** Cuts `text` to `max` characters, marking the cut with "…". */
export function cutText(text: string, max = MAX_ECHO_CHARS): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Cuts every double-quoted value in `message` that is longer than `max` characters, keeping the quotes. */
export function cutQuotedValues(message: string, max = MAX_ECHO_CHARS): string {
  return message.replace(/"((?:[^"\\]|\\.)*)"/g, (quoted, inner: string) => (inner.length > max ? `"${inner.slice(0, max - 1)}…"` : quoted));
}

/**
 * Checks that the configuration declares the mirror registry `nameOrLocation`, the way workers check it.
 * Throws InvalidInputError listing the declared ones. When the configuration declares none, the CLI
 * cannot check, so it prints a warning to stderr and lets the workers decide.
 */
export function checkMirrorRegistry(config: Config, nameOrLocation: string | undefined): void {
  if (nameOrLocation === undefined) return;
  if (config.mirrorRegistries.length === 0) {
    process.stderr.write(
      `mirrorfleet: warning: --registry "${cutText(referenceForMessage(nameOrLocation))}" is not checked, because this configuration declares no mirror registry ` +
        '(MIRRORFLEET_MIRROR_REGISTRIES or the configuration file); the workers check it\n',
    );
    return;
  }
  requireMirrorRegistry(config, nameOrLocation);
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
