"""The one config mechanism of every entry point (``thr train``, ``eval``, ``analyze``, ``report``,
the TRL adapter's ``thr_*`` fields and the verl plugin's ``THR_*`` environment variables).

A config is a dataclass (``TrainConfig``, ``EvalConfig``, ``AnalyzeConfig``, ``ReportConfig``,
``THRSettings``). Its fields are typed (``bool``, ``int``, ``float``, ``str``, ``X | None``,
``list[...]``, ``Literal[...]`` for a fixed set of choices, or a nested dataclass: ``cfg.thr.p``)
and documented once, in the class docstring, as ``name: text`` lines (``a, b: text`` for several;
a subclass inherits its bases' docs). From those two facts this module builds everything else:

- :func:`load_config`: values come, in increasing priority, from the dataclass defaults, a YAML
  preset (``--config file.yaml``) and command-line overrides written either as ``key=value``
  (``thr.p=0.2``) or as ``--key value`` / ``--key=value`` (``--thr.p 0.2``, dashes or
  underscores). Unknown keys raise ``ValueError`` naming the key, where it came from and the
  closest valid names; values are converted to the field's type, and a bad value (a ``Literal``
  choice included) names the field, the type and the choices.
- :func:`check_choices`: the ``Literal`` fields of a config built in code, checked from the types.
- :func:`from_env`: the same conversion from environment variables (the verl plugin).
- :func:`usage`: ``--help`` of a command: every field with its type, default and doc.

Why not a library (OmegaConf/Hydra, tyro, simple-parsing, jsonargparse): each would replace
these ~300 lines with a dependency that brings its own CLI syntax (tyro and simple-parsing take
``--thr.p 0.2`` but not ``thr.p=0.2``; Hydra takes ``thr.p=0.2`` but owns the working directory
and logging), and none reads ``Literal`` choices, docs and nested sections from a plain dataclass
any better than this loader does. The dataclasses stay plain, so the TRL adapter can hand the same
fields and docs to ``transformers.HfArgumentParser``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric field, written into its type (``Annotated[int, Range(ge=1)]``) and
    checked by the loader like a ``Literal``'s choices: ``ge``/``gt`` below, ``le``/``lt`` above."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __str__(self) -> str:
        bounds = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
        return ",".join(f"{op}{b:g}" for op, b in bounds if b is not None)

    def check(self, value: Any, where: str) -> None:
        """Raise ``ValueError`` naming ``where`` when ``value`` is out of bounds."""
        if not isinstance(value, (int, float)):
            return
        if self.gt is not None and self.lt is not None and not self.gt < value < self.lt:
            raise ValueError(f"{where} must be in ({self.gt:g}, {self.lt:g}), got {value}")
        if self.gt is not None and self.le is not None and not self.gt < value <= self.le:
            raise ValueError(f"{where} must be in ({self.gt:g}, {self.le:g}], got {value}")
        for bound, ok, word in ((self.ge, lambda b: value >= b, ">="), (self.gt, lambda b: value > b, ">"),
                                (self.le, lambda b: value <= b, "<="), (self.lt, lambda b: value < b, "<")):
            if bound is not None and not ok(bound):
                raise ValueError(f"{where} must be {word} {bound:g}, got {value}")


# Numeric field types with their bounds (the loader checks them; ``--help`` shows them).
PositiveInt = Annotated[int, Range(ge=1)]
Count = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(gt=0, le=1)]
Strength = Annotated[float, Range(gt=-1, lt=1)]


def _split_annotated(tp: Any) -> tuple[Any, list[Range]]:
    if typing.get_origin(tp) is Annotated:
        base, *meta = typing.get_args(tp)
        return base, [m for m in meta if isinstance(m, Range)]
    return tp, []


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def convert_value(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (often a string from the command line) to the annotated type ``tp``
    (``Literal`` choices and ``Annotated`` :class:`Range` bounds are checked)."""
    tp, ranges = _split_annotated(tp)
    if ranges:
        out = convert_value(value, tp, where)
        for r in ranges:
            r.check(out, where)
        return out
    tp, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in {"none", "null", ""}):
        if optional or value is None:
            return None
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(str(value).replace("_", "")) if isinstance(value, str) else int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            return str(value)
        if origin is typing.Literal:
            allowed = typing.get_args(tp)
            if value not in allowed:
                raise ValueError(f"{where}={value!r} is not valid; choose one of {list(allowed)}")
            return value
        if origin in (list, tuple):
            (inner,) = typing.get_args(tp)[:1] or (str,)
            if isinstance(value, str):
                items = [v.strip() for v in value.strip("[]()").split(",") if v.strip()]
            else:
                items = list(value)
            out = [convert_value(v, inner, where) for v in items]
            return tuple(out) if origin is tuple else out
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (ValueError, TypeError) as err:
        if str(err).startswith(where):
            raise
        raise ValueError(f"{where}: cannot read {value!r} as {getattr(tp, '__name__', tp)}") from None
    return value


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if close:
        return f" Did you mean {', '.join(repr(c) for c in close)}?"
    return f" Valid keys: {', '.join(sorted(valid))}."


def apply_overrides(cfg: T, overrides: dict[str, Any], source: str, prefix: str = "") -> T:
    """Return a copy of dataclass ``cfg`` with dotted ``overrides`` applied (validated)."""
    updates: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    types_ = _field_types(type(cfg))
    for key, value in overrides.items():
        norm = key.replace("-", "_")
        head, _, rest = norm.partition(".")
        if head not in types_:
            raise ValueError(f"{source}: unknown config key {prefix + key!r}.{_suggest(head, list(types_))}")
        sub = getattr(cfg, head)
        if dataclasses.is_dataclass(sub):
            if rest:
                nested.setdefault(head, {})[rest] = value
            elif isinstance(value, dict):
                nested.setdefault(head, {}).update(value)
            else:
                raise ValueError(f"{source}: {key!r} is a section; set its fields as {key}.FIELD=VALUE")
        else:
            if rest:
                raise ValueError(f"{source}: {head!r} has no sub-keys (got {key!r})")
            updates[head] = convert_value(value, types_[head], f"{source}: {prefix}{key}")
    for head, sub_over in nested.items():
        updates[head] = apply_overrides(getattr(cfg, head), sub_over, source, prefix=f"{prefix}{head}.")
    new = dataclasses.replace(cfg, **updates)
    return new


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not k.endswith("_map"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    with path.open() as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping of config keys, got {type(data).__name__}")
    return data


def parse_cli(argv: list[str]) -> tuple[str | None, dict[str, Any]]:
    """Split argv into (``--config`` path, {dotted key: raw string value})."""
    config_path = None
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            body = arg[2:]
            if "=" in body:
                key, value = body.split("=", 1)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--") and "=" not in argv[i + 1]:
                key, value = body, argv[i + 1]
                i += 1
            else:
                key, value = body, "true"  # bare flag: --resume
            key = key.replace("-", "_")
            if key == "config":
                config_path = value
            else:
                overrides[key] = value
        elif "=" in arg:
            key, value = arg.split("=", 1)
            overrides[key.replace("-", "_")] = value
        else:
            raise ValueError(f"command line: cannot read {arg!r}; write overrides as key=value or --key value")
        i += 1
    return config_path, overrides


def load_config(cls: type[T], argv: list[str] | None = None, preset: str | Path | None = None) -> T:
    """Build ``cls`` from defaults, an optional YAML preset and command-line overrides, validated."""
    argv = list(argv or [])
    config_path, cli_over = parse_cli(argv)
    cfg = cls()
    for path in [p for p in (preset, config_path) if p is not None]:
        cfg = apply_overrides(cfg, _flatten(load_yaml(path)), str(path))
    cfg = apply_overrides(cfg, cli_over, "command line")
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a (nested) config dataclass, for logging and YAML dumps."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ----------------------------------------------------------------------------- --help from the docstrings

_DOC_ENTRY = re.compile(r"^\s*([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*:(?:\s+(.*))?$")


def field_docs(cls: type) -> dict[str, str]:
    """``{field: doc}`` parsed from the docstrings of dataclass ``cls`` and its dataclass bases.

    The docstring documents fields as ``name: text`` lines (after an optional ``Attributes:``
    line), ``a, b: text`` for several fields at once, with continuation lines below. Each doc is
    returned on one line, with RST double backticks removed.
    """
    docs: dict[str, str] = {}
    for base in reversed([c for c in cls.__mro__ if dataclasses.is_dataclass(c)]):
        docs.update(_own_field_docs(base, {f.name for f in dataclasses.fields(cls)}))
    return docs


def _own_field_docs(cls: type, names: set[str]) -> dict[str, str]:
    lines = inspect.cleandoc(cls.__dict__.get("__doc__") or "").splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.strip() == "Attributes:"), 0)
    docs: dict[str, list[str]] = {}
    current: list[str] = []
    for line in lines[start:]:
        entry = _DOC_ENTRY.match(line)
        keys = [k.strip() for k in entry.group(1).split(",")] if entry else []
        if keys and all(k in names for k in keys):
            current = [entry.group(2) or ""]
            for k in keys:
                docs[k] = current  # shared: continuation lines reach every name of the entry
        elif line.strip() and current:
            current.append(line.strip())
    clean = lambda text: re.sub(r":\w+:`([^`]*)`", r"\1", text.replace("``", ""))  # noqa: E731
    return {k: clean(" ".join(" ".join(v).split())) for k, v in docs.items()}


def _type_name(tp: Any) -> str:
    tp, _ = _split_annotated(tp)
    tp, optional = _unwrap_optional(tp)
    if typing.get_origin(tp) is typing.Literal:
        name = "|".join(str(a) for a in typing.get_args(tp))
    elif typing.get_origin(tp) in (list, tuple):
        name = f"list[{_type_name((typing.get_args(tp) or (str,))[0])}]"
    else:
        name = getattr(tp, "__name__", str(tp))
    return f"{name}|none" if optional else name


def _first_sentence(doc: str) -> str:
    """``doc`` up to its first full stop outside parentheses (``e.g.``/``i.e.`` are not stops)."""
    depth = 0
    for i, ch in enumerate(doc):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "." and depth <= 0 and doc[i + 1 : i + 2] in ("", " ") and not doc[max(0, i - 3) : i].endswith(("e.g", "i.e")):
            return doc[: i + 1]
    return doc


def options_help(cfg: Any, prefix: str = "") -> list[str]:
    """One line per option of config dataclass instance ``cfg`` (nested sections included):
    ``--key  type  default value  first sentence of its doc`` (see :func:`field_docs`)."""
    cls = type(cfg)
    docs, types_ = field_docs(cls), _field_types(cls)
    lines: list[str] = []
    sections = []
    for f in dataclasses.fields(cls):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            sections.append((f.name, value))
            continue
        default = "''" if value == "" else str(value).lower() if isinstance(value, bool) else str(value)
        bounds = "".join(f" [{r}]" for r in _split_annotated(types_[f.name])[1])
        lines.append(f"  --{prefix}{f.name:<{max(1, 28 - len(prefix))}} {_type_name(types_[f.name]):<8} "
                     f"default {default:<10} {_first_sentence(docs.get(f.name) or '(undocumented)')}{bounds}")
    for name, section in sections:
        summary = inspect.cleandoc(type(section).__doc__ or "").split("\n", 1)[0]
        lines += ["", f"{prefix}{name}.*: {summary}", *options_help(section, f"{prefix}{name}.")]
    return lines


def usage(cfg: Any, command: str, summary: str, where: str) -> str:
    """``thr COMMAND --help``: every option of config instance ``cfg`` (see :func:`options_help`)."""
    head = [
        f"usage: thr {command} [--config file.yaml] [key=value | --key value ...]",
        "",
        summary,
        "Values come from the defaults below, then the --config YAML preset, then the command line.",
        "",
        f"options (full docs: {where}):",
    ]
    return "\n".join(head + options_help(cfg))


def check_choices(cfg: Any, prefix: str = "") -> None:
    """Raise ``ValueError`` for a field of ``cfg`` (nested sections included) whose value is not one
    of its ``Literal`` choices or outside its :class:`Range` (the loader checks both already; this
    covers configs built in code)."""
    types_ = _field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_choices(value, f"{prefix}{f.name}.")
            continue
        tp, ranges = _split_annotated(types_[f.name])
        for r in ranges:
            r.check(value, f"{prefix}{f.name}")
        tp, optional = _unwrap_optional(tp)
        if typing.get_origin(tp) is typing.Literal and not (optional and value is None):
            allowed = typing.get_args(tp)
            if value not in allowed:
                raise ValueError(f"{prefix}{f.name}={value!r} is not valid; choose one of {list(allowed)}")


def from_env(cls: type[T], env: dict[str, str], prefix: str) -> T:
    """``cls`` from environment variables ``PREFIX + FIELD`` (upper case; unset or empty: the default),
    converted and checked like the command line."""
    over = {f.name: env[prefix + f.name.upper()] for f in dataclasses.fields(cls) if env.get(prefix + f.name.upper())}
    return apply_overrides(cls(), over, f"environment ({prefix}*)")
