"""The hosts watchkeeper may act on: Ansible's YAML inventory, plus this host's identity.

The file is the one operators already keep for Ansible: groups with `hosts`, `vars` and
`children`, host entries with `ansible_host`, `ansible_port`, `ansible_user` and
`ansible_connection`. Group vars apply from the outermost group in, host vars last. Every
other scalar var becomes a label for policy (`env: prod` matches a window's `env="prod"`).
Numeric ranges (`web[01:03]`) expand as in Ansible.
"""

from __future__ import annotations

import re
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from daemon.config.types import Duration, Section
from daemon.domain.targets import DEFAULT_LABELS, TargetRules

_RANGE = re.compile(r"^(?P<pre>[^\[\]]*)\[(?P<a>\d+):(?P<b>\d+)\](?P<post>[^\[\]]*)$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MAX_HOSTS = 100_000


class InventoryError(ValueError):
    """The inventory file cannot be used; the message says where and why."""


class InventoryHost(BaseModel):
    """One host: how to reach it and the labels policy may match."""

    model_config = ConfigDict(frozen=True)

    name: str
    address: str
    port: int = 22
    user: str = ""
    connection: Literal["ssh", "local"] = "ssh"
    # Run systemctl through `sudo -n` (Ansible's ansible_become).
    become: bool = False
    groups: tuple[str, ...] = ()
    labels: dict[str, str] = {}


class Inventory(BaseModel):
    """Hosts by name, and where they came from."""

    model_config = ConfigDict(frozen=True)

    source: str = ""
    hosts: dict[str, InventoryHost] = {}

    def find(self, target: str) -> InventoryHost | None:
        """A host by inventory name (case-insensitive), else by its address."""
        t = target.strip().lower()
        for h in self.hosts.values():
            if h.name.lower() == t:
                return h
        return next((h for h in self.hosts.values() if h.address.lower() == t), None)


def _expand(pattern: str) -> list[str]:
    m = _RANGE.match(pattern)
    if m is None:
        return [pattern]
    a, b = m.group("a"), m.group("b")
    if int(b) < int(a) or int(b) - int(a) > 10_000:
        raise InventoryError(f"host range {pattern!r} is backwards or too large")
    width = len(a) if a.startswith("0") else 0
    return [f"{m.group('pre')}{i:0{width}d}{m.group('post')}" for i in range(int(a), int(b) + 1)]


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InventoryError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def parse_inventory(text: str, source: str = "<inventory>") -> Inventory:
    """Parse Ansible's YAML inventory; raise InventoryError naming the first problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InventoryError(f"{source}: not valid YAML: {e}") from None
    data = _mapping(data, source)
    # host -> list of (depth, vars) from its groups, and its own vars
    group_vars: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
    own_vars: dict[str, dict[str, Any]] = {}

    def walk(name: str, group: Any, depth: int, seen: tuple[str, ...]) -> set[str]:
        """Record the group's hosts and vars; return every member, children's included."""
        where = f"{source}: group {name}"
        if name in seen:
            raise InventoryError(f"{where}: is its own child")
        g = _mapping(group, where)
        unknown = set(g) - {"hosts", "vars", "children"}
        if unknown:
            raise InventoryError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        gvars = _mapping(g.get("vars"), f"{where}.vars")
        members: set[str] = set()
        for pattern, hvars in _mapping(g.get("hosts"), f"{where}.hosts").items():
            for host in _expand(str(pattern)):
                members.add(host)
                own_vars.setdefault(host, {}).update(_mapping(hvars, f"{where}.hosts.{host}"))
                if len(own_vars) > _MAX_HOSTS:
                    raise InventoryError(f"{source}: more than {_MAX_HOSTS} hosts")
        for child, body in _mapping(g.get("children"), f"{where}.children").items():
            members |= walk(str(child), body, depth + 1, (*seen, name))
        for host in members:
            group_vars.setdefault(host, []).append((depth, name, gvars))
        return members

    for name, group in data.items():
        walk(str(name), group, 0 if name == "all" else 1, ())
    hosts: dict[str, InventoryHost] = {}
    for name, hv in own_vars.items():
        merged: dict[str, Any] = {}
        groups = sorted(group_vars.get(name, []), key=lambda t: t[0])
        for _, _, gv in groups:
            merged.update(gv)
        merged.update(hv)
        hosts[name] = _host(name, merged, tuple(dict.fromkeys(n for _, n, _ in groups)), source)
    return Inventory(source=source, hosts=hosts)


def _host(name: str, v: dict[str, Any], groups: tuple[str, ...], source: str) -> InventoryHost:
    where = f"{source}: host {name}"
    try:
        port = int(v.get("ansible_port", 22))
    except (TypeError, ValueError):
        raise InventoryError(f"{where}: ansible_port must be a number") from None
    if not 0 < port < 65536:
        raise InventoryError(f"{where}: ansible_port {port} is out of range")
    connection = str(v.get("ansible_connection", "ssh"))
    if connection not in ("ssh", "local"):
        raise InventoryError(
            f"{where}: ansible_connection {connection!r} is not supported (ssh or local)"
        )
    become = v.get("ansible_become", False)
    labels = {
        k: (str(x).lower() if isinstance(x, bool) else str(x))
        for k, x in v.items()
        if not k.startswith("ansible_") and _LABEL.match(k) and isinstance(x, str | int | float)
    }
    return InventoryHost(
        name=name,
        address=str(v.get("ansible_host", name)),
        port=port,
        user=str(v.get("ansible_user", "")),
        connection=connection,  # type: ignore[arg-type]
        become=become is True or str(become).lower() in ("true", "yes", "1"),
        groups=groups,
        labels=labels,
    )


def load_inventory(path: str | Path | None) -> Inventory:
    """The inventory in a file (an empty one when no file is configured)."""
    if not path:
        return Inventory()
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InventoryError(f"{path}: cannot read the inventory: {e.strerror}") from None
    return parse_inventory(text, str(path))


# --- config sections ---------------------------------------------------------------------


class HostIdentityConfig(Section):
    """This host's names: the `local` transport runs only for a target with one of them."""

    name: str = Field(default_factory=socket.gethostname)
    aliases: list[str] = ["localhost", "127.0.0.1", "::1"]

    def names(self) -> frozenset[str]:
        """Every name this host answers to, lower-cased."""
        return frozenset(n.lower() for n in (self.name, *self.aliases) if n)


class TargetsConfig(Section):
    """How an alert's labels name the host it is about."""

    labels: list[str] = list(DEFAULT_LABELS)
    strip_port: bool = True
    # An alert no label names a host for: act on this host (today's behaviour for alerts
    # about the ops host itself), or refuse every shell/systemd action.
    missing: Literal["this_host", "refuse"] = "this_host"

    @field_validator("labels")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if not _LABEL.match(x)]
        if bad:
            raise ValueError(f"not valid label names: {', '.join(bad)}")
        return v

    def rules(self) -> TargetRules:
        """The domain's value."""
        return TargetRules(labels=tuple(self.labels), strip_port=self.strip_port)


class SshConfig(Section):
    """The ssh transport: one key, pinned host keys, bounded and reused connections."""

    # The private key: env:NAME, file:/path or credential:NAME (LoadCredential=).
    key: str | None = None
    # OpenSSH known_hosts with every inventory host's key: there is no trust on first use.
    known_hosts: str | None = None
    user: str = "watchkeeper"
    connect_timeout: Duration = timedelta(seconds=10)
    max_connections_per_host: int = Field(default=2, ge=1, le=32)
    idle_timeout: Duration = timedelta(minutes=5)
    keepalive: Duration = timedelta(seconds=30)


class InventoryConfig(Section):
    """Where the inventory is (reloaded on SIGHUP) and how to reach its hosts."""

    file: str | None = None
    ssh: SshConfig = SshConfig()

    def load(self) -> Inventory:
        """The inventory in `file` (raise InventoryError saying what is wrong)."""
        return load_inventory(self.file)
