"""Reading the images behind an embedding file's ``paths``: resized tiles, placeholders, a font.

Every image is resized to one fixed (height, width), ignoring its aspect ratio (person crops are all about
2:1), so that the grids are regular. An image that is missing or cannot be decoded is an error naming it,
unless the caller asks for placeholders (``missing="placeholder"``): a grey tile with a cross, counted in
:meth:`ImageStore.placeholder_summary` (the command prints it as a warning).
"""
import os

from PIL import Image, ImageDraw, ImageFont

__all__ = ["MISSING", "ImageError", "ImageStore", "font", "PLACEHOLDER_COLOUR"]

#: what ``--missing-images`` may say
MISSING = ("error", "placeholder")
PLACEHOLDER_COLOUR = (200, 200, 200)

_FONTS = {}


class ImageError(ValueError):
    """An image of an embedding file is missing or unreadable (and placeholders were not asked for)."""


def font(size):
    """A TrueType font of ``size`` px: matplotlib's DejaVu Sans, else Pillow's own, else Pillow's bitmap font."""
    if size in _FONTS:
        return _FONTS[size]
    found = None
    try:
        import matplotlib

        found = ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        try:
            found = ImageFont.load_default(size=size)  # Pillow >= 10.1
        except (TypeError, OSError):
            found = ImageFont.load_default()
    _FONTS[size] = found
    return found


class ImageStore:
    """Loads and caches the images of ``paths``, resized to ``size`` = (height, width).

    Args:
        size: (height, width) of every tile.
        missing: "error" (raise :class:`ImageError` naming the file) or "placeholder".
        root: folder that relative paths are read from (default: the current folder).
    """

    def __init__(self, size, missing="error", root=None):
        if missing not in MISSING:
            raise ValueError("missing must be one of {}, got {!r}".format(", ".join(MISSING), missing))
        self.size = (int(size[0]), int(size[1]))
        self.missing = missing
        self.root = root
        self.placeholders = []  # (path, reason) of the images replaced by a placeholder
        self._cache = {}

    def resolve(self, path):
        path = str(path)
        if self.root is not None and not os.path.isabs(path):
            return os.path.join(self.root, path)
        return path

    def _placeholder(self, size):
        h, w = size
        tile = Image.new("RGB", (w, h), PLACEHOLDER_COLOUR)
        draw = ImageDraw.Draw(tile)
        draw.line([(0, 0), (w - 1, h - 1)], fill=(120, 120, 120), width=2)
        draw.line([(0, h - 1), (w - 1, 0)], fill=(120, 120, 120), width=2)
        return tile

    def _read(self, path, size):
        h, w = size
        full = self.resolve(path)
        if not os.path.isfile(full):
            reason = "does not exist"
        else:
            try:
                with Image.open(full) as img:
                    return img.convert("RGB").resize((w, h), Image.BILINEAR)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # broken or unknown
                reason = "cannot be read as an image ({}: {})".format(type(e).__name__, e)
        if self.missing == "error":
            hint = ("the embedding file's paths are read {}; pass --image-root DIR if they are relative to "
                    "another folder, or --missing-images placeholder to draw grey tiles instead".format(
                        "relative to --image-root {!r}".format(self.root) if self.root is not None
                        else "as stored (relative ones from the current folder {!r})".format(os.getcwd())))
            raise ImageError("image {!r} {}: {}".format(full, reason, hint))
        self.placeholders.append((full, reason))
        return self._placeholder(size)

    def tile(self, path, size=None):
        """The image of ``path`` as a PIL RGB image of ``size`` (default: the store's), or its placeholder."""
        size = tuple(size) if size is not None else self.size
        key = (str(path), size)
        if key not in self._cache:
            self._cache[key] = self._read(path, size)
        return self._cache[key]

    def placeholder_summary(self):
        """A one-line warning about the images drawn as placeholders, or None if there are none."""
        unique = sorted(dict(self.placeholders).items())
        if not unique:
            return None
        shown = "; ".join("{} ({})".format(p, r) for p, r in unique[:3])
        return "{} image(s) missing or unreadable, drawn as grey placeholder tiles: {}{}".format(
            len(unique), shown, " ..." if len(unique) > 3 else "")
