"""
The real npm dotenv as a test oracle: one long-lived ``node`` process (tests/data/dotenv_parse.js)
parses .env contents with tests/node/node_modules/dotenv, in batches, so thousands of generated
files cost seconds (the session's ``npm_dotenv`` fixture).
"""

import base64
import json
import shutil
import subprocess

import pytest

from tests.support.paths import NODE_DIR, REPO

PARSER_JS = REPO / "tests" / "data" / "dotenv_parse.js"


class NpmDotenv:
    """``parse(bytes)`` / ``parse_many([bytes])`` answered by npm dotenv itself."""

    def __init__(self):
        node = shutil.which("node")
        if not node:
            pytest.fail("node is not installed: run ./scripts/test.sh (it installs nodejs)")
        if not (NODE_DIR / "node_modules" / "dotenv" / "package.json").exists():
            pytest.fail(
                f"{NODE_DIR}/node_modules/dotenv missing: "
                "run ./scripts/test.sh (it installs it locally)"
            )
        self.version = json.loads(
            (NODE_DIR / "node_modules" / "dotenv" / "package.json").read_text()
        )["version"]
        self.proc = subprocess.Popen(
            [node, str(PARSER_JS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="surrogatepass",
        )
        self.files_parsed = 0

    def parse_many(self, contents):
        batch = [
            base64.b64encode(c if isinstance(c, bytes) else c.encode("utf-8")).decode()
            for c in contents
        ]
        self.proc.stdin.write(json.dumps(batch) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the npm dotenv helper (node) exited")
        self.files_parsed += len(batch)
        return [dict(pairs) for pairs in json.loads(line)]

    def parse(self, content):
        return self.parse_many([content])[0]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
