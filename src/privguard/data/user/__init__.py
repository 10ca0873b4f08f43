"""The user's own split: members, non-members and (optionally) population records.

A user who audits a model they already trained knows which records it was trained on
(``members``), which it never saw (``nonmembers``) and, optionally, other records from the same
distribution an attacker could hold (``population``). Each part is a pandas DataFrame with a
``label`` column, an ``(X, y)`` pair of arrays, or a CSV / Parquet / NPZ file (NPZ holding arrays
``x`` and ``y``, read with ``allow_pickle=False``). Without a population, a stated share of the
non-members (seeded, stratified by label) becomes the attacker's population, and the report says
so.

Attacks work on float32 arrays in [0, 1]; a model may want something else (a DataFrame of raw
columns for a pipeline that does its own encoding, float64 arrays). A :class:`Codec` is the
reversible mapping between the two:

- :class:`FrameCodec`: numeric columns min-max scaled to [0, 1] with a ``name?missing``
  indicator column when the column has empty cells; other columns (text, bool, category) one-hot
  encoded as ``name=value`` with ``name=missing`` for empty cells. Decoding undoes the scaling
  (integer columns rounded), takes the most likely category of each one-hot block, restores
  empty cells and each column's original dtype, so the model gets a DataFrame with exactly its
  columns. A query that is one of the user's own records (bit for bit, after encoding) decodes
  to that record exactly, so members and non-members reach the model unchanged;
- :class:`ArrayCodec`: numeric arrays used as they are (float32 for the attacks), given back in
  the model's dtype, the user's own records exactly.

Bad input raises :class:`~privguard.errors.DataError` naming the part and what to do: a label
column absent from one part, members that also appear among the non-members (how many), labels
the model does not predict, columns the model was not fitted on, an unknown file kind.

The package is split by concern: :mod:`~privguard.data.user.parts` reads one part (a table,
arrays or a file), :mod:`~privguard.data.user.codec` holds the reversible encodings and
:mod:`~privguard.data.user.load` assembles and checks the whole split.
"""

from privguard.data.user.codec import ArrayCodec, Codec, FrameCodec
from privguard.data.user.load import POPULATION_SHARE, UserData, UserDataset, load_user_split
from privguard.data.user.parts import TABLE_SUFFIXES, read_part

__all__ = [
    "POPULATION_SHARE",
    "TABLE_SUFFIXES",
    "ArrayCodec",
    "Codec",
    "FrameCodec",
    "UserData",
    "UserDataset",
    "load_user_split",
    "read_part",
]
