"""Configuration: pyhocon confs with CASE_NAME substitution and strict key checking.

Every key a module needs is read through `Conf.get`, which raises `ConfigError` naming the key and
the conf file when it is missing. After set-up, `Conf.check_all_read()` raises for keys that no
module read (a typo, or a stale option), so a conf can never silently carry an ignored setting.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pyhocon import ConfigFactory, ConfigTree, HOCONConverter

_MISSING = object()


class ConfigError(KeyError):
    """A missing, unknown or ill-typed conf key; the message names the key and the file."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class Conf:
    """A view on a pyhocon tree that records which leaf keys were read."""

    def __init__(self, tree: ConfigTree, source: str, prefix: str = "", _read: set | None = None):
        self.tree = tree
        self.source = source
        self.prefix = prefix
        self._read = _read if _read is not None else set()

    @classmethod
    def from_file(cls, path: str | Path, case: str | None = None, overrides: str = "") -> "Conf":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"conf file not found: {path} (pass --conf confs/<name>.conf)")
        text = _inline_includes(path)
        if case is not None:
            text = text.replace("CASE_NAME", case)
        if overrides:
            text = text + "\n" + overrides
        return cls(_parse(text, f"{path} (with its --override lines)" if overrides else str(path)), str(path))

    @classmethod
    def from_string(cls, text: str, source: str = "<string>") -> "Conf":
        return cls(_parse(text, source), source)

    def _full(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def has(self, key: str) -> bool:
        return self.tree.get(key, _MISSING) is not _MISSING

    def get(self, key: str, type_: type | tuple | None = None) -> Any:
        """The value at `key` (dotted); raises ConfigError when absent or of the wrong type."""
        value = self.tree.get(key, _MISSING)
        full = self._full(key)
        if value is _MISSING:
            raise ConfigError(f"missing conf key '{full}' in {self.source}: add it (see confs/synthetic.conf)")
        if isinstance(value, ConfigTree):
            raise ConfigError(f"conf key '{full}' in {self.source} is a section, a value was expected")
        if type_ is not None:
            value = _coerce(value, type_, full, self.source)
        self._read.add(full)
        return value

    def section(self, key: str) -> "Conf":
        value = self.tree.get(key, _MISSING)
        full = self._full(key)
        if not isinstance(value, ConfigTree):
            raise ConfigError(f"missing conf section '{full}' in {self.source}")
        return Conf(value, self.source, full, self._read)

    def leaf_keys(self) -> list[str]:
        out: list[str] = []

        def walk(tree: ConfigTree, prefix: str) -> None:
            for k, v in tree.items():
                name = f"{prefix}.{k}" if prefix else k
                if isinstance(v, ConfigTree):
                    walk(v, name)
                else:
                    out.append(name)

        walk(self.tree, self.prefix)
        return out

    def mark_read(self) -> None:
        """Mark every key of this section as read (for a section that is switched off)."""
        self._read.update(self.leaf_keys())

    def check_all_read(self) -> None:
        """Raise ConfigError for keys present in the conf that no module read."""
        unread = sorted(k for k in self.leaf_keys() if k not in self._read)
        if unread:
            raise ConfigError(
                f"unknown conf key(s) in {self.source}: {', '.join(unread)} "
                "(no module reads them: fix the spelling or remove them)"
            )

    def to_text(self) -> str:
        return HOCONConverter.to_hocon(self.tree)


def _parse(text: str, source: str) -> ConfigTree:
    """pyhocon's parse with its many exception types turned into one named ConfigError."""
    try:
        tree = ConfigFactory.parse_string(text)
    except Exception as exc:  # pyparsing / pyhocon raise several unrelated types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"cannot parse {source}: {first[:200]} (HOCON syntax: key = value, section {{ ... }})") from exc
    if not isinstance(tree, ConfigTree):
        raise ConfigError(f"cannot parse {source}: the top level must be key = value lines")
    return tree


INCLUDE_RE = re.compile(r'^\s*include\s+"([^"]+)"\s*$', re.MULTILINE)


def _inline_includes(path: Path, depth: int = 0) -> str:
    """Text of `path` with `include "other.conf"` lines replaced by that file (relative to path).

    Inlining before CASE_NAME substitution lets an included base conf use CASE_NAME too; later
    keys override earlier ones, as in HOCON.
    """
    if depth > 8:
        raise ConfigError(f"include nesting too deep at {path}")

    def repl(m: re.Match) -> str:
        inc = path.parent / m.group(1)
        if not inc.is_file():
            raise ConfigError(f"{path}: included conf not found: {inc}")
        return _inline_includes(inc, depth + 1)

    return INCLUDE_RE.sub(repl, path.read_text())


def _coerce(value: Any, type_: type | tuple, key: str, source: str) -> Any:
    """Light type check: ints are accepted for floats, lists are returned as lists."""
    types = type_ if isinstance(type_, tuple) else (type_,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if list in types and not isinstance(value, list):
        value = list(value) if isinstance(value, tuple) else value
    if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
        names = "/".join(t.__name__ for t in types)
        raise ConfigError(f"conf key '{key}' in {source} must be {names}, got {value!r}")
    return value
