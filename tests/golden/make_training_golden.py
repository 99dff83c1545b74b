"""Makes the training-trajectory golden files with the ORIGINAL code (run once, by hand).

Not part of the project or its tests. For each case below it builds the original's training
graph (bert-tensorflow 1.0.4 through tf.compat.v1 and the shims of original.py):
the task's loss from the original's own functions, then the original `optimization.
create_optimizer` (AdamWeightDecay, warmup + linear decay, `tf.clip_by_global_norm` at 1.0),
starts from a checkpoint written here by the original's Saver, and runs N steps on one batch
of identical examples, so that the order in which either side batches them cannot matter.
Dropout is off (config probabilities 0 and the original's `is_training=False` graph, which
also drops run_classifier's fixed 0.1 head dropout), so both sides compute the same function.

Outputs, next to this file, per case:
  training_<case>_start.ckpt.{index,data-00000-of-00001}   the starting weights (Saver)
  training_<case>.npz   the batch's features, `steps`, `warmup_steps`, `learning_rate`,
                        the global norm and learning rate of every step (`norms`, `rates`),
                        and after the last step every weight and Adam slot under its
                        checkpoint name (`final/<name>`, `final/<name>/adam_m`, ...)
  training_config.json  the BertConfig (vocab size is set per case from its vocab)
and, for the classifier and SQuAD cases, the text data the test gives the real scripts:
  training_classifier/train.tsv, training_squad_train.json

The step counts of the classifier and SQuAD cases come from the original's own arithmetic
(`int(examples / batch * epochs)`, `int(steps * warmup_proportion)`), so the tests also
check that the runners turn --num_train_epochs and --warmup_proportion into the same steps.

The original: see tests/golden/original.py.

    .venv/bin/python tests/golden/make_training_golden.py --original_dir=/tmp/orig
"""

import argparse
import json
import os
import sys

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from tests.golden import original

v1 = tf.compat.v1

CONFIG = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
              hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
              max_position_embeddings=64, type_vocab_size=2, initializer_range=0.02)
PRETRAINING_VOCAB_SIZE = 60
MAX_SEQ_LENGTH = {"pretraining": 24, "classifier": 32, "squad": 40}
MAX_PREDICTIONS = 4

# (case, runner, weight scale, batch size, learning rate, how many steps).
# A weight scale of 0.2 gives gradients whose global norm is well above 1; the classifier
# case fits its one example within two steps, after which its norm stays below 1: steps
# clipped and steps not clipped, warmup and decay, and the word-embedding table's gradient
# both dense + sparse (pretraining: lookup and tied decoder) and sparse only (fine-tuning).
CASES = {
    "pretraining": dict(scale=0.2, batch=4, learning_rate=1e-3, steps=5, warmup_steps=2),
    # 10 examples, batch 2, 1.3 epochs -> int(6.5) = 6 steps, warmup int(6 * 0.3) = 1.
    "classifier": dict(scale=0.2, batch=2, learning_rate=3e-3, examples=10, epochs=1.3,
                       warmup_proportion=0.3),
    # 7 examples, batch 2, 2.3 epochs -> int(8.05) = 8 steps, warmup int(8 * 0.5) = 4.
    "squad": dict(scale=0.02, batch=2, learning_rate=5e-3, examples=7, epochs=2.3,
                  warmup_proportion=0.5),
}

SQUAD_CONTEXT = "The lighthouse keeper on Harrow Point kept a logbook for thirty-one years."
SQUAD_QUESTION = "How long did the keeper keep a logbook?"
SQUAD_ANSWER = "thirty-one years"
CLASSIFIER_LINE = ("1\t4\t5\tPriya took the map, turned it around, and sighed.\t"
                   "\"We were supposed to go left at the big oak,\" she said.")


def load_original(original_dir):
    """(modeling, optimization, run_classifier, run_squad, run_pretraining functions, tokenization)."""
    v1.disable_v2_behavior()
    tf_shim = original.tf1_namespace()
    tf_shim.flags = v1.flags
    modeling = original.modeling(original_dir, tf_shim)
    tokenization = original.tokenization(original_dir)
    modules = dict(modeling=modeling, tokenization=tokenization, optimization=None)
    optimization_shim = original.tf1_namespace()
    optimization_shim.group = group_after_first
    optimization = original.load(original_dir, "optimization.py", optimization_shim, modules)
    record_learning_rate(optimization.AdamWeightDecayOptimizer)
    known_flags = set(v1.flags.FLAGS)
    run_classifier = original.load(original_dir, "run_classifier.py", tf_shim, modules)
    for name in set(v1.flags.FLAGS) - known_flags:  # run_squad defines the same flags again
        delattr(v1.flags.FLAGS, name)
    run_squad = original.load(original_dir, "run_squad.py", tf_shim, modules)
    run_squad.FLAGS(["run_squad.py", "--vocab_file=x", "--bert_config_file=x", "--output_dir=x"])
    pretraining = original.functions(
        original_dir, "run_pretraining.py", ["gather_indexes", "get_masked_lm_output",
                                             "get_next_sentence_output"], tf_shim, modeling)
    return modeling, optimization, run_classifier, run_squad, pretraining, tokenization


class RecordingOptimizer:
    """Keeps the learning-rate tensor that the original's create_optimizer hands its
    AdamWeightDecayOptimizer (the schedule is a local there)."""
    learning_rate = None


def record_learning_rate(optimizer_class):
    original_init = optimizer_class.__init__

    def init(self, learning_rate, **kwargs):
        RecordingOptimizer.learning_rate = learning_rate
        original_init(self, learning_rate=learning_rate, **kwargs)
    optimizer_class.__init__ = init


def group_after_first(first, *rest, **kwargs):
    """tf.group for the original create_optimizer's last line, `group(train_op,
    [global_step.assign(global_step + 1)])`, with the increment ordered after the update.

    Nothing orders the two in the original: in a TF1 graph the increment can run before an
    update reads the step for its learning rate (seen here: one run in two took a later
    step's rate). The intended and documented order is update, then increment.
    """
    if len(rest) == 1 and isinstance(rest[0], list):  # only that call passes a list
        for tensor in rest[0]:
            getattr(tensor, "op", tensor)._add_control_input(first)
    return v1.group(first, *rest, **kwargs)


def set_weights(session, rng, scale):
    """Every variable N(0, scale^2); LayerNorm gamma 1 + that, as a trained model's spread."""
    for variable in v1.global_variables():
        if variable.op.name == "global_step" or "adam_" in variable.op.name:
            continue  # the step and the Adam slots start at 0
        value = rng.normal(0.0, scale, size=variable.shape.as_list()).astype(np.float32)
        if variable.op.name.endswith("gamma"):
            value += 1.0
        variable.load(value, session)


def pretraining_batch(rng, batch):
    """One pretraining example (real length 19 of 24, 3 of 4 predictions), repeated."""
    length = 19
    ids = np.zeros(MAX_SEQ_LENGTH["pretraining"], np.int64)
    ids[:length] = rng.randint(5, PRETRAINING_VOCAB_SIZE, size=length)
    ids[[0, 1, 2]] = ids[3]  # a token that occurs several times: repeated lookup rows
    mask = np.zeros_like(ids)
    mask[:length] = 1
    segments = np.zeros_like(ids)
    segments[9:length] = 1
    example = dict(input_ids=ids, input_mask=mask, segment_ids=segments,
                   masked_lm_positions=np.array([2, 7, 15, 0]),
                   masked_lm_ids=np.array([ids[3], 11, 23, 0]),
                   masked_lm_weights=np.array([1.0, 1.0, 1.0, 0.0], np.float32),
                   next_sentence_labels=np.array([1]))
    return {k: np.stack([v] * batch) for k, v in example.items()}


def pretraining_loss(modeling, pretraining, config, feeds):
    _, get_masked_lm_output, get_next_sentence_output = pretraining
    model = modeling.BertModel(config=config, is_training=False, input_ids=feeds["input_ids"],
                               input_mask=feeds["input_mask"], token_type_ids=feeds["segment_ids"],
                               use_one_hot_embeddings=False)
    mlm_loss, _, _ = get_masked_lm_output(config, model.get_sequence_output(),
                                          model.get_embedding_table(), feeds["masked_lm_positions"],
                                          feeds["masked_lm_ids"], feeds["masked_lm_weights"])
    nsp_loss, _, _ = get_next_sentence_output(config, model.get_pooled_output(),
                                              feeds["next_sentence_labels"])
    return mlm_loss + nsp_loss


def squad_loss(run_squad, config, feeds):
    """run_squad's model_fn loss (a closure there): mean of the start and end cross-entropies."""
    start_logits, end_logits = run_squad.create_model(config, False, feeds["input_ids"], feeds["input_mask"],
                                                      feeds["segment_ids"], False)

    def cross_entropy(logits, positions):
        one_hot = v1.one_hot(positions, depth=MAX_SEQ_LENGTH["squad"], dtype=tf.float32)
        return -v1.reduce_mean(v1.reduce_sum(one_hot * v1.nn.log_softmax(logits, axis=-1), axis=-1))

    return (cross_entropy(start_logits, feeds["start_positions"]) +
            cross_entropy(end_logits, feeds["end_positions"])) / 2.0


def train(case, spec, features, build_loss, optimization, config_dict):
    """Runs the original's training op `steps` times; writes the start checkpoint and the npz."""
    graph = v1.Graph()
    with graph.as_default():
        feeds = {k: v1.constant(v.astype(np.float32 if v.dtype == np.float32 else np.int32))
                 for k, v in features.items()}
        loss = build_loss(feeds)
        train_op = optimization.create_optimizer(loss, spec["learning_rate"], spec["steps"],
                                                 spec["warmup_steps"], False)
        learning_rate = RecordingOptimizer.learning_rate
        tvars = v1.trainable_variables()
        norm = v1.global_norm(v1.gradients(loss, tvars))  # what clip_by_global_norm measures
        global_step = v1.train.get_global_step()
        start_vars = [v for v in v1.global_variables() if "adam_" not in v.op.name
                      and v.op.name != "global_step"]
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            set_weights(session, np.random.RandomState(7), spec["scale"])
            v1.train.Saver(start_vars).save(session, os.path.join(HERE, f"training_{case}_start.ckpt"),
                                            write_meta_graph=False, write_state=False)
            norms, rates, losses = [], [], []
            for _ in range(spec["steps"]):
                n, r, value = session.run([norm, learning_rate, loss])
                norms.append(n)
                rates.append(r)
                losses.append(value)
                session.run(train_op)
            assert session.run(global_step) == spec["steps"]
            final = {}
            for variable in v1.global_variables():
                name = variable.op.name
                if name != "global_step":
                    final["final/" + name] = session.run(variable)
    print(case, "norms", np.round(norms, 4), "rates", rates, "losses", np.round(losses, 4))
    np.savez(os.path.join(HERE, f"training_{case}.npz"), norms=np.array(norms), rates=np.array(rates),
             losses=np.array(losses), steps=spec["steps"], warmup_steps=spec["warmup_steps"],
             learning_rate=spec["learning_rate"], batch=spec["batch"],
             config=json.dumps(config_dict), **{"features/" + k: v for k, v in features.items()},
             **final)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    original.add_argument(parser)
    args = parser.parse_args()
    modeling, optimization, run_classifier, run_squad, pretraining, tokenization = load_original(
        args.original_dir)

    for case in ("pretraining",):
        spec = CASES[case]
        config_dict = dict(CONFIG, vocab_size=PRETRAINING_VOCAB_SIZE)
        config = modeling.BertConfig.from_dict(config_dict)
        features = pretraining_batch(np.random.RandomState(3), spec["batch"])
        train(case, spec, features, lambda feeds: pretraining_loss(modeling, pretraining, config, feeds),
              optimization, config_dict)

    # Classifier: MRPC layout, one line repeated; features from the original's own conversion.
    spec = dict(CASES["classifier"])
    data_dir = os.path.join(HERE, "training_classifier")
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, "train.tsv"), "w") as f:
        f.write("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + (CLASSIFIER_LINE + "\n") * spec["examples"])
    vocab_file = os.path.join(HERE, "classifier_mrpc", "vocab.txt")
    tokenizer = tokenization.FullTokenizer(vocab_file=vocab_file, do_lower_case=True)
    processor = run_classifier.MrpcProcessor()
    examples = processor.get_train_examples(data_dir)
    assert len(examples) == spec["examples"]
    spec["steps"] = int(len(examples) / spec["batch"] * spec["epochs"])
    spec["warmup_steps"] = int(spec["steps"] * spec["warmup_proportion"])
    converted = run_classifier.convert_examples_to_features(examples[:spec["batch"]], processor.get_labels(),
                                                            MAX_SEQ_LENGTH["classifier"], tokenizer)
    features = {name: np.array([getattr(f, attr) for f in converted], np.int64) for name, attr in (
        ("input_ids", "input_ids"), ("input_mask", "input_mask"), ("segment_ids", "segment_ids"),
        ("label_ids", "label_id"))}
    config_dict = dict(CONFIG, vocab_size=len(tokenizer.vocab))
    config = modeling.BertConfig.from_dict(config_dict)
    train("classifier", spec, features, lambda feeds: run_classifier.create_model(
        config, False, feeds["input_ids"], feeds["input_mask"], feeds["segment_ids"], feeds["label_ids"],
        2, False)[0], optimization, config_dict)

    # SQuAD 1.1: one short context (one window), one question asked `examples` times.
    spec = dict(CASES["squad"])
    paragraph = dict(context=SQUAD_CONTEXT, qas=[
        dict(id=f"q{i}", question=SQUAD_QUESTION, answers=[dict(text=SQUAD_ANSWER,
                                                                  answer_start=SQUAD_CONTEXT.index(SQUAD_ANSWER))])
        for i in range(spec["examples"])])
    train_file = os.path.join(HERE, "training_squad_train.json")
    with open(train_file, "w") as f:
        json.dump({"version": "1.1", "data": [{"title": "t", "paragraphs": [paragraph]}]}, f, indent=1)
    tokenizer = tokenization.FullTokenizer(vocab_file=os.path.join(HERE, "squad_vocab.txt"), do_lower_case=True)
    examples = run_squad.read_squad_examples(train_file, is_training=True)
    spec["steps"] = int(len(examples) / spec["batch"] * spec["epochs"])
    spec["warmup_steps"] = int(spec["steps"] * spec["warmup_proportion"])
    converted = []
    run_squad.convert_examples_to_features(examples[:spec["batch"]], tokenizer, MAX_SEQ_LENGTH["squad"],
                                           doc_stride=128,
                                           max_query_length=16, is_training=True, output_fn=converted.append)
    assert len(converted) == spec["batch"], "the context must fit one window"
    features = {name: np.array([getattr(f, name) for f in converted], np.int64) for name in (
        "input_ids", "input_mask", "segment_ids", "start_position", "end_position")}
    features["start_positions"] = features.pop("start_position")
    features["end_positions"] = features.pop("end_position")
    config_dict = dict(CONFIG, vocab_size=len(tokenizer.vocab))
    config = modeling.BertConfig.from_dict(config_dict)
    train("squad", spec, features, lambda feeds: squad_loss(run_squad, config, feeds), optimization,
          config_dict)


if __name__ == "__main__":
    main()
