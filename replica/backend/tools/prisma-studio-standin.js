'use strict';
/*
 * STAND-IN for `prisma studio` (serverfix's local replica only; NOT Prisma).
 * On the real server a Prisma Studio instance runs under pm2 as `prisma-studio` although it
 * belongs to development; the runbook removes it (phase 3). This stand-in only has to be a
 * long-running pm2 process that holds some memory and listens where Prisma Studio listens.
 */
const http = require('node:http');

const PORT = Number(process.env.PRISMA_STUDIO_PORT || 5555);
const ballast = Buffer.alloc(48 * 1024 * 1024, 1); // Prisma Studio held ~64 MB on the server

http
  .createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end(`Prisma Studio (replica stand-in, ${ballast.length >> 20} MB held)\n`);
  })
  .listen(PORT, '127.0.0.1', () => console.log(`Prisma Studio is up on http://localhost:${PORT}`));
