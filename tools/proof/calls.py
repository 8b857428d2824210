"""
Call counting on the guest: wrapper scripts that log every call of the package manager, systemctl,
sysctl, swap tools and pm2 (installed by ``lab.ProofReplica.instrument``), and which of those calls
change the system.
"""

CALLS_DIR = "/run/serverfix-proof"
CALLS_LOG = f"{CALLS_DIR}/calls.log"
# files changed after it were written by the runs (nobody may stat it)
MARKER = "/run/serverfix-proof.started"

# tool -> where the real one is (pm2: replaced in its package directory, see instrument())
WRAPPED = {
    "apt-get": "/usr/bin/apt-get",
    "apt": "/usr/bin/apt",
    "apt-cache": "/usr/bin/apt-cache",
    "dpkg": "/usr/bin/dpkg",
    "dpkg-query": "/usr/bin/dpkg-query",
    "systemctl": "/usr/bin/systemctl",
    "sysctl": "/usr/sbin/sysctl",
    "swapon": "/usr/sbin/swapon",
    "swapoff": "/usr/sbin/swapoff",
    "mkswap": "/usr/sbin/mkswap",
}
WRAPPER = r"""#!/bin/sh
# serverfix proof (tools/proof/calls.py): count this call, then run the real @NAME@
via=other p=$PPID
while [ "${p:-0}" -gt 1 ]; do
  if grep -q @THIN@ /proc/$p/cmdline 2>/dev/null; then via=salt; break; fi
  read -r _ _ _ p _ < /proc/$p/stat 2>/dev/null || break
done
{ printf '%s\t%s\t%s\0' @NAME@ $via "$*" >> @LOG@; } 2>/dev/null
exec @REAL@ "$@"
"""
INSTRUMENT = r"""set -e
install -d -m 0700 @DIR@ && touch @LOG@ @MARKER@ && chmod 600 @LOG@ && chmod 644 @MARKER@
pm2=$(readlink -f "$(command -v pm2)")
if [ ! -e "$pm2.real" ]; then mv "$pm2" "$pm2.real"; fi
"""
READ_ONLY = {
    "pm2": {
        "jlist",
        "list",
        "ls",
        "l",
        "status",
        "describe",
        "desc",
        "info",
        "show",
        "prettylist",
        "-v",
        "--version",
        "-V",
        "id",
        "pid",
        "ping",
    },
    "apt-get": {"download", "source", "check", "changelog", "indextargets", "-v", "--version"},
    "apt": {"list", "search", "show", "policy", "depends", "rdepends", "--version"},
    "dpkg": {
        "-l",
        "--list",
        "-L",
        "--listfiles",
        "-s",
        "--status",
        "-S",
        "--search",
        "--print-architecture",
        "--print-foreign-architectures",
        "--get-selections",
        "--compare-versions",
        "--audit",
        "-C",
        "--version",
        "--assert-multi-conf",
        "-p",
        "--print-avail",
    },
    "systemctl": {
        "is-active",
        "is-enabled",
        "is-failed",
        "is-system-running",
        "status",
        "show",
        "cat",
        "--version",
        "list-units",
        "list-unit-files",
        "list-timers",
        "list-jobs",
        "list-dependencies",
        "get-default",
    },
}
ALWAYS_READ_ONLY = {"dpkg-query", "apt-cache"}
TOOL_GROUPS = {
    "pm2": ("pm2",),
    "package manager": ("apt-get", "apt", "apt-cache", "dpkg", "dpkg-query"),
    "systemctl": ("systemctl",),
    "swap/sysctl": ("sysctl", "swapon", "swapoff", "mkswap"),
}


def _subcommand(argv, tool=""):
    words = argv.split()
    if tool in (
        "dpkg",
        "dpkg-query",
    ):  # their actions are options; --showformat's value is no action
        return next(
            (w for w in words if w.startswith("-") and not w.startswith(("--showformat", "-f"))), ""
        )
    plain = [w for w in words if not w.startswith("-")]
    return plain[0] if plain else (words[0] if words else "")


def is_mutating(tool, argv):
    """Does this call change the system (or, for apt-get update, the package lists)?"""
    words = argv.split()
    if tool in ALWAYS_READ_ONLY:
        return False
    if tool == "dpkg":
        return not any(w in READ_ONLY["dpkg"] or w.startswith("--compare") for w in words)
    if tool == "sysctl":
        return any("=" in w or w in ("-w", "--write", "-p", "--load", "--system") for w in words)
    if tool == "swapon":
        return not any(
            w in ("-s", "--summary", "--show", "--version", "-h") or w.startswith("--show")
            for w in words
        )
    if tool in ("swapoff", "mkswap"):
        return True
    return _subcommand(argv) not in READ_ONLY.get(tool, set())


def summarize_calls(calls):
    """``[(tool, via, argv)]`` (only those of salt runs) -> per group: total, mutating and which."""
    out = {}
    for group, tools in TOOL_GROUPS.items():
        mine = [(tool, argv) for tool, via, argv in calls if tool in tools and via == "salt"]
        mutating = [f"{tool} {argv}".strip() for tool, argv in mine if is_mutating(tool, argv)]
        out[group] = {
            "total": len(mine),
            "mutating": len(mutating),
            "mutating_calls": mutating,
            "commands": sorted(
                {f"{tool} {_subcommand(argv, tool)}".strip() for tool, argv in mine}
            ),
        }
    return out
