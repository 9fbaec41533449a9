import os
import subprocess
import sys

from tests.images import png
from zest.service.cli import main


def test_templates_lists_sets(capsys):
    assert main(["templates"]) == 0
    out = capsys.readouterr().out
    assert "imagenet" in out and "80" in out


def test_classify_prints_a_table(tiny_checkpoint, tmp_path, capsys):
    path = tmp_path / "red.png"
    path.write_bytes(png("red", (40, 40)))
    code = main(["classify", str(path), "--labels", "cat,dog,car", "--top-k", "2",
                 "--model", f"local-dir:{tiny_checkpoint}", "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(str(path))]
    assert len(rows) == 2 and all(any(l in r for l in ("cat", "dog", "car")) for r in rows)


def test_errors_are_one_line_not_a_trace(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["classify", str(bad), "--labels", "a,b"]) == 2
    assert "not a decodable image" in capsys.readouterr().err
    assert main(["classify", str(bad), "--labels", "a,a"]) == 2
    good = tmp_path / "good.png"
    good.write_bytes(png("black", (8, 8)))
    assert main(["classify", str(good), "--labels", "a,b", "--model", "NoSuchArch/random"]) == 2
    assert "unknown open_clip architecture" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "zest.service.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "classify" in out.stdout


def test_serve_passes_the_environment_on_unchanged(monkeypatch):
    """`zest serve` used to force HF_HUB_OFFLINE=1 onto the server, so that no hub spec could download."""
    import zest.service.cli as cli

    calls = []

    class Server:  # stands in for the `bentoml serve` process
        def __init__(self, cmd, **kwargs):
            calls.append((cmd, kwargs))

        def wait(self):
            return 0

    monkeypatch.setattr(cli.subprocess, "Popen", Server)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("ZEST_SOME_SETTING", "kept")
    assert main(["serve", "--port", "3999"]) == 0
    (cmd, kwargs), = calls
    assert cmd[-4:] == ["--host", "127.0.0.1", "--port", "3999"]
    env = kwargs["env"]
    assert "HF_HUB_OFFLINE" not in env and env["ZEST_SOME_SETTING"] == "kept"
    assert set(env) - set(os.environ) == {"ZEST_FATAL_FILE"}  # where a worker that cannot start says why
