"""Image files, read and listed once for every floor: decoding to RGB, one-line errors naming the file, listing a
folder or a data set's split, and a seeded choice of files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from yolonas.data.images import list_images, read_image, select_images
from yolonas.data.splits import source_images
from yolonas.errors import DataError, ImageError, InputError


def test_read_image_gives_rgb_pixels_as_stored(tmp_path):
    bgr = np.zeros((6, 8, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    cv2.imwrite(str(tmp_path / "blue.png"), bgr)
    image = read_image(tmp_path / "blue.png")
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    assert (image[..., 2] == 255).all() and (image[..., :2] == 0).all()  # RGB: blue last


@pytest.mark.parametrize("content", [None, b"", b"not an image at all"])
def test_unreadable_image_is_one_line_naming_the_file_for_data_sets_and_inputs_alike(tmp_path, content):
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        read_image(path)
    assert isinstance(info.value, DataError) and isinstance(info.value, InputError)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_listing_a_folder_or_a_data_set_split(coco128, tmp_path):
    files = list_images(coco128 / "images" / "train2017")
    assert source_images(coco128 / "images" / "train2017") == files and len(files) == 128
    assert source_images(coco128 / "data.yaml", "train") == files  # a data set's split, same files
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.PNG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    assert list_images(tmp_path) == [tmp_path / "sub" / "a.PNG"]  # recursive, by suffix in any case
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        source_images(tmp_path / "empty")
    with pytest.raises(DataError, match="no such"):
        source_images(tmp_path / "missing")


def test_image_choice_is_reproducible(coco128):
    files = list_images(coco128 / "images" / "train2017")
    a, b = select_images(files, 8, seed=3), select_images(files, 8, seed=3)
    assert a == b and len(set(a)) == 8
    assert select_images(files, 8, seed=4) != a
    assert not set(select_images(files, 20, seed=3, exclude=a)) & set(a)
    assert select_images(files[:5], 50, seed=0) == files[:5]  # fewer than asked: all of them
    with pytest.raises(InputError, match="at least 1"):
        select_images(files, 0, seed=0)
