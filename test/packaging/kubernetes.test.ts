/**
 * deploy/kubernetes, checked without a cluster: each manifest against the typed models of
 * kubernetes-models and @kubernetes-models/keda, then what the manifests refer to (selectors, ports,
 * configuration, commands, the image user) against each other and against the project.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { ConfigMap, Namespace, Service } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import type { IContainer, IPodSpec, IProbe } from 'kubernetes-models/v1';
import type { IDeployment } from 'kubernetes-models/apps/v1';
import type { IScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import type { IHorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config/config.ts';
import { WORKER_QUEUES } from '../../workers/run.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import {
  cliUsage,
  environmentVariablesInSource,
  kustomizationFolders,
  lastInstruction,
  listFiles,
  optionValue,
  PROJECT_ROOT,
  readDockerfile,
  renderKustomization,
  stageChain,
  unknownCliParts,
  type RenderedManifest,
} from './helpers.ts';

const ROOT = join(PROJECT_ROOT, 'deploy', 'kubernetes');
const OVERLAYS = { keda: join(ROOT, 'keda'), hpa: join(ROOT, 'hpa') };
const NAMESPACE = 'mirrorfleet';
const VERSION = (await import('../../package.json', { with: { type: 'json' } })).default.version;

/** The typed model of each kind; a manifest of a kind missing here fails the test. */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'keda.sh/v1alpha1/ScaledObject': ScaledObject,
};
// NOTE: no typed model of the Prometheus Operator is a dependency (@kubernetes-models/prometheus-operator
// would be), so the PodMonitor gets only the structural checks in its own test below.
const UNMODELLED = new Set(['monitoring.coreos.com/v1/PodMonitor']);

type Labels = Record<string, string>;

let rendered: Record<keyof typeof OVERLAYS, RenderedManifest[]>;
let usage: Map<string, string>;
let directory: string;

beforeAll(() => {
  rendered = { keda: renderKustomization(OVERLAYS.keda), hpa: renderKustomization(OVERLAYS.hpa) };
  usage = cliUsage();
  directory = mkdtempSync(join(tmpdir(), 'mirrorfleet-kubernetes-'));
});

afterAll(() => {
  rmSync(directory, { recursive: true, force: true });
});

function kindKey(manifest: RenderedManifest['manifest']): string {
  return `${manifest.apiVersion}/${manifest.kind}`;
}

function find<T>(overlay: keyof typeof OVERLAYS, kind: string, name: string): T {
  const entry = rendered[overlay].find(({ manifest }) => manifest.kind === kind && manifest.metadata.name === name);
  if (entry === undefined) throw new Error(`overlay ${overlay} renders no ${kind} ${name}`);
  return entry.manifest as T;
}

function deployments(): IDeployment[] {
  return rendered.keda.filter(({ manifest }) => manifest.kind === 'Deployment').map(({ manifest }) => manifest as unknown as IDeployment);
}

function podSpec(deployment: IDeployment): IPodSpec {
  return deployment.spec!.template.spec!;
}

function matches(selector: Labels | undefined, labels: Labels | undefined): boolean {
  if (selector === undefined || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([key, value]) => labels?.[key] === value);
}

/** Pods of the Deployments that a label selector selects. */
function selectedPods(selector: Labels | undefined): IDeployment[] {
  return deployments().filter((deployment) => matches(selector, deployment.spec!.template.metadata?.labels));
}

/**
 * Builds the environment a container gets from ConfigMaps (envFrom) and env values, with
 * MIRRORFLEET_CONFIG pointing at a copy of the mounted config.json. Secrets are left out because the
 * operator creates them.
 */
function containerEnvironment(deployment: IDeployment, container: IContainer): Record<string, string> {
  const env: Record<string, string> = {};
  for (const source of container.envFrom ?? []) {
    if (source.configMapRef === undefined) continue;
    Object.assign(env, find<ConfigMap>('keda', 'ConfigMap', source.configMapRef.name!).data);
  }
  for (const variable of container.env ?? []) env[variable.name] = variable.value ?? '';

  const configPath = env.MIRRORFLEET_CONFIG;
  if (configPath !== undefined) {
    const mount = container.volumeMounts?.find((candidate) => configPath.startsWith(`${candidate.mountPath}/`));
    const volume = podSpec(deployment).volumes?.find((candidate) => candidate.name === mount?.name);
    const configMap = find<ConfigMap>('keda', 'ConfigMap', volume?.configMap?.name ?? '');
    const file = configMap.data?.[configPath.slice(mount!.mountPath.length + 1)];
    if (file === undefined) throw new Error(`${deployment.metadata!.name}: ${configPath} is not in a mounted ConfigMap`);
    const copy = join(directory, `${deployment.metadata!.name}-${container.name}.json`);
    writeFileSync(copy, file);
    env.MIRRORFLEET_CONFIG = copy;
  }
  return env;
}

function containerConfig(deployment: IDeployment, container: IContainer): Config {
  return loadConfig(containerEnvironment(deployment, container));
}

function probePort(container: IContainer, probe: IProbe | undefined): number | undefined {
  const port = probe?.httpGet?.port;
  if (typeof port === 'number') return port;
  return container.ports?.find((candidate) => candidate.name === port)?.containerPort;
}

describe('kubernetes manifests', () => {
  it('validate against their typed models', () => {
    for (const { file, manifest } of [...rendered.keda, ...rendered.hpa]) {
      const key = kindKey(manifest);
      if (UNMODELLED.has(key)) continue;
      const Model = MODELS[key];
      expect(Model, `${file}: ${key}`).toBeDefined();
      expect(() => new Model!(manifest as never).validate(), `${file}: ${key} ${manifest.metadata.name}`).not.toThrow();
    }
  });

  it('are all part of a kustomization', () => {
    const listed = new Set<string>();
    for (const folder of kustomizationFolders(ROOT)) {
      for (const { file } of renderKustomization(folder)) listed.add(join(PROJECT_ROOT, file));
    }
    const files = listFiles(ROOT).filter((file) => /\.ya?ml$/.test(file) && !file.endsWith('/kustomization.yaml'));
    expect(files.filter((file) => !listed.has(file))).toEqual([]);
  });

  it('land in one namespace', () => {
    for (const { file, manifest } of rendered.keda) {
      if (manifest.kind === 'Namespace') expect(manifest.metadata.name, file).toBe(NAMESPACE);
      else expect(manifest.metadata.namespace, file).toBe(NAMESPACE);
    }
  });

  it('select the pods of their own Deployment', () => {
    for (const deployment of deployments()) {
      expect(matches(deployment.spec!.selector.matchLabels, deployment.spec!.template.metadata?.labels), deployment.metadata!.name).toBe(true);
    }
    const service = find<Service>('keda', 'Service', 'mirrorfleet-api');
    expect(selectedPods(service.spec!.selector).map((deployment) => deployment.metadata!.name)).toEqual(['mirrorfleet-api']);
    const target = service.spec!.ports![0]!.targetPort;
    expect(podSpec(selectedPods(service.spec!.selector)[0]!).containers[0]!.ports?.map((port) => port.name)).toContain(target);
  });

  it('run the image of this version', () => {
    for (const deployment of deployments()) {
      for (const container of podSpec(deployment).containers) expect(container.image, deployment.metadata!.name).toBe(`mirrorfleet:${VERSION}`);
    }
  });

  it('run known commands and queues', () => {
    for (const deployment of deployments()) {
      for (const container of podSpec(deployment).containers) {
        // The image's entry point is `mirrorfleet`, so args are the command line after it.
        expect(container.command, deployment.metadata!.name).toBeUndefined();
        expect(unknownCliParts(container.args ?? [], usage), deployment.metadata!.name).toEqual([]);
        for (const queue of optionValue(container.args ?? [], 'queues')?.split(',') ?? []) expect(WORKER_QUEUES).toContain(queue);
      }
    }
  });

  it('load a valid configuration', () => {
    const known = environmentVariablesInSource();
    for (const deployment of deployments()) {
      for (const container of podSpec(deployment).containers) {
        const env = containerEnvironment(deployment, container);
        for (const name of Object.keys(env)) expect(known.has(name), `${deployment.metadata!.name} variable ${name}`).toBe(true);
        expect(() => loadConfig(env), deployment.metadata!.name).not.toThrow();
      }
    }
  });

  it('probe the listening ports', () => {
    const worker = find<IDeployment>('keda', 'Deployment', 'mirrorfleet-worker');
    const api = find<IDeployment>('keda', 'Deployment', 'mirrorfleet-api');
    const ports = [
      { deployment: worker, port: (config: Config) => config.worker.metricsPort },
      { deployment: api, port: (config: Config) => config.api.port },
    ];
    for (const { deployment, port } of ports) {
      const container = podSpec(deployment).containers[0]!;
      const expected = port(containerConfig(deployment, container));
      const name = deployment.metadata!.name;
      expect(probePort(container, container.readinessProbe), `${name} readiness`).toBe(expected);
      expect(container.readinessProbe?.httpGet?.path, `${name} readiness`).toBe('/readyz');
      expect(probePort(container, container.livenessProbe), `${name} liveness`).toBe(expected);
      expect(container.livenessProbe?.httpGet?.path, `${name} liveness`).toBe('/healthz');
    }
  });

  it("run as the image's user", () => {
    const dockerfile = readDockerfile(join(PROJECT_ROOT, 'Dockerfile'));
    const [user, group] = (lastInstruction(stageChain(dockerfile, 'runtime'), 'USER') ?? '').split(':').map(Number);
    for (const deployment of deployments()) {
      const spec = podSpec(deployment);
      const name = deployment.metadata!.name;
      expect(spec.securityContext?.runAsNonRoot, name).toBe(true);
      expect(spec.securityContext?.runAsUser, name).toBe(user);
      expect(spec.securityContext?.runAsGroup, name).toBe(group);
      expect(spec.securityContext?.seccompProfile?.type, name).toBe('RuntimeDefault');
      expect(spec.automountServiceAccountToken, name).toBe(false);
      for (const container of spec.containers) {
        expect(container.securityContext?.allowPrivilegeEscalation, name).toBe(false);
        expect(container.securityContext?.readOnlyRootFilesystem, name).toBe(true);
        expect(container.securityContext?.capabilities?.drop, name).toEqual(['ALL']);
      }
    }
  });

  it('request CPU and memory', () => {
    for (const deployment of deployments()) {
      for (const container of podSpec(deployment).containers) {
        const name = `${deployment.metadata!.name}/${container.name}`;
        expect(container.resources?.requests?.cpu, name).toBeDefined();
        expect(container.resources?.requests?.memory, name).toBeDefined();
        expect(container.resources?.limits?.memory, name).toBeDefined();
      }
    }
  });

  it('give workers time to finish', () => {
    const worker = find<IDeployment>('keda', 'Deployment', 'mirrorfleet-worker');
    const grace = containerConfig(worker, podSpec(worker).containers[0]!).worker.shutdownGraceSeconds;
    // After the grace, a worker still hands its jobs back and closes its connections.
    const termination = podSpec(worker).terminationGracePeriodSeconds ?? 30;
    expect(termination).toBeGreaterThanOrEqual(grace + 10);
    expect(termination).toBeLessThanOrEqual(grace + 30);
  });

  it('limit disruptions to one pod', () => {
    for (const name of ['mirrorfleet-worker', 'mirrorfleet-api']) {
      const budget = find<PodDisruptionBudget>('keda', 'PodDisruptionBudget', name);
      expect(selectedPods(budget.spec!.selector!.matchLabels).map((deployment) => deployment.metadata!.name), name).toEqual([name]);
      expect(budget.spec!.maxUnavailable, name).toBe(1);
    }
    expect(find<IDeployment>('keda', 'Deployment', 'mirrorfleet-api').spec!.replicas).toBeGreaterThanOrEqual(2);
  });

  it('scrape declared metrics ports', () => {
    const monitor = find<{ spec: { selector: { matchLabels: Labels }; podMetricsEndpoints: { port: string; path: string }[] } }>('keda', 'PodMonitor', 'mirrorfleet');
    const pods = selectedPods(monitor.spec.selector.matchLabels);
    expect(pods.map((deployment) => deployment.metadata!.name).sort()).toEqual(['mirrorfleet-api', 'mirrorfleet-worker']);
    const declared = new Set(pods.flatMap((deployment) => podSpec(deployment).containers.flatMap((container) => container.ports?.map((port) => port.name) ?? [])));
    for (const endpoint of monitor.spec.podMetricsEndpoints) {
      expect(declared.has(endpoint.port), endpoint.port).toBe(true);
      expect(endpoint.path).toBe('/metrics');
    }
    expect(monitor.spec.podMetricsEndpoints.map((endpoint) => endpoint.port).sort()).toEqual([...declared].sort());
  });
});

describe('kubernetes autoscaling', () => {
  let redis: TestRedis;
  let connection: Redis;

  beforeAll(async () => {
    redis = await startRedis();
    connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  });

  afterAll(async () => {
    connection?.disconnect();
    await redis?.stop();
  });

  function autoscalers(overlay: keyof typeof OVERLAYS): string[] {
    return rendered[overlay].filter(({ manifest }) => ['ScaledObject', 'HorizontalPodAutoscaler'].includes(manifest.kind)).map(({ manifest }) => `${manifest.kind}/${manifest.metadata.name}`);
  }

  it('leaves worker replicas to autoscaler', () => {
    expect(find<IDeployment>('keda', 'Deployment', 'mirrorfleet-worker').spec!.replicas).toBeUndefined();
  });

  it('uses one autoscaler per overlay', () => {
    expect(autoscalers('keda')).toEqual(['ScaledObject/mirrorfleet-worker']);
    expect(autoscalers('hpa')).toEqual(['HorizontalPodAutoscaler/mirrorfleet-worker']);
  });

  it('scales workers on waiting lists', () => {
    const scaled = find<IScaledObject>('keda', 'ScaledObject', 'mirrorfleet-worker');
    const worker = find<IDeployment>('keda', 'Deployment', 'mirrorfleet-worker');
    const container = podSpec(worker).containers[0]!;
    const config = containerConfig(worker, container);
    const queues = optionValue(container.args ?? [], 'queues')!.split(',');
    const redisUrl = new URL(config.redis.url);

    expect(scaled.spec.scaleTargetRef.name).toBe(worker.metadata!.name);
    const redisTriggers = scaled.spec.triggers.filter((trigger) => trigger.type === 'redis');
    expect(redisTriggers.map((trigger) => trigger.metadata.listName).sort()).toEqual(queues.map((queue) => `${config.redis.keyPrefix}:${queue}:wait`).sort());
    for (const trigger of redisTriggers) {
      expect(trigger.metadata.address).toBe(`${redisUrl.hostname}:${redisUrl.port || '6379'}`);
      expect(Number(trigger.metadata.listLength)).toBe(config.worker.concurrency);
    }
    expect(scaled.spec.fallback?.replicas).toBeGreaterThanOrEqual(scaled.spec.minReplicaCount ?? 0);
  });

  it('falls back to CPU', () => {
    const scaled = find<IScaledObject>('keda', 'ScaledObject', 'mirrorfleet-worker');
    expect(scaled.spec.triggers.filter((trigger) => trigger.type === 'cpu').map((trigger) => trigger.metricType)).toEqual(['Utilization']);

    const hpa = find<IHorizontalPodAutoscaler>('hpa', 'HorizontalPodAutoscaler', 'mirrorfleet-worker');
    expect(hpa.spec!.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'mirrorfleet-worker' });
    expect(hpa.spec!.metrics?.map((metric) => `${metric.type}/${metric.resource?.name}`)).toEqual(['Resource/cpu']);
    expect(hpa.spec!.maxReplicas).toBe(scaled.spec.maxReplicaCount);
  });

  it('reads the list BullMQ fills', async () => {
    // The listName pattern of the ScaledObject, checked against a real queue under a prefix of its own.
    const prefix = `packaging-${randomBytes(4).toString('hex')}`;
    for (const name of WORKER_QUEUES) {
      const queue = new Queue(name, { connection, prefix });
      try {
        const job = await queue.add('probe', {});
        expect(await connection.lrange(`${prefix}:${name}:wait`, 0, -1), name).toEqual([job.id]);
      } finally {
        await queue.obliterate({ force: true });
        await queue.close();
      }
    }
  });
});
