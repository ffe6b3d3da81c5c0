"""What a user error looks like on the command line: one ``error: ...`` line on stderr, exit 2."""

from __future__ import annotations


def one_error_line(stderr: str) -> str:
    """The only non-empty line of ``stderr``, which starts with ``error: ``."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def assert_user_error(result, *fragments: str) -> str:
    """A CliRunner result of a user error whose line holds every fragment; returns the line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    line = one_error_line(result.stderr)
    for fragment in fragments:
        assert fragment in line, line
    return line
