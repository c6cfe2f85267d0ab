"""Every command line's --help: a plain description (no reStructuredText markup), and the training flags with
what each does, its default and its allowed values; a value outside a fixed set is refused naming them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cftclip_core import cli, score_job
from cftclip_core.proof import cli as proof_cli
from cftclip_core.specs.training import FIELD_CHOICES, LOSSES, TrainConfig, field_help
from train_jobs import cli as jobs_cli

TRAIN = ["train", "--train", "t.csv", "--out", "run"]


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps help to the terminal: one line per flag here


def help_text(build_parser: Callable, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(("build_parser", "argv"), [
    (cli.build_parser, ["--help"]),
    (cli.build_parser, ["train", "--help"]),
    (jobs_cli.build_parser, ["--help"]),
    (score_job.build_parser, ["--help"]),
    (proof_cli.build_parser, ["--help"]),
], ids=["cftclip_core", "cftclip_core train", "train_jobs", "score_job", "proof"])
def test_help_exits_0_with_a_plain_description(build_parser: Callable, argv: list[str], capsys) -> None:  # noqa: ANN001
    out = help_text(build_parser, argv, capsys)
    description = out.split("\n\n")[1]
    assert "``" not in out and description.strip() and not description.startswith(("usage", "options"))


def test_train_help_says_what_each_setting_does_its_default_and_its_choices(capsys) -> None:  # noqa: ANN001
    out = help_text(cli.build_parser, ["train", "--help"], capsys)
    assert all(field_help(name) in out for name in TrainConfig.field_names())
    assert "--loss {" + ",".join(LOSSES) + "}" in out
    assert all("{" + ",".join(FIELD_CHOICES[name]) + "}" in out for name in FIELD_CHOICES)


def test_a_value_outside_a_fixed_set_is_refused_naming_the_allowed_ones(capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as exit_:
        cli.main([*TRAIN, "--loss", "bogus"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--loss: invalid choice: 'bogus'" in err and all(f"'{n}'" in err for n in LOSSES)


def test_switches_and_choices_reach_the_config() -> None:
    parser = cli.build_parser()
    config = cli.train_config(parser.parse_args([*TRAIN, "--ties-improve", "--loss", "i2t", "--text-field", "title"]))
    assert (config.ties_improve, config.loss, config.text_field) == (True, "i2t", "title")
    replica = cli.train_config(parser.parse_args([*TRAIN, "--replicate-original"]))
    assert (replica.replicate_original, replica.schedule, replica.precision) == (True, "periodic", "fp32")
    assert cli.train_config(parser.parse_args([*TRAIN, "--replicate-original", "false"])).replicate_original is False
