// MQTT.js (the npm package mqtt) as a client of mgate's WebSocket listeners,
// driven by tests/integration/test_ws_js.py.
//
//   node client.mjs '<json spec>'
//
// prints one JSON line with what happened and exits 0 (the Python test judges
// it; a crash exits 1). The spec:
//   mode      "pubsub":  a subscriber and a publisher; for each QoS in qos,
//                        subscribe to <topic>/q<QoS>, publish n messages
//                        ("0".."n-1", at most 10 unacknowledged at a time:
//                        mosquitto 2.0.11 drops 3.1.1 QoS 2 beyond 20 in
//                        flight), collect what the subscriber gets
//             "connect": one CONNECT; the CONNACK code (0) or the refusal's
//                        code, or the transport error
//             "refusals": subscribe to [topic, forbidden], publish to the
//                        forbidden topic at QoS 1, then to topic: the SUBACK
//                        codes, the PUBACK's error code, what came back
//   url       ws://... or wss://...
//   version   MQTT protocol level: 4 (3.1.1) or 5
//   id        client id (pubsub: the prefix of two ids, -sub and -pub)
//   topic, qos (list), n, timeout (ms for each wait)
//   username, password
//   ca, cert, key  PEM file paths for wss (the server's CA; a client certificate)
//   origin    an Origin header to send (node sends none unless told)
import { readFileSync } from 'node:fs';
import mqtt from 'mqtt';

const spec = JSON.parse(process.argv[2] ?? '{}');
const timeout = spec.timeout ?? 10000;

function options(id) {
  const o = {
    clientId: id,
    protocolVersion: spec.version ?? 4,
    reconnectPeriod: 0, // a refused or failed connection is an answer, not something to retry
    connectTimeout: timeout,
    clean: true,
  };
  if (spec.username !== undefined) o.username = spec.username;
  if (spec.password !== undefined) o.password = spec.password;
  for (const k of ['ca', 'cert', 'key']) if (spec[k]) o[k] = readFileSync(spec[k]);
  if (spec.url.startsWith('wss:')) o.rejectUnauthorized = true;
  if (spec.origin) o.wsOptions = { origin: spec.origin };
  return o;
}

function errorOf(e) {
  return { error: String(e?.message ?? e), code: e?.code ?? null };
}

function withTimeout(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing in ${timeout} ms`)), timeout);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Resolves when pred() is true (checked on every message), or after timeout.
function waitFor(client, pred) {
  return new Promise((resolve) => {
    if (pred()) return resolve(true);
    const timer = setTimeout(() => {
      client.removeListener('message', check);
      resolve(false);
    }, timeout);
    function check() {
      if (pred()) {
        clearTimeout(timer);
        client.removeListener('message', check);
        resolve(true);
      }
    }
    client.on('message', check);
  });
}

async function pubsub() {
  const t0 = performance.now();
  const sub = await mqtt.connectAsync(spec.url, options(`${spec.id}-sub`));
  const pub = await mqtt.connectAsync(spec.url, options(`${spec.id}-pub`));
  const out = { connect_ms: Math.round(performance.now() - t0), results: [] };
  const got = {};
  sub.on('message', (topic, payload) => (got[topic] ??= []).push(Number(payload.toString())));
  try {
    for (const qos of spec.qos) {
      const topic = `${spec.topic}/q${qos}`;
      const t1 = performance.now();
      const granted = (await withTimeout(sub.subscribeAsync(topic, { qos }), 'SUBACK')).map((g) => g.qos);
      got[topic] = [];
      for (let i = 0; i < spec.n; i += 10) {
        const window = [];
        for (let j = i; j < Math.min(i + 10, spec.n); j++) window.push(pub.publishAsync(topic, String(j), { qos }));
        await withTimeout(Promise.all(window), `publish at QoS ${qos}`);
      }
      const all = await waitFor(sub, () => got[topic].length >= spec.n);
      if (all) await new Promise((r) => setTimeout(r, 50)); // time for a duplicate to show
      out.results.push({ qos, granted, received: got[topic], ms: Math.round(performance.now() - t1) });
    }
  } finally {
    await Promise.allSettled([sub.endAsync(), pub.endAsync()]);
  }
  return out;
}

async function connect() {
  const c = await mqtt.connectAsync(spec.url, options(spec.id));
  await c.endAsync();
  return { connack: 0 };
}

async function refusals() {
  const c = await mqtt.connectAsync(spec.url, options(spec.id));
  const forbidden = `${spec.topic}/forbidden`;
  const got = [];
  c.on('message', (topic, payload) => got.push([topic, payload.toString()]));
  try {
    // The callback form: subscribeAsync rejects when any code is a refusal and gives no codes.
    const filters = [spec.topic, forbidden];
    const suback = await withTimeout(new Promise((resolve) => {
      c.subscribe(Object.fromEntries(filters.map((f) => [f, { qos: 1 }])), (err, subs, packet) =>
        resolve({ err, packet }));
    }), 'SUBACK');
    const codes = suback.packet?.granted ?? [];
    const out = {
      granted: Object.fromEntries(filters.map((f, i) => [f, codes[i] ?? null])),
      subscribe_error: suback.err ? String(suback.err.message) : null,
    };
    // 3.1.1 has no refusal code: mgate closes the connection, and MQTT.js (which keeps the
    // message for a reconnection) only says so with 'close'.
    const closed = new Promise((resolve) => c.once('close', () => resolve('closed')));
    try {
      const how = await withTimeout(Promise.race([c.publishAsync(forbidden, 'refused', { qos: 1 }), closed]),
        'PUBACK');
      out.publish = how === 'closed' ? { closed: true } : { ok: true };
    } catch (e) {
      out.publish = errorOf(e);
    }
    if (out.publish.closed) return out;
    await withTimeout(c.publishAsync(spec.topic, 'marker', { qos: 1 }), 'PUBACK of the marker');
    await waitFor(c, () => got.some(([, p]) => p === 'marker'));
    out.received = got;
    return out;
  } finally {
    await c.endAsync(true);
  }
}

const modes = { pubsub, connect, refusals };
let result;
try {
  result = await modes[spec.mode]();
} catch (e) {
  result = errorOf(e);
}
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
