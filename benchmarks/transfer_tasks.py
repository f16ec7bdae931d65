"""Times evaluate.py's transfer tasks at the sizes of their real splits, for a model of --config with random weights:
the seconds `evaluation.evaluate` takes for each task (reading the prepared split, embedding, fitting, scoring).

    python benchmarks/transfer_tasks.py --vocab_path=$SAMPLE/vocabs/vocab_char_16424.txt \
        --corpus=$SAMPLE/korean_wikipedia_corpus/corpus.zip --source_dir=$SAMPLE

NSMC, KLUE TC and KorQuAD are not in the sample data, so their upstream files are stand-ins written in their
formats, of their real splits' counts (SIZES), each text a sentence of --corpus (a paragraph: sentences of it
joined up to PARAGRAPH_CHARACTERS), each label drawn at random: the time is the real one, the scores are
meaningless. Question pair is the real one, from --source_dir. Everything runs through the tfds-korean builders.
"""

import json
import os
import pathlib
import sys
import tempfile
import time
import zipfile

import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parent.parent
# The benchmark measures the repository's own modules, whichever directory it is started from.
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS


def define_flags():
    """The flags of the script, defined when it runs (so that its functions import into the tests)."""
    flags.DEFINE_string("config", str(REPO / "configs" / "benchmark_4l_512h.json"), "Google-format bert_config.json.")
    flags.DEFINE_string("vocab_path", None, "KR-BERT char's vocab file.", required=True)
    flags.DEFINE_string("corpus", None, "The sample data's korean_wikipedia_corpus/corpus.zip.", required=True)
    flags.DEFINE_string("source_dir", None, "Sample data with question_pair/train.txt, validation.txt.", required=True)
    flags.DEFINE_float("scale", 1.0, "Fraction of each stand-in split's count to write (1: the real counts).")
    flags.DEFINE_integer("batch_size", 64, "Sentences embedded per batch.")


# Examples of the real splits: NSMC (e9t/nsmc), KLUE TC (ynat-v1.1), KorQuAD 1.0 dev's questions; and the paragraphs
# of the KorQuAD stand-in.
SIZES = {
    "nsmc": {"train": 150_000, "test": 50_000},
    "klue_tc": {"train": 45_678, "dev": 9_107},
    "korquad": {"questions": 5_774, "paragraphs": 960},
}
YNAT_TOPICS = ("IT과학", "경제", "사회", "생활문화", "세계", "스포츠", "정치")
# A stand-in paragraph's characters, drawn uniformly: about one token each, so the longer ones are cut at 512 tokens.
PARAGRAPH_CHARACTERS = (300, 900)
TASKS = ("nsmc:test", "klue_tc:dev", "question_pair:validation", "korquad:dev")


def corpus_sentences(corpus_zip):
    """Every non-empty line of the corpus archive's documents."""
    with zipfile.ZipFile(corpus_zip) as archive:
        text = "\n".join(archive.read(name).decode("utf-8") for name in archive.namelist() if not name.endswith("/"))
    return [line.strip() for line in text.splitlines() if line.strip()]


def write_stand_ins(source_dir, sentences, scale, rng):
    """NSMC, KLUE TC and KorQuAD 1.0 dev upstream files under `source_dir`, of SIZES x `scale` examples."""

    def draw(count):
        return [sentences[i] for i in rng.integers(0, len(sentences), max(int(count * scale), 16))]

    for split, count in SIZES["nsmc"].items():
        # The builder reads with csv's default quoting: a '"' would join rows, so the stand-ins have none.
        texts = [text.replace('"', "") for text in draw(count)]
        rows = [f"{i}\t{text}\t{rng.integers(0, 2)}" for i, text in enumerate(texts)]
        write(source_dir / "nsmc" / f"ratings_{split}.txt", "\n".join(["id\tdocument\tlabel", *rows]) + "\n")
    for split, count in SIZES["klue_tc"].items():
        headlines = [
            {"guid": f"ynat-v1_{split}_{i:05d}", "title": text, "predefined_news_category": topic, "label": topic,
             "url": "https://news.example", "date": "2016.06.30. 오전 10:36"}
            for i, (text, topic) in enumerate((text, YNAT_TOPICS[rng.integers(0, 7)]) for text in draw(count))
        ]  # fmt: skip
        write(source_dir / "klue_tc" / f"ynat-v1.1_{split}.json", json.dumps(headlines, ensure_ascii=False))
    paragraphs = []
    for _ in range(max(int(SIZES["korquad"]["paragraphs"] * scale), 4)):
        target, paragraph = rng.integers(*PARAGRAPH_CHARACTERS), ""
        while len(paragraph) < target:
            paragraph += sentences[rng.integers(0, len(sentences))] + " "
        paragraphs.append({"context": paragraph.strip(), "qas": []})
    for i, question in enumerate(draw(SIZES["korquad"]["questions"])):
        qa = {"id": str(i), "question": question, "answers": [{"text": "", "answer_start": 0}]}
        paragraphs[rng.integers(0, len(paragraphs))]["qas"].append(qa)
    articles = [{"title": "stand-in", "paragraphs": [p for p in paragraphs if p["qas"]]}]
    write(source_dir / "korquad" / "KorQuAD_v1.0_dev.json", json.dumps({"data": articles}, ensure_ascii=False))


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def random_checkpoint(config_path, vocab_path, directory):
    """A Google-format checkpoint of random weights of the config, its config and vocab beside it."""
    import google_checkpoint
    import model

    config = model.BertConfig.from_json_file(config_path)
    encoder = model.BertEncoder(config, dtype="float32")  # a functional model: its weights exist, initialised
    google_checkpoint.save_checkpoint(encoder, str(directory / "model.ckpt"))
    write(directory / "bert_config.json", pathlib.Path(config_path).read_text())
    write(directory / "vocab.txt", pathlib.Path(vocab_path).read_text(encoding="utf-8"))
    return str(directory / "model.ckpt")


def time_tasks(config_path, vocab_path, corpus_zip, question_pair_dir, scale, work_dir, batch_size=64):
    """{task: (examples, seconds, scores)} of each of TASKS, its data prepared (untimed) first."""
    import data
    import evaluation

    source_dir, data_dir = work_dir / "source", work_dir / "tfds"
    write_stand_ins(source_dir, corpus_sentences(corpus_zip), scale, np.random.default_rng(0))
    for split in ("train", "validation"):
        write(source_dir / "question_pair" / f"{split}.txt", (question_pair_dir / f"{split}.txt").read_text("utf-8"))
    data.prepare(["nsmc", "klue_tc", "question_pair", "korquad"], str(source_dir), str(data_dir))
    checkpoint = random_checkpoint(config_path, vocab_path, work_dir / "model")
    timed = {}
    for task in TASKS:
        started = time.perf_counter()
        scores = evaluation.evaluate([task], checkpoint=checkpoint, data_dir=str(data_dir), batch_size=batch_size)
        timed[task] = (scores[task]["n"], time.perf_counter() - started, scores[task])
    return timed


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as work_dir:
        timed = time_tasks(
            FLAGS.config, FLAGS.vocab_path, FLAGS.corpus, pathlib.Path(FLAGS.source_dir) / "question_pair",
            FLAGS.scale, pathlib.Path(work_dir), FLAGS.batch_size,
        )  # fmt: skip
    print(f"{os.cpu_count()} CPUs, {FLAGS.config}, batch {FLAGS.batch_size}")
    for task, (examples, seconds, _) in timed.items():
        print(f"{task:<26}{examples:>8} examples {seconds:>8.1f} s")


if __name__ == "__main__":
    define_flags()
    app.run(main)
