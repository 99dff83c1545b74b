"""The model's fused kernels, and the small face the model's layers call.

Each function of the face computes one step of the paper's layers: `dense`, `dense_gelu`,
`attention_probs`, `dense_add_and_norm` (LayerNorm(residual + dropout(x @ kernel + bias))),
`layer_norm`, `dropout`, `label_log_probs`. When training it runs a custom-gradient pair of
small XLA functions (one fused loop forward, one backward) around TensorFlow's own matmuls.
In inference the matmuls, bias, GELU and softmax are TensorFlow's (Grappler fuses them into
oneDNN kernels) and each LayerNorm, with the bias and residual add before it, is one small
XLA loop. Inside `fused_kernels(False)` every step is the plain TensorFlow ops of the same
math: SavedModel exports are traced that way, so any TensorFlow runtime serves them. The
layers in modeling.py call the face and never choose between the two.

Dropout masks are keyed hashes of each element's position (`_DropoutMask`), drawn from
`dropout_seed`, so a resumed run redraws the masks of an uninterrupted one, and gradient
checkpointing (`recompute_in_backward`) redraws in the backward pass the masks of the
forward. Shape letters as in modeling.py; kernels take 2-D [rows, width] inputs.
"""

import contextlib
import math
import threading

import tensorflow as tf

# The original's LayerNorm epsilon (tf.contrib.layers.layer_norm's default).
LAYER_NORM_EPSILON = 1e-12


def shape_list(x):
    """Static dimensions as ints, dynamic ones as scalar tensors."""
    static = x.shape.as_list()
    dynamic = tf.shape(x)
    return [dim if dim is not None else dynamic[i] for i, dim in enumerate(static)]


_DROPOUT_SEEDS = threading.local()


@contextlib.contextmanager
def dropout_seed(seed):
    """Makes the dropout of the model calls inside this block a pure function of `seed`.

    Each dropout op traced in the block draws its mask from a stateless generator keyed
    on (`seed`, its position in the trace). The training engine passes a seed made of the
    run's seed and the global step: a run that resumes from a checkpoint then draws
    exactly the masks the uninterrupted run would have. Outside such a block each dropout
    op draws a fresh seed from TensorFlow's stateful generator (repeatable under
    `tf.random.set_seed`). The state is per thread, as tf.distribute runs each replica's
    function in a thread of its own.

    Args:
        seed: int64 tensor [2].
    """
    previous = getattr(_DROPOUT_SEEDS, "state", None)
    _DROPOUT_SEEDS.state = [tf.cast(seed, tf.int64), 0]
    try:
        yield
    finally:
        _DROPOUT_SEEDS.state = previous


def _next_dropout_seed():
    state = getattr(_DROPOUT_SEEDS, "state", None)
    if state is None:
        return tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64)
    state[1] += 1
    return state[0] + tf.constant([0, 1_000_003 * state[1]], tf.int64)


def recompute_in_backward(function, x):
    """`function(x)`, keeping only `x` for the backward pass, which runs `function` again.

    Gradient checkpointing: nothing that `function` computes on the way is kept for the
    gradient; the backward pass recomputes it from `x` under a tape of its own, then
    differentiates. The recomputation draws the same dropout masks as the first pass (both
    start from the dropout draw count this call found), and the calls after this one count on
    from where the first pass ended, so masks, loss and gradients are the plain call's (to
    rounding: XLA may fuse the recomputed ops otherwise). Outside a `dropout_seed` block the
    call draws one seed of its own, which both passes use.

    Args:
        function: float tensor -> float tensor, reading any variables; it must not change state
            (no assignments).
        x: float tensor, the only input the backward pass keeps.

    Returns:
        function(x).
    """
    state = getattr(_DROPOUT_SEEDS, "state", None)
    start = list(state) if state is not None else [
        tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64), 0]
    end = []

    def replay(x):
        previous = getattr(_DROPOUT_SEEDS, "state", None)
        _DROPOUT_SEEDS.state = list(start)
        try:
            y = function(x)
            end.append(_DROPOUT_SEEDS.state[1])
        finally:
            _DROPOUT_SEEDS.state = previous
        return y

    @tf.custom_gradient
    def checkpointed(x):
        with _stop_recording():  # eagerly, the tapes would otherwise keep every intermediate
            y = replay(x)

        def backward(dy, variables=None):
            x_again = _after(x, dy)
            variables = list(variables or [])
            with tf.GradientTape() as tape:
                tape.watch(x_again)
                tape.watch(variables)
                y_again = replay(x_again)
            grads = tape.gradient(y_again, [x_again] + variables, output_gradients=dy,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return (grads[0], grads[1:]) if variables else grads[0]
        return y, backward

    y = checkpointed(x)
    if state is not None:
        state[1] = end[0]
    return y


def _after(x, dy):
    """`x`, computed only once `dy` is: x + 0, the 0 made from one element of dy.

    The recomputation must wait for the gradient that reaches it (else the executor may run
    every layer's recomputation early, all alive at once), and its ops must differ from the
    first pass's (else Grappler's or XLA's common-subexpression elimination merges them and
    keeps the activations after all). A data dependency does both; XLA ignores control
    dependencies. `where(e == e, 0, nan)` is 0 for any finite or infinite e, and no compiler
    may fold it (e may be NaN).
    """
    first = tf.reshape(dy, [-1])[:1]
    zero = tf.where(tf.equal(first, first), 0.0, float("nan"))
    return x + tf.cast(tf.reduce_sum(zero), x.dtype)


def _stop_recording():
    """Pauses every gradient tape of this thread (tf.recompute_grad's own way; not public API)."""
    try:
        from tensorflow.python.eager import record  # pylint: disable=g-direct-tensorflow-import
        return record.stop_recording()
    except (ImportError, AttributeError):
        return contextlib.nullcontext()


class _DropoutMask:
    """A dropout mask as a keyed hash of each element's position: no random tensor at all.

    Element i of the tensor the mask is applied to is kept when hash(keys, i) >= threshold,
    the hash being two keyed rounds of a 32-bit integer mixer (Wellons' "lowbias32") over
    the flat position. Only the two keys come from TensorFlow's stateless Philox generator
    (seeded as the docstring of `dropout_seed` says); the per-element bits are computed
    inside the loops that apply the mask, forward and backward, so no random tensor is
    generated, stored or read (generating one float per element with Philox was the
    largest non-matmul cost of a training step). The drop probability is `rate` rounded to
    a multiple of 2^-32 and kept elements are scaled by 1 / keep probability, so the
    expected output equals the input.
    """

    def __init__(self, rate):
        if not 0 <= rate < 1:
            raise ValueError("dropout rate must be in [0, 1), got %r" % (rate,))
        self.threshold = min(int(round(rate * 2.0 ** 32)), 2 ** 32 - 1)
        self.scale = 2.0 ** 32 / (2 ** 32 - self.threshold)
        self.keys = tf.random.stateless_uniform([2], seed=_next_dropout_seed(), minval=None,
                                                maxval=None, dtype=tf.uint32)

    def apply(self, x):
        """Zeroes the dropped elements of `x` and scales the kept ones (plain ops)."""
        return _apply_dropout(x, self.keys, self.threshold, self.scale)


def _mix32(h):
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16)) * tf.constant(0x7FEB352D,
                                                                                tf.uint32)
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 15)) * tf.constant(0x846CA68B,
                                                                                tf.uint32)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))


def _dropout_keep(shape, keys, threshold):
    """bool mask of `shape` (a shape tensor): True where the element is kept."""
    position = tf.cast(tf.range(tf.reduce_prod(tf.cast(shape, tf.int64))), tf.uint32)
    h = _mix32(position * tf.constant(0x9E3779B9, tf.uint32) + keys[0])
    h = _mix32(tf.bitwise.bitwise_xor(h, keys[1]))
    return tf.reshape(h >= tf.constant(threshold, tf.uint32), shape)


def _apply_dropout(x, keys, threshold, scale):
    keep = _dropout_keep(tf.shape(x), keys, threshold)
    return tf.where(keep, x * tf.cast(scale, x.dtype), tf.zeros_like(x))


def dropout(x, rate, training):
    """Drops with probability `rate` (not a keep probability) only when training."""
    if not training or not rate:
        return x
    mask = _DropoutMask(rate)
    if not _fused_kernels_enabled:
        return mask.apply(x)
    return _fused_dropout(x, mask)


def gelu(x):
    """GELU in the tanh approximation, the form the original uses since Feb 2019.

    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). tf.nn.gelu's approximate form is
    this formula (equal to the original's ops in float32 in our tests) and is faster on
    CPU than spelling it out.
    """
    return tf.nn.gelu(x, approximate=True)


# ----------------------------------------------------------------------------------------
# Fused training kernels.
#
# Around its matmuls a training step runs element-wise chains (bias + GELU, dropout +
# residual + LayerNorm, mask + softmax + dropout, log-softmax + label pick) that autodiff
# turns into dozens of TensorFlow kernels, each a full pass over memory: a third of a
# BERT-Mini step on CPU. When training, each chain runs instead as a custom-gradient pair
# of small XLA functions, one fused loop forward and one backward, while the matmuls stay
# on TensorFlow's own (oneDNN) kernels (compiling the whole step with XLA instead is no
# faster on CPU). Statistics are computed in float32 whatever the compute dtype.
# Inference keeps the plain ops but for LayerNorm (see `_layer_norm_inference_kernel`):
# Grappler fuses bias, GELU and residual adds into the matmuls there. `fused_kernels(False)`
# switches to the plain ops (the same math) for exports, debugging and the tests comparing
# them.

_fused_kernels_enabled = True  # read when a model is traced; set by `fused_kernels`


@contextlib.contextmanager
def fused_kernels(enabled):
    """Turns the fused kernels on or off for models traced inside the block."""
    global _fused_kernels_enabled
    previous, _fused_kernels_enabled = _fused_kernels_enabled, bool(enabled)
    try:
        yield
    finally:
        _fused_kernels_enabled = previous


def _training_kernels(training):
    """Whether a layer call runs the fused training kernels (training, and not switched off)."""
    return training and _fused_kernels_enabled


def _inference_kernels(training):
    """Whether a layer call runs the inference LayerNorm kernel (inference, not switched off)."""
    return not training and _fused_kernels_enabled


def _dropout_mask(rate):
    """The `_DropoutMask` a fused kernel applies for `rate`; None when there is no dropout."""
    return _DropoutMask(rate) if rate else None


def _xla(function):
    return tf.function(function, jit_compile=True, autograph=False)


def _mask_arguments(mask):
    """A kernel's (keys, threshold, scale) for `mask`; None (no dropout) gives (None, 0, 1.0)."""
    return (mask.keys, mask.threshold, mask.scale) if mask else (None, 0, 1.0)


@_xla
def _dropout_kernel(x, keys, threshold, scale):
    return _apply_dropout(x, keys, threshold, scale)


def _fused_dropout(x, mask):
    @tf.custom_gradient
    def forward(x):
        def backward(dy):
            return _dropout_kernel(dy, *_mask_arguments(mask))
        return _dropout_kernel(x, *_mask_arguments(mask)), backward
    return forward(x)


_GELU_SCALE = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


@_xla
def _bias_gelu_kernel(x, bias):
    x32 = tf.cast(x, tf.float32) + tf.cast(bias, tf.float32)
    t = tf.tanh(_GELU_SCALE * (x32 + _GELU_CUBIC * x32 * x32 * x32))
    return tf.cast(0.5 * x32 * (1.0 + t), x.dtype)


@_xla
def _bias_gelu_grad_kernel(x, bias, dy):
    x32 = tf.cast(x, tf.float32) + tf.cast(bias, tf.float32)
    x2 = x32 * x32
    t = tf.tanh(_GELU_SCALE * (x32 + _GELU_CUBIC * x2 * x32))
    slope = 0.5 * (1.0 + t) + 0.5 * x32 * (1.0 - t * t) * _GELU_SCALE * (
        1.0 + 3.0 * _GELU_CUBIC * x2)
    dx = tf.cast(dy, tf.float32) * slope
    return tf.cast(dx, dy.dtype), tf.cast(tf.reduce_sum(dx, 0), bias.dtype)


def _fused_bias_gelu(x, bias):
    """`gelu(x + bias)` (tanh form) for 2-D x, derivative written out: one loop each way.

    The backward also sums the bias gradient in its loop (no separate BiasAddGrad pass).
    """
    @tf.custom_gradient
    def forward(x, bias):
        return _bias_gelu_kernel(x, bias), lambda dy: _bias_gelu_grad_kernel(x, bias, dy)
    # Tensors, not variables: the gradient then flows through the read to the variable.
    return forward(x, tf.convert_to_tensor(bias))


@_xla
def _layer_norm_kernel(x, bias, residual, keys, threshold, scale, gamma, beta):
    # 8 parameters: the tensors of one XLA kernel, which takes each as an argument.
    z = tf.cast(x, tf.float32)
    if bias is not None:
        z += tf.cast(bias, tf.float32)
    if keys is not None:
        z = _apply_dropout(z, keys, threshold, scale)
    z += tf.cast(residual, tf.float32)
    mean = tf.reduce_mean(z, -1, keepdims=True)
    centered = z - mean
    rstd = tf.math.rsqrt(tf.reduce_mean(tf.square(centered), -1, keepdims=True) +
                         LAYER_NORM_EPSILON)
    y = centered * rstd * gamma + beta
    return tf.cast(y, x.dtype), z, mean, rstd


@_xla
def _layer_norm_grad_kernel(dy, z, mean, rstd, gamma, keys, threshold, scale, with_bias):
    # 9 parameters: the tensors of one XLA kernel, which takes each as an argument.
    dy = tf.cast(dy, tf.float32)
    normalized = (z - mean) * rstd
    dbeta = tf.reduce_sum(dy, 0)
    dgamma = tf.reduce_sum(dy * normalized, 0)
    g = dy * gamma
    dz = rstd * (g - tf.reduce_mean(g, -1, keepdims=True) -
                 normalized * tf.reduce_mean(g * normalized, -1, keepdims=True))
    dx = dz if keys is None else _apply_dropout(dz, keys, threshold, scale)
    dbias = tf.reduce_sum(dx, 0) if with_bias else tf.zeros([0])
    return dx, dbias, dz, dgamma, dbeta


def _fused_layer_norm(x, bias, residual, mask, gamma, beta):
    """LayerNorm(dropout(x + bias) + residual) over the last axis of 2-D x, one loop each way.

    `bias` may be None; given, its gradient is summed in the backward loop.
    """
    keys, threshold, scale = _mask_arguments(mask)
    gamma, beta = tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta)

    def run(x, bias, residual, gamma, beta):
        y, z, mean, rstd = _layer_norm_kernel(x, bias, residual, keys, threshold, scale, gamma,
                                              beta)

        def backward(dy):
            dx, dbias, dz, dgamma, dbeta = _layer_norm_grad_kernel(
                dy, z, mean, rstd, gamma, keys, threshold, scale, bias is not None)
            grads = [tf.cast(dx, x.dtype), tf.cast(dz, residual.dtype), dgamma, dbeta]
            if bias is not None:
                grads.insert(1, tf.cast(dbias, bias.dtype))
            return grads
        return y, backward

    if bias is None:
        return tf.custom_gradient(lambda x, r, g, b: run(x, None, r, g, b))(x, residual, gamma,
                                                                              beta)
    return tf.custom_gradient(run)(x, tf.convert_to_tensor(bias), residual, gamma, beta)


@_xla
def _layer_norm_inference_kernel(x, bias, residual, gamma, beta):
    """LayerNorm(x + bias + residual) in float32 as one loop; `bias`, `residual` may be None.

    The plain ops take five passes over memory (mean, squared difference, variance,
    scale, shift) after the matmul, which is the largest non-matmul cost of inference;
    oneDNN's own LayerNorm fusion applies only to constant gamma and beta (frozen graphs).
    The shift is written as x * (gamma * rstd) + (beta - mean * gamma * rstd), the order
    of the original's tf.nn.batch_normalization.
    """
    z = tf.cast(x, tf.float32)
    if bias is not None:
        z += tf.cast(bias, tf.float32)
    if residual is not None:
        z += tf.cast(residual, tf.float32)
    mean = tf.reduce_mean(z, -1, keepdims=True)
    variance = tf.reduce_mean(tf.math.squared_difference(z, mean), -1, keepdims=True)
    inverse = tf.math.rsqrt(variance + LAYER_NORM_EPSILON) * gamma
    return tf.cast(z * inverse + (beta - mean * inverse), x.dtype)


@_xla
def _attention_probs_kernel(scores, score_scale, adder, keys, threshold, scale):
    probs = tf.nn.softmax(tf.cast(scores, tf.float32) * score_scale + adder)
    dropped = probs if keys is None else _apply_dropout(probs, keys, threshold, scale)
    return tf.cast(dropped, scores.dtype), probs


@_xla
def _attention_probs_grad_kernel(dy, probs, score_scale, keys, threshold, scale):
    d = tf.cast(dy, tf.float32)
    if keys is not None:
        d = _apply_dropout(d, keys, threshold, scale)
    return tf.cast(probs * (d - tf.reduce_sum(d * probs, -1, keepdims=True)) * score_scale,
                   dy.dtype)


def _fused_attention_probs(scores, score_scale, adder, mask):
    """dropout(softmax(scores * score_scale + adder)) in float32, one loop each way;
    `adder` gets no gradient."""
    keys, threshold, scale = _mask_arguments(mask)

    @tf.custom_gradient
    def forward(scores):
        out, probs = _attention_probs_kernel(scores, score_scale, adder, keys, threshold, scale)
        return out, lambda dy: _attention_probs_grad_kernel(dy, probs, score_scale, keys,
                                                            threshold, scale)
    return forward(scores)


def _fused_matmul(x, kernel, bias=None):
    """`x @ kernel (+ bias)` for 2-D x whose input gradient multiplies by an explicitly
    transposed kernel.

    Autodiff computes dx as `matmul(dy, kernel, transpose_b=True)`, and Grappler folds any
    transpose written before a matmul back into that flag; oneDNN's transposed-B GEMM is
    5-25% slower on BERT's weight shapes than multiplying by a transposed copy (measured
    on the [H, 4H] intermediate kernel at BERT-Mini batch 32). The copy costs one
    pass over the kernel; `Snapshot` keeps Grappler from folding it away. The bias add
    stays next to the matmul so Grappler still fuses the two in the forward pass.
    """
    def run(x, kernel, *bias):
        y = tf.matmul(x, kernel)
        if bias:
            y = tf.nn.bias_add(y, bias[0])

        def backward(dy):
            kernel_t = tf.raw_ops.Snapshot(input=tf.transpose(kernel))
            grads = [tf.matmul(dy, kernel_t), tf.matmul(x, dy, transpose_a=True)]
            return grads + [tf.reduce_sum(dy, 0)] if bias else grads
        return y, backward

    args = (x, tf.convert_to_tensor(kernel))
    if bias is not None:
        args += (tf.convert_to_tensor(bias),)
    return tf.custom_gradient(run)(*args)


def _label_hits(logits, labels):
    """[R, C] bool label indicator and [R] whether the label is within [0, C)."""
    depth = tf.shape(logits)[-1]
    hit = tf.range(depth)[tf.newaxis, :] == labels[:, tf.newaxis]
    return hit, (labels >= 0) & (labels < depth)


@_xla
def _label_log_prob_kernel(logits, labels):
    log_normalizer = tf.reduce_logsumexp(logits, -1)
    _, valid = _label_hits(logits, labels)  # XLA drops the unused [R, C] indicator
    depth = tf.shape(logits)[-1]
    picked = tf.gather(logits, tf.clip_by_value(labels, 0, depth - 1), batch_dims=1)
    return tf.where(valid, picked - log_normalizer, 0.0), log_normalizer


@_xla
def _label_log_prob_grad_kernel(logits, labels, log_normalizer, dy):
    hit, valid = _label_hits(logits, labels)
    dy = tf.where(valid, dy, 0.0)
    return dy[:, tf.newaxis] * (tf.cast(hit, tf.float32) -
                                tf.exp(logits - log_normalizer[:, tf.newaxis]))


def _fused_label_log_prob(logits, labels):
    """log_softmax(logits)[label] per row of float32 [R, C], without the [R, C] log-probs."""
    @tf.custom_gradient
    def forward(logits):
        picked, log_normalizer = _label_log_prob_kernel(logits, labels)
        return picked, lambda dy: _label_log_prob_grad_kernel(logits, labels, log_normalizer, dy)
    return forward(logits)


# ----------------------------------------------------------------------------------------
# The face: one function per step of the layers, fused when training.

def dense(x, kernel, bias, training=False):
    """`x @ kernel + bias` for x [..., in]; 2-D x when training runs the fused matmul."""
    if _training_kernels(training) and x.shape.rank == 2:
        return _fused_matmul(x, kernel, bias)
    y = tf.matmul(x, kernel) if x.shape.rank == 2 else tf.tensordot(x, kernel, axes=1)
    return tf.nn.bias_add(y, bias)


def dense_gelu(x, kernel, bias, training=False):
    """`gelu(x @ kernel + bias)` (tanh form); bias and GELU in one fused loop when training."""
    if _training_kernels(training) and x.shape.rank == 2:
        return _fused_bias_gelu(_fused_matmul(x, kernel), bias)
    return gelu(dense(x, kernel, bias))


def layer_norm(x, gamma, beta, training=False):
    """LayerNorm over the last axis in float32, cast back to x's dtype.

    Training (and inside `fused_kernels(False)`) uses the original's ops (moments, then
    batch_normalization); inference one fused loop of the same formula.
    """
    if _inference_kernels(training):
        return _layer_norm_inference_kernel(x, None, None, tf.convert_to_tensor(gamma),
                                            tf.convert_to_tensor(beta))
    dtype = x.dtype
    x = tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    y = tf.nn.batch_normalization(x, mean, variance, offset=beta, scale=gamma,
                                  variance_epsilon=LAYER_NORM_EPSILON)
    return tf.cast(y, dtype)


def dense_add_and_norm(x, kernel, bias, residual, dropout_rate, gamma, beta, training=False):
    # 8 parameters: the tensors of one fused sublayer step (dense, dropout, residual, LayerNorm).
    """A Transformer sublayer's output: LayerNorm(residual + dropout(x @ kernel + bias)).

    When training, the matmul is the fused one and bias, dropout, residual and LayerNorm
    run as one loop each way (the backward also sums the bias gradient); in inference
    bias, residual and LayerNorm run as one loop after TensorFlow's matmul.
    """
    if _training_kernels(training):
        return _fused_layer_norm(_fused_matmul(x, kernel), bias, residual, _dropout_mask(dropout_rate),
                                 gamma, beta)
    if _inference_kernels(training):
        return _layer_norm_inference_kernel(tf.matmul(x, kernel), tf.convert_to_tensor(bias), residual,
                                            tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta))
    return layer_norm(dropout(dense(x, kernel, bias), dropout_rate, training) + residual, gamma, beta,
                      training)


def attention_probs(scores, score_scale, adder, dropout_rate, training=False):
    """dropout(softmax(scores * score_scale + adder)) in float32.

    scores [B, N, S, S] (query-key dot products), score_scale a Python float (1/sqrt(D)),
    adder float32 broadcast to scores (0 for keys attended to, a large negative number for
    masked ones). In inference Grappler can fold the scale and mask into oneDNN's batched
    matmul (it does for some layers).
    """
    if _training_kernels(training):
        return _fused_attention_probs(scores, score_scale, adder, _dropout_mask(dropout_rate))
    probs = tf.nn.softmax(tf.cast(scores, tf.float32) * score_scale + adder)
    return dropout(probs, dropout_rate, training)


def label_log_probs(logits, labels):
    """log_softmax(logits) in float32 and the log-probability of each label.

    A label outside [0, C) picks nothing (log-probability 0), as the original's one-hot.
    The picked values come from a fused kernel that never writes the log-probabilities;
    those are computed only if the caller uses them (a traced graph drops them otherwise).
    """
    logits = tf.cast(logits, tf.float32)
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    labels = tf.cast(labels, tf.int32)
    if not _fused_kernels_enabled:
        depth = shape_list(log_probs)[-1]
        return log_probs, tf.reduce_sum(log_probs * tf.one_hot(labels, depth, dtype=tf.float32),
                                        -1)
    shape = shape_list(labels)
    depth = shape_list(logits)[-1]
    picked = _fused_label_log_prob(tf.reshape(logits, [-1, depth]), tf.reshape(labels, [-1]))
    return log_probs, tf.reshape(picked, shape)
