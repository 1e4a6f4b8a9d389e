"""The demo's steps: profile -> supernet -> search -> compare with random nets -> retrain -> export
-> measure, each calling the public API (``spos_hw.api``) and recorded by ``Workdir``.

What only the demo adds: the batch size at which the latency budget binds, the budget itself (a
percentile of the calibrated predictor), the searched net beside random nets of the same budget,
and the measurement of the exported file with the table's own runtime and protocol.
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any

import numpy as np

from spos_hw.demo.report import report_markdown, summarize
from spos_hw.demo.state import Workdir
from spos_hw.errors import SposHwError
from spos_hw.io import atomic_write_json, atomic_write_text

log = logging.getLogger("spos_hw.demo")

SPREAD_OVER_NOISE = 3.0
"""A latency budget binds when random architectures' p5-p95 spread is at least this many times the noise."""


def latency_budget(predictor, space, percentile: float, *, samples: int = 100_000, seed: int = 0) -> float:
    """The ``percentile`` of predicted latency over uniformly sampled architectures (ms)."""
    rng = np.random.default_rng(seed)
    return float(np.percentile(predictor.cost(space.sample(rng, samples)), percentile))


class Demo(Workdir):
    """The whole pipeline in one work folder (see the module doc and ``Workdir``)."""

    def _space(self):
        from spos_hw.nas.spaces import get_space

        return get_space(self.space)

    # ------------------------------------------------------------------ steps
    def profile(self, resume: bool) -> dict:
        """Profile at the preset's batch sizes in turn, keeping the first whose random-arch latency
        spread is >= 3x the measured noise (else the one with the largest ratio, said so)."""
        from spos_hw.api import ProfileConfig, profile

        tried = []
        for batch in self.preset.batch_sizes:
            out = self.path(f"lut-b{batch}.json")
            t = profile(
                ProfileConfig(
                    space=self.space,
                    runtime="onnxruntime",
                    device="cpu",
                    threads=1,
                    batch_size=batch,
                    calibrate=self.preset.calibrate,
                    rounds=self.preset.rounds,
                    seed=self.seed,
                    out=str(out),
                    resume=out.exists(),
                ),
                progress=self.progress,
            )
            ratio = t["spread_over_noise"]
            tried.append(
                {
                    "batch": batch,
                    "spread_pct": t["random_arch_latency"]["spread_pct"],
                    "noise_pct": t["noise_floor_pct"],
                    "spread_over_noise": ratio,
                    "median_ms": t["random_arch_latency"]["median_ms"],
                }
            )
            log.info(
                "batch %d: random-arch latency spread %.1f %%, noise %.2f %%",
                batch,
                tried[-1]["spread_pct"],
                t["noise_floor_pct"] or 0,
            )
            if ratio is not None and ratio >= SPREAD_OVER_NOISE:
                break
        best = next((r for r in tried if (r["spread_over_noise"] or 0) >= SPREAD_OVER_NOISE), None)
        binds = best is not None
        best = best or max(tried, key=lambda r: r["spread_over_noise"] or 0)
        shutil.copyfile(self.path(f"lut-b{best['batch']}.json"), self.path("lut.json"))
        return {"batch_size": best["batch"], "tried": tried, "budget_binds": binds, "entries": t["entries"]}

    def train_supernet(self, resume: bool) -> dict:
        from spos_hw.api import SupernetConfig, train_supernet

        cfg = SupernetConfig(
            space=self.space,
            data=self.data,
            epochs=self.preset.supernet_epochs,
            out=str(self.path("supernet.pt")),
            constraints=(("latency", None, None),),
            lut=str(self.path("lut.json")),
            seed=self.seed,
            threads=self.threads,
            resume=resume,
        )
        s = train_supernet(cfg, progress=self.progress)
        return {k: s[k] for k in ("steps", "train_loss", "train_acc", "train_time_s", "sharing")}

    def search(self, resume: bool) -> dict:
        from spos_hw.api import SearchConfig, search
        from spos_hw.latency.predictor import load_predictor

        space = self._space()
        budget = latency_budget(load_predictor(self.path("lut.json"), space), space, self.preset.percentile, seed=self.seed)
        p = self.preset
        s = search(
            SearchConfig(
                supernet=str(self.path("supernet.pt")),
                budgets={"latency": budget},
                lut=str(self.path("lut.json")),
                population=p.population,
                generations=p.generations,
                recal_images=p.recal_images,
                holdout=p.holdout,
                seed=self.seed,
                out=str(self.path("search")),
                resume=resume,
                threads=self.threads,
                checkpoint_s=10.0,
            ),
            progress=self.progress,
        )
        if s.get("arch") is None:
            raise SposHwError("the search evaluated no candidate")
        return {
            "latency_budget_ms": budget,
            "arch": s["arch"],
            "holdout_accuracy": s["accuracy"],
            "latency_predicted_ms": s["latency_ms"],
            "evaluated": s["evaluated"],
            "score_distribution": s["score_distribution"],
        }

    def compare(self, resume: bool, search: dict) -> dict:
        """``compare`` random architectures that meet the same budget, scored as the search scores
        (and, with ``compare_epochs``, retrained alone beside the searched net with one recipe)."""
        import torch

        from spos_hw.api import RetrainConfig, cost_models, retrain
        from spos_hw.nas.checkpoint import load_supernet
        from spos_hw.nas.costs import Bound
        from spos_hw.nas.recalibrate import scorer_for_checkpoint
        from spos_hw.nas.sampling import FeasibleSampler

        p = self.preset
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        net, ckpt = load_supernet(self.path("supernet.pt"))
        space = net.space
        latency = cost_models(space, self.path("lut.json"))["latency"]
        budget = Bound.upper(latency, search["latency_budget_ms"])
        rows = FeasibleSampler(space, [budget], rng=np.random.default_rng([self.seed, 0xC0]), max_tries=1_000_000).sample(
            p.compare
        )
        scorer, _ = scorer_for_checkpoint(net, ckpt, recal_images=p.recal_images, holdout=p.holdout, seed=self.seed)
        nets = [{"role": "searched", "arch": search["arch"]}] + [{"role": "random", "arch": str(a)} for a in space.decode(rows)]
        for n in nets:
            row = space.arch(n["arch"]).to_array()
            n["supernet_accuracy"] = float(scorer(row[None])[0])
            n["latency_predicted_ms"] = float(latency.cost(row))
        if p.compare_epochs:
            self.path("compare").mkdir(exist_ok=True)
            for i, n in enumerate(nets):
                r = retrain(
                    RetrainConfig(
                        space=self.space,
                        data=self.data,
                        arch=n["arch"],
                        epochs=p.compare_epochs,
                        seed=self.seed,
                        out=str(self.path(f"compare/{i:02d}.pt")),
                        threads=self.threads,
                        resume=True,
                        ckpt_every=100,
                    ),
                    progress=self.progress,
                )
                n["standalone_accuracy"] = r["test_accuracy"]
        result = {"nets": nets, "holdout_images": scorer.data.holdout_images, "compare_epochs": p.compare_epochs}
        atomic_write_json(self.path("compare.json"), result)
        return result

    def retrain(self, resume: bool, arch: str) -> dict:
        from spos_hw.api import RetrainConfig, retrain

        p = self.preset
        init = {"init": "supernet", "supernet": str(self.path("supernet.pt"))} if p.retrain_init == "supernet" else {}
        cfg = RetrainConfig(
            space=self.space,
            data=self.data,
            arch=arch,
            epochs=p.retrain_epochs,
            lr=p.retrain_lr,
            augment=p.retrain_augment,
            out=str(self.path("model.pt")),
            seed=self.seed,
            threads=self.threads,
            resume=resume,
            **init,
        )
        s = retrain(cfg, progress=self.progress)
        if s["test_accuracy"] is None:
            raise SposHwError("retraining did not finish")
        return {k: s[k] for k in ("arch", "flops", "params", "test_accuracy", "test_images", "test_origin", "train_time_s")} | {
            "init": p.retrain_init,
            "steps": s["steps"],
        }

    def export(self, resume: bool, batch: int) -> dict:
        from spos_hw.api import ExportConfig, export

        out = self.path("model.onnx")
        r = export(
            ExportConfig(checkpoint=str(self.path("model.pt")), out=str(out), batch_size=batch, verify=True, overwrite=True),
            progress=False,
        )
        return {k: r.get(k) for k in ("path", "max_abs_diff", "top1_agreement", "inputs", "verified", "batch")}

    def measure(self, resume: bool, arch: str, compared: list[str]) -> dict:
        """Time the exported file with the table's runtime and protocol; measure the compared nets and
        fresh ones beside it (the predictor's validation, with its own noise floor)."""
        from spos_hw.latency.predictor import load_predictor
        from spos_hw.latency.profile import run_protocol
        from spos_hw.latency.runtimes import get_runtime
        from spos_hw.latency.table import LatencyTable
        from spos_hw.latency.validate import validate_table
        from spos_hw.protocol import flatten
        from spos_hw.protocol import summarize as stats_of

        space = self._space()
        table = LatencyTable.load(self.path("lut.json"))
        predicted = float(load_predictor(self.path("lut.json"), space).cost(space.encode([space.arch(arch)]))[0])
        with get_runtime("onnxruntime", "cpu", threads=1, clock=table.protocol.clock) as rt:
            timers = {"net": rt.timer_from_onnx(self.path("model.onnx").read_bytes())}
            samples = run_protocol(timers, table.protocol, progress=self.progress, desc="measure model.onnx")
        stats = stats_of(flatten(samples["net"]))
        report = validate_table(
            table,
            samples=self.preset.validate,
            seed=self.seed + 1,
            space=space,
            compose=True,
            plot=self.path("latency_predicted_vs_measured.png"),
            progress=self.progress,
            extra_archs=[space.arch(a) for a in compared],
        )
        measured = {r["arch"]: r["measured_ms"] for r in report["archs"]}
        keys = (
            "samples",
            "mape",
            "within_5pct",
            "within_10pct",
            "kendall_tau",
            "retest_kendall_tau",
            "retest_mape",
            "measured_p5_p95_pct",
            "warnings",
        )
        result = {
            "latency_predicted_ms": predicted,
            "latency_measured_ms": stats[table.protocol.statistic],
            "latency_measured_median_ms": stats["median"],
            "statistic": table.protocol.statistic,
            "clock": table.protocol.clock,
            "batch_size": table.batch_size,
            "compared_measured_ms": {a: measured[str(space.arch(a))] for a in compared},
            "validation": {k: report[k] for k in keys},
        }
        atomic_write_json(self.path("latency.json"), result)
        return result

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        prof = self.step("profile", "lut.json", self.profile)["result"]
        self.step("train_supernet", "supernet.pt", self.train_supernet, inputs=["lut.json"])
        search = self.step(
            "search", "search/result.json", self.search, inputs=["lut.json", "supernet.pt"], partial=["search/state.json"]
        )["result"]
        comp = self.step(
            "compare", "compare.json", lambda r: self.compare(r, search), inputs=["search/result.json"], partial=["compare"]
        )["result"]
        arch = search["arch"]
        self.step("retrain", "model.pt", lambda r: self.retrain(r, arch), inputs=["search/result.json"])
        self.step("export", "model.onnx", lambda r: self.export(r, prof["batch_size"]), inputs=["model.pt"])
        self.step(
            "measure",
            "latency.json",
            lambda r: self.measure(r, arch, [n["arch"] for n in comp["nets"]]),
            inputs=["model.onnx", "lut.json", "compare.json"],
        )
        summary = summarize(self, search, time.perf_counter() - t0)
        atomic_write_json(self.path("summary.json"), summary)
        atomic_write_text(self.path("report.md"), report_markdown(summary))
        return summary


def run_demo(config=None, /, *, progress: bool = True, **options: Any) -> dict:
    """Run (or finish) the demo in ``config.workdir``; returns ``summary.json``'s contents."""
    from spos_hw.api import make_config
    from spos_hw.demo.config import DemoConfig

    return Demo(make_config(DemoConfig, config, options), progress=progress).run()


__all__ = ["SPREAD_OVER_NOISE", "Demo", "latency_budget", "run_demo"]
