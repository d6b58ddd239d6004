import { request } from 'undici';
import { putManifest, startUpload, withDigest, type BenchImage } from './images.ts';

/**
 * Copies `image` the plain way that sets the machine's raw limit: for every blob at once, a plain streaming GET from the
 * source piped straight into a monolithic PUT at the target (POST, then PUT `?digest=`), then the
 * manifest. No digest check, no retries, no presence checks, no locks: whatever a real copier does on top
 * of this costs time that this path does not spend.
 */
export async function rawCopy(sourceUrl: string, targetUrl: string, targetRepository: string, image: BenchImage): Promise<void> {
  await Promise.all(
    image.blobs.map(async (blob) => {
      const location = await startUpload(targetUrl, targetRepository);
      const get = await request(`${sourceUrl}/v2/${image.repository}/blobs/${blob.digest}`);
      if (get.statusCode !== 200) {
        await get.body.dump();
        throw new Error(`raw copy: GET of blob ${blob.digest} from ${sourceUrl} failed with status ${get.statusCode}, expected 200`);
      }
      const put = await request(withDigest(location, blob.digest), {
        method: 'PUT',
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
        body: get.body,
      });
      await put.body.dump();
      if (put.statusCode !== 201) throw new Error(`raw copy: PUT of blob ${blob.digest} to ${targetUrl} failed with status ${put.statusCode}, expected 201`);
    }),
  );
  await putManifest(targetUrl, targetRepository, image.tag, image.manifest);
}
