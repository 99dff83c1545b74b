"""Tests for build_vocab.py: layout, coverage, casing, reserved tokens, atomic writes, CLI errors."""

import logging
import os
import random

import pytest

import build_vocab
import tokenization

from tests import helpers

SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]

_WORDS = ("the lighthouse keeper kept a logbook for thirty years every evening he climbed "
          "steps and lit lamp by hand storm tore copper roof from lantern room spent night "
          "holding over lens while wind howled around morning was still burning two fishing "
          "boats found their way home maple syrup made boiling sap sugar trees until water "
          "evaporates quickly quietly running jumped jumping walked walking talked").split()


def _write_corpus(path):
    """~600 lines of Zipf-distributed words, with capitals, accents, digits, punctuation, CJK."""
    rng = random.Random(7)
    syllables = "ka ro mi lun ter sa pre con ing ed ly ber tas nor vi quo zen wa ph".split()
    made_up = {"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
               for _ in range(700)}
    vocabulary = list(_WORDS) + sorted(made_up)
    weights = [1.0 / rank for rank in range(1, len(vocabulary) + 1)]
    lines = []
    for _ in range(40):
        for _ in range(15):
            words = rng.choices(vocabulary, weights, k=rng.randint(5, 14))
            words[0] = words[0].capitalize()
            if rng.random() < 0.3:
                words.insert(rng.randrange(len(words)), rng.choice(["Café", "naïve", "Éclair"]))
            if rng.random() < 0.2:
                words.append(f"in {rng.randint(1900, 2024)}")
            if rng.random() < 0.1:
                words.append("中文")
            lines.append(" ".join(words) + rng.choice([".", "!", "?", ", then more."]))
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="module")
def uncased_vocab(corpus):
    output = corpus.parent / "uncased" / "vocab.txt"
    build_vocab.build_vocab(str(corpus), str(output), vocab_size=400, min_count=2,
                            reserved_tokens=["[NEW]", "[MASK]", "lighthouse"])
    return output


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_layout_is_the_originals_with_exact_size_and_no_duplicates(uncased_vocab):
    tokens = _lines(uncased_vocab)
    assert tokens[0] == "[PAD]"
    assert tokens[1:100] == [f"[unused{i}]" for i in range(99)]
    assert tokens[100:104] == SPECIALS
    assert len(tokens) == 400
    assert len(set(tokens)) == 400
    assert sum(t.startswith("[unused") for t in tokens) == 99


def test_reserved_tokens_follow_mask_once_each(uncased_vocab):
    tokens = _lines(uncased_vocab)
    assert tokens[104:106] == ["[NEW]", "lighthouse"]  # "[MASK]" is already reserved
    assert tokens.count("[MASK]") == 1
    assert tokens.count("lighthouse") == 1


def test_full_tokenizer_loads_it_with_the_released_special_ids(uncased_vocab):
    tokenizer = tokenization.FullTokenizer(str(uncased_vocab), do_lower_case=True)
    assert tokenizer.convert_tokens_to_ids(SPECIALS) == [100, 101, 102, 103]
    assert tokenizer.convert_tokens_to_ids(["[PAD]"]) == [0]


def test_training_text_tokenizes_without_unk(corpus, uncased_vocab):
    tokenizer = tokenization.FullTokenizer(str(uncased_vocab), do_lower_case=True)
    pieces = [p for line in _lines(corpus) for p in tokenizer.tokenize(line)]
    assert len(pieces) > 5000
    assert pieces.count("[UNK]") == 0
    # Frequent words were learned whole, not spelled letter by letter.
    assert tokenizer.tokenize("The lamp") == ["the", "lamp"]


def test_unseen_words_of_seen_characters_are_spelled_out(uncased_vocab):
    tokenizer = tokenization.FullTokenizer(str(uncased_vocab), do_lower_case=True)
    tokens = tokenizer.tokenize("Zwyq jumpedly 1234 cafés")
    assert "[UNK]" not in tokens
    assert tokenizer.tokenize("Ωmega") == ["[UNK]"]  # Ω never seen


def test_uncased_vocab_has_no_upper_case_or_accented_pieces(uncased_vocab):
    learned = _lines(uncased_vocab)[106:]
    assert all(t == t.lower() for t in learned)
    assert "é" not in learned and "##é" not in learned
    assert "c" in learned and "##e" in learned


def test_no_joiner_form_for_characters_the_tokenizer_always_splits_off(uncased_vocab):
    tokens = set(_lines(uncased_vocab))
    for char in ".!?,中文":
        assert char in tokens
        assert "##" + char not in tokens


def test_cased_vocab_keeps_case_and_accents(corpus, tmp_path):
    output = tmp_path / "vocab.txt"
    tokens = build_vocab.build_vocab(str(corpus), str(output), vocab_size=400, min_count=2,
                                     do_lower_case=False)
    assert tokens == _lines(output)
    assert {"C", "É", "##é", "##ï"} <= set(tokens)
    tokenizer = tokenization.FullTokenizer(str(output), do_lower_case=False)
    pieces = [p for line in _lines(corpus) for p in tokenizer.tokenize(line)]
    assert pieces.count("[UNK]") == 0


def test_special_tokens_follow_num_unused():
    assert build_vocab.special_tokens(0) == ["[PAD]"] + SPECIALS
    assert build_vocab.special_tokens(2, ["x", "", "[CLS]"]) == (
        ["[PAD]", "[unused0]", "[unused1]"] + SPECIALS + ["x"])


def test_small_corpus_gives_fewer_entries_and_says_so(corpus, tmp_path, caplog):
    output = tmp_path / "vocab.txt"
    with caplog.at_level(logging.INFO):
        tokens = build_vocab.build_vocab(str(corpus), str(output), vocab_size=5000, min_count=2)
    assert 400 < len(tokens) < 5000
    assert len(_lines(output)) == len(tokens)
    assert "corpus yields only" in caplog.text


def test_progress_is_logged(corpus, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        build_vocab.build_vocab(str(corpus), str(tmp_path / "v.txt"), vocab_size=300,
                                min_count=2, log_every_lines=200)
    assert "Read 200 lines" in caplog.text and "lines/s" in caplog.text


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    output = tmp_path / "vocab.txt"
    output.write_text("old\n")

    def tokens():
        yield "[PAD]"
        raise OSError("disk full")

    with pytest.raises(OSError):
        build_vocab.write_vocab_file(str(output), tokens())
    assert output.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["vocab.txt"]


def test_script_writes_a_vocab(corpus, tmp_path):
    output = tmp_path / "out" / "vocab.txt"
    result = helpers.run_script("build_vocab.py", f"--input_file={corpus}", f"--output_file={output}",
                                "--vocab_size=300", "--min_count=2", "--reserved_tokens=[X],[Y]")
    assert result.returncode == 0, result.stderr
    tokens = _lines(output)
    assert len(tokens) == 300 and tokens[104:106] == ["[X]", "[Y]"]


@pytest.mark.parametrize("case, expected", [
    ("missing_file", "no file matches"),
    ("glob_matches_nothing", "no file matches"),
    ("empty_input", "empty"),
    ("blank_input", "hold no words"),
    ("not_utf8", "not UTF-8"),
    ("vocab_size_too_small", "leaves no room"),
    ("output_under_a_file", "cannot write --output_file"),
])
def test_script_errors_are_one_line_without_traceback(case, expected, corpus, tmp_path):
    output = tmp_path / "vocab.txt"
    args = {"input_file": str(corpus), "output_file": str(output)}
    if case == "missing_file":
        args["input_file"] = str(tmp_path / "nope.txt")
    elif case == "glob_matches_nothing":
        args["input_file"] = f"{corpus},{tmp_path}/*.json"
    elif case == "empty_input":
        args["input_file"] = str(tmp_path / "empty.txt")
        (tmp_path / "empty.txt").write_text("")
    elif case == "blank_input":
        args["input_file"] = str(tmp_path / "blank.txt")
        (tmp_path / "blank.txt").write_text("\n  \n\t\n")
    elif case == "not_utf8":
        args["input_file"] = str(tmp_path / "latin1.txt")
        (tmp_path / "latin1.txt").write_bytes("ok\ncaf\u00e9\n".encode("latin-1"))
    elif case == "vocab_size_too_small":
        args["vocab_size"] = "104"
    elif case == "output_under_a_file":
        args["output_file"] = str(corpus / "vocab.txt")
    result = helpers.run_script("build_vocab.py", *[f"--{k}={v}" for k, v in args.items()], "--log_every_lines=0")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("build_vocab.py: error: ") and expected in errors[0], errors[0]
    if case not in ("blank_input", "not_utf8"):  # these fail after reading has been logged
        assert result.stderr.strip() == errors[0]
    assert not output.exists()
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
