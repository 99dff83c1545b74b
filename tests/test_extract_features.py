"""extract_features.py against the original script's output (tests/golden/extract_*), plus
what the original never had: length-sorted streaming, pooling, XLA, clear errors."""

import json
import os
import re

import numpy as np
import pytest

import extract_features
import modeling
import tokenization

from tests import helpers

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
INPUT = os.path.join(GOLDEN, "extract_input.txt")
VOCAB = os.path.join(GOLDEN, "extract_tiny_vocab.txt")
CONFIG = os.path.join(GOLDEN, "extract_tiny_config.json")
CHECKPOINT = os.path.join(GOLDEN, "extract_tiny.ckpt")
# The golden run: max_seq_length=16, batch_size=3, layers -1,-2,-3,-4 of L=4.
MAX_SEQ_LENGTH = 16


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line, object_pairs_hook=lambda pairs: pairs) for line in f]


def golden_values():
    """{(linex_index, token position, layer as a non-negative index): values} of the original."""
    values = {}
    for line in read_jsonl(os.path.join(GOLDEN, "extract_golden.jsonl")):
        line = dict(line)
        for t, feature in enumerate(line["features"]):
            for layer in dict(feature)["layers"]:
                layer = dict(layer)
                values[line["linex_index"], t, layer["index"] % 4] = np.array(layer["values"])
    return values


def assert_same_layout_and_values(ours, golden, layer_map=None, tolerance=1e-5):
    """Keys in the original's order, same tokens, values within `tolerance`."""
    assert len(ours) == len(golden)
    for line, gold in zip(ours, golden):
        assert [k for k, _ in line][:2] == ["linex_index", "features"]
        assert dict(line)["linex_index"] == dict(gold)["linex_index"]
        features, gold_features = dict(line)["features"], dict(gold)["features"]
        assert [dict(f)["token"] for f in features] == [dict(f)["token"] for f in gold_features]
        for feature, gold_feature in zip(features, gold_features):
            assert [k for k, _ in feature] == ["token", "layers"]
            gold_layers = {dict(x)["index"]: dict(x)["values"] for x in dict(gold_feature)["layers"]}
            for layer in dict(feature)["layers"]:
                assert [k for k, _ in layer] == ["index", "values"]
                index, values = dict(layer)["index"], dict(layer)["values"]
                gold_index = (layer_map or {}).get(index, index)
                np.testing.assert_allclose(values, gold_layers[gold_index], rtol=0, atol=tolerance)


@pytest.fixture(scope="module")
def tokenizer():
    return tokenization.FullTokenizer(VOCAB, do_lower_case=True)


@pytest.fixture(scope="module")
def config():
    return modeling.BertConfig.from_json_file(CONFIG)


def run_api(tmp_path, config, tokenizer, layers=(-1, -2, -3, -4), pooling=(), **kwargs):
    extractor = extract_features.FeatureExtractor(config, CHECKPOINT, list(layers), pooling=pooling,
                                                  use_xla=kwargs.pop("use_xla", False))
    output = str(tmp_path / "out.jsonl")
    stats = extract_features.extract_features(INPUT, output, extractor, tokenizer,
                                              max_seq_length=MAX_SEQ_LENGTH, **kwargs)
    return read_jsonl(output), stats, output


def test_script_writes_the_original_json_lines(tmp_path):
    output = tmp_path / "out.jsonl"
    result = helpers.run_script(
        "extract_features.py", f"--input_file={INPUT}", f"--output_file={output}", f"--vocab_file={VOCAB}",
        f"--bert_config_file={CONFIG}", f"--init_checkpoint={CHECKPOINT}", "--max_seq_length=16", "--batch_size=3",
        timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    golden_text = open(os.path.join(GOLDEN, "extract_golden.jsonl"), encoding="utf-8").read()
    ours_text = output.read_text(encoding="utf-8")
    # Same separators, escaping and number spelling: only a last digit may differ here and there.
    strip_numbers = lambda text: re.sub(r"-?\d+\.\d+(e-\d+)?|-?\d+e-\d+", "N", text)  # noqa: E731
    assert strip_numbers(ours_text) == strip_numbers(golden_text)
    assert_same_layout_and_values(read_jsonl(output), read_jsonl(os.path.join(GOLDEN, "extract_golden.jsonl")))
    assert "2 of 15 lines had more than max_seq_length=16 tokens and were truncated" in result.stderr
    assert "1 lines are only '|||'" in result.stderr
    assert not [name for name in os.listdir(tmp_path) if name != "out.jsonl"]


@pytest.mark.parametrize("batch_size, sort_window", [(2, 4), (32, 256), (1, 1)])
def test_length_sorted_windows_write_in_input_order(tmp_path, config, tokenizer, batch_size, sort_window):
    ours, stats, _ = run_api(tmp_path, config, tokenizer, batch_size=batch_size, sort_window=sort_window)
    assert_same_layout_and_values(ours, read_jsonl(os.path.join(GOLDEN, "extract_golden.jsonl")))
    assert stats.lines == 15
    assert (stats.truncated, stats.first_truncated) == (2, [5, 6])


def test_fixed_shape_batches_equal_length_sorted_ones(tmp_path, config, tokenizer):
    ours, _, _ = run_api(tmp_path, config, tokenizer, batch_size=4, fixed_shapes=True)
    assert_same_layout_and_values(ours, read_jsonl(os.path.join(GOLDEN, "extract_golden.jsonl")))


def test_any_layer_selection_gives_those_layers_in_flag_order(tmp_path, config, tokenizer):
    ours, _, _ = run_api(tmp_path, config, tokenizer, layers=(0, -1, 2, 0))
    golden = golden_values()
    for line in ours:
        line = dict(line)
        for t, feature in enumerate(dict(line)["features"]):
            layers = [dict(x) for x in dict(feature)["layers"]]
            assert [x["index"] for x in layers] == [0, -1, 2, 0]
            for layer in layers:
                np.testing.assert_allclose(layer["values"], golden[line["linex_index"], t, layer["index"] % 4],
                                           atol=1e-5, rtol=0)


def test_xla_gives_the_original_values(tmp_path, config, tokenizer):
    ours, _, _ = run_api(tmp_path, config, tokenizer, use_xla=True, batch_size=4)
    assert_same_layout_and_values(ours, read_jsonl(os.path.join(GOLDEN, "extract_golden.jsonl")))


def test_pooling_is_an_extra_field_after_the_original_ones(tmp_path, config, tokenizer):
    ours, _, _ = run_api(tmp_path, config, tokenizer, layers=(-1, 0), pooling=("mean", "cls"))
    plain, _, _ = run_api(tmp_path, config, tokenizer, layers=(-1, 0))
    for line, plain_line in zip(ours, plain):
        assert [k for k, _ in line] == ["linex_index", "features", "pooled"]
        assert line[:2] == plain_line
        pooled = {mode: [dict(x) for x in layers] for mode, layers in dict(line)["pooled"]}
        assert list(pooled) == ["mean", "cls"]
        features = [dict(f) for f in dict(line)["features"]]
        for j, index in enumerate([-1, 0]):
            tokens = np.array([dict(dict(f)["layers"][j])["values"] for f in features])  # [T, H]
            assert pooled["cls"][j]["index"] == index and pooled["mean"][j]["index"] == index
            np.testing.assert_allclose(pooled["cls"][j]["values"], tokens[0], atol=1e-6, rtol=0)
            np.testing.assert_allclose(pooled["mean"][j]["values"], tokens.mean(0), atol=2e-6, rtol=0)


def test_rounded_values_are_spelled_as_json_dumps_of_python_round():
    rng = np.random.RandomState(0)
    specials = np.array([0.0, -0.0, 1e-7, -3e-7, 4.9e-7, 5e-7, 1.5e-6, 1e-5, -2.5e-5, 9.99e-5, 1e-4, -1e-4,
                         1.00005e-4, 0.0078125, -0.0078125, 1 / 64, 3 / 128, 0.5, 1.0, -2.0, 123456.789,
                         999999999.0, 1e9, -3e12, 1e20, 3.4e38, np.inf, -np.inf, np.nan, 1e-38, 1e-45],
                        np.float32)
    values = np.concatenate([
        specials,
        rng.normal(0, 1, 20000).astype(np.float32),
        rng.normal(0, 1e-4, 5000).astype(np.float32),
        (rng.randint(-10**7, 10**7, 5000) / 128.0).astype(np.float32),  # many exact half-way ties
        rng.uniform(-1e6, 1e6, 5000).astype(np.float32),
    ])
    rows = values[:len(values) // 8 * 8].reshape(-1, 8)
    expected = [json.dumps([round(float(x), 6) for x in row])[1:-1] for row in rows]
    assert extract_features.format_rounded_values(rows) == expected


def test_pairs_split_at_the_last_separator_as_the_original_regex():
    lines = ["a ||| b", "a ||| b ||| c", "a |||  ||| b", "|||", " ||| b", "a ||| ", "a|||b", "a  |||  b",
             "x ||| ||| y", "\u00e9 \u3000||| z", " a ||| b \t", ""]
    for line in lines:
        stripped = line.strip()
        match = re.match(r"^(.*) \|\|\| (.*)$", stripped)
        expected = (stripped, None) if match is None else (match.group(1), match.group(2))
        example = extract_features.example_from_line(7, line)
        assert (example.text_a, example.text_b) == expected, line


def test_lines_end_at_newline_only_and_carriage_returns_are_dropped(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes("a\r\nb\rc\n\n\u00e9 \u2028 d\x85e\nlast".encode("utf-8"))
    assert list(extract_features.read_lines(str(path))) == ["a", "bc", "", "\u00e9 \u2028 d\x85e", "last"]
    assert extract_features.count_lines(str(path)) == 5


def test_pair_truncation_pops_the_longer_side(tokenizer):
    features = extract_features.convert_example_to_features(
        extract_features.InputExample(0, "the quick brown fox jumps", "hello world"), 9, tokenizer)
    assert features.tokens == ["[CLS]", "the", "quick", "brown", "fox", "[SEP]", "hello", "world", "[SEP]"]
    assert features.input_type_ids == [0] * 6 + [1] * 3
    assert features.truncated


def run_extract_features(tmp_path, input_text=None, input_bytes=None, **flags):
    """extract_features.py on `input_text` (or bytes) with the tiny model; the CompletedProcess."""
    path = tmp_path / "in.txt"
    if input_bytes is None:
        input_bytes = input_text.encode("utf-8")
    path.write_bytes(input_bytes)
    args = dict(input_file=str(path), output_file=str(tmp_path / "out.jsonl"), vocab_file=VOCAB,
                bert_config_file=CONFIG, init_checkpoint=CHECKPOINT, max_seq_length=16, sort_window=2)
    args.update(flags)
    return helpers.run_script("extract_features.py", *helpers.flag_args(**args), timeout=120)


def assert_one_line_error(result, tmp_path, *phrases):
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("extract_features.py: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in errors[0]
    assert sorted(os.listdir(tmp_path)) == ["in.txt"]  # nothing written, no temporary file left


def test_empty_input_file_is_one_clear_error(tmp_path):
    assert_one_line_error(run_extract_features(tmp_path, ""), tmp_path, "is empty")


def test_layer_out_of_range_is_one_clear_error(tmp_path):
    assert_one_line_error(run_extract_features(tmp_path, "hello world\n", layers="-1,4"), tmp_path,
                          "--layers=-1,4", "layer 4 is out of range", "4 layers", "-4..3")


def test_bad_utf8_late_in_the_file_leaves_no_output(tmp_path):
    data = "hello world\n".encode("utf-8") * 5 + b"caf\xe9\n"
    assert_one_line_error(run_extract_features(tmp_path, input_bytes=data), tmp_path, "line 6 is not UTF-8")


def test_unknown_pooling_mode_is_one_clear_error(tmp_path):
    assert_one_line_error(run_extract_features(tmp_path, "hi\n", pooling="max"), tmp_path, "--pooling=max", "cls, mean")


def test_parse_layer_indexes_rejects_words():
    with pytest.raises(ValueError, match="comma-separated integers"):
        extract_features.parse_layer_indexes("-1,last", 4)
    assert extract_features.parse_layer_indexes("-4,3", 4) == [-4, 3]


def test_input_is_read_a_bounded_number_of_windows_ahead(tmp_path, config, tokenizer, monkeypatch):
    """Memory stays flat: when a line's JSON is written, at most a few windows past it have been read,
    however long the input (here 20 windows of 8 lines)."""
    path = tmp_path / "in.txt"
    path.write_text("".join(f"the quick brown fox {'dog ' * (i % 7)}\n" for i in range(160)), encoding="utf-8")
    consumed = [0]
    read_lines = extract_features.read_lines

    def counting_read_lines(input_file):
        for line in read_lines(input_file):
            consumed[0] += 1
            yield line

    monkeypatch.setattr(extract_features, "read_lines", counting_read_lines)
    json_lines = extract_features.json_lines
    written = []  # (lines read, first linex_index of the JSON lines being made)

    def recording_json_lines(features, *args, **kwargs):
        written.append((consumed[0], features[0].unique_id))
        return json_lines(features, *args, **kwargs)

    monkeypatch.setattr(extract_features, "json_lines", recording_json_lines)
    extractor = extract_features.FeatureExtractor(config, CHECKPOINT, [-1])
    output = tmp_path / "out.jsonl"
    extract_features.extract_features(str(path), str(output), extractor, tokenizer, max_seq_length=16,
                                      batch_size=3, sort_window=8)
    assert [dict(x)["linex_index"] for x in read_jsonl(output)] == list(range(160))
    ahead = max(read - first for read, first in written)
    assert 8 <= ahead <= 8 * 5, written


def test_calls_of_any_shape_share_one_traced_step(config):
    """FeatureExtractor(batch) at any batch size and length reuses one step: nothing piles up per shape."""
    import training
    extractor = extract_features.FeatureExtractor(config, CHECKPOINT, [-1])
    for rows, length in [(2, 5), (3, 7), (1, 16)]:
        ids = np.full((rows, length), 5, np.int32)
        out = extractor({"input_ids": ids, "input_mask": np.ones_like(ids), "input_type_ids": np.zeros_like(ids)})
        assert out["layers"].shape[:3] == (rows, length, 1)
    steps = training._STEP_CACHE[extractor.model]
    assert len(steps) == 1 and next(iter(steps.values())).experimental_get_tracing_count() == 1
