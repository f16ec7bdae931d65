"""A run directory: its checkpoints, `best/`, eval_history.jsonl and training state, kept consistent through kills
and resumes; and what a checkpoint's run directory says of it.
"""

import contextlib
import json
import os
import socket

import tensorflow as tf
from absl import logging

import errors
import files
import google_checkpoint

# The run file that names where training started: {"pretrained_weight": a Hub id, a path, or null}.
START_FILE = "start.json"
# The file that names the process training in a run directory: {"host": ..., "pid": ...}.
LOCK_FILE = "lock"
# Step checkpoints kept besides `best`; older ones are deleted (a KR-BERT base checkpoint is ~0.4 GB).
KEEP_STEP_CHECKPOINTS = 5


class RunDirectory:
    """A run's files, kept consistent through kills and resumes.

    - `run_config.json` (the recipe), `start.json` (the start) and any other run files, written with the directory,
      all at once.
    - `step-N`: a Google-format checkpoint per evaluation; the newest `keep_step_checkpoints` are kept.
    - `best/`: the checkpoint of the best KorSTS dev Spearman so far, named by its `checkpoint` state file.
    - `eval_history.jsonl`: one record per evaluation, rewritten atomically.
    - `state/`: the training state, checkpoint number = step (saved by the caller's CheckpointManager).
    - `lock`: the host and process training in the directory, while it does (`held`).

    An evaluation is saved in this order: step checkpoint, best candidate, history, (training state), then
    `best/` is pointed at the best of the history. The state is the commit: a run killed anywhere in between
    resumes from the state before, and `resume` cuts everything back to it, so no evaluation is lost or
    repeated and `best/` always names a step the history holds.
    """

    def __init__(self, path, keep_step_checkpoints=KEEP_STEP_CHECKPOINTS):
        self.path = path
        self.keep_step_checkpoints = keep_step_checkpoints
        self.config_path = os.path.join(path, "run_config.json")
        self.history_path = os.path.join(path, "eval_history.jsonl")
        self.best_dir = os.path.join(path, "best")
        self.state_dir = os.path.join(path, "state")
        self.lock_path = os.path.join(path, LOCK_FILE)

    def exists(self):
        return files.exists(self.path)

    @contextlib.contextmanager
    def held(self):
        """The directory held by this process while the block runs, through its `lock` file: errors.TrainingError
        naming the holder if another process holds it. A lock left by a process of this host that no longer runs is
        taken over, with a warning. Exclusive on the local disk; on a bucket, which creates no file exclusively, a
        check then a write."""
        holder = {"host": socket.gethostname(), "pid": os.getpid()}
        while not files.create_exclusively(self.lock_path, json.dumps(holder) + "\n"):
            other = self.lock_holder()
            if other.get("host") != holder["host"] or is_running(other.get("pid")):
                raise errors.TrainingError(
                    f"{self.path} is in use by process {other.get('pid', '?')} on {other.get('host', '?')} (its lock "
                    f"file {self.lock_path}): wait until it ends, or remove the lock file if it has"
                )
            logging.warning("%s was held by process %s, which no longer runs: taken over", self.path, other["pid"])
            files.remove(self.lock_path)
        try:
            yield
        finally:
            # Gone if the block removed the directory (a run stopped before its first evaluation).
            if files.exists(self.lock_path) and self.lock_holder() == holder:
                files.remove(self.lock_path)

    def lock_holder(self):
        """The lock file's {"host", "pid"}; {} if it is gone, being written, or not a lock."""
        try:
            holder = files.read_json(self.lock_path)
        except (errors.InputError, OSError, *errors.FILE_SYSTEM_ERRORS):
            return {}
        return holder if isinstance(holder, dict) else {}

    def create(self, run_files):
        """Makes the directory with `run_files` ({name: JSON value for a .json name, text otherwise}) in it, all
        at once (`files.renamed_into_place`)."""
        with files.renamed_into_place(self.path) as temporary:
            files.makedirs(temporary)
            for name, value in run_files.items():
                if name.endswith(".json"):
                    files.write_json_atomically(os.path.join(temporary, name), value)
                else:
                    files.write_text_atomically(os.path.join(temporary, name), value)

    def start(self):
        """start.json's {"pretrained_weight": ...}; {} for a run made before training wrote it."""
        path = os.path.join(self.path, START_FILE)
        return files.read_json(path) if files.exists(path) else {}

    def check_recipe(self, run_config):
        """Raises errors.TrainingError unless the directory was made by a run of `run_config`."""
        if not files.exists(self.config_path):
            raise errors.TrainingError(
                f"{self.path} exists but is not a run directory (no run_config.json): choose another run name"
            )
        saved = files.read_json(self.config_path)
        if not isinstance(saved, dict):
            raise errors.TrainingError(f"{self.config_path} is not a JSON object")
        differences = [
            f"{key} {saved.get(key)!r} -> {run_config.get(key)!r}"
            for key in sorted(set(saved) | set(run_config))
            if saved.get(key) != run_config.get(key)
        ]
        if differences:
            raise errors.TrainingError(
                f"{self.path} was made with another recipe ({'; '.join(differences)}): "
                "rerun with its flags to resume, or choose another run name"
            )

    def saved_state(self):
        """The prefix of the newest training state, or None."""
        return tf.train.latest_checkpoint(self.state_dir)

    def best_checkpoint(self):
        """The prefix of the checkpoint in best/, or None."""
        return tf.train.latest_checkpoint(self.best_dir)

    def readable_state(self):
        """The prefix of the newest training state that reads whole, or None if there is none. A damaged newest
        state (a disk that filled, a file cut short) is passed over for the one saved before it (training keeps two,
        training.KEEP_STATES), with a warning; errors.TrainingError if none reads."""
        saved = tf.train.get_checkpoint_state(self.state_dir)
        prefixes = list(reversed(saved.all_model_checkpoint_paths)) if saved else []
        for prefix in prefixes:
            problem = unreadable(prefix)
            if problem is None:
                return prefix
            logging.warning("training state %s cannot be read (%s): passed over", prefix, problem)
        if prefixes:
            raise errors.TrainingError(
                f"no training state in {self.state_dir} can be read: remove {self.path} to start the run again"
            )
        return None

    def history(self):
        """The records of eval_history.jsonl; errors.TrainingError naming the line if one is not a record."""
        if not files.exists(self.history_path):
            return []
        records = []
        for number, line in enumerate(files.read_lines(self.history_path), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                record = error
            if not (isinstance(record, dict) and isinstance(record.get("step"), int)):
                raise errors.TrainingError(
                    f"{self.history_path} line {number} is not an evaluation record: restore the file, or "
                    "choose another run name"
                )
            records.append(record)
        return records

    def write_history(self, history):
        files.write_text_atomically(
            self.history_path, "".join(json.dumps(record, allow_nan=False) + "\n" for record in history)
        )

    def step_checkpoints(self):
        """The steps of the step-N checkpoints, ascending."""
        prefix = os.path.join(self.path, "step-")
        return sorted(int(path[len(prefix) : -len(".index")]) for path in files.glob(f"{prefix}*.index"))

    def remove_step_checkpoint(self, step):
        for path in files.glob(os.path.join(self.path, f"step-{step}.*")):
            files.remove(path)

    def resume(self, step):
        """Cuts the directory back to what it was when the state of `step` was saved; returns the history."""
        # What a killed save left behind: temporary files, never a checkpoint that is in use.
        for path in files.glob(os.path.join(self.path, f"*{files.TEMPORARY_SUFFIX}*")) + files.glob(
            os.path.join(self.best_dir, f"*{files.TEMPORARY_SUFFIX}*")
        ):
            files.remove(path)
        history = self.history()
        kept = [record for record in history if record["step"] <= step]
        if len(kept) < len(history):
            self.write_history(kept)
        for saved in self.step_checkpoints():
            if saved > step:
                self.remove_step_checkpoint(saved)
        self.point_best_at(best_step(kept))
        return kept

    def save_evaluation(self, record, encoder, history):
        """Writes the evaluation `record` of `encoder`: its step checkpoint (pruning the oldest), the checkpoint
        for `best/` if it is the best so far (not yet pointed at), and `history` with the record appended."""
        step = record["step"]
        google_checkpoint.save_checkpoint(encoder, os.path.join(self.path, f"step-{step}"))
        for old in self.step_checkpoints()[: -self.keep_step_checkpoints]:
            self.remove_step_checkpoint(old)
        history.append(record)
        if best_step(history) == step:
            google_checkpoint.save_checkpoint(encoder, os.path.join(self.best_dir, f"model.ckpt-{step}"))
        self.write_history(history)

    def point_best_at(self, step):
        """Makes `best/` hold the checkpoint of `step` alone (None: no checkpoint), switching its state file
        atomically before anything is deleted."""
        keep = os.path.join(self.best_dir, f"model.ckpt-{step}")
        if step is not None and files.exists(f"{keep}.index"):
            # The state file tf.train.latest_checkpoint reads, naming the checkpoint relative to best/ (so the run
            # directory can be moved), written here: TensorFlow's writer turns a name relative to a relative or URL
            # directory into one relative to the current directory ("../../../model.ckpt-N").
            name = os.path.basename(keep)
            files.write_text_atomically(
                os.path.join(self.best_dir, "checkpoint"),
                f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n',
            )
        else:
            keep = None
            if files.exists(os.path.join(self.best_dir, "checkpoint")):
                files.remove(os.path.join(self.best_dir, "checkpoint"))
        for path in files.glob(os.path.join(self.best_dir, "model.ckpt-*")):
            if keep is None or not path.startswith(f"{keep}."):
                files.remove(path)


def unreadable(prefix):
    """Why the checkpoint at `prefix` cannot be read whole (every tensor, its checksum checked), or None."""
    try:
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)  # the prefix as it is: ram:// would call it a directory
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError) as error:  # IndexError: a data file cut short
        return errors.one_line(error)
    return None


def is_running(pid):
    """Whether a process `pid` of this host runs (True for what is not a process id: it cannot be told)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def state_step(prefix):
    """The step of a training state's checkpoint prefix (`.../ckpt-N`: checkpoint number = step); 0 for None."""
    return int(prefix.rsplit("-", 1)[1]) if prefix else 0


def checkpoint_run(prefix):
    """(run_config, eval_history.jsonl record) of a checkpoint training saved (`RUN/step-N`, `RUN/best/model.ckpt-N`);
    (None, None) for any other checkpoint."""
    for directory in (os.path.dirname(prefix), os.path.dirname(os.path.dirname(prefix))):
        run = RunDirectory(directory)
        if files.exists(run.config_path):
            step = state_step(prefix)
            return files.read_json(run.config_path), next((r for r in run.history() if r["step"] == step), None)
    return None, None


def best_step(history):
    """The step of the first record with the highest KorSTS dev Spearman; None if no record has one."""
    scored = [record for record in history if record["korsts_spearman"] is not None]
    return max(scored, key=lambda record: record["korsts_spearman"])["step"] if scored else None
