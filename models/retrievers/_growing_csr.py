"""A row-appendable CSR matrix: rows are added in amortised time proportional to their own size."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class GrowingCSR:
    """CSR arrays with spare capacity (doubling); `matrix()` is a scipy view of the filled part (no copy)."""

    def __init__(self, m: sp.csr_matrix) -> None:
        m = m.tocsr()
        self.n_cols = m.shape[1]
        self.n_rows, self.nnz = m.shape[0], m.nnz
        self._data = m.data.copy()
        self._indices = m.indices.copy()
        self._indptr = m.indptr.copy()

    @staticmethod
    def _room(a: np.ndarray, need: int) -> np.ndarray:
        if need <= len(a):
            return a
        out = np.empty(max(need, 2 * len(a), 16), dtype=a.dtype)
        out[:len(a)] = a
        return out

    def append(self, rows: sp.csr_matrix) -> None:
        rows = rows.tocsr()
        if rows.shape[1] != self.n_cols:
            raise ValueError(f"rows have {rows.shape[1]} columns, the matrix {self.n_cols}")
        n, nnz = rows.shape[0], rows.nnz
        self._data = self._room(self._data, self.nnz + nnz)
        self._indices = self._room(self._indices, self.nnz + nnz)
        self._indptr = self._room(self._indptr, self.n_rows + n + 1)
        self._data[self.nnz:self.nnz + nnz] = rows.data
        self._indices[self.nnz:self.nnz + nnz] = rows.indices
        self._indptr[self.n_rows + 1:self.n_rows + n + 1] = rows.indptr[1:] + self.nnz
        self.n_rows, self.nnz = self.n_rows + n, self.nnz + nnz

    def matrix(self) -> sp.csr_matrix:
        """The filled rows as a csr_matrix sharing this object's arrays; earlier views stay valid (an append writes
        only past their end, or into new arrays)."""
        return sp.csr_matrix((self._data[:self.nnz], self._indices[:self.nnz], self._indptr[:self.n_rows + 1]),
                             shape=(self.n_rows, self.n_cols), copy=False)
