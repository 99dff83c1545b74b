"""Writes the parity evidence for extract_features.py by running the ORIGINAL script.

Not part of the project and not run by the tests. It executes the original
`extract_features.py` (bert-tensorflow 1.0.4, same code as the GitHub HEAD) unchanged,
main() and its JSON writing included, on TF1 graph mode through tf.compat.v1. TF 2.21 has
no tf.estimator, so `tf.estimator.tpu.TPUEstimator` is replaced by a small stand-in that
does what the CPU fallback does for predict: builds the input_fn's dataset and the
model_fn's graph, initialises (init_from_checkpoint already ran inside the model_fn) and
yields one example at a time. tf.contrib's layer_norm and tf.layers.dense come from the
shims of original.py. The original tokenization's `preserve_token` reads a
flag of the 1.0.4 wheel only; it is patched to return False, as at HEAD.

Outputs, next to this file:
  extract_tiny_vocab.txt                       a 60-token vocab for the input below
  extract_tiny_config.json                     L=4, H=16, A=2, I=24
  extract_tiny.ckpt.{index,data-00000-of-00001} random weights, written by tf.train.Saver
  extract_input.txt                            single lines, pairs, empty, "|||", long lines
  extract_golden.jsonl                         the original's output (max_seq_length=16,
                                               batch_size=3, layers -1,-2,-3,-4)

To regenerate (the original: see tests/golden/original.py):
  .venv/bin/python tests/golden/make_extract_features_golden.py --original_dir=/tmp/orig
"""

import argparse
import os
import sys

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from tests.golden import make_modeling_golden, original

v1 = tf.compat.v1

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", "jump", "##s",
    "##ed", "over", "lazy", "dog", ".", ",", "|", "?", "!", "hello", "world", "is", "this",
    "jack", "##son", "##ville", "no", "it", "not", "a", "b", "c", "un", "##want", "na",
    "##ive", "日", "本", "x", "##y", "##z", "carriage", "return", "##ing", "run", "##n", "d",
    "e", "f", "g", "'", "s", "cafe", "-", "good", "bad", "day", "night", "and",
]
CONFIG = dict(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
              intermediate_size=24, hidden_act="gelu", hidden_dropout_prob=0.1,
              attention_probs_dropout_prob=0.1, max_position_embeddings=32, type_vocab_size=2,
              initializer_range=0.02)
MAX_SEQ_LENGTH, BATCH_SIZE = 16, 3

# Ends without a newline; "\r" inside a line is not a line break for the original's reader.
INPUT_LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "Is this Jacksonville? ||| No, it is not.",
    "|||",
    "a ||| b ||| c",
    "the quick brown fox " * 6,
    "the quick brown fox jumps over the lazy dog ||| hello world, hello world, good day",
    "  na\u00efve  Hello,WORLD!!  ",
    "\u65e5\u672c unwanted xyzzy running",
    "hello|||world",
    "   ",
    "c ||| ",
    "hello\rworld",
    "caf\u00e9 - good night and bad day ||| it's a dog",
    "Dog.",
]


def write_random_checkpoint(modeling, prefix):
    """The original BertModel with N(0, 0.2^2) weights (gamma around 1), saved by its Saver."""
    with v1.Graph().as_default():
        ids = v1.zeros([1, 4], v1.int32)
        modeling.BertModel(config=modeling.BertConfig.from_dict(CONFIG), is_training=False,
                           input_ids=ids)
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            make_modeling_golden.randomize_all_variables(session, np.random.RandomState(7))
            v1.train.Saver(v1.global_variables()).save(session, prefix, write_meta_graph=False,
                                                       write_state=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    original.add_argument(parser)
    parser.add_argument("--output_dir", default=HERE)
    args = parser.parse_args()
    out = lambda name: os.path.join(args.output_dir, name)  # noqa: E731

    v1.disable_v2_behavior()
    tf_shim = original.estimator_namespace()
    modeling = original.modeling(args.original_dir, tf_shim)
    tokenization = original.tokenization(args.original_dir)
    extract_features = original.load(args.original_dir, "extract_features.py", tf_shim,
                                     {"modeling": modeling, "tokenization": tokenization})

    with open(out("extract_tiny_vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(token + "\n" for token in VOCAB))
    with open(out("extract_tiny_config.json"), "w") as f:
        f.write(modeling.BertConfig.from_dict(CONFIG).to_json_string())
    with open(out("extract_input.txt"), "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(INPUT_LINES))
    write_random_checkpoint(modeling, out("extract_tiny.ckpt"))

    extract_features.FLAGS([
        "extract_features.py", "--input_file=" + out("extract_input.txt"),
        "--output_file=" + out("extract_golden.jsonl"),
        "--vocab_file=" + out("extract_tiny_vocab.txt"),
        "--bert_config_file=" + out("extract_tiny_config.json"),
        "--init_checkpoint=" + out("extract_tiny.ckpt"),
        "--max_seq_length=%d" % MAX_SEQ_LENGTH, "--batch_size=%d" % BATCH_SIZE,
    ])
    extract_features.main(None)
    with open(out("extract_golden.jsonl")) as f:
        print("%d lines, %d bytes" % (len(f.readlines()), os.path.getsize(out("extract_golden.jsonl"))))


if __name__ == "__main__":
    main()
