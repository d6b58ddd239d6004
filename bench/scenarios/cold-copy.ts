import { performance } from 'node:perf_hooks';
import { clearSkopeoCache, skopeoCopy } from '../../test/harness/skopeo.ts';
import type { BenchContext } from '../context.ts';
import { manifestDigest, type BenchImage } from '../images.ts';
import { rawCopy } from '../raw-copy.ts';

/**
 * Scenario 1: one image of four incompressible layers into an empty mirror registry, by mirrorfleet
 * (enqueue to result, one worker process), by `skopeo copy --all` with its blob cache removed, and by
 * the raw limit. Every copy goes into a registry started empty for it. The order of the three rotates
 * from run to run, and one unmeasured warm-up round comes first, so that the page cache and the drift of
 * a shared machine do not favour one of them.
 */

export const COLD = '1 cold copy';
const COPIERS = ['mirrorfleet', 'skopeo', 'raw'] as const;
type Copier = (typeof COPIERS)[number];

export async function coldCopy(context: BenchContext): Promise<void> {
  const image = await context.coldImage();
  const megabytes = image.totalBytes / 1e6;
  context.note(COLD, `image: ${image.blobs.length - 1} layers, ${megabytes.toFixed(1)} MB in all (MB = 10^6 bytes)`);

  for (let run = 0; run <= context.settings.runs; run += 1) {
    const seconds = {} as Record<Copier, number>;
    for (let i = 0; i < COPIERS.length; i += 1) {
      const copier = COPIERS[(run + i) % COPIERS.length]!;
      seconds[copier] = await timeCopy(context, image, copier);
    }
    if (run === 0) continue;

    for (const copier of COPIERS) {
      context.table.add(COLD, `${copier} time`, 's', seconds[copier]);
      context.table.add(COLD, `${copier} throughput`, 'MB/s', megabytes / seconds[copier]);
    }
    context.table.add(COLD, 'mirrorfleet / skopeo time', 'ratio', seconds.mirrorfleet / seconds.skopeo);
    context.table.add(COLD, 'mirrorfleet / raw time', 'ratio', seconds.mirrorfleet / seconds.raw);
    context.table.add(COLD, 'skopeo / raw time', 'ratio', seconds.skopeo / seconds.raw);
  }

  const toSkopeo = context.table.summary(COLD, 'mirrorfleet / skopeo time')!;
  const toRaw = context.table.summary(COLD, 'mirrorfleet / raw time')!;
  context.table.check(COLD, 'time ratio to skopeo <= 1.0', `median ${toSkopeo.median.toFixed(2)}`, toSkopeo.median <= 1.0);
  context.table.check(COLD, 'time ratio to the raw limit <= 1.2', `median ${toRaw.median.toFixed(2)}`, toRaw.median <= 1.2);
}

/** Copies `image` into a fresh mirror registry with `copier`; returns the seconds the copy took. */
async function timeCopy(context: BenchContext, image: BenchImage, copier: Copier): Promise<number> {
  const mirror = await context.startMirror();
  const fleet = copier === 'mirrorfleet' ? await context.startFleet(mirror, { workers: 1 }) : undefined;
  try {
    let repository = 'bench/cold';
    if (copier === 'skopeo') await clearSkopeoCache();
    const started = performance.now();
    if (fleet) {
      const result = await fleet.mirrorAndWait(fleet.request(context.reference(image), 'cold'));
      repository = result.target.slice(mirror.host.length + 1, result.target.lastIndexOf(':'));
    } else if (copier === 'skopeo') {
      await skopeoCopy(`docker://${context.reference(image)}`, `${mirror.host}/${repository}:${image.tag}`);
    } else {
      await rawCopy(context.source.url, mirror.url, repository, image);
    }
    const seconds = (performance.now() - started) / 1000;

    const copied = await manifestDigest(mirror.url, repository, image.tag);
    if (copied !== image.digest) throw new Error(`${copier} left ${repository}:${image.tag} at ${copied ?? 'nothing'}, expected ${image.digest}`);
    return seconds;
  } finally {
    if (fleet) await context.release(fleet);
    await context.release(mirror);
  }
}
