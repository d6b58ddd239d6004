import type { ImageReference } from '../image-ref/reference.ts';
import type { Credentials } from '../registry/auth.ts';

/**
 * A target provider knows one kind of mirror registry: how a logical location maps to its repository
 * names and limits, how to create repositories, and which credentials push to it. The mirror job sees
 * only this interface, so AWS ECR, Artifact Registry and Scaleway can sit behind it unnoticed.
 */

/** Where an image is mirrored for: one service's namespace, or one namespace shared by a cluster. */
export interface MirrorLocation {
  mode: 'service' | 'cluster';
  cluster: string;
  /** Required in service mode; in cluster mode it only records who uses the image. */
  service?: string | undefined;
}

export interface TargetName {
  repository: string;
  tag: string;
}

export interface TargetProvider {
  /** Name of the mirror registry in the configuration. */
  readonly name: string;
  /** Registry host[:port] that images are pushed to. */
  readonly host: string;
  /** Repository prefix inside the registry; '' when none. */
  readonly prefix: string;
  /** Plain HTTP instead of HTTPS. */
  readonly insecure: boolean;

  /** Maps a source image to its repository and tag in this mirror registry. Throws InvalidInputError when no valid name fits. */
  targetFor(source: ImageReference, location: MirrorLocation): TargetName;
  /** Returns true when `source` already lies inside this mirror registry's location, so nothing needs copying. */
  contains(source: ImageReference): boolean;
  /** Makes sure `repository` exists before the first push; registries that create on push do nothing. */
  ensureRepository(repository: string): Promise<void>;
  /** Credentials to push with, or undefined for anonymous access. */
  credentials(): Promise<Credentials | undefined>;

  /** True when the registry can delete a tag alone; otherwise images are deleted by manifest digest. */
  readonly canDeleteTags: boolean;
  /**
   * Deletes one image of `repository`: the tag when `canDeleteTags` and a tag is given, else the manifest
   * `digest`. Returns 'absent' when it was already gone, which callers count as deleted.
   */
  deleteImage(repository: string, image: { tag?: string; digest: string }): Promise<'deleted' | 'absent'>;
}
