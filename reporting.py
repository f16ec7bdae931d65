"""What report.py makes of training runs, in plain Python: each run directory read and checked, the runs grouped by
recipe (equal but for the seed), their scores summarised over seeds as mean and standard deviation, and the results
tables in Markdown beside the original work's reference numbers. The plots are plots.py's.
"""

import dataclasses
import hashlib
import json
import os
import platform
import statistics

import errors
import files
import hub
import run_directory
import training_flags

# The metrics reported of each dataset: KorSTS by Spearman, as the original work; KLUE STS by Pearson, as the
# original work, and by Spearman, as MTEB and the Korean leaderboards (on its dev split: its test set is not public);
# the transfer tasks by MTEB's main score of their kind, and KLUE TC (YNAT) by KLUE's own, macro-F1.
REPORTED_METRICS = {
    "korsts": ("spearman",),
    "klue_sts": ("pearson", "spearman"),
    "nsmc": ("accuracy",),
    "klue_tc": ("macro_f1",),
    "question_pair": ("average_precision",),
    "korquad": ("ndcg_at_10",),
}
DATASET_NAMES = {
    "korsts": "KorSTS",
    "klue_sts": "KLUE STS",
    "nsmc": "NSMC",
    "klue_tc": "KLUE TC",
    "question_pair": "Question pair",
    "korquad": "KorQuAD 1.0",
}
METRIC_NAMES = {
    "pearson": "Pearson",
    "spearman": "Spearman",
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "average_precision": "AP",
    "ndcg_at_10": "nDCG@10",
}
# Every metric summarised over a group's runs (into results.json), by dataset.
STS_METRICS = ("pearson", "spearman", "alignment", "uniformity")
SUMMARISED_METRICS = {
    "korsts": STS_METRICS,
    "klue_sts": STS_METRICS,
    "nsmc": ("accuracy", "macro_f1"),
    "klue_tc": ("accuracy", "macro_f1"),
    "question_pair": ("average_precision", "accuracy"),
    "korquad": ("ndcg_at_10", "mrr_at_10", "recall_at_1", "recall_at_10"),
}
# What a reported metric of a transfer task is, for the results' notes.
TASK_NOTES = {
    "nsmc": "NSMC (movie-review sentiment) accuracy: the mean of 10 logistic regressions on frozen embeddings, each "
    "trained on 8 reviews of each class of its train split",
    "klue_tc": "KLUE TC (YNAT news-headline topics) macro-F1: the mean of 10 logistic regressions on frozen "
    "embeddings, each trained on 8 headlines of each topic of its train split",
    "question_pair": "Question pair AP: the average precision of ranking the question pairs by cosine similarity, "
    "paraphrases first",
    "korquad": "KorQuAD 1.0 nDCG@10: each question's paragraph ranked among every paragraph of the split by cosine "
    "similarity",
}

# The original work's published numbers (jeongukjae/KR-BERT-SimCSE's README, KR-BERT character base), x100: KorSTS
# by Spearman, KLUE STS by Pearson. Reference numbers, never results of this repository.
REFERENCE_SOURCE = "https://github.com/jeongukjae/KR-BERT-SimCSE"
REFERENCE_ROWS = (
    ("KR-BERT base SimCSE", "unsupervised (Korean Wikipedia)", {"korsts:dev": 79.99, "korsts:test": 73.25,
                                                                "klue_sts:dev": 74.45}),
    ("KR-BERT base SimCSE", "supervised (KorNLI)", {"korsts:dev": 84.88, "korsts:test": 80.72, "klue_sts:dev": 79.42}),
)  # fmt: skip

# run_config.json's fields that the recipe column does not compare with the original recipe: the kind and the BERT
# config and the precision have columns of their own, and the seed varies within a group.
NOT_RECIPE_FLAGS = ("kind", "seed", "bert_config", "precision")


# === Runs ===


@dataclasses.dataclass(frozen=True)
class Run:
    """A run directory of train_unsupervised.py or train_supervised.py, as report.py reads it.

    Args:
        path: the run directory.
        run_config: its run_config.json (the recipe and the BERT config).
        start: its start.json ({"pretrained_weight": ...}; {} for a run made before training wrote it).
        history: the records of its eval_history.jsonl, one per evaluation.
        best_checkpoint: the prefix of the checkpoint in its best/.
    """

    path: str
    run_config: dict
    start: dict
    history: list
    best_checkpoint: str

    @property
    def kind(self):
        return self.run_config["kind"]

    @property
    def seed(self):
        return self.run_config["seed"]

    @property
    def best_step(self):
        return run_directory.state_step(self.best_checkpoint)

    @property
    def pretrained_weight(self):
        return self.start.get("pretrained_weight")

    def recipe_key(self):
        """What runs of one group share: the recipe but the seed, and the start."""
        recipe = {name: value for name, value in self.run_config.items() if name != "seed"}
        return json.dumps({**recipe, "start": self.pretrained_weight}, sort_keys=True)


def read_run(path):
    """The `Run` at `path`; errors.FileError unless it is a run directory with evaluations and a best/ checkpoint."""
    run = run_directory.RunDirectory(path)
    if not files.isdir(path):
        raise errors.FileError(f"run directory not found: {path}")
    if not files.exists(run.config_path):
        raise errors.FileError(f"{path} has no run_config.json: not a run directory of either training script")
    run_config = files.read_json(run.config_path)
    if not isinstance(run_config, dict) or run_config.get("kind") not in training_flags.ORIGINAL_RECIPES:
        raise errors.FileError(f"{run.config_path} is not the run_config.json of either training script")
    history = run.history()
    if not history:
        raise errors.FileError(f"{path} has no evaluation history (eval_history.jsonl): nothing to report yet")
    best = run.best_checkpoint()
    if best is None:
        raise errors.FileError(f"{path} has no checkpoint in best/: nothing to evaluate")
    if run_directory.state_step(best) not in {record["step"] for record in history}:
        raise errors.FileError(f"{best} is of a step {path}/eval_history.jsonl does not hold")
    return Run(path, run_config, run.start(), history, best)


def group_runs(runs):
    """The runs in groups of one recipe and start, each group's runs of distinct seeds, in the order given;
    errors.FileError for a run given twice, or two runs of one group with one seed (a seed would count twice)."""
    groups, seen = {}, {}
    for run in runs:
        where = files.absolute(run.path).rstrip("/")
        if where in seen:
            raise errors.FileError(f"{run.path} is given twice")
        seen[where] = run
        group = groups.setdefault(run.recipe_key(), [])
        twin = next((other for other in group if other.seed == run.seed), None)
        if twin:
            raise errors.FileError(
                f"{twin.path} and {run.path} are runs of one recipe with the same seed {run.seed}: give one of them"
            )
        group.append(run)
    return list(groups.values())


def recipe_flags(run_config):
    """The training flags of a run's recipe that differ from its kind's original recipe."""
    original = training_flags.ORIGINAL_RECIPES[run_config["kind"]]
    flags = []
    for name, value in run_config.items():
        if name in NOT_RECIPE_FLAGS or (name == "total_steps" and "epochs" in original):
            continue
        if isinstance(value, list):
            value = tuple(value)
        if original.get(name) != value:
            flags.append(f"--{name}={','.join(value) if isinstance(value, tuple) else value}")
    return flags


def machine():
    """The CPU scores are computed on, as results name it: its model name, logical CPUs, and the bfloat16 units that
    decide its speed (amx_bf16, avx512_bf16)."""
    name, cpu_flags = platform.processor() or "unknown CPU", set()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    cpu_flags = set(value.split())
    units = [unit for unit in ("amx_bf16", "avx512_bf16") if unit in cpu_flags]
    return f"{name}, {os.cpu_count()} CPUs" + (f" ({', '.join(units)})" if units else "")


def model_name(run):
    """How the results name a run's model: its start (a Hub id, the checkpoint's directory) and size."""
    bert = run.run_config["bert_config"]
    size = f"{bert['num_hidden_layers']} layers, hidden {bert['hidden_size']}"
    start = run.pretrained_weight
    if start is None:
        name = "random initialisation" if "pretrained_weight" in run.start else "start not recorded"
    elif hub.is_hub_id(start):
        name = start
    else:
        path = start.rstrip("/")
        name = os.path.basename(os.path.dirname(path) if os.path.basename(path).startswith("model.ckpt") else path)
    return f"{name} ({size})"


# === Evaluations and their summary ===


def checkpoint_digest(weights_file):
    """The SHA-256 of a checkpoint's weights file, or of a Google-format checkpoint's index (it holds a checksum of
    every tensor): a stored evaluation is reused only for the very same weights."""
    path = weights_file if files.exists(weights_file) else f"{weights_file}.index"
    return hashlib.sha256(files.read_bytes(path)).hexdigest()


def evaluation_key(digest, dataset, max_sequence_length, pooling, precision):
    return json.dumps([digest, dataset, max_sequence_length, pooling, precision])


def stored_evaluations(results_json):
    """{evaluation_key: scores} of every evaluation a results.json of an earlier report holds ({} for none)."""
    if not files.exists(results_json):
        return {}
    stored = files.read_json(results_json)
    evaluations = {}
    for entry in [*stored.get("runs", []), *stored.get("starts", [])]:
        for dataset, scores in entry["results"].items():
            # A report from before precision was recorded encoded in float32.
            precision = entry.get("precision", "float32")
            key = evaluation_key(entry["digest"], dataset, entry["max_sequence_length"], entry["pooling"], precision)
            evaluations[key] = scores
    return evaluations


def summary(values):
    """{n, mean, std, values} of one metric over a group's runs: std is the sample standard deviation (None for one
    run); mean and std are None if a run's metric is undefined."""
    defined = None not in values
    return {
        "n": len(values),
        "mean": statistics.mean(values) if defined else None,
        "std": statistics.stdev(values) if defined and len(values) > 1 else None,
        "values": values,
    }


def group_summary(results, datasets):
    """{dataset: {metric: summary}} of a group from its runs' `results` ([{dataset: scores}, ...])."""
    return {
        dataset: {
            metric: summary([scores[dataset][metric] for scores in results])
            for metric in SUMMARISED_METRICS[dataset.split(":")[0]]
        }
        for dataset in datasets
    }


# === Markdown ===


def metric_columns(datasets):
    """[(dataset, metric, header)] of the results table: every dataset's reported correlations."""
    columns = []
    for dataset in datasets:
        name, split = dataset.split(":")
        for metric in REPORTED_METRICS[name]:
            columns.append((dataset, metric, f"{DATASET_NAMES[name]} {split} {METRIC_NAMES[metric]}"))
    return columns


def cell(mean, std=None):
    """A score x100, with its spread if it has one; "n/a" if it is undefined."""
    if mean is None:
        return "n/a"
    return f"{mean * 100:.2f}" if std is None else f"{mean * 100:.2f} ± {std * 100:.2f}"


# The columns of text, left-aligned; the others hold numbers, right-aligned.
TEXT_COLUMNS = ("model", "training", "precision", "recipe", "run", "start", "of the runs")


def table(header, rows):
    """A Markdown table of `rows` under `header`."""
    rule = ["---" if name in TEXT_COLUMNS else "--:" for name in header]
    return [f"| {' | '.join(map(str, row))} |" for row in [header, rule, *rows]]


def results_markdown(report, command, plots):
    """DIR/results.md of `report` (what results.json holds), with the `command` that made it and its `plots`
    ({group index: [(title, file name)]})."""
    datasets = report["datasets"]
    columns = metric_columns(datasets)
    lines = [
        "# Results",
        "",
        f"Made on {report['date']} by `{command}`.",
        "",
        *provenance(report),
        "Scores x100 of each run's `best/` (its step of the best KorSTS dev Spearman during training), embedded with "
        "[CLS] at the run's own maximum length unless the command says otherwise: mean ± sample standard deviation "
        "over the n seeds of a recipe (no spread for n = 1). The recipe column gives the training flags that differ "
        "from the original recipe.",
        "",
    ]
    rows = [
        [group["model"], group["kind"], group["n"]]
        + [
            cell(group["scores"][dataset][metric]["mean"], group["scores"][dataset][metric]["std"])
            for dataset, metric, _ in columns
        ]
        + [group["precision"], " ".join(f"`{flag}`" for flag in group["recipe_flags"]) or "the original"]
        for group in report["groups"]
    ]
    lines += table(["model", "training", "n", *(header for _, _, header in columns), "precision", "recipe"], rows)
    lines += ["", "n/a: a metric that is undefined (constant similarities) in a run."]
    tasks = dict.fromkeys(dataset.split(":")[0] for dataset in datasets if dataset.split(":")[0] in TASK_NOTES)
    if tasks:
        lines += ["", "Beyond STS (docs/evaluation.md), as MTEB scores them:", ""]
        lines += [f"- {TASK_NOTES[name]}." for name in tasks]
    lines += ["", "## Runs", ""]
    rows = [
        [f"`{run['run']}`", run["kind"], run["seed"], best_step_cell(run)]
        + [cell(run["results"][dataset][metric]) for dataset, metric, _ in columns]
        for run in report["runs"]
    ]
    lines += table(["run", "training", "seed", "best step", *(header for _, _, header in columns)], rows)
    if report["starts"]:
        lines += ["", "## Before training", "", "The start of each recipe, embedded as its runs are.", ""]
        rows = [
            [start["name"], start["kind"], start["max_sequence_length"]]
            + [cell(start["results"][dataset][metric]) for dataset, metric, _ in columns]
            for start in report["starts"]
        ]
        lines += table(["start", "of the runs", "max length", *(header for _, _, header in columns)], rows)
    lines += ["", "## Reference numbers of the original work", ""]
    lines += [
        f"Published by the original TensorFlow implementation ({REFERENCE_SOURCE}) with KR-BERT character base; not "
        "results of this repository. KorSTS by Spearman, KLUE STS by Pearson, x100.",
        "",
    ]
    lines += table(
        ["model", "training", "KorSTS dev Spearman", "KorSTS test Spearman", "KLUE STS dev Pearson"],
        [[model, kind, *(f"{scores[key]:.2f}" for key in ("korsts:dev", "korsts:test", "klue_sts:dev"))]
         for model, kind, scores in REFERENCE_ROWS],
    )  # fmt: skip
    for index, group in enumerate(report["groups"]):
        lines += [
            "",
            f"## Plots: {group['model']}, {group['kind']}, {' '.join(group['recipe_flags'])} ({group['precision']})",
            "",
        ]
        lines += [f"![{title}]({name})" for title, name in plots.get(index, [])]
    return "\n".join(lines) + "\n"


def provenance(report):
    """The lines that say where the numbers come from: the machine, the data, and which models are not the original
    work's (their numbers are not comparable to the reference rows)."""
    sizes = ", ".join(
        f"{dataset} (n = {report['runs'][0]['results'][dataset]['n']:,})" for dataset in report["datasets"]
    )
    lines = [
        f"Scored on {report['machine']}, in {report.get('precision', 'float32')}, from the TFDS data directory "
        f"{report['data_dir'] or 'TFDS uses by default'}: {sizes}.",
        "",
    ]
    for group in report["groups"]:
        runs = [run for run in report["runs"] if run["run"] in group["runs"]]
        seeds = ", ".join(str(run["seed"]) for run in runs)
        lines += [
            f"Trained by `train_{group['kind']}.py` from `{runs[0]['start'] or 'random initialisation'}` with the "
            f"recipe column's flags, {group['precision']}, seed{'s' * (len(runs) > 1)} {seeds}.",
            "",
        ]
    others = list(dict.fromkeys(group["model"] for group in report["groups"] if not group["kr_bert"]))
    if others:
        lines += [
            f"Not KR-BERT: {' and '.join(others)} {'is' if len(others) == 1 else 'are'} not the original work's "
            "KR-BERT character, so these numbers are not comparable to its reference rows below.",
            "",
        ]
    return lines


def best_step_cell(run):
    """A run's best step, and where it stopped if it stopped before its last step."""
    last, total = run["history"][-1]["step"], run["run_config"]["total_steps"]
    return str(run["best_step"]) if last == total else f"{run['best_step']} (stopped at {last} of {total})"
