"""How the commands show what a node answers: a table on a pipe."""

from __future__ import annotations

import pytest


def test_a_table_on_a_pipe_keeps_each_row_whole_and_its_text_as_sent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from p2psched.cli.show import print_table

    reason = "exited with code 1: cannot read [/data/in.png] [bold]" + " and more" * 20
    print_table(("TASK", "ERROR"), [("j-1/0", reason), ("j-1/1", None)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TASK", "ERROR"]
    assert lines[2].startswith("j-1/0") and lines[2].endswith(reason)  # not wrapped, not markup
    assert lines[3] == "j-1/1"  # an empty cell leaves no trailing blanks
