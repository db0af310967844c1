#!/usr/bin/env node
// A places proxy herd server in Node.js, `net` and `http` only, no framework: the "equally
// efficient" alternative the seed reports name next to Twisted.
//
// Same command line shape, topology file and protocol as proxy-herd (SPEC sections 1-3):
//
//   node herd.js NAME --topology FILE [--places-url URL] [--places-key-file FILE]
//                [--places-timeout SECS] [--log-dir DIR] [--log-level LEVEL] [--max-line BYTES]
//
// - net.createServer (allowHalfOpen, so a client that half-closes still gets its replies)
//   serves clients and neighbours alike (an AT line is just a command);
// - a persistent link per neighbour, reconnecting with backoff, sending everything known
//   when it (re)connects;
// - WHATSAT asks Google's legacy Nearby Search with http.get (plain http:// only: the
//   benchmarks point it at a local stub); replies on a connection leave in request order;
// - the log is an fs write stream (Node buffers it and writes in the background).
// The key comes from GOOGLE_PLACES_API_KEY or --places-key-file, never the command line.
'use strict';

const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');

const LOCATION_RE = /^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)$/;
const TIME_RE = /^(\d+)(?:\.(\d{1,9}))?$/;
const RADIUS_RE = /^\d+(?:\.\d+)?$/;
const DIFF_RE = /^[+-]\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$/;
const BOUND_RE = /^\d{1,3}$/;

// --- the protocol ---------------------------------------------------------------------------

/** Client time as exact integer nanoseconds (a BigInt), or null if malformed. */
function parseTime(t) {
  const m = TIME_RE.exec(t);
  if (!m) return null;
  return BigInt(m[1]) * 1000000000n + BigInt((m[2] || '').padEnd(9, '0'));
}

/** [lat, lng] when well formed and in range, else null. */
function parseLocation(loc) {
  const m = LOCATION_RE.exec(loc);
  if (!m) return null;
  const lat = Number(m[1]);
  const lng = Number(m[2]);
  return lat >= -90 && lat <= 90 && lng >= -180 && lng <= 180 ? [lat, lng] : null;
}

function formatDiff(ns) {
  const sign = ns < 0n ? '-' : '+';
  const a = ns < 0n ? -ns : ns;
  return `${sign}${a / 1000000000n}.${(a % 1000000000n).toString().padStart(9, '0')}`;
}

function nowNs() {
  // The wall clock to the microsecond (what JavaScript's clocks give).
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
}

// --- JSON laid out the way Google prints it, number literals kept as received ---------------

// Sticky (`y`): they match at `lastIndex` only, so no token costs a copy of the rest.
const STRING_RE = /"(?:[^"\\]|\\.)*"/y;
const SCALAR_RE = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null/y;

/** A JSON parser that keeps numbers as their literal text ({num: '34.0689300'}). */
function parseJson(text) {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\r\n'.includes(text[i])) i++;
  };
  const fail = () => {
    throw new Error(`bad JSON at offset ${i}`);
  };
  const value = () => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const obj = new Map();
      ws();
      if (text[i] === '}') {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail();
        const k = string();
        ws();
        if (text[i++] !== ':') fail();
        obj.set(k, value());
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === '}') {
          i++;
          return obj;
        } else fail();
      }
    }
    if (c === '[') {
      i++;
      const arr = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value());
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === ']') {
          i++;
          return arr;
        } else fail();
      }
    }
    if (c === '"') return string();
    SCALAR_RE.lastIndex = i;
    const m = SCALAR_RE.exec(text);
    if (!m) fail();
    i += m[0].length;
    return m[0] === 'true' ? true : m[0] === 'false' ? false : m[0] === 'null' ? null : { num: m[0] };
  };
  const string = () => {
    STRING_RE.lastIndex = i;
    const m = STRING_RE.exec(text);
    if (!m) fail();
    i += m[0].length;
    return JSON.parse(m[0]);
  };
  const v = value();
  ws();
  if (i !== text.length) fail();
  return v;
}

function isScalar(v) {
  return !(v instanceof Map) && !Array.isArray(v);
}

function googleJson(v, indent = 0) {
  const pad = ' '.repeat(indent);
  if (v instanceof Map) {
    if (v.size === 0) return '{}';
    const items = [...v].map(([k, x]) => `${pad}   ${JSON.stringify(k)} : ${googleJson(x, indent + 3)}`);
    return `{\n${items.join(',\n')}\n${pad}}`;
  }
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    if (v.every(isScalar)) return `[ ${v.map((x) => googleJson(x)).join(', ')} ]`;
    const items = v.map((x) => `${pad}   ${googleJson(x, indent + 3)}`);
    return `[\n${items.join(',\n')}\n${pad}]`;
  }
  if (v !== null && typeof v === 'object') return v.num;
  return JSON.stringify(v);
}

function errorJson(why) {
  return googleJson(
    new Map([
      ['error_message', why],
      ['html_attributions', []],
      ['results', []],
      ['status', 'UNKNOWN_ERROR'],
    ]),
  );
}

function squeezeNewlines(text) {
  return text.replace(/\n{2,}/g, '\n').replace(/\n+$/, '');
}

// --- command line, topology, log -----------------------------------------------------------

function die(msg) {
  process.stderr.write(`herd.js: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const o = {
    name: '',
    topology: 'topology.txt',
    placesUrl: 'https://maps.googleapis.com',
    keyFile: null,
    timeout: 10,
    logDir: 'logs',
    logLevel: 'info',
    maxLine: 64 * 1024,
  };
  const usage = () => {
    process.stderr.write(
      'usage: node herd.js NAME --topology FILE [--places-url URL] [--places-key-file FILE] ' +
        '[--places-timeout SECS] [--log-dir DIR] [--log-level LEVEL] [--max-line BYTES]\n',
    );
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : usage());
    if (a === '--topology') o.topology = value();
    else if (a === '--places-url') o.placesUrl = value();
    else if (a === '--places-key-file') o.keyFile = value();
    else if (a === '--places-timeout') o.timeout = Number(value());
    else if (a === '--log-dir') o.logDir = value();
    else if (a === '--log-level') o.logLevel = value();
    else if (a === '--max-line') o.maxLine = Number(value());
    // Accepted for command-line compatibility with proxy-herd; this herd has one way each.
    else if (['--places', '--links', '--workers'].includes(a)) value();
    else if (a.startsWith('--') || o.name) usage();
    else o.name = a;
  }
  if (!o.name || !(o.timeout > 0) || !(o.maxLine > 0)) usage();
  return o;
}

/** {servers: Map name -> [host, port], links: [[a, b], ...]}; exits naming the file and line. */
function readTopology(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    die(`${file}: ${e.message}`);
  }
  const servers = new Map();
  const named = [];
  text.split('\n').forEach((raw, n) => {
    const f = raw.split('#')[0].split(/\s+/).filter(Boolean);
    if (f.length === 0) return;
    const at = (msg) => die(`${file}:${n + 1}: ${msg}`);
    if (f.length < 2) at(`${f[0]} has no address`);
    if (servers.has(f[0])) at(`duplicate server ${f[0]}`);
    const m = /^(.+):(\d+)$/.exec(f[1]);
    if (!m || Number(m[2]) > 65535) at(`bad address ${f[1]}`);
    servers.set(f[0], [m[1], Number(m[2])]);
    for (const nb of f.slice(2)) {
      if (nb === f[0]) at(`${nb} is linked to itself`);
      named.push([n + 1, f[0], nb]);
    }
  });
  const links = [];
  for (const [n, a, b] of named) {
    if (!servers.has(b)) die(`${file}:${n}: unknown neighbour ${b}`);
    links.push([a, b]);
  }
  return { servers, links };
}

const opts = parseArgs(process.argv.slice(2));
let logStream = null;
if (opts.logLevel.toLowerCase() !== 'off') {
  try {
    fs.mkdirSync(opts.logDir, { recursive: true });
  } catch (e) {
    die(`${opts.logDir}: ${e.message}`);
  }
  logStream = fs.createWriteStream(path.join(opts.logDir, `${opts.name}.log`), { flags: 'a' });
}
function log(msg) {
  if (logStream) logStream.write(`${new Date().toISOString()} INFO ${msg}\n`);
}

// --- the herd ------------------------------------------------------------------------------

const { servers, links } = readTopology(opts.topology);
if (!servers.has(opts.name)) die(`${opts.topology}: no server named ${opts.name}`);
const neighbours = new Map();
for (const [a, b] of links) {
  if (a === opts.name) neighbours.set(b, servers.get(b));
  if (b === opts.name) neighbours.set(a, servers.get(a));
}
let key = process.env.GOOGLE_PLACES_API_KEY;
if (!key && opts.keyFile) key = fs.readFileSync(opts.keyFile, 'utf8').trim();

const records = new Map(); // client id -> [time ns (BigInt), AT line]
const linkSockets = new Map(); // neighbour -> socket while the link is up

/** Stores a newer location and floods it; false if it was not newer. */
function learn(client, timeNs, line) {
  const known = records.get(client);
  if (known && known[0] >= timeNs) return false;
  records.set(client, [timeNs, line]);
  for (const [n, sock] of linkSockets) {
    log(`to ${n}: ${line}`);
    sock.write(`${line}\n`);
  }
  return true;
}

/** Keeps a persistent link to one neighbour open, forever. */
function link(name, backoffMs = 50) {
  const [host, port] = neighbours.get(name);
  const sock = net.connect({ host, port });
  sock.setNoDelay(true);
  let up = false;
  sock.on('connect', () => {
    up = true;
    log(`link to ${name} up`);
    linkSockets.set(name, sock);
    // While the link was down, lines were dropped: the snapshot has them.
    const lines = [...records.values()].map(([, l]) => `${l}\n`);
    if (lines.length) sock.write(lines.join(''));
  });
  sock.on('data', () => {}); // neighbours never answer AT lines
  sock.on('error', (e) => log(`${up ? 'link to' : 'connect to'} ${name} failed: ${e.message}`));
  sock.on('close', () => {
    if (linkSockets.get(name) === sock) linkSockets.delete(name);
    if (up) log(`link to ${name} dropped`);
    const next = up ? 50 : Math.min(backoffMs * 2, 2000);
    setTimeout(() => link(name, next), up ? 0 : backoffMs);
  });
}

/** The JSON part of a WHATSAT reply; never rejects. */
function nearby(lat, lng, radiusKm, bound) {
  return new Promise((resolve) => {
    let url;
    try {
      url = new URL(opts.placesUrl);
    } catch (e) {
      return resolve(errorJson(`bad places URL ${opts.placesUrl}`));
    }
    if (url.protocol !== 'http:') {
      return resolve(errorJson(`only http:// base URLs are supported, not ${opts.placesUrl}`));
    }
    if (!key) return resolve(errorJson('no API key (GOOGLE_PLACES_API_KEY or --places-key-file)'));
    const query = new URLSearchParams({
      location: `${lat},${lng}`,
      radius: String(Math.round(radiusKm * 1000)),
      key,
    });
    const p = `${url.pathname.replace(/\/+$/, '')}/maps/api/place/nearbysearch/json?${query}`;
    log(`place lookup at ${lat},${lng} radius ${radiusKm} km`);
    const req = http.get(
      { host: url.hostname, port: url.port || 80, path: p, headers: { Accept: 'application/json' } },
      (res) => {
        const chunks = [];
        let size = 0;
        res.on('data', (c) => {
          size += c.length;
          if (size > 4 << 20) req.destroy(new Error('the place provider sent too much'));
          else chunks.push(c);
        });
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 200 && !body.startsWith('{')) {
            return resolve(errorJson(`the place lookup failed: HTTP ${res.statusCode}`));
          }
          try {
            const v = parseJson(body);
            if (!(v instanceof Map)) throw new Error('not a JSON object');
            const results = v.get('results');
            if (Array.isArray(results)) v.set('results', results.slice(0, bound));
            resolve(googleJson(v));
          } catch (e) {
            resolve(errorJson(`the place lookup failed: ${e.message}`));
          }
        });
        res.on('error', (e) => resolve(errorJson(`the place lookup failed: ${e.message}`)));
      },
    );
    req.setTimeout(opts.timeout * 1000, () => {
      req.destroy();
      resolve(errorJson('the place lookup timed out'));
    });
    req.on('error', (e) => resolve(errorJson(`the place lookup failed: ${e.message}`)));
  });
}

/** Acts on one line; returns its reply (a string or a Promise of one) or null. */
function handle(line) {
  const received = nowNs();
  const f = line.split(/[ \t\r\n\f\v]+/).filter(Boolean);
  const invalid = `? ${line}\n`;
  if (f.length === 4 && f[0] === 'IAMAT') {
    const t = parseTime(f[3]);
    if (t === null || !parseLocation(f[2])) return invalid;
    const at = `AT ${opts.name} ${formatDiff(received - t)} ${f[1]} ${f[2]} ${f[3]}`;
    // Flood first, then reply: the flood must beat the client to the next server.
    learn(f[1], t, at);
    return `${at}\n`;
  }
  if (f.length >= 6 && f[0] === 'AT') {
    const t = parseTime(f[5]);
    if (t === null || !parseLocation(f[4]) || !DIFF_RE.test(f[2])) return invalid;
    learn(f[3], t, f.slice(0, 6).join(' '));
    return null;
  }
  if (f.length === 4 && f[0] === 'WHATSAT') {
    if (!RADIUS_RE.test(f[2]) || !BOUND_RE.test(f[3])) return invalid;
    const radius = Number(f[2]);
    const bound = Number(f[3]);
    const known = records.get(f[1]);
    if (!(radius >= 0 && radius <= 50) || bound > 20 || !known) return invalid;
    const [lat, lng] = parseLocation(known[1].split(' ')[4]);
    return nearby(lat, lng, radius, bound).then((json) => `${known[1]}\n${squeezeNewlines(json)}\n\n`);
  }
  return invalid;
}

/** One connection: a client, or a neighbour sending AT lines. */
function serve(sock) {
  const peer = `${sock.remoteAddress}:${sock.remotePort}`;
  log(`new connection ${peer}`);
  sock.setNoDelay(true);
  let buffer = '';
  let inputDone = false;
  const waiting = []; // replies not yet written, in request order: {text} or {text: null}
  const send = (text) => {
    log(`to ${peer}: ${text.replace(/\n+$/, '')}`);
    sock.write(text);
  };
  const writeReady = () => {
    while (waiting.length && waiting[0].text !== null) send(waiting.shift().text);
    if (inputDone && !waiting.length) sock.end();
  };
  const queue = (reply) => {
    if (typeof reply === 'string' && !waiting.length) return send(reply);
    const slot = { text: typeof reply === 'string' ? reply : null };
    waiting.push(slot);
    if (slot.text === null) {
      reply.then((text) => {
        slot.text = text;
        writeReady();
      });
    }
  };
  const onLine = (raw) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line && !line.trim()) return;
    log(`from ${peer}: ${line}`);
    const reply = handle(line);
    if (reply !== null) queue(reply);
  };
  sock.setEncoding('utf8');
  sock.on('data', (chunk) => {
    if (inputDone) return;
    buffer += chunk;
    let nl;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const raw = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      onLine(raw);
    }
    if (buffer.length > opts.maxLine) {
      // Longer than the limit: answer with its start and close.
      queue(`? ${buffer.slice(0, opts.maxLine)}\n`);
      buffer = '';
      inputDone = true;
      writeReady();
    }
  });
  sock.on('end', () => {
    // End of input ends the last, unterminated line; close once every reply is out.
    if (!inputDone && buffer) onLine(buffer);
    buffer = '';
    inputDone = true;
    writeReady();
  });
  sock.on('error', () => {});
  sock.on('close', () => log(`closed connection ${peer}`));
}

const [host, port] = servers.get(opts.name);
const server = net.createServer({ allowHalfOpen: true }, serve);
server.on('error', (e) => die(`listen ${host}:${port}: ${e.message}`));
server.listen({ host, port, backlog: 511 }, () => {
  log(`${opts.name} started on ${host}:${port}`);
  for (const n of neighbours.keys()) link(n);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    log(`${opts.name} stopping`);
    if (logStream) logStream.end(() => process.exit(0));
    else process.exit(0);
  });
}
