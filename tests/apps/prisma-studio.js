// Stand-in for prisma-studio: a long-running process that does nothing but stay up.
console.log(`Prisma Studio stand-in running (pid ${process.pid})`);
setInterval(() => {}, 60 * 1000);
