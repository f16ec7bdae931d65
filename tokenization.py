"""KR-BERT tokenization as TensorFlow ops: BERT's FullTokenizer in-graph, so that training batches, evaluation and
the exported SavedModel tokenize alike.
"""

import tensorflow as tf
import tensorflow_text as tf_text

import errors
import files

# [CLS] and [SEP]: the shortest a tokenized sentence is.
MIN_SEQUENCE_LENGTH = 2
# google-research/bert tokenization.py WordpieceTokenizer: words longer than this many characters are [UNK].
MAX_CHARS_PER_WORD = 100


# tokenization.py BasicTokenizer: words split at whitespace, around every punctuation character (ASCII
# symbols and Unicode P*) and around every CJK ideograph. Hangul is neither, so it stays in words.
_PUNCTUATION = r"[!-/:-@\[-`{-~\p{P}]"
_CJK_IDEOGRAPH = (
    r"[\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
    r"\x{2B740}-\x{2B81F}\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]"
)
_WORD_DELIMITERS = rf" +|{_PUNCTUATION}|{_CJK_IDEOGRAPH}"
_KEPT_DELIMITERS = rf"{_PUNCTUATION}|{_CJK_IDEOGRAPH}"


class KrBertTokenizer(tf.Module):
    """BERT's FullTokenizer as TensorFlow ops: KR-BERT's (do_lower_case=False), or with lower-casing.

    The two halves of `tensorflow_text.BertTokenizer`, with no Unicode normalisation unless `lower_case` (NFD
    decomposes Hangul, which only sub-character vocabs want): BERT's basic tokenization as
    `tensorflow_text.regex_split`, then `tensorflow_text.WordpieceTokenizer`. Two of the reference's rules are
    applied as it states them, where tf-text's BertTokenizer differs: text cleaning (control characters dropped,
    not made spaces; Unicode spaces made spaces) and the word length limit (100 characters, not 100 bytes: a
    34-syllable Hangul word is a word, not [UNK]).

    Args:
        vocab_path: a BERT vocab file, one token per line.
        max_sequence_length: length of every output row, [CLS] and [SEP] included.
        model_vocab_size: the model's vocab_size, if any: a vocab of another size is refused.
        lower_case: BERT's do_lower_case: text lower-cased and its accents stripped (Unicode NFD, then the
            combining marks dropped), so Hangul syllables become jamo, as sub-character vocabs need.

    Example:
        >>> tokenizer = KrBertTokenizer("../shared/data/vocabs/vocab_char_16424.txt", max_sequence_length=8)
        >>> tokenizer(tf.constant(["안녕하세요"]))["input_word_ids"].numpy()
        array([[   2,  128, 5660,  160, 4270,    3,    0,    0]], dtype=int32)
    """

    def __init__(self, vocab_path, max_sequence_length, model_vocab_size=None, lower_case=False):
        super().__init__()
        self.lower_case = lower_case
        if not files.exists(vocab_path):
            raise errors.ConfigError(f"vocab file not found: {vocab_path}")
        if max_sequence_length < MIN_SEQUENCE_LENGTH:
            raise errors.ConfigError(
                f"max_sequence_length must leave room for [CLS] and [SEP], got {max_sequence_length}"
            )
        # A vocab longer than the config's is refused one line past it, however long the file.
        read_at_most = None if model_vocab_size is None else model_vocab_size + 1
        tokens = [line.rstrip("\n") for line in files.read_lines(vocab_path, read_at_most)]
        self.vocab_size = len(tokens)
        if model_vocab_size is not None and self.vocab_size > model_vocab_size:
            raise errors.ConfigError(
                f"vocab {vocab_path} has more than {model_vocab_size} tokens, config vocab_size is {model_vocab_size}"
            )
        if model_vocab_size is not None and self.vocab_size != model_vocab_size:
            raise errors.ConfigError(
                f"vocab {vocab_path} has {self.vocab_size} tokens, config vocab_size is {model_vocab_size}"
            )
        missing = [token for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if token not in tokens]
        if missing:
            raise errors.ConfigError(f"vocab file {vocab_path} has no {', '.join(missing)} token")
        self.max_sequence_length = max_sequence_length
        self.pad_id = tokens.index("[PAD]")
        self.cls_id = tokens.index("[CLS]")
        self.sep_id = tokens.index("[SEP]")
        vocab_table = tf.lookup.StaticVocabularyTable(
            tf.lookup.TextFileInitializer(
                vocab_path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER
            ),
            num_oov_buckets=1,
        )
        self.wordpiece_tokenizer = tf_text.WordpieceTokenizer(
            vocab_table,
            # Enough bytes for any word of MAX_CHARS_PER_WORD characters; longer words are [UNK] already.
            max_bytes_per_word=4 * MAX_CHARS_PER_WORD,
            token_out_type=tf.int32,
            unknown_token="[UNK]",
        )

    def __call__(self, sentences):
        """sentences: string [batch] -> int32 `input_word_ids`, `input_mask`, `input_type_ids`, [batch, max_len]."""
        # tokenization.py _clean_text and whitespace_tokenize: Unicode spaces split words, control
        # characters (every category C, but tab/newline/CR) and U+FFFD are dropped.
        text = tf.strings.regex_replace(sentences, r"[\t\n\r\p{Zs}\x{2028}\x{2029}]", " ")
        text = tf.strings.regex_replace(text, r"[\p{C}\x{FFFD}]", "")
        if self.lower_case:
            # tokenization.py BasicTokenizer, do_lower_case: `token.lower()`, then `_run_strip_accents`.
            text = tf_text.normalize_utf8(tf.strings.lower(text, encoding="utf-8"), "NFD")
            text = tf.strings.regex_replace(text, r"\p{Mn}", "")
        words = tf_text.regex_split(text, _WORD_DELIMITERS, _KEPT_DELIMITERS)  # string [batch, (words)]
        words = tf.ragged.map_flat_values(
            lambda flat: tf.where(tf.strings.length(flat, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD, "[UNK]", flat),
            words,
        )
        pieces = self.wordpiece_tokenizer.tokenize(words).merge_dims(1, 2)  # int32 [batch, (pieces)]
        pieces = pieces[:, : self.max_sequence_length - 2]  # room for [CLS] and [SEP]
        batch_size = tf.shape(sentences)[0]
        cls = tf.fill([batch_size, 1], self.cls_id)  # [batch, 1]
        sep = tf.fill([batch_size, 1], self.sep_id)  # [batch, 1]
        ids = tf.concat([cls, pieces, sep], axis=1)  # int32 [batch, (tokens)]
        shape = [None, self.max_sequence_length]
        input_word_ids = ids.to_tensor(default_value=self.pad_id, shape=shape)  # [batch, max_len]
        input_mask = tf.ones_like(ids).to_tensor(default_value=0, shape=shape)  # [batch, max_len]
        return {
            "input_word_ids": input_word_ids,
            "input_mask": input_mask,
            "input_type_ids": tf.zeros_like(input_word_ids),
        }

    def trimmed(self, sentences):
        """`self(sentences)` without the padding columns no sentence of the batch needs (`trim_padding`): for
        encoding, where the batch's shape is free."""
        return trim_padding(self(sentences))


# Trimmed batches keep a multiple of this many columns: few distinct shapes, so XLA (which Keras turns on for
# GPUs) compiles a handful of programs, not one per sentence length.
TRIMMED_LENGTH_MULTIPLE = 8


def trim_padding(features):
    """Features [batch, max_len] -> [batch, length]: the batch's longest sentence rounded up to a multiple of
    TRIMMED_LENGTH_MULTIPLE (at most max_len). Padding columns only cost compute: padded positions are masked
    out of attention and pooling, so the embeddings are unchanged."""
    longest = tf.reduce_max(tf.reduce_sum(features["input_mask"], axis=1))
    length = -(-longest // TRIMMED_LENGTH_MULTIPLE) * TRIMMED_LENGTH_MULTIPLE  # slicing stops at max_len
    return {name: values[:, :length] for name, values in features.items()}  # each [batch, length]
