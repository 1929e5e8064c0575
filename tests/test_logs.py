"""lmforge speaks through `logging`: the CLI's console handler keeps the verbs' streams and text, a
library user silences or captures lmforge the usual way, and only rank 0 prints under torchrun."""

import json
import logging

from conftest import TINY
from lmforge import logs
from lmforge.cli import main

logger = logging.getLogger("lmforge.test")


def test_the_console_prints_bare_messages_info_to_stdout_warnings_to_stderr(capsys):
    logs.configure()
    logger.info("model gpt: 12 parameters")
    logger.warning("warning: skipping damaged checkpoint step_000010")
    captured = capsys.readouterr()
    assert captured.out == "model gpt: 12 parameters\n"
    assert captured.err == "warning: skipping damaged checkpoint step_000010\n"


def test_under_json_every_message_goes_to_stderr_and_one_handler_remains(capsys):
    logs.configure()
    logs.configure(info_to_stderr=True)
    logger.info("sweep: grid, 0 of 4 trials done")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "sweep: grid, 0 of 4 trials done\n"
    consoles = [h for h in logging.getLogger("lmforge").handlers if isinstance(h, logs._Console)]
    assert len(consoles) == 1


def test_ranks_other_than_0_stay_quiet(capsys, monkeypatch):
    logs.configure()
    monkeypatch.setenv("RANK", "1")
    logger.warning("warning: printed N times")
    assert capsys.readouterr() == ("", "")
    monkeypatch.setenv("RANK", "0")
    logger.info("printed once")
    assert capsys.readouterr().out == "printed once\n"


def test_silenced_drops_a_subtree_and_restores_it(capsys):
    logs.configure()
    with logs.silenced("lmforge.test"):
        logger.warning("warning: not shown")
    logger.info("shown")
    assert capsys.readouterr() == ("shown\n", "")


def test_train_json_keeps_stdout_for_the_summary_and_caplog_sees_the_messages(
    char_data, tmp_path, capsys, caplog
):
    caplog.set_level(logging.INFO, logger="lmforge")
    args = ["train", "--data", str(char_data), "--out", str(tmp_path / "run"), "--json", *TINY]
    assert main([*args, "train.max_steps=3"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["steps"] == 3  # stdout holds only the summary
    assert "model gpt: " in captured.err
    assert any(r.name == "lmforge.train.loop" and "model gpt: " in r.getMessage() for r in caplog.records)
