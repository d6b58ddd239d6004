import { MirrorfleetError } from '../errors.ts';
import { redact } from '../log/redact.ts';
import { UnreachableError, UsageError, ensureRedisReachable } from './common.ts';
import { loadConfig } from '../config/config.ts';
import { runWorker } from './commands/worker.ts';
import { runMirror } from './commands/mirror.ts';
import { showJob } from './commands/job.ts';
import { runBuild } from './commands/build.ts';
import { runApi } from './commands/api.ts';
import { runReleaseCommand } from './commands/release.ts';
import { runSweepCommand } from './commands/sweep.ts';
import { runReconcileCommand } from './commands/reconcile.ts';

export { describeResult, formatBytes } from './common.ts';

/**
 * The `mirrorfleet` command. Exit codes: 0 success, 1 a job failed, 2 bad usage or input.
 */

const USAGE = `mirrorfleet: keep a copy of every image a cluster runs in a registry next to it

Usage:
  mirrorfleet worker [--queues mirror] [--concurrency N] [--metrics-port P]
      Run workers until SIGTERM. --concurrency: jobs at once (default from MIRRORFLEET_CONCURRENCY, 4).
      --metrics-port: port of /metrics, /healthz and /readyz (0 turns it off; default 9464).
  mirrorfleet mirror SOURCE --registry NAME|HOST[:PORT][/PREFIX] [--mode service|cluster]
                     [--cluster ID] [--service ID] [--platform os/arch[/variant]]... [--wait] [--json]
                     [--timeout SECONDS]
      Enqueue a mirror job. --wait: wait for the result (progress on a terminal).
      --json: print JSON. --timeout: seconds to wait with --wait (default 3600).
  mirrorfleet mirror --from-file FILE --registry ... [--mode ...] [--cluster ID]
      Enqueue one job per line of FILE. A line is either a JSON request object or
      "SOURCE [SERVICE]"; blank lines and lines starting with # are ignored.
  mirrorfleet job ID [--queue mirror|build|cleanup] [--json]
      Show a job's state, progress, result or error; every queue is searched unless --queue names one.
  mirrorfleet build --git PATH_OR_URL --commit SHA [--root DIR] [--dockerfile PATH]
                    [--build-env NAME[=VALUE]]... [--secret-env NAME]... --cluster ID --service ID
                    --registry NAME|HOST[:PORT][/PREFIX] [--platform os/arch[/variant]]... [--force]
                    [--wait] [--json] [--timeout SECONDS]
      Enqueue a build job; it is skipped when the image of that build context exists.
      --commit: full commit id. --root: build context inside the git repository (default .).
      --dockerfile: path relative to --root (default Dockerfile). --build-env: a build argument,
      its value from the environment when =VALUE is left out. --secret-env: a build secret, its value
      from the environment. --force: build even when the image exists. Variables need
      MIRRORFLEET_SECRET_KEY, the workers' key. --timeout: seconds to wait with --wait (default 3600).
  mirrorfleet api [--port P] [--host ADDRESS] [--print-openapi]
      Run the producer HTTP API until SIGTERM. --port: TCP port (default from MIRRORFLEET_API_PORT,
      8080). --host: address to listen on (default 0.0.0.0). Tokens: MIRRORFLEET_API_TOKENS.
      --print-openapi: print the OpenAPI document and exit.
  mirrorfleet release --cluster ID (--service ID | --all-services) [--registry NAME|HOST[:PORT][/PREFIX]]
                      [--dry-run] [--wait] [--json] [--timeout SECONDS]
      Enqueue a release: the service (or every service of the cluster) was deleted, so its uses are
      dropped. Images left unused are deleted by a sweep after their retention time. Every mirror
      registry when --registry is left out. --dry-run: report what would be released, change nothing.
  mirrorfleet sweep [--registry NAME|HOST[:PORT][/PREFIX]] [--dry-run] [--max-delete-percent N]
                    [--wait] [--json] [--timeout SECONDS]
      Enqueue a sweep: delete images unused for longer than their retention time. --dry-run: list what
      would be deleted and why the rest is kept. --max-delete-percent: most of the recorded images to
      delete in this run, 0 to 100 (default: the registry's maxDeletePercent, 50).
  mirrorfleet reconcile --cluster ID --from-file FILE|- [--service-label LABEL]
                        [--registry NAME|HOST[:PORT][/PREFIX]] [--dry-run] [--wait] [--json] [--timeout SECONDS]
      Enqueue a reconcile: replace the cluster's uses with the images it runs. FILE (- for standard
      input) is the output of kubectl get pods -o json, or one "IMAGE [SERVICE]" per line.
      --service-label: the pod label that names the service (without it, uses belong to the cluster).

Configuration: MIRRORFLEET_CONFIG (a JSON file) and MIRRORFLEET_* variables, such as
MIRRORFLEET_REDIS_URL (default redis://127.0.0.1:6379) and MIRRORFLEET_MIRROR_REGISTRIES
(NAME=HOST[:PORT][/PREFIX],...).
`;

/** Every command: its name and the function that runs it with the remaining arguments. */
const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  worker: runWorker,
  mirror: runMirror,
  job: showJob,
  build: runBuild,
  api: runApi,
  release: runReleaseCommand,
  sweep: runSweepCommand,
  reconcile: runReconcileCommand,
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    }
    const run = COMMANDS[command];
    if (!run) throw new UsageError(`unknown command "${command}"; accepted: ${Object.keys(COMMANDS).join(', ')}, help`);
    // Commands that enqueue or read jobs fail at once when Redis is unreachable; workers and the API wait for it.
    if (command !== 'worker' && command !== 'api' && !rest.includes('--print-openapi')) await ensureRedisReachable(loadConfig());
    return await run(rest);
  } catch (error) {
    if (error instanceof UnreachableError) {
      process.stderr.write(`mirrorfleet: ${redact(error.message)}\n`);
      return 1;
    }
    if (error instanceof UsageError || (error instanceof MirrorfleetError && (error.code === 'INVALID_INPUT' || error.code === 'INVALID_CONFIG' || error.code === 'INVALID_REFERENCE'))) {
      process.stderr.write(`mirrorfleet: ${redact(error.message)}\n`);
      if (error instanceof UsageError) process.stderr.write('run "mirrorfleet help" for usage\n');
      return 2;
    }
    if (error instanceof Error && 'code' in error && typeof (error as { code: unknown }).code === 'string' && (error as { code: string }).code.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`mirrorfleet: ${error.message}\nrun "mirrorfleet help" for usage\n`);
      return 2;
    }
    throw error;
  }
}
