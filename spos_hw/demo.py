"""The whole pipeline on the built-in default: what ``spos-hw demo`` and ``make demo`` run.

profile (ONNX Runtime, CPU) -> train the supernet (latency-constrained sampling) -> search under
a latency budget from the table -> retrain the winner -> export ONNX + verify in ORT -> measure
the exported net's real latency against the budget, then ``summary.json``, ``report.md`` and PNGs.

Every step writes its artifact atomically and is recorded in ``DIR/demo_state.json`` with the
artifact's SHA-256, so a rerun skips every step whose artifact is still the one recorded and
resumes an interrupted step from its own checkpoint (profile, training and search all resume).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spos_hw.errors import ArtifactError, ConfigError, OutputError, SposHwError
from spos_hw.io import atomic_write_json, atomic_write_text, file_sha256, read_json
from spos_hw.nas.config import threads_rule

log = logging.getLogger(__name__)

SPACE = "shufflenetv2-small"
STATE = "demo_state.json"


@dataclass(frozen=True)
class Preset:
    """How much work each step does."""

    rounds: int  # latency protocol rounds (table and measurement)
    calibrate: int  # whole subnets measured for the table's calibration
    validate: int  # fresh subnets measured for the predicted-vs-measured plot
    supernet_epochs: float
    population: int
    generations: int
    recal_images: int  # BN recalibration images per candidate
    holdout: int  # held-out images scored per candidate
    retrain_epochs: float
    percentile: float = 40.0  # latency budget: this percentile of the space's predicted latencies


PRESETS = {
    "quick": Preset(rounds=8, calibrate=8, validate=10, supernet_epochs=0.5, population=10, generations=4,
                    recal_images=512, holdout=1000, retrain_epochs=3.0),
    "full": Preset(rounds=20, calibrate=10, validate=50, supernet_epochs=10.0, population=50, generations=20,
                   recal_images=2048, holdout=6000, retrain_epochs=20.0),
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """``spos-hw demo``: the whole pipeline in one work folder."""

    workdir: str = "demo"  # where every artifact goes; a rerun skips finished steps
    budget: str = "quick"  # quick (~10 min on 2 CPU cores) | full (hours, higher accuracy)
    data: Any = "auto"  # auto (Fashion-MNIST if installed, else digits) | fashion-mnist | digits | a folder | Datasets
    threads: int | None = None  # torch CPU threads for training and search; latency is always timed on 1 thread
    seed: int = 0  # seed of every step
    space: str = SPACE  # the search space
    preset: Preset | None = None  # replaces the budget's preset (the tests run a tiny one)

    def __post_init__(self) -> None:
        if self.budget not in PRESETS and self.preset is None:
            raise ConfigError(f"unknown budget {self.budget!r}; choose one of {', '.join(PRESETS)}")
        ok, msg = threads_rule(self.threads)
        if not ok:
            raise ConfigError(msg)

    @property
    def work(self) -> Preset:
        return self.preset or PRESETS[self.budget]


def pick_data(data: str) -> str:
    """``auto``: Fashion-MNIST when the Debian package is installed, else scikit-learn's digits (with a warning)."""
    from spos_hw.nas.data import FASHION_MNIST_DIR

    if data != "auto":
        return data
    if Path(FASHION_MNIST_DIR).is_dir():
        return "fashion-mnist"
    log.warning("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); "
                "falling back to scikit-learn's digits, so the accuracy target does not apply")  # fmt: skip
    return "digits"


def latency_budget(predictor, space, percentile: float, *, samples: int = 100_000, seed: int = 0) -> float:
    """The ``percentile`` of predicted latency over uniformly sampled architectures (ms)."""
    rng = np.random.default_rng(seed)
    return float(np.percentile(predictor.cost(space.sample(rng, samples)), percentile))


class Demo:
    """One work folder: the steps, their recorded artifacts and the final report."""

    def __init__(self, config: DemoConfig, *, progress: bool = True) -> None:
        self.dir = Path(config.workdir)
        if self.dir.exists() and not self.dir.is_dir():
            raise OutputError(f"work folder {str(self.dir)!r} is a file")
        self.budget, self.preset = config.budget, config.work
        self.data, self.threads, self.seed, self.progress = pick_data(config.data), config.threads, config.seed, progress
        self.space = config.space
        from spos_hw.nas.data import check_data
        from spos_hw.nas.spaces import get_space

        check_data(self.data, get_space(self.space))  # a bad --data fails now, not after profiling
        data_name = self.data if isinstance(self.data, str) else getattr(self.data, "recorded_name", "custom")
        self.config = {"budget": self.budget, "data": data_name, "seed": self.seed, "space": self.space,
                       "preset": dataclasses.asdict(self.preset)}  # fmt: skip
        self.state: dict[str, Any] = {"kind": "spos-hw-demo", "config": self.config, "steps": {}}
        path = self.dir / STATE
        if path.is_file():
            old = read_json(path, what="demo state")
            if not isinstance(old, dict) or old.get("kind") != "spos-hw-demo":
                raise ArtifactError(f"{path} is not a demo state file")
            if old.get("config") != self.config:
                diff = sorted(k for k in self.config if old.get("config", {}).get(k) != self.config[k])
                raise OutputError(f"{self.dir} holds a demo run with other settings ({', '.join(diff)}); use another --workdir")
            self.state = old
        elif self.dir.is_dir() and any(self.dir.iterdir()):
            raise OutputError(f"work folder {str(self.dir)!r} is not empty and holds no demo run; use another --workdir")

    # ------------------------------------------------------------------ bookkeeping
    def path(self, name: str) -> Path:
        return self.dir / name

    def done(self, step: str, inputs: list[str]) -> dict | None:
        """The recorded result of ``step`` if its artifact is still the one recorded.

        A step whose inputs changed since it ran (another supernet, another table) is refused:
        its checkpoints no longer match, and redoing it silently would discard its work.
        """
        rec = self.state["steps"].get(step)
        if not rec:
            return None
        changed = [i for i in inputs if not self.path(i).is_file() or file_sha256(self.path(i)) != rec["inputs"].get(i)]
        if changed:
            raise OutputError(f"{', '.join(changed)} changed after the {step} step used it; start again in a new --workdir")
        art = self.path(rec["artifact"])
        if art.is_file() and file_sha256(art) == rec["sha256"]:
            return rec
        log.info("%s: %s changed or is missing, running the step again", step, art)
        return None

    def record(self, step: str, artifact: str, result: dict, seconds: float, inputs: list[str]) -> dict:
        rec = {"artifact": artifact, "sha256": file_sha256(self.path(artifact)), "inputs": {i: file_sha256(self.path(i)) for i in inputs},
               "wall_seconds": round(seconds, 1), "result": result}  # fmt: skip
        self.state["steps"][step] = rec
        atomic_write_json(self.path(STATE), self.state)
        return rec

    def step(self, name: str, artifact: str, fn: Callable[[bool], dict], *, inputs: list[str] = (), partial: list[str] = ()) -> dict:
        """Run ``fn(resume)`` unless ``name`` is done; ``resume`` is true when its checkpoint exists."""
        inputs = list(inputs)
        rec = self.done(name, inputs)
        if rec is not None:
            log.info("[%s] done before (%s), skipped", name, artifact)
            return rec
        resume = self.path(artifact).exists() or any(self.path(p).exists() for p in partial)
        log.info("[%s] %s", name, "resuming" if resume else "running")
        spent = self.state.setdefault("interrupted_s", {})
        spent[name] = spent.get(name, 0.0) + self.interrupted_seconds(name, [artifact, *partial])
        self.state.setdefault("attempts", {})[name] = time.time()  # when this attempt began, should it be killed
        atomic_write_json(self.path(STATE), self.state)
        t0 = time.perf_counter()
        result = fn(resume)
        self.state["attempts"].pop(name, None)
        return self.record(name, artifact, result, spent.pop(name) + time.perf_counter() - t0, inputs)

    def interrupted_seconds(self, step: str, files: list[str]) -> float:
        """Work an earlier, killed attempt at ``step`` did: from its start to its last checkpoint write.

        The state file records when each attempt began; the step's own files (checkpoints are written
        atomically as it goes) tell when it last made progress. Time after that was lost, not spent.
        """
        start = self.state.get("attempts", {}).get(step)
        if start is None:
            return 0.0
        done = [self.path(f).stat().st_mtime for f in files if self.path(f).exists()]
        done += [p.stat().st_mtime for f in files if self.path(f).is_dir() for p in self.path(f).rglob("*") if p.is_file()]
        return max(0.0, max(done, default=start) - start)

    # ------------------------------------------------------------------ steps
    def profile(self, resume: bool) -> dict:
        from spos_hw.api import ProfileConfig, profile

        t = profile(ProfileConfig(space=self.space, runtime="onnxruntime", device="cpu", threads=1, calibrate=self.preset.calibrate,
                                  rounds=self.preset.rounds, seed=self.seed, out=str(self.path("lut.json")), resume=resume),
                    progress=self.progress)  # fmt: skip
        return {"entries": t["entries"], "calibration": {k: t["calibration"].get(k) for k in ("slope", "intercept")}}

    def train_supernet(self, resume: bool) -> dict:
        from spos_hw.api import SupernetConfig, train_supernet

        cfg = SupernetConfig(space=self.space, data=self.data, epochs=self.preset.supernet_epochs, out=str(self.path("supernet.pt")),
                             constraints=(("latency", None, None),), lut=str(self.path("lut.json")), seed=self.seed,
                             threads=self.threads, resume=resume)  # fmt: skip
        s = train_supernet(cfg, progress=self.progress)
        return {k: s[k] for k in ("steps", "train_loss", "train_acc", "train_time_s")}

    def search(self, resume: bool) -> dict:
        from spos_hw.api import SearchConfig, search
        from spos_hw.latency.predictor import load_predictor
        from spos_hw.nas.spaces import get_space

        space = get_space(self.space)
        budget = latency_budget(load_predictor(self.path("lut.json"), space), space, self.preset.percentile, seed=self.seed)
        p = self.preset
        s = search(SearchConfig(
            supernet=str(self.path("supernet.pt")), budgets={"latency": budget}, lut=str(self.path("lut.json")),
            population=p.population, generations=p.generations, recal_images=p.recal_images, holdout=p.holdout, seed=self.seed,
            out=str(self.path("search")), resume=resume, threads=self.threads, checkpoint_s=10.0,
        ), progress=self.progress)  # fmt: skip
        if s.get("arch") is None:
            raise SposHwError("the search evaluated no candidate")
        return {"latency_budget_ms": budget, "arch": s["arch"], "holdout_accuracy": s["accuracy"],
                "latency_predicted_ms": s["latency_ms"], "evaluated": s["evaluated"]}  # fmt: skip

    def retrain(self, resume: bool, arch: str) -> dict:
        from spos_hw.api import RetrainConfig, retrain

        cfg = RetrainConfig(space=self.space, data=self.data, arch=arch, epochs=self.preset.retrain_epochs,
                            out=str(self.path("model.pt")), seed=self.seed, threads=self.threads, resume=resume)  # fmt: skip
        s = retrain(cfg, progress=self.progress)
        if s["test_accuracy"] is None:
            raise SposHwError("retraining did not finish")
        return {k: s[k] for k in ("arch", "flops", "params", "test_accuracy", "test_images", "test_origin", "train_time_s")}

    def export(self, resume: bool) -> dict:
        from spos_hw.api import ExportConfig, export

        out = self.path("model.onnx")
        r = export(ExportConfig(checkpoint=str(self.path("model.pt")), out=str(out), verify=True, overwrite=True), progress=False)
        return {k: r.get(k) for k in ("path", "max_abs_diff", "top1_agreement", "inputs", "verified")}

    def measure(self, resume: bool, arch: str) -> dict:
        """Time the exported file with the table's runtime and protocol; validate the predictor beside it."""
        from spos_hw.latency.predictor import load_predictor
        from spos_hw.latency.profile import run_protocol
        from spos_hw.latency.runtimes import get_runtime
        from spos_hw.latency.table import LatencyTable
        from spos_hw.latency.validate import validate_table
        from spos_hw.nas.spaces import get_space
        from spos_hw.protocol import flatten, summarize

        space = get_space(self.space)
        table = LatencyTable.load(self.path("lut.json"))
        predicted = float(load_predictor(self.path("lut.json"), space).cost(space.encode([space.arch(arch)]))[0])
        with get_runtime("onnxruntime", "cpu", threads=1, clock=table.protocol.clock) as rt:
            timers = {"net": rt.timer_from_onnx(self.path("model.onnx").read_bytes())}
            samples = run_protocol(timers, table.protocol, progress=self.progress, desc="measure model.onnx")
        stats = summarize(flatten(samples["net"]))
        report = validate_table(table, samples=self.preset.validate, seed=self.seed + 1, space=space, compose=True,
                                plot=self.path("latency_predicted_vs_measured.png"), progress=self.progress)  # fmt: skip
        result = {
            "latency_predicted_ms": predicted,
            "latency_measured_ms": stats[table.protocol.statistic],
            "latency_measured_median_ms": stats["median"],
            "statistic": table.protocol.statistic,
            "clock": table.protocol.clock,
            "validation": {k: report[k] for k in ("samples", "mape", "within_5pct", "within_10pct", "kendall_tau", "retest_kendall_tau")},
        }
        atomic_write_json(self.path("latency.json"), result)
        return result

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        self.step("profile", "lut.json", self.profile)
        self.step("train_supernet", "supernet.pt", self.train_supernet, inputs=["lut.json"])
        search = self.step("search", "search/result.json", self.search, inputs=["lut.json", "supernet.pt"],
                           partial=["search/state.json"])["result"]  # fmt: skip
        arch = search["arch"]
        self.step("retrain", "model.pt", lambda r: self.retrain(r, arch), inputs=["search/result.json"])
        self.step("export", "model.onnx", self.export, inputs=["model.pt"])
        self.step("measure", "latency.json", lambda r: self.measure(r, arch), inputs=["model.onnx", "lut.json"])
        summary = self.summary(search, time.perf_counter() - t0)
        atomic_write_json(self.path("summary.json"), summary)
        atomic_write_text(self.path("report.md"), report_markdown(summary))
        return summary

    def summary(self, search: dict, elapsed: float) -> dict:
        s = self.state["steps"]
        retrain, export, measure = s["retrain"]["result"], s["export"]["result"], s["measure"]["result"]
        budget = search["latency_budget_ms"]
        return {
            "kind": "spos-hw-demo-summary",
            "budget": self.budget,
            "data": self.data,
            "space": self.space,
            "arch": search["arch"],
            "test_accuracy": retrain["test_accuracy"],
            "test_images": retrain["test_images"],
            "holdout_accuracy_supernet": search["holdout_accuracy"],
            "latency_budget_ms": budget,
            "latency_budget_percentile": self.preset.percentile,
            "latency_predicted_ms": measure["latency_predicted_ms"],
            "latency_measured_ms": measure["latency_measured_ms"],
            "latency_within_budget": bool(measure["latency_measured_ms"] <= budget * 1.05),
            "latency_protocol": {"runtime": "onnxruntime", "device": "cpu", "threads": 1,
                                 "statistic": measure["statistic"], "clock": measure["clock"]},  # fmt: skip
            "predictor_validation": measure["validation"],
            "flops": retrain["flops"],
            "params": retrain["params"],
            "onnx_max_abs_diff": export["max_abs_diff"],
            "onnx_top1_agreement": export["top1_agreement"],
            "onnx_verified_on": export["inputs"],
            "candidates_evaluated": search["evaluated"],
            "wall_seconds": {k: v["wall_seconds"] for k, v in s.items()},
            "wall_seconds_total": round(sum(v["wall_seconds"] for v in s.values()), 1),
            "wall_seconds_this_run": round(elapsed, 1),
            "artifacts": {
                "latency_table": "lut.json", "supernet": "supernet.pt", "search": "search/", "model": "model.pt",
                "onnx": "model.onnx", "latency": "latency.json", "plots": sorted(str(p.relative_to(self.dir)) for p in self.dir.glob("**/*.png")),
            },  # fmt: skip
        }


def report_markdown(s: dict) -> str:
    """``report.md``: the figures of ``summary.json`` for a person, with the plots inline."""
    ok = "met" if s["latency_within_budget"] else "NOT met"
    v = s["predictor_validation"]
    lines = [
        f"# spos-hw demo ({s['budget']} budget, {s['data']}, {s['space']})",
        "",
        f"Chosen architecture: `{s['arch']}`",
        "",
        "| figure | value |",
        "|---|---|",
        f"| test accuracy (retrained from scratch) | {100 * s['test_accuracy']:.2f} % on {s['test_images']:,} images |",
        f"| held-out accuracy with supernet weights | {100 * s['holdout_accuracy_supernet']:.2f} % |",
        f"| latency budget ({s['latency_budget_percentile']:g}th percentile of the space's predicted latency) | {s['latency_budget_ms']:.4f} ms |",
        f"| predicted latency | {s['latency_predicted_ms']:.4f} ms |",
        f"| measured latency of model.onnx (ORT CPU, 1 thread, {s['latency_protocol']['statistic']}, {s['latency_protocol']['clock']} clock) | {s['latency_measured_ms']:.4f} ms ({ok}: <= budget + 5%) |",
        f"| predictor on {v['samples']} fresh subnets | MAPE {v['mape']:.2f} %, {100 * v['within_5pct']:.0f} % within 5 %, Kendall tau {v['kendall_tau']:.3f} (re-test {v['retest_kendall_tau']:.3f}) |",
        f"| FLOPs / params | {s['flops'] / 1e6:.2f} M / {s['params'] / 1e6:.3f} M |",
        f"| ONNX vs torch | max abs diff {s['onnx_max_abs_diff']:.2e}, top-1 agreement {100 * s['onnx_top1_agreement']:.2f} % ({s['onnx_verified_on']}) |",
        f"| candidates scored | {s['candidates_evaluated']} |",
        "",
        "| step | wall seconds |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in s["wall_seconds"].items()],
        f"| total | {s['wall_seconds_total']:.1f} |",
        "",
        *[f"![{p}]({p})" for p in s["artifacts"]["plots"]],
        "",
    ]
    return "\n".join(lines)


def run_demo(config: DemoConfig | None = None, /, *, progress: bool = True, **options: Any) -> dict:
    """Run (or finish) the demo in ``config.workdir``; returns ``summary.json``'s contents."""
    from spos_hw.api import make_config

    return Demo(make_config(DemoConfig, config, options), progress=progress).run()


__all__ = ["PRESETS", "Demo", "DemoConfig", "Preset", "latency_budget", "pick_data", "report_markdown", "run_demo"]
