#!/usr/bin/env node
// Schema gate for the generated dashboards: every dashboard is type-checked,
// key by key and value by value, against Grafana's published types
// (@grafana/schema, @grafana/data) of every Grafana version mlwatch deploys,
// and every unit id is looked up in @grafana/data's own list.
//
//   node check.cjs [DASHBOARD_DIR]   (default: ../provisioning/dashboards)
//
// How: each dashboard becomes a TypeScript module in which every part is an
// object literal assigned to its published type, so the compiler's excess
// property check rejects an unknown key and its literal types reject a
// wrong enum value. Each panel is checked against its own plugin's Options
// and FieldConfig (panelcfg of @grafana/schema), each override property as a
// field config of its own, each transformation against @grafana/data's
// options type for its id. Types Grafana does not publish on npm (the
// Prometheus query and annotation fields, the alert list options) are
// declared in vendored.d.ts, copied from Grafana's sources with the path.
// Exits 1 naming every problem.

'use strict';

const fs = require('fs');
const path = require('path');
const ts = require('typescript');

// The Grafana versions mlwatch deploys: docker-compose.yml's image and the
// one nixpkgs 26.05 ships. package.json pins each as an npm alias.
const VERSIONS = ['12.1', '13.0'];

const here = __dirname;
const dir = path.resolve(process.argv[2] || path.join(here, '..', 'provisioning', 'dashboards'));

// Panel type -> [Options type, FieldConfig (custom) type] in @grafana/schema.
const PANELCFG = {
  timeseries: ['timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen', 'Options', 'FieldConfig'],
  stat: ['stat/panelcfg/x/StatPanelCfg_types.gen', 'Options', null],
  bargauge: ['bargauge/panelcfg/x/BarGaugePanelCfg_types.gen', 'Options', null],
  gauge: ['gauge/panelcfg/x/GaugePanelCfg_types.gen', 'Options', null],
  table: ['table/panelcfg/x/TablePanelCfg_types.gen', 'Options', 'FieldConfig'],
  heatmap: ['heatmap/panelcfg/x/HeatmapPanelCfg_types.gen', 'Options', 'FieldConfig'],
  text: ['text/panelcfg/x/TextPanelCfg_types.gen', 'Options', null],
};
// Transformation id -> options type in @grafana/data.
const TRANSFORMS = {
  organize: ['transformations/transformers/organize', 'OrganizeFieldsTransformerOptions'],
  sortBy: ['transformations/transformers/sortBy', 'SortByTransformerOptions'],
};

function units(version) {
  // @grafana/data's bundle touches browser globals when it loads.
  require('./browser-stub.cjs');
  const data = require(`grafana-data-${version}`);
  const ids = new Set();
  for (const category of data.getValueFormats()) {
    for (const unit of category.submenu) ids.add(unit.value);
  }
  return ids;
}

// A published .d.ts by file name, wherever this version's package keeps it
// (13.x moved the panelcfg types from dist/types to dist/esm), as a path
// relative to the generated module, without the extension.
function declaration(pkg, file, from) {
  const name = path.basename(file) + '.d.ts';
  const stack = [path.join(here, 'node_modules', pkg, 'dist')];
  while (stack.length) {
    const d = stack.pop();
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const full = path.join(d, e.name);
      if (e.isDirectory()) stack.push(full);
      else if (e.name === name && full.includes(path.dirname(file))) {
        return path.relative(from, full).replace(/\.d\.ts$/, '');
      }
    }
  }
  throw new Error(`${pkg} has no ${file}.d.ts`);
}

function literal(value) {
  return JSON.stringify(value, null, 2);
}

// The dashboard as TypeScript: [source, {line -> where}] for messages.
function module(version, name, dashboard, out) {
  const schema = `grafana-schema-${version}`;
  const data = `grafana-data-${version}`;
  const lines = [];
  const where = [];
  const emit = (label, text) => {
    where.push([lines.length + 1, label]);
    lines.push(...text.split('\n'));
  };
  lines.push(`import type * as S from '${schema}';`);
  lines.push(`import type * as V from '../../vendored';`);
  for (const [kind, [file]] of Object.entries(PANELCFG)) {
    lines.push(`import type * as P_${kind} from '${declaration(schema, file, out)}';`);
  }
  for (const [id, [file]] of Object.entries(TRANSFORMS)) {
    lines.push(`import type * as T_${id} from '${declaration(data, file, out)}';`);
  }
  lines.push(...`
// String enums of the schema accept their values as plain literals, as in JSON.
type Lit<T> = T extends string ? (string extends T ? string : \`\${T}\`)
  : T extends (infer U)[] ? Lit<U>[]
  : T extends object ? { [K in keyof T]: Lit<T[K]> } : T;
type Defaults<C> = Lit<Omit<S.FieldConfig, 'custom'>> & { custom?: Lit<C> };
type Override = { matcher: Lit<S.MatcherConfig>; properties: { id: string; value?: unknown }[] };
type PanelOf<O, C> = Lit<Omit<S.Panel, 'options' | 'fieldConfig' | 'targets' | 'transformations'>> & {
  options: Lit<O>;
  fieldConfig: { defaults: Defaults<C>; overrides: Override[] };
  targets: V.PromQuery[];
  transformations?: { id: string; options: unknown }[];
};
type Row = Lit<Omit<S.RowPanel, 'panels'>> & { panels: unknown[] };
type Dashboard = Lit<Omit<S.Dashboard, 'panels' | 'annotations' | 'templating'>> & {
  panels: unknown[];
  annotations: { list: unknown[] };
  templating: { list: unknown[] };
};
type Annotation = Lit<Omit<S.AnnotationQuery, 'target'>> & V.PromAnnotationFields & { target: V.PromQuery };
type Variable = Lit<S.VariableModel>;
`.split('\n'));
  const top = { ...dashboard, panels: [], annotations: { list: [] }, templating: { list: [] } };
  emit(`${name}: dashboard`, `export const dashboard: Dashboard = ${literal(top)};`);
  dashboard.annotations.list.forEach((a, i) => {
    emit(`${name}: annotation ${JSON.stringify(a.name)}`, `export const annotation_${i}: Annotation = ${literal(a)};`);
  });
  dashboard.templating.list.forEach((v, i) => {
    emit(`${name}: variable ${v.name}`, `export const variable_${i}: Variable = ${literal(v)};`);
  });
  const problems = [];
  const panels = [];
  for (const p of dashboard.panels) {
    panels.push(p);
    for (const nested of p.panels || []) panels.push(nested);
  }
  for (const p of panels) {
    const label = `${name}: panel ${p.id} ${JSON.stringify(p.title)} (${p.type})`;
    if (p.type === 'row') {
      emit(label, `export const panel_${p.id}: Row = ${literal({ ...p, panels: [] })};`);
      continue;
    }
    let type;
    if (p.type === 'alertlist') {
      type = 'PanelOf<V.UnifiedAlertListOptions, never>';
    } else if (PANELCFG[p.type]) {
      const [, options, custom] = PANELCFG[p.type];
      type = `PanelOf<P_${p.type}.${options}, ${custom ? `P_${p.type}.${custom}` : 'never'}>`;
    } else {
      problems.push(`${label}: no published type for panel type ${p.type}`);
      continue;
    }
    emit(label, `export const panel_${p.id}: ${type} = ${literal(p)};`);
    const custom = PANELCFG[p.type] && PANELCFG[p.type][2] ? `P_${p.type}.${PANELCFG[p.type][2]}` : 'never';
    (p.fieldConfig.overrides || []).forEach((o, i) => {
      o.properties.forEach((prop, j) => {
        // "custom.axisPlacement" -> {custom: {axisPlacement: value}}
        const keys = prop.id.split('.');
        let value = prop.value;
        for (const key of keys.reverse()) value = { [key]: value };
        emit(`${label}: override ${i} property ${prop.id}`,
          `export const override_${p.id}_${i}_${j}: Defaults<${custom}> = ${literal(value)};`);
      });
    });
    (p.transformations || []).forEach((t, i) => {
      const known = TRANSFORMS[t.id];
      if (!known) {
        problems.push(`${label}: no published options type for transformation ${t.id}`);
        return;
      }
      emit(`${label}: transformation ${t.id}`,
        `export const transform_${p.id}_${i}: Lit<T_${t.id}.${known[1]}> = ${literal(t.options)};`);
    });
  }
  return { source: lines.join('\n') + '\n', where, problems };
}

function unitProblems(name, dashboard, known, version) {
  const problems = [];
  const visit = (value, at) => {
    if (Array.isArray(value)) value.forEach((v, i) => visit(v, `${at}[${i}]`));
    else if (value && typeof value === 'object') {
      for (const [k, v] of Object.entries(value)) {
        if (k === 'unit' && typeof v === 'string' && !known.has(v)) {
          problems.push(`${name}: ${at}.unit ${JSON.stringify(v)} is not a unit of Grafana ${version}`);
        }
        if (k === 'id' && v === 'unit' && typeof value.value === 'string' && !known.has(value.value)) {
          problems.push(`${name}: ${at} override unit ${JSON.stringify(value.value)} is not a unit of Grafana ${version}`);
        }
        visit(v, `${at}.${k}`);
      }
    }
  };
  visit(dashboard, '$');
  return problems;
}

function main() {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  if (!files.length) {
    console.error(`no dashboard JSON files in ${dir}`);
    return 1;
  }
  const problems = [];
  for (const version of VERSIONS) {
    const out = path.join(here, '.gen', version);
    fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(out, { recursive: true });
    const known = units(version);
    const sources = [];
    const maps = {};
    for (const file of files) {
      let dashboard;
      try {
        dashboard = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
      } catch (e) {
        problems.push(`${file}: not valid JSON: ${e.message}`);
        continue;
      }
      const { source, where, problems: own } = module(version, file, dashboard, out);
      problems.push(...own.map((p) => `Grafana ${version}: ${p}`));
      problems.push(...unitProblems(file, dashboard, known, version));
      const target = path.join(out, file.replace(/\.json$/, '.ts'));
      fs.writeFileSync(target, source);
      sources.push(target);
      maps[target] = where;
    }
    const program = ts.createProgram(sources, {
      strict: true, noEmit: true, skipLibCheck: true, target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler,
    });
    for (const d of ts.getPreEmitDiagnostics(program)) {
      const message = ts.flattenDiagnosticMessageText(d.messageText, '\n  ');
      if (!d.file) {
        problems.push(`Grafana ${version}: ${message}`);
        continue;
      }
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      const where = (maps[d.file.fileName] || []).filter(([l]) => l <= line + 1).pop();
      const text = d.file.text.split('\n')[line].trim();
      problems.push(`Grafana ${version}: ${where ? where[1] : d.file.fileName}: ${text}\n  ${message}`);
    }
  }
  for (const p of problems) console.error(p);
  if (problems.length) {
    console.error(`${problems.length} problem(s) against Grafana ${VERSIONS.join(' and ')}`);
    return 1;
  }
  console.log(`${files.length} dashboard(s) match the published types of Grafana ${VERSIONS.join(' and ')}`);
  return 0;
}

process.exitCode = main();
