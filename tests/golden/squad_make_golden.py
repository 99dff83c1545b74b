"""Makes the run_squad golden files: inputs written here, outputs by the ORIGINAL code (run once, by hand).

Not part of the project or its tests. Writes, next to this file:
  squad_v1.json, squad_v2.json       small SQuAD-format sets built from sample_text.txt (ours)
  squad_vocab.txt                    the real uncased vocab cut down to the pieces these files
                                     use (WordPiece output is unchanged: every longest match
                                     of the full vocab is kept)
  squad_tiny_config.json             L=2, H=32 BertConfig over that vocab, 64 positions
  squad_tiny.ckpt.*                  random weights (original names) from the original's Saver
and, from the ORIGINAL run_squad.py (bert-tensorflow 1.0.4 through tf.compat.v1, allowed in
tests/golden only), for each version v1 / v2 at max_seq_length 64, doc_stride 16,
max_query_length 12:
  squad_<v>_train.tf_record          training features (examples pre-shuffled by Random(12345))
  squad_<v>_eval_features.json       prediction features with tokens and the alignment maps
  squad_<v>_model.npz                the original model's start/end logits for those features
  squad_<v>_model_{predictions,nbest_predictions,null_odds}.json
                                     write_predictions on the model's logits (defaults)
  squad_<v>_fixed.npz                seeded random logits, and the settings used
  squad_<v>_fixed_{predictions,nbest_predictions,null_odds}.json
                                     write_predictions on those logits (n_best 5, max answer 5)

The original: see tests/golden/original.py.

    .venv/bin/python tests/golden/squad_make_golden.py --original_dir=/tmp/orig
"""

import argparse
import collections
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAX_SEQ_LENGTH, DOC_STRIDE, MAX_QUERY_LENGTH = 64, 16, 12
CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
              hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
              max_position_embeddings=64, type_vocab_size=2, initializer_range=0.02)
FIXED = dict(n_best_size=5, max_answer_length=5, null_score_diff_threshold=-0.5)

# --- Inputs (ours) ---------------------------------------------------------------------------

EXTRA_PARAGRAPH = ("The Caf\u00e9 Z\u00fcrich opened in 1884 beside the old harbour.\u202fIts owner, "
                   "J\u00fcrgen M\u00fcller, served cr\u00eapes to Japanese sailors until 1921.\tToday "
                   "the building (1884\u20131921) is a small\n museum.")

# (paragraph index, question, answer text or None for impossible, occurrence of the answer)
QUESTIONS = [
    (0, "How long did the keeper keep a logbook?", "thirty-one years", 0),
    (0, "How many steps did he climb every evening?", "ninety-four", 0),
    (0, "In which winter did the storm come?", "1962", 0),
    (0, "What did the storm tear from the lantern room?", "copper roof", 0),
    (0, "What did the keeper hold over the lens during the night of the storm while the wind "
        "howled around him?", "a tarpaulin", 0),
    (0, "What colour was the lighthouse?", None, 0),
    (1, "How much sap makes a liter of syrup?", "roughly forty liters", 0),
    (1, "Which province produces most of Canada's syrup?", "Quebec", 0),
    (1, "What share of the world's maple syrup comes from Canada?", "70%", 0),
    (1, "When does sap flow best?", "early spring", 0),
    (1, "Who invented maple syrup?", None, 0),
    (2, "When will the bridge close?", "March 4", 0),
    (2, "How much will the project cost?", "$2.3 million", 0),
    (2, "Where will commuters be sent?", "Riverside Avenue", 0),
    (2, "Which bus routes change?", "12 and 15", 0),
    (2, "What was found in the girders?", "corrosion", 0),
    (3, "What did Tom get for his birthday?", "knitted scarf", 0),
    (3, "Which subject is hard?", "chemistry", 0),
    (3, "When might Margaret visit?", "Easter", 0),
    (4, "How many hearts does an octopus have?", "three", 0),
    (4, "What share of their neurons is in the arms?", "two-thirds", 0),
    (4, "How long do most octopuses live?", "one to two years", 0),
    (-1, "Who owned the caf\u00e9?", "J\u00fcrgen M\u00fcller", 0),
    (-1, "When did it open?", "1884", 0),
    (-1, "Who ate the cr\u00eapes?", "Japan", 0),  # a piece of the word "Japanese"
    (-1, "What is the building today?", "museum", 0),
    (-1, "How much did a coffee cost?", None, 0),
]
# Answers whose offset does not match their text: the original drops them in training.
MISPLACED = [(2, "What is the new bridge made of?", "steel", 17)]


def sample_paragraphs(count):
    with open(os.path.join(ROOT, "sample_text.txt"), encoding="utf-8") as f:
        documents = [d.strip().split("\n") for d in f.read().split("\n\n") if d.strip()]
    return [" ".join(lines) for lines in documents[:count]]


def build_squad(version_2):
    paragraphs = sample_paragraphs(5) + [EXTRA_PARAGRAPH]
    qas_by_paragraph = collections.defaultdict(list)
    for n, (p, question, answer, occurrence) in enumerate(QUESTIONS + MISPLACED):
        p = p % len(paragraphs)
        context = paragraphs[p]
        qa = {"id": f"q{n:03d}", "question": question}
        if answer is None:
            if not version_2:
                continue
            qa.update(answers=[], is_impossible=True)
        else:
            if (p, question, answer, occurrence) in MISPLACED:
                start = occurrence  # here: the wrong offset itself
            else:
                start = -1
                for _ in range(occurrence + 1):
                    start = context.find(answer, start + 1)
                assert start >= 0, answer
            qa["answers"] = [{"text": answer, "answer_start": start}]
            if version_2:
                qa["is_impossible"] = False
        qas_by_paragraph[p].append(qa)
    data = [{"title": "sample", "paragraphs": [
        {"context": paragraphs[p], "qas": qas_by_paragraph[p]} for p in range(len(paragraphs))]}]
    return {"version": "v2.0" if version_2 else "1.1", "data": data}


def cut_vocab(full_vocab_file, texts, tokenizer):
    """The full vocab's tokens that `texts` need, in the full vocab's order, plus specials."""
    used = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    for text in texts:
        used.update(tokenizer.tokenize(text))
    with open(full_vocab_file, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    return [t for t in tokens if t in used]


# --- The original code -----------------------------------------------------------------------

def load_original(original_dir):
    """The original run_squad module, its modeling and tokenization, and make_modeling_golden."""
    sys.path.insert(0, ROOT)
    from tests.golden import make_modeling_golden as mmg
    from tests.golden import original
    return (*original.run_squad(original_dir), mmg)


def feature_json(feature):
    return dict(unique_id=feature.unique_id, example_index=feature.example_index,
                doc_span_index=feature.doc_span_index, tokens=feature.tokens,
                token_to_orig_map=sorted(feature.token_to_orig_map.items()),
                token_is_max_context=sorted(feature.token_is_max_context.items()),
                input_ids=feature.input_ids, input_mask=feature.input_mask, segment_ids=feature.segment_ids)


def original_logits(orig, modeling, mmg, features, config, checkpoint_prefix, rng):
    """Runs the original create_model on `features`; writes the checkpoint if it is missing."""
    import numpy as np
    v1 = mmg.v1
    graph = v1.Graph()
    with graph.as_default():
        ids = v1.constant([f.input_ids for f in features], v1.int32)
        mask = v1.constant([f.input_mask for f in features], v1.int32)
        segments = v1.constant([f.segment_ids for f in features], v1.int32)
        start, end = orig.create_model(config, False, ids, mask, segments, False)
        saver = v1.train.Saver(v1.global_variables())
        with v1.Session() as session:
            if os.path.exists(checkpoint_prefix + ".index"):
                saver.restore(session, checkpoint_prefix)
            else:
                session.run(v1.global_variables_initializer())
                mmg.randomize_all_variables(session, rng)
                saver.save(session, checkpoint_prefix, write_meta_graph=False, write_state=False)
            start, end = session.run([start, end])
    return np.asarray(start, np.float32), np.asarray(end, np.float32)


def write_original_predictions(orig, examples, features, start, end, prefix, n_best_size, max_answer_length,
                               threshold):
    results = [orig.RawResult(unique_id=f.unique_id, start_logits=[float(x) for x in s],
                              end_logits=[float(x) for x in e]) for f, s, e in zip(features, start, end)]
    orig.FLAGS.null_score_diff_threshold = threshold
    orig.write_predictions(examples, features, results, n_best_size, max_answer_length, True,
                           prefix + "_predictions.json", prefix + "_nbest_predictions.json",
                           prefix + "_null_odds.json")


def main(original_dir):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    orig, modeling, orig_tokenization, mmg = load_original(original_dir)
    mmg.v1.disable_v2_behavior()
    from tests import helpers

    squads = {"v1": build_squad(False), "v2": build_squad(True)}
    texts = []
    for squad in squads.values():
        for paragraph in squad["data"][0]["paragraphs"]:
            texts.append(paragraph["context"])
            for qa in paragraph["qas"]:
                texts.append(qa["question"])
                texts.extend(a["text"] for a in qa["answers"])
    full = orig_tokenization.FullTokenizer(helpers.real_vocab_file(), do_lower_case=True)
    vocab = cut_vocab(helpers.real_vocab_file(), texts, full)
    vocab_file = os.path.join(HERE, "squad_vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in vocab))
    tokenizer = orig_tokenization.FullTokenizer(vocab_file, do_lower_case=True)
    for text in texts:
        assert tokenizer.tokenize(text) == full.tokenize(text), text
    config = modeling.BertConfig.from_dict(dict(CONFIG, vocab_size=len(vocab)))
    with open(os.path.join(HERE, "squad_tiny_config.json"), "w") as f:
        f.write(config.to_json_string())
    checkpoint = os.path.join(HERE, "squad_tiny.ckpt")

    for version, squad in squads.items():
        orig.FLAGS.version_2_with_negative = version == "v2"
        input_file = os.path.join(HERE, f"squad_{version}.json")
        with open(input_file, "w", encoding="utf-8") as f:
            json.dump(squad, f, indent=1)
        prefix = os.path.join(HERE, f"squad_{version}")

        train_examples = orig.read_squad_examples(input_file, is_training=True)
        random.Random(12345).shuffle(train_examples)
        writer = orig.FeatureWriter(prefix + "_train.tf_record", is_training=True)
        orig.convert_examples_to_features(train_examples, tokenizer, MAX_SEQ_LENGTH, DOC_STRIDE, MAX_QUERY_LENGTH,
                                          True, writer.process_feature)
        writer.close()

        examples = orig.read_squad_examples(input_file, is_training=False)
        features = []
        orig.convert_examples_to_features(examples, tokenizer, MAX_SEQ_LENGTH, DOC_STRIDE, MAX_QUERY_LENGTH,
                                          False, features.append)
        with open(prefix + "_eval_features.json", "w") as f:
            json.dump(dict(num_train_examples=len(train_examples), num_train_features=writer.num_features,
                           features=[feature_json(x) for x in features]), f)

        start, end = original_logits(orig, modeling, mmg, features, config, checkpoint, np.random.RandomState(3))
        np.savez_compressed(prefix + "_model.npz", start_logits=start, end_logits=end)
        write_original_predictions(orig, examples, features, start, end, prefix + "_model", 20, 30, 0.0)

        # Seeded logits; v2 skips seeds whose n-best is all null somewhere (the original crashes there).
        seed = 11 if version == "v1" else 12
        while True:
            rng = np.random.RandomState(seed)
            start = rng.normal(0, 3, size=start.shape).astype(np.float32)
            end = rng.normal(0, 3, size=end.shape).astype(np.float32)
            try:
                write_original_predictions(orig, examples, features, start, end, prefix + "_fixed",
                                           FIXED["n_best_size"], FIXED["max_answer_length"],
                                           FIXED["null_score_diff_threshold"])
                break
            except AttributeError:
                seed += 100
        np.savez_compressed(prefix + "_fixed.npz", start_logits=start, end_logits=end, seed=seed, **FIXED)
        print(version, len(train_examples), "training examples,", writer.num_features, "training features,",
              len(examples), "questions,", len(features), "prediction features")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sys.path.insert(0, ROOT)
    from tests.golden import original
    original.add_argument(parser)
    main(parser.parse_args().original_dir)
