"""report.py over runs made here (a random BERT trained on the tests' own data): the results table's means,
standard deviations and n against evaluate.py on each `best/`, the reference rows, results.json and the plots;
what training records for it (start.json, TensorBoard's HParams); bad input failing with one line, nothing written.
report.py on a run of the tiny checkpoint over the shared data: test_training.py's unsupervised learning test."""

import json
import pathlib
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from helpers import MICRO_CHARACTER, REPO, assert_failed_cleanly, needs_native_bfloat16
from PIL import Image
from tensorboard.plugins.hparams import plugin_data_pb2

import data
import errors
import evaluation
import model
import report
import reporting
import training

# Four steps, evaluated at 2 and 4: a run in seconds.
RECIPE = {
    "kind": "unsupervised",
    "total_steps": 4,
    "batch_size": 8,
    "learning_rate": 3e-5,
    "warmup_ratio": 0.05,
    "temperature": 0.05,
    "max_sequence_length": 16,
    "evaluation_frequency": 2,
    "seed": 42,
    "precision": "float32",
}
# Two seeds of one recipe, one of another.
RUNS = {"a-seed42": {}, "a-seed43": {"seed": 43}, "b-seed42": {"learning_rate": 1e-4}}
DATASETS = ["korsts:dev", "klue_sts:dev", "question_pair:test"]
# (dataset, metric) of the results table's score columns, in order.
COLUMNS = [
    ("korsts:dev", "spearman"),
    ("klue_sts:dev", "pearson"),
    ("klue_sts:dev", "spearman"),
    ("question_pair:test", "average_precision"),
]


def train_run(recipe, bert, data_dir, directory, name):
    """training.train of `bert` ({config, pretrained_weight, vocab_path}) on the data directory's corpus."""
    sentences = data.corpus_sentences(data_dir)

    def make_batches(tokenizer, seed):
        return data.unsupervised_batches(sentences, tokenizer, recipe.batch_size, seed)

    return pathlib.Path(
        training.train(
            recipe,
            model.BertConfig.from_json_file(bert["config"]),
            str(bert["vocab_path"]),
            make_batches,
            training.load_evaluation_sets(data_dir),
            run_dir=str(directory / "models" / name),
            tensorboard_dir=str(directory / "logs" / name),
            pretrained_weight=str(bert["pretrained_weight"]),
        )
    )


@pytest.fixture(scope="module")
def runs(self_made_data_dir, random_bert, tmp_path_factory):
    """{name: run directory} of RUNS, trained from the random BERT."""
    directory = tmp_path_factory.mktemp("report_runs")
    return {
        name: train_run(training.Recipe(**{**RECIPE, **changes}), random_bert, self_made_data_dir, directory, name)
        for name, changes in RUNS.items()
    }


def markdown_tables(text):
    """{the heading above: [[cell, ...] of each row, the header first]} of every Markdown table in `text`."""
    tables, heading, rows = {}, "", []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            if not set(line) <= set("|-: "):
                rows.append(cells)
            continue
        if rows:
            tables[heading], rows = rows, []
        if line.startswith("#"):
            heading = line.lstrip("# ")
    return tables


def evaluate_py(run_in_fork, run_dir, data_dir, results_json):
    """evaluate.py's scores of a run's best/, as training embeds (length 16, [CLS])."""
    result = run_in_fork(
        "evaluate.py", f"--checkpoint={run_dir}/best", f"--datasets={','.join(DATASETS)}", f"--data_dir={data_dir}",
        "--max_sequence_length=16", "--pooling=cls", f"--results_json={results_json}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(results_json.read_text())


def expected_cell(values):
    """mean ± sample standard deviation x100, computed here with numpy."""
    if len(values) == 1:
        return f"{values[0] * 100:.2f}"
    return f"{np.mean(values) * 100:.2f} ± {np.std(values, ddof=1) * 100:.2f}"


def test_report_summarises_the_seeds_of_each_recipe_as_evaluate_py_scores_them(
    runs, self_made_data_dir, random_bert, run_in_fork, tmp_path, monkeypatch
):
    output = tmp_path / "report"
    made = report.report([str(path) for path in runs.values()], DATASETS, str(output), str(self_made_data_dir))
    scores = {
        name: evaluate_py(run_in_fork, path, self_made_data_dir, tmp_path / f"{name}.json")
        for name, path in runs.items()
    }

    # results.json: every number of every run, as evaluate.py gives it.
    stored = json.loads((output / "results.json").read_text())
    assert stored == json.loads(json.dumps(made))
    assert [pathlib.Path(run["run"]).name for run in stored["runs"]] == list(RUNS)
    for run in stored["runs"]:
        for dataset in DATASETS:
            assert run["results"][dataset] == pytest.approx(scores[pathlib.Path(run["run"]).name][dataset], rel=1e-5)
        assert run["best_step"] in {2, 4} and [record["step"] for record in run["history"]] == [2, 4]

    # The results table: one row per recipe, mean ± std over its seeds and n, its flags that are not the original's.
    tables = markdown_tables((output / "results.md").read_text())
    results = tables["Results"]
    assert results[0] == [
        "model", "training", "n", "KorSTS dev Spearman", "KLUE STS dev Pearson", "KLUE STS dev Spearman",
        "Question pair test AP", "precision", "recipe",
    ]  # fmt: skip
    name = pathlib.Path(random_bert["pretrained_weight"]).parent.name
    size = f"{MICRO_CHARACTER['num_hidden_layers']} layers, hidden {MICRO_CHARACTER['hidden_size']}"
    groups = [("a-seed42", "a-seed43"), ("b-seed42",)]
    recipes = [
        "`--total_steps=4` `--batch_size=8` `--max_sequence_length=16` `--evaluation_frequency=2`",
        "`--total_steps=4` `--batch_size=8` `--learning_rate=0.0001` `--max_sequence_length=16` "
        "`--evaluation_frequency=2`",
    ]
    assert results[1:] == [
        [f"{name} ({size})", "unsupervised", str(len(group))]
        + [expected_cell([scores[run][dataset][metric] for run in group]) for dataset, metric in COLUMNS]
        + ["float32", recipe]
        for group, recipe in zip(groups, recipes, strict=True)
    ]
    assert "±" in results[1][3] and "±" not in results[2][3]
    text = (output / "results.md").read_text()
    # Where the numbers come from, first: the machine, the data, and that the model is not KR-BERT.
    assert (
        f"Scored on {reporting.machine()}, in float32, from the TFDS data directory {self_made_data_dir}: korsts:dev "
        "(n = 24), " in text
    )
    trained = "Trained by `train_unsupervised.py` from `{}` with the recipe column's flags, float32, seeds 42, 43."
    assert trained.format(random_bert["pretrained_weight"]) in text
    assert (
        f"Not KR-BERT: {name} ({size}) is not the original work's KR-BERT character, so these numbers are not" in text
    )
    assert "- Question pair AP: the average precision of ranking the question pairs" in text
    # The start, and the original work's numbers, labelled as such and as the README gives them.
    assert [row[0] for row in tables["Before training"][1:]] == [f"{name} ({size})"] * 2
    reference = tables["Reference numbers of the original work"]
    assert [row[2:] for row in reference[1:]] == [row[1:] for row in markdown_tables((REPO / "README.md").read_text())[
        "Reference numbers of the original work"][1:]]  # fmt: skip

    # The plots: valid PNGs of the expected size, one of each kind per recipe, shown in results.md.
    sizes = {"curves": (1200, 700), "alignment-uniformity": (800, 650)}
    pngs = sorted(path.name for path in output.glob("*.png"))
    assert pngs == sorted(f"{n}-unsupervised-{kind}.png" for n in (1, 2) for kind in sizes)
    for png in pngs:
        with Image.open(output / png) as image:
            assert image.format == "PNG" and image.size == sizes[png.split("-", 2)[2].removesuffix(".png")]
            image.verify()
        assert f"]({png})" in (output / "results.md").read_text()

    # Reported again into the same directory: the stored scores of the same weights are reused, nothing evaluated.
    monkeypatch.setattr(evaluation, "evaluate", lambda *args, **kwargs: pytest.fail("evaluated again"))
    again = report.report([str(path) for path in runs.values()], DATASETS, str(output), str(self_made_data_dir))
    assert [run["results"] for run in again["runs"]] == [run["results"] for run in made["runs"]]


def test_results_table_has_the_original_readmes_columns_and_says_what_is_undefined():
    scores = {"n": 10, "pearson": 0.5, "spearman": None, "alignment": None, "uniformity": -1.0}
    datasets = ["korsts:dev", "korsts:test", "klue_sts:dev"]
    run = {
        "run": "models/r", "kind": "supervised", "seed": 1, "best_step": 6, "results": dict.fromkeys(datasets, scores),
        "history": [{"step": 6}], "run_config": {"total_steps": 9}, "start": "snunlp/KR-BERT-char16424",
    }  # fmt: skip
    group = {
        "model": "m", "kind": "supervised", "n": 1, "recipe_flags": [], "precision": "mixed_bfloat16", "kr_bert": True,
        "runs": ["models/r"],
        "scores": reporting.group_summary([run["results"]], datasets),
    }  # fmt: skip
    report = {
        "date": "2026-12-03", "machine": "a CPU", "data_dir": None, "datasets": datasets, "runs": [run],
        "groups": [group], "starts": [],
    }  # fmt: skip
    text = reporting.results_markdown(report, "python report.py", {})
    tables = markdown_tables(text)
    assert tables["Results"] == [
        ["model", "training", "n", "KorSTS dev Spearman", "KorSTS test Spearman", "KLUE STS dev Pearson",
         "KLUE STS dev Spearman", "precision", "recipe"],
        ["m", "supervised", "1", "n/a", "n/a", "50.00", "n/a", "mixed_bfloat16", "the original"],
    ]  # fmt: skip
    assert "from the TFDS data directory TFDS uses by default: korsts:dev (n = 10)," in text
    assert "Not KR-BERT" not in text  # a KR-BERT start is comparable to the reference rows
    assert tables["Runs"][1][3] == "6 (stopped at 6 of 9)"


def hparams(tensorboard_dir):
    """{name: value} of the HParams session a TensorBoard directory's event files hold."""
    found = {}
    for event_file in tensorboard_dir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    content = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    for name, hparam in content.session_start_info.hparams.items():
                        found[name] = getattr(hparam, hparam.WhichOneof("kind"))
    return found


def test_training_records_its_start_and_its_recipe_as_hparams(runs, random_bert):
    start = str(pathlib.Path(random_bert["pretrained_weight"]).absolute())
    run_dir = runs["b-seed42"]
    assert json.loads((run_dir / "start.json").read_text()) == {"pretrained_weight": start}
    recorded = hparams(run_dir.parent.parent / "logs" / run_dir.name)
    assert recorded == {
        **{name: value for name, value in RECIPE.items() if name != "learning_rate"},
        "learning_rate": pytest.approx(1e-4),
        "num_hidden_layers": MICRO_CHARACTER["num_hidden_layers"],
        "hidden_size": MICRO_CHARACTER["hidden_size"],
        "pretrained_weight": start,
    }


def copy_run(run_dir, destination, *remove):
    shutil.copytree(run_dir, destination)
    for name in remove:
        path = destination / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return destination


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("no history", errors.FileError, "has no evaluation history (eval_history.jsonl)"),
        ("no best", errors.FileError, "has no checkpoint in best/"),
        ("no run_config", errors.FileError, "has no run_config.json"),
        ("missing", errors.FileError, "run directory not found"),
        ("given twice", errors.FileError, "is given twice"),
        ("one seed twice", errors.FileError, "are runs of one recipe with the same seed 42"),
        ("not prepared", errors.DataError, "korsts is not prepared in"),
        ("absent split", errors.DataError, "korsts:test was not prepared"),
        ("not an STS set or task", errors.DataError, "unknown dataset 'kornli' in kornli:dev (choose from korsts, "),
    ],
)
def test_bad_input_fails_before_anything_is_written(runs, self_made_data_dir, tmp_path, case, error, message):
    first = runs["a-seed42"]
    runs_of = {
        "no history": lambda: [copy_run(first, tmp_path / "run", "eval_history.jsonl")],
        "no best": lambda: [copy_run(first, tmp_path / "run", "best")],
        "no run_config": lambda: [copy_run(first, tmp_path / "run", "run_config.json")],
        "missing": lambda: [tmp_path / "missing"],
        "given twice": lambda: [first, first.parent / ".." / "models" / first.name],
        "one seed twice": lambda: [first, copy_run(first, tmp_path / "run")],
    }
    bad_runs = runs_of.get(case, lambda: [first])()
    datasets = {"absent split": ["korsts:test"], "not an STS set or task": ["kornli:dev"]}.get(case, DATASETS)
    data_dir = tmp_path / "empty" if case == "not prepared" else self_made_data_dir
    output = tmp_path / "report"
    with pytest.raises(error, match=re.escape(message)):
        report.report([str(path) for path in bad_runs], datasets, str(output), str(data_dir))
    assert not output.exists()


def test_report_py_fails_with_one_line(runs, self_made_data_dir, run_in_fork, tmp_path):
    # The default sets include KorSTS test, which the tests' data lacks (as the shared data does).
    output = tmp_path / "report"
    result = run_in_fork(
        "report.py", f"--runs={runs['a-seed42']}", f"--data_dir={self_made_data_dir}", f"--output={output}"
    )
    assert_failed_cleanly(result, "error: korsts:test was not prepared")
    assert not output.exists()


@needs_native_bfloat16
def test_a_report_in_bfloat16_scores_anew_and_says_so(runs, self_made_data_dir, tmp_path):
    output, run = tmp_path / "report", str(runs["a-seed42"])
    made = {
        precision: report.report([run], ["korsts:dev"], str(output), str(self_made_data_dir), precision=precision)
        for precision in ("float32", "bfloat16")  # the second into the first's directory: nothing of it is reused
    }
    assert "in bfloat16, from the TFDS data directory" in (output / "results.md").read_text()
    assert made["bfloat16"]["precision"] == made["bfloat16"]["runs"][0]["precision"] == "bfloat16"
    scores = {precision: made[precision]["runs"][0]["results"]["korsts:dev"] for precision in made}
    expected = evaluation.evaluate(
        ["korsts:dev"], checkpoint=f"{run}/best", data_dir=str(self_made_data_dir), pooling="cls", precision="bfloat16"
    )["korsts:dev"]
    assert scores["bfloat16"]["spearman"] == pytest.approx(expected["spearman"], abs=1e-6)
    assert scores["bfloat16"]["pearson"] != scores["float32"]["pearson"]


def test_only_kr_berts_hub_id_or_release_counts_as_the_original_works_model(tmp_path, monkeypatch):
    def run(start):
        return reporting.Run("models/r", {}, {"pretrained_weight": start}, [], "models/r/best/model.ckpt-1")

    monkeypatch.chdir(tmp_path)
    assert report.is_kr_bert(run("snunlp/KR-BERT-char16424")) and report.is_kr_bert(run("snunlp/KR-BERT-char16424@v1"))
    assert not report.is_kr_bert(run("klue/bert-base")) and not report.is_kr_bert(run(None))
    release = tmp_path / "KR-BERT-char16424"
    release.mkdir()
    (release / "model.ckpt-2000000.index").write_bytes(b"")
    assert not report.is_kr_bert(run(str(release / "model.ckpt-2000000")))  # not without the release's files
    for name in ("bert_config_char16424.json", "vocab_char_16424.txt"):
        (release / name).write_text("{}")
    assert report.is_kr_bert(run(str(release / "model.ckpt-2000000")))
