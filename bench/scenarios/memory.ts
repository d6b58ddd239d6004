import { performance } from 'node:perf_hooks';
import type { BenchContext } from '../context.ts';
import { peakRss, type FleetOptions } from '../fleet.ts';
import type { BenchImage } from '../images.ts';
import { prepareShippedWorker } from '../shipped.ts';

/**
 * Scenario 5: peak resident memory (VmHWM) of a worker process that copies one image and nothing else:
 * the ~200 MB image of four layers, an image of one 1 GiB layer and one of a 256 MiB layer (smaller
 * with `--quick`). Each copy runs in a fresh worker
 * process and an empty mirror registry; the peak is read after the job, before the process stops.
 * Two workers are measured: as the container image ships it (compiled JavaScript, the image's
 * NODE_OPTIONS), which the target applies to, and as a checkout runs it (TypeScript sources, the
 * runner's NODE_OPTIONS or `BENCH_NODE_OPTIONS`).
 */

export const MEMORY = '5 memory';
const MB = 1e6;
// Peak RSS varies by a few MB from run to run. Growth beyond this, from the middle layer to the large one, counts as growth with size.
const GROWTH_ALLOWANCE_BYTES = 8 * 1024 * 1024;

export async function memory(context: BenchContext): Promise<void> {
  const { settings, table } = context;
  const cold = await context.coldImage();
  const huge = await context.image('huge', [{ seed: 'huge-0', size: settings.hugeLayer }]);
  const mid = await context.image('mid', [{ seed: 'mid-0', size: settings.midLayer }]);
  const hugeLabel = `${Math.round(settings.hugeLayer / (1024 * 1024))} MiB single-layer image`;
  const midLabel = `${Math.round(settings.midLayer / (1024 * 1024))} MiB`;

  const shipped = await prepareShippedWorker();
  const variants: Array<{ label: string; options: Partial<FleetOptions> }> = [
    { label: 'as shipped', options: { cli: shipped.cli, nodeOptions: shipped.nodeOptions } },
    { label: 'checkout', options: {} },
  ];
  for (let run = 0; run < settings.runs; run += 1) {
    for (const { label, options } of variants) {
      const small = await peakDuringCopy(context, cold, options);
      const large = await peakDuringCopy(context, huge, options);
      const middle = await peakDuringCopy(context, mid, options);
      table.add(MEMORY, `${label}: idle worker peak RSS`, 'MB', small.idle / MB);
      table.add(MEMORY, `${label}: peak RSS, ${(cold.totalBytes / MB).toFixed(0)} MB image`, 'MB', small.peak / MB);
      table.add(MEMORY, `${label}: peak RSS, ${hugeLabel}`, 'MB', large.peak / MB);
      table.add(MEMORY, `${label}: peak RSS, ${midLabel} single-layer image`, 'MB', middle.peak / MB);
      table.add(MEMORY, `${label}: peak RSS growth, ${hugeLabel} minus ${midLabel}`, 'MB', (large.peak - middle.peak) / MB);
      table.add(MEMORY, `${label}: peak RSS growth, large minus small image`, 'MB', (large.peak - small.peak) / MB);
      table.add(MEMORY, `${label}: copy time, ${hugeLabel}`, 's', large.seconds);
      table.add(MEMORY, `${label}: throughput, ${hugeLabel}`, 'MB/s', huge.totalBytes / MB / large.seconds);
    }
  }
  context.note(
    MEMORY,
    `as shipped: the compiled JavaScript (npm run build) with the container image's NODE_OPTIONS=${shipped.nodeOptions}; ` +
      `checkout: the TypeScript sources with ${settings.workerNodeOptions ? `NODE_OPTIONS=${settings.workerNodeOptions}` : "Node's default heap settings"}`,
  );

  const small = table.summary(MEMORY, `as shipped: peak RSS, ${(cold.totalBytes / MB).toFixed(0)} MB image`)!;
  const large = table.summary(MEMORY, `as shipped: peak RSS, ${hugeLabel}`)!;
  const growth = table.summary(MEMORY, `as shipped: peak RSS growth, ${hugeLabel} minus ${midLabel}`)!;
  const mixedGrowth = table.summary(MEMORY, 'as shipped: peak RSS growth, large minus small image')!;
  const checkoutSmall = table.summary(MEMORY, `checkout: peak RSS, ${(cold.totalBytes / MB).toFixed(0)} MB image`)!;
  const checkoutLarge = table.summary(MEMORY, `checkout: peak RSS, ${hugeLabel}`)!;
  table.check(
    MEMORY,
    'peak RSS under 150 MB for both images',
    `as shipped: max ${small.max.toFixed(1)} MB and ${large.max.toFixed(1)} MB (checkout: ${checkoutSmall.max.toFixed(1)} and ${checkoutLarge.max.toFixed(1)} MB)`,
    small.max < 150 && large.max < 150,
  );
  // Layers up to the monolithic limit stream in one PUT, and larger ones in streamed PATCH chunks. Growth
  // with size is measured between two layers that both go up in chunks (4 times apart in a full run).
  table.check(
    MEMORY,
    'peak RSS does not grow with layer size',
    `as shipped: median growth ${growth.median.toFixed(1)} MB from ${midLabel} to ${hugeLabel} (allowance ${(GROWTH_ALLOWANCE_BYTES / MB).toFixed(1)} MB); ` +
      `${mixedGrowth.median.toFixed(1)} MB from the ${(cold.totalBytes / MB).toFixed(0)} MB image, whose layers go up in one PUT each`,
    growth.median * MB <= GROWTH_ALLOWANCE_BYTES,
  );
}

async function peakDuringCopy(context: BenchContext, image: BenchImage, options: Partial<FleetOptions>): Promise<{ idle: number; peak: number; seconds: number }> {
  const mirror = await context.startMirror();
  const fleet = await context.startFleet(mirror, { ...options, workers: 1 });
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
