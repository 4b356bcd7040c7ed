// autopgo's web view: renders the apps overview (#/) and an app's page (#/app/NAME?window=...)
// from the server's JSON API, on this origin only. Panels whose endpoint this server does not
// have (a plain-text 404 from the router) say so instead of failing.
"use strict";

(function () {
  const main = document.getElementById("main");
  const crumbs = document.getElementById("crumbs");
  const TOKEN_KEY = "autopgo.token";
  const ROWS = 200; // rows a table shows; the API answers have them all

  // ---- small helpers ----------------------------------------------------------------------

  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }
  function el(html) {
    const t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }
  function bytes(n) {
    if (n == null) return "–";
    const u = ["B", "KiB", "MiB", "GiB"];
    let i = 0, v = n;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : String(v)) + " " + u[i];
  }
  // A sample value in its unit: nanoseconds as pprof prints durations, others as plain numbers.
  function amount(v, unit) {
    if (v == null) return "–";
    if (unit === "nanoseconds") {
      const a = Math.abs(v);
      if (a >= 3600e9) return (v / 3600e9).toFixed(2) + " h";
      if (a >= 60e9) return (v / 60e9).toFixed(2) + " min";
      if (a >= 1e9) return (v / 1e9).toFixed(2) + " s";
      if (a >= 1e6) return (v / 1e6).toFixed(2) + " ms";
      if (a >= 1e3) return (v / 1e3).toFixed(2) + " µs";
      return v + " ns";
    }
    if (unit === "bytes") return bytes(v);
    return v.toLocaleString("en-US") + (unit && unit !== "count" ? " " + unit : "");
  }
  function pct(x, total) {
    return total ? (100 * x / total).toFixed(2) + "%" : "–";
  }
  function when(s) {
    if (!s) return "–";
    const d = new Date(s);
    return isNaN(d) ? esc(s) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }
  function unavailable(what) {
    return `<p class="unavailable" data-unavailable="1">${esc(what)}: not available on this server</p>`;
  }
  function failure(r) {
    const msg = (r.json && r.json.message) || r.text || "HTTP " + r.status;
    return `<p class="error">${esc(msg)}</p>`;
  }

  // ---- the API, with the token when the server asks for one --------------------------------

  let tokenWaiters = null;
  function askToken(why) {
    if (tokenWaiters) return new Promise((resolve) => tokenWaiters.push(resolve));
    tokenWaiters = [];
    const dlg = document.getElementById("token-dialog");
    document.getElementById("token-why").textContent = why || "";
    document.getElementById("token-input").value = "";
    return new Promise((resolve) => {
      tokenWaiters.push(resolve);
      const done = (tok) => {
        if (tok) sessionStorage.setItem(TOKEN_KEY, tok);
        const ws = tokenWaiters;
        tokenWaiters = null;
        dlg.close();
        ws.forEach((w) => w(!!tok));
      };
      document.getElementById("token-form").onsubmit = (e) => {
        e.preventDefault();
        done(document.getElementById("token-input").value.trim());
      };
      document.getElementById("token-cancel").onclick = () => done(null);
      dlg.showModal();
    });
  }
  document.getElementById("token-button").onclick = () => askToken("Replace the token of this tab.").then(route);

  // fetch on this origin; resolves to {status, ok, json, text, type, missing}. `missing`: the
  // router has no such route (a plain-text 404), i.e. the feature is not on this server.
  async function api(path, opts) {
    opts = opts || {};
    for (let attempt = 0; attempt < 3; attempt++) {
      const headers = Object.assign({}, opts.headers || {});
      const tok = sessionStorage.getItem(TOKEN_KEY);
      if (tok) headers.Authorization = "Bearer " + tok;
      const res = await fetch(path, { headers, cache: "no-cache" });
      if (res.status === 401) {
        document.getElementById("token-button").hidden = false;
        const body = await res.text();
        let why = "";
        try { why = JSON.parse(body).message || ""; } catch (e) { why = body.slice(0, 200); }
        if (await askToken(why)) continue;
        return { status: 401, ok: false, text: why, json: null };
      }
      const type = res.headers.get("content-type") || "";
      const out = { status: res.status, ok: res.ok, type, headers: res.headers };
      if (opts.blob) {
        out.blob = res.ok ? await res.blob() : null;
        if (!res.ok) out.text = await res.text();
      } else {
        out.text = await res.text();
        if (type.indexOf("json") >= 0) {
          try { out.json = JSON.parse(out.text); } catch (e) { out.json = null; }
        }
      }
      out.missing = res.status === 404 && type.indexOf("json") < 0;
      return out;
    }
    return { status: 401, ok: false, text: "no token", json: null };
  }

  // What this server has (/ui/features.json): a panel whose endpoint is missing is not asked.
  let features = null;
  async function loadFeatures() {
    if (features) return features;
    const r = await api("/ui/features.json");
    features = r.ok && r.json ? r.json : {};
    return features;
  }
  function maybe(feature, path, opts) {
    if (!features[feature]) return Promise.resolve({ status: 404, ok: false, missing: true });
    return api(path, opts);
  }

  // ---- the time window ----------------------------------------------------------------------

  // "" (all of it), "24h", "168h", or {from, to} (RFC 3339); as a query string for the API.
  function windowQuery(w) {
    if (!w) return "";
    if (typeof w === "string") return "window=" + encodeURIComponent(w);
    return "from=" + encodeURIComponent(w.from) + "&to=" + encodeURIComponent(w.to);
  }
  function withQuery(path, q) {
    if (!q) return path;
    return path + (path.indexOf("?") >= 0 ? "&" : "?") + q;
  }
  function parseHash() {
    const h = location.hash.replace(/^#/, "") || "/";
    const [path, qs] = h.split("?");
    const q = new URLSearchParams(qs || "");
    let w = "";
    if (q.get("window")) w = q.get("window");
    else if (q.get("from") && q.get("to")) w = { from: q.get("from"), to: q.get("to") };
    return { path, w };
  }

  // ---- charts -------------------------------------------------------------------------------

  // Bars of counts per hour over the last 24 hours ending now; times in ms.
  function hourBars(container, times, width, height) {
    const now = Date.now(), start = now - 24 * 3600e3;
    const counts = new Array(24).fill(0);
    times.forEach((t) => {
      if (t >= start && t <= now) counts[Math.min(23, Math.floor((t - start) / 3600e3))]++;
    });
    const svg = d3.select(container).append("svg").attr("width", width).attr("height", height);
    const max = Math.max(1, d3.max(counts));
    const bw = width / 24;
    svg.selectAll("rect").data(counts).enter().append("rect").attr("class", "bar")
      .attr("x", (d, i) => i * bw + 1).attr("width", Math.max(1, bw - 2))
      .attr("y", (d) => height - (height - 2) * d / max).attr("height", (d) => (height - 2) * d / max)
      .append("title").text((d, i) => `${d} upload(s), ${24 - i} h ago`);
    return counts;
  }

  // Cumulative share of the hot call sites (heaviest first) with the threshold marked: the
  // decisions document's sampled curve, cdf = [[index, cumulative %], ...] over n sites.
  function cdfChart(container, cdf, n, threshold) {
    const width = Math.min(560, container.clientWidth || 560), height = 180, m = { l: 40, r: 10, t: 10, b: 24 };
    const pts = [{ i: 0, c: 0 }].concat((cdf || []).map(([i, c]) => ({ i, c: +c })));
    const x = d3.scaleLinear().domain([0, Math.max(1, n)]).range([m.l, width - m.r]);
    const y = d3.scaleLinear().domain([0, 100]).range([height - m.b, m.t]);
    const svg = d3.select(container).append("svg").attr("width", width).attr("height", height);
    svg.append("g").attr("class", "axis").attr("transform", `translate(0,${height - m.b})`).call(d3.axisBottom(x).ticks(6));
    svg.append("g").attr("class", "axis").attr("transform", `translate(${m.l},0)`).call(d3.axisLeft(y).ticks(5).tickFormat((d) => d + "%"));
    if (threshold != null) {
      svg.append("line").attr("class", "threshold").attr("x1", m.l).attr("x2", width - m.r).attr("y1", y(threshold)).attr("y2", y(threshold));
      svg.append("text").attr("x", width - m.r).attr("y", y(threshold) - 4).attr("text-anchor", "end").attr("class", "axis")
        .text(`threshold ${threshold}%`).style("fill", "var(--bad)").style("font-size", "10px");
    }
    svg.append("path").datum(pts).attr("class", "curve").attr("d", d3.line().x((d) => x(d.i)).y((d) => y(d.c)));
  }

  // ---- the overview -------------------------------------------------------------------------

  async function overview() {
    crumbs.textContent = "apps";
    const r = await api("/api/profile");
    if (!r.ok) { main.innerHTML = failure(r); return; }
    const apps = (r.json && r.json.profiles) || [];
    apps.sort((a, b) => a.key.localeCompare(b.key));
    main.innerHTML = "";
    const card = el(`<section class="card"><h1>Apps</h1>
      <table id="apps"><thead><tr><th>app</th><th class="num">profile size</th><th>last merge</th>
      <th class="num">uploads, last 24 h</th><th class="num">total in profile</th><th>activity, last 24 h (per hour)</th></tr></thead>
      <tbody></tbody></table></section>`);
    main.appendChild(card);
    const tbody = card.querySelector("tbody");
    if (!apps.length) tbody.appendChild(el(`<tr><td colspan="6" class="muted">No merged profile yet: upload one with <code>autopgo upload</code>.</td></tr>`));
    await Promise.all(apps.map(async (a) => {
      const row = el(`<tr data-app="${esc(a.key)}">
        <td><a href="#/app/${encodeURIComponent(a.key)}">${esc(a.key)}</a></td>
        <td class="num" data-field="size" data-value="${a.size}" title="${a.size} bytes">${bytes(a.size)}</td>
        <td data-field="merged" data-value="${esc(a.lastModified)}">${when(a.lastModified)}</td>
        <td class="num" data-field="uploads24h">…</td>
        <td class="num" data-field="total">…</td>
        <td class="chart" data-field="activity"></td></tr>`);
      tbody.appendChild(row);
      const enc = encodeURIComponent(a.key);
      const [top, hist] = await Promise.all([maybe("top", `/api/profile/${enc}/top?limit=200`), maybe("history", `/api/profile/${enc}/history?window=24h`)]);
      const tot = row.querySelector('[data-field="total"]');
      if (top.ok && top.json) {
        tot.dataset.value = top.json.total;
        tot.dataset.unit = top.json.unit;
        tot.title = `${top.json.total} ${top.json.unit} (${top.json.sampleType})`;
        tot.textContent = amount(top.json.total, top.json.unit);
      } else tot.innerHTML = top.missing ? unavailable("total") : failure(top);
      const up = row.querySelector('[data-field="uploads24h"]');
      const act = row.querySelector('[data-field="activity"]');
      const since = Date.now() - 24 * 3600e3;
      if (hist.ok && hist.json) {
        const times = (hist.json.uploads || []).map((u) => Date.parse(u.captured)).filter((t) => t >= since);
        up.dataset.value = times.length;
        up.dataset.source = "history";
        up.textContent = times.length;
        hourBars(act, times, 168, 26);
      } else {
        act.innerHTML = unavailable("per-hour activity (needs the profile history)");
        const ups = await api(`/api/profile/${enc}/uploads`);
        if (ups.ok && ups.json) {
          const list = (ups.json.staged || []).concat(ups.json.rejected || []);
          const n = list.filter((u) => Date.parse(u.lastModified) >= since).length;
          up.dataset.value = n;
          up.dataset.source = "uploads";
          up.title = "uploads still staged or rejected; merged ones are counted once the profile history is on this server";
          up.textContent = n + " pending/rejected";
        } else up.innerHTML = failure(ups);
      }
    }));
    main.dataset.ready = "overview";
  }

  // ---- an app's page ------------------------------------------------------------------------

  function windowLabel(w) {
    if (!w) return "all time";
    if (w === "24h") return "last 24 h";
    if (w === "168h") return "last 7 d";
    if (typeof w === "string") return "last " + w;
    return `${w.from} – ${w.to}`;
  }

  function setWindow(app, w) {
    const q = windowQuery(w);
    location.hash = "#/app/" + encodeURIComponent(app) + (q ? "?" + q : "");
  }

  async function appPage(app, w) {
    const enc = encodeURIComponent(app);
    const q = windowQuery(w);
    crumbs.innerHTML = `<a href="#/">apps</a> / ${esc(app)}`;
    main.innerHTML = "";
    main.dataset.ready = "";
    delete main.dataset.complete;
    const head = el(`<section class="card"><h1>${esc(app)}</h1>
      <div class="toolbar" id="window-picker">
        <span class="muted">window:</span>
        <button type="button" data-w="">all time</button>
        <button type="button" data-w="24h">24 h</button>
        <button type="button" data-w="168h">7 d</button>
        <button type="button" data-w="custom">custom</button>
        <span id="custom" hidden><input type="datetime-local" id="from"> – <input type="datetime-local" id="to"> UTC <button type="button" id="apply">apply</button></span>
        <span class="muted" id="window-now">showing ${esc(windowLabel(w))}</span>
        ${features.history ? "" : `<span class="unavailable">(windows other than all time need the profile history: not available on this server)</span>`}
      </div>
      <div id="stats"></div>
      <div class="toolbar" id="downloads"><span class="muted">download:</span></div></section>`);
    main.appendChild(head);
    head.querySelectorAll("#window-picker button[data-w]").forEach((b) => {
      const v = b.dataset.w;
      if ((v === "" && !w) || v === w || (v === "custom" && typeof w === "object" && w)) b.classList.add("on");
      b.onclick = () => {
        if (v === "custom") { head.querySelector("#custom").hidden = false; return; }
        setWindow(app, v);
      };
    });
    head.querySelector("#apply").onclick = () => {
      const f = head.querySelector("#from").value, t = head.querySelector("#to").value;
      if (f && t) setWindow(app, { from: new Date(f + "Z").toISOString(), to: new Date(t + "Z").toISOString() });
    };
    if (typeof w === "object" && w) {
      head.querySelector("#custom").hidden = false;
      head.querySelector("#from").value = w.from.slice(0, 16);
      head.querySelector("#to").value = w.to.slice(0, 16);
    }

    const flameCard = el(`<section class="card"><h2>Flame graph</h2>
      <div class="toolbar"><input type="search" id="flame-search" placeholder="search functions (regexp)">
      <button type="button" id="flame-reset">reset zoom</button><span class="muted" id="flame-info"></span></div>
      <div id="flame"></div><div class="muted mono" id="flame-details"></div></section>`);
    const grid = el(`<div class="grid"></div>`);
    const topCard = el(`<section class="card"><h2>Top functions</h2><div id="top"></div></section>`);
    const pgoCard = el(`<section class="card"><h2>The compiler's view</h2><div id="decisions"></div></section>`);
    const histCard = el(`<section class="card"><h2>History and uploads</h2><div id="history"></div><div id="uploads"></div></section>`);
    const diffCard = el(`<section class="card"><h2>Decisions diff</h2><div id="diff"></div></section>`);
    main.appendChild(flameCard);
    grid.appendChild(topCard);
    grid.appendChild(pgoCard);
    main.appendChild(grid);
    const grid2 = el(`<div class="grid"></div>`);
    grid2.appendChild(histCard);
    grid2.appendChild(diffCard);
    main.appendChild(grid2);

    // Every panel renders as soon as its own answer is in: a slow one (the compiler's view of a
    // huge profile) holds up nothing else. data-ready="app" once the profile's own panels
    // (statistics, flame graph, top functions) are drawn, data-complete once all are. The
    // compiler's view is asked once the flame graph and top are in: a version the server has not
    // seen costs it a decode for each, and the panels drawn first should not share the CPU.
    pgoCard.querySelector("#decisions").innerHTML = `<p class="muted">Loading…</p>`;
    renderDownloads(head.querySelector("#downloads"), app, q);
    const pFlame = maybe("flamegraph", withQuery(`/api/profile/${enc}/flamegraph`, q));
    const pTop = maybe("top", withQuery(`/api/profile/${enc}/top?limit=200`, q));
    const pDec = Promise.allSettled([pFlame, pTop])
      .then(() => maybe("decisions", withQuery(`/api/profile/${enc}/decisions`, q)));
    const pHist = maybe("history", withQuery(`/api/profile/${enc}/history`, q));
    const pUps = api(`/api/profile/${enc}/uploads`);
    const core = Promise.all([
      Promise.all([pTop, pUps]).then(([top, ups]) => {
        renderStats(head.querySelector("#stats"), top, ups);
        renderTop(topCard.querySelector("#top"), top);
        renderUploads(histCard.querySelector("#uploads"), ups);
      }),
      pFlame.then((flame) => renderFlame(flameCard, flame)),
    ]).then(() => { main.dataset.ready = "app"; });
    const rest = Promise.all([
      pDec.then((dec) => {
        renderDecisions(pgoCard.querySelector("#decisions"), dec);
        return renderDiff(diffCard.querySelector("#diff"), app, dec);
      }),
      pHist.then((hist) => renderHistory(histCard.querySelector("#history"), hist)),
    ]);
    await Promise.all([core, rest]);
    main.dataset.complete = "1";
  }

  function renderStats(box, top, ups) {
    const merged = ups.ok && ups.json && ups.json.merged;
    let html = "";
    if (top.ok && top.json) {
      html += `<span class="stat" data-field="total" data-value="${top.json.total}">total ${esc(top.json.sampleType)}<b>${amount(top.json.total, top.json.unit)}</b></span>`;
      html += `<span class="stat" data-field="functions" data-value="${top.json.functions}">functions<b>${top.json.functions}</b></span>`;
    }
    if (merged) {
      html += `<span class="stat" data-field="size" data-value="${merged.size}">profile size<b>${bytes(merged.size)}</b></span>`;
      html += `<span class="stat" data-field="merged" data-value="${esc(merged.lastModified)}">last merge<b>${when(merged.lastModified)}</b></span>`;
    }
    box.innerHTML = html;
  }

  // Downloads go through fetch (so a token is sent) and are saved from a blob: URL of this origin.
  function renderDownloads(box, app, q) {
    const formats = [["pprof", "full profile (pprof)"], ["pgo", "minimal (pgo)"], ["preprofile", "preprofile"]];
    formats.forEach(([f, label]) => {
      const b = el(`<button type="button" data-format="${f}">${esc(label)}</button>`);
      if (f !== "pprof" && !features.decisions) {
        b.disabled = true;
        b.title = "not available on this server (needs the compiler's view)";
      }
      b.onclick = async () => {
        const path = withQuery(`/api/profile/${encodeURIComponent(app)}` + (f === "pprof" ? "" : "?format=" + f), q);
        const r = await api(path, { blob: true });
        if (!r.ok) { alertBox(box, failure(r)); return; }
        const a = document.createElement("a");
        a.href = URL.createObjectURL(r.blob);
        a.download = f === "preprofile" ? `${app}.preprofile` : `${app}${f === "pgo" ? ".min" : ""}.pgo`;
        document.body.appendChild(a);
        a.click();
        setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
      };
      box.appendChild(b);
    });
  }
  function alertBox(box, html) {
    const n = el(`<div>${html}</div>`);
    box.appendChild(n);
    setTimeout(() => n.remove(), 5000);
  }

  function renderFlame(card, r) {
    const box = card.querySelector("#flame");
    const info = card.querySelector("#flame-info");
    if (!r.ok || !r.json) { box.innerHTML = r.missing ? unavailable("flame graph") : failure(r); return; }
    const d = r.json;
    info.textContent = `${d.frames} frames drawn as ${d.nodes} nodes (at most ${d.maxNodes}: the lightest fold into "(other)"), total ${amount(d.total, d.unit)}`;
    box.dataset.total = d.total;
    const width = Math.max(600, box.clientWidth || 1200);
    const chart = flamegraph.default()
      .width(width).cellHeight(18).inverted(true).minFrameSize(1).transitionDuration(300)
      .sort(true).title("").selfValue(false)
      .setDetailsElement(card.querySelector("#flame-details"))
      .label((n) => `${n.data.name}: ${amount(n.value, d.unit)} (${pct(n.value, d.total)})`);
    d3.select(box).datum(d.root).call(chart);
    const search = card.querySelector("#flame-search");
    search.oninput = () => {
      // d3-flame-graph takes the term as a regular expression: one being typed may not be one yet
      try { new RegExp(search.value); } catch (e) { search.setCustomValidity("not a regular expression"); return; }
      search.setCustomValidity("");
      if (search.value) chart.search(search.value); else chart.clear();
    };
    card.querySelector("#flame-reset").onclick = () => chart.resetZoom();
  }

  function renderTop(box, r) {
    if (!r.ok || !r.json) { box.innerHTML = r.missing ? unavailable("top functions") : failure(r); return; }
    const d = r.json;
    let sum = 0;
    const rows = d.rows.map((x) => {
      sum += x.flat;
      const name = x.name + (x.inline ? ` (${x.inline})` : "");
      return `<tr data-name="${esc(name)}" data-flat="${x.flat}" data-cum="${x.cum}">
        <td class="num">${amount(x.flat, d.unit)}</td><td class="num">${pct(x.flat, d.total)}</td><td class="num">${pct(sum, d.total)}</td>
        <td class="num">${amount(x.cum, d.unit)}</td><td class="num">${pct(x.cum, d.total)}</td><td class="name">${esc(name)}</td></tr>`;
    }).join("");
    box.innerHTML = `<p class="muted">${d.rows.length} of ${d.functions} functions by flat ${esc(d.sampleType)}, as <code>go tool pprof -top</code> lists them</p>
      <div class="scroll"><table id="top-table"><thead><tr><th class="num">flat</th><th class="num">flat%</th><th class="num">sum%</th>
      <th class="num">cum</th><th class="num">cum%</th><th>function</th></tr></thead><tbody>${rows}</tbody></table></div>`;
  }

  function siteKey(s) { return `${s.caller} +${s.offset} → ${s.callee}`; }

  // The compiler's view: the API lists the heaviest entries of each list (counts has them all).
  function renderDecisions(box, r) {
    if (!r.ok || !r.json) {
      box.innerHTML = r.missing ? unavailable("the compiler's view (hot call sites, devirtualization)") : failure(r);
      return;
    }
    const d = r.json;
    const counts = d.counts || {};
    const hot = d.hotCallSites || [], devirt = d.devirtualization || [];
    const nHot = counts.hotCallSites != null ? counts.hotCallSites : hot.length;
    const nFuncs = counts.hotFunctions != null ? counts.hotFunctions : (d.hotFunctions || []).length;
    const nDevirt = counts.devirtualization != null ? counts.devirtualization : devirt.length;
    const shown = hot.slice(0, ROWS), devirtShown = devirt.slice(0, ROWS);
    const more = (n, all) => (all > n ? `<p class="muted">… and ${all - n} more (<code>/decisions?limit=0</code> lists them all)</p>` : "");
    box.innerHTML = `<p class="muted" id="decisions-summary">${nHot} hot call sites of ${d.edges} edges take the weight past the
      ${d.threshold}% threshold (total weight ${d.totalWeight}); ${nFuncs} hot functions.</p>
      <div class="chart" id="cdf"></div>
      <div class="scroll"><table id="hot-table"><thead><tr><th class="num">weight</th><th class="num">cum%</th><th>call site → callee</th></tr></thead>
      <tbody>${shown.map((s) => `<tr><td class="num">${s.weight}</td><td class="num">${(+s.cumulative).toFixed(2)}%</td><td class="name">${esc(siteKey(s))}</td></tr>`).join("")}</tbody></table></div>
      ${more(shown.length, nHot)}
      <h2>Devirtualization targets</h2>
      <div class="scroll"><table><thead><tr><th>call site</th><th>heaviest callee</th><th class="num">weight</th><th class="num">callees</th></tr></thead>
      <tbody>${devirtShown.map((s) => `<tr><td class="name">${esc(s.caller)} +${s.offset}</td><td class="name">${esc(s.callee)}</td><td class="num">${s.weight} / ${s.siteWeight}</td><td class="num">${s.callees}</td></tr>`).join("") || `<tr><td colspan="4" class="muted">none</td></tr>`}</tbody></table></div>
      ${more(devirtShown.length, nDevirt)}`;
    const cdf = d.cdf || hot.map((s, i) => [i + 1, s.cumulative]);
    cdfChart(box.querySelector("#cdf"), cdf, nHot, d.threshold);
  }

  function renderHistory(box, r) {
    if (!r.ok || !r.json) {
      box.innerHTML = r.missing ? unavailable("history timeline (needs the profile history)") : failure(r);
      return;
    }
    const d = r.json;
    const segs = d.segments || [];
    box.innerHTML = `<p class="muted">${segs.length} segments of ${esc(d.segment || "")}</p><div class="chart" id="timeline"></div>`;
    if (segs.length) {
      const width = 520, height = 90;
      const x = d3.scaleTime().domain([d3.min(segs, (s) => new Date(s.start)), d3.max(segs, (s) => new Date(s.end))]).range([30, width - 10]);
      const y = d3.scaleLinear().domain([0, d3.max(segs, (s) => s.uploads) || 1]).range([height - 20, 4]);
      const svg = d3.select(box.querySelector("#timeline")).append("svg").attr("width", width).attr("height", height);
      svg.selectAll("rect").data(segs).enter().append("rect").attr("class", "bar")
        .attr("x", (s) => x(new Date(s.start))).attr("width", (s) => Math.max(1, x(new Date(s.end)) - x(new Date(s.start)) - 1))
        .attr("y", (s) => y(s.uploads)).attr("height", (s) => height - 20 - y(s.uploads))
        .append("title").text((s) => `${s.start}: ${s.uploads} uploads, ${s.samples} samples, ${bytes(s.bytes)}`);
      svg.append("g").attr("class", "axis").attr("transform", `translate(0,${height - 20})`).call(d3.axisBottom(x).ticks(5));
    }
    const ups = d.uploads || [];
    box.appendChild(el(`<div class="scroll"><table><thead><tr><th>captured</th><th>source</th><th class="num">size</th><th>key</th></tr></thead>
      <tbody>${ups.map((u) => `<tr><td>${when(u.captured)}</td><td>${esc(u.source || "")}</td><td class="num">${bytes(u.size)}</td><td class="mono">${esc(u.key)}</td></tr>`).join("") || `<tr><td colspan="4" class="muted">none in this window</td></tr>`}</tbody></table></div>`));
  }

  function renderUploads(box, r) {
    if (!r.ok || !r.json) { box.innerHTML = r.missing ? unavailable("uploads") : failure(r); return; }
    const d = r.json;
    const staged = d.staged || [], rejected = d.rejected || [];
    box.innerHTML = `<h2>Waiting and rejected uploads</h2>
      <table id="uploads-table"><thead><tr><th>state</th><th>when</th><th>key / reason</th></tr></thead><tbody>
      ${staged.map((u) => `<tr><td>staged</td><td>${when(u.lastModified)}</td><td class="mono">${esc(u.key)} (${bytes(u.size)})</td></tr>`).join("")}
      ${rejected.map((u) => `<tr><td class="error">rejected</td><td>${when(u.lastModified)}</td><td class="mono">${esc(u.key)}: ${esc(u.reason)}</td></tr>`).join("")}
      ${staged.length + rejected.length ? "" : `<tr><td colspan="3" class="muted">none: every upload so far is merged</td></tr>`}
      </tbody></table>`;
  }

  // What the compiler decides differently between two profiles of the app, each a window or a
  // version (GET /versions), as the server's /diff computes it (the one `autopgo diff` has).
  async function renderDiff(box, app, dec) {
    if (dec.missing || !features.diff) { box.innerHTML = unavailable("decisions diff (needs the compiler's view)"); return; }
    const enc = encodeURIComponent(app);
    const choices = [["", "current (served now)"]];
    if (features.history) {
      [["window=1h", "window: last 1 h"], ["window=24h", "window: last 24 h"], ["window=168h", "window: last 7 d"],
        ["window=720h", "window: last 30 d"]]
        .forEach((c) => choices.push(c));
      const v = features.versions ? await api(`/api/profile/${enc}/versions`) : { ok: false };
      if (v.ok && v.json) {
        v.json.versions.filter((x) => x.query).forEach((x) => choices.push([x.query, `version: ${x.label} (${x.uploads} uploads)`]));
      }
    }
    const opts = choices.map(([q, label]) => `<option value="${esc(q)}">${esc(label)}</option>`).join("");
    box.innerHTML = `<div class="toolbar">A <select id="diff-a">${opts}</select> B <select id="diff-b">${opts}</select>
      <button type="button" id="diff-go">compare</button></div><div id="diff-out" class="muted">Pick two profiles: windows, or versions (the profile as of the end of a history segment).</div>`;
    // A: the oldest version (or the last 24 h), B: the current profile
    if (choices.length > 1) box.querySelector("#diff-a").value = choices[choices.length > 5 ? choices.length - 1 : 2][0];
    box.querySelector("#diff-go").onclick = async () => {
      const out = box.querySelector("#diff-out");
      out.textContent = "…";
      delete out.dataset.ready;
      const a = box.querySelector("#diff-a").value, b = box.querySelector("#diff-b").value;
      const r = await api(`/api/profile/${enc}/diff?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
      if (!r.ok || !r.json) { out.innerHTML = failure(r); out.dataset.ready = "error"; return; }
      const d = r.json, c = d.counts || {};
      const site = (e) => `${e.caller} +${e.offset} → ${e.callee}`;
      const rows = [];
      const list = (kind, cls, items, show) => items.forEach((x) => rows.push(`<tr class="${cls}" data-kind="${kind}"><td>${kind}</td><td class="name">${esc(show(x))}</td></tr>`));
      list("became hot", "added", d.becameHot, site);
      list("became cold", "removed", d.becameCold, site);
      list("function hot", "added", d.functionsHot, (f) => f);
      list("function cold", "removed", d.functionsCold, (f) => f);
      list("target changed", "", d.targetsChanged, (t) => `${t.caller} +${t.offset}: ${t.from} → ${t.to}`);
      const shown = rows.length, all = (c.becameHot || 0) + (c.becameCold || 0) + (c.functionsHot || 0) + (c.functionsCold || 0) + (c.targetsChanged || 0);
      out.classList.remove("muted");
      out.innerHTML = `<p id="diff-summary">${d.same ? "The compiler takes the same decisions from both." : "The decisions differ."}
        Call sites that became hot: <b data-count="becameHot">${c.becameHot}</b>, cold: <b data-count="becameCold">${c.becameCold}</b>;
        functions that became hot: <b data-count="functionsHot">${c.functionsHot}</b>, cold: <b data-count="functionsCold">${c.functionsCold}</b>;
        devirtualization targets changed: <b data-count="targetsChanged">${c.targetsChanged}</b>
        (call sites new: ${d.sitesAdded}, gone: ${d.sitesRemoved}); total weight ${d.totalWeight[0]} → ${d.totalWeight[1]}.</p>
        ${shown ? `<div class="scroll"><table id="diff-table"><thead><tr><th>change</th><th>what</th></tr></thead><tbody>${rows.join("")}</tbody></table></div>` : ""}
        ${all > shown ? `<p class="muted">… and ${all - shown} more (<code>/diff?limit=0</code> lists them all)</p>` : ""}`;
      out.dataset.ready = "1";
    };
  }

  // ---- routing ------------------------------------------------------------------------------

  async function route() {
    const { path, w } = parseHash();
    const m = path.match(/^\/app\/([^/]+)$/);
    try {
      await loadFeatures();
      if (m) await appPage(decodeURIComponent(m[1]), w);
      else await overview();
    } catch (e) {
      main.innerHTML = `<p class="error">${esc(e && e.message ? e.message : e)}</p>`;
      main.dataset.ready = "error";
    }
  }
  window.addEventListener("hashchange", route);
  route();
})();
