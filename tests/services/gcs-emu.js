// Launcher for the Firebase Storage emulator (npm firebase-tools 15.34.2) as a stand-in for the
// Google Cloud Storage JSON API, run by tests/services/gcs.sh. Two additions, both following the
// GCS documentation, because the emulator lacks them and the store contract depends on them:
//  - generation preconditions (ifGenerationMatch / ifGenerationNotMatch on uploads, deletes and
//    reads; 0 means "does not exist"), answered with GCS's 412 conditionNotMet error, with writes
//    to one object serialised so a check and its write cannot interleave;
//  - distinct generations for successive writes (the emulator uses Date.now(), so two writes in
//    one millisecond would share a generation).
// The Java rules runtime (downloaded from the internet by default) is not started; the JSON API
// uses the emulator's admin storage layer, which needs no rules.
"use strict";
const path = require("path");

const npm = process.env.AUTOPGO_NPM_DIR;
if (!npm) {
  console.error("gcs-emu.js: AUTOPGO_NPM_DIR must point at the npm prefix holding firebase-tools");
  process.exit(2);
}
const mod = (p) => require(path.join(npm, "node_modules", p));
const express = mod("express");
const storageDir = "firebase-tools/lib/emulator/storage";
const { StorageEmulator } = mod(storageDir);
const server = mod(storageDir + "/server");
const { EmulatorRegistry } = mod("firebase-tools/lib/emulator/registry");

const port = Number(process.env.GCS_PORT || 9199);

function conditionNotMet(res) {
  res.status(412).json({
    error: {
      code: 412,
      message: "At least one of the pre-conditions you specified did not hold.",
      errors: [{ domain: "global", reason: "conditionNotMet", message: "Precondition Failed",
        locationType: "header", location: "If-Match" }],
    },
  });
}

// Which object a request addresses, or undefined when it does not address one we guard.
function target(req) {
  let m = req.path.match(/^\/upload\/storage\/v1\/b\/([^/]+)\/o\/?$/);
  if (m && (req.method === "POST" || req.method === "PUT") && typeof req.query.name === "string") {
    return { bucket: decodeURIComponent(m[1]), name: req.query.name, write: true };
  }
  m = req.path.match(/^\/(?:storage\/v1\/)?b\/([^/]+)\/o\/(.+)$/);
  if (m && (req.method === "DELETE" || req.method === "GET" || req.method === "PATCH")) {
    return { bucket: decodeURIComponent(m[1]), name: decodeURIComponent(m[2]), write: req.method !== "GET" };
  }
  return undefined;
}

function preconditions(emu) {
  const locks = new Map(); // "bucket/name" -> tail of the queue of writers
  return (req, res, next) => {
    const t = target(req);
    if (!t) return next();
    const key = `${t.bucket}/${t.name}`;
    const run = async () => {
      const md = emu.adminStorageLayer.getMetadata(t.bucket, t.name);
      const current = md ? String(md.generation) : "0";
      const match = req.query.ifGenerationMatch;
      const notMatch = req.query.ifGenerationNotMatch;
      if (match !== undefined && String(match) !== current) return conditionNotMet(res);
      if (notMatch !== undefined && String(notMatch) === current) return conditionNotMet(res);
      if (t.write && md) {
        // the next generation (Date.now() at write time) must differ from this one
        while (Date.now() <= Number(md.generation)) await new Promise((r) => setTimeout(r, 1));
      }
      return next();
    };
    if (!t.write) return run().catch(next);
    const prev = locks.get(key) || Promise.resolve();
    let release;
    const mine = new Promise((r) => { release = r; });
    const tail = prev.then(() => mine);
    locks.set(key, tail);
    res.on("close", () => {
      release();
      if (locks.get(key) === tail) locks.delete(key);
    });
    prev.then(run).catch(next);
  };
}

const createApp = server.createApp;
server.createApp = async (projectId, emulator) => {
  const inner = await createApp(projectId, emulator);
  const outer = express();
  outer.use(preconditions(emulator));
  outer.use(inner);
  return outer;
};

const emu = new StorageEmulator({ projectId: "demo-test", host: "127.0.0.1", port, auto_download: false, rules: [] });
emu._rulesRuntime.start = async () => {};
emu._rulesManager.start = async () => {};
EmulatorRegistry.start(emu)
  .then(() => console.log(`gcs emulator listening on 127.0.0.1:${port}`))
  .catch((e) => { console.error(e); process.exit(1); });
