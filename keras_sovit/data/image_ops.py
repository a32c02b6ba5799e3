"""Image ops for the input pipeline: InceptionCrop and central resize."""

import tensorflow as tf

from keras_sovit._validation import check_range_pair
from keras_sovit._validation import image_hw

# big_vision's InceptionCrop defaults live beside the NumPy sampler
# (`arrays.py`, no TensorFlow): area 5-100 %, aspect ratio (3/4, 4/3).
from keras_sovit.data.arrays import INCEPTION_AREA_RANGE
from keras_sovit.data.arrays import INCEPTION_ASPECT_RATIO_RANGE
from keras_sovit.data.arrays import MAX_ATTEMPTS


def sample_crop_boxes(
    height, width, batch, area_range, aspect_ratio_range, seed
):
    """Samples `batch` InceptionCrop boxes, vectorized and stateless.

    For each box, up to `MAX_ATTEMPTS` candidates draw an area uniformly in
    `area_range` times the image area and an aspect ratio (width / height)
    uniformly in `aspect_ratio_range`; the first candidate that fits the
    image wins, else the whole image. The offset is uniform over the
    positions that keep the box inside the image.

    Returns:
        int32 tensors `(top, left, box_height, box_width)` of shape
        `(batch,)`.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=4)
    shape = tf.stack([batch, MAX_ATTEMPTS])
    h_f = tf.cast(height, tf.float32)
    w_f = tf.cast(width, tf.float32)
    area = tf.random.stateless_uniform(
        shape, seeds[0], area_range[0], area_range[1]
    )
    area = area * h_f * w_f
    aspect = tf.random.stateless_uniform(
        shape, seeds[1], aspect_ratio_range[0], aspect_ratio_range[1]
    )
    box_h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    box_w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    fits = (box_h >= 1) & (box_h <= height) & (box_w >= 1) & (box_w <= width)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    found = tf.reduce_any(fits, axis=1)
    box_h = tf.where(found, tf.gather(box_h, first, batch_dims=1), height)
    box_w = tf.where(found, tf.gather(box_w, first, batch_dims=1), width)
    offsets = tf.random.stateless_uniform(tf.stack([batch, 2]), seeds[2])
    room_h = tf.cast(height - box_h + 1, tf.float32)
    room_w = tf.cast(width - box_w + 1, tf.float32)
    top = tf.cast(offsets[:, 0] * room_h, tf.int32)
    left = tf.cast(offsets[:, 1] * room_w, tf.int32)
    top = tf.minimum(top, height - box_h)
    left = tf.minimum(left, width - box_w)
    return top, left, box_h, box_w


def crop_and_resize(images, top, left, box_h, box_w, size):
    """Cuts one box out of each image and resizes it bilinearly to `size`.

    The output's corner pixels sample the centres of the box's corner
    pixels (`tf.image.crop_and_resize`), so nothing outside a box leaks in.
    """
    shape = tf.shape(images)
    scale_h = tf.cast(tf.maximum(shape[1] - 1, 1), tf.float32)
    scale_w = tf.cast(tf.maximum(shape[2] - 1, 1), tf.float32)
    top = tf.cast(top, tf.float32)
    left = tf.cast(left, tf.float32)
    boxes = tf.stack(
        [
            top / scale_h,
            left / scale_w,
            (top + tf.cast(box_h, tf.float32) - 1.0) / scale_h,
            (left + tf.cast(box_w, tf.float32) - 1.0) / scale_w,
        ],
        axis=1,
    )
    return tf.image.crop_and_resize(
        tf.cast(images, tf.float32),
        boxes,
        tf.range(shape[0]),
        size,
        method="bilinear",
    )


def inception_crop(
    images,
    image_size,
    area_range=INCEPTION_AREA_RANGE,
    aspect_ratio_range=INCEPTION_ASPECT_RATIO_RANGE,
    seed=None,
):
    """Random-area, random-aspect crop, resized: the paper's InceptionCrop.

    big_vision's `inception_crop(size)`: a box covering a random fraction
    `area_range` of the image, with an aspect ratio (width / height) in
    `aspect_ratio_range`, is cut out and resized bilinearly to
    `image_size`. Each candidate box draws its area and aspect ratio
    uniformly; the first of 10 candidates that fits the image wins, else
    the whole image is used. Works on one image `(H, W, C)` or on a batch
    `(B, H, W, C)` of same-size images (one box per image), with stateless
    randomness: the same `seed` gives the same crops.

    Args:
        images: tensor `(H, W, C)` or `(B, H, W, C)`, any real dtype.
        image_size: int or `(height, width)`. The output size.
        area_range: pair of floats. Fraction of the image area to keep.
            Defaults to big_vision's `(0.05, 1.0)`.
        aspect_ratio_range: pair of floats. Width / height of the box.
            Defaults to `(3/4, 4/3)`.
        seed: None, or a shape `(2,)` integer seed. Defaults to `None`
            (a fresh random seed per call).

    Returns:
        float32 tensor `(height, width, C)` or `(B, height, width, C)`, in
        the input's value range.

    Example:

    ```python
    import tensorflow as tf
    import keras_sovit

    image = tf.zeros((28, 28, 1), "uint8")
    crop = keras_sovit.data.inception_crop(image, 32, seed=[1, 2])
    ```
    """
    size = image_hw(image_size)
    area_range = check_range_pair("area_range", area_range, upper=1.0)
    aspect_ratio_range = check_range_pair(
        "aspect_ratio_range", aspect_ratio_range
    )
    images = tf.convert_to_tensor(images)
    single = images.shape.rank == 3
    if single:
        images = images[None]
    elif images.shape.rank != 4:
        raise ValueError(
            "`images` must have shape (H, W, C) or (B, H, W, C). "
            f"Received: images.shape={images.shape}"
        )
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    shape = tf.shape(images)
    boxes = sample_crop_boxes(
        shape[1], shape[2], shape[0], area_range, aspect_ratio_range, seed
    )
    out = crop_and_resize(images, *boxes, size)
    return out[0] if single else out


def central_resize(images, size):
    """Largest central box with the output's aspect ratio, resized.

    For square images and a square `size` this is a plain bilinear resize
    (big_vision's evaluation `resize(size)`). Works on `(H, W, C)` and
    `(B, H, W, C)`.
    """
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    target = size[0] / size[1]
    crop_h = tf.minimum(
        height, tf.cast(tf.round(tf.cast(width, tf.float32) * target), "int32")
    )
    crop_w = tf.minimum(
        width, tf.cast(tf.round(tf.cast(height, tf.float32) / target), "int32")
    )
    crop = tf.image.crop_to_bounding_box(
        images, (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w
    )
    return tf.image.resize(crop, size, method="bilinear")
