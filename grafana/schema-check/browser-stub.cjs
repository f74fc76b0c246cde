// @grafana/data loads UI helpers that touch browser globals at require time;
// these stand-ins are enough for getValueFormats() under node.
// Grafana's @grafana/data bundle touches browser globals at load time.
const el = () => ({ appendChild() {}, setAttribute() {}, style: {}, sheet: { insertRule() {}, cssRules: [] } });
globalThis.document = { head: el(), body: el(), createElement: el, createTextNode: el, documentElement: el(),
  querySelector: () => null, getElementsByTagName: () => [el()], addEventListener() {} };
globalThis.window = { addEventListener() {}, removeEventListener() {}, location: { href: '' }, document: globalThis.document,
  matchMedia: () => ({ matches: false, addEventListener() {} }), navigator: { userAgent: 'node', language: 'en-US', languages: ['en-US'] } };
globalThis.localStorage = { getItem: () => null, setItem() {}, removeItem() {} };
globalThis.history = { pushState() {}, replaceState() {} };
globalThis.window.history = globalThis.history;
globalThis.navigator ??= globalThis.window.navigator;
