import type { Redis } from 'ioredis';
import type { Logger } from './logger.ts';

/**
 * Rate-limited logging of a Redis outage. ioredis emits an `error` event on every failed reconnect
 * (about one a second), and BullMQ forwards the errors of its own connections to each worker and queue,
 * so logging every event floods the log during an outage. This module logs one warn line when the
 * connection is lost, at most one reminder per `reminderMs` with how long Redis has been unreachable,
 * and one info line when the connection is back.
 */

/** Time between reminders while Redis stays unreachable. */
export const OUTAGE_REMINDER_MS = 60_000;

// Error codes of a socket that cannot connect or that lost its peer, as ioredis passes them on.
const NETWORK_ERROR_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE']);

/**
 * Returns true when `error` shows that a Redis connection is down (a socket error, or a command that
 * ioredis or BullMQ rejected because the connection closed), not that a command failed on a live server.
 */
export function isConnectionError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== undefined && NETWORK_ERROR_CODES.has(code)) return true;
  return /Connection is closed|Stream isn't writeable|connect ETIMEDOUT|Reached the max retries per request/i.test(error.message);
}

export interface RedisOutageLog {
  /** True from the first connection error until the connection is ready again. */
  readonly down: boolean;
  /**
   * Records a connection error seen by another client of the same Redis (a BullMQ worker's blocking
   * connection, a queue). It starts an outage only when the watched connection is not ready.
   */
  noteError(error: Error): void;
  /** Resolves when the watched connection is ready, at once when it already is. */
  whenReady(): Promise<void>;
  /** Stops the reminders and logs nothing more; call it before closing the connection on purpose. */
  stop(): void;
}

export interface RedisOutageLogOptions {
  reminderMs?: number;
}

/** Watches `connection` and logs its outages through `logger`; see the file comment for the lines. */
export function watchRedisOutages(connection: Redis, logger: Logger, options: RedisOutageLogOptions = {}): RedisOutageLog {
  const reminderMs = options.reminderMs ?? OUTAGE_REMINDER_MS;
  let everReady = connection.status === 'ready';
  let downSince: number | undefined;
  let lastError = '';
  let reminder: NodeJS.Timeout | undefined;
  let stopped = false;
  const waiting: Array<() => void> = [];

  const secondsDown = () => Math.round((Date.now() - (downSince ?? Date.now())) / 1000);

  const startOutage = (reason: string) => {
    lastError = reason;
    if (stopped || downSince !== undefined) return;
    downSince = Date.now();
    if (everReady) logger.warn({ error: reason }, 'redis connection lost; reconnecting');
    else logger.warn({ error: reason }, 'cannot connect to redis; retrying until it answers');
    reminder = setInterval(() => {
      logger.warn({ error: lastError, downSeconds: secondsDown() }, `redis still unreachable after ${secondsDown()} s; retrying`);
    }, reminderMs);
    reminder.unref();
  };

  const endOutage = () => {
    clearInterval(reminder);
    reminder = undefined;
    if (downSince !== undefined && !stopped) {
      const seconds = secondsDown();
      if (everReady) logger.info({ downSeconds: seconds }, `redis connection restored after ${seconds} s`);
      else logger.info({ downSeconds: seconds }, `connected to redis after ${seconds} s`);
    }
    downSince = undefined;
    everReady = true;
    for (const resolve of waiting.splice(0)) resolve();
  };

  connection.on('error', (error: Error) => startOutage(error.message));
  // A server that exits closes the socket without an error event; the reconnect attempts then report errors.
  connection.on('close', () => {
    if (everReady) startOutage('the connection closed');
  });
  connection.on('ready', endOutage);

  return {
    get down() {
      return downSince !== undefined;
    },
    noteError: (error) => {
      if (connection.status !== 'ready') startOutage(error.message);
    },
    whenReady: () => (connection.status === 'ready' ? Promise.resolve() : new Promise<void>((resolve) => waiting.push(resolve))),
    stop: () => {
      stopped = true;
      clearInterval(reminder);
      reminder = undefined;
    },
  };
}
