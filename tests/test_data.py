"""Tokenization against BERT's reference tokenizer on real Korean text; tfds-korean preparation offline (and the
source rows it refuses) and from the network (a loopback HTTPS mirror); KorNLI triples against an independent
grouping."""

import contextlib
import json
import pathlib
import re
import signal
import zipfile

import loopback
import numpy as np
import pytest
import stand_in_checksums
import tensorflow as tf
import tfds_korean.korsts
from helpers import (
    KOREAN_SENTENCES,
    KORSTS_HEADER,
    SCENES,
    SELF_MADE_STAND_IN_ROWS,
    SHARED_DATA,
    VOCAB,
    assert_failed_cleanly,
    needs_openssl,
    needs_shared,
    require_shared,
    scene,
    tfds_korean_downloads,
    write_vocab,
)
from reference_tokenizer import basic_tokens, encode, load_vocab

import data
import errors
import tokenization

# Inputs where tf-text's BertTokenizer and the reference disagree unless the tokenizer states the
# reference's rules itself, and the ones every tokenizer must survive.
EDGE_CASES = [
    "가\u00a0나 다\u3000라",  # Unicode spaces (Zs) split words
    "zero\u200bwidth 가\u200b나",  # format characters (Cf) are dropped, not made spaces
    "ㅋ" * 40,  # 40 characters, 120 bytes: still a word
    "ㅋ" * 101,  # over 100 characters: [UNK]
    "tab\tform\x0cfeed\x0bvertical",
    "line\u2028separator",
    "\ufffd대체 문자",
    "이모지 😀😂🤣 ❤️ 👍🏽",
    "漢字와 한글, English, 123.45%, (괄호) [대괄호] 「인용」…",
    "",
    "   ",
    "😀",
    "아주 긴 문장 " * 200,
]


def shared_sentences():
    sentences = []
    for name in ("sts-train.tsv", "sts-dev.tsv"):
        for line in (SHARED_DATA / "korsts" / name).read_text(encoding="utf-8").splitlines()[1:]:
            sentences += line.split("\t")[5:7]
    for line in (SHARED_DATA / "kornli" / "xnli.dev.ko.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        sentences += line.split("\t")[:2]
    for pair in json.loads((SHARED_DATA / "klue_sts" / "klue-sts-v1.1_dev.json").read_text(encoding="utf-8")):
        sentences += [pair["sentence1"], pair["sentence2"]]
    with zipfile.ZipFile(SHARED_DATA / "korean_wikipedia_corpus" / "corpus.zip") as corpus:
        for name in corpus.namelist()[:2]:
            sentences += corpus.read(name).decode("utf-8").splitlines()
    return list(dict.fromkeys(sentences))


@needs_shared
def test_tokenizer_matches_reference_on_real_korean_text():
    sentences = shared_sentences() + EDGE_CASES
    assert len(sentences) > 20000
    assert any(len(s) > 200 for s in sentences) and any(c.isascii() and c.isalpha() for c in "".join(sentences))
    vocab = load_vocab(VOCAB)
    tokenizer = tokenization.KrBertTokenizer(str(VOCAB), max_sequence_length=64)
    for start in range(0, len(sentences), 1024):
        batch = sentences[start : start + 1024]
        features = tokenizer(tf.constant(batch))
        for sentence, ids, mask in zip(
            batch, features["input_word_ids"].numpy(), features["input_mask"].numpy(), strict=True
        ):
            expected_ids, expected_mask = encode(sentence, vocab, 64)
            assert ids.tolist() == expected_ids, sentence
            assert mask.tolist() == expected_mask, sentence
        np.testing.assert_array_equal(features["input_type_ids"], 0)


# Where lower-casing and accent stripping have something to do, Hangul aside.
CASED_TEXT = [
    "Café ÉCOLE naïve Straße İstanbul ΣΊΣΥΦΟΣ Ångström",
    "KR-BERT와 KoSimCSE, SNU·KLUE의 ＡＢＣ",
    "Ｆｕｌｌ-width 𝐁𝐨𝐥𝐝 ﬁ ligature",
]


@pytest.mark.parametrize("lower_case", [False, True])
def test_tokenizer_matches_reference_on_a_vocab_of_its_own(tmp_path, lower_case):
    """Without the shared data: a vocab of whole words, characters and ##-pieces of the test's own sentences,
    so WordPiece finds words, pieces and [UNK]s, cased and lower-cased."""
    sentences = KOREAN_SENTENCES + EDGE_CASES + CASED_TEXT
    words = [token for sentence in KOREAN_SENTENCES for token in basic_tokens(sentence, lower_case)]
    characters = sorted(
        {char for sentence in sentences for token in basic_tokens(sentence, lower_case) for char in token}
    )
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words[::2], "##니다", "##한다"]
    tokens += [piece for char in characters[::3] for piece in (char, f"##{char}")]
    vocab_path = tmp_path / "vocab.txt"
    vocab_path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    vocab = load_vocab(vocab_path)
    tokenizer = tokenization.KrBertTokenizer(str(vocab_path), max_sequence_length=32, lower_case=lower_case)
    features = tokenizer(tf.constant(sentences))
    for sentence, ids, mask in zip(
        sentences, *(features[name].numpy() for name in ("input_word_ids", "input_mask")), strict=True
    ):
        expected_ids, expected_mask = encode(sentence, vocab, 32, do_lower_case=lower_case)
        assert (ids.tolist(), mask.tolist()) == (expected_ids, expected_mask), sentence
    tokens = features["input_word_ids"].numpy()[features["input_mask"].numpy() == 1]
    assert (tokens == vocab["[UNK]"]).any() and (tokens > vocab["[MASK]"]).mean() > 0.1  # pieces found, and unknowns


@needs_shared
def test_lower_casing_tokenizer_matches_reference(tmp_path):
    """do_lower_case (a sub-character vocab's setting): lower-cased, accents stripped, Hangul as jamo. The vocab is
    the character vocab plus every character the reference makes of the text, so WordPiece has pieces to find."""
    sentences = shared_sentences()[:3000] + EDGE_CASES + CASED_TEXT
    characters = sorted({char for sentence in sentences for token in basic_tokens(sentence, True) for char in token})
    tokens = VOCAB.read_text(encoding="utf-8").splitlines()
    tokens += [piece for char in characters for piece in (char, f"##{char}") if piece not in set(tokens)]
    vocab_path = tmp_path / "vocab.txt"
    vocab_path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    vocab = load_vocab(vocab_path)
    assert any(0x1100 <= ord(char) <= 0x11FF for char in characters)  # Hangul decomposed into jamo
    tokenizer = tokenization.KrBertTokenizer(str(vocab_path), max_sequence_length=64, lower_case=True)
    ids = tokenizer(tf.constant(sentences))["input_word_ids"].numpy()
    for sentence, row in zip(sentences, ids, strict=True):
        assert row.tolist() == encode(sentence, vocab, 64, do_lower_case=True)[0], sentence
    assert (ids == vocab["[UNK]"]).mean() < 0.01


def test_long_input_keeps_sep_and_short_input_is_padded(tmp_path):
    tokenizer = tokenization.KrBertTokenizer(str(write_vocab(tmp_path / "vocab.txt")), max_sequence_length=16)
    features = tokenizer(tf.constant(["아주 긴 문장 " * 50, "짧다", ""]))
    ids, mask = features["input_word_ids"].numpy(), features["input_mask"].numpy()
    assert ids.shape == (3, 16) and ids.dtype == np.int32
    assert ids[0, 0] == tokenizer.cls_id and ids[0, -1] == tokenizer.sep_id and mask[0].all()
    assert mask[1].sum() == 4 and ids[1, 3] == tokenizer.sep_id and (ids[1, 4:] == tokenizer.pad_id).all()
    assert ids[2, :2].tolist() == [tokenizer.cls_id, tokenizer.sep_id] and mask[2].sum() == 2


def test_tokenizer_runs_inside_tf_data(tmp_path):
    sentences = ["안녕하세요.", "KR-BERT 문장 임베딩", "😀"]
    tokenizer = tokenization.KrBertTokenizer(str(write_vocab(tmp_path / "vocab.txt")), max_sequence_length=12)
    mapped = next(iter(tf.data.Dataset.from_tensor_slices(sentences).batch(3).map(tokenizer)))
    np.testing.assert_array_equal(mapped["input_word_ids"], tokenizer(tf.constant(sentences))["input_word_ids"])


def test_tokenizer_rejects_missing_vocab(tmp_path):
    with pytest.raises(errors.ConfigError, match="vocab file not found"):
        tokenization.KrBertTokenizer(str(tmp_path / "vocab.txt"), 64)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n가\n")
    with pytest.raises(errors.ConfigError, match=r"has no \[CLS\], \[SEP\] token"):
        tokenization.KrBertTokenizer(str(tmp_path / "vocab.txt"), 64)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n가\n")
    with pytest.raises(errors.ConfigError, match="has 5 tokens, config vocab_size is 16424"):
        tokenization.KrBertTokenizer(str(tmp_path / "vocab.txt"), 64, model_vocab_size=16424)


def test_a_vocab_longer_than_its_config_is_refused_one_line_past_it(tmp_path):
    # Past its 6th line the file is not UTF-8: reading on would be refused as that, not as too long.
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n\xea\xb0\x80\n#\n" + b"\xff\n" * 100_000)
    with pytest.raises(errors.ConfigError, match="vocab .* has more than 5 tokens, config vocab_size is 5"):
        tokenization.KrBertTokenizer(str(tmp_path / "vocab.txt"), 64, model_vocab_size=5)
    with pytest.raises(errors.FileError, match="line 7 is not UTF-8 text"):  # read whole, as without a config
        tokenization.KrBertTokenizer(str(tmp_path / "vocab.txt"), 64)


def test_prepared_datasets_match_the_source_files(prepared_data_dir):
    data_dir, log = prepared_data_dir
    for split in ("train", "dev"):
        rows = (SHARED_DATA / "korsts" / f"sts-{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
        examples = list(data.sts_pairs("korsts", split, data_dir).as_numpy_iterator())
        assert len(examples) == len(rows)
        first = rows[0].split("\t")
        assert any(
            e["sentence1"].decode() == first[5] and e["score"] == pytest.approx(float(first[4])) for e in examples
        )
    klue = data.sts_pairs("klue_sts", "dev", data_dir)
    assert len(list(klue)) == 519
    scores = np.array([e["score"] for e in klue.as_numpy_iterator()])
    assert scores.min() >= 0.0 and scores.max() <= 5.0 and scores.std() > 1.0
    nli_rows = (SHARED_DATA / "kornli" / "xnli.dev.ko.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert len(list(data.load("kornli", "xnli_dev", data_dir))) == len(nli_rows)
    documents = list(data.load("korean_wikipedia_corpus", "train", data_dir).as_numpy_iterator())
    assert sum(len(d["content"]) for d in documents) > 40000
    # Absent upstream files were named when they were left out.
    for missing in ("korsts/sts-test.tsv", "klue_sts/klue-sts-v1.1_train.json", "kornli/multinli.train.ko.tsv"):
        assert missing in log
    # The datasets with none of their files there are named and left out; Question pair's two files are read.
    for absent in ("nsmc", "klue_tc", "korquad"):
        assert f"{absent}: none of its files is in {SHARED_DATA}, so it is left out" in log
    assert len(list(data.question_pairs("validation", data_dir))) == 682


def test_self_made_datasets_match_their_source_files(self_made_source_dir, self_made_data_dir):
    """What the tests without the shared data read: every row of the self-made files, as written."""

    def read_back(pairs, score):
        return sorted((p["sentence1"].decode(), p["sentence2"].decode(), round(float(p[score]), 3)) for p in pairs)

    for split in ("train", "dev"):
        lines = (self_made_source_dir / "korsts" / f"sts-{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
        rows = sorted((row[5], row[6], float(row[4])) for row in (line.split("\t") for line in lines))
        assert read_back(data.sts_pairs("korsts", split, self_made_data_dir).as_numpy_iterator(), "score") == rows
    klue = json.loads((self_made_source_dir / "klue_sts" / "klue-sts-v1.1_dev.json").read_text(encoding="utf-8"))
    pairs = data.load("klue_sts", "dev", self_made_data_dir).as_numpy_iterator()
    assert read_back(pairs, "label") == sorted((p["sentence1"], p["sentence2"], p["labels"]["label"]) for p in klue)
    nli_lines = (self_made_source_dir / "kornli" / "xnli.dev.ko.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert len(list(data.load("kornli", "xnli_dev", self_made_data_dir))) == len(nli_lines) == 48
    sentences = {sentence.decode() for sentence in data.corpus_sentences(self_made_data_dir).as_numpy_iterator()}
    assert sentences == {*(scene(*parts) for parts in SCENES), *KOREAN_SENTENCES}


def test_absent_split_says_which_file_to_provide(self_made_data_dir):
    with pytest.raises(errors.DataError, match=r"korsts:test was not prepared .* put korsts/sts-test.tsv under"):
        data.sts_pairs("korsts", "test", self_made_data_dir)


def test_unknown_or_unprepared_dataset(tmp_path):
    with pytest.raises(errors.DataError, match="unknown dataset 'korsts2'"):
        data.load("korsts2", "dev", tmp_path)
    with pytest.raises(errors.DataError, match="unknown split 'validation' of korsts"):
        data.load("korsts", "validation", tmp_path)
    with pytest.raises(errors.DataError, match="unknown STS dataset 'kornli'"):
        data.sts_pairs("kornli", "xnli_dev", tmp_path)
    # No network (conftest: every https request meets a refused connection): at once, both ways out.
    files = "korsts/sts-train.tsv, korsts/sts-dev.tsv, korsts/sts-test.tsv"
    message = (
        f"korsts is not prepared in {tmp_path / 'tfds'} and cannot be downloaded: raw.githubusercontent.com is "
        "unreachable (ProxyError). Connect to the internet, or prepare it offline: `python data.py prepare "
        f"--source_dir=DIR --data_dir={tmp_path / 'tfds'} --datasets=korsts` with the upstream files in DIR ({files})"
    )
    with pytest.raises(errors.DataError, match=re.escape(message)):
        data.load("korsts", "dev", tmp_path / "tfds")
    assert not (tmp_path / "tfds").exists()


KORSTS_URL = (
    "https://raw.githubusercontent.com/kakaobrain/KorNLUDatasets/0df0fe7d496eb61b092e022e238c2230b29f1cbc/KorSTS"
)


@contextlib.contextmanager
def tfds_korean_mirror(tmp_path, monkeypatch, **downloads):
    """A loopback HTTPS mirror serving the tfds-korean builders' URLs (`tfds_korean_downloads(**downloads)`), the
    stand-ins' checksums registered: tfds' own downloader, checksum verification and extraction run as on a
    connected machine."""
    (tmp_path / "checksums").mkdir()
    files = tfds_korean_downloads(tmp_path / "checksums", **downloads)
    for name, infos in stand_in_checksums.url_infos(tmp_path / "checksums").items():
        monkeypatch.setattr(data.BUILDERS[name], "url_infos", infos)
    with loopback.HttpsMirror(files, tmp_path) as mirror:
        for variable, value in mirror.environment.items():
            monkeypatch.setenv(variable, value)
        yield mirror


@pytest.fixture
def internet(tmp_path, monkeypatch):
    """The mirror of the shared data's files."""
    require_shared()
    with tfds_korean_mirror(tmp_path, monkeypatch) as mirror:
        yield mirror


@pytest.fixture
def internet_of_self_made_files(self_made_source_dir, tmp_path, monkeypatch):
    """The mirror of the self-made upstream files (`self_made_source_dir`): no shared data needed."""
    downloads = {"source_dir": self_made_source_dir, "stand_in_rows": SELF_MADE_STAND_IN_ROWS}
    with tfds_korean_mirror(tmp_path, monkeypatch, **downloads) as mirror:
        yield mirror


@pytest.mark.slow
@needs_openssl
def test_datasets_download_and_prepare_themselves_through_tfds(internet, prepared_data_dir, tmp_path):
    def pairs(split, data_dir):
        return sorted(tuple(pair.values()) for pair in data.sts_pairs("korsts", split, data_dir).as_numpy_iterator())

    data_dir = tmp_path / "tfds"
    # data.py prepare without --source_dir, and a first load of a dataset never prepared.
    data.prepare(["korsts"], None, str(data_dir))
    downloaded, offline = pairs("dev", data_dir), pairs("dev", prepared_data_dir[0])
    assert downloaded == offline and len(downloaded) == 1500
    assert len(list(data.sts_pairs("korsts", "test", data_dir))) == 200  # the stand-in
    assert len(list(data.sts_pairs("klue_sts", "dev", data_dir))) == 519
    # Reachability first (HEAD), then tfds' downloads (GET), each file once; prepared data is read as it is.
    korsts = [f"{KORSTS_URL}/sts-{split}.tsv" for split in ("dev", "test", "train")]
    assert [request for request in internet.requests if "KorSTS" in request[1]] == [
        *(("HEAD", url) for url in korsts),
        *(("GET", url) for url in sorted(korsts, key=[r[1] for r in internet.requests if r[0] == "GET"].index)),
    ]
    count = len(internet.requests)
    data.sts_pairs("korsts", "train", data_dir)
    assert len(internet.requests) == count


@pytest.mark.slow
@needs_openssl
@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (
            "checksum",
            f"downloading korsts failed, nothing was kept: Artifact {KORSTS_URL}/sts-train.tsv has wrong checksum",
        ),
        ("404", f"korsts cannot be downloaded: {KORSTS_URL}/sts-test.tsv answers HTTP 404"),
        ("dropped", "downloading korsts failed, nothing was kept: ('Connection broken: IncompleteRead"),
    ],
)
def test_a_failed_download_is_one_line_and_leaves_nothing_behind(
    internet_of_self_made_files, tmp_path, failure, message
):
    data_dir = tmp_path / "tfds"
    (data_dir / "downloads").mkdir(parents=True)
    (data_dir / "downloads" / "earlier.zip").write_text("a download of another dataset")
    if failure == "checksum":
        internet_of_self_made_files.files[f"{KORSTS_URL}/sts-train.tsv"] += (
            b"\n"  # not the file whose checksum is registered
        )
    elif failure == "404":
        del internet_of_self_made_files.files[f"{KORSTS_URL}/sts-test.tsv"]
    else:
        internet_of_self_made_files.drop.add(f"{KORSTS_URL}/sts-train.tsv")
    with pytest.raises(errors.DataError) as raised:
        data.load("korsts", "dev", data_dir)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    assert sorted(path.relative_to(data_dir) for path in data_dir.rglob("*")) == [
        pathlib.Path("downloads"),
        pathlib.Path("downloads/earlier.zip"),
    ]


def test_prepare_with_no_source_file_fails_clearly(tmp_path):
    with pytest.raises(errors.DataError, match="none of korsts/sts-train.tsv"):
        data.prepare(["korsts"], str(tmp_path), str(tmp_path / "tfds"))
    with pytest.raises(errors.DataError, match="unknown dataset 'wiki'"):
        data.prepare(["wiki"], str(tmp_path), str(tmp_path / "tfds"))
    assert not (tmp_path / "tfds").exists()


def write_sources(source_dir, files):
    for relative, text in files.items():
        (source_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (source_dir / relative).write_text(text, encoding="utf-8")


GOOD_STS_ROW = "main-captions\tMSRvid\t2012test\t0001\t4.5\t한 남자가 춤을 춘다.\t남자가 춤을 추고 있다."


@pytest.mark.parametrize(
    ("files", "dataset", "message"),
    [
        (
            {"korsts/sts-dev.tsv": f"{KORSTS_HEADER}\n{GOOD_STS_ROW}\nmain\tMSRvid\t2012\t0002\t3.0\t문장 하나만\n"},
            "korsts",
            "sts-dev.tsv line 3: 6 tab-separated columns, expected 7",
        ),
        (
            {"korsts/sts-dev.tsv": f"{KORSTS_HEADER}\nmain\tMSRvid\t2012\t0002\t다섯\t문장\t문장\n"},
            "korsts",
            "sts-dev.tsv line 2: score '다섯' is not a number",
        ),
        (
            {"kornli/xnli.dev.ko.tsv": "sentence1\tsentence2\tgold_label\n전제\t가설\tmaybe\n"},
            "kornli",
            "xnli.dev.ko.tsv line 2: gold_label 'maybe' is not one of",
        ),
        (
            {"kornli/xnli.dev.ko.tsv": "sentence1\tsentence2\tgold_label\n전제만 있다\n"},
            "kornli",
            "xnli.dev.ko.tsv line 2: 1 tab-separated columns, expected 3",
        ),
        (
            {"klue_sts/klue-sts-v1.1_dev.json": '[{"guid": "x", "sentence1": "가", "sentence2": "나"'},
            "klue_sts",
            "klue-sts-v1.1_dev.json is not valid JSON",
        ),
        (
            {"klue_sts/klue-sts-v1.1_dev.json": json.dumps([{"guid": "x", "sentence1": "가", "sentence2": "나"}])},
            "klue_sts",
            "klue-sts-v1.1_dev.json item 0: expected guid, sentence1, sentence2 and numeric labels",
        ),
        ({"korean_wikipedia_corpus/corpus.zip": "not a zip"}, "korean_wikipedia_corpus", "corpus.zip is not a zip"),
        (
            {"nsmc/ratings_test.txt": "id\tdocument\tlabel\n1\t좋다\t2\n"},
            "nsmc",
            "ratings_test.txt line 2: label '2' is not 0 or 1",
        ),
        (
            {"nsmc/ratings_test.txt": "id\tdocument\tlabel\n1\t좋다\n"},
            "nsmc",
            "ratings_test.txt line 2: fewer tab-separated columns",
        ),
        (
            {"nsmc/ratings_test.txt": "id\treview\tlabel\n"},
            "nsmc",
            "ratings_test.txt: the header names ['id', 'review', 'label']",
        ),
        (
            {"question_pair/validation.txt": "question1\tquestion2\tis_duplicate\n가\t나\t예\n"},
            "question_pair",
            "validation.txt line 2: is_duplicate '예' is not 0 or 1",
        ),
        (
            {"klue_tc/ynat-v1.1_dev.json": json.dumps([{"guid": "x", "title": "제목", "label": "사회"}])},
            "klue_tc",
            "ynat-v1.1_dev.json item 0: expected the strings guid, title, predefined_news_category, label, url, date",
        ),
        ({"korquad/KorQuAD_v1.0_dev.json": "[]"}, "korquad", 'KorQuAD_v1.0_dev.json: expected {"data": [articles]}'),
        (
            {
                "korquad/KorQuAD_v1.0_dev.json": json.dumps(
                    {
                        "data": [
                            {
                                "title": "t",
                                "paragraphs": [
                                    {
                                        "context": "c",
                                        "qas": [
                                            {
                                                "id": "1",
                                                "question": "q",
                                                "answers": [{"text": "a", "answer_start": "0"}],
                                            }
                                        ],
                                    }
                                ],
                            }
                        ]
                    }
                )
            },
            "korquad",
            "KorQuAD_v1.0_dev.json article 0: expected a title and paragraphs of a context and qas",
        ),
    ],
)
def test_malformed_source_rows_are_named_and_nothing_is_prepared(tmp_path, files, dataset, message):
    write_sources(tmp_path / "source", files)
    with pytest.raises(errors.InputError, match=re.escape(message)):
        data.prepare([dataset], str(tmp_path / "source"), str(tmp_path / "tfds"))
    assert not (tmp_path / "tfds" / dataset).exists()


def test_prepare_without_datasets_needs_some_datasets_files(tmp_path):
    (tmp_path / "source").mkdir()
    with pytest.raises(errors.DataError, match=re.escape(f"none of the datasets' files is in {tmp_path / 'source'}")):
        data.prepare(None, str(tmp_path / "source"), str(tmp_path / "tfds"))


def test_corpus_without_sentences_is_refused(tmp_path):
    corpus = tmp_path / "source" / "korean_wikipedia_corpus"
    corpus.mkdir(parents=True)
    with zipfile.ZipFile(corpus / "corpus.zip", "w") as archive:
        archive.writestr("text-preprocessed/AA/wiki_00", "제목만 있는 문서\n\n")
    data.prepare(["korean_wikipedia_corpus"], str(tmp_path / "source"), str(tmp_path / "tfds"))
    with pytest.raises(errors.DataError, match="korean_wikipedia_corpus:train has no sentences to train on"):
        data.corpus_sentences(str(tmp_path / "tfds"))


# Premises in any order, some without an entailment or a contradiction, one with two entailments.
NLI_ROWS = [
    ("하늘이 맑다.", "날씨가 좋다.", "entailment"),
    ("고양이가 잔다.", "동물이 쉬고 있다.", "entailment"),
    ("하늘이 맑다.", "비가 온다.", "contradiction"),
    ("하늘이 맑다.", "구름이 조금 있다.", "neutral"),
    ("고양이가 잔다.", "고양이가 달린다.", "contradiction"),
    ("아이가 웃는다.", "아이가 기쁘다.", "entailment"),
    ("아이가 웃는다.", "아이가 배고프다.", "neutral"),
    ("고양이가 잔다.", "고양이가 눈을 감았다.", "entailment"),
    ("책을 읽는다.", "책을 읽지 않는다.", "contradiction"),
]


def independent_triples(rows):
    """Premise -> (last entailment, last contradiction), for premises with both, by a plain loop."""
    hypotheses = {}
    for premise, hypothesis, label in rows:
        hypotheses.setdefault(premise, {})[label] = hypothesis
    return {
        premise: (labels["entailment"], labels["contradiction"])
        for premise, labels in hypotheses.items()
        if "entailment" in labels and "contradiction" in labels
    }


def as_dict(triples):
    return {t["premise"].decode(): (t["entailment"].decode(), t["contradiction"].decode()) for t in triples}


def test_triples_are_premises_with_both_labels(tmp_path):
    lines = ["sentence1\tsentence2\tgold_label"] + ["\t".join(row) for row in NLI_ROWS]
    write_sources(tmp_path / "source", {"kornli/xnli.dev.ko.tsv": "\n".join(lines) + "\n"})
    data.prepare(["kornli"], str(tmp_path / "source"), str(tmp_path / "tfds"))
    triples = as_dict(data.nli_triples("xnli_dev", tmp_path / "tfds").as_numpy_iterator())
    assert triples == independent_triples(NLI_ROWS)
    assert triples["고양이가 잔다."] == ("고양이가 눈을 감았다.", "고양이가 달린다.")


@needs_shared
def test_triples_of_real_kornli(prepared_data_dir):
    rows = [
        tuple(line.split("\t"))
        for line in (SHARED_DATA / "kornli" / "xnli.dev.ko.tsv").read_text(encoding="utf-8").splitlines()[1:]
    ]
    triples, counts = data.nli_triples_of_splits(["xnli_dev"], prepared_data_dir[0])
    expected = independent_triples(rows)
    assert counts == {"xnli_dev": len(expected)} == {"xnli_dev": 830}
    assert as_dict(triples.as_numpy_iterator()) == expected
    with pytest.raises(errors.DataError, match="kornli:xnli_test was not prepared"):
        data.nli_triples_of_splits(["xnli_dev", "xnli_test"], prepared_data_dir[0])
    with pytest.raises(errors.DataError, match="no KorNLI split given"):
        data.nli_triples_of_splits([], prepared_data_dir[0])


def test_text_inputs_that_are_not_utf8_are_named_by_line(tmp_path):
    source = tmp_path / "source" / "korsts"
    source.mkdir(parents=True)
    (source / "sts-dev.tsv").write_bytes(f"{KORSTS_HEADER}\n{GOOD_STS_ROW}\n".encode() + GOOD_STS_ROW.encode("cp949"))
    with pytest.raises(errors.InputError, match=re.escape(f"{source / 'sts-dev.tsv'} line 3 is not UTF-8 text")):
        data.prepare(["korsts"], str(tmp_path / "source"), str(tmp_path / "tfds"))
    assert not (tmp_path / "tfds").exists()
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n" + "가\n".encode("cp949"))
    with pytest.raises(errors.InputError, match=re.escape(f"{vocab} line 5 is not UTF-8 text")):
        tokenization.KrBertTokenizer(str(vocab), 64)


def test_prepare_refuses_directories_it_cannot_use(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(errors.DataError, match=f"--source_dir {tmp_path / 'missing'} is not a directory"):
        data.prepare(["korsts"], str(tmp_path / "missing"), str(tmp_path / "tfds"))
    with pytest.raises(errors.InputError, match=f"cannot make directory {tmp_path / 'file' / 'tfds'}"):
        data.prepare(["korsts"], str(tmp_path), str(tmp_path / "file" / "tfds"))


def test_data_py_prepare_reports_bad_input_in_one_line(run_in_fork, tmp_path):
    (tmp_path / "file").write_text("x")
    result = run_in_fork("data.py", "prepare", f"--source_dir={tmp_path}", f"--data_dir={tmp_path / 'file' / 'tfds'}")
    assert_failed_cleanly(result, f"error: cannot make directory {tmp_path / 'file' / 'tfds'}")


class PassThrough:
    """A stand-in tokenizer: the batch pipelines' `trimmed` returns the strings themselves."""

    @staticmethod
    def trimmed(sentences):
        return sentences


def test_unsupervised_shuffle_reaches_a_million_sentences_back():
    # 150,000 numbered sentences: with the original scripts' buffer of 1,000,000 the first batch draws from all
    # of them; a buffer of 100,000 could only reach the first 100,063.
    numbers = tf.data.Dataset.range(150_000).map(lambda n: tf.strings.as_string(n))
    (first,) = data.unsupervised_batches(numbers, PassThrough, batch_size=64, seed=0).take(1).as_numpy_iterator()
    assert max(int(n) for n in first) >= 100_064


def test_supervised_batches_never_span_two_epochs():
    names = [f"p{i}" for i in range(10)]
    triples = tf.data.Dataset.from_tensor_slices({"premise": names, "entailment": names, "contradiction": names})
    # 10 triples in batches of 4: two batches an epoch, the last 2 triples of each shuffled epoch left out.
    batches = [b[0] for b in data.supervised_batches(triples, PassThrough, 4, seed=1).take(8).as_numpy_iterator()]
    assert all(len(batch) == 4 for batch in batches)
    epochs = [np.concatenate(batches[i : i + 2]) for i in range(0, 8, 2)]
    assert all(len(set(epoch)) == 8 for epoch in epochs)  # no triple twice in an epoch, nor in a batch
    assert len({tuple(sorted(epoch)) for epoch in epochs}) > 1  # each epoch shuffled anew


def test_an_interrupted_preparation_leaves_nothing(self_made_source_dir, tmp_path, monkeypatch):
    generate = tfds_korean.korsts.Korsts._generate_examples

    def interrupted_after_five(self, *args, **kwargs):
        for index, example in enumerate(generate(self, *args, **kwargs)):
            if index == 5:
                raise errors.Interrupted(signal.SIGTERM)  # what errors.run's handler raises
            yield example

    monkeypatch.setattr(tfds_korean.korsts.Korsts, "_generate_examples", interrupted_after_five)
    with pytest.raises(errors.Interrupted):
        data.prepare(["korsts"], str(self_made_source_dir), str(tmp_path / "tfds"))
    assert not (tmp_path / "tfds").exists()
