"""Exports a BERT encoder as the two SavedModels of TF Hub's BERT interface.

`export_dir/encoder`: `encoder(dict(input_word_ids=, input_mask=, input_type_ids=))` (int32
[B, S] each) returns `pooled_output` [B, H], `sequence_output` [B, S, H] and
`encoder_outputs` (a list of the L layers [B, S, H]), as TF Hub's BERT encoders do.
`export_dir/preprocess`: raw strings in; `tokenize` (WordPiece ids per word), `bert_pack_inputs`
(one or two segments to the encoder's inputs, truncated as run_classifier.py truncates) and a
default signature that packs one segment to `--max_seq_length`. Tokenization runs in the graph
(tokenization_ingraph.InGraphTokenizer) with the ids of FullTokenizer, so code written for the TF Hub
models runs on any checkpoint of this project, and TF Serving needs no Python.
"""

import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging
import tensorflow as tf

import cli
import fused_kernels
import modeling
import tokenization
import tokenization_ingraph

FLAGS = flags.FLAGS

ENCODER_INPUTS = ("input_word_ids", "input_mask", "input_type_ids")
ENCODER_DIR, PREPROCESS_DIR = "encoder", "preprocess"
EXPORT_PARTS = (ENCODER_DIR, PREPROCESS_DIR)


def define_flags():
    """Defines the script's flags (only when run as a script)."""
    flags.DEFINE_string("bert_config_file", None, "bert_config.json of the checkpoint.")
    flags.DEFINE_string("init_checkpoint", None, "The checkpoint to export (original variable names).")
    flags.DEFINE_string("vocab_file", None, "The vocabulary file that the BERT model was trained on.")
    flags.DEFINE_bool("do_lower_case", True, "Lower-case the input text (True for uncased models).")
    flags.DEFINE_string("export_dir", None, "Where to write the encoder/ and preprocess/ SavedModels.")
    flags.DEFINE_integer("max_seq_length", 128,
                         "seq_length of the preprocessing model's default signature (bert_pack_inputs "
                         "takes any seq_length it was exported with).")


class EncoderExport(tf.train.Checkpoint):
    """What export_dir/encoder holds: the TF Hub BERT encoder interface over `modeling.BertModel`.

    A Reusable SavedModel, as TF Hub's: `variables`, `trainable_variables` and
    `regularization_losses` (none) beside `__call__`, so hub.KerasLayer can fine-tune it.
    Also `vocab_file` (an asset) and `do_lower_case` (a variable), where TF Hub's BERT
    encoders keep them, and the model's bert_config.json (an asset). A tf.train.Checkpoint,
    not a tf.Module, because tf.Module reserves `variables` and `trainable_variables`.
    """

    def __init__(self, model, vocab_file, do_lower_case, bert_config_file):
        super().__init__()
        # First, so that the saved variables are keyed by their original names (escaped):
        # convert_checkpoint.py reads them back into a checkpoint by these keys.
        self.original_variables = dict(modeling.original_name_map(model))
        self.model = model
        self.bert_config_file = tf.saved_model.Asset(bert_config_file)
        self.vocab_file = tf.saved_model.Asset(vocab_file)
        self.do_lower_case = tf.Variable(bool(do_lower_case), trainable=False, name="do_lower_case")
        self.variables = list(self.original_variables.values())
        self.trainable_variables = list(self.original_variables.values())
        self.regularization_losses = []

    @tf.function
    def __call__(self, inputs, training=False):
        """inputs: {input_word_ids, input_mask, input_type_ids} int32 [B, S] -> the outputs dict."""
        outputs = self.model(inputs["input_word_ids"], input_mask=inputs["input_mask"],
                             token_type_ids=inputs["input_type_ids"], training=training)
        return {"pooled_output": outputs["pooled_output"], "sequence_output": outputs["sequence_output"],
                "default": outputs["pooled_output"], "encoder_outputs": list(outputs["encoder_layers"])}

    def signatures(self):
        """Traces `__call__` for training False and True; the serving signature without the list."""
        spec = {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in ENCODER_INPUTS}
        for training in (False, True):
            self.__call__.get_concrete_function(spec, training=training)

        @tf.function(input_signature=[spec])
        def serve(inputs):
            outputs = self.__call__(inputs, training=False)
            return {"pooled_output": outputs["pooled_output"], "sequence_output": outputs["sequence_output"]}

        return {"serving_default": serve}


class PreprocessExport(tf.Module):
    """What export_dir/preprocess holds: strings to the encoder's inputs.

    `tokenize(strings [B])` -> int32 RaggedTensor [B, (words), (pieces)];
    `bert_pack_inputs([tokens_a] or [tokens_a, tokens_b], seq_length)` -> the encoder's
    three int32 [B, seq_length] inputs, `[CLS] A [SEP] (B [SEP])`, a pair too long losing
    the last token of its longer segment (B's on a tie), one segment its tail, as
    run_classifier.py's features; `__call__(strings)` is both with seq_length.
    """

    def __init__(self, vocab_file, do_lower_case, seq_length):
        super().__init__(name="bert_preprocess")
        if seq_length < 3:
            raise ValueError(f"--max_seq_length={seq_length} leaves no room for [CLS], [SEP] and text")
        self.tokenizer = tokenization_ingraph.InGraphTokenizer(vocab_file, do_lower_case=do_lower_case)
        self.seq_length = seq_length
        self.vocab_file = tf.saved_model.Asset(vocab_file)
        self.do_lower_case = tf.Variable(bool(do_lower_case), trainable=False, name="do_lower_case")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, text):
        words = self.tokenizer.basic_tokenize(text)  # [B, (W)] strings
        # A basic token tokenizes to itself, so WordPiece ids per word come from tokenizing
        # the words as lines of their own.
        pieces = self.tokenizer.tokenize(words.flat_values)  # [W, (P)]
        return tf.RaggedTensor.from_row_lengths(tf.cast(pieces, tf.int32), words.row_lengths(), validate=False)

    @tf.function
    def bert_pack_inputs(self, inputs, seq_length):
        if len(inputs) not in (1, 2):
            raise ValueError(f"bert_pack_inputs takes one or two segments, got {len(inputs)}")
        segments = [tokens.merge_dims(1, -1) if tokens.ragged_rank > 1 else tokens for tokens in inputs]
        ids, mask, type_ids = tokenization_ingraph.pack_segments(
            [tf.cast(tokens, tf.int32) for tokens in segments], seq_length, self.tokenizer.cls_id,
            self.tokenizer.sep_id)
        return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": type_ids}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, text):
        return self.bert_pack_inputs([self.tokenize(text)], self.seq_length)

    def signatures(self):
        """Traces bert_pack_inputs for one and two segments of words [B, (W), (P)] or tokens
        [B, (T)] at seq_length; `serving_default` is `__call__`."""
        words = tf.RaggedTensorSpec([None, None, None], tf.int32, ragged_rank=2)
        tokens = tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1)
        for spec in (words, tokens):
            for count in (1, 2):
                self.bert_pack_inputs.get_concrete_function([spec] * count, self.seq_length)
        return {"serving_default": self.__call__.get_concrete_function()}


def _save_together(modules, export_dir):
    """Saves {subdirectory: module} as one export: written in a temporary directory and moved
    into place when complete (cli.export_directory: only an earlier export is replaced).
    The models hold plain TensorFlow ops (no XLA kernels), so any TensorFlow runtime serves
    them."""
    with cli.export_directory(export_dir, parts=list(modules)) as temp, fused_kernels.fused_kernels(False):
        for name, module in modules.items():
            tf.saved_model.save(module, os.path.join(temp, name), signatures=module.signatures())


def export_encoder(export_dir, model, vocab_file, do_lower_case, seq_length):
    """Writes export_dir/encoder and export_dir/preprocess for a restored `modeling.BertModel`.

    Their assets are named as in TF Hub's models whatever the files were called here:
    assets/vocab.txt, and the encoder's assets/bert_config.json.
    """
    with tempfile.TemporaryDirectory() as temp:
        vocab_asset, config_asset = os.path.join(temp, "vocab.txt"), os.path.join(temp, "bert_config.json")
        try:
            shutil.copyfile(vocab_file, vocab_asset)
        except OSError as e:
            raise ValueError(f"cannot read --vocab_file={vocab_file}: {e.strerror or e}") from None
        with open(config_asset, "w") as f:
            f.write(model.config.to_json_string())
        try:
            preprocess = PreprocessExport(vocab_asset, do_lower_case, seq_length)  # checks the vocab first
        except ValueError as e:
            raise ValueError(str(e).replace(vocab_asset, vocab_file)) from None  # the user's file, not the copy
        if preprocess.tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(f"--vocab_file={vocab_file} has {preprocess.tokenizer.vocab_size} tokens but the BERT "
                             f"config only vocab_size {model.config.vocab_size}: use the vocab of the checkpoint")
        parent = os.path.dirname(export_dir.rstrip("/"))
        if parent:
            tf.io.gfile.makedirs(parent)
        _save_together({ENCODER_DIR: EncoderExport(model, vocab_asset, do_lower_case, config_asset),
                        PREPROCESS_DIR: preprocess}, export_dir)
    logging.info("Exported %s and %s. Use: preprocess = tf.saved_model.load(%r); encoder = "
                 "tf.saved_model.load(%r); encoder(preprocess(strings))['pooled_output']",
                 os.path.join(export_dir, ENCODER_DIR), os.path.join(export_dir, PREPROCESS_DIR),
                 os.path.join(export_dir, PREPROCESS_DIR), os.path.join(export_dir, ENCODER_DIR))


def main(_):
    logging.set_verbosity(logging.INFO)
    tokenization.validate_case_matches_checkpoint(FLAGS.do_lower_case, FLAGS.init_checkpoint)
    config = modeling.BertConfig.from_json_file(FLAGS.bert_config_file)
    modeling.validate_config(config)
    modeling.check_max_seq_length(config, FLAGS.max_seq_length)
    cli.check_export_dir(FLAGS.export_dir, [("init_checkpoint", FLAGS.init_checkpoint),
                                            ("vocab_file", FLAGS.vocab_file),
                                            ("bert_config_file", FLAGS.bert_config_file)], parts=EXPORT_PARTS)
    model = modeling.BertModel(config)
    result = modeling.load_checkpoint(FLAGS.init_checkpoint, model)
    if result.not_in_checkpoint:
        raise ValueError(f"--init_checkpoint={FLAGS.init_checkpoint} lacks {len(result.not_in_checkpoint)} encoder "
                         f"variables, e.g. {result.not_in_checkpoint[0]}: is it a BERT checkpoint in the original "
                         f"names?")
    export_encoder(FLAGS.export_dir, model, FLAGS.vocab_file, FLAGS.do_lower_case, FLAGS.max_seq_length)


if __name__ == "__main__":
    define_flags()
    cli.run(main, "export_encoder.py", ["bert_config_file", "init_checkpoint", "vocab_file", "export_dir"])
