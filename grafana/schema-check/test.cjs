#!/usr/bin/env node
// Proves the gate can fail: each break below is applied to a copy of the
// real dashboards, and check.cjs must reject the copy naming the problem.
// The unbroken copy must pass (so a failure is the break's, not the copy's).
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');

const here = __dirname;
const source = path.join(here, '..', 'provisioning', 'dashboards');
const panels = (d) => d.panels.flatMap((p) => [p, ...(p.panels || [])]);
const first = (d, type) => panels(d).find((p) => p.type === type);

const BREAKS = [
  ['an unknown panel key', (d) => { first(d, 'timeseries').colour = 'red'; }, '(timeseries): "colour": "red"'],
  ['a wrong enum value', (d) => { first(d, 'timeseries').fieldConfig.defaults.custom.drawStyle = 'lines'; }, '"lines"'],
  ['a row description (not in the schema)', (d) => { first(d, 'row').description = 'x'; }, `(row): "description": "x"`],
  ['a table footer (dropped in 13)', (d) => { first(d, 'table').options.footer = { show: false, reducer: ['sum'] }; }, 'Grafana 13.0'],
  ['an unknown unit', (d) => { first(d, 'stat').fieldConfig.defaults.unit = 'requests'; }, 'is not a unit of Grafana'],
  ['an unknown override property', (d) => {
    first(d, 'timeseries').fieldConfig.overrides.push({ matcher: { id: 'byName', options: 'x' }, properties: [{ id: 'custom.lineWidht', value: 2 }] });
  }, `property custom.lineWidht: "lineWidht": 2`],
  ['an unknown transformation option', (d) => { first(d, 'table').transformations[0].options.hideByName = {}; }, `(table): transformation organize: "hideByName"`],
  ['an unknown annotation key', (d) => { d.annotations.list[0].colour = 'red'; }, `annotation "Firing alerts": "colour": "red"`],
  ['a wrong variable field type', (d) => { d.templating.list[0].refresh = 'always'; }, 'variable datasource: "refresh": "always"'],
];

function run(dir) {
  return spawnSync(process.execPath, [path.join(here, 'check.cjs'), dir], { encoding: 'utf8' });
}

function copy(mutate) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlwatch-schema-'));
  for (const file of fs.readdirSync(source).filter((f) => f.endsWith('.json'))) {
    const d = JSON.parse(fs.readFileSync(path.join(source, file), 'utf8'));
    if (file === 'predict_api_dashboard.json' && mutate) mutate(d);
    fs.writeFileSync(path.join(dir, file), JSON.stringify(d, null, 2));
  }
  return dir;
}

let failed = 0;
const clean = run(copy(null));
if (clean.status !== 0) {
  console.error(`the unbroken copy fails:\n${clean.stderr}`);
  failed++;
}
for (const [what, mutate, expected] of BREAKS) {
  const result = run(copy(mutate));
  if (result.status === 0 || !result.stderr.includes(expected)) {
    console.error(`not caught: ${what} (exit ${result.status}, want a message with ${JSON.stringify(expected)})\n${result.stderr}`);
    failed++;
  } else {
    console.log(`caught: ${what}`);
  }
}
process.exitCode = failed ? 1 : 0;
