import { createHash, type Hash } from 'node:crypto';
import { Readable, Transform, addAbortSignal, type TransformCallback } from 'node:stream';
import { DigestMismatchError, MirrorfleetError } from '../errors.ts';
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
 * resumed from the offset the registry reports (see `RegistryClient.uploadChunk` and ChunkStreams).
 */
export async function transferBlob(ends: BlobTransferEnds, digest: string, size: number, options: BlobTransferOptions): Promise<number> {
  const { source, target, sourceRepository, targetRepository } = ends;
  options.signal?.throwIfAborted();
  const maxResumes = source.retryPolicy.maxAttempts - 1;
  const blob = await openResumableBlob(source, sourceRepository, digest, maxResumes);
  // An abort destroys the download with an error before anything reads it, and an 'error' event without a
  // listener would end the process. Readers get the error when they read, and the catch below reports the abort.
  blob.on('error', () => undefined);
  const onAbort = () => blob.destroy(options.signal!.reason as Error);
  options.signal?.addEventListener('abort', onAbort, { once: true });
  // The signal may have aborted while the download was being opened; a listener added after that never runs.
  if (options.signal?.aborted) onAbort();
  let chunks: ChunkStreams | undefined;

  try {
    let location = ends.location;
    if (!location) {
      const session = await target.startUpload(targetRepository);
      if (session.mounted) throw new Error('unreachable: an upload without mount cannot be mounted');
      location = session.location;
    }
    options.signal?.throwIfAborted();

    if (size <= options.monolithicMaxBytes) {
      const verifier = new DigestVerifier(digest, size, options.onBytes);
      blob.on('error', (error) => verifier.destroy(error));
      // An abort can destroy the verifier before the upload reads it, and an 'error' event without a
      // listener would end the process. The upload gets the error when it reads, and the catch below
      // reports the abort's own reason.
      verifier.on('error', () => undefined);
      blob.pipe(verifier);
      await target.uploadMonolithic(targetRepository, location, digest, verifier, size);
      return size;
    }

    // Each chunk streams from the source into its PATCH, so no chunk is held in memory.
    chunks = new ChunkStreams(blob, {
      digest,
      size,
      reopen: async (from) => {
        const again = await openResumableBlob(source, sourceRepository, digest, maxResumes, from);
        if (options.signal) addAbortSignal(options.signal, again);
        return again;
      },
      onBytes: options.onBytes,
    });
    for (let offset = 0; offset < size; offset += options.chunkBytes) {
      const end = Math.min(offset + options.chunkBytes, size);
      const stream = chunks;
      location = await target.uploadChunk(targetRepository, location, (from) => stream.body(offset, from, end), offset, end - offset);
    }
    await chunks.finish();
    await target.finishUpload(targetRepository, location, digest);
    return size;
  } catch (error) {
    // An abort surfaces as whatever the broken stream caused; report the abort's own reason instead.
    if (options.signal?.aborted) throw options.signal.reason;
    // A source read that broke a PATCH body is reported as itself, not as the PATCH's failure.
    if (chunks?.sourceFailure !== undefined) throw chunks.sourceFailure;
    throw error;
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    blob.destroy();
    chunks?.destroy();
  }
}

interface ChunkSource {
  digest: string;
  size: number;
  /** Opens the blob at the source again from byte `from`. */
  reopen: (from: number) => Promise<Readable>;
  /** Called with the number of bytes read from the source, read again ones included. */
  onBytes: ((bytes: number) => void) | undefined;
}

/**
 * The bytes of a blob as one stream per PATCH, read from one source stream at a time and hashed in the
 * order they are sent. When a PATCH that failed lost bytes, the chunk starts again from a new source
 * stream at its first byte. The hash goes back to its state there, and the bytes the registry reported
 * stored are hashed but not sent. So every byte the target stores is hashed once, in order. A transfer
 * also never has two source requests open at once, which would take two places in the source's
 * request window.
 */
class ChunkStreams {
  private readonly options: ChunkSource;
  private source: Readable;
  private iterator: AsyncIterator<Buffer>;
  private hash: Hash;
  private leftover: Buffer | undefined;
  /** Offset in the blob of the next byte the source stream delivers. */
  private readOffset = 0;
  /** First byte of the chunk being sent, and the hash state before it. */
  private chunkStart = -1;
  private chunkStartHash: Hash | undefined;
  private current: Readable | undefined;
  private closed: Promise<void> = Promise.resolve();
  /** Error of the source read that broke a PATCH body, which the transfer reports instead of the PATCH's. */
  sourceFailure: unknown;

  constructor(first: Readable, options: ChunkSource) {
    this.options = options;
    this.source = first;
    this.iterator = first[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    this.hash = createHash(options.digest.slice(0, options.digest.indexOf(':')));
  }

  /**
   * Returns a stream of the bytes from offset `from` to `end` (exclusive) of the chunk that starts at
   * `start`. It reads only after the stream returned before has closed, so two PATCH bodies never read
   * the source at once.
   */
  body(start: number, from: number, end: number): Readable {
    const previous = this.closed;
    this.current?.destroy();
    const stream = Readable.from(this.bytes(start, from, end, previous), { objectMode: false });
    this.closed = new Promise((resolve) => stream.once('close', () => resolve()));
    this.current = stream;
    return stream;
  }

  /** Checks the end of the blob: no byte beyond `size`, and the digest of what was sent. */
  async finish(): Promise<void> {
    // The last PATCH succeeded, so its body has ended even when the HTTP client did not read its end.
    this.current?.destroy();
    await this.closed;
    const { digest, size } = this.options;
    if (this.leftover || !(await this.read()).done) throw new DigestMismatchError(`blob ${digest} sent more than the ${size} bytes its descriptor states`);
    const actual = `${digest.slice(0, digest.indexOf(':'))}:${this.hash.digest('hex')}`;
    if (actual !== digest) throw new DigestMismatchError(`blob ${digest} arrived with digest ${actual}`);
  }

  destroy(): void {
    this.current?.destroy();
    this.source.destroy();
  }

  private async *bytes(start: number, from: number, end: number, previous: Promise<void>): AsyncGenerator<Buffer> {
    await previous;
    if (start !== this.chunkStart) {
      if (from !== start || this.readOffset !== start) throw new Error(`unreachable: chunk ${start}-${end} of blob ${this.options.digest} requested from ${from} at ${this.readOffset}`);
      this.chunkStart = start;
      this.chunkStartHash = this.hash.copy();
    } else if (from < this.readOffset) {
      this.hash = this.chunkStartHash!.copy();
      await this.reopen(start);
    }

    // Bytes of this chunk that the registry stored already: hashed, not sent.
    let skip = from - this.readOffset;
    while (this.readOffset < end) {
      let chunk = this.leftover;
      this.leftover = undefined;
      if (!chunk) {
        const next = await this.read();
        if (next.done) throw new DigestMismatchError(`blob ${this.options.digest} ended after ${this.readOffset} of ${this.options.size} bytes`);
        chunk = next.value;
      }
      const remaining = end - this.readOffset;
      if (chunk.length > remaining) {
        this.leftover = chunk.subarray(remaining);
        chunk = chunk.subarray(0, remaining);
      }
      this.hash.update(chunk);
      this.readOffset += chunk.length;
      if (skip >= chunk.length) {
        skip -= chunk.length;
        continue;
      }
      yield chunk.subarray(skip);
      skip = 0;
    }
  }

  /** Reads the next part of the source, keeping a failure in `sourceFailure`. */
  private async read(): Promise<IteratorResult<Buffer>> {
    try {
      const next = await this.iterator.next();
      if (!next.done) this.options.onBytes?.(next.value.length);
      return next;
    } catch (error) {
      throw this.failed(error);
    }
  }

  /** Replaces the source stream with one that starts at `from`, closing the old one first. */
  private async reopen(from: number): Promise<void> {
    this.source.destroy();
    this.leftover = undefined;
    try {
      this.source = await this.options.reopen(from);
    } catch (error) {
      throw this.failed(error);
    }
    this.iterator = this.source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    this.readOffset = from;
  }

  /**
   * Keeps a source failure and returns the error to end the PATCH body with. That one is not a network
   * error, so the PATCH is not retried against the target for a failure of the source.
   */
  private failed(error: unknown): Error {
    this.sourceFailure ??= error;
    if (error instanceof MirrorfleetError) return error;
    return new MirrorfleetError('REGISTRY_UNAVAILABLE', `reading blob ${this.options.digest} from the source failed: ${error instanceof Error ? error.message : String(error)}`, {
      retryable: true,
      cause: error,
    });
  }
}
