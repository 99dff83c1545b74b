"""Input pipelines: TFRecords read, checked, sharded per worker, cut to their real length
and grouped by length; the runners' records written.

The training engine (training.py) takes the datasets made here; nothing here knows of
models, strategies or checkpoints. Shape letters as in modeling.py.
"""

import contextlib
import re
import struct

from absl import logging
import tensorflow as tf

import cli

# --- Input pipelines ----------------------------------------------------------------------

TOKEN_ID_FEATURES = ("input_ids", "masked_lm_ids")


def check_tfrecords(input_files, name_to_features, flag_name="--input_file", vocab_size=None):
    """Parses the first record of every file with the spec: a bad file fails here, by name.

    Raises ValueError naming the file and the problem (not a TFRecord file, no records,
    records of another schema or length, token ids beyond `vocab_size` when given).
    """
    for path in input_files:
        try:
            first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
            if first is None:
                if tf.io.gfile.stat(path).length:  # bytes, but not one whole record
                    raise ValueError(f"{flag_name}: {path} is not a TFRecord file, or is truncated")
                raise ValueError(f"{flag_name}: {path} holds no records")
            example = tf.io.parse_single_example(first, name_to_features)
            problem = tfrecord_end_problem(path)
        except tf.errors.OpError as e:
            raise ValueError(f"{flag_name}: {path}: {cli.describe_op_error(e)}") from None
        if problem:
            raise ValueError(f"{flag_name}: {path} {problem}")
        for name in TOKEN_ID_FEATURES:
            if vocab_size is not None and name in example:
                ids = example[name].numpy()
                if ids.size and (ids.max() >= vocab_size or ids.min() < 0):
                    raise ValueError(f"{flag_name}: {path}: {name} holds token id {ids.max()}, beyond the BERT "
                                     f"config's vocab_size {vocab_size}: the records were made with another vocab")


# A TFRecord record: uint64 length, uint32 masked CRC-32C of the length, data, uint32 masked
# CRC-32C of the data (little-endian).
_TFRECORD_OVERHEAD = 16
_TAIL_BYTES = 1 << 16


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def _masked_crc32c(data):
    """TFRecord's checksum of `data`: CRC-32C (Castagnoli), rotated and offset."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _whole_record_at(data, offset, end):
    """Whether `data[offset:]` is one whole record ending exactly at `end` (header and data CRCs match)."""
    if end - offset < _TFRECORD_OVERHEAD:
        return False
    length, length_crc = struct.unpack_from("<QI", data, offset)
    if offset + _TFRECORD_OVERHEAD + length != end or _masked_crc32c(data[offset:offset + 8]) != length_crc:
        return False
    body = data[offset + 12:end - 4]
    return _masked_crc32c(body) == struct.unpack_from("<I", data, end - 4)[0]


def _walk_record_headers(f, size):
    """(offset where the records stop, whether a header failed its CRC) walking the headers from byte 0."""
    offset = 0
    while offset + 12 <= size:
        f.seek(offset)
        header = f.read(12)
        length, length_crc = struct.unpack("<QI", header)
        if _masked_crc32c(header[:8]) != length_crc:
            return offset, True
        if offset + _TFRECORD_OVERHEAD + length > size:
            break
        offset += _TFRECORD_OVERHEAD + length
    return offset, False


def tfrecord_end_problem(path):
    """What is wrong with how a TFRecord file ends (a cut copy, a write that did not finish), or None.

    tf.data reads a file cut inside a record's 12-byte header as complete, its last records
    silently gone. The last 64 KB are checked first: the file is whole when a record there
    ends exactly at the end of the file with both its CRCs right. Only when none does (a
    damaged file, or a last record above 64 KB) are the headers walked from the start.
    """
    with tf.io.gfile.GFile(path, "rb") as f:
        size = f.size()
        if size == 0:
            return None
        start = max(0, size - _TAIL_BYTES)
        f.seek(start)
        tail = f.read()
        for offset in range(len(tail) - _TFRECORD_OVERHEAD, -1, -1):
            if _whole_record_at(tail, offset, len(tail)):
                return None
        end, corrupt = _walk_record_headers(f, size)
    if corrupt:
        return f"is corrupt: the record header at byte {end:,} of {size:,} fails its checksum"
    if end == size:
        return None  # whole records throughout; tf.data checks each record's data CRC as it reads
    return (f"is truncated: {size:,} bytes, of which the last {size - end:,} are a record cut short after "
            f"byte {end:,} (an interrupted copy or write?); copy or write it again")


@contextlib.contextmanager
def naming_damaged_input(input_files, flag_name="--input_file"):
    """Turns tf.data's `corrupted record at N` (a record whose data fails its CRC, found only
    when read) into one line naming the file that holds a damaged record at byte N."""
    try:
        yield
    except tf.errors.DataLossError as e:
        match = re.search(r"corrupted record at (\d+)", e.message or "")
        if not match:
            raise
        # tf.data gives the offset of the record's data (a bad data CRC) or of its header.
        offset = int(match.group(1))
        damaged = []
        for path in input_files:
            if _damaged_record_at(path, offset - 12, check_data=True):
                damaged.append((path, offset - 12))
            elif _damaged_record_at(path, offset, check_data=False):
                damaged.append((path, offset))
        where, start = damaged[0] if len(damaged) == 1 else ("one of the files", offset)
        raise ValueError(f"{flag_name}: {where}: the record at byte {start:,} fails its checksum: the file is "
                         f"damaged; copy or write it again") from None


def _damaged_record_at(path, offset, check_data):
    """Whether `path` has a record at byte `offset` whose header (or, with check_data, data) fails its CRC."""
    if offset < 0:
        return False
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            f.seek(offset)
            header = f.read(12)
            if len(header) < 12:
                return False
            length, length_crc = struct.unpack("<QI", header)
            if _masked_crc32c(header[:8]) != length_crc:
                return not check_data
            body = f.read(min(length, 1 << 30) + 4) if check_data else b""
    except (tf.errors.OpError, OSError):
        return False
    return len(body) == length + 4 and _masked_crc32c(body[:-4]) != struct.unpack("<I", body[-4:])[0]


def check_token_ids(dataset, vocab_size):
    """`dataset` (of feature dicts) with every token id checked against vocab_size before the model.

    An id beyond the embedding table fails with one line naming the feature; unchecked, a
    GPU's gather would silently read zeros for it.
    """
    def check(features):
        checks = []
        for name in TOKEN_ID_FEATURES:
            if name in features:
                ids = features[name]
                checks.append(tf.debugging.Assert(
                    tf.logical_and(tf.reduce_all(ids < vocab_size), tf.reduce_all(ids >= 0)),
                    [f"{name} holds a token id beyond vocab_size {vocab_size} of the BERT config (the records were "
                     f"made with another vocab); largest id", tf.reduce_max(ids)]))
        with tf.control_dependencies(checks):
            return {name: tf.identity(value) for name, value in features.items()}
    return dataset.map(check)


def _parse_batch(serialized, name_to_features):
    """Parses a batch of tf.Examples; int64 features become int32 (as the original)."""
    example = tf.io.parse_example(serialized, name_to_features)
    return {name: tf.cast(t, tf.int32) if t.dtype == tf.int64 else t for name, t in example.items()}


# --- Real length: a batch runs at its longest real sequence, not at max_seq_length --------

SEQUENCE_FEATURES = ("input_ids", "input_mask", "segment_ids")
# Multiple of 8: fewer padded tokens than 16, and fine-tuning was faster at 8 in both runs of
# bench/bench_real_length.py (prediction alike). Each distinct length compiles the fused
# training kernels once: at most max_seq_length / 8 lengths.
LENGTH_MULTIPLE = 8
XLA_BUCKET_WIDTH = 32


class RealLength:
    """How a batch of [B, max_seq_length] features is cut to its real length.

    The batch keeps its rows; every sequence feature is cut to the longest real sequence
    of the batch (the last 1 of `input_mask`), rounded up to a multiple of `multiple`, or
    to the smallest of `buckets` that holds it. Padded keys are masked to exactly zero
    attention, so a model that reads only real positions (the classifier's [CLS], the
    masked-LM positions) computes the same numbers at either length.

    Args:
        max_seq_length: the records' sequence length.
        multiple: round the length up to this (ignored with `buckets`).
        buckets: sorted lengths, the last being max_seq_length (XLA compiles once per
            shape: a fixed set of buckets bounds the compiles).
        position_features: names of int features that index into the sequence (such as
            `masked_lm_positions`); the cut never drops a position they point at.
    """

    def __init__(self, max_seq_length, multiple=LENGTH_MULTIPLE, buckets=None, position_features=()):
        self.max_seq_length = max_seq_length
        self.multiple = multiple
        self.buckets = sorted(set(buckets)) if buckets else None
        if self.buckets and self.buckets[-1] != max_seq_length:
            raise ValueError(f"the last length bucket must be max_seq_length={max_seq_length}, got {self.buckets}")
        self.position_features = tuple(position_features)

    def lengths(self):
        """Every length a batch can be cut to."""
        if self.buckets:
            return list(self.buckets)
        return sorted({min(n, self.max_seq_length) for n in range(self.multiple, self.max_seq_length + self.multiple,
                                                                   self.multiple)})

    def describe(self):
        lengths = self.lengths()
        text = (f"batches run at their real length, rounded up to one of {len(lengths)} lengths "
                f"({', '.join(map(str, lengths))})")
        if self.buckets:
            text += f"; XLA compiles the training step at most {len(lengths)} times, once per length"
        return text

    def row_lengths(self, features):
        """The length each row needs, rounded up as the batches are: int32 [B]."""
        mask = features["input_mask"]
        positions = tf.range(1, tf.shape(mask)[1] + 1)
        needed = tf.reduce_max(tf.where(tf.not_equal(mask, 0), positions[tf.newaxis], 0), axis=1)
        for name in self.position_features:
            needed = tf.maximum(needed, tf.cast(tf.reduce_max(features[name], axis=1), tf.int32) + 1)
        return self.round_up(tf.maximum(needed, 1))

    def round_up(self, needed):
        """int32 lengths rounded up to a multiple or a bucket (at most max_seq_length)."""
        if self.buckets:
            buckets = tf.constant(self.buckets, tf.int32)
            index = tf.searchsorted(buckets, tf.reshape(needed, [-1]), side="left")
            return tf.reshape(tf.gather(buckets, tf.minimum(index, len(self.buckets) - 1)), tf.shape(needed))
        return tf.minimum((needed + self.multiple - 1) // self.multiple * self.multiple, self.max_seq_length)

    def batch_length(self, features):
        """The length a batch of features is cut to: int32 scalar tensor.

        An empty batch (a serving batcher's empty request) gets the shortest length, not
        reduce_max's lowest int32: its outputs are empty, of the usual shapes.
        """
        shortest = tf.constant([self.lengths()[0]], tf.int32)
        return tf.reduce_max(tf.concat([self.row_lengths(features), shortest], axis=0))

    def __call__(self, features):
        """Cuts the sequence features of a batch (a dict of [B, ...] tensors) to its real length."""
        return self.cut(features, self.batch_length(features))

    @staticmethod
    def cut(features, length):
        """The batch with every sequence feature cut to `length` (no longer than any row needs)."""
        return {name: t[:, :length] if name in SEQUENCE_FEATURES else t for name, t in features.items()}


def xla_buckets(max_seq_length):
    """The lengths a batch is cut to under XLA: multiples of XLA_BUCKET_WIDTH, then max_seq_length."""
    return list(range(XLA_BUCKET_WIDTH, max_seq_length, XLA_BUCKET_WIDTH)) + [max_seq_length]


def real_length(config, max_seq_length, position_features=()):
    """The RealLength a runner uses under `config` (logged), or None where shapes must stay fixed (TPU).

    Under --use_xla a batch is cut to a multiple of 32 (XLA compiles each new shape: at most
    max_seq_length / 32 compiles); otherwise to a multiple of LENGTH_MULTIPLE.
    """
    if config.distribution_strategy == "tpu":
        return None
    length = RealLength(max_seq_length, buckets=xla_buckets(max_seq_length) if config.use_xla else None,
                        position_features=position_features)
    logging.info("Sequence length: %s", length.describe())
    return length


def training_dataset(input_files, name_to_features, batch_size, seed, skip_examples=0, input_context=None,
                     cycle_length=4, length=None, group_by_length=False):
    # 9 parameters: the files and their spec, the batch, and the pipeline's options (resume, sharding, length).
    """The training pipeline: shuffled files, interleaved reads, shuffled records, batches.

    Deterministic for a given seed and number of input pipelines. With several pipelines
    (one per worker), each reads only its share:
    - whole files, when there are at least as many files as pipelines: each pipeline reads
      its files in its own shuffled order, and each record is used once per epoch;
    - otherwise records: every pipeline reads the one seeded stream and keeps every Nth
      record, so the cluster's global batches hold exactly the records one device's would
      (each pipeline still reads every byte: write at least as many files as workers).

    Args:
        input_files: list of TFRecord files.
        name_to_features: the tf.io.FixedLenFeature spec.
        batch_size: examples per batch of one replica.
        seed: shuffling seed.
        skip_examples: records already trained on, for a resume that has no saved input
            position: skipped in the one-stream layout (exact, but read again); with
            per-pipeline files the stream starts afresh, reshuffled with this number.
        input_context: tf.distribute.InputContext (None: one pipeline).
        length: a RealLength that cuts each batch to its real length (None: every batch
            at the records' length). The batches hold the same records either way.
        group_by_length: with `length`, batch records of similar length together instead:
            windows of GROUP_WINDOW_BATCHES batches are sorted by length, cut into batches
            and the batches shuffled (seeded). Fewer padded tokens, but other batches than
            the original's, so another trajectory. One input pipeline only.
    """
    pipelines = input_context.num_input_pipelines if input_context else 1
    index = input_context.input_pipeline_id if input_context else 0
    files = tf.data.Dataset.from_tensor_slices(input_files)
    by_file = pipelines > 1 and len(input_files) >= pipelines
    if by_file:
        files = files.shard(pipelines, index)
        file_count = len(input_files[index::pipelines])
        if skip_examples:
            # Positions in per-pipeline streams depend on the pipeline count, so a lost
            # position is not found by skipping: a fresh, reshuffled pass instead.
            seed = (int(seed or 0) * 1_000_003 + skip_examples) % 2**31
            skip_examples = 0
    else:
        file_count = len(input_files)
        if pipelines > 1:
            logging.warning("%d input file(s) for %d workers: every worker reads every record and keeps its "
                            "share; write at least %d files (create_pretraining_data.py takes several "
                            "--output_file) so that each worker reads only its own", len(input_files), pipelines,
                            pipelines)
    files = files.repeat().shuffle(file_count, seed=seed)
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=min(cycle_length, file_count),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    records = records.shuffle(100, seed=seed)
    if group_by_length:
        if length is None:
            raise ValueError("--group_by_length needs batches of varying length (not on TPU)")
        if pipelines > 1:
            raise ValueError("--group_by_length works with one input pipeline (not multi-worker)")
        return _length_grouped_training_batches(records, name_to_features, batch_size, seed, skip_examples, length)
    if skip_examples:
        records = records.skip(skip_examples)
    if pipelines > 1 and not by_file:
        records = records.shard(pipelines, index)
    batches = records.batch(batch_size, drop_remainder=True)
    batches = batches.map(lambda s: _parsed(s, name_to_features, length), num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def _length_grouped_training_batches(records, name_to_features, batch_size, seed, skip_examples, length):
    """Batches of records of similar length, from sorted windows, in shuffled order (seeded).

    The stream of batches depends only on the seed, so a resumed run skips whole batches of
    it and continues exactly where the interrupted run stopped.
    """
    def sorted_batches(window_index, serialized):
        features = _parse_batch(serialized, name_to_features)
        order = tf.argsort(length.row_lengths(features), stable=True)
        # The window's batches in an order drawn from (seed, window): each window its own.
        shuffled = tf.argsort(tf.random.stateless_uniform([GROUP_WINDOW_BATCHES], seed=tf.stack(
            [tf.constant(seed or 0, tf.int64), window_index])))
        order = tf.reshape(tf.gather(tf.reshape(order, [GROUP_WINDOW_BATCHES, batch_size]), shuffled), [-1])
        batches = {name: tf.reshape(tf.gather(t, order), tf.concat([[GROUP_WINDOW_BATCHES, batch_size],
                                                                     tf.shape(t)[1:]], 0))
                   for name, t in features.items()}
        return tf.data.Dataset.from_tensor_slices(batches)

    windows = records.batch(batch_size * GROUP_WINDOW_BATCHES, drop_remainder=True).enumerate()
    batches = windows.flat_map(sorted_batches)
    if skip_examples:
        batches = batches.skip(skip_examples // batch_size)
    return batches.map(length, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def tfrecord_dataset_fn(input_files, name_to_features, seed, length=None, group_by_length=False, vocab_size=None):
    """The `dataset_fn` that train() takes, over TFRecord files (see training_dataset).

    With `vocab_size`, every batch's token ids are checked against it (check_token_ids).
    """
    def dataset_fn(input_context, batch_size, skip_examples):
        dataset = training_dataset(input_files, name_to_features, batch_size, seed, skip_examples=skip_examples,
                                   input_context=input_context, length=length, group_by_length=group_by_length)
        return dataset if vocab_size is None else check_token_ids(dataset, vocab_size)
    return dataset_fn


def _parsed(serialized, name_to_features, length):
    features = _parse_batch(serialized, name_to_features)
    return length(features) if length is not None else features


# Batches that --group_by_length training (and run_squad's --real_length prediction) sorts by
# length at a time.
GROUP_WINDOW_BATCHES = 32

# Batches that a length-grouped evaluation or prediction (sequential_dataset's group_window)
# sorts at a time. Larger than GROUP_WINDOW_BATCHES because its batches of short rows hold up to
# max_seq_length / 8 times batch_size rows, and what a window leaves over is padded (see
# _length_grouped_batches): on 4,096 real-prose pairs at max_seq_length 128, windows of 128
# batches run 5% more tokens than batches of exactly one length would, windows of 32 batches 15%.
# Its inputs are a few bytes per token, so a window holds less memory than one batch's activations.
PREDICTION_WINDOW_BATCHES = 128

# The position of each example in the input, carried through a length-grouped dataset so
# that predict() can put its outputs back in input order.
EXAMPLE_POSITION = "example_position"


def sequential_dataset(input_files, name_to_features, batch_size, repeat=False, drop_remainder=False, length=None,
                       group_window=None):
    """Files read in order (evaluation and prediction).

    Args:
        length: a RealLength that cuts each batch to its real length (None: fixed shapes).
        group_window: with `length`, read this many batches at a time, sort their examples
            by length (stable) and batch them again, so that short examples share short
            batches; each example then carries its input position as EXAMPLE_POSITION,
            and predict() yields its outputs back in input order. Not with `repeat`.
    """
    records = tf.data.TFRecordDataset(input_files)
    if group_window and length is not None:
        if repeat or drop_remainder:
            raise ValueError("a length-grouped dataset is read once, without dropping a remainder")
        return _length_grouped_batches(records, name_to_features, batch_size, group_window, length)
    if repeat:
        records = records.repeat()
    batches = records.batch(batch_size, drop_remainder=drop_remainder)
    batches = batches.map(lambda s: _parsed(s, name_to_features, length), num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def _length_grouped_batches(records, name_to_features, batch_size, group_window, length):
    """Windows of group_window * batch_size records, parsed and grouped by length_grouped_batches."""
    def parsed_window(positions, serialized):
        return dict(_parse_batch(serialized, name_to_features), **{EXAMPLE_POSITION: positions})

    windows = records.enumerate().batch(batch_size * group_window).map(parsed_window)
    return length_grouped_batches(windows, batch_size, length)


def length_grouped_batches(windows, batch_size, length, grow_short_batches=True):
    """Each window of rows sorted by length and re-batched: the one length-ordered inference path.

    `windows` is a dataset of dicts of [n, ...] tensors (n rows, any n), each holding the
    sequence features, `input_mask` among them, and EXAMPLE_POSITION [n] (int64): the rows'
    positions in the input, 0, 1, 2, ... over the windows. training.predict() runs the
    batches and yields their outputs back in input order (sequential_dataset's group_window
    makes such windows of TFRecords, run_squad.predict_windows of SQuAD windows,
    extract_features of text lines).

    A batch of rows of rounded length L holds rows_for(L) = max(batch_size, batch_size *
    max_seq_length // L) of them: as many as fit in the tokens of one batch at max_seq_length,
    so short rows take fewer model calls and no batch holds more tokens (nor attention
    scores) than a padded one. The rows of a length that do not fill a batch join the next
    longer length's batches (padded to it); what is left at the window's end is one batch
    at the window's longest length, filled up with dummy rows (EXAMPLE_POSITION -1, every
    feature 0). So every batch of length L is [rows_for(L), L]: one shape per length, however
    long the input. Each new shape costs memory for per-shape kernel state (oneDNN
    primitives, XLA compiles), so bounding the shapes bounds the peak (batching each length's
    leftover rows on their own made 109 shapes and +270 MB over 4,096 pairs); the carried and
    dummy rows cost a few % more tokens (see PREDICTION_WINDOW_BATCHES). Each row's outputs
    depend only on that row, so the batching changes no prediction beyond float rounding;
    predict() drops the dummy rows.

    grow_short_batches False: every batch holds batch_size rows, whatever its length (still
    one shape per length). For windows of a few batches, as extract_features' (its outputs
    are large per row, so its windows are small): there, the grown batches of short rows
    rarely fill, and the rows carried up to longer lengths ran 65% more tokens (2,000 lines
    of prose, windows of 256 lines, batch 32, max_seq_length 128) against 1% with batches of
    batch_size rows.

    `length` None (fixed shapes, TPU): each window's rows stay in input order, in batches of
    exactly [batch_size, width of the window], the last filled up with dummy rows.
    """
    # Plain tensor code: AutoGraph's conversion would only add time to every dataset's build.
    if length is None:
        @tf.autograph.experimental.do_not_convert
        def fixed_batches(features):
            rows = tf.shape(features[EXAMPLE_POSITION], out_type=tf.int64)[0]
            features = _with_dummy_rows(features, -rows % batch_size)
            return tf.data.Dataset.from_tensor_slices(
                {name: tf.reshape(t, tf.concat([[-1, batch_size], tf.shape(t)[1:]], 0))
                 for name, t in features.items()})

        return windows.flat_map(fixed_batches).prefetch(tf.data.AUTOTUNE)

    # A batch of length L holds max(batch_size, token_budget // L) rows.
    token_budget = batch_size * (length.max_seq_length if grow_short_batches else 1)

    @tf.autograph.experimental.do_not_convert
    def sort_window(features):
        row_lengths = length.row_lengths(features)
        order = tf.argsort(row_lengths, stable=True)
        features = {name: tf.gather(t, order) for name, t in features.items()}
        starts, sizes, lengths, dummies = _grouped_batch_plan(tf.gather(row_lengths, order), batch_size, token_budget)
        features = _with_dummy_rows(features, dummies)
        plan = tf.data.Dataset.from_tensor_slices((starts, sizes, lengths))
        return plan.map(lambda start, size, batch_length: length.cut(
            {name: t[start:start + size] for name, t in features.items()}, batch_length))

    return windows.flat_map(sort_window).prefetch(tf.data.AUTOTUNE)


def _with_dummy_rows(features, count):
    """`features` with `count` rows appended: EXAMPLE_POSITION -1, every other feature 0."""
    return {name: tf.concat([t, tf.fill(tf.concat([[count], tf.shape(t, out_type=tf.int64)[1:]], 0),
                                         tf.constant(-1 if name == EXAMPLE_POSITION else 0, t.dtype))], 0)
            for name, t in features.items()}


def _grouped_batch_plan(sorted_lengths, batch_size, token_budget):
    """How _length_grouped_batches cuts one window of rows sorted by rounded length.

    Returns (starts, sizes, lengths, dummies): batch i is rows [starts[i], starts[i] + sizes[i])
    cut to lengths[i]; `dummies` rows are to be appended to the window for its last batch.
    """
    lengths, _, counts = tf.unique_with_counts(tf.cast(sorted_lengths, tf.int64), tf.int64)  # ascending
    rows = tf.maximum(tf.constant(batch_size, tf.int64), token_budget // lengths)
    # Rows of each length left over after its full batches, carried into the next length's.
    left = tf.scan(lambda carried, count_rows: (carried + count_rows[0]) % count_rows[1], (counts, rows),
                   initializer=tf.constant(0, tf.int64))
    carried_in = tf.concat([[0], left[:-1]], 0)
    full = (counts + carried_in) // rows
    first_row = tf.cumsum(counts, exclusive=True) - carried_in
    which = tf.repeat(tf.range(tf.size(lengths, tf.int64)), full)  # the length index of each full batch
    nth = tf.range(tf.size(which, tf.int64)) - tf.gather(tf.cumsum(full, exclusive=True), which)
    last = left[-1]  # rows of the window's last batch, at its longest length, filled up with dummies
    has_last = tf.cast(last > 0, tf.int64)[tf.newaxis]
    starts = tf.concat([tf.gather(first_row, which) + nth * tf.gather(rows, which),
                        tf.repeat(tf.size(sorted_lengths, tf.int64)[tf.newaxis] - last, has_last)], 0)
    sizes = tf.concat([tf.gather(rows, which), tf.repeat(rows[-1:], has_last)], 0)
    batch_lengths = tf.concat([tf.gather(lengths, which), tf.repeat(lengths[-1:], has_last)], 0)
    return starts, sizes, tf.cast(batch_lengths, tf.int32), tf.reduce_sum(has_last) * rows[-1] - last


# --- Writing records ----------------------------------------------------------------------

def serialize_example(features):
    """Serializes {name: list of int or float} as a tf.train.Example (int64 or float lists)."""
    example = tf.train.Example()
    for name, values in features.items():
        feature = example.features.feature[name]
        if values and isinstance(values[0], float):
            feature.float_list.value.extend(values)
        else:
            feature.int64_list.value.extend(values)
    return example.SerializeToString()


def write_tfrecord(path, serialized_examples):
    """Writes serialized records to `path` atomically (temporary name, then rename).

    Returns the number of records written; on any error nothing is left at `path`.
    """
    count = 0
    with cli.atomic_output(path) as temp:
        with tf.io.TFRecordWriter(temp) as writer:
            for record in serialized_examples:
                writer.write(record)
                count += 1
    return count
