"""Job labels and FileId strings: pure functions, checked with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.local.jobs.ids import format_file_id, job_label, parse_file_id, validate_job_id
from agent.local.jobs.runner import pick_interpreter
from cells.errors import FailedPrecondition, InvalidArgument
from cells.spec import validate_cell_name

job_ids = st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), min_size=1, max_size=256)


@given(job_ids)
def test_label_is_a_dns_label_usable_as_a_cell(job_id: str) -> None:
    label = job_label(job_id)
    validate_cell_name(f"jobs/{label}")
    assert job_label(job_id) == label


@given(job_ids, job_ids)
def test_different_ids_get_different_labels(a: str, b: str) -> None:
    if a != b:
        assert job_label(a) != job_label(b)


def test_label_examples() -> None:
    assert job_label("3f2a9c1e-0000-4000-8000-000000000001") == "3f2a9c1e-0000-4000-8000-000000000001"
    assert job_label("Job 1").startswith("job-1-") and job_label("job-1") == "job-1"
    assert job_label("../..").startswith("job-")


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_file_id_round_trip(high: int, low: int) -> None:
    text = format_file_id(high, low)
    assert parse_file_id(text) == parse_file_id(text.upper()) == (high, low)
    as_uuid = f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
    assert parse_file_id(as_uuid) == (high, low)


@pytest.mark.parametrize("bad", ["", "xyz", "0" * 31, "0" * 33, "g" * 32, "00-" * 11, "0" * 1000])
def test_bad_file_ids(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_file_id(bad)


@pytest.mark.parametrize("bad", ["", "x" * 257, "a\nb", "nul\0"])
def test_bad_job_ids(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_job_id(bad)


def test_interpreter_choice() -> None:
    found = {"python3": "/usr/bin/python3", "python3.11": "/opt/py/bin/python3.11"}
    assert pick_interpreter("", found.get) == "/usr/bin/python3"
    assert pick_interpreter("3.11", found.get) == "/opt/py/bin/python3.11"
    with pytest.raises(FailedPrecondition, match="python3.9"):
        pick_interpreter("3.9", found.get)
    for bad in ("3;rm", "../3", "3.11.2.1", "python3"):
        with pytest.raises(InvalidArgument):
            pick_interpreter(bad, found.get)
