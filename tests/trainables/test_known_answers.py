"""The known-answers command line (trainables/tools/known_answers.py) on small cases: it writes the
calibration table it prints, and the table orders the cases the way the metrics must."""

import json

import pytest

from trainables.tools import known_answers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_quality_table_is_written_and_ranks_real_digits_first(tmp_path, capsys):
    out = tmp_path / "known.json"
    assert known_answers.main(["--quality", "--n", "200", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["quality"]
    assert set(rows) == {"real", "noise", "blurred", "repeated", "one_class"}
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[:3] == ["case", "fid", "kid"] and len(printed) == 6
    for worse in ("noise", "blurred", "repeated", "one_class"):
        assert rows["real"]["fid"] < rows[worse]["fid"], worse
    assert rows["real"]["class_coverage"] > 0.9 > rows["one_class"]["class_coverage"]
    assert rows["repeated"]["class_histogram"].count(0) == 9  # one image: one predicted class


def test_bad_arguments_exit_2(capsys):
    for argv in ([], ["--quality", "--n", "3"], ["--simulation", "--simulation-repeats", "2"]):
        with pytest.raises(SystemExit) as stop:
            known_answers.main(argv)
        assert stop.value.code == 2, argv
    assert "--simulation-repeats=2" in capsys.readouterr().err
