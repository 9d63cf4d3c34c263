"""C2SP tlog-tiles: the log's read side as immutable static files.

One job a module:

  layout   tile coordinates, paths, which tiles a tree has, hash tiles and entry bundles
  reader   TileReader: roots, inclusion and consistency proofs and entries of a signed tree,
           from tiles alone, each tile authenticated against the tree's root
  sync     LogTiles (a log's tiles, read from its store, by path) and sync (written to a
           directory, incrementally)
  source   TileSource: an audit's LogSource over tiles from an HTTP prefix or a directory
           (open_tiles), with the log API's caps and deadlines

layout, reader and source are on the verifier path (standard library only); sync reads the
store. Import them as ``ledger.tiles.sync`` and ``ledger.tiles.source``: importing
``ledger.tiles`` loads neither SQLAlchemy nor the audit.
"""

from .layout import (
    ENTRIES,
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    TileError,
    encode_index,
    format_bundle,
    parse_bundle,
    parse_path,
    split_tile,
    tile_count,
    tile_for,
    tiles,
)
from .reader import Fetch, TileMismatch, TileReader

__all__ = [
    "ENTRIES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Fetch",
    "Tile",
    "TileError",
    "TileMismatch",
    "TileReader",
    "encode_index",
    "format_bundle",
    "parse_bundle",
    "parse_path",
    "split_tile",
    "tile_count",
    "tile_for",
    "tiles",
]
