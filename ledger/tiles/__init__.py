"""C2SP tlog-tiles: the log's read side as immutable static files.

One job a module:

  layout   tile coordinates, paths, which tiles a tree has, hash tiles and entry bundles
  reader   TileReader: roots, inclusion and consistency proofs and entries of a signed tree,
           from tiles alone, each tile authenticated against the tree's root
  sync     LogTiles (a log's tiles, read from its store, by path) and sync (written to a
           directory, incrementally)

layout and reader are on the verifier path (standard library only); sync reads the store.
Import it as ``ledger.tiles.sync``: importing ``ledger.tiles`` does not load SQLAlchemy.
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
from .reader import Fetch, TileReader

__all__ = [
    "ENTRIES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Fetch",
    "Tile",
    "TileError",
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
