import { html } from 'hono/html';
import type { HtmlEscapedString } from 'hono/utils/html';

/** Markup whose every interpolated value was escaped (hono's `html`): node names, stage names, task args and errors are user data. */
export type Html = HtmlEscapedString;

/** hono's escaping template, for fragments built from plain values (never promises), so the result is ready at once. */
export function h(strings: TemplateStringsArray, ...values: unknown[]): Html {
  const out = html(strings, ...values);
  if (out instanceof Promise) throw new TypeError('console markup is built from plain values, not promises');
  return out;
}

/** Cuts long user text for a table cell; the full text is on the detail page. */
export function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export function ago(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)} min`;
  return `${Math.round(ms / 3_600_000)} h`;
}

export function duration(ms: number | null): string {
  if (ms === null) return '—';
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`;
}

export interface LayoutOptions {
  readonly title: string;
  readonly section: 'fabric' | 'tasks' | 'sign-in';
  /** Signed in with the token: actions shown. */
  readonly canAct: boolean;
  /** Whether the console has a token at all (else read-only for everyone). */
  readonly actionsEnabled: boolean;
  readonly body: Html;
}

/** The page around every view: navigation, sign-in state, the stylesheet, htmx and the live-update script, all served from here. */
export function layout(o: LayoutOptions): Html {
  const nav = (href: string, label: string, here: boolean) => h`<a href="${href}"${here ? h` aria-current="page"` : ''}>${label}</a>`;
  const who = o.canAct
    ? h`<form method="post" action="/sign-out" class="inline"><button type="submit">Sign out</button></form>`
    : o.actionsEnabled
      ? h`<a href="/sign-in">Sign in to act</a>`
      : h`<span class="muted">read-only</span>`;
  return h`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content='{"includeIndicatorStyles":false,"allowEval":false}'>
<title>${o.title} · Stagefabric console</title>
<link rel="stylesheet" href="/assets/console.css">
<script src="/assets/htmx.min.js" defer></script>
<script src="/assets/console.js" defer></script>
</head>
<body>
<header><strong>Stagefabric</strong>
<nav>${nav('/fabric', 'Fabric', o.section === 'fabric')} ${nav('/tasks', 'Tasks', o.section === 'tasks')}</nav>
<span class="who">${who}</span></header>
<main>${o.body}</main>
</body>
</html>`;
}

export const CONSOLE_CSS = `
:root { --fg: #1d2330; --muted: #667085; --line: #d0d5dd; --bg: #fff; --soft: #f5f7fa; --bad: #c4320a; --good: #067647; --warn: #b54708; --accent: #1849a9; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1.2rem; border-bottom: 1px solid var(--line); background: var(--soft); }
header nav a { margin-right: 1rem; color: var(--fg); text-decoration: none; }
header nav a[aria-current] { font-weight: 600; border-bottom: 2px solid var(--accent); }
.who { margin-left: auto; }
main { padding: 1rem 1.2rem 3rem; max-width: 1400px; }
h1 { font-size: 1.3rem; margin: .2rem 0 1rem; }
h2 { font-size: 1.05rem; margin: 1.6rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; margin: .3rem 0; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: .85rem; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: var(--soft); padding: .6rem; overflow: auto; max-height: 24rem; white-space: pre-wrap; word-break: break-all; }
a { color: var(--accent); }
.muted { color: var(--muted); }
.bad { color: var(--bad); }
.good { color: var(--good); }
.state { display: inline-block; padding: 0 .45rem; border-radius: .6rem; font-size: .8rem; background: var(--soft); border: 1px solid var(--line); }
.state.error, .state.timeout, .state.down, .state.lost { color: var(--bad); border-color: var(--bad); }
.state.success, .state.up { color: var(--good); border-color: var(--good); }
.state.running, .state.paused { color: var(--warn); border-color: var(--warn); }
.inline { display: inline; }
button, .button { font: inherit; padding: .25rem .7rem; border: 1px solid var(--line); border-radius: .3rem; background: var(--bg); color: var(--fg); cursor: pointer; text-decoration: none; display: inline-block; }
button.primary, .button.primary { background: var(--accent); color: #fff; border-color: var(--accent); }
button.danger { background: var(--bad); color: #fff; border-color: var(--bad); }
form.filters { display: flex; gap: .6rem; flex-wrap: wrap; align-items: end; margin: .5rem 0; }
form.filters label { display: flex; flex-direction: column; font-size: .8rem; color: var(--muted); }
input, select { font: inherit; padding: .2rem .4rem; border: 1px solid var(--line); border-radius: .3rem; }
.note { padding: .6rem .8rem; border-left: 3px solid var(--accent); background: var(--soft); margin: .8rem 0; }
.note.bad { border-color: var(--bad); }
.graph { border: 1px solid var(--line); border-radius: .4rem; overflow: auto; background: var(--bg); }
.graph svg { display: block; }
.graph .band { fill: var(--soft); stroke: var(--line); }
.graph .band.down { fill: #fef3f2; stroke: var(--bad); stroke-dasharray: 6 4; }
.graph .box { fill: #fff; stroke: #98a2b3; }
.graph .box.bottleneck { stroke: var(--bad); stroke-width: 2.5; }
.graph .box.down { stroke: var(--bad); stroke-dasharray: 4 3; }
.graph text { font: 12px system-ui, sans-serif; fill: var(--fg); }
.graph text.title { font-weight: 600; }
.graph text.small { font-size: 11px; fill: var(--muted); }
.graph text.flag { font-size: 11px; fill: var(--bad); font-weight: 600; }
.graph path.edge { fill: none; stroke: #475467; stroke-width: 1.4; }
.graph text.edge { font-size: 11px; fill: var(--accent); }
.spark { vertical-align: middle; }
.spark polyline { fill: none; stroke: var(--accent); stroke-width: 1.5; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
ol.progress { display: flex; gap: .4rem; list-style: none; padding: 0; flex-wrap: wrap; }
ol.progress li { padding: .15rem .6rem; border: 1px solid var(--line); border-radius: .8rem; font-size: .85rem; }
ol.progress li.done { border-color: var(--good); }
ol.progress li.failed { border-color: var(--bad); color: var(--bad); }
ol.progress li.now { border-color: var(--warn); font-weight: 600; }
`;

/**
 * Live regions: each element with `data-live="/path"` is replaced by what
 * the server streams on that path (server-sent events, already escaped
 * HTML); htmx then wires any hx- attributes in the new content.
 */
export const CONSOLE_JS = `'use strict';
document.addEventListener('DOMContentLoaded', function () {
  document.querySelectorAll('[data-live]').forEach(function (el) {
    var source = new EventSource(el.getAttribute('data-live'));
    source.addEventListener('update', function (event) {
      el.innerHTML = event.data;
      el.setAttribute('data-updated', String(Date.now()));
      if (window.htmx) window.htmx.process(el);
    });
    window.addEventListener('pagehide', function () { source.close(); });
  });
});
`;
