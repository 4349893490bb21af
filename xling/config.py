"""Configs are data: dataclasses owned by their modules, composed here.

A run's config has one section per pipeline stage (`[corpus]`, `[tokenizer]`,
`[shard]`, `[model]`, `[train]`, ...). Each section is a dataclass defined in the
module that uses it, and the table of sections (name -> dataclass) is listed by
import in `xling.registry`, which sits above the tasks; this file knows no section
but `[run]`. It loads TOML, applies dotted overrides from the command line
(`model.n_layer=4`) and checks every key and type against the table it is given.
An unknown key or a wrong type is an `XlingError` naming the key and the choices.

    from xling.registry import load_config   # build_config over every section
    cfg = load_config("configs/demo.toml", ["corpus.alpha=0.5"])
    cfg.corpus.alpha            # 0.5
    print(to_toml(cfg))         # the resolved config, as written into a run
    build_section("translate", TranslateConfig, {"lr": 2e-3})   # one section from its table
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xling.errors import XlingError


@dataclasses.dataclass
class RunConfig:
    name: str = "xling"  # a label for the run, shown in reports
    seed: int = 1234  # one seed for every stage (sampling, splits of non-aligned data, init)


class Config:
    """A resolved config: one dataclass instance per section, as attributes."""

    def __init__(self, sections: dict[str, Any]):
        self._sections = sections
        for name, value in sections.items():
            setattr(self, name, value)

    def sections(self) -> dict[str, Any]:
        return dict(self._sections)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(sec) for name, sec in self._sections.items()}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`; return it (converted where lossless)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except XlingError:
                pass  # the next member of the union, else the error below names them all
        raise XlingError(f"config key {key}: {value!r} is not a {_type_name(tp)}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):  # "en,fr,de" on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise XlingError(f"config key {key}: expected a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise XlingError(f"config key {key}: expected a table like {{a = 1.0}}, got {value!r}")
        return {_coerce(key, k, key_tp): _coerce(f"{key}.{k}", v, val_tp) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise XlingError(f"config key {key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise XlingError(f"config key {key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):  # nan trained NaN weights, inf budgets never ended: no key means either
                raise XlingError(f"config key {key}: {value!r} is not a finite number; give a number such as 0.5")
            return float(value)
        raise XlingError(f"config key {key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise XlingError(f"config key {key}: expected a string, got {value!r}")
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise XlingError(f"config key {key}: {value!r} is not one of {', '.join(map(repr, choices))}")
    raise TypeError(f"unsupported config type {tp} for {key}")


def _unknown(key: str, choices: list[str]) -> XlingError:
    close = difflib.get_close_matches(key.split(".")[-1], choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return XlingError(f"unknown config key {key!r}; {hint}valid keys here: {', '.join(sorted(choices))}")


def build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    """The section `[name]` as a `cls` from a table of values: every key known, every type checked."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in values.items():
        if k not in fields:
            raise _unknown(f"{name}.{k}", sorted(fields))
        kwargs[k] = _coerce(f"{name}.{k}", v, hints[k])
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise XlingError(f"config section [{name}]: {e}") from None
    return obj


def _parse_value(text: str) -> Any:
    """A command-line value: TOML syntax if it parses (1, 0.5, true, [..]), else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(tree: dict[str, dict[str, Any]], override: str, sections: Mapping[str, type]) -> None:
    if "=" not in override:
        raise XlingError(f"override {override!r} is not key=value, e.g. model.n_layer=4")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2:
        raise XlingError(f"override key {key!r} needs a section, e.g. corpus.{key}; sections: "
                         f"{', '.join(sections)}")
    if parts[0] not in sections:
        raise _unknown(parts[0], list(sections))
    node = tree.setdefault(parts[0], {})
    for p in parts[1:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise XlingError(f"override {key!r}: {p} is not a table")
    node[parts[-1]] = _parse_value(text.strip())


def read_toml(path: str | Path, what: str = "config file") -> dict:
    """A TOML file as a dict; one XlingError naming the file for bad TOML or bytes that are not UTF-8."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise XlingError(f"{what} {path} is not valid TOML ({e}); fix it, or rebuild the run with --overwrite") \
            from None


def build_config(sections: Mapping[str, type], path: str | Path | None = None,
                 overrides: list[str] | tuple[str, ...] = (), base: dict[str, dict[str, Any]] | None = None) -> Config:
    """Defaults <- `base` (e.g. a run's saved config) <- TOML file <- dotted overrides, over the section table
    `sections` (name -> dataclass; `xling.registry.SECTIONS` lists them all)."""
    tree: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (base or {}).items()}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise XlingError(f"config file {path} does not exist; see configs/ for examples")
        loaded = read_toml(path)
        for section, values in loaded.items():
            if section not in sections:
                raise _unknown(section, list(sections))
            if not isinstance(values, dict):
                raise XlingError(f"config file {path}: {section} must be a [section]")
            _merge(tree.setdefault(section, {}), values)
    for o in overrides:
        apply_override(tree, o, sections)
    return Config({name: build_section(name, cls, tree.get(name, {})) for name, cls in sections.items()})


def _merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} to TOML")


def to_toml(cfg: Config) -> str:
    lines = []
    for name, values in cfg.to_dict().items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            if v is None:
                continue  # TOML has no null: absent means the default (None)
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)
