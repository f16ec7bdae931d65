"""What training does after each step, on the chief: every `recipe.evaluation_frequency` steps and at the last, STS
evaluation of a float32 copy of the weights, saved into the run directory (run_directory.py) with TensorBoard
scalars and the training state; on a stop request, the training state alone.
"""

import json
import math

import tensorflow as tf
from absl import logging

import model
import run_directory
import sts

# Training states kept in state/: the newest, and the one before in case the newest is damaged.
KEEP_STATES = 2


def chief_evaluation(encoder, state, recipe, config, tokenizer, evaluation_sets, run, history, summary_writer):
    """The chief's EvaluateAndCheckpoint: STS evaluation of a float32 copy of `encoder`, saved to `run`."""
    float32_encoder = model.BertEncoder(config, dtype="float32")
    return EvaluateAndCheckpoint(
        encoder,
        tf.train.CheckpointManager(state, run.state_dir, max_to_keep=KEEP_STATES),
        recipe,
        float32_encoder,
        sts.StsEvaluator(
            evaluation_sets,
            tokenizer.trimmed,  # as evaluate.py encodes
            model.sentence_embedder(float32_encoder, "cls"),
            recipe.batch_size,
        ),
        run,
        history,
        summary_writer,
    )


def history_record(step, loss, learning_rate, results):
    """A line of eval_history.jsonl from the evaluator's results; a metric that is not finite is None."""
    record = {
        "step": step,
        "loss": loss,
        "learning_rate": learning_rate,
        "klue_sts_pearson": results["klue_sts:dev"]["pearson"],
        "korsts_spearman": results["korsts:dev"]["spearman"],
    }
    for key, scores in results.items():
        name = key.split(":")[0]
        record[f"{name}_alignment"] = scores["alignment"]
        record[f"{name}_uniformity"] = scores["uniformity"]
    return record


class EvaluateAndCheckpoint:
    """Called after every step: every `recipe.evaluation_frequency` steps and at the last, STS evaluation of a
    float32 copy of the weights, the evaluation saved to the run directory, TensorBoard scalars, the training
    state, then `best/`; False (stop) once the loss is not finite, keeping the last good checkpoints.

    Evaluation runs on a float32 copy, exactly as evaluate.py runs on a saved checkpoint, so the scores recorded
    are the ones evaluate.py gives for the same checkpoint, with mixed precision too.

    Workers other than the chief of a multi-worker run are given no `evaluator`: they save the training state
    alone (to a directory of their own: saving may take part in collectives), and their next step waits for the
    chief's evaluation.
    """

    def __init__(
        self,
        encoder,
        state_manager,
        recipe,
        float32_encoder=None,
        evaluator=None,
        run=None,
        history=None,
        summary_writer=None,
    ):
        self.encoder = encoder
        self.state_manager = state_manager
        self.recipe = recipe
        self.float32_encoder = float32_encoder
        self.evaluator = evaluator
        self.run = run
        self.history = history
        self.summary_writer = summary_writer
        self.failure = None

    def saved_step(self):
        """The step of the newest training state saved, 0 if none."""
        return run_directory.state_step(self.state_manager.latest_checkpoint)

    def save_state(self, step):
        """The training state of `step` saved (unless it is already, by an evaluation): its path. Not evaluated, no
        `step-N` or `best/` candidate: a place to go on from."""
        if self.saved_step() != step:
            self.state_manager.save(checkpoint_number=step)
        return self.state_manager.latest_checkpoint

    def __call__(self, step, loss, learning_rate, loss_tracker):
        """After step `step` (counted from the start of the run): False to stop training."""
        if not math.isfinite(loss):
            last = self.state_manager.latest_checkpoint or "none"
            self.failure = f"the loss became {loss} at step {step}: training stopped; last good state: {last}"
            return False
        if step % self.recipe.evaluation_frequency and step != self.recipe.total_steps:
            return True
        if self.evaluator:
            record = self.evaluate(step, loss, learning_rate)
        # The loss shown and recorded is the mean since the previous evaluation: reset before the state is saved,
        # so a run resumed from it sums from here too.
        loss_tracker.reset_state()
        self.state_manager.save(checkpoint_number=step)
        if self.evaluator:
            self.run.point_best_at(run_directory.best_step(self.history))
            logging.info("step %d: %s", step, json.dumps(record))
        return True

    def evaluate(self, step, loss, learning_rate):
        """Evaluates the weights after `step` and saves the evaluation; returns its history record."""
        weights = self.encoder.checkpoint_variables()
        for name, variable in self.float32_encoder.checkpoint_variables().items():
            variable.assign(weights[name])
        record = history_record(step, loss, learning_rate, self.evaluator())
        self.run.save_evaluation(record, self.float32_encoder, self.history)
        with self.summary_writer.as_default(step=step):
            for name, value in record.items():
                if name != "step" and value is not None:
                    tf.summary.scalar(name, value)
        self.summary_writer.flush()
        return record
