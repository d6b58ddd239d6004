import { pino, type Logger, type DestinationStream } from 'pino';
import { redact } from './redact.ts';

export type { Logger };

/**
 * Creates the process logger: JSON lines on stdout (or `destination`), with every registered secret
 * replaced before the line is written. Inner modules do not log; worker shells and the CLI do.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      hooks: { streamWrite: (line: string) => redact(line) },
    },
    destination,
  );
}

/**
 * Creates the logger of a long-running process (a worker or the API server). Its lines go to stdout
 * without blocking. While one write is in flight, the lines that follow are buffered and sent in the
 * next write, so a busy worker makes one write for many jobs, and an idle one writes each line at once.
 * pino writes the rest of the buffer when the process exits.
 */
export function createServiceLogger(level: string): Logger {
  return createLogger(level, pino.destination({ dest: 1, sync: false }));
}
