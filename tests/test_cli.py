"""cli.py: every script reports flag mistakes and user errors on one line, exit code 1."""


import pytest

import cli

from tests import helpers

SCRIPTS = ["create_pretraining_data.py", "run_pretraining.py", "run_classifier.py", "run_squad.py",
           "extract_features.py", "build_vocab.py", "convert_checkpoint.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_flag_mistakes_are_one_line(script):
    for args, expected in (((), "must have a value other than None"),
                           (("--no_such_flag=1",), "Unknown command line flag 'no_such_flag'")):
        result = helpers.run_script(script, *args, timeout=120)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"{script}: error: ") and expected in last, last


def test_describe_error_keeps_one_line():
    assert cli.describe_error(ValueError("first line\nsecond")) == "first line"
    error = FileNotFoundError(2, "No such file or directory", "/no/file")
    assert cli.describe_error(error) == "/no/file: No such file or directory"
