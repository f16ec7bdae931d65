"""Times our SimCSE training step against the same step in PyTorch + transformers, and our evaluate-time encoding
against sentence-transformers, in rounds on this machine; with --pipeline, our input pipeline.

    python -m pip install -r benchmarks/requirements.txt
    python benchmarks/train_step.py --data_dir=/tmp/tfds \
        --vocab_path=PATH/TO/vocab_char_16424.txt

The comparison runs in --rounds rounds (benchmarks/rounds.py): each round times both sides of every cell (each
precision and kind of step, and the encoding) back to back, each in a fresh process, ours first in even rounds and
theirs first in odd ones; a cell's ratio is the median over rounds of theirs / ours (above 1: ours is faster),
with its min and max. A step time is the median of --steps steps after --warmup_steps; it is a full optimizer step
(forward, backward, Adam update), as training runs it. An encoding time is the median of rounds.ENCODE_PASSES passes
over the sentences after a warm-up batch.

FLOPs are counted analytically, a multiply-add being 2: a sentence of L tokens through N layers of hidden size
H and intermediate size I costs, forward, N (8 L H^2 + 4 L H I + 4 L^2 H) + 2 H^2 (projections, feed-forward,
attention scores and context, pooler); a training step is 3x the forward (the backward pass is twice the
forward) over every sentence it encodes: 2B for unsupervised SimCSE, 3B for supervised (B = --batch_size).
Embedding look-ups, softmax, LayerNorm and the optimizer are not counted. The same products, each timed alone at
the shapes the step runs them (in a fresh process per precision), give the step's matrix-product limit: the least
time the step can take on this machine, and the share of each measured step it accounts for.

With --pipeline, instead of the comparison: our step on the tf.data pipeline's batches against synthetic ids, and
the sentences per second the pipeline alone delivers, each once.

With --profile_dir, nothing is timed: our step of each kind and precision runs under the TensorFlow profiler and
the share of each op type, and of each place in the model, in its op time is printed.

With --memory_batches, instead of the comparison: our unsupervised step for each batch size, or batch size with
gradient caching (BATCH/MINI_BATCH, --mini_batch_size), each in a fresh process, with its peak memory (the
process's maximum resident set, ru_maxrss) and what the steps added to it, and its time:

    python benchmarks/train_step.py --memory_batches=64,512/64,512 --precisions=float32 --steps=3 --warmup_steps=1
"""

import collections
import concurrent.futures
import json
import multiprocessing
import os
import pathlib
import re
import resource
import statistics
import sys
import tempfile
import time
import types

import rounds
from absl import app, flags, logging

REPO = pathlib.Path(__file__).resolve().parent.parent
# The benchmark measures the repository's own modules, whichever directory it is started from.
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS
flags.DEFINE_string("config", str(REPO / "configs" / "benchmark_4l_512h.json"), "Google-format bert_config.json.")
flags.DEFINE_integer("batch_size", 64, "Sentences (unsupervised) or triples (supervised) per step.")
flags.DEFINE_integer("max_sequence_length", 64, "Tokens per sentence, [CLS] and [SEP] included.")
flags.DEFINE_list(
    "precisions",
    ["float32", "mixed_bfloat16"],
    "Precisions of the training steps, each measured (mixed_bfloat16: bfloat16 autocast for PyTorch).",
)
flags.register_validator(
    "precisions",
    lambda values: values and set(values) <= {"float32", "mixed_bfloat16"},
    message="a comma-separated list of float32, mixed_bfloat16",
)
flags.DEFINE_integer(
    "rounds", 5, "Rounds of the comparison: both sides of every cell, order alternating.", lower_bound=1
)
flags.DEFINE_integer(
    "steps", 1, "Timed steps per measurement, after the warm-up steps (the rounds repeat them).", lower_bound=1
)
# Four: with glibc's thresholds fixed, PyTorch's bfloat16 supervised step took 4.1-4.9, 2.7-3.0, 2.4-2.6 s at its
# second to fourth steps and 2.3-2.5 s after (AMX Xeon, 2026-12-03); ours is as fast at its second as after.
flags.DEFINE_integer("warmup_steps", 4, "Untimed steps first (tracing, allocation, caches).", lower_bound=1)
flags.DEFINE_boolean(
    "fixed_malloc_thresholds",
    True,
    "Run the comparison's processes with glibc malloc's mmap and trim thresholds fixed (rounds.MALLOC_THRESHOLDS), "
    "so freed memory is reused instead of being returned to the kernel and faulted in again at every step.",
)
flags.DEFINE_integer("matmul_repeats", 10, "Timed runs of each matrix product of the step's matrix-product limit.")
flags.DEFINE_boolean(
    "pipeline",
    False,
    "Instead of the comparison: our step on tf.data pipeline batches against synthetic ids, and the pipeline alone.",
)
flags.DEFINE_string(
    "vocab_path", "KR-BERT-char16424/vocab_char_16424.txt", "BERT vocab file of the config's size (KR-BERT's release)."
)
flags.DEFINE_string("data_dir", None, "TFDS data directory with korean_wikipedia_corpus and kornli prepared.")
flags.DEFINE_string("nli_split", "xnli_dev", "KorNLI split of the supervised pipeline measurement.")
flags.DEFINE_integer("encode_sentences", 1024, "Corpus sentences encoded by each encoder.")
flags.DEFINE_list(
    "memory_batches",
    None,
    "Instead of the comparison: our unsupervised step (synthetic ids, the first of --precisions) for each BATCH or "
    "BATCH/MINI_BATCH (gradient caching), with its peak memory and step time; e.g. 64,512/64,512.",
)
flags.register_validator(
    "memory_batches",
    lambda values: values is None or all(re.fullmatch(r"\d+(/\d+)?", value) for value in values),
    message="a comma-separated list of BATCH or BATCH/MINI_BATCH",
)
flags.DEFINE_string(
    "profile_dir",
    None,
    "Instead of timing: profile our step of each kind and precision with the TensorFlow profiler into this directory "
    "(TensorBoard's profile tab reads it) and print where its time goes, by op type and by place in the model "
    "(needs xprof, in benchmarks/requirements.txt).",
)

# The recipe's values; they do not change the cost of a step.
TEMPERATURE = 0.05
LEARNING_RATE = 3e-5
KINDS = ("unsupervised", "supervised")
# The encoding precision (evaluate.py's --precision) of each training precision's encoding cell.
ENCODING_PRECISIONS = {"float32": "float32", "mixed_bfloat16": "bfloat16"}
# Sentences a step encodes per batch row: two dropout views, or premise, entailment and contradiction.
VIEWS = {"unsupervised": 2, "supervised": 3}
# Sentences per evaluate.py batch of pairs (its --batch_size 64, two sentences each): the encoders' batch.
ENCODE_BATCH_SIZE = 128


def median_step_seconds(step_end_times, warmup_steps):
    """Median of the step times, from the intervals between step ends, the first `warmup_steps` steps (at least
    one: the first interval starts at its end) left out."""
    timed = step_end_times[warmup_steps - 1 :]
    return statistics.median(end - start for start, end in zip(timed[:-1], timed[1:], strict=True))


# === Ours (TensorFlow / Keras) ===


def synthetic_features(tf, config, batch_size, length, seed):
    """Random ids of full length (no padding), [batch, length] each."""
    ids = tf.random.stateless_uniform([batch_size, length], [seed, 0], 5, config.vocab_size, dtype=tf.int32)
    return {"input_word_ids": ids, "input_mask": tf.ones_like(ids), "input_type_ids": tf.zeros_like(ids)}


def our_train_function(kind, source, precision, settings):
    """(training.make_train_function of the benchmark model, as train_*.py run it; its batches: synthetic ids
    or the tf.data pipeline)."""
    import keras
    import tensorflow as tf

    import data
    import distribution
    import model
    import optimization
    import tokenization
    import training

    config = model.BertConfig.from_json_file(settings["config"])
    distribution.set_precision(precision)
    keras.utils.set_random_seed(0)
    batch_size, length = settings["batch_size"], settings["max_sequence_length"]
    if source == "synthetic":
        views = 2 if kind == "unsupervised" else 3
        features = [synthetic_features(tf, config, batch_size, length, seed) for seed in range(views)]
        batch = features[0] if kind == "unsupervised" else tuple(features)
        batches = tf.data.Dataset.from_tensors(batch).repeat()
    else:
        tokenizer = tokenization.KrBertTokenizer(settings["vocab_path"], length, config.vocab_size)
        batches = pipeline_batches(data, tokenizer, kind, settings)
    total_steps = settings["warmup_steps"] + settings["steps"]
    simcse = optimization.compile_simcse(
        model.BertEncoder(config),
        TEMPERATURE,
        LEARNING_RATE,
        0,
        total_steps,
        mini_batch_size=settings.get("mini_batch_size"),
    )
    simcse.optimizer.build(simcse.trainable_variables)
    return training.make_train_function(simcse, tf.distribute.get_strategy()), batches.take(total_steps)


def ours_step(args):
    """Median seconds of our training step on synthetic or pipeline batches."""
    kind, source, precision, settings = args
    import tensorflow as tf

    train_function, batches = our_train_function(kind, source, precision, settings)
    batches = tf.distribute.get_strategy().experimental_distribute_dataset(batches)
    return median_seconds_of_steps(train_function, batches, settings["warmup_steps"])


def median_seconds_of_steps(train_function, batches, warmup_steps):
    """Runs a step on every batch; the median of the step times after the first `warmup_steps`."""
    step_end_times = []
    for batch in batches:
        float(train_function(batch)["loss"])  # waits for the step, as training does
        step_end_times.append(time.perf_counter())
    return median_step_seconds(step_end_times, warmup_steps)


def resident_megabytes():
    """The process's peak resident set so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ours_memory(args):
    """(median seconds of our unsupervised step, peak resident MB before its first step, peak resident MB after
    the steps), on synthetic ids."""
    precision, settings = args
    train_function, batches = our_train_function("unsupervised", "synthetic", precision, settings)
    batches = list(batches)  # made before measuring
    before = resident_megabytes()
    seconds = median_seconds_of_steps(train_function, batches, settings["warmup_steps"])
    return seconds, before, resident_megabytes()


def print_memory(config, precision, results):
    """The --memory_batches table and one JSON line."""
    print(f"\n{cpu_description()}\n{config.num_hidden_layers} layers, hidden {config.hidden_size}, length "
          f"{FLAGS.max_sequence_length}, unsupervised, {precision}, median of {FLAGS.steps} steps")  # fmt: skip
    print(f"{'batch':>6} {'mini-batch':>10} {'peak MB':>9} {'added by steps MB':>18} {'s/step':>8}")
    runs = []
    for (batch, mini_batch), result in results.items():
        if result is None:
            print(f"{batch:6d} {mini_batch or '-':>10} {'killed (the kernel: out of memory)':>37}")
            runs.append({"batch": batch, "mini_batch": mini_batch, "killed": True})
            continue
        seconds, before, peak = result
        print(f"{batch:6d} {mini_batch or '-':>10} {peak:9.0f} {peak - before:18.0f} {seconds:8.2f}")
        runs.append({"batch": batch, "mini_batch": mini_batch, "peak_mb": round(peak),
                     "added_mb": round(peak - before), "step_s": round(seconds, 3)})  # fmt: skip
    print(json.dumps({"cpu": cpu_description(), "precision": precision, "length": FLAGS.max_sequence_length,
                      "runs": runs}))  # fmt: skip


def ours_profile(args):
    """Host op self-times [(op type, op name, microseconds)] of --steps of our step on synthetic ids, after
    --warmup_steps, from the TensorFlow profiler's trace in `logdir` (read with xprof's framework_op_stats)."""
    kind, precision, settings, logdir = args
    import tensorflow as tf
    from xprof.convert import raw_to_tool_data

    train_function, batches = our_train_function(kind, "synthetic", precision, settings)
    iterator = iter(batches)
    for _ in range(settings["warmup_steps"]):
        float(train_function(next(iterator))["loss"])
    tf.profiler.experimental.start(logdir)
    for _ in range(settings["steps"]):
        float(train_function(next(iterator))["loss"])
    tf.profiler.experimental.stop()
    traces = tf.io.gfile.glob(f"{logdir}/plugins/profile/*/*.xplane.pb")
    table = json.loads(raw_to_tool_data.xspace_to_tool_data(traces, "framework_op_stats", {})[0])[0]
    columns = [column["id"] for column in table["cols"]]
    rows = [
        dict(zip(columns, [cell.get("v") if cell else None for cell in row["c"]], strict=True)) for row in table["rows"]
    ]
    return [(row["type"], row["operation"], row["total_self_time"]) for row in rows if row["host_or_device"] == "Host"]


def print_profile(kind, precision, ops, top=15):
    """Shares of the op self-time (idle time left out; summed over the threads that ran each op) by op type, then
    by where in the model: op names with the encoder and layer indices dropped, so the 4 layers and the views add
    up ("grad:" for the backward pass)."""
    ops = [op for op in ops if op[0] != "IDLE"]
    total = sum(microseconds for _, _, microseconds in ops)
    by_type, by_place = collections.Counter(), collections.Counter()
    for op_type, name, microseconds in ops:
        by_type[op_type] += microseconds
        place = re.sub(r"(bert_encoder|layer|replica_dropout)(_\d+)+", r"\1", name).replace("gradient_tape/", "grad:")
        place = re.sub(r"_\d+(/|$)", r"\1", place)
        by_place[f"{place} ({op_type})"] += microseconds
    print(f"\nwhere the time goes: ours {kind}, {precision}, synthetic ids, {total / 1e6:.2f} s of op self-time")
    for counter in (by_type, by_place):
        for name, microseconds in counter.most_common(top):
            print(f"{100 * microseconds / total:6.1f} %  {name}")
        print()


def pipeline_batches(data, tokenizer, kind, settings):
    if kind == "unsupervised":
        sentences = data.corpus_sentences(settings["data_dir"])
        return data.unsupervised_batches(sentences, tokenizer, settings["batch_size"], seed=0)
    triples = data.nli_triples(settings["nli_split"], settings["data_dir"]).cache()
    return data.supervised_batches(triples, tokenizer, settings["batch_size"], seed=0)


def ours_pipeline(args):
    """Sentences per second our training pipeline delivers, tokenized, once its shuffle buffer is full."""
    kind, settings = args
    import data
    import model
    import tokenization

    config = model.BertConfig.from_json_file(settings["config"])
    tokenizer = tokenization.KrBertTokenizer(settings["vocab_path"], settings["max_sequence_length"], config.vocab_size)
    iterator = iter(pipeline_batches(data, tokenizer, kind, settings))
    for _ in range(settings["warmup_steps"]):
        next(iterator)
    batches = 20 * settings["steps"]
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    sentences_per_batch = settings["batch_size"] * (1 if kind == "unsupervised" else 3)
    return batches * sentences_per_batch / (time.perf_counter() - start)


def ours_encode(args):
    """Seconds of evaluate.py's encoding of the --encode_sentences sentences in `precision` (float32, or
    mixed_bfloat16: evaluate.py's --precision=bfloat16): in-graph tokenizer, shortest sentences first, padding trimmed,
    [CLS] (sentence-transformers' `encode` also sorts by length)."""
    settings, precision = args
    import tensorflow as tf

    import distribution
    import model
    import sts
    import tokenization

    config = model.BertConfig.from_json_file(settings["config"])
    tokenizer = tokenization.KrBertTokenizer(settings["vocab_path"], settings["max_sequence_length"], config.vocab_size)
    policy = distribution.encoding_policy(ENCODING_PRECISIONS[precision])
    embedder = model.sentence_embedder(model.BertEncoder(config, dtype=policy), "cls")
    sentences = encode_sentences(settings)
    sentences = [sentences[row] for row in sts.shortest_first(sentences)]
    batches = tf.data.Dataset.from_tensor_slices(sentences).batch(ENCODE_BATCH_SIZE)
    batches = batches.map(tokenizer.trimmed, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    # Traced once for every batch shape, as sts.StsEvaluator traces it.
    any_shape = {name: tf.TensorSpec([None, None], spec.dtype) for name, spec in batches.element_spec.items()}
    encode = tf.function(embedder, input_signature=[any_shape])
    for features in batches.take(1):
        encode(features)
    return rounds.median_pass_seconds(lambda: [encode(features).numpy() for features in batches])


def encode_sentences(settings):
    """The first --encode_sentences corpus sentences, as Python strings."""
    import data

    sentences = data.corpus_sentences(settings["data_dir"]).take(settings["encode_sentences"])
    return [sentence.decode("utf-8") for sentence in sentences.as_numpy_iterator()]


# === PyTorch + transformers ===


def huggingface_bert(config):
    """transformers' BertModel with the same architecture (GELU in its tanh form, LayerNorm epsilon 1e-12); `config`
    a model.BertConfig or its fields as attributes."""
    import transformers

    return transformers.BertModel(
        transformers.BertConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            hidden_act="gelu_new",
            hidden_dropout_prob=config.hidden_dropout_prob,
            attention_probs_dropout_prob=config.attention_probs_dropout_prob,
            max_position_embeddings=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size,
            initializer_range=config.initializer_range,
            layer_norm_eps=1e-12,
        )
    )


def torch_step(args):
    """Median seconds of the same SimCSE step in PyTorch: as the original SimCSE code runs it, one forward pass
    over all views of the batch, pooler output, cosine / temperature cross-entropy, AdamW."""
    kind, precision, settings = args
    import torch

    torch.manual_seed(0)
    config = types.SimpleNamespace(**settings["bert_config"])
    bert = huggingface_bert(config).train()
    optimizer = torch.optim.AdamW(bert.parameters(), lr=LEARNING_RATE, weight_decay=0.0, eps=1e-8)
    batch_size, length = settings["batch_size"], settings["max_sequence_length"]
    views = 2 if kind == "unsupervised" else 3
    ids = torch.randint(5, config.vocab_size, (views * batch_size, length))
    if kind == "unsupervised":
        ids[batch_size:] = ids[:batch_size]  # the same sentences twice, as unsupervised SimCSE encodes them
    targets = torch.arange(batch_size)
    step_end_times = []
    for _ in range(settings["warmup_steps"] + settings["steps"]):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "mixed_bfloat16"):
            pooled = bert(input_ids=ids, attention_mask=torch.ones_like(ids)).pooler_output
        embeddings = torch.nn.functional.normalize(pooled.float(), dim=1).view(views, batch_size, -1)
        logits = embeddings[0] @ embeddings[1:].reshape(-1, embeddings.shape[-1]).T / TEMPERATURE
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step_end_times.append(time.perf_counter())
    return median_step_seconds(step_end_times, settings["warmup_steps"])


def sentence_transformers_encode(args):
    """Seconds of sentence-transformers' `encode` of the same sentences, [CLS] pooling, a model of the same size
    (random weights) with KR-BERT's vocab in a transformers BertTokenizerFast; in bfloat16 for mixed_bfloat16 (the
    model cast to it, as its users run bfloat16)."""
    settings, precision = args
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers.sentence_transformer import modules

    config = types.SimpleNamespace(**settings["bert_config"])
    with tempfile.TemporaryDirectory() as directory:
        huggingface_bert(config).save_pretrained(directory)
        transformers.BertTokenizerFast(settings["vocab_path"], do_lower_case=False).save_pretrained(directory)
        length = settings["max_sequence_length"]
        transformer = modules.Transformer(directory, max_seq_length=length)
        pooling = modules.Pooling(config.hidden_size, pooling_mode="cls")
        encoder = sentence_transformers.SentenceTransformer(modules=[transformer, pooling], device="cpu")
    if precision == "mixed_bfloat16":
        encoder = encoder.to(torch.bfloat16)
    sentences = encode_sentences(settings)
    encoder.encode(sentences[:ENCODE_BATCH_SIZE], batch_size=ENCODE_BATCH_SIZE)
    return rounds.median_pass_seconds(lambda: encoder.encode(sentences, batch_size=ENCODE_BATCH_SIZE))


# === Driver ===


def measure(function, argument):
    """function(argument) in a fresh process; logged as it comes, so a long run shows its progress."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply(function, (argument,))
    logging.info("%s%s: %s", function.__name__, argument[:-1] if isinstance(argument, tuple) else "", result)
    return result


def cpu_description():
    """The CPU's model name and the instruction sets that decide float32 and bfloat16 speed."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            fields = dict(line.split(":", 1) for line in cpuinfo if ":" in line)
    except OSError:
        return "unknown CPU"
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    relevant = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    present = [flag for flag in relevant if flag in fields.get("flags", "").split()]
    return f"{fields.get('model name', 'unknown CPU')}, {os.cpu_count()} cores, {' '.join(present) or 'none of'}"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import distribution
    import model

    config = model.BertConfig.from_json_file(FLAGS.config)
    settings = {name: FLAGS[name].value for name in (
        "config", "batch_size", "max_sequence_length", "steps", "warmup_steps", "vocab_path", "data_dir",
        "nli_split", "encode_sentences", "matmul_repeats",
    )}  # fmt: skip
    # The config's fields, read once here, for PyTorch's processes: importing model.py there would load TensorFlow,
    # which they have no use for (5 s of each).
    settings["bert_config"] = config.to_dict()
    if FLAGS.memory_batches:
        precision, results = FLAGS.precisions[0], {}
        for value in FLAGS.memory_batches:
            batch, _, mini_batch = value.partition("/")
            key = (int(batch), int(mini_batch) if mini_batch else None)
            run_settings = {**settings, "batch_size": key[0], "mini_batch_size": key[1]}
            spawn = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                try:
                    results[key] = pool.submit(ours_memory, (precision, run_settings)).result()
                except concurrent.futures.process.BrokenProcessPool:
                    results[key] = None  # the process was killed: by the kernel, when memory ran out
            logging.info("batch %s: %s", value, results[key])
        print_memory(config, precision, results)
        return
    if FLAGS.profile_dir:
        for precision in FLAGS.precisions:
            for kind in ("unsupervised", "supervised"):
                logdir = os.path.join(FLAGS.profile_dir, f"{kind}-{precision}")
                with multiprocessing.get_context("spawn").Pool(1) as pool:
                    ops = pool.apply(ours_profile, ((kind, precision, settings, logdir),))
                print_profile(kind, precision, ops)
        return
    if FLAGS.pipeline:
        print_pipeline(config, settings)
        return
    if FLAGS.fixed_malloc_thresholds:
        os.environ.update(rounds.MALLOC_THRESHOLDS)  # read by each fresh process's malloc as it starts
    cells = {}
    for precision in FLAGS.precisions:
        for kind in KINDS:
            ours, theirs = (
                (ours_step, (kind, "synthetic", precision, settings)),
                (torch_step, (kind, precision, settings)),
            )
            cells[precision, kind] = {"ours": ours, "theirs": theirs}
        if ENCODING_PRECISIONS[precision] == "bfloat16" and distribution.bfloat16_device() is None:
            logging.warning("no native bfloat16 here: no encoding cell in %s (evaluate.py refuses it)", precision)
            continue
        cells[precision, "encoding"] = {
            "ours": (ours_encode, (settings, precision)),
            "theirs": (sentence_transformers_encode, (settings, precision)),
        }
    seconds = rounds.run_rounds(cells, lambda job: measure(*job), FLAGS.rounds)
    limits = {precision: measure(step_limits, (config, precision, settings)) for precision in FLAGS.precisions}
    print_comparison(config, {cell: rounds.summary(**times) for cell, times in seconds.items()}, limits)


def step_limits(args):
    """{kind: the matrix-product limit of its step, in seconds}: every product of both kinds' steps timed alone."""
    config, precision, settings = args
    batch_size, length = settings["batch_size"], settings["max_sequence_length"]
    products = {kind: rounds.step_products(config, batch_size, length, VIEWS[kind]) for kind in KINDS}
    product_seconds = rounds.product_seconds(set().union(*products.values()), precision, settings["matmul_repeats"])
    return {kind: rounds.limit_seconds(products[kind], product_seconds) for kind in KINDS}


def print_comparison(config, results, limits):
    """The rounds' table, then one JSON line per precision."""
    cpu = cpu_description()
    print(f"\n{cpu}\n{config.num_hidden_layers} layers, hidden {config.hidden_size}, batch {FLAGS.batch_size}, length "
          f"{FLAGS.max_sequence_length}; {FLAGS.rounds} rounds (order alternating, each side a fresh process), "
          f"median of {FLAGS.steps} steps")  # fmt: skip
    print(f"{'cell':40} {'ours s':>8} {'theirs s':>9} {'ratio':>6} {'(min-max)':>12} {'TFLOP/s':>8} "
          f"{'products s':>11} {'ours in':>8} {'theirs in':>9}")  # fmt: skip
    for (precision, kind), result in results.items():
        if kind == "encoding":
            name, flops, limit = f"encoding {FLAGS.encode_sentences} sentences, {precision}", None, None
        else:
            products = rounds.step_products(config, FLAGS.batch_size, FLAGS.max_sequence_length, VIEWS[kind])
            name, flops, limit = f"{kind} step, {precision}", rounds.step_flops(products), limits[precision][kind]
        spread = f"({result['ratio_min']:.2f}-{result['ratio_max']:.2f})"
        line = f"{name:40} {result['ours_s']:8.3f} {result['theirs_s']:9.3f} {result['ratio']:6.2f} {spread:>12}"
        if limit is not None:
            line += f" {flops / result['ours_s'] / 1e12:8.3f} {limit:11.3f} {limit / result['ours_s']:8.0%}"
            line += f" {limit / result['theirs_s']:9.0%}"
        print(line)
    print("theirs: PyTorch + transformers for the steps, sentence-transformers for the encoding; ratio theirs / ours")
    print("products s: the step's matrix products, each timed alone at its shapes; ours in, theirs in: their share")
    for precision in FLAGS.precisions:
        line = {"cpu": cpu, "precision": precision, "rounds": FLAGS.rounds}
        for (cell_precision, kind), result in results.items():
            if cell_precision == precision:
                line[kind] = {name: round(value, 4) for name, value in result.items()}
                if kind != "encoding":
                    line[kind]["matmul_limit_s"] = round(limits[precision][kind], 4)
        print(json.dumps(line))


def print_pipeline(config, settings):
    """--pipeline: our step on pipeline batches against synthetic ids, and the pipeline alone, each measured once."""
    print(f"\n{cpu_description()}\n{config.num_hidden_layers} layers, hidden {config.hidden_size}, batch "
          f"{FLAGS.batch_size}, length {FLAGS.max_sequence_length}, median of {FLAGS.steps} steps")  # fmt: skip
    print(f"{'our training step':52} {'synthetic s':>12} {'pipeline s':>11}")
    fastest = {}
    for precision in FLAGS.precisions:
        for kind in KINDS:
            synthetic = measure(ours_step, (kind, "synthetic", precision, settings))
            pipeline = measure(ours_step, (kind, "pipeline", precision, settings))
            fastest[kind] = min(fastest.get(kind, synthetic), synthetic)
            print(f"{f'{kind}, {precision}':52} {synthetic:12.3f} {pipeline:11.3f}")
    print(f"\n{'input pipeline alone':52} {'sentences/s':>12} {'x a step':>8}")
    for kind in KINDS:
        rate = measure(ours_pipeline, (kind, settings))
        # A step takes batch_size sentences (unsupervised) or batch_size triples (supervised) from the pipeline;
        # compared with the fastest step measured.
        need = FLAGS.batch_size * (1 if kind == "unsupervised" else 3) / fastest[kind]
        print(f"{kind:52} {rate:12.1f} {rate / need:8.1f}")


if __name__ == "__main__":
    app.run(main)
