"""`spos-hw spaces`, `spos-hw info` and the CLI's error contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spos_hw.nas.spaces import get_space
from tests.support.cli import assert_user_error

PAPER = "2,1,0,1,2,0,2,0,2,0,2,3,0,0,0,0,3,2,3,3"


def test_info_paper_arch_json(run_cli):
    res = run_cli("info", PAPER, "--space", "shufflenetv2-imagenet", "--json")
    assert res.code == 0
    out = json.loads(res.out)
    assert out["flops"] == 322918720 and out["params"] == 3558464
    assert isinstance(out["flops"], int) and out["arch"] == PAPER


def test_info_text_and_file_forms(run_cli, tmp_path):
    res = run_cli("info", PAPER, "--space", "shufflenetv2-imagenet")
    assert res.code == 0 and "flops: 322,918,720" in res.out
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"op": [int(v) for v in PAPER.split(",")]}))
    assert json.loads(run_cli("info", path, "--space", "shufflenetv2-imagenet", "--json").out)["flops"] == 322918720
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"arch": PAPER, "accuracy": 0.7}))
    assert json.loads(run_cli("info", result, "--space", "shufflenetv2-imagenet", "--json").out)["params"] == 3558464
    inline = json.dumps({"op": [0] * 20})
    assert run_cli("info", inline, "--space", "shufflenetv2-small", "--json").code == 0


def test_spaces_json(run_cli):
    res = run_cli("spaces", "--json")
    rows = {r["name"]: r for r in json.loads(res.out)}
    paper = rows["shufflenetv2-imagenet"]
    assert paper["num_blocks"] == 20 and paper["choices"][0] == [4] and paper["input_shape"] == [3, 224, 224]
    assert rows["shufflenetv2-imagenet-ch"]["choices"][0] == [4, 8]
    lo, hi = paper["flops_range"]
    assert lo < 322918720 < hi


BAD = [
    (("info", "1,2,3", "--space", "shufflenetv2-imagenet"), "has 3 blocks"),
    (("info", ",".join(["0"] * 19 + ["7"]), "--space", "shufflenetv2-imagenet"), "block 19: op index 7"),
    (("info", "garbage!", "--space", "shufflenetv2-small"), "comma-separated integers"),
    (("info", "{not json", "--space", "shufflenetv2-small"), "malformed"),
    (("info", "missing.json", "--space", "shufflenetv2-small"), "does not exist"),
    (("info", "[1, 2]", "--space", "shufflenetv2-small"), "comma-separated integers"),
    (("info", PAPER, "--space", "nope"), "unknown space 'nope'"),
    (("info", PAPER, "--space", "shufflenetv2-small:classes=x"), "bad space option"),
    (("info", PAPER), "--space"),
    (("info", PAPER, "--space", "shufflenetv2-small", "--frobnicate"), "--frobnicate"),
    (("frobnicate",), "No such command"),
]


@pytest.mark.parametrize("args, needle", BAD, ids=[" ".join(a[:2]) + f"#{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_is_one_line_exit_2(run_cli, args, needle):
    assert_user_error(run_cli(*args), needle)


def test_bad_json_file(run_cli, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{")
    assert_user_error(run_cli("info", path, "--space", "shufflenetv2-small"), "not valid JSON")
    path.write_text(json.dumps({"op": "0,1"}))
    assert_user_error(run_cli("info", path, "--space", "shufflenetv2-small"), "list of integers")


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys; from spos_hw.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code in (0, None)\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_console_script_runs():
    res = subprocess.run(
        [sys.executable, "-m", "spos_hw", "info", "1,2", "--space", "shufflenetv2-small"], capture_output=True, text=True
    )
    assert res.returncode == 2 and res.stderr.startswith("error:") and "Traceback" not in res.stderr


def test_info_reports_bitops(run_cli):
    space = get_space("resnet18-mixed")
    arch = "ch=2,2,2,2,2,2,2,2;w=1,1,1,1,1,1,1,1;a=1,1,1,1,1,1,1,1"
    res = run_cli("info", arch, "--space", "resnet18-mixed", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["bitops"] == int(space.bitops.cost(space.arch(arch).to_array()))
    assert {b["wbits"] for b in out["blocks"]} == {2} and {b["abits"] for b in out["blocks"]} == {2}
    text = run_cli("info", arch, "--space", "resnet18-mixed")
    assert "bitops: " in text.out and "w2a2" in text.out
    float_info = json.loads(run_cli("info", ",".join(["0"] * 20), "--space", "shufflenetv2-small", "--json").out)
    assert "bitops" not in float_info


def test_cli_refuses_a_misplaced_skip(run_cli):
    res = run_cli("info", "--space", "fbnet-small", ",".join(["0"] * 21 + ["8"]))
    assert_user_error(res, "block 21 (96->176 channels, stride 1)", "skip", "allowed op here")
