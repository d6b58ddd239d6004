/**
 * A reader of the Prometheus text exposition format, enough for tests: sample lines
 * `name{label="value",...} number`, with `# HELP` and `# TYPE` lines skipped.
 */

export type Samples = Map<string, number>;

/** Parses sample lines into values keyed by `sampleKey`. */
export function parseSamples(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const label of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[label[1]!] = label[2]!;
    samples.set(sampleKey(match[1]!, labels), Number(match[3]));
  }
  return samples;
}

/** `name{a="1",b="2"}` with labels sorted by name, or `name` without labels. */
export function sampleKey(name: string, labels: Record<string, string> = {}): string {
  const parts = Object.keys(labels)
    .sort()
    .map((key) => `${key}="${labels[key]}"`);
  return parts.length === 0 ? name : `${name}{${parts.join(',')}}`;
}

/** Returns the value of one sample, 0 when it is absent (a counter that has not moved yet). */
export function valueOf(samples: Samples, name: string, labels: Record<string, string> = {}): number {
  return samples.get(sampleKey(name, labels)) ?? 0;
}

/** Fetches and parses `/metrics` at `url`. */
export async function scrape(url: string): Promise<Samples> {
  const response = await fetch(url);
  if (response.status !== 200) throw new Error(`${url} answered ${response.status}`);
  return parseSamples(await response.text());
}
