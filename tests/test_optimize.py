"""optimize() end to end on the host (kernels priced as the modules run them) and on the emulated board, the
optimize command, the tutorials."""

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from statistics import median_low

import pytest

from tvm_dse import TvmDseError, optimize
from tvm_dse.cli import main
from tvm_dse.layouts import native_layout
from tvm_dse.ops import conversion_folds
from tvm_dse.pipeline import CONFIRMING_ROUNDS, MORE_ROUNDS
from tvm_dse.plan import Plan
from tvm_dse.profiling import ModuleProfile, price_in_model, profile_module
from tvm_dse.space import DesignSpace
from tvm_dse.strategies import get_strategy
from tvm_dse.thread_pool import describe_thread_pool, measuring_pool
from tvm_dse.timing import MAX_SPREAD, SteadyState, Timing
from tvm_dse.testing import onnxruntime_outputs, relative_error

pytest_plugins = ["tvm_dse.testing.pytest_plugin"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """One tuning-log directory for the module: later tests resume from what earlier ones measured."""
    return tmp_path_factory.mktemp("tuning_logs")


def test_optimize_on_the_host_matches_onnxruntime_and_writes_everything(logs, tmp_path):
    result = optimize("zoo:resnet18-small", "host", out_dir=tmp_path, logs=logs, show_progress=False)
    feed = result.model.random_feed(seed=5)
    (output,) = result.run(feed)
    (reference,) = onnxruntime_outputs(result.model.onnx_model, feed)
    assert relative_error(output, reference) <= 1e-4
    for name in ("plan.json", "report.md", "report.json", "layers.png", "convergence.png", "pareto.png",
                 "space.json", "resnet18-small.x86_64.so"):
        assert (tmp_path / name).is_file(), name
    plan = Plan.load(tmp_path / "plan.json")
    plan.validate(result.model, result.graph, "host")
    assert plan.metrics["measured_ms"] > 0 and plan.provenance["searcher"] == "qlearning"
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {row["searcher"]: row for row in report["comparison"]}
    assert rows["exact"]["gap_percent"] == 0.0
    # at equal budget Q-learning beats random search; its 2% promise is checked on the synthetic spaces
    assert rows["qlearning"]["cost_ms"] <= rows["random"]["cost_ms"]
    assert rows["greedy"]["cost_ms"] >= rows["exact"]["cost_ms"]
    assert len(report["nodes"]) == 21 and report["pareto_front"]
    # the best plans were timed end to end and none measured clearly faster than the one chosen
    verified = report["verified_plans"]
    assert len(verified) >= 2 and verified[0]["plan"] == "search" and sum(row["chosen"] for row in verified) == 1
    chosen = next(row for row in verified if row["chosen"])
    assert not any(Timing(**row["measured"]).clearly_faster_than(Timing(**chosen["measured"])) for row in verified)
    assert chosen["predicted_ms"] == report["predicted_ms"]
    # the plan chosen was timed again after the choice, in rounds alternating with onnxruntime's (more of
    # them where the plan ran slower than in the verification), each one's fastest round kept
    latency, reference = report["latency"], report["reference"]
    assert latency != chosen["measured"] and reference["runtime"].startswith("onnxruntime")
    rounds = report["latency_rounds_ms"]
    assert CONFIRMING_ROUNDS <= len(rounds) == len(reference["rounds_ms"]) <= CONFIRMING_ROUNDS + MORE_ROUNDS
    slower = (1 + MAX_SPREAD) * min(chosen["rounds_ms"])
    assert (len(rounds) > CONFIRMING_ROUNDS) == (min(rounds[:CONFIRMING_ROUNDS]) > slower)
    for timing, rounds in ((latency, rounds), (reference["latency"], reference["rounds_ms"])):
        assert timing["median_ms"] == min(rounds)
        # the speed changed between rounds: said
        assert timing["disturbed"] or median_low(rounds) <= (1 + MAX_SPREAD) * min(rounds)
    assert latency["disturbed"] or min(report["latency_rounds_ms"]) <= slower
    assert reference["plan_over_reference"] == latency["median_ms"] / reference["latency"]["median_ms"]
    assert plan.provenance["verified"] == {"plans_timed": len(verified), "chosen": chosen["plan"]}
    # in rounds alternating between the plans, each plan's fastest round kept
    assert all(len(row["rounds_ms"]) == 3 and row["measured"]["median_ms"] == min(row["rounds_ms"])
               for row in verified)
    # in steady state: warmed up, short runs batched, every run counted
    latency = report["latency"]
    assert latency["number"] * latency["median_ms"] >= 25 * 0.5
    assert latency["runs"] > latency["repeats"] * latency["number"]
    # kernels priced as the uniform plans' modules ran them (the two cheapest, and any within 2x)
    priced = report["priced_in_model"]
    assert priced["modules"] >= 2 and 0 < priced["options_observed"] <= priced["options"] and report["fixed_ms"] >= 0
    assert priced["fixed_ms_range"][0] <= report["fixed_ms"] <= priced["fixed_ms_range"][1]
    assert DesignSpace.load(tmp_path / "space.json").fixed_ms == report["fixed_ms"]
    # a conversion is priced free exactly where lowering writes it in the kernel before it (ops.py's rule)
    folds = 0
    for edge in result.space.edges:
        consumer = result.graph.vertices[edge.target]
        shape = consumer.input_shape(edge.source)
        for p, producer_option in enumerate(result.space.nodes[edge.source].options):
            for q, consumer_option in enumerate(result.space.nodes[edge.target].options):
                produced = producer_option.output_layout or native_layout(shape)
                if produced != consumer_option.input_layout and edge.cost[p][q] < float("inf"):
                    free = conversion_folds(*consumer.arrival(edge.source), produced, consumer_option.input_layout)
                    assert (edge.cost[p][q] == 0) == free
                    folds += free
    assert folds > 0
    # the profile of the chosen module: one kernel call per tunable node, of the strategy the plan gives it
    profile = profile_module(result.built, feed, SteadyState(repeats=3))
    calls = profile.kernel_calls()
    # (a kernel shorter than the hook's estimated overhead per call is priced 0 when the machine drifts)
    assert sum(count for _, _, count in calls) == 21 and all(ms >= 0 for _, ms, _ in calls)
    assert sum(ms for _, ms, _ in calls) > 0
    vertices = {vertex.id: vertex for vertex in result.graph.vertices}
    for vertex_id, _, _ in calls:
        strategy = plan.nodes[vertices[vertex_id].name].strategy
        assert any(f"dse_{vertex_id}_{strategy}" in name for name in profile.functions)
    assert 0 <= profile.fixed_ms() < profile.total_ms
    # the pools run in the layout the vertex before them chose and are priced with its options: the stem's
    # max pool, and the classifier's mean after the last residual add
    stem, last_join = result.graph.nodes[0], [v for v in result.graph.vertices if v.kind == "join"][-1]
    stem_layout = get_strategy(plan.nodes[stem.name].strategy).layouts(stem.workload, result.target).output
    pools = profile.follower_ms()
    assert {vertex_id for vertex_id, _ in pools} == {stem.id, last_join.id} and (stem.id, stem_layout) in pools
    assert priced["vertices_with_pools"] == 2
    repriced = price_in_model(result.space, result.graph, [(plan, profile)])
    stem_kernel = next(ms for vertex_id, ms, _ in calls if vertex_id == stem.id)
    stem_choice, join_layout = plan.nodes[stem.name], plan.join_layouts[last_join.name]
    stem_option = next(o for o in repriced.nodes[stem.id].options
                       if o.name == stem_choice.strategy and (o.decisions or {}) == (stem_choice.decisions or {}))
    assert stem_option.latency_ms == pytest.approx(stem_kernel + pools[(stem.id, stem_layout)])
    join_option = next(o for o in repriced.nodes[last_join.id].options if o.name == join_layout)
    assert join_option.latency_ms == pools[(last_join.id, join_layout)]  # (a tiny mean may come out at 0)
    # of a module's profiles in rounds the quietest is kept, disturbed where it was or where the machine's
    # speed changed between rounds; disturbed profiles give disturbed prices, and the report says so
    quiet, busy = replace(profile, disturbed=False), replace(profile, disturbed=True)
    slow = replace(quiet, total_ms=1.6 * quiet.total_ms)
    assert ModuleProfile.quietest([slow, quiet, quiet]) == quiet
    assert ModuleProfile.quietest([slow, slow, quiet]).disturbed and ModuleProfile.quietest([slow, busy]).disturbed
    for module in (quiet, busy):
        repriced = price_in_model(result.space, result.graph, [(plan, module)])
        chosen = [node.options[index] for node, index in zip(repriced.nodes, result.search.assignment)
                  if node.is_tunable]
        assert chosen and all(option.disturbed == module.disturbed for option in chosen)
    # onnxruntime on the same model and machine, timed the same way
    reference = report["reference"]
    assert reference["runtime"].startswith("onnxruntime") and reference["latency"]["median_ms"] > 0
    assert reference["plan_over_reference"] == pytest.approx(latency["median_ms"] / reference["latency"]["median_ms"])
    # measured on the thread pool the library carries (tests/test_thread_pool.py), and says so
    assert report["thread_pool"] == measuring_pool(True) and report["thread_pool"]["measured_with"] == "tvm_dse"
    assert describe_thread_pool(report["thread_pool"], measured=True).endswith("measured so")
    assert describe_thread_pool(report["thread_pool"], measured=True) in (tmp_path / "report.md").read_text()
    # the library run once in a process of its own with TVM's runtime library only: the runtime's measured
    # memory plus the plan's modeled memory predicts that process's peak within 15%
    memory = report["process_memory"]
    assert 0 < memory["runtime_mb"] < memory["peak_mb"] and memory["plan_mb"] > 0
    assert memory["predicted_peak_mb"] == pytest.approx(memory["runtime_mb"] + report["peak_memory_mb"])
    assert abs(memory["prediction_error"]) <= 0.15, memory
    assert f"peaked at {memory['peak_mb']:.1f} MB" in (tmp_path / "report.md").read_text()


def test_memory_bound_is_respected(logs, tmp_path):
    free = optimize("zoo:squeezenet1_1-small", searcher="exact", logs=logs, show_progress=False,
                    compare_searchers=(), verify=1, reference=False, profile=False)
    assert free.report["reference"] == {"omitted": "not asked for (reference=False, --no-reference)"}
    smallest = min(p["peak_memory_mb"] for p in free.report["pareto_front"])
    limit = (smallest + free.report["peak_memory_mb"]) / 2
    bounded = optimize("zoo:squeezenet1_1-small", searcher="exact", memory_limit=limit, logs=logs,
                       show_progress=False, compare_searchers=(), verify=1, reference=False, profile=False)
    assert bounded.report["peak_memory_mb"] <= limit
    # no faster than the fastest plan of its own space (a second run may price kernels it measures again)
    assert bounded.report["predicted_ms"] >= min(p["latency_ms"] for p in bounded.report["pareto_front"]) - 1e-9
    # a bound below every plan names the least memory a plan needs (the front's leanest point)
    with pytest.raises(TvmDseError, match=rf"fits in {smallest / 2:g} MB: the leanest needs") as refused:
        optimize("zoo:squeezenet1_1-small", searcher="qlearning", memory_limit=smallest / 2, logs=logs,
                 show_progress=False, compare_searchers=(), verify=1, reference=False, profile=False)
    needed = float(re.search(r"the leanest needs ([\d.]+) MB", str(refused.value)).group(1))
    assert smallest / 2 < needed <= smallest + 0.01


@pytest.mark.faults
def test_a_plan_priced_by_disturbed_kernel_timings_says_so(logs, tmp_path):
    from tvm_dse.report import markdown
    from tvm_dse.tuning import TuningLogs

    run = dict(show_progress=False, compare_searchers=(), verify=1, reference=False, profile=False)
    warm = optimize("zoo:squeezenet1_1-small", logs=logs, **run)
    store = TuningLogs(logs).store(warm.target)
    records = [json.loads(line) for line in store.path.read_text().splitlines()]
    for record in records:  # as if every kernel had been timed while another process was busy
        if record["status"] == "ok":
            record["latency"]["disturbed"] = True
    own = TuningLogs(tmp_path / "logs").store(warm.target)
    own.path.parent.mkdir(parents=True)
    own.path.write_text("".join(json.dumps(record) + "\n" for record in records))
    # kept as they are (by default a run measures disturbed kernels again)
    flagged = optimize("zoo:squeezenet1_1-small", logs=tmp_path / "logs", shipped_logs=False, retry_failed=False,
                       **run)
    assert flagged.report["nodes"] and all(node["disturbed"] for node in flagged.report["nodes"])
    nodes = len(flagged.report["nodes"])
    assert f"{nodes} of the plan's {nodes} kernel prices come from timings that stayed disturbed" in markdown(
        flagged.report)


@pytest.mark.faults
def test_a_board_target_the_cost_model_cannot_price_needs_rpc(logs):
    with pytest.raises(TvmDseError, match="no clock and memory bandwidth for neoverse-n1.*give rpc="):
        optimize("zoo:squeezenet1_1-small", "llvm -mtriple=aarch64 -mcpu=neoverse-n1", logs=logs, show_progress=False)


@pytest.mark.faults
@pytest.mark.parametrize("options, message", [
    ({"searcher": "annealing"}, "unknown searcher 'annealing'"),
    ({"compare_searchers": ("exact", "bogus")}, "unknown searcher 'bogus'"),
    ({"top_k": 0}, "top_k must be at least 1"),
    ({"budget": -5}, r"budget \(plans the searcher may price\): max_evaluations must be in \[1, inf\], got -5"),
    ({"budget": "lots"}, "budget must be a number of plans or a tvm_dse.search.Budget; got 'lots'"),
    ({"repeat": 0}, "repeat must be at least 1"),
    ({"memory_limit": -5}, "memory_limit must be a positive number"),
    ({"tune_trials": -1}, "tune_trials must not be negative"),
    ({"calibration_data": [], "calibration_method": "kl"}, "unknown calibration method 'kl'"),
    ({"rpc": "127.0.0.1:1"}, r"cannot reach the RPC server at 127\.0\.0\.1:1"),
    ({"rpc": "tracker=127.0.0.1:1,key=rpi4"}, r"cannot reach the RPC tracker at 127\.0\.0\.1:1"),
])
def test_a_bad_option_fails_before_the_model_is_read(options, message, tmp_path):
    # the model does not exist: an option checked any later would fail on the model first
    with pytest.raises(TvmDseError, match=message):
        optimize(str(tmp_path / "missing.onnx"), logs=tmp_path, show_progress=False, **options)


@pytest.mark.faults
def test_the_output_folder_is_checked_before_any_work_and_replaced_whole(tmp_path):
    from tvm_dse.pipeline import OUTPUT_MARK, claim_output_dir

    missing = str(tmp_path / "missing.onnx")  # a folder checked any later would fail on the model first
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(TvmDseError, match=r"is not empty and holds no earlier tvm_dse output \(notes.txt\).*--force"):
        optimize(missing, out_dir=foreign, logs=tmp_path / "logs", show_progress=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(TvmDseError, match="the output folder .*a_file is a file"):
        optimize(missing, out_dir=blocker, logs=tmp_path / "logs", show_progress=False)
    with pytest.raises(TvmDseError, match="cannot write to the output folder .*a_file/out"):
        optimize(missing, out_dir=blocker / "out", logs=tmp_path / "logs", show_progress=False)
    # forced into someone's folder: written into, nothing of theirs removed, and not taken over
    assert claim_output_dir(foreign, force=True) == foreign
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    # a folder tvm_dse wrote is replaced whole by the next run
    ours = claim_output_dir(tmp_path / "out", force=False)
    (ours / "kernels").mkdir()
    (ours / "stale.so").write_text("an earlier plan's library")
    claim_output_dir(ours, force=False)
    assert [p.name for p in ours.iterdir()] == [OUTPUT_MARK]


@pytest.mark.faults
def test_an_unknown_option_is_refused_by_name(tmp_path):
    with pytest.raises(TypeError, match="unknown option.* serch"):
        optimize(str(tmp_path / "missing.onnx"), serch="exact")


def test_options_by_name_land_in_their_stage_groups(tmp_path):
    from tvm_dse.options import OptimizeOptions, SearchOptions

    options = OptimizeOptions.from_keywords(searcher="exact", budget=40, memory_limit=8, tune_trials=5, top_k=2,
                                            logs=tmp_path, seed=3, show_progress=False)
    assert (options.search.searcher, options.search.budget.max_evaluations) == ("exact", 40)
    assert options.search.memory_limit_bytes == 8 * 2**20
    assert (options.tuning.trials, options.measurement.top_k, options.measurement.logs) == (5, 2, tmp_path)
    assert (options.seed, options.show_progress, options.precision.precisions) == (3, False, ("fp32",))
    with pytest.raises(TypeError, match="either as an OptimizeOptions or by name"):
        optimize("zoo:resnet18-small", "host", OptimizeOptions(search=SearchOptions("exact")), seed=1)


def test_the_optimize_command(logs, tmp_path, capfd):
    from tvm_dse.measure import LocalRunner
    from tvm_dse.target import parse_target
    from tvm_dse.tuning import shipped_target_keys

    assert main(["optimize", "zoo:vgg16-small", "--out", str(tmp_path), "--logs", str(logs),
                 "--searcher", "exact", "--no-profile"]) == 0
    captured = capfd.readouterr()  # what the process wrote, TVM's runtime logging to its file descriptor included
    assert "outputs match TVM's default build" in captured.out and "exact" in captured.out
    assert not [line for line in (captured.out + captured.err).splitlines()
                if re.match(r"\[[0-9:]+\] \S+: Warning", line)]
    assert re.search(r"plan: [0-9.]+ ms measured \(fastest round of [0-9]+, median round [0-9.]+ ms, "
                     r"median of 10 x [0-9]+ runs, "
                     r"spread [0-9.]+%.*\), [0-9.]+ ms predicted; onnxruntime [0-9.]+: [0-9.]+ ms, the plan takes [0-9.]+x its time", captured.out)
    # said once, in one line, where no shipped log is for this machine's target and thread pool (so it starts cold)
    notices = [line for line in captured.err.splitlines() if line.startswith("no tuning log shipped")]
    pool = LocalRunner().thread_pool
    assert len(notices) == (parse_target("host").key not in shipped_target_keys(pool))
    assert all(f"{parse_target('host').key} timed on {pool}" in line for line in notices)
    assert (tmp_path / "plan.json").is_file() and (tmp_path / "pareto.png").is_file()
    assert main(["optimize", "zoo:vgg16-small", "--tracker", "127.0.0.1:1"]) == 2
    assert "--tracker needs --key" in capfd.readouterr().err


def test_tuning_the_plan_kernels_and_a_rerun_tunes_nothing(logs, tmp_path):
    from tvm_dse.report import markdown
    from tvm_dse.strategies import schedule_versions
    from tvm_dse.measure import LocalRunner, MeasurementSession, MeasureSettings
    from tvm_dse.tuning import TuningLogs, tune_plan_kernels

    own = TuningLogs(tmp_path / "logs")
    own.merge(logs)  # warm from the module's measurements, tuned records its own
    # shipped logs may hold tuned decisions of these kernels; timings never judged disturbed, so that the
    # rerun has nothing to measure again whatever else the machine runs
    run = dict(logs=own, shipped_logs=False, tune_trials=6, show_progress=False, verify=1, reference=False,
               profile=False, compare_searchers=(),
               settings=MeasureSettings(max_spread=math.inf, max_others=math.inf))
    first = optimize("zoo:resnet18-small", **run)
    tuned = first.report["tuning"]
    assert tuned and sum(row["measured"] for row in tuned) == 6
    assert all(row["best_ms"] <= row["default_ms"] for row in tuned)
    assert "tune_s" in first.report["timings"] and "## Kernels tuned" in markdown(first.report)
    lines = own.store(first.target).path.read_text().splitlines()
    again = optimize("zoo:resnet18-small", **run)
    assert again.report["tuning"] == [] and own.store(first.target).path.read_text().splitlines() == lines
    # the budget is the model's: a rerun whose plan differs (its prices come from its own timings) tunes
    # nothing either
    other_plan = [(choice + 1) % len(node.options) for node, choice in zip(again.space.nodes, again.search.assignment)]
    assert other_plan != again.search.assignment
    session = MeasurementSession(first.target, LocalRunner(), own.store(first.target), show_progress=False)
    assert tune_plan_kernels(again.space, other_plan, again.graph, session, 6) == []
    # every node is built with the fastest decisions the log holds for its strategy
    best = own.store(first.target).best(first.target.key, schedule_versions(), session.runner.thread_pool)
    for node in again.report["nodes"]:
        choice = again.plan.nodes[node["node"]]
        workload = again.graph.node(node["node"]).workload
        assert choice.decisions == best[(workload.key(), choice.strategy)].decisions


def test_top_k_measures_only_the_predicted_fastest_strategies(logs, tmp_path):
    from tvm_dse.strategies import applicable_strategies
    from tvm_dse.tuning import TuningLogs

    own = TuningLogs(tmp_path / "logs")
    own.merge(logs)
    store = own.store(optimize("zoo:squeezenet1_1-small", logs=own, show_progress=False, verify=1, reference=False,
                               profile=False, compare_searchers=()).target)
    known = {record.workload_key for record in store.records()}
    result = optimize("zoo:mobilenet_v1-small", logs=own, top_k=1, show_progress=False, verify=1, reference=False,
                      profile=False, compare_searchers=())
    assert result.report["top_k"] == 1
    fresh = {v.workload.key(): v.workload for v in result.graph.nodes if v.workload.key() not in known}
    assert fresh  # the test means something only with workloads the log has not seen
    measured = {(r.workload_key, r.strategy) for r in store.records()}
    for key in fresh:
        assert len({name for (w, name) in measured if w == key}) == 1
    assert any(len(applicable_strategies(w, result.target)) > 1 for w in fresh.values())
    # the predictor ranks only the precisions the space takes, so k options of them are measured
    from tvm_dse.measure import LocalRunner
    from tvm_dse.strategies import all_strategies, get_strategy
    from tvm_dse.tuning.predictor import promising_strategies

    every = len(all_strategies())
    pool = LocalRunner().thread_pool
    fp32_only = promising_strategies(fresh.values(), result.target, store.records(), pool, every, precisions=("fp32",))
    anything = promising_strategies(fresh.values(), result.target, store.records(), pool, every)
    for key, workload in fresh.items():
        fp32 = {s.name for s in applicable_strategies(workload, result.target) if s.precision == "fp32"}
        assert set(fp32_only[key]) == fp32 and set(anything[key]) == {s.name for s in applicable_strategies(
            workload, result.target)}
    assert any(get_strategy(n).precision != "fp32" for names in anything.values() for n in names)


def test_the_predictor_learns_the_log_and_needs_enough_of_it(logs):
    from tvm_dse import build_graph, load_model
    from tvm_dse.pricing import measure_space
    from tvm_dse.errors import TvmDseError
    from tvm_dse.measure import LocalRunner, MeasurementSession
    from tvm_dse.target import parse_target
    from tvm_dse.tuning import TuningLogs
    from tvm_dse.tuning.predictor import LatencyPredictor, evaluate, held_out_error, samples_from

    host = parse_target("host")
    store = TuningLogs(logs).store(host)
    model = load_model("zoo:resnet18-small")  # measured by the first test already, unless run alone
    measure_space(model, build_graph(model), MeasurementSession(host, LocalRunner(), store, show_progress=False))
    samples = samples_from(store.records(), host, LocalRunner().thread_pool)
    workloads = sorted({s.workload.key() for s in samples})
    assert len(workloads) >= 8
    fitted = evaluate(LatencyPredictor(host).fit(samples), samples)
    assert fitted.median_relative_error < 0.25 and fitted.top1 > 0.5  # it learned the kernels it saw
    unseen = held_out_error(samples, host, workloads[::3])
    assert unseen.workloads == len(workloads[::3]) and unseen.regret >= 0 and 0 <= unseen.top1 <= 1
    few = [s for s in samples if s.workload.key() in workloads[:3]]
    with pytest.raises(TvmDseError, match=f"tuning log of {host.key} covers 3 workloads"):
        LatencyPredictor(host).fit(few)


def _run_tutorial(logs, name, *args, timeout=900):
    environment = {**os.environ, "TVM_DSE_LOGS": str(logs)}  # resume from the module's measurements
    completed = subprocess.run([sys.executable, str(ROOT / "tutorials" / name), *map(str, args)],
                               capture_output=True, text=True, timeout=timeout, env=environment)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    return completed.stdout


@pytest.mark.sweep  # the tutorials end to end, with optimize's defaults: minutes each
def test_tutorial_optimize_on_host(logs, tmp_path):
    printed = _run_tutorial(logs, "optimize_on_host.py", "zoo:mobilenet_v2-small", tmp_path)
    assert "the exported library gives the same outputs" in printed


@pytest.mark.sweep  # the tutorials end to end, with optimize's defaults: minutes each
def test_tutorial_memory_bounded(logs, tmp_path):
    printed = _run_tutorial(logs, "memory_bounded.py", "zoo:squeezenet1_1-small", tmp_path)
    assert "latency/memory Pareto front" in printed and "bound" in printed


@pytest.mark.sweep  # the tutorials end to end, with optimize's defaults: minutes each
def test_tutorial_tune_and_share_logs(logs, tmp_path):
    printed = _run_tutorial(logs, "tune_and_share_logs.py", "zoo:squeezenet1_1-small", tmp_path, 4)
    assert "tuned " in printed and "no kernel measured or tuned again" in printed


@pytest.mark.sweep  # the tutorials end to end, with optimize's defaults: minutes each
def test_tutorial_optimize_for_a_board(emulated_boards, logs, tmp_path):
    """optimize() for rpi4 through the tracker: kernels measured on the boards, the plan validated there."""
    printed = _run_tutorial(logs, "optimize_for_a_board.py", "zoo:squeezenet1_1-small", tmp_path,
                            emulated_boards.tracker_address, emulated_boards.key)
    assert "outputs match TVM's default build" in printed
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["target"]["key"].startswith("llvm_aarch64_cortex-a72")
    assert plan["metrics"]["measured_on"].startswith("127.0.0.1:")  # validated and timed on a board
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["validation"]["relative_error_vs_tvm_default"] <= 1e-4
    assert "not timed on boards" in report["reference"]["omitted"]
    library = tmp_path / "squeezenet1_1-small.aarch64.so"
    assert int.from_bytes(library.read_bytes()[18:20], "little") == 183  # an aarch64 ELF


def test_a_space_offering_a_node_no_strategy_fails_before_measuring(matrix_models):
    from tvm_dse.pricing import measure_space
    from tvm_dse.measure import LocalRunner, MeasurementSession
    from tvm_dse.target import parse_target

    model, graph = matrix_models("concat_8")
    only_convolutions = {node.workload.key(): ["direct_nchw"] for node in graph.nodes}
    with pytest.raises(TvmDseError, match=r"no strategy of precision fp32 among those given applies to node\(s\) fc$"):
        measure_space(model, graph, MeasurementSession(parse_target("host"), LocalRunner(), show_progress=False),
                      strategies=only_convolutions)
