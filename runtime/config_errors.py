"""Config errors as one paragraph: the key path in the config, jsonargparse's reason, and a
did-you-mean for unknown classes and arguments.

jsonargparse reports a nested failure as an indented tree of ``Parser key "k":`` and
``Problem with given class_path 'c':`` lines around the reason. ``explain_argument_error``
follows that chain through the raw config to name the exact key (list indices and dict keys
included) and, for an unknown name, lists the close matches among the accepted ones.
"""

from __future__ import annotations

import inspect
import pydoc
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.errors import ConfigError as CompilerConfigError
from compiler.errors import did_you_mean
from compiler.yamlio import load_source
from runtime import compat

# jsonargparse's error prose (runtime.compat holds every reliance on library internals)
_KEY = compat.JSONARGPARSE_KEY
_CLASS = compat.JSONARGPARSE_CLASS
_OPTION = compat.JSONARGPARSE_OPTION
_GROUP = compat.JSONARGPARSE_GROUP
_NO_ATTR = re.compile(r"module '([^']+)' has no attribute '([^']+)'")
_NO_MODULE = re.compile(r"No module named '([^']+)'")
_REQUIRED = compat.JSONARGPARSE_REQUIRED
_UNRECOGNIZED = compat.JSONARGPARSE_UNRECOGNIZED
_GOT_CLASS = compat.JSONARGPARSE_GOT_CLASS
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Expected a <class 'NoneType'>",
)


class ConfigError(CompilerConfigError):
    """A run config (or command line) that cannot be run; ``mtl-run`` exits with code 2.

    The same family as the compiler's and the data modules' errors, so one ``except``
    catches bad input from anywhere in the toolkit.
    """


@dataclass
class _Chain:
    steps: list[tuple[str, str]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def _parse(message: str) -> _Chain:
    """Structural steps (keys, classes) down the first failing branch, then the reason."""
    chain = _Chain()
    for raw in message.splitlines():
        line = raw.strip().removeprefix("- ").strip()
        if not line or any(line.startswith(n) for n in _NOISE):
            continue
        if chain.reasons and (_KEY.search(line) or _CLASS.search(line)):
            break  # a second branch: the first one is the error
        structural = False
        for match in _KEY.finditer(line):
            chain.steps.append(("key", match.group(1)))
            structural = True
        if (match := _CLASS.search(line)) is not None:
            chain.steps.append(("class", match.group(1)))
            structural = True
        if structural:
            continue
        chain.reasons.append(line)
    given = re.search(r"^\s*Given value: (.{1,80})$", message, re.MULTILINE)
    if given and chain.reasons and "Got value" not in chain.reasons[-1]:
        chain.reasons.append(f"got {given.group(1)!r}")
    return chain


def _class_nodes(node: Any, class_path: str, depth: int = 2) -> list[tuple[list[str], dict]]:
    """(relative path, node) of the config nodes below ``node`` naming ``class_path``."""
    found: list[tuple[list[str], dict]] = []
    if isinstance(node, dict) and isinstance(node.get("class_path"), str):
        given = node["class_path"]
        if given == class_path or class_path.endswith("." + given):
            found.append(([], node))
        return found
    if depth == 0:
        return found
    items: Any = ()
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    for key, child in items:
        label = f"[{key}]" if isinstance(key, int) else str(key)
        found += [([label, *p], n) for p, n in _class_nodes(child, class_path, depth - 1)]
    return found


def _join(parts: list[str]) -> str:
    return ".".join(parts).replace(".[", "[")


class _Locator:
    """Walks the raw config along a chain, collecting the key path."""

    def __init__(self, config: Any) -> None:
        self.node: Any = config
        self.path: list[str] = []
        self.cls: str | None = None

    def key(self, dotted: str) -> None:
        for part in dotted.split("."):
            if isinstance(self.node, dict) and "class_path" in self.node and part != "init_args":
                self.node = self.node.get("init_args")
                self.path.append("init_args")
            self.node = self.node.get(part) if isinstance(self.node, dict) else None
            self.path.append(part)

    def klass(self, class_path: str, hint: str | None) -> None:
        self.cls = class_path
        matches = _class_nodes(self.node, class_path) if self.node is not None else []
        if hint is not None:
            with_hint = [m for m in matches if hint in (m[1].get("init_args") or {})]
            matches = with_hint or matches
        if matches:
            rel, self.node = matches[0]
            self.path += rel


def _import(class_path: str) -> Any:
    return pydoc.locate(class_path)


def _full_class(class_path: str) -> str:
    """A short class name the way jsonargparse resolves it for optimizers and schedulers."""
    if "." in class_path:
        return class_path
    for module in ("torch.optim", "torch.optim.lr_scheduler"):
        if _import(f"{module}.{class_path}") is not None:
            return f"{module}.{class_path}"
    return class_path


def _accepted(class_path: str | None) -> list[str]:
    """Argument names a class accepts (its ``__init__`` parameters, then its bases')."""
    cls = _import(class_path) if class_path else None
    if cls is None:
        return []
    names: list[str] = []
    for klass in getattr(cls, "__mro__", (cls,)):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        names += [p.name for p in params if p.name != "self" and p.kind not in skip]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def _module_members(module_path: str) -> list[str]:
    module = _import(module_path)
    return [n for n in dir(module) if not n.startswith("_")] if module is not None else []


def first_line(exc: BaseException, default: str | None = None) -> str:
    """An exception's first message line (its class name, or ``default``, when empty)."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0]
    return type(exc).__name__ if default is None else default


def load_yaml(path: Path) -> Any:
    """The raw config to walk key paths in while explaining another error; None when it
    cannot be read (that other error is the one to report)."""
    try:
        return load_source(path, "run config", schema="1.1").doc
    except CompilerConfigError:
        return None


def read_run_config(path: Path) -> dict[str, Any]:
    """A run config file as plain data, read as jsonargparse reads it (YAML 1.1) through the
    toolkit's one YAML loader: a syntax error is reported at its line, not as a missing
    section."""
    try:
        doc = load_source(path, "run config", schema="1.1").doc
    except CompilerConfigError as exc:  # the runtime's member of the family, same message
        raise ConfigError(str(exc)) from None
    if not isinstance(doc, dict) or "model" not in doc:
        raise ConfigError(f"{path}: not a run config (no 'model' section)")
    return doc


def _nested_class(node: Any, reason: str) -> str | None:
    """The class a leaf option was given to: the ``class_path`` of the config node the key
    chain ended on (a nested class such as an optimizer), or the one jsonargparse echoes."""
    if isinstance(node, dict) and isinstance(node.get("class_path"), str):
        return node["class_path"]
    match = _GOT_CLASS.search(reason)
    return match.group(1) if match else None


def explain_argument_error(
    err: Exception, config: Any = None, top_level: dict[str, list[str]] | None = None
) -> str:
    """One paragraph: where (key path), why (jsonargparse), and close matches."""
    message = str(err)
    chain = _parse(message)
    reason = "; ".join(chain.reasons) or message.strip().splitlines()[-1]
    leaf = _OPTION.search(reason)
    locator = _Locator(config)
    steps = chain.steps
    for i, (kind, value) in enumerate(steps):
        if kind == "key":
            locator.key(value)
        else:
            nxt = next((v for k, v in steps[i + 1 :] if k == "key"), None)
            hint = nxt or (leaf.group(1).split(".")[0] if leaf else None)
            locator.klass(value, hint)
    path, hint = list(locator.path), ""
    if (m := _GROUP.search(reason)) is not None:
        path += [m.group(1), m.group(2)]
        hint = did_you_mean(m.group(2), (top_level or {}).get(m.group(1), []))
    elif leaf is not None:
        name = leaf.group(1).split(".")[0]
        nested = _nested_class(locator.node, reason)
        if nested is not None and nested != locator.cls:
            path += ["init_args", name]
            hint = did_you_mean(name, _accepted(_full_class(nested)))
            reason = f"{nested} does not accept the argument '{name}'"
            locator.cls = None
        elif locator.cls is not None:
            path += ["init_args", name]
            hint = did_you_mean(name, _accepted(locator.cls))
        else:
            path += [name]
            hint = did_you_mean(name, list((top_level or {}).get("", [])))
        reason = f"{reason} by {locator.cls}" if locator.cls else reason
    elif (m := _UNRECOGNIZED.search(reason)) is not None:
        group, _, name = m.group(1).rpartition(".")
        path += m.group(1).split(".")
        hint = did_you_mean(name, (top_level or {}).get(group, []))
        known = group in (top_level or {}) or not group
        reason = (
            f"'{name}' is not an option of '{group}'"
            if group and known
            else f"unknown option --{m.group(1)}"
        )
    elif (m := _NO_ATTR.search(reason)) is not None:
        path += ["class_path"]
        hint = did_you_mean(m.group(2), _module_members(m.group(1)))
        reason = f"unknown class '{m.group(1)}.{m.group(2)}' ({reason})"
    elif (m := _NO_MODULE.search(reason)) is not None:
        path += ["class_path"]
        reason = f"unknown class: {reason}"
    elif (m := _REQUIRED.search(reason)) is not None and locator.cls is not None:
        path += ["init_args", m.group(1).split(",")[0].strip()]
        reason = f"{reason} (by {locator.cls})"
    elif m is not None:
        reason = f"{reason} (usage: mtl-run [fit|validate|test|predict] RUN.yaml [overrides])"
    where = _join(path) if path else "(top level)"
    return f"at {where}: {reason.rstrip('.')}{hint}."
