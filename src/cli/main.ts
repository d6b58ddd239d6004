import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MirrorfleetError } from '../errors.ts';
import { redact } from '../log/redact.ts';
import { EXIT, UnreachableError, UsageError, cutText } from './common.ts';
import { COMMAND_USAGE, commandUsage, fullUsage, isCommandName, type CommandName } from './usage.ts';

export { describeResult, formatBytes } from './common.ts';

/**
 * The `mirrorfleet` command. Its exit codes are `EXIT` in common.ts:
 * - 0 success;
 * - 1 a job failed or was not found, Redis cannot be reached, or a server cannot listen on its port;
 * - 2 invalid usage or input;
 * - 3 `--wait` ended while the job was still waiting or running.
 */

/**
 * Every command: its name and the function that runs it with the remaining arguments. Each command's
 * module is imported when that command runs, so a worker process does not load the API server (fastify,
 * the queue dashboard) or the other commands' modules.
 */
const COMMANDS: Record<CommandName, (args: string[]) => Promise<number>> = {
  worker: async (args) => (await import('./commands/worker.ts')).runWorker(args),
  mirror: async (args) => (await import('./commands/mirror.ts')).runMirror(args),
  job: async (args) => (await import('./commands/job.ts')).showJob(args),
  build: async (args) => (await import('./commands/build.ts')).runBuild(args),
  api: async (args) => (await import('./commands/api.ts')).runApi(args),
  release: async (args) => (await import('./commands/release.ts')).runReleaseCommand(args),
  sweep: async (args) => (await import('./commands/sweep.ts')).runSweepCommand(args),
  reconcile: async (args) => (await import('./commands/reconcile.ts')).runReconcileCommand(args),
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
      return printHelp(command === 'help' ? rest[0] : undefined, command === undefined);
    }
    if (command === 'version' || command === '--version') {
      process.stdout.write(`mirrorfleet ${packageVersion()}\n`);
      return EXIT.success;
    }
    if (!isCommandName(command)) throw new UsageError(`unknown command "${cutText(command)}"; accepted: ${Object.keys(COMMAND_USAGE).join(', ')}, help, version`);
    if (asksForHelp(rest)) {
      process.stdout.write(commandUsage(command));
      return EXIT.success;
    }
    // Commands that enqueue or read jobs check their arguments, then fail at once when Redis is
    // unreachable (ensureRedisReachable); workers and the API wait for it.
    return await COMMANDS[command](rest);
  } catch (error) {
    if (error instanceof UnreachableError || (error instanceof MirrorfleetError && error.code === 'PORT_UNAVAILABLE')) {
      process.stderr.write(`mirrorfleet: ${redact(error.message)}\n`);
      return EXIT.failed;
    }
    if (error instanceof UsageError || (error instanceof MirrorfleetError && (error.code === 'INVALID_INPUT' || error.code === 'INVALID_CONFIG' || error.code === 'INVALID_REFERENCE'))) {
      process.stderr.write(`mirrorfleet: ${redact(error.message)}\n`);
      if (error instanceof UsageError) process.stderr.write(helpHint(command));
      return EXIT.usage;
    }
    if (error instanceof Error && 'code' in error && typeof (error as { code: unknown }).code === 'string' && (error as { code: string }).code.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`mirrorfleet: ${error.message}\n${helpHint(command)}`);
      return EXIT.usage;
    }
    throw error;
  }
}

/**
 * Prints the usage of `topic`, or of every command. Returns 2 when no command was given at all, because
 * that is a mistake in a script, and 0 when help was asked for.
 */
function printHelp(topic: string | undefined, noCommand: boolean): number {
  // `help --help` requests the help of `help`, which is the usage of every command.
  if (topic === undefined || topic === '--help' || topic === '-h') {
    process.stdout.write(fullUsage());
    return noCommand ? EXIT.usage : EXIT.success;
  }
  if (!isCommandName(topic)) throw new UsageError(`no help for unknown command "${cutText(topic)}"; accepted: ${Object.keys(COMMAND_USAGE).join(', ')}`);
  process.stdout.write(commandUsage(topic));
  return EXIT.success;
}

/** Returns the line that points to the usage of `command`, or of every command. */
function helpHint(command: string | undefined): string {
  return `run "mirrorfleet ${command !== undefined && isCommandName(command) ? `${command} --help` : 'help'}" for usage\n`;
}

/** True when the arguments ask for help: `--help` or `-h` before a `--` that ends the options. */
function asksForHelp(args: string[]): boolean {
  const end = args.indexOf('--');
  const options = end < 0 ? args : args.slice(0, end);
  return options.includes('--help') || options.includes('-h');
}

/**
 * Returns the version in the package.json of this package, found by walking up from this file, because
 * the sources run from `src/cli/` in a checkout and from `dist/src/cli/` in an installed package.
 */
function packageVersion(): string {
  let folder = new URL('./', import.meta.url);
  for (let depth = 0; depth < 5; depth += 1) {
    const file = new URL('package.json', folder);
    if (existsSync(file)) {
      const manifest = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
      if (manifest.name === 'mirrorfleet' && typeof manifest.version === 'string') return manifest.version;
    }
    folder = new URL('../', folder);
  }
  throw new MirrorfleetError('INTERNAL', `the package.json of mirrorfleet was not found above ${fileURLToPath(import.meta.url)}`);
}
