// reshard's status page: draws /api/state's model and follows /api/events (server-sent
// events; EventSource reconnects by itself). Everything is built with textContent: no
// catalog text is ever parsed as HTML. No framework, no build step, no external fetch.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let model = null;
  let receivedAt = 0;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "style") Object.assign(e.style, v);
      else if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const kid of kids.flat()) {
      if (kid === undefined || kid === null || kid === false) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }
  const replace = (node, ...kids) => node.replaceChildren(...kids.flat().filter((k) => k != null));

  function bytes(n) {
    if (n < 1024) return n + " B";
    let div = 1024, exp = 0;
    for (let v = n / 1024; v >= 1024; v /= 1024) { div *= 1024; exp++; }
    return (n / div).toFixed(1) + " " + "KMGTPE"[exp] + "iB";
  }
  const num = (n) => Math.round(n).toLocaleString("en-US");
  const rate = (n) => (n >= 100 ? num(n) : n.toFixed(1));
  function dur(s) {
    if (s < 1) return (s * 1000).toFixed(1) + " ms";
    if (s < 90) return s.toFixed(1) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  // now is the server's clock: the model's time plus what passed since it arrived.
  const now = () => Date.parse(model.generated) + (performance.now() - receivedAt);
  const ago = (t) => dur(Math.max(0, (now() - Date.parse(t)) / 1000)) + " ago";
  const when = (t) => new Date(t).toLocaleString();

  function bar(frac, label, mean, cls) {
    return el("div", { class: "bar" },
      el("div", { class: "fill " + (cls || ""), style: { width: (Math.max(0, Math.min(1, frac)) * 100).toFixed(2) + "%" } }),
      mean === undefined ? null : el("div", { class: "mean", title: "mean", style: { left: (mean * 100).toFixed(2) + "%" } }),
      el("span", { class: "label" }, label));
  }

  function render(m, redraw) {
    model = m;
    if (!redraw) receivedAt = performance.now();
    $("revision").textContent = m.revision;
    replace($("problems"), (m.problems || []).map((p) => el("div", { class: "problem" }, p)));
    renderStrip(m);
    renderShards(m);
    renderMigrations(m);
    renderPartitions(m);
    renderHistory(m);
    document.body.dataset.revision = m.revision;
  }

  function renderStrip(m) {
    const colors = {};
    m.shards.forEach((s) => (colors[s.name] = s.color));
    replace($("strip"), m.strip.map((s) => el("div", {
      class: "seg" + (s.state === "frozen" ? " frozen" : "") + (s.moving ? " moving" : ""), "data-range": s.range, "data-shard": s.shard,
      title: `${s.range} → ${s.shard} (${s.state}${s.ranges > 1 ? ", " + s.ranges + " ranges" : ", epoch " + s.epoch}${s.moving ? ", being moved by " + s.moving : ""})`,
      style: { left: (s.start * 100).toFixed(4) + "%", width: (s.width * 100).toFixed(4) + "%", background: s.color },
    })));
    replace($("legend"), m.shards.map((s) => el("span", {}, el("span", { class: "chip", style: { background: s.color } }), s.name)));
    replace($("ranges").tBodies[0], m.strip.map((s) => el("tr", { "data-range": s.range },
      el("td", {}, s.range), el("td", {}, el("span", { class: "chip", style: { background: s.color } }), s.shard),
      el("td", { class: s.state === "frozen" ? "warn" : "" }, s.state), el("td", { class: "num" }, s.ranges),
      el("td", { class: "num" }, s.epoch || ""), el("td", {}, s.migration || s.moving || ""))));
  }

  function renderShards(m) {
    $("stats-at").textContent = m.stats_at ? `(stats collected ${ago(m.stats_at)}, ${when(m.stats_at)})` : "(no stats: run reshard stats collect)";
    replace($("shards").tBodies[0], m.shards.map((s) => el("tr", { "data-shard": s.name },
      el("td", {}, el("span", { class: "chip", style: { background: s.color } }), s.name),
      el("td", { class: s.state === "active" ? "" : "warn" }, s.state),
      el("td", { class: "num" }, s.ranges),
      el("td", { class: "num" }, (s.key_share * 100).toFixed(1) + "%"),
      el("td", {}, s.measured ? bar(s.load.bytes.frac, bytes(s.load.bytes.value), m.mean.bytes.frac) : el("span", { class: "empty" }, "not measured")),
      el("td", {}, s.measured ? bar(s.load.rows.frac, num(s.load.rows.value), m.mean.rows.frac) : ""),
      el("td", {}, s.measured ? bar(s.load.writes_per_sec.frac, rate(s.load.writes_per_sec.value), m.mean.writes_per_sec.frac) : ""))));
  }

  function progressText(p) {
    let t = `${num(p.rows_copied)} rows, ${bytes(p.bytes_copied)} copied`;
    if (p.by === "stats" || p.by === "hot key") t += ` of ~${num(p.est_rows)} rows (${p.by})`;
    else if (p.by === "chunks") t += ` · ${p.chunks_done}/${p.chunks_total} chunks`;
    return t;
  }

  function migration(m, phases) {
    const at = phases.indexOf(m.phase);
    const p = m.progress;
    const kv = [];
    if (m.lagging) kv.push(el("span", {}, "lag ", el("b", { class: "lag" }, `${bytes(m.lag_bytes)} / ${m.lag_seconds.toFixed(1)} s`)));
    if (m.eta_seconds != null) kv.push(el("span", {}, "copy ETA ", el("b", { class: "eta" }, dur(m.eta_seconds))));
    const t = m.timings;
    if (t.copy) kv.push(el("span", {}, "copy ", el("b", {}, dur(t.copy))));
    if (t.catchup) kv.push(el("span", {}, "catch-up ", el("b", {}, dur(t.catchup))));
    if (t.cutover_window) kv.push(el("span", {}, "cutover window ", el("b", { class: "window" }, dur(t.cutover_window))));
    if (t.cleanup) kv.push(el("span", {}, "cleanup ", el("b", {}, dur(t.cleanup))));
    let driver = null;
    if (m.driver) {
      driver = m.driver.held
        ? el("div", { class: "kv driver" }, "driven by ", el("b", {}, m.driver.holder || "a driver (starting)"))
        : el("div", { class: "kv driver bad" }, "no driver holds its lock: nobody runs it; re-run the move or apply, or reshard cancel " + m.id);
    }
    let win = null;
    if (m.window && m.window.length) {
      const total = m.window.reduce((a, w) => a + w.seconds, 0) || 1;
      const hues = ["#6366f1", "#f59e0b", "#10b981"];
      win = el("div", { class: "kv" }, "window steps ",
        el("div", { class: "stack", title: "cutover window by step" }, m.window.map((w, i) =>
          el("div", { title: `${w.name}: ${dur(w.seconds)}`, style: { width: (w.seconds / total * 100) + "%", background: hues[i % hues.length] } }))),
        m.window.map((w, i) => el("span", {}, el("span", { class: "chip", style: { background: hues[i % hues.length] } }), `${w.name} ${dur(w.seconds)}`)));
    }
    return el("div", { class: "mig" + (m.finished ? " finished" : ""), "data-migration": m.id, "data-kind": m.kind, "data-phase": m.phase },
      el("div", { class: "head" },
        el("span", { class: "id" }, m.id),
        el("span", {}, `${m.kind} ${m.range}${m.tenant ? ` (tenant ${m.tenant})` : ""}: ${m.source} → ${m.target}`),
        el("span", { class: "phase " + m.phase }, m.phase + (m.phase === "rolling_back" && m.rollback_to ? " → " + m.rollback_to : "")),
        el("span", { class: "note" }, "updated " + ago(m.updated))),
      at >= 0 ? el("div", { class: "pipeline" }, phases.map((ph, i) => el("span", { class: i < at ? "past" : i === at ? "now" : "" }, ph.replace("_", " ")))) : null,
      el("div", { class: "kv" }, el("div", { style: { flex: "1" } },
        bar(p.frac < 0 ? 0 : p.frac, (p.frac >= 0 ? Math.round(p.frac * 100) + "% · " : "") + progressText(p)))),
      el("div", { class: "kv" }, kv), win, driver,
      m.last_error && !m.finished ? el("div", { class: "kv bad" }, "last error: " + m.last_error) : null);
  }

  function renderMigrations(m) {
    const box = $("migrations");
    if (!m.migrations.length) return replace(box, el("p", { class: "empty" }, "no migrations"));
    replace(box, m.migrations.map((x) => migration(x, m.phases)));
  }

  function renderPartitions(m) {
    const p = m.partitions;
    const out = [];
    out.push(el("div", { class: "kv" }, "leader ", el("b", {}, p.leader || "none running (start one with reshard schedule)"),
      ` · ${p.specs} date-partitioned table${p.specs === 1 ? "" : "s"} in the config`));
    if (!p.run) {
      out.push(el("p", { class: "empty" }, "no run recorded yet"));
    } else {
      const r = p.run;
      out.push(el("div", { class: "kv" }, "last run ", el("b", {}, `${when(r.time)} (${ago(r.time)})`), ` by ${r.holder || "?"}: `,
        el("b", { class: r.outcome === "ok" || r.outcome === "idle" ? "" : "bad" }, r.outcome),
        ` in ${dur(r.seconds)}, created ${r.created}, detached ${r.detached}, dropped ${r.dropped}`));
      if (p.shortest && p.shortest.length) out.push(el("div", { class: "kv" + (r.min_runway === 0 ? " bad" : "") }, `fewest periods left: ${r.min_runway} on ${p.shortest.join(", ")}`));
      out.push(el("table", { id: "runway" }, el("thead", {}, el("tr", {}, el("th", {}, "shard"), el("th", {}, "table"), el("th", {}, "runway (premade periods left / premake)"), el("th", {}, "until"))),
        el("tbody", {}, p.runway.map((w) => el("tr", {},
          el("td", {}, w.shard), el("td", {}, w.table || ""),
          el("td", {}, w.error ? el("span", { class: "bad" }, w.error) : bar(w.frac, `${w.runway} / ${w.premake}${w.errors ? ", " + w.errors + " errors" : ""}`, undefined, w.runway === 0 ? "bad" : "")),
          el("td", {}, w.until ? when(w.until) : ""))))));
      (p.errors || []).slice(0, 5).forEach((e) => out.push(el("div", { class: "kv bad" }, e)));
    }
    replace($("partitions"), out);
  }

  function renderHistory(m) {
    replace($("history").tBodies[0], m.history.map((e) => el("tr", { "data-seq": e.seq },
      el("td", { class: "num" }, e.seq), el("td", { title: e.time }, new Date(e.time).toLocaleTimeString()),
      el("td", {}, e.kind), el("td", {}, e.range || ""),
      el("td", {}, [e.shard && e.kind !== "flip" ? e.shard + " " : "", e.from || e.to ? `${e.from || "·"} → ${e.to || "·"}` : "", e.epoch ? ` (epoch ${e.epoch})` : "", e.detail ? " " + e.detail : ""].join("")),
      el("td", {}, e.migration || ""))));
  }

  // A plan's ranges hold int64 bounds that a JavaScript number would round: read them as text.
  const quoteBounds = (text) => text.replace(/("(?:lo|hi)"\s*:\s*)(-?\d+)/g, '$1"$2"');

  function renderPlan(plan, name) {
    const shards = plan.shards || [];
    const top = (k1, k2) => Math.max(1e-9, ...shards.map((s) => Math.max(s[k1] || 0, s[k2] || 0)));
    const mean = (k) => shards.length ? shards.reduce((a, s) => a + (s[k] || 0), 0) / shards.length : 0;
    const row = (s, k1, k2, fmt) => {
      const t = top(k1, k2);
      return el("td", {}, bar(s[k1] / t, "before " + fmt(s[k1]), mean(k1) / t), bar(s[k2] / t, "after " + fmt(s[k2]), mean(k2) / t, "after"));
    };
    const steps = (plan.steps || []).map((s) => el("li", {}, `${s.kind} ${fmtRange(s.range)}${s.to ? `: ${s.from} → ${s.to}` : ` on ${s.from}`} — ${s.reason || ""}`));
    replace($("plan"),
      el("div", { class: "kv", id: "plan-summary" }, el("b", {}, name), ` plan ${plan.id || ""} of cluster ${plan.cluster || "?"}: ${plan.moves || 0} moves, ${plan.splits || 0} splits, ${bytes(plan.bytes_to_move || 0)} to move; max/mean load ${(plan.max_mean_before || 0).toFixed(2)} → ${(plan.max_mean_after || 0).toFixed(2)}`),
      el("table", { id: "plan-shards", class: "bars" },
        el("thead", {}, el("tr", {}, el("th", {}, "shard"), el("th", {}, "load"), el("th", {}, "bytes"), el("th", {}, "writes/s"))),
        el("tbody", {}, shards.map((s) => el("tr", { "data-shard": s.shard }, el("td", {}, s.shard),
          row(s, "load", "load_after", (v) => (v || 0).toFixed(3)), row(s, "bytes", "bytes_after", (v) => bytes(v || 0)),
          row(s, "writes_per_sec", "writes_per_sec_after", (v) => rate(v || 0)))))),
      steps.length ? el("ol", {}, steps) : el("p", { class: "empty" }, "the plan has no steps"));
  }
  const fmtRange = (r) => (r ? `${r.lo == null ? "" : r.lo}:${r.hi == null ? "" : r.hi}` : "");

  $("plan-file").addEventListener("change", (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => {
      try {
        renderPlan(JSON.parse(quoteBounds(String(reader.result))), file.name);
      } catch (e) {
        replace($("plan"), el("div", { class: "problem" }, `${file.name} is not a plan file (reshard plan --out plan.json): ${e.message}`));
      }
    };
    reader.readAsText(file);
  });

  function live(on, text) {
    const b = $("live");
    b.className = "live " + (on ? "on" : "off");
    b.textContent = text;
  }

  render(JSON.parse($("model").textContent));
  if (window.EventSource) {
    const es = new EventSource("/api/events");
    es.addEventListener("state", (e) => { render(JSON.parse(e.data)); live(true, "live"); });
    es.onopen = () => live(true, "live");
    es.onerror = () => live(false, "reconnecting…");
  } else {
    const poll = () => fetch("/api/state").then((r) => r.json()).then((m) => { render(m); live(true, "live (polling)"); },
      () => live(false, "reconnecting…")).finally(() => setTimeout(poll, 1000));
    poll();
  }
  // Ages ("updated 3 s ago") move on between updates.
  setInterval(() => model && render(model, true), 5000);
})();
