"""Whole numbers people type reach the database only within its range (32-bit on PostgreSQL)."""

from __future__ import annotations

import pytest

from annotations.db import MAX_INTEGER
from annotations.importer import get_dataset
from annotations.labeling import LabelingError, set_annotation_settings
from cftclip_core.errors import DataError
from train_jobs import cli as jobs_cli


@pytest.mark.parametrize("typed", [str(10**23), str(MAX_INTEGER + 1), "0", "-3", "seven"])
@pytest.mark.parametrize("command", ["cancel", "resume"])
def test_a_run_id_out_of_range_is_refused_by_the_command_line(typed: str, command: str, capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as stopped:
        jobs_cli.build_parser().parse_args([command, typed])
    assert stopped.value.code == 2
    assert f"'{typed}' is not an id: give a whole number from 1 to {MAX_INTEGER}" in capsys.readouterr().err


@pytest.mark.parametrize("value", [10**23, MAX_INTEGER + 1, 2**63])
def test_dataset_settings_out_of_range_change_nothing(factory, instance, value: int) -> None:  # noqa: ANN001
    from annotations.importer import ensure_demo_dataset

    demo = ensure_demo_dataset(instance, factory)
    for field in ("overlap", "lease_minutes"):
        with pytest.raises(LabelingError, match="whole number from"):
            set_annotation_settings(factory, demo.id, **{field: value})
    with factory() as session:
        again = get_dataset(session, demo.id)
        assert (again.overlap, again.lease_minutes) == (demo.overlap, demo.lease_minutes)
        with pytest.raises(DataError, match="No dataset with id"):
            get_dataset(session, value)  # a lookup by a huge id finds nothing instead of failing
