"""The engine every runner shares: strategy, input pipelines, train/eval/predict loops.

A runner (run_pretraining.py, run_classifier.py, run_squad.py) supplies a model (a Keras
layer whose variables carry the original checkpoint names), a loss function and a
dataset function; this module turns them into training that scales through
tf.distribute, checkpoints in the original's name-based format, resumes after any
interruption (weights, Adam slots, step and input position), and reports progress.
"""

import json
import math
import os
import re
import time
import weakref

from absl import logging
import keras
import numpy as np
import tensorflow as tf

import cli
import modeling
import optimization

STRATEGIES = ("one_device", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


# --- Flags shared by the runners ----------------------------------------------------------

def define_tpu_flags(flags):
    """The original's TPU/estimator flags (same names, types, defaults)."""
    flags.DEFINE_bool("use_tpu", False, "Whether to use TPU or GPU/CPU.")
    flags.DEFINE_string("tpu_name", None, "The Cloud TPU to use for training (name or grpc://ip:8470).")
    flags.DEFINE_string("tpu_zone", None, "GCE zone of the Cloud TPU (detected if unset).")
    flags.DEFINE_string("gcp_project", None, "GCP project of the Cloud TPU (detected if unset).")
    flags.DEFINE_string("master", None, "TensorFlow master URL.")
    flags.DEFINE_integer("num_tpu_cores", 8, "Only used if `use_tpu` is True. Total number of TPU cores to use.")
    flags.DEFINE_integer("save_checkpoints_steps", 1000, "How often to save the model checkpoint.")
    flags.DEFINE_integer("iterations_per_loop", 1000, "How many steps to make in each device loop call.")


def define_engine_flags(flags):
    """Flags this project adds to every training runner (additions, never renames)."""
    flags.DEFINE_enum("distribution_strategy", None, list(STRATEGIES),
                      "How to spread the work: one_device, mirrored (all local GPUs, or the logical CPUs of "
                      "--num_logical_cpus), multi_worker_mirrored (TF_CONFIG), tpu. Default: tpu with "
                      "--use_tpu, else one_device.")
    flags.DEFINE_integer("num_logical_cpus", 1,
                         "Split the CPU into this many logical devices (for mirrored runs without GPUs).")
    flags.DEFINE_enum("precision", "float32", list(PRECISIONS),
                      "float32, mixed_float16 (GPU, with loss scaling) or mixed_bfloat16 (TPU, recent CPUs).")
    flags.DEFINE_bool("use_xla", False, "Compile the model's forward and backward pass with XLA.")
    flags.DEFINE_enum("optimizer", "adamw", ["adamw", "lamb"],
                      "adamw: the original AdamWeightDecay; lamb: LAMB for large batches.")
    flags.DEFINE_integer("gradient_accumulation_steps", 1,
                         "Average the gradients of this many micro-batches (each train_batch_size / N) into "
                         "one update of the full train_batch_size.")
    flags.DEFINE_integer("log_steps", 100, "Log loss, examples/s and ETA every this many steps.")
    flags.DEFINE_integer("keep_checkpoint_max", 5, "How many recent checkpoints to keep in output_dir.")
    flags.DEFINE_integer("seed", None, "Seed for weight initialisation, dropout and input shuffling "
                         "(a run is then repeatable on CPU).")


class EngineConfig:
    """The engine settings a runner passes on (plain values; built from flags in main())."""

    def __init__(self, distribution_strategy=None, use_tpu=False, tpu_name=None, tpu_zone=None,
                 gcp_project=None, master=None, num_logical_cpus=1, precision="float32", use_xla=False,
                 optimizer="adamw", gradient_accumulation_steps=1, log_steps=100, keep_checkpoint_max=5,
                 save_checkpoints_steps=1000, iterations_per_loop=1000, seed=None):
        self.distribution_strategy = distribution_strategy or ("tpu" if use_tpu else "one_device")
        self.tpu_name, self.tpu_zone, self.gcp_project, self.master = tpu_name, tpu_zone, gcp_project, master
        self.num_logical_cpus = num_logical_cpus
        self.precision = precision
        self.use_xla = use_xla
        self.optimizer = optimizer
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.log_steps = log_steps
        self.keep_checkpoint_max = keep_checkpoint_max
        self.save_checkpoints_steps = save_checkpoints_steps
        self.iterations_per_loop = iterations_per_loop
        self.seed = seed
        if self.distribution_strategy not in STRATEGIES:
            raise ValueError(f"--distribution_strategy={self.distribution_strategy}: expected one of "
                             f"{', '.join(STRATEGIES)}")
        if precision not in PRECISIONS:
            raise ValueError(f"--precision={precision}: expected one of {', '.join(PRECISIONS)}")
        for name in ("gradient_accumulation_steps", "log_steps", "save_checkpoints_steps", "iterations_per_loop",
                     "num_logical_cpus", "keep_checkpoint_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}={getattr(self, name)} must be at least 1")

    @classmethod
    def from_flags(cls, flag_values):
        """Reads the engine's flags from an absl FlagValues (called by the runners' main())."""
        def get(name, default=None):
            return getattr(flag_values, name) if name in flag_values else default
        return cls(distribution_strategy=get("distribution_strategy"), use_tpu=get("use_tpu", False),
                   tpu_name=get("tpu_name"), tpu_zone=get("tpu_zone"), gcp_project=get("gcp_project"),
                   master=get("master"), num_logical_cpus=get("num_logical_cpus", 1),
                   precision=get("precision", "float32"), use_xla=get("use_xla", False),
                   optimizer=get("optimizer", "adamw"),
                   gradient_accumulation_steps=get("gradient_accumulation_steps", 1),
                   log_steps=get("log_steps", 100), keep_checkpoint_max=get("keep_checkpoint_max", 5),
                   save_checkpoints_steps=get("save_checkpoints_steps", 1000),
                   iterations_per_loop=get("iterations_per_loop", 1000), seed=get("seed"))


# --- Strategy and precision -------------------------------------------------------------

def configure_precision(precision):
    """Sets the global Keras dtype policy: variables stay float32, math in `precision`."""
    keras.mixed_precision.set_global_policy(precision)


def make_strategy(config):
    """Builds the tf.distribute strategy that `config` names."""
    kind = config.distribution_strategy
    if config.num_logical_cpus > 1:
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * config.num_logical_cpus)
        except RuntimeError:
            # TensorFlow fixes its devices when it first runs an op; fine if they already match.
            if len(tf.config.list_logical_devices("CPU")) != config.num_logical_cpus:
                raise ValueError(f"--num_logical_cpus={config.num_logical_cpus}: TensorFlow has already started "
                                 f"with other devices in this process; build the strategy first") from None
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=config.tpu_name or config.master or "", zone=config.tpu_zone, project=config.gcp_project)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if kind == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def is_chief(strategy):
    """Whether this process writes checkpoints and outputs (always, except in multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and
                                            "chief" not in resolver.cluster_spec().as_dict())


# --- Input pipelines ----------------------------------------------------------------------

TOKEN_ID_FEATURES = ("input_ids", "masked_lm_ids")


def check_tfrecords(input_files, name_to_features, flag_name="--input_file", vocab_size=None):
    """Parses the first record of every file with the spec: a bad file fails here, by name.

    Raises ValueError naming the file and the problem (not a TFRecord file, no records,
    records of another schema or length, token ids beyond `vocab_size` when given).
    """
    for path in input_files:
        try:
            first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
            if first is None:
                if tf.io.gfile.stat(path).length:  # bytes, but not one whole record
                    raise ValueError(f"{flag_name}: {path} is not a TFRecord file, or is truncated")
                raise ValueError(f"{flag_name}: {path} holds no records")
            example = tf.io.parse_single_example(first, name_to_features)
        except tf.errors.OpError as e:
            raise ValueError(f"{flag_name}: {path}: {cli.describe_op_error(e)}") from None
        for name in TOKEN_ID_FEATURES:
            if vocab_size is not None and name in example:
                ids = example[name].numpy()
                if ids.size and (ids.max() >= vocab_size or ids.min() < 0):
                    raise ValueError(f"{flag_name}: {path}: {name} holds token id {ids.max()}, beyond the BERT "
                                     f"config's vocab_size {vocab_size}: the records were made with another vocab")


def check_token_ids(dataset, vocab_size):
    """`dataset` (of feature dicts) with every token id checked against vocab_size before the model.

    An id beyond the embedding table fails with one line naming the feature; unchecked, a
    GPU's gather would silently read zeros for it.
    """
    def check(features):
        checks = []
        for name in TOKEN_ID_FEATURES:
            if name in features:
                ids = features[name]
                checks.append(tf.debugging.Assert(
                    tf.logical_and(tf.reduce_all(ids < vocab_size), tf.reduce_all(ids >= 0)),
                    [f"{name} holds a token id beyond vocab_size {vocab_size} of the BERT config (the records were "
                     f"made with another vocab); largest id", tf.reduce_max(ids)]))
        with tf.control_dependencies(checks):
            return {name: tf.identity(value) for name, value in features.items()}
    return dataset.map(check)


def _parse_batch(serialized, name_to_features):
    """Parses a batch of tf.Examples; int64 features become int32 (as the original)."""
    example = tf.io.parse_example(serialized, name_to_features)
    return {name: tf.cast(t, tf.int32) if t.dtype == tf.int64 else t for name, t in example.items()}


def training_dataset(input_files, name_to_features, batch_size, seed, skip_examples=0, input_context=None,
                     cycle_length=4):
    """The training pipeline: shuffled files, interleaved reads, shuffled records, batches.

    Deterministic for a given seed, so a resumed run can skip exactly what it consumed, and
    independent of how the work is spread: every input pipeline reads the same record stream
    and keeps its own slice of each global batch, so N workers train on exactly the examples
    one device would (at the cost of each worker reading every record).

    Args:
        input_files: list of TFRecord files.
        name_to_features: the tf.io.FixedLenFeature spec.
        batch_size: examples per batch of one replica.
        seed: shuffling seed.
        skip_examples: records of the global stream already trained on.
        input_context: tf.distribute.InputContext (None: one pipeline, one replica).
    """
    files = tf.data.Dataset.from_tensor_slices(input_files)
    files = files.repeat().shuffle(len(input_files), seed=seed)
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(input_files)),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    records = records.shuffle(100, seed=seed)
    if skip_examples:
        records = records.skip(skip_examples)
    if input_context and input_context.num_input_pipelines > 1:
        pipelines, index = input_context.num_input_pipelines, input_context.input_pipeline_id
        per_pipeline = batch_size * input_context.num_replicas_in_sync // pipelines
        records = records.batch(per_pipeline * pipelines, drop_remainder=True)
        records = records.map(lambda batch: batch[index * per_pipeline:(index + 1) * per_pipeline]).unbatch()
    batches = records.batch(batch_size, drop_remainder=True)
    batches = batches.map(lambda s: _parse_batch(s, name_to_features), num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def sequential_dataset(input_files, name_to_features, batch_size, repeat=False, drop_remainder=False):
    """Files read in order (evaluation and prediction)."""
    records = tf.data.TFRecordDataset(input_files)
    if repeat:
        records = records.repeat()
    batches = records.batch(batch_size, drop_remainder=drop_remainder)
    batches = batches.map(lambda s: _parse_batch(s, name_to_features), num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


# --- Checkpoints in the original names ----------------------------------------------------

CHECKPOINT_BASENAME = "model.ckpt"


def _checkpoint_state_path(output_dir):
    return os.path.join(output_dir, "checkpoint")


def write_checkpoint_state(output_dir, prefixes):
    """Writes the `checkpoint` state file that tf.train.latest_checkpoint reads, atomically."""
    names = [os.path.basename(p) for p in prefixes]
    text = f'model_checkpoint_path: "{names[-1]}"\n' + "".join(
        f'all_model_checkpoint_paths: "{n}"\n' for n in names)
    with cli.atomic_output(_checkpoint_state_path(output_dir)) as temp:
        with tf.io.gfile.GFile(temp, "w") as f:
            f.write(text)


def _existing_checkpoints(output_dir):
    """Prefixes of `model.ckpt-N` checkpoints in output_dir, oldest first."""
    found = []
    for path in tf.io.gfile.glob(os.path.join(output_dir, CHECKPOINT_BASENAME + "-*.index")):
        match = re.search(r"-(\d+)\.index$", path)
        if match:
            found.append((int(match.group(1)), path[:-len(".index")]))
    return [prefix for _, prefix in sorted(found)]


def training_variables(model, optimizer):
    """{checkpoint name: variable} for a training checkpoint: weights, Adam slots, global_step."""
    names = modeling.original_name_map(model)
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    names.update(inner.slot_variables())
    names["global_step"] = inner.iterations
    return names


def save_training_checkpoint(output_dir, model, optimizer, keep_checkpoint_max):
    """Saves `output_dir/model.ckpt-<step>` in the original names; keeps the newest N."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    step = int(inner.iterations.numpy())
    prefix = os.path.join(output_dir, f"{CHECKPOINT_BASENAME}-{step}")
    tensors = {}
    for name, variable in training_variables(model, optimizer).items():
        value = tf.convert_to_tensor(variable.value if isinstance(variable, keras.Variable) else variable)
        tensors[name] = tf.cast(value, tf.int64) if name == "global_step" else value
    modeling.save_checkpoint(prefix, tensors)
    prefixes = [p for p in _existing_checkpoints(output_dir) if p != prefix] + [prefix]
    stale, kept = prefixes[:-keep_checkpoint_max], prefixes[-keep_checkpoint_max:]
    write_checkpoint_state(output_dir, kept)
    for old in stale:
        for path in tf.io.gfile.glob(old + ".*"):
            tf.io.gfile.remove(path)
    logging.info("Saved checkpoint %s", prefix)
    return prefix


def latest_training_checkpoint(output_dir):
    """The newest checkpoint this engine wrote in output_dir, or None."""
    if not output_dir or not tf.io.gfile.isdir(output_dir):
        return None
    return tf.train.latest_checkpoint(output_dir)


def restore_or_initialize(model, optimizer, output_dir, init_checkpoint):
    """Resumes from output_dir's latest checkpoint, else initialises from init_checkpoint.

    Returns the global step restored (0 for a fresh start).
    """
    latest = latest_training_checkpoint(output_dir)
    inner = getattr(optimizer, "inner_optimizer", optimizer) if optimizer is not None else None
    if latest:
        logging.info("Resuming from %s", latest)
        if inner is not None:
            variables = training_variables(model, optimizer)
            step_var = variables.pop("global_step")
            modeling.load_checkpoint(latest, variables)
            step = int(modeling.read_checkpoint_tensor(tf.train.load_checkpoint(latest), latest, "global_step"))
            step_var.assign(step)
            return step
        modeling.load_checkpoint(latest, model)
        return 0
    if init_checkpoint:
        result = modeling.load_checkpoint(init_checkpoint, model)
        if not result.restored:
            raise ValueError(f"--init_checkpoint={init_checkpoint}: none of the model's variables is in it "
                             f"(is it a BERT checkpoint in the original names?)")
    return 0


# --- Loops --------------------------------------------------------------------------------

class TrainingProgress:
    """Logs step, loss, examples/s and ETA, and writes TensorBoard summaries."""

    def __init__(self, output_dir, total_steps, batch_size, start_step, write_summaries):
        self.total_steps, self.batch_size = total_steps, batch_size
        self.start_step = start_step
        self.start_time = time.monotonic()
        self.writer = tf.summary.create_file_writer(output_dir) if write_summaries else None

    def log(self, step, loss, learning_rate, steps_done, seconds):
        examples_per_sec = steps_done * self.batch_size / max(seconds, 1e-9)
        elapsed = time.monotonic() - self.start_time
        rate = (step - self.start_step) / max(elapsed, 1e-9)
        eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
        logging.info("step = %d/%d, loss = %.6f, lr = %.3g, examples/sec = %.1f, ETA %s",
                     step, self.total_steps, loss, learning_rate, examples_per_sec, _format_seconds(eta))
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for name, value in (("loss", loss), ("learning_rate", learning_rate),
                                    ("examples_per_sec", examples_per_sec)):
                    _write_scalar_summary(name, value)
            self.writer.flush()


def _write_scalar_summary(name, value):
    """A TensorBoard scalar without needing the tensorboard package (tf.summary.scalar does)."""
    from tensorflow.core.framework import summary_pb2  # the proto only, not TensorBoard itself
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR)
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=metadata.SerializeToString())


def _format_seconds(seconds):
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def train(strategy, config, model, loss_fn, dataset_fn, output_dir, num_train_steps, num_warmup_steps,
          learning_rate, train_batch_size, init_checkpoint=None, step_callback=None, callback_every_steps=None):
    """Trains `model` to `num_train_steps` optimizer steps, resuming if output_dir has a checkpoint.

    Args:
        strategy: from make_strategy (the model must have been built in its scope).
        config: EngineConfig.
        model: Keras layer holding every trainable variable, under original names.
        loss_fn: (model, features, training) -> scalar float32 loss of a per-replica batch.
        dataset_fn: (input_context, batch_size, skip_examples) -> tf.data.Dataset of feature
            dicts for one input pipeline, batch_size (one replica's micro-batch) examples per
            element, after skipping skip_examples records of the global stream.
        output_dir: where checkpoints and summaries go.
        num_train_steps, num_warmup_steps, learning_rate: the schedule.
        train_batch_size: global examples per optimizer step.
        init_checkpoint: weights to start from when output_dir has no checkpoint.
        step_callback: called as step_callback(step) every `callback_every_steps` steps and
            at the end, after that step's checkpoint (e.g. evaluation during training).

    Returns:
        The mean training loss of the last logged interval (float), or None when no step ran.
    """
    accumulation = config.gradient_accumulation_steps
    if train_batch_size % (accumulation * strategy.num_replicas_in_sync):
        raise ValueError(f"train_batch_size={train_batch_size} must be divisible by gradient_accumulation_steps "
                         f"({accumulation}) times the number of replicas ({strategy.num_replicas_in_sync})")
    micro_batch = train_batch_size // accumulation
    with strategy.scope():
        optimizer = optimization.create_optimizer(learning_rate, num_train_steps, num_warmup_steps,
                                                  optimizer_type=config.optimizer)
        if config.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    chief = is_chief(strategy)
    step = restore_or_initialize(model, optimizer, output_dir, init_checkpoint)
    if step >= num_train_steps:
        logging.info("Training already done: global_step %d >= num_train_steps %d", step, num_train_steps)
        return None

    def input_fn(input_context):
        per_replica = input_context.get_per_replica_batch_size(micro_batch)
        # Resume where the interrupted run stopped: skip what the global stream already fed.
        return dataset_fn(input_context, per_replica, step * train_batch_size)

    dataset = strategy.distribute_datasets_from_function(input_fn)
    iterator = iter(dataset)
    train_loop = _make_train_loop(strategy, model, loss_fn, optimizer, accumulation, config.use_xla,
                                  config.seed if config.seed is not None else 0)

    logging.info("***** Running training *****")
    logging.info("  Batch size = %d (%d replica(s), %d accumulation step(s))", train_batch_size,
                 strategy.num_replicas_in_sync, accumulation)
    logging.info("  Num steps = %d (starting at %d)", num_train_steps, step)
    progress = TrainingProgress(output_dir, num_train_steps, train_batch_size, step, chief)
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    loss = None
    while step < num_train_steps:
        # A loop ends at the next log point, checkpoint or the end, whichever comes first.
        boundary = min(_next_multiple(step, config.log_steps), _next_multiple(step, config.save_checkpoints_steps),
                       num_train_steps, step + config.iterations_per_loop)
        if step_callback is not None and callback_every_steps:
            boundary = min(boundary, _next_multiple(step, callback_every_steps))
        steps = boundary - step
        started = time.monotonic()
        loss = float(train_loop(iterator, tf.constant(steps, tf.int32)))
        if not np.isfinite(loss):
            raise ValueError(f"training diverged: loss is {loss} at step {boundary} (lower --learning_rate, or use "
                             f"more --num_warmup_steps)")
        step = int(inner.iterations.numpy())
        if step % config.log_steps == 0 or step == num_train_steps:
            progress.log(step, loss, float(inner.learning_rate), steps, time.monotonic() - started)
        if chief and (step % config.save_checkpoints_steps == 0 or step == num_train_steps):
            check_finite_weights(model, step)
            save_training_checkpoint(output_dir, model, optimizer, config.keep_checkpoint_max)
        if step_callback is not None and callback_every_steps and (
                step % callback_every_steps == 0 or step == num_train_steps):
            step_callback(step)
    return loss


def _next_multiple(step, every):
    return (step // every + 1) * every


def _make_train_loop(strategy, model, loss_fn, optimizer, accumulation, use_xla, seed):
    """A tf.function running `steps` optimizer updates; returns their mean loss."""
    variables = model.trainable_variables
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    replicas = strategy.num_replicas_in_sync

    inner = getattr(optimizer, "inner_optimizer", optimizer)

    def gradients(features, micro_step):
        # Dropout masks keyed on (seed, update, micro-batch, replica): a resumed run redraws
        # exactly the masks of an uninterrupted one.
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
        draw = (tf.cast(inner.iterations, tf.int64) * accumulation + micro_step) * replicas + replica
        with tf.GradientTape() as tape, modeling.dropout_seed(tf.stack([tf.constant(seed, tf.int64), draw])):
            loss = loss_fn(model, features, True)
            # Gradients are summed over replicas, so each replica contributes its share of the mean.
            scaled_loss = loss / replicas
            if scaled:
                scaled_loss = optimizer.scale_loss(scaled_loss)
        return loss, tape.gradient(scaled_loss, variables)

    compiled_gradients = tf.function(gradients, jit_compile=use_xla)

    def replica_step(micro_batches):
        loss, grads = compiled_gradients(micro_batches[0], tf.constant(0, tf.int64))
        if len(micro_batches) > 1:
            grads = [tf.convert_to_tensor(g) for g in grads]  # IndexedSlices cannot be summed
            for micro_step, features in enumerate(micro_batches[1:], 1):
                micro_loss, micro_grads = compiled_gradients(features, tf.constant(micro_step, tf.int64))
                loss += micro_loss
                grads = [g + tf.convert_to_tensor(m) for g, m in zip(grads, micro_grads)]
            loss /= len(micro_batches)
            grads = [g / len(micro_batches) for g in grads]
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    @tf.function
    def train_loop(iterator, steps):
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            micro_batches = [next(iterator) for _ in range(accumulation)]
            per_replica = strategy.run(replica_step, args=(micro_batches,))
            total += strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)
        return total / tf.cast(steps, tf.float32)

    return train_loop


# Traced eval/predict steps per model, so that evaluating every N training steps traces once.
_STEP_CACHE = weakref.WeakKeyDictionary()


def _cached_step(model, key, build):
    """build(weak reference to model) -> tf.function, made once per (model, key).

    The step holds the model only weakly, so the cache does not keep a model alive.
    """
    steps = _STEP_CACHE.setdefault(model, {})
    if key not in steps:
        steps[key] = build(weakref.ref(model))
    return steps[key]


def evaluate(strategy, model, metric_fn, dataset, max_steps=None):
    """Weighted means of metrics over `dataset` (a dataset of global batches).

    Args:
        metric_fn: (model, features) -> {name: (weighted_sum, weight)} for a per-replica batch.
        max_steps: batches to evaluate (None: the whole dataset).

    Returns:
        {name: float} = sum over batches of weighted_sum / sum of weight.
    """
    dist_dataset = strategy.experimental_distribute_dataset(dataset)

    def build(model_ref):
        @tf.function
        def step(features):
            per_replica = strategy.run(lambda f: metric_fn(model_ref(), f), args=(features,))
            return tf.nest.map_structure(lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None),
                                         per_replica)
        return step

    step = _cached_step(model, ("evaluate", strategy, metric_fn), build)

    sums = {}
    for index, features in enumerate(dist_dataset):
        if max_steps is not None and index >= max_steps:
            break
        for name, (value, weight) in step(features).items():
            total, weights = sums.get(name, (0.0, 0.0))
            sums[name] = (total + float(value), weights + float(weight))
    # float32, printed as the original's Estimator metrics are (str of a numpy float32).
    return {name: np.float32(total / weight if weight else 0.0) for name, (total, weight) in sums.items()}


def predict(strategy, model, predict_fn, dataset):
    """Yields {name: numpy array [B, ...]} for each global batch of `dataset`, in order.

    Args:
        predict_fn: (model, features) -> {name: tensor [per-replica batch, ...]}.
    """
    dist_dataset = strategy.experimental_distribute_dataset(dataset)

    def build(model_ref):
        @tf.function
        def step(features):
            return strategy.run(lambda f: predict_fn(model_ref(), f), args=(features,))
        return step

    step = _cached_step(model, ("predict", strategy, predict_fn), build)

    for features in dist_dataset:
        outputs = step(features)
        yield {name: np.concatenate([t.numpy() for t in strategy.experimental_local_results(value)], axis=0)
               for name, value in outputs.items()}


# --- Script plumbing ----------------------------------------------------------------------

def serialize_example(features):
    """Serializes {name: list of int or float} as a tf.train.Example (int64 or float lists)."""
    example = tf.train.Example()
    for name, values in features.items():
        feature = example.features.feature[name]
        if values and isinstance(values[0], float):
            feature.float_list.value.extend(values)
        else:
            feature.int64_list.value.extend(values)
    return example.SerializeToString()


def write_tfrecord(path, serialized_examples):
    """Writes serialized records to `path` atomically (temporary name, then rename).

    Returns the number of records written; on any error nothing is left at `path`.
    """
    count = 0
    with cli.atomic_output(path) as temp:
        with tf.io.TFRecordWriter(temp) as writer:
            for record in serialized_examples:
                writer.write(record)
                count += 1
    return count


def write_eval_results(path, results):
    """Writes `key = value` lines, keys sorted, values with str() (as the original), atomically."""
    with cli.atomic_output(path) as temp, tf.io.gfile.GFile(temp, "w") as writer:
        logging.info("***** Eval results *****")
        for key in sorted(results):
            logging.info("  %s = %s", key, str(results[key]))
            writer.write(f"{key} = {str(results[key])}\n")


def ensure_output_dir(output_dir):
    """Creates output_dir and makes it this run's own, or fails with one clear line.

    Fails if it cannot be written or if another live run holds it (see lock_output_dir);
    then removes what a killed run left there under temporary names.
    """
    try:
        tf.io.gfile.makedirs(output_dir)
        # A name of this process's own: workers of one multi-worker run share output_dir.
        probe = os.path.join(output_dir, f".write_test-{os.getpid()}")
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        raise ValueError(f"--output_dir={output_dir} cannot be written: {getattr(e, 'message', e)}") from None
    lock_output_dir(output_dir)
    for path in cli.remove_stale_temp_files(output_dir):
        logging.info("Removed %s, left by an interrupted run", path)


_LOCKS = {}  # output_dir -> the open descriptor holding its lock, until the process ends


def lock_output_dir(output_dir):
    """Holds output_dir for this process: a second run on it fails in one line while we run.

    An flock on the directory itself (no lock file to leave behind), released by the kernel
    when the process ends however it ends: a SIGKILL leaves nothing stuck. Local directories
    only; in a multi-worker run only the chief takes it (the workers share output_dir).
    """
    if "://" in output_dir or not _is_chief_task():
        return
    key = os.path.realpath(output_dir)
    if key in _LOCKS:
        return
    import fcntl
    fd = os.open(output_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ValueError(f"--output_dir={output_dir} is in use by another run: wait for it to end, or use "
                         f"another --output_dir") from None
    _LOCKS[key] = fd


def _is_chief_task():
    """Whether TF_CONFIG (if any) makes this process the chief (is_chief, before any strategy)."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        return True
    task = config.get("task") or {}
    task_type, task_id = task.get("type"), task.get("index", 0)
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and
                                            "chief" not in (config.get("cluster") or {}))


def validate_run_flags(train_batch_size=None, eval_batch_size=None, predict_batch_size=None, learning_rate=None,
                       num_train_epochs=None, warmup_proportion=None):
    """Checks a runner's own flags before anything is written; raises ValueError naming the flag."""
    for name, value in (("train_batch_size", train_batch_size), ("eval_batch_size", eval_batch_size),
                        ("predict_batch_size", predict_batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"--{name}={value} must be at least 1")
    if learning_rate is not None and not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"--learning_rate={learning_rate} must be a positive number (BERT fine-tuning uses 2e-5 "
                         f"to 5e-5)")
    if num_train_epochs is not None and not (math.isfinite(num_train_epochs) and num_train_epochs >= 0):
        raise ValueError(f"--num_train_epochs={num_train_epochs} must be 0 or more")
    if warmup_proportion is not None and not 0 <= warmup_proportion <= 1:
        raise ValueError(f"--warmup_proportion={warmup_proportion} must be between 0 and 1")


def check_finite_weights(model, step):
    """Raises ValueError when a weight is NaN or infinite (an update overflowed): never save it."""
    variables = model.trainable_variables
    finite = tf.stack([tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))) for v in variables]).numpy()
    bad = [getattr(v, "path", v.name) for v, ok in zip(variables, finite) if not ok]
    if bad:
        raise ValueError(f"training diverged: {len(bad)} weight(s) are NaN or infinite after step {step} (first: "
                         f"{bad[0]}); no checkpoint was saved for it (lower --learning_rate, or use more "
                         f"--num_warmup_steps)")
