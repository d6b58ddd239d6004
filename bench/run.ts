/**
 * `npm run bench`: mirrorfleet against skopeo and against the raw limit of the machine, in one run.
 *
 * Starts its own Redis and distribution registries on loopback and pushes deterministic images into a
 * source registry. Then it runs the scenarios (bench/scenarios/) and prints a table with the median, min
 * and max over the runs, and the targets. Everything is also written as JSON to bench/results/.
 * Settings: bench/settings.ts.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidInputError } from '../src/errors.ts';
import { startRedis } from '../test/harness/redis.ts';
import { startRegistry } from '../test/harness/registry.ts';
import { BenchContext } from './context.ts';
import { formatProfiles, profileWorker, type ProfileSummary } from './profile.ts';
import { ResultTable } from './report.ts';
import { readSettings, type ScenarioName } from './settings.ts';
import { coldCopy } from './scenarios/cold-copy.ts';
import { fanOut } from './scenarios/fan-out.ts';
import { memory } from './scenarios/memory.ts';
import { smallImages } from './scenarios/small-images.ts';
import { alreadyMirroredThroughput } from './scenarios/throughput.ts';
import { warmRepeat } from './scenarios/warm-repeat.ts';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const RESULTS_DIR = join(BENCH_DIR, 'results');

const SCENARIO_RUNNERS: Record<ScenarioName, (context: BenchContext) => Promise<void>> = {
  cold: coldCopy,
  warm: warmRepeat,
  fanout: fanOut,
  throughput: alreadyMirroredThroughput,
  memory,
  small: smallImages,
};

const say = (text: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${text}\n`);

async function main(): Promise<number> {
  const settings = readSettings(process.argv.slice(2), process.env);
  const started = new Date();
  const stamp = started.toISOString().replace(/[:.]/g, '-');
  const machine = describeMachine();
  say(`${settings.quick ? 'quick smoke run' : 'full run'}: ${settings.runs} run(s) of ${settings.scenarios.join(', ')}${settings.profile ? ', then CPU profiles' : ''}${settings.workerNodeOptions !== undefined ? `; workers with NODE_OPTIONS="${settings.workerNodeOptions}"` : ''}`);

  const table = new ResultTable();
  const [redis, source] = await Promise.all([startRedis(), startRegistry()]);
  const context = new BenchContext(settings, redis, source, table);
  const failures: Array<{ scenario: string; error: string }> = [];
  let profiles: ProfileSummary[] = [];
  const interrupted = () => {
    say('interrupted: stopping what the benchmark started');
    void context.stopAll().finally(() => Promise.all([source.stop(), redis.stop()])).finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);

  try {
    for (const scenario of settings.scenarios) {
      const scenarioStarted = Date.now();
      say(`scenario ${scenario}`);
      try {
        await SCENARIO_RUNNERS[scenario](context);
      } catch (error) {
        const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
        failures.push({ scenario, error: message });
        say(`scenario ${scenario} failed: ${message}`);
      }
      say(`scenario ${scenario} took ${Math.round((Date.now() - scenarioStarted) / 1000)} s`);
    }
    if (settings.profile) {
      say('CPU profiles of a worker: cold copy and warm path');
      try {
        profiles = await profileWorker(context, join(RESULTS_DIR, 'profiles', stamp));
      } catch (error) {
        const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
        failures.push({ scenario: 'profile', error: message });
        say(`profiling failed: ${message}`);
      }
    }
  } finally {
    await context.stopAll();
    await Promise.all([source.stop(), redis.stop()]);
  }

  const finished = new Date();
  machine.loadAverageAtEnd = loadavg().map((value) => Number(value.toFixed(2)));
  const out = process.stdout;
  out.write(`\nmirrorfleet benchmark, ${started.toISOString()} (${Math.round((finished.getTime() - started.getTime()) / 1000)} s)\n`);
  out.write(`${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB; load average ${machine.loadAverageAtStart.join(' ')} at start, ${machine.loadAverageAtEnd.join(' ')} at end\n`);
  out.write(`Node ${process.versions.node}, ${machine.tools.join(', ')}; commit ${machine.commit}\n\n`);
  out.write(`${table.formatTable()}\n\n`);
  if (table.targets.length > 0) out.write(`${table.formatTargets()}\n\n`);
  for (const note of context.notes) out.write(`note, ${note.scenario}: ${note.text}\n`);
  if (profiles.length > 0) out.write(`\n${formatProfiles(profiles)}\n`);
  for (const failure of failures) out.write(`\nFAILED ${failure.scenario}: ${failure.error}\n`);

  await mkdir(RESULTS_DIR, { recursive: true });
  const report = {
    started: started.toISOString(),
    finished: finished.toISOString(),
    machine,
    settings,
    ...table.toJSON(),
    markdown: table.formatMarkdown(),
    notes: context.notes,
    profiles,
    failures,
  };
  const file = join(RESULTS_DIR, `bench-${stamp}.json`);
  await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(join(RESULTS_DIR, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);
  out.write(`\nresults: ${file}\n`);
  return failures.length > 0 ? 1 : 0;
}

function describeMachine() {
  const version = (command: string, args: string[]) => {
    try {
      return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split('\n')[0]!;
    } catch {
      return `${command}: unknown version`;
    }
  };
  const commit = version('git', ['-C', BENCH_DIR, 'rev-parse', '--short', 'HEAD']);
  const dirty = version('git', ['-C', BENCH_DIR, 'status', '--porcelain', '--untracked-files=no']) !== '';
  return {
    cpu: cpus()[0]?.model ?? 'unknown CPU',
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 1024 ** 3),
    loadAverageAtStart: loadavg().map((value) => Number(value.toFixed(2))),
    loadAverageAtEnd: [] as number[],
    tools: [version('skopeo', ['--version']), version('docker-registry', ['--version']), version('redis-server', ['--version'])],
    commit: `${commit}${dirty ? ' with uncommitted changes' : ''}`,
  };
}

try {
  process.exitCode = await main();
} catch (error) {
  if (!(error instanceof InvalidInputError)) throw error;
  process.stderr.write(`bench: ${error.message}\n`);
  process.exitCode = 2;
}
