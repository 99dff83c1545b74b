"""Makes the Model Garden and TF Hub fixtures of tests/test_convert_model_garden.py.

Runs in a throwaway environment with Model Garden, never in the project's (Model Garden is
Keras 2, tf-keras):

    python3.11 -m venv /tmp/mg
    /tmp/mg/bin/pip install --no-deps -r requirements-test.txt tf-keras==2.21.0 \
        tf-models-official==2.20.0 gin-config==0.5.0 scipy==1.17.1 PyYAML==6.0.4
    /tmp/mg/bin/python tests/golden/make_model_garden_golden.py

Writes, with random weights (every weight, LayerNorm and biases too) and a tiny config
(L=2, H=32, 4 heads):
  model_garden_tiny/         Model Garden's BertEncoder (the network of its BERT
                             checkpoints) as tf.train.Checkpoint(encoder=...), with
                             bert_config.json and vocab.txt as in its released directories;
  model_garden_v2_tiny/      BertEncoderV2 (its newer encoder class), checkpoint only;
  tf_hub_tiny/               model_garden_tiny exported by Model Garden's own TF Hub exporter
                             (export_tfhub_lib.export_model), as TF Hub's BERT encoders are;
                             only variables/ and assets/ are kept, what the converter reads
                             (saved_model.pb alone is 864 KB, over the fixtures' size budget);
  model_garden_golden.npz    sequence and pooled outputs of each on fixed inputs, from Model
                             Garden's encoders and from the SavedModel loaded back.
"""

import json
import os
import shutil

import numpy as np
from official.legacy.bert import configs
from official.nlp.modeling import networks
from official.nlp.tools import export_tfhub_lib
import tensorflow as tf
import tf_keras

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", "jump", "##s", "over",
         "lazy", "dog", ".", ",", "!", "hello", "world"] + [f"w{i}" for i in range(31)]
CONFIG = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=37, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
              max_position_embeddings=24, type_vocab_size=2, initializer_range=0.02)


def inputs():
    rng = np.random.RandomState(0)
    ids = rng.randint(5, len(VOCAB), size=(2, 11)).astype(np.int32)
    ids[:, 0] = 2
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    types = np.zeros_like(ids)
    types[:, 5:] = 1
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": types}


def randomize(encoder, seed):
    rng = np.random.RandomState(seed)
    for weight in encoder.weights:
        scale = 0.5 if len(weight.shape) == 1 else 0.2
        weight.assign(rng.normal(size=weight.shape).astype(np.float32) * scale)


def write_directory(name, encoder, with_config):
    directory = os.path.join(HERE, name)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    # save(), as Model Garden does (with save_counter, which its exporter insists on), then the
    # name of its released directories.
    saved = tf.train.Checkpoint(encoder=encoder).save(os.path.join(directory, "bert_model.ckpt"))
    prefix = os.path.join(directory, "bert_model.ckpt")
    for suffix in (".index", ".data-00000-of-00001"):
        os.rename(saved + suffix, prefix + suffix)
    os.remove(os.path.join(directory, "checkpoint"))
    if with_config:
        with open(os.path.join(directory, "bert_config.json"), "w") as f:
            json.dump(CONFIG, f, indent=2, sort_keys=True)
        with open(os.path.join(directory, "vocab.txt"), "w") as f:
            f.write("".join(token + "\n" for token in VOCAB))
    return prefix


def main():
    golden, batch = {}, inputs()
    bert_config = configs.BertConfig(**CONFIG)
    encoder = export_tfhub_lib.get_bert_encoder(bert_config)  # BertEncoder, dict outputs
    randomize(encoder, 1)
    prefix = write_directory("model_garden_tiny", encoder, with_config=True)
    outputs = encoder(batch, training=False)
    golden["model_garden/sequence_output"] = outputs["sequence_output"].numpy()
    golden["model_garden/pooled_output"] = outputs["pooled_output"].numpy()

    encoder_v2 = networks.BertEncoderV2(
        vocab_size=len(VOCAB), hidden_size=32, num_layers=2, num_attention_heads=4, inner_dim=37,
        max_sequence_length=24, type_vocab_size=2,
        initializer=tf_keras.initializers.TruncatedNormal(stddev=0.02))
    encoder_v2(batch)
    randomize(encoder_v2, 2)
    write_directory("model_garden_v2_tiny", encoder_v2, with_config=False)
    outputs = encoder_v2(batch, training=False)
    golden["model_garden_v2/sequence_output"] = outputs["sequence_output"].numpy()
    golden["model_garden_v2/pooled_output"] = outputs["pooled_output"].numpy()

    export_dir = os.path.join(HERE, "tf_hub_tiny")
    shutil.rmtree(export_dir, ignore_errors=True)
    export_tfhub_lib.export_model(export_dir, bert_config=bert_config, model_checkpoint_path=prefix,
                                  with_mlm=False, vocab_file=os.path.join(HERE, "model_garden_tiny", "vocab.txt"),
                                  do_lower_case=True)
    hub_encoder = tf.saved_model.load(export_dir)
    outputs = hub_encoder({name: tf.constant(value) for name, value in batch.items()}, training=False)
    golden["tf_hub/sequence_output"] = outputs["sequence_output"].numpy()
    golden["tf_hub/pooled_output"] = outputs["pooled_output"].numpy()
    for name in ("saved_model.pb", "keras_metadata.pb", "fingerprint.pb"):
        os.remove(os.path.join(export_dir, name))
    for name, value in batch.items():
        golden[name] = value
    np.savez(os.path.join(HERE, "model_garden_golden.npz"), **golden)


if __name__ == "__main__":
    main()
