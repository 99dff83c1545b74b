"""What replaces each name of the original code that only TF1 could run (graph and Estimator builders).

Every module of the project that had such names ends with a module `__getattr__` that asks
`missing_name` here, so `modeling.transformer_model` raises an AttributeError that says in
one line what to call instead. README "Porting code written against the original" has the
same table and runnable examples. Imports nothing of the project.
"""

_ENCODER = "modeling.BertModel(config)(input_ids, input_mask=..., token_type_ids=..., training=...)"
_ENGINE = "training.train(...), as the script's main() calls it (or the script itself: same flags)"

# (module, original name) -> what to use here.
TF1_ONLY = {
    ("modeling", "get_assignment_map_from_checkpoint"):
        "modeling.load_checkpoint(init_checkpoint, model, *heads) restores by the original names and returns "
        "what was restored and what was not",
    ("modeling", "embedding_lookup"): f"modeling.BertEmbeddings(config), or out['embedding_output'] of {_ENCODER}",
    ("modeling", "embedding_postprocessor"):
        f"modeling.BertEmbeddings(config), or out['embedding_output'] of {_ENCODER}",
    ("modeling", "attention_layer"): f"modeling.TransformerLayer(config, index), or {_ENCODER}",
    ("modeling", "transformer_model"): f"out['encoder_layers'] of {_ENCODER}",
    ("modeling", "dense_layer_3d"): f"modeling.TransformerLayer(config, index), or {_ENCODER}",
    ("modeling", "dense_layer_3d_proj"): f"modeling.TransformerLayer(config, index), or {_ENCODER}",
    ("modeling", "dense_layer_2d"): "modeling.Dense(input_size, units, path)",
    ("run_pretraining", "model_fn_builder"):
        f"run_pretraining.PretrainingModel(config) with run_pretraining.pretraining_loss, trained by {_ENGINE}",
    ("run_pretraining", "input_fn_builder"):
        "input_pipeline.training_dataset(input_files, run_pretraining.pretraining_features(max_seq_length, "
        "max_predictions_per_seq), batch_size, seed)",
    ("run_pretraining", "_decode_record"): "tf.io.parse_example with run_pretraining.pretraining_features(...)",
    ("run_classifier", "create_model"):
        "run_classifier.ClassifierModel(config, num_labels)(input_ids, input_mask, segment_ids, training=...) "
        "for the logits, modeling.classifier_loss(logits, labels) for the loss",
    ("run_classifier", "model_fn_builder"):
        f"run_classifier.ClassifierModel(config, num_labels), trained by {_ENGINE}",
    ("run_classifier", "input_fn_builder"):
        "tf.data.Dataset.from_tensor_slices({'input_ids': [f.input_ids for f in features], ...}).batch(n)",
    ("run_classifier", "file_based_input_fn_builder"):
        "input_pipeline.sequential_dataset([input_file], run_classifier.classifier_features(seq_length), batch_size)",
    ("run_squad", "create_model"):
        "run_squad.SquadModel(config)(features, training=...) for (start_logits, end_logits)",
    ("run_squad", "model_fn_builder"): f"run_squad.SquadModel(config), trained by {_ENGINE}",
    ("run_squad", "input_fn_builder"):
        "input_pipeline.sequential_dataset([input_file], run_squad.feature_spec(seq_length, is_training), batch_size)",
    ("extract_features", "model_fn_builder"):
        "extract_features.FeatureExtractor(bert_config, init_checkpoint, layer_indexes)(batch)",
    ("extract_features", "input_fn_builder"):
        "extract_features.extract_features(input_file, output_file, extractor, tokenizer) for a file, "
        "or FeatureExtractor(...)(batch) for arrays",
}


def missing_name(module, name):
    """The AttributeError for `module.name`: a pointer to the replacement if the original had it."""
    module = module.rpartition(".")[2]
    replacement = TF1_ONLY.get((module, name))
    if replacement is None:
        return AttributeError(f"module {module!r} has no attribute {name!r}")
    return AttributeError(f"{module}.{name} was TF1-only; use {replacement} (README: Porting code written "
                          f"against the original)")
