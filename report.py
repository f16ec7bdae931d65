"""Turns training runs into results: every run's `best/` scored on STS sets (and transfer tasks, if given), runs of
one recipe (equal but for the seed) summarised as mean ± standard deviation over their seeds, beside the original
work's reference numbers.

    python report.py --runs=models/unsup-seed1,models/unsup-seed2,models/unsup-seed3 --output=reports/unsup

writes, in --output:
- results.md: the results table (one row per recipe), the runs, their starts before training, the reference rows
  and the plots;
- results.json: every number of every run, and each recipe's summary;
- <N>-<kind>-curves.png (loss, KorSTS dev, KLUE STS dev, alignment, uniformity over steps, one line per seed) and
  <N>-<kind>-alignment-uniformity.png (the path from the start, the best evaluation marked) for recipe N.

Scores stored in an earlier results.json of --output are reused for the same weights, sets, length and pooling.
"""

import os
import shlex
import sys
import time

from absl import flags, logging

import data
import distribution
import errors
import evaluation
import files
import hub
import huggingface
import model_files
import model_flags
import plots
import reporting
import transfer

FLAGS = flags.FLAGS

# As training evaluates: [CLS] before the pooler.
POOLING = "cls"
BATCH_SIZE = 64


def report(runs, datasets, output, data_dir=None, max_sequence_length=None, command="report.py", precision="float32"):
    """Scores the runs at the paths `runs` and writes results.md, results.json and the plots to `output`; returns
    what results.json holds. Every run and set is read, and `output` checked, before anything is evaluated or
    written.

    Args:
        runs: run directories of train_unsupervised.py or train_supervised.py.
        datasets: sets as "DATASET:SPLIT": STS sets and transfer tasks, as for evaluation.evaluate.
        output: the directory to write to (made if need be; report.py's files there are replaced).
        data_dir: the TFDS data directory (None: TFDS's).
        max_sequence_length: tokens per sentence; None: each run's own, as training evaluated it.
        command: the command line results.md names.
        precision: what the encoders compute in, "float32" (as training evaluates) or "bfloat16" (where native).
    """
    distribution.encoding_policy(precision)
    files.check_can_make_directory(output)
    results_json = os.path.join(output, "results.json")
    if files.isdir(output):
        for name in ("results.json", "results.md"):
            files.check_can_write_file(os.path.join(output, name))
    groups = reporting.group_runs([reporting.read_run(path) for path in runs])
    datasets = [f"{name}:{split}" for name, split in evaluation.parse_sets(datasets)]
    for dataset in datasets:
        name, split = dataset.split(":")
        # A set that is not prepared fails here, before any evaluation.
        if name in transfer.KINDS:
            transfer.load(name, split, data_dir)
        else:
            data.sts_pairs(name, split, data_dir)
    stored = reporting.stored_evaluations(results_json)
    scorer = Scorer(datasets, data_dir, stored, precision)

    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": reporting.machine(),
        "data_dir": files.absolute(data_dir) if data_dir else None,
        "datasets": datasets,
        "precision": precision,
        "runs": [],
        "groups": [],
        "starts": [],
    }
    for group in groups:
        first = group[0]
        length = max_sequence_length or first.run_config["max_sequence_length"]
        scored = [scorer.score_run(run, length) for run in group]
        report["runs"] += scored
        start = scorer.score_start(first, length)
        if start:
            report["starts"].append({"name": reporting.model_name(first), "kind": first.kind, **start})
        report["groups"].append(
            {
                "model": reporting.model_name(first),
                "kind": first.kind,
                "kr_bert": is_kr_bert(first),
                "recipe_flags": reporting.recipe_flags(first.run_config),
                "precision": first.run_config["precision"],
                "max_sequence_length": length,
                "n": len(group),
                "runs": [run.path for run in group],
                "scores": reporting.group_summary([entry["results"] for entry in scored], datasets),
                "start": start,
            }
        )
    figures = make_plots(report)
    files.makedirs(output)
    for name, image in figures.items():
        with files.renamed_into_place(os.path.join(output, name)) as temporary:
            files.write_file(temporary, image)
    plot_names = {
        index: [(name.removesuffix(".png"), name) for name in figures if name.startswith(f"{index + 1}-")]
        for index in range(len(report["groups"]))
    }
    files.write_json_atomically(results_json, report)
    files.write_text_atomically(
        os.path.join(output, "results.md"), reporting.results_markdown(report, command, plot_names)
    )
    return report


class Scorer:
    """Scores checkpoints on the report's sets, reusing the stored scores of the same weights."""

    def __init__(self, datasets, data_dir, stored, precision):
        self.datasets = datasets
        self.data_dir = data_dir
        self.stored = stored
        self.precision = precision

    def score(self, weights_file, max_sequence_length, **model):
        """{"digest", "max_sequence_length", "pooling", "precision", "results"} of the checkpoint; `model` as for
        evaluation.evaluate."""
        digest = reporting.checkpoint_digest(weights_file)
        key = {
            dataset: reporting.evaluation_key(digest, dataset, max_sequence_length, POOLING, self.precision)
            for dataset in self.datasets
        }
        results = {dataset: self.stored[key[dataset]] for dataset in self.datasets if key[dataset] in self.stored}
        missing = [dataset for dataset in self.datasets if dataset not in results]
        if missing:
            logging.info("scoring %s on %s", model["checkpoint"], ", ".join(missing))
            scores = evaluation.evaluate(
                missing, data_dir=self.data_dir, max_sequence_length=max_sequence_length, pooling=POOLING,
                batch_size=BATCH_SIZE, precision=self.precision, **model,
            )  # fmt: skip
            results |= scores
            self.stored |= {key[dataset]: scores[dataset] for dataset in missing}
        results = {dataset: results[dataset] for dataset in self.datasets}
        return {
            "digest": digest,
            "max_sequence_length": max_sequence_length,
            "pooling": POOLING,
            "precision": self.precision,
            "results": results,
        }

    def score_run(self, run, max_sequence_length):
        """A run's entry of results.json: its recipe, history, best step and the scores of its best/."""
        entry = {
            "run": run.path,
            "kind": run.kind,
            "seed": run.seed,
            "run_config": run.run_config,
            "start": run.pretrained_weight,
            "best_step": run.best_step,
            "checkpoint": run.best_checkpoint,
            "history": run.history,
        }
        return entry | self.score(run.best_checkpoint, max_sequence_length, checkpoint=run.best_checkpoint)

    def score_start(self, run, max_sequence_length):
        """The scores of the weights `run` started from, with the run's own config and vocab; None if it started from
        random initialisation, or its start is not found here (a warning says so)."""
        start = run.pretrained_weight
        if start is None:
            return None
        local = hub.download_from_hub(start) if hub.is_hub_id(start) else start
        if not files.exists_as_path_or_prefix(local):
            logging.warning("%s started from %s, which is not found here: its start is left out", run.path, start)
            return None
        own_files = {
            "config_path": os.path.join(run.path, model_files.GOOGLE_CONFIG_FILE),
            "vocab_path": os.path.join(run.path, huggingface.VOCAB_FILE),
            "lower_case": huggingface.read_lower_case(run.path),
        }
        weights_file = model_files.resolve_weights(local)
        return {"pretrained_weight": start} | self.score(
            weights_file, max_sequence_length, checkpoint=local, **own_files
        )


def is_kr_bert(run):
    """Whether a run started from the original work's model, KR-BERT character: its Hub id, or a checkpoint beside
    the TensorFlow release's files."""
    start = run.pretrained_weight
    if not start:
        return False
    if hub.is_hub_id(start):
        return start.partition("@")[0] == hub.KR_BERT_HUB_ID
    directory = model_files.checkpoint_parent(start) if files.exists_as_path_or_prefix(start) else None
    return bool(directory) and all(
        files.exists(os.path.join(directory, name)) for name in model_files.KR_BERT_RELEASE_FILES
    )


def make_plots(report):
    """{file name: PNG bytes}: each recipe's training curves and alignment-uniformity plane."""
    figures = {}
    for index, group in enumerate(report["groups"]):
        runs = [run for run in report["runs"] if run["run"] in group["runs"]]
        title = f"{group['model']}, {group['kind']} SimCSE\n{' '.join(group['recipe_flags'])} ({group['precision']})"
        prefix = f"{index + 1}-{group['kind']}"
        start = group["start"]["results"] if group["start"] else None
        figures[f"{prefix}-curves.png"] = plots.training_curves(
            title, [(run["seed"], run["history"]) for run in runs], start
        )
        figures[f"{prefix}-alignment-uniformity.png"] = plots.alignment_uniformity(
            title, [(run["seed"], run["history"], run["best_step"]) for run in runs], (start or {}).get("korsts:dev")
        )
    return figures


def define_flags():
    """The flags of the script, defined when it runs (so that its functions import with any other script's)."""
    flags.DEFINE_list("runs", None, "Run directories of train_unsupervised.py or train_supervised.py.", required=True)
    flags.DEFINE_list(
        "datasets",
        ["korsts:dev", "korsts:test", "klue_sts:dev"],
        "Sets as DATASET:SPLIT: STS (korsts, klue_sts) and transfer tasks (nsmc, klue_tc, question_pair, korquad).",
    )
    model_flags.define_data_dir()
    model_flags.define_max_sequence_length(None, " (default: each run's own, as training evaluated it)")
    model_flags.define_precision("float32", " (float32: as training evaluated)")
    flags.DEFINE_string("output", None, "Directory of results.md, results.json and the plots.", required=True)


def main():
    command = shlex.join(["python", "report.py", *sys.argv[1:]])
    report(
        FLAGS.runs, FLAGS.datasets, FLAGS.output, FLAGS.data_dir, FLAGS.max_sequence_length, command, FLAGS.precision
    )
    print(os.path.join(FLAGS.output, "results.md"))


if __name__ == "__main__":
    define_flags()
    errors.run(main)
