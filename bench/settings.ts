import { parseArgs } from 'node:util';
import { InvalidInputError } from '../src/errors.ts';

/**
 * Benchmark settings, from flags first and environment variables second:
 *
 *   --runs N              BENCH_RUNS              measured runs of each scenario (default 5)
 *   --quick               BENCH_QUICK=1           smoke run: 1 run and small counts and sizes
 *   --only LIST           BENCH_SCENARIOS         comma-separated subset of: cold,warm,fanout,throughput,memory,small
 *   --no-profile          BENCH_PROFILE=0         skip the CPU profiles of a worker
 *                         BENCH_WARM_JOBS         sequential jobs per run in the warm repeat (default 200)
 *                         BENCH_WARM_SKOPEO_RUNS  skopeo copies per run in the warm repeat (default 20)
 *                         BENCH_FANOUT            services in the fan-out (default 50)
 *                         BENCH_THROUGHPUT_JOBS   jobs per batch in the throughput scenario (default 3000)
 *                         BENCH_SMALL_IMAGES      images in the many-small-images scenario (default 200)
 *                         BENCH_CONCURRENCY       jobs at once per worker process (default 50)
 *                         BENCH_SKOPEO_PARALLEL   skopeo processes at once in the parallel variant (default 8)
 *                         BENCH_NODE_OPTIONS      NODE_OPTIONS of the worker processes (default: the runner's own)
 *                         BENCH_RATE_LIMITS       `lifted` (default): the workers get the largest request budget
 *                                                 for the benchmark's registries; `builtin`: they keep their
 *                                                 built-in budget for a self-hosted registry
 */

export const SCENARIOS = ['cold', 'warm', 'fanout', 'throughput', 'memory', 'small'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

export interface Settings {
  quick: boolean;
  runs: number;
  scenarios: ScenarioName[];
  profile: boolean;
  warmJobs: number;
  warmSkopeoRuns: number;
  fanOut: number;
  throughputJobs: number;
  smallImages: number;
  concurrency: number;
  skopeoParallel: number;
  liftRateLimits: boolean;
  /** `NODE_OPTIONS` of the worker processes; undefined leaves them the runner's environment. */
  workerNodeOptions: string | undefined;
  /** Layer sizes of the cold-copy image, in bytes. */
  coldLayers: number[];
  /** Size of the single layer of the large image in the memory scenario, in bytes. */
  hugeLayer: number;
  /**
   * Size of the single layer of the memory scenario's middle image, in bytes: a quarter of `hugeLayer`,
   * and over the default monolithic upload limit, so both go up in chunks the same way.
   */
  midLayer: number;
  /** Layer sizes of each image of the many-small-images scenario, in bytes. */
  smallLayers: number[];
}

const MIB = 1024 * 1024;

export function readSettings(argv: string[], env: NodeJS.ProcessEnv): Settings {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string' },
      quick: { type: 'boolean' },
      only: { type: 'string' },
      'no-profile': { type: 'boolean' },
    },
    strict: true,
  });

  const quick = values.quick === true || env.BENCH_QUICK === '1';
  const count = (name: string, full: number, smoke: number) => positiveInteger(name, env[name], quick ? smoke : full);

  return {
    quick,
    runs: positiveInteger(values.runs === undefined ? 'BENCH_RUNS' : '--runs', values.runs ?? env.BENCH_RUNS, quick ? 1 : 5),
    scenarios: parseScenarios(values.only === undefined ? 'BENCH_SCENARIOS' : '--only', values.only ?? env.BENCH_SCENARIOS),
    profile: values['no-profile'] !== true && env.BENCH_PROFILE !== '0',
    warmJobs: count('BENCH_WARM_JOBS', 200, 50),
    warmSkopeoRuns: count('BENCH_WARM_SKOPEO_RUNS', 20, 5),
    fanOut: count('BENCH_FANOUT', 50, 10),
    throughputJobs: count('BENCH_THROUGHPUT_JOBS', 3000, 500),
    smallImages: count('BENCH_SMALL_IMAGES', 200, 20),
    concurrency: count('BENCH_CONCURRENCY', 50, 50),
    skopeoParallel: count('BENCH_SKOPEO_PARALLEL', 8, 8),
    liftRateLimits: parseRateLimits(env.BENCH_RATE_LIMITS),
    workerNodeOptions: env.BENCH_NODE_OPTIONS,
    coldLayers: quick ? [20, 20, 20, 20].map((mib) => mib * MIB) : [50, 50, 50, 50].map((mib) => mib * MIB),
    hugeLayer: quick ? 256 * MIB : 1024 * MIB,
    midLayer: quick ? 144 * MIB : 256 * MIB,
    smallLayers: [128 * 1024, 8 * 1024],
  };
}

function positiveInteger(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  if (!/^[1-9][0-9]*$/.test(value)) throw new InvalidInputError(`${name} must be a positive integer, got "${value}"`);
  return Number(value);
}

function parseRateLimits(value: string | undefined): boolean {
  if (value === undefined || value === '' || value === 'lifted') return true;
  if (value === 'builtin') return false;
  throw new InvalidInputError(`BENCH_RATE_LIMITS must be "lifted" or "builtin", got "${value}"`);
}

function parseScenarios(name: string, value: string | undefined): ScenarioName[] {
  if (value === undefined || value.trim() === '') return [...SCENARIOS];
  const names = value.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '');
  for (const entry of names) {
    if (!(SCENARIOS as readonly string[]).includes(entry)) {
      throw new InvalidInputError(`${name} names an unknown scenario "${entry}"; accepted: ${SCENARIOS.join(', ')}`);
    }
  }
  return SCENARIOS.filter((scenario) => names.includes(scenario));
}
