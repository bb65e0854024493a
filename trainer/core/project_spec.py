"""The project spec: one versioned document (YAML or JSON) that states a whole project.

``parse_spec`` checks a spec's shape and values (unknown keys refused, every problem reported at its dotted path,
e.g. ``factors.2.source``) and returns the project's fields; ``spec_from_project`` is its inverse, so a spec read
back from a project creates an equal project. What needs the platform (is the environment id offered, are its
constructor arguments allowed, do the initial policies fit its action space) is checked by the Django side
(``trainer.project_specs``). The schema, field by field, is in the README ("Project specs").

Django-free: plain data in, plain data out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from .envs import EXTRACTORS
from .factor_sources import parse_source
from .loop_settings import LoopSettings
from .policy.config import ALGORITHMS

SPEC_VERSION = 1
EXTERNAL = "external"
MAX_SPEC_CHARS = 200_000
MAX_NODES = 5_000  # values in a spec, all levels together (a YAML alias bomb stops here)
MAX_DEPTH = 8
MAX_FACTORS = 64

_SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")
_FACTOR_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ENV_ID = re.compile(r"^[A-Za-z0-9_\-./:]{1,100}$")
_DIRECTIONS = {"higher": 1, "lower": -1}

_TOP = {
    "spec_version", "name", "slug", "instructions", "environment", "factors", "clips", "feedback", "leases",
    "quality", "loop",
}  # fmt: skip
_ENVIRONMENT = {"id", "kwargs", "episode_steps", "initial_policies", "algorithm", "observation", "action"}
_FACTOR = {"key", "label", "description", "unit", "direction", "sigma", "source"}
_CLIPS = {"length", "width", "height", "fps"}
_FEEDBACK = {"modes", "overlap", "require_full_view"}
_LEASES = {"ttl_seconds"}
_QUALITY = {"gold_rate", "repeat_rate", "qualification_size", "qualification_threshold"}


class SpecError(ValueError):
    """A spec that cannot be used; ``fields`` maps dotted paths to their problems."""

    def __init__(self, fields: Mapping[str, list[str]]) -> None:
        self.fields = {path: list(problems) for path, problems in fields.items()}
        first = next(iter(self.fields.items()), ("spec", ["invalid"]))
        super().__init__(f"the project spec is not valid: {first[0]}: {first[1][0]}")


def load_spec_text(text: str) -> Any:
    """A spec document (YAML, which includes JSON) as plain data, through ``yaml.safe_load`` only."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError({"spec": ["empty: paste or upload a YAML or JSON spec"]})
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError({"spec": [f"too long: at most {MAX_SPEC_CHARS} characters"]})
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise SpecError({"spec": [f"not valid YAML or JSON{where}"]}) from None
    return data


def _bounded(value: Any) -> None:
    # Walks with a budget, so a document whose aliases expand to millions of nodes is refused after MAX_NODES.
    budget = [MAX_NODES]

    def walk(node: Any, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0 or depth > MAX_DEPTH:
            raise SpecError({"spec": [f"too large: at most {MAX_NODES} values, nested {MAX_DEPTH} deep"]})
        if isinstance(node, Mapping):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise SpecError({"spec": [f"keys must be strings, not {key!r}"[:200]]})
                walk(item, depth + 1)
        elif isinstance(node, list):
            for item in node:
                walk(item, depth + 1)
        elif isinstance(node, str) and len(node) > 20_000:
            raise SpecError({"spec": ["a string is longer than 20000 characters"]})
        elif isinstance(node, float) and not math.isfinite(node):
            raise SpecError({"spec": ["numbers must be finite"]})
        elif node is not None and not isinstance(node, str | int | float | bool):
            raise SpecError({"spec": [f"unsupported value of type {type(node).__name__} (dates? quote them)"]})

    walk(value, 0)


class _Checker:
    """Collects every problem at its dotted path, so one answer lists them all."""

    def __init__(self) -> None:
        self.problems: dict[str, list[str]] = {}

    def fail(self, path: str, message: str) -> None:
        self.problems.setdefault(path, []).append(message)

    def section(self, raw: Any, path: str, allowed: set[str], *, required: bool = False) -> dict[str, Any]:
        if raw is None:
            if required:
                self.fail(path, "required")
            return {}
        if not isinstance(raw, Mapping):
            self.fail(path, "must be a mapping")
            return {}
        for key in sorted(set(raw) - allowed):
            self.fail(f"{path}.{key}" if path else key, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return dict(raw)

    def value(
        self,
        section: Mapping[str, Any],
        key: str,
        path: str,
        check: Callable[[Any], str | None],
        *,
        required: bool = False,
    ) -> Any:
        full = f"{path}.{key}" if path else key
        if key not in section or section[key] is None:
            if required:
                self.fail(full, "required")
            return None
        problem = check(section[key])
        if problem:
            self.fail(full, problem)
            return None
        return section[key]


def _string(max_length: int, pattern: re.Pattern[str] | None = None, what: str = "") -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a string"
        if len(value) > max_length:
            return f"at most {max_length} characters"
        if pattern is not None and not pattern.match(value):
            return what or f"must match {pattern.pattern}"
        return None

    return check


def _integer(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def _number(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return "must be a number"
        return None if low <= value <= high else f"must be between {low:g} and {high:g}"

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _shape(value: Any) -> str | None:
    if not isinstance(value, list) or not 1 <= len(value) <= 4:
        return "must be a list of 1 to 4 sizes"
    if not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 100_000 for d in value):
        return "sizes must be whole numbers from 1 to 100000"
    return None


def _action_space(check: _Checker, raw: Any, path: str) -> dict[str, Any]:
    section = check.section(raw, path, {"kind", "shape", "n", "low", "high"}, required=True)
    kind = check.value(section, "kind", path, lambda v: None if v in ("box", "discrete") else "box or discrete")
    if kind == "discrete":
        n = check.value(section, "n", path, _integer(2, 100_000), required=True)
        for key in sorted({"shape", "low", "high"} & set(section)):
            check.fail(f"{path}.{key}", "a discrete action space has only n")
        return {"kind": "discrete", "n": n}
    if kind == "box":
        shape = check.value(section, "shape", path, _shape, required=True)
        if "n" in section:
            check.fail(f"{path}.n", "a box action space has a shape, not n")
        space: dict[str, Any] = {"kind": "box", "shape": shape}
        for bound in ("low", "high"):
            value = check.value(section, bound, path, _number(-1e6, 1e6))
            if value is not None:
                space[bound] = value
        return space
    if "kind" not in section:
        check.fail(f"{path}.kind", "required")
    return {}


def _factors(check: _Checker, raw: Any) -> list[dict[str, Any]] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_FACTORS:
        check.fail("factors", f"must be a list of 1 to {MAX_FACTORS} factors")
        return None
    factors = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        path = f"factors.{index}"
        section = check.section(item, path, _FACTOR, required=True)
        key = check.value(
            section, "key", path, _string(64, _FACTOR_KEY, "lower-case letters, digits and _"), required=True
        )
        if key is not None:
            if key in seen:
                check.fail(f"{path}.key", f"repeats factor {key!r}")
            seen.add(key)
        direction = check.value(
            section, "direction", path, lambda v: None if v in _DIRECTIONS else "higher or lower", required=True
        )
        source = check.value(section, "source", path, _string(100), required=True)
        if source is not None:
            try:
                parse_source(source, EXTRACTORS)
            except ValueError as error:
                check.fail(f"{path}.source", str(error))
        factor = {
            "key": key,
            "label": check.value(section, "label", path, _string(100)) or key,
            "description": check.value(section, "description", path, _string(5_000)) or "",
            "unit": check.value(section, "unit", path, _string(32)) or "",
            "direction": _DIRECTIONS.get(direction, 1),
            "sigma": check.value(section, "sigma", path, _number(0.0, 1e6)),
            "source": source,
        }
        if factor["sigma"] is None:
            factor["sigma"] = 1.0
        factors.append(factor)
    return factors


def _loop(check: _Checker, raw: Any, algorithm: str | None) -> dict[str, Any]:
    if raw is not None and not isinstance(raw, Mapping):
        check.fail("loop", "must be a mapping of loop settings")
        return {}
    overrides = dict(raw or {})
    if algorithm is not None:
        policy = overrides.get("policy")
        if policy is not None and not isinstance(policy, Mapping):
            check.fail("loop.policy", "must be a mapping")
            return overrides
        policy = dict(policy or {})
        if "algorithm" in policy and policy["algorithm"] != algorithm:
            check.fail("loop.policy.algorithm", "contradicts environment.algorithm: state it once")
        if algorithm == "auto":
            policy.pop("algorithm", None)
        else:
            policy["algorithm"] = algorithm
        overrides["policy"] = policy
        if not policy:
            overrides.pop("policy")
    try:
        LoopSettings.from_dict(overrides)
    except ValueError as error:
        check.fail("loop", str(error))
    return overrides


def parse_spec(raw: Any) -> dict[str, Any]:
    """The project fields a spec states (keyword arguments of ``labeling.services.project_create``); raises
    SpecError listing every problem. ``raw`` is a mapping, or YAML/JSON text."""
    if isinstance(raw, str):
        raw = load_spec_text(raw)
    _bounded(raw)
    check = _Checker()
    top = check.section(raw, "", _TOP, required=True)
    if not isinstance(raw, Mapping):
        raise SpecError({"spec": ["must be a mapping with spec_version, name, environment, …"]})
    version = top.get("spec_version")
    if version is None:
        check.fail("spec_version", f"required: {SPEC_VERSION}")
    elif version != SPEC_VERSION or isinstance(version, bool):
        raise SpecError({"spec_version": [f"unsupported version {version!r}: this platform reads {SPEC_VERSION}"]})
    fields: dict[str, Any] = {
        "name": check.value(top, "name", "", _string(200), required=True),
        "slug": check.value(top, "slug", "", _string(64, _SLUG, "letters, digits, - and _")) or "",
        "instructions": check.value(top, "instructions", "", _string(20_000)) or "",
    }

    environment = check.section(top.get("environment"), "environment", _ENVIRONMENT, required=True)
    env_id = check.value(environment, "id", "environment", _string(100, _ENV_ID, "a Gymnasium id"), required=True)
    fields["env_id"] = env_id
    kwargs = check.value(environment, "kwargs", "environment", lambda v: None if isinstance(v, Mapping) else "a map")
    fields["env_kwargs"] = dict(kwargs or {})
    fields["episode_steps"] = check.value(environment, "episode_steps", "environment", _integer(2, 100_000))

    def policies(value: Any) -> str | None:
        if not isinstance(value, list) or len(value) > 32 or not all(isinstance(p, str) and p for p in value):
            return "must be a list of at most 32 policy names (random, zero:0.3, pendulum_swingup:0.5, …)"
        return None

    fields["initial_policies"] = list(check.value(environment, "initial_policies", "environment", policies) or [])
    algorithm = check.value(
        environment, "algorithm", "environment", lambda v: None if v in ALGORITHMS else "auto, sac or ppo"
    )
    if env_id == EXTERNAL:
        observation = check.section(environment.get("observation"), "environment.observation", {"shape"}, required=True)
        shape = check.value(observation, "shape", "environment.observation", _shape, required=True)
        fields["observation_space"] = {"shape": shape} if shape else {}
        fields["action_space"] = _action_space(check, environment.get("action"), "environment.action")
        for key in ("kwargs", "episode_steps", "initial_policies", "algorithm"):
            if environment.get(key):
                check.fail(f"environment.{key}", "an external project has no simulator")
    else:
        for key in ("observation", "action"):
            if key in environment:
                check.fail(f"environment.{key}", "only for external projects: a simulator states its own spaces")

    fields["factors"] = _factors(check, top.get("factors"))
    if env_id == EXTERNAL and fields["factors"] is None and "factors" not in check.problems:
        check.fail("factors", "required for an external project")

    clips = check.section(top.get("clips"), "clips", _CLIPS)
    fields["segment_steps"] = check.value(clips, "length", "clips", _integer(2, 10_000))
    fields["render_width"] = check.value(clips, "width", "clips", _integer(16, 1920))
    fields["render_height"] = check.value(clips, "height", "clips", _integer(16, 1080))
    fields["render_fps"] = check.value(clips, "fps", "clips", _integer(1, 120))

    feedback = check.section(top.get("feedback"), "feedback", _FEEDBACK)

    def modes(value: Any) -> str | None:
        ok = isinstance(value, list) and value and all(m in ("ranking", "pairwise") for m in value)
        return None if ok and len(set(value)) == len(value) else "a list of ranking and/or pairwise"

    chosen = check.value(feedback, "modes", "feedback", modes) or ["ranking", "pairwise"]
    fields["feedback_mode"] = chosen[0] if len(chosen) == 1 else "both"
    fields["overlap"] = check.value(feedback, "overlap", "feedback", _integer(1, 50)) or 1
    fields["require_full_view"] = bool(check.value(feedback, "require_full_view", "feedback", _boolean))

    leases = check.section(top.get("leases"), "leases", _LEASES)
    fields["lease_ttl_seconds"] = check.value(leases, "ttl_seconds", "leases", _integer(10, 86_400)) or 300

    quality = check.section(top.get("quality"), "quality", _QUALITY)
    for key, checker, default in (
        ("gold_rate", _number(0.0, 0.5), 0.0),
        ("repeat_rate", _number(0.0, 0.5), 0.0),
        ("qualification_size", _integer(0, 1000), 0),
        ("qualification_threshold", _number(0.0, 1.0), 0.8),
    ):
        value = check.value(quality, key, "quality", checker)
        fields[key] = default if value is None else value

    fields["loop_settings"] = _loop(check, top.get("loop"), algorithm)
    if check.problems:
        raise SpecError(check.problems)
    return fields


def spec_from_project(project: Mapping[str, Any], factors: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The spec of a project's stored fields (``parse_spec`` of it gives the same fields back)."""
    loop = {key: value for key, value in dict(project.get("loop_settings") or {}).items()}
    policy = dict(loop.get("policy") or {})
    algorithm = policy.pop("algorithm", "auto")
    if policy:
        loop["policy"] = policy
    else:
        loop.pop("policy", None)
    environment: dict[str, Any] = {"id": project["env_id"]}
    if project["env_id"] == EXTERNAL:
        environment["observation"] = dict(project.get("observation_space") or {})
        environment["action"] = dict(project.get("action_space") or {})
    else:
        environment["kwargs"] = dict(project.get("env_kwargs") or {})
        if project.get("episode_steps"):
            environment["episode_steps"] = project["episode_steps"]
        environment["initial_policies"] = list(project.get("initial_policies") or [])
        environment["algorithm"] = algorithm
    mode = project["feedback_mode"]
    clips = {"length": project["segment_steps"], "width": project["render_width"], "height": project["render_height"]}
    if project.get("render_fps"):
        clips["fps"] = project["render_fps"]
    inverse = {value: key for key, value in _DIRECTIONS.items()}
    return {
        "spec_version": SPEC_VERSION,
        "name": project["name"],
        "slug": project["slug"],
        "instructions": project.get("instructions") or "",
        "environment": environment,
        "factors": [
            {
                "key": factor["key"],
                "label": factor["label"],
                "description": factor["description"],
                "unit": factor["unit"],
                "direction": inverse[factor["direction"]],
                "sigma": factor["sigma"],
                "source": factor["source"],
            }
            for factor in factors
        ],
        "clips": clips,
        "feedback": {
            "modes": ["ranking", "pairwise"] if mode == "both" else [mode],
            "overlap": project["overlap"],
            "require_full_view": bool(project.get("require_full_view")),
        },
        "leases": {"ttl_seconds": project["lease_ttl_seconds"]},
        "quality": {
            "gold_rate": project["gold_rate"],
            "repeat_rate": project["repeat_rate"],
            "qualification_size": project["qualification_size"],
            "qualification_threshold": project["qualification_threshold"],
        },
        "loop": loop,
    }


def dump_spec(spec: Mapping[str, Any]) -> str:
    """A spec as YAML, keys in the schema's order."""
    return yaml.safe_dump(dict(spec), sort_keys=False, allow_unicode=True)
