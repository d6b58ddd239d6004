import { performance } from 'node:perf_hooks';
import type { BenchContext } from '../context.ts';
import { peakRss } from '../fleet.ts';
import type { BenchImage } from '../images.ts';

/**
 * Scenario 5: peak resident memory (VmHWM) of a worker process that copies one image and nothing else:
 * the ~200 MB image of four layers, and an image of one 1 GiB layer. Each copy runs in a fresh worker
 * process and an empty mirror registry; the peak is read after the job, before the process stops.
 */

export const MEMORY = '5 memory';
const MB = 1e6;
// A worker may hold one upload chunk (16 MiB by default) more for a larger layer; anything beyond is growth.
const GROWTH_ALLOWANCE_BYTES = 16 * 1024 * 1024;

export async function memory(context: BenchContext): Promise<void> {
  const { settings, table } = context;
  const cold = await context.coldImage();
  const huge = await context.image('huge', [{ seed: 'huge-0', size: settings.hugeLayer }]);
  const hugeLabel = `${Math.round(settings.hugeLayer / (1024 * 1024))} MiB single-layer image`;

  for (let run = 0; run < settings.runs; run += 1) {
    const small = await peakDuringCopy(context, cold);
    const large = await peakDuringCopy(context, huge);
    table.add(MEMORY, 'idle worker peak RSS', 'MB', small.idle / MB);
    table.add(MEMORY, `peak RSS, ${(cold.totalBytes / MB).toFixed(0)} MB image`, 'MB', small.peak / MB);
    table.add(MEMORY, `peak RSS, ${hugeLabel}`, 'MB', large.peak / MB);
    table.add(MEMORY, 'peak RSS growth, large minus small image', 'MB', (large.peak - small.peak) / MB);
    table.add(MEMORY, `copy time, ${hugeLabel}`, 's', large.seconds);
    table.add(MEMORY, `throughput, ${hugeLabel}`, 'MB/s', huge.totalBytes / MB / large.seconds);
  }

  const small = table.summary(MEMORY, `peak RSS, ${(cold.totalBytes / MB).toFixed(0)} MB image`)!;
  const large = table.summary(MEMORY, `peak RSS, ${hugeLabel}`)!;
  const growth = table.summary(MEMORY, 'peak RSS growth, large minus small image')!;
  table.check(MEMORY, 'peak RSS under 150 MB for both images', `max ${small.max.toFixed(1)} MB and ${large.max.toFixed(1)} MB`, small.max < 150 && large.max < 150);
  table.check(
    MEMORY,
    'peak RSS does not grow with layer size',
    `median growth ${growth.median.toFixed(1)} MB (allowance ${(GROWTH_ALLOWANCE_BYTES / MB).toFixed(1)} MB, one upload chunk)`,
    growth.median * MB <= GROWTH_ALLOWANCE_BYTES,
  );
}

async function peakDuringCopy(context: BenchContext, image: BenchImage): Promise<{ idle: number; peak: number; seconds: number }> {
  const mirror = await context.startMirror();
  const fleet = await context.startFleet(mirror, { workers: 1 });
  try {
    const pid = fleet.workers[0]!.child.pid!;
    const idle = await peakRss(pid);
    const started = performance.now();
    const result = await fleet.mirrorAndWait(fleet.request(context.reference(image), 'memory'));
    const seconds = (performance.now() - started) / 1000;
    const peak = await peakRss(pid);
    if (result.action !== 'copied' || result.digest !== image.digest) throw new Error(`memory scenario job was ${result.action} with ${result.digest}, expected copied ${image.digest}`);
    return { idle, peak, seconds };
  } finally {
    await context.release(fleet, mirror);
  }
}
