"""The comparison of benchmarks/train_step.py in rounds, and the matrix-product limit of a training step.

On a shared machine one measurement says more about the moment than about the code: two single-shot invocations
an hour apart disagreed by up to 2.6x on a ratio. So each round measures both sides of every cell back to back,
each in a fresh process, ours first in even rounds and theirs first in odd ones, and a cell's answer is the median
of its per-round ratios with their range.

A step's matrix products are listed with the shapes the step runs them at (`step_products`): per layer and view,
the four attention projections, the two feed-forward products, the attention scores and context (batched over
sentences and heads), then the pooler; the backward pass runs two products of each forward one's size (the
gradients of both operands). Their FLOPs are the benchmark's analytic count; timed alone on this machine they give
the least time the step can take (`limit_seconds`), and what a step takes beyond it is the cost of the rest.
"""

import collections
import dataclasses
import statistics
import time

SIDES = ("ours", "theirs")
# Timed passes of an encoding, of which the median is taken: whole passes of our encoding took either 3.4-3.7 s or
# 5.2-5.3 s, within one process as across processes (AMX Xeon, 2026-12-03).
ENCODE_PASSES = 3
# glibc's malloc hands a buffer over its mmap threshold (dynamic, at most 32 MiB) back to the kernel when freed,
# and trims the heap's free top, so a step that frees and re-allocates its activations (a [12288, 2048] float32
# feed-forward one is 96 MiB) faults every page in again. PyTorch's steps do: its bfloat16 supervised step took
# 2.5-3.7 s after its fifth step with glibc's defaults, 2.3-2.5 s with both thresholds fixed at 4 GiB; ours took
# 2.9-3.3 s either way (AMX Xeon, 2026-12-03). Each alone still faults.
MALLOC_THRESHOLDS = {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(4 << 30)}


def round_order(round_index):
    """The order of the two sides in round `round_index`: ours first in even rounds, theirs first in odd ones."""
    return SIDES if round_index % 2 == 0 else SIDES[::-1]


def run_rounds(cells, measure, rounds):
    """{cell: {"ours": [seconds, a round each], "theirs": [...]}} of `rounds` rounds; `cells` is {cell: {"ours":
    job, "theirs": job}}, `measure(job)` the seconds of one job (in a fresh process). Every round measures every
    cell's two sides one right after the other."""
    seconds = {cell: {side: [] for side in SIDES} for cell in cells}
    for round_index in range(rounds):
        for cell, jobs in cells.items():
            for side in round_order(round_index):
                seconds[cell][side].append(measure(jobs[side]))
    return seconds


def summary(ours, theirs):
    """A cell's answer from its per-round seconds: the median of the per-round ratios theirs / ours (above 1: ours
    is faster) with their min and max, and each side's median seconds."""
    ratios = [their / our for our, their in zip(ours, theirs, strict=True)]
    return {
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ours_s": statistics.median(ours),
        "theirs_s": statistics.median(theirs),
    }


# === The matrix products of a step ===


@dataclasses.dataclass(frozen=True)
class Product:
    """`batch` matrix products [m, k] x [k, n]."""

    batch: int
    m: int
    k: int
    n: int

    def flops(self):
        return 2 * self.batch * self.m * self.k * self.n

    def gradients(self):
        """The two products of the backward pass: dA = dC B^T [m, n] x [n, k], dB = A^T dC [k, m] x [m, n]."""
        return Product(self.batch, self.m, self.n, self.k), Product(self.batch, self.k, self.m, self.n)


def median_pass_seconds(encode_all):
    """The median seconds of ENCODE_PASSES calls of `encode_all`."""
    seconds = []
    for _ in range(ENCODE_PASSES):
        start = time.perf_counter()
        encode_all()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def forward_products(config, sentences, length):
    """The products of one encoder pass over `sentences` sentences of `length` tokens: each layer's on
    [sentences * length, hidden] rows (as model.TransformerLayer runs them), its attention per sentence and head,
    and the pooler over [CLS]."""
    h, i, heads = config.hidden_size, config.intermediate_size, config.num_attention_heads
    rows, head_size = sentences * length, h // heads
    layer = [
        *[Product(1, rows, h, h)] * 4,  # query, key, value, attention output
        Product(1, rows, h, i),  # intermediate
        Product(1, rows, i, h),  # output
        Product(sentences * heads, length, head_size, length),  # scores: queries x keys^T
        Product(sentences * heads, length, length, head_size),  # context: probabilities x values
    ]
    return layer * config.num_hidden_layers + [Product(1, sentences, h, h)]


def step_products(config, batch_size, length, views):
    """{Product: how many times a training step runs it}: `views` encoder passes of `batch_size` sentences each
    (simcse.SimCSE encodes each view in a pass of its own), forward and backward."""
    counts = collections.Counter()
    for product in forward_products(config, batch_size, length):
        counts[product] += views
        for gradient in product.gradients():
            counts[gradient] += views
    return counts


def step_flops(products):
    return sum(product.flops() * count for product, count in products.items())


def limit_seconds(products, seconds_per_product):
    """The least time the products take: each one's measured seconds (`seconds_per_product`) times its count."""
    return sum(seconds_per_product[product] * count for product, count in products.items())


def product_seconds(products, precision, repeats):
    """{Product: median seconds of one run of it} on this machine, each timed alone in a traced function on
    random operands of the step's compute type (bfloat16 under mixed_bfloat16), after one untimed run, less the
    fixed cost of calling a traced function (the median time of a 1 x 1 x 1 product), which a step's products,
    all in one graph, do not pay."""
    import time

    import tensorflow as tf

    dtype = tf.bfloat16 if precision == "mixed_bfloat16" else tf.float32

    @tf.function(reduce_retracing=True)
    def corner(a, b):
        return tf.reshape(tf.matmul(a, b), [-1])[0]  # one element out: the product is computed, not copied back

    def median_seconds(product):
        # A single product as a plain MatMul, as the dense layers run it; batched ones as BatchMatMul.
        batch = [product.batch] if product.batch > 1 else []
        a = tf.cast(tf.random.normal([*batch, product.m, product.k]), dtype)
        b = tf.cast(tf.random.normal([*batch, product.k, product.n]), dtype)
        float(corner(a, b))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            float(corner(a, b))
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    call = median_seconds(Product(1, 1, 1, 1))
    return {product: max(median_seconds(product) - call, 0.0) for product in products}
