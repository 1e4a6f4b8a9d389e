"""``spos-hw train-supernet`` and ``spos-hw retrain`` from the command line."""

from __future__ import annotations

import json

from tests.support.cli import assert_user_error

SPACE = "shufflenetv2-small:size=16"


def test_cli_train_supernet_and_errors(run_cli, tmp_path):
    out = tmp_path / "s.pt"
    res = run_cli(
        "train-supernet",
        "--space",
        SPACE,
        "--data",
        "digits",
        "--steps",
        "2",
        "--batch-size",
        "16",
        "--threads",
        "1",
        "--constraint",
        "flops",
        "--range",
        "1.2:1.6",
        "--out",
        out,
        "--json",
    )
    assert res.code == 0, res.err
    r = json.loads(res.out)
    assert r["step"] == 2 and r["sampling"]["method"] == "exact" and out.is_file()
    base = ("train-supernet", "--space", SPACE, "--data", "digits", "--steps", "1", "--out", tmp_path / "x.pt")
    assert_user_error(run_cli(*base, "--constraint", "flops", "--range", "50:60"), "outside the achievable range")
    assert_user_error(run_cli(*base, "--constraint", "flops"), "one --range per --constraint")
    assert_user_error(run_cli(*base, "--constraint", "flops", "--range", "abc"), "LO:HI")
    assert_user_error(run_cli(*base, "--constraint", "latency", "--range", ":3"), "--lut")
    assert_user_error(run_cli(*base[:3], "--data", tmp_path / "nope", *base[5:]), "does not exist")
    assert_user_error(
        run_cli("train-supernet", "--space", "shufflenetv2-small:classes=3", "--data", "digits", "--out", tmp_path / "y.pt"),
        "use --space shufflenetv2-small:classes=10",
    )
    assert_user_error(run_cli("train-supernet", "--space", SPACE, "--data", "digits", "--out", out), "already exists")
    assert_user_error(run_cli("retrain", "1,2", "--space", SPACE, "--data", "digits", "--out", tmp_path / "m.pt"), "blocks")


def test_cli_sharing_option(tmp_path, run_cli):
    from spos_hw.nas.checkpoint import load_supernet

    out = tmp_path / "sn.pt"
    res = run_cli(
        "train-supernet",
        "--space",
        SPACE,
        "--data",
        "digits",
        "--steps",
        "2",
        "--batch-size",
        "16",
        "--threads",
        "1",
        "--sharing",
        "entangled",
        "--out",
        out,
        "--json",
    )
    assert res.code == 0, res.err
    assert load_supernet(out)[0].sharing == "entangled"
    res = run_cli("train-supernet", "--space", SPACE, "--data", "digits", "--sharing", "braided", "--out", tmp_path / "x.pt")
    assert res.code == 2 and "braided" in res.err
