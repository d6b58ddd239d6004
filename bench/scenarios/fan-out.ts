import { performance } from 'node:perf_hooks';
import { hostComponent } from '../../src/providers/generic.ts';
import { clearSkopeoCache, skopeoCopy } from '../../test/harness/skopeo.ts';
import type { BenchContext } from '../context.ts';
import type { BenchImage } from '../images.ts';
import { formatKinds, trafficOf, type Traffic } from '../traffic.ts';
import { COLD } from './cold-copy.ts';

/**
 * Scenario 3: the same image asked for by N services at once, in service mode (N target repositories)
 * and in cluster mode (one shared target), each into an empty mirror registry. mirrorfleet runs two
 * worker processes and all N requests are enqueued together. skopeo copies N times in a loop, as a
 * script would. Its blob cache is removed before the loop, and it learns during the loop as it would.
 * Bytes count blob bytes only; every job also reads the image's manifest (about 1 KB) from the source.
 */

export const FAN_OUT = '3 fan-out';
const MODES = ['service', 'cluster'] as const;
type Mode = (typeof MODES)[number];

export async function fanOut(context: BenchContext): Promise<void> {
  const { settings, table } = context;
  const image = await context.coldImage();
  const imageBlobBytes = image.blobs.reduce((sum, blob) => sum + blob.size, 0);
  const services = Array.from({ length: settings.fanOut }, (_, i) => `svc-${i}`);
  context.note(FAN_OUT, `${services.length} services; one image is ${(imageBlobBytes / 1e6).toFixed(1)} MB of blobs`);

  for (let run = 0; run < settings.runs; run += 1) {
    for (const mode of MODES) {
      const fleetRun = await fanOutMirrorfleet(context, image, services, mode);
      record(context, mode, 'mirrorfleet', fleetRun.seconds, fleetRun.source, fleetRun.mirror, imageBlobBytes);
      if (run === 0) context.note(FAN_OUT, `${mode} mode, mirrorfleet: source ${formatKinds(fleetRun.source.byKind)}; mirror ${formatKinds(fleetRun.mirror.byKind)}`);

      const skopeoRun = await fanOutSkopeo(context, image, services, mode);
      record(context, mode, 'skopeo', skopeoRun.seconds, skopeoRun.source, skopeoRun.mirror, imageBlobBytes);
      table.add(FAN_OUT, `${mode} mode: mirrorfleet / skopeo time`, 'ratio', fleetRun.seconds / skopeoRun.seconds);
    }
  }

  const cold = table.summary(COLD, 'mirrorfleet time');
  for (const mode of MODES) {
    const pulled = table.summary(FAN_OUT, `${mode} mode: mirrorfleet pulled / one image`)!;
    const pushed = table.summary(FAN_OUT, `${mode} mode: mirrorfleet pushed / one image`)!;
    table.check(FAN_OUT, `${mode} mode: pulled and pushed bytes each equal one image`, `pulled ${pulled.max}x, pushed ${pushed.max}x (max over runs)`, pulled.max === 1 && pushed.max === 1);
    const wall = table.summary(FAN_OUT, `${mode} mode: mirrorfleet wall time`)!;
    if (cold) {
      const ratio = wall.median / cold.median;
      table.check(FAN_OUT, `${mode} mode: wall time under 2x one cold copy`, `${wall.median.toFixed(2)} s = ${ratio.toFixed(2)}x the cold copy's ${cold.median.toFixed(2)} s`, ratio < 2);
    } else {
      table.check(FAN_OUT, `${mode} mode: wall time under 2x one cold copy`, `${wall.median.toFixed(2)} s; not compared: scenario 1 did not run`, false);
    }
  }
}

function record(context: BenchContext, mode: Mode, tool: string, seconds: number, source: Traffic, mirror: Traffic, imageBlobBytes: number): void {
  const { table } = context;
  table.add(FAN_OUT, `${mode} mode: ${tool} wall time`, 's', seconds);
  table.add(FAN_OUT, `${mode} mode: ${tool} MB pulled from source`, 'MB', source.blobBytesPulled / 1e6);
  table.add(FAN_OUT, `${mode} mode: ${tool} MB pushed to mirror`, 'MB', mirror.blobBytesPushed / 1e6);
  table.add(FAN_OUT, `${mode} mode: ${tool} pulled / one image`, 'ratio', source.blobBytesPulled / imageBlobBytes);
  table.add(FAN_OUT, `${mode} mode: ${tool} pushed / one image`, 'ratio', mirror.blobBytesPushed / imageBlobBytes);
  table.add(FAN_OUT, `${mode} mode: ${tool} requests to source`, 'requests', source.requests);
  table.add(FAN_OUT, `${mode} mode: ${tool} requests to mirror`, 'requests', mirror.requests);
}

interface FanOutRun {
  seconds: number;
  source: Traffic;
  mirror: Traffic;
}

async function fanOutMirrorfleet(context: BenchContext, image: BenchImage, services: string[], mode: Mode): Promise<FanOutRun> {
  const mirror = await context.startMirror();
  const fleet = await context.startFleet(mirror, { workers: 2 });
  try {
    await context.source.clearLog();
    const reference = context.reference(image);
    const started = performance.now();
    const finishedAt: number[] = [];
    const results = await Promise.all(
      services.map(async (service) => {
        const result = await fleet.mirrorAndWait(fleet.request(reference, service, { mode }));
        finishedAt.push((performance.now() - started) / 1000);
        return result;
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const actions = new Map<string, number>();
    for (const result of results) actions.set(result.action, (actions.get(result.action) ?? 0) + 1);
    const middle = finishedAt[Math.floor(finishedAt.length / 2)]!;
    context.note(
      FAN_OUT,
      `${mode} mode, mirrorfleet: first job done at ${finishedAt[0]!.toFixed(2)} s, half at ${middle.toFixed(2)} s, last at ${seconds.toFixed(2)} s; ` +
        `longest job ${(Math.max(...results.map((result) => result.durationMs)) / 1000).toFixed(2)} s inside the worker; ` +
        [...actions].map(([action, count]) => `${count} ${action}`).join(', '),
    );
    for (const result of results) {
      if (result.digest !== image.digest) throw new Error(`fan-out job ${result.jobId} mirrored ${result.digest}, expected ${image.digest}`);
    }
    return { seconds, source: trafficOf(await context.source.requests(), context.blobSizes), mirror: trafficOf(await mirror.requests(), context.blobSizes) };
  } finally {
    await context.release(fleet, mirror);
  }
}

async function fanOutSkopeo(context: BenchContext, image: BenchImage, services: string[], mode: Mode): Promise<FanOutRun> {
  const mirror = await context.startMirror();
  try {
    await Promise.all([context.source.clearLog(), clearSkopeoCache()]);
    const reference = context.reference(image);
    // The same names mirrorfleet gives: one repository per service, or one for the cluster.
    const sourcePart = `${hostComponent(context.source.host)}/${image.repository}`;
    const target = (service: string) =>
      mode === 'service' ? `${mirror.host}/bench/services/${service}/${sourcePart}:${image.tag}` : `${mirror.host}/bench/shared/${sourcePart}:${image.tag}`;
    const started = performance.now();
    for (const service of services) await skopeoCopy(`docker://${reference}`, target(service));
    const seconds = (performance.now() - started) / 1000;
    return { seconds, source: trafficOf(await context.source.requests(), context.blobSizes), mirror: trafficOf(await mirror.requests(), context.blobSizes) };
  } finally {
    await context.release(mirror);
  }
}
