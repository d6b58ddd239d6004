/**
 * The benchmark's results. Each measure has one value per run and is summarised as median, min and max.
 * Each target is listed with the measurement it was judged on. Both are printed and written as JSON.
 */

export interface Measure {
  /** Scenario heading, such as `1 cold copy`. */
  scenario: string;
  name: string;
  unit: string;
  /** One value per run, in run order. */
  values: number[];
}

export interface Summary {
  median: number;
  min: number;
  max: number;
}

export interface TargetCheck {
  scenario: string;
  target: string;
  /** The measurement in words and numbers, such as `p50 3.1 ms`. */
  measured: string;
  met: boolean;
}

export class ResultTable {
  readonly measures: Measure[] = [];
  readonly targets: TargetCheck[] = [];

  /** Appends `value` to the measure `scenario / name`, creating it on first use. */
  add(scenario: string, name: string, unit: string, value: number): void {
    let measure = this.measures.find((entry) => entry.scenario === scenario && entry.name === name);
    if (!measure) {
      measure = { scenario, name, unit, values: [] };
      this.measures.push(measure);
    }
    measure.values.push(value);
  }

  /** Returns the median, min and max of a measure, or undefined when it has no values. */
  summary(scenario: string, name: string): Summary | undefined {
    const measure = this.measures.find((entry) => entry.scenario === scenario && entry.name === name);
    return measure && measure.values.length > 0 ? summarise(measure.values) : undefined;
  }

  check(scenario: string, target: string, measured: string, met: boolean): void {
    this.targets.push({ scenario, target, measured, met });
  }

  /** Formats the measures as a fixed-width text table. */
  formatTable(): string {
    const header = ['scenario', 'measure', 'median', 'min', 'max', 'unit', 'runs'];
    const rows = this.measures.map((measure) => {
      const { median, min, max } = summarise(measure.values);
      return [measure.scenario, measure.name, formatNumber(median), formatNumber(min), formatNumber(max), measure.unit, String(measure.values.length)];
    });
    return formatColumns([header, ...rows], [false, false, true, true, true, false, true]);
  }

  formatTargets(): string {
    const rows = this.targets.map((check) => [check.met ? 'met' : 'MISSED', check.scenario, check.target, check.measured]);
    return formatColumns([['result', 'scenario', 'target', 'measured'], ...rows], [false, false, false, false]);
  }

  /** Formats the measures as a Markdown table, for docs/benchmarks.md. */
  formatMarkdown(): string {
    const lines = ['| scenario | measure | median | min | max | unit |', '| --- | --- | ---: | ---: | ---: | --- |'];
    for (const measure of this.measures) {
      const { median, min, max } = summarise(measure.values);
      lines.push(`| ${measure.scenario} | ${measure.name} | ${formatNumber(median)} | ${formatNumber(min)} | ${formatNumber(max)} | ${measure.unit} |`);
    }
    return lines.join('\n');
  }

  toJSON(): { measures: Array<Measure & Summary>; targets: TargetCheck[] } {
    return {
      measures: this.measures.map((measure) => ({ ...measure, ...summarise(measure.values) })),
      targets: this.targets,
    };
  }
}

export function summarise(values: number[]): Summary {
  if (values.length === 0) throw new RangeError('cannot summarise an empty list of values');
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

export function median(values: number[]): number {
  return percentile(values, 50);
}

/**
 * Returns the `p`th percentile of `values` by linear interpolation between the closest ranks (NumPy's
 * default method), so the 50th is the usual median.
 */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) throw new RangeError('cannot take a percentile of an empty list of values');
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const below = Math.floor(rank);
  const above = Math.ceil(rank);
  return sorted[below]! + (sorted[above]! - sorted[below]!) * (rank - below);
}

/** Prints a number with three significant digits at most, and no exponent. */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  const magnitude = Math.abs(value);
  if (magnitude >= 100 || Number.isInteger(value)) return String(Math.round(value));
  if (magnitude >= 10) return value.toFixed(1);
  if (magnitude >= 1) return value.toFixed(2);
  return value.toFixed(3);
}

function formatColumns(rows: string[][], alignRight: boolean[]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows
    .map((row) => row.map((cell, column) => (alignRight[column] ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!))).join('  ').trimEnd())
    .join('\n');
}
