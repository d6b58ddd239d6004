import { performance } from 'node:perf_hooks';
import { skopeoCopy } from '../../test/harness/skopeo.ts';
import type { BenchContext } from '../context.ts';
import { formatCommands, RedisCommandCounter, totalCommands } from '../redis-commands.ts';
import { percentile } from '../report.ts';
import { formatKinds, trafficOf } from '../traffic.ts';

/**
 * Scenario 2: the mirror registry already has the image. mirrorfleet runs one job at a time (enqueue
 * to result, one worker process), and each job's latency is recorded. skopeo copies the same image into a
 * repository that already has it. Requests per job come from both registries' access logs, and Redis
 * commands per job (worker and producer, commands inside Lua scripts included) from `INFO commandstats`.
 */

export const WARM = '2 warm repeat';

export async function warmRepeat(context: BenchContext): Promise<void> {
  const { settings, source, table } = context;
  const image = await context.coldImage();
  const reference = context.reference(image);
  const mirror = await context.startMirror();
  const fleet = await context.startFleet(mirror, { workers: 1 });
  const commands = new RedisCommandCounter(context.redis.url);
  try {
    const request = fleet.request(reference, 'warm');
    const first = await fleet.mirrorAndWait(request);
    const jobIds = new Set([first.jobId]);
    if (first.action !== 'copied') throw new Error(`the first warm-repeat job was ${first.action}, expected copied`);
    const skopeoTarget = `${mirror.host}/skopeo/warm:${image.tag}`;
    await skopeoCopy(`docker://${reference}`, skopeoTarget);

    for (let run = 0; run < settings.runs; run += 1) {
      // mirrorfleet: one job at a time.
      await Promise.all([source.clearLog(), mirror.clearLog(), commands.reset()]);
      const latencies: number[] = [];
      const inWorker: number[] = [];
      for (let i = 0; i < settings.warmJobs; i += 1) {
        const started = performance.now();
        const result = await fleet.mirrorAndWait(request);
        latencies.push(performance.now() - started);
        inWorker.push(result.durationMs);
        if (result.action !== 'skipped') throw new Error(`warm-repeat job ${i} was ${result.action}, expected skipped`);
        // A deduplicated request would return the previous job's result without running anything.
        if (jobIds.has(result.jobId)) throw new Error(`warm-repeat job ${i} returned the result of job ${result.jobId} again`);
        jobIds.add(result.jobId);
      }
      const commandCounts = await commands.read();
      const sourceTraffic = trafficOf(await source.requests(), context.blobSizes);
      const mirrorTraffic = trafficOf(await mirror.requests(), context.blobSizes);
      const jobs = settings.warmJobs;
      table.add(WARM, 'mirrorfleet p50, enqueue to result', 'ms', percentile(latencies, 50));
      table.add(WARM, 'mirrorfleet p99, enqueue to result', 'ms', percentile(latencies, 99));
      table.add(WARM, 'mirrorfleet p50, inside the worker', 'ms', percentile(inWorker, 50));
      table.add(WARM, 'mirrorfleet requests to source per job', 'requests', sourceTraffic.requests / jobs);
      table.add(WARM, 'mirrorfleet requests to mirror per job', 'requests', mirrorTraffic.requests / jobs);
      table.add(WARM, 'mirrorfleet manifest PUTs per job', 'requests', mirrorTraffic.manifestPuts / jobs);
      table.add(WARM, 'mirrorfleet blob requests per job', 'requests', (sourceTraffic.blobRequests + mirrorTraffic.blobRequests) / jobs);
      const commandTotals = totalCommands(commandCounts);
      table.add(WARM, 'mirrorfleet Redis commands per job', 'commands', commandTotals.all / jobs);
      table.add(WARM, 'mirrorfleet Redis script calls per job', 'commands', commandTotals.scripts / jobs);
      if (run === 0) {
        context.note(WARM, `mirrorfleet Redis commands per job (worker and producer): ${formatCommands(commandCounts, jobs)}`);
        context.note(WARM, `mirrorfleet per job: source ${formatKinds(sourceTraffic.byKind, jobs)}; mirror ${formatKinds(mirrorTraffic.byKind, jobs)}`);
      }

      // skopeo: the same image into a repository that has it.
      await Promise.all([source.clearLog(), mirror.clearLog()]);
      const skopeoTimes: number[] = [];
      for (let i = 0; i < settings.warmSkopeoRuns; i += 1) {
        const started = performance.now();
        await skopeoCopy(`docker://${reference}`, skopeoTarget);
        skopeoTimes.push(performance.now() - started);
      }
      const skopeoSource = trafficOf(await source.requests(), context.blobSizes);
      const skopeoMirror = trafficOf(await mirror.requests(), context.blobSizes);
      const copies = settings.warmSkopeoRuns;
      table.add(WARM, 'skopeo p50 per copy', 'ms', percentile(skopeoTimes, 50));
      table.add(WARM, 'skopeo requests to source per copy', 'requests', skopeoSource.requests / copies);
      table.add(WARM, 'skopeo requests to mirror per copy', 'requests', skopeoMirror.requests / copies);
      table.add(WARM, 'skopeo manifest PUTs per copy', 'requests', skopeoMirror.manifestPuts / copies);
      if (run === 0) {
        context.note(WARM, `skopeo per copy: source ${formatKinds(skopeoSource.byKind, copies)}; mirror ${formatKinds(skopeoMirror.byKind, copies)}`);
      }
    }
  } finally {
    await commands.close();
    await context.release(fleet, mirror);
  }

  const p50 = table.summary(WARM, 'mirrorfleet p50, enqueue to result')!;
  table.check(WARM, 'p50 under 5 ms', `median of p50s ${p50.median.toFixed(2)} ms (inside the worker ${table.summary(WARM, 'mirrorfleet p50, inside the worker')!.median} ms)`, p50.median < 5);
  const puts = table.summary(WARM, 'mirrorfleet manifest PUTs per job')!;
  const blobs = table.summary(WARM, 'mirrorfleet blob requests per job')!;
  table.check(WARM, 'no manifest PUT and no blob request', `max ${puts.max} manifest PUTs and ${blobs.max} blob requests per job`, puts.max === 0 && blobs.max === 0);
  const toSource = table.summary(WARM, 'mirrorfleet requests to source per job')!;
  const toMirror = table.summary(WARM, 'mirrorfleet requests to mirror per job')!;
  table.check(
    WARM,
    'at most 3 requests per registry',
    `max ${toSource.max} to source, ${toMirror.max} to mirror per job`,
    toSource.max <= 3 && toMirror.max <= 3,
  );
}
