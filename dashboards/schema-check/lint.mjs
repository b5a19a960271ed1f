// Value checks of ../grafana/shardlog-overview.json that tsc cannot make on a JSON import
// (check.ts widens strings), plus this project's conventions for the dashboard.
//
// Allowed values come from @grafana/schema itself: its runtime enums, and for literal-union
// types the tables of allowed.mjs, which tsc holds to exactly the union's members. Run:
// `node lint.mjs` (check.sh does, after tsc). Exit 1 on a finding.

import { readFileSync } from 'node:fs';
import {
  BigValueColorMode,
  BigValueGraphMode,
  BigValueJustifyMode,
  BigValueTextMode,
  DashboardCursorSync,
  FieldColorModeId,
  GraphDrawStyle,
  LegendDisplayMode,
  MappingType,
  PercentChangeColorMode,
  SortOrder,
  StackingMode,
  ThresholdsMode,
  TooltipDisplayMode,
  VariableHide,
  VariableRefresh,
  VariableSort,
  VisibilityMode,
  VizOrientation,
} from '@grafana/schema';
import { LEGEND_PLACEMENTS, VARIABLE_TYPES } from './allowed.mjs';

const DASHBOARD = new URL('../grafana/shardlog-overview.json', import.meta.url);

/** Panel plugins this dashboard uses: the ones whose options check.ts types. */
const PANEL_TYPES = new Set(['timeseries', 'stat']);
/** The one datasource reference every panel and target carries. */
const DATASOURCE = { type: 'prometheus', uid: '${datasource}' };
/** Families with a `log` label: their panels follow the $log variable. */
const LOG_LABELLED = new Set([
  'shardlog_background_errors_total', 'shardlog_clock_regressions_total',
  'shardlog_consumer_lag_seconds', 'shardlog_consumers', 'shardlog_ingest_bytes_total',
  'shardlog_ingest_commits_total', 'shardlog_segment_inline_prepares_total',
  'shardlog_segment_rolls_total', 'shardlog_storage_bytes', 'shardlog_storage_commits',
  'shardlog_storage_segments', 'shardlog_watermark_lag_commits',
  'shardlog_watermark_lag_seconds',
]);

/** @type {string[]} */
const errors = [];

/**
 * @param {string} where
 * @param {unknown} value
 * @param {Iterable<unknown>} allowed
 */
function oneOf(where, value, allowed) {
  const set = [...allowed];
  if (value !== undefined && !set.includes(value)) {
    errors.push(`${where}: ${JSON.stringify(value)} is not one of ${JSON.stringify(set)}`);
  }
}

/**
 * Values of a TypeScript enum object (numeric enums also map value -> name: skip those).
 * @param {Record<string, string | number>} e
 */
function values(e) {
  return Object.entries(e)
    .filter(([k]) => !/^\d+$/.test(k))
    .map(([, v]) => v);
}

/** @param {unknown} v @returns {Record<string, any>} */
function obj(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? /** @type {any} */ (v) : {};
}

/**
 * @param {string} where
 * @param {unknown} ds
 */
function datasource(where, ds) {
  if (JSON.stringify(ds) !== JSON.stringify(DATASOURCE)) {
    errors.push(`${where}: datasource ${JSON.stringify(ds)}, expected ${JSON.stringify(DATASOURCE)}`);
  }
}

/**
 * @param {string} where
 * @param {string} expr
 */
function promql(where, expr) {
  for (const m of expr.matchAll(/\[([^\]]*)\]/g)) {
    if (m[1] !== '$__rate_interval') errors.push(`${where}: range [${m[1]}], use [$__rate_interval]`);
  }
  for (const m of expr.matchAll(/\b(shardlog_[a-z_]+?)(?:_bucket|_sum|_count)?\{([^}]*)\}/g)) {
    const [, family = '', matchers = ''] = m;
    if (!matchers.includes('instance=~"$instance"')) {
      errors.push(`${where}: ${family} without instance=~"$instance"`);
    }
    if (LOG_LABELLED.has(family) && !matchers.includes('log=~"$log"')) {
      errors.push(`${where}: ${family} without log=~"$log"`);
    }
  }
  for (const m of expr.matchAll(/\bshardlog_[a-z_]+\b(?!\{)/g)) {
    errors.push(`${where}: ${m[0]} without a selector (instance=~"$instance")`);
  }
}

/**
 * @param {Record<string, any>} p
 * @param {string} where
 */
function panel(p, where) {
  datasource(where, p.datasource);
  const d = obj(obj(p.fieldConfig).defaults);
  oneOf(`${where} thresholds.mode`, obj(d.thresholds).mode, values(ThresholdsMode));
  oneOf(`${where} color.mode`, obj(d.color).mode, values(FieldColorModeId));
  for (const [i, mapping] of (Array.isArray(d.mappings) ? d.mappings : []).entries()) {
    oneOf(`${where} mappings[${i}].type`, obj(mapping).type, values(MappingType));
  }
  const custom = obj(d.custom);
  oneOf(`${where} custom.drawStyle`, custom.drawStyle, values(GraphDrawStyle));
  oneOf(`${where} custom.showPoints`, custom.showPoints, values(VisibilityMode));
  oneOf(`${where} custom.stacking.mode`, obj(custom.stacking).mode, values(StackingMode));
  const o = obj(p.options);
  oneOf(`${where} legend.displayMode`, obj(o.legend).displayMode, values(LegendDisplayMode));
  oneOf(`${where} legend.placement`, obj(o.legend).placement, Object.keys(LEGEND_PLACEMENTS));
  oneOf(`${where} tooltip.mode`, obj(o.tooltip).mode, values(TooltipDisplayMode));
  oneOf(`${where} tooltip.sort`, obj(o.tooltip).sort, values(SortOrder));
  oneOf(`${where} orientation`, o.orientation, values(VizOrientation));
  oneOf(`${where} colorMode`, o.colorMode, values(BigValueColorMode));
  oneOf(`${where} graphMode`, o.graphMode, values(BigValueGraphMode));
  oneOf(`${where} justifyMode`, o.justifyMode, values(BigValueJustifyMode));
  oneOf(`${where} textMode`, o.textMode, values(BigValueTextMode));
  oneOf(`${where} percentChangeColorMode`, o.percentChangeColorMode, values(PercentChangeColorMode));
  const targets = Array.isArray(p.targets) ? p.targets : [];
  if (targets.length === 0) errors.push(`${where}: no targets`);
  const refIds = new Set();
  for (const t of targets.map(obj)) {
    const at = `${where} target ${t.refId}`;
    if (refIds.has(t.refId)) errors.push(`${at}: refId used twice`);
    refIds.add(t.refId);
    datasource(at, t.datasource);
    if (typeof t.expr !== 'string' || t.expr.trim() === '') errors.push(`${at}: no expr`);
    else promql(at, t.expr);
    if (typeof t.legendFormat !== 'string' || t.legendFormat === '') {
      errors.push(`${at}: no legendFormat`);
    }
  }
}

const text = readFileSync(DASHBOARD, 'utf8');
const dash = obj(JSON.parse(text));
if (text.includes('://')) errors.push('dashboard: a URL (hard-coded host?) in the dashboard');
if (!(typeof dash.schemaVersion === 'number' && dash.schemaVersion >= 39)) {
  errors.push(`dashboard: schemaVersion ${dash.schemaVersion}, expected >= 39`);
}
if (dash.uid !== 'shardlog-overview') errors.push(`dashboard: uid ${dash.uid}`);
oneOf('dashboard graphTooltip', dash.graphTooltip, values(DashboardCursorSync));

const variables = new Map();
for (const v of (obj(dash.templating).list ?? []).map(obj)) {
  const where = `variable ${v.name}`;
  variables.set(v.name, v);
  oneOf(`${where} type`, v.type, Object.keys(VARIABLE_TYPES));
  oneOf(`${where} hide`, v.hide, values(VariableHide));
  oneOf(`${where} refresh`, v.refresh, values(VariableRefresh));
  oneOf(`${where} sort`, v.sort, values(VariableSort));
  if (v.type === 'query') datasource(where, v.datasource);
}
const dsVar = variables.get('datasource');
if (!dsVar || dsVar.type !== 'datasource' || dsVar.query !== 'prometheus') {
  errors.push('variable datasource: missing, or not of type datasource with query prometheus');
}
for (const name of ['log', 'instance']) {
  if (variables.get(name)?.type !== 'query') errors.push(`variable ${name}: missing query variable`);
}

const ids = new Set();
let count = 0;
/**
 * @param {unknown[]} panels
 * @param {boolean} inRow
 */
function walk(panels, inRow) {
  for (const p of panels.map(obj)) {
    count += 1;
    const where = `panel ${p.id} "${p.title}"`;
    if (ids.has(p.id)) errors.push(`${where}: id used twice`);
    ids.add(p.id);
    const g = obj(p.gridPos);
    if (!(g.x >= 0 && g.w >= 1 && g.x + g.w <= 24 && g.y >= 0 && g.h >= 1)) {
      errors.push(`${where}: gridPos ${JSON.stringify(g)} outside the 24-column grid`);
    }
    if (p.type === 'row') {
      if (inRow) errors.push(`${where}: a row inside a row`);
      if (!Array.isArray(p.panels)) errors.push(`${where}: a row without panels`);
      if (!p.collapsed && p.panels?.length) errors.push(`${where}: an expanded row holds panels`);
      datasource(where, p.datasource);
      walk(p.panels ?? [], true);
    } else {
      if ('panels' in p) errors.push(`${where}: nested panels in a ${p.type} panel`);
      oneOf(`${where} type`, p.type, PANEL_TYPES);
      panel(p, where);
    }
  }
}
if (!Array.isArray(dash.panels) || dash.panels.length === 0) errors.push('dashboard: no panels');
walk(Array.isArray(dash.panels) ? dash.panels : [], false);

if (errors.length > 0) {
  for (const e of errors) console.error(`lint: ${e}`);
  console.error(`lint: ${errors.length} problem(s) in ${DASHBOARD.pathname}`);
  process.exit(1);
}
console.log(`lint: ${count} panels, ${variables.size} variables ok`);
