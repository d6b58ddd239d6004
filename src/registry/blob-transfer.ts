import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { DigestMismatchError } from '../errors.ts';
import { openResumableBlob } from './blob-reader.ts';
import type { RegistryClient } from './client.ts';

/**
 * Streams one blob from a source repository to a target repository. The bytes pass through a
 * verifier that hashes and counts them on the way, so a blob is never held whole in memory and a
 * truncated or altered stream fails before the target commits it (the target also checks the `digest`
 * parameter of the final PUT, so a mismatch can never be stored).
 */

export interface BlobTransferOptions {
  /** Blobs up to this size go in one PUT; larger ones in PATCH chunks of `chunkBytes`. */
  monolithicMaxBytes: number;
  chunkBytes: number;
  /** Called with the number of bytes that just passed through. */
  onBytes?: (bytes: number) => void;
  /** Aborts the transfer: the source stream is destroyed, so the upload fails before it completes. */
  signal?: AbortSignal | undefined;
}

export interface BlobTransferEnds {
  source: RegistryClient;
  sourceRepository: string;
  target: RegistryClient;
  targetRepository: string;
  /** An open upload session at the target, such as the one a refused mount left. */
  location?: URL;
}

/** Hashes and counts bytes passing through; fails when they exceed `size` or end with another digest. */
export class DigestVerifier extends Transform {
  private readonly hash: Hash;
  private readonly digest: string;
  private readonly size: number;
  private readonly onBytes: ((bytes: number) => void) | undefined;
  private seen = 0;

  constructor(digest: string, size: number, onBytes?: (bytes: number) => void) {
    super();
    const algorithm = digest.slice(0, digest.indexOf(':'));
    this.hash = createHash(algorithm);
    this.digest = digest;
    this.size = size;
    this.onBytes = onBytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.size >= 0 && this.seen > this.size) {
      callback(new DigestMismatchError(`blob ${this.digest} sent more than the ${this.size} bytes its descriptor states`));
      return;
    }
    this.hash.update(chunk);
    this.onBytes?.(chunk.length);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    const actual = `${this.digest.slice(0, this.digest.indexOf(':'))}:${this.hash.digest('hex')}`;
    if (this.size >= 0 && this.seen !== this.size) {
      callback(new DigestMismatchError(`blob ${this.digest} ended after ${this.seen} of ${this.size} bytes`));
    } else if (actual !== this.digest) {
      callback(new DigestMismatchError(`blob ${this.digest} arrived with digest ${actual}`));
    } else {
      callback();
    }
  }
}

/**
 * Copies one blob of `size` bytes. Returns the number of bytes pushed to the target.
 * A download that breaks resumes with a Range request (see blob-reader.ts). A chunked upload keeps one
 * chunk in memory at a time, so that a PATCH that fails can be resumed from the offset the registry
 * reports (see `RegistryClient.uploadChunk`).
 */
export async function transferBlob(ends: BlobTransferEnds, digest: string, size: number, options: BlobTransferOptions): Promise<number> {
  const { source, target, sourceRepository, targetRepository } = ends;
  options.signal?.throwIfAborted();
  const blob = await openResumableBlob(source, sourceRepository, digest, source.retryPolicy.maxAttempts - 1);
  const verifier = new DigestVerifier(digest, size, options.onBytes);
  blob.on('error', (error) => verifier.destroy(error));
  // An abort can destroy the verifier before the upload reads it, and an 'error' event without a
  // listener would end the process. The upload gets the error when it reads, and the catch below
  // reports the abort's own reason.
  verifier.on('error', () => undefined);
  blob.pipe(verifier);
  const onAbort = () => blob.destroy(options.signal!.reason as Error);
  options.signal?.addEventListener('abort', onAbort, { once: true });
  // The signal may have aborted while the download was being opened; a listener added after that never runs.
  if (options.signal?.aborted) onAbort();

  try {
    let location = ends.location;
    if (!location) {
      const session = await target.startUpload(targetRepository);
      if (session.mounted) throw new Error('unreachable: an upload without mount cannot be mounted');
      location = session.location;
    }
    options.signal?.throwIfAborted();

    if (size <= options.monolithicMaxBytes) {
      await target.uploadMonolithic(targetRepository, location, digest, verifier, size);
      return size;
    }

    const iterator = verifier[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    const pending: { leftover: Buffer | undefined } = { leftover: undefined };
    // One buffer receives each chunk in turn, so a blob of any size allocates one chunk. The next chunk is
    // read into it only after the PATCH of the previous one has succeeded, because a PATCH that fails
    // is resumed from these bytes.
    const buffer = Buffer.allocUnsafe(Math.min(options.chunkBytes, size));
    for (let offset = 0; offset < size; offset += options.chunkBytes) {
      const length = Math.min(options.chunkBytes, size - offset);
      const read = await readInto(iterator, pending, buffer, length);
      if (read < length) throw new DigestMismatchError(`blob ${digest} ended after ${offset + read} of ${size} bytes`);
      location = await target.uploadChunk(targetRepository, location, buffer.subarray(0, length), offset, length);
    }
    // One more read lets the verifier finish: it throws here when the digest or size is wrong.
    const end = await iterator.next();
    if (!end.done) throw new DigestMismatchError(`blob ${digest} sent more than the ${size} bytes its descriptor states`);
    await target.finishUpload(targetRepository, location, digest);
    return size;
  } catch (error) {
    // An abort surfaces as whatever the broken stream caused; report the abort's own reason instead.
    if (options.signal?.aborted) throw options.signal.reason;
    throw error;
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    blob.destroy();
    verifier.destroy();
  }
}

/**
 * Copies exactly `count` bytes from `iterator` into the start of `target` (fewer only when it ends),
 * keeping the rest for the next call. Returns the number of bytes copied.
 */
async function readInto(iterator: AsyncIterator<Buffer>, pending: { leftover: Buffer | undefined }, target: Buffer, count: number): Promise<number> {
  let filled = 0;
  while (filled < count) {
    let chunk = pending.leftover;
    pending.leftover = undefined;
    if (!chunk) {
      const next = await iterator.next();
      if (next.done) break;
      chunk = next.value;
    }
    const remaining = count - filled;
    if (chunk.length > remaining) {
      pending.leftover = chunk.subarray(remaining);
      chunk = chunk.subarray(0, remaining);
    }
    chunk.copy(target, filled);
    filled += chunk.length;
  }
  return filled;
}
