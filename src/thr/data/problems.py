"""Problem sets for training and evaluation: packaged math benchmarks, local files, HF datasets.

Every source becomes a list of :class:`Problem` (``id``, ``problem``, ``answer``, ``source``,
``meta``) with the gold ``answer`` as a plain string that ``thr.verifier.verify`` can compare.

Sources accepted by :func:`load_problems`:

- a packaged benchmark name (see :data:`BENCHMARKS`): ``math500``, ``aime24``, ``aime25``,
  ``amc23``, ``gsm8k``, ``minerva_math``, ``olympiadbench``; each file's answer format is
  normalised (zero-padded AIME strings, int/float answers, GSM8K's ``#### n`` line, the
  ``\\boxed{}`` of a solution, OlympiadBench's answer lists);
- ``columns``, ``arith``: the built-in tasks (``thr.data.tasks``);
- a ``.jsonl`` / ``.json`` / ``.parquet`` path, with optional field names; by default the
  problem comes from ``problem``/``question``/``prompt`` and the answer from
  ``answer``/``final_answer``/``gt_answer``/``reward_model.ground_truth``, else from the last
  ``\\boxed{}`` of ``solution``;
- a Hugging Face dataset name (``org/name`` or ``org/name:config``), loaded with
  ``datasets.load_dataset`` when the hub is reachable.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from thr.verifier import last_boxed as _last_boxed

PROBLEM_FIELDS = ("problem", "question", "prompt")
ANSWER_FIELDS = ("answer", "final_answer", "gt_answer", "reward_model.ground_truth")
SOLUTION_FIELDS = ("solution",)
ID_FIELDS = ("id", "unique_id", "idx")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass
class Problem:
    """One problem with its gold answer (a string), where it came from and the other row fields."""

    id: str
    problem: str
    answer: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (JSON-serialisable when ``meta`` is)."""
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- answer helpers


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text`` (brace-matched), or None.

    The same rule as the verifier's (:func:`thr.verifier.last_boxed`): escaped braces are
    literal characters, ``\\boxed 9`` (no braces) gives the following token, and a truncated or
    empty last box gives None. Used for gold answers written inside worked solutions.
    """
    return _last_boxed(text)[1]


def _strip_dollars(text: str) -> str:
    """Remove unescaped ``$`` math delimiters (``$69$,$84$`` -> ``69,84``)."""
    return re.sub(r"(?<!\\)\$", "", text).strip()


def answer_to_str(value: Any) -> str:
    """Normalise a raw answer value: ints as-is, integral floats without ``.0``, lists joined by
    ``", "``, strings stripped (a whole-string ``$...$`` wrapper removed, a GSM8K-style
    ``#### n`` tail reduced to ``n``). Returns ``""`` for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (list, tuple)):
        parts = [answer_to_str(v) for v in value]
        return ", ".join(p for p in parts if p)
    text = str(value).strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip().replace(",", "")
    if len(text) >= 2 and text.startswith("$") and text.endswith("$") and "$" not in text[1:-1]:
        text = text[1:-1].strip()
    return text


def _aime_answer(row: dict[str, Any]) -> str:
    text = answer_to_str(row["answer"])
    return str(int(text)) if text.isdigit() else text  # "025" -> "25"


def _gsm8k_answer(row: dict[str, Any]) -> str:
    raw = str(row["answer"])
    if "####" not in raw:
        raise KeyError("answer (no '#### <number>' line)")
    return raw.rsplit("####", 1)[1].strip().replace(",", "")  # "1,450,000" -> "1450000"


def _boxed_solution_answer(row: dict[str, Any]) -> str:
    boxed = last_boxed(str(row["solution"]))
    if boxed is None:
        raise KeyError("solution (no \\boxed{...} in it)")
    return _strip_dollars(boxed)  # one Minerva box holds a stray "$ $"


def _olympiad_answer(row: dict[str, Any]) -> str:
    values = row["final_answer"]
    values = values if isinstance(values, list) else [values]
    return ", ".join(_strip_dollars(str(v)) for v in values if str(v).strip())


def _olympiad_problem(row: dict[str, Any]) -> str:
    context = row.get("context")
    question = str(row["question"])
    return f"{context}\n{question}" if context else question


@dataclass(frozen=True)
class BenchmarkSpec:
    """How to read one packaged benchmark file."""

    name: str
    filename: str
    problem: Callable[[dict[str, Any]], str]
    answer: Callable[[dict[str, Any]], str]
    id_field: str
    answer_format: str  # human-readable, shown in docs and errors

    def path(self) -> Path:
        """Location of the packaged JSONL file."""
        return Path(str(resources.files("thr.data") / "benchmark_data" / self.filename))


def _field(name: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: str(row[name])


def _plain_answer(row: dict[str, Any]) -> str:
    return answer_to_str(row["answer"])


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("math500", "math500.jsonl", _field("problem"), _plain_answer, "unique_id", "LaTeX string"),
        BenchmarkSpec("aime24", "aime24.jsonl", _field("problem"), _aime_answer, "id", "zero-padded string -> int"),
        BenchmarkSpec("aime25", "aime25.jsonl", _field("problem"), _aime_answer, "id", "int"),
        BenchmarkSpec("amc23", "amc23.jsonl", _field("problem"), _plain_answer, "id", "float -> 27.0 as '27'"),
        BenchmarkSpec("gsm8k", "gsm8k.jsonl", _field("question"), _gsm8k_answer, "idx", "'#### n' tail, no commas"),
        BenchmarkSpec(
            "minerva_math", "minerva_math.jsonl", _field("problem"), _boxed_solution_answer, "idx", "solution's \\boxed{}"
        ),
        BenchmarkSpec(
            "olympiadbench", "olympiadbench.jsonl", _olympiad_problem, _olympiad_answer, "id", "list of $..$, joined"
        ),
    )
}


# ----------------------------------------------------------------------------- readers


def _read_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location label, row) from a .jsonl / .json / .parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {lineno}: invalid JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}: line {lineno}: expected a JSON object, got {type(row).__name__}")
                yield f"line {lineno}", row
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON at line {err.lineno} ({err.msg})") from None
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise ValueError(f"{path}: expected a list of objects (or an object holding exactly one list)")
            data = lists[0]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of objects, got {type(data).__name__}")
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise ValueError(f"{path}: item {i}: expected a JSON object, got {type(row).__name__}")
            yield f"item {i}", row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"row {i}", row
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}")


def _get(row: dict[str, Any], dotted: str) -> Any:
    """``row["a"]["b"]`` for ``"a.b"``; KeyError when any part is missing."""
    value: Any = row
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def _problem_text(value: Any) -> str:
    """A problem string; chat-style message lists give their last user message."""
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        users = [m for m in value if m.get("role") == "user"] or value
        return str(users[-1].get("content", "")).strip()
    return str(value).strip()


def _row_to_problem(
    row: dict[str, Any],
    where: str,
    source: str,
    index: int,
    problem_field: str | None,
    answer_field: str | None,
    key_prefix: str = "",
) -> Problem:
    """Map one generic row to a Problem (field lookup, answer normalisation).

    ``key_prefix`` is how the caller's config spells the field options (``data.`` in
    ``thr train``), used in the hints of the errors."""
    p_fields = (problem_field,) if problem_field else PROBLEM_FIELDS
    p_name = next((f for f in p_fields if _has(row, f)), None)
    if p_name is None:
        hint = "" if problem_field else f"; set {key_prefix}problem_field=NAME"
        raise ValueError(f"{where}: missing problem field {_or(p_fields)} (row has {sorted(row)}){hint}")
    a_fields = (answer_field,) if answer_field else ANSWER_FIELDS
    a_name = next((f for f in a_fields if _has(row, f) and _get(row, f) is not None), None)
    if a_name is not None:
        answer = answer_to_str(_get(row, a_name))
        if a_name in SOLUTION_FIELDS or "\\boxed" in answer or "\\fbox" in answer:
            answer = last_boxed(answer) or answer
    elif not answer_field and "solution" in row and isinstance(row["solution"], str):
        a_name, answer = "solution", last_boxed(row["solution"]) or ""
    else:
        hint = "" if answer_field else f"; set {key_prefix}answer_field=NAME"
        raise ValueError(f"{where}: missing answer field {_or(a_fields)} (row has {sorted(row)}){hint}")
    if not answer:
        raise ValueError(f"{where}: empty answer in field {a_name!r}; fix or drop that row")
    problem = _problem_text(_get(row, p_name))
    if not problem:
        raise ValueError(f"{where}: empty problem in field {p_name!r}; fix or drop that row")
    row_id = next((str(row[f]) for f in ID_FIELDS if f in row and row[f] is not None), str(index))
    used = {p_name.split(".")[0], a_name.split(".")[0]}
    meta = {k: v for k, v in row.items() if k not in used}
    return Problem(id=row_id, problem=problem, answer=answer, source=source, meta=meta)


def _has(row: dict[str, Any], dotted: str) -> bool:
    try:
        _get(row, dotted)
    except KeyError:
        return False
    return True


def _or(names: tuple[str, ...]) -> str:
    return " / ".join(repr(n) for n in names)


def _unique_ids(problems: list[Problem]) -> list[Problem]:
    """Make ids unique (resume keys on them): repeated ids get ``#<n>`` suffixes."""
    seen: dict[str, int] = {}
    for p in problems:
        count = seen.get(p.id, 0)
        seen[p.id] = count + 1
        if count:
            p.meta.setdefault("original_id", p.id)
            p.id = f"{p.id}#{count}"
    return problems


# ----------------------------------------------------------------------------- loaders


def load_benchmark(name: str) -> list[Problem]:
    """All problems of a packaged benchmark (see :data:`BENCHMARKS`)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    path = spec.path()
    problems = []
    for where, row in _read_rows(path):
        try:
            text, answer = spec.problem(row).strip(), spec.answer(row)
        except KeyError as err:
            raise ValueError(f"{path}: {where}: missing field {err.args[0]!r} ({name}: {spec.answer_format})") from None
        if not answer:
            raise ValueError(f"{path}: {where}: empty answer ({name}: {spec.answer_format})")
        meta = {k: v for k, v in row.items() if k not in ("problem", "question")}
        problems.append(Problem(str(row.get(spec.id_field, len(problems))), text, answer, name, meta))
    return _unique_ids(problems)


def load_file(
    path: str | Path, *, problem_field: str | None = None, answer_field: str | None = None, source: str | None = None,
    key_prefix: str = "",
) -> list[Problem]:
    """Problems from a .jsonl / .json / .parquet file (field names: see module docstring; ``key_prefix``:
    see :func:`load_problems`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    label = source or path.stem
    problems = [
        _row_to_problem(row, f"{path}: {where}", label, i, problem_field, answer_field, key_prefix)
        for i, (where, row) in enumerate(_read_rows(path))
    ]
    if not problems:
        raise ValueError(f"{path}: the file has no rows")
    return _unique_ids(problems)


def load_task(name: str, split: str = "test", seed: int = 0, **task: Any) -> list[Problem]:
    """A built-in task's split (``columns`` or ``arith``) as Problems; ``task`` are the fields of
    the task's config (``thr.data.tasks.columns.ColumnsConfig``, ``thr.data.tasks.arith.ArithConfig``)."""
    from thr.data.tasks import TASKS

    if name not in TASKS:
        raise ValueError(f"unknown built-in task {name!r}; choose one of {sorted(TASKS)}")
    rows = TASKS[name].load_split(split, seed=seed, **task)
    problems = []
    for i, row in enumerate(rows):
        meta = {k: v for k, v in row.items() if k not in ("problem", "answer")}
        meta["builtin_task"] = name  # what thr.data.tasks.checker_for keys on (a file's label never sets it)
        row_id = str(row.get("id", f"{split}-{i}"))
        problems.append(Problem(row_id, row["problem"], answer_to_str(row["answer"]), name, meta))
    return _unique_ids(problems)


def load_hf_dataset(
    name: str, *, split: str | None = None, problem_field: str | None = None, answer_field: str | None = None,
    key_prefix: str = "",
) -> list[Problem]:
    """Problems from a Hugging Face hub dataset ``org/name`` or ``org/name:config`` (needs network)."""
    import datasets

    repo, _, config = name.partition(":")
    try:
        ds = datasets.load_dataset(repo, config or None, split=split)
    except Exception as err:  # hub errors vary by version: offline, not found, gated...
        raise ValueError(
            f"could not load Hugging Face dataset {name!r} ({type(err).__name__}: {err}). "
            "Without network access, download the data elsewhere and pass a local .jsonl/.json/.parquet "
            "path, or use a packaged benchmark: " + ", ".join(BENCHMARKS)
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        raise ValueError(f"dataset {name!r} has splits {list(ds)}; choose one with split=NAME")
    problems = [
        _row_to_problem(dict(row), f"{name}[{split}]: row {i}", repo.split("/")[-1], i, problem_field, answer_field,
                        key_prefix)
        for i, row in enumerate(ds)
    ]
    if not problems:
        raise ValueError(f"dataset {name!r} split {split!r} has no rows")
    return _unique_ids(problems)


def load_problems(
    source: str,
    *,
    split: str | None = None,
    problem_field: str | None = None,
    answer_field: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    shuffle: bool = False,
    key_prefix: str = "",
) -> list[Problem]:
    """Load problems from a benchmark name, a built-in task (``columns``, ``arith``), a local
    file or a HF dataset name.

    ``split`` applies to the built-in tasks (default ``"test"``) and HF datasets; ``seed`` seeds
    the built-in task's generator and ``shuffle``. ``limit`` keeps the first ``limit`` problems (after the
    optional seeded shuffle), so evaluations with a limit stay comparable across models.
    ``key_prefix`` is prepended to ``problem_field``/``answer_field`` in error hints (``data.`` for
    ``thr train``, whose keys are ``data.problem_field``/``data.answer_field``).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit}")
    source = str(source).strip()
    looks_like_path = source.lower().endswith(FILE_SUFFIXES) or Path(source).exists()
    if source in BENCHMARKS:
        if split not in (None, "test"):
            raise ValueError(f"benchmark {source!r} has only a test split (got split={split!r})")
        problems = load_benchmark(source)
    elif source in ("columns", "arith"):
        problems = load_task(source, split or "test", seed=seed)
    elif looks_like_path:
        problems = load_file(source, problem_field=problem_field, answer_field=answer_field, key_prefix=key_prefix)
    elif "/" in source:
        problems = load_hf_dataset(source, split=split, problem_field=problem_field, answer_field=answer_field,
                                   key_prefix=key_prefix)
    else:
        raise ValueError(
            f"unknown benchmark {source!r}; known benchmarks: {', '.join(BENCHMARKS)}, columns, arith. "
            "Other sources: a .jsonl/.json/.parquet path or a Hugging Face dataset name 'org/name'"
        )
    if shuffle:
        random.Random(seed).shuffle(problems)
    return problems[:limit] if limit is not None else problems
