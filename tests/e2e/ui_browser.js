// Drives headless Chromium (Debian's /usr/bin/chromium, through npm's playwright-core) over the
// web view for tests/e2e/ui_spec.lua: loads the overview and app pages, reads what they show,
// records every request, console error and timing, and writes screenshots. Prints one JSON object.
// usage: node ui_browser.js BASE_URL OUT_DIR APP [BIG_APP]; with UI_TOKEN in the environment
// only the token prompt is run (against a server with --auth-file); with APP "-" only BIG_APP's
// page is loaded, once (pages.bigCold).
"use strict";
const { chromium } = require("playwright-core");

const [base, outDir, app, bigApp] = process.argv.slice(2);

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"],
  });
  const result = { requests: [], console: [], pages: {}, responses: {} };
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, acceptDownloads: true });
  const page = await context.newPage();
  page.on("request", (r) => result.requests.push(r.url()));
  const onConsole = (m) => {
    if (m.type() === "error" || m.type() === "warning") {
      result.console.push({ type: m.type(), text: m.text(), url: (m.location() || {}).url || "" });
    }
  };
  page.on("console", onConsole);
  page.on("response", (r) => { result.responses[r.url()] = r.status(); });
  page.on("pageerror", (e) => result.console.push({ type: "pageerror", text: e.message, url: "" }));
  page.on("requestfailed", (r) => result.console.push({ type: "requestfailed", text: String(r.failure() && r.failure().errorText), url: r.url() }));

  // With UI_TOKEN (a server with --auth-file): the page asks for the token on the first 401,
  // keeps it in sessionStorage only and sends it as a bearer token from then on.
  if (process.env.UI_TOKEN) {
    const ctx = await browser.newContext({ viewport: { width: 1200, height: 700 } });
    const pg = await ctx.newPage();
    const t = { api: [], console: [] };
    pg.on("request", (r) => {
      result.requests.push(r.url());
      if (r.url().includes("/api/")) t.api.push({ url: r.url(), auth: r.headers().authorization || "" });
    });
    pg.on("console", (m) => { if (m.type() === "error") t.console.push({ text: m.text(), url: (m.location() || {}).url || "" }); });
    pg.on("response", (r) => { result.responses[r.url()] = r.status(); });
    pg.on("pageerror", (e) => result.console.push({ type: "pageerror", text: e.message, url: "" }));
    await pg.goto(base + "/ui/", { waitUntil: "load" });
    await pg.waitForSelector("#token-dialog[open]", { timeout: 30000 });
    t.why = await pg.$eval("#token-why", (e) => e.textContent);
    await pg.screenshot({ path: `${outDir}/ui-token.png` });
    await pg.fill("#token-input", process.env.UI_TOKEN);
    await pg.click("#token-ok");
    await pg.waitForSelector('main[data-ready="overview"]', { timeout: 30000 });
    t.apps = await pg.$$eval("#apps tbody tr[data-app]", (r) => r.map((x) => x.dataset.app));
    t.session = await pg.evaluate(() => sessionStorage.getItem("autopgo.token"));
    t.local = await pg.evaluate(() => localStorage.length);
    t.cookies = (await ctx.cookies()).length;
    result.token = t;
    await ctx.close();
    await browser.close();
    process.stdout.write(JSON.stringify(result) + "\n");
    return;
  }

  // The big app's page in a page of its own: the run's first visit (the server has warmed the new
  // version's views after its merge), or with APP "-" cold (a server that never saw it).
  const loadBig = async () => {
    const p2 = await context.newPage();
    p2.on("request", (r) => result.requests.push(r.url()));
    p2.on("console", onConsole);
    p2.on("pageerror", (e) => result.console.push({ type: "pageerror", text: e.message, url: "" }));
    const t = Date.now();
    await p2.goto(`${base}/ui/#/app/${encodeURIComponent(bigApp)}`, { waitUntil: "load" });
    await p2.waitForSelector('main[data-ready="app"]', { timeout: 60000 });
    await p2.waitForSelector("#flame svg g", { timeout: 60000 });
    const out = { loadMs: Date.now() - t, flameFrames: await p2.$$eval("#flame svg g", (g) => g.length),
      topRows: await p2.$$eval("#top-table tbody tr", (r) => r.length) };
    await p2.waitForSelector("main[data-complete]", { timeout: 120000 });
    out.completeMs = Date.now() - t;
    out.hotRows = await p2.$$eval("#hot-table tbody tr", (r) => r.length);
    out.decisions = await p2.$eval("#decisions-summary", (e) => e.textContent.replace(/\s+/g, " ").trim()).catch(() => "");
    return { page: p2, out };
  };
  if (bigApp) {
    const { page: p2, out } = await loadBig();
    result.pages[app === "-" ? "bigCold" : "bigFirst"] = out;
    await p2.close();
  }
  if (app === "-") {
    await browser.close();
    process.stdout.write(JSON.stringify(result) + "\n");
    return;
  }

  // Overview
  await page.goto(base + "/ui/", { waitUntil: "load" });
  await page.waitForSelector('main[data-ready="overview"]', { timeout: 30000 });
  result.pages.overview = await page.$$eval("#apps tbody tr[data-app]", (rows) => rows.map((r) => {
    const f = (n) => r.querySelector(`[data-field="${n}"]`);
    return { app: r.dataset.app, size: f("size").dataset.value, merged: f("merged").dataset.value,
      uploads24h: f("uploads24h").dataset.value, uploadsSource: f("uploads24h").dataset.source,
      total: f("total").dataset.value, activity: f("activity").textContent.trim() };
  }));
  await page.screenshot({ path: `${outDir}/ui-overview.png`, fullPage: true });

  // App page
  const readApp = async () => ({
    total: await page.$eval('#stats [data-field="total"]', (e) => e.dataset.value).catch(() => null),
    size: await page.$eval('#stats [data-field="size"]', (e) => e.dataset.value).catch(() => null),
    top: await page.$$eval("#top-table tbody tr", (rows) => rows.map((r) => ({ name: r.dataset.name, flat: r.dataset.flat, cum: r.dataset.cum }))),
    flameFrames: await page.$$eval("#flame svg g", (g) => g.length),
    flameTotal: await page.$eval("#flame", (e) => e.dataset.total || null),
    flameText: await page.$eval("#flame", (e) => e.textContent.slice(0, 300)),
    topText: await page.$eval("#top", (e) => e.textContent.slice(0, 300)),
    unavailable: await page.$$eval("[data-unavailable]", (u) => u.map((x) => x.textContent.trim())),
    windowNow: await page.$eval("#window-now", (e) => e.textContent),
  });
  let t0 = Date.now();
  await page.goto(`${base}/ui/#/app/${encodeURIComponent(app)}`, { waitUntil: "load" });
  await page.waitForSelector('main[data-ready="app"]', { timeout: 30000 });
  const appMs = Date.now() - t0;
  await page.waitForSelector("main[data-complete]", { timeout: 60000 });
  result.pages.app = await readApp();
  result.pages.app.loadMs = appMs;
  result.pages.app.completeMs = Date.now() - t0;
  result.pages.app.decisions = await page.$eval("#decisions", (e) => e.textContent.slice(0, 300));
  result.pages.app.hotRows = await page.$$eval("#hot-table tbody tr", (r) => r.length);
  // the download buttons: each format saved from a blob: URL of this origin
  result.pages.app.downloads = {};
  for (const f of ["pprof", "pgo", "preprofile"]) {
    const b = await page.$(`#downloads button[data-format="${f}"]`);
    if (!b || (await b.isDisabled())) continue;
    const [dl] = await Promise.all([page.waitForEvent("download", { timeout: 30000 }), b.click()]);
    const path = `${outDir}/ui-download-${f}`;
    await dl.saveAs(path);
    result.pages.app.downloads[f] = { path, name: dl.suggestedFilename() };
  }
  // search and zoom in the flame graph
  await page.fill("#flame-search", "regexp");
  await page.waitForTimeout(300);
  result.pages.app.searchMatches = await page.$$eval("#flame svg g rect", (rs) => rs.filter((r) => (r.getAttribute("fill") || r.style.fill || "").toLowerCase().includes("e600e6") || (r.getAttribute("fill") || "") === "#E600E6").length);
  await page.screenshot({ path: `${outDir}/ui-app-search.png`, fullPage: true });
  const frames = await page.$$("#flame svg g");
  if (frames.length > 3) await frames[2].click();
  await page.waitForTimeout(600);
  await page.fill("#flame-search", "");
  await page.screenshot({ path: `${outDir}/ui-app.png`, fullPage: true });

  // Window picker: 24 h
  const before = result.requests.length;
  await page.click('#window-picker button[data-w="24h"]');
  await page.waitForFunction(() => location.hash.includes("window=24h") && document.querySelector("main[data-complete]"), null, { timeout: 30000 });
  result.pages.window = await readApp();
  result.pages.window.requests = result.requests.slice(before);
  await page.screenshot({ path: `${outDir}/ui-app-window.png`, fullPage: true });

  // The decisions diff between two windows and between two versions (the oldest two), as the page
  // shows it: the counts and every row.
  const options = await page.$$eval("#diff-a option", (o) => o.map((x) => x.value));
  const versions = options.filter((v) => v.startsWith("to="));
  const pairs = [["window=1h", "window=24h"]];
  if (versions.length >= 2) pairs.push([versions[versions.length - 1], versions[versions.length - 2]]);
  result.pages.diffs = [];
  for (const [a, b] of pairs) {
    await page.selectOption("#diff-a", a);
    await page.selectOption("#diff-b", b);
    await page.click("#diff-go");
    await page.waitForSelector("#diff-out[data-ready]", { timeout: 60000 });
    result.pages.diffs.push({ a, b,
      ready: await page.$eval("#diff-out", (e) => e.dataset.ready),
      text: await page.$eval("#diff-out", (e) => e.textContent.replace(/\s+/g, " ").trim().slice(0, 400)),
      counts: await page.$$eval("#diff-summary [data-count]", (c) => Object.fromEntries(c.map((x) => [x.dataset.count, x.textContent]))),
      rows: await page.$$eval("#diff-table tbody tr", (r) => r.map((x) => ({ kind: x.dataset.kind, what: x.querySelector(".name").textContent }))) });
    await page.screenshot({ path: `${outDir}/ui-app-diff-${result.pages.diffs.length}.png`, fullPage: true });
  }

  if (bigApp) {
    // warm: a fresh page (nothing cached in the browser) once the server has the views
    const { page: p2, out } = await loadBig();
    result.pages.big = out;
    await p2.screenshot({ path: `${outDir}/ui-app-big.png`, fullPage: true });
  }
  await browser.close();
  process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + "\n");
  process.exit(1);
});
