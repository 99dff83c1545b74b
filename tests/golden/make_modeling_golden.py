"""Writes the parity evidence for modeling.py by running the ORIGINAL google-research/bert code.

Not part of the project and not run by the tests: it imports the original `modeling.py`,
`run_pretraining.py`, `run_classifier.py` and `run_squad.py` (bert-tensorflow 1.0.4 on
PyPI, the same math and variable names as the GitHub HEAD) on TF1 graph mode through
tf.compat.v1, with two shims for what TF 2.21 no longer has (tf.contrib's layer_norm and
tf.layers.dense, re-expressed with the same ops and variable names).

Outputs, next to this file:
  modeling_tiny.ckpt.{index,data-00000-of-00001}  random weights, original names, written by
                                                  the original's tf.train.Saver
  modeling_tiny_config.json                       the BertConfig
  modeling_tiny_golden.npz                        inputs and every output of the original

To regenerate (the original: see tests/golden/original.py):
  .venv/bin/python tests/golden/make_modeling_golden.py --original_dir=/tmp/orig
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from tests.golden import original
from tests.golden.original import tf1_namespace, v1  # noqa: F401  (the shims, for the other scripts)

# L=2, H=32, A=4, I=37: tiny, with a head size (8) and an intermediate size that differ.
CONFIG = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=37, hidden_act="gelu", hidden_dropout_prob=0.1,
              attention_probs_dropout_prob=0.1, max_position_embeddings=40, type_vocab_size=3,
              initializer_range=0.02)
BATCH, SEQ, PREDICTIONS, NUM_LABELS = 3, 11, 4, 5


def make_inputs(rng):
    lengths = [SEQ, 7, 4]  # one full row, two padded rows
    input_ids = rng.randint(1, CONFIG["vocab_size"], size=(BATCH, SEQ)).astype(np.int32)
    input_mask = np.zeros((BATCH, SEQ), np.int32)
    token_type_ids = np.zeros((BATCH, SEQ), np.int32)
    for b, n in enumerate(lengths):
        input_mask[b, :n] = 1
        input_ids[b, n:] = 0
        token_type_ids[b, n // 2:n] = 1
    token_type_ids[0, -2:] = 2  # use the third token type too
    positions = np.zeros((BATCH, PREDICTIONS), np.int32)
    weights = np.zeros((BATCH, PREDICTIONS), np.float32)
    for b, n in enumerate(lengths):
        count = min(PREDICTIONS, n - 2)
        positions[b, :count] = np.sort(rng.choice(np.arange(1, n), count, replace=False))
        weights[b, :count] = 1.0
    return dict(
        input_ids=input_ids, input_mask=input_mask, token_type_ids=token_type_ids,
        masked_lm_positions=positions,
        masked_lm_ids=rng.randint(1, CONFIG["vocab_size"],
                                  size=(BATCH,
                                        PREDICTIONS)).astype(np.int32), masked_lm_weights=weights,
        next_sentence_labels=np.array([0, 1, 1], np.int32), label_ids=np.array([4, 0, 2], np.int32),
        start_positions=np.array([3, 1, 0], np.int32), end_positions=np.array([5, 6, 0], np.int32))


def randomize_all_variables(session, rng):
    """Overwrites every variable with N(0, 0.2^2) (biases, gamma, beta included).

    Larger than the 0.02 initializer so attention is far from uniform and every bias,
    gamma and beta matters to the outputs being compared.
    """
    for variable in v1.global_variables():
        shape = variable.shape.as_list()
        value = rng.normal(0.0, 0.2, size=shape).astype(np.float32)
        if variable.op.name.endswith("gamma"):
            value += 1.0
        variable.load(value, session)


def run_pretraining_graph(modeling, original_dir, tf_shim, inputs, checkpoint_prefix):
    """BertModel + MLM + NSP heads (+ the fine-tuning head variables); saves the checkpoint."""
    gather_indexes, get_masked_lm_output, get_next_sentence_output = original.functions(
        original_dir, "run_pretraining.py",
        ["gather_indexes", "get_masked_lm_output", "get_next_sentence_output"], tf_shim, modeling)
    config = modeling.BertConfig.from_dict(CONFIG)
    graph = v1.Graph()
    with graph.as_default():
        feeds = {k: v1.constant(v) for k, v in inputs.items()}
        model = modeling.BertModel(config=config, is_training=False, input_ids=feeds["input_ids"],
                                   input_mask=feeds["input_mask"],
                                   token_type_ids=feeds["token_type_ids"],
                                   use_one_hot_embeddings=False)
        mlm_loss, mlm_per_example, mlm_log_probs = get_masked_lm_output(
            config, model.get_sequence_output(), model.get_embedding_table(),
            feeds["masked_lm_positions"], feeds["masked_lm_ids"], feeds["masked_lm_weights"])
        nsp_loss, nsp_per_example, nsp_log_probs = get_next_sentence_output(
            config, model.get_pooled_output(), feeds["next_sentence_labels"])
        # The fine-tuning heads' variables, named as run_classifier / run_squad create them.
        v1.get_variable("output_weights", [NUM_LABELS, CONFIG["hidden_size"]])
        v1.get_variable("output_bias", [NUM_LABELS])
        v1.get_variable("cls/squad/output_weights", [2, CONFIG["hidden_size"]])
        v1.get_variable("cls/squad/output_bias", [2])
        fetches = dict(embedding_output=model.get_embedding_output(),
                       sequence_output=model.get_sequence_output(),
                       pooled_output=model.get_pooled_output(), masked_lm_loss=mlm_loss,
                       masked_lm_per_example_loss=mlm_per_example,
                       masked_lm_log_probs=mlm_log_probs, next_sentence_loss=nsp_loss,
                       next_sentence_per_example_loss=nsp_per_example,
                       next_sentence_log_probs=nsp_log_probs)
        for i, layer in enumerate(model.get_all_encoder_layers()):
            fetches["encoder_layer_%d" % i] = layer
        saver = v1.train.Saver(v1.global_variables())
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            randomize_all_variables(session, np.random.RandomState(1))
            outputs = session.run(fetches)
            saver.save(session, checkpoint_prefix, write_meta_graph=False, write_state=False)
    return outputs


def run_finetuning_graph(modeling, create_model, args, checkpoint_prefix):
    """Builds one original create_model, initialises it from the checkpoint, runs it."""
    graph = v1.Graph()
    with graph.as_default():
        outputs = create_model(*args())
        trainable = v1.trainable_variables()
        assignment_map, _ = modeling.get_assignment_map_from_checkpoint(
            trainable, checkpoint_prefix)
        assert len(assignment_map) == len(trainable), "a variable missed the checkpoint"
        v1.train.init_from_checkpoint(checkpoint_prefix, assignment_map)
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            return session.run(outputs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    original.add_argument(parser)
    parser.add_argument("--output_dir", default=HERE)
    args = parser.parse_args()

    v1.disable_v2_behavior()
    tf_shim = tf1_namespace()
    modeling = original.modeling(args.original_dir, tf_shim)
    inputs = make_inputs(np.random.RandomState(0))
    prefix = os.path.join(args.output_dir, "modeling_tiny.ckpt")
    golden = run_pretraining_graph(modeling, args.original_dir, tf_shim, inputs, prefix)
    config = modeling.BertConfig.from_dict(CONFIG)
    feeds = lambda: [v1.constant(inputs[k]) for k in ("input_ids", "input_mask", "token_type_ids")]

    (create_classifier,) = original.functions(args.original_dir, "run_classifier.py",
                                              ["create_model"], tf_shim, modeling)
    loss, per_example, logits, probabilities = run_finetuning_graph(
        modeling, create_classifier,
        lambda: [config, False] + feeds() + [v1.constant(inputs["label_ids"]), NUM_LABELS, False],
        prefix)
    golden.update(classifier_loss=loss, classifier_per_example_loss=per_example,
                  classifier_logits=logits, classifier_probabilities=probabilities)

    (create_squad,) = original.functions(args.original_dir, "run_squad.py", ["create_model"],
                                         tf_shim, modeling)
    start_logits, end_logits = run_finetuning_graph(modeling, create_squad,
                                                    lambda: [config, False] + feeds() + [False],
                                                    prefix)
    golden.update(squad_start_logits=start_logits, squad_end_logits=end_logits)

    np.savez_compressed(os.path.join(args.output_dir, "modeling_tiny_golden.npz"), **{
        "input/" + k: v
        for k, v in inputs.items()
    }, **{
        "output/" + k: np.asarray(v)
        for k, v in golden.items()
    })
    with open(os.path.join(args.output_dir, "modeling_tiny_config.json"), "w") as f:
        f.write(config.to_json_string())
    for name in sorted(golden):
        print("%-36s %s" % (name, np.asarray(golden[name]).shape))


if __name__ == "__main__":
    main()
