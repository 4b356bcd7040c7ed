// The Azure Service Bus peer of the tests. There is no Service Bus emulator that runs here (the
// official one is a Docker image needing SQL Server), so this is a small server written from the
// Service Bus REST API reference (node stdlib only), which checks what it is sent:
//  - every request needs a SAS token ("SharedAccessSignature sr=&sig=&se=&skn=") signed with the
//    namespace key over the URL-encoded resource and the expiry; a wrong signature, an unknown
//    key name, an expired token or a resource that does not cover the URL is a 401;
//  - entities: PUT /{queue|topic} and PUT /{topic}/subscriptions/{sub} with an Atom entry
//    (LockDuration as ISO 8601 seconds "PT5S", MaxDeliveryCount) create them; GET returns them;
//  - POST /{entity}/messages sends (BrokerProperties: MessageId, PartitionKey), fanning a topic's
//    messages out to its subscriptions;
//  - POST .../messages/head?timeout=N peek-locks (long poll up to N seconds; 204 when nothing
//    came): 201 with BrokerProperties (DeliveryCount, LockToken, LockedUntilUtc, MessageId,
//    SequenceNumber, PartitionKey) and a Location naming the lock;
//  - DELETE <Location> completes, PUT abandons, POST renews the lock; a lost lock is a 404;
//  - a message whose DeliveryCount passed MaxDeliveryCount moves to <entity>/$DeadLetterQueue.
// usage: node servicebus-fake.mjs <port file>   (listens on 127.0.0.1, random port)
// env: SB_KEY_NAME, SB_KEY (the namespace's shared access key)
import crypto from 'crypto';
import fs from 'fs';
import http from 'http';

const portFile = process.argv[2];
const KEY_NAME = process.env.SB_KEY_NAME || 'RootManageSharedAccessKey';
const KEY = process.env.SB_KEY || 'test-key';

const entities = new Map(); // path ("/q", "/t/subscriptions/s", "/q/$DeadLetterQueue") -> entity
let sequence = 0;

function entity(path, opts = {}) {
  const e = { path, kind: opts.kind || 'queue', lockMs: opts.lockMs || 60000,
    maxDelivery: opts.maxDelivery || 10, messages: [], waiters: [], subscriptions: [] };
  entities.set(path, e);
  if (e.kind !== 'topic' && !path.endsWith('/$DeadLetterQueue')) {
    entity(`${path}/$DeadLetterQueue`, { kind: 'queue' });
  }
  return e;
}

function deny(res, why) {
  res.writeHead(401, { 'content-type': 'application/xml' });
  res.end(`<Error><Code>401</Code><Detail>${why}</Detail></Error>`);
}

// Checks the SAS token against the namespace key and the request URL.
function authorized(req, res, host) {
  const h = req.headers.authorization || '';
  const m = h.match(/^SharedAccessSignature (.*)$/);
  if (!m) return deny(res, 'no SharedAccessSignature authorization'), false;
  const p = Object.fromEntries(m[1].split('&').map((kv) => {
    const i = kv.indexOf('=');
    return [kv.slice(0, i), kv.slice(i + 1)];
  }));
  if (!p.sr || !p.sig || !p.se || !p.skn) return deny(res, 'token lacks sr, sig, se or skn'), false;
  if (decodeURIComponent(p.skn) !== KEY_NAME) return deny(res, 'unknown key name'), false;
  const expected = crypto.createHmac('sha256', KEY).update(`${p.sr}\n${p.se}`).digest('base64');
  if (decodeURIComponent(p.sig) !== expected) return deny(res, 'signature does not match'), false;
  if (Number(p.se) < Date.now() / 1000) return deny(res, 'token expired'), false;
  const resource = decodeURIComponent(p.sr).toLowerCase();
  const target = `http://${host}${decodeURIComponent(req.url.split('?')[0])}`.toLowerCase();
  if (!target.startsWith(resource)) return deny(res, `token for ${resource} does not cover ${target}`), false;
  return true;
}

function available(e, now) {
  return e.messages.find((m) => !m.lockToken || m.lockedUntil <= now);
}

// Takes the next message for a peek-lock, dead-lettering those delivered too often.
function lockNext(e) {
  const now = Date.now();
  for (;;) {
    const m = available(e, now);
    if (!m) return null;
    if (m.deliveryCount >= e.maxDelivery) {
      e.messages = e.messages.filter((x) => x !== m);
      const dlq = entities.get(`${e.path}/$DeadLetterQueue`);
      delete m.lockToken;
      if (dlq) dlq.messages.push(m);
      continue;
    }
    m.deliveryCount += 1;
    m.lockToken = crypto.randomUUID();
    m.lockedUntil = now + e.lockMs;
    return m;
  }
}

function wake(e) {
  const waiters = e.waiters;
  e.waiters = [];
  for (const w of waiters) w();
}

function enqueue(e, m) {
  e.messages.push(m);
  wake(e);
}

function sendLocked(res, e, m, host) {
  const props = {
    DeliveryCount: m.deliveryCount, LockToken: m.lockToken, LockedUntilUtc: new Date(m.lockedUntil).toUTCString(),
    MessageId: m.messageId, SequenceNumber: m.sequenceNumber, EnqueuedTimeUtc: new Date(m.enqueued).toUTCString(),
  };
  if (m.partitionKey !== undefined) props.PartitionKey = m.partitionKey;
  res.writeHead(201, {
    'content-type': m.contentType || 'application/octet-stream',
    brokerproperties: JSON.stringify(props),
    location: `http://${host}${e.path}/messages/${m.sequenceNumber}/${m.lockToken}`,
  });
  res.end(m.body);
}

function atomEntry(e) {
  return `<entry xmlns="http://www.w3.org/2005/Atom"><title>${e.path}</title><content type="application/xml">`
    + `<Description><LockDuration>PT${Math.round(e.lockMs / 1000)}S</LockDuration>`
    + `<MaxDeliveryCount>${e.maxDelivery}</MaxDeliveryCount></Description></content></entry>`;
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const host = req.headers.host;
    if (!authorized(req, res, host)) return;
    const u = new URL(req.url, `http://${host}`);
    const path = decodeURIComponent(u.pathname);
    let m;
    // a locked message: <entity>/messages/<seq>/<lock>
    if ((m = path.match(/^(.*)\/messages\/(\d+)\/([0-9a-f-]+)$/))) {
      const e = entities.get(m[1]);
      const msg = e && e.messages.find((x) => String(x.sequenceNumber) === m[2] && x.lockToken === m[3]
        && x.lockedUntil > Date.now());
      if (!msg) {
        res.writeHead(404);
        return res.end('<Error><Code>404</Code><Detail>message not found or its lock was lost</Detail></Error>');
      }
      if (req.method === 'DELETE') {
        e.messages = e.messages.filter((x) => x !== msg);
      } else if (req.method === 'PUT') {
        delete msg.lockToken;
        wake(e);
      } else if (req.method === 'POST') {
        msg.lockedUntil = Date.now() + e.lockMs;
        res.setHeader('brokerproperties', JSON.stringify({ LockedUntilUtc: new Date(msg.lockedUntil).toUTCString() }));
      } else {
        res.writeHead(405);
        return res.end();
      }
      res.writeHead(200);
      return res.end();
    }
    if ((m = path.match(/^(.*)\/messages\/head$/)) && req.method === 'POST') {
      const e = entities.get(m[1]);
      if (!e || e.kind === 'topic') {
        res.writeHead(404);
        return res.end('<Error><Code>404</Code><Detail>no such queue or subscription</Detail></Error>');
      }
      const deadline = Date.now() + Number(u.searchParams.get('timeout') || 60) * 1000;
      const attempt = () => {
        if (res.writableEnded || req.socket.destroyed) return; // the client gave up: lock nothing
        const msg = lockNext(e);
        if (msg) return sendLocked(res, e, msg, host);
        const left = deadline - Date.now();
        if (left <= 0) {
          res.writeHead(204);
          return res.end();
        }
        // wake on a new or abandoned message, or when a lock may have expired
        const t = setTimeout(() => { e.waiters = e.waiters.filter((w) => w !== again); attempt(); },
          Math.min(left, 200));
        const again = () => { clearTimeout(t); attempt(); };
        e.waiters.push(again);
      };
      return attempt();
    }
    if ((m = path.match(/^(.*)\/messages$/)) && req.method === 'POST') {
      const e = entities.get(m[1]);
      if (!e) {
        res.writeHead(404);
        return res.end('<Error><Code>404</Code><Detail>no such queue or topic</Detail></Error>');
      }
      let props = {};
      if (req.headers.brokerproperties) {
        try { props = JSON.parse(req.headers.brokerproperties); } catch {
          res.writeHead(400);
          return res.end('<Error><Code>400</Code><Detail>BrokerProperties is not JSON</Detail></Error>');
        }
      }
      const proto = {
        body, contentType: req.headers['content-type'], partitionKey: props.PartitionKey,
        messageId: props.MessageId || crypto.randomUUID(), deliveryCount: 0, enqueued: Date.now(),
      };
      const targets = e.kind === 'topic' ? e.subscriptions.map((s) => entities.get(s)) : [e];
      for (const t of targets) enqueue(t, { ...proto, sequenceNumber: ++sequence });
      res.writeHead(201);
      return res.end();
    }
    if (req.method === 'PUT') {
      const text = body.toString();
      const lock = text.match(/<LockDuration>PT(\d+)S<\/LockDuration>/);
      const max = text.match(/<MaxDeliveryCount>(\d+)<\/MaxDeliveryCount>/);
      const opts = { lockMs: lock ? Number(lock[1]) * 1000 : 60000, maxDelivery: max ? Number(max[1]) : 10 };
      if ((m = path.match(/^(\/[^/]+)\/subscriptions\/([^/]+)$/))) {
        const topic = entities.get(m[1]);
        if (!topic || topic.kind !== 'topic') { res.writeHead(404); return res.end(); }
        entity(path, { ...opts, kind: 'subscription' });
        topic.subscriptions.push(path);
      } else if (/^\/[^/]+$/.test(path)) {
        entity(path, { ...opts, kind: text.includes('<TopicDescription') ? 'topic' : 'queue' });
      } else {
        res.writeHead(400);
        return res.end();
      }
      res.writeHead(201, { 'content-type': 'application/atom+xml' });
      return res.end(atomEntry(entities.get(path)));
    }
    if (req.method === 'GET') {
      const e = entities.get(path);
      if (!e) { res.writeHead(404); return res.end(); }
      res.writeHead(200, { 'content-type': 'application/atom+xml' });
      return res.end(atomEntry(e));
    }
    res.writeHead(405);
    return res.end();
  });
});

server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(portFile, `${server.address().port}\n`);
  console.log(`servicebus fake listening on 127.0.0.1:${server.address().port}`);
});
