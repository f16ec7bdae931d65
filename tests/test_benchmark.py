"""The benchmark's own logic (benchmarks/rounds.py), on tiny shapes: rounds in alternating order, a cell's median
ratio and spread, the matrix products of a step with their FLOPs and time limit, and the malloc thresholds the
comparison runs with; the transfer-task timer (benchmarks/transfer_tasks.py) on stand-ins of the tests' own."""

import os
import platform
import resource
import subprocess
import sys

import pytest
from helpers import BENCHMARK_TINY, REPO, VOCAB

import model

sys.path.insert(0, str(REPO / "benchmarks"))
import rounds  # noqa: E402

TINY_CONFIG = model.BertConfig.from_dict(BENCHMARK_TINY)


def test_rounds_measure_both_sides_of_each_cell_back_to_back_in_alternating_order():
    calls = []

    def measure(job):
        calls.append(job)
        return len(calls)

    cells = {"a": {"ours": "a-ours", "theirs": "a-theirs"}, "b": {"ours": "b-ours", "theirs": "b-theirs"}}
    seconds = rounds.run_rounds(cells, measure, rounds=3)
    assert calls == [
        *("a-ours", "a-theirs", "b-ours", "b-theirs"),
        *("a-theirs", "a-ours", "b-theirs", "b-ours"),
        *("a-ours", "a-theirs", "b-ours", "b-theirs"),
    ]
    assert seconds == {"a": {"ours": [1, 6, 9], "theirs": [2, 5, 10]}, "b": {"ours": [3, 8, 11], "theirs": [4, 7, 12]}}


def test_a_cells_answer_is_the_median_ratio_of_its_rounds_with_their_range():
    result = rounds.summary(ours=[2.0, 1.0, 4.0, 2.0], theirs=[3.0, 2.0, 4.0, 1.0])  # ratios 1.5, 2, 1, 0.5
    assert result == {"ratio": 1.25, "ratio_min": 0.5, "ratio_max": 2.0, "ours_s": 2.0, "theirs_s": 2.5}


@pytest.mark.parametrize("views", [2, 3])
def test_a_steps_products_are_its_analytic_flops(views):
    """N (8 L H^2 + 4 L H I + 4 L^2 H) + 2 H^2 a sentence forward, the backward twice that, over every view."""
    batch_size, length = 3, 5
    h, i, n = TINY_CONFIG.hidden_size, TINY_CONFIG.intermediate_size, TINY_CONFIG.num_hidden_layers
    forward = n * (8 * length * h * h + 4 * length * h * i + 4 * length * length * h) + 2 * h * h
    products = rounds.step_products(TINY_CONFIG, batch_size, length, views)
    assert rounds.step_flops(products) == 3 * forward * views * batch_size
    # Batched over sentences and heads: the scores' product, of the shape of one of the context's gradients too.
    assert products[rounds.Product(batch_size * 2, length, h // 2, length)] == 2 * n * views


def test_the_limit_is_each_products_seconds_times_its_count():
    products = rounds.step_products(TINY_CONFIG, 2, 4, 2)
    per_flop = {product: product.flops() * 1e-12 for product in products}
    assert rounds.limit_seconds(products, per_flop) == pytest.approx(rounds.step_flops(products) * 1e-12)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_products_are_timed_alone_at_their_shapes(precision):
    products = list(rounds.step_products(TINY_CONFIG, 2, 4, 2))
    seconds = rounds.product_seconds(products, precision, repeats=2)
    assert set(seconds) == set(products)
    assert all(0 <= value < 1 for value in seconds.values())


def test_an_encoding_is_the_median_of_its_passes(monkeypatch):
    monkeypatch.setattr(rounds.time, "perf_counter", iter([0.0, 3.5, 10.0, 15.2, 20.0, 23.6]).__next__)
    passes = []
    assert rounds.median_pass_seconds(lambda: passes.append(len(passes))) == pytest.approx(3.6)
    assert passes == [0, 1, 2] and rounds.ENCODE_PASSES == 3


# A feed-forward activation of the benchmark's step: [12288, 2048] float32.
BUFFER_BYTES = 96 << 20
HUGE_PAGE_BYTES = 2 << 20
# Frees and re-allocates a buffer of BUFFER_BYTES, printing the page faults each re-allocation takes.
REUSED_BUFFER_PROGRAM = f"""
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
def touched_buffer():
    buffer = libc.malloc({BUFFER_BYTES})
    ctypes.memset(buffer, 1, {BUFFER_BYTES})
    libc.free(ctypes.c_void_p(buffer))
touched_buffer()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    touched_buffer()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc malloc's")
def test_with_the_fixed_malloc_thresholds_a_freed_buffer_is_reused_without_page_faults():
    def faults(environment):
        program = [sys.executable, "-c", REUSED_BUFFER_PROGRAM]
        return int(subprocess.run(program, env=environment, capture_output=True, text=True, check=True).stdout)

    default = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    # glibc's defaults: every page faulted in again (every huge page, where transparent huge pages back the buffer)
    assert faults(default) >= BUFFER_BYTES // HUGE_PAGE_BYTES
    assert faults({**default, **rounds.MALLOC_THRESHOLDS}) < BUFFER_BYTES // resource.getpagesize() // 100


def test_the_transfer_task_timer_runs_every_task_on_its_stand_ins(random_bert, self_made_source_dir, tmp_path):
    import transfer_tasks

    corpus = self_made_source_dir / "korean_wikipedia_corpus" / "corpus.zip"
    timed = transfer_tasks.time_tasks(
        random_bert["config"], random_bert["vocab_path"], corpus, self_made_source_dir / "question_pair", scale=1e-4,
        work_dir=tmp_path,
    )  # fmt: skip
    # The stand-ins' smallest size (16), and the self-made validation split's 8 pairs.
    assert {task: examples for task, (examples, _, _) in timed.items()} == {
        "nsmc:test": 16, "klue_tc:dev": 16, "question_pair:validation": 8, "korquad:dev": 16,
    }  # fmt: skip
    assert all(seconds > 0 for _, seconds, _ in timed.values())
    assert timed["korquad:dev"][2]["passages"] >= 4


def test_no_bfloat16_encoding_cell_where_evaluate_py_refuses_bfloat16(run_in_fork, self_made_data_dir):
    # train_step.py's cells, up to the rounds (stopped there), with and without a CPU flag of native bfloat16.
    cells_of = """
import sys
sys.path.insert(0, "benchmarks")
import distribution, rounds, train_step
from absl import flags
flags.FLAGS(["train_step.py", "--vocab_path={vocab}", "--data_dir={data_dir}", "--precisions=float32,mixed_bfloat16"])
def stop(cells, measure, count):
    print(sorted(kind for precision, kind in cells if precision == "mixed_bfloat16"))
    raise SystemExit
rounds.run_rounds = stop
distribution.cpu_flags = lambda cpuinfo="/proc/cpuinfo": {flags}
train_step.main(["train_step.py"])
"""
    for cpu_flags, kinds in (("{'avx512_bf16'}", ["encoding", "supervised", "unsupervised"]),
                             ("set()", ["supervised", "unsupervised"])):  # fmt: skip
        code = cells_of.format(vocab=VOCAB, data_dir=self_made_data_dir, flags=cpu_flags)
        result = run_in_fork("train_step.py", code=code)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.splitlines()[-1] == str(kinds)
    assert "no native bfloat16 here: no encoding cell in mixed_bfloat16" in result.stderr
