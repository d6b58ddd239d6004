import { RegistryError } from '../errors.ts';

/** Attempts at a manifest PUT that the target rejects with MANIFEST_BLOB_UNKNOWN. */
const MANIFEST_PUT_ATTEMPTS = 4;

/**
 * Runs `push`, a manifest PUT. When the target rejects it with 400 MANIFEST_BLOB_UNKNOWN (a referenced
 * blob or manifest it does not know), runs `recheck`, which places again what is missing, and pushes
 * again, up to MANIFEST_PUT_ATTEMPTS in all. distribution returns that error, with DIGEST_INVALID,
 * while another request rewrites the link of a referenced blob, as a mount of a blob already there
 * does. The blob is there again a moment later.
 */
export async function pushRechecking<T>(push: () => Promise<T>, recheck: () => Promise<void>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await push();
    } catch (error) {
      // A 5xx with this code is distribution refusing a foreign layer, which another attempt cannot change.
      const unknownReference = error instanceof RegistryError && error.status === 400 && error.registryCodes.includes('MANIFEST_BLOB_UNKNOWN');
      if (!unknownReference || attempt >= MANIFEST_PUT_ATTEMPTS) throw error;
      try {
        await recheck();
      } catch (recheckError) {
        // The rejected PUT is why the recheck ran, so it stays reachable as the cause.
        if (recheckError instanceof Error && recheckError.cause === undefined) recheckError.cause = error;
        throw recheckError;
      }
    }
  }
}
