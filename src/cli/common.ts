import { readFile } from 'node:fs/promises';
import { text } from 'node:stream/consumers';
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { createRedisConnection } from '../redis/connection.ts';
import { requireMirrorRegistry, type Config } from '../config/config.ts';
import { hideUrlCredentials } from '../config/formats.ts';
import { referenceForMessage } from '../image-ref/message-value.ts';
import { MirrorfleetError } from '../errors.ts';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import type { MirrorResult } from '../../queues/mirror.ts';

/** Exit codes of the `mirrorfleet` command. */
export const EXIT = {
  success: 0,
  /** A job failed or was not found, Redis cannot be reached, or the metrics or API server cannot listen on its port. */
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
 * Checks once that Redis responds, so that a command fails with one clear line instead of retrying
 * forever against a wrong MIRRORFLEET_REDIS_URL. The connection and each reply time out after 5 s, so
 * a server that accepts connections but never replies (a stopped process) fails the check too.
 */
export async function ensureRedisReachable(config: Config): Promise<void> {
  const probe = createRedisConnection(config.redis, {
    lazyConnect: true,
    connectTimeout: 5_000,
    commandTimeout: 5_000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  // After a refused connection, connect() rejects only with ioredis's "Connection is closed.". The socket's
  // own error, such as ECONNREFUSED, arrives as an 'error' event, so the first one is kept as the cause.
  let socketError: Error | undefined;
  probe.on('error', (error: Error) => {
    socketError ??= error;
  });
  try {
    await probe.connect();
    await probe.ping();
  } catch (error) {
    const cause = socketError ?? (error instanceof Error ? error : new Error(String(error)));
    // ioredis names a reply that did not come within commandTimeout only as "Command timed out".
    const reason = cause.message === 'Command timed out' ? 'it accepted the connection but sent no reply within 5 s' : cause.message.replace(/\.$/, '');
    throw new UnreachableError(`cannot reach Redis at ${hideUrlCredentials(config.redis.url)}: ${reason}; check MIRRORFLEET_REDIS_URL`);
  } finally {
    probe.disconnect();
  }
}

/**
 * Checks once that Redis accepts the credentials of MIRRORFLEET_REDIS_URL, for commands that otherwise
 * wait for Redis (workers, the API): a wrong password never gets better by retrying.
 * An unreachable Redis passes, because those commands wait for it to come up.
 * @throws MirrorfleetError INVALID_CONFIG when Redis rejects the credentials.
 */
export async function rejectWrongRedisCredentials(config: Config): Promise<void> {
  try {
    await ensureRedisReachable(config);
  } catch (error) {
    if (error instanceof UnreachableError && /WRONGPASS|NOAUTH|invalid password|invalid username-password/i.test(error.message)) {
      throw new MirrorfleetError('INVALID_CONFIG', `Redis rejected the credentials: ${error.message}`);
    }
    if (!(error instanceof UnreachableError)) throw error;
  }
}

type OptionValues = Record<string, string | boolean | string[] | undefined>;

/**
 * Parses a command's arguments with `node:util` parseArgs. Mistakes are reported as UsageErrors in the
 * command's own words in place of parseArgs's errors: an unknown option with the closest accepted one, a
 * string option without a value, a boolean option given a value, a single-value option given twice,
 * and a positional argument where the command takes none.
 */
export function parse(args: string[], options: ParseArgsOptionsConfig, allowPositionals: boolean): { values: OptionValues; positionals: string[] } {
  const { tokens } = parseArgs({ args, options, allowPositionals: true, strict: false, tokens: true });
  const seen = new Set<string>();
  for (const token of tokens) {
    if (token.kind === 'positional') {
      if (!allowPositionals) throw new UsageError(`unexpected argument ${JSON.stringify(cutText(token.value))}: this command takes options only`);
      continue;
    }
    if (token.kind !== 'option') continue;
    const option = Object.hasOwn(options, token.name) ? options[token.name] : undefined;
    if (option === undefined) throw new UsageError(unknownOptionMessage(token.rawName, Object.keys(options)));
    if (option.type === 'boolean') {
      if (token.value !== undefined) throw new UsageError(`--${token.name} takes no value, found ${JSON.stringify(cutText(token.value))}`);
      continue;
    }
    // Without strict mode, parseArgs takes the next argument as the value even when it is an option.
    if (token.value === undefined || (!token.inlineValue && token.value.startsWith('-') && token.value !== '-')) {
      throw new UsageError(`--${token.name} needs a value (write --${token.name}=VALUE for a value that starts with -)`);
    }
    if (!option.multiple && seen.has(token.name)) throw new UsageError(`--${token.name} is given more than once; give it once`);
    seen.add(token.name);
  }
  const result = parseArgs({ args, options, allowPositionals, strict: true });
  return { values: result.values as OptionValues, positionals: result.positionals };
}

/** Formats the error for an unknown option, naming the closest accepted option when one is close. */
export function unknownOptionMessage(rawName: string, accepted: string[]): string {
  const given = rawName.replace(/^-+/, '');
  let closest: string | undefined;
  let closestDistance = Number.POSITIVE_INFINITY;
  for (const name of accepted) {
    const distance = editDistance(given, name);
    if (distance < closestDistance) {
      closest = name;
      closestDistance = distance;
    }
  }
  // Up to one edit per three characters: "--servce" finds --service, "--x" finds nothing.
  const close = closest !== undefined && closestDistance <= Math.max(1, Math.floor(given.length / 3));
  return `unknown option ${cutText(rawName)}${close ? `; did you mean --${closest}?` : ''}`;
}

/** Levenshtein distance: the fewest single-character insertions, deletions and substitutions from `a` to `b`. */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i += 1) {
    const current = [i];
    for (let j = 1; j <= b.length; j += 1) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * Parses the whole number given as `--name`, from `min` up, and at most `max` when given; `fallback` when
 * absent. `unit` names what the number counts in the error, such as "seconds".
 */
export function positiveInteger(name: string, value: string | undefined, fallback: number, min = 1, max?: number, unit?: string): number {
  if (value === undefined) return fallback;
  const number = Number(value);
  if (!/^\d+$/.test(value) || number < min || (max !== undefined && number > max)) {
    const wholeNumber = unit === undefined ? 'a whole number' : `a whole number of ${unit}`;
    const expected = max === undefined ? `${wholeNumber}, at least ${min}` : `${wholeNumber} from ${min} to ${max}`;
    throw new UsageError(`invalid --${name} ${JSON.stringify(cutText(value))}: expected ${expected}`);
  }
  return number;
}

/** Parses `--timeout`: whole seconds, 3600 when absent. */
export function parseTimeoutSeconds(value: string | undefined): number {
  return positiveInteger('timeout', value, 3600, 1, undefined, 'seconds');
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

/** Common errno codes of reading a file, in words. */
const READ_ERRORS: Record<string, string> = {
  ENOENT: 'file not found',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EISDIR: 'is a directory, not a file',
  ENOTDIR: 'a component of the path is not a directory',
  ELOOP: 'too many symbolic links',
  ENAMETOOLONG: 'file name too long',
  EMFILE: 'too many open files in this process',
};

/**
 * Reads the text of `--from-file PATH`, or standard input for `-`. Throws a UsageError that gives the reason
 * in words when the file cannot be read, such as "file not found: images.txt".
 */
export async function readInputFile(path: string): Promise<string> {
  try {
    return path === '-' ? await text(process.stdin) : await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const words = code === undefined ? undefined : READ_ERRORS[code];
    if (words !== undefined) throw new UsageError(`${words}: ${cutText(path)}`);
    throw new UsageError(`cannot read --from-file ${cutText(path)}: ${code ?? (error as Error).message}`);
  }
}
