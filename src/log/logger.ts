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

