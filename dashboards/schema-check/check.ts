// Structural check of ../grafana/shardlog-overview.json against the types @grafana/schema
// publishes: `npx tsc -p .` fails when the dashboard does not fit them.
//
// Checked here, by tsc: the Dashboard, Panel and RowPanel types (required fields such as
// schemaVersion, gridPos.{h,w,x,y}, a row's id/collapsed/panels, a threshold step's color;
// every field's type: a string where a number goes, an object where an array goes), the
// timeseries/stat panel options and timeseries field config (TimeSeriesPanelCfg,
// StatPanelCfg), every target being a DataQuery with `expr` and `legendFormat`, every
// datasource reference having `type` and `uid`, and that only rows hold nested panels.
//
// Not visible to tsc: a JSON import widens every string to `string`, so fields typed as a
// set of literals or a string enum (a row's type 'row', a variable's type, threshold and
// colour modes, legend/tooltip modes) are widened here and checked by value in lint.mjs,
// which check.sh runs after tsc. Unknown extra fields are not reported (a JSON import is not
// a fresh object literal, so there is no excess-property check).

import type { DataQuery, Dashboard, Panel, RowPanel } from '@grafana/schema';
import type {
  FieldConfig as TimeSeriesFieldConfig,
  Options as TimeSeriesOptions,
} from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type { Options as StatOptions } from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import dashboard from '../grafana/shardlog-overview.json';

/** T with every string-literal or string-enum type widened to `string` and every numeric
 * enum to `number`, recursively: the shape a JSON import of a valid T has. */
type Widened<T> = T extends string
  ? string
  : T extends number
    ? number
    : T extends boolean
      ? boolean
      : T extends ReadonlyArray<infer E>
        ? Array<Widened<E>>
        : T extends object
          ? { [K in keyof T]: Widened<T[K]> }
          : T;

/** This dashboard's datasource references: always both fields (`${datasource}`). */
type DatasourceRef = { type: string; uid: string };

/** A Prometheus query: a DataQuery with its expression and legend. */
type Target = Widened<DataQuery> & {
  datasource: DatasourceRef;
  expr: string;
  legendFormat: string;
  range?: boolean;
  instant?: boolean;
  editorMode?: string;
};

/** A panel that is not a row. `panels?: never` keeps a row from passing as a plain Panel
 * (a JSON import may carry extra fields), which would leave its nested panels unchecked. */
type PlainPanel = Widened<Panel> & {
  panels?: never;
  collapsed?: never;
  title: string;
  id: number;
  gridPos: Widened<NonNullable<Panel['gridPos']>>;
  datasource: DatasourceRef;
  targets: Target[];
  options: Widened<TimeSeriesOptions> | Widened<StatOptions>;
  fieldConfig: { defaults: { custom?: Widened<TimeSeriesFieldConfig> } };
};

/** A row; the panels of a collapsed row are nested in it. */
type Row = Widened<Omit<RowPanel, 'panels'>> & {
  title: string;
  gridPos: Widened<NonNullable<RowPanel['gridPos']>>;
  datasource: DatasourceRef;
  panels: PlainPanel[];
};

type CheckedDashboard = Omit<Widened<Dashboard>, 'panels'> & {
  uid: string;
  title: string;
  panels: Array<PlainPanel | Row>;
};

// The check: this assignment does not compile when the dashboard does not fit.
export const checked: CheckedDashboard = dashboard;

// The nested panels once more on their own, so an error there names the nested field
// rather than only "not assignable to PlainPanel | Row".
type Nested = Extract<(typeof dashboard.panels)[number], { panels: unknown[] }>['panels'][number];
export const nested: PlainPanel[] = [] as Nested[];
