import { RegistryError } from '../errors.ts';

/** Attempts at a manifest PUT that the target answers with MANIFEST_BLOB_UNKNOWN. */
const MANIFEST_PUT_ATTEMPTS = 4;

/**
 * Runs `push`, a manifest PUT. When the target answers 400 saying that the manifest references a blob or manifest
 * it does not know, runs `recheck` (which places again what is missing) and pushes again, up to
 * MANIFEST_PUT_ATTEMPTS in all. distribution gives that answer, with DIGEST_INVALID, while another
 * request rewrites the link of a referenced blob, as a mount of a blob already there does; the blob
 * is there again a moment later.
 */
export async function pushRechecking<T>(push: () => Promise<T>, recheck: () => Promise<void>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await push();
    } catch (error) {
      // A 5xx with this code is distribution refusing a foreign layer, which another attempt cannot change.
      const unknownReference = error instanceof RegistryError && error.status === 400 && error.registryCodes.includes('MANIFEST_BLOB_UNKNOWN');
      if (!unknownReference || attempt >= MANIFEST_PUT_ATTEMPTS) throw error;
      await recheck();
    }
  }
}
