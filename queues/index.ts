/**
 * The public API of the `mirrorfleet` npm package (`import { MirrorfleetProducer } from 'mirrorfleet'`):
 * the producer client, the request and result types of each queue, the functions that validate a
 * request as the workers do, and the errors that enqueueing and waiting reject with. The package
 * exports nothing else, so every other module may change between versions.
 */

export { MirrorfleetProducer, type ProducerOptions } from './producer.ts';
export { MIRROR_QUEUE, parseMirrorRequest, type MirrorProgress, type MirrorRequest, type MirrorRequestInput, type MirrorResult } from './mirror.ts';
export { BUILD_QUEUE, parseBuildRequest, type BuildProgress, type BuildRequest, type BuildRequestInput, type BuildResult } from './build.ts';
export {
  CLEANUP_QUEUE,
  parseCleanupRequest,
  type CleanupImage,
  type CleanupRequest,
  type CleanupRequestInput,
  type CleanupResult,
  type DeletedImage,
  type KeptImage,
  type ReconcileRequest,
  type ReconcileRequestInput,
  type RecordedUse,
  type ReleasedUse,
  type ReleaseRequest,
  type ReleaseRequestInput,
  type SweepLimit,
  type SweepRequest,
  type SweepRequestInput,
} from './cleanup.ts';
export { InvalidInputError, MirrorfleetError, type ErrorCode } from '../src/errors.ts';
