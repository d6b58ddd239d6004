
/**
 * Runs a builder command with its arguments as an array (execa, no shell), passes each line of its
 * standard output and standard error to `onLine` as it comes, and keeps the last lines for an error
 * message. Output is never held whole, so a chatty build cannot exhaust memory.
 */

export interface CommandResult {
  exitCode: number | undefined;
  timedOut: boolean;
  /** The last lines of output, at most `tailLines`. */
  tail: string[];
}

export interface CommandOptions {
  env?: Record<string, string>;
  timeoutMs: number;
  /** How many of the last lines to keep for the result. Default 30. */
  tailLines?: number;
}

export async function runCommand(file: string, args: string[], options: CommandOptions, onLine: (line: string) => void): Promise<CommandResult> {
  const keep = options.tailLines ?? 30;
  const tail: string[] = [];
  // execa loads about a hundred modules, so a worker loads it only when it runs a command.
  const { execa } = await import('execa');
  const subprocess = execa(file, args, {
    all: true,
    buffer: false,
    reject: false,
    stdin: 'ignore',
    timeout: options.timeoutMs,
    forceKillAfterDelay: 10_000,
    ...(options.env ? { env: options.env } : {}),
  });

  for await (const line of subprocess.iterable({ from: 'all' })) {
    tail.push(line);
    if (tail.length > keep) tail.shift();
    onLine(line);
  }
  const result = await subprocess;
  if (result.failed && result.exitCode === undefined && !result.timedOut) {
    // The command could not start, such as ENOENT: say so in the tail.
    tail.push(result.shortMessage ?? `${file} could not start`);
  }
  return { exitCode: result.exitCode, timedOut: Boolean(result.timedOut), tail };
}
