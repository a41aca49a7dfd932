"""scripts/train.py: what it writes and what it exits with (0 trained, 1 training failed,
2 bad arguments before any work, 130 interrupted)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MOONS = ["--dataset", "moons", "--sizes", "2,8,1"]


@pytest.fixture(scope="module")
def train():
    """The script as a module: ``main(argv)`` runs in this process (no second JAX start)."""
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(train, capsys, *args):
    try:
        code = train.main(list(args))
    except SystemExit as exit:  # argparse's error: exit 2
        code = exit.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_script_runs_end_to_end_and_writes_its_files(tmp_path):
    model, plot = tmp_path / "model.npz", tmp_path / "loss.png"
    args = [*MOONS, "--steps", "200", "--batch-size", "32", "--lr", "1e-2", "--save", str(model),
            "--plot", str(plot)]  # fmt: skip
    r = subprocess.run([sys.executable, "scripts/train.py", *args], capture_output=True,
                       text=True, cwd=ROOT, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test:  accuracy" in r.stdout and "ms per step" in r.stdout
    from functional_nn import load

    net, params = load(model)
    assert net.sizes == (2, 8, 1) and net.output == "sigmoid"
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "mnist"], "invalid choice: 'mnist'"),
        (["--sizes", "4,16,1"], "--sizes starts with 4 but breast_cancer has D=30 features"),
        (["--sizes", "30,16,2"], "needs O=1 outputs"),
        (["--lr", "0"], "--lr must be > 0"),
        (["--lr=-1e-3"], "--lr must be > 0"),
        (["--save", "{tmp}/missing/m.npz"], "the folder '{tmp}/missing' does not exist"),
        (["--plot", "{tmp}/missing/loss.png"], "the folder '{tmp}/missing' does not exist"),
        (["--save", "{tmp}"], "is a folder; give a file name"),
        (["--save", "{tmp}/m.png", "--plot", "{tmp}/m.png"], "name the same file"),
        (["--plot", "{tmp}/loss.txt"], "the file name must end in one of .png"),
        (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0"),
        (["--devices", "0"], "--devices must be >= 1"),
        (["--seed", "-1"], "--seed must be >= 0"),
        ([*MOONS, "--batch-size", "10000"], "--batch-size 10000 is more than the 320 training"),
    ],
)
def test_bad_arguments_exit_2_before_any_work(train, capsys, tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    code, out, err = _main(train, capsys, *args)
    assert code == 2 and message.format(tmp=tmp_path) in err, err
    assert "training" not in out


def test_a_non_finite_loss_exits_1_with_a_clear_line_and_saves_nothing(train, capsys, tmp_path):
    model = tmp_path / "model.npz"
    code, out, _ = _main(train, capsys, *MOONS, "--optimizer", "sgd", "--lr", "1e4",
                         "--reduction", "sum", "--batch-size", "0", "--steps", "200",
                         "--save", str(model))  # fmt: skip
    assert code == 1
    assert "training stopped at step 26: the training loss is not finite" in out
    assert "Nothing saved" in out and not model.exists()


def test_a_failed_training_exits_1(train, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(train.fnn, "fit", broken)
    code, out, _ = _main(train, capsys, *MOONS, "--steps", "20")
    assert code == 1 and "training failed: RuntimeError: out of memory" in out


def test_ctrl_c_keeps_the_steps_done_and_exits_130(train, capsys, tmp_path, monkeypatch):
    fit = train.fnn.fit

    def interrupted_after_the_first_chunk(*args, callback, **kwargs):
        def ctrl_c(step, loss):
            callback(step, loss)
            raise KeyboardInterrupt

        return fit(*args, callback=ctrl_c, **kwargs)

    monkeypatch.setattr(train.fnn, "fit", interrupted_after_the_first_chunk)
    model = tmp_path / "model.npz"
    code, out, _ = _main(train, capsys, *MOONS, "--steps", "200", "--save", str(model))
    assert code == 130 and "interrupted after 20 of 200 steps" in out and model.exists()
