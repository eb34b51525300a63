"""Fashion-MNIST as image-caption pairs: each image captioned by its class name ("sneaker",
"ankle boot", ...), for the tasks that read pairs (text-to-image, captioning, CLIP, ViLT) —
e.g. a text-to-image model drawing a garment from its name. Files, splits and sizes are those
of :mod:`convergent.data.builtin.fashion_mnist` (``train`` and ``test``; ``val`` reads ``test``)."""


from convergent.data.builtin import fashion_mnist
from convergent.data.pairs import ImageTextPairs

CAPTIONS = [name.lower().replace("/", " or ") for name in fashion_mnist.CLASSES]
"""The caption of each class: its name, lowercased ("t-shirt or top", "ankle boot")."""


def build(split: str, root=None, img_size: int = 32, in_chans: int = 3, limit: int | None = None,
          max_image_pixels: int | None = None, verify: bool = False) -> ImageTextPairs:  # fmt: skip
    """Split ``train``, ``test`` or ``val`` (the test split, the only held-out one)."""
    images = fashion_mnist.build("test" if split == "val" else split, root, img_size, in_chans, limit)
    labels = images.labels.tolist()
    pixels = images.images.expand(-1, in_chans, -1, -1)  # (N, C, S, S), a view of the one channel
    names = [f"fashion-mnist/{split}/{i}" for i in range(len(labels))]
    source = images.source.replace("fashion-mnist", "fashion-mnist-captions", 1) + ", class names as captions"
    return ImageTextPairs(names, [[CAPTIONS[y]] for y in labels], labels, fashion_mnist.CLASSES, img_size, in_chans,
                          source, images=pixels, caption="first")  # fmt: skip
