"""The engine every runner shares: strategy, checkpoints, train/eval/predict loops.

A runner (run_pretraining.py, run_classifier.py, run_squad.py) supplies a model (a Keras
layer whose variables carry the original checkpoint names), a loss function and a
dataset function; this module turns them into training that scales through
tf.distribute, checkpoints in the original's name-based format, resumes after any
interruption (weights, Adam slots, step and input position), and reports progress.
"""

import collections
import contextlib
import json
import os
import queue
import re
import socket
import threading
import time
import weakref

from absl import logging
import keras
import numpy as np
import tensorflow as tf

import cli
import fused_kernels
import input_pipeline
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
    flags.DEFINE_bool("gradient_checkpointing", False,
                      "Keep only each Transformer layer's input for the backward pass, which recomputes the "
                      "layer: a quarter or less of the activation memory for about one more forward pass of "
                      "time, the same numbers (BERT-Large at 384-512 tokens with the paper's batch sizes).")
    flags.DEFINE_integer("log_steps", 100, "Log loss, examples/s and ETA every this many steps.")
    flags.DEFINE_integer("keep_checkpoint_max", 5, "How many recent checkpoints to keep in output_dir.")
    flags.DEFINE_integer("seed", None, "Seed for weight initialisation, dropout and input shuffling "
                         "(a run is then repeatable on CPU).")


class EngineConfig:
    """The engine settings a runner passes on (plain values; built from flags in main())."""

    def __init__(self, distribution_strategy=None, use_tpu=False, tpu_name=None, tpu_zone=None,
                 gcp_project=None, master=None, num_logical_cpus=1, precision="float32", use_xla=False,
                 optimizer="adamw", gradient_accumulation_steps=1, log_steps=100, keep_checkpoint_max=5,
                 save_checkpoints_steps=1000, iterations_per_loop=1000, seed=None, gradient_checkpointing=False):
        # 17 parameters: one keyword per engine flag (from_flags fills them).
        self.distribution_strategy = distribution_strategy or ("tpu" if use_tpu else "one_device")
        self.tpu_name, self.tpu_zone, self.gcp_project, self.master = tpu_name, tpu_zone, gcp_project, master
        self.num_logical_cpus = num_logical_cpus
        self.precision = precision
        self.use_xla = use_xla
        self.optimizer = optimizer
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.log_steps = log_steps
        self.keep_checkpoint_max = keep_checkpoint_max
        self.save_checkpoints_steps = save_checkpoints_steps
        self.iterations_per_loop = iterations_per_loop
        self.seed = seed
        # Input shuffling seed: --seed, else the one the original's runs always used.
        self.data_seed = seed if seed is not None else 12345
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
        """Reads the engine's flags from an absl FlagValues (called by the runners' main()).

        A TF_CONFIG that is set is checked here, before anything is written: valid JSON
        always, and under multi_worker_mirrored a cluster this process has a place in.
        """
        def get(name, default=None):
            return getattr(flag_values, name) if name in flag_values else default
        tf_config = read_tf_config()
        if get("distribution_strategy") == "multi_worker_mirrored":
            check_cluster_config(tf_config)
        return cls(distribution_strategy=get("distribution_strategy"), use_tpu=get("use_tpu", False),
                   tpu_name=get("tpu_name"), tpu_zone=get("tpu_zone"), gcp_project=get("gcp_project"),
                   master=get("master"), num_logical_cpus=get("num_logical_cpus", 1),
                   precision=get("precision", "float32"), use_xla=get("use_xla", False),
                   optimizer=get("optimizer", "adamw"),
                   gradient_accumulation_steps=get("gradient_accumulation_steps", 1),
                   log_steps=get("log_steps", 100), keep_checkpoint_max=get("keep_checkpoint_max", 5),
                   save_checkpoints_steps=get("save_checkpoints_steps", 1000),
                   iterations_per_loop=get("iterations_per_loop", 1000), seed=get("seed"),
                   gradient_checkpointing=get("gradient_checkpointing", False))


# --- Strategy and precision -------------------------------------------------------------

def read_tf_config():
    """The TF_CONFIG environment variable as a dict ({} when unset or empty).

    Raises ValueError in one line naming TF_CONFIG when it is not a JSON object.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        config = json.loads(text)
    except ValueError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): set it to an object such as "
                         f'{{"cluster": {{"worker": ["host1:port", "host2:port"]}}, '
                         f'"task": {{"type": "worker", "index": 0}}}}') from None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with \"cluster\" and \"task\", not "
                         f"{type(config).__name__} {text[:60]}")
    return config


def check_cluster_config(config):
    """Raises ValueError in one line when a TF_CONFIG (as a dict) gives this process no place in a cluster.

    An empty config is a lone process. Otherwise `cluster` maps task types to lists of
    "host:port" addresses and `task` names a type of the cluster and an index within it.
    """
    if not config:
        return
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError('TF_CONFIG has no "cluster" (an object such as {"worker": ["host1:port", "host2:port"]})')
    for task_type, addresses in cluster.items():
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and ":" in a for a in addresses)):
            raise ValueError(f'TF_CONFIG: cluster "{task_type}" must be a list of "host:port" addresses, '
                             f"not {json.dumps(addresses)}")
    if not isinstance(task, dict) or "type" not in task:
        raise ValueError('TF_CONFIG has no "task" (an object such as {"type": "worker", "index": 0}) saying '
                         'which task of the cluster this process is')
    task_type, index = task["type"], task.get("index", 0)
    if task_type == "evaluator":
        return  # tf.distribute's side-car evaluator is outside the cluster it watches
    if task_type not in cluster:
        raise ValueError(f'TF_CONFIG: task type "{task_type}" is not in the cluster, which has '
                         f"{', '.join(map(str, cluster))}")
    if type(index) is not int or not 0 <= index < len(cluster[task_type]):
        raise ValueError(f'TF_CONFIG: task index {json.dumps(index)} is out of range: the cluster has '
                         f'{len(cluster[task_type])} "{task_type}" task(s), numbered from 0')


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
        return _tpu_strategy(config)
    if kind == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _tpu_strategy(config, connect_timeout=30):
    """TPUStrategy for --tpu_name / --master, or one line saying that no TPU answers there."""
    target = config.tpu_name or config.master or ""
    hint = ("on a TPU VM pass --tpu_name=local; for a TPU node its name (with --tpu_zone and "
            "--gcp_project outside Google Cloud) or grpc://IP:8470")
    if target.startswith("grpc://"):
        # TensorFlow waits for ever on an address where nothing answers; ask first.
        host, _, port = target[len("grpc://"):].rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=connect_timeout).close()
        except (OSError, ValueError) as e:
            raise ValueError(f"--use_tpu: no TPU answers at {target} ({e}); {hint}") from None
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=target, zone=config.tpu_zone, project=config.gcp_project)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        where = f"at {target}" if target else "on this machine"
        raise ValueError(f"--use_tpu: no TPU found {where} ({cli.describe_error(e)}); {hint}") from None
    return tf.distribute.TPUStrategy(resolver)


def start(config):
    """Seeds the run (with --seed), sets the precision policy and returns the strategy.

    Called before TensorFlow runs its first op: the strategy configures devices, which
    TensorFlow allows only then.
    """
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    configure_precision(config.precision)
    return make_strategy(config)


def is_chief(strategy):
    """Whether this process writes checkpoints and outputs (always, except in multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    return _is_chief_task(resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict())


def _is_chief_task(task_type, task_id, cluster):
    """The chief is the `chief` task, or without one worker 0 (no task type: a lone process)."""
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and "chief" not in cluster)


def worker_pipeline(strategy):
    """(number of input pipelines, this process's pipeline index): one per worker process.

    Workers are numbered as tf.distribute numbers them, the chief (if any) first.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1, 0
    spec = resolver.cluster_spec().as_dict()
    chiefs = len(spec.get("chief", []))
    count = chiefs + len(spec.get("worker", []))
    if count <= 1:
        return 1, 0
    return count, (resolver.task_id if resolver.task_type == "chief" else chiefs + resolver.task_id)


# --- Checkpoints in the original names ----------------------------------------------------

CHECKPOINT_BASENAME = "model.ckpt"


def _checkpoint_state_path(output_dir):
    return os.path.join(output_dir, "checkpoint")


def write_checkpoint_state(output_dir, prefixes):
    """Writes the `checkpoint` state file that tf.train.latest_checkpoint reads, atomically."""
    names = [os.path.basename(p) for p in prefixes]
    text = f'model_checkpoint_path: "{names[-1]}"\n' + "".join(
        f'all_model_checkpoint_paths: "{n}"\n' for n in names)
    cli.write_text(_checkpoint_state_path(output_dir), text)


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
        old_step = int(old.rsplit("-", 1)[1])
        for path in (tf.io.gfile.glob(old + ".*") +
                     tf.io.gfile.glob(input_position_prefix(output_dir, old_step, "*", "*") + ".*")):
            tf.io.gfile.remove(path)
    logging.info("Saved checkpoint %s", prefix)
    return prefix


def latest_training_checkpoint(output_dir):
    """The newest checkpoint this engine wrote in output_dir, or None."""
    if not output_dir or not tf.io.gfile.isdir(output_dir):
        return None
    return modeling.latest_checkpoint(output_dir, usable=lambda prefix: _input_positions_whole(output_dir, prefix))


def _input_positions_whole(output_dir, prefix):
    """Whether checkpoint `prefix`, which the state file does not name, can be resumed from.

    Its input positions (written before it) must be there for every pipeline that wrote
    one; none at all is a run without saved positions (TPU), which resumes by skipping.
    """
    step = int(prefix.rsplit("-", 1)[1])
    saved = tf.io.gfile.glob(input_position_prefix(output_dir, step, "*", "*") + ".index")
    found = collections.defaultdict(set)
    for path in saved:
        match = re.search(r"\.input-(\d+)-of-(\d+)\.index$", path)
        if match:
            found[int(match.group(2))].add(int(match.group(1)))
    if any(indexes == set(range(count)) for count, indexes in found.items()) or not saved:
        return True
    logging.warning("Not resuming from %s: the input positions of some workers are missing; using the checkpoint "
                    "before it", prefix)
    return False


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


def check_start_checkpoint(output_dir, init_checkpoint, config):
    """Checks the checkpoint a run will start from, before it writes anything.

    That is output_dir's latest checkpoint when it has one (a resume), else
    --init_checkpoint: it must be whole and hold every encoder layer of `config` (a BertConfig;
    modeling.check_checkpoint). Raises ValueError in one line.
    """
    prefix = latest_training_checkpoint(output_dir)
    if prefix is None:
        if not init_checkpoint:
            return
        prefix = modeling.resolve_checkpoint(init_checkpoint)
    modeling.check_checkpoint(prefix, modeling.original_variable_shapes(config))


def checkpoint_step(output_dir):
    """The global_step of output_dir's latest checkpoint (0 when it has none)."""
    latest = latest_training_checkpoint(output_dir)
    return int(tf.train.load_checkpoint(latest).get_tensor("global_step")) if latest else 0


def restore_for_inference(model, output_dir, init_checkpoint, doing="Predicting"):
    """Loads the weights a run without training evaluates or predicts with.

    output_dir's latest checkpoint, else init_checkpoint; warns when there is neither (the
    model keeps its random initialisation).
    """
    restore_or_initialize(model, None, output_dir, init_checkpoint)
    if latest_training_checkpoint(output_dir) is None and not init_checkpoint:
        logging.warning("%s with a randomly initialised model: no checkpoint in %s and no --init_checkpoint",
                        doing, output_dir)


# --- Training input and its saved position ----------------------------------------------

INPUT_POSITION_DIR = "input_position"


def input_position_prefix(output_dir, step, index, pipelines):
    """Where pipeline `index` of `pipelines` saves its input position at checkpoint `step`."""
    return os.path.join(output_dir, INPUT_POSITION_DIR,
                        f"{CHECKPOINT_BASENAME}-{step}.input-{index}-of-{pipelines}")


class TrainingInput:
    """This worker's training batches, with their position saved beside each checkpoint.

    Each worker runs one input pipeline (`dataset_fn` with its InputContext) through a plain
    tf.data iterator. Its state (file offsets, shuffle buffer, prefetched batches) goes to
    `output_dir/input_position/` with every checkpoint and is read back on resume, so a resume
    at step 1,000,000 costs what one at step 10 does, and ends bit-identical to an
    uninterrupted run. tf.distribute's own distributed iterators cannot be checkpointed, so
    batches reach the replicas through `experimental_distribute_values_from_function`.
    TPUStrategy keeps tf.distribute's input (its hosts feed the cores) and resumes by skipping.
    """

    def __init__(self, strategy, dataset_fn, micro_batch, train_batch_size, output_dir, step):
        self.strategy = strategy
        self.output_dir = output_dir
        self.pipelines, self.index = worker_pipeline(strategy)
        self.local_replicas = strategy.num_replicas_in_sync // self.pipelines
        self.saves_position = not isinstance(strategy, tf.distribute.TPUStrategy)
        consumed = step * train_batch_size
        if not self.saves_position:
            self.iterator = iter(strategy.distribute_datasets_from_function(
                lambda context: dataset_fn(context, context.get_per_replica_batch_size(micro_batch), consumed)))
            return
        context = tf.distribute.InputContext(self.pipelines, self.index, strategy.num_replicas_in_sync)
        per_replica = context.get_per_replica_batch_size(micro_batch)
        # Saved with the position: a position holds batches already made at one size, and fits
        # only a pipeline built with the records it skipped at its start.
        self.batch_size = tf.Variable(per_replica, dtype=tf.int64, trainable=False)
        self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.iterator = self._resume(lambda skip: dataset_fn(context, per_replica, skip), step, consumed)
        if self.pipelines > 1:
            self._barrier = tf.function(lambda: strategy.reduce(
                tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None))

    def _position(self, iterator=None):
        return tf.train.Checkpoint(input=iterator or self.iterator, batch_size=self.batch_size, skipped=self.skipped)

    def _start(self, make_dataset, skip):
        self.skipped.assign(skip)
        return iter(make_dataset(skip))

    def _resume(self, make_dataset, step, consumed):
        """An iterator at the position saved with checkpoint `step`, or as near as can be had."""
        if step == 0:
            return self._start(make_dataset, 0)
        prefix = input_position_prefix(self.output_dir, step, self.index, self.pipelines)
        if tf.io.gfile.exists(prefix + ".index"):
            reader = tf.train.load_checkpoint(prefix)
            saved = {name: int(reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))
                     for name in ("batch_size", "skipped") if reader.has_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")}
            wanted = int(self.batch_size.numpy())
            if saved.get("batch_size", wanted) != wanted:
                # Another --train_batch_size, --gradient_accumulation_steps or replica count (a rerun
                # after running out of memory, say): the saved batches are of the old size.
                logging.warning("Input position %s was saved with %d example(s) per replica and micro-batch, this "
                                "run has %d: continuing from the records consumed", prefix, saved["batch_size"],
                                wanted)
                return self._start(make_dataset, consumed)
            iterator = self._start(make_dataset, saved.get("skipped", 0))
            try:
                self._position(iterator).read(prefix).assert_consumed()
                logging.info("Input position restored from %s", prefix)
                return iterator
            except (tf.errors.OpError, AssertionError, ValueError) as e:
                logging.warning("Input position %s does not fit this input pipeline (%s); continuing from the "
                                "records consumed", prefix, cli.describe_error(e))
                self.batch_size.assign(wanted)
        else:
            saved = tf.io.gfile.glob(input_position_prefix(self.output_dir, step, "*", "*") + ".index")
            counts = sorted({int(re.search(r"-of-(\d+)\.index$", path).group(1)) for path in saved})
            if counts:
                logging.warning("Step %d was saved by %s input pipeline(s) and this run has %d: continuing with a "
                                "re-sharded input stream", step, "/".join(map(str, counts)), self.pipelines)
            else:
                logging.warning("No input position saved with step %d (a checkpoint from elsewhere): continuing "
                                "from the records consumed", step)
        return self._start(make_dataset, consumed)

    def next_batch(self):
        """The next global batch, per replica (called inside the training tf.function)."""
        if not self.saves_position:
            return next(self.iterator)
        local = [next(self.iterator) for _ in range(self.local_replicas)]
        if self.strategy.num_replicas_in_sync == 1:
            return local[0]
        return self.strategy.experimental_distribute_values_from_function(
            lambda context: local[context.replica_id_in_sync_group % self.local_replicas])

    def save_position(self, step):
        """Writes this pipeline's position for checkpoint `step`; waits for every worker's."""
        if not self.saves_position:
            return
        prefix = input_position_prefix(self.output_dir, step, self.index, self.pipelines)
        tf.io.gfile.makedirs(os.path.dirname(prefix))
        self._position().write(prefix)
        if self.pipelines > 1:
            self._barrier()


# --- Loops --------------------------------------------------------------------------------

class TrainingProgress:
    """Logs step, loss, examples/s and ETA, and writes TensorBoard summaries."""

    def __init__(self, output_dir, total_steps, batch_size, start_step, write_summaries):
        self.total_steps, self.batch_size = total_steps, batch_size
        self.start_step = start_step
        self.start_time = time.monotonic()
        self.output_dir, self.write_summaries = output_dir, write_summaries
        self.writer = None  # made at the first log: a run that fails before it leaves no events file
        self.memory_devices = _devices_with_memory_stats()

    def log(self, step, loss, learning_rate, steps_done, seconds):
        examples_per_sec = steps_done * self.batch_size / max(seconds, 1e-9)
        elapsed = time.monotonic() - self.start_time
        rate = (step - self.start_step) / max(elapsed, 1e-9)
        eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
        # Three significant digits below 10 examples/s (BERT-Large on a CPU makes 0.2).
        logging.info("step = %d/%d, loss = %.6f, lr = %.3g, examples/sec = %s, ETA %s%s",
                     step, self.total_steps, loss, learning_rate,
                     f"{examples_per_sec:.1f}" if examples_per_sec >= 10 else f"{examples_per_sec:.3g}",
                     _format_seconds(eta), _peak_memory_note(self.memory_devices))
        if self.write_summaries:
            if self.writer is None:
                self.writer = tf.summary.create_file_writer(self.output_dir)
            with self.writer.as_default(step=step):
                for name, value in (("loss", loss), ("learning_rate", learning_rate),
                                    ("examples_per_sec", examples_per_sec)):
                    _write_scalar_summary(name, value)
            self.writer.flush()


def _devices_with_memory_stats():
    """The devices whose allocator TensorFlow can report a peak for: the GPUs, or else the CPU
    when its allocator keeps statistics (the BFC allocator does: TF_CPU_ALLOCATOR_USE_BFC=true,
    which bench/bench_memory.py sets; whether the default one does depends on the build)."""
    devices = [f"GPU:{i}" for i in range(len(tf.config.list_logical_devices("GPU")))] or ["CPU:0"]
    try:
        for device in devices:
            tf.config.experimental.get_memory_info(device)
    except ValueError:  # "Allocator stats not available"
        return []
    return devices


def _peak_memory_note(devices):
    """', peak memory = N MB (DEVICE)': the most any one of `devices` has held since the process began."""
    if not devices:
        return ""
    peak, device = max((tf.config.experimental.get_memory_info(d)["peak"], d) for d in devices)
    return f", peak memory = {peak / 2**20:,.0f} MB ({device})"


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
    # 13 parameters: what a runner supplies (model, loss, data), the schedule and the hooks.
    """Trains `model` to `num_train_steps` optimizer steps, resuming if output_dir has a checkpoint.

    Args:
        strategy: from make_strategy (the model must have been built in its scope).
        config: EngineConfig.
        model: Keras layer holding every trainable variable, under original names.
        loss_fn: (model, features, training) -> scalar float32 loss of a per-replica batch.
        dataset_fn: (input_context, batch_size, skip_examples) -> tf.data.Dataset of feature
            dicts for one input pipeline, batch_size (one replica's micro-batch) examples per
            element; skip_examples, the records already trained on, is non-zero only when a
            resume found no saved input position (see training_dataset).
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
    _check_gradient_checkpointing(model, config.gradient_checkpointing)
    optimizer = _build_optimizer(strategy, config, model, learning_rate, num_train_steps, num_warmup_steps)
    chief = is_chief(strategy)
    step = restore_or_initialize(model, optimizer, output_dir, init_checkpoint)
    if step >= num_train_steps:
        logging.info("Training already done: global_step %d >= num_train_steps %d", step, num_train_steps)
        return None

    batches = TrainingInput(strategy, dataset_fn, micro_batch, train_batch_size, output_dir, step)
    train_loop = make_train_loop(strategy, model, loss_fn, optimizer, accumulation, config.use_xla,
                                  config.seed if config.seed is not None else 0, batches.next_batch)

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
        with _cluster_failures(batches.pipelines), _out_of_memory(config, step, boundary, train_batch_size,
                                                                  strategy.num_replicas_in_sync):
            loss = float(train_loop(tf.constant(steps, tf.int32)))
        if not np.isfinite(loss):
            raise ValueError(f"training diverged: loss is {loss} at step {boundary} (lower --learning_rate, or use "
                             f"more --num_warmup_steps)")
        step = int(inner.iterations.numpy())
        if step % config.log_steps == 0 or step == num_train_steps:
            progress.log(step, loss, float(inner.learning_rate), steps, time.monotonic() - started)
        if step % config.save_checkpoints_steps == 0 or step == num_train_steps:
            check_finite_weights(model, step)
            # Every worker saves its input position; the chief then names the step in
            # `checkpoint` only once all of them have (the barrier).
            with _cluster_failures(batches.pipelines):
                batches.save_position(step)
            if chief:
                save_training_checkpoint(output_dir, model, optimizer, config.keep_checkpoint_max)
        if step_callback is not None and callback_every_steps and (
                step % callback_every_steps == 0 or step == num_train_steps):
            step_callback(step)
    return loss


def _build_optimizer(strategy, config, model, learning_rate, num_train_steps, num_warmup_steps):
    """The run's optimizer (loss-scaled under mixed_float16), its slots built in the strategy's scope."""
    with strategy.scope():
        optimizer = optimization.create_optimizer(learning_rate, num_train_steps, num_warmup_steps,
                                                  optimizer_type=config.optimizer)
        if config.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    return optimizer


def _check_gradient_checkpointing(model, enabled):
    """With --gradient_checkpointing, raises ValueError unless every encoder in the model does it.

    The runner builds the model, so a runner that did not pass the flag on would otherwise
    train without it, silently.
    """
    if not enabled:
        return
    # Keras has no public walk over nested layers; _flatten_layers is what its own summary uses.
    encoders = [layer for layer in model._flatten_layers() if isinstance(layer, modeling.BertModel)]
    if not encoders or not all(encoder.gradient_checkpointing for encoder in encoders):
        raise ValueError("--gradient_checkpointing is set but the model has no BertModel built with "
                         "gradient_checkpointing=True: build it with the engine's setting")


@contextlib.contextmanager
def _out_of_memory(config, step, boundary, train_batch_size, replicas):
    """Turns a device's ResourceExhaustedError into one line: which steps, which batch, what to change.

    Nothing is written by a failed loop (checkpoints are saved between loops), so the
    output_dir keeps the last checkpoint, from which a rerun with the advice resumes.
    """
    try:
        yield
    except tf.errors.ResourceExhaustedError as e:
        micro = train_batch_size // (config.gradient_accumulation_steps * replicas)
        advice = []
        if not config.gradient_checkpointing:
            advice.append("--gradient_checkpointing (a quarter or less of the activations, ~1.3x the time)")
        if config.precision == "float32":
            advice.append("--precision=mixed_float16 on a GPU (mixed_bfloat16 on a TPU)")
        if micro > 1 and micro % 2 == 0:
            advice.append(f"--gradient_accumulation_steps={2 * config.gradient_accumulation_steps} (half the "
                          f"micro-batch, the same update)")
        advice.append("a smaller --max_seq_length")
        raise ValueError(f"out of memory in training step {step + 1}{f'-{boundary}' if boundary > step + 1 else ''} "
                         f"at train_batch_size={train_batch_size} ({micro} example(s) per replica and micro-batch, "
                         f"{replicas} replica(s)): {cli.describe_op_error(e)}; to use less memory: "
                         f"{'; '.join(advice)}") from None


@contextlib.contextmanager
def _cluster_failures(workers):
    """Turns the error a collective raises when another worker died into one line saying so.

    Any step, the input-position barrier included, can be the one that finds the peer gone.
    """
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
            tf.errors.InternalError, tf.errors.UnknownError) as e:
        if workers == 1:
            raise
        raise ValueError(f"a worker of the cluster stopped ({cli.describe_op_error(e)}); run every worker "
                         f"again to resume from the latest checkpoint") from None


def _next_multiple(step, every):
    return (step // every + 1) * every


def make_train_loop(strategy, model, loss_fn, optimizer, accumulation, use_xla, seed, next_batch):
    # 8 parameters: what one compiled training step closes over.
    """A tf.function running `steps` optimizer updates; returns their mean loss.

    The compiled step train() runs (public for bench/, which times it alone). `next_batch()`
    gives the next global (micro-)batch, per replica under a strategy; `accumulation`
    micro-batches make one update; `seed` keys the dropout masks with the step.
    """
    variables = model.trainable_variables
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    replicas = strategy.num_replicas_in_sync

    inner = getattr(optimizer, "inner_optimizer", optimizer)

    def gradients(features, micro_step):
        # Dropout masks keyed on (seed, update, micro-batch, replica): a resumed run redraws
        # exactly the masks of an uninterrupted one.
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
        draw = (tf.cast(inner.iterations, tf.int64) * accumulation + micro_step) * replicas + replica
        with tf.GradientTape() as tape, fused_kernels.dropout_seed(tf.stack([tf.constant(seed, tf.int64), draw])):
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
            for micro_step, features in enumerate(micro_batches[1:], 1):
                micro_loss, micro_grads = compiled_gradients(features, tf.constant(micro_step, tf.int64))
                loss += micro_loss
                grads = [_add_gradients(g, m) for g, m in zip(grads, micro_grads)]
            loss /= len(micro_batches)
            grads = [_scale_gradient(g, 1.0 / len(micro_batches)) for g in grads]
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    @tf.function
    def train_loop(steps):
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            micro_batches = [next_batch() for _ in range(accumulation)]
            per_replica = strategy.run(replica_step, args=(micro_batches,))
            total += strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)
        return total / tf.cast(steps, tf.float32)

    return train_loop


def _add_gradients(a, b):
    """a + b; two IndexedSlices stay slices (concatenated), as one larger batch's would be.

    The global-norm clip measures slices unsummed, as tf.clip_by_global_norm did for the
    original's embedding lookups, so accumulated micro-batches must hand the optimizer the
    slices one batch of their combined size would have, not their dense sum.
    """
    if a is None or b is None:  # a variable the loss does not reach (SQuAD's pooler)
        return a if b is None else b
    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
        return tf.IndexedSlices(tf.concat([a.values, b.values], 0),
                                tf.concat([a.indices, tf.cast(b.indices, a.indices.dtype)], 0), a.dense_shape)
    return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)


def _scale_gradient(gradient, factor):
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * factor, gradient.indices, gradient.dense_shape)
    return gradient * factor


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


def _loop_input(strategy, dataset):
    """`dataset` as the loops that call a step per batch (evaluate, predict) read it.

    Two things here made prediction on CPU idle part of the time, measured on a 2-CPU machine
    (TF 2.21, BERT-Mini, batches of 8 x 128: 23 ms each at full speed):
    - tf.data's model-based autotuning: with it on, about 3 in 10 runs took 40 ms a batch with
      the same CPU time; off (or with autotune.cpu_budget 1), none in 20. Off rather than a
      budget of 1, which would cap the input pipeline of a many-core host; without the tuner,
      AUTOTUNE parallelism is one call per core and prefetch buffers grow on demand.
    - OneDeviceStrategy's distributed dataset, even with autotuning off (and without its
      fetch to device): 3 in 9 runs 40% slower, and the first run of a process 10.9 instead of
      6.5 s in 3 of 4 processes. With one device there is nothing to distribute: the step
      takes the dataset's batches as they are (inputs reach a GPU inside the step).
    Training steps read their batches otherwise (see TrainingInput) and were not affected.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = dataset.with_options(options)
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return dataset
    return strategy.experimental_distribute_dataset(dataset)


def evaluate(strategy, model, metric_fn, dataset, max_steps=None):
    """Weighted means of metrics over `dataset` (a dataset of global batches).

    Args:
        metric_fn: (model, features) -> {name: (weighted_sum, weight)} for a per-replica batch.
        max_steps: batches to evaluate (None: the whole dataset).

    Returns:
        {name: float} = sum over batches of weighted_sum / sum of weight.
    """
    dist_dataset = _loop_input(strategy, dataset)

    def build(model_ref):
        # reduce_retracing: batches cut to their real length come in a few shapes; after
        # the first ones the step is traced once for any length.
        @tf.function(reduce_retracing=True)
        def step(features):
            per_replica = strategy.run(lambda f: metric_fn(model_ref(), f), args=(features,))
            return tf.nest.map_structure(lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None),
                                         per_replica)
        return step

    step = _cached_step(model, ("evaluate", strategy, metric_fn), build)

    sums = {}
    shapes = _ShapeLog("evaluation")
    for index, features in enumerate(dist_dataset):
        if max_steps is not None and index >= max_steps:
            break
        shapes.add(features)
        for name, (value, weight) in step(features).items():
            total, weights = sums.get(name, (0.0, 0.0))
            sums[name] = (total + float(value), weights + float(weight))
    shapes.log(step)
    # float32, printed as the original's Estimator metrics are (str of a numpy float32).
    return {name: np.float32(total / weight if weight else 0.0) for name, (total, weight) in sums.items()}


def predict(strategy, model, predict_fn, dataset, input_order=True):
    """Yields {name: numpy array [B, ...]} for each global batch of `dataset`, in order.

    A length-grouped dataset (input_pipeline.length_grouped_batches) runs its batches in
    length order; the outputs are yielded back in input order, a window at a time (the
    batches yielded then hold other rows than the input batches, same rows in all).

    Args:
        predict_fn: (model, features) -> {name: tensor [per-replica batch, ...]}.
        input_order: False: a length-grouped dataset's outputs come as the model makes them,
            each batch with its rows' input_pipeline.EXAMPLE_POSITION (dummy rows dropped),
            for a caller that orders what it makes of them (`in_input_order`).
    """
    grouped = input_pipeline.EXAMPLE_POSITION in dataset.element_spec
    dist_dataset = _loop_input(strategy, dataset)

    def build(model_ref):
        def replica_step(features):
            outputs = dict(predict_fn(model_ref(), features))
            if input_pipeline.EXAMPLE_POSITION in features:
                outputs[input_pipeline.EXAMPLE_POSITION] = features[input_pipeline.EXAMPLE_POSITION]
            return outputs

        def step(features):
            return strategy.run(replica_step, args=(features,))
        if signature is not None:
            return tf.function(step, input_signature=[signature])
        return tf.function(step, reduce_retracing=True)

    # Batches as the dataset makes them (one device): one trace for any batch and length of the
    # dataset's structure, and one step per structure in the cache (a spec with static shapes
    # would trace, and keep, a step per shape of one-batch datasets such as FeatureExtractor's
    # calls). Tracing per shape until reduce_retracing relaxed it traced (and optimized) the
    # model's graph twice.
    signature = None
    if isinstance(dist_dataset, tf.data.Dataset):
        signature = tf.nest.map_structure(lambda spec: tf.TensorSpec([None] * spec.shape.rank, spec.dtype),
                                          dataset.element_spec)
    step = _cached_step(model, ("predict", strategy, predict_fn, repr(signature)), build)

    def batches():
        shapes = _ShapeLog("prediction")
        for features in dist_dataset:
            shapes.add(features)
            outputs = step(features)
            yield {name: np.concatenate([t.numpy() for t in strategy.experimental_local_results(value)], axis=0)
                   for name, value in outputs.items()}
        shapes.log(step)

    if not grouped:
        yield from batches()
    elif input_order:
        yield from in_input_order(batches())
    else:
        yield from _real_rows(batches())


def _real_rows(batches):
    """The batches without their dummy rows (input_pipeline.EXAMPLE_POSITION -1)."""
    for batch in batches:
        real = batch[input_pipeline.EXAMPLE_POSITION] >= 0
        yield batch if real.all() else {name: values[real] for name, values in batch.items()}


def in_input_order(batches):
    """Re-yields length-sorted output batches in input order, as soon as a prefix is complete.

    Every output holds input_pipeline.EXAMPLE_POSITION [B]; positions are 0, 1, 2, ... in some
    order, a window at a time, so at most one window of outputs is held. Rows at position -1
    (the dummy rows that fill a window's last batch) are dropped. An output whose rows have
    the batch's length (SQuAD's logits [B, L]) is yielded as an object array of rows where
    the batches merged had different lengths.
    """
    position_key = input_pipeline.EXAMPLE_POSITION
    pending, next_position = [], 0
    for batch in _real_rows(batches):
        pending.append(batch)
        positions = np.concatenate([b[position_key] for b in pending])
        order = np.argsort(positions, kind="stable")
        ready = 0
        while ready < len(order) and positions[order[ready]] == next_position + ready:
            ready += 1
        if not ready:
            continue
        merged = {name: _rows([b[name] for b in pending]) for name in batch if name != position_key}
        yield {name: values[order[:ready]] for name, values in merged.items()}
        rest = order[ready:]
        pending = [dict({name: values[rest] for name, values in merged.items()},
                        **{position_key: positions[rest]})] if len(rest) else []
        next_position += ready
    if pending:
        raise RuntimeError(f"prediction outputs of input positions {sorted(pending[0][position_key])[:5]} ... "
                           f"never became contiguous")


def _rows(arrays):
    """The rows of `arrays` as one array: concatenated, or where their rows' shapes differ, an
    object array [N] of the rows."""
    if len({a.shape[1:] for a in arrays}) <= 1:
        return np.concatenate(arrays)
    rows = np.empty(sum(len(a) for a in arrays), object)
    for i, row in enumerate(row for a in arrays for row in a):
        rows[i] = row
    return rows


def run_ahead(iterable, depth=1):
    """Yields the items of `iterable`, made on a thread of their own up to `depth` items ahead.

    For a loop whose items come from the model (predict()) and whose body is slow Python
    (formatting, writing): TensorFlow releases the GIL while a step runs, so the model works
    on the next items while the caller handles this one. At most depth + 2 items exist at
    once (the caller's, `depth` waiting, the one being made). An exception of `iterable` is
    raised here, at its place in the sequence; when the caller stops early, the thread stops
    at its next item and `iterable` is closed.
    """
    items = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item):
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        iterator = iter(iterable)
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as e:  # handed to the caller's thread and raised there
            put((end, e))
        finally:
            getattr(iterator, "close", lambda: None)()

    thread = threading.Thread(target=produce, name="run_ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()


class _ShapeLog:
    """Counts the sequence lengths a loop ran at, and logs them with the step's trace count."""

    def __init__(self, what):
        self.what, self.lengths, self.shapes = what, collections.Counter(), set()

    def add(self, features):
        ids = features.get("input_ids") if isinstance(features, dict) else None
        if ids is None:
            return
        shapes = [tuple(value.shape) for value in tf.nest.flatten(ids, expand_composites=True)
                  if hasattr(value, "shape") and len(value.shape) == 2]  # one per replica
        if shapes:
            self.lengths[max(length for _, length in shapes)] += 1
            self.shapes.update(shapes)

    def log(self, step):
        if self.lengths:
            traces = step.experimental_get_tracing_count()
            logging.info("  %s: %d batch(es) at %d length(s) (%s), %d batch shape(s); step traced %d time(s) so far",
                         self.what, sum(self.lengths.values()), len(self.lengths),
                         ", ".join(f"{n}: {c}" for n, c in sorted(self.lengths.items())), len(self.shapes), traces)


# --- Script plumbing ----------------------------------------------------------------------

def ensure_output_dir(output_dir):
    """Creates output_dir and makes it this run's own, or fails with one clear line.

    Fails if it cannot be written or if another live run holds it (see lock_output_dir);
    then removes what a killed run left there under temporary names.
    """
    try:
        cli.make_directories(output_dir)
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
    if "://" in output_dir or not _is_chief_by_tf_config():
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


def _is_chief_by_tf_config():
    """Whether TF_CONFIG (if any) makes this process the chief (is_chief, before any strategy)."""
    try:
        config = read_tf_config()
    except ValueError:
        return True
    task = config.get("task") if isinstance(config.get("task"), dict) else {}
    return _is_chief_task(task.get("type"), task.get("index", 0), config.get("cluster") or {})


def check_finite_weights(model, step):
    """Raises ValueError when a weight is NaN or infinite (an update overflowed): never save it."""
    variables = model.trainable_variables
    finite = tf.stack([tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))) for v in variables]).numpy()
    bad = [getattr(v, "path", v.name) for v, ok in zip(variables, finite) if not ok]
    if bad:
        raise ValueError(f"training diverged: {len(bad)} weight(s) are NaN or infinite after step {step} (first: "
                         f"{bad[0]}); no checkpoint was saved for it (lower --learning_rate, or use more "
                         f"--num_warmup_steps)")
