'use strict';
/*
 * STAND-IN for the real intranet backend (serverfix's local replica only; NOT the real application).
 *
 * It reproduces what the runbook describes about the real backend's reservation queue:
 *  - reads /var/www/intranet/backend/.env with npm dotenv (existing environment variables win, as in dotenv);
 *  - QUEUE_ENABLED=true and Redis reachable: POST /reservations enqueues a BullMQ job and answers at once,
 *    workers (QUEUE_CONCURRENCY in parallel) do the 2-6 s of work in the background;
 *  - otherwise: synchronous fallback, every POST /reservations blocks for 2-6 s;
 *  - logs the runbook's lines in both modes, so the formula's log checks see what they would see on the server.
 */
const http = require('node:http');
const path = require('node:path');
const crypto = require('node:crypto');

require('dotenv').config({ path: path.join(__dirname, '..', '.env'), quiet: true });

const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');

const QUEUE_NAME = 'reservations';
const WORK_MIN_MS = 2000;
const WORK_MAX_MS = 6000;
const REDIS_CONNECT_TIMEOUT_MS = 10000;

const config = {
  port: Number(process.env.PORT || 3000),
  queueEnabled: process.env.QUEUE_ENABLED === 'true',
  concurrency: Number(process.env.QUEUE_CONCURRENCY || 5),
  redis: {
    host: process.env.REDIS_HOST || 'localhost',
    port: Number(process.env.REDIS_PORT || 6379),
    password: process.env.REDIS_PASSWORD || undefined,
    db: Number(process.env.REDIS_DB || 0),
  },
};

const state = { mode: 'fallback', processedSync: 0, processedByWorkers: 0 };
let connection = null;
let queue = null;
let worker = null;

const log = (line) => console.log(line);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const workTime = () => WORK_MIN_MS + Math.floor(Math.random() * (WORK_MAX_MS - WORK_MIN_MS));

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timeout after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function startQueue() {
  if (!config.queueEnabled) {
    log('[Queue] Queue-System ist deaktiviert (QUEUE_ENABLED=false)');
    return;
  }
  let lastError = '';
  connection = new IORedis({
    ...config.redis,
    lazyConnect: true,
    maxRetriesPerRequest: null, // BullMQ workers need this
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
  connection.on('connect', () => log('[Queue Service] ✅ Redis-Verbindung hergestellt'));
  connection.on('ready', () => log('[Queue Service] ✅ Redis bereit'));
  connection.on('error', (err) => {
    if (err.message !== lastError) log(`[Queue Service] Redis-Verbindungsfehler: ${err.message}`);
    lastError = err.message;
  });
  // wait for 'ready' rather than connect()'s promise, which gives up at the first refusal: at boot
  // pm2 may start the app a moment before redis-server listens
  const ready = new Promise((resolve) => connection.once('ready', resolve));
  connection.connect().catch(() => {}); // failures arrive as 'error' events; ioredis retries
  try {
    await withTimeout(ready, REDIS_CONNECT_TIMEOUT_MS, 'Redis connect');
    await withTimeout(connection.ping(), REDIS_CONNECT_TIMEOUT_MS, 'Redis PING');
  } catch (err) {
    if (!lastError) log(`[Queue Service] Redis-Verbindungsfehler: ${err.message}`); // not logged by 'error' yet
    log('[Queue] ⚠️ Redis nicht verfügbar - Workers werden nicht gestartet');
    connection.disconnect();
    connection = null;
    return;
  }
  queue = new Queue(QUEUE_NAME, { connection });
  worker = new Worker(
    QUEUE_NAME,
    async (job) => {
      await sleep(workTime());
      state.processedByWorkers += 1;
      log(`[Queue] reservation worker: Job ${job.id} erledigt (Reservierung ${job.data.reservationId})`);
      return { reservationId: job.data.reservationId };
    },
    { connection: connection.duplicate(), concurrency: config.concurrency },
  );
  worker.on('failed', (job, err) => log(`[Queue] reservation worker: Job ${job && job.id} fehlgeschlagen: ${err.message}`));
  state.mode = 'queue';
  log('[Queue] ✅ Workers gestartet');
  log(`[Queue] Concurrency: ${config.concurrency} Jobs parallel`);
}

function readBody(req) {
  return new Promise((resolve) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}'));
      } catch {
        resolve({});
      }
    });
  });
}

function send(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) });
  res.end(data);
}

async function createReservation(req, res) {
  const body = await readBody(req);
  const reservationId = crypto.randomUUID();
  if (state.mode === 'queue') {
    const job = await queue.add('reservation', { reservationId, ...body }, { removeOnComplete: 1000, removeOnFail: 1000 });
    send(res, 202, { status: 'queued', reservationId, jobId: job.id, mode: state.mode });
    return;
  }
  // the slow path the runbook complains about: the request waits for the whole job
  log('[Reservation] Queue nicht verfügbar - synchrone Verarbeitung (Fallback-Modus)');
  const ms = workTime();
  await sleep(ms);
  state.processedSync += 1;
  log(`[Reservation] Reservierung ${reservationId} synchron verarbeitet (${ms} ms)`);
  send(res, 201, { status: 'created', reservationId, mode: state.mode });
}

async function stats() {
  const counts = queue ? await queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed') : {};
  return { mode: state.mode, processedSync: state.processedSync, processedByWorkers: state.processedByWorkers, jobs: counts };
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  const route = `${req.method} ${url.pathname}`;
  let handler;
  if (route === 'POST /reservations') handler = () => createReservation(req, res);
  else if (route === 'GET /health') {
    handler = async () => send(res, 200, { status: 'ok', mode: state.mode, concurrency: config.concurrency, standIn: true });
  } else if (route === 'GET /reservations/stats') handler = async () => send(res, 200, await stats());
  else handler = async () => send(res, 404, { error: 'not found' });
  handler().catch((err) => {
    log(`[Server] Fehler bei ${route}: ${err.message}`);
    if (!res.headersSent) send(res, 500, { error: err.message });
  });
});

async function shutdown(signal) {
  log(`[Server] ${signal} empfangen, fahre herunter`);
  server.close();
  await Promise.allSettled([worker && worker.close(), queue && queue.close()]);
  if (connection) connection.disconnect();
  process.exit(0);
}
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGTERM', () => shutdown('SIGTERM'));

(async () => {
  log('[Server] Intranet-Backend (Replica-Stand-in) startet');
  await new Promise((resolve) => server.listen(config.port, '0.0.0.0', resolve));
  log(`[Server] Läuft auf Port ${config.port}`);
  await startQueue(); // requests meanwhile take the fallback path
  log(`[Server] Modus: ${state.mode === 'queue' ? 'Queue' : 'synchroner Fallback'}`);
})().catch((err) => {
  log(`[Server] Start fehlgeschlagen: ${err.stack || err.message}`);
  process.exit(1);
});
