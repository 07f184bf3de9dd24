"""Datamodules: `VideoDataModule` base and one module per dataset (see docs/design.md)."""
from .base import FrameDataset, VideoDataModule
from .mnist import MNISTVideoDataModule, load_mnist_train_images, parse_indices, read_idx, rotate, translate
from .rotated_mnist import RotatedMNISTDataModule
from .translated_mnist import TranslatedMNISTDataModule
from .weizmann import WeizmannDataModule

__all__ = ["parse_indices", "FrameDataset", "VideoDataModule", "FramePairsDataModule", "MNISTVideoDataModule", "RotatedMNISTDataModule",
           "TranslatedMNISTDataModule", "WeizmannDataModule", "load_mnist_train_images", "read_idx",
           "rotate", "translate"]
from .frame_pairs import FramePairsDataModule
