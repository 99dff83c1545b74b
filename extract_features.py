"""Contextual embeddings of text lines, written as the original extract_features.py writes them.

Each input line (`text`, or `text_a ||| text_b` for a pair) becomes one JSON line with
`linex_index`, and per WordPiece token the values of the chosen encoder layers, rounded to
6 decimals: the original's layout, byte for byte. The input is streamed: lines are read,
tokenized and encoded a window at a time, batched by length inside the window (short
lines are not padded to max_seq_length), and written back in input order. `--pooling`
adds sentence vectors as an extra field; the original fields never change.
"""

import collections
import contextlib
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import cli  # first: it imports TensorFlow without the start-up notices

cli.import_tensorflow()

from absl import flags, logging
import numpy as np
import tensorflow as tf

import input_pipeline
import modeling
import tokenization
import training

FLAGS = flags.FLAGS

POOLING_MODES = ("cls", "mean")
# A pair is split at the last " ||| " (single spaces around it), as the original's regex
# `^(.*) \|\|\| (.*)$` splits it.
PAIR_SEPARATOR = " ||| "


def define_flags():
    """Defines the script's flags (only when run as a script, so modules can be imported together)."""
    flags.DEFINE_string("input_file", None, "Text file, one example per line: `text` or `text_a ||| text_b`.")
    flags.DEFINE_string("output_file", None, "JSON-lines file to write, one line per input line.")
    flags.DEFINE_string("layers", "-1,-2,-3,-4",
                        "Comma-separated encoder layers to write (Python indexes: -1 is the last layer).")
    flags.DEFINE_string("bert_config_file", None,
                        "The config json file corresponding to the pre-trained BERT model.")
    flags.DEFINE_integer("max_seq_length", 128,
                         "The maximum total input sequence length after WordPiece tokenization. Longer "
                         "lines are truncated.")
    flags.DEFINE_string("init_checkpoint", None, "Initial checkpoint (usually from a pre-trained BERT model).")
    flags.DEFINE_string("vocab_file", None, "The vocabulary file that the BERT model was trained on.")
    flags.DEFINE_bool("do_lower_case", True,
                      "Whether to lower case the input text. True for uncased models, False for cased ones.")
    flags.DEFINE_integer("batch_size", 32, "Batch size for predictions.")
    flags.DEFINE_bool("use_tpu", False, "Whether to use TPU or GPU/CPU.")
    flags.DEFINE_string("master", None, "If using a TPU, the address of the master.")
    flags.DEFINE_integer("num_tpu_cores", 8, "Only used if `use_tpu` is True. Total number of TPU cores to use.")
    flags.DEFINE_bool("use_one_hot_embeddings", False,
                      "Look words up by one-hot matmul (faster on TPU) instead of a gather. Same numbers.")
    # Additions (the original has none of these).
    flags.DEFINE_list("pooling", [],
                      "Also write sentence vectors, per layer of --layers, in an extra field `pooled`: "
                      "cls (the [CLS] token's vector), mean (average over the line's tokens, [CLS] and "
                      "[SEP] included). Comma-separated, e.g. --pooling=cls,mean.")
    flags.DEFINE_bool("use_xla", False, "Compile the model with XLA (one compilation per padded length).")
    flags.DEFINE_integer("sort_window", 256,
                         "Lines read, sorted by length, encoded and written together. Memory grows with this "
                         "(their JSON is held until the window is written), not with the input.")


# ------------------------------------------------------------------------------------------
# Reading lines into examples and features.

InputExample = collections.namedtuple("InputExample", ["unique_id", "text_a", "text_b"])

LineFeatures = collections.namedtuple(
    "LineFeatures", ["unique_id", "tokens", "input_ids", "input_type_ids", "truncated"])
LineFeatures.__doc__ = """One line as WordPiece tokens, unpadded (the streaming path's InputFeatures).

tokens: `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`; input_ids and input_type_ids: one per
token; truncated: whether tokens were dropped to fit max_seq_length.
"""


def read_lines(input_file):
    """Yields the lines of a UTF-8 text file (local, or any tf.io.gfile scheme), without "\\n".

    As the original's tf.gfile reader: lines end at "\\n" only, and every "\\r" is
    dropped (so CRLF files read as LF ones). Raises ValueError naming the file and line
    for bytes that are not UTF-8.
    """
    try:
        reader = cli.open_input(input_file)
    except (OSError, tf.errors.OpError) as e:
        raise ValueError(f"cannot read --input_file={input_file}: {getattr(e, 'strerror', None) or e}") from None
    with reader:
        for number, raw in enumerate(reader, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"--input_file={input_file} line {number} is not UTF-8 (byte {e.start} of the "
                                 f"line): convert the file to UTF-8") from None
            yield line.rstrip("\n").replace("\r", "")


def count_lines(input_file):
    """Number of lines `read_lines` will yield (a last line without "\\n" counts)."""
    count, last = 0, b"\n"
    try:
        with cli.open_input(input_file) as reader:
            while True:
                chunk = reader.read(1 << 22)
                if not chunk:
                    break
                count += chunk.count(b"\n")
                last = chunk[-1:]
    except (OSError, tf.errors.OpError) as e:
        raise ValueError(f"cannot read --input_file={input_file}: {getattr(e, 'strerror', None) or e}") from None
    return count + (last != b"\n")


def example_from_line(unique_id, line):
    """An `InputExample` from one line: stripped, then split into a pair at the last " ||| "."""
    line = line.strip()
    text_a, separator, text_b = line.rpartition(PAIR_SEPARATOR)
    if not separator:
        return InputExample(unique_id, line, None)
    return InputExample(unique_id, text_a, text_b)


def truncate_seq_pair(tokens_a, tokens_b, max_length):
    """Pops the last token of the longer list (B's on a tie) until both fit in `max_length`."""
    while len(tokens_a) + len(tokens_b) > max_length:
        (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()


def convert_example_to_features(example, seq_length, tokenizer):
    """Tokens, ids and segment ids of one example, truncated as the original, not padded."""
    tokens_a = tokenizer.tokenize(example.text_a)
    tokens_b = tokenizer.tokenize(example.text_b) if example.text_b else []
    if tokens_b:
        truncated = len(tokens_a) + len(tokens_b) > seq_length - 3  # [CLS], [SEP], [SEP]
        truncate_seq_pair(tokens_a, tokens_b, seq_length - 3)
    else:
        truncated = len(tokens_a) > seq_length - 2  # [CLS], [SEP]
        tokens_a = tokens_a[:seq_length - 2]
    tokens = ["[CLS]"] + tokens_a + ["[SEP]"]
    input_type_ids = [0] * len(tokens)
    if tokens_b:
        tokens += tokens_b + ["[SEP]"]
        input_type_ids += [1] * (len(tokens_b) + 1)
    return LineFeatures(example.unique_id, tokens, tokenizer.convert_tokens_to_ids(tokens), input_type_ids,
                        truncated)


# ------------------------------------------------------------------------------------------
# The original's Python API: whole files in memory, every row padded to seq_length.


class InputFeatures:
    """One example padded to seq_length, as the original's (tokens are not padded)."""

    def __init__(self, unique_id, tokens, input_ids, input_mask, input_type_ids):
        self.unique_id = unique_id
        self.tokens = tokens
        self.input_ids = input_ids
        self.input_mask = input_mask
        self.input_type_ids = input_type_ids


def read_examples(input_file):
    """Every line of `input_file` as an InputExample (unique_id 0, 1, ...; "A ||| B" is a pair)."""
    return [example_from_line(unique_id, line) for unique_id, line in enumerate(read_lines(input_file))]


_truncate_seq_pair = truncate_seq_pair  # the original's name


def convert_examples_to_features(examples, seq_length, tokenizer):
    """InputFeatures of `examples`: [CLS] A [SEP] (B [SEP]), truncated and zero-padded to seq_length."""
    features = []
    for index, example in enumerate(examples):
        line = convert_example_to_features(example, seq_length, tokenizer)
        padding = [0] * (seq_length - len(line.input_ids))
        features.append(InputFeatures(line.unique_id, line.tokens, line.input_ids + padding,
                                      [1] * len(line.input_ids) + padding, line.input_type_ids + padding))
        if index < 5:
            log_example(features[-1])
    return features


def log_example(features):
    logging.info("*** Example ***")
    logging.info("unique_id: %s", features.unique_id)
    logging.info("tokens: %s", " ".join(tokenization.printable_text(x) for x in features.tokens))
    logging.info("input_ids: %s", " ".join(str(x) for x in features.input_ids))
    logging.info("input_type_ids: %s", " ".join(str(x) for x in features.input_type_ids))


# ------------------------------------------------------------------------------------------
# The model.


def parse_layer_indexes(layers, num_hidden_layers):
    """"-1,-2" -> [-1, -2]; raises ValueError for a malformed list or an index out of range."""
    try:
        indexes = [int(x) for x in layers.split(",")]
    except ValueError:
        raise ValueError(f"--layers={layers} must be comma-separated integers such as -1,-2,-3,-4") from None
    for index in indexes:
        if not -num_hidden_layers <= index < num_hidden_layers:
            raise ValueError(f"--layers={layers}: layer {index} is out of range for a model with "
                             f"{num_hidden_layers} layers (use {-num_hidden_layers}..{num_hidden_layers - 1}; "
                             f"-1 is the last layer)")
    return indexes


class FeatureExtractor:
    """A BERT encoder restored from a checkpoint that returns the chosen layers of a batch.

    Example:
        >>> extractor = FeatureExtractor(config, "model/bert_model.ckpt", [-1, -2], pooling=["mean"])
        >>> out = extractor(batch)  # batch: {"input_ids", "input_mask", "input_type_ids"} int32 [B, S]
        >>> out["layers"].shape, out["mean"].shape      # [B, S, 2, H], [B, 2, H]
    """

    def __init__(self, bert_config, init_checkpoint, layer_indexes, pooling=(), use_one_hot_embeddings=False,
                 use_xla=False, strategy=None):
        """Builds the encoder and restores `init_checkpoint` (ValueError if it holds none of it).

        Args:
            bert_config: `modeling.BertConfig`.
            init_checkpoint: checkpoint prefix, `.index` file or directory, original names.
            layer_indexes: encoder layers to return (Python indexes into the L layers).
            pooling: any of POOLING_MODES.
            use_one_hot_embeddings: see `modeling.BertModel`.
            use_xla: compile the forward pass with XLA.
            strategy: a tf.distribute strategy (TPU); None: one device (the first GPU, else the CPU).
        """
        self.layer_indexes = list(layer_indexes)
        self.pooling = list(pooling)
        self.use_xla = use_xla
        self.strategy = strategy if strategy is not None else training.make_strategy(training.EngineConfig())
        with self.strategy.scope():
            self.model = modeling.BertModel(bert_config, use_one_hot_embeddings=use_one_hot_embeddings)
            result = modeling.load_checkpoint(init_checkpoint, self.model)
        if not result.restored:
            raise ValueError(f"--init_checkpoint={init_checkpoint} holds none of the BERT encoder's variables "
                             f"(bert/embeddings/..., bert/encoder/layer_N/...): is it a BERT checkpoint in the "
                             f"original names?")
        if result.not_in_checkpoint:
            logging.warning("%d encoder variables are not in %s and keep random values, e.g. %s",
                            len(result.not_in_checkpoint), result.checkpoint, result.not_in_checkpoint[0])
        # Called inside training.predict's step: a tf.function of its own only to be compiled by XLA
        # (without XLA, one more function level traced and optimized the model twice, ~1 s a job).
        self._encode = self._encode_batch
        if use_xla:
            spec = tf.TensorSpec([None, None], tf.int32)
            self._encode = tf.function(self._encode_batch, input_signature=[spec, spec, spec], jit_compile=True)
        self.predict_fn = self._outputs  # one object: training.predict traces its step once per predict_fn

    def _encode_batch(self, input_ids, input_mask, input_type_ids):
        outputs = self.model(input_ids, input_mask=input_mask, token_type_ids=input_type_ids, training=False)
        all_layers = outputs["encoder_layers"]
        layers = tf.stack([all_layers[i] for i in self.layer_indexes], axis=2)  # [B, S, len(layers), H]
        results = {"layers": layers}
        if "cls" in self.pooling:
            results["cls"] = layers[:, 0]  # [B, len(layers), H]
        if "mean" in self.pooling:
            mask = tf.cast(input_mask, layers.dtype)[:, :, tf.newaxis, tf.newaxis]  # [B, S, 1, 1]
            results["mean"] = tf.reduce_sum(layers * mask, axis=1) / tf.reduce_sum(mask, axis=1)
        return results

    def _outputs(self, model, features):
        """training.predict's predict_fn: features in the pipeline's names (segment_ids)."""
        del model  # the same model, called through the (optionally XLA-compiled) _encode
        return self._encode(features["input_ids"], features["input_mask"], features["segment_ids"])

    def __call__(self, batch):
        """{"input_ids", "input_mask", "input_type_ids"}: int32 [B, S] -> {name: numpy float32}.

        Under a strategy of several replicas, B must divide evenly among them.
        """
        features = {"input_ids": batch["input_ids"], "input_mask": batch["input_mask"],
                    "segment_ids": batch["input_type_ids"]}
        dataset = tf.data.Dataset.from_tensors({name: tf.cast(t, tf.int32) for name, t in features.items()})
        return next(training.predict(self.strategy, self.model, self.predict_fn, dataset))


# ------------------------------------------------------------------------------------------
# JSON, as the original writes it.

def _digit_words(prefix, suffix):
    """uint32 words of 4 characters, prefix + "%03d" % i + suffix, for i in 0..999."""
    return np.frombuffer(b"".join((prefix + "%03d" % i + suffix).encode("ascii") for i in range(1000)),
                         np.uint32)


# A number in the fast path is 16 characters, 4 words, of which a mask keeps the right ones:
# "-ddd" ".ddd" "ddd," " ..." -> sign, integer digits, point, 6 decimals, separator.
_SIGN_AND_INTEGER = _digit_words("-", "")
_POINT_AND_HIGH = _digit_words(".", "")
_LOW_AND_COMMA = _digit_words("", ",")
_FOUR_SPACES = np.frombuffer(b"    ", np.uint32)[0]  # one word of four spaces
_TRAILING_ZEROS3 = np.array([3 if i == 0 else len("%03d" % i) - len(("%03d" % i).rstrip("0"))
                             for i in range(1000)], np.int32)


def _keep_patterns():
    """[2 signs * 3 integer lengths * 6 decimal counts * 2 (separator or not) + 1, 16] bool.

    The last row keeps nothing (values formatted by Python instead)."""
    patterns = []
    for negative in (0, 1):
        for integer_digits in (1, 2, 3):
            for decimals in range(1, 7):
                for separator in (0, 1):
                    row = [False] * 16
                    row[0] = bool(negative)
                    for j in range(4 - integer_digits, 4):
                        row[j] = True
                    row[4] = True
                    for j in range(decimals):
                        row[5 + j] = True
                    row[11] = row[12] = bool(separator)
                    patterns.append(row)
    patterns.append([False] * 16)
    return np.array(patterns, bool)


_KEEP_PATTERNS = _keep_patterns()
_PATTERN_LENGTHS = _KEEP_PATTERNS.sum(1)
_NOTHING = len(_KEEP_PATTERNS) - 1


def format_rounded_values(values):
    """JSON text of `round(float(x), 6)` for each row of a float array [R, H], as json.dumps writes it.

    The original writes `json.dumps([round(float(x), 6) for x in row])`; this makes the same
    characters for all rows at once with numpy. Why it is exact: a float32 times 10^6 is
    exact in float64 (24 + 20 bits), so rint(x * 10^6) = k is Python's round-half-even to
    6 decimals, and for 10^-4 <= |k / 10^6| < 10^3 (9 significant digits at most) the
    shortest repr of the nearest double is k / 10^6 written out with trailing zeros
    dropped. Every other value (zero, below 10^-4 where repr switches to 1e-05 notation,
    1000 and above, NaN) takes Python's own path.

    Returns:
        list of R strings, the values of a row joined by ", " (without brackets).
    """
    x = np.asarray(values, np.float64)
    rows, width = x.shape
    k = np.rint(x.reshape(-1) * 1e6)
    a = np.abs(k)
    fast = (a >= 100) & (a < 1e9)
    a = np.where(fast, a, 0).astype(np.int32)
    integer, fraction = np.divmod(a, 1_000_000)
    high, low = np.divmod(fraction, 1000)

    words = np.empty((len(a), 4), np.uint32)
    words[:, 0] = _SIGN_AND_INTEGER[integer]
    words[:, 1] = _POINT_AND_HIGH[high]
    words[:, 2] = _LOW_AND_COMMA[low]
    words[:, 3] = _FOUR_SPACES
    chars = words.view(np.uint8)  # [N, 16]
    trailing_zeros = np.where(low == 0, 3 + _TRAILING_ZEROS3[high], _TRAILING_ZEROS3[low])
    decimals = np.maximum(1, 6 - trailing_zeros)
    integer_digits = 1 + (integer >= 10) + (integer >= 100)
    separator = np.ones(len(a), np.int32)
    separator[width - 1::width] = 0
    pattern = ((np.signbit(k) * 3 + integer_digits - 1) * 6 + decimals - 1) * 2 + separator
    pattern = np.where(fast, pattern, _NOTHING)
    keep = _KEEP_PATTERNS[pattern]

    slow = np.flatnonzero(~fast)
    if len(slow):
        texts = [json.dumps(round(float(v), 6)).encode("ascii") + b", " for v in x.reshape(-1)[slow]]
        wide = max(map(len, texts))
        if wide > 16:  # room for the longest repr, e.g. -1.2345678901234567e-308
            chars = np.concatenate([chars, np.zeros((len(chars), wide - 16), np.uint8)], 1)
            keep = np.concatenate([keep, np.zeros((len(keep), wide - 16), bool)], 1)
        for i, text in zip(slow.tolist(), texts):
            if (i + 1) % width == 0:
                text = text[:-2]
            chars[i, :len(text)] = np.frombuffer(text, np.uint8)
            keep[i, :len(text)] = True

    text = chars[keep].tobytes().decode("ascii")
    lengths = _PATTERN_LENGTHS[pattern]
    if len(slow):
        lengths[slow] = keep[slow].sum(1)
    ends = np.cumsum(lengths.reshape(rows, width).sum(1))
    starts = np.concatenate([[0], ends[:-1]])
    return [text[s:e] for s, e in zip(starts.tolist(), ends.tolist())]


def json_lines(features, layer_values, layer_indexes, pooled=None):
    """The original's JSON lines for a batch of input lines (plus `pooled` when given).

    Args:
        features: list of B `LineFeatures`.
        layer_values: float [B, S, len(layer_indexes), H], S >= every line's token count; or
            B rows [S_b, len(layer_indexes), H] of their own S_b (a numpy object array or list).
        layer_indexes: the --layers values, written as each layer's "index".
        pooled: optional {mode: float [B, len(layer_indexes), H]}, written after the
            original fields as "pooled": {mode: [{"index", "values"}, ...]}.

    Returns:
        list of B strings, each ending in "\n".
    """
    num_layers, hidden = len(layer_indexes), np.shape(layer_values[0])[-1]
    # All the values of the batch are spelled in one call: [sum of tokens * layers, H].
    rows = format_rounded_values(np.concatenate(
        [layer_values[b][:len(f.tokens)].reshape(-1, hidden) for b, f in enumerate(features)]))
    pooled_rows = {mode: format_rounded_values(values.reshape(-1, hidden)) for mode, values in (pooled or {}).items()}
    lines, offset = [], 0
    for b, feature in enumerate(features):
        token_parts = []
        for token in feature.tokens:
            layers = ", ".join('{"index": %d, "values": [%s]}' % (index, rows[offset + j])
                               for j, index in enumerate(layer_indexes))
            token_parts.append('{"token": %s, "layers": [%s]}' % (json.dumps(token), layers))
            offset += num_layers
        line = '{"linex_index": %d, "features": [%s]' % (feature.unique_id, ", ".join(token_parts))
        if pooled_rows:
            modes = []
            for mode, mode_rows in pooled_rows.items():
                layers = ", ".join('{"index": %d, "values": [%s]}' % (index, mode_rows[b * num_layers + j])
                                   for j, index in enumerate(layer_indexes))
                modes.append("%s: [%s]" % (json.dumps(mode), layers))
            line += ', "pooled": {%s}' % ", ".join(modes)
        lines.append(line + "}\n")
    return lines


# ------------------------------------------------------------------------------------------
# The job.

ExtractionStats = collections.namedtuple(
    "ExtractionStats", ["lines", "truncated", "first_truncated", "seconds"])
ExtractionStats.__doc__ = """What `extract_features` did: lines written, how many were truncated
and the linex_index of the first 10 of them, and seconds spent per stage ("read and
tokenize", "model" (in its own thread, overlapping the others), "JSON", "write")."""


class _LineNotes:
    """The lines the log warns about: truncated, or only "|||"; counts and the first 10 linex_index."""

    def __init__(self):
        self.truncated, self.first_truncated = 0, []
        self.only_separator, self.first_only_separator = 0, []

    def add(self, line, features):
        if line.strip() == "|||":
            self.only_separator += 1
            if len(self.first_only_separator) < 10:
                self.first_only_separator.append(features.unique_id)
        if features.truncated:
            self.truncated += 1
            if len(self.first_truncated) < 10:
                self.first_truncated.append(features.unique_id)

    def log(self, lines, max_seq_length):
        if self.truncated:
            logging.warning("%d of %d lines had more than max_seq_length=%d tokens and were truncated as the "
                            "original does (linex_index %s%s)", self.truncated, lines, max_seq_length,
                            ", ".join(map(str, self.first_truncated)), ", ..." if self.truncated > 10 else "")
        if self.only_separator:
            logging.warning("%d lines are only '|||' and were encoded as the text '|||', as the original does "
                            "(linex_index %s%s); a pair needs text on both sides: `text_a ||| text_b`",
                            self.only_separator, ", ".join(map(str, self.first_only_separator)),
                            ", ..." if self.only_separator > 10 else "")


def _read_window(line_iter, first_index, size, max_seq_length, tokenizer, notes):
    """The LineFeatures of the next `size` lines (fewer at the end), linex_index from first_index."""
    window = []
    for line in line_iter:
        features = convert_example_to_features(example_from_line(first_index + len(window), line),
                                               max_seq_length, tokenizer)
        if features.unique_id < 5:
            log_example(features)
        notes.add(line, features)
        window.append(features)
        if len(window) == size:
            break
    return window


def _window_arrays(window, max_seq_length):
    """A window of LineFeatures as rows padded to max_seq_length, with their input positions."""
    arrays = {name: np.zeros((len(window), max_seq_length), np.int32) for name in input_pipeline.SEQUENCE_FEATURES}
    for row, features in enumerate(window):
        n = len(features.input_ids)
        arrays["input_ids"][row, :n] = features.input_ids
        arrays["input_mask"][row, :n] = 1
        arrays["segment_ids"][row, :n] = features.input_type_ids
    arrays[input_pipeline.EXAMPLE_POSITION] = np.array([f.unique_id for f in window], np.int64)
    return arrays


def _line_windows(input_file, max_seq_length, tokenizer, sort_window, state):
    """The dataset of windows of `sort_window` lines that length_grouped_batches takes.

    Lines are read and tokenized by a generator on tf.data's thread, so that work overlaps the
    model. Each window's LineFeatures go to `state.waiting` (for the JSON) before the model can
    see them; an error while reading is kept in `state.failure` and ends the dataset (raised
    by the caller, as it was raised).
    """
    def windows():
        try:
            line_iter, lines = iter(read_lines(input_file)), 0
            while True:
                start = time.perf_counter()
                window = _read_window(line_iter, lines, sort_window, max_seq_length, tokenizer, state.notes)
                state.seconds["read and tokenize"] += time.perf_counter() - start
                if not window:
                    return
                state.waiting.update((features.unique_id, features) for features in window)
                lines += len(window)
                yield _window_arrays(window, max_seq_length)
        except Exception as e:  # re-raised by extract_features, outside tf.data
            state.failure.append(e)

    signature = {name: tf.TensorSpec([None, max_seq_length], tf.int32) for name in input_pipeline.SEQUENCE_FEATURES}
    signature[input_pipeline.EXAMPLE_POSITION] = tf.TensorSpec([None], tf.int64)
    return tf.data.Dataset.from_generator(windows, output_signature=signature)


def _timed(iterable, seconds, stage):
    """Re-yields `iterable`'s items, adding the time each took to make to seconds[stage]."""
    iterator = iter(iterable)
    while True:
        start = time.perf_counter()
        item = next(iterator, None)
        seconds[stage] += time.perf_counter() - start
        if item is None:
            return
        yield item


def extract_features(input_file, output_file, extractor, tokenizer, max_seq_length=128, batch_size=32,
                     sort_window=256, fixed_shapes=False, progress_seconds=10.0):
    # 9 parameters: the job's files, model and tokenizer, and one keyword per flag that shapes it.
    """Writes the JSON line of every line of `input_file` to `output_file`, in input order.

    Lines are read and tokenized `sort_window` at a time (on tf.data's thread) and batched by
    length inside the window (input_pipeline.length_grouped_batches, each batch cut to its
    longest line); training.predict runs the model up to two batches ahead on a thread of its
    own while the JSON of the last batch is made; training.in_input_order puts the JSON back
    in input order. The output is written under a temporary name and renamed at the end:
    after an error nothing is left at `output_file`.

    Args:
        extractor: a `FeatureExtractor`.
        tokenizer: a `tokenization.FullTokenizer`.
        batch_size: lines per model call.
        sort_window: lines encoded together, sorted by length; memory grows with it.
        fixed_shapes: every batch [batch_size, max_seq_length], in input order (TPU).

    Returns:
        `ExtractionStats`.
    """
    empty = (f"--input_file={input_file} is empty: nothing to extract (one example per line: `text` or "
             f"`text_a ||| text_b`)")
    # A pipe or /dev/stdin can be read only once: no count first (the progress line has no total).
    total = None if cli.readable_once(input_file) else count_lines(input_file)
    if total == 0:
        raise ValueError(empty)
    seconds = collections.OrderedDict((stage, 0.0) for stage in ("read and tokenize", "model", "JSON", "write"))
    state = _JobState(_LineNotes(), {}, [], seconds)  # nothing here grows with the input
    length = None
    if not fixed_shapes:  # under XLA (one compile per shape) at most max_seq_length / 32 lengths
        length = input_pipeline.RealLength(
            max_seq_length, buckets=input_pipeline.xla_buckets(max_seq_length) if extractor.use_xla else None)
    dataset = input_pipeline.length_grouped_batches(
        _line_windows(input_file, max_seq_length, tokenizer, sort_window, state), batch_size, length,
        grow_short_batches=False)
    # Model order: each batch's JSON is made as it comes (while the model runs the next one in
    # its own thread), and the text is put back in input order, not the larger float outputs.
    outputs = training.predict(extractor.strategy, extractor.model, extractor.predict_fn, dataset, input_order=False)
    progress = cli.ProgressLine("extract_features: lines", total=total, interval=progress_seconds)
    lines = 0
    with contextlib.ExitStack() as stack:
        temp = stack.enter_context(cli.atomic_output(output_file))  # renamed to output_file on success
        # Bytes through Python's own file object for local files: faster than GFile or a text
        # file for the hundreds of MB this job writes. The JSON is ASCII (json.dumps escapes).
        local = "://" not in output_file
        writer = stack.enter_context(open(temp, "wb") if local else tf.io.gfile.GFile(temp, "wb"))
        # Entered last, so closed first on the way out: the model's thread stops before the rest.
        ahead = stack.enter_context(contextlib.closing(training.run_ahead(_timed(outputs, seconds, "model"), depth=2)))
        for texts in training.in_input_order(_json_batches(ahead, state, extractor)):
            start = time.perf_counter()
            writer.write("".join(texts["json"]).encode("ascii"))
            seconds["write"] += time.perf_counter() - start
            lines += len(texts["json"])
            progress(len(texts["json"]))
        if state.failure:
            raise state.failure[0]
        if state.waiting:
            raise RuntimeError(f"extract_features lost track of lines: {len(state.waiting)} without outputs")
        if lines == 0:
            raise ValueError(empty)
    progress.close()
    state.notes.log(lines, max_seq_length)
    logging.info("Wrote %d lines to %s; seconds per stage: %s", lines, output_file,
                 ", ".join(f"{stage} {value:.2f}" for stage, value in seconds.items()))
    return ExtractionStats(lines, state.notes.truncated, state.notes.first_truncated, dict(seconds))


def _json_batches(batches, state, extractor):
    """{"json": the JSON lines [B], EXAMPLE_POSITION [B]} of each batch of model outputs."""
    for outputs in batches:
        start = time.perf_counter()
        positions = outputs[input_pipeline.EXAMPLE_POSITION]
        features = [state.waiting.pop(position) for position in positions.tolist()]
        pooled = {mode: outputs[mode] for mode in extractor.pooling}
        texts = np.array(json_lines(features, outputs["layers"], extractor.layer_indexes, pooled), object)
        state.seconds["JSON"] += time.perf_counter() - start
        yield {"json": texts, input_pipeline.EXAMPLE_POSITION: positions}


_JobState = collections.namedtuple("_JobState", ["notes", "waiting", "failure", "seconds"])
_JobState.__doc__ = """What extract_features' reading thread shares with the writing one: the
lines to warn about, the LineFeatures read and not yet written ({linex_index: LineFeatures}), a
reading error, seconds per stage."""


def main(_):
    logging.set_verbosity(logging.INFO)
    bert_config = modeling.BertConfig.from_json_file(FLAGS.bert_config_file)
    modeling.validate_config(bert_config)
    modeling.check_max_seq_length(bert_config, FLAGS.max_seq_length)
    if FLAGS.max_seq_length < 3:
        raise ValueError(f"--max_seq_length={FLAGS.max_seq_length} leaves no room for [CLS], [SEP] and text; "
                         f"use 3 or more")
    if FLAGS.batch_size < 1 or FLAGS.sort_window < 1:
        raise ValueError("--batch_size and --sort_window must be at least 1")
    layer_indexes = parse_layer_indexes(FLAGS.layers, bert_config.num_hidden_layers)
    unknown = [mode for mode in FLAGS.pooling if mode not in POOLING_MODES]
    if unknown:
        raise ValueError(f"--pooling={','.join(FLAGS.pooling)}: unknown {', '.join(unknown)}; use any of "
                         f"{', '.join(POOLING_MODES)}")
    output_dir = os.path.dirname(FLAGS.output_file)
    if output_dir and not tf.io.gfile.isdir(output_dir):
        raise ValueError(f"--output_file={FLAGS.output_file}: directory {output_dir} does not exist")
    tokenizer = tokenization.FullTokenizer(vocab_file=FLAGS.vocab_file, do_lower_case=FLAGS.do_lower_case)
    tokenization.check_special_tokens(tokenizer.vocab, FLAGS.vocab_file, tokenization.TASK_TOKENS)
    modeling.check_vocab_size(bert_config, len(tokenizer.vocab), FLAGS.vocab_file)
    strategy = None
    if FLAGS.use_tpu:
        strategy = training.make_strategy(training.EngineConfig(use_tpu=True, master=FLAGS.master))
        logging.info("TPU with %d replicas (--num_tpu_cores=%d)", strategy.num_replicas_in_sync,
                     FLAGS.num_tpu_cores)
    extractor = FeatureExtractor(bert_config, FLAGS.init_checkpoint, layer_indexes, pooling=FLAGS.pooling,
                                 use_one_hot_embeddings=FLAGS.use_one_hot_embeddings, use_xla=FLAGS.use_xla,
                                 strategy=strategy)
    extract_features(FLAGS.input_file, FLAGS.output_file, extractor, tokenizer,
                     max_seq_length=FLAGS.max_seq_length, batch_size=FLAGS.batch_size,
                     sort_window=FLAGS.sort_window, fixed_shapes=FLAGS.use_tpu)


def __getattr__(name):
    """The original's TF1-only names end here with a one-line pointer to their replacement."""
    import porting  # only when a name is missing: the module's own imports stay as they are
    raise porting.missing_name(__name__, name)


if __name__ == "__main__":
    define_flags()
    cli.run(main, "extract_features.py",
            ["input_file", "vocab_file", "bert_config_file", "init_checkpoint", "output_file"])
