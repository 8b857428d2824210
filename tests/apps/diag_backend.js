// Stand-in for the intranet backend in the diagnose/verify tests (tests/*/test_diagnose*.py,
// test_verify*.py). It does at start what the real backend's queue service does and logs the
// same lines the runbook quotes: reads its .env with npm dotenv (never overriding variables pm2
// passes), then either reports the queue disabled, or connects to REDIS_HOST:REDIS_PORT, AUTHs,
// sends PING and logs the ready lines on PONG or the ECONNREFUSED symptom on failure.
// It serves HTTP on PORT (path /slow answers after SLOW_MS) for the verify probe.
'use strict';
const http = require('http');
const net = require('net');
const path = require('path');

require(path.join(__dirname, '..', 'node', 'node_modules', 'dotenv')).config({ path: process.env.ENV_FILE, quiet: true });

function queue() {
  if (process.env.QUEUE_ENABLED !== 'true') {
    console.log('[Queue] Queue-System ist deaktiviert (QUEUE_ENABLED=false)');
    return;
  }
  const host = process.env.REDIS_HOST || '127.0.0.1';
  const port = Number(process.env.REDIS_PORT || 6379);
  const password = process.env.REDIS_PASSWORD || '';
  let workers = null; // decided once, at start, as the real backend does
  let lastError = '';
  const connect = () => {
    // one address, no fallback to the next one: the IPv4/IPv6 pitfall shows as it did on the server
    const socket = net.connect({ host, port, autoSelectFamily: false });
    let buffer = '';
    socket.on('connect', () => {
      if (password) socket.write(`*2\r\n$4\r\nAUTH\r\n$${Buffer.byteLength(password)}\r\n${password}\r\n`);
      socket.write('*1\r\n$4\r\nPING\r\n');
    });
    socket.on('data', (data) => {
      buffer += data.toString();
      if (buffer.includes('+PONG')) {
        console.log('[Queue Service] ✅ Redis-Verbindung hergestellt');
        if (workers === null) {
          workers = true;
          console.log('[Queue Service] ✅ Redis bereit');
          console.log('[Queue] ✅ Workers gestartet');
          console.log(`[Queue] Concurrency: ${process.env.QUEUE_CONCURRENCY || 1} Jobs parallel`);
        }
        socket.end();
      } else if (buffer.startsWith('-')) {
        fail(new Error(buffer.trim().split(' ')[0].slice(1)));
        socket.end();
      }
    });
    socket.on('error', fail);
  };
  // like ioredis: log an error when it changes, retry until Redis answers; the workers stay off
  function fail(err) {
    if (err.message !== lastError) console.error(`[Queue Service] Redis-Verbindungsfehler: ${err.message}`);
    lastError = err.message;
    if (workers === null) {
      workers = false;
      console.log('[Queue] ⚠️ Redis nicht verfügbar - Workers werden nicht gestartet');
    }
    setTimeout(connect, 200);
  }
  connect();
}

console.log(`[Server] intranet backend stand-in starting (pid ${process.pid})`);
queue();
if (process.env.PORT) {
  http.createServer((req, res) => {
    const delay = req.url === '/slow' ? Number(process.env.SLOW_MS || 300) : 0;
    setTimeout(() => res.end('ok\n'), delay);
  }).listen(Number(process.env.PORT), '127.0.0.1');
}
setInterval(() => {}, 1 << 30);
