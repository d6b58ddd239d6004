import { LIMITS } from '../config/schema.ts';
import { REFERRER_SELECTIONS } from '../registry/referrers.ts';

/**
 * Usage text of the `mirrorfleet` command, one entry per command. `mirrorfleet COMMAND --help` prints
 * one entry and `mirrorfleet help` prints them all, so each option is described in one place only.
 */

const REGISTRY = 'NAME|HOST[:PORT][/PREFIX]';

export const COMMAND_USAGE = {
  worker: `  mirrorfleet worker [--queues mirror,build,cleanup] [--concurrency N] [--metrics-port P]
      Run workers until SIGTERM. --queues: the queues to take jobs from (default all).
      --concurrency: jobs at once, ${LIMITS.workerConcurrency.min} to ${LIMITS.workerConcurrency.max} (default from MIRRORFLEET_CONCURRENCY, 4).
      --metrics-port: port of /metrics, /healthz and /readyz (0 turns it off; default from
      MIRRORFLEET_METRICS_PORT, 9464). Their listen address is MIRRORFLEET_METRICS_HOST (default 0.0.0.0).
`,
  mirror: `  mirrorfleet mirror SOURCE --registry ${REGISTRY} [--mode service|cluster]
                     [--cluster ID] [--service ID] [--platform os/arch[/variant]]...
                     [--referrers ${REFERRER_SELECTIONS.join('|')}] [--wait] [--json] [--timeout SECONDS]
      Enqueue a mirror job. --registry: a mirror registry the configuration declares; a HOST[:PORT]
      alone selects the one declared registry on that host. --mode: one repository per service (default)
      or one per cluster. --cluster: default "default". --service: required in service mode.
      --platform: copy only these platforms, such as linux/arm64 (default all).
      --referrers: signatures and other referrers to copy with the image (default: the registry's
      referrers setting, all). --wait: wait for the result (progress on a terminal).
      --json: print JSON. --timeout: seconds to wait with --wait (default 3600).
  mirrorfleet mirror --from-file FILE|- --registry ... [other mirror options]
      Enqueue one job per line of FILE (- for standard input). A line is either a JSON request object or
      "SOURCE [SERVICE]"; blank lines and lines starting with # are ignored. The options set every
      request's defaults. Nothing is enqueued when any line is invalid. With --wait, waits for every
      job and prints one line per job (one JSON object with --json).
`,
  job: `  mirrorfleet job ID [--queue mirror|build|cleanup] [--json]
      Show a job's state, progress, result or error; every queue is searched unless --queue names one.
`,
  build: `  mirrorfleet build --git PATH_OR_URL --commit SHA [--root DIR] [--dockerfile PATH]
                    [--build-env NAME[=VALUE]]... [--secret-env NAME]... --cluster ID --service ID
                    --registry ${REGISTRY} [--platform os/arch[/variant]]... [--force]
                    [--wait] [--json] [--timeout SECONDS]
      Enqueue a build job; it is skipped when the image of that build context exists.
      --commit: full commit id. --root: build context inside the git repository (default .).
      --dockerfile: path relative to --root (default Dockerfile). --build-env: a build argument,
      its value from the environment when =VALUE is left out. --secret-env: a build secret, its value
      from the environment. --force: build even when the image exists. Variables need
      MIRRORFLEET_SECRET_KEY, the workers' key. --timeout: seconds to wait with --wait (default 3600).
`,
  api: `  mirrorfleet api [--port P] [--host ADDRESS] [--print-openapi]
      Run the producer HTTP API until SIGTERM. --port: TCP port (default from MIRRORFLEET_API_PORT,
      8080). --host: address to listen on (default 0.0.0.0). Tokens: MIRRORFLEET_API_TOKENS.
      --print-openapi: print the OpenAPI document and exit.
`,
  release: `  mirrorfleet release --cluster ID (--service ID | --all-services) [--registry ${REGISTRY}]
                      [--dry-run] [--wait] [--json] [--timeout SECONDS]
      Enqueue a release: the service (or every service of the cluster) was deleted, so its uses are
      dropped. Images left unused are deleted by a sweep after their retention time. Every mirror
      registry when --registry is left out. --dry-run: report what would be released, change nothing.
`,
  sweep: `  mirrorfleet sweep [--registry ${REGISTRY}] [--dry-run] [--max-delete-percent N]
                    [--wait] [--json] [--timeout SECONDS]
      Enqueue a sweep: delete images unused for longer than their retention time. --dry-run: list what
      would be deleted and why the rest is kept. --max-delete-percent: maximum share of the recorded
      images to delete in this run, 0 to 100 (default: the registry's maxDeletePercent, 50).
`,
  reconcile: `  mirrorfleet reconcile --cluster ID --from-file FILE|- [--service-label LABEL] [--allow-empty]
                        [--registry ${REGISTRY}] [--dry-run] [--wait] [--json] [--timeout SECONDS]
      Enqueue a reconcile: replace the cluster's uses with the images it runs, so that a later sweep
      deletes the images it no longer runs. FILE (- for standard input) is the output of
      kubectl get pods -o json (a pod list or a single pod), or one "IMAGE [SERVICE]" per line.
      Empty input and JSON that is not a pod list are rejected.
      --service-label: the pod label that names the service. A value with uppercase letters is
        lowercased. A pod without the label, or every pod when the option is absent, counts as a use
        of the whole cluster.
      --allow-empty: accept a pod list without pods, which releases every use of the cluster.
`,
} as const;

export type CommandName = keyof typeof COMMAND_USAGE;

const EXIT_CODES = `Exit codes: 0 success; 1 a job failed or was not found, Redis cannot be reached, or a server cannot
listen on its port; 2 invalid usage or input, nothing enqueued; 3 --wait ended at --timeout while the job
was still waiting or running (it keeps going: follow it with mirrorfleet job ID).
`;

const CONFIGURATION = `Configuration: MIRRORFLEET_CONFIG (a JSON file) and MIRRORFLEET_* variables, such as
MIRRORFLEET_REDIS_URL (default redis://127.0.0.1:6379) and MIRRORFLEET_MIRROR_REGISTRIES
(NAME=HOST[:PORT][/PREFIX],...).
`;

/** Returns the usage of every command, with the exit codes and the configuration. */
export function fullUsage(): string {
  return (
    'mirrorfleet: keep a copy of every image a cluster runs in a registry next to it\n\n' +
    'Usage:\n' +
    Object.values(COMMAND_USAGE).join('') +
    '  mirrorfleet help [COMMAND] | COMMAND --help\n' +
    '  mirrorfleet version | --version\n\n' +
    EXIT_CODES +
    '\n' +
    CONFIGURATION
  );
}

/**
 * Returns the usage of one command, and the exit codes when the command has `--wait`, because they
 * describe how a wait ends. The other commands (worker, api, job) do not wait for a job.
 */
export function commandUsage(command: CommandName): string {
  const usage = COMMAND_USAGE[command];
  return usage.includes('--wait') ? `Usage:\n${usage}\n${EXIT_CODES}` : `Usage:\n${usage}`;
}

export function isCommandName(name: string): name is CommandName {
  return Object.hasOwn(COMMAND_USAGE, name);
}
