"""Bad values and paths on the command line: one line, exit 1, nothing created; a failed check exits 1 too."""

from __future__ import annotations

import pytest
from enginefixtures import main_in_process, one_error_line

main = main_in_process


def test_failures_exit_non_zero(tmp_path, monkeypatch, capsys):
    from PIL import Image

    data = tmp_path / "data"
    for folder, name in (("bounding_box_train", "0001_c1s1_000001_00.jpg"), ("query", "0002_c1s1_000001_00.jpg"),
                         ("bounding_box_test", "0002_c2s1_000002_00.jpg")):
        (data / folder).mkdir(parents=True)
        Image.new("RGB", (16, 32)).save(data / folder / name)
    (data / "bounding_box_train" / "0003_c1s1_000001_00.jpg").write_bytes(b"not a jpeg")
    code, _, err = main(monkeypatch, capsys, "data", "check", "cuhk03", "--data-root", data, "--decode")
    assert code == 1 and "cannot be decoded" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, _ = main(monkeypatch, capsys, "doctor", "--runs-dir", blocker / "runs")  # main() keeps the code
    assert code == 1 and "missing" in out


@pytest.mark.parametrize("args, words", [
    (["run", "demo", "--name", "x" * 300], ["invalid run name", "128"]),
    (["show", "x" * 300], ["invalid run name"]),
    (["run", "demo", "--set", "data.height=0"], ["data.height must be between 8 and 1,024"]),
    (["run", "demo", "--set", "data.eval_batch=0"], ["data.eval_batch must be between 1 and"]),
    (["run", "demo", "--set", "run.threads=-1"], ["run.threads must be between 0 and"]),
    (["run", "demo", "--set", "cluster.k1=0"], ["cluster.k1 must be between 1 and 1,000"]),
    (["run", "demo", "--set", "optim.lr=nan"], ["optim.lr must be a finite number"]),
    (["run", "demo", "--arch", "resnet51"], ["model.arch must be one of", "resnet50"]),
    (["run", "dmeo"], ["did you mean demo", "presets:"]),
    (["run", "demo", "--set", "cluster.knn_backend=fais"], ["one of", "faiss"]),
    (["run", "demo", "--set", "data.sampler=random"], ["data.sampler must be one of"]),
])
def test_bad_values_are_one_line_and_create_nothing(tmp_path, monkeypatch, capsys, args, words):
    code, _, err = main(monkeypatch, capsys, *args, "--runs-dir", tmp_path / "runs")
    line = one_error_line(err)
    assert code == 1 and all(w in line for w in words), line
    assert not (tmp_path / "runs").exists()


def test_visrank_into_a_file_is_refused_before_any_work(tmp_path):
    from oaecmlr.cli.visrank import check_folder
    from oaecmlr.errors import CliError

    with pytest.raises(CliError, match="is a file, not a folder"):
        check_folder("/etc/passwd")
    assert check_folder(tmp_path / "new" / "ranks") == tmp_path / "new" / "ranks"
