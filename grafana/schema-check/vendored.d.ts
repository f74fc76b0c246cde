// Types Grafana does not publish in @grafana/schema, copied from Grafana's
// sources (the same in 12.1 and 13.0 for the fields used here). Keep them
// closed (no index signatures) so an unknown key still fails.

/** packages/grafana-prometheus/src/dataquery.ts (PromQuery, generated from CUE). */
export interface PromQuery {
  refId: string;
  hide?: boolean;
  key?: string;
  queryType?: string;
  datasource?: { type?: string; uid?: string };
  expr: string;
  editorMode?: 'code' | 'builder';
  exemplar?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  instant?: boolean;
  range?: boolean;
  interval?: string;
  intervalFactor?: number;
  legendFormat?: string;
}

/** packages/grafana-prometheus/src/annotations.ts: what processEvents reads
 * from a Prometheus annotation besides its target. */
export interface PromAnnotationFields {
  titleFormat?: string;
  textFormat?: string;
  tagKeys?: string;
  useValueForTime?: boolean;
}

/** public/app/plugins/panel/alertlist/types.ts (UnifiedAlertListOptions). */
export interface UnifiedAlertListOptions {
  maxItems: number;
  /** 1 alpha asc, 2 alpha desc, 3 importance, 4 time asc, 5 time desc */
  sortOrder: 1 | 2 | 3 | 4 | 5;
  dashboardAlerts: boolean;
  groupMode: 'default' | 'custom';
  groupBy: string[];
  alertName: string;
  showInstances?: boolean;
  folder?: { uid: string; title: string };
  stateFilter: {
    firing: boolean;
    pending: boolean;
    recovering: boolean;
    noData: boolean;
    normal: boolean;
    error: boolean;
  };
  alertInstanceLabelFilter: string;
  datasource: string;
  viewMode: 'list' | 'stat';
  showInactiveAlerts?: boolean;
}
