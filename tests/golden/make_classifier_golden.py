"""Makes the run_classifier golden files with the ORIGINAL code (run once, by hand).

Not part of the project or its tests. It runs the original run_classifier.py
(bert-tensorflow 1.0.4, TF1) through tf.compat.v1 with the shims of original.py, on the MRPC-layout
data in classifier_mrpc/:

  classifier_mrpc_eval.tf_record, classifier_mrpc_predict.tf_record
      the original's file_based_convert_examples_to_features output for dev.tsv / test.tsv
  classifier_tiny.ckpt.*, classifier_tiny_config.json
      random weights (encoder + output_weights/output_bias) saved by the original's Saver
  classifier_mrpc_test_results.tsv
      the original model's probabilities for test.tsv, one line per example, each value
      with str() of a numpy float32, tab-separated (the original's test_results.tsv)
  classifier_mrpc_dev_probabilities.npy
      the same for dev.tsv (for the eval metrics)

The original: see tests/golden/original.py.

    .venv/bin/python tests/golden/make_classifier_golden.py --original_dir=/tmp/orig
"""

import argparse
import json
import os
import sys

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from tests.golden import make_modeling_golden as shims
from tests.golden import original

v1 = tf.compat.v1
DATA_DIR = os.path.join(HERE, "classifier_mrpc")
MAX_SEQ_LENGTH = 32


def config_dict(vocab_size):
    return dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, hidden_act="gelu", hidden_dropout_prob=0.1,
                attention_probs_dropout_prob=0.1, max_position_embeddings=40, type_vocab_size=2,
                initializer_range=0.02)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    original.add_argument(parser)
    args = parser.parse_args()
    v1.disable_v2_behavior()
    tf_shim = original.tf1_namespace()
    tf_shim.flags = v1.flags
    modeling = original.modeling(args.original_dir, tf_shim)
    tokenization = original.tokenization(args.original_dir)
    rc = original.load(args.original_dir, "run_classifier.py", tf_shim,
                       dict(modeling=modeling, tokenization=tokenization, optimization=None))

    vocab_file = os.path.join(DATA_DIR, "vocab.txt")
    tokenizer = tokenization.FullTokenizer(vocab_file=vocab_file, do_lower_case=True)
    config = modeling.BertConfig.from_dict(config_dict(len(tokenizer.vocab)))
    processor = rc.MrpcProcessor()
    labels = processor.get_labels()
    splits = {"eval": processor.get_dev_examples(DATA_DIR), "predict": processor.get_test_examples(DATA_DIR)}
    features = {}
    for name, examples in splits.items():
        rc.file_based_convert_examples_to_features(examples, labels, MAX_SEQ_LENGTH, tokenizer,
                                                   os.path.join(HERE, f"classifier_mrpc_{name}.tf_record"))
        features[name] = rc.convert_examples_to_features(examples, labels, MAX_SEQ_LENGTH, tokenizer)

    prefix = os.path.join(HERE, "classifier_tiny.ckpt")
    probabilities = {}
    for index, name in enumerate(("eval", "predict")):
        feats = features[name]
        graph = v1.Graph()
        with graph.as_default():
            const = lambda attr: v1.constant(np.array([getattr(f, attr) for f in feats], np.int32))  # noqa: E731
            _, _, _, probs = rc.create_model(config, False, const("input_ids"), const("input_mask"),
                                             const("segment_ids"), const("label_id"), len(labels), False)
            with v1.Session() as session:
                session.run(v1.global_variables_initializer())
                if index == 0:
                    shims.randomize_all_variables(session, np.random.RandomState(5))
                    v1.train.Saver(v1.global_variables()).save(session, prefix, write_meta_graph=False,
                                                               write_state=False)
                else:
                    v1.train.Saver(v1.global_variables()).restore(session, prefix)
                probabilities[name] = session.run(probs)
    np.save(os.path.join(HERE, "classifier_mrpc_dev_probabilities.npy"), probabilities["eval"])
    with open(os.path.join(HERE, "classifier_mrpc_test_results.tsv"), "w") as writer:
        for row in probabilities["predict"]:
            writer.write("\t".join(str(p) for p in row) + "\n")
    with open(os.path.join(HERE, "classifier_tiny_config.json"), "w") as f:
        f.write(json.dumps(config_dict(len(tokenizer.vocab)), indent=2, sort_keys=True) + "\n")
    print({k: v.shape for k, v in probabilities.items()})


if __name__ == "__main__":
    main()
