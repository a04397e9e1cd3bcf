// A Node.js process on the jeeves bus, through the control-tower hub (commbus.proto).
//
// Usage: node client.js HOST:PORT PROTO_PATH
// It joins with one Connect stream, subscribes to the "node.ping" events, answers the
// "node.add" query and serves the "node.svc" service, then prints {"event": "ready"}.
// Every JSON line it prints on stdout reports what it received, with the trace id of the
// W3C traceparent that came with it. When a "node.go" event arrives it publishes
// "node.hello" and queries "py.echo" under a trace of its own (NODE_TRACE), and prints the
// answer: the trace id travels both ways.
'use strict';

const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const [address, protoPath] = process.argv.slice(2);
const NODE_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';

const definition = protoLoader.loadSync(protoPath, {
  keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
});
const v1 = grpc.loadPackageDefinition(definition).jeeves.commbus.v1;
const client = new v1.CommBus(address, grpc.credentials.createInsecure());

const say = (event, fields) => process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
const traceId = (headers) => ((headers || {}).traceparent || '').split('-')[1] || null;
const json = (buffer) => JSON.parse(Buffer.from(buffer).toString('utf8'));
const bytes = (value) => Buffer.from(JSON.stringify(value), 'utf8');
const newId = () => crypto.randomBytes(12).toString('hex');

// A wire frame of a DynamicEvent / DynamicQuery (the classes any process can decode).
function frame(pattern, type, payload, extra) {
  const klass = pattern === 'publish' ? 'DynamicEvent' : 'DynamicQuery';
  const body = pattern === 'publish' ? { message_type: type, payload } : { message_type: type, payload, service_name: null };
  return bytes({ v: 1, id: newId(), type, pattern, class: klass, payload: body, ...extra });
}

const stream = client.Connect();
let nextId = 1;
const pending = new Map();

function request(kind, body) {
  const id = nextId++;
  return new Promise((resolve) => {
    pending.set(id, resolve);
    stream.write({ [kind]: { ...body, id } });
  });
}

function answer(delivery) {
  const data = json(delivery.data);
  if (delivery.pattern === 'publish') {
    const events = data.batch || [data];
    for (const event of events) {
      say('event', { type: event.type, payload: event.payload.payload, trace_id: traceId(event.headers) });
      if (event.type === 'node.go') go();
    }
  } else if (delivery.pattern === 'query' && delivery.type === 'node.add') {
    const { a, b } = data.payload.payload;
    say('query', { trace_id: traceId(data.headers) });
    const reply = bytes({ v: 1, corr: data.corr, ok: true, result: a + b });
    stream.write({ response: { id: delivery.id, status: 'OK', data: reply } });
  } else if (delivery.pattern === 'dispatch' && delivery.type === 'node.svc') {
    const envelope = data.envelope;
    envelope.outputs = { ...envelope.outputs, node: 'served by node' };
    say('dispatch', { envelope_id: envelope.envelope_id, trace_id: traceId(data.headers) });
    stream.write({ response: { id: delivery.id, status: 'OK', data: bytes(envelope) } });
  } else {
    stream.write({ response: { id: delivery.id, status: 'NO_HANDLER', message: 'not here' } });
  }
}

async function go() {
  const traceparent = `00-${NODE_TRACE}-${crypto.randomBytes(8).toString('hex')}-01`;
  const headers = { traceparent };
  stream.write({ publish: { type: 'node.hello', pattern: 'publish', data: frame('publish', 'node.hello', { from: 'node' }, { headers }) } });
  const query = frame('query', 'py.echo', { text: 'hi from node' }, { headers, corr: newId(), ttl: 5, ts: Date.now() / 1000 });
  const result = await request('query', { frame: { type: 'py.echo', pattern: 'query', data: query }, timeout: 5 });
  say('reply', { status: result.status, reply: result.data.length ? json(result.data) : null, message: result.message });
}

stream.on('data', (message) => {
  if (message.kind === 'welcome') {
    start();
  } else if (message.kind === 'delivery') {
    answer(message.delivery);
  } else if (message.kind === 'result') {
    const resolve = pending.get(message.result.id);
    pending.delete(message.result.id);
    if (resolve) resolve(message.result);
  } else if (message.kind === 'notice') {
    say('notice', { status: message.notice.status, message: message.notice.message });
  }
});
stream.on('error', (error) => { say('error', { message: error.message }); process.exit(1); });
stream.on('end', () => process.exit(0));

async function start() {
  for (const type of ['node.ping', 'node.go']) {
    await request('subscribe', { pattern: 'publish', type });
  }
  await request('subscribe', { pattern: 'query', type: 'node.add' });
  stream.write({ register_service: { name: 'node.svc', service_type: 'node', max_concurrent: 2 } });
  setInterval(() => stream.write({ heartbeat: { services: [{ name: 'node.svc', healthy: true }] } }), 500).unref();
  say('ready', {});
}

stream.write({ hello: { process_id: `node:${process.pid}:${crypto.randomBytes(3).toString('hex')}` } });
process.on('SIGTERM', () => { stream.end(); process.exit(0); });
