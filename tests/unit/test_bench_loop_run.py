"""bench/loop/run.py resumes: a rerun skips the seeds recorded with the same settings, commit and machine."""

from __future__ import annotations

import json


def test_a_rerun_skips_what_is_recorded_for_the_same_settings_commit_and_machine(tmp_path):
    from bench.loop import run

    settings = run.run_settings("heron", {"steps": 4000, "iterations": 2}, workers="split", eval_episodes=50)
    assert settings["loop"]["policy_timesteps"] == 4000 and settings["iterations"] == 2
    assert settings["eval_episodes"] == 50 and settings["workers"] == "split"
    machine = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_family_model": "6/167"}
    out = tmp_path / "e2e.jsonl"
    assert run.recorded_keys(out) == set()
    row = {"variant": "heron", "seed": 0, "settings": settings, "commit": "abc1234", "machine": machine}
    out.write_text(json.dumps(row) + "\n\n")
    done = run.recorded_keys(out)
    assert run.resume_key("heron", 0, settings, "abc1234", machine) in done
    # Another seed, other settings, other code or another machine is measured again.
    other_settings = run.run_settings("heron", {"steps": 2000}, workers="split", eval_episodes=50)
    for key in (
        run.resume_key("heron", 1, settings, "abc1234", machine),
        run.resume_key("heron", 0, other_settings, "abc1234", machine),
        run.resume_key("heron", 0, settings, "def5678", machine),
        run.resume_key("heron", 0, settings, "abc1234", {**machine, "cpu_family_model": "25/17"}),
        run.resume_key("true", 0, settings, "abc1234", machine),
    ):
        assert key not in done
