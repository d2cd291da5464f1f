"""The command line itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from smtp_mta._cli import main


def test_cli_version_prints_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == "smtp-mta 0.1.0"


def test_cli_without_command_is_a_usage_error() -> None:
    """No subcommand: exit status 2 (argparse's usage error), message on stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "smtp_mta._cli"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "COMMAND" in proc.stderr
