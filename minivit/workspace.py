"""An explicit pool of activation buffers, reused from one training step to the next.

A fresh 17 MB temporary per layer per step costs page faults (the allocator returns large
blocks to the OS and gets them back zeroed). Passing `workspace=Workspace()` to vit_forward
lets every layer write into a buffer it got from the pool under a fixed name: the same arrays,
step after step. The math is unchanged; only where the results live.

Rule: a workspace's buffers hold one forward's activations at a time. vit_forward starts a new
generation; vit_backward refuses a cache from an older one (its buffers were overwritten).
Without a workspace (None) every buffer is a fresh array, as plain NumPy code would make.
"""


class StaleCacheError(RuntimeError):
    """A forward cache whose workspace buffers were reused by a later forward."""


class Workspace:
    """name -> buffer. `scope("blocks.3.")` gives a view of the same pool under a prefix.
    Shared buffers (the transient ones every block uses in turn) ignore the prefix, except in a
    `scope(prefix, own_shared=True)`: a block whose shapes differ from the others' (ViT's
    class-token-only last block) keeps its own, so neither reallocates the other's each step."""

    def __init__(self, _pool=None, _prefix="", _shared_prefix=""):
        self._pool = {} if _pool is None else _pool
        self._prefix = _prefix
        self._shared_prefix = _shared_prefix

    def scope(self, prefix, own_shared=False):
        shared = self._prefix + prefix if own_shared else self._shared_prefix
        return Workspace(self._pool, self._prefix + prefix, shared)

    def get(self, key, shape, dtype, xp, shared=False):
        """The buffer named key under the scope's prefix (a shared one under the shared prefix,
        empty unless own_shared): uninitialised, of this shape and dtype; reallocated only when
        they change."""
        name = self._shared_prefix + key if shared else self._prefix + key
        buf = self._pool.get(name)
        shape = tuple(shape)
        if buf is None or buf.shape != shape or buf.dtype != dtype or \
                type(buf).__module__.split(".")[0] != xp.__name__:
            buf = xp.empty(shape, dtype=dtype)
            self._pool[name] = buf
        return buf

    def shares(self, n):
        """n independent workspaces (pools and generations of their own), one per share of a
        batch that minivit.data_parallel runs on its own thread; kept here from step to step."""
        shares = self._pool.setdefault("__shares__", [])
        shares += [Workspace() for _ in range(n - len(shares))]
        return shares[:n]

    def new_generation(self) -> int:
        self._pool["__generation__"] = self._pool.get("__generation__", 0) + 1
        return self._pool["__generation__"]

    @property
    def generation(self) -> int:
        return self._pool.get("__generation__", 0)

    def nbytes(self) -> int:
        return sum(sum(w.nbytes() for w in b) if isinstance(b, list) else
                   getattr(b, "nbytes", 0) for b in self._pool.values())

    def clear(self):
        self._pool.clear()


def buffer(ws, key, shape, dtype, xp, shared=False):
    """ws.get(...) or, without a workspace, a fresh uninitialised array."""
    if ws is None:
        return xp.empty(shape, dtype=dtype)
    return ws.get(key, shape, dtype, xp, shared)
