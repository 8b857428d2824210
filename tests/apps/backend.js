// Stand-in for intranet-backend: reads its .env with the real npm dotenv (NODE_PATH points
// at tests/node/node_modules) and, with QUEUE_ENABLED=true, logs the runbook's ready lines.
// APP_CRASH_ON_QUEUE=1 makes it die at start instead (the rollback case).
require("dotenv").config({ path: process.env.APP_ENV_FILE || ".env", quiet: true });

const queue = process.env.QUEUE_ENABLED === "true";
console.log(`[Server] intranet stand-in started (pid ${process.pid}, queue ${queue ? "on" : "off"})`);
if (queue && process.env.APP_CRASH_ON_QUEUE === "1") {
  // like a backend that cannot reach its Redis: the URL (with its password) lands in the log
  console.error(`[Queue Service] ❌ Redis connection failed: redis://:${process.env.REDIS_PASSWORD}@` +
                `${process.env.REDIS_HOST}:${process.env.REDIS_PORT}`);
  process.exit(1);
}
if (queue) {
  setTimeout(() => console.log("[Queue Service] ✅ Redis-Verbindung hergestellt"), 200);
  setTimeout(() => console.log(`[Queue] ✅ Workers gestartet (${process.env.QUEUE_CONCURRENCY || 1})`), 400);
}
setInterval(() => {}, 60 * 1000);
