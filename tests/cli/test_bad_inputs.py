"""Every command, handed bad input: exit code 2, one line on stderr, no traceback, and every
file the user already had (the shared artifacts, a pre-existing output file, the bad inputs
themselves) byte-for-byte unchanged.

Each row is ``(id, argv, needles)``. ``argv`` entries are formatted with the workspace
placeholders of ``Workspace`` (``{supernet}``, ``{w}``, ``{copy_lut}`` ...); ``needles`` must
all appear in the error line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.artifacts import ARCH, ARCH2, OTHER_SPACE, SPACE
from tests.support.artifacts import TINY_FLAGS as TINY
from tests.support.cli import as_seen, assert_user_error
from tests.support.files import evil_checkpoint, tree_hashes

TS = ["train-supernet", "--space", SPACE, "--data", "digits", "--steps", "1", *TINY]
RT = ["retrain", ARCH, "--space", SPACE, "--data", "digits", "--steps", "1", *TINY]
SMALL = ["--population", "4", "--generations", "1", "--recal-images", "32", "--holdout", "40", "--threads", "1", "--no-progress"]
SE = ["search", "--supernet", "{supernet}", "--flops-m", "1", *SMALL]
SPACE2 = SPACE + ",classes=2"  # for the two-class image folders
PR = ["profile", "--space", SPACE, "--runtime", "torch", "--calibrate", "2", "--rounds", "1", "--repeats", "1", "--warmup", "0"]
BAD_ARCHS = [
    ("malformed", "0,1,x", "comma-separated integers"),
    ("out-of-range", ",".join(["7"] + ["0"] * 19), "out of range"),
    ("too-short", "0,1", "blocks"),
    ("bad-json", '{{"op": [0,', "malformed"),
    ("missing-file", "{w}/nope.json", "does not exist"),
    ("bad-file", "{bad_json}", "not valid JSON"),
]

CASES = [
    # spaces / info --------------------------------------------------------------------------
    ("spaces-unknown-option", ["spaces", "--bogus"], ["--bogus"]),
    *[(f"info-arch-{k}", ["info", a, "--space", SPACE], [n]) for k, a, n in BAD_ARCHS],
    ("info-unknown-space", ["info", ARCH, "--space", "nope"], ["unknown space 'nope'"]),
    ("info-bad-space-option", ["info", ARCH, "--space", "shufflenetv2-small:size=x"], ["bad space option"]),
    ("info-space-file-missing", ["info", ARCH, "--space", "{w}/space.json"], ["does not exist"]),
    ("info-space-file-malformed", ["info", ARCH, "--space", "{bad_json}"], ["not valid JSON"]),
    ("info-space-file-not-a-space", ["info", ARCH, "--space", "{not_table}"], ["space"]),
    ("info-lut-other-space", ["info", ARCH, "--space", SPACE, "--lut", "{other_lut}"], ["measured for"]),
    ("info-lut-missing", ["info", ARCH, "--space", SPACE, "--lut", "{w}/nope.json"], ["does not exist"]),
    ("info-lut-malformed", ["info", ARCH, "--space", SPACE, "--lut", "{bad_json}"], ["not valid JSON"]),
    ("info-lut-not-a-table", ["info", ARCH, "--space", SPACE, "--lut", "{not_table}"], ["not a spos-hw latency table"]),
    ("info-lut-wrong-types", ["info", ARCH, "--space", SPACE, "--lut", "{wrong_types_lut}"], ["latency table"]),
    ("info-lut-binary", ["info", ARCH, "--space", SPACE, "--lut", "{supernet}"], ["not valid JSON"]),
    ("info-lut-partial", ["info", ARCH, "--space", SPACE, "--lut", "{partial_lut}"], ["incomplete", "--resume"]),
    # profile --------------------------------------------------------------------------------
    ("profile-no-space", ["profile", "--out", "{w}/lut.json"], ["--space"]),
    ("profile-unknown-space", ["profile", "--space", "nope", "--out", "{w}/lut.json"], ["unknown space"]),
    ("profile-existing-out", [*PR, "--out", "{existing}"], ["already exists"]),
    ("profile-missing-parent", [*PR, "--out", "{w}/no/such/lut.json"], ["does not exist"]),
    ("profile-unwritable", [*PR, "--out", "{unwritable}/lut.json"], ["not writable"]),
    ("profile-resume-and-overwrite", [*PR, "--out", "{copy_lut}", "--resume", "--overwrite"], ["not both"]),
    ("profile-resume-other-batch", [*PR, "--batch-size", "2", "--out", "{copy_partial_lut}", "--resume"], ["batch"]),
    (
        "profile-resume-other-space",
        [
            "profile",
            "--space",
            "shufflenetv2-small",
            "--runtime",
            "torch",
            "--calibrate",
            "2",
            "--out",
            "{copy_partial_lut}",
            "--resume",
        ],
        ["space"],
    ),
    ("profile-resume-corrupt", [*PR, "--out", "{bad_json}", "--resume"], ["not valid JSON"]),
    ("profile-resume-not-a-table", [*PR, "--out", "{not_table}", "--resume"], ["not a spos-hw latency table"]),
    ("profile-bundle-and-import", [*PR, "--export-bundle", "{w}/b", "--import-measurements", "{w}/m.json"], ["separate steps"]),
    ("profile-import-missing", ["profile", "--import-measurements", "{w}/m.json", "--out", "{w}/lut.json"], ["does not exist"]),
    ("profile-import-malformed", ["profile", "--import-measurements", "{bad_json}", "--out", "{w}/lut.json"], ["not valid JSON"]),
    ("profile-import-foreign", ["profile", "--import-measurements", "{lut}", "--out", "{w}/lut.json"], ["measurements"]),
    ("profile-bundle-existing", [*PR, "--export-bundle", "{user_dir}"], ["exists"]),
    ("profile-zero-threads", [*PR, "--threads", "0", "--out", "{w}/lut.json"], ["--threads"]),
    ("profile-unknown-runtime", [*PR, "--runtime", "tvm", "--out", "{w}/lut.json"], ["--runtime"]),
    # validate-lut ---------------------------------------------------------------------------
    ("validate-missing", ["validate-lut", "{w}/nope.json"], ["does not exist"]),
    ("validate-malformed", ["validate-lut", "{bad_json}"], ["not valid JSON"]),
    ("validate-not-a-table", ["validate-lut", "{not_table}"], ["not a spos-hw latency table"]),
    ("validate-wrong-types", ["validate-lut", "{wrong_types_lut}"], ["latency table"]),
    ("validate-partial", ["validate-lut", "{partial_lut}"], ["incomplete"]),
    ("validate-other-space", ["validate-lut", "{other_lut}", "--space", SPACE], ["measured for"]),
    ("validate-plot-exists", ["validate-lut", "{lut}", "--samples", "2", "--plot", "{existing}"], ["already exists"]),
    ("validate-plot-missing-parent", ["validate-lut", "{lut}", "--samples", "2", "--plot", "{w}/no/p.png"], ["does not exist"]),
    ("validate-plot-unwritable", ["validate-lut", "{lut}", "--samples", "2", "--plot", "{unwritable}/p.png"], ["not writable"]),
    ("validate-one-sample", ["validate-lut", "{lut}", "--samples", "1"], ["--samples"]),
    # train-supernet -------------------------------------------------------------------------
    ("ts-steps-and-epochs", [*TS, "--epochs", "1", "--out", "{w}/s.pt"], ["steps or epochs"]),
    ("ts-resume-and-overwrite", [*TS, "--out", "{copy_supernet}", "--resume", "--overwrite"], ["--resume or --overwrite"]),
    ("ts-existing-out", [*TS, "--out", "{existing}"], ["already exists"]),
    ("ts-existing-summary", [*TS, "--out", "{w}/existing.ckpt"], ["already exists"]),  # existing.json is its summary
    ("ts-missing-parent", [*TS, "--out", "{w}/no/s.pt"], ["does not exist"]),
    ("ts-unwritable", [*TS, "--out", "{unwritable}/s.pt"], ["not writable"]),
    ("ts-resume-garbage", [*TS, "--out", "{copy_garbage}", "--resume"], ["cannot be loaded"]),
    ("ts-resume-truncated", [*TS, "--out", "{truncated}", "--resume"], ["cannot be loaded"]),
    ("ts-resume-foreign-space", [*TS, "--out", "{copy_other_supernet}", "--resume"], ["made for space"]),
    ("ts-resume-subnet", [*TS, "--out", "{copy_model}", "--resume"], ["subnet"]),
    ("ts-resume-other-config", [*TS, "--out", "{copy_supernet}", "--resume", "--seed", "5"], ["cannot resume", "seed"]),
    ("ts-resume-evil", [*TS, "--out", "{evil}", "--resume"], ["refused"]),
    ("ts-latency-without-lut", [*TS, "--constraint", "latency", "--range", ":3", "--out", "{w}/s.pt"], ["--lut"]),
    (
        "ts-lut-other-space",
        [*TS, "--constraint", "latency", "--range", ":3", "--lut", "{other_lut}", "--out", "{w}/s.pt"],
        ["measured for"],
    ),
    (
        "ts-lut-malformed",
        [*TS, "--constraint", "latency", "--range", ":3", "--lut", "{bad_json}", "--out", "{w}/s.pt"],
        ["not valid JSON"],
    ),
    ("ts-infeasible-range", [*TS, "--constraint", "flops", "--range", "5:6", "--out", "{w}/s.pt"], ["achievable"]),
    ("ts-empty-range", [*TS, "--constraint", "flops", "--range", "0.35:0.3", "--out", "{w}/s.pt"], ["range"]),
    ("ts-range-without-constraint", [*TS, "--range", "0.3:0.35", "--out", "{w}/s.pt"], ["--range"]),
    ("ts-data-missing", [*TS[:4], "{w}/nodata", *TS[5:], "--out", "{w}/s.pt"], ["does not exist"]),
    ("ts-data-empty", [*TS[:4], "{empty_data}", *TS[5:], "--out", "{w}/s.pt"], ["train"]),
    ("ts-data-no-train", [*TS[:4], "{flat_data}", *TS[5:], "--out", "{w}/s.pt"], ["train"]),
    ("ts-data-undecodable", [*TS[:2], SPACE2, "--data", "{broken_data}", *TS[5:], "--out", "{w}/s.pt"], ["x.png"]),
    ("ts-data-a-file", [*TS[:4], "{existing}", *TS[5:], "--out", "{w}/s.pt"], ["not a folder"]),
    (
        "ts-classes-mismatch",
        ["train-supernet", "--space", "shufflenetv2-small:size=8,classes=3", "--data", "digits", "--out", "{w}/s.pt"],
        ["classes=10"],
    ),
    ("ts-batch-indivisible", [*TS, "--accum", "3", "--out", "{w}/s.pt"], ["divisible"]),
    ("ts-batch-too-big", [*TS, "--batch-size", "100000", "--out", "{w}/s.pt"], ["larger than"]),
    ("ts-holdout-too-big", [*TS, "--holdout", "100000", "--out", "{w}/s.pt"], ["holdout"]),
    ("ts-device-unknown", [*TS, "--device", "tpu", "--out", "{w}/s.pt"], ["tpu"]),
    # retrain --------------------------------------------------------------------------------
    *[(f"rt-arch-{k}", ["retrain", a, *RT[2:], "--out", "{w}/m.pt"], [n]) for k, a, n in BAD_ARCHS],
    ("rt-steps-and-epochs", [*RT, "--epochs", "1", "--out", "{w}/m.pt"], ["steps or epochs"]),
    ("rt-resume-and-overwrite", [*RT, "--out", "{copy_model}", "--resume", "--overwrite"], ["--resume or --overwrite"]),
    ("rt-existing-out", [*RT, "--out", "{existing}"], ["already exists"]),
    ("rt-missing-parent", [*RT, "--out", "{w}/no/m.pt"], ["does not exist"]),
    ("rt-unwritable", [*RT, "--out", "{unwritable}/m.pt"], ["not writable"]),
    ("rt-resume-garbage", [*RT, "--out", "{copy_garbage}", "--resume"], ["cannot be loaded"]),
    ("rt-resume-supernet", [*RT, "--out", "{copy_supernet}", "--resume"], ["supernet"]),
    ("rt-resume-other-arch", ["retrain", ARCH2, *RT[2:], "--out", "{copy_model}", "--resume"], ["cannot resume", "arch"]),
    (
        "rt-resume-other-space",
        ["retrain", ARCH, "--space", "shufflenetv2-small:size=16", *RT[4:], "--out", "{copy_model}", "--resume"],
        ["made for space"],
    ),
    ("rt-resume-evil", [*RT, "--out", "{evil}", "--resume"], ["refused"]),
    ("rt-data-empty", [*RT[:5], "{empty_data}", *RT[6:], "--out", "{w}/m.pt"], ["train"]),
    ("rt-data-undecodable", [*RT[:3], SPACE2, "--data", "{broken_data}", *RT[6:], "--out", "{w}/m.pt"], ["x.png"]),
    ("rt-zero-lr", [*RT, "--lr", "0", "--out", "{w}/m.pt"], ["--lr"]),
    ("rt-init-supernet-without-one", [*RT, "--init", "supernet", "--out", "{w}/m.pt"], ["--supernet"]),
    (
        "rt-init-other-space-supernet",
        [*RT, "--init", "supernet", "--supernet", "{other_supernet}", "--out", "{w}/m.pt"],
        ["made for space"],
    ),
    ("rt-supernet-without-init", [*RT, "--supernet", "{supernet}", "--out", "{w}/m.pt"], ["--init supernet"]),
    # search ---------------------------------------------------------------------------------
    ("se-no-supernet", ["search", "--flops-m", "1", "--out", "{w}/s"], ["--supernet"]),
    ("se-supernet-missing", ["search", "--supernet", "{w}/nope.pt", "--flops-m", "1", "--out", "{w}/s"], ["does not exist"]),
    ("se-supernet-garbage", [*SE[:2], "{garbage}", *SE[3:], "--out", "{w}/s"], ["cannot be loaded"]),
    ("se-supernet-truncated", [*SE[:2], "{truncated}", *SE[3:], "--out", "{w}/s"], ["cannot be loaded"]),
    ("se-supernet-is-subnet", [*SE[:2], "{model}", *SE[3:], "--out", "{w}/s"], ["subnet", "supernet"]),
    ("se-supernet-is-json", [*SE[:2], "{lut}", *SE[3:], "--out", "{w}/s"], ["cannot be loaded"]),
    ("se-supernet-evil", [*SE[:2], "{evil}", *SE[3:], "--out", "{w}/s"], ["refused"]),
    ("se-no-budget", ["search", "--supernet", "{supernet}", *SMALL, "--out", "{w}/s"], ["at least one budget"]),
    ("se-latency-without-lut", [*SE, "--latency-ms", "3", "--out", "{w}/s"], ["--lut"]),
    ("se-lut-other-space", [*SE, "--latency-ms", "3", "--lut", "{other_lut}", "--out", "{w}/s"], ["measured for"]),
    ("se-lut-malformed", [*SE, "--latency-ms", "3", "--lut", "{bad_json}", "--out", "{w}/s"], ["not valid JSON"]),
    ("se-lut-partial", [*SE, "--latency-ms", "3", "--lut", "{partial_lut}", "--out", "{w}/s"], ["incomplete"]),
    ("se-infeasible-flops", [*SE[:3], "--flops-m", "0.1", *SMALL, "--out", "{w}/s"], ["achievable minimum"]),
    ("se-infeasible-latency", [*SE, "--latency-ms", "0.000001", "--lut", "{lut}", "--out", "{w}/s"], ["achievable minimum"]),
    ("se-infeasible-joint", [*SE[:3], "--flops-m", "0.2525", "--params-m", "0.1393", *SMALL, "--out", "{w}/s"], ["at once"]),
    ("se-negative-budget", [*SE[:3], "--flops-m", "-1", *SMALL, "--out", "{w}/s"], ["positive"]),
    ("se-out-is-file", [*SE, "--out", "{existing}"], ["is a file"]),
    ("se-out-has-search", [*SE, "--out", "{copy_search}"], ["already exists", "--resume"]),
    ("se-resume-and-overwrite", [*SE, "--out", "{copy_search}", "--resume", "--overwrite"], ["not both"]),
    ("se-resume-bad-state", [*SE, "--out", "{bad_state_search}", "--resume"], ["not valid JSON"]),
    ("se-resume-not-a-state", [*SE, "--out", "{foreign_state_search}", "--resume"], ["not a spos-hw search state"]),
    ("se-resume-other-config", [*SE[:3], "--flops-m", "0.9", *SMALL, "--out", "{copy_search}", "--resume"], ["cannot resume"]),
    ("se-out-unwritable", [*SE, "--out", "{unwritable}/s"], ["cannot create"]),
    ("se-data-empty", [*SE, "--data", "{empty_data}", "--out", "{w}/s"], ["train"]),
    ("se-data-other", [*SE, "--data", "fashion-mnist", "--out", "{w}/s"], ["trained on 'digits'"]),
    ("se-report-missing", ["search", "--report", "{w}/nope", "--flops-m", "1"], ["does not exist"]),
    ("se-report-bad-history", ["search", "--report", "{bad_state_search}", "--flops-m", "1"], ["not valid JSON"]),
    ("se-report-not-a-history", ["search", "--report", "{foreign_state_search}", "--flops-m", "1"], ["history"]),
    ("se-report-no-budget-met", ["search", "--report", "{search}", "--flops-m", "0.1"], ["none of the"]),
    ("se-population-zero", [*SE, "--population", "0", "--out", "{w}/s"], ["population"]),
    ("se-random-with-topk", [*SE, "--strategy", "random", "--topk", "2", "--out", "{w}/s"], ["evolution only"]),
    ("se-threads-zero", [*SE, "--threads", "0", "--out", "{w}/s"], ["--threads"]),
    # rank-check ------------------------------------------------------------------------------
    ("rc-supernet-missing", ["rank-check", "{w}/nope.pt", "--out", "{w}/r"], ["does not exist"]),
    ("rc-supernet-evil", ["rank-check", "{evil}", "--out", "{w}/r"], ["refused"]),
    ("rc-supernet-is-subnet", ["rank-check", "{model}", "--out", "{w}/r"], ["subnet"]),
    ("rc-too-few-archs", ["rank-check", "{supernet}", "--archs", "2", "--out", "{w}/r"], ["--archs"]),
    ("rc-repeated-too-many", ["rank-check", "{supernet}", "--archs", "3", "--repeated", "5", "--out", "{w}/r"], ["--repeated"]),
    ("rc-latency-without-lut", ["rank-check", "{supernet}", "--stratify", "latency", "--out", "{w}/r"], ["--lut"]),
    ("rc-steps-and-epochs", ["rank-check", "{supernet}", "--steps", "1", "--epochs", "1", "--out", "{w}/r"], ["steps or epochs"]),
    ("rc-infeasible-budget", ["rank-check", "{supernet}", "--flops-m", "0.1", "--out", "{w}/r"], ["achievable minimum"]),
    ("rc-out-is-file", ["rank-check", "{supernet}", "--out", "{existing}"], ["is a file"]),
    ("rc-out-missing-parent", ["rank-check", "{supernet}", "--out", "{w}/no/r"], ["does not exist"]),
    ("rc-resume-and-overwrite", ["rank-check", "{supernet}", "--resume", "--overwrite", "--out", "{w}/r"], ["not both"]),
    ("rc-threads-zero", ["rank-check", "{supernet}", "--threads", "0", "--out", "{w}/r"], ["--threads"]),
    # demo ------------------------------------------------------------------------------------
    ("demo-unknown-budget", ["demo", "--workdir", "{w}/d", "--budget", "huge"], ["huge"]),
    ("demo-workdir-is-file", ["demo", "--workdir", "{existing}"], ["is a file"]),
    ("demo-workdir-foreign", ["demo", "--workdir", "{copy_search}"], ["not empty"]),
    ("demo-threads-zero", ["demo", "--workdir", "{w}/d", "--threads", "0"], ["--threads"]),
    ("demo-data-empty", ["demo", "--workdir", "{w}/d", "--data", "{empty_data}"], ["train"]),
]

# export ----------------------------------------------------------------------------------------
EX = ["export", "--checkpoint", "{model}"]
EXPORT_CASES = [
    ("export-no-source", ["export", "--out", "{w}/n.onnx"], ["needs --checkpoint"]),
    ("export-arch-without-space", ["export", "--arch", ARCH, "--out", "{w}/n.onnx"], ["--space"]),
    ("export-ckpt-other-space", [*EX, "--space", OTHER_SPACE, "--out", "{w}/n.onnx"], ["was made for space"]),
    ("export-ckpt-other-arch", [*EX, "--space", SPACE, "--arch", ARCH2, "--out", "{w}/n.onnx"], ["holds arch"]),
    ("export-ckpt-supernet", ["export", "--checkpoint", "{supernet}", "--out", "{w}/n.onnx"], ["supernet"]),
    ("export-ckpt-garbage", ["export", "--checkpoint", "{garbage}", "--out", "{w}/n.onnx"], ["cannot be loaded"]),
    ("export-ckpt-missing", ["export", "--checkpoint", "{w}/nope.pt", "--out", "{w}/n.onnx"], ["does not exist"]),
    ("export-ckpt-missing-parent", [*EX, "--out", "{w}/no/n.onnx"], ["does not exist"]),
    ("export-int8-float-net", [*EX, "--precision", "int8", "--out", "{w}/n.onnx"], ["give --calibrate N"]),
    ("export-trt-onnx-name", [*EX, "--format", "trt", "--out", "{w}/n.onnx"], ["engine"]),
    ("export-check-trt-missing", ["export", "--check-trt", "{w}/nope.onnx"], ["does not exist"]),
    ("export-check-trt-garbage", ["export", "--check-trt", "{garbage}"], ["not a readable ONNX"]),
    ("export-check-trt-version", ["export", "--check-trt", "{garbage}", "--trt-version", "9.2"], ["no documented opset range"]),
    ("export-calibrate-fp32", [*EX, "--calibrate", "8", "--out", "{w}/n.onnx"], ["--precision int8"]),
    *[(f"export-arch-{k}", ["export", "--arch", a, "--space", SPACE, "--out", "{w}/n.onnx"], [n]) for k, a, n in BAD_ARCHS],
    ("export-unknown-space", ["export", "--arch", ARCH, "--space", "nope", "--out", "{w}/n.onnx"], ["unknown space"]),
    ("export-existing-out", ["export", "--arch", ARCH, "--space", SPACE, "--out", "{existing}"], ["already exists"]),
    ("export-missing-parent", ["export", "--arch", ARCH, "--space", SPACE, "--out", "{w}/no/n.onnx"], ["does not exist"]),
    ("export-unwritable", ["export", "--arch", ARCH, "--space", SPACE, "--out", "{unwritable}/n.onnx"], ["not writable"]),
]


def _unwritable_dir(w: Path) -> Path:
    """A folder this process cannot create files in: a read-only folder, or (as root, who
    ignores permissions) a sysfs folder; the test is skipped where neither exists."""
    ro = w / "readonly"
    ro.mkdir()
    (ro / "keep.txt").write_text("the user's file")
    ro.chmod(0o555)
    for cand in (ro, Path("/sys/fs"), Path("/sys")):
        try:
            fd, probe = tempfile.mkstemp(dir=cand)
        except OSError:
            return cand
        os.close(fd)
        os.unlink(probe)
    pytest.skip("no unwritable folder here (root without sysfs)")


class Workspace(dict):
    """The user's folder for one case: pre-existing files and bad inputs; placeholders on demand."""

    def __init__(self, w: Path, artifacts) -> None:
        super().__init__(w=str(w))
        self.root, self.art = w, artifacts
        for name in ("supernet", "model", "lut", "partial_lut", "other_supernet", "other_lut", "search"):
            self[name] = str(getattr(artifacts, name))
        (w / "existing.pt").write_bytes(b"the user's own file, not ours to touch\n")
        (w / "existing.json").write_text('{"mine": true}\n')
        self["existing"] = str(w / "existing.pt")
        (w / "garbage.pt").write_bytes(os.urandom(4096))
        self["garbage"] = str(w / "garbage.pt")
        (w / "bad.json").write_text('{"schema": "spos-hw')
        self["bad_json"] = str(w / "bad.json")
        (w / "not_table.json").write_text('{"hello": [1, 2]}')
        self["not_table"] = str(w / "not_table.json")

    def __missing__(self, key: str) -> str:
        w, art = self.root, self.art
        if key.startswith("copy_"):
            src = Path(self[key[5:]])
            dst = w / f"copy_{src.name}"
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
            value = dst
        elif key == "truncated":
            data = art.supernet.read_bytes()
            value = w / "truncated.pt"
            value.write_bytes(data[: len(data) // 2])
        elif key == "wrong_types_lut":
            d = json.loads(art.lut.read_text()) | {"entries": "fast", "fixed": [1, 2]}
            value = w / "wrong_types.json"
            value.write_text(json.dumps(d))
        elif key == "evil":
            import torch

            value = evil_checkpoint(w / "evil.pt", w / "PWNED", torch.load(art.supernet, weights_only=True))
        elif key == "unwritable":
            value = _unwritable_dir(w)
        elif key == "user_dir":
            value = w / "mine"
            value.mkdir()
            (value / "notes.txt").write_text("keep me")
        elif key == "empty_data":
            value = w / "empty_data"
            (value / "train").mkdir(parents=True)
        elif key == "flat_data":
            value = w / "flat_data"
            value.mkdir()
            (value / "a.png").write_bytes(b"\x89PNG not really")
        elif key == "broken_data":
            value = w / "broken_data"
            for cls in ("a", "b"):
                (value / "train" / cls).mkdir(parents=True)
                (value / "train" / cls / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        elif key == "bad_state_search":
            value = w / "bad_state"
            shutil.copytree(art.search, value)
            (value / "state.json").write_text('{"kind": "search-state", ')
            (value / "history.json").write_text("[1, 2")
        elif key == "foreign_state_search":
            value = w / "foreign_state"
            shutil.copytree(art.search, value)
            (value / "state.json").write_text('{"kind": "something else"}')
            (value / "history.json").write_text('{"entries": "none"}')
        else:
            raise KeyError(key)
        self[key] = str(value)
        return self[key]


def _check(run_cli, artifacts, tmp_path, argv, needles):
    ws = Workspace(tmp_path, artifacts)
    args = [a.format_map(ws) for a in argv]
    before = tree_hashes(tmp_path, artifacts.dir)
    res = run_cli(*args)
    assert_user_error(as_seen(res), *needles)
    after = tree_hashes(tmp_path, artifacts.dir)
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"
    assert not (tmp_path / "PWNED").exists(), "the malicious payload ran"


@pytest.mark.parametrize("argv, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(run_cli, artifacts, tmp_path, argv, needles):
    _check(run_cli, artifacts, tmp_path, argv, needles)


@pytest.mark.parametrize("argv, needles", [c[1:] for c in EXPORT_CASES], ids=[c[0] for c in EXPORT_CASES])
def test_export_bad_input(run_cli, artifacts, tmp_path, argv, needles):
    _check(run_cli, artifacts, tmp_path, argv, needles)


def test_every_command_has_rows():
    from spos_hw.cli import cli

    covered = {argv[0] for _, argv, _ in CASES + EXPORT_CASES}
    assert covered == set(cli.commands), set(cli.commands) ^ covered
