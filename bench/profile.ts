import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { PROJECT_ROOT } from '../test/harness/workers.ts';
import type { BenchContext } from './context.ts';
import { mirroredTargets } from './scenarios/throughput.ts';

/**
 * CPU profiles of a worker process (`node --cpu-prof`), one during a cold copy and one on the warm path,
 * summarised as the functions with the most self time. Only the samples taken while the measured jobs
 * ran count: V8 stamps samples with the monotonic clock that `process.hrtime` also reads on Linux, so the
 * benchmark notes that clock around the jobs and drops the process's start and stop.
 */

export interface ProfileSummary {
  phase: string;
  /** The `.cpuprofile` file, relative to the project root. */
  file: string;
  windowMs: number;
  /** Window time minus V8's `(idle)` samples: what the process spent on the CPU. */
  busyMs: number;
  functions: Array<{ name: string; location: string; selfMs: number; percentOfBusy: number }>;
  /** Self time by package or project folder. */
  areas: Array<{ area: string; selfMs: number; percentOfBusy: number }>;
  /**
   * Time by the innermost package or project folder on the stack, so that Node's own code and native
   * work (socket writes, hashing) count for the package that called them.
   */
  callers: Array<{ area: string; selfMs: number; percentOfBusy: number }>;
}

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

interface Window {
  phase: string;
  /** Microseconds on the monotonic clock. */
  from: number;
  to: number;
}

const TOP_FUNCTIONS = 15;

export async function profileWorker(context: BenchContext, resultsDir: string): Promise<ProfileSummary[]> {
  const summaries: ProfileSummary[] = [];
  const image = await context.coldImage();

  // Cold copy of the ~200 MB image into an empty mirror registry.
  const coldDir = join(resultsDir, 'cold');
  await mkdir(coldDir, { recursive: true });
  const mirror = await context.startMirror();
  const coldFleet = await context.startFleet(mirror, { workers: 1, cpuProfileDir: coldDir });
  try {
    const from = monotonicMicroseconds();
    await coldFleet.mirrorAndWait(coldFleet.request(context.reference(image), 'profile'));
    const to = monotonicMicroseconds();
    await coldFleet.stopWorker(coldFleet.workers[0]!);
    summaries.push(...(await summariseDir(coldDir, [{ phase: 'cold copy', from, to }])));
  } finally {
    await context.release(coldFleet, mirror);
  }

  // Warm path: one job at a time, then a batch of jobs at once, on targets that already hold the image.
  const targets = await mirroredTargets(context);
  const warmDir = join(resultsDir, 'warm');
  await mkdir(warmDir, { recursive: true });
  const warmFleet = await context.startFleet(targets.mirror, { workers: 1, keyPrefix: targets.keyPrefix, cpuProfileDir: warmDir });
  try {
    await warmFleet.mirrorBulkAndDrain(targets.requests.slice(0, 200));
    const sequentialFrom = monotonicMicroseconds();
    for (let i = 0; i < context.settings.warmJobs; i += 1) await warmFleet.mirrorAndWait(targets.requests[0]!);
    const sequentialTo = monotonicMicroseconds();
    await warmFleet.mirrorBulkAndDrain(targets.requests);
    const batchTo = monotonicMicroseconds();
    await warmFleet.stopWorker(warmFleet.workers[0]!);
    summaries.push(
      ...(await summariseDir(warmDir, [
        { phase: `warm path, ${context.settings.warmJobs} jobs one at a time`, from: sequentialFrom, to: sequentialTo },
        { phase: `warm path, ${targets.requests.length} jobs at once`, from: sequentialTo, to: batchTo },
      ])),
    );
  } finally {
    await context.release(warmFleet);
  }
  return summaries;
}

function monotonicMicroseconds(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

async function summariseDir(dir: string, windows: Window[]): Promise<ProfileSummary[]> {
  const files = (await readdir(dir)).filter((name) => name.endsWith('.cpuprofile'));
  if (files.length !== 1) throw new Error(`expected one .cpuprofile in ${dir}, found ${files.length}`);
  const file = join(dir, files[0]!);
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  return windows.map((window) => summariseProfile(profile, relative(PROJECT_ROOT, file), window));
}

/** Sums self time per function and per area over the samples inside `window`. */
export function summariseProfile(profile: CpuProfile, file: string, window: Window): ProfileSummary {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const parents = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
  const callerOf = new Map<number, string>();
  const byCaller = new Map<string, number>();
  const byFunction = new Map<string, { name: string; location: string; selfMicroseconds: number }>();
  const byArea = new Map<string, number>();
  let inWindow = 0;
  let time = profile.startTime;
  for (let i = 0; i < profile.samples.length; i += 1) {
    time += profile.timeDeltas[i] ?? 0;
    if (time < window.from || time > window.to) continue;
    const frame = nodes.get(profile.samples[i]!);
    if (!frame) continue;
    // Each sample stands for the interval since the previous one.
    const duration = profile.timeDeltas[i] ?? 0;
    inWindow += 1;
    if (frame.functionName === '(idle)') continue;
    const location = frame.url ? `${shortUrl(frame.url)}:${frame.lineNumber + 1}` : '';
    const key = `${frame.functionName}@${location}`;
    const entry = byFunction.get(key) ?? { name: frame.functionName || '(anonymous)', location, selfMicroseconds: 0 };
    entry.selfMicroseconds += duration;
    byFunction.set(key, entry);
    const area = areaOf(frame.functionName, frame.url);
    byArea.set(area, (byArea.get(area) ?? 0) + duration);
    const caller = innermostCaller(profile.samples[i]!, nodes, parents, callerOf);
    byCaller.set(caller, (byCaller.get(caller) ?? 0) + duration);
  }
  if (inWindow === 0) throw new Error(`the profile ${file} has no sample inside the ${window.phase} window; are the clocks the same?`);

  const windowMicroseconds = window.to - window.from;
  const busy = Math.max(1, [...byArea.values()].reduce((sum, value) => sum + value, 0));
  return {
    phase: window.phase,
    file,
    windowMs: windowMicroseconds / 1000,
    busyMs: busy / 1000,
    functions: [...byFunction.values()]
      .sort((a, b) => b.selfMicroseconds - a.selfMicroseconds)
      .slice(0, TOP_FUNCTIONS)
      .map((entry) => ({ name: entry.name, location: entry.location, selfMs: entry.selfMicroseconds / 1000, percentOfBusy: (100 * entry.selfMicroseconds) / busy })),
    areas: rank(byArea, busy),
    callers: rank(byCaller, busy),
  };
}

function rank(totals: Map<string, number>, busy: number): Array<{ area: string; selfMs: number; percentOfBusy: number }> {
  return [...totals.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([area, micros]) => ({ area, selfMs: micros / 1000, percentOfBusy: (100 * micros) / busy }));
}

/**
 * Returns the area of the innermost frame of node `id`'s stack that belongs to an npm package or the
 * project, or the frame's own area (such as `(garbage collector)`) when no such frame is on the stack.
 */
function innermostCaller(id: number, nodes: Map<number, CpuProfile['nodes'][number]['callFrame']>, parents: Map<number, number>, cache: Map<number, string>): string {
  const cached = cache.get(id);
  if (cached !== undefined) return cached;
  const frame = nodes.get(id)!;
  const own = areaOf(frame.functionName, frame.url);
  let area: string;
  if (own !== 'native' && own !== 'node internals' && !own.startsWith('(')) area = own;
  else {
    const parent = parents.get(id);
    const inherited = parent === undefined ? undefined : innermostCaller(parent, nodes, parents, cache);
    area = inherited === undefined || inherited === '(root)' ? own : inherited;
  }
  cache.set(id, area);
  return area;
}

/** Sorts a frame into an npm package, a project folder, Node's own code, or V8's pseudo-frames. */
function areaOf(functionName: string, url: string): string {
  if (!url) return functionName.startsWith('(') ? functionName : 'native';
  const packageMatch = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (packageMatch) return `npm ${packageMatch[1]}`;
  if (url.startsWith('node:')) return 'node internals';
  const path = url.startsWith('file://') ? relative(PROJECT_ROOT, new URL(url).pathname) : url;
  const folder = path.split('/').slice(0, path.startsWith('src/') ? 2 : 1).join('/');
  return folder;
}

function shortUrl(url: string): string {
  const packageMatch = /node_modules\/(.*)$/.exec(url);
  if (packageMatch) return packageMatch[1]!;
  return url.startsWith('file://') ? relative(PROJECT_ROOT, new URL(url).pathname) : url;
}

/** Formats summaries for the terminal. */
export function formatProfiles(summaries: ProfileSummary[]): string {
  const lines: string[] = [];
  for (const summary of summaries) {
    lines.push(
      `${summary.phase}: ${summary.busyMs.toFixed(0)} ms on the CPU in a ${summary.windowMs.toFixed(0)} ms window (${summary.file})`,
      `  self time by area: ${summary.areas.slice(0, 8).map((area) => `${area.area} ${area.percentOfBusy.toFixed(1)}%`).join(', ')}`,
      `  time by innermost package on the stack: ${summary.callers.slice(0, 8).map((area) => `${area.area} ${area.percentOfBusy.toFixed(1)}%`).join(', ')}`,
    );
    for (const entry of summary.functions) {
      lines.push(`  ${entry.percentOfBusy.toFixed(1).padStart(5)}%  ${entry.selfMs.toFixed(1).padStart(8)} ms  ${entry.name}  ${entry.location}`);
    }
  }
  return lines.join('\n');
}
