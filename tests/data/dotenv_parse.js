// Test helper: parse .env contents with the real npm dotenv installed under tests/node.
// Reads one JSON array of base64-encoded file contents per stdin line and answers one JSON
// line with dotenv.parse() of each (as [key, value] pairs in object order).
// Used by tests/*/test_dotenv*.py; never by the formula itself.
'use strict'
const path = require('path')
const readline = require('readline')
const dotenv = require(path.join(__dirname, '..', 'node', 'node_modules', 'dotenv'))

const rl = readline.createInterface({ input: process.stdin, terminal: false })
rl.on('line', (line) => {
  const batch = JSON.parse(line)
  // parse(Buffer) decodes UTF-8 like readFileSync(path, 'utf8') in config() (bad bytes -> U+FFFD)
  const out = batch.map((b64) => Object.entries(dotenv.parse(Buffer.from(b64, 'base64'))))
  process.stdout.write(JSON.stringify(out) + '\n')
})
