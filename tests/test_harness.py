"""The run harness (the text below `# === Run harness` in ac.py, a2c.py, a3c.py, ddpg.py, td3.py and sac.py): one
text in every script, and what a user meets with it, tried as a user would: through the command line or train(), on
sac.py (the copy every other script's is compared with) and, where it costs a few seconds, on every script."""

import errno
import glob
import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import REPO, run_script

import sac
from sac import Args, train

SCRIPTS = ["ac", "a2c", "a3c", "ddpg", "td3", "sac"]
TINY = dict(env_id="Pendulum-v1", total_timesteps=40, learning_starts=20, batch_size=8, buffer_size=100,
            eval_every=1000, eval_episodes=1, log_every=10, checkpoint_every=20, cuda=False)
TINY_CLI = {  # a run of a second or two of each script, on the command line
    "sac": "--env-id Pendulum-v1 --total-timesteps 40 --learning-starts 20 --batch-size 8 --eval-episodes 1",
    "td3": "--env-id Pendulum-v1 --total-timesteps 40 --learning-starts 20 --batch-size 8 --eval-episodes 1",
    "ddpg": "--env-id Pendulum-v1 --total-timesteps 40 --learning-starts 20 --batch-size 8 --eval-episodes 1",
    "ac": "--total-timesteps 64 --num-envs 4 --eval-episodes 1",
    "a2c": "--total-timesteps 160 --num-envs 4 --eval-episodes 1",
    "a3c": "--total-timesteps 160 --num-envs 4 --num-workers 1 --eval-episodes 1",
}


def test_the_harness_is_one_text_in_every_script():
    result = subprocess.run([sys.executable, os.path.join(REPO, "tests", "sync_harness.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_copies_are_compared_for_real(tmp_path):
    """The check above fails on a copy that differs by one character (a test that cannot fail checks nothing)."""
    for name in ["sac.py", "td3.py", *[f"{s}.py" for s in SCRIPTS]]:
        os.makedirs(tmp_path / "tests", exist_ok=True)
        with open(os.path.join(REPO, name)) as f:
            (tmp_path / name).write_text(f.read())
    (tmp_path / "tests" / "sync_harness.py").write_text(open(os.path.join(REPO, "tests", "sync_harness.py")).read())
    text = (tmp_path / "td3.py").read_text()
    (tmp_path / "td3.py").write_text(text.replace("def last_good(self) -> str:", "def last_good(self)  -> str:"))
    result = subprocess.run([sys.executable, str(tmp_path / "tests" / "sync_harness.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "td3.py" in result.stderr


def test_resume_of_a_finished_run_says_how_to_extend_it_and_exits_0():
    path = train(Args(**TINY))["checkpoint"]
    result = run_script("sac.py", "--resume", path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.strip() == (f"{path} is finished (40 steps); to train it longer: python sac.py --resume "
                                     f"{path} --total-timesteps N (N > 40)")


def test_a_larger_budget_trains_a_finished_run_longer():
    path = train(Args(**TINY))["checkpoint"]
    metrics = train(Args(resume=path, total_timesteps=60, cuda=False))
    checkpoint = torch.load(path, weights_only=True)
    assert metrics["global_step"] == 60 and checkpoint["global_step"] == 60 and checkpoint["finished"]
    assert checkpoint["args"]["total_timesteps"] == 60 and metrics["num_updates"] == 40  # 20 random, 40 learning


def test_resume_with_other_settings_names_each_one():
    path = train(Args(**TINY))["checkpoint"]
    result = run_script("sac.py", "--resume", path, "--total-timesteps", "200", "--q-lr", "0.1", "--seed", "7")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == (f"error: --resume {path}: not the run's settings: --seed 7 (the run's: 1), "
                                     "--q-lr 0.1 (the run's: 0.0003)")
    result = run_script("sac.py", "--resume", path, "--total-timesteps", "20")
    assert result.returncode == 1 and result.stderr.strip() == (f"error: --resume {path}: --total-timesteps 20 is "
                                                                "below the run's 40")


def test_resume_may_change_threads_cuda_and_checkpoint_every():
    path = train(Args(**TINY | {"total_timesteps": 60, "checkpoint_every": 20}))["checkpoint"]
    os.replace(path, path + ".done")
    torch.save(torch.load(path + ".done", weights_only=True) | {"finished": False, "global_step": 40}, path)
    result = run_script("sac.py", "--resume", path, "--threads", "2", "--checkpoint-every", "5", "--no-cuda")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"device: cpu; resuming {path} at step 40\n")


@pytest.mark.parametrize("script", SCRIPTS)
def test_resume_and_evaluate_together_is_one_error_line(script):
    result = run_script(f"{script}.py", "--resume", "a.pt", "--evaluate", "a.pt")
    assert result.returncode == 1 and result.stderr.strip() == (
        "error: --resume and --evaluate exclude each other: resume to train on, evaluate to watch")


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_env_id_of_a_missing_package_names_the_package(script):
    result = run_script(f"{script}.py", "--env-id", "ALE/Pong-v5")
    assert result.returncode == 1 and result.stderr.strip() == (
        "error: unknown --env-id 'ALE/Pong-v5' (not in gymnasium's registry; ALE ids come with `pip install ale-py`)")


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_run_location_that_cannot_be_written_is_one_error_line(script):
    open("runs", "w").close()  # a file where the runs/ folder should be (root can write a read-only folder)
    result = run_script(f"{script}.py", *TINY_CLI[script].split())
    assert result.returncode == 1 and result.stdout.strip() in ("", "device: cpu"), result.stdout
    assert re.fullmatch(r"error: cannot make the folder runs/\S+: Not a directory", result.stderr.strip()), \
        result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_checkpoint_of_another_version_is_one_error_line_not_a_traceback(script):
    """A checkpoint written before the 'finished' entry existed (sac.py and td3.py at cfe013b: the MuJoCo matrix's)."""
    assert run_script(f"{script}.py", *TINY_CLI[script].split()).returncode == 0
    checkpoint = torch.load(glob.glob("runs/*/checkpoint.pt")[0], weights_only=True)
    del checkpoint["finished"]
    torch.save(checkpoint, "old.pt")
    result = run_script(f"{script}.py", "--resume", "old.pt")
    assert result.returncode == 1 and result.stderr.strip() == (
        f"error: --resume old.pt: no 'finished' entry: another version of {script}.py wrote it; use that version")


def test_a_checkpoint_without_a_network_is_one_error_line_on_resume_and_on_evaluate():
    checkpoint = torch.load(train(Args(**TINY))["checkpoint"], weights_only=True)
    del checkpoint["actor"]
    torch.save(checkpoint | {"finished": False}, "old.pt")
    for flag in ("--resume", "--evaluate"):
        result = run_script("sac.py", flag, "old.pt")
        assert result.returncode == 1 and result.stderr.strip() == (
            f"error: {flag} old.pt: no 'actor' entry: another version of sac.py wrote it; use that version")


def test_a_resume_folder_that_cannot_be_written_is_one_error_line(monkeypatch):
    path = train(Args(**TINY | {"total_timesteps": 60, "checkpoint_every": 20}))["checkpoint"]
    monkeypatch.setattr(sac.os, "access", lambda p, mode: False)
    with pytest.raises(SystemExit) as exit_:
        train(Args(resume=path, total_timesteps=80, cuda=False))
    assert exit_.value.code == f"error: --resume {path}: cannot write in the run folder {os.path.dirname(path)}"


def test_a_checkpoint_that_cannot_be_written_keeps_the_previous_one(monkeypatch, capsys):
    saves = []
    real_save = torch.save

    def disk_full_at_the_second(obj, path):
        saves.append(path)
        if len(saves) == 2:
            with open(path, "wb") as f:  # half a file, then the disk is full
                f.write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, path)

    monkeypatch.setattr(sac.torch, "save", disk_full_at_the_second)
    with pytest.raises(SystemExit) as exit_:
        train(Args(**TINY | {"checkpoint_every": 10}))
    (path,) = glob.glob("runs/*/checkpoint.pt")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1 and err[0].startswith(f"error: cannot write {path} (")
    assert "No space left on device" in err[0] and err[0].endswith(f"; stopped. The last good checkpoint: {path}")
    assert torch.load(path, weights_only=True)["global_step"] == 10  # the previous checkpoint, whole


def test_capture_video_prints_the_folder_and_never_overwrites_one():
    path = train(Args(**TINY | {"capture_video": True}))["checkpoint"]
    run_dir = os.path.dirname(path)
    assert glob.glob(f"{run_dir}/videos/*.mp4")
    for k, folder in enumerate(["videos-eval", "videos-eval-2"]):
        result = run_script("sac.py", "--evaluate", path, "--capture-video", "--eval-episodes", "1")
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert result.stdout.strip().splitlines()[-1] == f"videos: {run_dir}/{folder}"
        assert len(glob.glob(f"{run_dir}/videos-eval*/*.mp4")) == k + 1


def test_the_closing_lines_name_what_was_written(capsys):
    metrics = train(Args(**TINY))
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "device: cpu" and re.fullmatch(r"finished 40 steps in 0:00:\d\d \([\d,]+ steps/s learning\); "
                                                    r"final evaluation return -?[\d.]+", out[-3])
    assert out[-2:] == [f"run folder: {metrics['run_dir']}   (tensorboard --logdir runs)",
                        f"checkpoint: {metrics['checkpoint']}"]


def test_a_budget_of_no_whole_iterations_is_rounded_down_and_said(capsys):
    metrics = train(Args(**TINY | {"num_envs": 3}))
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["device: cpu", "note: --total-timesteps 40 rounded to 39 (whole iterations of 3 steps)"]
    assert metrics["global_step"] == 39
