// Live charts of both layers over the last 15 minutes, from the gateway's own
// counters (`GET accounts/A/gateway/charts`, refreshed every 5 s), drawn as
// plain SVG. Refusals are drawn in red, so a flood shows at a glance.

import { h, s, replace, say } from "./dom.js";
import { api, accountPath, ANALYTICS_READ } from "./api.js";

const W = 640;
const H = 180;
const PAD = { left: 56, right: 8, top: 10, bottom: 22 };
const CALM = ["#1d4ed8", "#047857", "#7c3aed", "#b45309", "#0e7490", "#4d7c0f", "#9d174d"];
const ALARM = ["#b91c1c", "#ea580c", "#be123c", "#dc2626"];

/** Whether a series counts refusals (drawn in red). */
const refusal = (label) => /^(drop|failed|timeout|revoked|invalid|[45]\d\d)\b|\bblock$/.test(label);

/** `1.2k/s` for a rate. */
function rate(value) {
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)}k`;
  return value >= 10 ? value.toFixed(0) : value.toFixed(1);
}

function colors(series) {
  let calm = 0;
  let alarm = 0;
  return series.map((x) => (refusal(x.label) ? ALARM[alarm++ % ALARM.length] : CALM[calm++ % CALM.length]));
}

/** The time the x axis starts: 15 minutes ago, or the first sample if later. */
function axisStart(data, now) {
  const first = data.times.length ? data.times[0] - data.interval_seconds : now;
  return Math.max(now - data.window_seconds, Math.min(first, now - 60));
}

function ago(seconds) {
  return seconds >= 120 ? `${Math.round(seconds / 60)} min ago` : `${Math.round(seconds)} s ago`;
}

function plot(chart, data, now) {
  const times = data.times;
  const start = axisStart(data, now);
  const span = Math.max(1, now - start);
  const peak = Math.max(1, ...chart.series.flatMap((x) => x.rates));
  const x = (t) => PAD.left + ((t - start) / span) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / peak) * (H - PAD.top - PAD.bottom);
  const palette = colors(chart.series);
  // Steps: each rate holds over the interval it was measured in, so one
  // sample is a visible segment, and a flood a block.
  const lines = chart.series.map((series, i) => {
    const points = series.rates.flatMap((v, j) => [
      `${x(Math.max(start, times[j] - data.interval_seconds)).toFixed(1)},${y(v).toFixed(1)}`,
      `${x(times[j]).toFixed(1)},${y(v).toFixed(1)}`,
    ]);
    const line = s("polyline", { points: points.join(" "), fill: "none", stroke: palette[i], "stroke-width": 2, "data-label": series.label });
    if (!refusal(series.label) || !points.length) return line;
    // Refusals are filled in too: a flood is a red block, not a thin line.
    const base = y(0).toFixed(1);
    const first = points[0].split(",")[0];
    const area = `${first},${base} ${points.join(" ")} ${x(times.at(-1)).toFixed(1)},${base}`;
    return [s("polygon", { points: area, fill: palette[i], "fill-opacity": 0.25, stroke: "none" }), line];
  });
  const label = chart.series.length
    ? `${chart.title}: ${chart.series.map((x) => `${x.label} ${rate(x.rates.at(-1) || 0)} ${chart.unit} now`).join("; ")}`
    : `${chart.title}: nothing in the last 15 minutes`;
  return s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label },
    s("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, stroke: "#888" }),
    s("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, stroke: "#888" }),
    s("text", { x: PAD.left - 4, y: PAD.top + 8, "text-anchor": "end" }, `${rate(peak)}/s`),
    s("text", { x: PAD.left - 4, y: H - PAD.bottom, "text-anchor": "end" }, "0"),
    s("text", { x: PAD.left, y: H - 6 }, ago(span)),
    s("text", { x: W - PAD.right, y: H - 6, "text-anchor": "end" }, "now"),
    lines);
}

function legend(chart) {
  const palette = colors(chart.series);
  return h("ul", { class: "legend" }, chart.series.map((x, i) => h("li", { "data-label": x.label, "data-now": x.rates.at(-1) || 0, "data-peak": Math.max(...x.rates) },
    s("svg", { class: "swatch", viewBox: "0 0 10 10", "aria-hidden": "true" }, s("rect", { width: 10, height: 10, fill: palette[i] })),
    h("span", { class: "mono" }, x.label),
    `${rate(x.rates.at(-1) || 0)}/s now, peak ${rate(Math.max(...x.rates))}/s, ${x.total.toLocaleString("en")} in all`)));
}

function figure(chart, data, now) {
  return h("figure", { id: `chart-${chart.id}` },
    h("figcaption", {}, chart.title, h("span", { class: "hint" }, ` (${chart.unit})`)),
    plot(chart, data, now), legend(chart));
}

async function render(main) {
  const grid = h("div", { class: "charts", id: "charts" });
  const summary = h("p", { class: "now", id: "refusals-now" });
  main.append(h("p", {}, "Rates per second over the last 15 minutes (or since the gateway started), sampled every 5 s by the gateway."), summary, grid);
  const draw = async () => {
    const data = (await api("GET", accountPath("gateway/charts"))).result;
    const now = data.times.at(-1) || Date.now() / 1000;
    const xdp = data.charts.find((c) => c.id === "xdp");
    const refusals = (xdp?.series || []).filter((x) => refusal(x.label));
    const refused = refusals.reduce((sum, x) => sum + (x.rates.at(-1) || 0), 0);
    const peak = refusals.reduce((top, x) => Math.max(top, ...x.rates), 0);
    // A gateway run without an interface has no filter: no rate to claim.
    summary.dataset.xdp = data.xdp_attached ? "attached" : "not-attached";
    if (data.xdp_attached) {
      replace(summary, `XDP refusing ${rate(refused)} packets/s now; peak ${rate(peak)}/s in the last 15 minutes`);
      summary.dataset.rate = refused;
    } else {
      replace(summary, "XDP is not attached (the gateway runs without an interface): the terminator refuses alone.");
      delete summary.dataset.rate;
    }
    replace(grid, data.charts.map((chart) => figure(chart, data, now)));
    grid.dataset.samples = data.times.length;
  };
  await draw();
  const timer = setInterval(() => draw().catch((e) => say(String(e.message || e), "bad")), 5000);
  return () => clearInterval(timer);
}

export default { path: "charts", title: "Live charts", needs: ANALYTICS_READ, render };
