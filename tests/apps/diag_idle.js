// Stand-in for prisma-studio (and any other app) in the diagnose/verify tests: holds ALLOC_MB of
// memory so pm2 reports a real RSS, and otherwise does nothing.
'use strict';
const held = Buffer.alloc(Number(process.env.ALLOC_MB || 0) * 1024 * 1024, 1);
console.log(`[Studio] stand-in holding ${held.length} bytes (pid ${process.pid})`);
setInterval(() => {}, 1 << 30);
