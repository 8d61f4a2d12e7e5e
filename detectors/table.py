"""The stage-1 feature table: named numpy arrays of equal length, one row per frame or 10 ms audio block.

Cheap to slice and concatenate (stage 2 receives a stream's rows cut at arbitrary points), convertible to
and from an Arrow table (detectors/wire.py turns that into bytes for the trip to stage 2).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


class Features(dict):
    """Named numpy arrays sharing their first axis (rows in time order). Always has "t" (media s)."""

    def __len__(self) -> int:  # number of rows, not of columns
        t = self.get("t")
        return 0 if t is None else int(t.shape[0])

    @property
    def columns(self) -> list[str]:
        return list(self.keys())

    def take(self, index) -> "Features":
        return Features({k: v[index] for k, v in self.items()})

    def slice(self, start: int, stop: int) -> "Features":
        return self.take(slice(start, stop))

    @staticmethod
    def concat(parts: list["Features"]) -> "Features":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Features()
        keys = parts[0].keys()
        return Features({k: np.concatenate([p[k] for p in parts]) for k in keys})

    def to_arrow(self) -> pa.Table:
        columns, names = [], []
        for name, values in self.items():
            if values.ndim == 2:
                flat = pa.array(np.ascontiguousarray(values).ravel())
                columns.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
            elif values.dtype == object:
                columns.append(pa.array(list(values), type=pa.binary()))
            else:
                columns.append(pa.array(values))
            names.append(name)
        return pa.Table.from_arrays(columns, names=names)

    @staticmethod
    def from_arrow(table: pa.Table) -> "Features":
        out = Features()
        # one contiguous batch, its columns taken whole: per-column combine_chunks was ~1/3 of the cost
        batches = table.combine_chunks().to_batches()
        columns = batches[0].columns if len(batches) == 1 else [c.combine_chunks() for c in table.columns]
        for name, col in zip(table.column_names, columns):
            if pa.types.is_fixed_size_list(col.type):
                width = col.type.list_size
                # the child array as it is when it holds exactly this column's values (as read from IPC);
                # flatten() goes through a compute kernel: about half of this function's cost
                whole = col.offset == 0 and not col.null_count and len(col.values) == len(col) * width
                if col.null_count and pa.types.is_floating(col.type.value_type):
                    # rows from before the column existed (a table written by an earlier build): NaN, not gone
                    col = col.fill_null(pa.scalar([float("nan")] * width, type=col.type))
                values = col.values if whole else col.flatten()
                out[name] = values.to_numpy(zero_copy_only=False).reshape(-1, width)
            elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                # a table store (Delta/Spark) keeps fixed-size lists as plain lists of equal length
                flat = col.flatten().to_numpy(zero_copy_only=False)
                out[name] = flat.reshape(len(col), -1) if len(col) else flat.reshape(0, 0)
            elif pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
                out[name] = np.array(col.to_pylist(), dtype=object)
            else:
                out[name] = col.to_numpy(zero_copy_only=False)
        return out

    def to_pandas(self):
        """1-D columns as a DataFrame (2-D columns become one list per row), for notebooks."""
        import pandas as pd

        return pd.DataFrame({k: (list(v) if v.ndim == 2 else v) for k, v in self.items()})
