"""
salt-ssh wrapper of the serverfix execution module: ``salt-ssh <target> serverfix.diagnose`` and
``serverfix.verify`` with the target's ``serverfix`` pillar, no ``config=`` needed.

A plain salt-ssh module call runs on the target without any pillar (the report then says
``settings.source: defaults only``), and every argument of it travels in the remote command line.
This wrapper runs on the master instead, where salt-ssh has compiled the target's pillar, and
hands the remote call what it needs the way salt-ssh's own ``state.apply`` does: in a package
file copied to the target over the SSH connection (scp/SFTP, mode 0600 in the target's
``thin_dir``), never in an argument:

- on the master: ``__pillar__["serverfix"]`` (only this key) becomes the package's
  ``pillar.json``; the function call and its arguments (``config``, ``proc_swaps``, ...)
  become one ``module.run`` chunk in its ``lowstate.json``;
- on the target: ``state.pkg <file> pkg_sum=<hash>`` (the only remote argv) runs
  ``serverfix.diagnose`` / ``serverfix.verify`` of the execution module with that pillar as
  ``__pillar__``: the settings are merged and validated there exactly as on a minion, and the
  Redis password and the ``dotenv:extra`` values are read there, from the package file and
  the target's ``.env``;
- the package file is removed from the target and the master after the call; the report
  comes back scrubbed of every secret, as the execution module returns it.

Install: serve ``_wrapper`` beside ``_modules`` (``formula/_wrapper`` links it) and, on the
master, ``salt-run saltutil.sync_wrapper`` (Salt 3007+). Salt 3006 has no such runner and its
salt-ssh ignores ``wrapper_dirs`` for wrapper calls: copy the file to the master's
``<extension_modules>/wrapper/`` (default ``/var/cache/salt/master/extmods/wrapper/``).
"""

import logging
import os
import uuid
from typing import TYPE_CHECKING, Any

import salt.client.ssh
import salt.client.ssh.state
import salt.utils.hashutils
import salt.utils.json
from salt.exceptions import CommandExecutionError

if TYPE_CHECKING:
    __salt__: Any  # salt.client.ssh.wrapper.FunctionWrapper: calls on the target
    __opts__: dict[str, Any]
    __pillar__: dict[str, Any]
    __context__: dict[str, Any]

log = logging.getLogger(__name__)

__virtualname__ = "serverfix"
__outputter__ = {"diagnose": "serverfix_report", "verify": "serverfix_report"}

PILLAR_KEY = "serverfix"


def __virtual__():
    return __virtualname__


def _plain(value):
    """A plain copy of pillar data (Salt 3008 may wrap it in masking containers)."""
    if isinstance(value, dict):
        return {key: _plain(sub) for key, sub in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(sub) for sub in value]
    return value


def _state_return(stdout, stderr, retcode, what):
    """The return of the remote ``state.pkg`` from its ``{"local": {"return": ...}}`` JSON (Salt
    3006 has no ``salt.client.ssh.wrapper.parse_ret``)."""
    try:
        data = salt.utils.json.find_json(stdout)
    except ValueError:
        data = None
    local = data.get("local") if isinstance(data, dict) else None
    if not isinstance(local, dict) or "return" not in local:
        raise CommandExecutionError(
            f"{what} did not run (ssh return code {retcode}): {(stderr or stdout).strip()[-2000:]}"
        )
    return local["return"]


def _packaged_call(function, kwargs):
    """
    Run ``serverfix.<function>(**kwargs)`` on the target with the target's ``serverfix``
    pillar, both shipped in a state package file (the remote argv names only the file), and
    return the function's return value.
    """
    given = __pillar__.get(PILLAR_KEY)
    pillar = {PILLAR_KEY: _plain(given)} if given is not None else {}
    fun = f"serverfix.{function}"
    chunk = {
        "state": "module",
        "fun": "run",
        "__id__": f"serverfix-wrapper-{function}",
        "name": f"serverfix-wrapper-{function}",
        "__env__": "base",
        "__sls__": "serverfix-wrapper",
        "order": 1,
        fun: [{key: value} for key, value in kwargs.items()],
    }
    target = __salt__.kwargs
    # {"base": []}: the package also carries salt://_modules, _utils, ... (what state.apply sends)
    local = salt.client.ssh.state.prep_trans_tar(
        __context__["fileclient"], [chunk], {"base": []}, pillar, target["id_"]
    )
    remote = f"{__opts__['thin_dir']}/serverfix_call_{uuid.uuid4().hex}.tgz"
    single = None
    try:
        pkg_sum = salt.utils.hashutils.get_hash(local, __opts__["hash_type"])
        cmd = f"state.pkg {remote} test=False pkg_sum={pkg_sum} hash_type={__opts__['hash_type']}"
        single = salt.client.ssh.Single(
            __opts__,
            cmd,
            fsclient=__context__["fileclient"],
            minion_opts=__salt__.minion_opts,
            **target,
        )
        single.shell.send(local, remote)
        stdout, stderr, retcode = single.cmd_block()
    finally:
        os.remove(local)
        if single is not None:
            single.shell.exec_cmd(
                f"rm -f '{remote}'"
            )  # the package holds the pillar: no copy stays
    states = _state_return(stdout, stderr, retcode, f"{fun} on {target['id_']}")
    if not isinstance(states, dict) or len(states) != 1:
        raise CommandExecutionError(f"{fun} on {target['id_']} returned no result: {states!r}")
    (state,) = states.values()
    if not isinstance(state, dict):
        raise CommandExecutionError(f"{fun} on {target['id_']} did not run: {state}")
    changes = state.get("changes") or {}
    if state.get("result") is not True or fun not in changes:
        # module.run puts the exception's message (a CommandExecutionError's) in the comment
        raise CommandExecutionError(state.get("comment") or f"{fun} failed on {target['id_']}")
    return changes[fun]


def diagnose(config=None, proc_swaps="/proc/swaps"):
    """
    ``serverfix.diagnose`` on a salt-ssh target with the target's ``serverfix`` pillar (as on a
    minion): the same report, ``settings.source: "pillar"``. The pillar, the Redis password and
    every argument reach the target in a file copied over SSH, never in its command line.

    config
        Optional merged settings (a mapping or JSON), as the execution module takes them; they
        win over the pillar. Shipped in the same file, so a password in them stays out of argv.
    proc_swaps
        Where the target reads its active swap areas.

    CLI Example:

    .. code-block:: bash

        salt-ssh hetzner serverfix.diagnose
        salt-ssh hetzner serverfix.diagnose --out=json
    """
    kwargs = {"proc_swaps": proc_swaps}
    if config is not None:
        kwargs["config"] = config
    return _packaged_call("diagnose", kwargs)


def verify(config=None, proc_swaps="/proc/swaps", set_retcode=True):
    """
    ``serverfix.verify`` on a salt-ssh target with the target's ``serverfix`` pillar: the same
    checks and report as on a minion; the return code is 1 when a check fails. The pillar, the
    Redis password and every argument reach the target in a file copied over SSH, never in its
    command line; the target reads the Redis password for its PING from its ``.env``.

    config
        Optional merged settings (a mapping or JSON); they win over the pillar.
    proc_swaps
        Where the target reads its active swap areas.
    set_retcode
        Set the return code to 1 on a failed check.

    CLI Example:

    .. code-block:: bash

        salt-ssh hetzner serverfix.verify
        salt-ssh hetzner serverfix.verify --out=json
    """
    kwargs = {"proc_swaps": proc_swaps, "set_retcode": False}
    if config is not None:
        kwargs["config"] = config
    report = _packaged_call("verify", kwargs)
    if set_retcode and isinstance(report, dict) and not report.get("ok"):
        __context__["retcode"] = 1
    return report
