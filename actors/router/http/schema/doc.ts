/**
 * The request-field tables of docs/API.md, rendered from the endpoint schemas (one row per
 * field: name, accepted values, default and notes from the field's `.describe`).
 * test/router/api-doc.test.ts checks docs/API.md holds exactly this between its markers; to
 * refresh it after a schema change: `node --import tsx actors/router/http/schema/doc.ts --write`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import { ENDPOINT_SCHEMAS } from './endpoints.ts';

export const BEGIN = '<!-- request fields: generated from actors/router/http/schema (doc.ts) -->';
export const END = '<!-- end of generated request fields -->';

type Js = Record<string, any>;

function range(j: Js): string {
  const lo = j.exclusiveMinimum !== undefined ? `(${j.exclusiveMinimum}` : j.minimum !== undefined ? `[${j.minimum}` : null;
  const hi = j.maximum !== undefined && Math.abs(j.maximum) < 2 ** 53 - 1 ? `${j.maximum}]` : null;
  if (!lo && !hi) return '';
  return ` ${lo ?? '(-inf'}, ${hi ?? 'inf)'}`;
}

function typeOf(j: Js): string {
  if (j.anyOf) {
    const parts = (j.anyOf as Js[]).filter((p) => p.type !== 'null').map(typeOf);
    return parts.join(' \\| ') + ((j.anyOf as Js[]).some((p) => p.type === 'null') ? ' \\| null' : '');
  }
  if (Array.isArray(j.type)) {
    const types = (j.type as string[]).filter((t) => t !== 'null');
    return types.map((t) => typeOf({ ...j, type: t })).join(' \\| ') + (types.length < j.type.length ? ' \\| null' : '');
  }
  if (j.const !== undefined) return JSON.stringify(j.const);
  if (j.enum) return (j.enum as unknown[]).map((v) => JSON.stringify(v)).join(' \\| ');
  switch (j.type) {
    case 'integer':
    case 'number':
      return `${j.type}${range(j)}`;
    case 'string':
      return j.minLength ? 'non-empty string' : 'string';
    case 'boolean':
      return 'boolean';
    case 'array':
      return `array of ${typeOf(j.items ?? {})}${j.minItems ? ` (at least ${j.minItems})` : ''}${j.maxItems !== undefined ? ` (at most ${j.maxItems})` : ''}`;
    case 'object':
      return j.additionalProperties && typeof j.additionalProperties === 'object' ? `object of ${typeOf(j.additionalProperties)}` : 'object';
    default:
      return '—';
  }
}

/** The markdown tables, one per endpoint. */
export function renderRequestFields(): string {
  const out: string[] = [BEGIN];
  for (const [endpoint, schema] of Object.entries(ENDPOINT_SCHEMAS)) {
    const js = z.toJSONSchema(schema, { unrepresentable: 'any' }) as Js;
    out.push('', `### ${endpoint}`, '', '| field | accepts | default and notes |', '| --- | --- | --- |');
    const required = new Set<string>(js.required ?? []);
    for (const [name, f] of Object.entries(js.properties as Record<string, Js>)) {
      const isRefused = String(f.description ?? '').startsWith('refused');
      const notes = String(f.description ?? '').replace(/\|/g, '\\|');
      out.push(`| \`${name}\`${required.has(name) ? ' (required)' : ''} | ${isRefused ? '—' : typeOf(f)} | ${notes} |`);
    }
    out.push('', 'Any other field: 400 `unsupported_parameter` naming it.');
  }
  out.push('', END);
  return out.join('\n');
}

/** docs/API.md with its generated part replaced by `renderRequestFields()`. */
export function withFreshFields(doc: string): string {
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  if (a < 0 || b < a) throw new Error('docs/API.md lacks the generated-fields markers');
  return doc.slice(0, a) + renderRequestFields() + doc.slice(b + END.length);
}

if (process.argv.includes('--write')) {
  const path = new URL('../../../../docs/API.md', import.meta.url);
  writeFileSync(path, withFreshFields(readFileSync(path, 'utf8')));
}
