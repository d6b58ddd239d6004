import { Readable } from 'node:stream';
import type { BlobStream, RegistryClient } from './client.ts';
import { isNetworkError } from './retry.ts';

/**
 * Opens a blob as one stream that survives broken connections. When the body breaks, the reader
 * requests the rest with a Range header and goes on from the first byte it has not delivered. When a
 * registry ignores Range and sends the whole blob again, the bytes delivered already are skipped.
 * The first request is made before this returns, so a missing blob fails here and not mid-stream.
 * @param maxResumes how many times a broken body is resumed before its error is passed on.
 * @param start offset of the first byte to deliver; above 0, the first request has a Range header too.
 */
export async function openResumableBlob(client: RegistryClient, repository: string, digest: string, maxResumes: number, start = 0): Promise<Readable> {
  const first = await client.getBlob(repository, digest, start);
  const stream = Readable.from(resumingChunks(client, repository, digest, first, maxResumes, start), { objectMode: false });
  // A stream destroyed before its first read never runs the generator, which would close the response.
  stream.once('close', () => {
    if (first.stream.destroyed) return;
    // Destroying an unread response body reports an abort, which is expected here.
    first.stream.on('error', () => undefined);
    first.stream.destroy();
  });
  return stream;
}

async function* resumingChunks(client: RegistryClient, repository: string, digest: string, first: BlobStream, maxResumes: number, start: number): AsyncGenerator<Buffer> {
  let blob = first;
  let delivered = start;
  let resumes = 0;
  for (;;) {
    try {
      let skip = delivered - blob.offset;
      for await (const chunk of blob.stream) {
        let data = chunk as Buffer;
        if (skip > 0) {
          const dropped = Math.min(skip, data.length);
          skip -= dropped;
          data = data.subarray(dropped);
          if (data.length === 0) continue;
        }
        delivered += data.length;
        yield data;
      }
      return;
    } catch (error) {
      if (!isNetworkError(error) || resumes >= maxResumes) throw error;
      resumes += 1;
      blob.stream.destroy();
      blob = await client.getBlob(repository, digest, delivered);
    }
  }
}
