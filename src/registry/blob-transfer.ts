import { createHash, type Hash } from 'node:crypto';
import { Readable, Transform, addAbortSignal, type TransformCallback } from 'node:stream';
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
 * A download that breaks resumes with a Range request (see blob-reader.ts). A PATCH that fails is
 * resumed from the offset the registry reports (see `RegistryClient.uploadChunk`).
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

    // Each chunk streams from the verifier into its PATCH, so no chunk is held in memory. A PATCH that
    // failed is resumed from the offset the registry reports, and the bytes it lost are read from the
    // source again.
    const chunks = new ChunkStreams(verifier, digest, size, async (from) => {
      const again = await openResumableBlob(source, sourceRepository, digest, source.retryPolicy.maxAttempts - 1, from);
      if (options.signal) addAbortSignal(options.signal, again);
      return again;
    }, options.onBytes);
    for (let offset = 0; offset < size; offset += options.chunkBytes) {
      const end = Math.min(offset + options.chunkBytes, size);
      location = await target.uploadChunk(targetRepository, location, (from) => chunks.body(from, end), offset, end - offset);
    }
    // One more read lets the verifier finish: it throws here when the digest or size is wrong.
    await chunks.finish();
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
 * The bytes of a blob as one stream per PATCH. Each call to `body` waits until the stream it returned
 * before has closed, so two PATCH bodies never read the blob at once.
 */
class ChunkStreams {
  private readonly iterator: AsyncIterator<Buffer>;
  private readonly digest: string;
  private readonly size: number;
  private readonly reread: (from: number) => Promise<Readable>;
  private readonly onBytes: ((bytes: number) => void) | undefined;
  private leftover: Buffer | undefined;
  /** Offset in the blob of the next byte to read from the verifier. */
  private readOffset = 0;
  private current: Readable | undefined;
  private closed: Promise<void> = Promise.resolve();

  constructor(verified: Readable, digest: string, size: number, reread: (from: number) => Promise<Readable>, onBytes?: (bytes: number) => void) {
    this.iterator = verified[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    this.digest = digest;
    this.size = size;
    this.reread = reread;
    this.onBytes = onBytes;
  }

  /** Returns a stream of the blob's bytes from offset `from` to `end` (exclusive). */
  body(from: number, end: number): Readable {
    const previous = this.closed;
    this.current?.destroy();
    const stream = Readable.from(this.bytes(from, end, previous), { objectMode: false });
    this.closed = new Promise((resolve) => stream.once('close', () => resolve()));
    this.current = stream;
    return stream;
  }

  /** Reads the end of the blob; throws when the verifier finds the digest or the size wrong. */
  async finish(): Promise<void> {
    // The last PATCH succeeded, so its body is done with even when the HTTP client did not read its end.
    this.current?.destroy();
    await this.closed;
    const next = this.leftover ? { done: false } : await this.iterator.next();
    if (!next.done) throw new DigestMismatchError(`blob ${this.digest} sent more than the ${this.size} bytes its descriptor states`);
  }

  private async *bytes(from: number, end: number, previous: Promise<void>): AsyncGenerator<Buffer> {
    await previous;
    if (from > this.readOffset) throw new Error(`unreachable: a PATCH from byte ${from} of blob ${this.digest}, which has delivered ${this.readOffset}`);
    if (from < this.readOffset) yield* this.again(from, this.readOffset);

    while (this.readOffset < end) {
      let chunk = this.leftover;
      this.leftover = undefined;
      if (!chunk) {
        const next = await this.iterator.next();
        if (next.done) throw new DigestMismatchError(`blob ${this.digest} ended after ${this.readOffset} of ${this.size} bytes`);
        chunk = next.value;
      }
      const remaining = end - this.readOffset;
      if (chunk.length > remaining) {
        this.leftover = chunk.subarray(remaining);
        chunk = chunk.subarray(0, remaining);
      }
      this.readOffset += chunk.length;
      yield chunk;
    }
  }

  /**
   * Reads bytes `from` to `to` from the source again, for a PATCH that lost them after the verifier
   * had hashed them.
   * NOTE: these bytes are not hashed again. The target's digest check at the final PUT covers them.
   */
  private async *again(from: number, to: number): AsyncGenerator<Buffer> {
    const stream = await this.reread(from);
    let missing = to - from;
    try {
      for await (const chunk of stream) {
        const data = (chunk as Buffer).subarray(0, missing);
        missing -= data.length;
        this.onBytes?.(data.length);
        yield data;
        if (missing === 0) return;
      }
    } finally {
      stream.destroy();
    }
    throw new DigestMismatchError(`blob ${this.digest} ended after ${to - missing} of ${this.size} bytes when read again from byte ${from}`);
  }
}
