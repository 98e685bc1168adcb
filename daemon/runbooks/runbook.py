"""Runbooks: Markdown files with YAML front matter, validated strictly, loaded by id.

The front matter says what the runbook matches, which read-only tools it allows, the
diagnostics the deterministic path runs in order, the actions it may propose (each with a
JSON schema for its parameters, a risk and an optional rollback), the default action and
its condition, how to verify a fix, how old evidence may be, and the budgets. The body
guides both the agent and the person reading it.

Templates: `{labels.NAME}` in diagnostics and default-action params is filled from the
incident's labels (untrusted: escaped per tool and checked by the tool's allowlists and
the action's schema); `{params.NAME}` in what an action runs is filled from its validated
parameters.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from daemon.config.problems import located
from daemon.config.problems import problems as validation_problems
from daemon.domain.conditions import Check, Condition
from daemon.domain.durations import parse_duration
from daemon.domain.investigation_model import ActionSpec, Budget
from daemon.domain.matchers import Matcher
from daemon.domain.param_schema import ParamsValidator
from daemon.runbooks.tools import ARGS

# Package data: `daemon/runbooks/shipped` links to the top-level runbooks/ in the source
# tree, and setuptools copies the files through the link into the wheel.
SHIPPED = Path(str(resources.files("daemon.runbooks").joinpath("shipped")))
_PLACEHOLDER = re.compile(r"\{(labels|params)\.([A-Za-z_][A-Za-z0-9_]*)\}")
_ID = r"^[a-z0-9][a-z0-9_-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def placeholders(value: Any) -> set[tuple[str, str]]:
    """Every `{labels.X}` / `{params.X}` placeholder in a string, list or mapping."""
    found: set[tuple[str, str]] = set()
    if isinstance(value, str):
        found |= {(m.group(1), m.group(2)) for m in _PLACEHOLDER.finditer(value)}
    elif isinstance(value, list | tuple):
        for v in value:
            found |= placeholders(v)
    elif isinstance(value, dict):
        for v in value.values():
            found |= placeholders(v)
    return found


class MissingLabel(ValueError):  # noqa: N818 - reads as the condition it is
    """A template needs a label the incident does not carry."""


def render(value: Any, labels: dict[str, str], escape: Any = None) -> Any:
    """Fill `{labels.X}` placeholders (escaping each value with `escape`, if given)."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(1) != "labels":
                return m.group(0)
            name = m.group(2)
            if not labels.get(name):
                raise MissingLabel(
                    f"needs label {name!r}, which the incident's alerts do not carry"
                )
            got = labels[name]
            return str(escape(got)) if escape else got

        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, list | tuple):
        return [render(v, labels, escape) for v in value]
    if isinstance(value, dict):
        return {k: render(v, labels, escape) for k, v in value.items()}
    return value


def promql_string(value: str) -> str:
    """Escape a value for use inside a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --- front matter -----------------------------------------------------------------------


class Diagnostic(_Strict):
    """One read-only tool call the deterministic path runs, with why it matters."""

    id: str = Field(pattern=_ID)
    tool: str
    args: dict[str, Any] = {}
    why: str = ""


class Rollback(_Strict):
    """How to undo an action: another of the runbook's actions, or written steps."""

    action: str | None = None
    params: dict[str, Any] = {}
    note: str = ""

    @model_validator(mode="after")
    def _something(self) -> Rollback:
        if not self.action and not self.note:
            raise ValueError("a rollback needs an action or a note")
        return self

    def describe(self) -> str:
        """One line for events and views."""
        if self.action:
            return f"action {self.action}" + (f" ({self.note})" if self.note else "")
        return self.note


class _Action(_Strict):
    id: str = Field(pattern=_ID)
    title: str = ""
    description: str = ""
    risk: Literal["low", "medium", "high"]
    params: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "additionalProperties": False}
    )
    rollback: Rollback | None = None

    @field_validator("params")
    @classmethod
    def _schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(v)
        except SchemaError as e:
            raise ValueError(f"not a valid JSON schema: {e.message}") from None
        if v.get("type") != "object":
            raise ValueError("the params schema must have type: object")
        return v

    def target(self) -> Any:
        """What the action would act on (for placeholder checks)."""
        return []

    def spec(self) -> ActionSpec:
        """The part recorded with an investigation and carried by ActionProposed."""
        return ActionSpec(
            id=self.id,
            kind=getattr(self, "kind", ""),
            title=self.title,
            risk=self.risk,
            params_schema=self.params,
            rollback=self.rollback.describe() if self.rollback else "",
        )


class ShellAction(_Action):
    """Run an argv (no shell) on this host."""

    kind: Literal["shell"]
    argv: list[str] = Field(min_length=1)
    timeout: str = "60s"

    def target(self) -> Any:
        return self.argv


class HttpAction(_Action):
    """Call an HTTP endpoint (e.g. a deploy system's API)."""

    kind: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str
    body: dict[str, Any] = {}

    def target(self) -> Any:
        return [self.url, self.body]


class SystemdAction(_Action):
    """Start, stop, restart or reload a systemd unit."""

    kind: Literal["systemd"]
    unit: str
    operation: Literal["start", "stop", "restart", "reload", "try-restart", "reset-failed"]

    def target(self) -> Any:
        return self.unit


class SilenceAction(_Action):
    """Create an Alertmanager silence."""

    kind: Literal["alertmanager_silence"]
    matchers: list[str] = Field(min_length=1)
    duration: str = "1h"
    comment: str = ""

    def target(self) -> Any:
        return [*self.matchers, self.comment, self.duration]


class WebhookAction(_Action):
    """POST a JSON payload to a webhook (a chat-ops bot, an orchestrator)."""

    kind: Literal["webhook"]
    url: str
    payload: dict[str, Any] = {}

    def target(self) -> Any:
        return [self.url, self.payload]


Action = Annotated[
    ShellAction | HttpAction | SystemdAction | SilenceAction | WebhookAction,
    Field(discriminator="kind"),
]


class DefaultAction(_Strict):
    """The action the deterministic path proposes when its condition holds."""

    action: str
    params: dict[str, Any] = {}
    when: Condition
    rationale: str = ""


class Verify(_Strict):
    """How to tell an action worked: a PromQL query or an HTTP probe, within a window."""

    query: str | None = None
    probe: str | None = None
    expect: str
    window: str = "10m"

    @model_validator(mode="after")
    def _one_kind(self) -> Verify:
        if (self.query is None) == (self.probe is None):
            raise ValueError("give exactly one of query or probe")
        Check.parse(f"verify.{self.expect}")
        parse_duration(self.window)
        return self


class Budgets(_Strict):
    """Per-investigation limits (defaults suit a short triage)."""

    steps: int = Field(default=8, ge=1, le=100)
    tokens: int = Field(default=60_000, ge=1000)
    wall_time: str = "10m"
    max_repeats: int = Field(default=2, ge=0)

    @field_validator("wall_time")
    @classmethod
    def _dur(cls, v: str) -> str:
        parse_duration(v)
        return v

    def budget(self) -> Budget:
        """The domain's value."""
        return Budget(
            steps=self.steps,
            tokens=self.tokens,
            wall_seconds=parse_duration(self.wall_time).total_seconds(),
            max_repeats=self.max_repeats,
        )


class Runbook(_Strict):
    """One runbook: front matter plus the Markdown body."""

    id: str = Field(pattern=_ID)
    version: str
    title: str = Field(min_length=1)
    match: tuple[Matcher, ...] = ()
    tools: list[str] = Field(min_length=1)
    diagnostics: list[Diagnostic] = []
    actions: list[Action] = []
    default_action: DefaultAction | None = None
    verify: Verify | None = None
    evidence_max_age: str = "5m"
    # The host its actions and shell diagnostics act on, e.g. "{labels.node}" (default: the
    # `targets:` label rules of the config; a `:port` is stripped).
    target: str | None = None
    budgets: Budgets = Budgets()
    body: str = ""
    path: str = ""

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) else v

    @field_validator("match", mode="before")
    @classmethod
    def _matchers(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):
            return [Matcher.parse(m) if isinstance(m, str) else m for m in v]
        return v

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in ARGS]
        if unknown:
            raise ValueError(
                f"unknown tools: {', '.join(unknown)} (known: {', '.join(sorted(ARGS))})"
            )
        return v

    @field_validator("evidence_max_age")
    @classmethod
    def _age(cls, v: str) -> str:
        parse_duration(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Runbook:
        problems: list[str] = []
        diag_ids = [d.id for d in self.diagnostics]
        for i, d in enumerate(self.diagnostics):
            where = f"diagnostics[{i}]"
            if diag_ids.count(d.id) > 1:
                problems.append(f"{where}.id: duplicate diagnostic id {d.id!r}")
            if d.tool not in self.tools:
                problems.append(f"{where}.tool: {d.tool!r} is not listed under tools")
            if d.tool in ARGS:
                sample = _fill(d.args)
                try:
                    ARGS[d.tool].model_validate(sample)
                except ValidationError as e:
                    problems += validation_problems(
                        e.errors(include_url=False), prefix=f"{where}.args"
                    )
            for kind, name in placeholders(d.args):
                if kind != "labels":
                    problems.append(f"{where}.args: {{{kind}.{name}}}: only {{labels.X}} here")
        action_ids = [a.id for a in self.actions]
        for i, a in enumerate(self.actions):
            where = f"actions[{i}]"
            if action_ids.count(a.id) > 1:
                problems.append(f"{where}.id: duplicate action id {a.id!r}")
            props = set(a.params.get("properties", {}))
            for kind, name in placeholders(a.target()):
                if kind != "params":
                    problems.append(
                        f"{where}: {{{kind}.{name}}}: an action's target takes only "
                        "{params.X} (labels reach it only through validated params)"
                    )
                elif name not in props:
                    problems.append(f"{where}: {{params.{name}}} is not a property of params")
            if a.rollback and a.rollback.action and a.rollback.action not in action_ids:
                problems.append(f"{where}.rollback.action: no action {a.rollback.action!r}")
        da = self.default_action
        if da is not None:
            if da.action not in action_ids:
                problems.append(f"default_action.action: no action {da.action!r}")
            for diag in sorted(da.when.diagnostics() - set(diag_ids)):
                problems.append(f"default_action.when: no diagnostic {diag!r}")
            for kind, name in placeholders(da.params):
                if kind != "labels":
                    problems.append(f"default_action.params: {{{kind}.{name}}}: only {{labels.X}}")
            action = next((a for a in self.actions if a.id == da.action), None)
            if action is not None and not placeholders(da.params):
                bad = list(ParamsValidator(action.params).iter_errors(da.params))
                for err in bad:
                    problems.append(f"default_action.params: {err.message}")
        if self.target is not None:
            kinds = {k for k, _ in placeholders(self.target)}
            if not kinds or kinds != {"labels"}:
                problems.append("target: expected {labels.X} placeholders, e.g. \"{labels.node}\"")
        if self.verify and self.verify.query and "promql_instant" not in self.tools:
            problems.append("verify.query: needs promql_instant under tools")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def evidence_max_age_td(self) -> timedelta:
        """`evidence_max_age` as a timedelta."""
        return parse_duration(self.evidence_max_age)

    @property
    def digest(self) -> str:
        """A short hash of the whole file's meaning (front matter and body)."""
        data = self.model_dump_json(exclude={"path"})
        return hashlib.sha256(data.encode()).hexdigest()[:16]

    def action(
        self, action_id: str
    ) -> ShellAction | HttpAction | SystemdAction | SilenceAction | WebhookAction | None:
        """An action by id."""
        return next((a for a in self.actions if a.id == action_id), None)

    def specs(self) -> tuple[ActionSpec, ...]:
        """The action catalogue recorded with each investigation."""
        return tuple(a.spec() for a in self.actions)


def _fill(value: Any) -> Any:
    """Replace placeholders by a sample value so argument shapes can be checked."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub("sample", value)
    if isinstance(value, list):
        return [_fill(v) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v) for k, v in value.items()}
    return value


# --- loading ---------------------------------------------------------------------------


def split_front_matter(text: str) -> tuple[str, str]:
    """Split `---\\nYAML\\n---\\nbody`; raise ValueError when there is no front matter."""
    if not text.startswith("---"):
        raise ValueError("no YAML front matter: the file must start with a line '---'")
    lines = text.split("\n")
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "\n".join(lines[1:i]), "\n".join(lines[i + 1 :]).strip()
    raise ValueError("front matter is not closed by a line '---'")


# The discriminated-union tags in an error's location add nothing for the reader.
_TAGS = frozenset({"shell", "http", "systemd", "alertmanager_silence", "webhook"})


def parse_runbook(text: str, path: str = "<string>") -> Runbook:
    """Parse one runbook; raise RunbookError listing every problem as `field: reason`."""
    try:
        head, body = split_front_matter(text)
    except ValueError as e:
        raise RunbookError(path, [f"(file): {e}"]) from None
    try:
        data = yaml.safe_load(head)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 2}" if mark else "front matter"
        raise RunbookError(
            path, [f"({where}): not valid YAML: {getattr(e, 'problem', e)}"]
        ) from None
    if not isinstance(data, dict):
        raise RunbookError(path, ["(front matter): expected a mapping of fields"])
    try:
        return Runbook.model_validate({**data, "body": body, "path": path})
    except ValidationError as e:
        problems = []
        errors = e.errors(include_url=False)
        for loc, msg in located(errors, empty="(front matter)", noun="field", skip=_TAGS):
            for line in msg.split("\n"):
                if loc == "(front matter)" and ": " in line:
                    problems.append(line)
                else:
                    problems.append(f"{loc}: {line}")
        raise RunbookError(path, problems) from None


class RunbookError(Exception):
    """A runbook file is invalid; `problems` are `field: reason` lines."""

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(problems))
        self.path = path
        self.problems = problems


class RunbookLibrary(BaseModel):
    """The valid runbooks of a directory by id, and every problem found (`file: field: reason`)."""

    runbooks: dict[str, Runbook] = {}
    problems: list[str] = []

    def get(self, runbook_id: str) -> Runbook | None:
        """A runbook by id."""
        return self.runbooks.get(runbook_id)


def load_runbooks(directory: str | Path | None = None) -> RunbookLibrary:
    """Load every `*.md` runbook of a directory (the shipped ones by default), sorted by name."""
    root = Path(directory) if directory else SHIPPED
    lib = RunbookLibrary()
    if not root.is_dir():
        lib.problems.append(f"{root}: (directory): not a directory")
        return lib
    seen: dict[str, str] = {}
    for path in sorted(root.glob("*.md")):
        if path.name.lower() == "readme.md":
            continue
        try:
            rb = parse_runbook(path.read_text(), str(path))
        except RunbookError as e:
            lib.problems += [f"{path}: {p}" for p in e.problems]
            continue
        except OSError as e:
            lib.problems.append(f"{path}: (file): cannot read: {e.strerror}")
            continue
        if rb.id != path.stem:
            lib.problems.append(f"{path}: id: {rb.id!r} must match the file name {path.stem!r}")
            continue
        if rb.id in seen:
            lib.problems.append(f"{path}: id: {rb.id!r} is also defined in {seen[rb.id]}")
            continue
        seen[rb.id] = str(path)
        lib.runbooks[rb.id] = rb
    return lib
