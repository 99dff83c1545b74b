"""Masked-LM and next-sentence pretraining (and its evaluation), as the original script.

Reads the TFRecords of create_pretraining_data.py (the original's or ours), trains
BERT with the MLM + NSP heads and writes checkpoints in the original names to
`output_dir`; with --do_eval writes `eval_results.txt`. Running the same command again
after an interruption resumes from the latest checkpoint in `output_dir`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import cli  # first: it imports TensorFlow without the start-up notices

cli.import_tensorflow()

from absl import flags, logging
import keras
import tensorflow as tf

import input_pipeline
import modeling
import training

FLAGS = flags.FLAGS


def define_flags():
    """Defines the script's flags (only when run as a script, so modules can be imported together)."""
    flags.DEFINE_string("bert_config_file", None,
                        "The config json file corresponding to the pre-trained BERT model.")
    flags.DEFINE_string("input_file", None, "Input TF example files (can be a glob or comma separated).")
    flags.DEFINE_string("output_dir", None, "The output directory where the model checkpoints will be written.")
    flags.DEFINE_string("init_checkpoint", None, "Initial checkpoint (usually from a pre-trained BERT model).")
    flags.DEFINE_integer("max_seq_length", 128,
                         "The maximum total input sequence length after WordPiece tokenization. Must match the data.")
    flags.DEFINE_integer("max_predictions_per_seq", 20,
                         "Maximum number of masked LM predictions per sequence. Must match the data.")
    flags.DEFINE_bool("do_train", False, "Whether to run training.")
    flags.DEFINE_bool("do_eval", False, "Whether to run eval on the dev set.")
    flags.DEFINE_integer("train_batch_size", 32, "Total batch size for training.")
    flags.DEFINE_integer("eval_batch_size", 8, "Total batch size for eval.")
    flags.DEFINE_float("learning_rate", 5e-5, "The initial learning rate for Adam.")
    flags.DEFINE_integer("num_train_steps", 100000, "Number of training steps.")
    flags.DEFINE_integer("num_warmup_steps", 10000, "Number of warmup steps.")
    flags.DEFINE_integer("max_eval_steps", 100, "Maximum number of eval steps.")
    training.define_tpu_flags(flags)
    training.define_engine_flags(flags)


def pretraining_features(max_seq_length, max_predictions_per_seq):
    """The TFRecord schema of create_pretraining_data.py."""
    return {
        "input_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "input_mask": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([max_predictions_per_seq], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }


class PretrainingModel(keras.layers.Layer):
    """BERT with the masked-LM (`cls/predictions`) and next-sentence (`cls/seq_relationship`) heads."""

    def __init__(self, config, use_one_hot_embeddings=False, gradient_checkpointing=False, **kwargs):
        super().__init__(name="pretraining", **kwargs)
        self.bert = modeling.BertModel(config, use_one_hot_embeddings=use_one_hot_embeddings,
                                       gradient_checkpointing=gradient_checkpointing)
        self.masked_lm = modeling.MaskedLMHead(config, self.bert.embedding_table)
        self.next_sentence = modeling.NextSentenceHead(config)

    def call(self, features, training=False):
        """Returns (masked-LM logits [B, P, V], next-sentence logits [B, 2])."""
        outputs = self.bert(features["input_ids"], input_mask=features["input_mask"],
                            token_type_ids=features["segment_ids"], training=training)
        mlm_logits = self.masked_lm(outputs["sequence_output"], features["masked_lm_positions"],
                                    training=training)
        nsp_logits = self.next_sentence(outputs["pooled_output"])
        return mlm_logits, nsp_logits


def pretraining_losses(model, features, training):
    """(total loss, MLM loss, per-prediction MLM loss, MLM log-probs, NSP per-example loss, NSP log-probs)."""
    mlm_logits, nsp_logits = model(features, training=training)
    mlm_loss, mlm_per_example, mlm_log_probs = modeling.masked_lm_loss(
        mlm_logits, features["masked_lm_ids"], features["masked_lm_weights"])
    nsp_loss, nsp_per_example, nsp_log_probs = modeling.next_sentence_loss(
        nsp_logits, features["next_sentence_labels"])
    return mlm_loss + nsp_loss, mlm_per_example, mlm_log_probs, nsp_per_example, nsp_log_probs


def pretraining_loss(model, features, training):
    return pretraining_losses(model, features, training)[0]


# Per row of a length-grouped evaluation: the masked-LM weight and the size of the original
# batch it came from, so that the "loss" metric is the original's mean over its batches.
BATCH_MASKED_LM_WEIGHT = "batch_masked_lm_weight"
BATCH_ROWS = "batch_rows"


def pretraining_metrics(model, features):
    """The original's eval metrics as (weighted sum, weight) pairs, summed row by row.

    Each row counts on its own, so any regrouping of the original's batches gives the same
    metrics: rows at EXAMPLE_POSITION -1 (a window's filler) weigh nothing, and the
    Estimator's "loss" (the mean over the original's batches of the batch's total loss) is a
    sum of per-row shares: mlm_row / (batch's masked-LM weight + 1e-5) + nsp_row / batch size.
    Features: the records' (eval_dataset adds EXAMPLE_POSITION and BATCH_MASKED_LM_WEIGHT;
    without them, each batch is taken as one of the original's).
    """
    _, mlm_per_example, mlm_log_probs, nsp_per_example, nsp_log_probs = pretraining_losses(
        model, features, training=False)
    weights = tf.cast(features["masked_lm_weights"], tf.float32)  # [B, P]; 0 in filler rows
    mlm_correct = tf.cast(tf.equal(tf.argmax(mlm_log_probs, -1, output_type=tf.int32),
                                   features["masked_lm_ids"]), tf.float32)
    nsp_labels = tf.reshape(features["next_sentence_labels"], [-1])
    nsp_correct = tf.cast(tf.equal(tf.argmax(nsp_log_probs, -1, output_type=tf.int32), nsp_labels), tf.float32)
    rows = tf.shape(nsp_labels)[0]
    if input_pipeline.EXAMPLE_POSITION in features:
        real = tf.cast(features[input_pipeline.EXAMPLE_POSITION] >= 0, tf.float32)
        batch_weight, batch_rows = features[BATCH_MASKED_LM_WEIGHT], features[BATCH_ROWS]
    else:
        real = tf.ones([rows], tf.float32)
        batch_weight = tf.fill([rows], tf.reduce_sum(weights))
        batch_rows = tf.fill([rows], tf.cast(rows, tf.float32))
    mlm_rows = tf.reduce_sum(mlm_per_example * weights, axis=1)  # [B]
    return {
        "masked_lm_accuracy": (tf.reduce_sum(mlm_correct * weights), tf.reduce_sum(weights)),
        "masked_lm_loss": (tf.reduce_sum(mlm_rows), tf.reduce_sum(weights)),
        "next_sentence_accuracy": (tf.reduce_sum(nsp_correct * real), tf.reduce_sum(real)),
        "next_sentence_loss": (tf.reduce_sum(nsp_per_example * real), tf.reduce_sum(real)),
        "loss": (tf.reduce_sum(mlm_rows / (batch_weight + 1e-5) + tf.math.divide_no_nan(real * nsp_per_example,
                                                                                          batch_rows)),
                 tf.reduce_sum(tf.math.divide_no_nan(real, batch_rows))),
    }


def eval_dataset(input_files, name_to_features, batch_size, max_steps, length, vocab_size):
    # 6 parameters: the records, their batches, and how they are cut and checked.
    """The original's evaluation input, length-grouped: `max_steps` batches of `batch_size`
    records (the files repeated as needed), whose rows are regrouped by length in windows of
    PREDICTION_WINDOW_BATCHES batches (`length` None, TPU: the original's batches as they
    are). Each row carries its input position and its original batch's masked-LM weight and
    size (filler rows: 0), so pretraining_metrics gives the original's numbers."""
    batches = input_pipeline.check_token_ids(input_pipeline.sequential_dataset(
        input_files, name_to_features, batch_size, repeat=True, drop_remainder=True), vocab_size).take(max_steps)

    def with_batch_features(index, features):
        rows = tf.shape(features["next_sentence_labels"], out_type=tf.int64)[0]
        weight = tf.reduce_sum(tf.cast(features["masked_lm_weights"], tf.float32))
        return dict(features, **{input_pipeline.EXAMPLE_POSITION: index * rows + tf.range(rows),
                                 BATCH_MASKED_LM_WEIGHT: tf.fill([rows], weight),
                                 BATCH_ROWS: tf.fill([rows], tf.cast(rows, tf.float32))})

    windows = batches.enumerate().map(with_batch_features).unbatch().batch(
        batch_size * input_pipeline.PREDICTION_WINDOW_BATCHES)
    return input_pipeline.length_grouped_batches(windows, batch_size, length)


# --- The original's head functions, eager (issue 23) -------------------------------------------
# Each takes the project's head layer as `head`; without one it builds a fresh head (new random
# weights under the original's variable names), as a first call of the original in a new graph.

def gather_indexes(sequence_tensor, positions):
    """Gathers float [B, S, H] at int [B, P] positions into [B*P, H]."""
    return modeling.gather_indexes(sequence_tensor, positions)


def get_masked_lm_output(bert_config, input_tensor, output_weights, positions, label_ids, label_weights, head=None):
    """The original's masked-LM output: (loss, per_example_loss [B*P], log_probs [B*P, V]).

    Args:
        input_tensor: float [B, S, H] sequence output; output_weights: the word embeddings [V, H].
        positions, label_ids: int [B, P]; label_weights: float [B, P].
        head: a `modeling.MaskedLMHead` (its trained `cls/predictions/...` weights).
    """
    head = head if head is not None else modeling.MaskedLMHead(bert_config, output_weights)
    logits = head(input_tensor, positions)  # [B, P, V]
    loss, per_example_loss, log_probs = modeling.masked_lm_loss(logits, label_ids, label_weights)
    return loss, tf.reshape(per_example_loss, [-1]), tf.reshape(log_probs, [-1, bert_config.vocab_size])


def get_next_sentence_output(bert_config, input_tensor, labels, head=None):
    """The original's next-sentence output: (loss, per_example_loss [B], log_probs [B, 2]).

    Args:
        input_tensor: float [B, H] pooled output; labels: int [B] or [B, 1] (0: B follows A).
        head: a `modeling.NextSentenceHead` (its trained `cls/seq_relationship/...` weights).
    """
    head = head if head is not None else modeling.NextSentenceHead(bert_config)
    return modeling.next_sentence_loss(head(input_tensor), labels)


def main(_):
    logging.set_verbosity(logging.INFO)
    if not FLAGS.do_train and not FLAGS.do_eval:
        raise ValueError("At least one of `do_train` or `do_eval` must be True.")
    engine_config = training.EngineConfig.from_flags(FLAGS)
    bert_config = modeling.BertConfig.from_json_file(FLAGS.bert_config_file)
    modeling.check_max_seq_length(bert_config, FLAGS.max_seq_length)
    cli.validate_run_flags(train_batch_size=FLAGS.train_batch_size if FLAGS.do_train else None,
                                eval_batch_size=FLAGS.eval_batch_size if FLAGS.do_eval else None,
                                learning_rate=FLAGS.learning_rate if FLAGS.do_train else None)
    for name, low in (("num_train_steps", 1 if FLAGS.do_train else 0), ("num_warmup_steps", 0),
                      ("max_eval_steps", 1 if FLAGS.do_eval else 0)):
        if getattr(FLAGS, name) < low:
            raise ValueError(f"--{name}={getattr(FLAGS, name)} must be at least {low}")
    input_files = cli.expand_input_files(FLAGS.input_file)
    logging.info("*** Input Files ***")
    for input_file in input_files:
        logging.info("  %s", input_file)
    strategy = training.start(engine_config)  # first: it configures devices, before TensorFlow runs an op
    name_to_features = pretraining_features(FLAGS.max_seq_length, FLAGS.max_predictions_per_seq)
    input_pipeline.check_tfrecords(input_files, name_to_features, vocab_size=bert_config.vocab_size)
    training.check_start_checkpoint(FLAGS.output_dir, FLAGS.init_checkpoint, bert_config)
    training.ensure_output_dir(FLAGS.output_dir)
    with strategy.scope():
        model = PretrainingModel(bert_config, use_one_hot_embeddings=FLAGS.use_tpu,
                                 gradient_checkpointing=engine_config.gradient_checkpointing)
    # The heads read only [CLS] and the masked positions (all inside the real tokens).
    length = input_pipeline.real_length(engine_config, FLAGS.max_seq_length, position_features=("masked_lm_positions",))

    if FLAGS.do_train:
        dataset_fn = input_pipeline.tfrecord_dataset_fn(input_files, name_to_features, engine_config.data_seed,
                                                  length=length, vocab_size=bert_config.vocab_size)
        with input_pipeline.naming_damaged_input(input_files):
            training.train(strategy, engine_config, model, pretraining_loss, dataset_fn, FLAGS.output_dir,
                           FLAGS.num_train_steps, FLAGS.num_warmup_steps, FLAGS.learning_rate,
                           FLAGS.train_batch_size, init_checkpoint=FLAGS.init_checkpoint)

    if FLAGS.do_eval:
        if not FLAGS.do_train:
            training.restore_for_inference(model, FLAGS.output_dir, FLAGS.init_checkpoint, doing="Evaluating")
        logging.info("***** Running evaluation *****")
        logging.info("  Batch size = %d", FLAGS.eval_batch_size)
        dataset = eval_dataset(input_files, name_to_features, FLAGS.eval_batch_size, FLAGS.max_eval_steps, length,
                               bert_config.vocab_size)
        with input_pipeline.naming_damaged_input(input_files):
            results = training.evaluate(strategy, model, pretraining_metrics, dataset)
        results["global_step"] = training.checkpoint_step(FLAGS.output_dir)
        if training.is_chief(strategy):
            cli.write_eval_results(os.path.join(FLAGS.output_dir, "eval_results.txt"), results)


def __getattr__(name):
    """The original's TF1-only names end here with a one-line pointer to their replacement."""
    import porting  # only when a name is missing: the module's own imports stay as they are
    raise porting.missing_name(__name__, name)


if __name__ == "__main__":
    define_flags()
    cli.run(main, "run_pretraining.py", ["input_file", "bert_config_file", "output_dir"])
