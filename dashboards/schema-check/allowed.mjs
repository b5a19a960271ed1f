// Allowed values of the literal-union types of @grafana/schema that lint.mjs checks. These
// unions exist only as types, so the values are listed here; tsc (checkJs, tsconfig.json)
// holds each table to exactly its union's members: a missing or unknown key fails
// `npx tsc -p .`, so a new @grafana/schema version that changes a union is noticed.

/** @type {Record<import('@grafana/schema').VariableType, true>} */
export const VARIABLE_TYPES = {
  query: true, adhoc: true, groupby: true, constant: true, datasource: true, interval: true,
  textbox: true, custom: true, system: true, snapshot: true, switch: true,
};
/** @type {Record<import('@grafana/schema').LegendPlacement, true>} */
export const LEGEND_PLACEMENTS = { bottom: true, right: true };
