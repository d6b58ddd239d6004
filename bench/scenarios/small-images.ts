import { performance } from 'node:perf_hooks';
import { clearSkopeoCache, skopeoCopy } from '../../test/harness/skopeo.ts';
import type { BenchContext } from '../context.ts';
import type { BenchImage } from '../images.ts';

/**
 * Scenario 6: many distinct small images (no blob in common), cold, into an empty mirror registry each
 * time: mirrorfleet with two worker processes and every request enqueued at once, skopeo in a loop one
 * image after the other, and skopeo with several copies at once.
 */

export const SMALL = '6 many small images';

export async function smallImages(context: BenchContext): Promise<void> {
  const { settings, table } = context;
  const images = await context.fixture('small-images', async () => {
    const pushed: BenchImage[] = [];
    for (let i = 0; i < settings.smallImages; i += 1) {
      pushed.push(await context.image(`small-${i}`, settings.smallLayers.map((size, layer) => ({ seed: `small-${i}-${layer}`, size }))));
    }
    return pushed;
  });
  const count = images.length;
  const bytes = images.reduce((sum, image) => sum + image.totalBytes, 0);
  context.note(SMALL, `${count} images of ${settings.smallLayers.length} layers (${settings.smallLayers.map((size) => `${size / 1024} KiB`).join(' + ')}), ${(bytes / 1e6).toFixed(1)} MB in all`);

  for (let run = 0; run < settings.runs; run += 1) {
    const fleetSeconds = await mirrorfleetRun(context, images);
    const loopSeconds = await skopeoRun(context, images, 1);
    const parallelSeconds = await skopeoRun(context, images, settings.skopeoParallel);
    table.add(SMALL, 'mirrorfleet time', 's', fleetSeconds);
    table.add(SMALL, 'mirrorfleet images/s', 'images/s', count / fleetSeconds);
    table.add(SMALL, 'skopeo loop time', 's', loopSeconds);
    table.add(SMALL, 'skopeo loop images/s', 'images/s', count / loopSeconds);
    table.add(SMALL, `skopeo ${settings.skopeoParallel} at once time`, 's', parallelSeconds);
    table.add(SMALL, 'mirrorfleet / skopeo loop time', 'ratio', fleetSeconds / loopSeconds);
    table.add(SMALL, `mirrorfleet / skopeo ${settings.skopeoParallel} at once time`, 'ratio', fleetSeconds / parallelSeconds);
  }
}

async function mirrorfleetRun(context: BenchContext, images: BenchImage[]): Promise<number> {
  const mirror = await context.startMirror();
  const fleet = await context.startFleet(mirror, { workers: 2 });
  try {
    const started = performance.now();
    const results = await Promise.all(images.map((image) => fleet.mirrorAndWait(fleet.request(context.reference(image), 'small'))));
    const seconds = (performance.now() - started) / 1000;
    const wrong = results.filter((result, i) => result.action !== 'copied' || result.digest !== images[i]!.digest);
    if (wrong.length > 0) throw new Error(`${wrong.length} small-image jobs did not copy their image (first: ${wrong[0]!.action} ${wrong[0]!.digest})`);
    return seconds;
  } finally {
    await context.release(fleet, mirror);
  }
}

/** Copies every image with skopeo, `parallel` copies at a time; returns seconds. */
async function skopeoRun(context: BenchContext, images: BenchImage[], parallel: number): Promise<number> {
  const mirror = await context.startMirror();
  try {
    await clearSkopeoCache();
    let next = 0;
    const copyNext = async () => {
      while (next < images.length) {
        const image = images[next]!;
        next += 1;
        await skopeoCopy(`docker://${context.reference(image)}`, `${mirror.host}/skopeo/${image.repository}:${image.tag}`);
      }
    };
    const started = performance.now();
    await Promise.all(Array.from({ length: parallel }, copyNext));
    return (performance.now() - started) / 1000;
  } finally {
    await context.release(mirror);
  }
}
