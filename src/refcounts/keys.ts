/**
 * Redis key names of the reference store. Every key starts with the configured prefix and names the
 * mirror registry host, so the records of two mirror registries never share a key:
 *
 *   <base> = <prefix>:refs:<registry>
 *   <base>:repos                       set of repositories with records
 *   <base>:images:<repository>         set of image keys recorded in the repository
 *   <base>:tags:<repository>           hash: tag -> digest it last pointed at
 *   <base>:uses:<image key>            sorted set: user -> when the use was recorded (ms)
 *   <base>:user:<cluster>/<service>    set of image keys the user deploys
 *   <base>:cluster:<cluster>           set of services of the cluster with uses ('' is the whole cluster)
 *   <base>:unused                      sorted set: image key -> when it lost its last use (ms)
 *   <base>:unused-kind                 hash: image key -> 'previous' or 'released'
 *   <base>:children:<repository>@<digest>  set of child digests an index lists
 *   <base>:parents:<repository>@<digest>   set of index digests that list a child
 *   <base>:leases:<repository>         sorted set: lease token -> expiry (ms, Redis clock)
 *   <base>:claim:<repository>          claim token of the sweep deleting in the repository
 *   <base>:revision:<repository>       counter increased by every recorded use
 *
 * The Lua scripts derive these names from `<base>` themselves, so on Redis Cluster the prefix must
 * contain a hash tag, such as `{mirrorfleet}`, that puts every key in one slot (BullMQ requires the same).
 */

export interface StoreKeyOptions {
  prefix: string;
}

export function storeBase(options: StoreKeyOptions, registry: string): string {
  return `${options.prefix}:refs:${registry}`;
}

export const storeKeys = {
  repositories: (base: string) => `${base}:repos`,
  images: (base: string, repository: string) => `${base}:images:${repository}`,
  tags: (base: string, repository: string) => `${base}:tags:${repository}`,
  uses: (base: string, imageKey: string) => `${base}:uses:${imageKey}`,
  user: (base: string, user: string) => `${base}:user:${user}`,
  cluster: (base: string, cluster: string) => `${base}:cluster:${cluster}`,
  unused: (base: string) => `${base}:unused`,
  unusedKind: (base: string) => `${base}:unused-kind`,
  children: (base: string, repository: string, digest: string) => `${base}:children:${repository}@${digest}`,
  parents: (base: string, repository: string, digest: string) => `${base}:parents:${repository}@${digest}`,
  leases: (base: string, repository: string) => `${base}:leases:${repository}`,
  claim: (base: string, repository: string) => `${base}:claim:${repository}`,
  revision: (base: string, repository: string) => `${base}:revision:${repository}`,
};

/** Stream of every deletion: what, why, when and which job. One per key prefix. */
export function auditStreamKey(options: StoreKeyOptions): string {
  return `${options.prefix}:audit`;
}

/** Lock that serialises the sweeps of one registry host across the fleet. */
export function sweepLockKey(options: StoreKeyOptions, registry: string): string {
  return `${options.prefix}:lock:sweep:${registry}`;
}
