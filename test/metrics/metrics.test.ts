import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { MAX_REGISTRY_LABELS, Metrics } from '../../src/metrics/metrics.ts';
import { PROJECT_ROOT } from '../harness/workers.ts';
import { parseSamples, valueOf } from './prometheus-text.ts';

// Labels whose values would be unbounded or identify single images or jobs.
const FORBIDDEN_LABELS = ['image', 'repository', 'tag', 'digest', 'reference', 'source', 'target', 'job_id', 'jobId', 'service', 'cluster'];

async function samplesOf(metrics: Metrics) {
  return parseSamples(await metrics.registry.metrics());
}

/** Returns every series name the metrics of one process can produce, histogram series included. */
async function seriesNames(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const metric of await new Metrics().registry.getMetricsAsJSON()) {
    names.add(metric.name);
    if (String(metric.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${metric.name}${suffix}`);
  }
  return names;
}

function metricNamesIn(expression: string): string[] {
  return [...expression.matchAll(/\bmirrorfleet_[a-z0-9_]+/g)].map((match) => match[0]);
}

describe('metric names and labels', () => {
  it('follow Prometheus conventions', async () => {
    const metrics = await new Metrics({ defaultMetrics: false }).registry.getMetricsAsJSON();

    expect(metrics.length).toBeGreaterThan(10);
    for (const metric of metrics) {
      expect(metric.name, metric.name).toMatch(/^mirrorfleet_[a-z][a-z0-9_]*$/);
      if (String(metric.type) === 'counter') expect(metric.name, `${metric.name} is a counter`).toMatch(/_total$/);
      else expect(metric.name, `${metric.name} is not a counter`).not.toMatch(/_total$/);
      if (String(metric.type) === 'histogram') expect(metric.name, `${metric.name} names its unit`).toMatch(/_(seconds|bytes)$/);
      for (const label of (metric as { labelNames?: string[] }).labelNames ?? []) {
        expect(FORBIDDEN_LABELS, `${metric.name} label ${label}`).not.toContain(label);
      }
    }
  });

  it('cap distinct registry hosts', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    for (let i = 0; i < MAX_REGISTRY_LABELS + 50; i += 1) metrics.registryRequests.inc({ registry: `registry-${i}.example`, method: 'GET', status: '200' });

    const registries = new Set((await metrics.registry.getSingleMetric('mirrorfleet_registry_requests_total')!.get()).values.map((value) => value.labels.registry));
    expect(registries.size).toBe(MAX_REGISTRY_LABELS + 1);
    expect(registries.has('other')).toBe(true);
    expect(registries.has('registry-0.example')).toBe(true);
  });

  it('keeps labelling a host seen before the cap', () => {
    const metrics = new Metrics({ defaultMetrics: false });
    for (let i = 0; i < MAX_REGISTRY_LABELS + 5; i += 1) metrics.registryLabel(`registry-${i}.example`);

    expect(metrics.registryLabel('registry-3.example')).toBe('registry-3.example');
    expect(metrics.registryLabel('late.example')).toBe('other');
  });
});

describe('registry responses', () => {
  it('count 429 answers as rate limiting', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    metrics.registryRequests.inc({ registry: 'docker.io', method: 'GET', status: '429' });
    metrics.registryRequests.inc({ registry: 'docker.io', method: 'HEAD', status: '429' });
    metrics.registryRequests.inc({ registry: 'docker.io', method: 'GET', status: '200' });
    metrics.registryRequests.inc({ registry: 'ghcr.io', method: 'GET', status: '503' });
    const samples = await samplesOf(metrics);

    expect(valueOf(samples, 'mirrorfleet_registry_rate_limited_total', { registry: 'docker.io' })).toBe(2);
    expect(valueOf(samples, 'mirrorfleet_registry_rate_limited_total', { registry: 'ghcr.io' })).toBe(0);
    expect(valueOf(samples, 'mirrorfleet_registry_requests_total', { registry: 'docker.io', method: 'GET', status: '429' })).toBe(1);
  });

  it('record retries with their wait', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    metrics.recordRegistryRetry({ registry: 'docker.io', reason: '429', waitMs: 1500 });
    metrics.recordRegistryRetry({ registry: 'docker.io', reason: '429', waitMs: 500 });
    metrics.recordRegistryRetry({ registry: 'quay.io', reason: 'ECONNRESET', waitMs: 250 });
    const samples = await samplesOf(metrics);

    expect(valueOf(samples, 'mirrorfleet_registry_retries_total', { registry: 'docker.io', reason: '429' })).toBe(2);
    expect(valueOf(samples, 'mirrorfleet_registry_retry_wait_seconds_total', { registry: 'docker.io', reason: '429' })).toBe(2);
    expect(valueOf(samples, 'mirrorfleet_registry_retry_wait_seconds_total', { registry: 'quay.io', reason: 'ECONNRESET' })).toBe(0.25);
  });
});

interface AlertRule {
  alert: string;
  expr: string;
  for: string;
  labels: { severity: string };
  annotations: { summary: string; description: string };
}

describe('deploy/prometheus/alerts.yml', () => {
  const rules = (parseYaml(readFileSync(join(PROJECT_ROOT, 'deploy/prometheus/alerts.yml'), 'utf8')) as { groups: { name: string; rules: AlertRule[] }[] }).groups.flatMap(
    (group) => group.rules,
  );

  it('alerts on backlog, failures and rate limiting', () => {
    const names = rules.map((rule) => rule.alert);

    expect(names).toEqual(expect.arrayContaining(['MirrorfleetBacklogGrowing', 'MirrorfleetFailureRateHigh', 'MirrorfleetRegistryRateLimiting']));
  });

  it('gives every rule a duration, severity and text', () => {
    for (const rule of rules) {
      expect(rule.for, rule.alert).toMatch(/^\d+[smh]$/);
      expect(['warning', 'critical'], rule.alert).toContain(rule.labels.severity);
      expect(rule.annotations.summary, rule.alert).toBeTruthy();
      expect(rule.annotations.description, rule.alert).toBeTruthy();
    }
  });

  it('uses only metrics the processes serve', async () => {
    const known = await seriesNames();
    for (const rule of rules) {
      const used = metricNamesIn(rule.expr);
      expect(used.length, rule.alert).toBeGreaterThan(0);
      for (const name of used) expect(known, `${rule.alert} uses ${name}`).toContain(name);
    }
  });
});

describe('deploy/grafana/mirrorfleet.json', () => {
  const dashboard = JSON.parse(readFileSync(join(PROJECT_ROOT, 'deploy/grafana/mirrorfleet.json'), 'utf8')) as {
    uid: string;
    panels: { id: number; type: string; title: string; targets?: { expr: string; refId: string }[]; gridPos: { x: number; y: number; w: number; h: number } }[];
  };
  const graphs = dashboard.panels.filter((panel) => panel.type !== 'row');

  it('uses only metrics the processes serve', async () => {
    const known = await seriesNames();
    for (const panel of graphs) {
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      for (const target of panel.targets ?? []) {
        for (const name of metricNamesIn(target.expr)) expect(known, `${panel.title} uses ${name}`).toContain(name);
      }
    }
  });

  it('shows every mirrorfleet metric', async () => {
    const shown = new Set(graphs.flatMap((panel) => (panel.targets ?? []).flatMap((target) => metricNamesIn(target.expr))));
    const custom = (await new Metrics({ defaultMetrics: false }).registry.getMetricsAsJSON()).map((metric) => metric.name);

    for (const name of custom) {
      const forms = [name, `${name}_bucket`];
      expect(forms.some((form) => shown.has(form)), `${name} is on the dashboard`).toBe(true);
    }
  });

  it('has unique panel ids and no overlapping panels', () => {
    const ids = dashboard.panels.map((panel) => panel.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const panel of dashboard.panels) {
      for (let x = panel.gridPos.x; x < panel.gridPos.x + panel.gridPos.w; x += 1) {
        for (let y = panel.gridPos.y; y < panel.gridPos.y + panel.gridPos.h; y += 1) {
          const cell = `${x},${y}`;
          expect(cells.has(cell), `${panel.title} overlaps at ${cell}`).toBe(false);
          cells.add(cell);
        }
      }
    }
  });
});
