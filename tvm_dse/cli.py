"""The ``tvm-dse`` command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from .errors import TvmDseError

if TYPE_CHECKING:
    from .board import BoardCluster, ServiceProcess
    from .build import BuiltModel
    from .frontend import Model
    from .graph import DseGraph
    from .measure import MeasurementStore

DEMO_MODEL = "zoo:resnet18"
# fp32 outputs of two correct implementations differ by rounding only; the project's bar for every build.
FP32_TOLERANCE = 1e-4


@contextmanager
def _step(title: str) -> Iterator[None]:
    print(f"{title} ...", flush=True)
    start = time.perf_counter()
    yield
    print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)


def _input_shapes(pairs: Sequence[str] | None) -> dict[str, tuple[int, ...]] | None:
    if not pairs:
        return None
    shapes = {}
    for pair in pairs:
        name, _, dims = pair.partition("=")
        try:
            shapes[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise TvmDseError(f"--shape {pair!r}: write NAME=D,D,... e.g. input=1,3,224,224") from None
    return shapes


def _check_and_time(model: Model, graph: DseGraph, built: BuiltModel, name: str, repeat: int,
                    report: dict) -> int:
    """Run ``built`` on a random feed, compare with onnxruntime and time it; fills ``report``, returns the
    exit status (1 on a numerical mismatch)."""
    from .timing import SteadyState
    from .validation import onnxruntime_outputs, relative_error

    feed = model.random_feed(seed=0)
    outputs = built.run(feed)
    status = 0
    if model.onnx_model is not None:
        try:
            reference = onnxruntime_outputs(model.onnx_model, feed)
        except ImportError:
            print("onnxruntime is not installed: numerical check skipped (pip install onnxruntime)")
        else:
            error = max(relative_error(o, r) for o, r in zip(outputs, reference))
            ok = error <= FP32_TOLERANCE
            print(f"outputs vs onnxruntime: relative error {error:.2e} ({'ok' if ok else 'MISMATCH'}, "
                  f"bound {FP32_TOLERANCE:g})")
            report["relative_error_vs_onnxruntime"] = error
            status = 0 if ok else 1
    with _step(f"timing in steady state ({repeat} samples after a warm-up)"):
        timing = built.time(feed, SteadyState(repeats=repeat))
    print(f"{name} latency: {timing} = {timing.gflops(graph.flops):.2f} GFLOP/s")
    report["latency"] = timing.to_dict()
    return status


def _command_baseline(args: argparse.Namespace) -> int:
    from .build import build_baseline
    from .frontend import load_model
    from .graph import build_graph
    from .target import parse_target

    target = parse_target(args.target)
    print(f"target: {target.key} ({target.family}, {target.vector_bits}-bit vectors)")
    with _step(f"importing {args.model}"):
        model = load_model(args.model, _input_shapes(args.shape))
    graph = build_graph(model)
    print(graph.summary())
    with _step("building with TVM's default pipeline (no schedules)"):
        built = build_baseline(model, target)
    report = {"model": model.name, "target": target.to_dict(), "gflop": graph.flops / 1e9}
    if not target.runs_on_host:
        path = built.export(Path(args.out or ".") / f"{model.name}.{target.arch}.so")
        print(f"{target.key} does not run on this machine; exported {path}")
        return 0
    status = _check_and_time(model, graph, built, "TVM default build", args.repeat, report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return status


def _command_build(args: argparse.Namespace) -> int:
    from .frontend import load_model
    from .graph import build_graph
    from .lower import build_plan
    from .plan import Plan

    plan = Plan.load(args.plan)
    target = args.target or plan.target
    with _step(f"importing {args.model}"):
        model = load_model(args.model, _input_shapes(args.shape))
    graph = build_graph(model)
    dse_target = plan.validate(model, graph, target)
    with _step(f"building {model.name} for {dse_target.key} as {args.plan} says"):
        built = build_plan(model, plan, dse_target, graph)
    path = built.export(args.output or f"{model.name}.{dse_target.arch}.so")
    print(f"exported {path}")
    if not dse_target.runs_on_host:
        return 0
    return _check_and_time(model, graph, built, "plan", args.repeat, {})


def _command_optimize(args: argparse.Namespace) -> int:
    from .measure import MeasureSettings
    from .optimize import optimize
    from .report import costs_line, costs_modeled, latency_line, memory_line

    if args.tracker and not args.key:
        raise TvmDseError("--tracker needs --key: the key the boards registered under")
    rpc = {"tracker": args.tracker, "key": args.key} if args.tracker else args.rpc
    accuracy = None
    if args.accuracy_data:
        import numpy as np

        from .accuracy import AccuracyBound

        with np.load(args.accuracy_data) as data:
            if "labels" not in data.files:
                raise TvmDseError(f"{args.accuracy_data} has no 'labels' array (top-1 needs one label per sample)")
            inputs = {name: data[name] for name in data.files if name != "labels"}
            accuracy = AccuracyBound(inputs, data["labels"], max_loss=args.max_accuracy_loss)
    from .options import MeasurementOptions
    from .target import parse_target

    if MeasurementOptions(rpc=rpc, cost_model=args.cost_model).prices_by_model(parse_target(args.target)):
        where = ", every cost modeled for its core (no board measures it)"
    else:
        where = f", measuring over RPC ({args.tracker or args.rpc})" if rpc else " on this machine"
    print(f"optimizing {args.model} for {args.target} with {args.searcher}{where}", flush=True)
    result = optimize(args.model, args.target, rpc=rpc, searcher=args.searcher, budget=args.budget,
                      memory_limit=args.memory_limit, out_dir=args.out, force=args.force,
                      input_shapes=_input_shapes(args.shape), logs=args.logs, shipped_logs=not args.cold,
                      tune_trials=args.tune_trials, top_k=args.top_k,
                      calibration_data=args.calibration_data, calibration_method=args.calibration_method,
                      accuracy=accuracy, precisions=args.precisions.split(",") if args.precisions else None,
                      settings=MeasureSettings(repeat=args.kernel_repeat), seed=args.seed, repeat=args.repeat,
                      verify=args.verify, reference=not args.no_reference,
                      profile=not args.no_profile, retry_failed=not args.no_retry_failed, cost_model=args.cost_model)
    report = result.report
    print(f"costs: {costs_line(report)}")
    print(f"plan: {latency_line(report)}")
    taken = "modeled" if costs_modeled(report["costs"]) else "measured"
    for row in report["verified_plans"]:
        print(f"  {row['plan']:20s} {row['predicted_ms']:9.3f} ms predicted {row['measured']['median_ms']:9.3f} ms "
              f"{taken}{'  <- chosen' if row['chosen'] else ''}")
    print(f"peak memory {memory_line(report)}")
    print(f"outputs match TVM's default build (relative error "
          f"{report['validation']['relative_error_vs_tvm_default']:.1e})")
    if report.get("accuracy"):
        accuracy_row = report["accuracy"]
        print(f"top-1 {accuracy_row['plan_score']:.4f} (fp32 {accuracy_row['fp32_score']:.4f}); int8 nodes: "
              f"{', '.join(accuracy_row['quantized_nodes']) or 'none'}")
    for row in report["comparison"]:
        gap = row.get("gap_percent")
        print(f"  {row['searcher']:10s} {row['cost_ms']:9.3f} ms predicted"
              + (f"  gap to exact {gap:6.2f}%" if gap is not None else "") + f"  {row['seconds']:.2f} s")
    print(f"wrote {args.out}: plan.json, {result.model.name}.{result.target.arch}.so, report.md, report.json, "
          "layers.png, convergence.png, pareto.png")
    return 0


def _command_logs(args: argparse.Namespace) -> int:
    from .target import parse_target
    from .tuning import TuningLogs

    logs = TuningLogs(args.logs)
    needs = {"show": "a target", "merge": "another tuning-log directory", "export": "a target",
             "import": "a file"}
    if args.action in needs and not args.argument:
        raise TvmDseError(f"logs {args.action} needs {needs[args.action]}")

    def target_key(text: str) -> str:
        """A target key as given, or the key of a preset or target string."""
        stored = {store.target_key for store in logs.stores()}
        return text if text in stored else parse_target(text).key

    def report_added(added: dict[tuple[str, str], int]) -> None:
        for (key, version), count in sorted(added.items()):
            print(f"{key} (TVM {version}): {count} records added")
        if not added:
            print("nothing to add")

    if args.action == "list":
        summaries = logs.summary()
        if not summaries:
            print(f"no tuning logs in {logs.root}")
        for summary in summaries:
            print(f"{summary.target}  TVM {summary.tvm_version}  {summary.records} records, {summary.kernels} "
                  f"kernels, {summary.failed} failed  {summary.path}")
    elif args.action == "show":
        _show_log(logs.store(target_key(args.argument)))
    elif args.action == "merge":
        report_added(logs.merge(args.argument))
    elif args.action == "export":
        if not args.output:
            raise TvmDseError("logs export needs -o FILE")
        count = logs.export(target_key(args.argument), args.output)
        print(f"wrote {count} records to {args.output}")
    elif args.action == "import":
        report_added(logs.import_file(args.argument, target_key(args.target) if args.target else None))
    else:
        for path, (before, after) in logs.prune().items():
            print(f"{path}: {before} -> {after} records")
    return 0


def _show_log(store: "MeasurementStore") -> None:
    """Per kernel of a store and thread pool it ran on: how many decisions were measured, how many failed, the
    best latency."""
    from .workload import Workload

    records = store.records()
    if not records:
        raise TvmDseError(f"no records in {store.path}")
    kernels: dict[tuple[str, str, str], list] = {}
    for record in {record.key: record for record in records}.values():  # the latest of each key
        if not record.is_conversion:
            kernels.setdefault((record.workload_key, record.strategy, record.thread_pool), []).append(record)
    print(f"{store.path}: {len(records)} records, {len(kernels)} kernels")
    print(f"{'workload':40s} {'strategy':20s} {'thread pool':24s} {'trials':>6s} {'failed':>6s} {'best ms':>9s}")
    for (workload_key, strategy, thread_pool), group in sorted(kernels.items()):
        ok = [r for r in group if r.ok]
        best = f"{min(r.median_ms for r in ok):9.4f}" if ok else f"{'-':>9s}"
        describe = Workload.from_dict(group[0].workload).describe()
        print(f"{describe:40s} {strategy:20s} {thread_pool or '-':24s} {len(group):6d} {len(group) - len(ok):6d} "
              f"{best}")


def _command_graph(args: argparse.Namespace) -> int:
    from .frontend import load_model
    from .graph import build_graph

    graph = build_graph(load_model(args.model, _input_shapes(args.shape)))
    print(graph.summary())
    if args.json:
        graph.save(args.json)
    return 0


def _command_target(args: argparse.Namespace) -> int:
    from .target import PRESETS, parse_target, preset_names

    if args.list or not args.targets:
        print("presets:")
        print(f"  {'host':12s} this machine's CPU")
        for preset in PRESETS.values():
            print(f"  {preset.name:12s} {preset.description}")
        print("aliases: " + ", ".join(n for n in preset_names() if n not in PRESETS and n != "host"))
        return 0
    for spec in args.targets:
        target = parse_target(spec)
        facts = {"key": target.key, "options": target.options, "family": target.family,
                 "vector_bits": target.vector_bits, "is_aarch64": target.is_aarch64,
                 "has_dotprod": target.has_dotprod, "has_fp16": target.has_fp16,
                 "num_cores": target.num_cores, "runs_on_host": target.runs_on_host}
        print(json.dumps(facts, indent=1))
    return 0


def _command_zoo(args: argparse.Namespace) -> int:
    import onnx

    from .frontend import zoo_model
    from .zoo import MODEL_NAMES, REFERENCE_GFLOP, conv_flops

    if args.action == "list":
        for name in MODEL_NAMES:
            print(f"zoo:{name:16s} {REFERENCE_GFLOP[name]:6.2f} GFLOP at 224x224   (small variant: zoo:{name}-small)")
        return 0
    if not args.name or not args.output:
        raise TvmDseError("zoo export needs a model name and -o PATH, e.g. tvm-dse zoo export resnet18 -o r18.onnx")
    proto = zoo_model(args.name if args.name.startswith("zoo:") else f"zoo:{args.name}")
    onnx.save(proto, args.output)
    print(f"wrote {args.output} ({conv_flops(proto) / 1e9:.3f} GFLOP)")
    return 0


def _command_board(args: argparse.Namespace) -> int:
    from . import board

    running = board.load_cluster()
    if args.action == "up":
        if running is not None and running.tracker.alive():
            raise TvmDseError(f"a board cluster is already up (tracker {running.tracker_address}, pids "
                              f"{[running.tracker.pid] + [b.pid for b in running.boards]}); run tvm-dse board down")
        print(f"starting a tracker on 127.0.0.1:{args.tracker_port} and {args.boards} emulated aarch64 board(s) "
              f"with key {args.key!r} ...", flush=True)
        cluster = board.start_cluster(args.boards, args.tracker_port, args.key)
        board.save_cluster(cluster)
        cluster.supervisor = board.start_supervisor(cluster)
        board.save_cluster(cluster)
        print(f"up: tracker {cluster.tracker_address} (pid {cluster.tracker.pid}), boards "
              + ", ".join(f"127.0.0.1:{b.port} (pid {b.pid})" for b in cluster.boards)
              + f"; a supervisor (pid {cluster.supervisor.pid}) restarts a board that stops serving")
        return 0
    if running is None:
        print("no board cluster was started by tvm-dse board up")
        return 0 if args.action == "down" else 1
    if args.action == "down":
        running.stop_supervisor()
        running = board.load_cluster() or running  # with the boards it restarted
        running.stop()
        board.state_file().unlink()
        print(f"stopped tracker {running.tracker_address} and {len(running.boards)} board(s)")
        return 0
    if args.action == "supervise":
        return _supervise_boards(running)
    alive = [b for b in running.boards if b.alive()]
    registered = running.registered() if running.tracker.alive() else 0
    supervised = running.supervisor is not None and running.supervisor.alive()
    print(f"tracker {running.tracker_address} {'up' if running.tracker.alive() else 'DOWN'}; "
          f"{len(alive)} of {len(running.boards)} board processes alive; {registered} registered as {running.key!r}; "
          f"supervisor {'up' if supervised else 'DOWN'}, {running.restarts} restart(s)")
    return 0 if running.tracker.alive() and registered == len(running.boards) and supervised else 1


def _supervise_boards(cluster: BoardCluster) -> int:
    """Run :func:`tvm_dse.board.supervise` on the recorded cluster until its tracker stops or SIGTERM."""
    from . import board

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def restarted(old: ServiceProcess, new: ServiceProcess, why: str) -> None:
        board.save_cluster(cluster)
        print(f"board 127.0.0.1:{old.port} (pid {old.pid}) restarted as pid {new.pid}: {why}", flush=True)

    print(f"supervising {len(cluster.boards)} board(s) of tracker {cluster.tracker_address}", flush=True)
    board.supervise(cluster, stop, restarted)
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvm-dse", description="Find the fastest way to deploy a CNN on a CPU.")
    commands = parser.add_subparsers(dest="command", required=True)

    baseline = commands.add_parser("baseline", help="build a model with TVM's default pipeline, check and time it")
    baseline.add_argument("model", nargs="?", default=DEMO_MODEL,
                          help=f"ONNX file or zoo:NAME[-small] (default: {DEMO_MODEL})")
    baseline.add_argument("--target", default="host", help="preset or TVM target string (default: host)")
    baseline.add_argument("--shape", action="append", metavar="NAME=D,D,...", help="static shape of an input")
    baseline.add_argument("--repeat", type=int, default=10,
                          help="timed samples after a warm-up, each batching runs up to 25 ms (default: 10)")
    baseline.add_argument("--out", help="folder for the exported library of a remote target")
    baseline.add_argument("--json", help="write the results as JSON to this file")
    baseline.set_defaults(handler=_command_baseline)

    optimize = commands.add_parser("optimize", help="find, build and report the fastest plan for a model")
    optimize.add_argument("model", nargs="?", default=DEMO_MODEL,
                          help=f"ONNX file or zoo:NAME[-small] (default: {DEMO_MODEL})")
    optimize.add_argument("--target", default="host", help="preset or TVM target string (default: host)")
    optimize.add_argument("--tracker", metavar="HOST:PORT", help="RPC tracker of the boards to measure on")
    optimize.add_argument("--key", help="key of the boards at the tracker")
    optimize.add_argument("--rpc", metavar="HOST:PORT", help="one RPC server to measure on, without a tracker")
    optimize.add_argument("--searcher", default="qlearning",
                          choices=["qlearning", "exact", "ilp", "greedy", "random", "uniform"])
    optimize.add_argument("--budget", type=int, help="cost evaluations the searcher may spend (default: its own)")
    optimize.add_argument("--memory-limit", type=float, metavar="MB",
                          help="peak memory bound of the plan: its weights, largest workspace and live activations "
                          "(a process adds its runtime's memory, which the report measures)")
    optimize.add_argument("--out", default="tvm_dse_out",
                          help="output folder (default: tvm_dse_out); one tvm_dse wrote before is replaced whole")
    optimize.add_argument("--force", action="store_true",
                          help="write into a non-empty --out folder that holds no earlier tvm_dse output")
    optimize.add_argument("--logs", help="tuning-log directory to resume from and add to "
                                         "(default: $TVM_DSE_LOGS, else ~/.cache/tvm_dse/tuning_logs)")
    optimize.add_argument("--cold", action="store_true",
                          help="do not add the tuning logs shipped with tvm_dse for this target to --logs")
    optimize.add_argument("--tune-trials", type=int, default=0, metavar="N",
                          help="tuning trials the plan's kernels should hold in all: MetaSchedule tunes the "
                               "slowest first, earlier runs' trials count (default: 0, no tuning)")
    optimize.add_argument("--top-k", type=int, metavar="K",
                          help="measure only the K strategies per node a predictor trained on the tuning log "
                               "ranks fastest (default: measure every applicable strategy)")
    optimize.add_argument("--calibration-data", metavar="FILE",
                          help="representative inputs (.npy samples along axis 0, or .npz arrays by input name): "
                               "calibrates the model and lets the search choose int8 strategies")
    optimize.add_argument("--precisions", metavar="P,P,...",
                          help="precisions the plan may use among fp32, int8, fp16 (default: fp32, and int8 "
                               "with --calibration-data)")
    optimize.add_argument("--calibration-method", choices=["minmax", "percentile"], default="minmax",
                          help="how activation ranges are taken from the calibration data (default: minmax)")
    optimize.add_argument("--accuracy-data", metavar="FILE.npz",
                          help="labelled data (arrays by input name, samples along axis 0, and 'labels'): the "
                               "plan's top-1 may lose at most --max-accuracy-loss against fp32")
    optimize.add_argument("--max-accuracy-loss", type=float, default=0.005, metavar="LOSS",
                          help="largest top-1 loss of a plan with int8 nodes (default: 0.005, half a point)")
    optimize.add_argument("--shape", action="append", metavar="NAME=D,D,...", help="static shape of an input")
    optimize.add_argument("--kernel-repeat", type=int, default=5, help="timed repeats per kernel (default: 5)")
    optimize.add_argument("--repeat", type=int, default=10,
                          help="timed samples of each whole plan, after a warm-up (default: 10)")
    optimize.add_argument("--verify", type=int, default=3, metavar="K",
                          help="build and time the K best plans of the search (and the best uniform one) end to "
                               "end; the fastest measured wins (default: 3; 1 builds the search's best alone)")
    optimize.add_argument("--no-reference", action="store_true",
                          help="do not time onnxruntime on the same model for the report (host targets)")
    optimize.add_argument("--no-profile", action="store_true",
                          help="price kernels by their isolated measurements only, without building and profiling "
                               "the uniform plans as whole modules (host targets; quicker, predicts low)")
    optimize.add_argument("--cost-model", action="store_true",
                          help="price every kernel and plan with the cost model of the target's aarch64 core "
                               "(execution profile under emulation, cycles from llvm-mca) even where --tracker or "
                               "--rpc names a board; an aarch64 target with neither is always priced so")
    optimize.add_argument("--no-retry-failed", action="store_true",
                          help="keep what the tuning log holds of kernels it holds only failures or disturbed "
                               "timings of, instead of measuring them again (up to three attempts per kernel)")
    optimize.add_argument("--seed", type=int, default=0)
    optimize.set_defaults(handler=_command_optimize)

    build = commands.add_parser("build", help="build and export a model as a saved plan says (then check and "
                                              "time it, on a host target)")
    build.add_argument("model", help="ONNX file or zoo:NAME[-small] the plan was found for")
    build.add_argument("--plan", required=True, help="plan JSON (tvm-dse optimize writes OUT/plan.json)")
    build.add_argument("--target", help="target (default: the plan's own); must have the plan's target key")
    build.add_argument("--shape", action="append", metavar="NAME=D,D,...", help="static shape of an input")
    build.add_argument("-o", "--output", help="library to write (default: MODEL.ARCH.so here)")
    build.add_argument("--repeat", type=int, default=10,
                       help="timed samples on a host target, after a warm-up (default: 10)")
    build.set_defaults(handler=_command_build)

    graph = commands.add_parser("graph", help="print the DSE graph of a model")
    graph.add_argument("model", help="ONNX file or zoo:NAME[-small]")
    graph.add_argument("--shape", action="append", metavar="NAME=D,D,...", help="static shape of an input")
    graph.add_argument("--json", help="save the graph as JSON to this file")
    graph.set_defaults(handler=_command_graph)

    target = commands.add_parser("target", help="show what tvm_dse makes of a target, or list the presets")
    target.add_argument("targets", nargs="*", help="presets or TVM target strings")
    target.add_argument("--list", action="store_true", help="list the presets")
    target.set_defaults(handler=_command_target)

    zoo = commands.add_parser("zoo", help="list the model zoo or export one of its models as ONNX")
    zoo.add_argument("action", choices=["list", "export"])
    zoo.add_argument("name", nargs="?", help="model to export, e.g. resnet18 or resnet18-small")
    zoo.add_argument("-o", "--output", help="ONNX file to write")
    zoo.set_defaults(handler=_command_zoo)

    logs = commands.add_parser("logs", help="list, show, merge, export, import or prune tuning logs")
    logs.add_argument("action", choices=["list", "show", "merge", "export", "import", "prune"])
    logs.add_argument("argument", nargs="?",
                      help="show: target; merge: another tuning-log directory; export: target; import: file")
    logs.add_argument("-o", "--output", help="export: the JSON-lines file to write")
    logs.add_argument("--target", help="import: refuse records of any other target")
    logs.add_argument("--logs", help="tuning-log directory (default: $TVM_DSE_LOGS, else ~/.cache/tvm_dse/tuning_logs)")
    logs.set_defaults(handler=_command_logs)

    board = commands.add_parser("board", help="start, inspect or stop emulated aarch64 boards behind an RPC tracker")
    board.add_argument("action", choices=["up", "down", "status", "supervise"],
                       help="supervise (started by up): restart a board that stops serving, until the tracker "
                            "stops")
    board.add_argument("--boards", type=int, default=1, help="boards to start (default: 1)")
    board.add_argument("--tracker-port", type=int, default=9190, help="tracker port on 127.0.0.1 (default: 9190)")
    board.add_argument("--key", default="qemu-aarch64", help="key the boards register under (default: qemu-aarch64)")
    board.set_defaults(handler=_command_board)
    return parser


def _warning_line(message: Warning | str, *_: object, **__: object) -> None:
    """A warning as one line on stderr (the message names its file and line where it has one)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line
        try:
            return args.handler(args)
        except TvmDseError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            # every measurement is in the tuning logs the moment it is made (see tvm_dse.measure.store)
            print("\ninterrupted: what was measured is kept in the tuning logs; run the same command again to go "
                  "on from there", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
