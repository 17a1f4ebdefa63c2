// docs/API.md documents every request field of every endpoint exactly as the schemas define them
// (the generated tables are current), and names every endpoint the app serves.
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { z } from 'zod';
import { ENDPOINT_SCHEMAS } from '../../actors/router/http/schema/endpoints.ts';
import { BEGIN, END, renderRequestFields } from '../../actors/router/http/schema/doc.ts';

const doc = readFileSync(new URL('../../docs/API.md', import.meta.url), 'utf8');

test('the request-field tables are the ones the schemas render', () => {
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  assert.ok(a >= 0 && b > a, 'docs/API.md has the generated-fields markers');
  assert.fixture(doc.slice(a, b + END.length), renderRequestFields(), 'stale: run node --import tsx actors/router/http/schema/doc.ts --write');
});

test('every field of every schema has a row with its notes, and every endpoint is listed', () => {
  for (const [endpoint, schema] of Object.entries(ENDPOINT_SCHEMAS)) {
    assert.ok(doc.includes(`### ${endpoint}`), endpoint);
    const props = (z.toJSONSchema(schema, { unrepresentable: 'any' }) as any).properties as Record<string, { description?: string }>;
    for (const [name, f] of Object.entries(props)) {
      assert.ok(f.description, `${endpoint} ${name} has a description (its default or why it is refused)`);
      assert.ok(doc.includes(`| \`${name}\``), `${endpoint} ${name} documented`);
    }
  }
  const app = readFileSync(new URL('../../actors/router/http/app.ts', import.meta.url), 'utf8');
  for (const [, method, path] of app.matchAll(/app\.(get|post)\('([^']+)'/g)) {
    const shown = path.replace(/:(\w+)/, '{$1}');
    assert.ok(doc.includes(`${method.toUpperCase()} ${shown}`) || doc.includes(`\`${method.toUpperCase()} ${shown}\``) || doc.includes(shown), `${method} ${path} in docs/API.md`);
  }
});

test.run();
