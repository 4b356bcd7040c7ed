// The Kubernetes API server part of the recorded-response server: discovery documents (enough
// for kubectl), pod lists across all namespaces or in one (label and field selectors, limit and
// continue, resourceVersion), and pod watches (?watch=true) streaming ADDED, MODIFIED, DELETED,
// BOOKMARK and ERROR 410 events as newline-delimited JSON, with the watch cache's rule that a pod
// that stops matching the selectors is sent as DELETED. Every request must authenticate (bearer
// token, basic auth or a verified client certificate) or gets the API server's 401 Status.
// Pods come from a fixture PodList and change through the control listener.
'use strict';

const sel = require('./selectors');

function status(code, reason, message) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

function create(config, fixtures) {
  let rv = 1000;
  let compacted = 0; // watches from a resourceVersion below this get 410 Gone
  const pods = new Map(); // "ns/name" -> pod
  const history = []; // { rv, type, old, obj }
  const watchers = new Set();

  const keyOf = (p) => `${p.metadata.namespace}/${p.metadata.name}`;
  const clone = (o) => JSON.parse(JSON.stringify(o));

  function put(pod, record = true) {
    pod = clone(pod);
    pod.metadata.namespace = pod.metadata.namespace || 'default';
    rv += 1;
    pod.metadata.resourceVersion = String(rv);
    const k = keyOf(pod);
    const old = pods.get(k);
    if (!pod.metadata.uid) pod.metadata.uid = old ? old.metadata.uid : `uid-${rv}-${k.replace(/[^a-z0-9]/g, '')}`;
    pods.set(k, pod);
    if (record) notify({ rv, type: old ? 'MODIFIED' : 'ADDED', old, obj: pod });
    return pod;
  }

  function remove(ns, name) {
    const k = `${ns}/${name}`;
    const old = pods.get(k);
    if (!old) return null;
    pods.delete(k);
    rv += 1;
    const obj = clone(old);
    obj.metadata.resourceVersion = String(rv);
    notify({ rv, type: 'DELETED', old, obj });
    return obj;
  }

  function notify(ev) {
    history.push(ev);
    for (const w of watchers) w.send(ev);
  }

  ((fixtures && fixtures.items) || []).forEach((p) => put(p, false));
  compacted = rv;

  function authenticate(req, record) {
    const auth = config.auth;
    if (!auth) return true;
    if (req.socket.authorized && record.clientCert) return true;
    const h = req.headers.authorization || '';
    if (h.startsWith('Bearer ') && (auth.tokens || []).includes(h.slice(7))) return true;
    if (h.startsWith('Basic ') && auth.basic && Buffer.from(h.slice(6), 'base64').toString() === auth.basic) return true;
    return false;
  }

  function send(res, code, doc) {
    const body = JSON.stringify(doc);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }

  function discovery(path, port) {
    if (path === '/api') {
      return { kind: 'APIVersions', versions: ['v1'],
        serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `127.0.0.1:${port}` }] };
    }
    if (path === '/apis') return { kind: 'APIGroupList', apiVersion: 'v1', groups: [] };
    if (path === '/api/v1') {
      return { kind: 'APIResourceList', groupVersion: 'v1', resources: [
        { name: 'pods', singularName: 'pod', namespaced: true, kind: 'Pod',
          verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'],
          shortNames: ['po'], categories: ['all'] },
      ] };
    }
    if (path === '/version') {
      return { major: '1', minor: '30', gitVersion: 'v1.30.0', platform: 'linux/amd64' };
    }
    return null;
  }

  function matcher(query, ns) {
    const labels = sel.parseLabels(query.labelSelector);
    const fields = sel.parseFields(query.fieldSelector);
    return (p) => (!ns || p.metadata.namespace === ns) && sel.matchLabels(labels, p.metadata.labels) &&
      sel.matchFields(fields, p);
  }

  function list(query, ns, res) {
    const match = matcher(query, ns);
    const all = [...pods.values()].filter(match).sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : 1));
    let offset = 0;
    let at = rv;
    if (query.continue) {
      try {
        const c = JSON.parse(Buffer.from(query.continue, 'base64').toString());
        offset = c.offset;
        at = c.rv;
      } catch (e) {
        return send(res, 400, status(400, 'BadRequest', 'continue key is not valid: illegal base64 data'));
      }
    }
    const limit = parseInt(query.limit || '0', 10);
    const items = limit > 0 ? all.slice(offset, offset + limit) : all.slice(offset);
    const metadata = { resourceVersion: String(at) };
    if (limit > 0 && offset + limit < all.length) {
      metadata.continue = Buffer.from(JSON.stringify({ offset: offset + limit, rv: at })).toString('base64');
      metadata.remainingItemCount = all.length - offset - limit;
    }
    return send(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata, items });
  }

  function watch(query, ns, req, res) {
    const match = matcher(query, ns);
    const from = query.resourceVersion;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    const line = (type, obj) => {
      const o = clone(obj);
      o.kind = 'Pod';
      o.apiVersion = 'v1';
      res.write(`${JSON.stringify({ type, object: o })}\n`);
    };
    if (from !== undefined && from !== '' && from !== '0' && parseInt(from, 10) < compacted) {
      res.write(`${JSON.stringify({ type: 'ERROR', object: status(410, 'Expired',
        `too old resource version: ${from} (${compacted})`) })}\n`);
      return res.end();
    }
    const w = {
      bookmarks: query.allowWatchBookmarks === 'true',
      send(ev) {
        const was = ev.old ? match(ev.old) : false;
        const is = ev.type !== 'DELETED' && match(ev.obj);
        if (is && !was) line('ADDED', ev.obj);
        else if (is && was) line('MODIFIED', ev.obj);
        else if (!is && was) {
          const gone = clone(ev.type === 'DELETED' ? ev.obj : ev.old);
          gone.metadata.resourceVersion = String(ev.rv);
          line('DELETED', gone);
        }
      },
      bookmark() {
        if (this.bookmarks) {
          res.write(`${JSON.stringify({ type: 'BOOKMARK', object: { kind: 'Pod', apiVersion: 'v1',
            metadata: { resourceVersion: String(rv) } } })}\n`);
        }
      },
      end() { watchers.delete(w); clearTimeout(w.timer); res.end(); },
    };
    if (from === undefined || from === '' || from === '0') {
      [...pods.values()].filter(match).forEach((p) => line('ADDED', p));
    } else {
      const n = parseInt(from, 10);
      history.filter((ev) => ev.rv > n).forEach((ev) => w.send(ev));
    }
    watchers.add(w);
    const timeout = parseInt(query.timeoutSeconds || '0', 10);
    if (timeout > 0) w.timer = setTimeout(() => w.end(), timeout * 1000);
    req.on('close', () => { watchers.delete(w); clearTimeout(w.timer); });
    return undefined;
  }

  function handle(req, res, record, port) {
    const { path, query } = record;
    if (!authenticate(req, record)) return send(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
    const doc = req.method === 'GET' && discovery(path, port);
    if (doc) return send(res, 200, doc);
    const m = /^\/api\/v1(?:\/namespaces\/([^/]+))?\/pods$/.exec(path);
    if (!m) return send(res, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
    if (req.method !== 'GET') return send(res, 405, status(405, 'MethodNotAllowed', `${req.method} is not allowed here`));
    try {
      if (query.watch === 'true' || query.watch === '1') return watch(query, m[1], req, res);
      return list(query, m[1], res);
    } catch (e) {
      if (e instanceof sel.SelectorError) return send(res, 400, status(400, 'BadRequest', e.message));
      throw e;
    }
  }

  // Control: PUT /pods {pod} (add or replace), DELETE /pods/NS/NAME, POST /compact [{rv}] (watches
  // from a resourceVersion below rv, default the next one, get 410), POST /bookmark,
  // POST /close-watches, GET /pods (the pods, the resourceVersion and the open watches).
  function control(method, path, body, res) {
    if (method === 'PUT' && path === '/pods') return send(res, 200, put(body));
    const m = /^\/pods\/([^/]+)\/([^/]+)$/.exec(path);
    if (method === 'DELETE' && m) {
      const gone = remove(m[1], m[2]);
      return gone ? send(res, 200, gone) : send(res, 404, { error: 'no such pod' });
    }
    if (method === 'POST' && path === '/compact') {
      compacted = body && body.rv !== undefined ? body.rv : rv + 1;
      return send(res, 200, { compacted, rv });
    }
    if (method === 'POST' && path === '/bookmark') { watchers.forEach((w) => w.bookmark()); return send(res, 200, { rv }); }
    if (method === 'POST' && path === '/close-watches') {
      const n = watchers.size;
      [...watchers].forEach((w) => w.end());
      return send(res, 200, { closed: n });
    }
    if (method === 'GET' && path === '/pods') return send(res, 200, { rv, watchers: watchers.size, items: [...pods.values()] });
    return false;
  }

  return { handle, control };
}

module.exports = { create };
