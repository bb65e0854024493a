"""Clip rendering and encoding: deterministic frames, browser-ready MP4s, posters (no Django)."""

from __future__ import annotations

import re
import struct
import subprocess
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from trainer.core.envs import get_preset, make_env
from trainer.core.rollouts import RolloutData, run_rollout
from trainer.core.scripted import make_policy
from trainer.core.video import (
    env_fps,
    probe_video,
    render_segment,
    resize_frame,
    write_mp4,
    write_poster,
)

PENDULUM = "Pendulum-v1"
CHEETAH = "HalfCheetah-v5"


def _rollout(env_id: str, spec: str, *, seed: int, steps: int) -> RolloutData:
    env = make_env(env_id)
    policy = make_policy(spec, env.action_space)
    env.close()
    return run_rollout(env_id, policy=policy, seed=seed, steps=steps, rng=np.random.default_rng(seed))


def _frames_rendered_during_rollout(data: RolloutData, *, width: int, height: int) -> np.ndarray:
    """Render every state while replaying the rollout, the way an online renderer would."""
    env = make_env(data.env_id, render=True, width=width, height=height, max_episode_steps=data.n_steps)
    try:
        env.reset(seed=data.seed)
        frames = [_rgb(env.render())]
        for action in data.actions:
            env.step(action)
            frames.append(_rgb(env.render()))
    finally:
        env.close()
    return np.stack([resize_frame(frame, width, height) for frame in frames])


def _rgb(frame: object) -> np.ndarray:
    assert isinstance(frame, np.ndarray)
    return frame


def _top_level_boxes(path: Path) -> list[str]:
    """The types of an MP4's top-level boxes, in file order."""
    raw = path.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(raw):
        size, kind = struct.unpack(">I4s", raw[offset : offset + 8])
        if size == 1:  # 64-bit size follows the type
            size = struct.unpack(">Q", raw[offset + 8 : offset + 16])[0]
        elif size == 0:  # box runs to the end of the file
            size = len(raw) - offset
        boxes.append(kind.decode("latin-1"))
        offset += size
    return boxes


def _decoded_frame_info(path: Path) -> list[tuple[bool, int]]:
    """(is keyframe, duration in stream time units) for every decoded frame, via ffmpeg's showinfo."""
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-i",
        str(path),
        "-vf",
        "showinfo",
        "-f",
        "null",
        "-",
    ]
    log = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    pattern = re.compile(r"\bn:\s*\d+ .*?duration:\s*(\d+) .*?iskey:(\d)")
    return [(match[2] == "1", int(match[1])) for match in pattern.finditer(log)]


def _gradient_frames(n_frames: int, height: int, width: int) -> np.ndarray:
    rows = np.linspace(0, 255, height, dtype=np.uint8)[None, :, None, None]
    frames = np.broadcast_to(rows, (n_frames, height, width, 3)).copy()
    frames[:, :, :, 2] = (np.arange(n_frames, dtype=np.uint8) * 5)[:, None, None]
    return frames


def test_env_fps_is_the_render_fps() -> None:
    assert env_fps(PENDULUM) == 30
    assert env_fps(CHEETAH) == 20  # 1 / (0.01 s timestep x frame_skip 5)
    assert env_fps(CHEETAH, {"frame_skip": 10}) == 10


# --- rendering -------------------------------------------------------------------------------------


def test_pendulum_segment_frames_match_frames_rendered_during_the_rollout() -> None:
    data = _rollout(PENDULUM, "pendulum_swingup:1.0", seed=3, steps=40)
    preset = get_preset(PENDULUM)
    width, height = preset.render_width, preset.render_height
    online = _frames_rendered_during_rollout(data, width=width, height=height)
    clip = render_segment(
        PENDULUM, seed=data.seed, actions=data.actions, start=20, length=10, width=width, height=height
    )
    assert clip.shape == (11, height, width, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip, online[20:31])
    # And again: rendering is a pure function of (seed, actions, segment).
    again = render_segment(
        PENDULUM, seed=data.seed, actions=data.actions, start=20, length=10, width=width, height=height
    )
    np.testing.assert_array_equal(again, clip)
    assert np.ptp(clip[1:].astype(int) - clip[:-1].astype(int)) > 0  # the pendulum moves


def test_pendulum_native_frames_are_not_resampled() -> None:
    data = _rollout(PENDULUM, "random", seed=0, steps=3)
    clip = render_segment(PENDULUM, seed=0, actions=data.actions, start=0, length=3, width=500, height=500)
    np.testing.assert_array_equal(clip, _frames_rendered_during_rollout(data, width=500, height=500))


def test_half_cheetah_segment_renders_at_the_requested_size_deterministically() -> None:
    data = _rollout(CHEETAH, "halfcheetah_gait:0.0", seed=1, steps=12)
    clip = render_segment(CHEETAH, seed=1, actions=data.actions, start=8, length=4, width=160, height=120)
    assert clip.shape == (5, 120, 160, 3) and clip.dtype == np.uint8
    assert clip.std() > 5  # a real picture, not a blank frame
    np.testing.assert_array_equal(clip, _frames_rendered_during_rollout(data, width=160, height=120)[8:13])


def test_segment_outside_the_rollout_is_rejected() -> None:
    actions = np.zeros((10, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="does not fit"):
        render_segment(PENDULUM, seed=0, actions=actions, start=5, length=6, width=64, height=64)


# --- encoding --------------------------------------------------------------------------------------


def test_mp4_is_h264_yuv420p_constant_rate_and_faststart(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_mp4(_gradient_frames(45, 120, 160), path, fps=30)
    info = probe_video(path)
    assert (info.codec, info.width, info.height) == ("h264", 160, 120)
    assert info.pix_fmt.startswith("yuv420p")
    assert info.fps == 30
    assert info.n_frames == 45
    assert info.duration_s == pytest.approx(1.5, abs=0.05)
    boxes = _top_level_boxes(path)
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temporary left behind
    assert path.stat().st_mode & 0o044 == 0o044  # readable by the web server, unlike a raw mkstemp file


def test_mp4_has_a_keyframe_every_second_and_constant_frame_durations(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    noise = np.random.default_rng(0).integers(0, 256, size=(65, 64, 64, 3), dtype=np.uint8)
    write_mp4(noise, path, fps=20)
    frames = _decoded_frame_info(path)
    assert len(frames) == 65
    keyframes = [index for index, (is_key, _) in enumerate(frames) if is_key]
    assert keyframes[0] == 0
    assert max(np.diff([*keyframes, len(frames)])) <= 20
    assert len({duration for _, duration in frames}) == 1


def test_mp4_pads_odd_sizes_and_replaces_existing_files(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"stale")
    write_mp4(_gradient_frames(7, 99, 101), path, fps=20)
    info = probe_video(path)
    assert (info.width, info.height, info.n_frames, info.fps) == (102, 100, 7, 20)


def test_mp4_rejects_bad_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(np.zeros((3, 8, 8, 3), dtype=np.float32), tmp_path / "x.mp4", fps=20)
    with pytest.raises(ValueError, match="shape"):
        write_mp4(np.zeros((8, 8, 3), dtype=np.uint8), tmp_path / "x.mp4", fps=20)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "image_format"), [("poster.jpg", "JPEG"), ("poster.png", "PNG")])
def test_poster_is_a_valid_image_of_the_frame_size(tmp_path: Path, name: str, image_format: str) -> None:
    frame = _gradient_frames(1, 240, 320)[0]
    write_poster(frame, tmp_path / name)
    with Image.open(tmp_path / name) as image:
        image.verify()
    with Image.open(tmp_path / name) as image:
        assert (image.format, image.size, image.mode) == (image_format, (320, 240), "RGB")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_poster_rejects_unknown_extensions(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="poster must end"):
        write_poster(np.zeros((4, 4, 3), dtype=np.uint8), tmp_path / "poster.gif")


# --- whole clips at the preset size ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("env_id", [PENDULUM, CHEETAH])
def test_preset_clip_end_to_end(tmp_path: Path, env_id: str) -> None:
    preset = get_preset(env_id)
    data = _rollout(env_id, preset.scripted_policies[1], seed=0, steps=preset.episode_steps)
    started = time.perf_counter()
    frames = render_segment(
        env_id,
        seed=data.seed,
        actions=data.actions,
        start=preset.segment_steps,
        length=preset.segment_steps,
        width=preset.render_width,
        height=preset.render_height,
    )
    write_mp4(frames, tmp_path / "clip.mp4", fps=env_fps(env_id))
    write_poster(frames[0], tmp_path / "poster.jpg")
    elapsed = time.perf_counter() - started
    info = probe_video(tmp_path / "clip.mp4")
    assert info.n_frames == preset.segment_steps + 1
    assert (info.width, info.height) == (preset.render_width, preset.render_height)
    print(f"{env_id}: {preset.segment_steps}-step clip rendered and encoded in {elapsed:.2f} s")
