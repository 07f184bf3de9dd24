"""Media for the extrapolation callback and the Table 1 script: side-by-side videos (GIF / MP4), the DTW
alignment heat map (paper Fig. 4), the latent-manifold plot (paper Fig. 3) and `write_media`. No Lightning here."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless; set before pyplot is imported anywhere in this process
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from torch import Tensor  # noqa: E402

SEPARATOR = 0.5  # grey: tells panels apart on black MNIST backgrounds and on white Weizmann walls


def auto_scale(height: int, target: int = 80) -> int:
    """Integer nearest-neighbour upscaling so a frame is about `target` px high (20 px -> x4)."""
    return max(1, round(target / height))


def to_uint8(frames: Tensor) -> np.ndarray:
    """Float frames in [0, 1] -> uint8 (same shape). wandb and video encoders cast floats without
    scaling, which turns [0, 1] frames black. Call on finite frames (`displayable`): NaN has no colour."""
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def displayable(frames: Tensor) -> Tensor:
    """Frames `(T, C, H, W)` for display: clipped to [0, 1], and a frame that is not finite (a diverged rollout,
    see `extrapolation.rollouts.Divergence`) replaced by a dark frame crossed in red."""
    frames = frames.detach().float().cpu()
    bad = ~torch.isfinite(frames).flatten(1).all(1)
    out = frames.nan_to_num(0.0).clamp(0, 1)
    if bad.any():
        c, h, w = frames.shape[1:]
        mark = torch.full((3, h, w), 0.15)
        idx = torch.arange(min(h, w))
        for rows, cols in ((idx * h // min(h, w), idx * w // min(h, w)),
                           (idx * h // min(h, w), (w - 1) - idx * w // min(h, w))):
            mark[:, rows, cols] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1)
        out = out.expand(-1, 3, -1, -1).clone() if c == 1 else out
        out[bad] = mark if out.shape[1] == 3 else mark[:1]
    return out


def finite_length(frames: Tensor) -> int:
    """Frames before the first non-finite one (all of them if every frame is finite)."""
    bad = ~torch.isfinite(frames.detach()).flatten(1).all(1)
    return int(bad.float().argmax()) if bad.any() else frames.shape[0]


def side_by_side(videos: Sequence[Tensor], labels: Sequence[str] | None = None, scale: int = 1,
                 separator: int = 2) -> Tensor:
    """Panels `(T_i, C, H, W)` -> one RGB video `(T, 3, H', W')`, float in [0, 1].

    Shorter panels hold their last frame up to the longest one (T = max T_i). Panels are upscaled
    by `scale` (nearest), separated by `separator` grey columns, and topped with a label row. Frames that are
    not finite show as a red cross (`displayable`)."""
    t_max = max(v.shape[0] for v in videos)
    panels = []
    for i, v in enumerate(videos):
        v = displayable(v)
        if v.shape[1] == 1:
            v = v.expand(-1, 3, -1, -1)
        if v.shape[0] < t_max:
            v = torch.cat([v, v[-1:].expand(t_max - v.shape[0], -1, -1, -1)])
        if scale > 1:
            v = v.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        if i:
            panels.append(torch.full((t_max, 3, v.shape[2], separator), SEPARATOR))
        panels.append(v)
    out = torch.cat(panels, dim=3)
    if labels:
        header = _label_row([v.shape[-1] * scale for v in videos], labels, separator)
        out = torch.cat([header.unsqueeze(0).expand(t_max, -1, -1, -1), out], dim=2)
    return out


def _label_row(widths: Sequence[int], labels: Sequence[str], separator: int, height: int = 12) -> Tensor:
    """A black strip with each label at the left edge of its panel, (3, height, W)."""
    total = sum(widths) + separator * (len(widths) - 1)
    img = Image.new("RGB", (total, height))
    draw = ImageDraw.Draw(img)
    x = 0
    for w, label in zip(widths, labels):
        draw.text((x + 1, 0), label, fill=(255, 255, 255))
        x += w + separator
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


def write_video(frames: Tensor, path: str | Path, fps: int = 10) -> Path:
    """Write `(T, C, H, W)` float frames in [0, 1] as GIF or MP4 (by the file's suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_uint8(frames)  # (T, C, H, W)
    if data.shape[1] == 1:
        data = np.repeat(data, 3, axis=1)
    data = data.transpose(0, 2, 3, 1)  # (T, H, W, 3)
    if path.suffix == ".gif":
        images = [Image.fromarray(f) for f in data]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps),
                       loop=0, optimize=False)
    elif path.suffix == ".mp4":
        _write_mp4(data, path, fps)
    else:
        raise ValueError(f"unsupported video format {path.suffix!r} (use .gif or .mp4)")
    return path


def _write_mp4(data: np.ndarray, path: Path, fps: int) -> None:
    import av

    h, w = data.shape[1:3]
    # yuv420p needs even sizes; pad with black instead of rescaling
    data = np.pad(data, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = data.shape[2], data.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in data:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def alignment_figure(costs: Sequence[Tensor], paths: Sequence[Tensor], titles: Sequence[str],
                     suptitle: str = "") -> plt.Figure:
    """Paper Fig. 4 (1): SSID cost matrix (ground truth vertical, rollout horizontal) with the DTW
    path in red, one panel per method. `paths[i]`: (L, 2) pairs (ground-truth index, rollout index)."""
    fig, axes = plt.subplots(1, len(costs), figsize=(3.4 * len(costs) + 0.8, 3.6), squeeze=False,
                             layout="constrained")
    vmax = max(float(c.max()) for c in costs)
    for ax, cost, path, title in zip(axes[0], costs, paths, titles):
        im = ax.imshow(cost.cpu().numpy(), origin="upper", cmap="viridis", vmin=0, vmax=vmax,
                       aspect="auto", interpolation="nearest")
        p = path.cpu().numpy()
        ax.plot(p[:, 1], p[:, 0], color="red", lw=1.2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("extrapolated frame")
        ax.set_ylabel("ground-truth frame")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="1 - SSIM")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def manifold_figure(latents: Tensor, nearest: Sequence[Tensor], titles: Sequence[str],
                    circle: bool, latent_name: str = "", suptitle: str = "") -> plt.Figure:
    """Paper Fig. 3: ground-truth frames as blue dots on their known latent manifold (unit circle
    for angles in degrees, a line otherwise) and each extrapolation step as a red arrow between the
    latents of the ground-truth frames nearest to consecutive extrapolated frames.

    latents: (T1,) latent of each ground-truth frame; nearest[i]: (T2,) ground-truth index per
    extrapolated frame of method i."""
    n = len(nearest)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.4 if circle else 2.4), squeeze=False)
    lat = latents.detach().double().cpu().numpy()
    for ax, idx, title in zip(axes[0], nearest, titles):
        z = lat[idx.cpu().numpy()]
        if circle:
            a = np.deg2rad(lat)
            ring = np.linspace(0, 2 * np.pi, 361)
            ax.plot(np.cos(ring), np.sin(ring), color="0.85", lw=0.8, zorder=0)
            ax.plot(np.cos(a), np.sin(a), ".", color="tab:blue", ms=4, zorder=1)
            pts = np.stack([np.cos(np.deg2rad(z)), np.sin(np.deg2rad(z))], 1)
            ax.set_aspect("equal")
            lim = 1.25
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.axis("off")
        else:
            ax.plot(lat, np.zeros_like(lat), ".", color="tab:blue", ms=4, zorder=1)
            pts = np.stack([z, np.zeros_like(z)], 1)
            span = lat.max() - lat.min() or 1.0
            ax.set_xlim(lat.min() - 0.05 * span, lat.max() + 0.05 * span)
            ax.set_ylim(-1, 1)
            ax.set_yticks([])
            ax.set_xlabel(latent_name)
        for a, b in zip(pts[:-1], pts[1:]):
            if np.allclose(a, b):
                continue  # a step that stays at the same nearest frame has no direction to draw
            # arcs bend the arrows off the line, so back-and-forth steps stay visible
            ax.add_patch(FancyArrowPatch(tuple(a), tuple(b), arrowstyle="-|>", mutation_scale=8,
                                         color="red", lw=0.8, zorder=2,
                                         connectionstyle="arc3,rad=0.2" if circle else "arc3,rad=-0.4"))
        ax.plot(*pts[0], "o", color="green", ms=5, zorder=3)  # first given frame
        ax.set_title(title, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def alignment(prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor, float, int]:
    """(cost (T_gt, n), path (L, 2) of (gt index, prediction index), DTW-SSID, n) over the first n frames of the
    prediction, those before it diverged (all of them if it did not)."""
    from extrapolation import dtw_ssid

    n = finite_length(prediction)
    value, cost, path = dtw_ssid(prediction[:n], target, return_alignment=True)
    return cost.cpu(), torch.tensor(path), float(value), n


def write_media(videos: Tensor, names: list[str], shown: list[Tensor], out_dir: Path, *, latents: Tensor | None = None,
                latent_name: str = "", media_format: str = "gif", fps: int = 10,
                scale: int | None = None) -> dict[str, list]:
    """Media of the first `len(shown[0])` videos: side-by-side rollouts (ground truth | each method), DTW
    alignment heat maps (paper Fig. 4) and, with `latents`, the frames on the latent manifold (Fig. 3).
    `shown[m]`: method `m`'s rollouts `(n, steps + 2, C, H, W)`. Returns the paths per kind and the captions."""
    scale = scale or auto_scale(videos.shape[-2])
    circle = latent_name.startswith("angle")
    paths: dict[str, list] = {"rollout": [], "alignment": [], "manifold": [], "captions": []}
    for i in range(shown[0].shape[0]):
        gt = videos[i].float().cpu()
        caption = f"video {i}"
        clip = side_by_side([gt] + [shown[m][i] for m in range(len(names))],
                                  labels=["ground truth"] + names, scale=scale)
        paths["rollout"].append(write_video(clip, out_dir / f"rollout_{i:02d}.{media_format}", fps))
        aligned = [alignment(shown[m][i], gt) for m in range(len(names))]
        titles = [f"{n}: DTW-SSID {a[2]:.3f}" if a[3] == shown[m][i].shape[0] else
                  f"{n}: diverged at frame {a[3]}; frames 0-{a[3] - 1}" for m, (n, a) in enumerate(zip(names, aligned))]
        fig = alignment_figure([a[0] for a in aligned], [a[1] for a in aligned], titles, caption)
        paths["alignment"].append(save_figure(fig, out_dir / f"alignment_{i:02d}.png"))
        if latents is not None:
            # Fig. 3: each extrapolated frame sits at the latent of its nearest ground-truth
            # frame by SSID (1 - SSIM, the metric's own frame distance): column argmin of the cost
            nearest = [a[0].argmin(0) for a in aligned]
            fig = manifold_figure(latents[i], nearest, names, circle, latent_name, caption)
            paths["manifold"].append(save_figure(fig, out_dir / f"manifold_{i:02d}.png"))
        paths["captions"].append(caption)
    return paths
