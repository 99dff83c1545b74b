"""BERT fine-tuning for sentence and sentence-pair classification, as the original script.

The original's four tasks (CoLA, MNLI, MRPC, XNLI) read the original file layouts; the
rest of GLUE (SST-2, QQP, QNLI, RTE, WNLI, STS-B as regression) and a generic TSV/CSV
task (`--task_name=tsv` or `csv` with column flags) come on top. Outputs as the original:
`train.tf_record`, `eval.tf_record`, `predict.tf_record`, checkpoints in the original
names, `eval_results.txt`, `test_results.tsv`; new: the task's own metrics (F1,
Matthews correlation, Pearson/Spearman), evaluation during training with the best
checkpoint kept, and `--export_dir`, a SavedModel that classifies raw strings.
"""

import collections
import csv
import functools
import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import cli  # first: it imports TensorFlow without the start-up notices

cli.import_tensorflow()

from absl import flags, logging
import keras
import numpy as np
import tensorflow as tf

import fused_kernels
import input_pipeline
import modeling
import tokenization
import training

FLAGS = flags.FLAGS


def define_flags():
    """Defines the script's flags (only when run as a script, so modules can be imported together)."""
    flags.DEFINE_string("data_dir", None,
                        "The input data dir. Should contain the .tsv files (or other data files) for the task.")
    flags.DEFINE_string("bert_config_file", None,
                        "The config json file corresponding to the pre-trained BERT model.")
    flags.DEFINE_string("task_name", None, "The name of the task to train: " + ", ".join(sorted(PROCESSORS)) + ".")
    flags.DEFINE_string("vocab_file", None, "The vocabulary file that the BERT model was trained on.")
    flags.DEFINE_string("output_dir", None, "The output directory where the model checkpoints will be written.")
    flags.DEFINE_string("init_checkpoint", None, "Initial checkpoint (usually from a pre-trained BERT model).")
    flags.DEFINE_bool("do_lower_case", True,
                      "Whether to lower case the input text. Should be True for uncased models and False for "
                      "cased models.")
    flags.DEFINE_integer("max_seq_length", 128,
                         "The maximum total input sequence length after WordPiece tokenization. Longer sequences "
                         "are truncated, shorter ones padded.")
    flags.DEFINE_bool("do_train", False, "Whether to run training.")
    flags.DEFINE_bool("do_eval", False, "Whether to run eval on the dev set.")
    flags.DEFINE_bool("do_predict", False, "Whether to run the model in inference mode on the test set.")
    flags.DEFINE_integer("train_batch_size", 32, "Total batch size for training.")
    flags.DEFINE_integer("eval_batch_size", 8, "Total batch size for eval.")
    flags.DEFINE_integer("predict_batch_size", 8, "Total batch size for predict.")
    flags.DEFINE_float("learning_rate", 5e-5, "The initial learning rate for Adam.")
    flags.DEFINE_float("num_train_epochs", 3.0, "Total number of training epochs to perform.")
    flags.DEFINE_float("warmup_proportion", 0.1,
                       "Proportion of training to perform linear learning rate warmup for. E.g., 0.1 = 10% of "
                       "training.")
    training.define_tpu_flags(flags)
    training.define_engine_flags(flags)
    # Additions.
    flags.DEFINE_integer("eval_every_steps", None,
                         "Also evaluate on the dev set every N training steps, keeping the best checkpoint "
                         "(by the task's metric) in output_dir/best.")
    flags.DEFINE_string("export_dir", None,
                        "After training, export a SavedModel that takes raw strings and returns class "
                        "probabilities (the score for regression tasks).")
    flags.DEFINE_bool("skip_case_check", False,
                      "Do not stop when --do_lower_case contradicts the name of a released checkpoint.")
    flags.DEFINE_integer("text_a_column", None, "tsv/csv tasks: 0-based column of the first text.")
    flags.DEFINE_integer("text_b_column", None, "tsv/csv tasks: 0-based column of the second text, if any.")
    flags.DEFINE_integer("label_column", None, "tsv/csv tasks: 0-based column of the label (not read in test files).")
    flags.DEFINE_list("labels", None, "tsv/csv tasks: the label values, in the order of the output probabilities.")
    flags.DEFINE_bool("has_header", True, "tsv/csv tasks: whether every file starts with a header line.")
    flags.DEFINE_bool("group_by_length", False,
                      "Train on batches of examples of similar length (sorted windows, batches in shuffled order): "
                      "faster than the original's random batches, but other batches, so not the same run.")


# --- Examples and processors -------------------------------------------------------------

class InputExample:
    """A single training/test example for simple sequence classification.

    Attributes:
        guid: unique id, for logs.
        text_a: the first (or only) text.
        text_b: the second text of a pair task, or None.
        label: the label string (a float string for regression), or None.
    """

    def __init__(self, guid, text_a, text_b=None, label=None):
        self.guid = guid
        self.text_a = text_a
        self.text_b = text_b
        self.label = label


class PaddingInputExample:
    """A fake example that fills the last batch to full size (TPUs need static batches).

    It is fed like any example but weighs 0 in the metrics and its prediction is dropped.
    """


class InputFeatures:
    """The model inputs of one example."""

    def __init__(self, input_ids, input_mask, segment_ids, label_id, is_real_example=True):
        self.input_ids = input_ids
        self.input_mask = input_mask
        self.segment_ids = segment_ids
        self.label_id = label_id
        self.is_real_example = is_real_example


Split = collections.namedtuple("Split", ["file", "header", "text_a", "text_b", "label", "guid_prefix"])
Split.__new__.__defaults__ = (None,)
Split.__doc__ = """Where one split's fields live: 0-based columns; `label` None means a placeholder."""


class DataProcessor:
    """Reads a task's train/dev/test files into InputExamples.

    Subclasses describe each split with a `Split` (file, header, columns); the reading,
    the checks and the error messages are shared.
    """

    labels = ()
    train = dev = test = None
    is_regression = False
    metric = "eval_accuracy"  # what --eval_every_steps keeps the best checkpoint by

    def get_train_examples(self, data_dir):
        return self._create_examples(data_dir, self.train, "train")

    def get_dev_examples(self, data_dir):
        return self._create_examples(data_dir, self.dev, "dev")

    def get_test_examples(self, data_dir):
        return self._create_examples(data_dir, self.test, "test")

    def get_labels(self):
        return list(self.labels)

    @classmethod
    def _read_tsv(cls, input_file, quotechar=None):
        """Reads a tab separated file into a list of rows (lists of str), as the original."""
        return [row for _, row in cls._read_rows(input_file, quotechar)]

    @classmethod
    def _read_rows(cls, input_file, quotechar=None, delimiter="\t"):
        """Reads a delimited file into a list of (line number, columns); quoting off by default."""
        try:
            with tf.io.gfile.GFile(input_file, "rb") as f:
                data = f.read()
        except tf.errors.OpError as e:
            raise ValueError(f"cannot read {input_file}: {e.message}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[:e.start].count(b"\n") + 1
            raise ValueError(f"{input_file}:{line}: not valid UTF-8") from None
        # Lines end at \n, \r or \r\n only, as a file read in text mode (not at U+2028 and the like).
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quotechar,
                            quoting=csv.QUOTE_NONE if quotechar is None else csv.QUOTE_MINIMAL)
        return [(reader.line_num, row) for row in reader]

    def _read_split(self, data_dir, split):
        path = os.path.join(data_dir, split.file)
        if not tf.io.gfile.exists(path):
            raise ValueError(f"{path} not found: task {self.name} expects {split.file} in --data_dir")
        return path, self._read_rows(path, **self._reader_options())

    def _reader_options(self):
        return {}

    def _create_examples(self, data_dir, split, set_type):
        if split is None:
            raise ValueError(f"task {self.name} has no {set_type} set")
        path, rows = self._read_split(data_dir, split)
        needed = max(c for c in (split.text_a, split.text_b, split.label) if c is not None) + 1
        examples = []
        for index, (line, row) in enumerate(rows):
            if split.header and index == 0:
                if len(row) < needed:
                    raise ValueError(f"{path}:{line}: the header has {len(row)} columns, task {self.name} needs "
                                     f"{needed} (is this the {set_type} file, with its header line?)")
                continue
            if not row or row == [""]:
                continue  # a blank line
            if not self.keep_row(row):
                continue
            if len(row) < needed:
                raise ValueError(f"{path}:{line}: {len(row)} columns, task {self.name} needs at least {needed}")
            label = self.labels[0] if split.label is None else self.map_label(row[split.label])
            if split.label is not None:
                self._check_label(path, line, label)
            guid = f"{set_type}-{row[0] if split.guid_prefix == 'column0' else index}"
            text_b = row[split.text_b] if split.text_b is not None else None
            examples.append(InputExample(guid, tokenization.convert_to_unicode(row[split.text_a]),
                                         tokenization.convert_to_unicode(text_b) if text_b is not None else None,
                                         tokenization.convert_to_unicode(label)))
        return examples

    def keep_row(self, row):
        return True

    def map_label(self, label):
        return label

    def _check_label(self, path, line, label):
        if self.is_regression:
            try:
                float(label)
            except ValueError:
                raise ValueError(f"{path}:{line}: label {label!r} is not a number") from None
        elif label not in self.labels:
            raise ValueError(f"{path}:{line}: label {label!r} is not one of the task's labels "
                             f"{', '.join(self.labels)}")

    @property
    def name(self):
        return getattr(self, "task_name", type(self).__name__)


class ColaProcessor(DataProcessor):
    """CoLA: single sentences, acceptable (1) or not (0). Train/dev have no header."""
    task_name = "cola"
    labels = ("0", "1")
    train = Split("train.tsv", False, 3, None, 1)
    dev = Split("dev.tsv", False, 3, None, 1)
    test = Split("test.tsv", True, 1, None, None)
    metric = "eval_matthews_corr"


class MnliProcessor(DataProcessor):
    """MultiNLI (matched dev and test)."""
    task_name = "mnli"
    labels = ("contradiction", "entailment", "neutral")
    train = Split("train.tsv", True, 8, 9, -1, "column0")
    dev = Split("dev_matched.tsv", True, 8, 9, -1, "column0")
    test = Split("test_matched.tsv", True, 8, 9, None, "column0")

    def _create_examples(self, data_dir, split, set_type):
        # The original names MNLI's sets train, dev_matched and test.
        set_type = {"dev": "dev_matched"}.get(set_type, set_type)
        return super()._create_examples(data_dir, split, set_type)


class MrpcProcessor(DataProcessor):
    """Microsoft Research Paraphrase Corpus: is sentence B a paraphrase of A?"""
    task_name = "mrpc"
    labels = ("0", "1")
    train = Split("train.tsv", True, 3, 4, 0)
    dev = Split("dev.tsv", True, 3, 4, 0)
    test = Split("test.tsv", True, 3, 4, None)
    metric = "eval_f1"


class XnliProcessor(DataProcessor):
    """XNLI, Chinese (the original's hard-coded language): MultiNLI train translated, XNLI dev."""
    task_name = "xnli"
    language = "zh"
    labels = ("contradiction", "entailment", "neutral")
    train = Split(os.path.join("multinli", "multinli.train.zh.tsv"), True, 0, 1, 2)
    dev = Split("xnli.dev.tsv", True, 6, 7, 1)

    def _create_examples(self, data_dir, split, set_type):
        self._set_type = set_type
        return super()._create_examples(data_dir, split, set_type)

    def keep_row(self, row):
        return self._set_type != "dev" or (row and row[0] == self.language)

    def map_label(self, label):
        return "contradiction" if label == "contradictory" else label


class Sst2Processor(DataProcessor):
    """SST-2: single-sentence sentiment."""
    task_name = "sst-2"
    labels = ("0", "1")
    train = Split("train.tsv", True, 0, None, 1)
    dev = Split("dev.tsv", True, 0, None, 1)
    test = Split("test.tsv", True, 1, None, None)


class QqpProcessor(DataProcessor):
    """Quora Question Pairs: are the two questions duplicates?"""
    task_name = "qqp"
    labels = ("0", "1")
    train = Split("train.tsv", True, 3, 4, 5, "column0")
    dev = Split("dev.tsv", True, 3, 4, 5, "column0")
    test = Split("test.tsv", True, 1, 2, None, "column0")
    metric = "eval_f1"


class QnliProcessor(DataProcessor):
    """Question NLI: does the sentence answer the question?"""
    task_name = "qnli"
    labels = ("entailment", "not_entailment")
    train = Split("train.tsv", True, 1, 2, 3, "column0")
    dev = Split("dev.tsv", True, 1, 2, 3, "column0")
    test = Split("test.tsv", True, 1, 2, None, "column0")


class RteProcessor(QnliProcessor):
    """Recognizing Textual Entailment: QNLI's file layout and labels."""
    task_name = "rte"


class WnliProcessor(RteProcessor):
    """Winograd NLI: RTE's file layout, labels 0 and 1."""
    task_name = "wnli"
    labels = ("0", "1")


class StsbProcessor(DataProcessor):
    """STS-B: sentence similarity, a score from 0 to 5 (regression with mean squared error)."""
    task_name = "sts-b"
    labels = ("0.0",)  # test placeholder; one output
    is_regression = True
    train = Split("train.tsv", True, 7, 8, 9, "column0")
    dev = Split("dev.tsv", True, 7, 8, 9, "column0")
    test = Split("test.tsv", True, 7, 8, None, "column0")
    metric = "eval_pearson"


class DelimitedProcessor(DataProcessor):
    """Your own data: train.tsv, dev.tsv, test.tsv (or .csv) with columns given by flags.

    Args:
        delimiter: "\\t" (tsv, quoting off as the original) or "," (csv, standard quoting).
        text_a_column, text_b_column, label_column: 0-based columns (text_b optional).
        labels: the label values; with one value "score" (or regression=True) the task
            is a regression on a float column.
        has_header: whether each file starts with a header line.
    """

    def __init__(self, delimiter, text_a_column, label_column, labels, text_b_column=None, has_header=True,
                 regression=False):
        if text_a_column is None or label_column is None:
            raise ValueError("tsv/csv tasks need --text_a_column and --label_column")
        if not labels and not regression:
            raise ValueError("tsv/csv tasks need --labels (comma-separated label values)")
        self.task_name = "tsv" if delimiter == "\t" else "csv"
        self.delimiter = delimiter
        self.labels = tuple(labels or ("0.0",))
        self.is_regression = regression
        self.metric = "eval_pearson" if regression else "eval_accuracy"
        extension = "tsv" if delimiter == "\t" else "csv"
        self.train = Split(f"train.{extension}", has_header, text_a_column, text_b_column, label_column)
        self.dev = Split(f"dev.{extension}", has_header, text_a_column, text_b_column, label_column)
        self.test = Split(f"test.{extension}", has_header, text_a_column, text_b_column, None)

    def _reader_options(self):
        return {"delimiter": self.delimiter, "quotechar": None if self.delimiter == "\t" else '"'}


PROCESSORS = {p.task_name: p for p in (ColaProcessor, MnliProcessor, MrpcProcessor, XnliProcessor, Sst2Processor,
                                       QqpProcessor, QnliProcessor, RteProcessor, WnliProcessor, StsbProcessor)}
PROCESSORS.update({"sst2": Sst2Processor, "stsb": StsbProcessor, "tsv": None, "csv": None})


def get_processor(task_name, text_a_column=None, text_b_column=None, label_column=None, labels=None,
                  has_header=True):
    """The processor for `task_name` (case-insensitive)."""
    name = (task_name or "").lower()
    if name not in PROCESSORS:
        raise ValueError(f"Task not found: {task_name} (expected one of {', '.join(sorted(PROCESSORS))})")
    if name in ("tsv", "csv"):
        return DelimitedProcessor("\t" if name == "tsv" else ",", text_a_column, label_column, labels,
                                  text_b_column, has_header)
    return PROCESSORS[name]()


# --- Features ------------------------------------------------------------------------------

def _truncate_seq_pair(tokens_a, tokens_b, max_length):
    """Pops the last token of the longer list (B on ties) until the pair fits max_length."""
    while len(tokens_a) + len(tokens_b) > max_length:
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


def convert_single_example(ex_index, example, label_list, max_seq_length, tokenizer, is_regression=False):
    """Converts one InputExample to InputFeatures: [CLS] A [SEP] (B [SEP]), padded with 0."""
    if isinstance(example, PaddingInputExample):
        return InputFeatures([0] * max_seq_length, [0] * max_seq_length, [0] * max_seq_length,
                             0.0 if is_regression else 0, is_real_example=False)
    label_map = {label: i for i, label in enumerate(label_list)}
    tokens_a = tokenizer.tokenize(example.text_a)
    tokens_b = tokenizer.tokenize(example.text_b) if example.text_b else None
    if tokens_b:
        _truncate_seq_pair(tokens_a, tokens_b, max_seq_length - 3)  # room for [CLS], [SEP], [SEP]
    elif len(tokens_a) > max_seq_length - 2:
        tokens_a = tokens_a[:max_seq_length - 2]

    tokens = ["[CLS]"] + tokens_a + ["[SEP]"]
    segment_ids = [0] * len(tokens)
    if tokens_b:
        tokens += tokens_b + ["[SEP]"]
        segment_ids += [1] * (len(tokens_b) + 1)
    input_ids = tokenizer.convert_tokens_to_ids(tokens)
    input_mask = [1] * len(input_ids)
    padding = [0] * (max_seq_length - len(input_ids))
    input_ids += padding
    input_mask += padding
    segment_ids += padding
    label_id = float(example.label) if is_regression else label_map[example.label]
    if ex_index < 5:
        logging.info("*** Example ***")
        logging.info("guid: %s", example.guid)
        logging.info("tokens: %s", " ".join(tokenization.printable_text(t) for t in tokens))
        logging.info("input_ids: %s", " ".join(str(x) for x in input_ids))
        logging.info("input_mask: %s", " ".join(str(x) for x in input_mask))
        logging.info("segment_ids: %s", " ".join(str(x) for x in segment_ids))
        logging.info("label: %s (id = %s)", example.label, label_id)
    return InputFeatures(input_ids, input_mask, segment_ids, label_id)


def convert_examples_to_features(examples, label_list, max_seq_length, tokenizer, is_regression=False):
    """InputFeatures for a list of examples (in memory)."""
    return [convert_single_example(i, ex, label_list, max_seq_length, tokenizer, is_regression)
            for i, ex in enumerate(examples)]


def file_based_convert_examples_to_features(examples, label_list, max_seq_length, tokenizer, output_file,
                                            is_regression=False):
    """Writes the examples' features to a TFRecord (the original's schema), atomically."""
    def records():
        for index, example in enumerate(examples):
            if index % 10000 == 0:
                logging.info("Writing example %d of %d", index, len(examples))
            f = convert_single_example(index, example, label_list, max_seq_length, tokenizer, is_regression)
            yield input_pipeline.serialize_example(collections.OrderedDict([
                ("input_ids", f.input_ids), ("input_mask", f.input_mask), ("segment_ids", f.segment_ids),
                ("label_ids", [f.label_id]), ("is_real_example", [int(f.is_real_example)])]))
    return input_pipeline.write_tfrecord(output_file, records())


def classifier_features(max_seq_length, is_regression=False):
    """The TFRecord schema of train/eval/predict.tf_record."""
    return {
        "input_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "input_mask": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "label_ids": tf.io.FixedLenFeature([], tf.float32 if is_regression else tf.int64),
        "is_real_example": tf.io.FixedLenFeature([], tf.int64),
    }


# --- Model, losses, metrics ----------------------------------------------------------------

class ClassifierModel(keras.layers.Layer):
    """BERT with the classifier head (root-scope `output_weights` / `output_bias`)."""

    def __init__(self, config, num_labels, use_one_hot_embeddings=False, gradient_checkpointing=False, **kwargs):
        super().__init__(name="classifier_model", **kwargs)
        self.bert = modeling.BertModel(config, use_one_hot_embeddings=use_one_hot_embeddings,
                                       gradient_checkpointing=gradient_checkpointing)
        self.head = modeling.ClassifierHead(num_labels, config.hidden_size,
                                            dropout_rate=config.hidden_dropout_prob)

    def call(self, input_ids, input_mask, segment_ids, training=False):
        """float32 logits [B, num_labels]."""
        outputs = self.bert(input_ids, input_mask=input_mask, token_type_ids=segment_ids, training=training)
        return self.head(outputs["pooled_output"], training=training)


def example_losses(model, features, is_regression, training):
    """(per-example loss [B], probabilities [B, C] or scores [B]), float32."""
    logits = model(features["input_ids"], features["input_mask"], features["segment_ids"], training=training)
    if is_regression:
        scores = tf.reshape(logits, [-1])
        return tf.square(scores - tf.cast(features["label_ids"], tf.float32)), scores
    _, per_example_loss, probabilities = modeling.classifier_loss(logits, features["label_ids"])
    return per_example_loss, probabilities


def compute_metrics(outputs, labels, is_real, batch_size, is_regression, task_metric):
    """The original's eval metrics (`eval_accuracy`, `eval_loss`, `loss`) and the task's own.

    Args:
        outputs: probabilities [N, C] (scores [N] for regression); labels [N]; is_real [N].
        batch_size: eval batch size (the Estimator `loss` is a mean of batch means).
    """
    per_example_loss, predictions = outputs["per_example_loss"], outputs["predictions"]
    real = is_real.astype(bool)
    batch_means = [per_example_loss[i:i + batch_size].mean() for i in range(0, len(per_example_loss), batch_size)]
    results = {"eval_loss": per_example_loss[real].mean() if real.any() else 0.0,
               "loss": float(np.mean(batch_means)) if batch_means else 0.0}
    y_true = labels[real]
    if is_regression:
        y_pred = predictions[real]
        results["eval_pearson"] = pearson(y_true, y_pred)
        results["eval_spearman"] = pearson(_ranks(y_true), _ranks(y_pred))
    else:
        y_pred = predictions[real].argmax(-1)
        results["eval_accuracy"] = float(np.mean(y_true == y_pred)) if len(y_true) else 0.0
        if task_metric == "eval_f1":
            results["eval_f1"] = f1_score(y_true, y_pred)
        if task_metric == "eval_matthews_corr":
            results["eval_matthews_corr"] = matthews_corr(y_true, y_pred)
    return {k: np.float32(v) for k, v in results.items()}


def f1_score(y_true, y_pred, positive=1):
    """F1 of the positive class (label id 1), as GLUE reports for MRPC and QQP."""
    tp = np.sum((y_pred == positive) & (y_true == positive))
    fp = np.sum((y_pred == positive) & (y_true != positive))
    fn = np.sum((y_pred != positive) & (y_true == positive))
    return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


def matthews_corr(y_true, y_pred):
    """Matthews correlation coefficient of binary labels (0 when undefined), as GLUE's CoLA."""
    tp = float(np.sum((y_pred == 1) & (y_true == 1)))
    tn = float(np.sum((y_pred == 0) & (y_true == 0)))
    fp = float(np.sum((y_pred == 1) & (y_true == 0)))
    fn = float(np.sum((y_pred == 0) & (y_true == 1)))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(values):
    """Average ranks (ties share their mean rank), for Spearman's correlation."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _prediction_outputs(model, features, is_regression):
    per_example_loss, predictions = example_losses(model, features, is_regression, training=False)
    return {"per_example_loss": per_example_loss, "predictions": predictions,
            "labels": features["label_ids"], "is_real": features["is_real_example"]}


def _regression_outputs(model, features):
    return _prediction_outputs(model, features, True)


def _classification_outputs(model, features):
    return _prediction_outputs(model, features, False)


def run_predictions(strategy, model, dataset, is_regression):
    """{per_example_loss, predictions, labels, is_real} over a dataset, in order (numpy)."""
    # Module-level functions, so that repeated evaluations reuse one traced step.
    predict_fn = _regression_outputs if is_regression else _classification_outputs
    batches = list(training.predict(strategy, model, predict_fn, dataset))
    if not batches:
        return {"per_example_loss": np.zeros([0]), "predictions": np.zeros([0]), "labels": np.zeros([0]),
                "is_real": np.zeros([0])}
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


# --- Serving export ----------------------------------------------------------------------

class ClassifierExport(tf.Module):
    """What --export_dir saves: raw strings in, probabilities (or scores) out.

    Tokenization runs inside the graph (tokenization_ingraph.InGraphTokenizer), with the same ids
    as the Python tokenizer.
    """

    def __init__(self, model, vocab_file, do_lower_case, max_seq_length, labels, is_regression, pair):
        # Imported here: tensorflow_text adds ~120 MB to the resident memory of every process
        # that loads it, and only an export needs it.
        import tokenization_ingraph
        super().__init__(name="bert_classifier")
        self.model = model
        self.tokenizer = tokenization_ingraph.InGraphTokenizer(vocab_file, do_lower_case=do_lower_case)
        self.max_seq_length = max_seq_length
        self.is_regression = is_regression
        self.labels = tf.constant(list(labels))
        self.pair = pair

    def _classify(self, text_a, text_b):
        inputs = self.tokenizer.pack_inputs(text_a, text_b, self.max_seq_length)
        # A request runs at its longest text, not at max_seq_length: the same probabilities.
        inputs = input_pipeline.RealLength(self.max_seq_length)(inputs)
        logits = self.model(inputs["input_ids"], inputs["input_mask"], inputs["segment_ids"], training=False)
        if self.is_regression:
            return {"scores": tf.reshape(tf.cast(logits, tf.float32), [-1])}
        return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)}

    def signatures(self):
        if self.pair:
            fn = tf.function(lambda text_a, text_b: self._classify(text_a, text_b), input_signature=[
                tf.TensorSpec([None], tf.string, name="text_a"), tf.TensorSpec([None], tf.string, name="text_b")])
        else:
            fn = tf.function(lambda text_a: self._classify(text_a, None),
                             input_signature=[tf.TensorSpec([None], tf.string, name="text_a")])
        self.classify = fn
        return {"serving_default": fn}


def export_saved_model(export_dir, model, vocab_file, do_lower_case, max_seq_length, labels, is_regression, pair):
    # 8 parameters: the model and everything its raw-text signature needs (vocab, casing, length, labels, task kind).
    """Saves the serving SavedModel to export_dir (written next to it, then renamed).

    An earlier export at export_dir is replaced only once the new one is complete; any
    other non-empty directory there is refused (cli.check_export_dir), never deleted.
    """
    module = ClassifierExport(model, vocab_file, do_lower_case, max_seq_length, labels, is_regression, pair)
    # Plain TensorFlow ops (no XLA kernels), so that any TensorFlow runtime serves it.
    with cli.export_directory(export_dir) as temp, fused_kernels.fused_kernels(False):
        tf.saved_model.save(module, temp, signatures=module.signatures())
    logging.info("Exported the SavedModel to %s (signature serving_default: %s -> %s)", export_dir,
                 "text_a, text_b" if pair else "text_a", "scores" if is_regression else "probabilities")


# --- main --------------------------------------------------------------------------------

def _pad_for_tpu(examples, batch_size, strategy):
    """TPUs need full batches: pad with PaddingInputExamples (weight 0, dropped later)."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        while len(examples) % batch_size:
            examples.append(PaddingInputExample())
    return examples


def _check_flags():
    """Checks the flags and reads config, task and vocab before anything is written.

    Returns (bert_config, processor, tokenizer).
    """
    bert_config = modeling.BertConfig.from_json_file(FLAGS.bert_config_file)
    modeling.check_max_seq_length(bert_config, FLAGS.max_seq_length)
    processor = get_processor(FLAGS.task_name, FLAGS.text_a_column, FLAGS.text_b_column, FLAGS.label_column,
                              FLAGS.labels, FLAGS.has_header)
    if not tf.io.gfile.isdir(FLAGS.data_dir):
        raise ValueError(f"--data_dir={FLAGS.data_dir} is not a directory")
    tokenizer = tokenization.FullTokenizer(vocab_file=FLAGS.vocab_file, do_lower_case=FLAGS.do_lower_case)
    tokenization.check_special_tokens(tokenizer.vocab, FLAGS.vocab_file, tokenization.TASK_TOKENS)
    modeling.check_vocab_size(bert_config, len(tokenizer.vocab), FLAGS.vocab_file)
    cli.validate_run_flags(train_batch_size=FLAGS.train_batch_size, eval_batch_size=FLAGS.eval_batch_size,
                                predict_batch_size=FLAGS.predict_batch_size, learning_rate=FLAGS.learning_rate,
                                num_train_epochs=FLAGS.num_train_epochs, warmup_proportion=FLAGS.warmup_proportion)
    if FLAGS.eval_every_steps is not None and FLAGS.eval_every_steps < 1:
        raise ValueError(f"--eval_every_steps={FLAGS.eval_every_steps} must be at least 1")
    if FLAGS.export_dir:
        cli.check_export_dir(FLAGS.export_dir, [("data_dir", FLAGS.data_dir), ("output_dir", FLAGS.output_dir),
                                                ("init_checkpoint", FLAGS.init_checkpoint or ""),
                                                ("vocab_file", FLAGS.vocab_file),
                                                ("bert_config_file", FLAGS.bert_config_file)])
    return bert_config, processor, tokenizer


def _read_examples(processor, data_dir, do_train, do_eval, do_predict):
    """(train, dev, test) examples of the splits the run needs (None for the others)."""
    train_examples = processor.get_train_examples(data_dir) if do_train else None
    eval_examples = processor.get_dev_examples(data_dir) if do_eval else None
    predict_examples = processor.get_test_examples(data_dir) if do_predict else None
    for examples, split in ((eval_examples, processor.dev), (predict_examples, processor.test)):
        if examples is not None and not examples:
            raise ValueError(f"{os.path.join(data_dir, split.file)} holds no examples: nothing to "
                             f"{'evaluate' if examples is eval_examples else 'predict'}")
    return train_examples, eval_examples, predict_examples


class ClassifierRun:
    """What the training, evaluation and prediction of one run share: model, task, records.

    Records (train/eval/predict.tf_record) are written to `output_dir`; evaluation and
    prediction batches run at their real length, grouped by length (`length`, None on TPU).
    """

    def __init__(self, strategy, model, processor, tokenizer, output_dir, max_seq_length, length):
        self.strategy, self.model, self.processor, self.tokenizer = strategy, model, processor, tokenizer
        self.label_list = processor.get_labels()
        self.is_regression = processor.is_regression
        self.output_dir, self.max_seq_length, self.length = output_dir, max_seq_length, length
        self.name_to_features = classifier_features(max_seq_length, self.is_regression)
        self.best = None  # a _BestCheckpoint while evaluating during training
        self.eval_records_written = False  # eval.tf_record of this run (not a killed run's) is in output_dir

    def write_records(self, examples, name):
        path = os.path.join(self.output_dir, name)
        file_based_convert_examples_to_features(examples, self.label_list, self.max_seq_length, self.tokenizer,
                                                path, self.is_regression)
        return path

    def loss(self, model, features, training):
        return tf.reduce_mean(example_losses(model, features, self.is_regression, training)[0])

    def _outputs(self, path, batch_size):
        dataset = input_pipeline.sequential_dataset([path], self.name_to_features, batch_size, length=self.length,
                                              group_window=input_pipeline.PREDICTION_WINDOW_BATCHES)
        return run_predictions(self.strategy, self.model, dataset, self.is_regression)

    def evaluate(self, eval_examples, batch_size, step=None):
        """The eval metrics of the dev examples; `step` given: during training (records written once)."""
        examples = _pad_for_tpu(list(eval_examples), batch_size, self.strategy)
        eval_file = os.path.join(self.output_dir, "eval.tf_record")
        if not self.eval_records_written or step is None:
            # Written once per run during training: one left by an earlier run may be of other dev data.
            self.write_records(examples, "eval.tf_record")
            self.eval_records_written = True
        logging.info("***** Running evaluation *****")
        logging.info("  Num examples = %d (%d actual, %d padding)", len(examples), len(eval_examples),
                     len(examples) - len(eval_examples))
        logging.info("  Batch size = %d", batch_size)
        outputs = self._outputs(eval_file, batch_size)
        results = compute_metrics(outputs, outputs["labels"], outputs["is_real"], batch_size, self.is_regression,
                                  self.processor.metric)
        results["global_step"] = step if step is not None else training.checkpoint_step(self.output_dir)
        return results

    def evaluate_during_training(self, eval_examples, batch_size, step):
        """Evaluates at training step `step` and keeps the weights in output_dir/best/ if they are the best."""
        training.check_finite_weights(self.model, step)  # never keep a diverged model as the best
        results = self.evaluate(eval_examples, batch_size, step)
        logging.info("Step %d: %s = %s", step, self.processor.metric, results[self.processor.metric])
        self.best.offer(step, results, self.model)

    def predict(self, predict_examples, batch_size):
        """Writes test_results.tsv for the test examples."""
        examples = _pad_for_tpu(list(predict_examples), batch_size, self.strategy)
        predict_file = self.write_records(examples, "predict.tf_record")
        logging.info("***** Running prediction*****")
        logging.info("  Num examples = %d (%d actual, %d padding)", len(examples), len(predict_examples),
                     len(examples) - len(predict_examples))
        outputs = self._outputs(predict_file, batch_size)
        write_test_results(os.path.join(self.output_dir, "test_results.tsv"),
                           outputs["predictions"][:len(predict_examples)], len(predict_examples))


def _train(run, engine_config, train_examples, eval_examples):
    num_train_steps, num_warmup_steps = cli.epoch_steps(
        len(train_examples), FLAGS.train_batch_size, FLAGS.num_train_epochs, FLAGS.warmup_proportion)
    train_file = run.write_records(train_examples, "train.tf_record")
    logging.info("  Num examples = %d", len(train_examples))
    dataset_fn = input_pipeline.tfrecord_dataset_fn([train_file], run.name_to_features, engine_config.data_seed,
                                              length=run.length, group_by_length=FLAGS.group_by_length)
    callback = None
    if FLAGS.eval_every_steps:
        callback = functools.partial(run.evaluate_during_training, eval_examples, FLAGS.eval_batch_size)
    training.train(run.strategy, engine_config, run.model, run.loss, dataset_fn, FLAGS.output_dir, num_train_steps,
                   num_warmup_steps, FLAGS.learning_rate, FLAGS.train_batch_size,
                   init_checkpoint=FLAGS.init_checkpoint, step_callback=callback,
                   callback_every_steps=FLAGS.eval_every_steps)


def main(_):
    logging.set_verbosity(logging.INFO)
    if not FLAGS.do_train and not FLAGS.do_eval and not FLAGS.do_predict:
        raise ValueError("At least one of `do_train`, `do_eval` or `do_predict' must be True.")
    if not FLAGS.skip_case_check:
        tokenization.validate_case_matches_checkpoint(FLAGS.do_lower_case, FLAGS.init_checkpoint)
    engine_config = training.EngineConfig.from_flags(FLAGS)
    bert_config, processor, tokenizer = _check_flags()
    # Read every input before writing anything, so a bad file leaves output_dir untouched.
    train_examples, eval_examples, predict_examples = _read_examples(
        processor, FLAGS.data_dir, FLAGS.do_train, FLAGS.do_eval or FLAGS.eval_every_steps, FLAGS.do_predict)
    training.check_start_checkpoint(FLAGS.output_dir, FLAGS.init_checkpoint, bert_config)
    training.ensure_output_dir(FLAGS.output_dir)

    strategy = training.start(engine_config)
    with strategy.scope():
        model = ClassifierModel(bert_config, 1 if processor.is_regression else len(processor.get_labels()),
                                use_one_hot_embeddings=FLAGS.use_tpu,
                                gradient_checkpointing=engine_config.gradient_checkpointing)
    # The model reads only [CLS]: every batch runs at its real length with the same numbers.
    length = input_pipeline.real_length(engine_config, FLAGS.max_seq_length)
    run = ClassifierRun(strategy, model, processor, tokenizer, FLAGS.output_dir, FLAGS.max_seq_length, length)
    run.best = _BestCheckpoint(os.path.join(FLAGS.output_dir, "best"), processor.metric)
    if FLAGS.do_train:
        _train(run, engine_config, train_examples, eval_examples)
    else:
        training.restore_or_initialize(model, None, FLAGS.output_dir, FLAGS.init_checkpoint)
    if FLAGS.do_eval:
        cli.write_eval_results(os.path.join(FLAGS.output_dir, "eval_results.txt"),
                                    run.evaluate(eval_examples, FLAGS.eval_batch_size))
    if FLAGS.do_predict:
        run.predict(predict_examples, FLAGS.predict_batch_size)
    if FLAGS.export_dir:
        if FLAGS.eval_every_steps and run.best.step is not None:
            modeling.load_checkpoint(run.best.prefix, model)  # export the best model, not the last
        export_saved_model(FLAGS.export_dir, model, FLAGS.vocab_file, FLAGS.do_lower_case, FLAGS.max_seq_length,
                           processor.get_labels(), processor.is_regression, pair=_is_pair_task(processor))


def _is_pair_task(processor):
    split = processor.train or processor.dev
    return split.text_b is not None


def write_test_results(path, predictions, num_examples):
    """test_results.tsv: one line per example, each probability (or the score) with str()."""
    if len(predictions) != num_examples:
        raise ValueError(f"got {len(predictions)} predictions for {num_examples} test examples")
    logging.info("***** Predict results *****")
    cli.write_text(path, "".join("\t".join(str(v) for v in np.atleast_1d(row).astype(np.float32)) + "\n"
                                 for row in predictions))


class _BestCheckpoint:
    """Keeps output_dir/best/: the weights with the best dev metric seen during training.

    Its eval_results.txt (with global_step) says which checkpoint is the best: a new best's
    checkpoint is written first, then eval_results.txt, then the `checkpoint` state file,
    and only then is the old one removed, so a kill at any moment leaves results and
    weights that belong together (a resumed run repairs a state file left behind).
    """

    def __init__(self, directory, metric):
        self.directory, self.metric = directory, metric
        self.step, self.value, self.prefix = None, None, None
        results_file = os.path.join(directory, "eval_results.txt")
        if tf.io.gfile.exists(results_file):  # a resumed run keeps competing with its earlier best
            with tf.io.gfile.GFile(results_file) as f:
                values = dict(line.strip().split(" = ", 1) for line in f if " = " in line)
            self.value = float(values[metric])
            self.step = int(values["global_step"])
            prefix = os.path.join(directory, f"model.ckpt-{self.step}")
            if tf.io.gfile.exists(prefix + ".index"):
                self.prefix = prefix
                others = [path for path in tf.io.gfile.glob(os.path.join(directory, "model.ckpt-*"))
                          if not path.startswith(prefix + ".")]
                if others or tf.train.latest_checkpoint(directory) != prefix:
                    self._keep_only(prefix)  # a kill during an offer: before or after eval_results.txt
            else:
                self.prefix = tf.train.latest_checkpoint(directory)

    def _keep_only(self, prefix):
        training.write_checkpoint_state(self.directory, [prefix])
        for old in tf.io.gfile.glob(os.path.join(self.directory, "model.ckpt-*")):
            if not old.startswith(prefix + "."):
                tf.io.gfile.remove(old)

    def offer(self, step, results, model):
        value = float(results[self.metric])
        if self.value is not None and value <= self.value:
            return
        prefix = os.path.join(self.directory, f"model.ckpt-{step}")
        modeling.save_checkpoint(prefix, modeling.original_name_map(model))
        cli.write_eval_results(os.path.join(self.directory, "eval_results.txt"), results)
        self._keep_only(prefix)
        self.step, self.value, self.prefix = step, value, prefix
        logging.info("New best %s = %s at step %d -> %s", self.metric, value, step, prefix)


def __getattr__(name):
    """The original's TF1-only names end here with a one-line pointer to their replacement."""
    import porting  # only when a name is missing: the module's own imports stay as they are
    raise porting.missing_name(__name__, name)


if __name__ == "__main__":
    define_flags()
    cli.run(main, "run_classifier.py", ["data_dir", "task_name", "vocab_file", "bert_config_file", "output_dir"])
