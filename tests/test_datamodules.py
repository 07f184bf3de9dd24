"""Datamodules: MNIST videos (exact transforms, split), IDX reader, Weizmann readers, bad input."""
import gzip
import struct
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import (
    RotatedMNISTDataModule,
    TranslatedMNISTDataModule,
    WeizmannDataModule,
    load_mnist_train_images,
    read_idx,
)
from datamodules.mnist import rotate, translate

REPO = Path(__file__).parents[1]
SHARED = Path(__file__).parents[2] / "shared" / "data"
FIRST10_SUMS = [27525, 31095, 19443, 17135, 23214, 29601, 17646, 35867, 10874, 21904]


@pytest.fixture(scope="module")
def rot():
    dm = RotatedMNISTDataModule()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def trans():
    dm = TranslatedMNISTDataModule()
    dm.setup("fit")
    return dm


def shift_x(x, s):
    """Plain integer shift along the last axis with zero fill (positive = right)."""
    out = torch.zeros_like(x)
    if s >= 0:
        out[..., s:] = x[..., : x.shape[-1] - s]
    else:
        out[..., :s] = x[..., -s:]
    return out


def write_idx(path, array, type_byte=0x08):
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        Path(path).write_bytes(data)
    return data


# --- MNIST ------------------------------------------------------------------------------------
def test_bundled_first_ten_digits():
    images = load_mnist_train_images(range(10))
    assert images.dtype == np.uint8 and images.shape == (10, 28, 28)
    assert images.reshape(10, -1).sum(1).tolist() == FIRST10_SUMS
    assert load_mnist_train_images([3, 3]).reshape(2, -1).sum(1).tolist() == [FIRST10_SUMS[3]] * 2


@pytest.mark.parametrize("fixture, name", [("rot", "angle (deg)"), ("trans", "shift (px)")])
def test_mnist_videos_shape_dtype_range(fixture, name, request):
    dm = request.getfixturevalue(fixture)
    assert dm.videos.shape == (10, 100, 1, 20, 20) and dm.videos.dtype == torch.float32
    assert dm.videos.min() >= 0 and dm.videos.max() <= 1 and dm.videos.max() > 0.99
    assert dm.latents.shape == (10, 100) and dm.latents.dtype == torch.float32
    assert dm.latent_name == name
    crops = torch.from_numpy(load_mnist_train_images(range(10))[:, 4:24, 4:24]).float() / 255
    assert torch.equal(dm.digits[:, 0], crops)


def test_rotation_frames(rot):
    v, crop = rot.videos, rot.digits
    assert torch.allclose(v[:, 0], crop, atol=1e-6)  # frame 0 is the crop
    assert torch.allclose(rot.latents[0, [0, 1, 25, 99]], torch.tensor([0.0, 3.6, 90.0, 356.4]))
    assert torch.allclose(v[:, 25], torch.rot90(v[:, 0], 1, dims=(-2, -1)), atol=1e-5)  # 90 deg
    assert torch.allclose(v[:, 50], torch.rot90(v[:, 0], 2, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(v[:, 75], torch.rot90(v[:, 0], 3, dims=(-2, -1)), atol=1e-5)
    # sub-pixel angles interpolate: not a copy of a neighbour, mass roughly kept
    assert not torch.allclose(v[:, 1], v[:, 0], atol=1e-3)
    assert torch.allclose(v[:, 1].sum((-1, -2)), v[:, 0].sum((-1, -2)), rtol=0.05)


def test_rotation_is_counter_clockwise():
    img = torch.zeros(1, 1, 5, 5)
    img[..., 2, 4] = 1  # right of the centre
    out = rotate(img, torch.tensor([90.0]))[0, 0, 0]
    assert out[0, 2] == pytest.approx(1, abs=1e-6) and out.sum() == pytest.approx(1, abs=1e-6)  # now above


def test_translation_frames(trans):
    v, crop = trans.videos, trans.digits
    assert torch.allclose(trans.latents[0, [0, 25, 50, 99]], torch.tensor([-6.0, -3.0, 0.0, 5.88]))
    assert torch.allclose(v[:, 0], shift_x(crop, -6), atol=1e-6)  # frame 0: 6 px to the left
    assert torch.allclose(v[:, 25], shift_x(crop, -3), atol=1e-6)
    assert torch.allclose(v[:, 50], crop, atol=1e-6)


def test_translate_integer_and_half_pixel():
    x = torch.rand(2, 3, 6, 7)
    for s in (-7, -2, 0, 1, 3):
        assert torch.allclose(translate(x, torch.tensor([float(s)]))[:, 0], shift_x(x, s), atol=1e-6)
    half = translate(x, torch.tensor([0.5]))[:, 0]
    assert torch.allclose(half, (x + shift_x(x, 1)) / 2, atol=1e-6)


def test_split_deterministic_disjoint_and_covering(rot):
    other = RotatedMNISTDataModule()
    other.setup("fit")
    assert torch.equal(rot.val_indices, other.val_indices)
    assert len(rot.val_indices) == 200 and len(rot.train_indices) == 800
    both = torch.cat([rot.val_indices, rot.train_indices])
    assert torch.equal(both.sort().values, torch.arange(1000))
    val = torch.cat(list(rot.val_dataloader()))
    assert torch.equal(val, rot.videos.flatten(0, 1)[rot.val_indices])
    assert torch.equal(torch.cat(list(rot.test_dataloader())), val)
    reseeded = RotatedMNISTDataModule(split_seed=1)
    reseeded.setup()
    assert not torch.equal(reseeded.val_indices, rot.val_indices)


def test_loaders_yield_plain_batches(trans):
    batches = list(trans.train_dataloader())
    assert all(isinstance(b, torch.Tensor) and b.shape[1:] == (1, 20, 20) for b in batches)
    assert [len(b) for b in batches] == [128] * 6 + [32]  # drop_last=False
    train = torch.cat(batches).flatten(1)
    expected = trans.frames[trans.train_indices].flatten(1)
    # same multiset of frames, shuffled
    assert torch.equal(train.sum(1).sort().values, expected.sum(1).sort().values)
    frames = trans.frames
    trans.setup("test")  # idempotent: nothing reloaded
    assert trans.frames is frames


def test_mnist_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"\[12\].*data_dir.*0-9"):
        RotatedMNISTDataModule(indices=[1, 12]).setup()
    with pytest.raises(ValueError, match="num_val_frames=1000"):
        RotatedMNISTDataModule(num_val_frames=1000).setup()
    with pytest.raises(ValueError, match="batch_size"):
        RotatedMNISTDataModule(batch_size=0)
    with pytest.raises(ValueError, match="num_frames"):
        TranslatedMNISTDataModule(num_frames=0)
    with pytest.raises(ValueError, match="-1"):
        load_mnist_train_images([-1])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist_train_images([0], tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_mnist_train_images([0], tmp_path)


@pytest.mark.parametrize("cls, arg", [(RotatedMNISTDataModule, "step_deg"), (TranslatedMNISTDataModule, "step_px"),
                                      (TranslatedMNISTDataModule, "start_px")])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "3"])
def test_mnist_steps_must_be_finite_numbers(cls, arg, value):
    """A NaN step made every frame NaN and the model trained on them: refused when the module is built."""
    from errors import InputError

    with pytest.raises(InputError, match=rf"^{arg} must be a finite number, got {value!r}$".replace("(", r"\(")):
        cls(**{arg: value})


def test_mnist_data_dir_and_index_past_end(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    assert np.array_equal(load_mnist_train_images([11, 0], tmp_path), images[[11, 0]])
    with pytest.raises(ValueError, match=r"\[12\].*past the end.*12 images.*0-11"):
        load_mnist_train_images([12], tmp_path)
    dm = TranslatedMNISTDataModule(indices=[10, 11], data_dir=str(tmp_path), num_frames=20,
                                   num_val_frames=5)
    dm.setup()
    assert dm.videos.shape == (2, 20, 1, 20, 20)


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="shared MNIST not present")
def test_bundled_digits_match_shared_mnist():
    shared = load_mnist_train_images(range(12), SHARED / "mnist")
    assert np.array_equal(shared[:10], load_mnist_train_images(range(10)))
    with pytest.raises(ValueError, match="60000"):
        load_mnist_train_images([60000], SHARED / "mnist")


# --- IDX reader -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("array, type_byte", [
    (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08),
    (np.array([-5, 70000, 3], dtype=np.int32), 0x0C),
    (np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2), 0x0D),
])
def test_read_idx_roundtrip(tmp_path, name, array, type_byte):
    write_idx(tmp_path / name, array, type_byte)
    out = read_idx(tmp_path / name)
    assert out.dtype == array.dtype and np.array_equal(out, array)


def test_read_idx_bad_files(tmp_path):
    data = write_idx(tmp_path / "ok", np.zeros((4, 5, 5), np.uint8))
    bad = {"truncated": data[:-7], "header_cut": data[:9], "trailing": data + b"x",
           "bad_magic": b"\x08\x03" + data[2:], "bad_type": data[:2] + b"\x07" + data[3:], "empty": b""}
    messages = {"truncated": "expected 116.*truncated", "header_cut": "truncated", "trailing": "trailing",
                "bad_magic": "not an IDX file", "bad_type": "not an IDX file", "empty": "not an IDX file"}
    for key, content in bad.items():
        (tmp_path / key).write_bytes(content)
        with pytest.raises(ValueError, match=messages[key]) as err:
            read_idx(tmp_path / key)
        assert key in str(err.value)  # names the file
    gz = gzip.compress(data)
    (tmp_path / "cut.gz").write_bytes(gz[: len(gz) // 2])
    (tmp_path / "notgz.gz").write_bytes(data)
    for key in ("cut.gz", "notgz.gz"):
        with pytest.raises(ValueError, match=f"{key}.*gzip"):
            read_idx(tmp_path / key)
    with pytest.raises(FileNotFoundError, match="missing"):
        read_idx(tmp_path / "missing")


# --- Weizmann ---------------------------------------------------------------------------------
def frames_for(seed, T, size=32):
    return np.random.default_rng(seed).integers(0, 256, (T, size, size, 3), dtype=np.uint8)


def write_avi(path, frames):
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:  # lossless PNG-in-AVI: decoded pixels are exact
        stream = container.add_stream("png", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())


def write_strip(path, frames):
    path.parent.mkdir(parents=True, exist_ok=True)
    T, H, W, _ = frames.shape
    strip = frames.transpose(1, 0, 2, 3).reshape(H, T * W, 3)
    rgba = np.concatenate([strip, np.full((H, T * W, 1), 255, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(path, format="PNG")  # PNG content, whatever the suffix


AVI_SET = {"daria_walk": (0, 6), "daria_run": (1, 7), "denis_walk": (2, 8), "eli_run": (3, 6),
           "lena_walk1": (4, 9), "lena_walk2": (5, 6)}


@pytest.mark.parametrize("per_action", [False, True])
def test_weizmann_avi(tmp_path, per_action):
    for name, (seed, T) in AVI_SET.items():
        folder = tmp_path / (name.split("_")[1].rstrip("12") if per_action else "")
        write_avi(folder / f"{name}.avi", frames_for(seed, T))
    dm = WeizmannDataModule(str(tmp_path), frame_size=None, num_val_frames=10)
    dm.setup("fit")
    assert dm.layout_used == "avi"
    assert dm.frames.shape == (42, 3, 32, 32) and dm.videos.shape == (4, 5, 3, 32, 32)
    # per_performer: round robin run, walk, run, walk over the unused performers (sorted), each
    # performer's first take: daria has run, denis only walk, eli only run, lena walk1 + walk2
    stems = [Path(n).name for n in dm.clip_names]
    assert stems == ["daria_run", "denis_walk", "eli_run", "lena_walk1"]
    assert dm.latents is None and dm.latent_name is None
    expected = torch.from_numpy(frames_for(1, 7)[:5]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(dm.videos[0], expected)
    assert [p.name for p in dm.clip_files] == [f"{s}.avi" for s in stems]


def test_weizmann_clip_rules(tmp_path):
    for name, (seed, T) in AVI_SET.items():
        write_avi(tmp_path / f"{name}.avi", frames_for(seed, T))
    names = ["daria_run", "daria_walk", "denis_walk", "eli_run", "lena_walk1", "lena_walk2"]
    dm = WeizmannDataModule(str(tmp_path), clips="per_sequence", num_clips=None, num_val_frames=10,
                            frame_size=16, grayscale=True, clip_length=6)
    dm.setup()
    assert dm.sequence_names == names and dm.clip_names == names
    assert dm.videos.shape == (6, 6, 1, 16, 16) and dm.frames.shape == (42, 1, 16, 16)
    dm = WeizmannDataModule(str(tmp_path), clips=["lena_walk2", "eli_run"], clip_start=1,
                            clip_length=3, num_val_frames=10, actions=["walk", "run"])
    dm.setup()
    assert dm.clip_names == ["lena_walk2", "eli_run"] and dm.videos.shape == (2, 3, 3, 64, 64)
    dm = WeizmannDataModule(str(tmp_path), actions=["walk"], num_clips=2, num_val_frames=10)
    dm.setup()
    assert dm.clip_names == ["daria_walk", "denis_walk"] and len(dm.frames) == 29
    with pytest.raises(ValueError, match=r"\['nobody_walk'\].*daria_run"):
        WeizmannDataModule(str(tmp_path), clips=["nobody_walk"], num_val_frames=10).setup()
    with pytest.raises(ValueError, match=r"eli_run.*fewer than.*7"):
        WeizmannDataModule(str(tmp_path), clip_length=7, num_val_frames=10).setup()
    with pytest.raises(ValueError, match=r"\['swim'\].*\['run', 'walk'\]"):
        WeizmannDataModule(str(tmp_path), actions=["swim"]).setup()


def test_weizmann_strips_and_mirrors(tmp_path):
    a, b, c = frames_for(0, 6, 16), frames_for(1, 5, 16), frames_for(2, 7, 16)
    write_strip(tmp_path / "0" / "00000000.jpg", a)
    write_strip(tmp_path / "0" / "00000001.jpg", a[:, :, ::-1])  # exact mirror: dropped
    near = b[:, :, ::-1].copy()
    near[2, 3, 4, 0] ^= 1
    write_strip(tmp_path / "1" / "00000002.jpg", b)
    write_strip(tmp_path / "1" / "00000003.jpg", near)  # mirror but one pixel off: kept
    write_strip(tmp_path / "10" / "00000004.png", c)
    dm = WeizmannDataModule(str(tmp_path), frame_size=16, num_val_frames=5)
    dm.setup()
    assert dm.layout_used == "strips"
    assert dm.sequence_names == ["0/00000000", "1/00000002", "1/00000003", "10/00000004"]
    assert dm.dropped_mirrors == [("0/00000001", "0/00000000")]
    assert dm.frames.shape == (6 + 5 + 5 + 7, 3, 16, 16)
    # per_performer on strips: round robin over actions 0, 1, 10, then the second of action 1
    assert dm.clip_names == ["0/00000000", "1/00000002", "10/00000004", "1/00000003"]
    assert torch.equal(dm.videos[0], torch.from_numpy(a[:5]).permute(0, 3, 1, 2).float() / 255)
    kept = WeizmannDataModule(str(tmp_path), frame_size=16, num_val_frames=5, drop_mirrors=False)
    kept.setup()
    assert len(kept.sequence_names) == 5 and kept.dropped_mirrors == []
    small = WeizmannDataModule(str(tmp_path), frame_size=8, num_val_frames=5)
    small.setup()  # antialiased bilinear, as PIL's BILINEAR resize (which rounds to uint8)
    pil = np.stack([np.asarray(Image.fromarray(f).resize((8, 8), Image.BILINEAR)) for f in a[:5]])
    assert torch.allclose(small.videos[0], torch.from_numpy(pil).permute(0, 3, 1, 2) / 255,
                          atol=1 / 255)


def test_weizmann_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.*does not exist"):
        WeizmannDataModule(str(tmp_path / "nope")).setup()
    (tmp_path / "empty" / "walk").mkdir(parents=True)
    (tmp_path / "empty" / "README.txt").write_text("not a video")
    with pytest.raises(FileNotFoundError, match=r"no \.avi videos or image strips in .*empty"):
        WeizmannDataModule(str(tmp_path / "empty")).setup()
    with pytest.raises(FileNotFoundError, match="no .avi videos"):
        WeizmannDataModule(str(tmp_path / "empty"), layout="avi").setup()

    def setup_one(folder, filename, content):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / filename).write_bytes(content)
        WeizmannDataModule(str(tmp_path / folder), num_val_frames=1).setup()

    write_avi(tmp_path / "good.avi", frames_for(0, 6))
    video = (tmp_path / "good.avi").read_bytes()
    with pytest.raises(ValueError, match="(cannot decode|truncated).*daria_walk.avi"):
        setup_one("cut_avi", "daria_walk.avi", video[: len(video) // 2])
    with pytest.raises(ValueError, match="cannot decode.*daria_walk.avi"):
        setup_one("junk_avi", "daria_walk.avi", b"RIFF" + b"\0" * 100)
    with pytest.raises(ValueError, match="dariawalk.avi.*<person>_<action>"):
        setup_one("bad_name", "dariawalk.avi", video)
    write_strip(tmp_path / "good.png", frames_for(0, 6, 16))
    png = (tmp_path / "good.png").read_bytes()
    with pytest.raises(ValueError, match="cannot read image strip.*00000000.jpg"):
        setup_one("cut_png", "00000000.jpg", png[: len(png) // 2])
    with pytest.raises(ValueError, match="cannot read image strip.*00000000.jpg"):
        setup_one("junk_png", "00000000.jpg", b"\x89PNG not really")
    Image.fromarray(np.zeros((16, 40, 3), np.uint8)).save(tmp_path / "wide.png")
    with pytest.raises(ValueError, match=r"wide.png is 40x16.*multiple of the height"):
        setup_one("wide", "wide.png", (tmp_path / "wide.png").read_bytes())
    with pytest.raises(ValueError, match="layout"):
        WeizmannDataModule(str(tmp_path), layout="mp4")
    with pytest.raises(ValueError, match="clips"):
        WeizmannDataModule(str(tmp_path), clips="random")


@pytest.mark.skipif(not (SHARED / "weizmann" / "mocogan_actions").is_dir(),
                    reason="shared Weizmann strips not present")
def test_weizmann_shared_strips():
    dm = WeizmannDataModule(str(SHARED / "weizmann" / "mocogan_actions"), actions=["1"])
    dm.setup()  # one action keeps this fast: 18 files, 9 of them mirrors
    assert len(dm.dropped_mirrors) == 9 and len(dm.sequence_names) == 9
    assert dm.sequence_lengths == [59, 62, 57, 79, 114, 67, 54, 51, 81]
    assert dm.videos.shape == (9, 5, 3, 64, 64) and dm.frames.shape == (624, 3, 64, 64)
    assert dm.clip_names[0] == "1/00000000"


# --- configs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("config", ["rot", "trans", "weizmann"])
def test_config_data_section_instantiates(config, monkeypatch):
    import datamodules
    from cli import load_config

    monkeypatch.chdir(REPO)  # data_dir in the configs is relative to the repo root
    data = load_config(["--config", REPO / "configs" / f"{config}.yaml"]).data
    cls = getattr(datamodules, data.class_path.removeprefix("datamodules."))
    dm = cls(**data.init_args)
    assert dm.num_val_frames == 200  # paper A.4
    assert dm.batch_size == {"weizmann": 64, "trans": 16}.get(config, 32)  # per device; the configs say why
    if config != "weizmann":
        dm.setup()
        assert dm.videos.shape == (10, 100, 1, 20, 20)


def test_weizmann_unscored_clips_are_the_other_sequences(strips):
    """clips=unscored: selection videos from every sequence the scored clips (per_performer, num_clips) do not use."""
    from datamodules import WeizmannDataModule

    kw = dict(data_dir=str(strips), frame_size=16, clip_length=3, num_val_frames=8)
    scored = WeizmannDataModule(num_clips=2, **kw)
    scored.setup("test")
    other = WeizmannDataModule(clips="unscored", num_clips=2, **kw)
    other.setup("test")
    assert len(scored.clip_names) == 2 and len(other.clip_names) == 2  # 4 sequences in the fixture
    assert set(scored.clip_names).isdisjoint(other.clip_names)
    assert set(scored.clip_names) | set(other.clip_names) == set(scored.sequence_names)
