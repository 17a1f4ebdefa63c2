/**
 * `--strategies dp,pd,balanced-pd:0.1`: the strategies a run compares, each as a label (how
 * results name it), a strategy name (built-in or module path) and its params. After the name,
 * `:`-separated parts are `key=value` params, or a bare number for the strategy's main param
 * (balanced-pd → ratio, dp-prefix and migrate → minMatch).
 */
export interface StrategySpec {
  label: string;
  name: string;
  params: Record<string, unknown>;
}

const MAIN_PARAM: Record<string, string> = { 'balanced-pd': 'ratio', 'dp-prefix': 'minMatch', migrate: 'minMatch' };

function value(v: string): unknown {
  if (/^-?\d+(\.\d+)?(e-?\d+)?$/i.test(v)) return Number(v);
  if (v === 'true' || v === 'false') return v === 'true';
  return v;
}

export function parseStrategies(list: string): StrategySpec[] {
  const specs = list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((label) => {
      const [name, ...parts] = label.split(':');
      const params: Record<string, unknown> = {};
      for (const p of parts) {
        const eq = p.indexOf('=');
        if (eq > 0) params[p.slice(0, eq)] = value(p.slice(eq + 1));
        else if (MAIN_PARAM[name] && /^[\d.]+$/.test(p)) params[MAIN_PARAM[name]] = Number(p);
        else throw new RangeError(`--strategies: '${label}': '${p}' is not key=value${MAIN_PARAM[name] ? ` or a number (${MAIN_PARAM[name]})` : ''}`);
      }
      if (!name) throw new RangeError(`--strategies: empty strategy name in '${label}'`);
      return { label, name, params };
    });
  const dup = specs.find((s, i) => specs.findIndex((x) => x.label === s.label) !== i);
  if (dup) throw new RangeError(`--strategies: '${dup.label}' is listed twice`);
  return specs;
}
