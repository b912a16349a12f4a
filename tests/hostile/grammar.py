"""A grammar of hostile pickle programs over persistkit's allowed globals.

:func:`generate` turns a seed into one pickle program (bytes) through ``random.Random(seed)``:
deterministic, so a seed is a complete bug report. The generator keeps a *typed model* of
the pickle machine's stack and memo while it writes opcodes, so nearly every program is
well-formed and gets past the parser to the interesting part: it composes calls (``REDUCE``,
``NEWOBJ``, ``NEWOBJ_EX``), ``BUILD``, containers (``SETITEM(S)``, ``APPEND(S)``,
``ADDITEMS``), the memo (``PUT``/``BINPUT``/``LONG_BINPUT``/``MEMOIZE`` and the matching
gets) and stack shuffles (``DUP``, ``POP``, ``MARK`` ... ``POP_MARK``) over globals drawn from
:data:`persistkit.safety.allowlist.ALLOWED` - weighted toward callable instances (torch
``Identity``, scikit-learn scorers, kernels, losses), the numpy/torch rebuild helpers,
``copyreg._reconstructor`` and builtins - and literals chosen to hurt (huge and negative ints,
dunder names, bytes of odd sizes).

Because the model knows where every value came from, each program also carries:

- ``features``: what it exercised (called a computed value, built onto a global, crafted a
  dtype state, ...), for coverage reports;
- ``must_refuse``: the reasons, if any, why the unpickler's invariants forbid it (the callable
  of a call is a computed value; a data class, pure function or constant is called with
  arguments; ``BUILD`` onto a global; an opcode outside the safe subset; a global that is not
  allowed). A program with a reason must never load.

A few programs are "sinks": they reach for ``os.system``/``exec``/``subprocess`` with a
command that creates a marker file, hidden behind computed values, memo indirection or a
``POP_MARK``; others try to reach code with allowed globals only (held callables in a
scorer's ``_score_func``, a kernel's ``metric``, an ``nn.Module``'s hook dicts or ``forward``,
a ``FunctionTransformer``'s ``func``), whose strings are the marker command too.
"""

from __future__ import annotations

import pickle
import random
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from persistkit.safety.allowlist import (
    ALLOWED,
    CALLED_CLASS,
    CONSTANT,
    DATA_CLASS,
    PURE_FUNCTION,
    RECONSTRUCTOR,
)

__all__ = ["INTERESTING", "SINKS", "Program", "generate"]

#: Allowed globals the generator prefers (weight), beyond a uniform draw over the list.
INTERESTING: dict[tuple[str, str], int] = {
    ("torch.nn.modules.linear", "Identity"): 12,
    ("torch.nn.modules.container", "Sequential"): 3,
    ("torch.nn.modules.module", "Module"): 2,
    ("sklearn.metrics._scorer", "_Scorer"): 8,
    ("sklearn.metrics._scorer", "_PassthroughScorer"): 3,
    ("sklearn.metrics._scorer", "_CurveScorer"): 3,
    ("sklearn.metrics._scorer", "_MultimetricScorer"): 3,
    ("sklearn.metrics._scorer", "_BaseScorer"): 2,
    ("sklearn.gaussian_process.kernels", "PairwiseKernel"): 6,
    ("sklearn.gaussian_process.kernels", "Exponentiation"): 3,
    ("sklearn.gaussian_process.kernels", "Sum"): 2,
    ("sklearn.gaussian_process.kernels", "Product"): 2,
    ("sklearn.gaussian_process.kernels", "RBF"): 2,
    ("sklearn.gaussian_process.kernels", "CompoundKernel"): 2,
    ("sklearn._loss.loss", "HalfSquaredError"): 2,
    ("sklearn._loss.link", "IdentityLink"): 2,
    ("sklearn._loss._loss", "CyHalfSquaredError"): 2,
    ("sklearn._loss._loss", "__pyx_unpickle_CyHalfMultinomialLoss"): 3,
    ("numpy", "dtype"): 12,
    ("numpy", "ndarray"): 4,
    ("numpy", "mean"): 3,
    ("numpy._core.multiarray", "_reconstruct"): 10,
    ("numpy._core.multiarray", "scalar"): 8,
    ("numpy._core.numeric", "_frombuffer"): 8,
    ("numpy.core.multiarray", "_reconstruct"): 2,
    ("numpy.random._pickle", "__bit_generator_ctor"): 4,
    ("numpy.random._pickle", "__generator_ctor"): 4,
    ("numpy.random._pickle", "__randomstate_ctor"): 4,
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"): 2,
    ("copyreg", "_reconstructor"): 10,
    ("_codecs", "encode"): 4,
    ("builtins", "bytes"): 4,
    ("builtins", "set"): 3,
    ("builtins", "frozenset"): 3,
    ("builtins", "complex"): 2,
    ("builtins", "slice"): 2,
    ("builtins", "dict"): 3,
    ("builtins", "object"): 3,
    ("collections", "OrderedDict"): 6,
    ("torch._utils", "_rebuild_tensor_v2"): 5,
    ("torch._utils", "_rebuild_parameter"): 4,
    ("torch._utils", "_rebuild_parameter_with_state"): 3,
    ("torch", "float32"): 1,
    ("torch", "Size"): 2,
    ("torch", "device"): 2,
    ("sklearn.tree._tree", "Tree"): 6,
    ("sklearn.tree._tree", "__pyx_unpickle_TreeBuilder"): 2,
    ("sklearn.metrics._dist_metrics", "newObj"): 6,
    ("sklearn.neighbors._kd_tree", "newObj"): 3,
    ("sklearn.neighbors._ball_tree", "newObj"): 3,
    ("sklearn.metrics._dist_metrics", "PyFuncDistance64"): 4,
    ("sklearn.metrics._dist_metrics", "__pyx_unpickle_DistanceMetric"): 2,
    ("sklearn.preprocessing._function_transformer", "FunctionTransformer"): 5,
    ("sklearn.pipeline", "Pipeline"): 3,
    ("sklearn.utils._bunch", "Bunch"): 2,
    ("sklearn.feature_selection._univariate_selection", "f_classif"): 2,
}
INTERESTING = {pair: w for pair, w in INTERESTING.items() if pair in ALLOWED}

#: Globals that are *not* allowed and would run the marker command if they were ever called.
SINKS: list[tuple[str, str]] = [
    ("os", "system"),
    ("posix", "system"),
    ("builtins", "exec"),
    ("builtins", "eval"),
    ("builtins", "getattr"),
    ("subprocess", "call"),
    ("subprocess", "getoutput"),
    ("operator", "attrgetter"),
    ("functools", "partial"),
    ("pydoc", "locate"),
]

# strings that make an attribute- or item-based gadget reach for code
DUNDERS = [
    "__class__",
    "__dict__",
    "__globals__",
    "__builtins__",
    "__setstate__",
    "__reduce_ex__",
    "__init__",
    "__call__",
    "__getattribute__",
    "__subclasses__",
    "__module__",
    "__code__",
    "__import__",
    "forward",
    "predict",
    "_response_method",
    "_score_func",
    "_forward_pre_hooks",
    "_forward_hooks",
    "func",
    "metric",
    "system",
    "os",
]
HOOK_DICTS = [
    "_forward_pre_hooks",
    "_forward_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_with_kwargs",
]
MODULE_TABLES = [
    "_parameters",
    "_buffers",
    "_non_persistent_buffers_set",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_is_full_backward_hook",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
    "_modules",
]
_DTYPE_CODES = ["f8", "f4", "i8", "i4", "u1", "b1", "O8", "V8", "S4", "U2", "c16", "M8", "f2"]
_INTS = [0, 1, -1, 2, 3, 8, 255, 256, 2**15, 2**31 - 1, -(2**31), 2**32, 2**63 - 1, -(2**63)]
_INTS += [2**64, 10**30, -(10**30)]
_ROLES_CALLABLE = (CALLED_CLASS, RECONSTRUCTOR)


@dataclass
class Program:
    """One generated program and what the generator knows about it."""

    seed: int
    data: bytes
    protocol: int
    #: how to store it: "pkl" (bare pickle), "joblib" (zlib-compressed), "torch" (zip)
    container: str
    features: Counter[str] = field(default_factory=Counter)
    #: why the unpickler's invariants forbid this program (empty: it may load)
    must_refuse: set[str] = field(default_factory=set)
    #: storage entries of a torch zip: key -> number of bytes
    storages: dict[str, int] = field(default_factory=dict)


@dataclass
class V:
    """The model of one stack value.

    ``origin``: "global" (resolved by GLOBAL/STACK_GLOBAL, possibly fetched back from the
    memo), "computed" (made by a call or BUILD), "literal" or "container" (made by opcodes
    that only hold data). ``kind`` refines it ("int", "str", "tuple", "dict", ...); ``size``
    is the length of a tuple or dict; ``calls`` how many calls deep a computed value is.
    """

    origin: str
    kind: str
    name: tuple[str, str] | None = None
    role: str | None = None
    size: int = -1
    calls: int = 0


MARK = V("mark", "mark")
Pusher = Callable[[], object]


class _Writer:
    """Writes opcodes and keeps the typed stack/memo model in step with them."""

    def __init__(self, rng: random.Random, protocol: int, marker: str, torch: bool) -> None:
        self.rng = rng
        self.protocol = protocol
        self.marker = marker
        self.torch = torch
        self.out = bytearray()
        self.stack: list[V] = []
        self.memo: dict[int, V] = {}
        self.next_memo = 0
        self.features: Counter[str] = Counter()
        self.must_refuse: set[str] = set()
        self.storages: dict[str, int] = {}
        self.ops = 0
        self.max_ops = rng.choice([40, 80, 160, 320])

    @property
    def spent(self) -> bool:
        return self.ops > self.max_ops

    # ---------------------------------------------------------------- raw opcodes
    def op(self, code: bytes, arg: bytes = b"") -> None:
        self.out += code + arg
        self.ops += 1

    def push(self, value: V) -> V:
        self.stack.append(value)
        return value

    def pop(self, n: int = 1) -> list[V]:
        taken = self.stack[len(self.stack) - n :]
        del self.stack[len(self.stack) - n :]
        return taken

    def mark(self) -> None:
        self.op(pickle.MARK)
        self.push(MARK)

    def pop_mark(self) -> list[V]:
        at = max(i for i, v in enumerate(self.stack) if v is MARK)
        items = self.stack[at + 1 :]
        del self.stack[at:]
        return items

    # ---------------------------------------------------------------- literals
    def lit_int(self, value: int | None = None) -> V:
        r = self.rng
        if value is None:
            value = r.choice([*_INTS, r.randint(-1000, 1000)])
        if self.protocol == 0 or (self.protocol == 1 and r.random() < 0.3):
            if -(2**31) <= value < 2**31 and r.random() < 0.8:
                self.op(pickle.INT, str(value).encode() + b"\n")
            else:
                self.op(pickle.LONG, str(value).encode() + b"L\n")
        elif 0 <= value < 256:
            self.op(pickle.BININT1, bytes([value]))
        elif 0 <= value < 65536:
            self.op(pickle.BININT2, struct.pack("<H", value))
        elif -(2**31) <= value < 2**31 and r.random() < 0.8:
            self.op(pickle.BININT, struct.pack("<i", value))
        elif self.protocol >= 2:
            encoded = pickle.encode_long(value)
            if len(encoded) < 256 and r.random() < 0.8:
                self.op(pickle.LONG1, bytes([len(encoded)]) + encoded)
            else:
                self.op(pickle.LONG4, struct.pack("<i", len(encoded)) + encoded)
        else:
            self.op(pickle.LONG, str(value).encode() + b"L\n")
        return self.push(V("literal", "int"))

    def lit_float(self) -> V:
        value = self.rng.choice([0.0, -0.0, 1.5, 1e308, -1e-308, float("inf"), float("nan")])
        if self.protocol == 0:
            self.op(pickle.FLOAT, repr(value).encode() + b"\n")
        else:
            self.op(pickle.BINFLOAT, struct.pack(">d", value))
        return self.push(V("literal", "float"))

    def lit_bool(self, value: bool | None = None) -> V:
        value = self.rng.random() < 0.5 if value is None else value
        if self.protocol >= 2:
            self.op(pickle.NEWTRUE if value else pickle.NEWFALSE)
        else:
            self.op(pickle.INT, b"01\n" if value else b"00\n")
        return self.push(V("literal", "bool"))

    def lit_none(self) -> V:
        self.op(pickle.NONE)
        return self.push(V("literal", "none"))

    def lit_str(self, text: str | None = None) -> V:
        r = self.rng
        if text is None:
            text = r.choice(
                [
                    r.choice(DUNDERS),
                    r.choice(DUNDERS),
                    f"touch {self.marker}",
                    f"open({self.marker!r}, 'w').close()",
                    r.choice(_DTYPE_CODES),
                    "latin1",
                    "",
                    "x" * r.choice([1, 7, 300]),
                    "os",
                    "system",
                    "cpu",
                    "MT19937",
                    "\u00e9\u4e2d",
                ]
            )
        raw = text.encode("utf-8")
        if self.protocol == 0:
            escaped = text.replace("\\", "\\u005c").replace("\n", "\\u000a")
            self.op(pickle.UNICODE, escaped.encode("raw_unicode_escape") + b"\n")
        elif self.protocol >= 4 and len(raw) < 256 and r.random() < 0.8:
            self.op(pickle.SHORT_BINUNICODE, bytes([len(raw)]) + raw)
        elif self.protocol >= 4 and r.random() < 0.2:
            self.op(pickle.BINUNICODE8, struct.pack("<Q", len(raw)) + raw)
        else:
            self.op(pickle.BINUNICODE, struct.pack("<I", len(raw)) + raw)
        return self.push(V("literal", "str"))

    def lit_bytes(self, data: bytes | None = None) -> V:
        r = self.rng
        if data is None:
            size = r.choice([0, 1, 3, 4, 7, 8, 16, 24, 63, 64, 200, 4096])
            chunk = bytes(r.getrandbits(8) for _ in range(min(size, 64)))
            data = (chunk * (size // 64 + 1))[:size]
        if self.protocol < 3:
            # protocols 0-2 write bytes as _codecs.encode(text, "latin1")
            self.global_(("_codecs", "encode"))
            text = data.decode("latin1")
            self.tup(lambda: self.lit_str(text), lambda: self.lit_str("latin1"))
            self.reduce()
            self.stack[-1] = V("computed", "bytes")
            return self.stack[-1]
        if len(data) < 256 and r.random() < 0.8:
            self.op(pickle.SHORT_BINBYTES, bytes([len(data)]) + data)
        elif self.protocol >= 4 and r.random() < 0.3:
            self.op(pickle.BINBYTES8, struct.pack("<Q", len(data)) + data)
        elif self.protocol >= 5 and r.random() < 0.3:
            self.op(pickle.BYTEARRAY8, struct.pack("<Q", len(data)) + data)
        else:
            self.op(pickle.BINBYTES, struct.pack("<I", len(data)) + data)
        return self.push(V("literal", "bytes"))

    def literal(self) -> V:
        pushers: list[Callable[[], V]] = [
            self.lit_int,
            self.lit_str,
            self.lit_bytes,
            self.lit_float,
            self.lit_bool,
        ]
        pick = self.rng.choices(
            pushers,
            [4, 5, 2, 1, 1],
        )[0]
        return pick() if self.rng.random() < 0.93 else self.lit_none()

    # ---------------------------------------------------------------- globals
    def pick_global(self, roles: tuple[str, ...] | None = None) -> tuple[str, str]:
        r = self.rng
        pool = [p for p in INTERESTING if roles is None or ALLOWED[p] in roles]
        if pool and r.random() < 0.75:
            return r.choices(pool, [INTERESTING[p] for p in pool])[0]
        everything = [p for p in ALLOWED if roles is None or ALLOWED[p] in roles]
        return r.choice(everything or list(ALLOWED))

    def global_(self, pair: tuple[str, str] | None = None) -> V:
        r = self.rng
        pair = pair or self.pick_global()
        module, name = pair
        if self.protocol >= 4 and r.random() < 0.85:
            self.features["stack_global"] += 1
            if r.random() < 0.2:
                # names stored in the memo, dropped, and fetched back
                self.lit_str(module)
                self.memo_put()
                self.lit_str(name)
                self.memo_put()
                self.op(pickle.POP)
                self.op(pickle.POP)
                self.pop(2)
                self.memo_get(self.next_memo - 2)
                self.memo_get(self.next_memo - 1)
                self.features["stack_global:names_from_memo"] += 1
            else:
                self.lit_str(module)
                self.lit_str(name)
            self.pop(2)
            self.op(pickle.STACK_GLOBAL)
        else:
            self.features["text_global"] += 1
            self.op(pickle.GLOBAL, f"{module}\n{name}\n".encode())
        role = ALLOWED.get(pair)
        if role is None:
            self.must_refuse.add(f"disallowed global {module}.{name}")
        self.features[f"global:{role}"] += 1
        return self.push(V("global", "global", name=pair, role=role))

    # ---------------------------------------------------------------- memo
    def memo_put(self) -> None:
        r = self.rng
        index = self.next_memo
        if self.protocol >= 4 and r.random() < 0.6:
            self.op(pickle.MEMOIZE)
        elif self.protocol == 0:
            self.op(pickle.PUT, f"{index}\n".encode())
        elif index < 256 and r.random() < 0.8:
            self.op(pickle.BINPUT, bytes([index]))
        else:
            self.op(pickle.LONG_BINPUT, struct.pack("<I", index))
        self.memo[index] = self.stack[-1]
        self.next_memo += 1
        self.features["memo_put"] += 1

    def memo_get(self, index: int | None = None) -> V:
        r = self.rng
        if index is None:
            index = r.choice(list(self.memo))
        if self.protocol == 0:
            self.op(pickle.GET, f"{index}\n".encode())
        elif index < 256 and r.random() < 0.8:
            self.op(pickle.BINGET, bytes([index]))
        else:
            self.op(pickle.LONG_BINGET, struct.pack("<I", index))
        self.features["memo_get"] += 1
        return self.push(self.memo[index])

    def maybe_memo(self) -> None:
        if self.rng.random() < 0.3:
            self.memo_put()

    # ---------------------------------------------------------------- containers
    def tup(self, *pushers: Pusher) -> V:
        """Push a tuple of the values the ``pushers`` push (TUPLE1-3, EMPTY_TUPLE or
        MARK ... TUPLE, as the protocol allows)."""
        n = len(pushers)
        if self.protocol >= 2 and n <= 3 and self.rng.random() < 0.9:
            for pusher in pushers:
                pusher()
            self.pop(n)
            self.op([pickle.EMPTY_TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3][n])
        elif n == 0 and self.protocol >= 1 and self.rng.random() < 0.8:
            self.op(pickle.EMPTY_TUPLE)
        else:
            self.mark()
            for pusher in pushers:
                pusher()
            self.pop_mark()
            self.op(pickle.TUPLE)
        return self.push(V("container", "tuple", size=n))

    def args_tuple(self, depth: int, n: int | None = None) -> V:
        """Push a tuple of ``n`` random values (the arguments of a call)."""
        n = self.rng.choice([0, 1, 1, 2, 2, 3, 4]) if n is None else n
        return self.tup(*[lambda: self.value(depth - 1) for _ in range(n)])

    def list_(self, depth: int) -> V:
        r = self.rng
        n = r.choice([0, 1, 2, 3, 5])
        if self.protocol >= 1 and r.random() < 0.7:
            self.op(pickle.EMPTY_LIST)
            self.push(V("container", "list"))
            if n == 1 or (n and r.random() < 0.3):
                for _ in range(n):
                    self.value(depth - 1)
                    self.pop()
                    self.op(pickle.APPEND)
                    self.features["append"] += 1
            elif n:
                self.mark()
                for _ in range(n):
                    self.value(depth - 1)
                self.pop_mark()
                self.op(pickle.APPENDS)
                self.features["appends"] += 1
            return self.stack[-1]
        self.mark()
        for _ in range(n):
            self.value(depth - 1)
        self.pop_mark()
        self.op(pickle.LIST)
        return self.push(V("container", "list"))

    def dict_(self, depth: int, items: list[tuple[str, Pusher | None]] | None = None) -> V:
        """Push a dict; ``items`` are (key, pusher) pairs (None: a random value), else
        random keys (dunder names among them)."""
        r = self.rng
        if items is None:
            keys = [*DUNDERS, "training", "_sign", "_kwargs", "gamma", "n_features_in_"]
            items = [(r.choice(keys), None) for _ in range(r.choice([0, 1, 2, 3]))]

        def push_pair(key: str, pusher: Pusher | None) -> None:
            self.lit_str(key)
            if pusher is None:
                self.value(depth - 1)
            else:
                pusher()

        if self.protocol >= 1 and r.random() < 0.8:
            self.op(pickle.EMPTY_DICT)
            self.push(V("container", "dict", size=len(items)))
            if len(items) <= 1 or r.random() < 0.3:
                for key, pusher in items:
                    push_pair(key, pusher)
                    self.pop(2)
                    self.op(pickle.SETITEM)
                    self.features["setitem"] += 1
            else:
                self.mark()
                for key, pusher in items:
                    push_pair(key, pusher)
                self.pop_mark()
                self.op(pickle.SETITEMS)
                self.features["setitems"] += 1
            return self.stack[-1]
        self.mark()
        for key, pusher in items:
            push_pair(key, pusher)
        self.pop_mark()
        self.op(pickle.DICT)
        return self.push(V("container", "dict", size=len(items)))

    def set_(self, depth: int) -> V:
        r = self.rng
        n = r.choice([0, 1, 2])
        if r.random() < 0.5:
            self.op(pickle.EMPTY_SET)
            self.push(V("container", "set"))
            self.mark()
            for _ in range(n):
                self.literal()
            self.pop_mark()
            self.op(pickle.ADDITEMS)
            self.features["additems"] += 1
            return self.stack[-1]
        self.mark()
        for _ in range(n):
            self.literal()
        self.pop_mark()
        self.op(pickle.FROZENSET)
        return self.push(V("container", "frozenset"))

    # ---------------------------------------------------------------- calls
    def reduce(self) -> V:
        """REDUCE on (callable, args) already on the stack; records the invariants."""
        func, args = self.pop(2)
        self.op(pickle.REDUCE)
        self.note_call(func, args.size != 0, "reduce")
        return self.push(V("computed", "object", name=func.name, calls=func.calls + 1))

    def note_call(self, func: V, with_args: bool, how: str) -> None:
        self.features[f"call:{how}"] += 1
        if func.origin == "global":
            self.features[f"call:{how}:global:{func.role}"] += 1
            if func.role in (PURE_FUNCTION, CONSTANT):
                self.must_refuse.add(f"{how} calls a {func.role}")
            elif func.role == DATA_CLASS and with_args:
                self.must_refuse.add(f"{how} calls a data class with arguments")
        else:
            self.features[f"call:{how}:computed:{func.origin}"] += 1
            self.features["call:computed"] += 1
            if func.calls >= 2:
                self.features["call:result_of_call_of_result"] += 1
            self.must_refuse.add(f"{how} calls a computed value ({func.origin} {func.kind})")

    def call(self, depth: int) -> V:
        """Push ``callable(*args)`` where the callable is a global, a computed value or a
        value fetched back from the memo."""
        r = self.rng
        mode = r.choices(["global", "computed", "memo"], [5, 3, 1 if self.memo else 0])[0]
        if mode == "global":
            pair = self.pick_global(_ROLES_CALLABLE if r.random() < 0.8 else None)
            if r.random() < 0.55:
                recipe = self.tailored(pair, depth)
                if recipe is not None:
                    return recipe
            self.global_(pair)
        elif mode == "computed":
            self.features["callable:computed"] += 1
            self.callable_instance(depth - 1)
        else:
            self.features["callable:from_memo"] += 1
            self.memo_get()
        func = self.stack[-1]
        self.maybe_noise(depth)
        n = r.choice([0, 1, 1, 2, 3])
        self.args_tuple(depth, n)
        if r.random() < 0.15 and self.protocol >= 2:
            self.pop(2)
            self.op(pickle.NEWOBJ)
            self.note_call(func, n > 0, "newobj")
            value = self.push(V("computed", "object", name=func.name, calls=func.calls + 1))
        else:
            value = self.reduce()
        self.maybe_memo()
        return value

    def newobj(self, depth: int, pair: tuple[str, str] | None = None) -> V:
        """NEWOBJ / NEWOBJ_EX of an allowed class, mostly with no arguments (as picklers
        write it), sometimes with some."""
        r = self.rng
        pair = pair or self.pick_global((DATA_CLASS, CALLED_CLASS))
        func = self.global_(pair)
        n = 0 if r.random() < 0.8 else r.choice([1, 2])
        self.args_tuple(depth, n)
        if self.protocol >= 4 and r.random() < 0.25:
            kwargs = r.random() < 0.3
            self.dict_(depth, None if kwargs else [])
            with_args = n > 0 or self.stack[-1].size > 0
            self.pop(3)
            self.op(pickle.NEWOBJ_EX)
            self.note_call(func, with_args, "newobj_ex")
        else:
            self.pop(2)
            self.op(pickle.NEWOBJ)
            self.note_call(func, n > 0, "newobj")
        return self.push(V("computed", "object", name=pair, calls=1))

    def make_instance(self, depth: int, pair: tuple[str, str]) -> V:
        """An instance of ``pair`` the way picklers make it for the protocol."""
        if self.protocol >= 2:
            return self.newobj(depth, pair)
        # protocols 0-1: copyreg._reconstructor(cls, object, None)
        self.global_(("copyreg", "_reconstructor"))
        self.tup(
            lambda: self.global_(pair),
            lambda: self.global_(("builtins", "object")),
            self.lit_none,
        )
        value = self.reduce()
        value.name = pair
        return value

    def callable_instance(self, depth: int) -> V:
        """A computed value worth calling: an allowed class's instance set up by BUILD
        (Identity, scorer, kernel), the result of a call, or a plain new instance."""
        r = self.rng
        if self.spent:
            return self.make_instance(depth, self.pick_global((DATA_CLASS,)))
        choice = r.randrange(6)
        if choice == 1:
            return self.scorer_instance(depth)
        if choice == 2:
            return self.kernel_instance(depth)
        if choice == 3 and depth > 0:
            return self.call(depth - 1)
        if choice == 4:
            value = self.make_instance(depth, self.pick_global((DATA_CLASS,)))
            self.maybe_memo()
            return value
        return self.module_instance(depth)

    # ---------------------------------------------------------------- BUILD
    def build(self, state: Pusher | None = None, depth: int = 1) -> V:
        """BUILD the top of the stack with a state (a dict, (dict, slots) or any value)."""
        r = self.rng
        target = self.stack[-1]
        if state is not None:
            state()
        else:
            shape = r.choices(["dict", "slots", "any"], [5, 2, 1])[0]
            self.features[f"build_state:{shape}"] += 1
            if shape == "dict":
                self.dict_(depth)
            elif shape == "slots":
                self.tup(lambda: self.dict_(depth), lambda: self.dict_(depth))
            else:
                self.value(depth - 1)
        self.pop()
        self.op(pickle.BUILD)
        self.features[f"build_on:{target.origin}:{target.kind}"] += 1
        if target.origin == "global":
            self.must_refuse.add(f"BUILD onto the global {target.name}")
        return target

    def hook_dict(self, depth: int) -> V:
        """An OrderedDict or dict of hooks whose values are callables."""
        r = self.rng
        if r.random() < 0.5:
            self.global_(("collections", "OrderedDict"))
            self.tup()
            value = self.reduce()
            self.mark()
            for i in range(r.choice([1, 2])):
                self.lit_int(i)
                self.any_callable(depth - 1)
            self.pop_mark()
            self.op(pickle.SETITEMS)
            return value
        return self.dict_(depth, [("0", lambda: self.any_callable(depth - 1))])

    def any_callable(self, depth: int) -> V:
        """Something callable to hide in state: a global of any role, or a computed one."""
        if self.rng.random() < 0.6 or depth <= 0 or self.spent:
            return self.global_(self.pick_global())
        return self.callable_instance(depth - 1)

    def module_state(self, depth: int) -> None:
        """The __dict__ of an nn.Module (every table torch expects, so that calling it gets
        as far as the hooks), with some hook tables filled and maybe an instance
        ``forward``."""
        r = self.rng
        hooked = set(r.sample(HOOK_DICTS, r.choice([0, 0, 1, 2])))
        items: list[tuple[str, Pusher | None]] = [("training", self.lit_bool)]
        for name in MODULE_TABLES:
            if name in hooked:
                items.append((name, lambda: self.hook_dict(depth)))
                self.features["gadget:module_hooks"] += 1
            elif name == "_non_persistent_buffers_set":
                items.append((name, self.empty_set))
            elif name == "_is_full_backward_hook":
                items.append((name, self.lit_none))
            elif r.random() < 0.97:
                items.append((name, lambda: self.dict_(0, [])))
        if r.random() < 0.3:
            items.append(("forward", lambda: self.any_callable(depth)))
            self.features["gadget:module_forward"] += 1
        if r.random() < 0.15:
            items.append((r.choice(DUNDERS), None))
        if r.random() < 0.5:
            r.shuffle(items)
        self.dict_(depth, items)

    def empty_set(self) -> V:
        if self.protocol >= 4:
            self.op(pickle.EMPTY_SET)
            return self.push(V("container", "set"))
        self.global_(("builtins", "set"))
        self.tup()
        return self.reduce()

    def module_instance(self, depth: int) -> V:
        cls = self.rng.choice(
            [
                ("torch.nn.modules.linear", "Identity"),
                ("torch.nn.modules.linear", "Identity"),
                ("torch.nn.modules.container", "Sequential"),
                ("torch.nn.modules.activation", "ReLU"),
            ]
        )
        value = self.make_instance(depth, cls)
        self.build(lambda: self.module_state(depth), depth)
        self.features["gadget:module"] += 1
        self.maybe_memo()
        return value

    def scorer_instance(self, depth: int) -> V:
        r = self.rng
        value = self.make_instance(depth, ("sklearn.metrics._scorer", "_Scorer"))
        items: list[tuple[str, Pusher | None]] = [
            ("_score_func", lambda: self.any_callable(depth)),
            ("_sign", lambda: self.lit_int(1)),
            ("_kwargs", lambda: self.dict_(0, [])),
            ("_response_method", lambda: self.lit_str(r.choice(DUNDERS))),
        ]
        self.build(lambda: self.dict_(depth, items), depth)
        self.features["gadget:scorer"] += 1
        self.maybe_memo()
        return value

    def kernel_instance(self, depth: int) -> V:
        r = self.rng
        items: list[tuple[str, Pusher | None]]
        if r.random() < 0.6:
            value = self.make_instance(
                depth, ("sklearn.gaussian_process.kernels", "PairwiseKernel")
            )
            items = [
                ("gamma", self.lit_float),
                ("gamma_bounds", lambda: self.lit_str("fixed")),
                ("metric", lambda: self.any_callable(depth)),
                ("pairwise_kernels_kwargs", lambda: self.dict_(0, [])),
            ]
        else:
            value = self.make_instance(
                depth, ("sklearn.gaussian_process.kernels", "Exponentiation")
            )
            items = [
                ("kernel", lambda: self.any_callable(depth)),
                ("exponent", lambda: self.lit_int(2)),
            ]
        self.build(lambda: self.dict_(depth, items), depth)
        self.features["gadget:kernel"] += 1
        self.maybe_memo()
        return value

    def function_transformer(self, depth: int) -> V:
        value = self.make_instance(
            depth, ("sklearn.preprocessing._function_transformer", "FunctionTransformer")
        )
        items: list[tuple[str, Pusher | None]] = [
            ("func", lambda: self.any_callable(depth)),
            ("inverse_func", lambda: self.any_callable(depth)),
            ("validate", lambda: self.lit_bool(False)),
            ("accept_sparse", lambda: self.lit_bool(False)),
            ("check_inverse", lambda: self.lit_bool(False)),
            ("feature_names_out", self.lit_none),
            ("kw_args", self.lit_none),
            ("inv_kw_args", self.lit_none),
        ]
        self.build(lambda: self.dict_(depth, items), depth)
        self.features["gadget:function_transformer"] += 1
        return value

    def pyfunc_distance(self, depth: int) -> V:
        """newObj(PyFuncDistance64) + BUILD (p, vec, mat, func, kwargs)."""
        self.global_(("sklearn.metrics._dist_metrics", "newObj"))
        self.tup(lambda: self.global_(("sklearn.metrics._dist_metrics", "PyFuncDistance64")))
        value = self.reduce()
        self.build(
            lambda: self.tup(
                self.lit_float,
                lambda: self.ndarray(depth - 1),
                lambda: self.ndarray(depth - 1),
                lambda: self.any_callable(depth),
                lambda: self.dict_(0, []),
            ),
            depth,
        )
        self.features["gadget:pyfunc_distance"] += 1
        return value

    # ---------------------------------------------------------------- numpy / torch
    def dtype_(self, depth: int, crafted: bool | None = None) -> V:
        """numpy.dtype(code, False, True), often BUILT with a state; a crafted state has
        odd flags, sizes, alignments, a subarray or fields at odd offsets."""
        r = self.rng
        crafted = r.random() < 0.5 if crafted is None else crafted
        self.global_(("numpy", "dtype"))
        code = r.choice(_DTYPE_CODES)
        self.tup(lambda: self.lit_str(code), lambda: self.lit_bool(False), self.lit_bool)
        value = self.reduce()
        if not crafted and r.random() < 0.3:
            self.maybe_memo()
            return value

        def subarray() -> None:
            if crafted and depth > 0 and r.random() < 0.3:
                self.tup(lambda: self.dtype_(depth - 1, crafted=False), self.shape)
                self.features["dtype:subarray"] += 1
            else:
                self.lit_none()

        def fields() -> None:
            if crafted and depth > 0 and r.random() < 0.4:
                self.tup(lambda: self.lit_str("a"), lambda: self.lit_str("b"))
                self.dict_(0, [("a", lambda: self.field(depth)), ("b", lambda: self.field(depth))])
                self.features["dtype:fields"] += 1
            else:
                self.lit_none()
                self.lit_none()

        def state() -> None:
            self.mark()
            self.lit_int(r.choice([3, 3, 4, 1, 0, 99]))
            self.lit_str(r.choice(["<", ">", "|", "=", "x"]))
            subarray()
            fields()
            self.lit_int(r.choice([-1, -1, 0, 1, 8, 2**31 - 1, -(2**31), 2**40]))
            self.lit_int(r.choice([-1, -1, 1, 0, 3, 2**20]))
            self.lit_int(r.choice([0, 0, 1, 8, 16, 0x3F, 0xFF, -1, 2**40]) if crafted else 0)
            if r.random() < 0.1:
                self.lit_str("metadata")
            self.pop_mark()
            self.op(pickle.TUPLE)
            self.push(V("container", "tuple", size=8))

        self.build(state, depth)
        self.features["dtype:state" + (":crafted" if crafted else "")] += 1
        self.maybe_memo()
        return value

    def field(self, depth: int) -> V:
        offset = self.rng.choice([0, 4, -8, 2**31, 2**62, -1])
        return self.tup(lambda: self.dtype_(depth - 1, crafted=False), lambda: self.lit_int(offset))

    def shape(self) -> V:
        dims = self.rng.choice([[0], [3], [2, 2], [1], [2**31], [-1], [2**62, 2**62], [], [3, 0]])
        return self.tup(*[lambda d=d: self.lit_int(d) for d in dims])

    def ndarray(self, depth: int) -> V:
        """_reconstruct(ndarray, (0,), b'b') + BUILD (version, shape, dtype, fortran, data),
        with sizes that may not match."""
        r = self.rng
        module = r.choice(["numpy._core.multiarray", "numpy.core.multiarray"])
        self.global_((module, "_reconstruct"))
        cls = ("numpy", "ndarray") if r.random() < 0.9 else self.pick_global()
        self.tup(
            lambda: self.global_(cls),
            lambda: self.tup(lambda: self.lit_int(0)),
            lambda: self.lit_bytes(b"b"),
        )
        value = self.reduce()

        def data() -> None:
            if r.random() < 0.8:
                self.lit_bytes()
            else:
                self.list_(1)

        self.build(
            lambda: self.tup(
                lambda: self.lit_int(r.choice([1, 1, 0, 2, -1])),
                self.shape,
                lambda: self.dtype_(depth - 1),
                lambda: self.lit_bool(r.random() < 0.2),
                data,
            ),
            depth,
        )
        self.features["ndarray:state"] += 1
        self.maybe_memo()
        return value

    def tailored(self, pair: tuple[str, str], depth: int) -> V | None:
        """Push ``pair(*args)`` with arguments shaped like the real ones (so the call gets
        deep into the callee); None when there is no recipe for ``pair``."""
        r = self.rng
        module, name = pair
        if pair == ("numpy", "dtype"):
            return self.dtype_(depth)
        if name == "_reconstruct":
            return self.ndarray(depth)
        self.global_(pair)
        if name == "scalar":
            self.tup(lambda: self.dtype_(depth), self.lit_bytes)
            self.features["numpy:scalar"] += 1
            return self.reduce()
        if name == "_frombuffer":
            self.tup(
                self.lit_bytes,
                lambda: self.dtype_(depth),
                self.shape,
                lambda: self.lit_str(r.choice(["C", "F", "K", "x"])),
            )
            self.features["numpy:frombuffer"] += 1
            return self.reduce()
        if pair == ("copyreg", "_reconstructor"):
            base = r.choice([("builtins", "object"), ("builtins", "dict"), self.pick_global()])
            self.tup(
                lambda: self.global_(self.pick_global()),
                lambda: self.global_(base),
                lambda: self.value(depth - 1),
            )
            self.features["copyreg:_reconstructor"] += 1
            value = self.reduce()
            if r.random() < 0.5:
                self.build(None, depth)
            return value
        if module == "numpy.random._pickle":
            if name == "__generator_ctor" and r.random() < 0.5:
                self.tup(lambda: self.call_bitgen())
            else:
                self.tup(lambda: self.lit_str(r.choice(["MT19937", "PCG64", "os", "__class__"])))
            value = self.reduce()
            if r.random() < 0.7:
                self.build(lambda: self.bitgen_state(depth), depth)
            self.features["numpy:random"] += 1
            return value
        if name == "newObj":
            self.tup(lambda: self.global_(self.pick_global()))
            value = self.reduce()
            if r.random() < 0.6:
                self.build(None, depth)
            self.features["newObj"] += 1
            return value
        if pair == ("sklearn.tree._tree", "Tree"):
            self.tup(
                lambda: self.lit_int(r.choice([1, 2, 0, -1, 2**31])),
                lambda: self.ndarray(depth - 1),
                lambda: self.lit_int(r.choice([1, 2, 0, -1])),
            )
            value = self.reduce()
            items: list[tuple[str, Pusher | None]] = [
                ("max_depth", self.lit_int),
                ("node_count", self.lit_int),
                ("nodes", lambda: self.ndarray(depth - 1)),
                ("values", lambda: self.ndarray(depth - 1)),
            ]
            self.build(lambda: self.dict_(depth, items), depth)
            self.features["tree"] += 1
            return value
        if module == "torch._utils":
            return self.torch_rebuild(name, depth)
        if name.startswith("__pyx_unpickle"):
            self.tup(
                lambda: self.global_(self.pick_global()),
                lambda: self.lit_int(r.choice([0, 0xE3B0C44, 0x1E8F4A5, 2**62])),
                lambda: self.value(depth - 1),
            )
            self.features["pyx_unpickle"] += 1
            return self.reduce()
        if pair == ("_codecs", "encode"):
            codec = r.choice(["latin1", "rot13", "zlib", "hex", "utf-16"])
            self.tup(self.lit_str, lambda: self.lit_str(codec))
            return self.reduce()
        # no recipe: generic arguments
        self.args_tuple(depth)
        return self.reduce()

    def call_bitgen(self) -> V:
        self.global_(("numpy.random._pickle", "__bit_generator_ctor"))
        self.tup(lambda: self.lit_str(self.rng.choice(["MT19937", "PCG64"])))
        return self.reduce()

    def bitgen_state(self, depth: int) -> V:
        r = self.rng
        inner: list[tuple[str, Pusher | None]] = [
            ("key", lambda: self.ndarray(depth - 1)),
            ("pos", lambda: self.lit_int(r.choice([0, 624, 625, -1, 2**40]))),
            ("state", self.lit_int),
            ("inc", self.lit_int),
        ]
        items: list[tuple[str, Pusher | None]] = [
            ("bit_generator", lambda: self.lit_str(r.choice(["MT19937", "PCG64", "x"]))),
            ("state", lambda: self.dict_(depth, r.sample(inner, r.randint(1, 4)))),
            ("has_uint32", lambda: self.lit_int(r.choice([0, 1, 7]))),
            ("uinteger", self.lit_int),
        ]
        self.features["numpy:bitgen_state"] += 1
        return self.dict_(depth, items)

    def torch_rebuild(self, name: str, depth: int) -> V:
        """_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks) or a
        parameter around one; the global is already pushed."""
        r = self.rng

        def tensor_args() -> V:
            return self.tup(
                lambda: self.storage(depth),
                lambda: self.lit_int(r.choice([0, 0, 1, -1, 2**40])),
                self.shape,
                self.shape,
                self.lit_bool,
                lambda: self.hook_dict(depth),
            )

        def tensor() -> V:
            self.global_(("torch._utils", "_rebuild_tensor_v2"))
            tensor_args()
            return self.reduce()

        if name == "_rebuild_tensor_v2":
            tensor_args()
        elif name == "_rebuild_parameter":
            self.tup(tensor, self.lit_bool, lambda: self.hook_dict(depth))
        else:
            self.tup(
                tensor, self.lit_bool, lambda: self.hook_dict(depth), lambda: self.dict_(depth)
            )
        self.features["torch:rebuild"] += 1
        return self.reduce()

    def storage(self, depth: int) -> V:
        """A torch storage: a persistent id in torch zips, a random value elsewhere."""
        r = self.rng
        if not self.torch:
            return self.value(depth - 1)
        key = str(len(self.storages))
        numel = r.choice([0, 1, 4, 16])
        self.storages[key] = numel * 4 + r.choice([0, 0, 0, 4, -4 if numel else 0])

        def storage_type() -> V:
            self.op(pickle.GLOBAL, b"torch\nFloatStorage\n")
            return self.push(V("literal", "storage_type"))

        self.tup(
            lambda: self.lit_str("storage"),
            storage_type,
            lambda: self.lit_str(key),
            lambda: self.lit_str("cpu"),
            lambda: self.lit_int(numel),
        )
        self.pop()
        self.op(pickle.BINPERSID)
        self.features["torch:storage"] += 1
        return self.push(V("computed", "storage"))

    # ---------------------------------------------------------------- sinks & refused
    def sink(self, depth: int) -> V:
        """Reach for a disallowed global with the marker command, hidden in various ways."""
        r = self.rng
        how = r.randrange(4)
        self.features[f"sink:{how}"] += 1
        if how == 0:
            # behind a computed value: Identity()(os.system)("touch marker")
            self.module_instance(depth)
            self.tup(lambda: self.global_(r.choice(SINKS)))
            self.reduce()
        else:
            self.global_(r.choice(SINKS))
        if how == 2:
            # in the memo, dropped, fetched back
            self.memo_put()
            self.op(pickle.POP)
            self.pop()
            self.memo_get(self.next_memo - 1)
        self.tup(lambda: self.lit_str(f"touch {self.marker}"))
        value = self.reduce()
        if how == 3:
            # thrown away at once
            self.op(pickle.POP)
            self.pop()
            return self.literal()
        return value

    def refused_opcode(self) -> V:
        """INST/OBJ/EXT*/PERSID: never allowed in these streams."""
        r = self.rng
        which = r.choice(["INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"])
        self.features[f"refused_op:{which}"] += 1
        self.must_refuse.add(f"opcode {which}")
        pair = self.pick_global()
        if which == "INST":
            self.mark()
            self.lit_str()
            self.pop_mark()
            self.op(pickle.INST, f"{pair[0]}\n{pair[1]}\n".encode())
        elif which == "OBJ":
            self.mark()
            self.global_(pair if r.random() < 0.7 else r.choice(SINKS))
            self.lit_str(f"touch {self.marker}")
            self.pop_mark()
            self.op(pickle.OBJ)
        elif which == "EXT1":
            self.op(pickle.EXT1, bytes([r.randint(1, 255)]))
        elif which == "EXT2":
            self.op(pickle.EXT2, struct.pack("<H", r.randint(1, 65535)))
        elif which == "EXT4":
            self.op(pickle.EXT4, struct.pack("<i", r.randint(1, 2**31 - 1)))
        elif which == "PERSID":
            self.op(pickle.PERSID, b"0\n")
        else:
            self.lit_str("storage")
            self.pop()
            self.op(pickle.BINPERSID)
        return self.push(V("computed", "refused"))

    # ---------------------------------------------------------------- noise
    def maybe_noise(self, depth: int) -> None:
        """Stack shuffles that leave the stack as it was: DUP+POP, MARK ... POP_MARK
        (whose calls still run), a value pushed and popped."""
        r = self.rng
        x = r.random()
        if x < 0.08 and self.stack and self.stack[-1] is not MARK:
            self.op(pickle.DUP)
            self.op(pickle.POP)
            self.features["dup"] += 1
        elif x < 0.13 and depth > 0:
            self.mark()
            for _ in range(r.choice([1, 2])):
                self.value(depth - 1)
            self.pop_mark()
            self.op(pickle.POP_MARK)
            self.features["pop_mark"] += 1
        elif x < 0.17 and depth > 0:
            self.value(depth - 1)
            self.pop()
            self.op(pickle.POP)
            self.features["pop"] += 1

    # ---------------------------------------------------------------- any value
    def value(self, depth: int) -> V:
        """Push one value of a random production; leaves at depth 0 or past the budget."""
        r = self.rng
        if depth <= 0 or self.spent:
            if self.memo and r.random() < 0.25:
                return self.memo_get()
            return self.literal() if r.random() < 0.75 else self.global_()
        self.maybe_noise(depth)
        productions: list[tuple[Callable[[], V], float]] = [
            (self.literal, 6),
            (self.global_, 5),
            (lambda: self.memo_get() if self.memo else self.literal(), 3),
            (lambda: self.list_(depth), 2),
            (lambda: self.dict_(depth), 2),
            (lambda: self.args_tuple(depth), 2),
            (lambda: self.set_(depth) if self.protocol >= 4 else self.literal(), 1),
            (lambda: self.call(depth), 9),
            (lambda: self.newobj(depth) if self.protocol >= 2 else self.call(depth), 4),
            (lambda: self.build_something(depth), 6),
            (lambda: self.callable_instance(depth), 4),
            (lambda: self.dtype_(depth), 2),
            (lambda: self.ndarray(depth), 2),
            (lambda: self.function_transformer(depth), 1),
            (lambda: self.pyfunc_distance(depth), 1),
            (lambda: self.sink(depth), 1.0),
            (self.refused_opcode, 0.5),
        ]
        pick = r.choices([p for p, _ in productions], [w for _, w in productions])[0]
        value = pick()
        self.maybe_memo()
        return value

    def build_something(self, depth: int) -> V:
        """BUILD onto a global, a call's result, a new instance, a container or a memo'd
        value."""
        r = self.rng
        target = r.choices(["global", "result", "instance", "container", "memo"], [3, 3, 4, 1, 1])
        if target[0] == "global":
            self.global_()
        elif target[0] == "result":
            self.call(depth - 1)
        elif target[0] == "instance":
            self.make_instance(depth - 1, self.pick_global((DATA_CLASS,)))
        elif target[0] == "container":
            r.choice([self.list_, self.dict_])(depth - 1)
        elif self.memo:
            self.memo_get()
        else:
            self.global_()
        return self.build(None, depth)


def generate(seed: int, marker: str = "/tmp/persistkit-grammar-marker") -> Program:
    """The program for ``seed``: deterministic for a given seed and marker path."""
    rng = random.Random(seed)
    protocol = rng.choices([0, 1, 2, 3, 4, 5], [1, 1, 3, 2, 4, 2])[0]
    container = rng.choices(["pkl", "joblib", "torch"], [8, 1, 1])[0]
    w = _Writer(rng, protocol, marker, torch=container == "torch")
    if protocol >= 2:
        w.op(pickle.PROTO, bytes([protocol]))
    depth = rng.choice([2, 3, 3, 4, 5])
    top = rng.choices(["value", "many", "object"], [3, 2, 4])[0]
    if top == "value":
        w.value(depth)
    elif top == "object":
        objects: list[Callable[[int], V]] = [
            w.module_instance,
            w.scorer_instance,
            w.kernel_instance,
            w.function_transformer,
            w.build_something,
            w.call,
        ]
        rng.choice(objects)(depth)
    else:
        w.mark()
        for _ in range(rng.choice([2, 3, 5])):
            w.value(depth)
        w.pop_mark()
        w.op(pickle.LIST if rng.random() < 0.5 else pickle.TUPLE)
        w.push(V("container", "list"))
    assert len(w.stack) == 1, w.stack
    w.op(pickle.STOP)
    data = bytes(w.out)
    if protocol >= 4 and rng.random() < 0.5:
        body = data[2:]  # after PROTO n
        data = data[:2] + pickle.FRAME + struct.pack("<Q", len(body)) + body
        w.features["frame"] += 1
    if rng.random() < 0.03:
        # a little raw damage: the parser's rules must hold too
        pos = rng.randrange(len(data))
        data = data[:pos] + bytes([rng.getrandbits(8)]) + data[pos + 1 :]
        w.features["damaged"] += 1
        w.must_refuse.clear()  # the damage may have removed what made it forbidden
    features = Counter({k: v for k, v in w.features.items() if v})
    features[f"protocol:{protocol}"] += 1
    features[f"container:{container}"] += 1
    return Program(
        seed=seed,
        data=data,
        protocol=protocol,
        container=container,
        features=features,
        must_refuse=set(w.must_refuse),
        storages=dict(w.storages),
    )
