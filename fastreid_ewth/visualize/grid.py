"""Rank-list grids (``ranklist.png``, ``compare.png``) drawn with Pillow at exact pixel positions.

Layout (all sizes in pixels; ``H`` × ``W`` is the tile size, ``C`` the gallery columns)::

    +--------------------------------------------------------------------------------+
    | MARGIN                                                                         |
    |   header (HEADER px): title, colour legend                                     |
    |   label (LABEL px) | query cell | QUERY_GAP | cell 1 | GAP | cell 2 | ... | C  |
    |   ROW_GAP                                                                      |
    |   next row ...                                                          MARGIN |
    +--------------------------------------------------------------------------------+

A row holds the query's ranked gallery tiles (the evaluator's top-k, junk left out, ranks 1..k) and, with
``--junk show`` (the default), its junk tiles (gallery images of the query's identity and camera) no farther
from the query than the k-th ranked tile, all in order of (distance, gallery index): so a row has k ranked
tiles plus its junk tiles (fewer ranked ones only when the query's gallery without junk has fewer than k
images; then all of its junk is in range). The number of columns ``C`` of a picture is
:func:`grid_columns`: the length of its longest row, but at least k. The command takes the longest row over
*all pages* of a picture (and, in ``compare.png``, over both models' rows), so every page of a picture has
the same width; rows shorter than ``C`` end in empty cells. With ``--junk hide`` no junk tile is drawn and
``C = k``.

A cell is ``W + 2 * FRAME`` wide and ``H + 2 * FRAME + CAPTION`` high: a frame of FRAME px in the tile's
colour (blue query, green correct, red wrong, grey junk) around the image, then the caption band below it.
The cell of row ``r`` (0-based on its page) and column ``c`` (0 = the query, 1..C = its gallery tiles) has
its top-left corner at::

    x = MARGIN + LABEL + (0 if c == 0 else cell_w + QUERY_GAP + (c - 1) * (cell_w + GAP))
    y = MARGIN + HEADER + r * (cell_h + ROW_GAP)

and the picture is ``2 * MARGIN + LABEL + cell_w + QUERY_GAP + C * cell_w + (C - 1) * GAP`` wide and
``2 * MARGIN + HEADER + rows * cell_h + (rows - 1) * ROW_GAP`` high. A cell with no image (the row is
shorter than ``C``, or the query's gallery without junk has fewer than k images) stays background-white.
"""
import io

from PIL import Image, ImageDraw

from .images import font

__all__ = ["Grid", "Tile", "Row", "render_grid", "grid_columns", "png_bytes", "CORRECT", "WRONG", "JUNK",
           "QUERY", "BACKGROUND", "LEGEND", "JUNK_LEGEND"]

#: frame colours: correct match (same identity, other camera), wrong match (other identity), junk (same
#: identity and camera: no rank), the query
CORRECT = (0, 170, 0)
WRONG = (220, 30, 30)
JUNK = (128, 128, 128)
QUERY = (40, 90, 220)
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
SEPARATOR = (150, 150, 150)

#: the header's colour legend without and with junk tiles
LEGEND = ((QUERY, "query"), (CORRECT, "correct match (same id, other camera)"), (WRONG, "wrong match (other id)"))
JUNK_LEGEND = LEGEND + ((JUNK, "junk (same id and camera): no rank"),)

_FONT_SIZE = 11
_LINE = 13  # px per text line


class Grid:
    """Pixel geometry of a grid of ``rows`` rows of a query and ``columns`` gallery cells of ``tile`` = (H, W)."""
    MARGIN = 8
    HEADER = 40
    LABEL = 132
    FRAME = 4
    CAPTION = 30
    GAP = 4
    QUERY_GAP = 16
    ROW_GAP = 10

    def __init__(self, tile, columns, rows):
        self.tile_h, self.tile_w = int(tile[0]), int(tile[1])
        self.columns, self.rows = int(columns), int(rows)
        self.cell_w = self.tile_w + 2 * self.FRAME
        self.cell_h = self.tile_h + 2 * self.FRAME + self.CAPTION
        self.width = (2 * self.MARGIN + self.LABEL + self.cell_w + self.QUERY_GAP + self.columns * self.cell_w
                      + (self.columns - 1) * self.GAP)
        self.height = 2 * self.MARGIN + self.HEADER + self.rows * self.cell_h + (self.rows - 1) * self.ROW_GAP

    def cell(self, row, col):
        """(x, y) of the top-left corner of the cell of ``row`` and column ``col`` (0 = query)."""
        x = self.MARGIN + self.LABEL
        if col > 0:
            x += self.cell_w + self.QUERY_GAP + (col - 1) * (self.cell_w + self.GAP)
        return x, self.MARGIN + self.HEADER + row * (self.cell_h + self.ROW_GAP)


class Tile:
    """One cell: the image at ``path`` framed in ``colour``, with up to two caption lines."""

    def __init__(self, path, colour, caption=()):
        self.path, self.colour, self.caption = path, colour, tuple(caption)


class Row:
    """A grid row: label lines (left), the query tile, then the gallery tiles (None = empty cell)."""

    def __init__(self, label, query, tiles):
        self.label, self.query, self.tiles = tuple(label), query, list(tiles)


def grid_columns(rows, k):
    """Gallery columns of a picture of ``rows``: the length of its longest row, at least ``k``."""
    return max([int(k)] + [len(row.tiles) for row in rows])


def _text_block(size, lines, colour=TEXT, start=0):
    """An image of ``size`` = (w, h) with ``lines`` of text (clipped to it)."""
    w, h = size
    block = Image.new("RGB", (w, h), BACKGROUND)
    draw = ImageDraw.Draw(block)
    for i, line in enumerate(lines):
        draw.text((2, start + 1 + i * _LINE), line, fill=colour, font=font(_FONT_SIZE))
    return block


def _cell(grid, tile, store):
    cell = Image.new("RGB", (grid.cell_w, grid.cell_h), BACKGROUND)
    framed_h = grid.tile_h + 2 * grid.FRAME
    ImageDraw.Draw(cell).rectangle([0, 0, grid.cell_w - 1, framed_h - 1], fill=tile.colour)
    cell.paste(store.tile(tile.path, (grid.tile_h, grid.tile_w)), (grid.FRAME, grid.FRAME))
    cell.paste(_text_block((grid.cell_w, grid.CAPTION), tile.caption), (0, framed_h))
    return cell


def _header(width, title, legend):
    header = _text_block((width, Grid.HEADER), [title])
    draw = ImageDraw.Draw(header)
    x, y = 2, 1 + _LINE + 6
    for colour, name in legend:
        draw.rectangle([x, y, x + 10, y + 10], fill=colour)
        draw.text((x + 14, y - 1), name, fill=TEXT, font=font(_FONT_SIZE))
        x += 14 + int(draw.textlength(name, font=font(_FONT_SIZE))) + 16
    return header


def render_grid(rows, columns, tile, store, title, separators=(), legend=LEGEND):
    """Draw ``rows`` (:class:`Row`) as one picture.

    Args:
        columns: gallery columns (:func:`grid_columns`); tiles beyond them are not drawn. tile: (H, W).
        store: an :class:`~.images.ImageStore`. title: first header line. separators: row indices after
        which a grey line is drawn in the row gap. legend: (colour, text) pairs of the header's legend.
    Returns:
        (PIL RGB image, :class:`Grid`).
    """
    grid = Grid(tile, columns, len(rows))
    canvas = Image.new("RGB", (grid.width, grid.height), BACKGROUND)
    canvas.paste(_header(grid.width - 2 * grid.MARGIN, title, legend), (grid.MARGIN, grid.MARGIN))
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        x, y = grid.cell(r, 0)
        canvas.paste(_text_block((grid.LABEL - 4, grid.cell_h), row.label, start=grid.FRAME), (grid.MARGIN, y))
        canvas.paste(_cell(grid, row.query, store), (x, y))
        for c, tile_ in enumerate(row.tiles[:grid.columns], start=1):
            if tile_ is not None:
                canvas.paste(_cell(grid, tile_, store), grid.cell(r, c))
        if r in separators and r + 1 < len(rows):
            line_y = y + grid.cell_h + grid.ROW_GAP // 2 - 1
            draw.line([(grid.MARGIN, line_y), (grid.width - grid.MARGIN - 1, line_y)], fill=SEPARATOR, width=2)
    return canvas, grid


def png_bytes(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
