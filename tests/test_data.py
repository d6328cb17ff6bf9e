"""Tests for thr.data.problems: packaged benchmarks, answer normalisation, local files, error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thr.data.problems import BENCHMARKS, Problem, answer_to_str, last_boxed, load_benchmark, load_problems

SHARED = Path("/work/shared/data")
EXPECTED_ROWS = {
    "math500": 500,
    "aime24": 30,
    "aime25": 30,
    "amc23": 40,
    "gsm8k": 1319,
    "minerva_math": 272,
    "olympiadbench": 675,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_benchmark_loads_with_nonempty_answers(name: str) -> None:
    problems = load_problems(name)
    assert len(problems) == EXPECTED_ROWS[name]
    assert all(isinstance(p, Problem) and p.source == name for p in problems)
    assert all(p.problem.strip() and p.answer.strip() for p in problems)
    assert len({p.id for p in problems}) == len(problems)
    assert all("$" not in p.answer or "\\$" in p.answer for p in problems), "math delimiters left in answers"


def test_registry_matches_packaged_files() -> None:
    assert set(BENCHMARKS) == set(EXPECTED_ROWS)
    for spec in BENCHMARKS.values():
        assert spec.path().is_file()
        shared = SHARED / "benchmarks" / spec.filename
        if shared.is_file():
            assert shared.read_bytes() == spec.path().read_bytes(), f"{spec.filename} is not a verbatim copy"


def test_answer_formats_are_normalised() -> None:
    aime24 = {p.id: p.answer for p in load_benchmark("aime24")}
    raw24 = [json.loads(line) for line in BENCHMARKS["aime24"].path().read_text().splitlines()]
    padded = [r for r in raw24 if r["answer"].startswith("0")]
    assert padded and all(aime24[str(r["id"])] == str(int(r["answer"])) for r in padded)  # "025" -> "25"
    assert load_benchmark("aime25")[0].answer == "70"  # int
    amc = [p.answer for p in load_benchmark("amc23")]
    assert amc[0] == "27" and "-1" in amc and not any(a.endswith(".0") for a in amc)  # floats
    gsm = load_benchmark("gsm8k")
    assert gsm[0].answer == "18" and gsm[0].problem.startswith("Janet")
    assert "1450000" in {p.answer for p in gsm} and not any("," in p.answer for p in gsm)
    assert all(p.answer.lstrip("-").replace(".", "", 1).isdigit() for p in gsm)
    minerva = load_benchmark("minerva_math")
    assert [p.answer for p in minerva[:2]] == ["1.6", "4.5e33"]  # last \boxed{} of the solution
    olymp = {p.id: p for p in load_benchmark("olympiadbench")}
    multi = [p.answer for p in olymp.values() if p.meta["is_multiple_answer"]]
    assert "69,84" in multi and "(1,8,19), (2,7,13), (4,5,7)" in multi
    assert any(p.meta.get("unit") for p in olymp.values())
    math500 = load_benchmark("math500")
    assert math500[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)" and math500[0].id == "test/precalculus/807.json"


def test_last_boxed_and_answer_to_str() -> None:
    assert last_boxed("so $\\boxed{\\frac{1}{2}}$ and \\boxed{x^{2}+1}.") == "x^{2}+1"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("thus \\boxed 9$ done") == "9"
    assert last_boxed("set \\boxed{\\{1,2\\}}") == "\\{1,2\\}"
    assert last_boxed("no box") is None and last_boxed("\\boxed{unclosed") is None
    assert answer_to_str(27.0) == "27" and answer_to_str(0.5) == "0.5" and answer_to_str(12) == "12"
    assert answer_to_str(["$1$", "2"]) == "1, 2" and answer_to_str(" $x$ ") == "x"
    assert answer_to_str("He pays\n#### 1,200") == "1200"


@pytest.mark.skipif(not (SHARED / "train" / "math_train.jsonl").is_file(), reason="shared MATH train file absent")
def test_math_train_file_loads() -> None:
    path = SHARED / "train" / "math_train.jsonl"
    problems = load_problems(str(path))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(problems) == len(rows) == 7496
    assert all(p.answer == r["answer"] for p, r in zip(problems, rows))
    assert problems[0].id == "train/algebra/0.json" and problems[0].source == "math_train"
    assert "solution" in problems[0].meta and "level" in problems[0].meta


def test_answer_from_boxed_solution_when_no_answer_field(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    rows = [
        {"problem": "1+1?", "solution": "It is $\\boxed{2}$."},
        {"problem": "half?", "solution": "First \\boxed{1}, finally \\boxed{\\frac{1}{2}}"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = load_problems(str(path))
    assert [p.answer for p in problems] == ["2", "\\frac{1}{2}"]
    assert [p.id for p in problems] == ["0", "1"]


def test_field_mapping_json_parquet_and_nested(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"q": f"What is {i}+{i}?", "gt": i + i, "uid": f"u{i}"} for i in range(5)]
    jpath = tmp_path / "data.json"
    jpath.write_text(json.dumps({"data": rows}))
    ppath = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows), ppath)
    for path in (jpath, ppath):
        problems = load_problems(str(path), problem_field="q", answer_field="gt", limit=3)
        assert [p.answer for p in problems] == ["0", "2", "4"] and problems[1].problem == "What is 1+1?"
        assert problems[0].meta["uid"] == "u0"
    verl = tmp_path / "verl.jsonl"
    verl_row = {"prompt": [{"role": "user", "content": "2*3?"}], "reward_model": {"ground_truth": "6"}}
    verl.write_text(json.dumps(verl_row) + "\n")
    (p,) = load_problems(str(verl))
    assert (p.problem, p.answer) == ("2*3?", "6")


def test_limit_shuffle_and_duplicate_ids(tmp_path: Path) -> None:
    first = load_problems("gsm8k", limit=5)
    assert [p.id for p in first] == ["0", "1", "2", "3", "4"]
    a = load_problems("gsm8k", limit=5, shuffle=True, seed=1)
    assert [p.id for p in a] == [p.id for p in load_problems("gsm8k", limit=5, shuffle=True, seed=1)]
    assert [p.id for p in a] != [p.id for p in first]
    path = tmp_path / "dup.jsonl"
    path.write_text("".join(json.dumps({"id": 7, "question": f"q{i}", "answer": i}) + "\n" for i in range(3)))
    assert [p.id for p in load_problems(str(path))] == ["7", "7#1", "7#2"]


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "a", "answer": "1"}\n\n{"problem": "b"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 3: missing answer field 'answer'"):
        load_problems(str(path))
    with pytest.raises(ValueError, match=r"line 1: missing problem field 'text'"):
        load_problems(str(path), problem_field="text")
    path.write_text('{"problem": "a", "answer": ""}\n')
    with pytest.raises(ValueError, match=r"line 1: empty answer"):
        load_problems(str(path))
    path.write_text('{"problem": "a", "answer": "1"}\n{not json\n')
    with pytest.raises(ValueError, match=r"line 2: invalid JSON"):
        load_problems(str(path))


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown benchmark 'math501'; known benchmarks: math500, aime24"):
        load_problems("math501")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no rows"):
        load_problems(str(empty))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_problems(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="only a test split"):
        load_problems("math500", split="train")


def test_hf_dataset_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"could not load Hugging Face dataset 'no-org/no-dataset'.*local"):
        load_problems("no-org/no-dataset")


def test_arith_source() -> None:
    problems = load_problems("arith", split="test", limit=4)
    assert len(problems) == 4 and all(p.source == "arith" and p.answer.isdigit() for p in problems)
    assert len({p.id for p in problems}) == 4


def test_missing_field_hint_uses_the_callers_key(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "1+1", "solution_text": "2"}\n')
    with pytest.raises(ValueError, match=r"set answer_field=NAME"):
        load_problems(str(path))
    with pytest.raises(ValueError, match=r"set data\.answer_field=NAME"):
        load_problems(str(path), key_prefix="data.")
    path.write_text('{"text": "1+1", "answer": "2"}\n')
    with pytest.raises(ValueError, match=r"set data\.problem_field=NAME"):
        load_problems(str(path), key_prefix="data.")
