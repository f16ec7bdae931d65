"""google-research/bert tokenization.py FullTokenizer logic, in plain Python."""

import unicodedata


def load_vocab(path):
    vocab = {}
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f):
            vocab[line.strip()] = index
    return vocab


def _is_whitespace(char):
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char):
    if char in "\t\n\r":
        return False
    return unicodedata.category(char).startswith("C")


def _is_punctuation(char):
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_chinese_char(cp):
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _strip_accents(text):
    return "".join(char for char in unicodedata.normalize("NFD", text) if unicodedata.category(char) != "Mn")


def basic_tokens(text, do_lower_case=False):
    """BasicTokenizer's words and punctuation marks, before WordPiece."""
    cleaned = []
    for char in text:
        cp = ord(char)
        if cp == 0 or cp == 0xFFFD or _is_control(char):
            continue
        cleaned.append(" " if _is_whitespace(char) else char)
    spaced = []
    for char in "".join(cleaned):
        spaced.append(f" {char} " if _is_chinese_char(ord(char)) else char)
    tokens = []
    for token in "".join(spaced).strip().split():
        if do_lower_case:
            token = _strip_accents(token.lower())
        current = []
        for char in token:
            if _is_punctuation(char):
                if current:
                    tokens.append("".join(current))
                tokens.append(char)
                current = []
            else:
                current.append(char)
        if current:
            tokens.append("".join(current))
    return tokens


def _wordpiece(token, vocab, max_chars=100):
    if len(token) > max_chars:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(token):
        end = len(token)
        piece = None
        while start < end:
            candidate = token[start:end]
            if start > 0:
                candidate = "##" + candidate
            if candidate in vocab:
                piece = candidate
                break
            end -= 1
        if piece is None:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def encode(text, vocab, max_sequence_length, do_lower_case=False):
    """[CLS] wordpieces [SEP] ids, wordpieces truncated to fit, padded with [PAD]: (ids, mask)."""
    pieces = [p for token in basic_tokens(text, do_lower_case) for p in _wordpiece(token, vocab)]
    ids = [vocab["[CLS]"]] + [vocab[p] for p in pieces][: max_sequence_length - 2] + [vocab["[SEP]"]]
    mask = [1] * len(ids) + [0] * (max_sequence_length - len(ids))
    return ids + [vocab["[PAD]"]] * (max_sequence_length - len(ids)), mask
