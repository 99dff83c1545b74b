"""BERT's optimizers: the original AdamWeightDecay, LAMB, and their learning-rate schedule.

This module owns how a gradient becomes a weight update: warmup then linear decay of the
learning rate, global-norm clipping, decoupled weight decay excluded by variable name, and
the `adam_m` / `adam_v` slots under the names the original checkpoints use.

Example:

    optimizer = optimization.create_optimizer(
        init_lr=5e-5, num_train_steps=1000, num_warmup_steps=100)
    optimizer.build(model.trainable_variables)
    with tf.GradientTape() as tape:
        loss = compute_loss(model, batch)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))  # clips, then updates
    optimizer.slot_variables()  # {"bert/.../kernel/adam_m": Variable, ...}
"""

import re

import keras
import tensorflow as tf

_ADAM_M = "adam_m"
_ADAM_V = "adam_v"

# What create_optimizer excludes from weight decay (and LAMB from layer adaptation), as the
# original: every LayerNorm beta/gamma and every bias, matched anywhere in the name.
DEFAULT_EXCLUDE_FROM_WEIGHT_DECAY = ("LayerNorm", "layer_norm", "bias")


def _checkpoint_name(variable):
    """The variable's name in a name-based checkpoint: its Keras path without `:0`."""
    name = getattr(variable, "path", None) or variable.name
    return re.sub(r":\d+$", "", name)


@keras.saving.register_keras_serializable(package="bert")
class LinearDecayWithWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """The original BERT schedule: linear warmup, then linear decay to 0 over all steps.

    For `step < num_warmup_steps`: `lr = init_lr * step / num_warmup_steps`; otherwise
    `lr = init_lr * (1 - min(step, num_train_steps) / num_train_steps)`. The decay horizon
    includes the warmup, so the rate drops slightly at `step == num_warmup_steps`, and it is
    exactly 0 at step 0 (the first update only moves the Adam moments). `step` is the
    optimizer's 0-based iteration count, i.e. the original's `global_step`.

    Example:

        schedule = LinearDecayWithWarmup(1e-4, num_train_steps=100, num_warmup_steps=10)
        float(schedule(5))   # 5e-05
        float(schedule(10))  # 9e-05
    """

    def __init__(self, init_lr, num_train_steps, num_warmup_steps=0):
        if num_train_steps is None or int(num_train_steps) < 1:
            raise ValueError(
                f"num_train_steps must be a positive integer, got {num_train_steps!r}."
            )
        if num_warmup_steps is not None and int(num_warmup_steps) < 0:
            raise ValueError(
                f"num_warmup_steps must be 0 or more, got {num_warmup_steps!r}."
            )
        self.init_lr = float(init_lr)
        self.num_train_steps = int(num_train_steps)
        self.num_warmup_steps = int(num_warmup_steps or 0)

    def __call__(self, step):
        # Computed in float32 in the original's order so the values match it bit for bit.
        step = tf.cast(step, tf.float32)
        init_lr = tf.constant(self.init_lr, tf.float32)
        decay_fraction = tf.minimum(step, float(self.num_train_steps)) / float(
            self.num_train_steps
        )
        learning_rate = init_lr * (1.0 - decay_fraction)
        if self.num_warmup_steps:
            warmup_learning_rate = init_lr * (step / float(self.num_warmup_steps))
            learning_rate = tf.where(
                step < float(self.num_warmup_steps), warmup_learning_rate, learning_rate
            )
        return learning_rate

    def get_config(self):
        return {
            "init_lr": self.init_lr,
            "num_train_steps": self.num_train_steps,
            "num_warmup_steps": self.num_warmup_steps,
        }


class _AdamMomentsOptimizer(keras.optimizers.Optimizer):
    """What AdamWeightDecay and Lamb share: named slots, exclusion by name, clipping.

    Slots: each variable gets two zero-initialised slots, exposed by `slot_variables()` under
    `<checkpoint name>/adam_m` and `<checkpoint name>/adam_v`, the names the original wrote.

    Clipping: `global_clipnorm` clips all gradients together by their global norm with
    `tf.clip_by_global_norm`, as the original. Keras' own `global_clipnorm` clips each
    replica's gradients before they are summed; here the clip is applied after the
    cross-replica sum, so a distributed step clips the same gradient a single device would.
    """

    def __init__(
        self,
        learning_rate,
        weight_decay_rate,
        beta_1,
        beta_2,
        epsilon,
        exclude_from_weight_decay,
        global_clipnorm,
        name,
        **kwargs,
    ):
        # 9 parameters: the optimizer's hyperparameters, as Keras optimizers take them.
        # Keras' own decay and per-variable clipping would act on top of ours (and clip
        # before the cross-replica sum), and its gradient accumulation would sum embedding
        # slices densely (training.py accumulates as one larger batch would), so only their
        # "unset" values are accepted; they still arrive from get_config/from_config.
        for keras_argument, replacement in (
            ("weight_decay", "`weight_decay_rate`"),
            ("clipnorm", "`global_clipnorm`"),
            ("clipvalue", "`global_clipnorm`"),
            ("gradient_accumulation_steps", "the training engine's --gradient_accumulation_steps"),
        ):
            if kwargs.pop(keras_argument, None) is not None:
                raise ValueError(
                    f"{type(self).__name__} does not take `{keras_argument}`; "
                    f"use {replacement}."
                )
        if isinstance(learning_rate, int):
            learning_rate = float(learning_rate)
        super().__init__(
            learning_rate=learning_rate,
            global_clipnorm=global_clipnorm,
            name=name,
            **kwargs,
        )
        self.weight_decay_rate = float(weight_decay_rate or 0.0)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self._decay_exclusions = list(exclude_from_weight_decay or [])

    def _do_use_weight_decay(self, name):
        if not self.weight_decay_rate:
            return False
        return not any(re.search(pattern, name) for pattern in self._decay_exclusions)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._slot_names = [_checkpoint_name(variable) for variable in var_list]
        self._adam_m, self._adam_v = self.add_optimizer_variables(
            var_list, [_ADAM_M, _ADAM_V]
        )
        # Decided once here from the checkpoint names: under tf.distribute, update_step
        # receives per-replica tf.Variables that no longer carry the Keras path.
        self._uses_weight_decay = [
            self._do_use_weight_decay(name) for name in self._slot_names
        ]

    def slot_variables(self):
        """Returns {"<checkpoint name>/adam_m" | "/adam_v": slot variable}, in build order.

        The returned Keras variables can be read, saved and assigned directly; after a
        restore, also restore the step with `optimizer.iterations.assign(global_step)`.
        """
        if not self.built:
            raise ValueError(
                "The optimizer has no slots yet; call "
                "optimizer.build(model.trainable_variables) first."
            )
        slots = {}
        for name, adam_m, adam_v in zip(self._slot_names, self._adam_m, self._adam_v):
            if f"{name}/{_ADAM_M}" in slots:
                raise ValueError(
                    f"Two trainable variables share the checkpoint name {name!r}; "
                    "give their layers distinct names."
                )
            slots[f"{name}/{_ADAM_M}"] = adam_m
            slots[f"{name}/{_ADAM_V}"] = adam_v
        return slots

    def set_slot_values(self, values):
        """Assigns slots from {"<checkpoint name>/adam_m" | "/adam_v": array} (a resume).

        Slots not named in `values` keep their current value (zeros for a new head).
        """
        slots = self.slot_variables()
        for name, value in values.items():
            if name not in slots:
                raise ValueError(
                    f"No optimizer slot named {name!r}; expected '<variable>/adam_m' or "
                    "'<variable>/adam_v' for a variable the optimizer was built with."
                )
            value_shape = tuple(tf.convert_to_tensor(value).shape)
            if tuple(slots[name].shape) != value_shape:
                raise ValueError(
                    f"Slot {name!r} has shape {tuple(slots[name].shape)} but the value "
                    f"has shape {value_shape}."
                )
            slots[name].assign(value)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        # Keras' method feeds Keras' own weight decay, which this optimizer does not use.
        raise ValueError(
            "Pass exclude_from_weight_decay=[patterns] to the optimizer's constructor."
        )

    def _clip_gradients(self, grads):
        # Deferred to _backend_update_step, after the cross-replica sum.
        return grads

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # Mirrors Keras' TensorFlow optimizer, with the global-norm clip placed after the
        # all-reduce: replicas then all apply the clipped sum, as the original's one device.
        trainable_variables = [_backend_variable(variable) for variable in trainable_variables]
        grads_and_vars = self._all_reduce_sum_gradients(
            list(zip(grads, trainable_variables))
        )
        clip_scale = _global_clip_scale(grads_and_vars, self.global_clipnorm) if self.global_clipnorm else None
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._update_variables,
            self._distribution_strategy,
            grads_and_vars,
            learning_rate,
            clip_scale,
        )

    def _update_variables(self, distribution, grads_and_vars, learning_rate, clip_scale):
        # Keras' _distributed_tf_update_step, with the clip factor as an argument of its own.
        for grad, var in grads_and_vars:
            distribution.extended.update(
                var, self._clipped_update_step, args=(grad, learning_rate, clip_scale), group=False
            )

    def _clipped_update_step(self, variable, gradient, learning_rate, clip_scale):
        return self.apply_update(gradient, variable, learning_rate, clip_scale)

    def update_step(self, gradient, variable, learning_rate):
        # Keras' entry point, for a caller that steps the optimizer without the merge above.
        return self.apply_update(gradient, variable, learning_rate, None)

    def apply_update(self, gradient, variable, learning_rate, clip_scale):
        """Updates `variable` from its summed `gradient`, scaled by `clip_scale` (the global-norm
        clip factor; None: no clipping), at `learning_rate`."""
        raise NotImplementedError

    def _update_moments(self, gradient, variable):
        """Updates adam_m and adam_v from the dense `gradient`; returns their new values."""
        index = self._get_variable_index(variable)
        adam_m, adam_v = self._adam_m[index], self._adam_v[index]
        next_m = self.beta_1 * adam_m + (1.0 - self.beta_1) * gradient
        next_v = self.beta_2 * adam_v + (1.0 - self.beta_2) * tf.square(gradient)
        self.assign(adam_m, next_m)
        self.assign(adam_v, next_v)
        return next_m, next_v

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "weight_decay_rate": self.weight_decay_rate,
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "exclude_from_weight_decay": self._decay_exclusions or None,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="bert")
class AdamWeightDecay(_AdamMomentsOptimizer):
    """Adam with decoupled weight decay, exactly as the original BERT (no bias correction).

    Per variable `w` with gradient `g` and learning rate `lr`:

        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        update = m / (sqrt(v) + epsilon)          # no 1 - beta**t terms
        update += weight_decay_rate * w           # unless re.search(pattern, name) matches
        w -= lr * update

    `name` is the variable's checkpoint name (`variable.path`), e.g.
    `bert/encoder/layer_0/attention/output/LayerNorm/gamma`. With `global_clipnorm`, all
    gradients are first clipped together to that global norm (after the cross-replica sum).
    The caller does not clip again.

    Example:

        optimizer = AdamWeightDecay(
            learning_rate=LinearDecayWithWarmup(5e-5, 1000, 100),
            weight_decay_rate=0.01,
            exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"],
            global_clipnorm=1.0,
        )
    """

    def __init__(
        self,
        learning_rate,
        weight_decay_rate=0.0,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        exclude_from_weight_decay=None,
        global_clipnorm=None,
        name="AdamWeightDecay",
        **kwargs,
    ):
        # 9 parameters: the optimizer's hyperparameters, as Keras optimizers take them.
        super().__init__(
            learning_rate=learning_rate,
            weight_decay_rate=weight_decay_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            exclude_from_weight_decay=exclude_from_weight_decay,
            global_clipnorm=global_clipnorm,
            name=name,
            **kwargs,
        )

    def apply_update(self, gradient, variable, learning_rate, clip_scale):
        index = self._get_variable_index(variable)
        decay = self.weight_decay_rate if self._uses_weight_decay[index] else 0.0
        arguments = (_dense_gradient(gradient, variable), clip_scale,
                     tf.cast(learning_rate, variable.dtype), float(self.beta_1),
                     float(self.beta_2), float(self.epsilon), decay)
        variable = _backend_variable(variable)
        adam_m = _local_component(self._adam_m[index], variable)
        adam_v = _local_component(self._adam_v[index], variable)
        if not any(isinstance(v, tf.distribute.DistributedValues)
                   for v in (variable, adam_m, adam_v)):
            _adam_weight_decay_in_place(variable, adam_m, adam_v, *arguments)
            return
        # A distribution whose update hands out variables we cannot resolve to one device
        # (none of those tested here): the same loop, assigned through Keras.
        new_value, next_m, next_v = _adam_weight_decay_kernel(
            tf.convert_to_tensor(variable), tf.convert_to_tensor(adam_m),
            tf.convert_to_tensor(adam_v), *arguments)
        self.assign(self._adam_m[index], next_m)
        self.assign(self._adam_v[index], next_v)
        self.assign(variable, new_value)


def _backend_variable(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


def _local_component(slot, variable):
    """The slot's copy on `variable`'s device when the slot is mirrored (tf.distribute
    updates each device's copy of a variable in turn), else the slot itself."""
    slot = _backend_variable(slot)
    if isinstance(slot, tf.distribute.DistributedValues) and not isinstance(
            variable, tf.distribute.DistributedValues):
        for component in tf.distribute.get_strategy().experimental_local_results(slot):
            if component.device == variable.device:
                return component
    return slot


def _dense_gradient(gradient, variable):
    # Sparse gradients (embedding lookups) become dense, as in the original: every row's
    # moments decay at every step.
    return tf.cast(tf.convert_to_tensor(gradient), variable.dtype)


def _global_clip_scale(grads_and_vars, clip_norm):
    """tf.clip_by_global_norm's factor for the summed gradients (NaN when their norm is not
    finite, as there), applied inside each variable's update rather than as one more pass over
    every gradient."""
    norm = tf.linalg.global_norm([grad for grad, _ in grads_and_vars])
    clip_norm = tf.cast(clip_norm, norm.dtype)
    scale = clip_norm * tf.minimum(1.0 / norm, 1.0 / clip_norm)
    return scale + (norm - norm)


def _clipped(gradient, clip_scale):
    """`gradient` times the global-norm clip factor (None: no clipping)."""
    if clip_scale is None:
        return gradient
    return gradient * tf.cast(clip_scale, gradient.dtype)


def _adam_weight_decay_math(value, m, v, gradient, clip_scale, learning_rate, beta_1, beta_2,
                            epsilon, decay):
    # 10 parameters: the tensors and hyperparameters of one update, as the original's formula names them.
    """One AdamWeightDecay update as a single fused loop: (new value, new m, new v).

    The class docstring's formula in its order of operations, the gradient first multiplied
    by `clip_scale` (the global-norm clip factor, None without clipping); as TensorFlow ops
    it would be about ten passes over each variable per step.
    """
    gradient = _clipped(gradient, clip_scale)
    next_m = beta_1 * m + (1.0 - beta_1) * gradient
    next_v = beta_2 * v + (1.0 - beta_2) * tf.square(gradient)
    update = next_m / (tf.sqrt(next_v) + epsilon)
    if decay:
        update += decay * value
    return value - learning_rate * update, next_m, next_v


_adam_weight_decay_kernel = tf.function(_adam_weight_decay_math, jit_compile=True,
                                        autograph=False)


@tf.function(jit_compile=True, autograph=False)
def _adam_weight_decay_in_place(variable, m, v, *arguments):
    """`_adam_weight_decay_math` writing into the variables' own buffers (XLA aliases
    them), faster than new buffers assigned afterwards."""
    new_value, next_m, next_v = _adam_weight_decay_math(
        variable.read_value(), m.read_value(), v.read_value(), *arguments)
    m.assign(next_m)
    v.assign(next_v)
    variable.assign(new_value)


@keras.saving.register_keras_serializable(package="bert")
class Lamb(_AdamMomentsOptimizer):
    """LAMB (You et al., 2019), as tensorflow-addons' LAMB and NVIDIA's BERT implement it.

    Per variable `w` with gradient `g`, learning rate `lr` and `t = iterations + 1`:

        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        m_hat = m / (1 - beta_1**t)
        v_hat = v / (1 - beta_2**t)
        update = m_hat / (sqrt(v_hat) + epsilon)
        update += weight_decay_rate * w           # unless excluded from weight decay
        ratio = ||w|| / ||update||                # L2 norms over the whole variable;
                                                  # 1.0 if either is 0, or if excluded
                                                  # from layer adaptation
        w -= ratio * lr * update

    Exclusions use `re.search(pattern, name)` on the checkpoint name. As in
    tensorflow-addons, `exclude_from_layer_adaptation` defaults to
    `exclude_from_weight_decay`, so LayerNorm and bias variables take plain Adam steps.
    Slots are the bias-uncorrected moments `m` and `v`, named `<name>/adam_m`, `<name>/adam_v`.
    """

    def __init__(
        self,
        learning_rate,
        weight_decay_rate=0.0,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        exclude_from_weight_decay=None,
        exclude_from_layer_adaptation=None,
        global_clipnorm=None,
        name="Lamb",
        **kwargs,
    ):
        # 10 parameters: the optimizer's hyperparameters, as Keras optimizers take them.
        super().__init__(
            learning_rate=learning_rate,
            weight_decay_rate=weight_decay_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            exclude_from_weight_decay=exclude_from_weight_decay,
            global_clipnorm=global_clipnorm,
            name=name,
            **kwargs,
        )
        self._adaptation_exclusions = list(
            exclude_from_layer_adaptation
            if exclude_from_layer_adaptation is not None
            else self._decay_exclusions
        )

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._uses_layer_adaptation = [
            not any(re.search(pattern, name) for pattern in self._adaptation_exclusions)
            for name in self._slot_names
        ]

    def apply_update(self, gradient, variable, learning_rate, clip_scale):
        gradient = _clipped(_dense_gradient(gradient, variable), clip_scale)
        next_m, next_v = self._update_moments(gradient, variable)
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, variable.dtype)
        m_hat = next_m / (1.0 - tf.pow(tf.cast(self.beta_1, variable.dtype), step))
        v_hat = next_v / (1.0 - tf.pow(tf.cast(self.beta_2, variable.dtype), step))
        update = m_hat / (tf.sqrt(v_hat) + self.epsilon)
        if self._uses_weight_decay[index]:
            update += self.weight_decay_rate * variable
        learning_rate = tf.cast(learning_rate, variable.dtype)
        if self._uses_layer_adaptation[index]:
            weight_norm = tf.norm(variable)
            update_norm = tf.norm(update)
            trust_ratio = tf.where(
                (weight_norm > 0.0) & (update_norm > 0.0),
                weight_norm / update_norm,
                tf.ones_like(weight_norm),
            )
            learning_rate = trust_ratio * learning_rate
        self.assign_sub(variable, learning_rate * update)

    def get_config(self):
        config = super().get_config()
        config["exclude_from_layer_adaptation"] = self._adaptation_exclusions
        return config


def create_optimizer(
    init_lr,
    num_train_steps,
    num_warmup_steps,
    optimizer_type="adamw",
    weight_decay_rate=0.01,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-6,
    exclude_from_weight_decay=DEFAULT_EXCLUDE_FROM_WEIGHT_DECAY,
    clip_norm=1.0,
):
    # 10 parameters: the original's create_optimizer settings, as keywords.
    """Builds the optimizer every BERT runner trains with, configured as the original.

    Args:
      init_lr: peak learning rate (`--learning_rate`).
      num_train_steps: total optimizer steps; the decay reaches 0 here (warmup included).
      num_warmup_steps: steps of linear warmup from 0; 0 or None for none.
      optimizer_type: "adamw" (the original AdamWeightDecay) or "lamb".
      weight_decay_rate: decoupled weight decay, 0.01 as the original.
      beta_1, beta_2, epsilon: Adam moments' decay rates and denominator epsilon.
      exclude_from_weight_decay: regex patterns; a variable whose checkpoint name matches
        any of them gets no weight decay (and, for LAMB, no layer adaptation).
      clip_norm: global-norm clip applied by the optimizer itself to all gradients
        together (after the cross-replica sum); callers must not clip again. None disables.

    Returns:
      An `AdamWeightDecay` or `Lamb` driven by `LinearDecayWithWarmup`.
    """
    if isinstance(optimizer_type, (int, float)):  # num_warmup_steps: the original's (loss, init_lr, steps, warmup)
        raise TypeError("create_optimizer(loss, init_lr, num_train_steps, num_warmup_steps, use_tpu) was TF1-only "
                        "(it returned a train_op); here create_optimizer(init_lr, num_train_steps, "
                        "num_warmup_steps) returns a Keras optimizer: call its apply_gradients(zip(grads, vars))")
    schedule = LinearDecayWithWarmup(init_lr, num_train_steps, num_warmup_steps)
    optimizer_classes = {"adamw": AdamWeightDecay, "lamb": Lamb}
    if optimizer_type not in optimizer_classes:
        raise ValueError(
            f"Unknown optimizer_type {optimizer_type!r}; expected 'adamw' or 'lamb'."
        )
    return optimizer_classes[optimizer_type](
        learning_rate=schedule,
        weight_decay_rate=weight_decay_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        exclude_from_weight_decay=list(exclude_from_weight_decay or []),
        global_clipnorm=clip_norm,
    )


# --- The original's names (issue 23) -----------------------------------------------------------


class AdamWeightDecayOptimizer(AdamWeightDecay):
    """The original's class name and arguments for `AdamWeightDecay` (same update, no bias correction).

    `apply_gradients(grads_and_vars, global_step=None, name=None)` as the original's: the
    optimizer counts its own iterations, so `global_step` is not incremented (the original
    left that to `create_optimizer` too).
    """

    def __init__(self, learning_rate, weight_decay_rate=0.0, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 exclude_from_weight_decay=None, name="AdamWeightDecayOptimizer", **kwargs):
        # 8 parameters: the optimizer's hyperparameters, as Keras optimizers take them.
        super().__init__(learning_rate=learning_rate, weight_decay_rate=weight_decay_rate, beta_1=beta_1,
                         beta_2=beta_2, epsilon=epsilon, exclude_from_weight_decay=exclude_from_weight_decay,
                         name=name, **kwargs)

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        del global_step, name  # TF1 graph arguments
        return super().apply_gradients(list(grads_and_vars))
